/*
 * queue: enqueue bounds, priority order, leases that expire on a controlled
 * clock, heartbeats, timeouts, retries with backoff, exactly-once results
 * under duplicates and stale workers, output capping, cancel, restart
 * recovery (close and reopen the store), grouped commits seen from a second
 * connection, and crash consistency (a child killed with SIGKILL while it
 * enqueues; the parent reopens and finds every acknowledged task).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "queue.h"
#include "store.h"

struct fixture {
	char dir[64];
	char path[128];
	struct store *store;
	struct queue *q;
	int64_t now;
	/* commit callback */
	int commits, commit_fail;
	uint64_t durable;
	/* event callback */
	int nev;
	enum queue_state ev_from[64], ev_to[64];
};

static int64_t
fake_now(void *arg)
{
	return ((struct fixture *)arg)->now;
}

static void
open_queue(struct fixture *f, const struct queue_limits *lim)
{
	assert_int_equal(store_open(f->path, &f->store), 0);
	assert_int_equal(queue_open(f->store, lim, fake_now, f, &f->q), 0);
}

static void
close_queue(struct fixture *f)
{
	queue_close(f->q);
	store_close(f->store);
	f->q = NULL;
	f->store = NULL;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/sp-test-queue-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/sandpit.db", f->dir);
	f->now = 1700000000000;
	open_queue(f, NULL);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char p[160];

	close_queue(f);
	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

static struct queue_task_spec
spec(const char *body, int prio)
{
	return (struct queue_task_spec){
		.body = body, .body_len = strlen(body), .priority = prio,
		.timeout_ms = 60000, .max_retries = 2,
	};
}

static int64_t
add(struct fixture *f, const char *swarm, const char *body, int prio)
{
	struct queue_task_spec s = spec(body, prio);
	int64_t id = 0;

	assert_int_equal(queue_enqueue(f->q, swarm, "acme", &s, 1, &id, NULL, 0), 0);
	assert_true(id > 0);
	return id;
}

static void
lease_ok(struct fixture *f, const char *swarm, const char *worker, struct queue_grant *g)
{
	assert_int_equal(queue_lease(f->q, swarm, worker, g, NULL), 0);
}

static enum queue_state
state_of(struct fixture *f, int64_t id)
{
	struct queue_task t;
	enum queue_state s;

	assert_int_equal(queue_get(f->q, id, &t), 0);
	s = t.state;
	queue_task_done(&t);
	return s;
}

static int64_t
query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static const struct queue_outcome ok_out = { .ok = true, .output = "done", .output_len = 4 };

static void
test_enqueue_get_counts(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s[3] = { spec("{\"a\":1}", 0), spec("b", 5), spec("c", -5) };
	struct queue_counts c;
	struct queue_task t;
	int64_t ids[3];

	assert_int_equal(queue_enqueue(f->q, "sw-1", "acme", s, 3, ids, NULL, 0), 0);
	assert_true(ids[0] < ids[1] && ids[1] < ids[2]);
	assert_int_equal(queue_get(f->q, ids[0], &t), 0);
	assert_string_equal(t.swarm, "sw-1");
	assert_string_equal(t.tenant, "acme");
	assert_int_equal(t.state, QUEUE_QUEUED);
	assert_int_equal(t.body_len, 7);
	assert_string_equal(t.body, "{\"a\":1}");
	assert_int_equal(t.timeout_ms, 60000);
	assert_int_equal(t.max_retries, 2);
	assert_int_equal(t.attempt, 0);
	assert_null(t.output);
	assert_int_equal(t.created_ms, f->now);
	queue_task_done(&t);
	assert_int_equal(queue_counts(f->q, "sw-1", &c), 0);
	assert_int_equal(c.n[QUEUE_QUEUED], 3);
	assert_int_equal(c.n[QUEUE_SUCCEEDED], 0);
	assert_int_equal(queue_counts(f->q, "other", &c), 0);
	assert_int_equal(c.n[QUEUE_QUEUED], 0);
	assert_int_equal(queue_get(f->q, 999999, &t), SP_ENOTFOUND);
	/* Enqueue is synchronous: nothing pending afterwards. */
	assert_int_equal(queue_pending(f->q), 0);
}

static void
test_enqueue_bad_input(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s[2] = { spec("fine", 0), spec("x", 0) };
	struct queue_limits lim;
	struct queue_counts c;
	char err[256], big[128];
	int64_t ids[2];

	close_queue(f);
	queue_limits_default(&lim);
	lim.body_max = 100;
	lim.batch_max = 2;
	open_queue(f, &lim);

	memset(big, 'x', sizeof(big));
	s[1].body = big;
	s[1].body_len = sizeof(big);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 2, ids, err, sizeof(err)), SP_ELIMIT);
	assert_non_null(strstr(err, "task 1"));
	assert_non_null(strstr(err, "body_max is 100"));
	assert_non_null(strstr(err, "128"));
	/* All or none: the good first task was not added either. */
	assert_int_equal(queue_counts(f->q, "sw", &c), 0);
	assert_int_equal(c.n[QUEUE_QUEUED], 0);

	s[1] = spec("x", 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 3, ids, err, sizeof(err)), SP_ELIMIT);
	assert_non_null(strstr(err, "batch_max is 2"));
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 0, ids, err, sizeof(err)), SP_EINVAL);
	s[0].priority = 5000;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, ids, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "priority"));
	s[0] = spec("x", 0);
	s[0].timeout_ms = 0;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, ids, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "timeout"));
	s[0] = spec("x", 0);
	s[0].max_retries = QUEUE_RETRIES_MAX + 1;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, ids, err, sizeof(err)), SP_EINVAL);
	s[0] = spec("x", 0);
	assert_int_equal(queue_enqueue(f->q, "bad swarm", "acme", s, 1, ids, err, sizeof(err)),
			 SP_EINVAL);
	assert_int_equal(queue_enqueue(f->q, "", "acme", s, 1, ids, NULL, 0), SP_EINVAL);
	assert_int_equal(queue_enqueue(f->q, "sw", NULL, s, 1, ids, NULL, 0), SP_EINVAL);
	memset(big, 'a', 70);
	big[70] = '\0';
	assert_int_equal(queue_enqueue(f->q, big, "acme", s, 1, ids, NULL, 0), SP_EINVAL);
	assert_int_equal(queue_counts(f->q, "sw", &c), 0);
	assert_int_equal(c.n[QUEUE_QUEUED], 0);
	/* An empty body is allowed (the body is opaque). */
	s[0].body = NULL;
	s[0].body_len = 0;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, ids, NULL, 0), 0);
}

static void
test_open_max_per_swarm(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s[3] = { spec("a", 0), spec("b", 0), spec("c", 0) };
	struct queue_outcome bad = { .ok = false, .exit_code = 1 };
	struct queue_limits lim;
	enum queue_verdict v;
	struct queue_grant g;
	char err[200];
	int64_t ids[3], more;

	close_queue(f);
	queue_limits_default(&lim);
	lim.batch_max = 3;
	lim.open_max = 4;
	open_queue(f, &lim);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 3, ids, err, sizeof(err)), 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 2, ids, err, sizeof(err)), SP_ELIMIT);
	assert_string_equal(err, "swarm 'sw' has 3 unfinished tasks; 2 more would pass the "
			    "limit open_max of 4");
	/* Other swarms have their own count. */
	assert_int_equal(queue_enqueue(f->q, "sw2", "acme", s, 3, ids, NULL, 0), 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, &more, NULL, 0), 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, &more, NULL, 0), SP_ELIMIT);
	/* Finishing (success, final failure, cancel) makes room; a retry does not. */
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_result(f->q, g.task, 1, g.lease, "w", &ok_out, &v), 0);
	queue_grant_done(&g);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, &more, NULL, 0), 0);
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_result(f->q, g.task, 1, g.lease, "w", &bad, &v), 0);	/* retried */
	queue_grant_done(&g);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, &more, NULL, 0), SP_ELIMIT);
	assert_int_equal(queue_cancel(f->q, more), 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, &more, NULL, 0), 0);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", NULL), 0);
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT open FROM queue_swarms WHERE swarm = 'sw'"), 0);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 3, ids, NULL, 0), 0);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", NULL), 0);
	/* Purging a finished swarm forgets its count. */
	assert_int_equal(queue_purge_swarm(f->q, "sw", NULL), 0);
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT COUNT(*) FROM queue_swarms WHERE swarm = 'sw'"), 0);
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT open FROM queue_swarms WHERE swarm = 'sw2'"), 3);
	/* open_max below batch_max makes no sense. */
	lim.open_max = 2;
	assert_int_equal(queue_set_limits(f->q, &lim), SP_EINVAL);
}

static void
test_limits_checked(void **state)
{
	struct fixture *f = *state;
	struct queue_limits lim;
	struct queue *q2 = NULL;

	queue_limits_default(&lim);
	lim.batch_max = 0;
	assert_int_equal(queue_open(f->store, &lim, NULL, NULL, &q2), SP_EINVAL);
	assert_null(q2);
	queue_limits_default(&lim);
	lim.backoff_base_ms = lim.backoff_max_ms + 1;
	assert_int_equal(queue_set_limits(f->q, &lim), SP_EINVAL);
	queue_limits_default(&lim);
	lim.body_max = QUEUE_BODY_MAX_MAX + 1;
	assert_int_equal(queue_set_limits(f->q, &lim), SP_EINVAL);
	queue_limits_default(&lim);
	lim.batch_max = 1;
	assert_int_equal(queue_set_limits(f->q, &lim), 0);
	{
		struct queue_task_spec s[2] = { spec("a", 0), spec("b", 0) };
		int64_t ids[2];

		assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 2, ids, NULL, 0), SP_ELIMIT);
	}
}

static void
test_priority_then_fifo(void **state)
{
	struct fixture *f = *state;
	int64_t low = add(f, "sw", "low", -1);
	int64_t a = add(f, "sw", "a", 3);
	int64_t other = add(f, "sw-other", "o", 100);
	int64_t b = add(f, "sw", "b", 3);
	int64_t hi = add(f, "sw", "hi", 9);
	struct queue_grant g;
	int64_t next = -1;
	int64_t order[4] = { hi, a, b, low };
	int i;

	for (i = 0; i < 4; i++) {
		lease_ok(f, "sw", "w1", &g);
		assert_int_equal(g.task, order[i]);
		assert_int_equal(g.attempt, 1);
		assert_true(g.lease > 0);
		assert_int_equal(g.expires_ms, f->now + 30000);
		assert_int_equal(g.deadline_ms, f->now + 60000);
		queue_grant_done(&g);
	}
	assert_int_equal(queue_lease(f->q, "sw", "w1", &g, &next), -EAGAIN);
	assert_int_equal(next, 0);	/* nothing queued at all */
	assert_int_equal(state_of(f, hi), QUEUE_ASSIGNED);
	assert_int_equal(state_of(f, other), QUEUE_QUEUED);
	lease_ok(f, "sw-other", "w2", &g);
	assert_int_equal(g.task, other);
	assert_string_equal(g.body, "o");
	queue_grant_done(&g);
	assert_int_equal(queue_lease(f->q, "bad swarm!", "w1", &g, NULL), SP_EINVAL);
	assert_int_equal(queue_lease(f->q, "sw", "", &g, NULL), SP_EINVAL);
}

static void
test_success_and_exactly_once(void **state)
{
	struct fixture *f = *state;
	int64_t id = add(f, "sw", "t", 0);
	struct queue_outcome other = { .ok = false, .exit_code = 3, .output = "x", .output_len = 1 };
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;

	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(queue_start(f->q, id, 1, g.lease, "w1", &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(state_of(f, id), QUEUE_RUNNING);
	/* start again is harmless */
	assert_int_equal(queue_start(f->q, id, 1, g.lease, "w1", &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	/* someone else's start / result is stale and changes nothing */
	assert_int_equal(queue_start(f->q, id, 1, g.lease, "w2", &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_result(f->q, id, 1, g.lease + 1, "w1", &other, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w2", &other, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_result(f->q, id, 2, g.lease, "w1", &other, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(state_of(f, id), QUEUE_RUNNING);

	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w1", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	/* The duplicate is recognised as such; a different outcome does not overwrite. */
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w1", &other, &v), 0);
	assert_int_equal(v, QUEUE_DUPLICATE);
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w1", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_DUPLICATE);
	assert_int_equal(queue_result(f->q, id, 1, g.lease + 7, "w1", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_heartbeat(f->q, id, 1, g.lease, "w1", &v, NULL), 0);
	assert_int_equal(v, QUEUE_STALE);

	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_int_equal(t.state, QUEUE_SUCCEEDED);
	assert_int_equal(t.output_len, 4);
	assert_string_equal(t.output, "done");
	assert_false(t.truncated);
	assert_int_equal(t.exit_code, 0);
	assert_int_equal(t.failures, 0);
	assert_int_equal(t.lease_expires_ms, 0);
	queue_task_done(&t);
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(query_int(store_db(f->store), "SELECT COUNT(*) FROM queue_results"), 1);
	assert_int_equal(queue_result(f->q, 424242, 1, g.lease, "w1", &ok_out, &v), SP_ENOTFOUND);
	queue_grant_done(&g);
}

static void
test_lease_expiry_and_backoff(void **state)
{
	struct fixture *f = *state;
	int64_t id = add(f, "sw", "t", 0);
	struct queue_grant g1, g2;
	enum queue_verdict v;
	struct queue_task t;
	int64_t next = 0, t0 = f->now;
	size_t n = 99;

	lease_ok(f, "sw", "w1", &g1);
	/* Not yet expired: the sweep leaves it alone. */
	f->now = g1.expires_ms - 1;
	assert_int_equal(queue_sweep(f->q, 100, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(state_of(f, id), QUEUE_ASSIGNED);
	/* At expiry the lease is dead for its holder even before the sweep. */
	f->now = g1.expires_ms;
	assert_int_equal(queue_heartbeat(f->q, id, 1, g1.lease, "w1", &v, NULL), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_sweep(f->q, 100, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_int_equal(t.state, QUEUE_QUEUED);
	assert_int_equal(t.failures, 1);
	assert_string_equal(t.reason, "lease expired");
	assert_int_equal(t.not_before_ms, f->now + 500);
	queue_task_done(&t);
	/* Backing off: not leasable, and the caller learns when it will be. */
	assert_int_equal(queue_lease(f->q, "sw", "w2", &g2, &next), -EAGAIN);
	assert_int_equal(next, f->now + 500);
	f->now += 500;
	lease_ok(f, "sw", "w2", &g2);
	assert_int_equal(g2.task, id);
	assert_int_equal(g2.attempt, 2);
	assert_true(g2.lease != g1.lease);
	/* The lost worker comes back late: its result is stale, the new holder's counts. */
	assert_int_equal(queue_result(f->q, id, 1, g1.lease, "w1", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_result(f->q, id, 2, g2.lease, "w2", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(state_of(f, id), QUEUE_SUCCEEDED);
	assert_true(f->now > t0);
	queue_grant_done(&g1);
	queue_grant_done(&g2);
}

static void
test_sweep_in_slices(void **state)
{
	struct fixture *f = *state;
	struct queue_grant g;
	struct queue_counts c;
	size_t n, total = 0, calls = 0;
	int i;

	for (i = 0; i < 5; i++)
		add(f, "sw", "x", 0);
	for (i = 0; i < 5; i++) {
		lease_ok(f, "sw", "w", &g);
		queue_grant_done(&g);
	}
	f->now += 30000;
	do {
		assert_int_equal(queue_sweep(f->q, 2, &n), 0);
		assert_true(n <= 2);
		total += n;
		calls++;
	} while (n == 2);
	assert_int_equal(total, 5);
	assert_int_equal(calls, 3);
	assert_int_equal(queue_counts(f->q, "sw", &c), 0);
	assert_int_equal(c.n[QUEUE_QUEUED], 5);
	assert_int_equal(queue_sweep(f->q, 0, &n), 0);
	assert_int_equal(n, 0);
}

static void
test_heartbeat_renews_until_deadline(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s = spec("t", 0);
	struct queue_grant g;
	enum queue_verdict v;
	struct queue_task t;
	int64_t id, exp = 0;
	size_t n;

	s.timeout_ms = 50000;
	s.max_retries = 0;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", &s, 1, &id, NULL, 0), 0);
	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(g.expires_ms, f->now + 30000);
	assert_int_equal(g.deadline_ms, f->now + 50000);
	f->now += 20000;
	assert_int_equal(queue_heartbeat(f->q, id, 1, g.lease, "w1", &v, &exp), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	/* Renewed, but capped at the deadline (now + 30 s would pass it). */
	assert_int_equal(exp, g.deadline_ms);
	f->now = g.expires_ms + 1;	/* past the first expiry: still held */
	assert_int_equal(queue_sweep(f->q, 10, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(state_of(f, id), QUEUE_ASSIGNED);
	/* At the deadline the attempt times out; no retries left: failed. */
	f->now = g.deadline_ms;
	assert_int_equal(queue_heartbeat(f->q, id, 1, g.lease, "w1", &v, &exp), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_sweep(f->q, 10, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_int_equal(t.state, QUEUE_FAILED);
	assert_string_equal(t.reason, "timed out after 50000 ms");
	assert_int_equal(t.failures, 1);
	queue_task_done(&t);
	queue_grant_done(&g);
}

static void
test_retries_then_failed(void **state)
{
	struct fixture *f = *state;
	struct queue_outcome bad = { .ok = false, .exit_code = 2, .output = "oops", .output_len = 4,
				     .reason = "checker said no" };
	struct queue_outcome bad_noreason = { .ok = false, .exit_code = 7 };
	int64_t id = add(f, "sw", "t", 0);	/* max_retries 2: three attempts */
	int64_t expect_delay[2] = { 500, 1000 };
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;
	int i;

	for (i = 0; i < 3; i++) {
		lease_ok(f, "sw", "w1", &g);
		assert_int_equal(g.attempt, i + 1);
		assert_int_equal(queue_result(f->q, id, g.attempt, g.lease, "w1",
					      i == 1 ? &bad_noreason : &bad, &v), 0);
		assert_int_equal(v, QUEUE_ACCEPTED);
		assert_int_equal(queue_get(f->q, id, &t), 0);
		assert_int_equal(t.failures, i + 1);
		if (i < 2) {
			assert_int_equal(t.state, QUEUE_QUEUED);
			assert_int_equal(t.not_before_ms, f->now + expect_delay[i]);
			f->now = t.not_before_ms;
		} else {
			assert_int_equal(t.state, QUEUE_FAILED);
			assert_string_equal(t.reason, "checker said no");
			assert_int_equal(t.exit_code, 2);
			assert_string_equal(t.output, "oops");
		}
		if (i == 1) {
			assert_string_equal(t.reason, "exit code 7");
			assert_null(t.output);
		}
		queue_task_done(&t);
		queue_grant_done(&g);
	}
	assert_int_equal(queue_lease(f->q, "sw", "w1", &g, NULL), -EAGAIN);
}

static void
test_backoff_caps(void **state)
{
	struct fixture *f = *state;
	struct queue_outcome bad = { .ok = false, .exit_code = 1 };
	struct queue_task_spec s = spec("t", 0);
	struct queue_limits lim;
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;
	int64_t id, prev = 0;
	int i;

	queue_limits_default(&lim);
	lim.backoff_base_ms = 100;
	lim.backoff_max_ms = 1000;
	assert_int_equal(queue_set_limits(f->q, &lim), 0);
	s.max_retries = 10;
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", &s, 1, &id, NULL, 0), 0);
	/* 100, 200, 400, 800, 1000, 1000, ... */
	for (i = 0; i < 8; i++) {
		lease_ok(f, "sw", "w1", &g);
		assert_int_equal(queue_result(f->q, id, g.attempt, g.lease, "w1", &bad, &v), 0);
		queue_grant_done(&g);
		assert_int_equal(queue_get(f->q, id, &t), 0);
		prev = t.not_before_ms - f->now;
		assert_int_equal(prev, i < 4 ? 100 << i : 1000);
		f->now = t.not_before_ms;
		queue_task_done(&t);
	}
}

static void
test_output_capped(void **state)
{
	struct fixture *f = *state;
	struct queue_limits lim;
	/* 14 ASCII bytes then "é" (2 bytes) straddling the 16-byte cap at 15..16. */
	const char out[] = "abcdefghijklmn\xc3\xa9" "zzzz";
	struct queue_outcome o = { .ok = true, .output = out, .output_len = sizeof(out) - 1 };
	struct queue_outcome o2 = { .ok = true, .output = "short", .output_len = 5 };
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;
	int64_t id1, id2;
	char noutf[40];

	queue_limits_default(&lim);
	lim.output_max = 15;
	assert_int_equal(queue_set_limits(f->q, &lim), 0);
	id1 = add(f, "sw", "a", 1);
	id2 = add(f, "sw", "b", 0);
	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(queue_result(f->q, id1, 1, g.lease, "w1", &o, &v), 0);
	queue_grant_done(&g);
	assert_int_equal(queue_get(f->q, id1, &t), 0);
	assert_true(t.truncated);
	/* Cut before the two-byte character, not inside it. */
	assert_int_equal(t.output_len, 14);
	assert_memory_equal(t.output, "abcdefghijklmn", 14);
	queue_task_done(&t);

	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(queue_result(f->q, id2, 1, g.lease, "w1", &o2, &v), 0);
	queue_grant_done(&g);
	assert_int_equal(queue_get(f->q, id2, &t), 0);
	assert_false(t.truncated);
	assert_int_equal(t.output_len, 5);
	queue_task_done(&t);

	/* Bytes that are not UTF-8 are cut exactly at the cap. */
	memset(noutf, 0x80, sizeof(noutf));
	o.output = noutf;
	o.output_len = sizeof(noutf);
	id1 = add(f, "sw", "c", 0);
	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(queue_result(f->q, id1, 1, g.lease, "w1", &o, &v), 0);
	queue_grant_done(&g);
	assert_int_equal(queue_get(f->q, id1, &t), 0);
	assert_true(t.truncated);
	assert_int_equal(t.output_len, 15);
	queue_task_done(&t);
}

static void
test_streamed_output(void **state)
{
	struct fixture *f = *state;
	struct queue_outcome keep = { .ok = false, .exit_code = 1, .reason = "boom" };
	struct queue_outcome done_noout = { .ok = true, .exit_code = 0 };
	struct queue_limits lim;
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;
	int64_t id;

	queue_limits_default(&lim);
	lim.output_max = 10;
	assert_int_equal(queue_set_limits(f->q, &lim), 0);
	id = add(f, "sw", "t", 0);
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w", "abcd", 4, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w", "efgh", 4, &v), 0);
	/* Someone else's chunk changes nothing. */
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w2", "XXXX", 4, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w", "ijkl", 4, &v), 0);
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w", "mnop", 4, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_int_equal(t.output_len, 10);
	assert_string_equal(t.output, "abcdefghij");
	assert_true(t.truncated);
	queue_task_done(&t);
	/* A result without output keeps what was streamed. */
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w", &keep, &v), 0);
	queue_grant_done(&g);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_string_equal(t.output, "abcdefghij");
	assert_int_equal(t.exit_code, 1);
	queue_task_done(&t);
	/* The retry starts with empty output; its own chunks and result show. */
	f->now += 500;
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_null(t.output);
	assert_false(t.truncated);
	queue_task_done(&t);
	assert_int_equal(queue_output(f->q, id, 2, g.lease, "w", "ok", 2, &v), 0);
	assert_int_equal(queue_output(f->q, id, 1, g.lease, "w", "old", 3, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_result(f->q, id, 2, g.lease, "w", &done_noout, &v), 0);
	assert_int_equal(queue_get(f->q, id, &t), 0);
	assert_int_equal(t.state, QUEUE_SUCCEEDED);
	assert_string_equal(t.output, "ok");
	queue_task_done(&t);
	/* Finished: no more output. */
	assert_int_equal(queue_output(f->q, id, 2, g.lease, "w", "late", 4, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_output(f->q, id, 2, g.lease, "w", NULL, 3, &v), SP_EINVAL);
	queue_grant_done(&g);
}

static void
test_cancel(void **state)
{
	struct fixture *f = *state;
	int64_t a = add(f, "sw", "a", 0), b = add(f, "sw", "b", 0), c = add(f, "sw", "c", 0);
	int64_t d = add(f, "sw", "d", 0), other = add(f, "sw2", "o", 0);
	struct queue_counts cnt;
	enum queue_verdict v;
	struct queue_grant g;
	size_t n = 0;

	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(g.task, a);
	assert_int_equal(queue_cancel(f->q, a), 0);
	assert_int_equal(state_of(f, a), QUEUE_CANCELLED);
	/* The holder of a cancelled task is told its result is stale. */
	assert_int_equal(queue_result(f->q, a, 1, g.lease, "w1", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(state_of(f, a), QUEUE_CANCELLED);
	assert_int_equal(queue_cancel(f->q, a), SP_ECONFLICT);
	assert_int_equal(queue_cancel(f->q, 987654), SP_ENOTFOUND);
	queue_grant_done(&g);

	/* Finish b, then cancel the swarm: c and d go, b stays succeeded, sw2 untouched. */
	lease_ok(f, "sw", "w1", &g);
	assert_int_equal(g.task, b);
	assert_int_equal(queue_result(f->q, b, 1, g.lease, "w1", &ok_out, &v), 0);
	queue_grant_done(&g);
	lease_ok(f, "sw", "w2", &g);
	assert_int_equal(g.task, c);
	queue_grant_done(&g);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(state_of(f, d), QUEUE_CANCELLED);
	assert_int_equal(queue_counts(f->q, "sw", &cnt), 0);
	assert_int_equal(cnt.n[QUEUE_CANCELLED], 3);
	assert_int_equal(cnt.n[QUEUE_SUCCEEDED], 1);
	assert_int_equal(cnt.n[QUEUE_QUEUED] + cnt.n[QUEUE_ASSIGNED] + cnt.n[QUEUE_RUNNING], 0);
	assert_int_equal(state_of(f, other), QUEUE_QUEUED);
	assert_int_equal(queue_lease(f->q, "sw", "w1", &g, NULL), -EAGAIN);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(queue_cancel_swarm(f->q, "no such!", &n), SP_EINVAL);
}

struct alive_set {
	const char *alive;
	int calls;
};

static bool
alive_fn(void *arg, const char *worker)
{
	struct alive_set *a = arg;

	a->calls++;
	return strcmp(worker, a->alive) == 0;
}

static void
test_restart_recovery(void **state)
{
	struct fixture *f = *state;
	int64_t a = add(f, "sw", "a", 2), b = add(f, "sw", "b", 1), c = add(f, "sw", "c", 0);
	struct alive_set set = { .alive = "w-alive" };
	struct queue_grant ga, gb;
	enum queue_verdict v;
	struct queue_task t;
	size_t n = 0;

	lease_ok(f, "sw", "w-alive", &ga);
	lease_ok(f, "sw", "w-gone", &gb);
	assert_int_equal(ga.task, a);
	assert_int_equal(gb.task, b);
	assert_int_equal(queue_start(f->q, b, 1, gb.lease, "w-gone", &v), 0);
	assert_int_equal(queue_flush(f->q), 0);
	close_queue(f);

	/* The daemon comes back 10 s later. */
	f->now += 10000;
	open_queue(f, NULL);
	assert_int_equal(state_of(f, a), QUEUE_ASSIGNED);
	assert_int_equal(state_of(f, b), QUEUE_RUNNING);
	assert_int_equal(queue_recover(f->q, alive_fn, &set, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(set.calls, 2);
	assert_int_equal(queue_get(f->q, b, &t), 0);
	assert_int_equal(t.state, QUEUE_QUEUED);
	assert_int_equal(t.failures, 0);	/* a restart is not the task's fault */
	assert_int_equal(t.not_before_ms, f->now);
	queue_task_done(&t);
	assert_int_equal(queue_get(f->q, a, &t), 0);
	assert_int_equal(t.state, QUEUE_ASSIGNED);
	assert_int_equal(t.lease_expires_ms, f->now + 30000);
	queue_task_done(&t);
	assert_int_equal(state_of(f, c), QUEUE_QUEUED);
	/* Recovery is synchronous: durable without a flush. */
	assert_int_equal(queue_pending(f->q), 0);
	/* The surviving worker reconnects and finishes; the gone one's result is stale. */
	assert_int_equal(queue_result(f->q, a, 1, ga.lease, "w-alive", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(queue_result(f->q, b, 1, gb.lease, "w-gone", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	queue_grant_done(&ga);
	queue_grant_done(&gb);
	/* Its task is leased again, as attempt 2. */
	lease_ok(f, "sw", "w-new", &gb);
	assert_int_equal(gb.task, b);
	assert_int_equal(gb.attempt, 2);
	queue_grant_done(&gb);
	/* NULL alive: everyone is gone. */
	assert_int_equal(queue_recover(f->q, NULL, NULL, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(state_of(f, b), QUEUE_QUEUED);
}

static void
on_commit(void *arg, int status, uint64_t durable)
{
	struct fixture *f = arg;

	f->commits++;
	if (status < 0)
		f->commit_fail++;
	f->durable = durable;
}

static void
test_group_commit(void **state)
{
	struct fixture *f = *state;
	struct queue_limits lim;
	struct queue_grant g[4];
	sqlite3 *other;
	int64_t ids[4];
	struct queue_task_spec s[4] = { spec("a", 0), spec("b", 0), spec("c", 0), spec("d", 0) };
	int i;

	close_queue(f);
	queue_limits_default(&lim);
	lim.group_max = 3;
	open_queue(f, &lim);
	queue_set_commit_cb(f->q, on_commit, f);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 4, ids, NULL, 0), 0);
	assert_int_equal(f->commits, 1);
	assert_int_equal(queue_durable_seq(f->q), queue_seq(f->q));

	/* A second connection sees only what is committed. */
	assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 0"), 4);

	lease_ok(f, "sw", "w", &g[0]);
	lease_ok(f, "sw", "w", &g[1]);
	assert_int_equal(queue_pending(f->q), 2);
	assert_true(queue_seq(f->q) > queue_durable_seq(f->q));
	assert_int_equal(f->commits, 1);
	/* Visible on our connection, not yet on the other. */
	assert_int_equal(state_of(f, ids[1]), QUEUE_ASSIGNED);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 1"), 0);
	/* The third deferred op fills the group: it commits by itself. */
	lease_ok(f, "sw", "w", &g[2]);
	assert_int_equal(f->commits, 2);
	assert_int_equal(queue_pending(f->q), 0);
	assert_int_equal(f->durable, queue_seq(f->q));
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 1"), 3);

	/* The flush timer's job. */
	lease_ok(f, "sw", "w", &g[3]);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 1"), 3);
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(f->commits, 3);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 1"), 4);
	/* Flushing nothing is a no-op. */
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(f->commits, 3);
	assert_int_equal(f->commit_fail, 0);
	for (i = 0; i < 4; i++)
		queue_grant_done(&g[i]);
	sqlite3_close(other);
}

/* An idle worker's empty poll must not leave the write lock held until the next flush. */
static void
test_empty_poll_holds_no_lock(void **state)
{
	struct fixture *f = *state;
	struct queue_grant g;
	sqlite3 *other;

	assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
	assert_int_equal(queue_lease(f->q, "sw", "w", &g, NULL), -EAGAIN);
	assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	/* With deferred work pending, the group (and its lock) stays until the flush. */
	add(f, "sw", "a", 0);
	lease_ok(f, "sw", "w", &g);
	queue_grant_done(&g);
	assert_int_equal(queue_lease(f->q, "sw", "w", &g, NULL), -EAGAIN);
	assert_int_equal(queue_pending(f->q), 1);
	assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_BUSY);
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
}

static void
test_no_grouping_baseline(void **state)
{
	struct fixture *f = *state;
	struct queue_limits lim;
	struct queue_grant g;
	sqlite3 *other;

	close_queue(f);
	queue_limits_default(&lim);
	lim.group_max = 1;
	open_queue(f, &lim);
	add(f, "sw", "a", 0);
	assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
	lease_ok(f, "sw", "w", &g);
	/* group_max 1: every write is its own transaction. */
	assert_int_equal(queue_pending(f->q), 0);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_tasks WHERE state = 1"), 1);
	queue_grant_done(&g);
	sqlite3_close(other);
}

static void
on_event(void *arg, int64_t task, const char *swarm, enum queue_state from, enum queue_state to)
{
	struct fixture *f = arg;

	(void)task;
	assert_string_equal(swarm, "sw");
	if (f->nev < 64) {
		f->ev_from[f->nev] = from;
		f->ev_to[f->nev] = to;
	}
	f->nev++;
}

static void
test_events(void **state)
{
	struct fixture *f = *state;
	enum queue_verdict v;
	struct queue_grant g;
	int64_t id;

	queue_set_event_cb(f->q, on_event, f);
	id = add(f, "sw", "a", 0);
	add(f, "sw", "b", 0);
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_start(f->q, id, 1, g.lease, "w", &v), 0);
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w", &ok_out, &v), 0);
	/* A stale result makes no event. */
	assert_int_equal(queue_result(f->q, id, 1, g.lease, "w", &ok_out, &v), 0);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", NULL), 0);
	queue_grant_done(&g);
	assert_int_equal(f->nev, 6);
	assert_int_equal(f->ev_from[0], QUEUE_STATE__COUNT);
	assert_int_equal(f->ev_to[0], QUEUE_QUEUED);
	assert_int_equal(f->ev_to[1], QUEUE_QUEUED);
	assert_int_equal(f->ev_from[2], QUEUE_QUEUED);
	assert_int_equal(f->ev_to[2], QUEUE_ASSIGNED);
	assert_int_equal(f->ev_to[3], QUEUE_RUNNING);
	assert_int_equal(f->ev_from[4], QUEUE_RUNNING);
	assert_int_equal(f->ev_to[4], QUEUE_SUCCEEDED);
	assert_int_equal(f->ev_from[5], QUEUE_QUEUED);
	assert_int_equal(f->ev_to[5], QUEUE_CANCELLED);
}

static void
test_list_pages(void **state)
{
	struct fixture *f = *state;
	struct queue_task *rows;
	int64_t ids[25], after = 0;
	size_t n, seen = 0;
	int i;

	for (i = 0; i < 25; i++)
		ids[i] = add(f, "sw", "x", i % 3);
	add(f, "sw-b", "y", 0);
	do {
		assert_int_equal(queue_list(f->q, "sw", after, 10, &rows, &n), 0);
		for (i = 0; i < (int)n; i++)
			assert_int_equal(rows[i].id, ids[seen + (size_t)i]);
		seen += n;
		if (n > 0)
			after = rows[n - 1].id;
		queue_tasks_free(rows, n);
	} while (n == 10);
	assert_int_equal(seen, 25);
	assert_int_equal(queue_list(f->q, "sw", 0, 0, &rows, &n), SP_EINVAL);
	assert_int_equal(queue_list(f->q, "sw", 0, QUEUE_LIST_MAX + 1, &rows, &n), SP_EINVAL);
}

static void
test_migration_once(void **state)
{
	struct fixture *f = *state;

	add(f, "sw", "a", 0);
	close_queue(f);
	open_queue(f, NULL);
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT version FROM schema_version WHERE component = 'queue'"), 2);
	assert_int_equal(query_int(store_db(f->store), "SELECT COUNT(*) FROM queue_tasks"), 1);
}

static void
test_worker_lost(void **state)
{
	struct fixture *f = *state;
	int64_t a = add(f, "sw", "a", 1), b = add(f, "sw", "b", 0), c = add(f, "sw2", "c", 0);
	struct queue_task_spec s = spec("poison", 0);
	struct queue_grant ga, gb, gc, gp;
	struct queue_task t;
	enum queue_verdict v;
	int64_t p;
	size_t n = 9;

	lease_ok(f, "sw", "w-dead", &ga);
	lease_ok(f, "sw", "w-ok", &gb);
	lease_ok(f, "sw2", "w-dead", &gc);
	assert_int_equal(queue_start(f->q, a, 1, ga.lease, "w-dead", &v), 0);
	assert_int_equal(queue_worker_lost(f->q, "w-dead", "sandbox OOM-killed", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(queue_get(f->q, a, &t), 0);
	assert_int_equal(t.state, QUEUE_QUEUED);
	assert_int_equal(t.failures, 1);
	assert_string_equal(t.reason, "sandbox OOM-killed");
	assert_int_equal(t.not_before_ms, f->now + 500);
	queue_task_done(&t);
	assert_int_equal(state_of(f, c), QUEUE_QUEUED);
	assert_int_equal(state_of(f, b), QUEUE_ASSIGNED);	/* someone else's */
	/* The dead worker's late result is stale. */
	assert_int_equal(queue_result(f->q, a, 1, ga.lease, "w-dead", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_STALE);
	assert_int_equal(queue_worker_lost(f->q, "w-dead", NULL, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(queue_worker_lost(f->q, "", NULL, &n), SP_EINVAL);
	/* A task that kills every worker it lands on fails once its retries are spent. */
	s.max_retries = 1;
	assert_int_equal(queue_enqueue(f->q, "sw3", "acme", &s, 1, &p, NULL, 0), 0);
	lease_ok(f, "sw3", "w1", &gp);
	queue_grant_done(&gp);
	assert_int_equal(queue_worker_lost(f->q, "w1", NULL, NULL), 0);
	f->now += 500;
	lease_ok(f, "sw3", "w2", &gp);
	queue_grant_done(&gp);
	assert_int_equal(queue_worker_lost(f->q, "w2", "exited with 137", NULL), 0);
	assert_int_equal(queue_get(f->q, p, &t), 0);
	assert_int_equal(t.state, QUEUE_FAILED);
	assert_string_equal(t.reason, "exited with 137");
	queue_task_done(&t);
	queue_grant_done(&ga);
	queue_grant_done(&gb);
	queue_grant_done(&gc);
}

static void
test_purge_swarm(void **state)
{
	struct fixture *f = *state;
	int64_t a = add(f, "sw", "a", 1), b = add(f, "sw", "b", 0), c = add(f, "sw2", "c", 0);
	enum queue_verdict v;
	struct queue_grant g;
	struct queue_task t;
	size_t n = 0;

	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_result(f->q, a, 1, g.lease, "w", &ok_out, &v), 0);
	queue_grant_done(&g);
	/* b is unfinished: it stays; a goes with its result key. */
	assert_int_equal(queue_purge_swarm(f->q, "sw", &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(queue_get(f->q, a, &t), SP_ENOTFOUND);
	assert_int_equal(state_of(f, b), QUEUE_QUEUED);
	assert_int_equal(query_int(store_db(f->store), "SELECT COUNT(*) FROM queue_results"), 0);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", NULL), 0);
	assert_int_equal(queue_purge_swarm(f->q, "sw", &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(state_of(f, c), QUEUE_QUEUED);
	assert_int_equal(queue_purge_swarm(f->q, "bad name", &n), SP_EINVAL);
	/* Ids are never reused after a purge. */
	assert_true(add(f, "sw", "d", 0) > c);
}

/* A write that fails midway undoes only its own operation; the group survives. */
static void
test_failed_op_keeps_group(void **state)
{
	struct fixture *f = *state;
	int64_t a = add(f, "sw", "a", 0);
	enum queue_verdict v = QUEUE_ACCEPTED;
	struct queue_grant g;
	struct queue_task t;
	sqlite3 *other;

	queue_set_commit_cb(f->q, on_commit, f);
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_pending(f->q), 1);
	assert_int_equal(sqlite3_exec(store_db(f->store), "PRAGMA query_only=1", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_string_equal(queue_errmsg(f->q), "no error");
	assert_int_equal(queue_result(f->q, a, 1, g.lease, "w", &ok_out, &v), SP_EDB);
	/* SQLite's words survive the rollback of the operation, for the edge to log. */
	assert_non_null(strstr(queue_errmsg(f->q), "readonly"));
	assert_int_equal(sqlite3_exec(store_db(f->store), "PRAGMA query_only=0", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(queue_pending(f->q), 1);
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(f->commit_fail, 0);
	assert_int_equal(queue_get(f->q, a, &t), 0);
	assert_int_equal(t.state, QUEUE_ASSIGNED);	/* the lease survived, the result did not */
	assert_null(t.output);
	queue_task_done(&t);
	assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
	assert_int_equal(query_int(other, "SELECT COUNT(*) FROM queue_results"), 0);
	assert_int_equal(query_int(other, "SELECT state FROM queue_tasks"), QUEUE_ASSIGNED);
	sqlite3_close(other);
	/* And the same result, retried, goes through. */
	assert_int_equal(queue_result(f->q, a, 1, g.lease, "w", &ok_out, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	queue_grant_done(&g);
}

/* queue_counts (kept in memory once read) equals a count of the rows. */
static void
check_counts(struct fixture *f, const char *swarm)
{
	struct queue_counts c;
	char sql[160];

	assert_int_equal(queue_counts(f->q, swarm, &c), 0);
	for (int s = 0; s < QUEUE_STATE__COUNT; s++) {
		snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM queue_tasks WHERE swarm = '%s' "
			 "AND state = %d", swarm, s);
		if (c.n[s] != query_int(store_db(f->store), sql))
			fail_msg("%s: %lld %s, the rows say %lld", swarm, (long long)c.n[s],
				 queue_state_name((enum queue_state)s),
				 (long long)query_int(store_db(f->store), sql));
	}
}

/*
 * A seeded random walk over every operation (leases, starts, heartbeats,
 * output, results good and bad, replays of old grants, clock jumps,
 * sweeps, lost workers, cancels, flushes, restarts with recovery), checking
 * the queue's invariants in SQL after every step and that a task, once
 * succeeded or failed, never changes again.
 */
static void
check_invariants(struct fixture *f, const enum queue_state *final, size_t n, const int64_t *ids)
{
	sqlite3 *db = store_db(f->store);
	size_t i;

	/* At most one result row per attempt is the primary key; at most one success per task. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM (SELECT task FROM queue_results "
				       "WHERE ok = 1 GROUP BY task HAVING COUNT(*) > 1)"), 0);
	/* Succeeded exactly when a success is recorded. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM queue_tasks t WHERE (t.state = 3) <> "
				       "EXISTS (SELECT 1 FROM queue_results r WHERE r.task = t.id "
				       "AND r.ok = 1)"), 0);
	/* Held tasks have a lease and an expiry within the deadline; others have none. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM queue_tasks WHERE state IN (1, 2) AND "
				       "(lease IS NULL OR lease_expires <= 0 OR "
				       "lease_expires > deadline OR worker IS NULL)"), 0);
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM queue_tasks WHERE state NOT IN (1, 2) "
				       "AND (lease IS NOT NULL OR lease_expires <> 0)"), 0);
	/* Failures never pass the retry limit by more than the final one. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM queue_tasks "
				       "WHERE failures > max_retries + 1 OR "
				       "(state = 4 AND failures <> max_retries + 1)"), 0);
	/* The kept count of unfinished tasks matches the tasks. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM (SELECT swarm, COUNT(*) AS n FROM "
				       "queue_tasks WHERE state IN (0, 1, 2) GROUP BY swarm) t "
				       "FULL JOIN queue_swarms s USING (swarm) "
				       "WHERE COALESCE(t.n, 0) <> COALESCE(s.open, 0)"), 0);
	/* Every recorded attempt was granted. */
	assert_int_equal(query_int(db, "SELECT COUNT(*) FROM queue_results r JOIN queue_tasks t "
				       "ON t.id = r.task WHERE r.attempt > t.attempt"), 0);
	for (i = 0; i < n; i++)
		if (final[i] != QUEUE_STATE__COUNT)
			assert_int_equal(state_of(f, ids[i]), final[i]);
}

static void
test_random_walk(void **state)
{
	struct fixture *f = *state;
	static const char *const workers[3] = { "w0", "w1", "w2" };
	struct queue_outcome bad = { .ok = false, .exit_code = 1, .output = "no", .output_len = 2 };
	struct queue_grant held[3], old[8];
	bool has[3] = { false, false, false };
	enum queue_state final[40];
	struct queue_task_spec s[40];
	size_t nold = 0, i, n;
	unsigned seed = 12345;
	int seen[3] = { 0 }, swept = 0, restarts = 0;
	struct queue_counts c;
	enum queue_verdict v;
	struct queue_task t;
	int64_t ids[40];
	int step, w, op, r;

	for (i = 0; i < 40; i++) {
		s[i] = spec("x", (int)(i % 4));
		s[i].max_retries = (unsigned)(i % 3);
		s[i].timeout_ms = 20000 + 1000 * (i % 5);
		final[i] = QUEUE_STATE__COUNT;
	}
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 40, ids, NULL, 0), 0);
	for (step = 0; step < 3000; step++) {
		w = (int)(rand_r(&seed) % 3);
		op = (int)(rand_r(&seed) % 14);
		switch (op) {
		case 0: case 1: case 2:
			if (has[w])
				break;
			r = queue_lease(f->q, "sw", workers[w], &held[w], NULL);
			assert_true(r == 0 || r == -EAGAIN);
			has[w] = r == 0;
			break;
		case 3:
			if (has[w])
				assert_int_equal(queue_start(f->q, held[w].task, held[w].attempt,
							     held[w].lease, workers[w], &v), 0);
			break;
		case 4:
			if (has[w])
				assert_int_equal(queue_heartbeat(f->q, held[w].task, held[w].attempt,
								 held[w].lease, workers[w], &v,
								 NULL), 0);
			break;
		case 5:
			if (has[w])
				assert_int_equal(queue_output(f->q, held[w].task, held[w].attempt,
							      held[w].lease, workers[w], "o", 1,
							      &v), 0);
			break;
		case 6: case 7:
			if (!has[w])
				break;
			assert_int_equal(queue_result(f->q, held[w].task, held[w].attempt,
						      held[w].lease, workers[w],
						      op == 6 ? &ok_out : &bad, &v), 0);
			seen[v]++;
			if (v == QUEUE_ACCEPTED) {
				assert_int_equal(queue_get(f->q, held[w].task, &t), 0);
				i = (size_t)(held[w].task - ids[0]);
				assert_true(final[i] == QUEUE_STATE__COUNT);
				if (queue_state_terminal(t.state) && t.state != QUEUE_CANCELLED)
					final[i] = t.state;
				queue_task_done(&t);
			}
			/* Keep the grant to replay later, as a late or duplicate sender. */
			if (nold < 8) {
				old[nold++] = held[w];
			} else {
				i = (size_t)rand_r(&seed) % nold;
				queue_grant_done(&old[i]);
				old[i] = held[w];
			}
			has[w] = false;
			break;
		case 8:
			if (nold == 0)
				break;
			i = (size_t)rand_r(&seed) % nold;
			assert_int_equal(queue_result(f->q, old[i].task, old[i].attempt, old[i].lease,
						      workers[rand_r(&seed) % 3], &ok_out, &v), 0);
			assert_true(v != QUEUE_ACCEPTED || final[old[i].task - ids[0]] ==
				    QUEUE_STATE__COUNT);
			seen[v]++;
			if (v == QUEUE_ACCEPTED && state_of(f, old[i].task) == QUEUE_SUCCEEDED)
				final[old[i].task - ids[0]] = QUEUE_SUCCEEDED;
			break;
		case 9:
			f->now += (int64_t)(rand_r(&seed) % 15000);
			assert_int_equal(queue_sweep(f->q, 100, &n), 0);
			swept += (int)n;
			break;
		case 10:
			assert_int_equal(queue_worker_lost(f->q, workers[w], NULL, &n), 0);
			if (has[w]) {
				queue_grant_done(&held[w]);
				has[w] = false;
			}
			break;
		case 11:
			i = (size_t)rand_r(&seed) % 40;
			r = queue_cancel(f->q, ids[i]);
			assert_true(r == 0 || r == SP_ECONFLICT);
			if (r == 0)
				final[i] = QUEUE_CANCELLED;
			break;
		case 12:
			assert_int_equal(queue_flush(f->q), 0);
			break;
		case 13:
			if (rand_r(&seed) % 20 != 0)
				break;
			/* A clean restart: workers' grants survive, recovery keeps the alive ones. */
			close_queue(f);
			open_queue(f, NULL);
			assert_int_equal(queue_recover(f->q, NULL, NULL, &n), 0);
			restarts++;
			for (w = 0; w < 3; w++) {
				if (has[w]) {
					queue_grant_done(&held[w]);
					has[w] = false;
				}
			}
			break;
		}
		if (step % 50 == 0)
			check_invariants(f, final, 40, ids);
		check_counts(f, "sw");
		if (step == 1500) {
			/* With a listener too (events are then also read for a swarm's cancel). */
			queue_set_event_cb(f->q, on_event, f);
		}
	}
	check_invariants(f, final, 40, ids);
	/* The walk went everywhere it should have. */
	assert_int_equal(queue_counts(f->q, "sw", &c), 0);
	assert_true(c.n[QUEUE_SUCCEEDED] > 0);
	assert_true(c.n[QUEUE_FAILED] > 0);
	assert_true(c.n[QUEUE_CANCELLED] > 0);
	assert_true(seen[QUEUE_DUPLICATE] > 0);
	assert_true(seen[QUEUE_STALE] > 0);
	assert_true(swept > 0);
	assert_true(restarts > 0);
	for (w = 0; w < 3; w++)
		if (has[w])
			queue_grant_done(&held[w]);
	for (i = 0; i < nold; i++)
		queue_grant_done(&old[i]);
}

/* queue_lease_run: up to max grants in one operation, in lease order, already running. */
static void
test_lease_run(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s[5] = { spec("a", 0), spec("b", 5), spec("c", 0), spec("d", 5),
					spec("e", 0) };
	struct queue_grant g[QUEUE_LEASE_MAX];
	enum queue_verdict v;
	uint64_t seq;
	int64_t ids[5];
	size_t n = 99, i;

	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 5, ids, NULL, 0), 0);
	queue_set_event_cb(f->q, on_event, f);
	assert_int_equal(queue_lease_run(f->q, "sw", "w", 0, g, &n), SP_EINVAL);
	assert_int_equal(queue_lease_run(f->q, "sw", "w", QUEUE_LEASE_MAX + 1, g, &n), SP_EINVAL);
	assert_int_equal(n, 99);
	seq = queue_seq(f->q);
	assert_int_equal(queue_lease_run(f->q, "sw", "w", 3, g, &n), 0);
	assert_int_equal(queue_seq(f->q), seq + 1);
	assert_int_equal(n, 3);
	/* Priority first, then FIFO: b, d, a. */
	assert_int_equal(g[0].task, ids[1]);
	assert_int_equal(g[1].task, ids[3]);
	assert_int_equal(g[2].task, ids[0]);
	for (i = 0; i < 3; i++) {
		assert_int_equal(g[i].attempt, 1);
		assert_int_equal(state_of(f, g[i].task), QUEUE_RUNNING);
		assert_true(g[i].lease != g[(i + 1) % 3].lease);
		assert_int_equal(g[i].body_len, 1);
	}
	assert_string_equal(g[0].body, "b");
	/* The events of a lease and a start, per task. */
	assert_int_equal(f->nev, 6);
	assert_int_equal(f->ev_from[0], QUEUE_QUEUED);
	assert_int_equal(f->ev_to[0], QUEUE_ASSIGNED);
	assert_int_equal(f->ev_from[1], QUEUE_ASSIGNED);
	assert_int_equal(f->ev_to[1], QUEUE_RUNNING);
	check_counts(f, "sw");
	/* The holder's result is accepted as for any lease; a heartbeat renews it. */
	assert_int_equal(queue_result(f->q, g[1].task, g[1].attempt, g[1].lease, "w", &ok_out, &v),
			 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	assert_int_equal(queue_heartbeat(f->q, g[0].task, g[0].attempt, g[0].lease, "w", &v, NULL),
			 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	for (i = 0; i < 3; i++)
		queue_grant_done(&g[i]);
	/* The rest, then nothing. */
	assert_int_equal(queue_lease_run(f->q, "sw", "w", QUEUE_LEASE_MAX, g, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(g[0].task, ids[2]);
	assert_int_equal(g[1].task, ids[4]);
	for (i = 0; i < 2; i++)
		queue_grant_done(&g[i]);
	assert_int_equal(queue_lease_run(f->q, "sw", "w", 4, g, &n), -EAGAIN);
	check_counts(f, "sw");
}

/*
 * The counts queue_counts() keeps in memory follow every kind of change:
 * deferred ops, retries, cancels, sweeps, lost workers, a swarm's cancel
 * without a listener, purges, a failed op and a group another module rolled
 * back.
 */
static void
test_counts_kept(void **state)
{
	struct fixture *f = *state;
	struct queue_task_spec s[3] = { spec("a", 0), spec("b", 0), spec("c", 0) };
	struct queue_outcome bad = { .ok = false, .exit_code = 1 };
	struct queue_grant g;
	enum queue_verdict v;
	int64_t ids[3], xs[3];

	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 3, ids, NULL, 0), 0);
	assert_int_equal(queue_enqueue(f->q, "sx", "acme", s, 2, xs, NULL, 0), 0);
	check_counts(f, "sw");
	check_counts(f, "sx");
	assert_int_equal(queue_enqueue(f->q, "sx", "acme", s, 1, xs + 2, NULL, 0), 0);
	check_counts(f, "sx");
	lease_ok(f, "sw", "w", &g);
	check_counts(f, "sw");
	assert_int_equal(queue_start(f->q, g.task, g.attempt, g.lease, "w", &v), 0);
	check_counts(f, "sw");
	assert_int_equal(queue_result(f->q, g.task, g.attempt, g.lease, "w", &ok_out, &v), 0);
	check_counts(f, "sw");
	queue_grant_done(&g);
	/* A failed attempt goes back to queued (retry). */
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_result(f->q, g.task, g.attempt, g.lease, "w", &bad, &v), 0);
	check_counts(f, "sw");
	queue_grant_done(&g);
	/* An op that fails changes nothing, counts included. */
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(sqlite3_exec(store_db(f->store), "PRAGMA query_only=1", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(queue_result(f->q, g.task, g.attempt, g.lease, "w", &ok_out, &v), SP_EDB);
	assert_int_equal(sqlite3_exec(store_db(f->store), "PRAGMA query_only=0", NULL, NULL, NULL),
			 SQLITE_OK);
	check_counts(f, "sw");
	/* Expired by the sweep, and a lost worker. */
	f->now += 120000;
	assert_int_equal(queue_sweep(f->q, 10, NULL), 0);
	check_counts(f, "sw");
	queue_grant_done(&g);
	f->now += 120000;
	lease_ok(f, "sw", "w", &g);
	assert_int_equal(queue_worker_lost(f->q, "w", NULL, NULL), 0);
	check_counts(f, "sw");
	queue_grant_done(&g);
	assert_int_equal(queue_cancel(f->q, ids[2]), 0);
	check_counts(f, "sw");
	/* A swarm's cancel with nobody listening, then with a listener. */
	assert_int_equal(queue_cancel_swarm(f->q, "sx", NULL), 0);
	check_counts(f, "sx");
	queue_set_event_cb(f->q, on_event, f);
	assert_int_equal(queue_enqueue(f->q, "sw", "acme", s, 1, ids, NULL, 0), 0);
	check_counts(f, "sw");
	assert_int_equal(queue_purge_swarm(f->q, "sx", NULL), 0);
	check_counts(f, "sx");
	/* A group rolled back by another module on the shared connection. */
	f->now += 120000;
	lease_ok(f, "sw", "w", &g);
	check_counts(f, "sw");
	assert_int_equal(sqlite3_exec(store_db(f->store), "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(queue_flush(f->q), 0);
	check_counts(f, "sw");
	queue_grant_done(&g);
	/* The same, found by the next operation rather than by a flush. */
	lease_ok(f, "sw", "w", &g);
	check_counts(f, "sw");
	assert_int_equal(sqlite3_exec(store_db(f->store), "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	queue_grant_done(&g);
	lease_ok(f, "sw", "w", &g);
	check_counts(f, "sw");
	queue_grant_done(&g);
	assert_int_equal(queue_cancel_swarm(f->q, "sw", NULL), 0);
	check_counts(f, "sw");
}

/*
 * A child enqueues one task at a time, writing each id to a pipe only after
 * queue_enqueue() returned 0, and mixes in deferred leases and results; the
 * parent SIGKILLs it at an arbitrary moment, reopens the database and checks
 * that every acknowledged task is there, nothing was recorded twice, and the
 * queue recovers into a consistent state.
 */
static void
crash_child(const char *path, int wfd)
{
	struct queue_task_spec s = spec("crash", 0);
	struct store *st;
	struct queue *q;
	struct queue_grant g;
	enum queue_verdict v;
	int64_t id;
	int i;

	if (store_open(path, &st) < 0 || queue_open(st, NULL, NULL, NULL, &q) < 0)
		_exit(3);
	for (i = 0;; i++) {
		if (queue_enqueue(q, "sw", "acme", &s, 1, &id, NULL, 0) < 0)
			_exit(4);
		if (write(wfd, &id, sizeof(id)) != sizeof(id))
			_exit(5);
		/* Deferred work that a kill may or may not catch before the commit. */
		if (i % 3 == 0 && queue_lease(q, "sw", "w", &g, NULL) == 0) {
			queue_result(q, g.task, g.attempt, g.lease, "w", &ok_out, &v);
			queue_grant_done(&g);
		}
	}
}

static void
test_crash_consistency(void **state)
{
	struct fixture *f = *state;
	int64_t acked[4096], id;
	struct queue_task t;
	size_t n = 0, i, requeued;
	int fds[2], status;
	pid_t pid;
	ssize_t got;

	/* The child has the file to itself. */
	close_queue(f);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		crash_child(f->path, fds[1]);
	}
	close(fds[1]);
	/* Kill it somewhere in the middle of its work, after 300 acknowledgements. */
	while (n < 300 && (got = read(fds[0], &id, sizeof(id))) == sizeof(id))
		acked[n++] = id;
	kill(pid, SIGKILL);
	/* Whatever was acknowledged before the kill landed counts too. */
	while (n < 4096 && (got = read(fds[0], &id, sizeof(id))) == sizeof(id))
		acked[n++] = id;
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_true(n >= 300);

	open_queue(f, NULL);
	for (i = 0; i < n; i++) {
		assert_int_equal(queue_get(f->q, acked[i], &t), 0);
		assert_string_equal(t.body, "crash");
		queue_task_done(&t);
	}
	/* Every succeeded task has exactly one result row, and no result lacks a success. */
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT COUNT(*) FROM queue_tasks WHERE state = 3"),
			 query_int(store_db(f->store), "SELECT COUNT(*) FROM queue_results"));
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT COUNT(*) FROM (SELECT task FROM queue_results "
				   "GROUP BY task HAVING COUNT(*) > 1)"), 0);
	/* The same invariants the random walk checks hold after the kill. */
	check_invariants(f, NULL, 0, NULL);
	/* A lease lost between grant and result is recovered: nothing stays held. */
	assert_int_equal(queue_recover(f->q, NULL, NULL, &requeued), 0);
	assert_int_equal(query_int(store_db(f->store),
				   "SELECT COUNT(*) FROM queue_tasks WHERE state IN (1, 2)"), 0);
}

/*
 * The documented loss window, deterministically: a child acknowledges three
 * enqueues, records task 1's result and flushes, records task 2's result
 * without a flush, and _exit()s without closing anything. The parent finds
 * all three tasks, task 1 succeeded once, and task 2 back in the queue after
 * recovery (its lease and result were in the unflushed group).
 */
static void
test_exit_without_close(void **state)
{
	struct fixture *f = *state;
	int64_t ids[3];
	struct queue_counts c;
	int fds[2], status;
	size_t requeued = 9;
	pid_t pid;

	close_queue(f);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct queue_task_spec s[3] = { spec("1", 2), spec("2", 1), spec("3", 0) };
		struct queue_grant g;
		enum queue_verdict v;
		struct store *st;
		struct queue *q;

		close(fds[0]);
		if (store_open(f->path, &st) < 0 || queue_open(st, NULL, NULL, NULL, &q) < 0 ||
		    queue_enqueue(q, "sw", "acme", s, 3, ids, NULL, 0) < 0)
			_exit(3);
		if (write(fds[1], ids, sizeof(ids)) != sizeof(ids))
			_exit(4);
		if (queue_lease(q, "sw", "w", &g, NULL) < 0 ||
		    queue_result(q, g.task, g.attempt, g.lease, "w", &ok_out, &v) < 0 ||
		    queue_flush(q) < 0)
			_exit(5);
		queue_grant_done(&g);
		if (queue_lease(q, "sw", "w", &g, NULL) < 0 ||
		    queue_result(q, g.task, g.attempt, g.lease, "w", &ok_out, &v) < 0 ||
		    queue_pending(q) != 2)
			_exit(6);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], ids, sizeof(ids)), sizeof(ids));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	open_queue(f, NULL);
	assert_int_equal(state_of(f, ids[0]), QUEUE_SUCCEEDED);
	assert_int_equal(state_of(f, ids[1]), QUEUE_QUEUED);
	assert_int_equal(state_of(f, ids[2]), QUEUE_QUEUED);
	assert_int_equal(query_int(store_db(f->store), "SELECT COUNT(*) FROM queue_results"), 1);
	assert_int_equal(queue_recover(f->q, NULL, NULL, &requeued), 0);
	assert_int_equal(requeued, 0);
	assert_int_equal(queue_counts(f->q, "sw", &c), 0);
	assert_int_equal(c.n[QUEUE_SUCCEEDED], 1);
	assert_int_equal(c.n[QUEUE_QUEUED], 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_enqueue_get_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enqueue_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_max_per_swarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_priority_then_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_success_and_exactly_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease_expiry_and_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep_in_slices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_heartbeat_renews_until_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retries_then_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backoff_caps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_output_capped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_grouping_baseline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_poll_holds_no_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge_swarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_op_keeps_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_walk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counts_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exit_without_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_consistency, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The durable task queue: tasks, leases, attempts and results in SQLite on
 * the store's connection, with deferred writes grouped into one transaction
 * per flush (see queue.h for what is durable when). It owns its tables and
 * prepared statements; it does not know workers, sandboxes or the loop, and
 * it never logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "clock.h"
#include "log.h"
#include "queue.h"
#include "xmalloc.h"

/* The queue's schema. Append new versions; never edit a released one. */
static const char *const queue_migrations[] = {
	/* 1 */
	"CREATE TABLE queue_tasks ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  swarm TEXT NOT NULL,"
	"  tenant TEXT NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  priority INTEGER NOT NULL,"
	"  body BLOB NOT NULL,"
	"  timeout_ms INTEGER NOT NULL,"
	"  max_retries INTEGER NOT NULL,"
	"  attempt INTEGER NOT NULL DEFAULT 0,"
	"  failures INTEGER NOT NULL DEFAULT 0,"
	"  not_before INTEGER NOT NULL DEFAULT 0,"
	"  worker TEXT,"
	"  lease INTEGER,"
	"  lease_expires INTEGER NOT NULL DEFAULT 0,"
	"  deadline INTEGER NOT NULL DEFAULT 0,"
	"  exit_code INTEGER NOT NULL DEFAULT 0,"
	"  output BLOB,"
	"  truncated INTEGER NOT NULL DEFAULT 0,"
	"  reason TEXT,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL"
	");"
	/* The lease scan: ready tasks of a swarm, best first. */
	"CREATE INDEX queue_ready ON queue_tasks(swarm, priority DESC, id) WHERE state = 0;"
	/* The sweep: held tasks by expiry (the lease never outlives the deadline). */
	"CREATE INDEX queue_held ON queue_tasks(lease_expires) WHERE state IN (1, 2);"
	"CREATE INDEX queue_swarm_state ON queue_tasks(swarm, state);"
	/* One row per recorded attempt: the exactly-once key. */
	"CREATE TABLE queue_results ("
	"  task INTEGER NOT NULL,"
	"  attempt INTEGER NOT NULL,"
	"  lease INTEGER NOT NULL,"
	"  ok INTEGER NOT NULL,"
	"  recorded_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (task, attempt)"
	") WITHOUT ROWID;",
	/* 2: unfinished tasks per swarm, kept in the same transactions as the tasks. */
	"CREATE TABLE queue_swarms ("
	"  swarm TEXT PRIMARY KEY NOT NULL,"
	"  open INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"INSERT INTO queue_swarms(swarm, open) SELECT swarm, COUNT(*) FROM queue_tasks "
	"  WHERE state IN (0, 1, 2) GROUP BY swarm;",
};

enum queue_stmt {
	QS_SAVEPOINT,
	QS_RELEASE,
	QS_ROLLBACK_TO,
	QS_INSERT,
	QS_READY,
	QS_NEXT_READY,
	QS_GRANT,
	QS_HELD,
	QS_RESULT_GET,
	QS_RESULT_PUT,
	QS_SET_RUNNING,
	QS_SET_EXPIRES,
	QS_SET_OUTPUT,
	QS_SET_EXIT,
	QS_OUTPUT_GET,
	QS_SETTLE,
	QS_EXPIRED,
	QS_HELD_ALL,
	QS_REQUEUE,
	QS_SWARM_OPEN,
	QS_OPEN_GET,
	QS_OPEN_ADD,
	QS_OPEN_DROP,
	QS_BY_WORKER,
	QS_PURGE_RESULTS,
	QS_PURGE_TASKS,
	QS_CANCEL_SWARM,
	QS_GET,
	QS_LIST,
	QS_COUNTS,
	QS__COUNT,
};

#define QT_COLUMNS \
	"id, swarm, tenant, state, priority, body, timeout_ms, max_retries, attempt, " \
	"failures, not_before, worker, lease_expires, deadline, exit_code, output, " \
	"truncated, reason, created_ms, updated_ms"

static const char *const queue_sql[QS__COUNT] = {
	[QS_SAVEPOINT] = "SAVEPOINT queue_op",
	[QS_RELEASE] = "RELEASE queue_op",
	[QS_ROLLBACK_TO] = "ROLLBACK TO queue_op",
	[QS_INSERT] = "INSERT INTO queue_tasks(swarm, tenant, state, priority, body, timeout_ms, "
		      "max_retries, created_ms, updated_ms) VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?7)",
	[QS_READY] = "SELECT id, attempt, timeout_ms, body FROM queue_tasks "
		     "WHERE swarm = ?1 AND state = 0 AND not_before <= ?2 "
		     "ORDER BY priority DESC, id LIMIT ?3",
	[QS_NEXT_READY] = "SELECT MIN(not_before) FROM queue_tasks WHERE swarm = ?1 AND state = 0",
	/* A new attempt starts with no output: the row shows the current or last attempt's. */
	[QS_GRANT] = "UPDATE queue_tasks SET state = ?8, attempt = ?2, worker = ?3, lease = ?4, "
		     "output = NULL, truncated = 0, exit_code = 0, "
		     "lease_expires = ?5, deadline = ?6, updated_ms = ?7 WHERE id = ?1",
	[QS_HELD] = "SELECT swarm, state, attempt, lease, worker, lease_expires, deadline, "
		    "failures, max_retries FROM queue_tasks WHERE id = ?1",
	[QS_RESULT_GET] = "SELECT lease FROM queue_results WHERE task = ?1 AND attempt = ?2",
	[QS_RESULT_PUT] = "INSERT INTO queue_results(task, attempt, lease, ok, recorded_ms) "
			  "VALUES (?1, ?2, ?3, ?4, ?5)",
	[QS_SET_RUNNING] = "UPDATE queue_tasks SET state = 2, updated_ms = ?2 WHERE id = ?1",
	[QS_SET_EXPIRES] = "UPDATE queue_tasks SET lease_expires = ?2, updated_ms = ?3 WHERE id = ?1",
	[QS_SET_OUTPUT] = "UPDATE queue_tasks SET exit_code = ?2, output = ?3, truncated = ?4 "
			  "WHERE id = ?1",
	/* Leave the held state: to queued (retry) or to a final state. */
	[QS_SET_EXIT] = "UPDATE queue_tasks SET exit_code = ?2 WHERE id = ?1",
	[QS_OUTPUT_GET] = "SELECT output, truncated FROM queue_tasks WHERE id = ?1",
	[QS_SETTLE] = "UPDATE queue_tasks SET state = ?2, failures = ?3, not_before = ?4, "
		      "reason = ?5, lease = NULL, lease_expires = 0, updated_ms = ?6 WHERE id = ?1",
	[QS_EXPIRED] = "SELECT id, swarm, state, deadline, failures, max_retries, timeout_ms "
		       "FROM queue_tasks WHERE state IN (1, 2) AND lease_expires <= ?1 "
		       "ORDER BY lease_expires LIMIT ?2",
	[QS_HELD_ALL] = "SELECT id, swarm, state, worker, deadline FROM queue_tasks "
			"WHERE state IN (1, 2) ORDER BY id",
	[QS_REQUEUE] = "UPDATE queue_tasks SET state = 0, not_before = ?2, "
		       "reason = 'holder gone at daemon restart', lease = NULL, "
		       "lease_expires = 0, updated_ms = ?2 WHERE id = ?1",
	[QS_BY_WORKER] = "SELECT id, swarm, state, failures, max_retries FROM queue_tasks "
			 "WHERE state IN (1, 2) AND worker = ?1 ORDER BY id",
	[QS_PURGE_RESULTS] = "DELETE FROM queue_results WHERE task IN (SELECT id FROM queue_tasks "
			     "WHERE swarm = ?1 AND state IN (3, 4, 5))",
	[QS_PURGE_TASKS] = "DELETE FROM queue_tasks WHERE swarm = ?1 AND state IN (3, 4, 5)",
	[QS_OPEN_GET] = "SELECT open FROM queue_swarms WHERE swarm = ?1",
	[QS_OPEN_ADD] = "INSERT INTO queue_swarms(swarm, open) VALUES (?1, ?2) "
			"ON CONFLICT(swarm) DO UPDATE SET open = open + excluded.open",
	[QS_OPEN_DROP] = "DELETE FROM queue_swarms WHERE swarm = ?1 AND open = 0",
	[QS_SWARM_OPEN] = "SELECT id, state FROM queue_tasks WHERE swarm = ?1 AND state IN (0, 1, 2) "
			  "ORDER BY id",
	[QS_CANCEL_SWARM] = "UPDATE queue_tasks SET state = 5, reason = 'cancelled', lease = NULL, "
			    "lease_expires = 0, updated_ms = ?2 WHERE swarm = ?1 AND state IN (0, 1, 2)",
	[QS_GET] = "SELECT " QT_COLUMNS " FROM queue_tasks WHERE id = ?1",
	[QS_LIST] = "SELECT " QT_COLUMNS " FROM queue_tasks WHERE swarm = ?1 AND id > ?2 "
		    "ORDER BY id LIMIT ?3",
	[QS_COUNTS] = "SELECT state, COUNT(*) FROM queue_tasks WHERE swarm = ?1 GROUP BY state",
};

/*
 * Swarms whose task counts are kept in memory, so that queue_counts() (which
 * the coordinator calls on every round of results) is not a scan of the
 * swarm's tasks. An entry is loaded by the first queue_counts() of a swarm
 * and then moved by the state changes of every operation that applies; a
 * change the events do not describe (purge, a swarm's cancel, a group rolled
 * back, a transaction ended by another module) drops entries instead.
 */
#define QUEUE_COUNTS_KEPT	64

struct queue_counted {
	char swarm[QUEUE_ID_MAX + 1];
	struct queue_counts c;
};

/* A state change waiting for its operation to be applied. */
struct queue_event {
	int64_t task;
	char *swarm;
	enum queue_state from, to;
};

struct queue {
	struct store *store;
	sqlite3 *db;
	sqlite3_stmt *stmt[QS__COUNT];
	struct queue_limits lim;
	queue_clock_fn now;
	void *now_arg;
	queue_commit_cb commit_cb;
	void *commit_arg;
	queue_event_cb event_cb;
	void *event_arg;

	bool in_group;			/* a BEGIN of ours is open */
	unsigned pending;		/* deferred ops in the group */
	uint64_t seq, durable_seq;

	struct queue_event *ev;		/* of the operation in progress */
	size_t nev, cap_ev;
	struct queue_counted counted[QUEUE_COUNTS_KEPT];
	size_t ncounted, next_evict;
	char errmsg[256];		/* SQLite's words for the last SP_EDB */
};

static const char *const queue_state_names[QUEUE_STATE__COUNT] = {
	[QUEUE_QUEUED] = "queued",
	[QUEUE_ASSIGNED] = "assigned",
	[QUEUE_RUNNING] = "running",
	[QUEUE_SUCCEEDED] = "succeeded",
	[QUEUE_FAILED] = "failed",
	[QUEUE_CANCELLED] = "cancelled",
};

const char *
queue_state_name(enum queue_state s)
{
	if ((unsigned)s >= QUEUE_STATE__COUNT)
		return "?";
	return queue_state_names[s];
}

bool
queue_state_terminal(enum queue_state s)
{
	return s == QUEUE_SUCCEEDED || s == QUEUE_FAILED || s == QUEUE_CANCELLED;
}

const char *
queue_verdict_name(enum queue_verdict v)
{
	switch (v) {
	case QUEUE_ACCEPTED:
		return "accepted";
	case QUEUE_DUPLICATE:
		return "duplicate";
	case QUEUE_STALE:
		return "stale";
	}
	return "?";
}

void
queue_limits_default(struct queue_limits *lim)
{
	*lim = (struct queue_limits){
		.body_max = 64 * 1024,
		.output_max = 64 * 1024,
		.batch_max = 1000,
		.open_max = 100000,
		.group_max = 512,
		.lease_ms = 30000,
		.backoff_base_ms = 500,
		.backoff_max_ms = 60000,
	};
}

static bool
queue_limits_valid(const struct queue_limits *l)
{
	return l->body_max >= 1 && l->body_max <= QUEUE_BODY_MAX_MAX &&
	       l->output_max <= QUEUE_OUTPUT_MAX_MAX &&
	       l->batch_max >= 1 && l->batch_max <= QUEUE_BATCH_MAX_MAX &&
	       l->open_max >= l->batch_max && l->open_max <= QUEUE_OPEN_MAX_MAX &&
	       l->group_max >= 1 && l->group_max <= 1000000 &&
	       l->lease_ms >= 1 && l->lease_ms <= QUEUE_TIMEOUT_MAX_MS &&
	       l->backoff_max_ms <= QUEUE_TIMEOUT_MAX_MS &&
	       l->backoff_base_ms <= l->backoff_max_ms;
}

static int64_t
queue_clock_real(void *arg)
{
	(void)arg;
	return clock_wall_ms();
}

static int64_t
queue_now(struct queue *q)
{
	return q->now(q->now_arg);
}

/* A printable name: 1..QUEUE_ID_MAX of [A-Za-z0-9._:-]. */
static bool
queue_name_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (i == QUEUE_ID_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* n bytes of s at most, not splitting a UTF-8 sequence (the API encodes output as JSON). */
static size_t
queue_utf8_cut(const char *s, size_t len, size_t max)
{
	size_t n;

	if (len <= max)
		return len;
	n = max;
	/* Step back over at most three continuation bytes to the start of the cut character. */
	while (n > 0 && max - n < 3 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	if (((unsigned char)s[n] & 0xc0) == 0x80)
		n = max;	/* not UTF-8 after all: cut where told */
	return n;
}

/* Keep SQLite's words for the edges: the rollback that follows would overwrite them. */
static int
queue_fail(struct queue *q)
{
	snprintf(q->errmsg, sizeof(q->errmsg), "%s", sqlite3_errmsg(q->db));
	return SP_EDB;
}

static sqlite3_stmt *
queue_stmt(struct queue *q, enum queue_stmt k)
{
	if (q->stmt[k] == NULL) {
		if (sqlite3_prepare_v3(q->db, queue_sql[k], -1, SQLITE_PREPARE_PERSISTENT,
				       &q->stmt[k], NULL) != SQLITE_OK) {
			queue_fail(q);
			q->stmt[k] = NULL;
			return NULL;
		}
	}
	sqlite3_reset(q->stmt[k]);
	sqlite3_clear_bindings(q->stmt[k]);
	return q->stmt[k];
}

/* Run a cached statement that returns no row. */
static int
queue_run(struct queue *q, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : queue_fail(q);
}

static int
queue_run_plain(struct queue *q, enum queue_stmt k)
{
	sqlite3_stmt *st = queue_stmt(q, k);

	if (st == NULL)
		return SP_EDB;
	return queue_run(q, st);
}

/* Unfinished tasks of swarm (0 when it has none). */
static int
queue_open_get(struct queue *q, const char *swarm, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc;

	if ((st = queue_stmt(q, QS_OPEN_GET)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : queue_fail(q);
}

/* Count tasks entering (delta > 0) or leaving (< 0) the unfinished states. */
static int
queue_open_add(struct queue *q, const char *swarm, int64_t delta)
{
	sqlite3_stmt *st;

	if (delta == 0)
		return 0;
	if ((st = queue_stmt(q, QS_OPEN_ADD)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, delta);
	return queue_run(q, st);
}

static void
queue_events_clear(struct queue *q)
{
	size_t i;

	for (i = 0; i < q->nev; i++)
		free(q->ev[i].swarm);
	q->nev = 0;
}

static struct queue_counted *
queue_counted_find(struct queue *q, const char *swarm)
{
	for (size_t i = 0; i < q->ncounted; i++)
		if (strcmp(q->counted[i].swarm, swarm) == 0)
			return &q->counted[i];
	return NULL;
}

/* Forget the counts of swarm (NULL: of every swarm); the next read counts in SQL. */
static void
queue_counted_drop(struct queue *q, const char *swarm)
{
	struct queue_counted *c;

	if (swarm == NULL) {
		q->ncounted = 0;
		return;
	}
	if ((c = queue_counted_find(q, swarm)) != NULL)
		*c = q->counted[--q->ncounted];
}

/*
 * Recorded whether or not anyone listens: the kept counts move with them
 * when the operation applies (queue_events_fire).
 */
static void
queue_event_add(struct queue *q, int64_t task, const char *swarm, enum queue_state from,
		enum queue_state to)
{
	if (from == to)
		return;
	if (q->nev == q->cap_ev) {
		q->cap_ev = q->cap_ev ? q->cap_ev * 2 : 16;
		q->ev = xreallocarray(q->ev, q->cap_ev, sizeof(*q->ev));
	}
	q->ev[q->nev++] = (struct queue_event){ task, xstrdup(swarm), from, to };
}

static void
queue_events_fire(struct queue *q)
{
	struct queue_counted *c;
	size_t i;

	for (i = 0; i < q->nev; i++) {
		if ((c = queue_counted_find(q, q->ev[i].swarm)) == NULL)
			continue;
		if (q->ev[i].from < QUEUE_STATE__COUNT)
			c->c.n[q->ev[i].from]--;
		c->c.n[q->ev[i].to]++;
	}
	for (i = 0; i < q->nev && q->event_cb != NULL; i++)
		q->event_cb(q->event_arg, q->ev[i].task, q->ev[i].swarm, q->ev[i].from,
			    q->ev[i].to);
	queue_events_clear(q);
}

/* ---- transactions ---- */

static int
queue_exec(struct queue *q, const char *sql)
{
	return sqlite3_exec(q->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : queue_fail(q);
}

/* Start an operation: the group transaction (if not open) and a savepoint. */
static int
queue_op_begin(struct queue *q)
{
	/* Someone else committed or rolled back our group: it is over either way. */
	if (q->in_group && sqlite3_get_autocommit(q->db)) {
		queue_counted_drop(q, NULL);	/* a rollback would have undone counted changes */
		q->in_group = false;
		q->pending = 0;
		q->durable_seq = q->seq;
		if (q->commit_cb != NULL)
			q->commit_cb(q->commit_arg, 0, q->durable_seq);
	}
	if (!q->in_group) {
		if (queue_exec(q, "BEGIN IMMEDIATE") < 0)
			return SP_EDB;
		q->in_group = true;
	}
	if (queue_run_plain(q, QS_SAVEPOINT) < 0)
		return SP_EDB;
	return 0;
}

static void
queue_group_failed(struct queue *q)
{
	sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
	queue_counted_drop(q, NULL);
	q->in_group = false;
	q->pending = 0;
	if (q->commit_cb != NULL)
		q->commit_cb(q->commit_arg, SP_EDB, q->durable_seq);
}

int
queue_flush(struct queue *q)
{
	if (!q->in_group)
		return 0;
	if (sqlite3_get_autocommit(q->db)) {
		/* Ended by another module's COMMIT; what we wrote went with it. */
		queue_counted_drop(q, NULL);
	} else if (queue_exec(q, "COMMIT") < 0) {
		queue_group_failed(q);
		return SP_EDB;
	}
	q->in_group = false;
	q->pending = 0;
	q->durable_seq = q->seq;
	if (q->commit_cb != NULL)
		q->commit_cb(q->commit_arg, 0, q->durable_seq);
	return 0;
}

/*
 * End an operation begun with queue_op_begin(): on error undo only this
 * operation (the group stays good); on success count it and, for a
 * synchronous one or a full group, commit.
 */
static int
queue_op_end(struct queue *q, int r, bool sync)
{
	if (r < 0) {
		queue_events_clear(q);
		if (queue_run_plain(q, QS_ROLLBACK_TO) < 0 || queue_run_plain(q, QS_RELEASE) < 0)
			queue_group_failed(q);
		else if (sync)
			r = queue_flush(q) < 0 ? SP_EDB : r;
		return r;
	}
	if (queue_run_plain(q, QS_RELEASE) < 0) {
		queue_events_clear(q);
		queue_group_failed(q);
		return SP_EDB;
	}
	q->seq++;
	q->pending++;
	if (sync || q->pending >= q->lim.group_max) {
		if (queue_flush(q) < 0) {
			queue_events_clear(q);
			return SP_EDB;
		}
	}
	queue_events_fire(q);
	return r;
}

/* ---- open / close ---- */

int
queue_open(struct store *store, const struct queue_limits *lim, queue_clock_fn now,
	   void *now_arg, struct queue **ret)
{
	struct queue *q;
	int r;

	q = xcalloc(1, sizeof(*q));
	if (lim != NULL)
		q->lim = *lim;
	else
		queue_limits_default(&q->lim);
	if (!queue_limits_valid(&q->lim)) {
		free(q);
		return SP_EINVAL;
	}
	q->store = store;
	q->db = store_db(store);
	q->now = now != NULL ? now : queue_clock_real;
	q->now_arg = now_arg;
	r = store_migrate(store, "queue", queue_migrations,
			  sizeof(queue_migrations) / sizeof(queue_migrations[0]));
	if (r < 0) {
		free(q);
		return r;
	}
	*ret = q;
	return 0;
}

void
queue_close(struct queue *q)
{
	size_t i;

	if (q == NULL)
		return;
	queue_flush(q);
	for (i = 0; i < QS__COUNT; i++)
		sqlite3_finalize(q->stmt[i]);
	queue_events_clear(q);
	free(q->ev);
	free(q);
}

int
queue_set_limits(struct queue *q, const struct queue_limits *lim)
{
	if (!queue_limits_valid(lim))
		return SP_EINVAL;
	q->lim = *lim;
	return 0;
}

void
queue_set_commit_cb(struct queue *q, queue_commit_cb cb, void *arg)
{
	q->commit_cb = cb;
	q->commit_arg = arg;
}

void
queue_set_event_cb(struct queue *q, queue_event_cb cb, void *arg)
{
	q->event_cb = cb;
	q->event_arg = arg;
}

const char *
queue_errmsg(const struct queue *q)
{
	return q->errmsg[0] ? q->errmsg : "no error";
}

unsigned
queue_pending(const struct queue *q)
{
	return q->pending;
}

uint64_t
queue_seq(const struct queue *q)
{
	return q->seq;
}

uint64_t
queue_durable_seq(const struct queue *q)
{
	return q->durable_seq;
}

/* ---- enqueue ---- */

static int
queue_spec_check(const struct queue *q, const struct queue_task_spec *s, size_t i,
		 char *err, size_t errlen)
{
	if (s->body == NULL && s->body_len > 0) {
		snprintf(err, errlen, "task %zu: no body", i);
		return SP_EINVAL;
	}
	if (s->body_len > q->lim.body_max) {
		snprintf(err, errlen, "task %zu: body is %zu bytes, limit body_max is %zu",
			 i, s->body_len, q->lim.body_max);
		return SP_ELIMIT;
	}
	if (s->priority < QUEUE_PRIORITY_MIN || s->priority > QUEUE_PRIORITY_MAX) {
		snprintf(err, errlen, "task %zu: priority %d is outside %d..%d", i, s->priority,
			 QUEUE_PRIORITY_MIN, QUEUE_PRIORITY_MAX);
		return SP_EINVAL;
	}
	if (s->timeout_ms < 1 || s->timeout_ms > QUEUE_TIMEOUT_MAX_MS) {
		snprintf(err, errlen, "task %zu: timeout %" PRIu64 " ms is outside 1..%llu", i,
			 s->timeout_ms, (unsigned long long)QUEUE_TIMEOUT_MAX_MS);
		return SP_EINVAL;
	}
	if (s->max_retries > QUEUE_RETRIES_MAX) {
		snprintf(err, errlen, "task %zu: max_retries %u is above %u", i, s->max_retries,
			 QUEUE_RETRIES_MAX);
		return SP_EINVAL;
	}
	return 0;
}

int
queue_enqueue(struct queue *q, const char *swarm, const char *tenant,
	      const struct queue_task_spec *specs, size_t n, int64_t *ids,
	      char *err, size_t errlen)
{
	char dummy[8];
	sqlite3_stmt *st;
	int64_t now, open;
	size_t i;
	int r;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	if (!queue_name_valid(swarm) || !queue_name_valid(tenant)) {
		snprintf(err, errlen, "invalid swarm or tenant name");
		return SP_EINVAL;
	}
	if (n == 0) {
		snprintf(err, errlen, "no tasks");
		return SP_EINVAL;
	}
	if (n > q->lim.batch_max) {
		snprintf(err, errlen, "%zu tasks in one request, limit batch_max is %zu",
			 n, q->lim.batch_max);
		return SP_ELIMIT;
	}
	/* All or nothing: check every task before writing any. */
	for (i = 0; i < n; i++)
		if ((r = queue_spec_check(q, &specs[i], i, err, errlen)) < 0)
			return r;

	if ((r = queue_op_begin(q)) < 0) {
		snprintf(err, errlen, "database: %s", queue_errmsg(q));
		return r;
	}
	if ((r = queue_open_get(q, swarm, &open)) < 0)
		goto out;
	if ((uint64_t)open + n > q->lim.open_max) {
		snprintf(err, errlen, "swarm '%s' has %lld unfinished tasks; %zu more would pass "
			 "the limit open_max of %zu", swarm, (long long)open, n, q->lim.open_max);
		r = SP_ELIMIT;
		goto out;
	}
	now = queue_now(q);
	for (i = 0; i < n; i++) {
		if ((st = queue_stmt(q, QS_INSERT)) == NULL) {
			r = SP_EDB;
			break;
		}
		sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, tenant, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 3, specs[i].priority);
		sqlite3_bind_blob(st, 4, specs[i].body_len ? specs[i].body : "",
				  (int)specs[i].body_len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)specs[i].timeout_ms);
		sqlite3_bind_int(st, 6, (int)specs[i].max_retries);
		sqlite3_bind_int64(st, 7, now);
		if ((r = queue_run(q, st)) < 0)
			break;
		ids[i] = sqlite3_last_insert_rowid(q->db);
		queue_event_add(q, ids[i], swarm, QUEUE_STATE__COUNT, QUEUE_QUEUED);
	}
	if (r == 0)
		r = queue_open_add(q, swarm, (int64_t)n);
	if (r < 0)
		snprintf(err, errlen, "database: %s", queue_errmsg(q));
out:
	r = queue_op_end(q, r, true);
	if (r < 0 && err[0] == '\0')
		snprintf(err, errlen, "database: commit failed");
	return r;
}

/* ---- leases ---- */

static int64_t
queue_lease_id(void)
{
	uint64_t v;

	do {
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			fatalx("getrandom failed");	/* cannot happen for 8 bytes */
		v &= INT64_MAX;
	} while (v == 0);
	return (int64_t)v;
}

void
queue_grant_done(struct queue_grant *g)
{
	if (g == NULL)
		return;
	free(g->body);
	memset(g, 0, sizeof(*g));
}

/*
 * Lease up to max ready tasks in one operation (queue_lease and
 * queue_lease_run): assigned, or running when run is set.
 */
static int
queue_lease_many(struct queue *q, const char *swarm, const char *worker, size_t max, bool run,
		 struct queue_grant *ret, size_t *ret_n, int64_t *ret_next_ms)
{
	struct queue_grant *g;
	sqlite3_stmt *st;
	const void *body;
	uint64_t timeout;
	size_t n = 0, i;
	int64_t now;
	int rc = SQLITE_DONE, r = 0;

	if (!queue_name_valid(swarm) || !queue_name_valid(worker) || max == 0)
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((st = queue_stmt(q, QS_READY)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, now);
	sqlite3_bind_int64(st, 3, (int64_t)max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		g = &ret[n++];
		*g = (struct queue_grant){ 0 };
		g->task = sqlite3_column_int64(st, 0);
		g->attempt = (uint32_t)sqlite3_column_int64(st, 1) + 1;
		timeout = (uint64_t)sqlite3_column_int64(st, 2);
		body = sqlite3_column_blob(st, 3);
		g->body_len = (size_t)sqlite3_column_bytes(st, 3);
		g->body = xmalloc(g->body_len + 1);
		if (g->body_len > 0)
			memcpy(g->body, body, g->body_len);
		g->body[g->body_len] = '\0';
		g->lease = queue_lease_id();
		g->deadline_ms = now + (int64_t)timeout;
		g->expires_ms = now + (int64_t)q->lim.lease_ms;
		if (g->expires_ms > g->deadline_ms)
			g->expires_ms = g->deadline_ms;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = queue_fail(q);
		goto out;
	}
	if (n == 0) {
		r = -EAGAIN;
		if (ret_next_ms != NULL) {
			*ret_next_ms = 0;
			if ((st = queue_stmt(q, QS_NEXT_READY)) == NULL) {
				r = SP_EDB;
				goto out;
			}
			sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
			if (sqlite3_step(st) == SQLITE_ROW &&
			    sqlite3_column_type(st, 0) != SQLITE_NULL)
				*ret_next_ms = sqlite3_column_int64(st, 0);
			sqlite3_reset(st);
		}
		goto out;
	}
	for (i = 0; i < n; i++) {
		g = &ret[i];
		if ((st = queue_stmt(q, QS_GRANT)) == NULL) {
			r = SP_EDB;
			goto out;
		}
		sqlite3_bind_int64(st, 1, g->task);
		sqlite3_bind_int64(st, 2, g->attempt);
		sqlite3_bind_text(st, 3, worker, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, g->lease);
		sqlite3_bind_int64(st, 5, g->expires_ms);
		sqlite3_bind_int64(st, 6, g->deadline_ms);
		sqlite3_bind_int64(st, 7, now);
		sqlite3_bind_int(st, 8, run ? QUEUE_RUNNING : QUEUE_ASSIGNED);
		if ((r = queue_run(q, st)) < 0)
			goto out;
		/* The same events as a lease and a start. */
		queue_event_add(q, g->task, swarm, QUEUE_QUEUED, QUEUE_ASSIGNED);
		if (run)
			queue_event_add(q, g->task, swarm, QUEUE_ASSIGNED, QUEUE_RUNNING);
	}
out:
	/* -EAGAIN changed nothing; still end the savepoint without counting an op. */
	if (r == -EAGAIN) {
		if (queue_run_plain(q, QS_RELEASE) < 0) {
			queue_group_failed(q);
			r = SP_EDB;
		} else if (q->pending == 0 && queue_exec(q, "COMMIT") == 0) {
			/*
			 * Idle workers poll often: do not leave an empty group
			 * holding the write lock (and blocking checkpoints)
			 * until the next flush.
			 */
			q->in_group = false;
		}
		queue_events_clear(q);
		return r;
	}
	r = queue_op_end(q, r, false);
	if (r < 0) {
		for (i = 0; i < n; i++)
			queue_grant_done(&ret[i]);
		return r;
	}
	*ret_n = n;
	return 0;
}

int
queue_lease(struct queue *q, const char *swarm, const char *worker,
	    struct queue_grant *ret, int64_t *ret_next_ms)
{
	size_t n;

	return queue_lease_many(q, swarm, worker, 1, false, ret, &n, ret_next_ms);
}

int
queue_lease_run(struct queue *q, const char *swarm, const char *worker, size_t max,
		struct queue_grant *ret, size_t *ret_n)
{
	if (max > QUEUE_LEASE_MAX)
		return SP_EINVAL;
	return queue_lease_many(q, swarm, worker, max, true, ret, ret_n, NULL);
}

/* The held-task facts that decide a verdict. */
struct queue_held {
	char swarm[QUEUE_ID_MAX + 1];
	enum queue_state state;
	uint32_t attempt;
	int64_t lease;
	char worker[QUEUE_ID_MAX + 1];
	int64_t lease_expires, deadline;
	unsigned failures, max_retries;
};

static int
queue_held_get(struct queue *q, int64_t task, struct queue_held *h)
{
	const unsigned char *t;
	sqlite3_stmt *st;
	int rc;

	if ((st = queue_stmt(q, QS_HELD)) == NULL)
		return SP_EDB;
	sqlite3_bind_int64(st, 1, task);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? SP_ENOTFOUND : queue_fail(q);
	}
	memset(h, 0, sizeof(*h));
	t = sqlite3_column_text(st, 0);
	snprintf(h->swarm, sizeof(h->swarm), "%s", t ? (const char *)t : "");
	h->state = (enum queue_state)sqlite3_column_int(st, 1);
	h->attempt = (uint32_t)sqlite3_column_int64(st, 2);
	h->lease = sqlite3_column_int64(st, 3);
	t = sqlite3_column_text(st, 4);
	snprintf(h->worker, sizeof(h->worker), "%s", t ? (const char *)t : "");
	h->lease_expires = sqlite3_column_int64(st, 5);
	h->deadline = sqlite3_column_int64(st, 6);
	h->failures = (unsigned)sqlite3_column_int(st, 7);
	h->max_retries = (unsigned)sqlite3_column_int(st, 8);
	sqlite3_reset(st);
	return 0;
}

/* Whether the caller holds the current, unexpired lease of the task. */
static bool
queue_holds(const struct queue_held *h, uint32_t attempt, int64_t lease, const char *worker,
	    int64_t now)
{
	return (h->state == QUEUE_ASSIGNED || h->state == QUEUE_RUNNING) &&
	       h->attempt == attempt && h->lease == lease &&
	       strcmp(h->worker, worker) == 0 && now < h->lease_expires;
}

/*
 * Read task's holder into h and judge worker's claim (attempt, lease):
 * *ret is QUEUE_ACCEPTED or QUEUE_STALE; 0, or a negative error.
 */
static int
queue_held_by(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
	      const char *worker, int64_t now, struct queue_held *h, enum queue_verdict *ret)
{
	int r = queue_held_get(q, task, h);

	if (r < 0)
		return r;
	*ret = queue_holds(h, attempt, lease, worker, now) ? QUEUE_ACCEPTED : QUEUE_STALE;
	return 0;
}

int
queue_start(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
	    const char *worker, enum queue_verdict *ret)
{
	struct queue_held h;
	sqlite3_stmt *st;
	int64_t now;
	int r;

	if (!queue_name_valid(worker))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((r = queue_held_by(q, task, attempt, lease, worker, now, &h, ret)) < 0 ||
	    *ret == QUEUE_STALE)
		goto out;
	if (h.state == QUEUE_RUNNING)
		goto out;
	if ((st = queue_stmt(q, QS_SET_RUNNING)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int64(st, 2, now);
	if ((r = queue_run(q, st)) < 0)
		goto out;
	queue_event_add(q, task, h.swarm, QUEUE_ASSIGNED, QUEUE_RUNNING);
out:
	return queue_op_end(q, r, false);
}

int
queue_heartbeat(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
		const char *worker, enum queue_verdict *ret, int64_t *ret_expires_ms)
{
	struct queue_held h;
	sqlite3_stmt *st;
	int64_t now, exp;
	int r;

	if (!queue_name_valid(worker))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((r = queue_held_by(q, task, attempt, lease, worker, now, &h, ret)) < 0 ||
	    *ret == QUEUE_STALE)
		goto out;
	exp = now + (int64_t)q->lim.lease_ms;
	if (exp > h.deadline)
		exp = h.deadline;
	if ((st = queue_stmt(q, QS_SET_EXPIRES)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int64(st, 2, exp);
	sqlite3_bind_int64(st, 3, now);
	if ((r = queue_run(q, st)) < 0)
		goto out;
	*ret = QUEUE_ACCEPTED;
	if (ret_expires_ms != NULL)
		*ret_expires_ms = exp;
out:
	return queue_op_end(q, r, false);
}

int
queue_output(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
	     const char *worker, const char *data, size_t len, enum queue_verdict *ret)
{
	struct queue_held h;
	sqlite3_stmt *st;
	const void *have;
	size_t have_len, keep;
	char *buf = NULL;
	bool truncated;
	int64_t now;
	int rc, r;

	if (!queue_name_valid(worker) || (data == NULL && len > 0))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((r = queue_held_by(q, task, attempt, lease, worker, now, &h, ret)) < 0 ||
	    *ret == QUEUE_STALE)
		goto out;
	if ((st = queue_stmt(q, QS_OUTPUT_GET)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		sqlite3_reset(st);
		r = SP_EDB;
		goto out;
	}
	truncated = sqlite3_column_int(st, 1) != 0;
	have = sqlite3_column_blob(st, 0);
	have_len = (size_t)sqlite3_column_bytes(st, 0);
	/* Once cut, later chunks are dropped: the kept output is a prefix. */
	if (truncated || len == 0) {
		sqlite3_reset(st);
		goto out;
	}
	buf = xmalloc(have_len + len);
	if (have_len > 0)
		memcpy(buf, have, have_len);
	memcpy(buf + have_len, data, len);
	sqlite3_reset(st);
	keep = queue_utf8_cut(buf, have_len + len, q->lim.output_max);
	if ((st = queue_stmt(q, QS_SET_OUTPUT)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int(st, 2, 0);
	sqlite3_bind_blob(st, 3, keep ? buf : "", (int)keep, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, keep < have_len + len ? 1 : 0);
	r = queue_run(q, st);
out:
	free(buf);
	return queue_op_end(q, r, false);
}

/* backoff_base * 2^(failures-1), capped. */
static int64_t
queue_backoff(const struct queue *q, unsigned failures)
{
	uint64_t d = q->lim.backoff_base_ms;
	unsigned i;

	for (i = 1; i < failures && d < q->lim.backoff_max_ms; i++)
		d *= 2;
	if (d > q->lim.backoff_max_ms)
		d = q->lim.backoff_max_ms;
	return (int64_t)d;
}

/*
 * A held attempt failed (result, expiry, timeout): retry after backoff or,
 * with the retries used up, fail with reason.
 */
static int
queue_fail_attempt(struct queue *q, int64_t task, const char *swarm, enum queue_state from,
		   unsigned failures, unsigned max_retries, const char *reason, int64_t now)
{
	enum queue_state to;
	sqlite3_stmt *st;
	int64_t not_before = 0;
	int r;

	failures++;
	if (failures > max_retries) {
		to = QUEUE_FAILED;
	} else {
		to = QUEUE_QUEUED;
		not_before = now + queue_backoff(q, failures);
	}
	if ((st = queue_stmt(q, QS_SETTLE)) == NULL)
		return SP_EDB;
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int(st, 2, to);
	sqlite3_bind_int(st, 3, (int)failures);
	sqlite3_bind_int64(st, 4, not_before);
	sqlite3_bind_text(st, 5, reason, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 6, now);
	if ((r = queue_run(q, st)) < 0)
		return r;
	if (to == QUEUE_FAILED && (r = queue_open_add(q, swarm, -1)) < 0)
		return r;
	queue_event_add(q, task, swarm, from, to);
	return 0;
}

int
queue_result(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
	     const char *worker, const struct queue_outcome *o, enum queue_verdict *ret)
{
	char reason[QUEUE_REASON_MAX + 1], msg[64];
	struct queue_held h;
	size_t out_len, rlen;
	sqlite3_stmt *st;
	int64_t now;
	int rc, r;

	if (!queue_name_valid(worker) || (o->output == NULL && o->output_len > 0))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((r = queue_held_get(q, task, &h)) < 0)
		goto out;

	/* Exactly once: the same attempt under the same lease was recorded already. */
	if ((st = queue_stmt(q, QS_RESULT_GET)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int64(st, 2, attempt);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret = sqlite3_column_int64(st, 0) == lease ? QUEUE_DUPLICATE : QUEUE_STALE;
		sqlite3_reset(st);
		goto out;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		r = queue_fail(q);
		goto out;
	}
	if (!queue_holds(&h, attempt, lease, worker, now)) {
		*ret = QUEUE_STALE;
		goto out;
	}

	if ((st = queue_stmt(q, QS_RESULT_PUT)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int64(st, 2, attempt);
	sqlite3_bind_int64(st, 3, lease);
	sqlite3_bind_int(st, 4, o->ok ? 1 : 0);
	sqlite3_bind_int64(st, 5, now);
	if ((r = queue_run(q, st)) < 0)
		goto out;

	/* Output in the result replaces what was streamed; none keeps it. */
	if (o->output != NULL) {
		out_len = queue_utf8_cut(o->output, o->output_len, q->lim.output_max);
		if ((st = queue_stmt(q, QS_SET_OUTPUT)) == NULL) {
			r = SP_EDB;
			goto out;
		}
		sqlite3_bind_blob(st, 3, o->output_len ? o->output : "", (int)out_len,
				  SQLITE_STATIC);
		sqlite3_bind_int(st, 4, out_len < o->output_len ? 1 : 0);
	} else if ((st = queue_stmt(q, QS_SET_EXIT)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int(st, 2, o->exit_code);
	if ((r = queue_run(q, st)) < 0)
		goto out;

	if (o->ok) {
		if ((st = queue_stmt(q, QS_SETTLE)) == NULL) {
			r = SP_EDB;
			goto out;
		}
		sqlite3_bind_int64(st, 1, task);
		sqlite3_bind_int(st, 2, QUEUE_SUCCEEDED);
		sqlite3_bind_int(st, 3, (int)h.failures);
		sqlite3_bind_int64(st, 4, 0);
		sqlite3_bind_null(st, 5);
		sqlite3_bind_int64(st, 6, now);
		if ((r = queue_run(q, st)) < 0 || (r = queue_open_add(q, h.swarm, -1)) < 0)
			goto out;
		queue_event_add(q, task, h.swarm, h.state, QUEUE_SUCCEEDED);
	} else {
		if (o->reason == NULL) {
			snprintf(msg, sizeof(msg), "exit code %d", o->exit_code);
			rlen = strlen(msg);
			memcpy(reason, msg, rlen + 1);
		} else {
			rlen = queue_utf8_cut(o->reason, strlen(o->reason), QUEUE_REASON_MAX);
			memcpy(reason, o->reason, rlen);
			reason[rlen] = '\0';
		}
		r = queue_fail_attempt(q, task, h.swarm, h.state, h.failures, h.max_retries,
				       reason, now);
		if (r < 0)
			goto out;
	}
	*ret = QUEUE_ACCEPTED;
out:
	return queue_op_end(q, r, false);
}

/* ---- the daemon's side ---- */

struct queue_expired {
	int64_t id;
	char *swarm;
	enum queue_state state;
	int64_t deadline;
	unsigned failures, max_retries;
	uint64_t timeout_ms;
};

/*
 * The common end of queue_sweep() and queue_worker_lost(): unless r already
 * failed, fail the attempt of each collected task (with why, or when why is
 * NULL the reason its deadline or lease gives), then free what was collected
 * and end the operation. *ret_n gets n on success.
 */
static int
queue_fail_collected(struct queue *q, int r, struct queue_expired *x, size_t n,
		     const char *why, int64_t now, size_t *ret_n)
{
	char reason[64];
	size_t i;

	for (i = 0; r == 0 && i < n; i++) {
		if (why == NULL && now >= x[i].deadline)
			snprintf(reason, sizeof(reason), "timed out after %" PRIu64 " ms",
				 x[i].timeout_ms);
		else if (why == NULL)
			snprintf(reason, sizeof(reason), "lease expired");
		r = queue_fail_attempt(q, x[i].id, x[i].swarm, x[i].state, x[i].failures,
				       x[i].max_retries, why != NULL ? why : reason, now);
	}
	for (i = 0; i < n; i++)
		free(x[i].swarm);
	free(x);
	r = queue_op_end(q, r, false);
	if (r == 0 && ret_n != NULL)
		*ret_n = n;
	return r;
}

int
queue_sweep(struct queue *q, size_t max, size_t *ret_n)
{
	struct queue_expired *x = NULL;
	sqlite3_stmt *st;
	size_t n = 0, cap = 0;
	int64_t now;
	int rc, r;

	if (ret_n != NULL)
		*ret_n = 0;
	if (max == 0)
		return 0;
	if (max > QUEUE_BATCH_MAX_MAX)
		max = QUEUE_BATCH_MAX_MAX;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((st = queue_stmt(q, QS_EXPIRED)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
	/* Collect first: updating rows under a running SELECT on them is asking for trouble. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			x = xreallocarray(x, cap, sizeof(*x));
		}
		x[n].id = sqlite3_column_int64(st, 0);
		x[n].swarm = xstrdup((const char *)sqlite3_column_text(st, 1));
		x[n].state = (enum queue_state)sqlite3_column_int(st, 2);
		x[n].deadline = sqlite3_column_int64(st, 3);
		x[n].failures = (unsigned)sqlite3_column_int(st, 4);
		x[n].max_retries = (unsigned)sqlite3_column_int(st, 5);
		x[n].timeout_ms = (uint64_t)sqlite3_column_int64(st, 6);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = queue_fail(q);
out:
	return queue_fail_collected(q, r, x, n, NULL, now, ret_n);
}

struct queue_heldrow {
	int64_t id;
	char *swarm;
	char *worker;
	enum queue_state state;
	int64_t deadline;
};

int
queue_recover(struct queue *q, bool (*alive)(void *arg, const char *worker), void *arg,
	      size_t *ret_requeued)
{
	struct queue_heldrow *rows = NULL;
	size_t n = 0, cap = 0, i, requeued = 0;
	sqlite3_stmt *st;
	int64_t now, exp;
	int rc, r;

	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((st = queue_stmt(q, QS_HELD_ALL)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *w = sqlite3_column_text(st, 3);

		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			rows = xreallocarray(rows, cap, sizeof(*rows));
		}
		rows[n].id = sqlite3_column_int64(st, 0);
		rows[n].swarm = xstrdup((const char *)sqlite3_column_text(st, 1));
		rows[n].state = (enum queue_state)sqlite3_column_int(st, 2);
		rows[n].worker = xstrdup(w ? (const char *)w : "");
		rows[n].deadline = sqlite3_column_int64(st, 4);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		r = queue_fail(q);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (alive == NULL || !alive(arg, rows[i].worker)) {
			/* Not the task's fault: back to the queue, no failure counted. */
			if ((st = queue_stmt(q, QS_REQUEUE)) == NULL) {
				r = SP_EDB;
				goto out;
			}
			sqlite3_bind_int64(st, 1, rows[i].id);
			sqlite3_bind_int64(st, 2, now);
			if ((r = queue_run(q, st)) < 0)
				goto out;
			queue_event_add(q, rows[i].id, rows[i].swarm, rows[i].state, QUEUE_QUEUED);
			requeued++;
		} else {
			exp = now + (int64_t)q->lim.lease_ms;
			if (exp > rows[i].deadline)
				exp = rows[i].deadline;
			if ((st = queue_stmt(q, QS_SET_EXPIRES)) == NULL) {
				r = SP_EDB;
				goto out;
			}
			sqlite3_bind_int64(st, 1, rows[i].id);
			sqlite3_bind_int64(st, 2, exp);
			sqlite3_bind_int64(st, 3, now);
			if ((r = queue_run(q, st)) < 0)
				goto out;
		}
	}
out:
	for (i = 0; i < n; i++) {
		free(rows[i].swarm);
		free(rows[i].worker);
	}
	free(rows);
	r = queue_op_end(q, r, true);
	if (r == 0 && ret_requeued != NULL)
		*ret_requeued = requeued;
	return r;
}

int
queue_worker_lost(struct queue *q, const char *worker, const char *reason, size_t *ret_n)
{
	struct queue_expired *x = NULL;
	char why[QUEUE_REASON_MAX + 1];
	size_t n = 0, cap = 0, len;
	sqlite3_stmt *st;
	int64_t now;
	int rc, r;

	if (ret_n != NULL)
		*ret_n = 0;
	if (!queue_name_valid(worker))
		return SP_EINVAL;
	if (reason == NULL)
		reason = "worker lost";
	len = queue_utf8_cut(reason, strlen(reason), QUEUE_REASON_MAX);
	memcpy(why, reason, len);
	why[len] = '\0';
	if ((r = queue_op_begin(q)) < 0)
		return r;
	now = queue_now(q);
	if ((st = queue_stmt(q, QS_BY_WORKER)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, worker, -1, SQLITE_TRANSIENT);
	/* A worker holds a task or two; the bound only guards against a runaway table. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < QUEUE_LIST_MAX) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4;
			x = xreallocarray(x, cap, sizeof(*x));
		}
		memset(&x[n], 0, sizeof(x[n]));
		x[n].id = sqlite3_column_int64(st, 0);
		x[n].swarm = xstrdup((const char *)sqlite3_column_text(st, 1));
		x[n].state = (enum queue_state)sqlite3_column_int(st, 2);
		x[n].failures = (unsigned)sqlite3_column_int(st, 3);
		x[n].max_retries = (unsigned)sqlite3_column_int(st, 4);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = queue_fail(q);
out:
	return queue_fail_collected(q, r, x, n, why, now, ret_n);
}

int
queue_purge_swarm(struct queue *q, const char *swarm, size_t *ret_n)
{
	sqlite3_stmt *st;
	size_t n = 0;
	int r;

	if (!queue_name_valid(swarm))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	if ((st = queue_stmt(q, QS_PURGE_RESULTS)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	if ((r = queue_run(q, st)) < 0)
		goto out;
	queue_counted_drop(q, swarm);
	if ((st = queue_stmt(q, QS_PURGE_TASKS)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	if ((r = queue_run(q, st)) < 0)
		goto out;
	n = (size_t)sqlite3_changes(q->db);
	if ((st = queue_stmt(q, QS_OPEN_DROP)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	r = queue_run(q, st);
out:
	r = queue_op_end(q, r, true);
	if (r == 0 && ret_n != NULL)
		*ret_n = n;
	return r;
}

int
queue_cancel(struct queue *q, int64_t task)
{
	struct queue_held h;
	sqlite3_stmt *st;
	int r;

	if ((r = queue_op_begin(q)) < 0)
		return r;
	if ((r = queue_held_get(q, task, &h)) < 0)
		goto out;
	if (queue_state_terminal(h.state)) {
		r = SP_ECONFLICT;
		goto out;
	}
	if ((st = queue_stmt(q, QS_SETTLE)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, task);
	sqlite3_bind_int(st, 2, QUEUE_CANCELLED);
	sqlite3_bind_int(st, 3, (int)h.failures);
	sqlite3_bind_int64(st, 4, 0);
	sqlite3_bind_text(st, 5, "cancelled", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, queue_now(q));
	if ((r = queue_run(q, st)) < 0 || (r = queue_open_add(q, h.swarm, -1)) < 0)
		goto out;
	queue_event_add(q, task, h.swarm, h.state, QUEUE_CANCELLED);
out:
	return queue_op_end(q, r, true);
}

int
queue_cancel_swarm(struct queue *q, const char *swarm, size_t *ret_n)
{
	sqlite3_stmt *st;
	size_t n;
	int rc, r;

	if (!queue_name_valid(swarm))
		return SP_EINVAL;
	if ((r = queue_op_begin(q)) < 0)
		return r;
	/* Events only when someone listens: a big swarm's ids are not read for nothing. */
	if (q->event_cb != NULL) {
		if ((st = queue_stmt(q, QS_SWARM_OPEN)) == NULL) {
			r = SP_EDB;
			goto out;
		}
		sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			queue_event_add(q, sqlite3_column_int64(st, 0), swarm,
					(enum queue_state)sqlite3_column_int(st, 1), QUEUE_CANCELLED);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			r = queue_fail(q);
			goto out;
		}
	}
	/* Without a listener there are no events to move the counts by. */
	queue_counted_drop(q, swarm);
	if ((st = queue_stmt(q, QS_CANCEL_SWARM)) == NULL) {
		r = SP_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, queue_now(q));
	if ((r = queue_run(q, st)) < 0)
		goto out;
	n = (size_t)sqlite3_changes(q->db);
	if ((r = queue_open_add(q, swarm, -(int64_t)n)) < 0)
		goto out;
	if (ret_n != NULL)
		*ret_n = n;
out:
	return queue_op_end(q, r, true);
}

/* ---- reads ---- */

void
queue_task_done(struct queue_task *t)
{
	if (t == NULL)
		return;
	free(t->swarm);
	free(t->tenant);
	free(t->body);
	free(t->worker);
	free(t->output);
	free(t->reason);
	memset(t, 0, sizeof(*t));
}

void
queue_tasks_free(struct queue_task *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		queue_task_done(&t[i]);
	free(t);
}

static char *
queue_col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? xstrdup((const char *)t) : NULL;
}

/* A blob column as a NUL-terminated copy, or NULL for SQL NULL. */
static char *
queue_col_blob(sqlite3_stmt *st, int i, size_t *len)
{
	const void *b;
	char *p;

	*len = 0;
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return NULL;
	b = sqlite3_column_blob(st, i);
	*len = (size_t)sqlite3_column_bytes(st, i);
	p = xmalloc(*len + 1);
	if (*len > 0)
		memcpy(p, b, *len);
	p[*len] = '\0';
	return p;
}

static void
queue_task_read(sqlite3_stmt *st, struct queue_task *t)
{
	memset(t, 0, sizeof(*t));
	t->id = sqlite3_column_int64(st, 0);
	t->swarm = queue_col_text(st, 1);
	t->tenant = queue_col_text(st, 2);
	t->state = (enum queue_state)sqlite3_column_int(st, 3);
	t->priority = sqlite3_column_int(st, 4);
	t->body = queue_col_blob(st, 5, &t->body_len);
	t->timeout_ms = (uint64_t)sqlite3_column_int64(st, 6);
	t->max_retries = (unsigned)sqlite3_column_int(st, 7);
	t->attempt = (uint32_t)sqlite3_column_int64(st, 8);
	t->failures = (unsigned)sqlite3_column_int(st, 9);
	t->not_before_ms = sqlite3_column_int64(st, 10);
	t->worker = queue_col_text(st, 11);
	t->lease_expires_ms = sqlite3_column_int64(st, 12);
	t->deadline_ms = sqlite3_column_int64(st, 13);
	t->exit_code = sqlite3_column_int(st, 14);
	t->output = queue_col_blob(st, 15, &t->output_len);
	t->truncated = sqlite3_column_int(st, 16) != 0;
	t->reason = queue_col_text(st, 17);
	t->created_ms = sqlite3_column_int64(st, 18);
	t->updated_ms = sqlite3_column_int64(st, 19);
}

int
queue_get(struct queue *q, int64_t id, struct queue_task *ret)
{
	sqlite3_stmt *st;
	int rc;

	if ((st = queue_stmt(q, QS_GET)) == NULL)
		return SP_EDB;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		queue_task_read(st, ret);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? SP_ENOTFOUND : queue_fail(q);
}

int
queue_list(struct queue *q, const char *swarm, int64_t after_id, size_t limit,
	   struct queue_task **ret, size_t *n)
{
	struct queue_task *rows;
	sqlite3_stmt *st;
	size_t count = 0;
	int rc;

	if (!queue_name_valid(swarm) || limit < 1 || limit > QUEUE_LIST_MAX)
		return SP_EINVAL;
	if ((st = queue_stmt(q, QS_LIST)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, after_id);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	rows = xcalloc(limit, sizeof(*rows));
	while (count < limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
		queue_task_read(st, &rows[count++]);
	if (count == limit)
		rc = SQLITE_DONE;
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		queue_tasks_free(rows, count);
		return queue_fail(q);
	}
	*ret = rows;
	*n = count;
	return 0;
}

int
queue_counts(struct queue *q, const char *swarm, struct queue_counts *ret)
{
	struct queue_counts c = { { 0 } };
	struct queue_counted *k;
	sqlite3_stmt *st;
	int rc, s;

	if (!queue_name_valid(swarm))
		return SP_EINVAL;
	if ((k = queue_counted_find(q, swarm)) != NULL) {
		*ret = k->c;
		return 0;
	}
	if ((st = queue_stmt(q, QS_COUNTS)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, swarm, -1, SQLITE_TRANSIENT);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		s = sqlite3_column_int(st, 0);
		if (s >= 0 && s < QUEUE_STATE__COUNT)
			c.n[s] = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return queue_fail(q);
	/* Keep it; when full, an entry is replaced in turn. */
	if (q->ncounted < QUEUE_COUNTS_KEPT)
		k = &q->counted[q->ncounted++];
	else
		k = &q->counted[q->next_evict++ % QUEUE_COUNTS_KEPT];
	snprintf(k->swarm, sizeof(k->swarm), "%s", swarm);
	k->c = c;
	*ret = c;
	return 0;
}

/*
 * Unit tests of the swarm module against the fake provider, the real sandbox
 * manager, queue and SQLite store (no worker channel: the test leases and
 * answers tasks as the agents would): validation that changes nothing,
 * agents recorded before their sandbox exists, completion and results, an
 * agent whose sandbox dies is replaced and its task re-queued, agents that
 * keep dying fail the swarm with a reason, delete tears down, a restart
 * reloads swarms and agents, and agents' messages: durable across a restart,
 * in order, received once, bounded per inbox, refused by the topology without
 * a trace, addressed to a slot so a replacement gets them, gone with the swarm.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include <sandpit/error.h>

#include "config.h"
#include "fake_provider.h"
#include "queue.h"
#include "sandbox.h"
#include "store.h"
#include "swarm.h"
#include "xmalloc.h"

static const struct sp_provider_ops *const test_ops[] = { &fake_provider_ops, NULL };

struct env {
	uv_loop_t loop;
	char dir[64];
	struct store *store;
	struct queue *queue;
	struct config *cfg;
	struct sp_host host;
	struct sandbox_mgr *mgr;
	struct swarm_mgr *sw;
	int closed;
};

static const char *
env_conf(const struct sp_host *host, const char *name)
{
	struct env *e = host->core;

	return config_get(e->cfg, name);
}

static void
env_log(int prio, const char *fmt, ...)
{
	(void)prio;
	(void)fmt;
}

static void
run_for(struct env *e, uint64_t ms)
{
	uint64_t end;

	uv_update_time(&e->loop);
	end = uv_now(&e->loop) + ms;
	while (uv_now(&e->loop) < end) {
		uv_run(&e->loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(&e->loop);
	}
}

static json_t *
get(struct env *e, const char *id)
{
	json_t *j = NULL;

	assert_int_equal(swarm_get(e->sw, "default", id, &j), 0);
	return j;
}

static bool
state_is(struct env *e, const char *id, const char *state)
{
	json_t *j = get(e, id);
	bool ok = strcmp(json_string_value(json_object_get(j, "state")), state) == 0;

	json_decref(j);
	return ok;
}

/* Spin until swarm id is in state (at most ~5 s). */
static void
wait_state(struct env *e, const char *id, const char *state)
{
	for (int i = 0; i < 500 && !state_is(e, id, state); i++)
		run_for(e, 10);
	assert_true(state_is(e, id, state));
}

static long long
sql_count(struct env *e, const char *sql)
{
	sqlite3_stmt *st;
	long long n;

	assert_int_equal(sqlite3_prepare_v2(store_db(e->store), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void
open_mgrs(struct env *e)
{
	struct sandbox_hooks inner = { 0 }, hooks;
	char err[256];

	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, test_ops, &e->mgr), 0);
	assert_int_equal(queue_open(e->store, NULL, NULL, NULL, &e->queue), 0);
	assert_int_equal(swarm_mgr_new(&(struct swarm_options){ .loop = &e->loop,
		.store = e->store, .queue = e->queue, .mgr = e->mgr, .workers = NULL,
		.cfg = (const struct config *const *)&e->cfg }, &e->sw, err, sizeof(err)), 0);
	swarm_hooks(e->sw, &inner, &hooks);
	sandbox_mgr_set_hooks(e->mgr, &hooks);
	sandbox_mgr_start(e->mgr);
	swarm_mgr_start(e->sw);
	run_for(e, 30);
}

static void
on_closed(void *arg)
{
	((struct env *)arg)->closed++;
}

static void
close_mgrs(struct env *e)
{
	e->closed = 0;
	swarm_mgr_close(e->sw, on_closed, e);
	while (e->closed < 1)
		uv_run(&e->loop, UV_RUN_ONCE);
	sandbox_mgr_close(e->mgr, on_closed, e);
	while (e->closed < 2)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	queue_close(e->queue);
}

static int
setup(void **state)
{
	struct env *e = xcalloc(1, sizeof(*e));
	char err[256], *db;

	fake_reset();
	snprintf(e->dir, sizeof(e->dir), "/tmp/sandpit-test-swarm.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	assert_int_equal(uv_loop_init(&e->loop), 0);
	xasprintf(&db, "%s/db", e->dir);
	assert_int_equal(store_open(db, &e->store), 0);
	free(db);
	assert_int_equal(config_load(NULL, test_ops, &e->cfg, err, sizeof(err)), 0);
	free(e->cfg->default_provider);
	e->cfg->default_provider = xstrdup("fake");
	e->cfg->max_sandboxes = 6;
	e->cfg->prices = xstrdup("fake 1 0");
	e->cfg->reconcile_interval_ms = 20;
	e->host = (struct sp_host){
		.loop = &e->loop, .instance = "inst-test", .state_dir = e->dir,
		.worker_image = "sandpit/worker:test", .conf = env_conf, .log = env_log, .core = e,
	};
	open_mgrs(e);
	*state = e;
	return 0;
}

static int
teardown(void **state)
{
	struct env *e = *state;
	char *cmd;

	close_mgrs(e);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	store_close(e->store);
	config_free(e->cfg);
	xasprintf(&cmd, "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(e);
	return 0;
}

static char *
create(struct env *e, const char *text, int want, char *err, size_t errlen)
{
	json_t *body = json_loads(text, 0, NULL), *ret = NULL;
	char *id = NULL;
	int r;

	assert_non_null(body);
	r = swarm_create(e->sw, "default", body, &ret, err, errlen);
	json_decref(body);
	assert_int_equal(r, want);
	if (r == 0) {
		id = xstrdup(json_string_value(json_object_get(ret, "id")));
		json_decref(ret);
	}
	return id;
}

static void
test_bad_input_changes_nothing(void **state)
{
	struct env *e = *state;
	static const char *const bad[] = {
		"{}", "{\"agents\":0}", "{\"agents\":1025}", "{\"agents\":\"3\"}",
		"{\"agents\":2,\"topology\":\"tree\"}", "{\"agents\":2,\"placement\":\"mars\"}",
		"{\"agents\":2,\"template\":{\"colour\":1}}", "{\"agents\":2,\"template\":[]}",
		"{\"agents\":2,\"retry_limit\":101}", "{\"agents\":2,\"ttl\":\"soon\"}",
		"{\"agents\":2,\"idle_timeout\":5}", "{\"agents\":2,\"tasks\":{}}",
		"{\"agents\":2,\"tasks\":[{\"cmd\":[]}]}", "{\"agents\":2,\"tasks\":[true]}",
		"{\"agents\":2,\"tasks\":[{\"cmd\":[\"x\"],\"priority\":5000}]}",
		"{\"agents\":2,\"extra\":1}", "{\"agents\":2,\"template\":{\"memory\":\"1t\"}}",
	};
	char err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_null(create(e, bad[i], SP_EINVAL, err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
	/* The host cap names itself and the counts. */
	assert_null(create(e, "{\"agents\":7}", SP_ELIMIT, err, sizeof(err)));
	assert_non_null(strstr(err, "max_sandboxes: 0 of 6"));
	/* The tenant cap too, naming the tenant. */
	e->cfg->tenant_max_sandboxes = 4;
	sandbox_mgr_set_config(e->mgr, e->cfg);
	assert_null(create(e, "{\"agents\":5}", SP_ELIMIT, err, sizeof(err)));
	assert_non_null(strstr(err, "tenant_max_sandboxes: 0 of 4 starting or running for tenant "
				    "'default'"));
	assert_int_equal(sql_count(e, "SELECT count(*) FROM swarms"), 0);
	assert_int_equal(sql_count(e, "SELECT count(*) FROM swarm_agents"), 0);
	assert_int_equal(sql_count(e, "SELECT count(*) FROM queue_tasks"), 0);
	run_for(e, 30);
	assert_int_equal(fake_count(), 0);
}

/* Lease the next task of swarm as sandbox and answer it with ok. 0, or -EAGAIN. */
static int
work_one(struct env *e, const char *swarm, const char *sandbox, bool ok)
{
	struct queue_grant g;
	struct queue_outcome o = { .ok = ok, .exit_code = ok ? 0 : 1, .output = "done\n",
		.output_len = 5 };
	enum queue_verdict v;
	int r = queue_lease(e->queue, swarm, sandbox, &g, NULL);

	if (r < 0)
		return r;
	assert_int_equal(queue_result(e->queue, g.task, g.attempt, g.lease, sandbox, &o, &v), 0);
	assert_int_equal(v, QUEUE_ACCEPTED);
	queue_grant_done(&g);
	return 0;
}

static const char *
agent(json_t *sw, size_t i)
{
	return json_string_value(json_array_get(json_object_get(json_object_get(sw, "agents"),
						"sandboxes"), i));
}

static void
test_completes_with_results(void **state)
{
	struct env *e = *state;
	char err[512], sb[32];
	char *id = create(e, "{\"agents\":3,\"topology\":\"ring\","
			  "\"tasks\":[\"echo a\",{\"cmd\":[\"true\"],\"priority\":3},\"echo c\"]}",
			  0, err, sizeof(err));
	json_t *j, *body, *ret;

	/* Every agent was recorded before (with) its sandbox row. */
	assert_int_equal(sql_count(e, "SELECT count(*) FROM swarm_agents a JOIN sandboxes s"
				   " ON s.id = a.sandbox"), 3);
	wait_state(e, id, "running");
	assert_int_equal(fake_count(), 3);
	j = get(e, id);
	snprintf(sb, sizeof(sb), "%s", agent(j, 0));
	json_decref(j);
	while (work_one(e, id, sb, true) == 0)
		;
	wait_state(e, id, "completed");
	j = get(e, id);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tasks"),
				"succeeded")), 3);
	assert_true(json_real_value(json_object_get(j, "success_rate")) == 1.0);
	assert_int_equal(json_array_size(json_object_get(j, "results")), 3);
	assert_string_equal(json_string_value(json_object_get(j, "output")), "done\ndone\ndone\n");
	/* Priced at 1 per CPU-second (fake sandboxes get 1 CPU): the amount is positive. */
	assert_true(json_real_value(json_object_get(json_object_get(j, "cost"),
						    "sandbox_seconds")) > 0);
	assert_true(atof(json_string_value(json_object_get(json_object_get(j, "cost"),
							   "amount"))) > 0);
	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "cost"),
							 "unpriced")), 0);
	json_decref(j);
	/* More tasks make it run again; a failing one is retried (retry_limit 2) then fails. */
	body = json_loads("{\"tasks\":[\"exit 1\"]}", 0, NULL);
	assert_int_equal(swarm_add_tasks(e->sw, "default", id, body, &ret, err, sizeof(err)), 0);
	json_decref(body);
	json_decref(ret);
	assert_true(state_is(e, id, "running"));
	for (int i = 0; i < 3; i++) {
		int r;

		while ((r = work_one(e, id, sb, false)) == -EAGAIN)
			run_for(e, 50);
		assert_int_equal(r, 0);
	}
	wait_state(e, id, "completed");
	j = get(e, id);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tasks"),
				"failed")), 1);
	json_decref(j);
	/* Another tenant sees nothing. */
	assert_int_equal(swarm_get(e->sw, "other", id, &j), SP_ENOTFOUND);
	free(id);
}

static void
test_lost_agent_replaced_and_task_requeued(void **state)
{
	struct env *e = *state;
	char err[512], sb[32], ref[32];
	char *id = create(e, "{\"agents\":2,\"tasks\":[\"sleep 1\"]}", 0, err, sizeof(err));
	struct queue_grant g;
	struct queue_task t;
	size_t n;
	json_t *j;

	wait_state(e, id, "running");
	j = get(e, id);
	snprintf(sb, sizeof(sb), "%s", agent(j, 0));
	json_decref(j);
	assert_int_equal(queue_lease(e->queue, id, sb, &g, NULL), 0);
	/* The container dies (OOM); the worker channel would call queue_worker_lost. */
	snprintf(ref, sizeof(ref), "%s", fake_find(sb)->ref);
	fake_set_state(ref, SP_INST_EXITED, 137, true);
	fake_emit(ref);
	assert_int_equal(queue_worker_lost(e->queue, sb, "the sandbox stopped", &n), 0);
	assert_int_equal(n, 1);
	run_for(e, 300);
	j = get(e, id);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "agents"), "lost")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "agents"), "live")), 2);
	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "agents"),
				"sandboxes")), 2);
	json_decref(j);
	assert_int_equal(sql_count(e, "SELECT count(*) FROM swarm_agents"), 3);
	assert_int_equal(queue_get(e->queue, g.task, &t), 0);
	assert_int_equal(t.state, QUEUE_QUEUED);
	queue_task_done(&t);
	queue_grant_done(&g);
	free(id);
}

static void
test_agents_that_keep_dying_fail_the_swarm(void **state)
{
	struct env *e = *state;
	char err[512];
	char *id = create(e, "{\"agents\":1,\"tasks\":[\"true\"]}", 0, err, sizeof(err));
	json_t *j;

	for (int i = 0; i < 10 && !state_is(e, id, "failed"); i++) {
		char ref[32];

		wait_state(e, id, "running");
		j = get(e, id);
		snprintf(ref, sizeof(ref), "%s", fake_find(agent(j, 0))->ref);
		json_decref(j);
		fake_set_state(ref, SP_INST_EXITED, 1, false);
		fake_emit(ref);
		run_for(e, 100);
	}
	assert_true(state_is(e, id, "failed"));
	j = get(e, id);
	assert_non_null(strstr(json_string_value(json_object_get(j, "reason")),
			       "agents keep dying"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tasks"),
				"cancelled")), 1);
	json_decref(j);
	free(id);
}

static void
test_delete_tears_down(void **state)
{
	struct env *e = *state;
	char err[512];
	char *id = create(e, "{\"agents\":3,\"tasks\":[\"true\",\"true\"]}", 0, err, sizeof(err));
	json_t *j;

	wait_state(e, id, "running");
	assert_int_equal(fake_count(), 3);
	assert_int_equal(swarm_delete(e->sw, "default", id, &j), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "cancelled")), 2);
	json_decref(j);
	run_for(e, 200);
	assert_int_equal(fake_count(), 0);
	assert_true(state_is(e, id, "deleted"));
	j = json_loads("{\"cmd\":[\"true\"]}", 0, NULL);
	{
		json_t *ret;

		assert_int_equal(swarm_add_tasks(e->sw, "default", id, j, &ret, err, sizeof(err)),
				 SP_ECONFLICT);
	}
	json_decref(j);
	free(id);
}

static void
test_restart_reloads(void **state)
{
	struct env *e = *state;
	char err[512], sb[32];
	char *id = create(e, "{\"agents\":2,\"tasks\":[\"true\"]}", 0, err, sizeof(err));
	json_t *j;

	wait_state(e, id, "running");
	close_mgrs(e);
	open_mgrs(e);
	j = get(e, id);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "agents"), "live")), 2);
	snprintf(sb, sizeof(sb), "%s", agent(j, 1));
	json_decref(j);
	assert_int_equal(work_one(e, id, sb, true), 0);
	wait_state(e, id, "completed");
	assert_int_equal(fake_count(), 2);
	free(id);
}

static void
test_ttl_and_idle_timeout(void **state)
{
	struct env *e = *state;
	char err[512], sb[32];
	char *ttl = create(e, "{\"agents\":1,\"ttl\":\"1s\",\"tasks\":[\"sleep 100\"]}", 0, err,
			   sizeof(err));
	char *idle = create(e, "{\"agents\":1,\"idle_timeout\":1000,\"tasks\":[\"true\"]}", 0, err,
			    sizeof(err));
	json_t *j;

	wait_state(e, idle, "running");
	j = get(e, idle);
	snprintf(sb, sizeof(sb), "%s", agent(j, 0));
	json_decref(j);
	assert_int_equal(work_one(e, idle, sb, true), 0);
	wait_state(e, idle, "completed");
	/* Past its ttl the swarm fails with the reason and its task is cancelled. */
	wait_state(e, ttl, "failed");
	j = get(e, ttl);
	assert_non_null(strstr(json_string_value(json_object_get(j, "reason")), "ttl"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tasks"),
				"cancelled")), 1);
	json_decref(j);
	/* Idle past idle_timeout: its agents go, the swarm stays completed. */
	for (int i = 0; i < 300 && fake_count() > 0; i++)
		run_for(e, 10);
	assert_int_equal(fake_count(), 0);
	assert_true(state_is(e, idle, "completed"));
	free(ttl);
	free(idle);
}

static void
test_max_starts(void **state)
{
	struct env *e = *state;
	char err[512];
	char *id;
	long long most = 0;

	e->cfg->max_starts = 1;
	sandbox_mgr_set_config(e->mgr, e->cfg);
	fake_set_delay(FAKE_CREATE, 30);
	id = create(e, "{\"agents\":3}", 0, err, sizeof(err));
	/* Every agent is asked for at once; the manager creates one at a time. */
	for (int i = 0; i < 500 && fake_count() < 3; i++) {
		long long n = fake_calls(FAKE_CREATE) -
			      sql_count(e, "SELECT count(*) FROM sandboxes WHERE state = 'running'");

		most = n > most ? n : most;
		run_for(e, 5);
	}
	for (int i = 0; i < 100 && !state_is(e, id, "running"); i++)
		run_for(e, 5);
	assert_true(state_is(e, id, "running"));
	assert_int_equal(most, 1);
	assert_int_equal(fake_count(), 3);
	free(id);
}

/* --- messages between agents --- */

static int
send_msg(struct env *e, const char *from, const char *to_json, const char *body_json,
	 size_t *delivered, char *err, size_t errlen)
{
	json_t *to = json_loads(to_json, JSON_DECODE_ANY, NULL);
	json_t *body = body_json ? json_loads(body_json, JSON_DECODE_ANY, NULL) : NULL;
	size_t n = 999;
	int r;

	assert_non_null(to);
	r = swarm_send(e->sw, from, to, body, &n, err, errlen);
	json_decref(to);
	json_decref(body);
	if (delivered != NULL)
		*delivered = r == 0 ? n : 0;
	return r;
}

/* What sandbox's agent receives, as compact JSON (the caller frees). */
static char *
receive(struct env *e, const char *sandbox)
{
	char err[256];
	json_t *msgs = NULL;
	char *text;

	assert_int_equal(swarm_receive(e->sw, sandbox, &msgs, err, sizeof(err)), 0);
	text = json_dumps(msgs, JSON_COMPACT);
	json_decref(msgs);
	return text;
}

static long long
inbox_rows(struct env *e, const char *swarm, int slot)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM swarm_messages WHERE swarm = '%s'"
		 " AND (%d < 0 OR slot = %d)", swarm, slot, slot);
	return sql_count(e, sql);
}

/* The live agents' sandboxes of swarm id, in the order they joined. */
static void
agents_of(struct env *e, const char *id, char sb[][32], size_t n)
{
	json_t *j = get(e, id);

	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "agents"),
				"sandboxes")), n);
	for (size_t i = 0; i < n; i++)
		snprintf(sb[i], 32, "%s", agent(j, i));
	json_decref(j);
}

static void
test_messages_durable_and_ordered(void **state)
{
	struct env *e = *state;
	char err[512], sb[3][32], *got;
	char *id = create(e, "{\"agents\":3,\"topology\":\"mesh\"}", 0, err, sizeof(err));
	size_t n;

	wait_state(e, id, "running");
	agents_of(e, id, sb, 3);
	assert_int_equal(send_msg(e, sb[0], "1", "\"first\"", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(send_msg(e, sb[0], "1", "{\"n\":2}", &n, err, sizeof(err)), 0);
	assert_int_equal(send_msg(e, sb[2], "1", "[3]", &n, err, sizeof(err)), 0);
	assert_int_equal(send_msg(e, sb[0], "\"*\"", "null", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	/* A daemon restart: the manager closes and re-opens on the same store. */
	close_mgrs(e);
	open_mgrs(e);
	got = receive(e, sb[1]);
	assert_string_equal(got, "[{\"from\":0,\"body\":\"first\"},{\"from\":0,\"body\":{\"n\":2}},"
			    "{\"from\":2,\"body\":[3]},{\"from\":0,\"body\":null}]");
	free(got);
	/* Received once: the inbox is empty now, the other one untouched. */
	got = receive(e, sb[1]);
	assert_string_equal(got, "[]");
	free(got);
	assert_int_equal(inbox_rows(e, id, 1), 0);
	assert_int_equal(inbox_rows(e, id, 2), 1);
	/* Deleting the swarm removes what is still waiting. */
	assert_int_equal(send_msg(e, sb[2], "0", "\"bye\"", &n, err, sizeof(err)), 0);
	assert_int_equal(inbox_rows(e, id, -1), 2);
	{
		json_t *j;

		assert_int_equal(swarm_delete(e->sw, "default", id, &j), 0);
		json_decref(j);
	}
	assert_int_equal(inbox_rows(e, id, -1), 0);
	assert_int_equal(send_msg(e, sb[0], "1", "1", &n, err, sizeof(err)), SP_ENOTFOUND);
	assert_int_equal(inbox_rows(e, id, -1), 0);
	free(id);
}

static void
test_full_inbox_refuses(void **state)
{
	struct env *e = *state;
	char err[512], sb[3][32], *got;
	char *id = create(e, "{\"agents\":3,\"topology\":\"mesh\"}", 0, err, sizeof(err));
	size_t n;

	wait_state(e, id, "running");
	agents_of(e, id, sb, 3);
	for (int i = 0; i < SWARM_INBOX_MAX; i++)
		assert_int_equal(send_msg(e, sb[0], "1", "\"x\"", &n, err, sizeof(err)), 0);
	err[0] = '\0';
	assert_int_equal(send_msg(e, sb[2], "1", "\"one too many\"", &n, err, sizeof(err)),
			 SP_ELIMIT);
	assert_non_null(strstr(err, "agent 1's inbox is full"));
	assert_int_equal(inbox_rows(e, id, 1), SWARM_INBOX_MAX);
	/* A broadcast with one full target stores in no inbox at all. */
	assert_int_equal(send_msg(e, sb[0], "\"*\"", "\"all\"", &n, err, sizeof(err)),
			 SP_ELIMIT);
	assert_int_equal(inbox_rows(e, id, 2), 0);
	assert_int_equal(inbox_rows(e, id, -1), SWARM_INBOX_MAX);
	/* Receiving makes room. */
	got = receive(e, sb[1]);
	free(got);
	assert_int_equal(send_msg(e, sb[0], "\"*\"", "\"all\"", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(inbox_rows(e, id, -1), 2);
	free(id);
}

static void
test_forbidden_and_bad_messages_store_nothing(void **state)
{
	struct env *e = *state;
	char err[512], sb[6][32], big[SWARM_MESSAGE_MAX + 8];
	/* Hierarchical, six agents: root 0, lead 1, workers 2-5 under lead 1. */
	char *id = create(e, "{\"agents\":6}", 0, err, sizeof(err));
	size_t n;

	wait_state(e, id, "running");
	agents_of(e, id, sb, 6);
	assert_int_equal(send_msg(e, sb[2], "0", "\"skip my lead\"", &n, err, sizeof(err)),
			 -EACCES);
	assert_string_equal(err, "hierarchical: agent 2 may address only its lead, agent 1");
	assert_int_equal(send_msg(e, sb[2], "3", "\"sibling\"", &n, err, sizeof(err)), -EACCES);
	assert_int_equal(send_msg(e, sb[0], "4", "\"past the lead\"", &n, err, sizeof(err)),
			 -EACCES);
	assert_int_equal(send_msg(e, sb[2], "2", "\"me\"", &n, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(send_msg(e, sb[2], "6", "\"nobody\"", &n, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(send_msg(e, sb[2], "-1", "1", &n, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(send_msg(e, sb[2], "\"1\"", "1", &n, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(send_msg(e, sb[2], "1", NULL, &n, err, sizeof(err)), SP_EINVAL);
	memset(big, 'a', sizeof(big));
	big[0] = '"';
	big[sizeof(big) - 2] = '"';
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(send_msg(e, sb[2], "1", big, &n, err, sizeof(err)), -E2BIG);
	assert_int_equal(send_msg(e, "sb-000000000000", "1", "1", &n, err, sizeof(err)),
			 SP_ENOTFOUND);
	assert_int_equal(inbox_rows(e, id, -1), 0);
	/* The tree's edges work, and a broadcast follows them. */
	assert_int_equal(send_msg(e, sb[2], "1", "\"up\"", &n, err, sizeof(err)), 0);
	assert_int_equal(send_msg(e, sb[1], "\"*\"", "\"all\"", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 5);
	assert_int_equal(send_msg(e, sb[5], "\"*\"", "\"lead\"", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(inbox_rows(e, id, 1), 2);
	assert_int_equal(inbox_rows(e, id, 0), 1);
	assert_int_equal(inbox_rows(e, id, -1), 7);
	free(id);
}

static void
test_message_waits_for_replacement(void **state)
{
	struct env *e = *state;
	char err[512], sb[3][32], now[3][32], ref[32], *got;
	char *id = create(e, "{\"agents\":3,\"topology\":\"mesh\"}", 0, err, sizeof(err));
	size_t n;

	wait_state(e, id, "running");
	agents_of(e, id, sb, 3);
	assert_int_equal(send_msg(e, sb[1], "0", "\"before\"", &n, err, sizeof(err)), 0);
	/* Agent 0's sandbox dies; a message for slot 0 still goes in. */
	snprintf(ref, sizeof(ref), "%s", fake_find(sb[0])->ref);
	fake_set_state(ref, SP_INST_EXITED, 1, false);
	fake_emit(ref);
	run_for(e, 20);
	assert_int_equal(send_msg(e, sb[2], "0", "\"meanwhile\"", &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	for (int i = 0; i < 300; i++) {
		json_t *j = get(e, id);
		bool done = json_integer_value(json_object_get(json_object_get(j, "agents"),
					       "live")) == 3;

		json_decref(j);
		if (done)
			break;
		run_for(e, 10);
	}
	/* The replacement joined last and holds slot 0, also after a restart. */
	agents_of(e, id, now, 3);
	assert_string_equal(now[0], sb[1]);
	assert_string_equal(now[1], sb[2]);
	assert_string_not_equal(now[2], sb[0]);
	close_mgrs(e);
	open_mgrs(e);
	assert_int_equal(swarm_receive(e->sw, sb[0], &(json_t *){ NULL }, err, sizeof(err)),
			 SP_ENOTFOUND);
	got = receive(e, now[0]);
	assert_string_equal(got, "[]");
	free(got);
	got = receive(e, now[2]);
	assert_string_equal(got, "[{\"from\":1,\"body\":\"before\"},"
			    "{\"from\":2,\"body\":\"meanwhile\"}]");
	free(got);
	free(id);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bad_input_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_completes_with_results, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_agent_replaced_and_task_requeued, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_agents_that_keep_dying_fail_the_swarm, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_delete_tears_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_reloads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_and_idle_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_starts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_messages_durable_and_ordered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_full_inbox_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forbidden_and_bad_messages_store_nothing,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_waits_for_replacement, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

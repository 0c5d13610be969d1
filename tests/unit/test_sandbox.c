/*
 * Unit tests of the sandbox manager against the fake provider and a real
 * SQLite store: the life cycle and its failures, validation and limits,
 * tenant isolation, exec, reconcile, events, provider retry and shutdown.
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

#include "config.h"
#include "fake_provider.h"
#include "sandbox.h"
#include "store.h"
#include "xmalloc.h"

static const struct sp_provider_ops *const test_ops[] = { &fake_provider_ops, NULL };

struct env {
	uv_loop_t loop;
	char dir[64];
	struct store *store;
	struct config *cfg;
	struct sp_host host;
	struct sandbox_mgr *mgr;
	/* the last callback */
	int calls;
	int status;
	char id[32];
	char state[32];
	char detail[512];
	/* exec */
	char out[4096];
	size_t outlen;
	struct sp_exec_result res;
	bool closed;
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
on_row(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct env *e = arg;

	e->calls++;
	e->status = status;
	e->id[0] = e->state[0] = e->detail[0] = '\0';
	if (row != NULL) {
		snprintf(e->id, sizeof(e->id), "%s", row->id);
		snprintf(e->state, sizeof(e->state), "%s", row->state);
	}
	if (detail != NULL)
		snprintf(e->detail, sizeof(e->detail), "%s", detail);
}

static int
on_output(void *arg, int fd, const char *data, size_t len)
{
	struct env *e = arg;

	if (e->outlen + len < sizeof(e->out)) {
		memcpy(e->out + e->outlen, data, len);
		e->outlen += len;
	}
	return 0;
}

static void
on_exec(void *arg, int status, const struct sp_exec_result *res, uint64_t ms, const char *detail)
{
	struct env *e = arg;

	e->calls++;
	e->status = status;
	if (res != NULL)
		e->res = *res;
	snprintf(e->detail, sizeof(e->detail), "%s", detail ? detail : "");
}

static void
run_until_calls(struct env *e, int n)
{
	for (int i = 0; i < 100000 && e->calls < n; i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_int_equal(e->calls, n);
}

/* Spin the loop for about ms milliseconds. */
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

static bool
mgr_ready(struct env *e)
{
	struct sp_provider *const *ps;

	sandbox_mgr_providers(e->mgr, &ps);
	return sandbox_mgr_provider_ready(e->mgr, ps[0], NULL);
}

static void
env_start(struct env *e)
{
	for (int i = 0; i < 100000 && !mgr_ready(e); i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_true(mgr_ready(e));
}

static int
setup(void **state)
{
	struct env *e = xcalloc(1, sizeof(*e));
	char err[256], *db;
	int r;

	fake_reset();
	snprintf(e->dir, sizeof(e->dir), "/tmp/sandpit-test-sandbox.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	assert_int_equal(uv_loop_init(&e->loop), 0);
	xasprintf(&db, "%s/db", e->dir);
	r = store_open(db, &e->store);
	free(db);
	assert_int_equal(r, 0);
	r = config_load(NULL, test_ops, &e->cfg, err, sizeof(err));
	assert_int_equal(r, 0);
	free(e->cfg->default_provider);
	e->cfg->default_provider = xstrdup("fake");
	e->cfg->max_sandboxes = 3;
	e->cfg->reconcile_interval_ms = 20;
	e->host = (struct sp_host){
		.loop = &e->loop, .instance = "inst-test", .state_dir = e->dir,
		.worker_image = "sandpit/worker:test", .conf = env_conf, .log = env_log, .core = e,
	};
	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, test_ops, &e->mgr), 0);
	*state = e;
	return 0;
}

static void
on_closed(void *arg)
{
	((struct env *)arg)->closed = true;
}

static int
teardown(void **state)
{
	struct env *e = *state;
	char *cmd;

	sandbox_mgr_close(e->mgr, on_closed, e);
	while (!e->closed)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	store_close(e->store);
	config_free(e->cfg);
	xasprintf(&cmd, "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(e);
	return 0;
}

static void
row_state(struct env *e, const char *id, char *buf, size_t len)
{
	struct sandbox_row row;

	assert_int_equal(store_sandbox_get(e->store, id, &row), 0);
	snprintf(buf, len, "%s", row.state);
	store_sandbox_row_done(&row);
}

static void
create_ok(struct env *e, const char *tenant, const char *spec_text)
{
	json_t *spec = spec_text ? json_loads(spec_text, 0, NULL) : NULL;
	char err[256];
	int n = e->calls;

	assert_int_equal(sandbox_create(e->mgr, tenant, spec, on_row, e, err, sizeof(err)), 0);
	json_decref(spec);
	run_until_calls(e, n + 1);
	assert_int_equal(e->status, 0);
	assert_string_equal(e->state, "running");
}

static void
test_create_records_first(void **state)
{
	struct env *e = *state;
	const struct fake_container *c;
	struct sandbox_row row;
	char err[256], st[32];
	json_t *spec = json_loads("{\"memory\":\"64m\",\"pids\":32,\"cpus\":0.5}", 0, NULL);

	env_start(e);
	fake_set_delay(FAKE_CREATE, 30);
	assert_int_equal(sandbox_create(e->mgr, "acme", spec, on_row, e, err, sizeof(err)), 0);
	json_decref(spec);
	/* Before the provider answers, the row is already in the store. */
	{
		struct sandbox_row *rows;
		size_t n;

		assert_int_equal(store_sandbox_list(e->store, "acme", true, &rows, &n), 0);
		assert_int_equal(n, 1);
		assert_string_equal(rows[0].state, "creating");
		assert_null(fake_find(rows[0].id));
		store_sandbox_rows_free(rows, n);
	}
	assert_int_equal(e->calls, 0);		/* never inside the call */
	run_until_calls(e, 1);
	assert_int_equal(e->status, 0);
	assert_true(sandbox_id_valid(e->id));
	row_state(e, e->id, st, sizeof(st));
	assert_string_equal(st, "running");
	c = fake_find(e->id);
	assert_non_null(c);
	assert_string_equal(c->instance, "inst-test");
	assert_string_equal(c->tenant, "acme");
	assert_int_equal(c->state, SP_INST_RUNNING);
	assert_int_equal(sandbox_get(e->mgr, "acme", e->id, &row), 0);
	assert_non_null(strstr(row.spec_json, "\"memory\":67108864"));
	assert_non_null(strstr(row.spec_json, "\"nano_cpus\":500000000"));
	assert_string_equal(c->spec_hash, row.spec_hash);
	store_sandbox_row_done(&row);
}

static void
test_create_rejects_bad_specs(void **state)
{
	struct env *e = *state;
	static const char *const bad[] = {
		"{\"colour\":\"red\"}", "{\"memory\":true}", "{\"memory\":\"lots\"}",
		"{\"memory\":\"1t\"}", "{\"pids\":1}", "{\"pids\":\"8\"}", "{\"cpus\":0}",
		"{\"cpus\":1000}", "{\"image\":\"bad image!\"}", "{\"provider\":\"nope\"}",
		"[1]",
	};
	struct sandbox_row *rows;
	char err[256];
	size_t n;

	env_start(e);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *spec = json_loads(bad[i], 0, NULL);

		assert_non_null(spec);
		err[0] = '\0';
		assert_int_equal(sandbox_create(e->mgr, "acme", spec, on_row, e, err, sizeof(err)),
				 SP_EINVAL);
		assert_true(strlen(err) > 0);
		json_decref(spec);
	}
	run_for(e, 10);
	assert_int_equal(e->calls, 0);
	assert_int_equal(store_sandbox_list(e->store, NULL, false, &rows, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(fake_calls(FAKE_CREATE), 0);
	store_sandbox_rows_free(rows, n);
}

static void
test_create_failures(void **state)
{
	struct env *e = *state;
	char err[256], st[32];

	env_start(e);
	/* The provider refuses to create: the row says failed, with the reason. */
	fake_fail_next(FAKE_CREATE, SP_EPROVIDER, "no such image");
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, 1);
	assert_int_equal(e->status, SP_EPROVIDER);
	assert_non_null(strstr(e->detail, "no such image"));
	{
		struct sandbox_row *rows;
		size_t n;

		assert_int_equal(store_sandbox_list(e->store, "acme", true, &rows, &n), 0);
		assert_int_equal(n, 1);
		assert_string_equal(rows[0].state, "failed");
		assert_non_null(strstr(rows[0].error, "no such image"));
		store_sandbox_rows_free(rows, n);
	}
	/* Created but will not start: the container is removed, not left behind. */
	fake_fail_next(FAKE_START, SP_EPROVIDER, "start refused");
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, 2);
	assert_int_equal(e->status, SP_EPROVIDER);
	assert_int_equal(fake_count(), 0);
	assert_int_equal(fake_calls(FAKE_DESTROY), 1);
	(void)st;
}

static void
test_limit(void **state)
{
	struct env *e = *state;
	char err[256];

	env_start(e);
	for (int i = 0; i < 3; i++)
		create_ok(e, "acme", NULL);
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), SP_ELIMIT);
	assert_non_null(strstr(err, "max_sandboxes 3/3"));
	assert_int_equal(fake_count(), 3);
}

static void
test_tenant_isolation(void **state)
{
	struct env *e = *state;
	struct sandbox_row row, *rows;
	char err[256], id[32];
	size_t n;
	json_t *body = json_loads("{\"cmd\":[\"true\"]}", 0, NULL);

	env_start(e);
	create_ok(e, "acme", NULL);
	snprintf(id, sizeof(id), "%s", e->id);
	assert_int_equal(sandbox_get(e->mgr, "other", id, &row), SP_ENOTFOUND);
	assert_int_equal(sandbox_destroy(e->mgr, "other", id, on_row, e, err, sizeof(err)),
			 SP_ENOTFOUND);
	assert_int_equal(sandbox_exec(e->mgr, "other", id, body, on_output, on_exec, e, NULL,
				      err, sizeof(err)), SP_ENOTFOUND);
	assert_int_equal(sandbox_list(e->mgr, "other", true, &rows, &n), 0);
	assert_int_equal(n, 0);
	store_sandbox_rows_free(rows, n);
	assert_int_equal(sandbox_get(e->mgr, "acme", id, &row), 0);
	assert_string_equal(row.state, "running");
	store_sandbox_row_done(&row);
	assert_int_equal(sandbox_get(e->mgr, "acme", "sb-nothex!!!!!", &row), SP_EINVAL);
	json_decref(body);
}

static void
test_exec(void **state)
{
	struct env *e = *state;
	char err[256], id[32];
	json_t *body;

	env_start(e);
	create_ok(e, "acme", NULL);
	snprintf(id, sizeof(id), "%s", e->id);
	fake_set_exec_result(3, false, false);
	body = json_loads("{\"cmd\":[\"echo\",\"hello\"],\"env\":{\"A\":\"1\"},\"timeout_ms\":500}", 0, NULL);
	assert_int_equal(sandbox_exec(e->mgr, "acme", id, body, on_output, on_exec, e, NULL,
				      err, sizeof(err)), 0);
	json_decref(body);
	run_until_calls(e, 2);
	assert_int_equal(e->status, 0);
	assert_int_equal(e->res.exit_code, 3);
	assert_int_equal(e->outlen, strlen("echo hello\n"));
	assert_memory_equal(e->out, "echo hello\n", e->outlen);

	/* Bad bodies are refused before anything runs. */
	static const char *const bad[] = {
		"{}", "{\"cmd\":[]}", "{\"cmd\":\"ls\"}", "{\"cmd\":[\"\"]}", "{\"cmd\":[1]}",
		"{\"cmd\":[\"ls\"],\"env\":{\"1A\":\"x\"}}", "{\"cmd\":[\"ls\"],\"timeout_ms\":0}",
		"{\"cmd\":[\"ls\"],\"workdir\":\"rel\"}", "{\"cmd\":[\"ls\"],\"extra\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		body = json_loads(bad[i], 0, NULL);
		assert_int_equal(sandbox_exec(e->mgr, "acme", id, body, on_output, on_exec, e,
					      NULL, err, sizeof(err)), SP_EINVAL);
		json_decref(body);
	}
	assert_int_equal(fake_calls(FAKE_EXEC), 1);

	/* A destroyed sandbox runs nothing. */
	assert_int_equal(sandbox_destroy(e->mgr, "acme", id, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, 3);
	body = json_loads("{\"cmd\":[\"true\"]}", 0, NULL);
	assert_int_equal(sandbox_exec(e->mgr, "acme", id, body, on_output, on_exec, e, NULL,
				      err, sizeof(err)), SP_ECONFLICT);
	json_decref(body);
}

static void
test_destroy(void **state)
{
	struct env *e = *state;
	char err[256], id[32], st[32];

	env_start(e);
	create_ok(e, "acme", NULL);
	snprintf(id, sizeof(id), "%s", e->id);
	assert_int_equal(sandbox_destroy(e->mgr, "acme", id, on_row, e, err, sizeof(err)), 0);
	assert_int_equal(e->calls, 1);
	run_until_calls(e, 2);
	assert_int_equal(e->status, 0);
	assert_string_equal(e->state, "destroyed");
	assert_null(fake_find(id));
	/* Again: answers the row, changes nothing. */
	assert_int_equal(sandbox_destroy(e->mgr, "acme", id, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, 3);
	assert_int_equal(e->status, 0);
	assert_string_equal(e->state, "destroyed");

	/* A failing destroy leaves the row "destroying" for reconcile to finish. */
	create_ok(e, "acme", NULL);
	snprintf(id, sizeof(id), "%s", e->id);
	fake_fail_next(FAKE_DESTROY, SP_EUNAVAIL, "engine went away");
	assert_int_equal(sandbox_destroy(e->mgr, "acme", id, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, 5);
	assert_int_equal(e->status, SP_EUNAVAIL);
	row_state(e, id, st, sizeof(st));
	assert_string_equal(st, "destroying");
	run_for(e, 100);	/* a few reconcile rounds */
	row_state(e, id, st, sizeof(st));
	assert_string_equal(st, "destroyed");
	assert_null(fake_find(id));
}

static void
insert_row(struct env *e, const char *id, const char *state, const char *ref)
{
	struct sandbox_row row = {
		.id = (char *)id, .tenant = "acme", .provider = "fake", .ref = (char *)ref,
		.state = (char *)state, .spec_json = "{}", .spec_hash = "h",
		.created_ms = 1, .updated_ms = 1,
	};

	assert_int_equal(store_sandbox_insert(e->store, &row), 0);
}

static void
test_reconcile(void **state)
{
	struct env *e = *state;
	const char *orphan, *other, *ref_run, *ref_created, *ref_destroying;
	char st[32];

	/* A world left behind by a daemon killed with -9. */
	ref_run = fake_add("inst-test", "sb-00000000000a", "acme", SP_INST_RUNNING);
	insert_row(e, "sb-00000000000a", "starting", NULL);	/* start answered, row not updated */
	ref_created = fake_add("inst-test", "sb-00000000000b", "acme", SP_INST_CREATED);
	insert_row(e, "sb-00000000000b", "creating", NULL);
	insert_row(e, "sb-00000000000c", "running", "fake-gone");	/* container vanished */
	insert_row(e, "sb-00000000000d", "creating", NULL);	/* never reached the provider */
	ref_destroying = fake_add("inst-test", "sb-00000000000e", "acme", SP_INST_RUNNING);
	insert_row(e, "sb-00000000000e", "destroying", NULL);
	orphan = fake_add("inst-test", "sb-0000000000ff", "acme", SP_INST_RUNNING);
	other = fake_add("another-daemon", "sb-000000000abc", "acme", SP_INST_RUNNING);
	/* fake_add returns a static buffer: keep what we need by lookup. */
	(void)ref_run; (void)ref_created; (void)ref_destroying; (void)orphan; (void)other;

	sandbox_mgr_start(e->mgr);
	env_start(e);
	run_for(e, 100);
	row_state(e, "sb-00000000000a", st, sizeof(st));
	assert_string_equal(st, "running");
	assert_non_null(fake_find("sb-00000000000a"));
	row_state(e, "sb-00000000000b", st, sizeof(st));
	assert_string_equal(st, "failed");
	assert_null(fake_find("sb-00000000000b"));
	row_state(e, "sb-00000000000c", st, sizeof(st));
	assert_string_equal(st, "lost");
	row_state(e, "sb-00000000000d", st, sizeof(st));
	assert_string_equal(st, "failed");
	row_state(e, "sb-00000000000e", st, sizeof(st));
	assert_string_equal(st, "destroyed");
	assert_null(fake_find("sb-00000000000e"));
	assert_null(fake_find("sb-0000000000ff"));		/* the orphan is gone */
	assert_non_null(fake_find("sb-000000000abc"));		/* not ours: untouched */
	assert_int_equal(fake_count(), 2);
}

static void
test_events(void **state)
{
	struct env *e = *state;
	const struct fake_container *c;
	char st[32], id[32], ref[32];

	env_start(e);
	create_ok(e, "acme", NULL);
	snprintf(id, sizeof(id), "%s", e->id);
	c = fake_find(id);
	snprintf(ref, sizeof(ref), "%s", c->ref);
	fake_set_state(ref, SP_INST_EXITED, 137, true);
	fake_emit(ref);
	run_for(e, 10);
	row_state(e, id, st, sizeof(st));
	assert_string_equal(st, "exited");
	{
		struct sandbox_row row;

		assert_int_equal(store_sandbox_get(e->store, id, &row), 0);
		assert_int_equal(row.exit_code, 137);
		assert_true(row.oom_killed);
		store_sandbox_row_done(&row);
	}
}

static void
test_provider_down_then_up(void **state)
{
	struct env *e = *state;
	char err[256];

	fake_fail_next(FAKE_INIT, SP_EUNAVAIL, "engine not answering");
	sandbox_mgr_start(e->mgr);
	run_for(e, 5);
	/* First init failed: requests get a clear "not available". */
	if (!mgr_ready(e)) {
		assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)),
				 SP_EUNAVAIL);
		assert_non_null(strstr(err, "not available"));
	}
	/* The reconcile timer retries init. */
	run_for(e, 100);
	assert_true(mgr_ready(e));
	assert_true(fake_calls(FAKE_INIT) >= 2);
	create_ok(e, "acme", NULL);
}

static void
test_shutdown_with_work_in_flight(void **state)
{
	struct env *e = *state;
	char err[256];

	env_start(e);
	fake_set_delay(FAKE_CREATE, 10000);
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), 0);
	assert_int_equal(sandbox_mgr_inflight(e->mgr), 1);
	sandbox_mgr_stop(e->mgr);
	/* New work is refused once stopping. */
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)),
			 SP_EUNAVAIL);
	/* teardown closes the manager: the pending create is cancelled and the
	 * row stays "creating" for the next start's reconcile. */
}

/* env_start through sandbox_mgr_start: tests that do not call it start here. */
static int
setup_started(void **state)
{
	int r = setup(state);
	struct env *e = *state;

	sandbox_mgr_start(e->mgr);
	return r;
}

/* --- placement and admission across a local and a remote provider --- */

static const struct sp_provider_ops *const burst_ops[] = {
	&fake_provider_ops, &fake_cloud_ops, NULL
};

static int
setup_burst(void **state)
{
	struct env *e;

	setup(state);
	e = *state;
	/* The same environment with two providers: "fake" (local) and "cloud". */
	sandbox_mgr_close(e->mgr, on_closed, e);
	while (!e->closed)
		uv_run(&e->loop, UV_RUN_ONCE);
	e->closed = false;
	free(e->cfg->default_provider);
	e->cfg->default_provider = xstrdup("auto");
	e->cfg->max_sandboxes = 2;
	e->cfg->burst_max_sandboxes = 2;
	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, burst_ops,
					 &e->mgr), 0);
	return 0;
}

static void
burst_start(struct env *e)
{
	struct sp_provider *const *ps;

	sandbox_mgr_start(e->mgr);
	sandbox_mgr_providers(e->mgr, &ps);
	for (int i = 0; i < 100000 && !(sandbox_mgr_provider_ready(e->mgr, ps[0], NULL) &&
					 sandbox_mgr_provider_ready(e->mgr, ps[1], NULL)); i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_true(sandbox_mgr_provider_ready(e->mgr, ps[1], NULL));
}

/* Create for tenant; the provider the new sandbox landed on, in buf. */
static void
create_on(struct env *e, const char *tenant, const char *spec_text, char *buf, size_t len)
{
	struct sandbox_row row;

	create_ok(e, tenant, spec_text);
	assert_int_equal(store_sandbox_get(e->store, e->id, &row), 0);
	snprintf(buf, len, "%s", row.provider);
	store_sandbox_row_done(&row);
}

static void
destroy_ok(struct env *e, const char *tenant, const char *id)
{
	char err[256], copy[32];
	int n = e->calls;

	snprintf(copy, sizeof(copy), "%s", id);
	assert_int_equal(sandbox_destroy(e->mgr, tenant, copy, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, n + 1);
	assert_int_equal(e->status, 0);
}

static void
test_placement_fills_local_then_bursts(void **state)
{
	struct env *e = *state;
	char prov[32], err[512], local1[32], cloud1[32];
	unsigned room;

	burst_start(e);
	/* A named provider is used even with local room. */
	create_on(e, "acme", "{\"provider\":\"cloud\"}", prov, sizeof(prov));
	assert_string_equal(prov, "cloud");
	destroy_ok(e, "acme", e->id);
	assert_int_equal(sandbox_mgr_room(e->mgr, "acme", "auto", &room, err, sizeof(err)), 0);
	assert_int_equal(room, 4);

	/* auto: the local provider first, then the burst one, then a refusal naming both. */
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "fake");
	snprintf(local1, sizeof(local1), "%s", e->id);
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "fake");
	/* "local" never bursts, and neither does the warm pool under auto. */
	{
		json_t *local = json_loads("{\"provider\":\"local\"}", 0, NULL);

		assert_int_equal(sandbox_create(e->mgr, "acme", local, on_row, e, err,
						sizeof(err)), SP_ELIMIT);
		json_decref(local);
		assert_non_null(strstr(err, "fake: full (max_sandboxes 2/2)"));
		assert_null(strstr(err, "cloud"));
		assert_int_equal(sandbox_create(e->mgr, SANDBOX_POOL_TENANT, NULL, on_row, e, err,
						sizeof(err)), SP_ELIMIT);
		assert_null(strstr(err, "cloud"));
	}
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "cloud");
	snprintf(cloud1, sizeof(cloud1), "%s", e->id);
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "cloud");
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)),
			 SP_ELIMIT);
	assert_non_null(strstr(err, "fake: full (max_sandboxes 2/2)"));
	assert_non_null(strstr(err, "cloud: full (burst_max_sandboxes 2/2)"));
	assert_int_equal(sandbox_mgr_room(e->mgr, "acme", "auto", &room, err, sizeof(err)), 0);
	assert_int_equal(room, 0);

	/* The burst provider answers 429: it is backed off, the create fails once. */
	destroy_ok(e, "acme", cloud1);
	fake_fail_next(FAKE_CREATE, SP_ELIMIT, "HTTP 429: concurrency limit");
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), 0);
	run_until_calls(e, e->calls + 1);
	assert_int_equal(e->status, SP_ELIMIT);
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)),
			 SP_ELIMIT);
	assert_non_null(strstr(err, "cloud: rate-limited"));
	assert_non_null(strstr(err, "retry in"));
	/* Local room frees: placement falls back to it while the burst one backs off. */
	destroy_ok(e, "acme", local1);
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "fake");

	/* The tenant cap counts sandboxes wherever they run (2 local + 1 burst here). */
	e->cfg->tenant_max_sandboxes = 3;
	sandbox_mgr_set_config(e->mgr, e->cfg);
	assert_int_equal(sandbox_mgr_room(e->mgr, "acme", "auto", &room, err, sizeof(err)), 0);
	assert_int_equal(room, 0);
	assert_non_null(strstr(err, "tenant_max_sandboxes: 3 of 3"));
}

static void
test_placement_counts_survive_restart(void **state)
{
	struct env *e = *state;
	char prov[32], err[512];

	burst_start(e);
	for (int i = 0; i < 3; i++)
		create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "cloud");
	sandbox_mgr_close(e->mgr, on_closed, e);
	while (!e->closed)
		uv_run(&e->loop, UV_RUN_ONCE);
	e->closed = false;
	/* A new manager on the same store re-adopts the three live sandboxes. */
	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, burst_ops,
					 &e->mgr), 0);
	burst_start(e);
	run_for(e, 60);		/* reconciles: everything is still there */
	create_on(e, "acme", NULL, prov, sizeof(prov));
	assert_string_equal(prov, "cloud");
	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)),
			 SP_ELIMIT);
	assert_non_null(strstr(err, "full (max_sandboxes 2/2)"));
	assert_non_null(strstr(err, "full (burst_max_sandboxes 2/2)"));
	assert_int_equal(fake_count(), 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_records_first, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_create_rejects_bad_specs, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_create_failures, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_limit, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_isolation, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_exec, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_destroy, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup_started, teardown),
		cmocka_unit_test_setup_teardown(test_provider_down_then_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_placement_fills_local_then_bursts, setup_burst,
						teardown),
		cmocka_unit_test_setup_teardown(test_placement_counts_survive_restart, setup_burst,
						teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_with_work_in_flight, setup_started, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of the warm pools against the fake provider and the real
 * sandbox manager, store and swarm manager (no worker channel: a started
 * sandbox counts as connected): pools per template fill from the pool
 * directives, a template matches its pool by normalised key, a claim hands
 * a pooled sandbox to a tenant and the pool refills, an empty pool is a miss
 * and a template without a pool is neither, hits and misses are labelled by
 * pool, a swarm claims from the pool of its template and cold-starts
 * otherwise, and a new configuration drains stale pools, starts in flight too.
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

#include <sandpit/error.h>

#include "config.h"
#include "fake_provider.h"
#include "pool.h"
#include "queue.h"
#include "sandbox.h"
#include "store.h"
#include "swarm.h"
#include "xmalloc.h"

#define GIB	(1024LL * 1024 * 1024)

static const struct sp_provider_ops *const test_ops[] = { &fake_provider_ops, NULL };

struct env {
	uv_loop_t loop;
	char dir[64];
	struct store *store;
	struct queue *queue;
	struct config *cfg;
	struct sp_host host;
	struct sandbox_mgr *mgr;
	struct pool *pool;
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

static struct config *
conf(struct env *e, const char *text)
{
	char path[128], err[256];
	struct config *c = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s/sandpitd.conf", e->dir);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
	if (config_load(path, test_ops, &c, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
	return c;
}

/* A SIGHUP: the new configuration in force for the manager and the pools. */
static void
reconfigure(struct env *e, const char *text)
{
	struct config *old = e->cfg;

	e->cfg = conf(e, text);
	sandbox_mgr_set_config(e->mgr, e->cfg);
	config_free(old);
}

static int
setup(void **state)
{
	struct env *e = xcalloc(1, sizeof(*e));
	struct sandbox_hooks inner = { 0 }, hooks;
	char err[256], *db;

	fake_reset();
	snprintf(e->dir, sizeof(e->dir), "/tmp/sandpit-test-pool.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	assert_int_equal(uv_loop_init(&e->loop), 0);
	xasprintf(&db, "%s/db", e->dir);
	assert_int_equal(store_open(db, &e->store), 0);
	free(db);
	e->cfg = conf(e, "provider fake\n"
		      "pool_size 1\n"
		      "pool \"big 2 memory=1g\"\n"
		      "pool \"tiny 0 cpus=0.5\"\n");
	e->host = (struct sp_host){
		.loop = &e->loop, .instance = "inst-test", .state_dir = e->dir,
		.worker_image = "sandpit/worker:test", .conf = env_conf, .log = env_log, .core = e,
	};
	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, test_ops,
					 &e->mgr), 0);
	assert_int_equal(queue_open(e->store, NULL, NULL, NULL, &e->queue), 0);
	assert_int_equal(pool_new(&e->loop, e->store, e->mgr, NULL,
				  (const struct config *const *)&e->cfg, &e->pool), 0);
	assert_int_equal(swarm_mgr_new(&(struct swarm_options){ .loop = &e->loop,
		.store = e->store, .queue = e->queue, .mgr = e->mgr, .workers = NULL,
		.pool = e->pool, .cfg = (const struct config *const *)&e->cfg }, &e->sw, err,
		sizeof(err)), 0);
	swarm_hooks(e->sw, &inner, &hooks);
	sandbox_mgr_set_hooks(e->mgr, &hooks);
	sandbox_mgr_start(e->mgr);
	swarm_mgr_start(e->sw);
	pool_start(e->pool);
	*state = e;
	return 0;
}

static void
on_closed(void *arg)
{
	((struct env *)arg)->closed++;
}

static int
teardown(void **state)
{
	struct env *e = *state;
	char *cmd;

	e->closed = 0;
	swarm_mgr_close(e->sw, on_closed, e);
	pool_close(e->pool, on_closed, e);
	while (e->closed < 2)
		uv_run(&e->loop, UV_RUN_ONCE);
	sandbox_mgr_close(e->mgr, on_closed, e);
	while (e->closed < 3)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	queue_close(e->queue);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	store_close(e->store);
	config_free(e->cfg);
	xasprintf(&cmd, "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(e);
	return 0;
}

/* A field of pool name's entry in the stats, or -1 when the pool is not there. */
static long long
stat_of(struct env *e, const char *name, const char *field)
{
	json_t *j = pool_stats_json(e->pool), *v;
	long long n = -1;
	size_t i;

	json_array_foreach(json_object_get(j, "pools"), i, v)
		if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
			n = json_integer_value(json_object_get(v, field));
	json_decref(j);
	return n;
}

/* Spin until pool name has n idle sandboxes (at most ~5 s). */
static void
wait_idle(struct env *e, const char *name, long long n)
{
	for (int i = 0; i < 500 && stat_of(e, name, "idle") != n; i++)
		run_for(e, 10);
	assert_int_equal(stat_of(e, name, "idle"), n);
}

/* The value of one /metrics line, or -1 when it is absent. */
static double
metric(struct env *e, const char *series)
{
	char *text = NULL, *line, *save = NULL;
	size_t len = 0, k = strlen(series);
	FILE *f = open_memstream(&text, &len);
	double v = -1;

	assert_non_null(f);
	pool_metrics(e->pool, f);
	fclose(f);
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, series, k) == 0 && line[k] == ' ')
			v = atof(line + k + 1);
	free(text);
	return v;
}

/* Pooled sandboxes (of the pools' tenant) whose memory limit is bytes. */
static int
pooled_with_memory(struct env *e, long long bytes)
{
	struct sandbox_row *rows;
	size_t n;
	int count = 0;

	assert_int_equal(sandbox_list(e->mgr, POOL_TENANT, false, &rows, &n), 0);
	for (size_t i = 0; i < n; i++) {
		json_t *spec = json_loads(rows[i].spec_json, 0, NULL);

		if (strcmp(rows[i].state, "running") == 0 &&
		    json_integer_value(json_object_get(spec, "memory")) == bytes)
			count++;
		json_decref(spec);
	}
	store_sandbox_rows_free(rows, n);
	return count;
}

static bool
serves(struct env *e, const char *tmpl)
{
	json_t *t = json_loads(tmpl, 0, NULL);
	bool ok;

	assert_non_null(t);
	ok = pool_serves(e->pool, t);
	json_decref(t);
	return ok;
}

static int
claim(struct env *e, const char *tmpl, const char *tenant, char *id)
{
	json_t *t = json_loads(tmpl, 0, NULL);
	int r;

	assert_non_null(t);
	r = pool_claim(e->pool, t, tenant, id);
	json_decref(t);
	return r;
}

static void
test_key_normalises(void **state)
{
	struct env *e = *state;
	char a[POOL_KEY_MAX], b[POOL_KEY_MAX];
	json_t *t;

	/* {} and the defaults spelled out are one template. */
	t = json_pack("{s:s, s:s, s:f, s:s, s:i}", "provider", "fake", "image",
		      e->cfg->worker_image, "cpus", 1.0, "memory", "512m", "pids", 256);
	assert_int_equal(pool_key(e->cfg, NULL, a, sizeof(a)), 0);
	assert_int_equal(pool_key(e->cfg, t, b, sizeof(b)), 0);
	assert_string_equal(a, b);
	json_decref(t);
	/* "1g" and its bytes too; "2g" is another. */
	t = json_pack("{s:s}", "memory", "1g");
	assert_int_equal(pool_key(e->cfg, t, a, sizeof(a)), 0);
	json_decref(t);
	t = json_pack("{s:I}", "memory", (json_int_t)GIB);
	assert_int_equal(pool_key(e->cfg, t, b, sizeof(b)), 0);
	assert_string_equal(a, b);
	json_decref(t);
	t = json_pack("{s:s}", "memory", "2g");
	assert_int_equal(pool_key(e->cfg, t, b, sizeof(b)), 0);
	assert_string_not_equal(a, b);
	json_decref(t);
	/* Shapes the sandbox manager refuses have no key, so no pool. */
	t = json_pack("{s:i}", "colour", 1);
	assert_int_equal(pool_key(e->cfg, t, a, sizeof(a)), SP_EINVAL);
	json_decref(t);
	t = json_pack("{s:s}", "memory", "lots");
	assert_int_equal(pool_key(e->cfg, t, a, sizeof(a)), SP_EINVAL);
	json_decref(t);
	t = json_pack("{s:s}", "pids", "7");
	assert_int_equal(pool_key(e->cfg, t, a, sizeof(a)), SP_EINVAL);
	json_decref(t);
	t = json_pack("{}");
	assert_int_equal(pool_key(e->cfg, t, a, 16), SP_EINVAL);
	json_decref(t);
}

static void
test_pools_fill_and_claim_by_template(void **state)
{
	struct env *e = *state;
	char id[SANDBOX_ID_LEN + 1], id2[SANDBOX_ID_LEN + 1], other[SANDBOX_ID_LEN + 1];
	struct sandbox_row row;

	wait_idle(e, "default", 1);
	wait_idle(e, "big", 2);
	assert_int_equal(stat_of(e, "tiny", "idle"), 0);
	assert_int_equal(fake_count(), 3);
	/* Each pool started its own template. */
	assert_int_equal(pooled_with_memory(e, GIB), 2);
	assert_int_equal(pooled_with_memory(e, e->cfg->sandbox_memory), 1);
	/* Matching is by normalised key; a pool of size 0 serves nobody. */
	assert_true(serves(e, "{}"));
	assert_true(serves(e, "{\"memory\":\"512m\"}"));
	assert_true(serves(e, "{\"memory\":\"1g\"}"));
	assert_true(serves(e, "{\"memory\":1073741824,\"provider\":\"fake\"}"));
	assert_false(serves(e, "{\"memory\":\"2g\"}"));
	assert_false(serves(e, "{\"cpus\":0.5}"));
	assert_false(serves(e, "{\"colour\":1}"));

	/* Two claims from "big" hand its sandboxes to the tenant. */
	assert_int_equal(claim(e, "{\"memory\":1073741824}", "t1", id), 0);
	assert_int_equal(sandbox_get(e->mgr, "t1", id, &row), 0);
	store_sandbox_row_done(&row);
	assert_int_equal(sandbox_get(e->mgr, POOL_TENANT, id, &row), SP_ENOTFOUND);
	assert_false(pool_has(e->pool, id));
	assert_int_equal(claim(e, "{\"memory\":\"1g\"}", "t1", id2), 0);
	assert_string_not_equal(id, id2);
	/* Empty now: a miss, counted for "big"; no pool for 2g: not a miss at all. */
	assert_int_equal(claim(e, "{\"memory\":\"1g\"}", "t1", other), -EAGAIN);
	assert_int_equal(claim(e, "{\"memory\":\"2g\"}", "t1", other), -ENOENT);
	assert_int_equal(claim(e, "{\"cpus\":0.5}", "t1", other), -ENOENT);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"big\",result=\"hit\"}") == 2);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"big\",result=\"miss\"}") == 1);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"default\",result=\"hit\"}") == 0);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"tiny\",result=\"miss\"}") == 0);
	assert_true(metric(e, "sandpit_pool_claims_total{result=\"hit\"}") == 2);
	assert_true(metric(e, "sandpit_pool_claims_total{result=\"miss\"}") == 1);
	assert_true(metric(e, "sandpit_pool_template_sandboxes{pool=\"big\",state=\"wanted\"}") == 2);
	assert_true(metric(e, "sandpit_pool_template_claim_seconds_count{pool=\"big\",kind=\"warm\"}") == 2);
	/* The default pool is untouched, and "big" refills. */
	assert_int_equal(stat_of(e, "default", "idle"), 1);
	wait_idle(e, "big", 2);
	assert_int_equal(fake_count(), 5);
	assert_int_equal(pooled_with_memory(e, GIB), 2);
}

static const char *
agent_of(json_t *sw, size_t i)
{
	return json_string_value(json_array_get(json_object_get(json_object_get(sw, "agents"),
						"sandboxes"), i));
}

static json_t *
new_swarm(struct env *e, const char *body_text)
{
	json_t *body = json_loads(body_text, 0, NULL), *ret = NULL;
	char err[256];

	assert_non_null(body);
	if (swarm_create(e->sw, "default", body, &ret, err, sizeof(err)) != 0)
		fail_msg("swarm_create: %s", err);
	json_decref(body);
	return ret;
}

static void
test_swarm_claims_from_its_templates_pool(void **state)
{
	struct env *e = *state;
	json_t *sw;
	size_t before;

	wait_idle(e, "default", 1);
	wait_idle(e, "big", 2);
	before = fake_count();
	/* Two agents of 1g: both from "big", live at once, nothing started cold. */
	sw = new_swarm(e, "{\"agents\":2,\"template\":{\"memory\":\"1g\"}}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(sw, "agents"),
			 "live")), 2);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(sw, "agents"),
			 "starting")), 0);
	assert_int_equal(fake_count(), before);
	for (size_t i = 0; i < 2; i++) {
		struct sandbox_row row;

		assert_int_equal(sandbox_get(e->mgr, "default", agent_of(sw, i), &row), 0);
		assert_non_null(strstr(row.spec_json, "\"memory\":1073741824"));
		store_sandbox_row_done(&row);
	}
	json_decref(sw);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"big\",result=\"hit\"}") == 2);
	/* 2g has no pool: a cold start, and nobody's hit or miss. */
	sw = new_swarm(e, "{\"agents\":1,\"template\":{\"memory\":\"2g\"}}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(sw, "agents"),
			 "starting")), 1);
	json_decref(sw);
	run_for(e, 50);
	assert_int_equal(fake_count(), before + 1);
	assert_true(metric(e, "sandpit_pool_claims_total{result=\"hit\"}") == 2);
	assert_true(metric(e, "sandpit_pool_claims_total{result=\"miss\"}") == 0);
	/* The default template (placement fake is the default provider) claims "default". */
	sw = new_swarm(e, "{\"agents\":1,\"placement\":\"fake\"}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(sw, "agents"),
			 "live")), 1);
	json_decref(sw);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"default\",result=\"hit\"}") == 1);
	assert_true(metric(e, "sandpit_pool_template_claims_total{pool=\"big\",result=\"miss\"}") == 0);
	/* Both pools refill behind the swarms. */
	wait_idle(e, "big", 2);
	wait_idle(e, "default", 1);
}

static void
test_new_configuration_drains_stale_pools(void **state)
{
	struct env *e = *state;

	wait_idle(e, "default", 1);
	wait_idle(e, "big", 2);
	/* "big" changes template and size, pool_size goes to 0, "tiny" goes. */
	reconfigure(e, "provider fake\n"
		    "pool \"big 1 memory=2g\"\n");
	for (int i = 0; i < 500 && (fake_count() != 1 || stat_of(e, "big", "idle") != 1); i++)
		run_for(e, 10);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(stat_of(e, "big", "idle"), 1);
	assert_int_equal(pooled_with_memory(e, 2 * GIB), 1);
	assert_int_equal(pooled_with_memory(e, GIB), 0);
	assert_int_equal(stat_of(e, "default", "idle"), 0);
	assert_int_equal(stat_of(e, "tiny", "idle"), -1);
	assert_true(metric(e, "sandpit_pool_template_sandboxes{pool=\"tiny\",state=\"idle\"}") == -1);
	assert_false(serves(e, "{\"memory\":\"1g\"}"));
	assert_false(serves(e, "{}"));
	assert_true(serves(e, "{\"memory\":\"2g\"}"));
	/* A changed default moves the default template's key with it. */
	reconfigure(e, "provider fake\n"
		    "sandbox_memory 2g\n"
		    "pool \"big 1 memory=2g\"\n");
	run_for(e, 250);
	assert_true(serves(e, "{}"));
}

static void
test_template_change_drops_starts_in_flight(void **state)
{
	struct env *e = *state;

	wait_idle(e, "big", 2);
	/* Slow creates: the next template's starts are still in flight when it changes again. */
	fake_set_delay(FAKE_CREATE, 400);
	reconfigure(e, "provider fake\n"
		    "pool \"big 2 memory=3g\"\n");
	for (int i = 0; i < 100 && stat_of(e, "big", "starting") != 2; i++)
		run_for(e, 10);
	assert_int_equal(stat_of(e, "big", "starting"), 2);
	reconfigure(e, "provider fake\n"
		    "pool \"big 1 memory=4g\"\n");
	/* The dropped starts are destroyed when they land; one 4g sandbox remains. */
	for (int i = 0; i < 500 && (fake_count() != 1 || stat_of(e, "big", "idle") != 1); i++)
		run_for(e, 10);
	assert_int_equal(stat_of(e, "big", "idle"), 1);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(pooled_with_memory(e, 4 * GIB), 1);
	assert_int_equal(pooled_with_memory(e, 3 * GIB), 0);
	/* And a close with starts in flight, dropped or not, frees everything (ASan). */
	reconfigure(e, "provider fake\n"
		    "pool \"big 2 memory=2g\"\n");
	for (int i = 0; i < 100 && stat_of(e, "big", "starting") != 2; i++)
		run_for(e, 10);
	reconfigure(e, "provider fake\n"
		    "pool \"big 1 memory=1g\"\n");
	run_for(e, 250);
	assert_true(stat_of(e, "big", "starting") >= 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_normalises, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pools_fill_and_claim_by_template, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_swarm_claims_from_its_templates_pool, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_new_configuration_drains_stale_pools, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_template_change_drops_starts_in_flight,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * workers: the worker routes through the real stack on one loop, without
 * Docker: a store and queue in a temporary directory, the sandbox manager with
 * the fake provider, workers_new() bound to 127.0.0.1 on a free port, and the
 * worker's own quic_client with the sandbox's token and ca.pem from the files
 * the prepare hook wrote. Covers the per-sandbox files, register, the long-poll
 * (answered by an enqueue and by its timeout), output with offsets (a resend
 * is stored once, a gap is 409), the result exactly once, another sandbox's
 * token (404), the token refresh, and revocation at destroy (401); the
 * batches (?max=N leases, POST /v1/worker/results) with their bounds and
 * verdicts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "fake_provider.h"
#include "queue.h"
#include "quic_client.h"
#include "sandbox.h"
#include "store.h"
#include "workers.h"
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
	struct workers *workers;
	uint16_t port;
	int closed;
	/* the last sandbox callback */
	int calls;
	char id[32];
	/* the control-side exec */
	char out[256];
	size_t outlen;
	int exec_done, exec_status, exit_code;
	uint64_t exec_ms;
};

struct cl {
	struct env *e;
	struct quic_client *c;
	char token[4096];
	int connected, closed, freed;
	int status;
	json_t *body;
	int answered;
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
spin(struct env *e, int *flag)
{
	for (int i = 0; i < 200000 && !*flag; i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_true(*flag);
}

static void
on_row(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct env *e = arg;

	assert_int_equal(status, 0);
	snprintf(e->id, sizeof(e->id), "%s", row->id);
	e->calls++;
}

static int
on_out(void *arg, int fd, const char *data, size_t len)
{
	struct env *e = arg;

	assert_true(e->outlen + len < sizeof(e->out));
	memcpy(e->out + e->outlen, data, len);
	e->outlen += len;
	return 0;
}

static void
on_exec(void *arg, int status, const struct sp_exec_result *res, uint64_t ms, const char *detail)
{
	struct env *e = arg;

	e->exec_done++;
	e->exec_status = status;
	e->exit_code = res != NULL ? res->exit_code : -1;
	e->exec_ms = ms;
}

static bool
mgr_ready(struct env *e)
{
	struct sp_provider *const *ps;

	sandbox_mgr_providers(e->mgr, &ps);
	return sandbox_mgr_provider_ready(e->mgr, ps[0], NULL);
}

static int
setup(void **state)
{
	struct env *e = xcalloc(1, sizeof(*e));
	struct sandbox_hooks hooks;
	char err[256], *db;
	json_t *eps;
	int r;

	fake_reset();
	snprintf(e->dir, sizeof(e->dir), "/tmp/sandpit-test-workers.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	assert_int_equal(uv_loop_init(&e->loop), 0);
	xasprintf(&db, "%s/db", e->dir);
	assert_int_equal(store_open(db, &e->store), 0);
	free(db);
	assert_int_equal(queue_open(e->store, NULL, NULL, NULL, &e->queue), 0);
	assert_int_equal(config_load(NULL, test_ops, &e->cfg, err, sizeof(err)), 0);
	free(e->cfg->default_provider);
	e->cfg->default_provider = xstrdup("fake");
	free(e->cfg->state_dir);
	e->cfg->state_dir = xstrdup(e->dir);
	free(e->cfg->worker_listen);
	e->cfg->worker_listen = xstrdup("127.0.0.1");
	e->cfg->worker_port = 0;		/* any free port */
	e->cfg->worker_poll_ms = 200;
	e->host = (struct sp_host){
		.loop = &e->loop, .instance = "inst-test", .state_dir = e->dir,
		.worker_image = "sandpit/worker:test", .conf = env_conf, .log = env_log, .core = e,
	};
	assert_int_equal(sandbox_mgr_new(&e->loop, e->store, e->cfg, &e->host, test_ops, &e->mgr), 0);
	r = workers_new(&(struct workers_options){ .loop = &e->loop, .store = e->store,
		.queue = e->queue, .mgr = e->mgr,
		.cfg = (const struct config *const *)&e->cfg }, &e->workers, err, sizeof(err));
	if (r < 0)
		fail_msg("workers_new: %s", err);
	workers_hooks(e->workers, &hooks);
	sandbox_mgr_set_hooks(e->mgr, &hooks);
	sandbox_mgr_start(e->mgr);
	for (int i = 0; i < 100000 && !mgr_ready(e); i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_true(mgr_ready(e));
	eps = workers_endpoints_json(e->workers);
	assert_int_equal(json_array_size(eps), 1);
	assert_int_equal(sscanf(json_string_value(json_array_get(eps, 0)), "127.0.0.1:%hu",
				&e->port), 1);
	json_decref(eps);
	*state = e;
	return 0;
}

static void
on_closed(void *arg)
{
	(*(int *)arg)++;
}

static int
teardown(void **state)
{
	struct env *e = *state;
	char *cmd;

	workers_close(e->workers, on_closed, &e->closed);
	spin(e, &e->closed);
	sandbox_mgr_close(e->mgr, on_closed, &e->closed);
	while (e->closed < 2)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	queue_close(e->queue);
	store_close(e->store);
	config_free(e->cfg);
	xasprintf(&cmd, "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(e);
	return 0;
}

/* Create a sandbox; its id lands in e->id. */
static void
create(struct env *e)
{
	char err[256];
	int calls = e->calls + 1;

	assert_int_equal(sandbox_create(e->mgr, "acme", NULL, on_row, e, err, sizeof(err)), 0);
	for (int i = 0; i < 100000 && e->calls < calls; i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_int_equal(e->calls, calls);
}

static void
cl_ev(void *arg, enum quic_client_event ev, int err)
{
	struct cl *c = arg;

	if (ev == QUIC_CLIENT_CONNECTED)
		c->connected = 1;
	else
		c->closed = 1;
}

static void
cl_freed(void *arg)
{
	((struct cl *)arg)->freed = 1;
}

/* A client of sandbox id, with its files. */
static void
cl_open(struct env *e, struct cl *c, const char *id)
{
	struct quic_client_config cfg = { 0 };
	char path[256], ca[256];
	FILE *f;

	memset(c, 0, sizeof(*c));
	c->e = e;
	snprintf(path, sizeof(path), "%s/workers/%s/token", e->dir, id);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(fgets(c->token, sizeof(c->token), f));
	fclose(f);
	snprintf(ca, sizeof(ca), "%s/workers/%s/ca.pem", e->dir, id);
	cfg.host = "127.0.0.1";
	cfg.port = e->port;
	cfg.ca_file = ca;
	assert_int_equal(quic_client_new(&e->loop, &cfg, cl_ev, c, &c->c), 0);
	for (int i = 0; i < 100000 && !c->connected && !c->closed; i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	assert_true(c->connected);
}

static void
cl_close(struct cl *c)
{
	quic_client_close(c->c, cl_freed, c);
	spin(c->e, &c->freed);
	json_decref(c->body);
	c->body = NULL;
}

static void
cl_answer(void *arg, int status, const uint8_t *body, size_t len)
{
	struct cl *c = arg;

	c->status = status;
	json_decref(c->body);
	c->body = status > 0 ? json_loadb((const char *)body, len, 0, NULL) : NULL;
	c->answered = 1;
}

/* Send a request and run the loop until its answer; returns the status. */
static int
call(struct cl *c, const char *method, const char *path, const char *body)
{
	c->answered = 0;
	assert_int_equal(quic_client_request(c->c, method, path, c->token, body,
					     body ? strlen(body) : 0, cl_answer, c), 0);
	spin(c->e, &c->answered);
	return c->status;
}

static int64_t
num(struct cl *c, const char *key)
{
	return json_integer_value(json_object_get(c->body, key));
}

static void
test_files(void **state)
{
	struct env *e = *state;
	char path[256];
	struct stat st;

	create(e);
	snprintf(path, sizeof(path), "%s/workers/%s", e->dir, e->id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/workers/%s/token", e->dir, e->id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0400);
	snprintf(path, sizeof(path), "%s/workers/%s/ca.pem", e->dir, e->id);
	assert_int_equal(stat(path, &st), 0);
	snprintf(path, sizeof(path), "%s/workers/%s/endpoint", e->dir, e->id);
	assert_int_equal(stat(path, &st), 0);
}

static void
test_task_cycle(void **state)
{
	struct env *e = *state;
	struct workers_exec *ex;
	struct cl c;
	json_t *sj, *body;
	char err[256], path[128], a[32];
	int64_t task, attempt, lease;

	create(e);
	cl_open(e, &c, e->id);
	sj = workers_sandbox_json(e->workers, e->id);
	assert_false(json_is_true(json_object_get(sj, "connected")));
	json_decref(sj);
	assert_int_equal(call(&c, "POST", "/v1/worker/register", "{}"), 200);
	assert_string_equal(json_string_value(json_object_get(c.body, "sandbox")), e->id);
	assert_string_equal(json_string_value(json_object_get(c.body, "tenant")), "acme");
	sj = workers_sandbox_json(e->workers, e->id);
	assert_true(json_is_true(json_object_get(sj, "connected")));
	json_decref(sj);

	/* Nothing to do: the long-poll ends at worker_poll_timeout with no task. */
	assert_int_equal(call(&c, "GET", "/v1/worker/tasks/next", NULL), 200);
	assert_true(json_is_null(json_object_get(c.body, "task")));

	/* An exec enqueued while the poll waits answers the poll. */
	c.answered = 0;
	assert_int_equal(quic_client_request(c.c, "GET", "/v1/worker/tasks/next", c.token, NULL, 0,
					     cl_answer, &c), 0);
	for (int i = 0; i < 20; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT);
	assert_false(c.answered);
	body = json_pack("{s:[s,s], s:s}", "cmd", "echo", "hi", "via", "worker");
	assert_int_equal(workers_exec(e->workers, "acme", e->id, body, on_out, on_exec, e, &ex,
				      err, sizeof(err)), 0);
	json_decref(body);
	/* Another tenant does not see the sandbox. */
	body = json_pack("{s:[s]}", "cmd", "true");
	assert_int_equal(workers_exec(e->workers, "other", e->id, body, on_out, on_exec, e, &ex,
				      err, sizeof(err)), SP_ENOTFOUND);
	json_decref(body);
	spin(e, &c.answered);
	assert_int_equal(c.status, 200);
	task = num(&c, "task");
	attempt = num(&c, "attempt");
	lease = num(&c, "lease");
	assert_true(task > 0);
	assert_string_equal(json_string_value(json_array_get(json_object_get(
	    json_object_get(c.body, "spec"), "cmd"), 1)), "hi");

	snprintf(path, sizeof(path), "/v1/worker/tasks/%lld/output", (long long)task);
	/* "hello" at 0, then the same again (a resend): stored and forwarded once. */
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"offset\":0,\"fd\":1,"
		 "\"b64\":\"aGVsbG8=\"}", (long long)attempt, (long long)lease);
	assert_int_equal(call(&c, "POST", path, err), 200);
	assert_int_equal(num(&c, "acked"), 5);
	assert_int_equal(call(&c, "POST", path, err), 200);
	assert_int_equal(num(&c, "acked"), 5);
	/* A gap: 409 with where to continue. */
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"offset\":9,\"fd\":1,"
		 "\"b64\":\"eA==\"}", (long long)attempt, (long long)lease);
	assert_int_equal(call(&c, "POST", path, err), 409);
	assert_int_equal(num(&c, "expected"), 5);
	/* Overlapping "lo!" at 3: only "!" is new. */
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"offset\":3,\"fd\":2,"
		 "\"b64\":\"bG8h\"}", (long long)attempt, (long long)lease);
	assert_int_equal(call(&c, "POST", path, err), 200);
	assert_int_equal(num(&c, "acked"), 6);
	assert_int_equal(e->outlen, 6);
	assert_memory_equal(e->out, "hello!", 6);
	/* A wrong lease is stale. */
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"offset\":6,\"fd\":1,"
		 "\"b64\":\"eA==\"}", (long long)attempt, (long long)lease + 1000);
	assert_int_equal(call(&c, "POST", path, err), 409);
	assert_int_equal(call(&c, "POST", path, "{\"attempt\":1}"), 400);
	assert_int_equal(call(&c, "POST", "/v1/worker/tasks/0/output", "{}"), 400);
	assert_int_equal(call(&c, "POST", "/v1/worker/tasks/999999/output",
			      "{\"attempt\":1,\"lease\":1,\"offset\":0,\"fd\":1,\"b64\":\"\"}"), 404);

	/* The result, exactly once. */
	snprintf(path, sizeof(path), "/v1/worker/tasks/%lld/result", (long long)task);
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"exit_code\":3,"
		 "\"duration_ms\":42,\"output_len\":6}", (long long)attempt, (long long)lease);
	assert_int_equal(call(&c, "POST", path, err), 200);
	assert_string_equal(json_string_value(json_object_get(c.body, "verdict")), "accepted");
	assert_int_equal(e->exec_done, 1);
	assert_int_equal(e->exec_status, 0);
	assert_int_equal(e->exit_code, 3);
	assert_int_equal(e->exec_ms, 42);
	assert_int_equal(call(&c, "POST", path, err), 200);
	assert_string_equal(json_string_value(json_object_get(c.body, "verdict")), "duplicate");
	assert_int_equal(e->exec_done, 1);
	sj = NULL;
	assert_int_equal(workers_task_json(e->workers, "acme", e->id, task, &sj), 0);
	assert_string_equal(json_string_value(json_object_get(sj, "output")), "hello!");
	assert_string_equal(json_string_value(json_object_get(sj, "state")), "failed");
	json_decref(sj);
	assert_int_equal(workers_task_json(e->workers, "other", e->id, task, &sj), SP_ENOTFOUND);

	/* A token refresh: a new token, in the file too. */
	snprintf(a, sizeof(a), "%s", e->id);
	assert_int_equal(call(&c, "POST", "/v1/worker/token", "{}"), 200);
	assert_true(strlen(json_string_value(json_object_get(c.body, "token"))) > 0);
	assert_true(strcmp(json_string_value(json_object_get(c.body, "token")), c.token) != 0);
	cl_close(&c);
}

static void
test_other_sandbox_and_revocation(void **state)
{
	struct env *e = *state;
	struct workers_exec *ex;
	struct cl ca, cb;
	char a[32], b[32], err[256], path[128];
	json_t *body;
	int64_t task;

	create(e);
	snprintf(a, sizeof(a), "%s", e->id);
	create(e);
	snprintf(b, sizeof(b), "%s", e->id);
	cl_open(e, &ca, a);
	cl_open(e, &cb, b);
	assert_int_equal(call(&cb, "POST", "/v1/worker/register", "{}"), 200);
	/* A worker must have registered before an exec is accepted. */
	body = json_pack("{s:[s]}", "cmd", "true");
	assert_int_equal(workers_exec(e->workers, "acme", a, body, on_out, on_exec, e, &ex,
				      err, sizeof(err)), SP_EUNAVAIL);
	assert_int_equal(workers_exec(e->workers, "acme", b, body, on_out, on_exec, e, &ex,
				      err, sizeof(err)), 0);
	json_decref(body);
	assert_int_equal(call(&cb, "GET", "/v1/worker/tasks/next", NULL), 200);
	task = num(&cb, "task");
	assert_true(task > 0);
	/* A's token on B's task: as if it did not exist. */
	snprintf(path, sizeof(path), "/v1/worker/tasks/%lld/result", (long long)task);
	snprintf(err, sizeof(err), "{\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0}",
		 (long long)num(&cb, "attempt"), (long long)num(&cb, "lease"));
	assert_int_equal(call(&ca, "POST", path, err), 404);
	assert_int_equal(call(&ca, "POST", "/v1/worker/register", "{}"), 200);
	/* Cancelled from the control side: the worker hears "stale". */
	workers_exec_cancel(ex);
	assert_int_equal(e->exec_done, 1);
	assert_int_equal(e->exec_status, SP_ECANCELED);
	assert_int_equal(call(&cb, "POST", path, err), 409);
	snprintf(err, sizeof(err), "{\"tasks\":[{\"task\":%lld,\"attempt\":1,\"lease\":1}]}",
		 (long long)task);
	assert_int_equal(call(&cb, "POST", "/v1/worker/heartbeat", err), 200);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(cb.body, "stale"), 0)),
			 task);

	/* Destroy A: its files go, its token is revoked and the connection closes. */
	assert_int_equal(sandbox_destroy(e->mgr, "acme", a, on_row, e, err, sizeof(err)), 0);
	{
		int calls = e->calls + 1;

		for (int i = 0; i < 100000 && e->calls < calls; i++)
			uv_run(&e->loop, UV_RUN_ONCE);
	}
	snprintf(path, sizeof(path), "%s/workers/%s", e->dir, a);
	assert_int_not_equal(access(path, F_OK), 0);
	assert_int_equal(call(&ca, "POST", "/v1/worker/heartbeat", "{}"), 401);
	spin(e, &ca.closed);
	/* B carries on. */
	assert_int_equal(call(&cb, "POST", "/v1/worker/heartbeat", "{}"), 200);
	cl_close(&ca);
	cl_close(&cb);
}

/* The verdict of entry i of a /v1/worker/results answer. */
static const char *
verdict(struct cl *c, size_t i)
{
	return json_string_value(json_object_get(json_array_get(json_object_get(c->body,
	    "results"), i), "verdict"));
}

static enum queue_state
state_of(struct env *e, int64_t task)
{
	struct queue_task t;
	enum queue_state s;

	assert_int_equal(queue_get(e->queue, task, &t), 0);
	s = t.state;
	queue_task_done(&t);
	return s;
}

static void
test_batches(void **state)
{
	struct env *e = *state;
	struct workers_exec *ex;
	struct queue_counts qc;
	struct cl ca, cb;
	char a[32], b[32], err[256], body[8192];
	int64_t t[4], att[4], lease[4];
	json_t *spec, *g;
	size_t off;

	create(e);
	snprintf(a, sizeof(a), "%s", e->id);
	create(e);
	snprintf(b, sizeof(b), "%s", e->id);
	cl_open(e, &ca, a);
	cl_open(e, &cb, b);
	assert_int_equal(call(&ca, "POST", "/v1/worker/register", "{}"), 200);
	assert_int_equal(call(&cb, "POST", "/v1/worker/register", "{}"), 200);
	spec = json_pack("{s:[s]}", "cmd", "true");
	for (int i = 0; i < 3; i++)
		assert_int_equal(workers_exec(e->workers, "acme", a, spec, on_out, on_exec, e, &ex,
					      err, sizeof(err)), 0);
	assert_int_equal(workers_exec(e->workers, "acme", b, spec, on_out, on_exec, e, &ex, err,
				      sizeof(err)), 0);
	json_decref(spec);

	/* A max out of bounds or malformed is 400 and leases nothing. */
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=0", NULL), 400);
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=65", NULL), 400);
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=1x", NULL), 400);
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=", NULL), 400);
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=2&max=2", NULL), 400);
	assert_int_equal(queue_counts(e->queue, a, &qc), 0);
	assert_int_equal(qc.n[QUEUE_QUEUED], 3);

	/* max=2 gets two grants in one answer; max=64 gets the one left. */
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=2", NULL), 200);
	assert_int_equal(json_array_size(json_object_get(ca.body, "tasks")), 2);
	for (int i = 0; i < 2; i++) {
		g = json_array_get(json_object_get(ca.body, "tasks"), (size_t)i);
		t[i] = json_integer_value(json_object_get(g, "task"));
		att[i] = json_integer_value(json_object_get(g, "attempt"));
		lease[i] = json_integer_value(json_object_get(g, "lease"));
		assert_string_equal(json_string_value(json_array_get(json_object_get(
		    json_object_get(g, "spec"), "cmd"), 0)), "true");
	}
	assert_true(t[0] < t[1]);
	assert_int_equal(queue_counts(e->queue, a, &qc), 0);
	assert_int_equal(qc.n[QUEUE_QUEUED], 1);
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?other=1&max=64", NULL), 200);
	assert_int_equal(json_array_size(json_object_get(ca.body, "tasks")), 1);
	g = json_array_get(json_object_get(ca.body, "tasks"), 0);
	t[2] = json_integer_value(json_object_get(g, "task"));
	att[2] = json_integer_value(json_object_get(g, "attempt"));
	lease[2] = json_integer_value(json_object_get(g, "lease"));
	/* Nothing left: the batch poll ends at its timeout with an empty list. */
	assert_int_equal(call(&ca, "GET", "/v1/worker/tasks/next?max=4", NULL), 200);
	assert_true(json_is_array(json_object_get(ca.body, "tasks")));
	assert_int_equal(json_array_size(json_object_get(ca.body, "tasks")), 0);
	assert_int_equal(call(&cb, "GET", "/v1/worker/tasks/next?max=1", NULL), 200);
	g = json_array_get(json_object_get(cb.body, "tasks"), 0);
	t[3] = json_integer_value(json_object_get(g, "task"));
	att[3] = json_integer_value(json_object_get(g, "attempt"));
	lease[3] = json_integer_value(json_object_get(g, "lease"));

	/* Bad batches are 400 and change nothing, even with good entries in them. */
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", "{\"results\":[]}"), 400);
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", "{}"), 400);
	snprintf(body, sizeof(body), "{\"results\":[{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,"
		 "\"exit_code\":0},{\"task\":%lld,\"attempt\":%lld,\"exit_code\":0}]}",
		 (long long)t[0], (long long)att[0], (long long)lease[0], (long long)t[1],
		 (long long)att[1]);
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", body), 400);
	off = (size_t)snprintf(body, sizeof(body), "{\"results\":[");
	for (int i = 0; i < 65; i++)
		off += (size_t)snprintf(body + off, sizeof(body) - off,
		    "%s{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0}",
		    i ? "," : "", (long long)t[0], (long long)att[0], (long long)lease[0]);
	assert_true(off + 3 < sizeof(body));
	snprintf(body + off, sizeof(body) - off, "]}");
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", body), 400);
	assert_int_equal(state_of(e, t[0]), QUEUE_RUNNING);
	assert_int_equal(e->exec_done, 0);

	/*
	 * One batch: two good results, the first again (duplicate), B's task and a
	 * missing one (not_found: A does not hold them), the third with a wrong
	 * lease (stale).
	 */
	snprintf(body, sizeof(body), "{\"results\":["
		 "{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0,\"duration_ms\":5},"
		 "{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":7},"
		 "{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0},"
		 "{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0},"
		 "{\"task\":999999,\"attempt\":1,\"lease\":1,\"exit_code\":0},"
		 "{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,\"exit_code\":0}]}",
		 (long long)t[0], (long long)att[0], (long long)lease[0],
		 (long long)t[1], (long long)att[1], (long long)lease[1],
		 (long long)t[0], (long long)att[0], (long long)lease[0],
		 (long long)t[3], (long long)att[3], (long long)lease[3],
		 (long long)t[2], (long long)att[2], (long long)lease[2] + 1000);
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", body), 200);
	assert_int_equal(json_array_size(json_object_get(ca.body, "results")), 6);
	assert_string_equal(verdict(&ca, 0), "accepted");
	assert_string_equal(verdict(&ca, 1), "accepted");
	assert_string_equal(verdict(&ca, 2), "duplicate");
	assert_string_equal(verdict(&ca, 3), "not_found");
	assert_string_equal(verdict(&ca, 4), "not_found");
	assert_string_equal(verdict(&ca, 5), "stale");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(
	    ca.body, "results"), 3), "task")), t[3]);
	/* Each accepted result ends its exec once, with its own exit code and duration. */
	assert_int_equal(e->exec_done, 2);
	assert_int_equal(e->exit_code, 7);
	assert_int_equal(state_of(e, t[0]), QUEUE_SUCCEEDED);
	assert_int_equal(state_of(e, t[1]), QUEUE_FAILED);
	assert_int_equal(state_of(e, t[2]), QUEUE_RUNNING);
	assert_int_equal(state_of(e, t[3]), QUEUE_RUNNING);
	/* A resend of the whole batch records nothing twice. */
	assert_int_equal(call(&ca, "POST", "/v1/worker/results", body), 200);
	assert_string_equal(verdict(&ca, 0), "duplicate");
	assert_string_equal(verdict(&ca, 1), "duplicate");
	assert_int_equal(e->exec_done, 2);
	/* B reports its own through the batch route. */
	snprintf(body, sizeof(body), "{\"results\":[{\"task\":%lld,\"attempt\":%lld,\"lease\":%lld,"
		 "\"exit_code\":0}]}", (long long)t[3], (long long)att[3], (long long)lease[3]);
	assert_int_equal(call(&cb, "POST", "/v1/worker/results", body), 200);
	assert_string_equal(verdict(&cb, 0), "accepted");
	assert_int_equal(e->exec_done, 3);
	assert_int_equal(state_of(e, t[3]), QUEUE_SUCCEEDED);
	cl_close(&ca);
	cl_close(&cb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_task_cycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_sandbox_and_revocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batches, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

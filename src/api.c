/*
 * Route handlers for /v1/health, /v1/info, /metrics, /v1/images and
 * /v1/sandboxes. They validate what ctl cannot (ids, tenants, bodies), call
 * the sandbox manager and render its rows; they hold no state of their own
 * beyond a request's life.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "api.h"
#include "log.h"
#include "provider.h"
#include "xmalloc.h"

static const char *const api_states[] = {
	"creating", "starting", "running", "destroying", "destroyed", "exited", "failed", "lost",
};
#define NSTATES	(sizeof(api_states) / sizeof(api_states[0]))

static json_t *
api_time(int64_t ms)
{
	char buf[64];
	struct tm tm;
	time_t t = (time_t)(ms / 1000);

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ".%03dZ", (int)(ms % 1000));
	return json_string(buf);
}

/* A sandbox as the API shows it. */
static json_t *
api_sandbox_json(const struct api *api, const struct sandbox_row *row)
{
	json_t *spec = json_loads(row->spec_json, 0, NULL), *o, *limits;

	if (spec == NULL)
		spec = json_object();
	limits = json_pack("{s:f, s:O, s:O, s:O, s:O, s:O}",
			   "cpus", json_integer_value(json_object_get(spec, "nano_cpus")) / 1e9,
			   "memory", json_object_get(spec, "memory") ? json_object_get(spec, "memory") : json_null(),
			   "pids", json_object_get(spec, "pids") ? json_object_get(spec, "pids") : json_null(),
			   "nofile", json_object_get(spec, "nofile") ? json_object_get(spec, "nofile") : json_null(),
			   "tmp", json_object_get(spec, "tmp") ? json_object_get(spec, "tmp") : json_null(),
			   "work", json_object_get(spec, "work") ? json_object_get(spec, "work") : json_null());
	o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:O, s:o, s:s, s:o, s:o, s:o, s:o, s:b}",
		      "id", row->id, "tenant", row->tenant, "provider", row->provider,
		      "state", row->state,
		      "ref", row->ref ? json_string(row->ref) : json_null(),
		      "image", json_object_get(spec, "image") ? json_object_get(spec, "image") : json_null(),
		      "limits", limits,
		      "spec_hash", row->spec_hash,
		      "created_at", api_time(row->created_ms),
		      "updated_at", api_time(row->updated_ms),
		      "error", row->error ? json_string(row->error) : json_null(),
		      "exit_code", strcmp(row->state, "exited") == 0 ? json_integer(row->exit_code) : json_null(),
		      "oom_killed", row->oom_killed);
	json_decref(spec);
	if (o == NULL)
		fatalx("api_sandbox_json: json_pack failed");
	/* Create and destroy answers have no api at hand: no worker yet, or no more. */
	if (api != NULL && api->workers != NULL)
		json_object_set_new(o, "worker", workers_sandbox_json(api->workers, row->id));
	return o;
}

static const char *
api_tenant(struct ctl_req *req)
{
	const char *t = ctl_req_tenant(req);

	if (t == NULL)
		ctl_reply_error(req, 400, "bad_request",
				"X-Sandpit-Tenant: a tenant is [a-z0-9][a-z0-9_-]{0,62}");
	return t;
}

/* The {id} parameter, or NULL after answering 400. */
static const char *
api_sandbox_id(struct ctl_req *req)
{
	const char *id = ctl_req_param(req, "id");

	if (!sandbox_id_valid(id)) {
		ctl_reply_error(req, 400, "bad_request",
				"invalid sandbox id (expected sb- and 12 hex digits)");
		return NULL;
	}
	return id;
}

/* --- health, info, metrics --- */

static void
api_health(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	struct sp_provider *const *ps;
	size_t n = sandbox_mgr_providers(api->mgr, &ps);
	json_t *providers = json_object();
	bool degraded;

	for (size_t i = 0; i < n; i++) {
		bool ready = sandbox_mgr_provider_ready(api->mgr, ps[i], NULL);

		json_object_set_new(providers, provider_name(ps[i]),
				    json_string(ready ? "ready" : "down"));
	}
	degraded = !sandbox_mgr_healthy(api->mgr);
	ctl_reply_json(req, 200, json_pack("{s:s, s:o}", "status", degraded ? "degraded" : "ok",
					   "providers", providers));
}

static json_t *
api_caps(const struct sp_provider *p)
{
	static const struct { unsigned bit; const char *name; } caps[] = {
		{ SP_CAP_EXEC, "exec" }, { SP_CAP_LIST, "list" }, { SP_CAP_LOCAL, "local" },
		{ SP_CAP_IMAGE, "image" }, { SP_CAP_EVENTS, "events" },
	};
	json_t *a = json_array();

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (provider_has(p, caps[i].bit))
			json_array_append_new(a, json_string(caps[i].name));
	return a;
}

static void
api_info(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const struct config *cfg = *api->cfg;
	struct sp_provider *const *ps;
	size_t n = sandbox_mgr_providers(api->mgr, &ps);
	json_t *providers = json_array(), *o;

	for (size_t i = 0; i < n; i++) {
		const char *detail = NULL;
		bool ready = sandbox_mgr_provider_ready(api->mgr, ps[i], &detail);
		json_t *info = json_loads(provider_describe(ps[i]), 0, NULL);

		json_array_append_new(providers,
			json_pack("{s:s, s:o, s:b, s:o, s:o}", "name", provider_name(ps[i]),
				  "caps", api_caps(ps[i]), "ready", ready,
				  "detail", detail ? json_string(detail) : json_null(),
				  "info", info ? info : json_object()));
	}
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o}",
		      "version", SANDPIT_VERSION, "instance", api->instance,
		      "state_dir", cfg->state_dir, "socket", cfg->socket_path,
		      "default_provider", cfg->default_provider,
		      "worker_image", cfg->worker_image,
		      "started_at", api_time(api->started_ms),
		      "providers", providers,
		      "worker_endpoints", api->workers != NULL ?
			workers_endpoints_json(api->workers) : json_array());
	if (api->workers != NULL)
		json_object_set_new(o, "worker_channel", workers_stats_json(api->workers));
	ctl_reply_json(req, 200, o);
}

static void
api_metrics(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	struct sp_provider *const *ps;
	size_t n = sandbox_mgr_providers(api->mgr, &ps);
	char *text = NULL;
	long counts[NSTATES];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		fatalx("open_memstream failed");
	fprintf(f, "# HELP sandpit_build_info The daemon's version.\n"
		   "# TYPE sandpit_build_info gauge\n"
		   "sandpit_build_info{version=\"%s\"} 1\n", SANDPIT_VERSION);
	fprintf(f, "# HELP sandpit_provider_up Whether a provider is initialised.\n"
		   "# TYPE sandpit_provider_up gauge\n");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "sandpit_provider_up{provider=\"%s\"} %d\n", provider_name(ps[i]),
			sandbox_mgr_provider_ready(api->mgr, ps[i], NULL) ? 1 : 0);
	fprintf(f, "# HELP sandpit_sandboxes Sandboxes known to the store, by state.\n"
		   "# TYPE sandpit_sandboxes gauge\n");
	if (sandbox_mgr_count(api->mgr, api_states, NSTATES, counts) == 0)
		for (size_t i = 0; i < NSTATES; i++)
			fprintf(f, "sandpit_sandboxes{state=\"%s\"} %ld\n", api_states[i], counts[i]);
	fprintf(f, "# HELP sandpit_inflight_operations Sandbox operations in flight.\n"
		   "# TYPE sandpit_inflight_operations gauge\n"
		   "sandpit_inflight_operations %zu\n", sandbox_mgr_inflight(api->mgr));
	if (api->workers != NULL) {
		json_t *st = workers_stats_json(api->workers);
		json_t *rpc = json_object_get(st, "rpc"), *quic = json_object_get(st, "quic");

		fprintf(f, "# HELP sandpit_workers_connected Workers heard from recently.\n"
			   "# TYPE sandpit_workers_connected gauge\n"
			   "sandpit_workers_connected %lld\n"
			   "# HELP sandpit_worker_requests_total Worker channel requests, by outcome.\n"
			   "# TYPE sandpit_worker_requests_total counter\n"
			   "sandpit_worker_requests_total{outcome=\"all\"} %lld\n"
			   "sandpit_worker_requests_total{outcome=\"unauthorized\"} %lld\n"
			   "sandpit_worker_requests_total{outcome=\"forbidden\"} %lld\n"
			   "sandpit_worker_requests_total{outcome=\"bad_request\"} %lld\n"
			   "# HELP sandpit_worker_garbage_datagrams_total Undecodable datagrams.\n"
			   "# TYPE sandpit_worker_garbage_datagrams_total counter\n"
			   "sandpit_worker_garbage_datagrams_total %lld\n",
			(long long)json_integer_value(json_object_get(st, "workers_connected")),
			(long long)json_integer_value(json_object_get(rpc, "requests")),
			(long long)json_integer_value(json_object_get(rpc, "unauthorized")),
			(long long)json_integer_value(json_object_get(rpc, "forbidden")),
			(long long)json_integer_value(json_object_get(rpc, "bad_request")),
			(long long)json_integer_value(json_object_get(quic, "garbage")));
		json_decref(st);
	}
	if (api->metrics_more != NULL)
		api->metrics_more(api->metrics_arg, f);
	fclose(f);
	ctl_reply_data(req, 200, "text/plain; version=0.0.4", text, len);
	free(text);
}

/* --- images --- */

static void
api_image_built(void *arg, int status, const char *detail)
{
	struct ctl_req *req = arg;

	if (status < 0) {
		ctl_reply_err(req, status, detail);
		return;
	}
	ctl_reply_json(req, 200, json_pack("{s:s}", "image", detail ? detail : ""));
}

static void
api_image_build(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	char err[512];
	int r;

	r = sandbox_build_image(api->mgr, api_image_built, req, err, sizeof(err));
	if (r < 0)
		ctl_reply_err(req, r, err);
}

/* --- sandboxes --- */

static void
api_sandbox_done(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct ctl_req *req = arg;

	if (status < 0) {
		ctl_reply_err(req, status, detail);
		return;
	}
	ctl_reply_json(req, strcmp(ctl_req_method(req), "POST") == 0 ? 201 : 200,
		       api_sandbox_json(NULL, row));
}

static void
api_sandbox_create(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req);
	json_t *spec = NULL;
	size_t len = 0;
	char err[512];
	int r;

	if (tenant == NULL)
		return;
	ctl_req_body(req, &len);
	if (len > 0 && (spec = ctl_req_json(req)) == NULL)
		return;
	r = sandbox_create(api->mgr, tenant, spec, api_sandbox_done, req, err, sizeof(err));
	json_decref(spec);
	if (r < 0)
		ctl_reply_err(req, r, err);
}

static void
api_sandbox_list(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req), *all;
	struct sandbox_row *rows;
	size_t n;
	json_t *a;
	int r;

	/* api_tenant() has answered (and so finished) the request when NULL. */
	if (tenant == NULL)
		return;
	all = ctl_req_query(req, "all");
	r = sandbox_list(api->mgr, tenant, all != NULL && strcmp(all, "0") != 0, &rows, &n);
	if (r < 0) {
		ctl_reply_err(req, r, "cannot read the sandboxes");
		return;
	}
	a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, api_sandbox_json(api, &rows[i]));
	store_sandbox_rows_free(rows, n);
	ctl_reply_json(req, 200, a);
}

/* GET /v1/sandboxes/{id}?wait=ready: the answer waits for the sandbox's worker. */
struct api_wait {
	struct api *api;
	struct ctl_req *req;
	struct workers_wait *wt;
	char tenant[64], id[SANDBOX_ID_LEN + 1];
	bool answered;
};

static void
api_wait_done(void *arg, bool ready)
{
	struct api_wait *aw = arg;
	struct sandbox_row row;
	int r;

	aw->answered = true;
	aw->wt = NULL;
	/* Answered with the row either way: worker.connected says which it was. */
	r = sandbox_get(aw->api->mgr, aw->tenant, aw->id, &row);
	if (r < 0) {
		ctl_reply_err(aw->req, r, r == SP_ENOTFOUND ? "no such sandbox" : NULL);
	} else {
		ctl_reply_json(aw->req, 200, api_sandbox_json(aw->api, &row));
		store_sandbox_row_done(&row);
	}
	free(aw);
}

static void
api_wait_abort(void *arg)
{
	struct api_wait *aw = arg;

	if (aw->answered)
		return;
	workers_wait_cancel(aw->wt);
	free(aw);
}

static void
api_sandbox_get(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req), *id, *wait, *tmo;
	struct sandbox_row row;
	struct workers_wait *wt;
	struct api_wait *aw;
	uint64_t timeout = 30000;
	int r;

	if (tenant == NULL || (id = api_sandbox_id(req)) == NULL)
		return;
	wait = ctl_req_query(req, "wait");
	tmo = ctl_req_query(req, "timeout");
	if (wait != NULL && strcmp(wait, "ready") != 0) {
		ctl_reply_error(req, 400, "bad_request", "wait: only \"ready\" is known");
		return;
	}
	if (tmo != NULL && (config_parse_duration(tmo, &timeout) < 0 || timeout > 300000)) {
		ctl_reply_error(req, 400, "bad_request", "timeout: a duration of at most 5m");
		return;
	}
	r = sandbox_get(api->mgr, tenant, id, &row);
	if (r < 0) {
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such sandbox" : NULL);
		return;
	}
	if (wait == NULL || api->workers == NULL || strcmp(row.state, "running") != 0) {
		ctl_reply_json(req, 200, api_sandbox_json(api, &row));
		store_sandbox_row_done(&row);
		return;
	}
	store_sandbox_row_done(&row);
	aw = xcalloc(1, sizeof(*aw));
	aw->api = api;
	aw->req = req;
	snprintf(aw->tenant, sizeof(aw->tenant), "%s", tenant);
	snprintf(aw->id, sizeof(aw->id), "%s", id);
	wt = workers_wait_ready(api->workers, id, timeout, api_wait_done, aw);
	/* NULL: it was ready, and aw is answered and freed already. */
	if (wt != NULL) {
		aw->wt = wt;
		ctl_req_on_abort(req, api_wait_abort, aw);
	}
}

static void
api_sandbox_delete(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req), *id;
	char err[512];
	int r;

	if (tenant == NULL || (id = api_sandbox_id(req)) == NULL)
		return;
	r = sandbox_destroy(api->mgr, tenant, id, api_sandbox_done, req, err, sizeof(err));
	if (r < 0)
		ctl_reply_err(req, r, err);
}

/* --- exec: the reply streams as NDJSON --- */

struct api_exec {
	struct ctl_req *req;
	struct sandbox_exec *ex;
	struct workers_exec *wex;	/* "via":"worker" */
	bool finished;
};

/* Write o (stolen) as one line; the result of ctl_stream_write(). */
static int
api_exec_line(struct ctl_req *req, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	size_t n;
	int r;

	json_decref(o);
	if (s == NULL)
		fatalx("json_dumps failed");
	n = strlen(s);
	s[n] = '\n';	/* json_dumps leaves room only for the NUL: replace it */
	r = ctl_stream_write(req, s, n + 1);
	free(s);
	return r;
}

static int
api_exec_output(void *arg, int fd, const char *data, size_t len)
{
	struct api_exec *ae = arg;
	const char *stream = fd == 2 ? "stderr" : "stdout";
	json_t *text = json_stringn(data, len);
	int r;

	if (text != NULL) {
		r = api_exec_line(ae->req, json_pack("{s:s, s:o}", "stream", stream, "data", text));
	} else {
		/* Not valid UTF-8 (or a character split across chunks): send bytes. */
		char *b64 = xmalloc(4 * ((len + 2) / 3) + 1);

		EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)data, (int)len);
		r = api_exec_line(ae->req, json_pack("{s:s, s:s}", "stream", stream, "data_b64", b64));
		free(b64);
	}
	/* A client that went away or cannot keep up stops the command. */
	return r < 0 ? r : 0;
}

static void
api_exec_done(void *arg, int status, const struct sp_exec_result *res, uint64_t duration_ms,
	      const char *detail)
{
	struct api_exec *ae = arg;

	ae->finished = true;
	if (status < 0)
		api_exec_line(ae->req, json_pack("{s:{s:s, s:s}}", "error", "code",
			status == SP_ECANCELED ? "cancelled" : "exec_failed", "message",
			detail ? detail : sp_strerror(status)));
	else
		api_exec_line(ae->req, json_pack("{s:i, s:b, s:b, s:I}", "exit_code", res->exit_code,
			"oom_killed", res->oom_killed, "timed_out", res->timed_out,
			"duration_ms", (json_int_t)duration_ms));
	ctl_stream_end(ae->req);
	free(ae);
}

static void
api_exec_abort(void *arg)
{
	struct api_exec *ae = arg;

	if (!ae->finished && ae->ex != NULL)
		sandbox_exec_cancel(ae->ex);
	else if (!ae->finished && ae->wex != NULL)
		workers_exec_cancel(ae->wex);
}

static void
api_sandbox_exec(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req), *id;
	struct api_exec *ae;
	const char *via;
	json_t *body;
	char err[512];
	int r;

	if (tenant == NULL || (id = api_sandbox_id(req)) == NULL)
		return;
	if ((body = ctl_req_json(req)) == NULL)
		return;
	ae = xcalloc(1, sizeof(*ae));
	ae->req = req;
	via = json_string_value(json_object_get(body, "via"));
	if (via != NULL && strcmp(via, "worker") == 0 && api->workers != NULL) {
		r = workers_exec(api->workers, tenant, id, body, api_exec_output, api_exec_done,
				 ae, &ae->wex, err, sizeof(err));
	} else if (via != NULL && strcmp(via, "provider") != 0) {
		snprintf(err, sizeof(err), "via: \"provider\" or \"worker\"");
		r = SP_EINVAL;
	} else {
		json_object_del(body, "via");
		r = sandbox_exec(api->mgr, tenant, id, body, api_exec_output, api_exec_done, ae,
				 &ae->ex, err, sizeof(err));
	}
	json_decref(body);
	if (r < 0) {
		free(ae);
		ctl_reply_err(req, r, err);
		return;
	}
	ctl_stream_begin(req, 200, "application/x-ndjson");
	ctl_req_on_abort(req, api_exec_abort, ae);
}

/* A task run through the sandbox's worker: its state, exit code and stored output. */
static void
api_sandbox_task(struct ctl_req *req, void *arg)
{
	struct api *api = arg;
	const char *tenant = api_tenant(req), *id;
	int64_t task;
	json_t *j;
	int r;

	if (tenant == NULL || (id = api_sandbox_id(req)) == NULL)
		return;
	task = workers_task_id(ctl_req_param(req, "task"));
	if (task < 0) {
		ctl_reply_error(req, 400, "bad_request", "a task id is a positive integer");
		return;
	}
	r = api->workers != NULL ? workers_task_json(api->workers, tenant, id, task, &j)
				 : SP_ENOTFOUND;
	if (r < 0) {
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such task" : NULL);
		return;
	}
	ctl_reply_json(req, 200, j);
}

void
api_register(struct api *api)
{
	ctl_route_add(api->ctl, "GET", "/v1/health", api_health, api);
	ctl_route_add(api->ctl, "GET", "/v1/info", api_info, api);
	ctl_route_add(api->ctl, "GET", "/metrics", api_metrics, api);
	ctl_route_add(api->ctl, "POST", "/v1/images/build", api_image_build, api);
	ctl_route_add(api->ctl, "POST", "/v1/sandboxes", api_sandbox_create, api);
	ctl_route_add(api->ctl, "GET", "/v1/sandboxes", api_sandbox_list, api);
	ctl_route_add(api->ctl, "GET", "/v1/sandboxes/{id}", api_sandbox_get, api);
	ctl_route_add(api->ctl, "DELETE", "/v1/sandboxes/{id}", api_sandbox_delete, api);
	ctl_route_add(api->ctl, "POST", "/v1/sandboxes/{id}/exec", api_sandbox_exec, api);
	ctl_route_add(api->ctl, "GET", "/v1/sandboxes/{id}/tasks/{task}", api_sandbox_task, api);
}

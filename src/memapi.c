/*
 * memapi: the memory routes on both transports: the control API (tenant from
 * ctl, the local admin's header) and the worker channel (tenant from the
 * verified token, never from the body). They hand the JSON to the memory
 * module (which validates it) and map its errors to HTTP statuses; they hold
 * no state of their own except a request whose reply waits on the memory.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <sandpit/error.h>

#include "ctl.h"
#include "memapi.h"
#include "memory.h"
#include "rpc.h"
#include "xmalloc.h"

static const char *
memapi_tenant(struct ctl_req *req)
{
	const char *t = ctl_req_tenant(req);

	if (t == NULL)
		ctl_reply_error(req, 400, "bad_request", "invalid tenant name");
	return t;
}

/*
 * The status and code a memory error answers with, on either transport. Text,
 * batch and tag limits are sizes of the request: 413, not 429.
 */
static int
memapi_status(int r, const char **code)
{
	switch (r) {
	case SP_EUNAVAIL: case SP_EPROTO: case SP_ETIMEDOUT:
		*code = "embedder_unavailable"; return 503;
	case SP_ELIMIT: case -E2BIG:
		*code = "too_large"; return 413;
	case SP_EINVAL: case -EINVAL:
		*code = "bad_request"; return 400;
	case SP_ENOTFOUND: case -ENOENT:
		*code = "not_found"; return 404;
	case SP_ECONFLICT:
		*code = "conflict"; return 409;
	case SP_ECANCELED:
		*code = "unavailable"; return 503;
	case SP_EDB:
		*code = "database_error"; return 500;
	}
	*code = "internal";
	return 500;
}

static void
memapi_fail(struct ctl_req *req, int r, const char *err)
{
	const char *code;
	int status = memapi_status(r, &code);

	ctl_reply_error(req, status, code, "%s", err != NULL && err[0] ? err : sp_strerror(r));
}

/* The HTTP embedder answered (or failed): reply with the memory's result. */
static void
memapi_added(void *arg, int status, json_t *ret, const char *err)
{
	if (status < 0)
		memapi_fail(arg, status, err);
	else
		ctl_reply_json(arg, 201, json_incref(ret));
}

static void
memapi_found(void *arg, int status, json_t *ret, const char *err)
{
	if (status < 0)
		memapi_fail(arg, status, err);
	else
		ctl_reply_json(arg, 200, json_incref(ret));
}

/* memory_add or memory_search, through the embedder when it is remote. */
static void
memapi_embedding(struct ctl_req *req, struct memory *m, bool add)
{
	const char *tenant;
	json_t *body, *ret;
	char err[256] = "";
	int r, ok = add ? 201 : 200;

	if ((tenant = memapi_tenant(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	if (memory_embeds_async(m)) {
		r = add ? memory_add_async(m, tenant, body, memapi_added, req, err, sizeof(err)) :
		    memory_search_async(m, tenant, body, memapi_found, req, err, sizeof(err));
		/* SP_ECONFLICT: client vectors need no embedder; answer now, below. */
		if (r != SP_ECONFLICT) {
			json_decref(body);
			if (r < 0)
				memapi_fail(req, r, err);
			return;
		}
	}
	r = add ? memory_add(m, tenant, body, &ret, err, sizeof(err)) :
	    memory_search(m, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		memapi_fail(req, r, err);
	else
		ctl_reply_json(req, ok, ret);
}

static void
memapi_add(struct ctl_req *req, void *arg)
{
	memapi_embedding(req, arg, true);
}

static void
memapi_search(struct ctl_req *req, void *arg)
{
	memapi_embedding(req, arg, false);
}

static void
memapi_get(struct ctl_req *req, void *arg)
{
	const char *tenant, *id = ctl_req_param(req, "id");
	json_t *ret;
	int r;

	if ((tenant = memapi_tenant(req)) == NULL)
		return;
	if ((r = memory_get(arg, tenant, id, &ret)) < 0)
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such memory" : NULL);
	else
		ctl_reply_json(req, 200, ret);
}

static void
memapi_delete(struct ctl_req *req, void *arg)
{
	const char *tenant, *id = ctl_req_param(req, "id");
	int r;

	if ((tenant = memapi_tenant(req)) == NULL)
		return;
	if ((r = memory_delete(arg, tenant, id)) < 0)
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such memory" : NULL);
	else
		ctl_reply_json(req, 200, json_pack("{sssb}", "id", id, "deleted", 1));
}

static void
memapi_feedback(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[256] = "";
	int r;

	if ((tenant = memapi_tenant(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	r = memory_feedback(arg, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		memapi_fail(req, r, err);
	else
		ctl_reply_json(req, 200, ret);
}

static void
memapi_trajectory(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[256] = "";
	int r;

	if ((tenant = memapi_tenant(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	r = memory_trajectory_add(arg, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		memapi_fail(req, r, err);
	else
		ctl_reply_json(req, 201, ret);
}

static void
memapi_consolidated(void *arg, int status, json_t *stats)
{
	struct ctl_req *req = arg;

	if (status < 0)
		ctl_reply_err(req, status, status == SP_ECANCELED ? "shutting down" : NULL);
	else
		ctl_reply_json(req, 200, json_incref(stats));
}

static void
memapi_consolidate(struct ctl_req *req, void *arg)
{
	const char *tenant;
	size_t len = 0;
	json_t *body;
	int r;

	if ((tenant = memapi_tenant(req)) == NULL)
		return;
	/* The body is optional; when present it must be an empty object. */
	ctl_req_body(req, &len);
	if (len > 0) {
		if ((body = ctl_req_json(req)) == NULL)
			return;
		if (json_object_size(body) != 0) {
			json_decref(body);
			ctl_reply_error(req, 400, "bad_request", "consolidate takes no fields");
			return;
		}
		json_decref(body);
	}
	/* The reply waits for the run; ctl keeps req until we answer. */
	if ((r = memory_consolidate(arg, tenant, memapi_consolidated, req)) < 0)
		ctl_reply_err(req, r, r == SP_ECONFLICT ?
			      "a consolidation of this tenant is running" : NULL);
}

void
memapi_register(struct ctl *ctl, struct memory *mem)
{
	ctl_route_add(ctl, "POST", "/v1/memories", memapi_add, mem);
	ctl_route_add(ctl, "POST", "/v1/memories/search", memapi_search, mem);
	ctl_route_add(ctl, "POST", "/v1/memories/feedback", memapi_feedback, mem);
	ctl_route_add(ctl, "POST", "/v1/memories/consolidate", memapi_consolidate, mem);
	ctl_route_add(ctl, "GET", "/v1/memories/{id}", memapi_get, mem);
	ctl_route_add(ctl, "DELETE", "/v1/memories/{id}", memapi_delete, mem);
	ctl_route_add(ctl, "POST", "/v1/trajectories", memapi_trajectory, mem);
}

/* --- the worker channel (HTTP/3): the tenant is the token's --- */

static void
memrpc_reply(struct rpc_response *resp, int r, int ok, json_t *ret, const char *err)
{
	const char *code;
	int status;

	if (r >= 0) {
		rpc_reply_json(resp, ok, ret);
		return;
	}
	status = memapi_status(r, &code);
	rpc_reply_error(resp, status, code, err != NULL && err[0] ? err : sp_strerror(r));
}

/* A request whose reply waits for the memory (embedder call, consolidation). */
struct memrpc_wait {
	struct rpc_pending *p;
	int ok;			/* the status of a success */
	bool gone;		/* the peer left first; free when the memory answers */
};

static void
memrpc_wait_cancel(void *arg)
{
	((struct memrpc_wait *)arg)->gone = true;
}

static void
memrpc_wait_done(void *arg, int status, json_t *ret, const char *err)
{
	struct memrpc_wait *w = arg;
	const char *code;
	int st;

	if (!w->gone) {
		if (status >= 0) {
			rpc_pending_reply(w->p, w->ok, json_incref(ret));
		} else {
			st = memapi_status(status, &code);
			rpc_pending_error(w->p, st, code, err != NULL && err[0] ? err :
					  sp_strerror(status));
		}
	}
	free(w);
}

static void
memrpc_consolidated(void *arg, int status, json_t *stats)
{
	memrpc_wait_done(arg, status, stats, NULL);
}

/* Defer call; NULL (after answering 503) when the transport cannot wait. */
static struct memrpc_wait *
memrpc_defer(const struct rpc_call *call, struct rpc_response *resp, int ok)
{
	struct memrpc_wait *w = xcalloc(1, sizeof(*w));

	w->ok = ok;
	if ((w->p = rpc_defer(call, memrpc_wait_cancel, w)) == NULL) {
		free(w);
		rpc_reply_error(resp, 503, "unavailable", "this request cannot wait here");
		return NULL;
	}
	return w;
}

/* memory_add or memory_search, through the embedder when it is remote. */
static void
memrpc_embedding(const struct rpc_call *call, struct rpc_response *resp, struct memory *m,
		 bool add)
{
	const char *tenant = call->claims->tenant;
	json_t *body = call->json, *ret = NULL;
	struct memrpc_wait *w;
	char err[256] = "";
	int r, ok = add ? 201 : 200;

	if (body == NULL) {
		rpc_reply_error(resp, 400, "bad_request", "the body must be a JSON object");
		return;
	}
	if (memory_embeds_async(m)) {
		if ((w = memrpc_defer(call, resp, ok)) == NULL)
			return;
		r = add ? memory_add_async(m, tenant, body, memrpc_wait_done, w, err, sizeof(err)) :
		    memory_search_async(m, tenant, body, memrpc_wait_done, w, err, sizeof(err));
		if (r != SP_ECONFLICT) {
			if (r < 0) {
				const char *code;
				int st = memapi_status(r, &code);

				rpc_pending_error(w->p, st, code, err[0] ? err : sp_strerror(r));
				free(w);
			}
			return;
		}
		/* Client vectors need no embedder: the synchronous call answers. */
		r = add ? memory_add(m, tenant, body, &ret, err, sizeof(err)) :
		    memory_search(m, tenant, body, &ret, err, sizeof(err));
		memrpc_wait_done(w, r, ret, err);
		json_decref(ret);
		return;
	}
	r = add ? memory_add(m, tenant, body, &ret, err, sizeof(err)) :
	    memory_search(m, tenant, body, &ret, err, sizeof(err));
	memrpc_reply(resp, r, ok, ret, err);
}

static void
memrpc_add(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	memrpc_embedding(call, resp, arg, true);
}

static void
memrpc_search(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	memrpc_embedding(call, resp, arg, false);
}

static void
memrpc_get(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	json_t *ret = NULL;
	int r = memory_get(arg, call->claims->tenant, call->param[0], &ret);

	memrpc_reply(resp, r, 200, ret, r == SP_ENOTFOUND ? "no such memory" : NULL);
}

static void
memrpc_delete(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	int r = memory_delete(arg, call->claims->tenant, call->param[0]);

	memrpc_reply(resp, r, 200, r < 0 ? NULL :
		     json_pack("{sssb}", "id", call->param[0], "deleted", 1),
		     r == SP_ENOTFOUND ? "no such memory" : NULL);
}

static void
memrpc_feedback(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	json_t *ret = NULL;
	char err[256] = "";
	int r;

	if (call->json == NULL) {
		rpc_reply_error(resp, 400, "bad_request", "the body must be a JSON object");
		return;
	}
	r = memory_feedback(arg, call->claims->tenant, call->json, &ret, err, sizeof(err));
	memrpc_reply(resp, r, 200, ret, err);
}

static void
memrpc_trajectory(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	json_t *ret = NULL;
	char err[256] = "";
	int r;

	if (call->json == NULL) {
		rpc_reply_error(resp, 400, "bad_request", "the body must be a JSON object");
		return;
	}
	r = memory_trajectory_add(arg, call->claims->tenant, call->json, &ret, err, sizeof(err));
	memrpc_reply(resp, r, 201, ret, err);
}

static void
memrpc_consolidate(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct memrpc_wait *w;
	int r;

	if (call->json != NULL && json_object_size(call->json) != 0) {
		rpc_reply_error(resp, 400, "bad_request", "consolidate takes no fields");
		return;
	}
	if ((w = memrpc_defer(call, resp, 200)) == NULL)
		return;
	r = memory_consolidate(arg, call->claims->tenant, memrpc_consolidated, w);
	if (r < 0) {
		rpc_pending_error(w->p, r == SP_ECONFLICT ? 409 : 500,
				  r == SP_ECONFLICT ? "conflict" : "internal",
				  r == SP_ECONFLICT ? "a consolidation of this tenant is running" :
				  sp_strerror(r));
		free(w);
	}
}

int
memapi_rpc_register(struct rpc *rpc, struct memory *mem, const char *scope)
{
	static const struct {
		const char *method, *pattern;
		rpc_handler_fn fn;
	} routes[] = {
		{ "POST", "/v1/memories", memrpc_add },
		{ "POST", "/v1/memories/search", memrpc_search },
		{ "POST", "/v1/memories/feedback", memrpc_feedback },
		{ "POST", "/v1/memories/consolidate", memrpc_consolidate },
		{ "GET", "/v1/memories/{id}", memrpc_get },
		{ "DELETE", "/v1/memories/{id}", memrpc_delete },
		{ "POST", "/v1/trajectories", memrpc_trajectory },
	};
	int r;

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if ((r = rpc_add(rpc, routes[i].method, routes[i].pattern, scope, 0, routes[i].fn,
				 mem)) < 0)
			return r;
	return 0;
}

/*
 * memapi: the control API handlers for memory. They take the tenant from
 * ctl, hand the JSON to the memory module (which validates it) and map its
 * errors to HTTP statuses. They hold no state of their own except the
 * request a consolidation reply waits on.
 */
#include <stdio.h>

#include <sandpit/error.h>

#include "ctl.h"
#include "memapi.h"
#include "memory.h"

static const char *
memapi_tenant(struct ctl_req *req)
{
	const char *t = ctl_req_tenant(req);

	if (t == NULL)
		ctl_reply_error(req, 400, "bad_request", "invalid tenant name");
	return t;
}

static void
memapi_fail(struct ctl_req *req, int r, const char *err)
{
	/* Text, batch and tag limits are sizes of the request: 413, not 429. */
	if (r == SP_EUNAVAIL || r == SP_EPROTO || r == SP_ETIMEDOUT)
		ctl_reply_error(req, 503, "embedder_unavailable", "%s", err);
	else if (r == SP_ELIMIT)
		ctl_reply_error(req, 413, "too_large", "%s", err);
	else
		ctl_reply_err(req, r, err);
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

static void
memapi_add(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[256] = "";
	int r;

	if ((tenant = memapi_tenant(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	if (memory_embeds_async(arg)) {
		r = memory_add_async(arg, tenant, body, memapi_added, req, err, sizeof(err));
		if (r != SP_ECONFLICT) {
			json_decref(body);
			if (r < 0)
				memapi_fail(req, r, err);
			return;
		}
	}
	r = memory_add(arg, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		memapi_fail(req, r, err);
	else
		ctl_reply_json(req, 201, ret);
}

static void
memapi_search(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[256] = "";
	int r;

	if ((tenant = memapi_tenant(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	if (memory_embeds_async(arg)) {
		r = memory_search_async(arg, tenant, body, memapi_found, req, err, sizeof(err));
		if (r != SP_ECONFLICT) {
			json_decref(body);
			if (r < 0)
				memapi_fail(req, r, err);
			return;
		}
	}
	r = memory_search(arg, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		memapi_fail(req, r, err);
	else
		ctl_reply_json(req, 200, ret);
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

/*
 * swarmapi: the control API handlers for swarms and their tasks. They take
 * the tenant from ctl, hand the JSON to the swarm module (which validates
 * it) and map its errors to HTTP statuses. The only state held is an events
 * stream's watch.
 */
#include <stdio.h>
#include <stdlib.h>

#include <sandpit/error.h>

#include "ctl.h"
#include "swarm.h"
#include "swarmapi.h"
#include "workers.h"
#include "xmalloc.h"

static const char *
tenant_of(struct ctl_req *req)
{
	const char *t = ctl_req_tenant(req);

	if (t == NULL)
		ctl_reply_error(req, 400, "bad_request", "invalid tenant name");
	return t;
}

static void
s_create(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[512] = "";
	int r;

	if ((tenant = tenant_of(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	r = swarm_create(arg, tenant, body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		ctl_reply_err(req, r, err[0] ? err : NULL);
	else
		ctl_reply_json(req, 201, ret);
}

static void
s_list(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *ret;

	if ((tenant = tenant_of(req)) == NULL)
		return;
	swarm_list(arg, tenant, &ret);
	ctl_reply_json(req, 200, ret);
}

static void
s_get(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *ret;
	int r;

	if ((tenant = tenant_of(req)) == NULL)
		return;
	if ((r = swarm_get(arg, tenant, ctl_req_param(req, "id"), &ret)) < 0)
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such swarm" : NULL);
	else
		ctl_reply_json(req, 200, ret);
}

static void
s_delete(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *ret;
	int r;

	if ((tenant = tenant_of(req)) == NULL)
		return;
	if ((r = swarm_delete(arg, tenant, ctl_req_param(req, "id"), &ret)) < 0)
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such swarm" : NULL);
	else
		ctl_reply_json(req, 200, ret);
}

static void
s_tasks(struct ctl_req *req, void *arg)
{
	const char *tenant;
	json_t *body, *ret;
	char err[512] = "";
	int r;

	if ((tenant = tenant_of(req)) == NULL || (body = ctl_req_json(req)) == NULL)
		return;
	r = swarm_add_tasks(arg, tenant, ctl_req_param(req, "id"), body, &ret, err, sizeof(err));
	json_decref(body);
	if (r < 0)
		ctl_reply_err(req, r, err[0] ? err : NULL);
	else
		ctl_reply_json(req, 201, ret);
}

static void
s_task(struct ctl_req *req, void *arg)
{
	const char *tenant;
	int64_t id;
	json_t *ret;
	int r;

	if ((tenant = tenant_of(req)) == NULL)
		return;
	if ((id = workers_task_id(ctl_req_param(req, "id"))) < 0) {
		ctl_reply_error(req, 400, "bad_request", "a task id is a positive integer");
		return;
	}
	if ((r = swarm_task_get(arg, tenant, id, &ret)) < 0)
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such task" : NULL);
	else
		ctl_reply_json(req, 200, ret);
}

/* An events stream: the request and its watch, until one of them ends. */
struct stream {
	struct ctl_req *req;
	struct swarm_watch *watch;
	bool begun;
};

static void
stream_event(void *arg, const char *line, size_t len, bool final)
{
	struct stream *s = arg;

	if (!s->begun) {
		ctl_stream_begin(s->req, 200, "application/x-ndjson");
		s->begun = true;
	}
	if (line != NULL)
		(void)ctl_stream_write(s->req, line, len);
	if (final) {
		/* The watch is gone; the request ends here, so no abort may follow. */
		ctl_req_on_abort(s->req, NULL, NULL);
		ctl_stream_end(s->req);
		free(s);
	}
}

static void
stream_abort(void *arg)
{
	struct stream *s = arg;

	swarm_unwatch(s->watch);
	free(s);
}

static void
s_events(struct ctl_req *req, void *arg)
{
	struct swarm_watch *w;
	const char *tenant;
	struct stream *s;
	int r;

	if ((tenant = tenant_of(req)) == NULL)
		return;
	s = xcalloc(1, sizeof(*s));
	s->req = req;
	r = swarm_watch(arg, tenant, ctl_req_param(req, "id"), stream_event, s, &w);
	if (r < 0) {
		free(s);
		ctl_reply_err(req, r, r == SP_ENOTFOUND ? "no such swarm" : NULL);
		return;
	}
	if (w == NULL)
		return;		/* over already: stream_event ended the reply and freed s */
	s->watch = w;
	ctl_req_on_abort(req, stream_abort, s);
}

void
swarmapi_register(struct ctl *ctl, struct swarm_mgr *m)
{
	ctl_route_add(ctl, "POST", "/v1/swarms", s_create, m);
	ctl_route_add(ctl, "GET", "/v1/swarms", s_list, m);
	ctl_route_add(ctl, "GET", "/v1/swarms/{id}", s_get, m);
	ctl_route_add(ctl, "DELETE", "/v1/swarms/{id}", s_delete, m);
	ctl_route_add(ctl, "POST", "/v1/swarms/{id}/tasks", s_tasks, m);
	ctl_route_add(ctl, "GET", "/v1/swarms/{id}/events", s_events, m);
	ctl_route_add(ctl, "GET", "/v1/tasks/{id}", s_task, m);
}

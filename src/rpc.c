/*
 * rpc: routes worker-channel requests to handlers after checking the bearer
 * token. It owns the route table and its counters; it knows nothing of QUIC
 * (the transport bounds sizes before calling it) and it never logs a token.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandpit/error.h"
#include "rpc.h"
#include "xmalloc.h"

#define RPC_MAX_SEGMENTS	16

struct rpc_route {
	char *method;
	char *seg[RPC_MAX_SEGMENTS];	/* literal, or "{name}" */
	size_t nseg;
	int sandbox_param;		/* index among params of {sandbox}, or -1 */
	char *scope;
	unsigned flags;
	rpc_handler_fn fn;
	void *arg;
	struct rpc_route *next;
};

struct rpc {
	struct auth *auth;
	struct rpc_route *routes, **tail;
	struct rpc_stats stats;
};

struct rpc *
rpc_new(struct auth *auth)
{
	struct rpc *rpc = xcalloc(1, sizeof(*rpc));

	rpc->auth = auth;
	rpc->tail = &rpc->routes;
	return rpc;
}

static void
rpc_route_free(struct rpc_route *r)
{
	size_t i;

	for (i = 0; i < r->nseg; i++)
		free(r->seg[i]);
	free(r->method);
	free(r->scope);
	free(r);
}

void
rpc_free(struct rpc *rpc)
{
	struct rpc_route *r, *next;

	if (!rpc)
		return;
	for (r = rpc->routes; r; r = next) {
		next = r->next;
		rpc_route_free(r);
	}
	free(rpc);
}

static int
rpc_is_param(const char *seg)
{
	size_t n = strlen(seg);

	return n > 2 && seg[0] == '{' && seg[n - 1] == '}';
}

/* Split an absolute path (no query) into segments, in place; -1 when malformed. */
static int
rpc_split(char *path, char **seg, size_t max)
{
	size_t n = 0;
	char *p, *end;

	if (path[0] != '/')
		return -1;
	if (path[1] == '\0')
		return 0;
	for (p = path + 1;; p = end + 1) {
		end = strchr(p, '/');
		if (end == p || *p == '\0' || n == max)
			return -1;	/* an empty segment ("//", trailing '/') or too many */
		seg[n++] = p;
		if (!end)
			break;
		*end = '\0';
	}
	return (int)n;
}

int
rpc_add(struct rpc *rpc, const char *method, const char *pattern, const char *scope,
    unsigned flags, rpc_handler_fn fn, void *arg)
{
	struct rpc_route *r, *o;
	char *copy, *seg[RPC_MAX_SEGMENTS];
	int n, i, nparam = 0;

	if (!method || !*method || strlen(method) > RPC_METHOD_MAX || !pattern || !fn)
		return SP_EINVAL;
	copy = xstrdup(pattern);
	n = rpc_split(copy, seg, RPC_MAX_SEGMENTS);
	if (n < 0) {
		free(copy);
		return SP_EINVAL;
	}
	r = xcalloc(1, sizeof(*r));
	r->sandbox_param = -1;
	for (i = 0; i < n; i++) {
		r->seg[i] = xstrdup(seg[i]);
		if (rpc_is_param(r->seg[i])) {
			if (strcmp(r->seg[i], "{sandbox}") == 0)
				r->sandbox_param = nparam;
			nparam++;
		} else if (strchr(r->seg[i], '{') || strchr(r->seg[i], '}')) {
			r->nseg = (size_t)i + 1;
			goto out_bad;
		}
	}
	r->nseg = (size_t)n;
	free(copy);
	if (nparam > RPC_MAX_PARAMS)
		goto out_bad_nocopy;
	r->method = xstrdup(method);
	r->scope = scope ? xstrdup(scope) : NULL;
	r->flags = flags;
	r->fn = fn;
	r->arg = arg;
	for (o = rpc->routes; o; o = o->next) {
		size_t k;

		if (o->nseg != r->nseg || strcmp(o->method, r->method) != 0)
			continue;
		for (k = 0; k < r->nseg; k++)
			if (strcmp(o->seg[k], r->seg[k]) != 0)
				break;
		if (k == r->nseg) {
			rpc_route_free(r);
			return SP_ECONFLICT;
		}
	}
	*rpc->tail = r;
	rpc->tail = &r->next;
	return 0;

out_bad:
	free(copy);
out_bad_nocopy:
	rpc_route_free(r);
	return SP_EINVAL;
}

void
rpc_reply_json(struct rpc_response *resp, int status, json_t *json)
{
	char *s = json ? json_dumps(json, JSON_COMPACT) : xstrdup("{}");

	if (!s)
		abort();	/* jansson fails only when out of memory */
	json_decref(json);
	free(resp->body);
	resp->status = status;
	resp->body = s;
	resp->body_len = strlen(s);
}

void
rpc_reply_error(struct rpc_response *resp, int status, const char *code,
    const char *message)
{
	rpc_reply_json(resp, status, json_pack("{s:{s:s, s:s}}", "error", "code", code,
	    "message", message));
}

static void
rpc_count(struct rpc *rpc, int status)
{
	if (status >= 200 && status < 300)
		rpc->stats.status_2xx++;
	else if (status >= 400 && status < 500)
		rpc->stats.status_4xx++;
	else if (status >= 500)
		rpc->stats.status_5xx++;
	switch (status) {
	case 400: case 413: case 431:
		rpc->stats.bad_request++;
		break;
	case 401:
		rpc->stats.unauthorized++;
		break;
	case 403:
		rpc->stats.forbidden++;
		break;
	case 404: case 405:
		rpc->stats.not_found++;
		break;
	}
}

void
rpc_refuse(struct rpc *rpc, struct rpc_response *resp, int status)
{
	rpc->stats.requests++;
	if (status == 413)
		rpc_reply_error(resp, 413, "too_large", "request body too large");
	else if (status == 431)
		rpc_reply_error(resp, 431, "too_large", "request headers too large");
	else
		rpc_reply_error(resp, 400, "bad_request", "malformed request");
	rpc_count(rpc, resp->status);
}

static int
rpc_match(const struct rpc_route *r, char **seg, size_t nseg, struct rpc_call *call)
{
	size_t i;

	if (r->nseg != nseg)
		return 0;
	call->nparam = 0;
	for (i = 0; i < nseg; i++) {
		if (rpc_is_param(r->seg[i]))
			call->param[call->nparam++] = seg[i];
		else if (strcmp(r->seg[i], seg[i]) != 0)
			return 0;
	}
	return 1;
}

/* Authenticate for route r; returns 0 or fills resp with 401/403. */
static int
rpc_authorize(struct rpc *rpc, const struct rpc_route *r, const struct rpc_request *req,
    struct rpc_call *call, struct auth_claims *claims, struct rpc_response *resp)
{
	const char *tok;
	int ret;

	if (r->flags & RPC_ROUTE_PUBLIC)
		return 0;
	if (!rpc->auth || !req->authorization ||
	    strncasecmp(req->authorization, "Bearer ", 7) != 0) {
		rpc_reply_error(resp, 401, "unauthorized", "a bearer token is required");
		resp->close_conn = 1;
		return -1;
	}
	tok = req->authorization + 7;
	ret = auth_verify(rpc->auth, tok, strlen(tok), 0, claims);
	if (ret < 0) {
		rpc_reply_error(resp, 401, "unauthorized",
		    ret == -EKEYEXPIRED ? "token expired" :
		    ret == -EKEYREVOKED ? "token revoked" : "invalid token");
		resp->close_conn = 1;
		return -1;
	}
	if (r->scope && !auth_has_scope(claims, r->scope)) {
		rpc_reply_error(resp, 403, "forbidden", "the token lacks the scope of this route");
		return -1;
	}
	if (r->sandbox_param >= 0 &&
	    strcmp(call->param[r->sandbox_param], claims->sub) != 0) {
		rpc_reply_error(resp, 403, "forbidden", "the token names another sandbox");
		return -1;
	}
	call->claims = claims;
	return 0;
}

static void
rpc_dispatch_one(struct rpc *rpc, const struct rpc_request *req, struct rpc_response *resp)
{
	char path[RPC_PATH_MAX + 1], *seg[RPC_MAX_SEGMENTS];
	struct auth_claims claims;
	struct rpc_call call;
	const struct rpc_route *r, *found = NULL;
	int n, method_mismatch = 0;
	size_t len;

	len = strcspn(req->path, "?#");
	if (!req->method || len == 0 || len > RPC_PATH_MAX) {
		rpc_reply_error(resp, 400, "bad_request", "malformed path");
		return;
	}
	memcpy(path, req->path, len);
	path[len] = '\0';
	n = rpc_split(path, seg, RPC_MAX_SEGMENTS);
	if (n < 0) {
		rpc_reply_error(resp, 404, "not_found", "no such route");
		return;
	}

	memset(&call, 0, sizeof(call));
	call.req = req;
	for (r = rpc->routes; r; r = r->next) {
		if (!rpc_match(r, seg, (size_t)n, &call))
			continue;
		if (strcmp(r->method, req->method) != 0) {
			method_mismatch = 1;
			continue;
		}
		found = r;
		break;
	}
	if (!found) {
		if (method_mismatch)
			rpc_reply_error(resp, 405, "method_not_allowed",
			    "the route does not take this method");
		else
			rpc_reply_error(resp, 404, "not_found", "no such route");
		return;
	}
	if (rpc_authorize(rpc, found, req, &call, &claims, resp) < 0)
		return;
	if (req->body_len > 0) {
		json_error_t jerr;

		call.json = json_loadb((const char *)req->body, req->body_len,
		    JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(call.json)) {
			json_decref(call.json);
			rpc_reply_error(resp, 400, "bad_request", "the body is not a JSON object");
			return;
		}
	}
	found->fn(&call, resp, found->arg);
	json_decref(call.json);
	if (req->pending && req->pending->deferred) {
		/* A reply set before deferring is dropped: the deferred one wins. */
		free(resp->body);
		resp->body = NULL;
		resp->body_len = 0;
		resp->status = 0;
		return;
	}
	if (!resp->body)
		rpc_reply_error(resp, 500, "internal", "the handler gave no reply");
}

void
rpc_dispatch(struct rpc *rpc, const struct rpc_request *req, struct rpc_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	rpc->stats.requests++;
	if (req->pending) {
		req->pending->rpc = rpc;
		req->pending->deferred = 0;
	}
	rpc_dispatch_one(rpc, req, resp);
	if (resp->status)
		rpc_count(rpc, resp->status);
	else
		rpc->stats.deferred++;
}

struct rpc_pending *
rpc_defer(const struct rpc_call *call, void (*cancel)(void *arg), void *arg)
{
	struct rpc_pending *p = call->req->pending;

	if (!p)
		return NULL;
	p->deferred = 1;
	p->cancel = cancel;
	p->cancel_arg = arg;
	return p;
}

void
rpc_pending_reply(struct rpc_pending *p, int status, json_t *json)
{
	struct rpc_response resp = { 0 };

	rpc_reply_json(&resp, status, json);
	rpc_count(p->rpc, status);
	p->deferred = 0;
	p->cancel = NULL;
	p->send(p, &resp);
}

void
rpc_pending_cancel(struct rpc_pending *p)
{
	void (*cancel)(void *) = p->cancel;

	if (!p->deferred)
		return;
	p->deferred = 0;
	p->cancel = NULL;
	p->rpc->stats.cancelled++;
	if (cancel)
		cancel(p->cancel_arg);
}

void
rpc_pending_error(struct rpc_pending *p, int status, const char *code, const char *message)
{
	rpc_pending_reply(p, status, json_pack("{s:{s:s, s:s}}", "error", "code", code,
	    "message", message));
}

const struct rpc_stats *
rpc_stats(const struct rpc *rpc)
{
	return &rpc->stats;
}

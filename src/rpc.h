/*
 * rpc: the route table of the worker channel. The transport (quic) hands it one
 * complete, bounded HTTP/3 request at a time; rpc authenticates the bearer token,
 * finds the route and calls its handler, which fills in a response. Bodies are
 * JSON; errors have the control API's shape {"error":{"code":..,"message":..}}.
 *
 * Statuses rpc produces by itself: 400 (malformed request or JSON body), 401
 * (missing, forged, expired or revoked token: the transport then closes the
 * connection), 403 (token lacks the route's scope or names another sandbox),
 * 404 (no route), 405 (route exists for another method), 413 (body too large,
 * decided by the transport), 431 (headers too large, idem).
 *
 * Handlers run on the loop thread and must not block. A handler that must wait
 * for an event (long-poll) calls rpc_defer() and returns without a reply; it
 * answers later with rpc_pending_reply(), or learns through its cancel callback
 * that the peer went away first.
 */
#ifndef SANDPIT_RPC_H
#define SANDPIT_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "auth.h"

#define RPC_MAX_PARAMS		4	/* {name} captures in one pattern */
#define RPC_PATH_MAX		1024
#define RPC_METHOD_MAX		16

struct rpc;

/* What the transport knows about one request. Everything is borrowed for the call. */
struct rpc_response;
struct rpc_pending;

/*
 * A reply taken out of line. The transport embeds one per request it can keep
 * open and fills in `send`; rpc fills in the rest. Handlers only see the pointer.
 */
struct rpc_pending {
	/* Set by the transport: deliver resp (its body is handed over) and forget p. */
	void (*send)(struct rpc_pending *p, struct rpc_response *resp);
	/* Set by rpc_defer(). */
	struct rpc *rpc;
	void (*cancel)(void *arg);
	void *cancel_arg;
	int deferred;
};

struct rpc_request {
	const char *method;
	const char *path;		/* the :path pseudo-header, query included */
	const char *authorization;	/* the header value or NULL */
	const uint8_t *body;
	size_t body_len;
	struct rpc_pending *pending;	/* NULL when the transport cannot defer */
};

/* What a handler sees: the request, the path captures and the verified identity. */
struct rpc_call {
	const struct rpc_request *req;
	const char *param[RPC_MAX_PARAMS];	/* values of the {name} captures, in order */
	size_t nparam;
	const struct auth_claims *claims;	/* NULL on RPC_ROUTE_PUBLIC routes */
	json_t *json;				/* parsed body (an object), NULL if empty */
};

struct rpc_response {
	int status;		/* 0 after rpc_dispatch() only when the handler deferred */
	char *body;		/* heap (malloc); the transport frees it */
	size_t body_len;
	int close_conn;		/* the transport closes the connection after sending */
};

/* A handler fills resp with rpc_reply_json() or rpc_reply_error(), or defers with
 * rpc_defer(); if it does neither, rpc answers 500. */
typedef void (*rpc_handler_fn)(const struct rpc_call *call, struct rpc_response *resp,
    void *arg);

#define RPC_ROUTE_PUBLIC	0x1	/* no token needed (health checks, tests) */

struct rpc_stats {
	uint64_t requests;
	uint64_t status_2xx, status_4xx, status_5xx;
	uint64_t unauthorized;		/* 401s */
	uint64_t forbidden;		/* 403s */
	uint64_t not_found;		/* 404s and 405s */
	uint64_t bad_request;		/* 400s, 413s, 431s */
	uint64_t deferred;		/* requests answered later (or cancelled) */
	uint64_t cancelled;		/* deferred requests whose peer went away */
};

/*
 * A new, empty router. auth (borrowed; it must outlive the router) verifies
 * bearer tokens; with auth == NULL only RPC_ROUTE_PUBLIC routes can be called.
 */
struct rpc *rpc_new(struct auth *auth);
void rpc_free(struct rpc *rpc);

/*
 * Add a route. pattern is an absolute path whose segments are literals or
 * "{name}" captures; a capture named "{sandbox}" must equal the token's sub.
 * scope (may be NULL) is a scope the token must carry. Returns 0, SP_EINVAL for a
 * bad pattern or SP_ECONFLICT for a duplicate.
 */
int rpc_add(struct rpc *rpc, const char *method, const char *pattern, const char *scope,
    unsigned flags, rpc_handler_fn fn, void *arg);

/*
 * Handle one request; resp is filled (status and body set), except when the
 * handler deferred: then resp->status is 0 and the transport keeps the request
 * open until req->pending->send() is called. Never fails.
 */
void rpc_dispatch(struct rpc *rpc, const struct rpc_request *req, struct rpc_response *resp);

/* Reply helpers: json is stolen (decref'd); code is a short machine word ("not_found"). */
void rpc_reply_json(struct rpc_response *resp, int status, json_t *json);
void rpc_reply_error(struct rpc_response *resp, int status, const char *code,
    const char *message);

/*
 * From inside a handler: answer later. Returns the handle to answer with, or NULL
 * when the transport cannot keep this request open (then reply now). cancel(arg)
 * (may be NULL) runs at most once, when the stream or the connection goes before
 * the reply; the handle is invalid from then on and cancel must not reply.
 */
struct rpc_pending *rpc_defer(const struct rpc_call *call, void (*cancel)(void *arg),
    void *arg);

/*
 * Answer a deferred request (json stolen; NULL = {}); p is invalid afterwards.
 * May be called from any loop callback, including another request's handler.
 */
void rpc_pending_reply(struct rpc_pending *p, int status, json_t *json);
void rpc_pending_error(struct rpc_pending *p, int status, const char *code,
    const char *message);

/* For transports: the deferred request's peer went away; runs the handler's cancel. */
void rpc_pending_cancel(struct rpc_pending *p);

const struct rpc_stats *rpc_stats(const struct rpc *rpc);

/* Counts a refusal the transport decided (413, 431) and builds its body. */
void rpc_refuse(struct rpc *rpc, struct rpc_response *resp, int status);

#endif

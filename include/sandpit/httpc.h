/*
 * The asynchronous HTTP client the core lends to providers: libcurl's multi
 * interface driven by the libuv loop (curl_multi_socket_action with uv_poll and
 * uv_timer). Nothing here ever blocks the loop, and no callback ever fires
 * inside the call that started the request.
 *
 * Ownership: the core owns the struct sp_httpc; a request is owned by the
 * client until its done callback has returned. sp_http_cancel() on a pending
 * request makes its done callback fire (later, from the loop) with
 * SP_ECANCELED; after done has fired the handle must not be used again.
 */
#ifndef SANDPIT_HTTPC_H
#define SANDPIT_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sp_httpc;
struct sp_http_call;

struct sp_http_opts {
	const char *method;		/* "GET", "POST", "DELETE", ... */
	const char *url;		/* absolute URL; with unix_socket the host is ignored */
	const char *unix_socket;	/* connect to this socket path instead of TCP, or NULL */
	const char *const *headers;	/* NULL-terminated "Name: value" lines, or NULL */
	const void *body;		/* request body (copied), or NULL */
	size_t body_len;
	uint64_t timeout_ms;		/* whole-transfer limit; 0 = none (streams) */
	uint64_t connect_timeout_ms;	/* 0 = library default */
	size_t max_body;		/* buffered responses larger than this fail with -E2BIG; 0 = 8 MiB */
	/*
	 * Send on a new connection. libcurl silently resends a request whose
	 * reused keep-alive connection dies before the first response byte;
	 * a call that must not run twice (a create) asks for this instead.
	 */
	bool fresh_connect;
};

struct sp_http_resp {
	long status;			/* HTTP status, 0 when no response arrived */
	const char *body;		/* buffered body, NUL-terminated (empty when streamed) */
	size_t body_len;
	const char *content_type;	/* or NULL */
	const char *api_version;	/* the Api-Version header, or NULL (Docker's /_ping) */
	const char *retry_after;	/* the Retry-After header, or NULL */
	const char *next_token;		/* the X-Next-Token header (E2B list pages), or NULL */
	/*
	 * Some of the request left this host. SP_EUNAVAIL is both "could not
	 * connect" (nothing sent: safe to repeat) and a send cut by a reset
	 * (the peer may have acted): this tells them apart.
	 */
	bool request_sent;
};

/*
 * Called for each piece of the response body when the request streams. Return 0
 * to go on, or a negative value to abort the transfer (done then gets that value).
 */
typedef int (*sp_http_data_cb)(void *arg, const char *data, size_t len);

/*
 * Called exactly once per request. status is 0 when an HTTP response arrived
 * (whatever its HTTP status, which is in resp->status), or a negative error:
 * SP_EUNAVAIL (could not connect), SP_ETIMEDOUT, SP_ECANCELED, -E2BIG, ...
 * resp and its strings are valid only during the call.
 */
typedef void (*sp_http_done_cb)(void *arg, int status, const struct sp_http_resp *resp);

/*
 * Start a request. When on_data is NULL the body is buffered and handed to
 * on_done; otherwise it is streamed through on_data. On success *ret (if not
 * NULL) receives a handle usable with sp_http_cancel() until on_done fires.
 * Returns 0 or a negative error, in which case no callback fires.
 */
int sp_http_request(struct sp_httpc *c, const struct sp_http_opts *opts,
		    sp_http_data_cb on_data, sp_http_done_cb on_done, void *arg,
		    struct sp_http_call **ret);

/* Cancel a pending request; its on_done fires later with SP_ECANCELED. */
void sp_http_cancel(struct sp_http_call *call);

#endif

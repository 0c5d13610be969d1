/*
 * The control API server: HTTP/1.1 + JSON on a Unix socket. It owns the
 * listening pipe, the client connections, request parsing (http_parser), peer
 * checks (SO_PEERCRED: root or the configured group), the limits on bodies,
 * headers and connections, and the route table. It knows nothing of sandboxes:
 * the composition root registers handlers (api.c) with ctl_route_add().
 *
 * Request lifetime: a struct ctl_req is valid from the handler call until the
 * handler has finished its reply (ctl_reply_*() or ctl_stream_end()). Every
 * request gets exactly one reply. When the client goes away first, the reply
 * is discarded, the abort callback (if set) fires once, and the request still
 * waits for its reply to be finished before it is freed.
 */
#ifndef SANDPIT_CTL_H
#define SANDPIT_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>
#include <uv.h>

struct ctl;
struct ctl_req;

struct ctl_limits {
	unsigned max_clients;		/* concurrent connections; more are closed at once */
	size_t max_body;		/* request body bytes; more gets 413 */
	size_t max_header;		/* request line + headers bytes; more gets 431 */
	size_t max_stream_queue;	/* bytes queued for a slow streaming client before it is dropped */
};

struct ctl_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

typedef void (*ctl_handler)(struct ctl_req *req, void *arg);

int ctl_new(uv_loop_t *loop, const struct ctl_limits *limits, struct ctl **ret);
/* Change limits (SIGHUP); connections already open keep working. */
void ctl_set_limits(struct ctl *ctl, const struct ctl_limits *limits);
/*
 * Listen on path (a stale socket file is replaced, the parent directory made),
 * mode 0660, group gid unless (gid_t)-1. Peers whose uid is not 0 and whose
 * primary or supplementary groups do not include gid are answered 403.
 */
int ctl_listen(struct ctl *ctl, const char *path, gid_t gid);
/*
 * Route METHOD + pattern to fn. Patterns are literal segments and "{name}"
 * segments ("/v1/sandboxes/{id}/exec"). An unknown path gets 404, a known path
 * with another method 405, both with the JSON error shape.
 */
void ctl_route_add(struct ctl *ctl, const char *method, const char *pattern,
		   ctl_handler fn, void *arg);
/* Stop accepting new connections and new requests (shutdown, first step). */
void ctl_stop_accepting(struct ctl *ctl);
/* Number of requests whose reply is not finished. */
size_t ctl_pending(const struct ctl *ctl);
/* Close the listener and every connection; cb fires once all handles are closed. */
void ctl_close(struct ctl *ctl, void (*cb)(void *arg), void *arg);

/* --- the request --- */
const char *ctl_req_method(const struct ctl_req *req);
const char *ctl_req_path(const struct ctl_req *req);		/* without the query */
const char *ctl_req_param(const struct ctl_req *req, const char *name);	/* "{id}", or NULL */
const char *ctl_req_query(const struct ctl_req *req, const char *name);	/* decoded, or NULL */
const char *ctl_req_header(const struct ctl_req *req, const char *name);	/* case-insensitive */
const struct ctl_peer *ctl_req_peer(const struct ctl_req *req);
const char *ctl_req_body(const struct ctl_req *req, size_t *len);
/*
 * The tenant the request acts for: the X-Sandpit-Tenant header of a local
 * admin, or "default". NULL when the header is not a valid tenant name
 * ([a-z0-9][a-z0-9_-]{0,62}); handlers then answer 400.
 */
const char *ctl_req_tenant(const struct ctl_req *req);
/*
 * Parse the body as a JSON object. On failure answers 400 itself and returns
 * NULL; the handler must then return without replying.
 */
json_t *ctl_req_json(struct ctl_req *req);
/* Called once if the client goes away before the reply is finished. */
void ctl_req_on_abort(struct ctl_req *req, void (*cb)(void *arg), void *arg);

/* --- the reply: exactly one per request --- */
/* Send body (stolen; NULL sends no body) with status. */
void ctl_reply_json(struct ctl_req *req, int status, json_t *body);
/* {"error":{"code":code,"message":...}} with status. */
void ctl_reply_error(struct ctl_req *req, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Map a negative error (errno or sp_error) to status and code, message = detail or sp_strerror. */
void ctl_reply_err(struct ctl_req *req, int err, const char *detail);
/* Start a chunked reply; then ctl_stream_write()* and ctl_stream_end(). */
void ctl_stream_begin(struct ctl_req *req, int status, const char *content_type);
/* 0, or -EPIPE when the client is gone (keep calling is harmless), -ENOBUFS when it is too slow. */
int ctl_stream_write(struct ctl_req *req, const void *data, size_t len);
void ctl_stream_end(struct ctl_req *req);

/* --- additions: tuning and the pure helpers, exposed for tests --- */
/*
 * Idle keep-alive timeout and the time a request (head and body) may take to
 * arrive once started, also the time a new connection has to start one.
 * Defaults 60 s and 10 s. Applies to timers armed from now on.
 */
void ctl_set_timeouts(struct ctl *ctl, uint64_t idle_ms, uint64_t request_ms);
/* Whether s is a valid tenant name ([a-z0-9][a-z0-9_-]{0,62}). */
bool ctl_tenant_valid(const char *s);
/*
 * %-decode s[0..n) into *ret (malloc'd, NUL-terminated); '+' becomes a space
 * when plus. -EINVAL on a malformed escape or an encoded NUL (*ret untouched).
 */
int ctl_pct_decode(const char *s, size_t n, bool plus, char **ret);
/*
 * The peer rule: uid 0, the daemon's own effective uid, or (gid not
 * (gid_t)-1) a primary or supplementary group equal to gid. groups may be NULL.
 */
bool ctl_peer_allowed(const struct ctl_peer *peer, gid_t gid, const gid_t *groups,
		      size_t ngroups);
/*
 * Read the supplementary groups of pid from <proc_dir>/<pid>/status (the
 * "Groups:" line), at most max. Returns the count, or a negative errno. The
 * server prefers SO_PEERGROUPS and uses this only where that is missing.
 */
int ctl_proc_groups(const char *proc_dir, pid_t pid, gid_t *groups, size_t max);

#endif

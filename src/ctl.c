/*
 * The control API server: a Unix socket speaking HTTP/1.1 + JSON. It owns the
 * listening socket, the connections, request parsing (Debian's http_parser,
 * not a hand-written one), the peer check, every limit a client controls and
 * the route table. It must know nothing of sandboxes and never log a body.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <http_parser.h>

#include <sandpit/error.h>

#include "ctl.h"
#include "log.h"
#include "xmalloc.h"

#define CTL_MAX_HEADERS		64
#define CTL_MAX_PATH		1024
#define CTL_MAX_SEGMENTS	16
#define CTL_MAX_JSON_DEPTH	32
#define CTL_READ_BUF		16384
/* Unparsed input kept while a request is in flight; more and we stop reading. */
#define CTL_MAX_PIPELINE	65536
#define CTL_ACCEPT_BATCH	32
#define CTL_EMFILE_BACKOFF_MS	100
#define CTL_IDLE_TIMEOUT_MS	60000
#define CTL_REQUEST_TIMEOUT_MS	10000

struct route {
	char *method;
	char *segs[CTL_MAX_SEGMENTS];	/* "{name}" segments kept with braces */
	unsigned nsegs;
	unsigned nliteral;
	ctl_handler fn;
	void *arg;
};

struct kv {
	char *name;
	char *value;
};

struct conn;

struct ctl_req {
	struct ctl *ctl;
	struct conn *conn;		/* NULL once the connection is freed */
	char method[16];
	char *url;
	size_t url_len;
	char *path;			/* url up to '?' */
	struct kv hdrs[CTL_MAX_HEADERS];
	size_t hname_len, hvalue_len;	/* of the header being parsed */
	unsigned nhdrs;
	bool in_value;
	size_t head_bytes;
	char *body;
	size_t body_len;
	struct kv *params;
	unsigned nparams;
	struct kv *query;
	unsigned nquery;
	struct ctl_peer peer;
	int fail_status;		/* set by a parser callback that refuses */
	bool keep_alive;
	bool complete;
	bool streaming;
	bool finished;
	bool aborted;
	void (*abort_cb)(void *);
	void *abort_arg;
};

struct conn {
	struct ctl *ctl;
	struct conn *next, *prev;
	uv_pipe_t pipe;
	uv_timer_t timer;
	http_parser parser;
	struct ctl_peer peer;
	struct ctl_req *cur;		/* being parsed */
	struct ctl_req *active;		/* handed to a handler, reply not finished */
	char *in;			/* input not yet parsed */
	size_t in_len;
	size_t wq_count;		/* uv_write requests not completed */
	int handles_open;
	bool reading;
	bool processing;
	bool closing;
	bool close_when_flushed;
	char rbuf[CTL_READ_BUF];
};

struct ctl {
	uv_loop_t *loop;
	struct ctl_limits limits;
	int lfd;
	uv_poll_t lpoll;
	bool lpoll_init;
	uv_timer_t backoff;
	struct route *routes;
	size_t nroutes;
	struct conn *conns;
	unsigned nconns;
	size_t pending;
	int live_handles;
	gid_t gid;
	char *path;			/* of the socket, unlinked at close */
	uint64_t idle_ms;
	uint64_t request_ms;
	bool accepting;
	bool stopping;
	bool closing;
	bool close_fired;
	void (*close_cb)(void *);
	void *close_arg;
};

struct wreq {
	uv_write_t w;
	struct conn *conn;
	char data[];
};

static const http_parser_settings parser_settings;
static void conn_process(struct conn *c);
static void conn_resume(struct conn *c);
static void conn_gone(struct conn *c);
static void req_finish(struct ctl_req *r);

/* --- lifetime ----------------------------------------------------------- */

static void
ctl_free(struct ctl *ctl)
{
	for (size_t i = 0; i < ctl->nroutes; i++) {
		free(ctl->routes[i].method);
		for (unsigned j = 0; j < ctl->routes[i].nsegs; j++)
			free(ctl->routes[i].segs[j]);
	}
	free(ctl->routes);
	free(ctl->path);
	free(ctl);
}

/* Called after every handle close and request finish while closing. */
static void
ctl_maybe_done(struct ctl *ctl)
{
	if (!ctl->closing || ctl->live_handles > 0)
		return;
	if (!ctl->close_fired) {
		ctl->close_fired = true;
		if (ctl->close_cb != NULL)
			ctl->close_cb(ctl->close_arg);
	}
	/* A handler still holding a request keeps the struct (not the loop) alive. */
	if (ctl->pending == 0)
		ctl_free(ctl);
}

int
ctl_new(uv_loop_t *loop, const struct ctl_limits *limits, struct ctl **ret)
{
	struct ctl *ctl;

	ctl = xcalloc(1, sizeof(*ctl));
	ctl->loop = loop;
	ctl->limits = *limits;
	ctl->lfd = -1;
	ctl->gid = (gid_t)-1;
	ctl->idle_ms = CTL_IDLE_TIMEOUT_MS;
	ctl->request_ms = CTL_REQUEST_TIMEOUT_MS;
	uv_timer_init(loop, &ctl->backoff);
	ctl->backoff.data = ctl;
	ctl->live_handles++;
	*ret = ctl;
	return 0;
}

void
ctl_set_limits(struct ctl *ctl, const struct ctl_limits *limits)
{
	ctl->limits = *limits;
}

void
ctl_set_timeouts(struct ctl *ctl, uint64_t idle_ms, uint64_t request_ms)
{
	ctl->idle_ms = idle_ms;
	ctl->request_ms = request_ms;
}

size_t
ctl_pending(const struct ctl *ctl)
{
	return ctl->pending;
}

/* --- requests ----------------------------------------------------------- */

static struct ctl_req *
req_new(struct conn *c)
{
	struct ctl_req *r;

	r = xcalloc(1, sizeof(*r));
	r->ctl = c->ctl;
	r->conn = c;
	r->peer = c->peer;
	return r;
}

static void
req_free(struct ctl_req *r)
{
	if (r == NULL)
		return;
	free(r->url);
	free(r->path);
	for (unsigned i = 0; i < r->nhdrs; i++) {
		free(r->hdrs[i].name);
		free(r->hdrs[i].value);
	}
	for (unsigned i = 0; i < r->nparams; i++) {
		free(r->params[i].name);
		free(r->params[i].value);
	}
	free(r->params);
	for (unsigned i = 0; i < r->nquery; i++) {
		free(r->query[i].name);
		free(r->query[i].value);
	}
	free(r->query);
	free(r->body);
	free(r);
}

/* Append to a NUL-terminated string; the caller has bounded the total. */
static void
str_append(char **s, size_t *len, const char *at, size_t n)
{
	*s = xrealloc(*s, *len + n + 1);
	memcpy(*s + *len, at, n);
	*len += n;
	(*s)[*len] = '\0';
}

const char *
ctl_req_method(const struct ctl_req *req)
{
	return req->method;
}

const char *
ctl_req_path(const struct ctl_req *req)
{
	return req->path != NULL ? req->path : "";
}

static const char *
kv_find(const struct kv *kv, unsigned n, const char *name, bool icase)
{
	for (unsigned i = 0; i < n; i++) {
		if ((icase ? strcasecmp(kv[i].name, name) : strcmp(kv[i].name, name)) == 0)
			return kv[i].value;
	}
	return NULL;
}

const char *
ctl_req_param(const struct ctl_req *req, const char *name)
{
	return kv_find(req->params, req->nparams, name, false);
}

const char *
ctl_req_query(const struct ctl_req *req, const char *name)
{
	return kv_find(req->query, req->nquery, name, false);
}

const char *
ctl_req_header(const struct ctl_req *req, const char *name)
{
	return kv_find(req->hdrs, req->nhdrs, name, true);
}

const struct ctl_peer *
ctl_req_peer(const struct ctl_req *req)
{
	return &req->peer;
}

const char *
ctl_req_body(const struct ctl_req *req, size_t *len)
{
	if (len != NULL)
		*len = req->body_len;
	return req->body != NULL ? req->body : "";
}

bool
ctl_tenant_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 63)
		return false;
	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (size_t i = 1; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

const char *
ctl_req_tenant(const struct ctl_req *req)
{
	const char *t = ctl_req_header(req, "X-Sandpit-Tenant");

	if (t == NULL)
		return "default";
	return ctl_tenant_valid(t) ? t : NULL;
}

void
ctl_req_on_abort(struct ctl_req *req, void (*cb)(void *arg), void *arg)
{
	req->abort_cb = cb;
	req->abort_arg = arg;
}

/*
 * jansson limits nesting only at compile time (2048); a request body has no
 * business being deeper than a few levels, so count brackets outside strings.
 */
static bool
json_depth_ok(const char *s, size_t n, int max)
{
	int depth = 0;
	bool in_str = false, esc = false;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (in_str) {
			if (esc)
				esc = false;
			else if (ch == '\\')
				esc = true;
			else if (ch == '"')
				in_str = false;
			continue;
		}
		if (ch == '"')
			in_str = true;
		else if (ch == '{' || ch == '[') {
			if (++depth > max)
				return false;
		} else if (ch == '}' || ch == ']')
			depth--;
	}
	return true;
}

json_t *
ctl_req_json(struct ctl_req *req)
{
	json_error_t jerr;
	json_t *j;

	if (req->body_len == 0) {
		ctl_reply_error(req, 400, "bad_request", "invalid JSON: request body is empty");
		return NULL;
	}
	if (!json_depth_ok(req->body, req->body_len, CTL_MAX_JSON_DEPTH)) {
		ctl_reply_error(req, 400, "bad_request", "invalid JSON: nested deeper than %d",
		    CTL_MAX_JSON_DEPTH);
		return NULL;
	}
	j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL) {
		ctl_reply_error(req, 400, "bad_request", "invalid JSON: %d:%d: %s",
		    jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		ctl_reply_error(req, 400, "bad_request", "invalid JSON: the body must be an object");
		return NULL;
	}
	return j;
}

/* --- writing ------------------------------------------------------------ */

static void
conn_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct ctl *ctl = c->ctl;

	ctl->live_handles--;
	if (--c->handles_open > 0)
		return;
	if (c->active != NULL) {
		/* The request outlives us; it frees nothing of ours from now on. */
		c->active->conn = NULL;
		c->active = NULL;
	}
	req_free(c->cur);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ctl->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ctl->nconns--;
	free(c->in);
	free(c);
	ctl_maybe_done(ctl);
}

static void
conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	uv_close((uv_handle_t *)&c->pipe, conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* The client is gone (or dropped): tell the in-flight handler once, then close. */
static void
conn_gone(struct conn *c)
{
	struct ctl_req *r = c->active;

	if (c->closing)
		return;
	conn_close(c);
	if (r != NULL && !r->aborted) {
		r->aborted = true;
		if (r->abort_cb != NULL)
			r->abort_cb(r->abort_arg);
	}
}

static void
write_done(uv_write_t *w, int status)
{
	struct wreq *wr = (struct wreq *)w;
	struct conn *c = wr->conn;

	free(wr);
	c->wq_count--;
	if (status < 0) {
		conn_gone(c);
		return;
	}
	if (c->close_when_flushed && c->wq_count == 0)
		conn_close(c);
}

/* Queue bufs as one write (copied). Returns 0 or -EPIPE when the client is gone. */
static int
conn_writev(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
	struct wreq *wr;
	size_t total = 0, off = 0;
	uv_buf_t b;

	if (c == NULL || c->closing)
		return -EPIPE;
	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	wr = xmalloc(sizeof(*wr) + total);
	wr->conn = c;
	for (unsigned i = 0; i < n; i++) {
		memcpy(wr->data + off, bufs[i].base, bufs[i].len);
		off += bufs[i].len;
	}
	b = uv_buf_init(wr->data, (unsigned)total);
	if (uv_write(&wr->w, (uv_stream_t *)&c->pipe, &b, 1, write_done) < 0) {
		free(wr);
		conn_gone(c);
		return -EPIPE;
	}
	c->wq_count++;
	return 0;
}

static const char *
status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return "Unknown";
}

/* Whether the connection must close after this reply. */
static bool
req_closes(const struct ctl_req *r)
{
	return !r->keep_alive || r->ctl->stopping;
}

static void
req_send(struct ctl_req *r, int status, const char *ctype, const char *extra,
	 const char *body, size_t len)
{
	char head[512];
	uv_buf_t bufs[2];
	int n;

	if (r->finished || r->streaming)
		fatalx("ctl: second reply to %s %s", r->method, ctl_req_path(r));
	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
	    status, status_text(status), ctype, len, extra != NULL ? extra : "",
	    req_closes(r) ? "Connection: close\r\n" : "");
	bufs[0] = uv_buf_init(head, (unsigned)n);
	bufs[1] = uv_buf_init((char *)body, (unsigned)len);
	if (r->conn != NULL && !r->aborted)
		conn_writev(r->conn, bufs, len > 0 ? 2 : 1);
	req_finish(r);
}

static void
reply_error_extra(struct ctl_req *r, int status, const char *code, const char *extra,
		  const char *msg)
{
	json_t *j;
	char *s;

	j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (s == NULL)
		fatalx("ctl: json_dumps failed");
	str_append(&s, &(size_t){ strlen(s) }, "\n", 1);
	req_send(r, status, "application/json", extra, s, strlen(s));
	free(s);
}

void
ctl_reply_json(struct ctl_req *req, int status, json_t *body)
{
	char *s = NULL;
	size_t len = 0;

	if (body != NULL) {
		s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(body);
		if (s == NULL)
			fatalx("ctl: json_dumps failed");
		len = strlen(s);
		str_append(&s, &len, "\n", 1);
	}
	req_send(req, status, "application/json", NULL, s != NULL ? s : "", len);
	free(s);
}

void
ctl_reply_error(struct ctl_req *req, int status, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_error_extra(req, status, code, NULL, msg);
}

void
ctl_reply_err(struct ctl_req *req, int err, const char *detail)
{
	int status = 500;
	const char *code = "internal";

	switch (err) {
	case SP_EINVAL:
	case -EINVAL:
		status = 400, code = "bad_request";
		break;
	case SP_ENOTFOUND:
	case -ENOENT:
		status = 404, code = "not_found";
		break;
	case SP_ECONFLICT:
		status = 409, code = "conflict";
		break;
	case SP_ELIMIT:
		status = 429, code = "limit_reached";
		break;
	case SP_EUNAVAIL:
		status = 503, code = "unavailable";
		break;
	case SP_EPROVIDER:
	case SP_EPROTO:
		status = 502, code = "provider_error";
		break;
	case SP_ETIMEDOUT:
		status = 504, code = "timeout";
		break;
	case -E2BIG:
		status = 413, code = "too_large";
		break;
	case SP_EDB:
		status = 500, code = "database_error";
		break;
	}
	reply_error_extra(req, status, code, NULL,
	    detail != NULL && *detail != '\0' ? detail : sp_strerror(err));
}

void
ctl_stream_begin(struct ctl_req *req, int status, const char *content_type)
{
	char head[512];
	uv_buf_t b;
	int n;

	if (req->finished || req->streaming)
		fatalx("ctl: second reply to %s %s", req->method, ctl_req_path(req));
	req->streaming = true;
	n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
	    "Cache-Control: no-store\r\n%s\r\n",
	    status, status_text(status), content_type,
	    req_closes(req) ? "Connection: close\r\n" : "");
	b = uv_buf_init(head, (unsigned)n);
	if (req->conn != NULL && !req->aborted)
		conn_writev(req->conn, &b, 1);
}

int
ctl_stream_write(struct ctl_req *req, const void *data, size_t len)
{
	struct conn *c = req->conn;
	char size[32];
	uv_buf_t bufs[3];
	int n;

	if (!req->streaming || req->finished)
		fatalx("ctl: stream write outside a stream");
	if (c == NULL || c->closing || req->aborted)
		return -EPIPE;
	if (len == 0)
		return 0;	/* a zero-length chunk would end the stream */
	if (c->pipe.write_queue_size + len > req->ctl->limits.max_stream_queue) {
		log_info("ctl: dropping slow client pid %ld (%zu bytes queued)",
		    (long)c->peer.pid, c->pipe.write_queue_size);
		conn_gone(c);
		return -ENOBUFS;
	}
	n = snprintf(size, sizeof(size), "%zx\r\n", len);
	bufs[0] = uv_buf_init(size, (unsigned)n);
	bufs[1] = uv_buf_init((char *)data, (unsigned)len);
	bufs[2] = uv_buf_init("\r\n", 2);
	return conn_writev(c, bufs, 3);
}

void
ctl_stream_end(struct ctl_req *req)
{
	uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);

	if (!req->streaming || req->finished)
		fatalx("ctl: stream end outside a stream");
	if (req->conn != NULL && !req->conn->closing && !req->aborted)
		conn_writev(req->conn, &b, 1);
	req_finish(req);
}

/* Idle keep-alive and slow request heads both end here: just close. */
static void
conn_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->active == NULL)
		conn_close(c);
}

static void
conn_arm_timer(struct conn *c, uint64_t ms)
{
	if (!c->closing)
		uv_timer_start(&c->timer, conn_timeout, ms, 0);
}

/* The reply is complete: free the request and go on with the connection. */
static void
req_finish(struct ctl_req *r)
{
	struct ctl *ctl = r->ctl;
	struct conn *c = r->conn;

	r->finished = true;
	ctl->pending--;
	if (c != NULL) {
		c->active = NULL;
		if (!c->closing) {
			if (req_closes(r)) {
				c->close_when_flushed = true;
				if (c->wq_count == 0)
					conn_close(c);
			} else {
				conn_arm_timer(c, ctl->idle_ms);
				conn_process(c);
			}
		}
	}
	req_free(r);
	if (ctl->closing)
		ctl_maybe_done(ctl);
}

/* --- parsing ------------------------------------------------------------ */

static bool
head_add(struct ctl_req *r, size_t n)
{
	r->head_bytes += n;
	if (r->head_bytes > r->ctl->limits.max_header) {
		r->fail_status = 431;
		return false;
	}
	return true;
}

static int
on_message_begin(http_parser *p)
{
	struct conn *c = p->data;

	if (c->cur == NULL)
		c->cur = req_new(c);
	conn_arm_timer(c, c->ctl->request_ms);
	return 0;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
	struct ctl_req *r = ((struct conn *)p->data)->cur;

	if (!head_add(r, n))
		return 1;
	str_append(&r->url, &r->url_len, at, n);
	return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
	struct ctl_req *r = ((struct conn *)p->data)->cur;

	/* A new header starts after a value; a field split across reads continues. */
	if (r->nhdrs == 0 || r->in_value) {
		if (r->nhdrs == CTL_MAX_HEADERS) {
			r->fail_status = 431;
			return 1;
		}
		r->nhdrs++;
		r->in_value = false;
		r->hname_len = r->hvalue_len = 0;
		if (!head_add(r, 4))	/* ": " and CRLF */
			return 1;
	}
	if (!head_add(r, n))
		return 1;
	str_append(&r->hdrs[r->nhdrs - 1].name, &r->hname_len, at, n);
	return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
	struct ctl_req *r = ((struct conn *)p->data)->cur;

	if (r->nhdrs == 0)
		return 1;
	r->in_value = true;
	if (!head_add(r, n))
		return 1;
	str_append(&r->hdrs[r->nhdrs - 1].value, &r->hvalue_len, at, n);
	return 0;
}

static int
on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct ctl_req *r = c->cur;
	const char *expect;

	for (unsigned i = 0; i < r->nhdrs; i++) {
		if (r->hdrs[i].name == NULL)
			r->hdrs[i].name = xstrdup("");
		if (r->hdrs[i].value == NULL)
			r->hdrs[i].value = xstrdup("");
	}
	snprintf(r->method, sizeof(r->method), "%s", http_method_str(p->method));
	/* Our error bodies would break HEAD framing; close after any HEAD instead. */
	r->keep_alive = http_should_keep_alive(p) != 0 && p->method != HTTP_HEAD;
	if (p->upgrade) {
		r->fail_status = 501;
		return -1;	/* 1 and 2 mean skip-body and upgrade */
	}
	if (p->flags & F_CHUNKED) {
		r->fail_status = 411;
		return -1;
	}
	if (p->content_length != ULLONG_MAX && p->content_length > 0) {
		if (p->content_length > r->ctl->limits.max_body) {
			r->fail_status = 413;
			return -1;
		}
		expect = ctl_req_header(r, "Expect");
		if (expect != NULL && strcasecmp(expect, "100-continue") == 0) {
			uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);

			conn_writev(c, &b, 1);
		}
	}
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	struct ctl_req *r = ((struct conn *)p->data)->cur;

	if (r->body_len + n > r->ctl->limits.max_body) {
		r->fail_status = 413;
		return 1;
	}
	str_append(&r->body, &r->body_len, at, n);
	return 0;
}

static int
on_message_complete(http_parser *p)
{
	struct ctl_req *r = ((struct conn *)p->data)->cur;

	r->complete = true;
	/* One request at a time: later pipelined bytes wait in conn->in. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * %-decode s[0..n) into a new string; '+' is a space when plus. -EINVAL on a
 * bad escape or a decoded NUL.
 */
int
ctl_pct_decode(const char *s, size_t n, bool plus, char **ret)
{
	char *out = xmalloc(n + 1);
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n)
				goto out_free;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				goto out_free;
			out[j++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (s[i] == '+' && plus)
			out[j++] = ' ';
		else if (s[i] == '\0')
			goto out_free;
		else
			out[j++] = s[i];
	}
	out[j] = '\0';
	*ret = out;
	return 0;
out_free:
	free(out);
	return -EINVAL;
}

static int
query_parse(struct ctl_req *r, const char *q)
{
	while (*q != '\0') {
		const char *amp = strchr(q, '&');
		size_t len = amp != NULL ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		char *name, *value;

		if (len > 0) {
			size_t nlen = eq != NULL ? (size_t)(eq - q) : len;

			if (ctl_pct_decode(q, nlen, true, &name) < 0)
				return -EINVAL;
			if (eq != NULL) {
				if (ctl_pct_decode(eq + 1, len - nlen - 1, true, &value) < 0) {
					free(name);
					return -EINVAL;
				}
			} else
				value = xstrdup("");
			r->query = xreallocarray(r->query, r->nquery + 1, sizeof(*r->query));
			r->query[r->nquery].name = name;
			r->query[r->nquery].value = value;
			r->nquery++;
		}
		if (amp == NULL)
			break;
		q = amp + 1;
	}
	return 0;
}

/* Split and decode the path; NULL segments array entries are freed by the caller. */
static int
path_split(const char *path, char **segs, unsigned *nsegs)
{
	const char *p = path + 1;

	*nsegs = 0;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);

		if (*nsegs == CTL_MAX_SEGMENTS)
			return -E2BIG;
		if (ctl_pct_decode(p, len, false, &segs[*nsegs]) < 0)
			return -EINVAL;
		(*nsegs)++;
		if (strstr(segs[*nsegs - 1], "..") != NULL || strchr(segs[*nsegs - 1], '/') != NULL)
			return -EINVAL;
		if (slash == NULL)
			return 0;
		p = slash + 1;
	}
}

static bool
route_match(const struct route *rt, char **segs, unsigned nsegs)
{
	if (rt->nsegs != nsegs)
		return false;
	for (unsigned i = 0; i < nsegs; i++) {
		if (rt->segs[i][0] == '{') {
			if (segs[i][0] == '\0')
				return false;
		} else if (strcmp(rt->segs[i], segs[i]) != 0)
			return false;
	}
	return true;
}

static void
conn_route(struct ctl_req *r)
{
	struct ctl *ctl = r->ctl;
	char *segs[CTL_MAX_SEGMENTS];
	unsigned nsegs = 0;
	const struct route *best = NULL;
	char allow[256] = "";
	const char *q;
	int err;

	q = r->url != NULL ? strchr(r->url, '?') : NULL;
	r->path = r->url == NULL ? xstrdup("") :
	    q != NULL ? xstrndup(r->url, (size_t)(q - r->url)) : xstrdup(r->url);
	if (r->path[0] != '/' || strlen(r->path) > CTL_MAX_PATH) {
		ctl_reply_error(r, 400, "bad_request", "invalid request path");
		return;
	}
	if (q != NULL && query_parse(r, q + 1) < 0) {
		ctl_reply_error(r, 400, "bad_request", "invalid query string");
		return;
	}
	err = path_split(r->path, segs, &nsegs);
	if (err == -EINVAL) {
		ctl_reply_error(r, 400, "bad_request", "invalid request path");
		goto out_free_segs;
	}
	if (err == 0) {
		for (size_t i = 0; i < ctl->nroutes; i++) {
			const struct route *rt = &ctl->routes[i];

			if (!route_match(rt, segs, nsegs))
				continue;
			if (strcmp(rt->method, r->method) == 0) {
				if (best == NULL || rt->nliteral > best->nliteral)
					best = rt;
			} else if (strstr(allow, rt->method) == NULL &&
			    strlen(allow) + strlen(rt->method) + 3 < sizeof(allow)) {
				if (allow[0] != '\0')
					strcat(allow, ", ");
				strcat(allow, rt->method);
			}
		}
	}
	if (best != NULL) {
		r->params = xcalloc(best->nsegs, sizeof(*r->params));
		for (unsigned i = 0; i < best->nsegs; i++) {
			if (best->segs[i][0] != '{')
				continue;
			r->params[r->nparams].name = xstrndup(best->segs[i] + 1,
			    strlen(best->segs[i]) - 2);
			r->params[r->nparams].value = segs[i];
			segs[i] = NULL;
			r->nparams++;
		}
		best->fn(r, best->arg);
	} else if (allow[0] != '\0') {
		char extra[300];

		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		reply_error_extra(r, 405, "method_not_allowed", extra,
		    "method not allowed on this path");
	} else
		ctl_reply_error(r, 404, "not_found", "no such route: %s", r->path);
out_free_segs:
	for (unsigned i = 0; i < nsegs; i++)
		free(segs[i]);
}

static void
conn_dispatch(struct conn *c, struct ctl_req *r)
{
	c->ctl->pending++;
	c->active = r;
	uv_timer_stop(&c->timer);
	conn_route(r);
}

static void
conn_parse_error(struct conn *c, enum http_errno e)
{
	struct ctl_req *r = c->cur != NULL ? c->cur : req_new(c);
	int status = r->fail_status;

	c->cur = NULL;
	if (status == 0)
		status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
	r->keep_alive = false;
	c->ctl->pending++;
	c->active = r;
	uv_timer_stop(&c->timer);
	switch (status) {
	case 431:
		ctl_reply_error(r, 431, "header_too_large",
		    "request head larger than %zu bytes or more than %d headers",
		    c->ctl->limits.max_header, CTL_MAX_HEADERS);
		break;
	case 413:
		ctl_reply_error(r, 413, "too_large", "request body larger than %zu bytes",
		    c->ctl->limits.max_body);
		break;
	case 411:
		ctl_reply_error(r, 411, "length_required",
		    "chunked request bodies are not accepted; send Content-Length");
		break;
	case 501:
		ctl_reply_error(r, 501, "not_implemented", "protocol upgrades are not supported");
		break;
	default:
		ctl_reply_error(r, 400, "bad_request", "malformed request: %s",
		    http_errno_description(e));
		break;
	}
}

static void
conn_process(struct conn *c)
{
	struct ctl *ctl = c->ctl;

	if (c->processing)
		return;
	c->processing = true;
	while (!c->closing && c->active == NULL && !c->close_when_flushed &&
	    !ctl->stopping && c->in_len > 0) {
		size_t n;
		enum http_errno e;

		n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
		e = HTTP_PARSER_ERRNO(&c->parser);
		if (n > c->in_len)
			n = c->in_len;
		memmove(c->in, c->in + n, c->in_len - n);
		c->in_len -= n;
		if (e == HPE_PAUSED) {
			struct ctl_req *r = c->cur;

			http_parser_pause(&c->parser, 0);
			c->cur = NULL;
			if (r != NULL && r->complete)
				conn_dispatch(c, r);
			else
				req_free(r);
			continue;
		}
		if (e != HPE_OK) {
			conn_parse_error(c, e);
			break;
		}
	}
	c->processing = false;
	/*
	 * Input waiting behind an in-flight request is bounded: past the cap we
	 * stop reading until the reply is done (and the parse drains it).
	 */
	if (!c->closing && c->reading && c->in_len >= CTL_MAX_PIPELINE) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	} else
		conn_resume(c);
}

/* --- connections -------------------------------------------------------- */

static void
conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
	struct conn *c = h->data;

	*buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void
conn_resume(struct conn *c)
{
	if (c->closing || c->reading || c->in_len >= CTL_MAX_PIPELINE)
		return;
	if (uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read) == 0)
		c->reading = true;
}

static void
conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;

	if (nread < 0) {
		/*
		 * EOF with a request in flight means the client is gone: HTTP
		 * clients do not half-close, and an exec must not outlive its
		 * caller's interest.
		 */
		conn_gone(c);
		return;
	}
	if (nread == 0 || c->close_when_flushed || c->ctl->stopping)
		return;
	str_append(&c->in, &c->in_len, buf->base, (size_t)nread);
	conn_process(c);
}

/*
 * Whether a peer may use the socket: root, the daemon's own uid, or a member
 * (primary or supplementary group) of gid. groups may be NULL.
 */
bool
ctl_peer_allowed(const struct ctl_peer *peer, gid_t gid, const gid_t *groups, size_t ngroups)
{
	if (peer->uid == 0 || peer->uid == geteuid())
		return true;
	if (gid == (gid_t)-1)
		return false;
	if (peer->gid == gid)
		return true;
	for (size_t i = 0; i < ngroups; i++) {
		if (groups[i] == gid)
			return true;
	}
	return false;
}

/*
 * The supplementary groups of pid from <proc_dir>/<pid>/status ("Groups:"),
 * at most max of them. Returns the count or a negative errno.
 */
int
ctl_proc_groups(const char *proc_dir, pid_t pid, gid_t *groups, size_t max)
{
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0;
	int n = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%ld/status", proc_dir, (long)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *p, *end;

		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		n = 0;
		p = line + 7;
		while ((size_t)n < max) {
			unsigned long v;

			while (*p == ' ' || *p == '\t')
				p++;
			if (*p < '0' || *p > '9')
				break;
			v = strtoul(p, &end, 10);
			groups[n++] = (gid_t)v;
			p = end;
		}
		break;
	}
	free(line);
	fclose(f);
	return n;
}

static bool
conn_peer_check(struct ctl *ctl, int fd, const struct ctl_peer *peer)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);
	int n;

	if (ctl_peer_allowed(peer, ctl->gid, NULL, 0))
		return true;
	if (ctl->gid == (gid_t)-1)
		return false;
	/* SO_PEERGROUPS is the groups at connect time, free of pid reuse races. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
		return ctl_peer_allowed(peer, ctl->gid, groups, len / sizeof(gid_t));
	n = ctl_proc_groups("/proc", peer->pid, groups, sizeof(groups) / sizeof(groups[0]));
	return n > 0 && ctl_peer_allowed(peer, ctl->gid, groups, (size_t)n);
}

static void
ctl_accept_fd(struct ctl *ctl, int fd)
{
	static const char forbidden[] =
	    "{\"error\":{\"code\":\"forbidden\",\"message\":\"peer is not root or in the sandpit group\"}}\n";
	struct ucred uc;
	socklen_t len = sizeof(uc);
	struct conn *c;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) {
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->ctl = ctl;
	c->peer.pid = uc.pid;
	c->peer.uid = uc.uid;
	c->peer.gid = uc.gid;
	uv_pipe_init(ctl->loop, &c->pipe, 0);
	uv_timer_init(ctl->loop, &c->timer);
	c->pipe.data = c;
	c->timer.data = c;
	c->handles_open = 2;
	ctl->live_handles += 2;
	c->next = ctl->conns;
	if (ctl->conns != NULL)
		ctl->conns->prev = c;
	ctl->conns = c;
	ctl->nconns++;
	if (uv_pipe_open(&c->pipe, fd) < 0) {
		close(fd);
		conn_close(c);
		return;
	}
	if (!conn_peer_check(ctl, fd, &c->peer)) {
		char head[160];
		uv_buf_t bufs[2];
		int n;

		log_info("ctl: refused peer pid %ld uid %lu gid %lu", (long)uc.pid,
		    (unsigned long)uc.uid, (unsigned long)uc.gid);
		n = snprintf(head, sizeof(head), "HTTP/1.1 403 Forbidden\r\n"
		    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		    "Connection: close\r\n\r\n", sizeof(forbidden) - 1);
		bufs[0] = uv_buf_init(head, (unsigned)n);
		bufs[1] = uv_buf_init((char *)forbidden, sizeof(forbidden) - 1);
		c->close_when_flushed = true;
		conn_writev(c, bufs, 2);
		return;
	}
	log_debug("ctl: peer pid %ld uid %lu connected", (long)uc.pid, (unsigned long)uc.uid);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	/* The first request head must come soon too: that is the slowloris bound. */
	conn_arm_timer(c, ctl->request_ms);
	conn_resume(c);
}

static void ctl_on_listen(uv_poll_t *p, int status, int events);

static void
ctl_backoff_done(uv_timer_t *t)
{
	struct ctl *ctl = t->data;

	if (ctl->accepting && !ctl->stopping)
		uv_poll_start(&ctl->lpoll, UV_READABLE, ctl_on_listen);
}

static void
ctl_on_listen(uv_poll_t *p, int status, int events)
{
	struct ctl *ctl = p->data;

	for (int i = 0; i < CTL_ACCEPT_BATCH && ctl->accepting; i++) {
		int fd = accept4(ctl->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/*
			 * Out of descriptors (or memory): the pending connection
			 * stays readable, so polling on would spin. Pause instead.
			 */
			log_warn("ctl: accept: %s; pausing for %d ms", strerror(errno),
			    CTL_EMFILE_BACKOFF_MS);
			uv_poll_stop(&ctl->lpoll);
			uv_timer_start(&ctl->backoff, ctl_backoff_done, CTL_EMFILE_BACKOFF_MS, 0);
			return;
		}
		if (ctl->nconns >= ctl->limits.max_clients) {
			log_debug("ctl: %u clients connected; closing a new one", ctl->nconns);
			close(fd);
			continue;
		}
		ctl_accept_fd(ctl, fd);
	}
}

/* mkdir -p the parent of path, new directories 0750 and group gid. */
static int
ctl_make_parent(const char *path, gid_t gid)
{
	char dir[PATH_MAX];
	char *slash;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;

		*p = '\0';
		if (mkdir(dir, 0750) == 0) {
			if (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) < 0)
				return -errno;
		} else if (errno != EEXIST)
			return -errno;
		*p = saved;
		if (saved == '\0')
			return 0;
	}
}

/* Remove path if it is a socket nobody answers on; -EADDRINUSE if one does. */
static int
ctl_clear_stale(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0 || errno == EAGAIN || errno == EINPROGRESS) {
		/* Someone is listening (a full backlog says so too). */
		close(fd);
		return -EADDRINUSE;
	}
	r = errno;
	close(fd);
	if (r != ECONNREFUSED && r != ENOENT)
		return -r;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int
ctl_listen(struct ctl *ctl, const char *path, gid_t gid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (ctl->lfd >= 0 || ctl->stopping)
		return -EALREADY;
	r = ctl_make_parent(path, gid);
	if (r < 0)
		return r;
	r = ctl_clear_stale(path);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out_close_fd;
	}
	if (chmod(path, 0660) < 0 ||
	    (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) ||
	    listen(fd, 128) < 0) {
		r = -errno;
		goto out_unlink;
	}
	r = uv_poll_init(ctl->loop, &ctl->lpoll, fd);
	if (r < 0)
		goto out_unlink;
	ctl->lpoll.data = ctl;
	ctl->lpoll_init = true;
	ctl->live_handles++;
	ctl->lfd = fd;
	ctl->gid = gid;
	ctl->path = xstrdup(path);
	ctl->accepting = true;
	uv_poll_start(&ctl->lpoll, UV_READABLE, ctl_on_listen);
	return 0;
out_unlink:
	unlink(path);
out_close_fd:
	close(fd);
	return r;
}

void
ctl_route_add(struct ctl *ctl, const char *method, const char *pattern,
	      ctl_handler fn, void *arg)
{
	struct route *rt;
	const char *p;

	if (pattern[0] != '/')
		fatalx("ctl: route pattern '%s' does not start with /", pattern);
	ctl->routes = xreallocarray(ctl->routes, ctl->nroutes + 1, sizeof(*ctl->routes));
	rt = &ctl->routes[ctl->nroutes++];
	memset(rt, 0, sizeof(*rt));
	rt->method = xstrdup(method);
	rt->fn = fn;
	rt->arg = arg;
	p = pattern + 1;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);

		if (rt->nsegs == CTL_MAX_SEGMENTS)
			fatalx("ctl: route pattern '%s' has too many segments", pattern);
		rt->segs[rt->nsegs] = xstrndup(p, len);
		if (!(len >= 2 && p[0] == '{' && p[len - 1] == '}'))
			rt->nliteral++;
		rt->nsegs++;
		if (slash == NULL)
			break;
		p = slash + 1;
	}
}

void
ctl_stop_accepting(struct ctl *ctl)
{
	if (ctl->stopping)
		return;
	ctl->stopping = true;
	ctl->accepting = false;
	if (ctl->lpoll_init)
		uv_poll_stop(&ctl->lpoll);
	uv_timer_stop(&ctl->backoff);
	/* Idle or half-received connections go now; in-flight ones after their reply. */
	for (struct conn *c = ctl->conns; c != NULL; c = c->next) {
		if (c->active == NULL && !c->close_when_flushed)
			conn_close(c);
	}
}

static void
ctl_handle_closed(uv_handle_t *h)
{
	struct ctl *ctl = h->data;

	if (h == (uv_handle_t *)&ctl->lpoll) {
		close(ctl->lfd);
		ctl->lfd = -1;
	}
	ctl->live_handles--;
	ctl_maybe_done(ctl);
}

void
ctl_close(struct ctl *ctl, void (*cb)(void *arg), void *arg)
{
	if (ctl->closing)
		fatalx("ctl: closed twice");
	ctl_stop_accepting(ctl);
	ctl->closing = true;
	ctl->close_cb = cb;
	ctl->close_arg = arg;
	for (struct conn *c = ctl->conns; c != NULL; c = c->next)
		conn_gone(c);
	if (ctl->lpoll_init) {
		uv_close((uv_handle_t *)&ctl->lpoll, ctl_handle_closed);
		if (ctl->path != NULL)
			unlink(ctl->path);
	}
	uv_close((uv_handle_t *)&ctl->backoff, ctl_handle_closed);
}

/*
 * httpc: libcurl's multi interface driven by the libuv loop. curl tells us
 * which sockets to watch (one uv_poll per socket) and when to wake it (one
 * uv_timer); curl_multi_socket_action() runs only from those libuv callbacks,
 * so a request never completes inside sp_http_request(). This module owns the
 * curl handles and the libuv handles; it never logs and never blocks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/httpc.h>

#include "httpc.h"
#include "xmalloc.h"

#define HTTPC_DEFAULT_MAX_BODY	(8u << 20)

struct httpc_sock {
	uv_poll_t poll;			/* freed only in its close callback */
	struct sp_httpc *c;
	curl_socket_t fd;
	LIST_ENTRY(httpc_sock) entry;
};

struct sp_http_call {
	struct sp_httpc *c;
	CURL *easy;
	struct curl_slist *headers;
	sp_http_data_cb on_data;
	sp_http_done_cb on_done;
	void *arg;
	char *buf;			/* buffered body (NULL when streaming) */
	size_t len, cap, max;
	int abort_status;		/* set when a callback aborted the transfer */
	bool canceled;
	TAILQ_ENTRY(sp_http_call) entry;
};

struct sp_httpc {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;		/* curl's timeout */
	uv_timer_t reap;		/* finishes cancelled calls outside curl callbacks */
	TAILQ_HEAD(, sp_http_call) calls;
	LIST_HEAD(, httpc_sock) socks;
	bool closing;
	unsigned open_handles;		/* libuv handles not yet closed back */
	void (*close_cb)(void *);
	void *close_arg;
};

static void httpc_check(struct sp_httpc *);
static void httpc_reap_start(struct sp_httpc *);

static void
httpc_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int
httpc_curl_status(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_SEND_ERROR:
		return SP_EUNAVAIL;
	case CURLE_OPERATION_TIMEDOUT:
		return SP_ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_ABORTED_BY_CALLBACK:
		return SP_ECANCELED;
	default:
		/* Garbage, early close, truncated body: the peer broke HTTP. */
		return SP_EPROTO;
	}
}

static const char *
httpc_header(CURL *easy, const char *name)
{
	struct curl_header *h;

	if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	return h->value;
}

/* Unlink, report and free a call. Never called from inside a curl callback. */
static void
httpc_finish(struct sp_http_call *call, int status)
{
	struct sp_httpc *c = call->c;
	struct sp_http_resp resp = { 0 };
	long code = 0, sent = 0;

	TAILQ_REMOVE(&c->calls, call, entry);
	curl_multi_remove_handle(c->multi, call->easy);

	if (status != SP_ECANCELED)
		curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &code);
	resp.status = code;
	if (curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK)
		resp.request_sent = sent > 0;
	resp.body = call->buf != NULL ? call->buf : "";
	resp.body_len = call->len;
	if (code != 0) {
		resp.content_type = httpc_header(call->easy, "Content-Type");
		resp.api_version = httpc_header(call->easy, "Api-Version");
		resp.retry_after = httpc_header(call->easy, "Retry-After");
		resp.next_token = httpc_header(call->easy, "X-Next-Token");
	}
	call->on_done(call->arg, status, &resp);

	curl_easy_cleanup(call->easy);
	curl_slist_free_all(call->headers);
	free(call->buf);
	free(call);
}

/* A libuv handle of the client is closed back; the last one frees it. */
static void
httpc_unref(struct sp_httpc *c)
{
	c->open_handles--;
	if (c->closing && c->open_handles == 0) {
		void (*cb)(void *) = c->close_cb;
		void *arg = c->close_arg;

		free(c);
		if (cb != NULL)
			cb(arg);
	}
}

static void
httpc_sock_closed(uv_handle_t *h)
{
	struct httpc_sock *s = h->data;
	struct sp_httpc *c = s->c;

	free(s);
	httpc_unref(c);
}

static void
httpc_timer_closed(uv_handle_t *h)
{
	httpc_unref(h->data);
}

static void
httpc_sock_close(struct httpc_sock *s)
{
	LIST_REMOVE(s, entry);
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, httpc_sock_closed);
}

static void
httpc_poll_cb(uv_poll_t *h, int status, int events)
{
	struct httpc_sock *s = h->data;
	struct sp_httpc *c = s->c;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(c->multi, s->fd, flags, &running);
	httpc_check(c);
}

static int
httpc_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	struct sp_httpc *c = userp;
	struct httpc_sock *s = sockp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			curl_multi_assign(c->multi, fd, NULL);
			httpc_sock_close(s);
		}
		return 0;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->c = c;
		s->fd = fd;
		s->poll.data = s;
		c->open_handles++;
		LIST_INSERT_HEAD(&c->socks, s, entry);
		curl_multi_assign(c->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, httpc_poll_cb);
	return 0;
}

static void
httpc_timer_cb(uv_timer_t *t)
{
	struct sp_httpc *c = t->data;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	httpc_check(c);
}

static int
httpc_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	struct sp_httpc *c = userp;

	if (uv_is_closing((uv_handle_t *)&c->timer))
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, httpc_timer_cb, (uint64_t)timeout_ms, 0);
	return 0;
}

/* Hand finished transfers to their owners. */
static void
httpc_check(struct sp_httpc *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		struct sp_http_call *call;
		int status;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
		if (call->canceled)
			status = SP_ECANCELED;
		else if (call->abort_status != 0)
			status = call->abort_status;
		else
			status = httpc_curl_status(msg->data.result);
		httpc_finish(call, status);
	}
}

static void
httpc_free_handles(struct sp_httpc *c)
{
	struct httpc_sock *s;

	/*
	 * Stop watching while curl's sockets are still open, let curl close
	 * its connection cache, then close whatever poll handles remain.
	 */
	LIST_FOREACH(s, &c->socks, entry)
		uv_poll_stop(&s->poll);
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	while ((s = LIST_FIRST(&c->socks)) != NULL)
		httpc_sock_close(s);
	uv_close((uv_handle_t *)&c->timer, httpc_timer_closed);
	uv_close((uv_handle_t *)&c->reap, httpc_timer_closed);
}

/* Finish cancelled calls, and tear the client down once closing. */
static void
httpc_reap_cb(uv_timer_t *t)
{
	struct sp_httpc *c = t->data;
	struct sp_http_call *call;

again:
	TAILQ_FOREACH(call, &c->calls, entry) {
		if (call->canceled) {
			/* done may cancel or add calls: walk again from the head. */
			httpc_finish(call, SP_ECANCELED);
			goto again;
		}
	}
	if (c->closing && TAILQ_EMPTY(&c->calls))
		httpc_free_handles(c);
}

static void
httpc_reap_start(struct sp_httpc *c)
{
	if (!uv_is_closing((uv_handle_t *)&c->reap))
		uv_timer_start(&c->reap, httpc_reap_cb, 0, 0);
}

int
httpc_new(uv_loop_t *loop, struct sp_httpc **ret)
{
	static uv_once_t once = UV_ONCE_INIT;
	struct sp_httpc *c;

	uv_once(&once, httpc_global_init);
	c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	TAILQ_INIT(&c->calls);
	LIST_INIT(&c->socks);
	if ((c->multi = curl_multi_init()) == NULL) {
		free(c);
		return -ENOMEM;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, httpc_socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, httpc_timer_fn);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	uv_timer_init(loop, &c->timer);
	uv_timer_init(loop, &c->reap);
	c->timer.data = c;
	c->reap.data = c;
	c->open_handles = 2;
	*ret = c;
	return 0;
}

void
httpc_close(struct sp_httpc *c, void (*cb)(void *), void *arg)
{
	struct sp_http_call *call;

	c->closing = true;
	c->close_cb = cb;
	c->close_arg = arg;
	TAILQ_FOREACH(call, &c->calls, entry)
		call->canceled = true;
	httpc_reap_start(c);
}

static size_t
httpc_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct sp_http_call *call = userp;
	size_t n = size * nmemb;
	int rc;

	if (call->canceled)
		return 0;
	if (call->on_data != NULL) {
		if (n == 0)
			return 0;
		if ((rc = call->on_data(call->arg, data, n)) < 0) {
			call->abort_status = rc;
			return 0;
		}
		return n;
	}
	if (n > call->max - call->len) {
		call->abort_status = -E2BIG;
		return 0;
	}
	if (call->len + n + 1 > call->cap) {
		size_t cap = call->cap == 0 ? 4096 : call->cap;

		while (cap < call->len + n + 1)
			cap *= 2;
		call->buf = xrealloc(call->buf, cap);
		call->cap = cap;
	}
	memcpy(call->buf + call->len, data, n);
	call->len += n;
	call->buf[call->len] = '\0';
	return n;
}

int
sp_http_request(struct sp_httpc *c, const struct sp_http_opts *opts,
		sp_http_data_cb on_data, sp_http_done_cb on_done, void *arg,
		struct sp_http_call **ret)
{
	struct sp_http_call *call;
	const char *const *h;
	CURL *easy;

	if (c->closing)
		return SP_ECANCELED;
	if (opts->url == NULL || opts->method == NULL || on_done == NULL)
		return -EINVAL;
	if ((easy = curl_easy_init()) == NULL)
		return -ENOMEM;
	call = xcalloc(1, sizeof(*call));
	call->c = c;
	call->easy = easy;
	call->on_data = on_data;
	call->on_done = on_done;
	call->arg = arg;
	call->max = opts->max_body != 0 ? opts->max_body : HTTPC_DEFAULT_MAX_BODY;
	if (on_data == NULL) {
		/* Buffered replies always carry a NUL-terminated body. */
		call->buf = xcalloc(1, 1);
		call->cap = 1;
	}

	/* A waiting "Expect: 100-continue" only slows small JSON bodies down. */
	call->headers = curl_slist_append(NULL, "Expect:");
	for (h = opts->headers; h != NULL && *h != NULL; h++)
		call->headers = curl_slist_append(call->headers, *h);

	curl_easy_setopt(easy, CURLOPT_URL, opts->url);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, call);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, call->headers);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, httpc_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	if (opts->unix_socket != NULL)
		curl_easy_setopt(easy, CURLOPT_UNIX_SOCKET_PATH, opts->unix_socket);
	if (opts->timeout_ms != 0)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)opts->timeout_ms);
	if (opts->connect_timeout_ms != 0)
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)opts->connect_timeout_ms);
	if (opts->fresh_connect)
		curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
	if (opts->body != NULL || strcmp(opts->method, "POST") == 0 ||
	    strcmp(opts->method, "PUT") == 0) {
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
		curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS,
		    opts->body != NULL ? opts->body : "");
	}
	if (strcmp(opts->method, "HEAD") == 0)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	else if (strcmp(opts->method, "GET") != 0 && strcmp(opts->method, "POST") != 0)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, opts->method);

	if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) {
		curl_easy_cleanup(easy);
		curl_slist_free_all(call->headers);
		free(call->buf);
		free(call);
		return -ENOMEM;
	}
	TAILQ_INSERT_TAIL(&c->calls, call, entry);
	if (ret != NULL)
		*ret = call;
	return 0;
}

void
sp_http_cancel(struct sp_http_call *call)
{
	if (call == NULL || call->canceled)
		return;
	call->canceled = true;
	httpc_reap_start(call->c);
}

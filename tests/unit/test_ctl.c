/*
 * ctl against a real loop and a real Unix socket in a temporary directory. A
 * client thread speaks raw HTTP/1.1 with plain sockets while the main thread
 * runs the loop; the client records failures and the main thread asserts them.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <sandpit/error.h>

#include "ctl.h"

struct fx;
typedef void (*client_fn)(struct fx *);

struct fx {
	uv_loop_t loop;
	struct ctl *ctl;
	char dir[64];
	char path[128];
	uv_async_t done;
	uv_timer_t tick;
	uv_timer_t delay;
	pthread_t th;
	client_fn client;
	char fail[512];
	int evfd;
	/* the streaming tests */
	struct ctl_req *sreq;
	struct ctl_req *dreq;
	int aborts;
	int aborts_at_end;
	int last_rc;
	bool wait_server;
	bool server_done;
	bool client_done;
	bool closing;
	bool closed;
};

#define CHECK(f, cond) do {						\
	if (!(cond) && (f)->fail[0] == '\0')				\
		snprintf((f)->fail, sizeof((f)->fail), "%s:%d: %s",	\
		    __FILE__, __LINE__, #cond);				\
} while (0)

/* --- the client side ---------------------------------------------------- */

struct cc {
	int fd;
	char buf[262144];
	size_t len;
};

struct resp {
	int status;
	char head[4096];
	char body[65536];
	size_t body_len;
	bool chunked;
	int nchunks;
};

static int
cc_open(struct cc *cc, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };

	cc->len = 0;
	cc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cc->fd < 0)
		return -errno;
	setsockopt(cc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(cc->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(cc->fd);
		return -errno;
	}
	return 0;
}

static int
cc_send(struct cc *cc, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = send(cc->fd, s, n, MSG_NOSIGNAL);

		if (w < 0)
			return -errno;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static int
cc_sends(struct cc *cc, const char *s)
{
	return cc_send(cc, s, strlen(s));
}

/* Read more; 0 on EOF, negative on error or timeout. */
static ssize_t
cc_fill(struct cc *cc)
{
	ssize_t n;

	if (cc->len == sizeof(cc->buf))
		return -ENOBUFS;
	n = recv(cc->fd, cc->buf + cc->len, sizeof(cc->buf) - cc->len, 0);
	if (n < 0)
		return -errno;
	cc->len += (size_t)n;
	return n;
}

static void
cc_consume(struct cc *cc, size_t n)
{
	memmove(cc->buf, cc->buf + n, cc->len - n);
	cc->len -= n;
}

static char *
cc_find(struct cc *cc, const char *needle)
{
	return memmem(cc->buf, cc->len, needle, strlen(needle));
}

/* Wait until cc->buf holds a CRLF-terminated line or n bytes. */
static int
cc_need(struct cc *cc, size_t n)
{
	while (cc->len < n) {
		if (cc_fill(cc) <= 0)
			return -EPIPE;
	}
	return 0;
}

static int
cc_need_line(struct cc *cc, char **eol)
{
	while ((*eol = cc_find(cc, "\r\n")) == NULL) {
		if (cc_fill(cc) <= 0)
			return -EPIPE;
	}
	return 0;
}

/* One response: head, then a Content-Length or chunked body. */
static int
cc_resp(struct cc *cc, struct resp *r)
{
	char *end, *cl;
	size_t hlen;

	memset(r, 0, sizeof(*r));
	while ((end = cc_find(cc, "\r\n\r\n")) == NULL) {
		if (cc_fill(cc) <= 0)
			return -EPIPE;
	}
	hlen = (size_t)(end - cc->buf) + 4;
	if (hlen >= sizeof(r->head))
		return -E2BIG;
	memcpy(r->head, cc->buf, hlen);
	cc_consume(cc, hlen);
	if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
		return -EPROTO;
	if (r->status == 100)
		return 0;
	if (strcasestr(r->head, "Transfer-Encoding: chunked") != NULL) {
		r->chunked = true;
		for (;;) {
			char *eol;
			unsigned long sz;

			if (cc_need_line(cc, &eol) < 0)
				return -EPIPE;
			sz = strtoul(cc->buf, NULL, 16);
			cc_consume(cc, (size_t)(eol - cc->buf) + 2);
			if (cc_need(cc, sz + 2) < 0)
				return -EPIPE;
			if (r->body_len + sz >= sizeof(r->body))
				return -E2BIG;
			memcpy(r->body + r->body_len, cc->buf, sz);
			r->body_len += sz;
			cc_consume(cc, sz + 2);
			if (sz == 0)
				break;
			r->nchunks++;
		}
	} else if ((cl = strcasestr(r->head, "Content-Length: ")) != NULL) {
		size_t n = strtoul(cl + 16, NULL, 10);

		if (n >= sizeof(r->body))
			return -E2BIG;
		if (cc_need(cc, n) < 0)
			return -EPIPE;
		memcpy(r->body, cc->buf, n);
		r->body_len = n;
		cc_consume(cc, n);
	}
	r->body[r->body_len] = '\0';
	return 0;
}

/* Whether the server closed the connection (EOF, or a reset). */
static bool
cc_closed(struct cc *cc)
{
	ssize_t n;

	do {
		cc->len = 0;	/* whatever was still queued does not matter */
		n = cc_fill(cc);
	} while (n > 0);
	return n == 0 || n == -ECONNRESET;
}

static const char *
json_str(const char *body, const char *key, char *out, size_t outlen)
{
	json_t *j = json_loads(body, 0, NULL);
	json_t *v = j != NULL ? json_object_get(j, key) : NULL;

	snprintf(out, outlen, "%s", json_is_string(v) ? json_string_value(v) : "(none)");
	json_decref(j);
	return out;
}

/* The error code of an error body, or "(none)". */
static const char *
err_code(const char *body, char *out, size_t outlen)
{
	json_t *j = json_loads(body, 0, NULL);
	json_t *v = json_object_get(json_object_get(j, "error"), "code");
	json_t *m = json_object_get(json_object_get(j, "error"), "message");

	snprintf(out, outlen, "%s", json_is_string(v) && json_is_string(m) ?
	    json_string_value(v) : "(none)");
	json_decref(j);
	return out;
}

/* --- the server side ---------------------------------------------------- */

static void
h_echo(struct ctl_req *req, void *arg)
{
	const char *q = ctl_req_query(req, "q");
	const char *t = ctl_req_tenant(req);

	if (t == NULL) {
		ctl_reply_error(req, 400, "bad_request", "invalid tenant");
		return;
	}
	ctl_reply_json(req, 200, json_pack("{s:s,s:s?,s:s,s:s,s:b}",
	    "id", ctl_req_param(req, "id"), "q", q, "method", ctl_req_method(req),
	    "tenant", t, "flag", ctl_req_query(req, "flag") != NULL));
}

static void
h_json(struct ctl_req *req, void *arg)
{
	json_t *j = ctl_req_json(req);

	if (j == NULL)
		return;
	ctl_reply_json(req, 201, json_pack("{s:i}", "keys", (json_int_t)json_object_size(j)));
	json_decref(j);
}

static void
h_err(struct ctl_req *req, void *arg)
{
	ctl_reply_err(req, SP_ECONFLICT, NULL);
}

static void
delay_done(uv_timer_t *t)
{
	struct fx *f = t->data;

	ctl_reply_json(f->dreq, 200, json_pack("{s:s}", "id", "delayed"));
	f->dreq = NULL;
}

/* Answers later from a timer, so a pipelined request behind it must wait. */
static void
h_delay(struct ctl_req *req, void *arg)
{
	struct fx *f = arg;

	f->dreq = req;
	uv_timer_start(&f->delay, delay_done, 20, 0);
}

static void
h_stream(struct ctl_req *req, void *arg)
{
	ctl_stream_begin(req, 200, "application/x-ndjson");
	assert_int_equal(ctl_stream_write(req, "a\n", 2), 0);
	assert_int_equal(ctl_stream_write(req, "", 0), 0);
	assert_int_equal(ctl_stream_write(req, "b\n", 2), 0);
	assert_int_equal(ctl_stream_write(req, "c\n", 2), 0);
	ctl_stream_end(req);
}

static void fx_maybe_finish(struct fx *f);

static void
on_abort(void *arg)
{
	struct fx *f = arg;

	f->aborts++;
}

/* Write on every tick until the server notices the client is gone or slow. */
static void
tick(uv_timer_t *t)
{
	struct fx *f = t->data;
	static char big[16384];
	int rc;

	if (f->sreq == NULL)
		return;
	rc = ctl_stream_write(f->sreq, big, sizeof(big));
	if (rc == 0)
		return;
	f->last_rc = rc;
	/* Keep calling is harmless. */
	f->last_rc = ctl_stream_write(f->sreq, "x", 1) == -EPIPE ? rc : 1;
	f->aborts_at_end = f->aborts;
	ctl_stream_end(f->sreq);
	f->sreq = NULL;
	uv_timer_stop(t);
	f->server_done = true;
	if (f->evfd >= 0)
		eventfd_write(f->evfd, 1);
	fx_maybe_finish(f);
}

static void
h_slow(struct ctl_req *req, void *arg)
{
	struct fx *f = arg;

	f->sreq = req;
	ctl_req_on_abort(req, on_abort, f);
	ctl_stream_begin(req, 200, "text/plain");
	ctl_stream_write(req, "first\n", 6);
	uv_timer_start(&f->tick, tick, 2, 2);
}

static void
on_closed(void *arg)
{
	struct fx *f = arg;

	f->closed = true;
}

static void
fx_maybe_finish(struct fx *f)
{
	if (f->closing || !f->client_done || (f->wait_server && !f->server_done))
		return;
	f->closing = true;
	ctl_close(f->ctl, on_closed, f);
	uv_close((uv_handle_t *)&f->done, NULL);
	uv_close((uv_handle_t *)&f->tick, NULL);
	uv_close((uv_handle_t *)&f->delay, NULL);
}

static void
on_client_done(uv_async_t *a)
{
	struct fx *f = a->data;

	f->client_done = true;
	fx_maybe_finish(f);
}

static void *
client_main(void *arg)
{
	struct fx *f = arg;

	f->client(f);
	uv_async_send(&f->done);
	return NULL;
}

static const struct ctl_limits default_limits = {
	.max_clients = 8,
	.max_body = 4096,
	.max_header = 2048,
	.max_stream_queue = 65536,
};

static void
fx_setup(struct fx *f, const struct ctl_limits *lim, gid_t gid, client_fn fn)
{
	memset(f, 0, sizeof(*f));
	f->evfd = -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/sp-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/run/ctl.sock", f->dir);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(ctl_new(&f->loop, lim != NULL ? lim : &default_limits, &f->ctl), 0);
	ctl_route_add(f->ctl, "GET", "/v1/echo/{id}/x", h_echo, f);
	ctl_route_add(f->ctl, "GET", "/v1/echo/lit/x", h_err, f);
	ctl_route_add(f->ctl, "DELETE", "/v1/echo/{id}/x", h_echo, f);
	ctl_route_add(f->ctl, "POST", "/v1/json", h_json, f);
	ctl_route_add(f->ctl, "GET", "/v1/delay", h_delay, f);
	ctl_route_add(f->ctl, "GET", "/v1/stream", h_stream, f);
	ctl_route_add(f->ctl, "GET", "/v1/slow", h_slow, f);
	assert_int_equal(ctl_listen(f->ctl, f->path, gid), 0);
	uv_async_init(&f->loop, &f->done, on_client_done);
	f->done.data = f;
	uv_timer_init(&f->loop, &f->tick);
	f->tick.data = f;
	uv_timer_init(&f->loop, &f->delay);
	f->delay.data = f;
	f->client = fn;
}

static void
fx_go(struct fx *f)
{
	assert_int_equal(pthread_create(&f->th, NULL, client_main, f), 0);
}

static void
fx_start(struct fx *f, const struct ctl_limits *lim, gid_t gid, client_fn fn)
{
	fx_setup(f, lim, gid, fn);
	fx_go(f);
}

static void
fx_run(struct fx *f)
{
	char cmd[160];

	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	pthread_join(f->th, NULL);
	assert_true(f->closed);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	if (f->evfd >= 0)
		close(f->evfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	if (f->fail[0] != '\0')
		fail_msg("client: %s", f->fail);
}

/* --- the tests ---------------------------------------------------------- */

static void
test_pure(void **state)
{
	char *s = NULL, dir[64], path[128];
	struct ctl_peer p = { .pid = 1, .uid = 1000, .gid = 1000 };
	gid_t groups[8] = { 0 };
	FILE *fp;

	assert_int_equal(ctl_pct_decode("a%20b+c%2F", 10, true, &s), 0);
	assert_string_equal(s, "a b c/");
	free(s);
	assert_int_equal(ctl_pct_decode("a+b", 3, false, &s), 0);
	assert_string_equal(s, "a+b");
	free(s);
	assert_int_equal(ctl_pct_decode("%2", 2, false, &s), -EINVAL);
	assert_int_equal(ctl_pct_decode("%zz", 3, false, &s), -EINVAL);
	assert_int_equal(ctl_pct_decode("a%00", 4, false, &s), -EINVAL);

	assert_true(ctl_tenant_valid("default"));
	assert_true(ctl_tenant_valid("a"));
	assert_true(ctl_tenant_valid("0team_a-b"));
	assert_false(ctl_tenant_valid(""));
	assert_false(ctl_tenant_valid("-a"));
	assert_false(ctl_tenant_valid("Abc"));
	assert_false(ctl_tenant_valid("a/b"));
	assert_true(ctl_tenant_valid("a23456789012345678901234567890123456789012345678901234567890123"));
	assert_false(ctl_tenant_valid("a234567890123456789012345678901234567890123456789012345678901234"));

	/* The peer rule. Tests run as root, so a peer uid of 1000 is never our euid. */
	assert_true(ctl_peer_allowed(&(struct ctl_peer){ .uid = 0, .gid = 5 }, 77, NULL, 0));
	assert_false(ctl_peer_allowed(&p, (gid_t)-1, NULL, 0));
	assert_false(ctl_peer_allowed(&p, 77, NULL, 0));
	assert_true(ctl_peer_allowed(&(struct ctl_peer){ .uid = 1000, .gid = 77 }, 77, NULL, 0));
	groups[0] = 10;
	groups[1] = 77;
	assert_true(ctl_peer_allowed(&p, 77, groups, 2));
	assert_false(ctl_peer_allowed(&p, 77, groups, 1));

	/* Supplementary groups from a fake /proc. */
	snprintf(dir, sizeof(dir), "/tmp/sp-proc-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/4242", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/4242/status", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t24 27 1001 \nNgid:\t0\n", fp);
	fclose(fp);
	memset(groups, 0, sizeof(groups));
	assert_int_equal(ctl_proc_groups(dir, 4242, groups, 8), 3);
	assert_int_equal(groups[0], 24);
	assert_int_equal(groups[2], 1001);
	memset(groups, 0, sizeof(groups));
	assert_int_equal(ctl_proc_groups(dir, 4242, groups, 2), 2);
	assert_int_equal(groups[2], 0);		/* only 2 read */
	assert_false(ctl_peer_allowed(&p, 1001, groups, 2));
	assert_int_equal(ctl_proc_groups(dir, 4242, groups, 8), 3);
	assert_true(ctl_peer_allowed(&p, 1001, groups, 3));
	assert_int_equal(ctl_proc_groups(dir, 9999, groups, 8), -ENOENT);
	unlink(path);
	snprintf(path, sizeof(path), "%s/4242", dir);
	rmdir(path);
	rmdir(dir);
	/* Our own groups, from the real /proc, include our primary gid's list format. */
	assert_true(ctl_proc_groups("/proc", getpid(), groups, 8) >= 0);
}

static void
closed_cb(void *arg)
{
	*(int *)arg += 1;
}

static void
test_socket_files(void **state)
{
	char dir[64], path[100], sub[160];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ctl *a, *b;
	struct stat st;
	uv_loop_t loop;
	int closed = 0, fd;

	snprintf(dir, sizeof(dir), "/tmp/sp-ctls-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/a/b", dir);
	snprintf(path, sizeof(path), "%s/a/b/s.sock", dir);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ctl_new(&loop, &default_limits, &a), 0);
	assert_int_equal(ctl_new(&loop, &default_limits, &b), 0);

	/* A stale socket (bound, nobody listening) is replaced. */
	assert_int_equal(mkdir(dir, 0700) == 0 || errno == EEXIST, 1);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/a", dir);
	assert_int_equal(mkdir(sa.sun_path, 0700), 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(ctl_listen(a, path, 65534), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	assert_int_equal(st.st_gid, 65534);

	/* A live one is not. */
	assert_int_equal(ctl_listen(b, path, (gid_t)-1), -EADDRINUSE);

	/* A file that is not a socket is never removed. */
	snprintf(path, sizeof(path), "%s/plain", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ctl_listen(b, path, (gid_t)-1), -EEXIST);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);

	/* Missing parents are made 0750. */
	snprintf(path, sizeof(path), "%s/new/dir/s.sock", dir);
	assert_int_equal(ctl_listen(b, path, (gid_t)-1), 0);
	snprintf(sub, sizeof(sub), "%s/new/dir", dir);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);

	ctl_close(a, closed_cb, &closed);
	ctl_close(b, closed_cb, &closed);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(closed, 2);
	assert_int_equal(access(path, F_OK), -1);	/* unlinked at close */
	assert_int_equal(uv_loop_close(&loop), 0);
	snprintf(sub, sizeof(sub), "rm -rf '%s'", dir);
	assert_int_equal(system(sub), 0);
}

static void
client_routing(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));
	struct resp *r = calloc(1, sizeof(*r));
	char s[128];

	CHECK(f, cc_open(cc, f->path) == 0);
	/* Params and query decoded; the same connection serves every request. */
	cc_sends(cc, "GET /v1/echo/ab%20c/x?q=a%2Bb+c&flag HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strcmp(json_str(r->body, "id", s, sizeof(s)), "ab c") == 0);
	CHECK(f, strcmp(json_str(r->body, "q", s, sizeof(s)), "a+b c") == 0);
	CHECK(f, strcmp(json_str(r->body, "tenant", s, sizeof(s)), "default") == 0);
	CHECK(f, strstr(r->body, "\"flag\":true") != NULL);
	CHECK(f, strcasestr(r->head, "Content-Type: application/json") != NULL);
	/* A literal segment wins over a parameter. */
	cc_sends(cc, "GET /v1/echo/lit/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 409);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "conflict") == 0);
	/* Tenant header, valid and not. */
	cc_sends(cc, "DELETE /v1/echo/7/x HTTP/1.1\r\nX-Sandpit-Tenant: team-1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strcmp(json_str(r->body, "tenant", s, sizeof(s)), "team-1") == 0);
	CHECK(f, strcmp(json_str(r->body, "method", s, sizeof(s)), "DELETE") == 0);
	cc_sends(cc, "GET /v1/echo/7/x HTTP/1.1\r\nx-sandpit-tenant: ../etc\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	/* 404 and 405 with Allow. */
	cc_sends(cc, "GET /v1/nope HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 404);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "not_found") == 0);
	cc_sends(cc, "GET /v1/echo//x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 404);
	cc_sends(cc, "POST /v1/echo/1/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 405);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "method_not_allowed") == 0);
	CHECK(f, strstr(r->head, "Allow: GET, DELETE\r\n") != NULL);
	/* Paths with .. (even encoded), NUL, or bad escapes are refused. */
	cc_sends(cc, "GET /v1/echo/%2e%2e/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	cc_sends(cc, "GET /v1/echo/a%00/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	cc_sends(cc, "GET /v1/echo/a/x?q=%zz HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "bad_request") == 0);
	/* Still alive after all of that: keep-alive held. */
	cc_sends(cc, "GET /v1/echo/last/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strstr(r->head, "Connection: close") == NULL);
	/* HTTP/1.0 without keep-alive gets its answer and a close. */
	cc_sends(cc, "GET /v1/echo/old/x HTTP/1.0\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, cc_closed(cc));
	close(cc->fd);
	free(cc);
	free(r);
}

static void
test_routing(void **state)
{
	struct fx f;

	fx_start(&f, NULL, (gid_t)-1, client_routing);
	fx_run(&f);
}

static void
client_bad_input(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));
	struct resp *r = calloc(1, sizeof(*r));
	char s[256], big[3000];

	/* Malformed request line: 400, then closed. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET\x01 / HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "bad_request") == 0);
	CHECK(f, cc_closed(cc));
	close(cc->fd);

	/* Oversized head: 431. */
	CHECK(f, cc_open(cc, f->path) == 0);
	memset(big, 'a', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	cc_sends(cc, "GET /v1/echo/1/x HTTP/1.1\r\nX-Big: ");
	cc_sends(cc, big);
	cc_sends(cc, "\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 431);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "header_too_large") == 0);
	close(cc->fd);

	/* Too many headers: 431 as well. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET /v1/echo/1/x HTTP/1.1\r\n");
	for (int i = 0; i < 70; i++)
		cc_sends(cc, "A: b\r\n");
	cc_sends(cc, "\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 431);
	close(cc->fd);

	/* Oversized body, refused from Content-Length before it is sent. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 413);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "too_large") == 0);
	CHECK(f, cc_closed(cc));
	close(cc->fd);

	/* Chunked request bodies: 411. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 411);
	close(cc->fd);

	/* Invalid JSON: 400 with line:col, the error shape, connection kept. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	CHECK(f, strcmp(err_code(r->body, s, sizeof(s)), "bad_request") == 0);
	CHECK(f, strstr(r->body, "invalid JSON: 1:") != NULL);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"a\":1,\"a\":2} ");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	CHECK(f, strstr(r->body, "duplicate") != NULL);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 80\r\n\r\n"
	    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 400);
	CHECK(f, strstr(r->body, "nested") != NULL);
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":2}");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 201);
	CHECK(f, strstr(r->body, "\"keys\":2") != NULL);

	/* Expect: 100-continue is answered before the body is sent. */
	cc_sends(cc, "POST /v1/json HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 100);
	cc_sends(cc, "{}");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 201);
	close(cc->fd);
	free(cc);
	free(r);
}

static void
test_bad_input(void **state)
{
	struct fx f;

	fx_start(&f, NULL, (gid_t)-1, client_bad_input);
	fx_run(&f);
}

static void
client_pipeline(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));
	struct resp *r = calloc(1, sizeof(*r));
	char s[64];

	CHECK(f, cc_open(cc, f->path) == 0);
	/* The first is answered later from a timer; order must still hold. */
	cc_sends(cc, "GET /v1/delay HTTP/1.1\r\n\r\n"
	    "GET /v1/echo/two/x HTTP/1.1\r\n\r\n"
	    "GET /v1/stream HTTP/1.1\r\n\r\n"
	    "GET /v1/echo/four/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strcmp(json_str(r->body, "id", s, sizeof(s)), "delayed") == 0);
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strcmp(json_str(r->body, "id", s, sizeof(s)), "two") == 0);
	/* The stream: chunked, several chunks, then the end. */
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, r->chunked);
	CHECK(f, r->nchunks == 3);
	CHECK(f, strcmp(r->body, "a\nb\nc\n") == 0);
	CHECK(f, strcasestr(r->head, "Content-Type: application/x-ndjson") != NULL);
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, strcmp(json_str(r->body, "id", s, sizeof(s)), "four") == 0);
	close(cc->fd);
	free(cc);
	free(r);
}

static void
test_pipeline_and_stream(void **state)
{
	struct fx f;

	fx_start(&f, NULL, (gid_t)-1, client_pipeline);
	fx_run(&f);
}

static void
client_disconnect(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));

	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET /v1/slow HTTP/1.1\r\n\r\n");
	while (cc_find(cc, "first") == NULL) {
		if (cc_fill(cc) <= 0) {
			CHECK(f, !"stream started");
			break;
		}
	}
	close(cc->fd);
	free(cc);
}

static void
test_disconnect_mid_stream(void **state)
{
	struct fx f;

	fx_start(&f, NULL, (gid_t)-1, client_disconnect);
	f.wait_server = true;
	fx_run(&f);
	assert_int_equal(f.aborts_at_end, 1);
	assert_int_equal(f.aborts, 1);
	assert_int_equal(f.last_rc, -EPIPE);
}

static void
client_slow_reader(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));
	eventfd_t v;

	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET /v1/slow HTTP/1.1\r\n\r\n");
	/* Read nothing until the server has given up on us. */
	CHECK(f, eventfd_read(f->evfd, &v) == 0);
	CHECK(f, cc_closed(cc));
	close(cc->fd);
	free(cc);
}

static void
test_slow_reader_dropped(void **state)
{
	struct fx f;

	fx_setup(&f, NULL, (gid_t)-1, client_slow_reader);
	f.evfd = eventfd(0, EFD_CLOEXEC);
	assert_true(f.evfd >= 0);
	f.wait_server = true;
	fx_go(&f);
	fx_run(&f);
	assert_int_equal(f.last_rc, -ENOBUFS);
	assert_int_equal(f.aborts, 1);
}

static void
client_max_clients(struct fx *f)
{
	struct cc *c[3];
	struct resp *r = calloc(1, sizeof(*r));

	for (int i = 0; i < 3; i++)
		c[i] = calloc(1, sizeof(*c[i]));
	for (int i = 0; i < 2; i++) {
		CHECK(f, cc_open(c[i], f->path) == 0);
		cc_sends(c[i], "GET /v1/echo/1/x HTTP/1.1\r\n\r\n");
		CHECK(f, cc_resp(c[i], r) == 0 && r->status == 200);
	}
	/* The third is accepted and closed at once, with no answer. */
	CHECK(f, cc_open(c[2], f->path) == 0);
	cc_sends(c[2], "GET /v1/echo/1/x HTTP/1.1\r\n\r\n");
	{
		ssize_t n = cc_fill(c[2]);

		CHECK(f, n == 0 || n == -ECONNRESET);
	}
	/* The first two still work. */
	for (int i = 0; i < 2; i++) {
		cc_sends(c[i], "GET /v1/echo/2/x HTTP/1.1\r\n\r\n");
		CHECK(f, cc_resp(c[i], r) == 0 && r->status == 200);
	}
	for (int i = 0; i < 3; i++) {
		close(c[i]->fd);
		free(c[i]);
	}
	free(r);
}

static void
test_max_clients(void **state)
{
	struct ctl_limits lim = default_limits;
	struct fx f;

	lim.max_clients = 2;
	fx_start(&f, &lim, (gid_t)-1, client_max_clients);
	fx_run(&f);
}

/* Connect as uid/gid in a child; returns the status code it read, 0 if none. */
static int
child_request(const char *path, uid_t uid, gid_t gid)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		const char req[] = "GET /v1/echo/1/x HTTP/1.1\r\n\r\n";
		char buf[512];
		ssize_t n;
		int fd, code = 0;

		if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(1);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			_exit(2);
		if (write(fd, req, sizeof(req) - 1) < 0)
			_exit(3);
		n = read(fd, buf, sizeof(buf) - 1);
		if (n <= 0)
			_exit(4);
		buf[n] = '\0';
		if (sscanf(buf, "HTTP/1.1 %d", &code) != 1)
			_exit(5);
		_exit(code == 403 ? 43 : code == 200 ? 20 : 6);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void
client_peers(struct fx *f)
{
	char run[160];

	/* Let everyone reach the socket, so the server's check is what decides. */
	snprintf(run, sizeof(run), "%s/run", f->dir);
	CHECK(f, chmod(f->dir, 0755) == 0 && chmod(run, 0755) == 0 && chmod(f->path, 0666) == 0);
	/* Not root, not in group 4321: 403. In it (primary gid): allowed. */
	CHECK(f, child_request(f->path, 65534, 65534) == 43);
	CHECK(f, child_request(f->path, 65534, 4321) == 20);
}

static void
test_peer_check(void **state)
{
	struct fx f;

	fx_start(&f, NULL, 4321, client_peers);
	fx_run(&f);
}

static void
client_idle(struct fx *f)
{
	struct cc *cc = calloc(1, sizeof(*cc));
	struct resp *r = calloc(1, sizeof(*r));

	/* A connection that never sends a request is closed by the server. */
	CHECK(f, cc_open(cc, f->path) == 0);
	CHECK(f, cc_closed(cc));
	close(cc->fd);
	/* So is one that stops half-way through a head. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET /v1/echo/1/x HTTP/1.1\r\nHost:");
	CHECK(f, cc_closed(cc));
	close(cc->fd);
	/* And an idle keep-alive connection after its answer. */
	CHECK(f, cc_open(cc, f->path) == 0);
	cc_sends(cc, "GET /v1/echo/1/x HTTP/1.1\r\n\r\n");
	CHECK(f, cc_resp(cc, r) == 0 && r->status == 200);
	CHECK(f, cc_closed(cc));
	close(cc->fd);
	free(cc);
	free(r);
}

static void
test_timeouts(void **state)
{
	struct fx f;

	fx_setup(&f, NULL, (gid_t)-1, client_idle);
	ctl_set_timeouts(f.ctl, 50, 50);
	fx_go(&f);
	fx_run(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pure),
		cmocka_unit_test(test_socket_files),
		cmocka_unit_test(test_routing),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_pipeline_and_stream),
		cmocka_unit_test(test_disconnect_mid_stream),
		cmocka_unit_test(test_slow_reader_dropped),
		cmocka_unit_test(test_max_clients),
		cmocka_unit_test(test_peer_check),
		cmocka_unit_test(test_timeouts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

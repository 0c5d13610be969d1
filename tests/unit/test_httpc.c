/*
 * httpc against a small HTTP server on a Unix socket in a temp dir, served by
 * threads of this test: buffered and streamed bodies, limits, broken servers,
 * cancel, connect failure, concurrency, and the rule that no done callback
 * ever fires inside sp_http_request().
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/httpc.h>

#include "httpc.h"

struct server {
	char dir[32];
	char path[64];
	int fd;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int active;			/* connection threads running */
	int accepted;
	bool stop;
};

static struct server srv;

static void
conn_write(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

/* Read a request head and its Content-Length body; returns the path. */
static int
conn_read(int fd, char *path, size_t pathsz, char *body, size_t bodysz)
{
	char buf[8192];
	size_t len = 0, clen = 0, have;
	char *end, *p;

	for (;;) {
		ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
		if (len == sizeof(buf) - 1)
			return -1;
	}
	if (sscanf(buf, "%*s %127s", path) != 1)
		return -1;
	(void)pathsz;
	if ((p = strcasestr(buf, "Content-Length:")) != NULL)
		clen = strtoul(p + 15, NULL, 10);
	end += 4;
	have = len - (size_t)(end - buf);
	if (clen >= bodysz)
		return -1;
	memcpy(body, end, have);
	while (have < clen) {
		ssize_t n = recv(fd, body + have, clen - have, 0);

		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	body[clen] = '\0';
	return 0;
}

static void *
conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char path[128], body[65536], out[70000];

	if (conn_read(fd, path, sizeof(path), body, sizeof(body)) < 0)
		goto out;
	if (strcmp(path, "/get") == 0) {
		conn_write(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
		    "Api-Version: 1.41\r\nRetry-After: 7\r\nContent-Length: 5\r\n"
		    "Connection: close\r\n\r\nhello");
	} else if (strcmp(path, "/post") == 0) {
		snprintf(out, sizeof(out), "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\n"
		    "Connection: close\r\n\r\n%s", strlen(body), body);
		conn_write(fd, out);
	} else if (strcmp(path, "/stream") == 0) {
		/* Pieces with pauses, as Docker's hijacked streams arrive. */
		conn_write(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
		for (int i = 0; i < 5; i++) {
			snprintf(out, sizeof(out), "piece%d;", i);
			conn_write(fd, out);
			usleep(20000);
		}
	} else if (strcmp(path, "/big") == 0) {
		memset(body, 'x', 60000);
		body[60000] = '\0';
		snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n"
		    "Connection: close\r\n\r\n%s", body);
		conn_write(fd, out);
	} else if (strcmp(path, "/garbage") == 0) {
		conn_write(fd, "this is not HTTP at all\r\n\r\n");
	} else if (strcmp(path, "/short") == 0) {
		conn_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a bit");
	} else if (strcmp(path, "/hang") == 0) {
		/* Never answer; wait for the client to give up. */
		while (recv(fd, body, sizeof(body), 0) > 0)
			;
	}
	/* "/close" and anything else: close without a word. */
out:
	close(fd);
	pthread_mutex_lock(&srv.mu);
	srv.active--;
	pthread_cond_broadcast(&srv.cv);
	pthread_mutex_unlock(&srv.mu);
	return NULL;
}

static void *
server_main(void *arg)
{
	for (;;) {
		pthread_t t;
		int fd = accept(srv.fd, NULL, NULL);

		if (fd < 0)
			break;
		pthread_mutex_lock(&srv.mu);
		if (srv.stop) {
			pthread_mutex_unlock(&srv.mu);
			close(fd);
			break;
		}
		srv.active++;
		srv.accepted++;
		pthread_mutex_unlock(&srv.mu);
		if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd) != 0)
			abort();
		pthread_detach(t);
	}
	return NULL;
}

static int
server_setup(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	strcpy(srv.dir, "/tmp/sp-httpc-XXXXXX");
	if (mkdtemp(srv.dir) == NULL)
		return -1;
	snprintf(srv.path, sizeof(srv.path), "%s/s.sock", srv.dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", srv.path);
	srv.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(srv.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(srv.fd, 128) < 0)
		return -1;
	pthread_mutex_init(&srv.mu, NULL);
	pthread_cond_init(&srv.cv, NULL);
	return pthread_create(&srv.thread, NULL, server_main, NULL);
}

static int
server_teardown(void **state)
{
	pthread_mutex_lock(&srv.mu);
	srv.stop = true;
	pthread_mutex_unlock(&srv.mu);
	shutdown(srv.fd, SHUT_RDWR);
	pthread_join(srv.thread, NULL);
	close(srv.fd);
	pthread_mutex_lock(&srv.mu);
	while (srv.active > 0)
		pthread_cond_wait(&srv.cv, &srv.mu);
	pthread_mutex_unlock(&srv.mu);
	unlink(srv.path);
	rmdir(srv.dir);
	return 0;
}

struct result {
	bool in_call;			/* set while sp_http_request() runs */
	bool fired_inside;
	int done;
	int status;
	long http;
	char body[70000];
	size_t body_len;
	char stream[256];
	size_t stream_len;
	int pieces;
	char ctype[64], apiv[16], retry[16];
	int abort_after;		/* on_data: abort after this many pieces */
};

static int
on_data(void *arg, const char *data, size_t len)
{
	struct result *r = arg;

	if (r->abort_after != 0 && r->pieces >= r->abort_after)
		return -EPIPE;
	r->pieces++;
	if (len > sizeof(r->stream) - 1 - r->stream_len)
		return -E2BIG;
	memcpy(r->stream + r->stream_len, data, len);
	r->stream_len += len;
	r->stream[r->stream_len] = '\0';
	return 0;
}

static void
on_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct result *r = arg;

	if (r->in_call)
		r->fired_inside = true;
	r->done++;
	r->status = status;
	r->http = resp->status;
	assert_non_null(resp->body);
	if (resp->body_len < sizeof(r->body)) {
		memcpy(r->body, resp->body, resp->body_len);
		r->body[resp->body_len] = '\0';
		r->body_len = resp->body_len;
	}
	if (resp->content_type != NULL)
		snprintf(r->ctype, sizeof(r->ctype), "%s", resp->content_type);
	if (resp->api_version != NULL)
		snprintf(r->apiv, sizeof(r->apiv), "%s", resp->api_version);
	if (resp->retry_after != NULL)
		snprintf(r->retry, sizeof(r->retry), "%s", resp->retry_after);
}

static void
closed_cb(void *arg)
{
	*(int *)arg += 1;
}

/* Start one request with the in-call guard around it. */
static int
start(struct sp_httpc *c, const char *method, const char *path, const char *sock,
      const char *body, size_t max_body, bool stream, struct result *r,
      struct sp_http_call **call)
{
	char url[256];
	const char *hdrs[] = { "Content-Type: application/json", NULL };
	struct sp_http_opts o = {
		.method = method, .url = url, .unix_socket = sock, .headers = hdrs,
		.body = body, .body_len = body != NULL ? strlen(body) : 0,
		.timeout_ms = 10000, .max_body = max_body,
	};
	int rc;

	snprintf(url, sizeof(url), "http://localhost%s", path);
	r->in_call = true;
	rc = sp_http_request(c, &o, stream ? on_data : NULL, on_done, r, call);
	r->in_call = false;
	return rc;
}

static void
run_one(const char *method, const char *path, const char *body, size_t max_body,
	bool stream, struct result *r)
{
	uv_loop_t loop;
	struct sp_httpc *c;
	int closed = 0;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	assert_int_equal(start(c, method, path, srv.path, body, max_body, stream, r, NULL), 0);
	assert_int_equal(r->done, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r->done, 1);
	assert_false(r->fired_inside);
	httpc_close(c, closed_cb, &closed);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_get(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	run_one("GET", "/get", NULL, 0, false, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.http, 200);
	assert_string_equal(r.body, "hello");
	assert_int_equal(r.body_len, 5);
	assert_string_equal(r.ctype, "text/plain");
	assert_string_equal(r.apiv, "1.41");
	assert_string_equal(r.retry, "7");
}

static void
test_post(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	run_one("POST", "/post", "{\"a\":1}", 0, false, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.http, 201);
	assert_string_equal(r.body, "{\"a\":1}");
}

static void
test_stream(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	run_one("GET", "/stream", NULL, 0, true, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.http, 200);
	assert_string_equal(r.stream, "piece0;piece1;piece2;piece3;piece4;");
	assert_true(r.pieces >= 2);
	assert_int_equal(r.body_len, 0);
}

static void
test_stream_abort(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	r.abort_after = 1;
	run_one("GET", "/stream", NULL, 0, true, &r);
	assert_int_equal(r.status, -EPIPE);
	assert_int_equal(r.pieces, 1);
}

static void
test_max_body(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	run_one("GET", "/big", NULL, 1000, false, &r);
	assert_int_equal(r.status, -E2BIG);

	memset(&r, 0, sizeof(r));
	run_one("GET", "/big", NULL, 60000, false, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.body_len, 60000);
}

static void
test_broken_servers(void **state)
{
	static struct result r;

	memset(&r, 0, sizeof(r));
	run_one("GET", "/close", NULL, 0, false, &r);
	assert_int_equal(r.status, SP_EPROTO);

	memset(&r, 0, sizeof(r));
	run_one("GET", "/garbage", NULL, 0, false, &r);
	assert_int_equal(r.status, SP_EPROTO);

	memset(&r, 0, sizeof(r));
	run_one("GET", "/short", NULL, 0, false, &r);
	assert_int_equal(r.status, SP_EPROTO);
}

static void
test_connect_failure(void **state)
{
	static struct result r;
	uv_loop_t loop;
	struct sp_httpc *c;
	char missing[200];
	int closed = 0;

	memset(&r, 0, sizeof(r));
	snprintf(missing, sizeof(missing), "%s/nope.sock", srv.dir);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	assert_int_equal(start(c, "GET", "/get", missing, NULL, 0, false, &r, NULL), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.done, 1);
	assert_false(r.fired_inside);
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_int_equal(r.http, 0);
	httpc_close(c, closed_cb, &closed);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
cancel_timer_cb(uv_timer_t *t)
{
	sp_http_cancel(t->data);
	uv_close((uv_handle_t *)t, NULL);
}

static void
test_cancel(void **state)
{
	static struct result r;
	uv_loop_t loop;
	uv_timer_t t;
	struct sp_httpc *c;
	struct sp_http_call *call;
	int closed = 0;

	memset(&r, 0, sizeof(r));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	assert_int_equal(start(c, "GET", "/hang", srv.path, NULL, 0, false, &r, &call), 0);
	/* Cancel from the loop once the request is on the wire. */
	uv_timer_init(&loop, &t);
	t.data = call;
	uv_timer_start(&t, cancel_timer_cb, 50, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.status, SP_ECANCELED);

	/* Cancel right after the start: done still fires later, not inside. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(start(c, "GET", "/hang", srv.path, NULL, 0, false, &r, &call), 0);
	sp_http_cancel(call);
	assert_int_equal(r.done, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.status, SP_ECANCELED);

	httpc_close(c, closed_cb, &closed);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_timeout(void **state)
{
	static struct result r;
	uv_loop_t loop;
	struct sp_httpc *c;
	const struct sp_http_opts o = {
		.method = "GET", .url = "http://localhost/hang", .unix_socket = srv.path,
		.timeout_ms = 100,
	};
	int closed = 0;

	memset(&r, 0, sizeof(r));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	assert_int_equal(sp_http_request(c, &o, NULL, on_done, &r, NULL), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.status, SP_ETIMEDOUT);
	httpc_close(c, closed_cb, &closed);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closing the client with requests in flight cancels them all. */
static void
test_close_pending(void **state)
{
	static struct result r[3];
	uv_loop_t loop;
	struct sp_httpc *c;
	int closed = 0;

	memset(r, 0, sizeof(r));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(start(c, "GET", "/hang", srv.path, NULL, 0, false, &r[i], NULL), 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	httpc_close(c, closed_cb, &closed);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r[i].done, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].done, 1);
		assert_int_equal(r[i].status, SP_ECANCELED);
	}
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

#define NCONC 40

static void
test_concurrent(void **state)
{
	static struct result r[NCONC];
	char body[NCONC][32];
	uv_loop_t loop;
	struct sp_httpc *c;
	int closed = 0;

	memset(r, 0, sizeof(r));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(httpc_new(&loop, &c), 0);
	for (int i = 0; i < NCONC; i++) {
		snprintf(body[i], sizeof(body[i]), "req-%d", i);
		assert_int_equal(start(c, "POST", "/post", srv.path, body[i], 0, false, &r[i],
		    NULL), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	for (int i = 0; i < NCONC; i++) {
		assert_int_equal(r[i].done, 1);
		assert_false(r[i].fired_inside);
		assert_int_equal(r[i].status, 0);
		assert_string_equal(r[i].body, body[i]);
	}
	httpc_close(c, closed_cb, &closed);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get),
		cmocka_unit_test(test_post),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_stream_abort),
		cmocka_unit_test(test_max_body),
		cmocka_unit_test(test_broken_servers),
		cmocka_unit_test(test_connect_failure),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_close_pending),
		cmocka_unit_test(test_concurrent),
	};

	return cmocka_run_group_tests(tests, server_setup, server_teardown);
}

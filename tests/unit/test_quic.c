/*
 * The HTTP/3 server on loopback with the real client: single calls, 64
 * concurrent streams, several connections, bad input of every kind, ALPN and
 * certificate refusal, idle timeout and graceful shutdown.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "cert.h"
#include "quic.h"
#include "quic_client.h"
#include "quic_testlib.h"

struct fx {
	uv_loop_t loop;
	struct qt_env env;
	struct quic_server *srv;
	int srv_closed;
};

struct cl {
	struct quic_client *c;
	int connected, closed, close_err, freed;
};

struct resp {
	int done, status;
	char body[512];
};

static void
run_until(uv_loop_t *loop, const int *flag)
{
	uint64_t limit = uv_hrtime() + 10ULL * 1000000000ULL;

	while (!*flag) {
		assert_true(uv_hrtime() < limit);
		uv_run(loop, UV_RUN_ONCE);
	}
}

static void
srv_closed_cb(void *arg)
{
	*(int *)arg = 1;
}

static void
fx_start(struct fx *fx, const struct quic_config *over)
{
	struct quic_config cfg = { 0 };

	if (over)
		cfg = *over;
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	qt_env_init(&fx->env);
	cfg.host = "127.0.0.1";
	cfg.cert_file = fx->env.cert;
	cfg.key_file = fx->env.key;
	assert_int_equal(quic_server_new(&fx->loop, &cfg, fx->env.rpc, &fx->srv), 0);
	assert_true(quic_server_port(fx->srv) != 0);
}

static void
fx_stop(struct fx *fx)
{
	quic_server_close(fx->srv, srv_closed_cb, &fx->srv_closed);
	run_until(&fx->loop, &fx->srv_closed);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	qt_env_done(&fx->env);
}

static void
cl_event(void *arg, enum quic_client_event ev, int err)
{
	struct cl *cl = arg;

	if (ev == QUIC_CLIENT_CONNECTED)
		cl->connected = 1;
	else {
		cl->closed = 1;
		cl->close_err = err;
	}
}

static void
cl_freed(void *arg)
{
	((struct cl *)arg)->freed = 1;
}

static void
cl_open(struct fx *fx, struct cl *cl, const char *alpn, const char *ca)
{
	struct quic_client_config cfg = { 0 };

	memset(cl, 0, sizeof(*cl));
	cfg.host = "127.0.0.1";
	cfg.port = quic_server_port(fx->srv);
	cfg.ca_file = ca ? ca : fx->env.ca;
	cfg.alpn = alpn;
	assert_int_equal(quic_client_new(&fx->loop, &cfg, cl_event, cl, &cl->c), 0);
}

static void
cl_close(struct fx *fx, struct cl *cl)
{
	quic_client_close(cl->c, cl_freed, cl);
	run_until(&fx->loop, &cl->freed);
}

static void
on_resp(void *arg, int status, const uint8_t *body, size_t len)
{
	struct resp *r = arg;

	r->done = 1;
	r->status = status;
	if (len >= sizeof(r->body))
		len = sizeof(r->body) - 1;
	if (len)
		memcpy(r->body, body, len);
	r->body[len] = '\0';
}

static void
call(struct fx *fx, struct cl *cl, const char *method, const char *path, const char *token,
    const char *body, struct resp *r)
{
	memset(r, 0, sizeof(*r));
	assert_int_equal(quic_client_request(cl->c, method, path, token, body,
	    body ? strlen(body) : 0, on_resp, r), 0);
	run_until(&fx->loop, &r->done);
}

static void
test_single_call(void **state)
{
	struct fx fx = { 0 };
	struct cl cl;
	struct resp r;

	fx_start(&fx, NULL);
	cl_open(&fx, &cl, NULL, NULL);
	run_until(&fx.loop, &cl.connected);
	call(&fx, &cl, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"pong\":true}");
	call(&fx, &cl, "POST", "/v1/echo", NULL, "{\"a\":[1,2,3]}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"a\":[1,2,3]}");
	assert_int_equal(quic_server_stats(fx.srv)->requests, 2);
	assert_int_equal(quic_server_stats(fx.srv)->conns_active, 1);
	cl_close(&fx, &cl);
	fx_stop(&fx);
}

#define NCONN	4
#define NSTREAM	64

struct many {
	struct resp r;
	int idx;
	unsigned *ok;
};

static void
on_many(void *arg, int status, const uint8_t *body, size_t len)
{
	struct many *m = arg;
	char want[64];

	snprintf(want, sizeof(want), "{\"i\":%d}", m->idx);
	if (status == 200 && len == strlen(want) && memcmp(body, want, len) == 0)
		(*m->ok)++;
	m->r.done = 1;
}

static void
test_many_streams_and_connections(void **state)
{
	static struct many m[NCONN][NSTREAM];
	struct fx fx = { 0 };
	struct cl cl[NCONN];
	unsigned ok = 0;
	int all = 0, i, j;
	char body[64];

	fx_start(&fx, NULL);
	for (i = 0; i < NCONN; i++)
		cl_open(&fx, &cl[i], NULL, NULL);
	/* Requests queue before the handshake and go out on 64 concurrent streams. */
	for (i = 0; i < NCONN; i++)
		for (j = 0; j < NSTREAM; j++) {
			m[i][j].idx = i * 1000 + j;
			m[i][j].ok = &ok;
			snprintf(body, sizeof(body), "{\"i\":%d}", m[i][j].idx);
			assert_int_equal(quic_client_request(cl[i].c, "POST", "/v1/echo", NULL, body,
			    strlen(body), on_many, &m[i][j]), 0);
		}
	while (!all) {
		uv_run(&fx.loop, UV_RUN_ONCE);
		all = 1;
		for (i = 0; i < NCONN; i++)
			for (j = 0; j < NSTREAM; j++)
				all &= m[i][j].r.done;
	}
	assert_int_equal(ok, NCONN * NSTREAM);
	assert_int_equal(quic_server_stats(fx.srv)->requests, NCONN * NSTREAM);
	assert_int_equal(quic_server_stats(fx.srv)->conns_accepted, NCONN);
	/* A second round on the same connections: stream credit came back. */
	ok = 0;
	for (i = 0; i < NCONN; i++)
		for (j = 0; j < NSTREAM; j++) {
			m[i][j].r.done = 0;
			snprintf(body, sizeof(body), "{\"i\":%d}", m[i][j].idx);
			assert_int_equal(quic_client_request(cl[i].c, "POST", "/v1/echo", NULL, body,
			    strlen(body), on_many, &m[i][j]), 0);
		}
	for (all = 0; !all;) {
		uv_run(&fx.loop, UV_RUN_ONCE);
		all = 1;
		for (i = 0; i < NCONN; i++)
			for (j = 0; j < NSTREAM; j++)
				all &= m[i][j].r.done;
	}
	assert_int_equal(ok, NCONN * NSTREAM);
	for (i = 0; i < NCONN; i++)
		cl_close(&fx, &cl[i]);
	fx_stop(&fx);
}

#define MANY_CONN	48
#define MANY_EACH	4

/* Many connections at once, each with a few calls in flight, all opened together. */
static void
test_many_connections(void **state)
{
	static struct many m[MANY_CONN][MANY_EACH];
	static struct cl cl[MANY_CONN];
	struct fx fx = { 0 };
	unsigned ok = 0;
	int all = 0, i, j;
	char body[64];

	fx_start(&fx, NULL);
	for (i = 0; i < MANY_CONN; i++) {
		cl_open(&fx, &cl[i], NULL, NULL);
		for (j = 0; j < MANY_EACH; j++) {
			m[i][j].idx = i * 100 + j;
			m[i][j].ok = &ok;
			m[i][j].r.done = 0;
			snprintf(body, sizeof(body), "{\"i\":%d}", m[i][j].idx);
			assert_int_equal(quic_client_request(cl[i].c, "POST", "/v1/echo", NULL, body,
			    strlen(body), on_many, &m[i][j]), 0);
		}
	}
	while (!all) {
		uv_run(&fx.loop, UV_RUN_ONCE);
		all = 1;
		for (i = 0; i < MANY_CONN; i++)
			for (j = 0; j < MANY_EACH; j++)
				all &= m[i][j].r.done;
	}
	assert_int_equal(ok, MANY_CONN * MANY_EACH);
	assert_int_equal(quic_server_stats(fx.srv)->conns_accepted, MANY_CONN);
	assert_int_equal(quic_server_stats(fx.srv)->conns_active, MANY_CONN);
	/* Shutdown with every connection live: all of them hear about it. */
	quic_server_close(fx.srv, srv_closed_cb, &fx.srv_closed);
	for (i = 0; i < MANY_CONN; i++) {
		run_until(&fx.loop, &cl[i].closed);
		assert_int_equal(cl[i].close_err, -ECONNRESET);
		cl_close(&fx, &cl[i]);
	}
	run_until(&fx.loop, &fx.srv_closed);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
	qt_env_done(&fx.env);
}

static void
send_garbage(uint16_t port, const void *data, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	assert_int_equal(sendto(fd, data, len, 0, (struct sockaddr *)&sin, sizeof(sin)),
	    (ssize_t)len);
	close(fd);
}

static void
test_bad_input(void **state)
{
	struct quic_config over = { .max_body_bytes = 4096 };
	struct fx fx = { 0 };
	struct cl cl, cl2;
	struct resp r;
	char *tok, *big, jti[AUTH_JTI_LEN + 1];
	uint8_t junk[1300];
	size_t i;

	fx_start(&fx, &over);
	/* Garbage: a short header for no connection, random bytes, an empty-ish datagram. */
	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	junk[0] = 0x40;
	send_garbage(quic_server_port(fx.srv), junk, sizeof(junk));
	send_garbage(quic_server_port(fx.srv), "x", 1);
	junk[0] = 0xc0;	/* a long header with a bogus version and lengths */
	send_garbage(quic_server_port(fx.srv), junk, 40);
	cl_open(&fx, &cl, NULL, NULL);
	run_until(&fx.loop, &cl.connected);
	assert_true(quic_server_stats(fx.srv)->garbage >= 3);
	assert_int_equal(quic_server_stats(fx.srv)->conns_accepted, 1);

	call(&fx, &cl, "GET", "/v1/nope", NULL, NULL, &r);
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "\"code\":\"not_found\""));
	call(&fx, &cl, "DELETE", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 405);
	call(&fx, &cl, "POST", "/v1/echo", NULL, "[not json", &r);
	assert_int_equal(r.status, 400);
	big = malloc(8193);
	memset(big, 'a', 8192);
	big[8192] = '\0';
	call(&fx, &cl, "POST", "/v1/echo", NULL, big, &r);
	assert_int_equal(r.status, 413);
	free(big);
	/* Headers: a path past the limit. */
	big = malloc(2001);
	big[0] = '/';
	memset(big + 1, 'p', 1999);
	big[2000] = '\0';
	call(&fx, &cl, "GET", big, NULL, NULL, &r);
	assert_int_equal(r.status, 431);
	free(big);

	/* A good token works; another sandbox's path is forbidden. */
	tok = qt_token(&fx.env, "sb-1", 60, jti);
	call(&fx, &cl, "POST", "/v1/worker/heartbeat", tok, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"sub\":\"sb-1\",\"tenant\":\"acme\"}");
	call(&fx, &cl, "GET", "/v1/sandboxes/sb-2/self", tok, NULL, &r);
	assert_int_equal(r.status, 403);
	call(&fx, &cl, "GET", "/v1/sandboxes/sb-1/self", tok, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_false(cl.closed);

	/* Revoked: 401 and the connection is closed. */
	assert_int_equal(auth_revoke(fx.env.auth, jti, time(NULL) + 60), 0);
	call(&fx, &cl, "POST", "/v1/worker/heartbeat", tok, NULL, &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(r.body, "revoked"));
	run_until(&fx.loop, &cl.closed);
	assert_int_equal(cl.close_err, -ECONNRESET);
	free(tok);
	cl_close(&fx, &cl);

	/* Forged token on a fresh connection: 401 and close too. */
	cl_open(&fx, &cl2, NULL, NULL);
	tok = qt_token(&fx.env, "sb-1", 60, NULL);
	tok[strlen(tok) - 2] ^= 1;
	call(&fx, &cl2, "POST", "/v1/worker/heartbeat", tok, NULL, &r);
	assert_int_equal(r.status, 401);
	run_until(&fx.loop, &cl2.closed);
	free(tok);
	cl_close(&fx, &cl2);

	/* A 1 MiB header field: nghttp3 refuses the header block, which costs that
	 * connection (an H3 error) and nothing else. */
	{
		uint64_t failed = quic_server_stats(fx.srv)->conns_failed;
		struct cl cl3;

		cl_open(&fx, &cl3, NULL, NULL);
		big = malloc(1 << 20);
		big[0] = '/';
		memset(big + 1, 'q', (1 << 20) - 2);
		big[(1 << 20) - 1] = '\0';
		call(&fx, &cl3, "GET", big, NULL, NULL, &r);
		free(big);
		assert_int_equal(r.status, -ECONNRESET);
		run_until(&fx.loop, &cl3.closed);
		assert_int_equal(quic_server_stats(fx.srv)->conns_failed, failed + 1);
		cl_close(&fx, &cl3);
		cl_open(&fx, &cl3, NULL, NULL);
		call(&fx, &cl3, "GET", "/v1/ping", NULL, NULL, &r);
		assert_int_equal(r.status, 200);
		cl_close(&fx, &cl3);
	}

	/* Expired: 401 "token expired", and the connection is closed. */
	{
		const char *scope[] = { "worker" };
		struct cl cl4;

		assert_int_equal(auth_sign(fx.env.auth, "sb-1", "acme", scope, 1, 60,
		    time(NULL) - 120, &tok, NULL), 0);
		cl_open(&fx, &cl4, NULL, NULL);
		call(&fx, &cl4, "POST", "/v1/worker/heartbeat", tok, NULL, &r);
		assert_int_equal(r.status, 401);
		assert_non_null(strstr(r.body, "expired"));
		run_until(&fx.loop, &cl4.closed);
		free(tok);
		cl_close(&fx, &cl4);
	}

	assert_int_equal(rpc_stats(fx.env.rpc)->unauthorized, 3);
	assert_int_equal(rpc_stats(fx.env.rpc)->forbidden, 1);
	assert_int_equal(rpc_stats(fx.env.rpc)->not_found, 2);
	assert_int_equal(rpc_stats(fx.env.rpc)->bad_request, 3);
	assert_int_equal(quic_server_stats(fx.srv)->refused_requests, 2);
	fx_stop(&fx);
}

static void
test_wrong_alpn_and_ca(void **state)
{
	struct fx fx = { 0 };
	struct qt_env other;
	struct cl cl;

	fx_start(&fx, NULL);
	cl_open(&fx, &cl, "hq-interop", NULL);
	run_until(&fx.loop, &cl.closed);
	assert_false(cl.connected);
	assert_int_equal(cl.close_err, -EACCES);
	cl_close(&fx, &cl);

	/* A client that trusts another CA refuses our server. */
	qt_env_init(&other);
	cl_open(&fx, &cl, NULL, other.ca);
	run_until(&fx.loop, &cl.closed);
	assert_false(cl.connected);
	assert_int_equal(cl.close_err, -EACCES);
	cl_close(&fx, &cl);
	qt_env_done(&other);
	fx_stop(&fx);
}

/* A server certificate that expired ten days ago is refused by the client. */
static void
test_expired_server_cert(void **state)
{
	struct quic_config over = { 0 };
	struct cert_options opt = { 0 };
	char dir[] = "/tmp/sp-quic-old-XXXXXX", crt[64], key[64], ca[64], cmd[64];
	struct fx fx = { 0 };
	struct cl cl;

	assert_non_null(mkdtemp(dir));
	opt.dir = dir;
	opt.now = time(NULL) - 40L * 24 * 3600;
	assert_int_equal(cert_ensure(&opt, NULL), 0);
	snprintf(crt, sizeof(crt), "%s/%s", dir, CERT_SERVER_FILE);
	snprintf(key, sizeof(key), "%s/%s", dir, CERT_SERVER_KEY_FILE);
	snprintf(ca, sizeof(ca), "%s/%s", dir, CERT_CA_FILE);
	assert_int_equal(uv_loop_init(&fx.loop), 0);
	qt_env_init(&fx.env);
	over.host = "127.0.0.1";
	over.cert_file = crt;
	over.key_file = key;
	assert_int_equal(quic_server_new(&fx.loop, &over, fx.env.rpc, &fx.srv), 0);
	cl_open(&fx, &cl, NULL, ca);
	run_until(&fx.loop, &cl.closed);
	assert_false(cl.connected);
	assert_int_equal(cl.close_err, -EACCES);
	cl_close(&fx, &cl);
	fx_stop(&fx);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void
test_shutdown_closes_peers(void **state)
{
	struct fx fx = { 0 };
	struct cl cl;
	struct resp r;

	fx_start(&fx, NULL);
	cl_open(&fx, &cl, NULL, NULL);
	call(&fx, &cl, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	quic_server_close(fx.srv, srv_closed_cb, &fx.srv_closed);
	run_until(&fx.loop, &cl.closed);
	assert_int_equal(cl.close_err, -ECONNRESET);
	run_until(&fx.loop, &fx.srv_closed);
	cl_close(&fx, &cl);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
	qt_env_done(&fx.env);
}

static void
test_idle_timeout(void **state)
{
	struct quic_config over = { .idle_timeout_ms = 150 };
	struct fx fx = { 0 };
	struct cl cl;

	fx_start(&fx, &over);
	cl_open(&fx, &cl, NULL, NULL);
	run_until(&fx.loop, &cl.connected);
	run_until(&fx.loop, &cl.closed);
	assert_int_equal(cl.close_err, -ETIMEDOUT);
	cl_close(&fx, &cl);
	/* The server forgets the connection too. */
	while (quic_server_stats(fx.srv)->conns_active != 0)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_int_equal(quic_server_stats(fx.srv)->conns_idle_closed, 1);
	fx_stop(&fx);
}

/* One source address gets at most max_connections_per_ip connections. */
static void
test_per_ip_limit(void **state)
{
	struct quic_config over = { .max_connections_per_ip = 2 };
	struct quic_client_config cfg = { 0 };
	struct fx fx = { 0 };
	struct cl c[3];
	int i;

	fx_start(&fx, &over);
	for (i = 0; i < 2; i++) {
		cl_open(&fx, &c[i], NULL, NULL);
		run_until(&fx.loop, &c[i].connected);
	}
	memset(&c[2], 0, sizeof(c[2]));
	cfg.host = "127.0.0.1";
	cfg.port = quic_server_port(fx.srv);
	cfg.ca_file = fx.env.ca;
	cfg.idle_timeout_ms = 300;
	assert_int_equal(quic_client_new(&fx.loop, &cfg, cl_event, &c[2], &c[2].c), 0);
	run_until(&fx.loop, &c[2].closed);
	assert_false(c[2].connected);
	assert_int_equal(c[2].close_err, -ETIMEDOUT);
	assert_true(quic_server_stats(fx.srv)->conns_refused >= 1);
	assert_int_equal(quic_server_stats(fx.srv)->conns_accepted, 2);
	for (i = 0; i < 3; i++)
		cl_close(&fx, &c[i]);
	fx_stop(&fx);
}

/* A reload serves new connections with the new certificate; live ones carry on. */
static void
test_reload_certificate(void **state)
{
	struct fx fx = { 0 };
	struct qt_env other;
	struct cl a, b, c;
	struct resp r;

	fx_start(&fx, NULL);
	cl_open(&fx, &a, NULL, NULL);
	call(&fx, &a, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);

	/* Switch to a certificate from another CA, so the effect is visible. */
	qt_env_init(&other);
	assert_int_equal(quic_server_reload(fx.srv, other.cert, other.key), 0);
	cl_open(&fx, &b, NULL, NULL);		/* trusts the old CA: refused now */
	run_until(&fx.loop, &b.closed);
	assert_int_equal(b.close_err, -EACCES);
	cl_close(&fx, &b);
	cl_open(&fx, &c, NULL, other.ca);
	call(&fx, &c, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	call(&fx, &a, "GET", "/v1/ping", NULL, NULL, &r);	/* the old session lives on */
	assert_int_equal(r.status, 200);

	/* A reload that fails keeps what is loaded. */
	assert_int_equal(quic_server_reload(fx.srv, "/nonexistent.pem", other.key), -EIO);
	cl_close(&fx, &c);
	cl_open(&fx, &c, NULL, other.ca);
	call(&fx, &c, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	cl_close(&fx, &c);
	cl_close(&fx, &a);
	fx_stop(&fx);
	qt_env_done(&other);
}

static void
test_wildcard_refused(void **state)
{
	struct quic_config cfg = { .host = "0.0.0.0", .cert_file = "x", .key_file = "y" };
	struct quic_server *srv;
	struct qt_env env;
	uv_loop_t loop;

	assert_int_equal(uv_loop_init(&loop), 0);
	qt_env_init(&env);
	assert_int_equal(quic_server_new(&loop, &cfg, env.rpc, &srv), -EINVAL);
	cfg.host = "::";
	assert_int_equal(quic_server_new(&loop, &cfg, env.rpc, &srv), -EINVAL);
	cfg.host = "127.0.0.1";
	assert_int_equal(quic_server_new(&loop, &cfg, env.rpc, &srv), -EIO);
	qt_env_done(&env);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
wake_timer_cb(uv_timer_t *t)
{
	struct fx *fx = t->data;

	assert_int_equal(qt_wake(&fx->env), 1);
	uv_close((uv_handle_t *)t, NULL);
}

/* Deferred replies: from another connection's handler, from a timer, and cancelled. */
static void
test_deferred_replies(void **state)
{
	struct fx fx = { 0 };
	struct cl a, b;
	struct resp w[3], r;
	uv_timer_t t;
	int i;

	fx_start(&fx, NULL);
	cl_open(&fx, &a, NULL, NULL);
	cl_open(&fx, &b, NULL, NULL);
	memset(w, 0, sizeof(w));
	for (i = 0; i < 3; i++)
		assert_int_equal(quic_client_request(a.c, "GET", "/v1/wait", NULL, NULL, 0, on_resp,
		    &w[i]), 0);
	while (fx.env.nwaiting < 3)
		uv_run(&fx.loop, UV_RUN_ONCE);
	/* Still waiting after a round trip on the same connection. */
	call(&fx, &a, "GET", "/v1/ping", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_false(w[0].done || w[1].done || w[2].done);
	/* Another connection's request answers them (from inside its handler). */
	call(&fx, &b, "POST", "/v1/wake", NULL, NULL, &r);
	assert_string_equal(r.body, "{\"woken\":3}");
	for (i = 0; i < 3; i++) {
		run_until(&fx.loop, &w[i].done);
		assert_int_equal(w[i].status, 200);
		assert_string_equal(w[i].body, "{\"woke\":true}");
	}

	/* From a timer, outside any server callback. */
	memset(w, 0, sizeof(w));
	assert_int_equal(quic_client_request(a.c, "GET", "/v1/wait", NULL, NULL, 0, on_resp,
	    &w[0]), 0);
	while (fx.env.nwaiting < 1)
		uv_run(&fx.loop, UV_RUN_ONCE);
	uv_timer_init(&fx.loop, &t);
	t.data = &fx;
	uv_timer_start(&t, wake_timer_cb, 0, 0);
	run_until(&fx.loop, &w[0].done);
	assert_int_equal(w[0].status, 200);

	/* The peer goes away first: the handler's cancel runs, nothing leaks. */
	assert_int_equal(quic_client_request(b.c, "GET", "/v1/wait", NULL, NULL, 0, on_resp,
	    &w[1]), 0);
	while (fx.env.nwaiting < 1)
		uv_run(&fx.loop, UV_RUN_ONCE);
	cl_close(&fx, &b);
	assert_int_equal(w[1].status, -ECANCELED);
	while (fx.env.cancelled < 1)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_int_equal(fx.env.nwaiting, 0);
	assert_int_equal(rpc_stats(fx.env.rpc)->deferred, 5);
	assert_int_equal(rpc_stats(fx.env.rpc)->cancelled, 1);

	/* Shutdown with a request still deferred cancels it too. */
	assert_int_equal(quic_client_request(a.c, "GET", "/v1/wait", NULL, NULL, 0, on_resp,
	    &w[2]), 0);
	while (fx.env.nwaiting < 1)
		uv_run(&fx.loop, UV_RUN_ONCE);
	quic_server_close(fx.srv, srv_closed_cb, &fx.srv_closed);
	assert_int_equal(fx.env.cancelled, 2);
	run_until(&fx.loop, &fx.srv_closed);
	run_until(&fx.loop, &a.closed);
	cl_close(&fx, &a);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
	qt_env_done(&fx.env);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_call),
		cmocka_unit_test(test_many_streams_and_connections),
		cmocka_unit_test(test_many_connections),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_wrong_alpn_and_ca),
		cmocka_unit_test(test_expired_server_cert),
		cmocka_unit_test(test_shutdown_closes_peers),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_per_ip_limit),
		cmocka_unit_test(test_reload_certificate),
		cmocka_unit_test(test_wildcard_refused),
		cmocka_unit_test(test_deferred_replies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

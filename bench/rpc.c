/*
 * bench/rpc: latency and throughput of the worker channel (HTTP/3 over QUIC on
 * loopback) against a plain TCP baseline (HTTP/1.1 keep-alive) in the same run.
 * A child process serves both on 127.0.0.1 with the same router; the parent
 * measures. Every phase is bounded by a call count and a time cap; the whole run
 * takes well under a minute.
 *
 *   bench_rpc [-n CALLS] [-c CONCURRENCY] [-b BODY_BYTES]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "cert.h"
#include "quic.h"
#include "quic_client.h"
#include "rpc.h"

#define PHASE_CAP_NS	(8ULL * 1000000000ULL)
#define WARMUP		200

static int ncalls = 20000, conc = 64, body_bytes = 64;
static char body[4096];
static char dir[] = "/tmp/sp-bench-XXXXXX";
static char ca_path[128];

/* Statistics */

struct lat {
	uint64_t *v;
	size_t n, cap;
	uint64_t t0, t1;	/* wall time of the measured part */
};

static void
lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	l->v[l->n++] = ns;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
lat_pct(struct lat *l, double p)
{
	size_t i;

	if (!l->n)
		return 0;
	i = (size_t)(p / 100.0 * (double)(l->n - 1) + 0.5);
	return (double)l->v[i] / 1000.0;
}

static double
lat_rate(struct lat *l)
{
	return l->t1 > l->t0 ? (double)l->n / ((double)(l->t1 - l->t0) / 1e9) : 0;
}

static void
lat_sort(struct lat *l)
{
	qsort(l->v, l->n, sizeof(*l->v), cmp_u64);
}

/* The server child: QUIC and TCP on 127.0.0.1, the same router for both. */

static void
h_echo(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	rpc_reply_json(resp, 200, call->json ? json_incref(call->json) : json_object());
}

struct tconn {
	uv_tcp_t tcp;
	struct rpc *rpc;
	char buf[65536];
	size_t len;
};

struct twrite {
	uv_write_t req;
	char *data;
};

static void
t_free(uv_handle_t *h)
{
	free(h->data);
}

static void
t_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct tconn *c = h->data;

	*b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void
t_written(uv_write_t *req, int status)
{
	struct twrite *w = (struct twrite *)req;

	free(w->data);
	free(w);
}

/* Minimal HTTP/1.1: request line, headers, Content-Length body; keep-alive. */
static void
t_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct tconn *c = s->data;

	if (n < 0) {
		uv_close((uv_handle_t *)s, t_free);
		return;
	}
	c->len += (size_t)n;
	for (;;) {
		char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), *cl, method[16], path[256];
		size_t hlen, blen = 0, total;
		struct rpc_request req = { 0 };
		struct rpc_response resp;
		struct twrite *w;
		uv_buf_t out;
		int m;

		if (!end) {
			if (c->len == sizeof(c->buf))
				uv_close((uv_handle_t *)s, t_free);
			return;
		}
		hlen = (size_t)(end - c->buf) + 4;
		*end = '\0';
		if ((cl = strcasestr(c->buf, "\r\ncontent-length:")))
			blen = strtoul(cl + 17, NULL, 10);
		total = hlen + blen;
		if (total > sizeof(c->buf)) {
			uv_close((uv_handle_t *)s, t_free);
			return;
		}
		if (c->len < total) {
			*end = '\r';
			return;
		}
		if (sscanf(c->buf, "%15s %255s", method, path) != 2) {
			uv_close((uv_handle_t *)s, t_free);
			return;
		}
		req.method = method;
		req.path = path;
		req.body = (const uint8_t *)c->buf + hlen;
		req.body_len = blen;
		rpc_dispatch(c->rpc, &req, &resp);
		w = malloc(sizeof(*w));
		m = asprintf(&w->data, "HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n%.*s", resp.status, resp.body_len,
		    (int)resp.body_len, resp.body);
		free(resp.body);
		out = uv_buf_init(w->data, (unsigned)m);
		uv_write(&w->req, s, &out, 1, t_written);
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
	}
}

static void
t_accept(uv_stream_t *srv, int status)
{
	struct tconn *c = calloc(1, sizeof(*c));

	c->rpc = srv->data;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, t_free);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_read_start((uv_stream_t *)&c->tcp, t_alloc, t_read);
}

static uv_tcp_t tsrv;
static struct quic_server *qsrv;

static void
child_stop(uv_signal_t *sig, int signum)
{
	quic_server_close(qsrv, NULL, NULL);
	uv_close((uv_handle_t *)&tsrv, NULL);
	uv_close((uv_handle_t *)sig, NULL);
	uv_stop(sig->loop);
}

static void
child(int wfd)
{
	uv_loop_t *loop = uv_default_loop();
	struct quic_config cfg = { 0 };
	char crt[128], key[128];
	struct sockaddr_in sin;
	int len = sizeof(sin);
	struct rpc *rpc = rpc_new(NULL);
	uv_signal_t sig;
	uint16_t ports[2];

	rpc_add(rpc, "POST", "/v1/echo", NULL, RPC_ROUTE_PUBLIC, h_echo, NULL);
	snprintf(crt, sizeof(crt), "%s/%s", dir, CERT_SERVER_FILE);
	snprintf(key, sizeof(key), "%s/%s", dir, CERT_SERVER_KEY_FILE);
	cfg.host = "127.0.0.1";
	cfg.cert_file = crt;
	cfg.key_file = key;
	if (quic_server_new(loop, &cfg, rpc, &qsrv) < 0)
		_exit(1);
	uv_tcp_init(loop, &tsrv);
	tsrv.data = rpc;
	uv_ip4_addr("127.0.0.1", 0, &sin);
	uv_tcp_bind(&tsrv, (struct sockaddr *)&sin, 0);
	uv_listen((uv_stream_t *)&tsrv, 128, t_accept);
	uv_tcp_getsockname(&tsrv, (struct sockaddr *)&sin, &len);
	ports[0] = quic_server_port(qsrv);
	ports[1] = ntohs(sin.sin_port);
	uv_signal_init(loop, &sig);
	uv_signal_start(&sig, child_stop, SIGTERM);
	if (write(wfd, ports, sizeof(ports)) != sizeof(ports))
		_exit(1);
	close(wfd);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_run(loop, UV_RUN_DEFAULT);
	_exit(0);
}

/* QUIC measurements in the parent */

static uv_loop_t loop;
static uint16_t qport, tport;

struct qc {
	struct quic_client *c;
	int connected, closed, freed;
	uint64_t t_new, t_conn;
};

static void
qc_ev(void *arg, enum quic_client_event ev, int err)
{
	struct qc *q = arg;

	if (ev == QUIC_CLIENT_CONNECTED) {
		q->connected = 1;
		q->t_conn = uv_hrtime();
	} else {
		q->closed = 1;
		if (!q->connected)
			fprintf(stderr, "bench: connection failed: %d\n", err);
	}
}

static void
qc_freed(void *arg)
{
	((struct qc *)arg)->freed = 1;
}

static void
qc_open(struct qc *q)
{
	struct quic_client_config cfg = { 0 };

	memset(q, 0, sizeof(*q));
	cfg.host = "127.0.0.1";
	cfg.port = qport;
	cfg.ca_file = ca_path;
	q->t_new = uv_hrtime();
	if (quic_client_new(&loop, &cfg, qc_ev, q, &q->c) < 0)
		abort();
	while (!q->connected && !q->closed)
		uv_run(&loop, UV_RUN_ONCE);
	if (!q->connected)
		exit(1);
}

static void
qc_shut(struct qc *q)
{
	quic_client_close(q->c, qc_freed, q);
	while (!q->freed)
		uv_run(&loop, UV_RUN_ONCE);
}

struct slot {
	struct qc *q;
	struct lat *lat;
	uint64_t t;
	int *inflight;
	int *issued, limit;
	int errors;
};

static void slot_send(struct slot *s);

static void
slot_done(void *arg, int status, const uint8_t *b, size_t len)
{
	struct slot *s = arg;
	uint64_t now = uv_hrtime();

	(*s->inflight)--;
	if (status != 200 || len != (size_t)body_bytes)
		s->errors++;
	else if (*s->issued > WARMUP && s->lat->n < (size_t)(s->limit - WARMUP))
		lat_add(s->lat, now - s->t);
	if (*s->issued == WARMUP + 1 && !s->lat->t0)
		s->lat->t0 = now;
	if (*s->issued < s->limit && now - s->lat->t1 < PHASE_CAP_NS)
		slot_send(s);
}

static void
slot_send(struct slot *s)
{
	(*s->issued)++;
	(*s->inflight)++;
	s->t = uv_hrtime();
	if (quic_client_request(s->q->c, "POST", "/v1/echo", NULL, body, (size_t)body_bytes,
	    slot_done, s) < 0)
		abort();
}

/* Run n calls with k in flight on connection q. */
static int
quic_run(struct qc *q, int n, int k, struct lat *lat)
{
	struct slot *slots = calloc((size_t)k, sizeof(*slots));
	int inflight = 0, issued = 0, i, errors = 0;

	lat->t1 = uv_hrtime();	/* start of the phase, for the cap */
	for (i = 0; i < k; i++) {
		slots[i] = (struct slot){ q, lat, 0, &inflight, &issued, n + WARMUP, 0 };
		slot_send(&slots[i]);
	}
	while (inflight > 0)
		uv_run(&loop, UV_RUN_ONCE);
	lat->t1 = uv_hrtime();
	for (i = 0; i < k; i++)
		errors += slots[i].errors;
	free(slots);
	lat_sort(lat);
	return errors;
}

struct first {
	int done;
	uint64_t t;
	struct lat *lat;
};

static void
first_done(void *arg, int status, const uint8_t *b, size_t len)
{
	struct first *f = arg;

	lat_add(f->lat, uv_hrtime() - f->t);
	f->done = 1;
}

static void
bench_handshakes(struct lat *hs, struct lat *first)
{
	int i;

	for (i = 0; i < 30; i++) {
		struct qc q;
		struct first f = { 0, 0, first };

		qc_open(&q);
		lat_add(hs, q.t_conn - q.t_new);
		f.t = uv_hrtime();
		quic_client_request(q.c, "POST", "/v1/echo", NULL, body, (size_t)body_bytes,
		    first_done, &f);
		while (!f.done)
			uv_run(&loop, UV_RUN_ONCE);
		qc_shut(&q);
	}
	lat_sort(hs);
	lat_sort(first);
}

/* TCP baseline: HTTP/1.1 keep-alive, k connections with one call in flight each. */

struct tcli {
	int fd;
	char in[8192];
	size_t len;
	uint64_t t;
};

static int
tcp_connect(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(tport) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		abort();
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void
tcp_send(struct tcli *c, const char *req, size_t reqlen)
{
	c->t = uv_hrtime();
	if (write(c->fd, req, reqlen) != (ssize_t)reqlen)
		abort();
}

/* A full response in c->in? Consume it and return 1. */
static int
tcp_response(struct tcli *c)
{
	char *end = memmem(c->in, c->len, "\r\n\r\n", 4), *cl;
	size_t hlen, total;

	if (!end)
		return 0;
	hlen = (size_t)(end - c->in) + 4;
	cl = strcasestr(c->in, "\r\ncontent-length:");
	total = hlen + (cl ? strtoul(cl + 17, NULL, 10) : 0);
	if (c->len < total)
		return 0;
	memmove(c->in, c->in + total, c->len - total);
	c->len -= total;
	return 1;
}

static void
tcp_run(int n, int k, struct lat *lat)
{
	struct tcli *c = calloc((size_t)k, sizeof(*c));
	struct pollfd *pfd = calloc((size_t)k, sizeof(*pfd));
	char req[8192];
	int reqlen, issued = 0, done = 0, i;
	uint64_t start = uv_hrtime();

	reqlen = snprintf(req, sizeof(req), "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", body_bytes, body);
	for (i = 0; i < k; i++) {
		c[i].fd = tcp_connect();
		pfd[i].fd = c[i].fd;
		pfd[i].events = POLLIN;
		tcp_send(&c[i], req, (size_t)reqlen);
		issued++;
	}
	while (done < issued) {
		if (poll(pfd, (nfds_t)k, 1000) <= 0)
			abort();
		for (i = 0; i < k; i++) {
			ssize_t r;

			if (!(pfd[i].revents & POLLIN))
				continue;
			r = read(c[i].fd, c[i].in + c[i].len, sizeof(c[i].in) - c[i].len);
			if (r <= 0)
				abort();
			c[i].len += (size_t)r;
			while (tcp_response(&c[i])) {
				uint64_t now = uv_hrtime();

				done++;
				if (done > WARMUP)
					lat_add(lat, now - c[i].t);
				if (done == WARMUP && !lat->t0)
					lat->t0 = now;
				if (issued < n + WARMUP && now - start < PHASE_CAP_NS) {
					tcp_send(&c[i], req, (size_t)reqlen);
					issued++;
				}
			}
		}
	}
	lat->t1 = uv_hrtime();
	for (i = 0; i < k; i++)
		close(c[i].fd);
	free(c);
	free(pfd);
	lat_sort(lat);
}

static void
row(const char *name, struct lat *l)
{
	char rate[16] = "-";

	if (l->t0)
		snprintf(rate, sizeof(rate), "%.0f", lat_rate(l));
	printf("| %-36s | %8zu | %8.1f | %8.1f | %8.1f | %8.1f | %9s |\n", name, l->n,
	    lat_pct(l, 50), lat_pct(l, 99), lat_pct(l, 99.9), l->n ? (double)l->v[l->n - 1] /
	    1000.0 : 0, rate);
}

int
main(int argc, char **argv)
{
	struct cert_options copt = { 0 };
	struct lat q1 = { 0 }, qk = { 0 }, t1 = { 0 }, tk = { 0 }, hs = { 0 }, first = { 0 };
	int pfd[2], opt, errors = 0, status;
	uint16_t ports[2];
	pid_t pid;
	struct qc q;
	char cmd[64];

	while ((opt = getopt(argc, argv, "n:c:b:")) != -1) {
		switch (opt) {
		case 'n': ncalls = atoi(optarg); break;
		case 'c': conc = atoi(optarg); break;
		case 'b': body_bytes = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench_rpc [-n CALLS] [-c CONCURRENCY] [-b BYTES]\n");
			return 2;
		}
	}
	if (ncalls < 1 || conc < 1 || conc > 128 || body_bytes < 16 ||
	    body_bytes >= (int)sizeof(body))
		return 2;
	/* A JSON object of exactly body_bytes bytes: {"p":"xxxx"} */
	memset(body, 0, sizeof(body));
	snprintf(body, sizeof(body), "{\"p\":\"%0*d\"}", body_bytes - 8, 0);

	if (!mkdtemp(dir))
		return 1;
	copt.dir = dir;
	if (cert_ensure(&copt, NULL) < 0)
		return 1;
	snprintf(ca_path, sizeof(ca_path), "%s/%s", dir, CERT_CA_FILE);
	if (pipe(pfd) < 0)
		return 1;
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		child(pfd[1]);
	}
	close(pfd[1]);
	if (read(pfd[0], ports, sizeof(ports)) != sizeof(ports))
		return 1;
	close(pfd[0]);
	qport = ports[0];
	tport = ports[1];
	uv_loop_init(&loop);

	bench_handshakes(&hs, &first);
	qc_open(&q);
	errors += quic_run(&q, ncalls, 1, &q1);
	errors += quic_run(&q, ncalls, conc, &qk);
	qc_shut(&q);
	tcp_run(ncalls, 1, &t1);
	tcp_run(ncalls, conc, &tk);

	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "bench: loop not clean\n");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;

	printf("\nbench_rpc: %d-byte JSON request and response, POST /v1/echo, 127.0.0.1, "
	    "%d warm-up calls dropped\n\n", body_bytes, WARMUP);
	printf("| %-36s | %8s | %8s | %8s | %8s | %8s | %9s |\n", "phase", "calls", "p50 us",
	    "p99 us", "p99.9 us", "max us", "calls/s");
	printf("|%s|%s|%s|%s|%s|%s|%s|\n", "--------------------------------------", "----------",
	    "----------", "----------", "----------", "----------", "-----------");
	row("HTTP/3 over QUIC, sequential", &q1);
	row("TCP HTTP/1.1 keep-alive, sequential", &t1);
	{
		char name[64];

		snprintf(name, sizeof(name), "HTTP/3, %d concurrent streams", conc);
		row(name, &qk);
		snprintf(name, sizeof(name), "TCP HTTP/1.1, %d connections", conc);
		row(name, &tk);
	}
	row("QUIC handshake (new -> connected)", &hs);
	row("first call after handshake", &first);
	printf("\nratio QUIC/TCP sequential: p50 %.2fx, p99 %.2fx, calls/s %.2fx\n",
	    lat_pct(&q1, 50) / lat_pct(&t1, 50), lat_pct(&q1, 99) / lat_pct(&t1, 99),
	    lat_rate(&q1) / lat_rate(&t1));
	printf("ratio QUIC/TCP concurrent: p50 %.2fx, p99 %.2fx, calls/s %.2fx\n",
	    lat_pct(&qk, 50) / lat_pct(&tk, 50), lat_pct(&qk, 99) / lat_pct(&tk, 99),
	    lat_rate(&qk) / lat_rate(&tk));
	printf("goals (one connection): p50 <= 100 us: %s; p99 <= 1000 us: %s; "
	    "handshake p50 <= 10 ms: %s; errors: %d\n",
	    lat_pct(&q1, 50) <= 100 ? "met" : "MISSED", lat_pct(&q1, 99) <= 1000 ? "met" :
	    "MISSED", lat_pct(&hs, 50) <= 10000 ? "met" : "MISSED", errors);
	free(q1.v);
	free(qk.v);
	free(t1.v);
	free(tk.v);
	free(hs.v);
	free(first.v);
	return errors ? 1 : 0;
}

/*
 * The server and the client exchange datagrams in memory under a simulated
 * clock: no sockets, no wall time. The "network" delays every datagram, drops
 * some and reorders others (deterministic PRNG, several seeds), and the calls
 * must still all complete with the right answers. A blackout must end in the
 * idle timeout on both sides, measured on the fake clock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "quic.h"
#include "quic_client.h"
#include "quic_testlib.h"

#define MS	1000000ULL
#define MAXQ	4096

struct pkt {
	uint64_t at;
	int to_server;
	size_t len;
	uint8_t data[1500];
};

struct net {
	struct pkt q[MAXQ];
	size_t n;
	uint64_t now;
	uint64_t rng;
	unsigned loss_pct, jitter_ms, corrupt_pct;
	int blackout;
	unsigned sent, dropped, reordered, corrupted;
	uint64_t last_at[2];
};

static uint32_t
net_rand(struct net *net)
{
	net->rng ^= net->rng << 13;
	net->rng ^= net->rng >> 7;
	net->rng ^= net->rng << 17;
	return (uint32_t)(net->rng >> 11);
}

static void
net_push(struct net *net, int to_server, const uint8_t *data, size_t len)
{
	struct pkt *p;
	uint64_t at;

	net->sent++;
	if (net->blackout || net_rand(net) % 100 < net->loss_pct) {
		net->dropped++;
		return;
	}
	assert_true(net->n < MAXQ);
	assert_true(len <= sizeof(p->data));
	at = net->now + 1 * MS + (net->jitter_ms ? net_rand(net) % (net->jitter_ms * MS) : 0);
	if (at < net->last_at[to_server])
		net->reordered++;
	else
		net->last_at[to_server] = at;
	p = &net->q[net->n++];
	p->at = at;
	p->to_server = to_server;
	p->len = len;
	memcpy(p->data, data, len);
	if (net->corrupt_pct && net_rand(net) % 100 < net->corrupt_pct) {
		/* Flip one bit anywhere, header included: AEAD must catch it. */
		p->data[net_rand(net) % len] ^= (uint8_t)(1u << (net_rand(net) % 8));
		net->corrupted++;
	}
}

static void
srv_send(void *arg, const struct sockaddr *remote, const uint8_t *data, size_t len)
{
	net_push(arg, 0, data, len);
}

static void
cl_send(void *arg, const uint8_t *data, size_t len)
{
	net_push(arg, 1, data, len);
}

struct state {
	int connected, closed, close_err, freed;
	unsigned done, ok;
	int next_seq, nseq;
	struct quic_client *cl;
};

static void
on_event(void *arg, enum quic_client_event ev, int err)
{
	struct state *st = arg;

	if (ev == QUIC_CLIENT_CONNECTED)
		st->connected = 1;
	else {
		st->closed = 1;
		st->close_err = err;
	}
}

struct call {
	struct state *st;
	int idx;
};

static void on_resp(void *arg, int status, const uint8_t *body, size_t len);

static void
send_call(struct state *st, struct call *c)
{
	char body[64];

	snprintf(body, sizeof(body), "{\"i\":%d}", c->idx);
	assert_int_equal(quic_client_request(st->cl, "POST", "/v1/echo", NULL, body,
	    strlen(body), on_resp, c), 0);
}

static void
on_resp(void *arg, int status, const uint8_t *body, size_t len)
{
	struct call *c = arg;
	char want[64];

	snprintf(want, sizeof(want), "{\"i\":%d}", c->idx);
	if (status == 200 && len == strlen(want) && memcmp(body, want, len) == 0)
		c->st->ok++;
	c->st->done++;
	/* Sequential calls: the next one goes from inside the callback. */
	if (c->idx >= 1000 && c->st->next_seq < c->st->nseq) {
		c->idx = 1000 + ++c->st->next_seq;
		send_call(c->st, c);
	}
}

static void
freed_cb(void *arg)
{
	((struct state *)arg)->freed = 1;
}

static void
srv_closed(void *arg)
{
	*(int *)arg = 1;
}

/* Run the simulation until done() or the fake clock passes limit. */
static void
simulate(struct net *net, struct quic_server *srv, struct state *st, uint64_t limit,
    int (*done)(struct state *))
{
	socklen_t llen;
	const struct sockaddr *local = quic_client_local(st->cl, &llen);

	quic_client_flush(st->cl, net->now);
	while (!done(st) && net->now < limit) {
		uint64_t next = UINT64_MAX, e;
		size_t i;

		for (i = 0; i < net->n; i++)
			if (net->q[i].at < next)
				next = net->q[i].at;
		if ((e = quic_client_expiry(st->cl)) < next)
			next = e;
		if ((e = quic_server_expiry(srv)) < next)
			next = e;
		if (next == UINT64_MAX)
			break;
		if (next > limit) {
			/* Nothing due before the limit: stop there, not at the next event. */
			net->now = limit;
			break;
		}
		if (next > net->now)
			net->now = next;
		/* Deliver everything due, earliest first. */
		for (;;) {
			size_t best = net->n;
			struct pkt p;

			for (i = 0; i < net->n; i++)
				if (net->q[i].at <= net->now &&
				    (best == net->n || net->q[i].at < net->q[best].at))
					best = i;
			if (best == net->n)
				break;
			p = net->q[best];
			net->q[best] = net->q[--net->n];
			if (p.to_server)
				quic_server_input(srv, local, llen, p.data, p.len, net->now);
			else
				quic_client_input(st->cl, p.data, p.len, net->now);
		}
		if (quic_server_expiry(srv) <= net->now)
			quic_server_handle_expiry(srv, net->now);
		if (quic_client_expiry(st->cl) <= net->now)
			quic_client_handle_expiry(st->cl, net->now);
		quic_server_flush(srv, net->now);
		quic_client_flush(st->cl, net->now);
	}
}

#define NPAR	32
#define NSEQ	40

static int
all_done(struct state *st)
{
	return st->done == NPAR + NSEQ;
}

static void
run_lossy(unsigned seed, unsigned loss, unsigned jitter, unsigned corrupt)
{
	static struct net net;
	struct qt_env env;
	struct quic_config scfg = { 0 };
	struct quic_client_config ccfg = { 0 };
	struct quic_server *srv;
	struct state st = { 0 };
	struct call par[NPAR], seq;
	int i, srv_freed = 0;

	memset(&net, 0, sizeof(net));
	net.rng = 0x9e3779b97f4a7c15ULL * (seed + 1);
	net.loss_pct = loss;
	net.jitter_ms = jitter;
	net.corrupt_pct = corrupt;
	qt_env_init(&env);
	scfg.host = "127.0.0.1";
	scfg.port = 4433;
	scfg.cert_file = env.cert;
	scfg.key_file = env.key;
	scfg.send = srv_send;
	scfg.send_arg = &net;
	assert_int_equal(quic_server_new(NULL, &scfg, env.rpc, &srv), 0);
	ccfg.host = "127.0.0.1";
	ccfg.port = 4433;
	ccfg.ca_file = env.ca;
	ccfg.send = cl_send;
	ccfg.send_arg = &net;
	assert_int_equal(quic_client_new(NULL, &ccfg, on_event, &st, &st.cl), 0);

	for (i = 0; i < NPAR; i++) {
		par[i].st = &st;
		par[i].idx = i;
		send_call(&st, &par[i]);
	}
	st.nseq = NSEQ - 1;
	seq.st = &st;
	seq.idx = 1000;
	send_call(&st, &seq);
	simulate(&net, srv, &st, 120000 * MS, all_done);

	print_message("seed %u loss %u%% corrupt %u%%: %u datagrams, %u dropped, %u reordered, "
	    "%u corrupted, %.1f ms simulated\n", seed, loss, corrupt, net.sent, net.dropped,
	    net.reordered, net.corrupted, (double)net.now / MS);
	assert_true(st.connected);
	assert_int_equal(st.done, NPAR + NSEQ);
	assert_int_equal(st.ok, NPAR + NSEQ);
	assert_false(st.closed);
	if (loss)
		assert_true(net.dropped > 0);
	if (jitter)
		assert_true(net.reordered > 0);
	if (corrupt)
		assert_true(net.corrupted > 0);
	assert_int_equal(quic_server_stats(srv)->requests, NPAR + NSEQ);

	quic_client_close(st.cl, freed_cb, &st);
	assert_true(st.freed);
	quic_server_close(srv, srv_closed, &srv_freed);
	assert_true(srv_freed);
	qt_env_done(&env);
}

static void
test_clean(void **state)
{
	run_lossy(0, 0, 0, 0);
}

static void
test_loss_and_reordering(void **state)
{
	unsigned seed;

	for (seed = 1; seed <= 5; seed++)
		run_lossy(seed, 10, 4, 0);
}

static void
test_heavy_loss(void **state)
{
	run_lossy(7, 30, 8, 0);
}

/* Corrupted datagrams (one flipped bit) are dropped like lost ones, never fatal. */
static void
test_corruption(void **state)
{
	unsigned seed;

	for (seed = 11; seed <= 15; seed++)
		run_lossy(seed, 0, 2, 10);
}

static int
is_closed(struct state *st)
{
	return st->closed;
}

static int
is_connected(struct state *st)
{
	return st->connected;
}

static void
test_blackout_idle_timeout(void **state)
{
	static struct net net;
	struct qt_env env;
	struct quic_config scfg = { 0 };
	struct quic_client_config ccfg = { 0 };
	struct quic_server *srv;
	struct state st = { 0 };
	int srv_freed = 0;
	uint64_t t0;

	memset(&net, 0, sizeof(net));
	net.rng = 42;
	qt_env_init(&env);
	scfg.host = "127.0.0.1";
	scfg.port = 4433;
	scfg.cert_file = env.cert;
	scfg.key_file = env.key;
	scfg.send = srv_send;
	scfg.send_arg = &net;
	scfg.idle_timeout_ms = 2000;
	assert_int_equal(quic_server_new(NULL, &scfg, env.rpc, &srv), 0);
	ccfg.host = "127.0.0.1";
	ccfg.port = 4433;
	ccfg.ca_file = env.ca;
	ccfg.send = cl_send;
	ccfg.send_arg = &net;
	ccfg.idle_timeout_ms = 2000;
	assert_int_equal(quic_client_new(NULL, &ccfg, on_event, &st, &st.cl), 0);
	simulate(&net, srv, &st, 10000 * MS, is_connected);
	assert_true(st.connected);

	/* Cut the wire: both sides must give up after the idle timeout, not before. */
	net.blackout = 1;
	t0 = net.now;
	simulate(&net, srv, &st, 60000 * MS, is_closed);
	assert_true(st.closed);
	assert_int_equal(st.close_err, -ETIMEDOUT);
	assert_true(net.now - t0 >= 2000 * MS);
	assert_true(net.now - t0 < 10000 * MS);
	while (quic_server_stats(srv)->conns_active) {
		uint64_t e = quic_server_expiry(srv);

		assert_true(e != UINT64_MAX);
		net.now = e > net.now ? e : net.now;
		quic_server_handle_expiry(srv, net.now);
	}
	assert_int_equal(quic_server_stats(srv)->conns_idle_closed, 1);

	quic_client_close(st.cl, freed_cb, &st);
	quic_server_close(srv, srv_closed, &srv_freed);
	assert_true(st.freed && srv_freed);
	qt_env_done(&env);
}

struct one {
	int done, status;
};

static void
on_one(void *arg, int status, const uint8_t *body, size_t len)
{
	struct one *o = arg;

	o->done = 1;
	o->status = status;
}

/* For simulate(): just run until the limit. */
static int
never(struct state *st)
{
	return 0;
}

/*
 * The daemon restarts while a worker is connected: the new instance, holding
 * the same reset secret, answers the worker's next packet with a stateless
 * reset, and the worker learns at once instead of after its idle timeout. With
 * another secret the reset is not recognised and only the idle timeout helps.
 */
static void
restart(int same_secret)
{
	static struct net net;
	static const uint8_t secret1[32] = "sandpit test reset secret one..";
	static const uint8_t secret2[32] = "sandpit test reset secret two..";
	struct qt_env env;
	struct quic_config scfg = { 0 };
	struct quic_client_config ccfg = { 0 };
	struct quic_server *a, *b;
	struct state st = { 0 };
	struct one o = { 0 };
	int freed = 0;
	uint64_t t0;

	memset(&net, 0, sizeof(net));
	net.rng = 7;
	qt_env_init(&env);
	scfg.host = "127.0.0.1";
	scfg.port = 4433;
	scfg.cert_file = env.cert;
	scfg.key_file = env.key;
	scfg.send = srv_send;
	scfg.send_arg = &net;
	scfg.reset_secret = secret1;
	scfg.reset_secret_len = sizeof(secret1);
	assert_int_equal(quic_server_new(NULL, &scfg, env.rpc, &a), 0);
	ccfg.host = "127.0.0.1";
	ccfg.port = 4433;
	ccfg.ca_file = env.ca;
	ccfg.send = cl_send;
	ccfg.send_arg = &net;
	ccfg.idle_timeout_ms = 3000;
	assert_int_equal(quic_client_new(NULL, &ccfg, on_event, &st, &st.cl), 0);
	assert_int_equal(quic_client_request(st.cl, "GET", "/v1/ping", NULL, NULL, 0, on_one,
	    &o), 0);
	simulate(&net, a, &st, 10000 * MS, is_connected);
	while (!o.done && net.now < 10000 * MS)
		simulate(&net, a, &st, net.now + 10 * MS, never);
	assert_int_equal(o.status, 200);
	/* Let the last ACKs settle, then crash: whatever A says on the way out is lost. */
	simulate(&net, a, &st, net.now + 50 * MS, never);
	net.blackout = 1;
	quic_server_close(a, srv_closed, &freed);
	assert_true(freed);
	net.n = 0;
	net.blackout = 0;

	scfg.reset_secret = same_secret ? secret1 : secret2;
	assert_int_equal(quic_server_new(NULL, &scfg, env.rpc, &b), 0);
	memset(&o, 0, sizeof(o));
	st.done = 0;
	assert_int_equal(quic_client_request(st.cl, "GET", "/v1/ping", NULL, NULL, 0, on_one,
	    &o), 0);
	t0 = net.now;
	simulate(&net, b, &st, net.now + 60000 * MS, is_closed);
	assert_true(st.closed);
	assert_true(o.done);
	assert_int_equal(o.status, -ECONNRESET);
	assert_true(quic_server_stats(b)->stateless_resets >= 1);
	assert_int_equal(quic_server_stats(b)->conns_accepted, 0);
	if (same_secret) {
		assert_int_equal(st.close_err, -ECONNRESET);
		assert_true(net.now - t0 < 500 * MS);
	} else {
		assert_int_equal(st.close_err, -ETIMEDOUT);
		assert_true(net.now - t0 >= 2900 * MS);
	}
	quic_client_close(st.cl, freed_cb, &st);
	freed = 0;
	quic_server_close(b, srv_closed, &freed);
	assert_true(st.freed && freed);
	qt_env_done(&env);
}

static void
test_restart_stateless_reset(void **state)
{
	restart(1);
}

static void
test_restart_other_secret(void **state)
{
	restart(0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean),
		cmocka_unit_test(test_loss_and_reordering),
		cmocka_unit_test(test_heavy_loss),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_blackout_idle_timeout),
		cmocka_unit_test(test_restart_stateless_reset),
		cmocka_unit_test(test_restart_other_secret),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

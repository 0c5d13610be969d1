/*
 * A stand-alone worker-channel server for interop tests: creates (or reuses) the
 * CA and server certificate in DIR, binds 127.0.0.1 on an ephemeral UDP port,
 * prints "PORT\n" on stdout, and serves until SIGTERM or SIGINT, then closes
 * gracefully and prints its counters on stderr.
 *   GET  /v1/ping    {"pong":true}
 *   POST /v1/echo    the JSON body back
 *   GET  /v1/stats   the server's counters
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "auth.h"
#include "cert.h"
#include "quic.h"
#include "rpc.h"

static struct quic_server *server;

static void
ping(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	rpc_reply_json(resp, 200, json_pack("{s:b}", "pong", 1));
}

static void
echo(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	rpc_reply_json(resp, 200, call->json ? json_incref(call->json) : json_object());
}

static void
stats(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	const struct quic_stats *st = quic_server_stats(server);

	rpc_reply_json(resp, 200, json_pack("{s:I, s:I, s:I}", "requests",
	    (json_int_t)st->requests, "conns_accepted", (json_int_t)st->conns_accepted,
	    "garbage", (json_int_t)st->garbage));
}

static void
closed(void *arg)
{
	const struct quic_stats *st = arg;

	fprintf(stderr, "closed: %llu requests, %llu connections\n",
	    (unsigned long long)st->requests, (unsigned long long)st->conns_accepted);
}

static void
on_signal(uv_signal_t *sig, int signum)
{
	static struct quic_stats last;

	last = *quic_server_stats(server);
	quic_server_close(server, closed, &last);
	uv_close((uv_handle_t *)sig, NULL);
}

int
main(int argc, char **argv)
{
	struct cert_options copt = { 0 };
	struct quic_config cfg = { 0 };
	char ca[4096], crt[4096], key[4096];
	struct rpc *rpc;
	uv_signal_t sigterm;
	uv_loop_t *loop = uv_default_loop();
	int rv;

	if (argc != 2) {
		fprintf(stderr, "usage: %s STATE-DIR\n", argv[0]);
		return 2;
	}
	copt.dir = argv[1];
	if ((rv = cert_ensure(&copt, NULL)) < 0) {
		fprintf(stderr, "cert: %s\n", strerror(-rv));
		return 1;
	}
	snprintf(ca, sizeof(ca), "%s/%s", argv[1], CERT_CA_FILE);
	snprintf(crt, sizeof(crt), "%s/%s", argv[1], CERT_SERVER_FILE);
	snprintf(key, sizeof(key), "%s/%s", argv[1], CERT_SERVER_KEY_FILE);
	rpc = rpc_new(NULL);
	rpc_add(rpc, "GET", "/v1/ping", NULL, RPC_ROUTE_PUBLIC, ping, NULL);
	rpc_add(rpc, "POST", "/v1/echo", NULL, RPC_ROUTE_PUBLIC, echo, NULL);
	rpc_add(rpc, "GET", "/v1/stats", NULL, RPC_ROUTE_PUBLIC, stats, NULL);
	cfg.host = "127.0.0.1";
	cfg.cert_file = crt;
	cfg.key_file = key;
	if ((rv = quic_server_new(loop, &cfg, rpc, &server)) < 0) {
		fprintf(stderr, "quic: %s\n", uv_strerror(rv));
		return 1;
	}
	printf("%u\n", quic_server_port(server));
	fflush(stdout);
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_run(loop, UV_RUN_DEFAULT);
	rv = uv_loop_close(loop);
	rpc_free(rpc);
	return rv == 0 ? 0 : 1;
}

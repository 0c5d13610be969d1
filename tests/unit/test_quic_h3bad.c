/*
 * Malformed HTTP/3 on a request stream. A bare ngtcp2 client (no nghttp3, so it
 * can send anything) completes a verified handshake with the server in manual
 * mode, then writes raw bytes on a bidirectional stream. The server must close
 * that connection with the right HTTP/3 error, count it, and keep serving.
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

#include <cmocka.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "quic.h"
#include "quic_testlib.h"

#define MS 1000000ULL

struct wire {
	uint8_t to_client[256][1500], to_server[256][1500];
	size_t lc[256], ls[256], nc, ns;
};

struct raw {
	ngtcp2_crypto_conn_ref ref;
	ngtcp2_conn *conn;
	gnutls_session_t tls;
	gnutls_certificate_credentials_t cred;
	struct sockaddr_in local, remote;
	struct wire *w;
	int handshake_done;
	uint64_t now;
};

static void
srv_send(void *arg, const struct sockaddr *remote, const uint8_t *data, size_t len)
{
	struct wire *w = arg;

	assert_true(w->nc < 256 && len <= 1500);
	memcpy(w->to_client[w->nc], data, len);
	w->lc[w->nc++] = len;
}

static void
rnd_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int
new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud)
{
	gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen);
	cid->datalen = cidlen;
	gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
	return 0;
}

static int
hs_done_cb(ngtcp2_conn *conn, void *ud)
{
	((struct raw *)ud)->handshake_done = 1;
	return 0;
}

static ngtcp2_conn *
get_conn(ngtcp2_crypto_conn_ref *ref)
{
	return ((struct raw *)ref->user_data)->conn;
}

static void
raw_init(struct raw *r, struct wire *w, const char *ca)
{
	static const ngtcp2_callbacks cb = {
		.client_initial = ngtcp2_crypto_client_initial_cb,
		.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
		.encrypt = ngtcp2_crypto_encrypt_cb,
		.decrypt = ngtcp2_crypto_decrypt_cb,
		.hp_mask = ngtcp2_crypto_hp_mask_cb,
		.recv_retry = ngtcp2_crypto_recv_retry_cb,
		.update_key = ngtcp2_crypto_update_key_cb,
		.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
		.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
		.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
		.version_negotiation = ngtcp2_crypto_version_negotiation_cb,
		.rand = rnd_cb,
		.get_new_connection_id = new_cid_cb,
		.handshake_completed = hs_done_cb,
	};
	static const gnutls_datum_t alpn = { (unsigned char *)"h3", 2 };
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_cid dcid, scid;
	ngtcp2_path path;

	memset(r, 0, sizeof(*r));
	r->w = w;
	r->local.sin_family = r->remote.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &r->local.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &r->remote.sin_addr);
	r->local.sin_port = htons(50001);
	r->remote.sin_port = htons(4433);
	gnutls_certificate_allocate_credentials(&r->cred);
	assert_true(gnutls_certificate_set_x509_trust_file(r->cred, ca, GNUTLS_X509_FMT_PEM) > 0);
	assert_int_equal(gnutls_init(&r->tls, GNUTLS_CLIENT), 0);
	assert_int_equal(ngtcp2_crypto_gnutls_configure_client_session(r->tls), 0);
	assert_int_equal(gnutls_priority_set_direct(r->tls, "%DISABLE_TLS13_COMPAT_MODE:NORMAL:"
	    "-VERS-ALL:+VERS-TLS1.3", NULL), 0);
	gnutls_credentials_set(r->tls, GNUTLS_CRD_CERTIFICATE, r->cred);
	gnutls_alpn_set_protocols(r->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
	gnutls_session_set_verify_cert(r->tls, "127.0.0.1", 0);
	r->ref.get_conn = get_conn;
	r->ref.user_data = r;
	gnutls_session_set_ptr(r->tls, &r->ref);
	dcid.datalen = scid.datalen = 18;
	gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, 18);
	gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, 18);
	ngtcp2_settings_default(&settings);
	settings.initial_ts = 0;
	settings.initial_rtt = 5 * MS;
	ngtcp2_transport_params_default(&params);
	params.initial_max_data = 1 << 20;
	params.initial_max_stream_data_bidi_local = 1 << 18;
	params.initial_max_stream_data_uni = 1 << 18;
	params.initial_max_streams_uni = 3;
	params.max_idle_timeout = 5000 * MS;
	path.local.addr = (struct sockaddr *)&r->local;
	path.local.addrlen = sizeof(r->local);
	path.remote.addr = (struct sockaddr *)&r->remote;
	path.remote.addrlen = sizeof(r->remote);
	path.user_data = NULL;
	assert_int_equal(ngtcp2_conn_client_new(&r->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
	    &cb, &settings, &params, NULL, r), 0);
	ngtcp2_conn_set_tls_native_handle(r->conn, r->tls);
}

static void
raw_free(struct raw *r)
{
	ngtcp2_conn_del(r->conn);
	gnutls_deinit(r->tls);
	gnutls_certificate_free_credentials(r->cred);
}

/* Write everything the client has, optionally data on stream sid with FIN. */
static void
raw_write(struct raw *r, int64_t sid, const uint8_t *data, size_t len)
{
	ngtcp2_path_storage ps;
	ngtcp2_vec vec = { (uint8_t *)data, len };
	int sent = 0;

	ngtcp2_path_storage_zero(&ps);
	for (;;) {
		ngtcp2_ssize n, nd = -1;

		assert_true(r->w->ns < 256);
		n = ngtcp2_conn_writev_stream(r->conn, &ps.path, NULL, r->w->to_server[r->w->ns],
		    1500, &nd, NGTCP2_WRITE_STREAM_FLAG_FIN, sent ? -1 : sid, &vec,
		    sid >= 0 && !sent ? 1 : 0, r->now);
		if (n <= 0)
			break;
		if (nd >= 0)
			sent = 1;
		r->w->ls[r->w->ns++] = (size_t)n;
	}
}

/* Exchange until quiet; returns the client's read_pkt error (0 = still open). */
static int
pump(struct raw *r, struct quic_server *srv, int64_t sid, const uint8_t *data, size_t len)
{
	ngtcp2_path path;
	ngtcp2_pkt_info pi = { 0 };
	int round, rv = 0;
	size_t i;

	path.local.addr = (struct sockaddr *)&r->local;
	path.local.addrlen = sizeof(r->local);
	path.remote.addr = (struct sockaddr *)&r->remote;
	path.remote.addrlen = sizeof(r->remote);
	path.user_data = NULL;
	raw_write(r, sid, data, len);
	for (round = 0; round < 50; round++) {
		r->now += 1 * MS;
		for (i = 0; i < r->w->ns; i++)
			quic_server_input(srv, (struct sockaddr *)&r->local, sizeof(r->local),
			    r->w->to_server[i], r->w->ls[i], r->now);
		r->w->ns = 0;
		quic_server_flush(srv, r->now);
		if (quic_server_expiry(srv) <= r->now)
			quic_server_handle_expiry(srv, r->now);
		r->now += 1 * MS;
		for (i = 0; i < r->w->nc && rv == 0; i++)
			rv = ngtcp2_conn_read_pkt(r->conn, &path, &pi, r->w->to_client[i], r->w->lc[i],
			    r->now);
		r->w->nc = 0;
		if (rv != 0)
			return rv;
		if (ngtcp2_conn_get_expiry(r->conn) <= r->now)
			ngtcp2_conn_handle_expiry(r->conn, r->now);
		raw_write(r, -1, NULL, 0);
	}
	return 0;
}

static void
closed_cb(void *arg)
{
	*(int *)arg = 1;
}

struct bad {
	const char *name;
	uint8_t bytes[16];
	size_t len;
	uint64_t want;		/* the H3 error the server must close with */
};

static void
test_malformed_request_streams(void **state)
{
	static struct wire w;
	static const struct bad cases[] = {
		/* DATA before HEADERS */
		{ "data-first", { 0x00, 0x03, 'a', 'b', 'c' }, 5, NGHTTP3_H3_FRAME_UNEXPECTED },
		/* HEADERS whose QPACK block is garbage */
		{ "bad-qpack", { 0x01, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff }, 7,
		    NGHTTP3_QPACK_DECOMPRESSION_FAILED },
		/* an HTTP/2-only frame type (0x02, PRIORITY) */
		{ "h2-frame", { 0x02, 0x01, 0x00 }, 3, NGHTTP3_H3_FRAME_UNEXPECTED },
		/* a control-stream frame (SETTINGS) on a request stream */
		{ "settings", { 0x04, 0x00 }, 2, NGHTTP3_H3_FRAME_UNEXPECTED },
	};
	struct quic_config cfg = { 0 };
	struct quic_server *srv;
	struct qt_env env;
	size_t i;
	int freed = 0;

	qt_env_init(&env);
	cfg.host = "127.0.0.1";
	cfg.port = 4433;
	cfg.cert_file = env.cert;
	cfg.key_file = env.key;
	cfg.send = srv_send;
	cfg.send_arg = &w;
	assert_int_equal(quic_server_new(NULL, &cfg, env.rpc, &srv), 0);
	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct raw r;
		ngtcp2_connection_close_error ccerr;
		int64_t sid;
		int rv;

		memset(&w, 0, sizeof(w));
		raw_init(&r, &w, env.ca);
		assert_int_equal(pump(&r, srv, -1, NULL, 0), 0);
		assert_true(r.handshake_done);
		assert_int_equal(ngtcp2_conn_open_bidi_stream(r.conn, &sid, NULL), 0);
		rv = pump(&r, srv, sid, cases[i].bytes, cases[i].len);
		print_message("%s: read_pkt %d\n", cases[i].name, rv);
		assert_int_equal(rv, NGTCP2_ERR_DRAINING);
		ngtcp2_conn_get_connection_close_error(r.conn, &ccerr);
		assert_int_equal(ccerr.type, NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION);
		assert_int_equal(ccerr.error_code, cases[i].want);
		assert_int_equal(quic_server_stats(srv)->conns_failed, i + 1);
		assert_int_equal(env.handler_calls, 0);
		raw_free(&r);
	}
	/* No request reached the router, and the server still accepts connections. */
	assert_int_equal(quic_server_stats(srv)->requests, 0);
	{
		struct raw r;

		memset(&w, 0, sizeof(w));
		raw_init(&r, &w, env.ca);
		assert_int_equal(pump(&r, srv, -1, NULL, 0), 0);
		assert_true(r.handshake_done);
		raw_free(&r);
	}
	assert_int_equal(quic_server_stats(srv)->conns_accepted, 5);
	quic_server_close(srv, closed_cb, &freed);
	assert_true(freed);
	qt_env_done(&env);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_malformed_request_streams),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * quic_client: one verified HTTP/3 connection to sandpitd. It owns its socket,
 * timer, TLS session and request buffers; it never logs and never calls back
 * from inside quic_client_request(). Every allocation a server can cause (the
 * response body) is bounded by max_response_bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "sandpit/error.h"
#include "quic_client.h"

#define QC_TX_BUF	1500
#define QC_RX_BUF	(16 * 65536)
#define QC_MAX_PENDING_SENDS	256

static const char qc_priority[] =
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:"
    "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:"
    "+GROUP-SECP256R1:+GROUP-SECP384R1";

struct qc_req {
	struct quic_client *cl;
	int64_t sid;
	char *method, *path, *auth;
	uint8_t *body;
	size_t body_len;
	int body_given;
	nghttp3_nv nv[5];
	size_t nnv;
	int status;
	uint8_t *rbody;
	size_t rlen, rcap;
	int failed;			/* response too large or malformed */
	quic_client_response_fn cb;
	void *arg;
	struct qc_req *prev, *next;
};

struct quic_client {
	uv_loop_t *loop;
	struct quic_client_config cfg;
	char *host, *server_name, *alpn;
	quic_client_event_fn ev;
	void *ev_arg;
	ngtcp2_crypto_conn_ref ref;
	ngtcp2_conn *conn;
	gnutls_session_t tls;
	gnutls_certificate_credentials_t cred;
	nghttp3_conn *h3;
	struct sockaddr_storage local, remote;
	socklen_t locallen, remotelen;
	uv_udp_t udp;
	uv_timer_t timer;
	uv_check_t check;
	uint8_t *rbuf;
	int connected, closed, handshake_done, dirty, in_cb, handles;
	size_t pending_sends;
	int close_requested;
	void (*close_cb)(void *);
	void *close_arg;
	struct qc_req *queue, *queue_tail;	/* not yet on a stream */
	size_t nqueued;
	struct qc_req *active;
	size_t nactive, nanswered;	/* on streams; of which answered already */
	uint64_t deadline;
	uint64_t last_ts;		/* manual mode: the caller's latest clock */
};

static void qc_write(struct quic_client *cl, uint64_t ts);
static void qc_finish_close(struct quic_client *cl);
static void qc_timer_cb(uv_timer_t *t);

static uint64_t
qc_now(void)
{
	return uv_hrtime();
}

static void
qc_req_free(struct qc_req *r)
{
	free(r->method);
	free(r->path);
	free(r->auth);
	free(r->body);
	free(r->rbody);
	free(r);
}

static void
qc_active_unlink(struct quic_client *cl, struct qc_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		cl->active = r->next;
	if (r->next)
		r->next->prev = r->prev;
	cl->nactive--;
}

/* Complete r with status (or a negative error) and free it. r must be unlinked. */
static void
qc_req_complete(struct qc_req *r, int status)
{
	if (r->cb)
		r->cb(r->arg, status, r->rbody, status >= 0 ? r->rlen : 0);
	qc_req_free(r);
}

struct qc_send_req {
	uv_udp_send_t req;
	struct quic_client *cl;
	uint8_t data[];
};

static void
qc_send_done(uv_udp_send_t *req, int status)
{
	struct qc_send_req *sr = (struct qc_send_req *)req;

	sr->cl->pending_sends--;
	free(sr);
}

static void
qc_send(struct quic_client *cl, const uint8_t *data, size_t len)
{
	struct qc_send_req *sr;
	uv_buf_t buf;

	if (!cl->loop) {
		cl->cfg.send(cl->cfg.send_arg, data, len);
		return;
	}
	buf = uv_buf_init((char *)data, (unsigned)len);
	if (uv_udp_try_send(&cl->udp, &buf, 1, NULL) != UV_EAGAIN)
		return;
	/* The kernel (or libuv's queue) is full: queue a copy, up to a bound; beyond
	 * it the datagram is lost and QUIC's loss recovery resends it. */
	if (cl->pending_sends >= QC_MAX_PENDING_SENDS || !(sr = malloc(sizeof(*sr) + len)))
		return;
	sr->cl = cl;
	memcpy(sr->data, data, len);
	buf = uv_buf_init((char *)sr->data, (unsigned)len);
	if (uv_udp_send(&sr->req, &cl->udp, &buf, 1, NULL, qc_send_done) < 0) {
		free(sr);
		return;
	}
	cl->pending_sends++;
}

static void
qc_arm(struct quic_client *cl)
{
	uint64_t now, ms;

	cl->deadline = cl->conn && !cl->closed ? ngtcp2_conn_get_expiry(cl->conn) : UINT64_MAX;
	if (!cl->loop || cl->handles == 0)
		return;
	if (cl->deadline == UINT64_MAX) {
		uv_timer_stop(&cl->timer);
		return;
	}
	now = qc_now();
	ms = cl->deadline > now ? (cl->deadline - now + 999999) / 1000000 : 0;
	uv_update_time(cl->loop);
	uv_timer_start(&cl->timer, qc_timer_cb, ms, 0);
}

/* The connection is over: fail every request, report once. */
static void
qc_set_closed(struct quic_client *cl, int err)
{
	struct qc_req *r;

	if (cl->closed)
		return;
	cl->closed = 1;
	cl->in_cb++;
	while ((r = cl->queue)) {
		cl->queue = r->next;
		cl->nqueued--;
		qc_req_complete(r, -ECONNRESET);
	}
	cl->queue_tail = NULL;
	while ((r = cl->active)) {
		qc_active_unlink(cl, r);
		qc_req_complete(r, -ECONNRESET);
	}
	cl->nanswered = 0;
	if (cl->ev)
		cl->ev(cl->ev_arg, QUIC_CLIENT_CLOSED, err);
	cl->in_cb--;
	if (cl->loop && cl->handles)
		uv_timer_stop(&cl->timer);
}

/* nghttp3 */

static int
qc_h3_recv_header(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
    nghttp3_rcbuf *value, uint8_t flags, void *ud, void *sud)
{
	struct qc_req *r = sud;
	nghttp3_vec v = nghttp3_rcbuf_get_buf(value);

	if (!r || token != NGHTTP3_QPACK_TOKEN__STATUS)
		return 0;
	if (v.len != 3 || v.base[0] < '1' || v.base[0] > '5') {
		r->failed = SP_EPROTO;
		return 0;
	}
	r->status = (v.base[0] - '0') * 100 + (v.base[1] - '0') * 10 + (v.base[2] - '0');
	return 0;
}

static int
qc_h3_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *ud,
    void *sud)
{
	struct quic_client *cl = ud;
	struct qc_req *r = sud;

	ngtcp2_conn_extend_max_stream_offset(cl->conn, sid, len);
	ngtcp2_conn_extend_max_offset(cl->conn, len);
	if (!r || r->failed || len == 0)
		return 0;
	if (r->rlen + len > cl->cfg.max_response_bytes) {
		r->failed = -EMSGSIZE;
		return 0;
	}
	if (r->rlen + len > r->rcap) {
		size_t cap = r->rcap ? r->rcap : 256;
		uint8_t *p;

		while (cap < r->rlen + len)
			cap *= 2;
		p = realloc(r->rbody, cap);
		if (!p) {
			r->failed = -ENOMEM;
			return 0;
		}
		r->rbody = p;
		r->rcap = cap;
	}
	memcpy(r->rbody + r->rlen, data, len);
	r->rlen += len;
	return 0;
}

static int
qc_h3_deferred_consume(nghttp3_conn *h3, int64_t sid, size_t consumed, void *ud, void *sud)
{
	struct quic_client *cl = ud;

	ngtcp2_conn_extend_max_stream_offset(cl->conn, sid, consumed);
	ngtcp2_conn_extend_max_offset(cl->conn, consumed);
	return 0;
}

static int
qc_h3_end_stream(nghttp3_conn *h3, int64_t sid, void *ud, void *sud)
{
	struct quic_client *cl = ud;
	struct qc_req *r = sud;

	if (!r || !r->cb)
		return 0;
	/* Answer now, but keep the request: its body may still need resending until
	 * the stream closes (the server can answer before acknowledging it). */
	r->cb(r->arg, r->failed ? r->failed : r->status ? r->status : SP_EPROTO, r->rbody,
	    r->failed ? 0 : r->rlen);
	r->cb = NULL;
	cl->nanswered++;
	free(r->rbody);
	r->rbody = NULL;
	r->rlen = r->rcap = 0;
	return 0;
}

static int
qc_h3_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	struct quic_client *cl = ud;
	struct qc_req *r = sud;

	if (r) {
		if (!r->cb)
			cl->nanswered--;
		qc_active_unlink(cl, r);
		qc_req_complete(r, -ECONNRESET);
	}
	return 0;
}

static int
qc_h3_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	struct quic_client *cl = ud;

	ngtcp2_conn_shutdown_stream_read(cl->conn, sid, code);
	return 0;
}

static int
qc_h3_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	struct quic_client *cl = ud;

	ngtcp2_conn_shutdown_stream_write(cl->conn, sid, code);
	return 0;
}

static nghttp3_ssize
qc_h3_read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
    uint32_t *pflags, void *ud, void *sud)
{
	struct qc_req *r = sud;

	*pflags |= NGHTTP3_DATA_FLAG_EOF;
	if (!r || r->body_given || r->body_len == 0 || veccnt == 0)
		return 0;
	r->body_given = 1;
	vec[0].base = r->body;
	vec[0].len = r->body_len;
	return 1;
}

static int
qc_setup_h3(struct quic_client *cl)
{
	nghttp3_callbacks cb = {
		.recv_header = qc_h3_recv_header,
		.recv_data = qc_h3_recv_data,
		.deferred_consume = qc_h3_deferred_consume,
		.end_stream = qc_h3_end_stream,
		.stream_close = qc_h3_stream_close,
		.stop_sending = qc_h3_stop_sending,
		.reset_stream = qc_h3_reset_stream,
	};
	nghttp3_settings settings;
	int64_t ctrl, qenc, qdec;
	int rv;

	nghttp3_settings_default(&settings);
	if ((rv = nghttp3_conn_client_new(&cl->h3, &cb, &settings, NULL, cl)) != 0)
		return rv;
	if (ngtcp2_conn_get_max_local_streams_uni(cl->conn) < 3)
		return NGHTTP3_ERR_H3_STREAM_CREATION_ERROR;
	if (ngtcp2_conn_open_uni_stream(cl->conn, &ctrl, NULL) != 0 ||
	    ngtcp2_conn_open_uni_stream(cl->conn, &qenc, NULL) != 0 ||
	    ngtcp2_conn_open_uni_stream(cl->conn, &qdec, NULL) != 0)
		return NGHTTP3_ERR_H3_STREAM_CREATION_ERROR;
	if ((rv = nghttp3_conn_bind_control_stream(cl->h3, ctrl)) != 0 ||
	    (rv = nghttp3_conn_bind_qpack_streams(cl->h3, qenc, qdec)) != 0)
		return rv;
	return 0;
}

/* Put queued requests on streams while the server gives credit. */
static int
qc_open_streams(struct quic_client *cl)
{
	while (cl->queue && ngtcp2_conn_get_streams_bidi_left(cl->conn) > 0) {
		struct qc_req *r = cl->queue;
		nghttp3_data_reader dr = { .read_data = qc_h3_read_data };
		int rv;

		if ((rv = ngtcp2_conn_open_bidi_stream(cl->conn, &r->sid, r)) != 0)
			return 0;	/* no credit after all: wait */
		cl->queue = r->next;
		if (!cl->queue)
			cl->queue_tail = NULL;
		cl->nqueued--;
		r->prev = NULL;
		r->next = cl->active;
		if (cl->active)
			cl->active->prev = r;
		cl->active = r;
		cl->nactive++;
		rv = nghttp3_conn_submit_request(cl->h3, r->sid, r->nv, r->nnv,
		    r->body_len ? &dr : NULL, r);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* ngtcp2 */

static void
qc_rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	if (gnutls_rnd(GNUTLS_RND_RANDOM, dest, len) < 0)
		abort();
}

static int
qc_get_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
    void *ud)
{
	if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) < 0 ||
	    gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) < 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	cid->datalen = cidlen;
	return 0;
}

static int
qc_handshake_completed_cb(ngtcp2_conn *conn, void *ud)
{
	struct quic_client *cl = ud;

	cl->handshake_done = 1;
	return 0;
}

static int
qc_recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
    const uint8_t *data, size_t len, void *ud, void *sud)
{
	struct quic_client *cl = ud;
	nghttp3_ssize n;

	if (!cl->h3)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	n = nghttp3_conn_read_stream(cl->h3, sid, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
	if (n < 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	ngtcp2_conn_extend_max_stream_offset(conn, sid, (uint64_t)n);
	ngtcp2_conn_extend_max_offset(conn, (uint64_t)n);
	return 0;
}

static int
qc_acked_offset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t datalen,
    void *ud, void *sud)
{
	struct quic_client *cl = ud;

	if (cl->h3 && nghttp3_conn_add_ack_offset(cl->h3, sid, datalen) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
qc_stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code, void *ud,
    void *sud)
{
	struct quic_client *cl = ud;
	int rv;

	if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
		code = NGHTTP3_H3_NO_ERROR;
	if (cl->h3) {
		rv = nghttp3_conn_close_stream(cl->h3, sid, code);
		if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND)
			return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
qc_stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t code,
    void *ud, void *sud)
{
	struct quic_client *cl = ud;

	if (cl->h3 && nghttp3_conn_shutdown_stream_read(cl->h3, sid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
qc_stream_stop_sending_cb(ngtcp2_conn *conn, int64_t sid, uint64_t code, void *ud,
    void *sud)
{
	struct quic_client *cl = ud;

	if (cl->h3 && nghttp3_conn_shutdown_stream_read(cl->h3, sid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
qc_extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max_data, void *ud,
    void *sud)
{
	struct quic_client *cl = ud;

	if (cl->h3 && nghttp3_conn_unblock_stream(cl->h3, sid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
qc_extend_max_local_bidi_cb(ngtcp2_conn *conn, uint64_t max_streams, void *ud)
{
	struct quic_client *cl = ud;

	cl->dirty = 1;		/* queued requests may go out now */
	return 0;
}

static ngtcp2_conn *
qc_get_conn(ngtcp2_crypto_conn_ref *ref)
{
	struct quic_client *cl = ref->user_data;

	return cl->conn;
}

static int
qc_map_error(int rv)
{
	switch (rv) {
	case NGTCP2_ERR_CRYPTO:
		return -EACCES;
	case NGTCP2_ERR_DRAINING:
	case NGTCP2_ERR_CLOSING:
	case NGTCP2_ERR_DROP_CONN:
		return -ECONNRESET;
	case NGTCP2_ERR_IDLE_CLOSE:
	case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
		return -ETIMEDOUT;
	}
	return SP_EPROTO;
}

/* Send CONNECTION_CLOSE with ccerr if the connection can still say something. */
static void
qc_send_close(struct quic_client *cl, const ngtcp2_connection_close_error *ccerr,
    uint64_t ts)
{
	uint8_t buf[QC_TX_BUF];
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ssize n;

	if (!cl->conn || ngtcp2_conn_is_in_closing_period(cl->conn) ||
	    ngtcp2_conn_is_in_draining_period(cl->conn))
		return;
	ngtcp2_path_storage_zero(&ps);
	n = ngtcp2_conn_write_connection_close(cl->conn, &ps.path, &pi, buf, sizeof(buf),
	    ccerr, ts);
	if (n > 0)
		qc_send(cl, buf, (size_t)n);
}

static void
qc_fail(struct quic_client *cl, int rv, uint64_t ts)
{
	ngtcp2_connection_close_error ccerr;

	if (rv == NGTCP2_ERR_CRYPTO)
		ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr,
		    ngtcp2_conn_get_tls_alert(cl->conn), NULL, 0);
	else
		ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, rv, NULL, 0);
	if (rv != NGTCP2_ERR_DRAINING && rv != NGTCP2_ERR_IDLE_CLOSE &&
	    rv != NGTCP2_ERR_DROP_CONN && rv != NGTCP2_ERR_HANDSHAKE_TIMEOUT)
		qc_send_close(cl, &ccerr, ts);
	if (rv == NGTCP2_ERR_DRAINING) {
		/* The server closed: a TLS alert (0x1XX) means it refused us. */
		ngtcp2_conn_get_connection_close_error(cl->conn, &ccerr);
		if (ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
		    (ccerr.error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR) {
			qc_set_closed(cl, -EACCES);
			return;
		}
	}
	qc_set_closed(cl, qc_map_error(rv));
}

static void
qc_write(struct quic_client *cl, uint64_t ts)
{
	uint8_t buf[QC_TX_BUF];
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	int rv;

	cl->dirty = 0;
	if (cl->closed)
		return;
	if (cl->handshake_done && !cl->connected) {
		if ((rv = qc_setup_h3(cl)) != 0) {
			qc_fail(cl, NGTCP2_ERR_PROTO, ts);
			return;
		}
		cl->connected = 1;
		cl->in_cb++;
		if (cl->ev)
			cl->ev(cl->ev_arg, QUIC_CLIENT_CONNECTED, 0);
		cl->in_cb--;
		if (cl->closed)
			return;
	}
	if (cl->connected && qc_open_streams(cl) != 0) {
		qc_fail(cl, NGTCP2_ERR_PROTO, ts);
		return;
	}
	ngtcp2_path_storage_zero(&ps);
	for (;;) {
		nghttp3_vec vec[16];
		nghttp3_ssize nvec = 0;
		ngtcp2_ssize n, ndatalen = -1;
		int64_t sid = -1;
		int fin = 0;
		uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;

		if (cl->h3 && ngtcp2_conn_get_max_data_left(cl->conn)) {
			nvec = nghttp3_conn_writev_stream(cl->h3, &sid, &fin, vec, 16);
			if (nvec < 0) {
				qc_fail(cl, NGTCP2_ERR_PROTO, ts);
				return;
			}
		}
		if (fin)
			flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
		n = ngtcp2_conn_writev_stream(cl->conn, &ps.path, &pi, buf, sizeof(buf), &ndatalen,
		    flags, sid, (const ngtcp2_vec *)vec, (size_t)nvec, ts);
		if (n < 0) {
			if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
				nghttp3_conn_block_stream(cl->h3, sid);
				continue;
			}
			if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
				nghttp3_conn_shutdown_stream_write(cl->h3, sid);
				continue;
			}
			if (n == NGTCP2_ERR_WRITE_MORE) {
				if (nghttp3_conn_add_write_offset(cl->h3, sid, (size_t)ndatalen) != 0) {
					qc_fail(cl, NGTCP2_ERR_PROTO, ts);
					return;
				}
				continue;
			}
			qc_fail(cl, (int)n, ts);
			return;
		}
		if (ndatalen >= 0 && sid >= 0 &&
		    nghttp3_conn_add_write_offset(cl->h3, sid, (size_t)ndatalen) != 0) {
			qc_fail(cl, NGTCP2_ERR_PROTO, ts);
			return;
		}
		if (n == 0)
			break;
		qc_send(cl, buf, (size_t)n);
	}
	qc_arm(cl);
}

/* After any processing: the deferred close, or the write pass. */
static void
qc_after(struct quic_client *cl, uint64_t ts)
{
	if (cl->in_cb)
		return;
	cl->last_ts = ts;
	if (!cl->close_requested)
		qc_write(cl, ts);
	if (cl->close_requested && !cl->in_cb)
		qc_finish_close(cl);
}

void
quic_client_input(struct quic_client *cl, const uint8_t *data, size_t len, uint64_t ts)
{
	ngtcp2_path path;
	ngtcp2_pkt_info pi = { 0 };
	int rv;

	if (cl->closed || cl->close_requested)
		return;
	path.local.addr = (struct sockaddr *)&cl->local;
	path.local.addrlen = cl->locallen;
	path.remote.addr = (struct sockaddr *)&cl->remote;
	path.remote.addrlen = cl->remotelen;
	path.user_data = NULL;
	cl->last_ts = ts;
	cl->in_cb++;
	rv = ngtcp2_conn_read_pkt(cl->conn, &path, &pi, data, len, ts);
	cl->in_cb--;
	if (rv != 0) {
		cl->in_cb++;
		qc_fail(cl, rv, ts);
		cl->in_cb--;
	} else {
		cl->dirty = 1;
	}
	if (cl->close_requested && !cl->in_cb)
		qc_finish_close(cl);
}

void
quic_client_flush(struct quic_client *cl, uint64_t ts)
{
	if (cl->dirty || cl->close_requested)
		qc_after(cl, ts);
}

uint64_t
quic_client_expiry(const struct quic_client *cl)
{
	return cl->closed ? UINT64_MAX : cl->deadline;
}

void
quic_client_handle_expiry(struct quic_client *cl, uint64_t ts)
{
	int rv;

	if (cl->closed || cl->close_requested)
		return;
	cl->last_ts = ts;
	cl->in_cb++;
	rv = ngtcp2_conn_handle_expiry(cl->conn, ts);
	if (rv != 0)
		qc_fail(cl, rv, ts);
	cl->in_cb--;
	cl->dirty = 1;
	qc_after(cl, ts);
}

/* libuv glue */

static void
qc_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct quic_client *cl = h->data;

	*buf = uv_buf_init((char *)cl->rbuf, QC_RX_BUF);
}

static void
qc_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
    unsigned flags)
{
	struct quic_client *cl = h->data;

	if (nread <= 0 || !addr)
		return;
	quic_client_input(cl, (const uint8_t *)buf->base, (size_t)nread, qc_now());
}

static void
qc_check_cb(uv_check_t *h)
{
	struct quic_client *cl = h->data;

	if (cl->dirty)
		qc_after(cl, qc_now());
}

static void
qc_timer_cb(uv_timer_t *t)
{
	struct quic_client *cl = t->data;

	quic_client_handle_expiry(cl, qc_now());
}

static int
qc_parse_addr(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

static int
qc_is_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int
qc_tls_init(struct quic_client *cl)
{
	gnutls_datum_t alpn = { (unsigned char *)cl->alpn, (unsigned)strlen(cl->alpn) };

	if (gnutls_certificate_allocate_credentials(&cl->cred) < 0)
		return -ENOMEM;
	/* Only our CA: a certificate from any other issuer fails the handshake. */
	if (gnutls_certificate_set_x509_trust_file(cl->cred, cl->cfg.ca_file,
	    GNUTLS_X509_FMT_PEM) <= 0)
		return -EIO;
	if (gnutls_init(&cl->tls, GNUTLS_CLIENT) < 0) {
		cl->tls = NULL;
		return -ENOMEM;
	}
	if (ngtcp2_crypto_gnutls_configure_client_session(cl->tls) != 0 ||
	    gnutls_priority_set_direct(cl->tls, qc_priority, NULL) < 0 ||
	    gnutls_credentials_set(cl->tls, GNUTLS_CRD_CERTIFICATE, cl->cred) < 0 ||
	    gnutls_alpn_set_protocols(cl->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) < 0)
		return -EIO;
	if (!qc_is_ip(cl->server_name) &&
	    gnutls_server_name_set(cl->tls, GNUTLS_NAME_DNS, cl->server_name,
	    strlen(cl->server_name)) < 0)
		return -EIO;
	gnutls_session_set_verify_cert(cl->tls, cl->server_name, 0);
	cl->ref.get_conn = qc_get_conn;
	cl->ref.user_data = cl;
	gnutls_session_set_ptr(cl->tls, &cl->ref);
	return 0;
}

static int
qc_quic_init(struct quic_client *cl, uint64_t ts)
{
	static const ngtcp2_callbacks callbacks = {
		.client_initial = ngtcp2_crypto_client_initial_cb,
		.recv_retry = ngtcp2_crypto_recv_retry_cb,
		.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
		.encrypt = ngtcp2_crypto_encrypt_cb,
		.decrypt = ngtcp2_crypto_decrypt_cb,
		.hp_mask = ngtcp2_crypto_hp_mask_cb,
		.update_key = ngtcp2_crypto_update_key_cb,
		.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
		.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
		.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
		.version_negotiation = ngtcp2_crypto_version_negotiation_cb,
		.rand = qc_rand_cb,
		.get_new_connection_id = qc_get_new_cid_cb,
		.handshake_completed = qc_handshake_completed_cb,
		.recv_stream_data = qc_recv_stream_data_cb,
		.acked_stream_data_offset = qc_acked_offset_cb,
		.stream_close = qc_stream_close_cb,
		.stream_reset = qc_stream_reset_cb,
		.stream_stop_sending = qc_stream_stop_sending_cb,
		.extend_max_stream_data = qc_extend_max_stream_data_cb,
		.extend_max_local_streams_bidi = qc_extend_max_local_bidi_cb,
	};
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_cid dcid, scid;
	ngtcp2_path path;

	dcid.datalen = 18;
	scid.datalen = 18;
	if (gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, dcid.datalen) < 0 ||
	    gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) < 0)
		return -EIO;
	ngtcp2_settings_default(&settings);
	settings.initial_ts = ts;
	settings.initial_rtt = cl->cfg.initial_rtt_ms * NGTCP2_MILLISECONDS;
	ngtcp2_transport_params_default(&params);
	params.initial_max_stream_data_bidi_local = 1024 * 1024;
	params.initial_max_stream_data_bidi_remote = 256 * 1024;
	params.initial_max_stream_data_uni = 256 * 1024;
	params.initial_max_data = 8 * 1024 * 1024;
	params.initial_max_streams_bidi = 0;	/* the server opens none */
	params.initial_max_streams_uni = 3;
	params.max_idle_timeout = cl->cfg.idle_timeout_ms * NGTCP2_MILLISECONDS;
	params.active_connection_id_limit = 7;
	path.local.addr = (struct sockaddr *)&cl->local;
	path.local.addrlen = cl->locallen;
	path.remote.addr = (struct sockaddr *)&cl->remote;
	path.remote.addrlen = cl->remotelen;
	path.user_data = NULL;
	if (ngtcp2_conn_client_new(&cl->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
	    &callbacks, &settings, &params, NULL, cl) != 0)
		return -ENOMEM;
	ngtcp2_conn_set_tls_native_handle(cl->conn, cl->tls);
	return 0;
}

static void
qc_free(struct quic_client *cl)
{
	void (*cb)(void *) = cl->close_cb;
	void *arg = cl->close_arg;

	nghttp3_conn_del(cl->h3);
	ngtcp2_conn_del(cl->conn);
	if (cl->tls)
		gnutls_deinit(cl->tls);
	if (cl->cred)
		gnutls_certificate_free_credentials(cl->cred);
	free(cl->rbuf);
	free(cl->host);
	free(cl->server_name);
	free(cl->alpn);
	free(cl);
	if (cb)
		cb(arg);
}

static void
qc_handle_closed(uv_handle_t *h)
{
	struct quic_client *cl = h->data;

	if (--cl->handles == 0)
		qc_free(cl);
}

static void
qc_close_handles(struct quic_client *cl)
{
	if (!cl->loop || cl->handles == 0) {
		qc_free(cl);
		return;
	}
	uv_close((uv_handle_t *)&cl->udp, qc_handle_closed);
	uv_close((uv_handle_t *)&cl->timer, qc_handle_closed);
	uv_close((uv_handle_t *)&cl->check, qc_handle_closed);
}

int
quic_client_new(uv_loop_t *loop, const struct quic_client_config *config,
    quic_client_event_fn ev, void *arg, struct quic_client **ret_client)
{
	struct quic_client *cl;
	int rv;

	if (!config || !config->host || !config->ca_file || (!loop && !config->send))
		return -EINVAL;
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	cl->loop = loop;
	cl->cfg = *config;
	cl->ev = ev;
	cl->ev_arg = arg;
	cl->deadline = UINT64_MAX;
	if (!cl->cfg.initial_rtt_ms)
		cl->cfg.initial_rtt_ms = 5;
	if (!cl->cfg.idle_timeout_ms)
		cl->cfg.idle_timeout_ms = 30000;
	if (!cl->cfg.max_response_bytes)
		cl->cfg.max_response_bytes = 4 * 1024 * 1024;
	if (!cl->cfg.max_queued)
		cl->cfg.max_queued = 1024;
	cl->host = strdup(config->host);
	cl->server_name = strdup(config->server_name ? config->server_name : config->host);
	cl->alpn = strdup(config->alpn ? config->alpn : "h3");
	if (!cl->host || !cl->server_name || !cl->alpn) {
		rv = -ENOMEM;
		goto out_free;
	}
	if ((rv = qc_parse_addr(config->host, config->port, &cl->remote, &cl->remotelen)) < 0)
		goto out_free;
	if (loop) {
		cl->rbuf = malloc(QC_RX_BUF);
		if (!cl->rbuf) {
			rv = -ENOMEM;
			goto out_free;
		}
		if ((rv = uv_udp_init_ex(loop, &cl->udp, cl->remote.ss_family | UV_UDP_RECVMMSG)) < 0)
			goto out_free;
		cl->udp.data = cl;
		uv_timer_init(loop, &cl->timer);
		cl->timer.data = cl;
		uv_check_init(loop, &cl->check);
		cl->check.data = cl;
		cl->handles = 3;
		if ((rv = uv_udp_connect(&cl->udp, (struct sockaddr *)&cl->remote)) < 0)
			goto out_handles;
		cl->locallen = sizeof(cl->local);
		uv_udp_getsockname(&cl->udp, (struct sockaddr *)&cl->local, (int *)&cl->locallen);
		if ((rv = uv_udp_recv_start(&cl->udp, qc_alloc_cb, qc_recv_cb)) < 0)
			goto out_handles;
		{
			int size = 1024 * 1024;

			uv_recv_buffer_size((uv_handle_t *)&cl->udp, &size);
		}
		uv_check_start(&cl->check, qc_check_cb);
	} else {
		/* Manual mode: a fixed address the test's "network" routes back to us. */
		qc_parse_addr(cl->remote.ss_family == AF_INET6 ? "::1" : "127.0.0.1", 50000,
		    &cl->local, &cl->locallen);
	}
	if ((rv = qc_tls_init(cl)) < 0 || (rv = qc_quic_init(cl, loop ? qc_now() : 0)) < 0)
		goto out_handles;
	/* The first flight goes out from the first flush (manual) or loop iteration. */
	cl->dirty = 1;
	if (loop)
		qc_write(cl, qc_now());
	*ret_client = cl;
	return 0;

out_handles:
	cl->closed = 1;
	qc_close_handles(cl);
	return rv;
out_free:
	free(cl->rbuf);
	free(cl->host);
	free(cl->server_name);
	free(cl->alpn);
	free(cl);
	return rv;
}

static char *
qc_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

int
quic_client_request(struct quic_client *cl, const char *method, const char *path,
    const char *token, const void *body, size_t len, quic_client_response_fn cb, void *arg)
{
	struct qc_req *r;

	if (!method || !path || !cb || path[0] != '/')
		return -EINVAL;
	if (cl->closed || cl->close_requested)
		return -ENOTCONN;
	if (cl->nqueued >= cl->cfg.max_queued)
		return -ENOBUFS;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cl = cl;
	r->cb = cb;
	r->arg = arg;
	r->method = qc_strdup(method);
	r->path = qc_strdup(path);
	if (token && asprintf(&r->auth, "Bearer %s", token) < 0) {
		r->auth = NULL;
		qc_req_free(r);
		return -ENOMEM;
	}
	if (len) {
		r->body = malloc(len);
		if (r->body)
			memcpy(r->body, body, len);
	}
	if (!r->method || !r->path || (len && !r->body)) {
		qc_req_free(r);
		return -ENOMEM;
	}
	r->body_len = len;
#define QC_NV(n, v) (nghttp3_nv){ (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), \
	NGHTTP3_NV_FLAG_NONE }
	r->nv[r->nnv++] = QC_NV(":method", r->method);
	r->nv[r->nnv++] = QC_NV(":scheme", "https");
	r->nv[r->nnv++] = QC_NV(":authority", cl->server_name);
	r->nv[r->nnv++] = QC_NV(":path", r->path);
	if (r->auth)
		r->nv[r->nnv++] = QC_NV("authorization", r->auth);
#undef QC_NV
	if (cl->queue_tail)
		cl->queue_tail->next = r;
	else
		cl->queue = r;
	cl->queue_tail = r;
	cl->nqueued++;
	cl->dirty = 1;
	/* From outside any callback, send now: the loop may be about to block. */
	if (cl->loop && !cl->in_cb)
		qc_after(cl, qc_now());
	return 0;
}

static void
qc_finish_close(struct quic_client *cl)
{
	ngtcp2_connection_close_error ccerr;
	struct qc_req *r;

	if (!cl->closed) {
		ngtcp2_connection_close_error_set_application_error(&ccerr, NGHTTP3_H3_NO_ERROR,
		    NULL, 0);
		qc_send_close(cl, &ccerr, cl->loop ? qc_now() : cl->last_ts);
		cl->closed = 1;
		cl->in_cb++;
		while ((r = cl->queue)) {
			cl->queue = r->next;
			qc_req_complete(r, -ECANCELED);
		}
		while ((r = cl->active)) {
			qc_active_unlink(cl, r);
			qc_req_complete(r, -ECANCELED);
		}
		cl->nanswered = 0;
		cl->in_cb--;
	}
	qc_close_handles(cl);
}

void
quic_client_close(struct quic_client *cl, void (*cb)(void *), void *arg)
{
	cl->close_cb = cb;
	cl->close_arg = arg;
	cl->close_requested = 1;
	if (!cl->in_cb)
		qc_finish_close(cl);
}

const struct sockaddr *
quic_client_local(const struct quic_client *cl, socklen_t *len)
{
	*len = cl->locallen;
	return (const struct sockaddr *)&cl->local;
}

size_t
quic_client_outstanding(const struct quic_client *cl)
{
	return cl->nqueued + cl->nactive - cl->nanswered;
}

/*
 * quic: the HTTP/3 server of the worker channel. It owns the UDP socket, the
 * connection table (keyed by connection ID), every ngtcp2/nghttp3/GnuTLS object
 * and the per-request buffers, and hands complete requests to rpc. It must not
 * block, must not log (the rpc edge and main do), and must not let a peer's
 * error escape one connection. ngtcp2 callbacks only record and queue work that
 * may not run inside them (stream shutdowns, closing after a 401).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
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
#include "quic.h"
#include "rpc.h"
#include "xmalloc.h"

#define QUIC_SCID_LEN		18	/* fixed: short headers do not carry the length */
#define QUIC_TX_BUF		1500	/* >= max_tx_udp_payload_size (1452) */
#define QUIC_RECV_SLOTS		16	/* recvmmsg: libuv reads up to this many per call */
#define QUIC_MAX_PENDING_SENDS	1024	/* queued sends after EAGAIN; beyond, drop */
#define QUIC_MAX_CIDS_PER_CONN	8

/* TLS 1.3 only, no middlebox compatibility mode (RFC 9001, 8.4). */
static const char quic_priority[] =
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:"
    "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:"
    "+GROUP-SECP256R1:+GROUP-SECP384R1";

enum qconn_state { QCONN_OPEN, QCONN_CLOSING, QCONN_DRAINING, QCONN_DEAD };

struct quic_cid_entry {
	uint8_t len;
	uint8_t data[NGTCP2_MAX_CIDLEN];
	struct qconn *c;
	struct quic_cid_entry *next;	/* in the bucket */
};

struct qstream {
	int64_t id;
	struct qconn *c;
	struct qstream *prev, *next;
	char method[RPC_METHOD_MAX + 1];
	char *path, *authorization;
	size_t hdr_bytes;
	uint8_t *body;
	size_t body_len, body_cap;
	uint64_t credit_owed;		/* body bytes whose connection credit is held back */
	int refuse;			/* 0, or the status to refuse with (400, 413, 431) */
	int responded;
	int stop_sending;		/* STOP_SENDING due at the next flush */
	int body_given;
	int waiting;			/* the handler deferred; pending.send() answers */
	struct rpc_pending pending;
	struct rpc_response resp;
	char status[4], clen[24];
	nghttp3_nv nv[3];
};

struct qconn {
	struct quic_server *srv;
	ngtcp2_crypto_conn_ref ref;	/* gnutls_session_get_ptr() points here */
	ngtcp2_conn *conn;
	gnutls_session_t tls;
	struct quic_cred *cred;		/* a reference */
	nghttp3_conn *h3;
	struct sockaddr_storage remote;
	socklen_t remotelen;
	uv_timer_t timer;		/* loop mode */
	uint64_t deadline;		/* the timer's absolute deadline, ns */
	enum qconn_state state;
	int handshake_done, need_stop_sending, close_requested, ccerr_set, dirty;
	int64_t close_after_sid;	/* close once this stream is done (401), or -1 */
	ngtcp2_connection_close_error ccerr;
	uint8_t *close_pkt;
	size_t close_len;
	struct quic_cid_entry *cids[QUIC_MAX_CIDS_PER_CONN + 1];
	struct qstream *streams;
	struct qconn *prev, *next;	/* all connections */
	struct qconn *dirty_next;
};

/* Credentials shared by the connections that started under them: a reload swaps
 * in new ones while live sessions keep pointing at the old. */
struct quic_cred {
	gnutls_certificate_credentials_t cred;
	unsigned refs;
};

struct quic_server {
	uv_loop_t *loop;
	struct quic_config cfg;
	struct rpc *router;
	struct quic_cred *cred;
	uv_udp_t udp;
	uv_check_t check;
	uv_idle_t idle;			/* keeps poll from blocking while a deferred reply waits */
	int idle_on;
	unsigned in_cb;			/* depth of calls into ngtcp2 (no re-entry) */
	uint64_t last_ts;		/* manual mode: the caller's latest clock */
	struct sockaddr_storage local;
	socklen_t locallen;
	uint8_t static_secret[32];
	struct quic_cid_entry **buckets;
	size_t nbuckets;
	struct qconn *conns, *dirty;
	size_t nconns, pending_sends, closing_handles;
	int closing;
	void (*close_cb)(void *);
	void *close_arg;
	struct quic_stats stats;
	uint8_t *rbuf;
};

struct quic_send_req {
	uv_udp_send_t req;
	struct quic_server *srv;
	uint8_t data[];
};

static void qconn_delete(struct qconn *c);
static void qconn_write(struct qconn *c, uint64_t ts);
static void qconn_start_close(struct qconn *c, uint64_t ts);
static void quic_server_finish(struct quic_server *srv);
static void qconn_timer_cb(uv_timer_t *t);
static void quic_idle_cb(uv_idle_t *h);
static nghttp3_ssize h3_read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec,
    size_t veccnt, uint32_t *pflags, void *ud, void *sud);

static int
quic_cred_load(const char *cert_file, const char *key_file, struct quic_cred **ret)
{
	struct quic_cred *qc;

	if (!cert_file || !key_file)
		return -EINVAL;
	qc = xcalloc(1, sizeof(*qc));
	if (gnutls_certificate_allocate_credentials(&qc->cred) < 0) {
		free(qc);
		return -ENOMEM;
	}
	if (gnutls_certificate_set_x509_key_file(qc->cred, cert_file, key_file,
	    GNUTLS_X509_FMT_PEM) < 0) {
		gnutls_certificate_free_credentials(qc->cred);
		free(qc);
		return -EIO;
	}
	qc->refs = 1;
	*ret = qc;
	return 0;
}

static void
quic_cred_unref(struct quic_cred *qc)
{
	if (--qc->refs == 0) {
		gnutls_certificate_free_credentials(qc->cred);
		free(qc);
	}
}

static uint64_t
quic_now(void)
{
	return uv_hrtime();
}

/* Connection-ID map: chained hash over the raw CID bytes (FNV-1a). */
static size_t
quic_cid_hash(const struct quic_server *srv, const uint8_t *data, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	return (size_t)(h & (srv->nbuckets - 1));
}

static struct qconn *
quic_cid_find(struct quic_server *srv, const uint8_t *data, size_t len)
{
	struct quic_cid_entry *e;

	if (len > NGTCP2_MAX_CIDLEN)
		return NULL;
	for (e = srv->buckets[quic_cid_hash(srv, data, len)]; e; e = e->next)
		if (e->len == len && memcmp(e->data, data, len) == 0)
			return e->c;
	return NULL;
}

static int
quic_cid_add(struct qconn *c, const uint8_t *data, size_t len)
{
	struct quic_server *srv = c->srv;
	struct quic_cid_entry *e;
	size_t i, h;

	for (i = 0; i < QUIC_MAX_CIDS_PER_CONN + 1; i++)
		if (!c->cids[i])
			break;
	if (i == QUIC_MAX_CIDS_PER_CONN + 1 || len > NGTCP2_MAX_CIDLEN)
		return -1;
	e = xcalloc(1, sizeof(*e));
	e->len = (uint8_t)len;
	memcpy(e->data, data, len);
	e->c = c;
	h = quic_cid_hash(srv, data, len);
	e->next = srv->buckets[h];
	srv->buckets[h] = e;
	c->cids[i] = e;
	return 0;
}

static void
quic_cid_unlink(struct quic_server *srv, struct quic_cid_entry *e)
{
	struct quic_cid_entry **pp = &srv->buckets[quic_cid_hash(srv, e->data, e->len)];

	for (; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	free(e);
}

static void
quic_cid_remove(struct qconn *c, const uint8_t *data, size_t len)
{
	size_t i;

	for (i = 0; i < QUIC_MAX_CIDS_PER_CONN + 1; i++) {
		struct quic_cid_entry *e = c->cids[i];

		if (e && e->len == len && memcmp(e->data, data, len) == 0) {
			quic_cid_unlink(c->srv, e);
			c->cids[i] = NULL;
			return;
		}
	}
}

/* Sending */

static void
quic_send_done(uv_udp_send_t *req, int status)
{
	struct quic_send_req *sr = (struct quic_send_req *)req;

	sr->srv->pending_sends--;
	if (status < 0)
		sr->srv->stats.send_errors++;
	free(sr);
}

static void
quic_send(struct quic_server *srv, const struct sockaddr *remote, const uint8_t *data,
    size_t len)
{
	struct quic_send_req *sr;
	uv_buf_t buf;
	int rv;

	srv->stats.datagrams_out++;
	if (!srv->loop) {
		srv->cfg.send(srv->cfg.send_arg, remote, data, len);
		return;
	}
	buf = uv_buf_init((char *)data, (unsigned)len);
	rv = uv_udp_try_send(&srv->udp, &buf, 1, remote);
	if (rv >= 0)
		return;
	if (rv != UV_EAGAIN || srv->pending_sends >= QUIC_MAX_PENDING_SENDS) {
		/* QUIC recovers a lost datagram; a full queue must not grow without bound. */
		srv->stats.send_errors++;
		return;
	}
	sr = xmalloc(sizeof(*sr) + len);
	sr->srv = srv;
	memcpy(sr->data, data, len);
	buf = uv_buf_init((char *)sr->data, (unsigned)len);
	if (uv_udp_send(&sr->req, &srv->udp, &buf, 1, remote, quic_send_done) < 0) {
		srv->stats.send_errors++;
		free(sr);
		return;
	}
	srv->pending_sends++;
}

/* Timers */

static void
qconn_arm(struct qconn *c)
{
	struct quic_server *srv = c->srv;
	uint64_t now, ms;

	if (c->state == QCONN_DEAD)
		return;
	if (c->state == QCONN_OPEN)
		c->deadline = ngtcp2_conn_get_expiry(c->conn);
	if (!srv->loop)
		return;
	if (c->deadline == UINT64_MAX) {
		uv_timer_stop(&c->timer);
		return;
	}
	now = quic_now();
	/* Round up: a timer that fires before the deadline would spin. */
	ms = c->deadline > now ? (c->deadline - now + 999999) / 1000000 : 0;
	uv_update_time(srv->loop);
	uv_timer_start(&c->timer, qconn_timer_cb, ms, 0);
}

static void
qconn_on_expiry(struct qconn *c, uint64_t ts)
{
	int rv;

	switch (c->state) {
	case QCONN_CLOSING:
	case QCONN_DRAINING:
		if (ts >= c->deadline)
			qconn_delete(c);
		else
			qconn_arm(c);
		return;
	case QCONN_DEAD:
		return;
	case QCONN_OPEN:
		break;
	}
	rv = ngtcp2_conn_handle_expiry(c->conn, ts);
	if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
		/* Idle close is silent by definition (RFC 9000, 10.1). */
		c->srv->stats.conns_idle_closed++;
		qconn_delete(c);
		return;
	}
	if (rv != 0) {
		ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
		c->ccerr_set = 1;
		qconn_start_close(c, ts);
		return;
	}
	qconn_write(c, ts);
}

static void
qconn_timer_cb(uv_timer_t *t)
{
	struct qconn *c = t->data;
	struct quic_server *srv = c->srv;

	srv->in_cb++;
	qconn_on_expiry(c, quic_now());
	srv->in_cb--;
	/* A deferred reply queued meanwhile (a cancel callback can answer another). */
	if (srv->dirty)
		quic_server_flush(srv, quic_now());
}

/* Connection teardown */

static void
qstream_free(struct qstream *s)
{
	struct qconn *c = s->c;

	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->credit_owed && c->conn && c->state == QCONN_OPEN)
		ngtcp2_conn_extend_max_offset(c->conn, s->credit_owed);
	if (s->waiting) {
		s->waiting = 0;
		rpc_pending_cancel(&s->pending);
	}
	free(s->path);
	free(s->authorization);
	free(s->body);
	free(s->resp.body);
	free(s);
}

static void
qconn_free_cb(uv_handle_t *h)
{
	struct qconn *c = h->data;
	struct quic_server *srv = c->srv;

	free(c);
	if (--srv->closing_handles == 0 && srv->closing)
		quic_server_finish(srv);
}

static void
qconn_delete(struct qconn *c)
{
	struct quic_server *srv = c->srv;
	size_t i;

	if (c->state == QCONN_DEAD)
		return;
	c->state = QCONN_DEAD;
	if (c->dirty) {
		struct qconn **pp;

		for (pp = &srv->dirty; *pp; pp = &(*pp)->dirty_next)
			if (*pp == c) {
				*pp = c->dirty_next;
				break;
			}
		c->dirty = 0;
	}
	for (i = 0; i < QUIC_MAX_CIDS_PER_CONN + 1; i++)
		if (c->cids[i]) {
			quic_cid_unlink(srv, c->cids[i]);
			c->cids[i] = NULL;
		}
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	srv->stats.conns_active--;
	while (c->streams)
		qstream_free(c->streams);
	nghttp3_conn_del(c->h3);
	ngtcp2_conn_del(c->conn);
	c->conn = NULL;
	gnutls_deinit(c->tls);
	quic_cred_unref(c->cred);
	c->cred = NULL;
	free(c->close_pkt);
	if (srv->loop) {
		srv->closing_handles++;
		uv_close((uv_handle_t *)&c->timer, qconn_free_cb);
	} else {
		free(c);
	}
}

/* Write CONNECTION_CLOSE with c->ccerr, keep it for late packets, wait 3 PTO. */
static void
qconn_start_close(struct qconn *c, uint64_t ts)
{
	uint8_t buf[QUIC_TX_BUF];
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ssize n;

	if (c->state != QCONN_OPEN)
		return;
	if (!c->ccerr_set)
		ngtcp2_connection_close_error_default(&c->ccerr);
	if (c->ccerr.type != NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION ||
	    c->ccerr.error_code != NGHTTP3_H3_NO_ERROR)
		c->srv->stats.conns_failed++;
	if (ngtcp2_conn_is_in_closing_period(c->conn) ||
	    ngtcp2_conn_is_in_draining_period(c->conn)) {
		qconn_delete(c);
		return;
	}
	ngtcp2_path_storage_zero(&ps);
	n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof(buf),
	    &c->ccerr, ts);
	if (n <= 0) {
		qconn_delete(c);
		return;
	}
	c->close_pkt = xmalloc((size_t)n);
	memcpy(c->close_pkt, buf, (size_t)n);
	c->close_len = (size_t)n;
	quic_send(c->srv, (struct sockaddr *)&c->remote, buf, (size_t)n);
	c->state = QCONN_CLOSING;
	c->deadline = ts + 3 * ngtcp2_conn_get_pto(c->conn);
	qconn_arm(c);
}

static void
qconn_fail_liberr(struct qconn *c, int rv, uint64_t ts)
{
	if (!c->ccerr_set) {
		ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
		c->ccerr_set = 1;
	}
	qconn_start_close(c, ts);
}

static void
qconn_fail_h3(struct qconn *c, int rv)
{
	if (!c->ccerr_set) {
		ngtcp2_connection_close_error_set_application_error(&c->ccerr,
		    nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
		c->ccerr_set = 1;
	}
}

/* nghttp3 callbacks */

static int
h3_acked_stream_data(nghttp3_conn *h3, int64_t sid, uint64_t datalen, void *ud, void *sud)
{
	return 0;	/* response bodies are freed with their stream */
}

static int
h3_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	if (sud)
		qstream_free(sud);
	return 0;
}

static void
qstream_stop_reading(struct qstream *s)
{
	s->stop_sending = 1;
	s->c->need_stop_sending = 1;
}

static int
qstream_respond(struct qstream *s)
{
	struct qconn *c = s->c;
	nghttp3_data_reader dr;
	int rv;

	if (s->responded)
		return 0;
	s->responded = 1;
	snprintf(s->status, sizeof(s->status), "%03d", s->resp.status);
	snprintf(s->clen, sizeof(s->clen), "%zu", s->resp.body_len);
	s->nv[0] = (nghttp3_nv){ (uint8_t *)":status", (uint8_t *)s->status, 7, 3,
	    NGHTTP3_NV_FLAG_NONE };
	s->nv[1] = (nghttp3_nv){ (uint8_t *)"content-type", (uint8_t *)"application/json",
	    12, 16, NGHTTP3_NV_FLAG_NONE };
	s->nv[2] = (nghttp3_nv){ (uint8_t *)"content-length", (uint8_t *)s->clen, 14,
	    strlen(s->clen), NGHTTP3_NV_FLAG_NONE };
	dr.read_data = h3_read_data;
	rv = nghttp3_conn_submit_response(c->h3, s->id, s->nv, 3,
	    s->resp.body_len ? &dr : NULL);
	if (rv != 0)
		return rv;
	if (s->resp.close_conn && c->close_after_sid < 0)
		c->close_after_sid = s->id;
	return 0;
}

static nghttp3_ssize
h3_read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
    uint32_t *pflags, void *ud, void *sud)
{
	struct qstream *s = sud;

	*pflags |= NGHTTP3_DATA_FLAG_EOF;
	if (!s || s->body_given || s->resp.body_len == 0 || veccnt == 0)
		return 0;
	s->body_given = 1;
	vec[0].base = (uint8_t *)s->resp.body;
	vec[0].len = s->resp.body_len;
	return 1;
}

/* Answer before the request is complete (too large); stop reading the rest. */
static int
qstream_refuse(struct qstream *s, int status)
{
	struct qconn *c = s->c;

	s->refuse = status;
	free(s->body);
	s->body = NULL;
	s->body_len = s->body_cap = 0;
	if (s->credit_owed) {
		ngtcp2_conn_extend_max_offset(c->conn, s->credit_owed);
		s->credit_owed = 0;
	}
	c->srv->stats.refused_requests++;
	rpc_refuse(c->srv->router, &s->resp, status);
	qstream_stop_reading(s);
	return qstream_respond(s);
}

static int
h3_begin_headers(nghttp3_conn *h3, int64_t sid, void *ud, void *sud)
{
	struct qconn *c = ud;
	struct qstream *s;

	if (sud)
		return 0;
	s = xcalloc(1, sizeof(*s));
	s->id = sid;
	s->c = c;
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	c->srv->stats.streams_opened++;
	nghttp3_conn_set_stream_user_data(h3, sid, s);
	return 0;
}

static int
h3_recv_header(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
    nghttp3_rcbuf *value, uint8_t flags, void *ud, void *sud)
{
	struct qconn *c = ud;
	struct qstream *s = sud;
	nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);

	if (!s || s->refuse)
		return 0;
	s->hdr_bytes += n.len + v.len + 32;
	if (s->hdr_bytes > c->srv->cfg.max_header_bytes) {
		s->refuse = 431;	/* answered at the end of the header section */
		return 0;
	}
	switch (token) {
	case NGHTTP3_QPACK_TOKEN__METHOD:
		if (v.len == 0 || v.len > RPC_METHOD_MAX) {
			s->refuse = 400;
			return 0;
		}
		memcpy(s->method, v.base, v.len);
		s->method[v.len] = '\0';
		break;
	case NGHTTP3_QPACK_TOKEN__PATH:
		if (v.len == 0 || v.len > RPC_PATH_MAX || s->path) {
			s->refuse = v.len > RPC_PATH_MAX ? 431 : 400;
			return 0;
		}
		s->path = xstrndup((const char *)v.base, v.len);
		break;
	case NGHTTP3_QPACK_TOKEN_AUTHORIZATION:
		if (v.len > AUTH_TOKEN_MAX + 16 || s->authorization) {
			s->refuse = v.len > AUTH_TOKEN_MAX + 16 ? 431 : 400;
			return 0;
		}
		s->authorization = xstrndup((const char *)v.base, v.len);
		break;
	}
	return 0;
}

static int
h3_end_headers(nghttp3_conn *h3, int64_t sid, int fin, void *ud, void *sud)
{
	struct qstream *s = sud;

	if (s && s->refuse == 431)
		return qstream_refuse(s, 431);
	return 0;
}

static int
h3_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *ud,
    void *sud)
{
	struct qconn *c = ud;
	struct qstream *s = sud;
	size_t cap;

	/* Stream credit at once; connection credit only when the body is released,
	 * so a connection never buffers more than its connection window. */
	ngtcp2_conn_extend_max_stream_offset(c->conn, sid, len);
	if (len == 0)
		return 0;
	if (!s || s->refuse || s->responded) {
		ngtcp2_conn_extend_max_offset(c->conn, len);
		return 0;
	}
	if (s->body_len + len > c->srv->cfg.max_body_bytes) {
		ngtcp2_conn_extend_max_offset(c->conn, len);
		return qstream_refuse(s, 413);
	}
	if (s->body_len + len > s->body_cap) {
		cap = s->body_cap ? s->body_cap : 1024;
		while (cap < s->body_len + len)
			cap *= 2;
		if (cap > c->srv->cfg.max_body_bytes)
			cap = c->srv->cfg.max_body_bytes;
		s->body = xrealloc(s->body, cap);
		s->body_cap = cap;
	}
	memcpy(s->body + s->body_len, data, len);
	s->body_len += len;
	s->credit_owed += len;
	return 0;
}

static int
h3_deferred_consume(nghttp3_conn *h3, int64_t sid, size_t consumed, void *ud, void *sud)
{
	struct qconn *c = ud;

	ngtcp2_conn_extend_max_stream_offset(c->conn, sid, consumed);
	ngtcp2_conn_extend_max_offset(c->conn, consumed);
	return 0;
}

static void qconn_mark_dirty(struct qconn *c);

/* A deferred reply: respond now if we may call into ngtcp2, else at the next flush. */
static void
qstream_pending_send(struct rpc_pending *p, struct rpc_response *resp)
{
	struct qstream *s = (struct qstream *)((char *)p - offsetof(struct qstream, pending));
	struct qconn *c = s->c;
	struct quic_server *srv = c->srv;
	int rv;

	s->waiting = 0;
	free(s->resp.body);
	s->resp = *resp;
	if (c->state != QCONN_OPEN)
		return;
	if ((rv = qstream_respond(s)) != 0) {
		qconn_fail_h3(c, rv);
		c->close_requested = 1;
	}
	if (srv->in_cb || !srv->loop) {
		qconn_mark_dirty(c);
		if (srv->loop && !srv->idle_on) {
			uv_idle_start(&srv->idle, quic_idle_cb);
			srv->idle_on = 1;
		}
		if (!srv->loop && !srv->in_cb)
			quic_server_flush(srv, srv->last_ts);
		return;
	}
	qconn_write(c, quic_now());
}

static int
h3_end_stream(nghttp3_conn *h3, int64_t sid, void *ud, void *sud)
{
	struct qconn *c = ud;
	struct qstream *s = sud;
	struct rpc_request req;

	if (!s || s->responded)
		return 0;
	if (s->refuse || !s->method[0] || !s->path) {
		c->srv->stats.refused_requests++;
		rpc_refuse(c->srv->router, &s->resp, s->refuse ? s->refuse : 400);
		return qstream_respond(s);
	}
	req.method = s->method;
	req.path = s->path;
	req.authorization = s->authorization;
	req.body = s->body;
	req.body_len = s->body_len;
	req.pending = &s->pending;
	s->pending.send = qstream_pending_send;
	c->srv->stats.requests++;
	rpc_dispatch(c->srv->router, &req, &s->resp);
	/* The request is done with: give its buffered bytes back as credit. */
	free(s->body);
	s->body = NULL;
	s->body_len = s->body_cap = 0;
	if (s->credit_owed) {
		ngtcp2_conn_extend_max_offset(c->conn, s->credit_owed);
		s->credit_owed = 0;
	}
	if (s->resp.status == 0) {
		s->waiting = 1;		/* answered later through s->pending */
		return 0;
	}
	return qstream_respond(s);
}

static int
h3_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	struct qconn *c = ud;

	ngtcp2_conn_shutdown_stream_read(c->conn, sid, code);
	return 0;
}

static int
h3_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
	struct qconn *c = ud;

	ngtcp2_conn_shutdown_stream_write(c->conn, sid, code);
	return 0;
}

static int
qconn_setup_h3(struct qconn *c)
{
	nghttp3_callbacks cb = {
		.acked_stream_data = h3_acked_stream_data,
		.stream_close = h3_stream_close,
		.recv_data = h3_recv_data,
		.deferred_consume = h3_deferred_consume,
		.begin_headers = h3_begin_headers,
		.recv_header = h3_recv_header,
		.end_headers = h3_end_headers,
		.end_stream = h3_end_stream,
		.stop_sending = h3_stop_sending,
		.reset_stream = h3_reset_stream,
	};
	nghttp3_settings settings;
	int64_t ctrl, qenc, qdec;
	int rv;

	nghttp3_settings_default(&settings);
	settings.max_field_section_size = c->srv->cfg.max_header_bytes;
	rv = nghttp3_conn_server_new(&c->h3, &cb, &settings, NULL, c);
	if (rv != 0)
		return rv;
	nghttp3_conn_set_max_client_streams_bidi(c->h3, c->srv->cfg.max_streams);
	if (ngtcp2_conn_get_max_local_streams_uni(c->conn) < 3)
		return NGHTTP3_ERR_H3_STREAM_CREATION_ERROR;
	if ((rv = ngtcp2_conn_open_uni_stream(c->conn, &ctrl, NULL)) != 0 ||
	    (rv = ngtcp2_conn_open_uni_stream(c->conn, &qenc, NULL)) != 0 ||
	    (rv = ngtcp2_conn_open_uni_stream(c->conn, &qdec, NULL)) != 0)
		return NGHTTP3_ERR_H3_STREAM_CREATION_ERROR;
	if ((rv = nghttp3_conn_bind_control_stream(c->h3, ctrl)) != 0 ||
	    (rv = nghttp3_conn_bind_qpack_streams(c->h3, qenc, qdec)) != 0)
		return rv;
	return 0;
}

/* ngtcp2 callbacks */

static void
quic_rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	if (gnutls_rnd(GNUTLS_RND_RANDOM, dest, len) < 0)
		abort();	/* the RNG failing is not a peer's doing */
}

static int
quic_get_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
    void *ud)
{
	struct qconn *c = ud;

	if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) < 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	cid->datalen = cidlen;
	if (ngtcp2_crypto_generate_stateless_reset_token(token, c->srv->static_secret,
	    sizeof(c->srv->static_secret), cid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	if (quic_cid_add(c, cid->data, cid->datalen) < 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
quic_remove_cid_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud)
{
	quic_cid_remove(ud, cid->data, cid->datalen);
	return 0;
}

static int
quic_handshake_completed_cb(ngtcp2_conn *conn, void *ud)
{
	struct qconn *c = ud;
	gnutls_datum_t alpn;

	/* GnuTLS refuses a client that offers only other protocols; this also refuses
	 * one that offers none. */
	if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) != 0 || alpn.size != 2 ||
	    memcmp(alpn.data, "h3", 2) != 0) {
		ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->ccerr,
		    GNUTLS_A_NO_APPLICATION_PROTOCOL, NULL, 0);
		c->ccerr_set = 1;
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	c->handshake_done = 1;
	return 0;
}

static int
quic_recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
    const uint8_t *data, size_t len, void *ud, void *sud)
{
	struct qconn *c = ud;
	nghttp3_ssize n;
	int rv;

	if (!c->h3 && (rv = qconn_setup_h3(c)) != 0) {
		qconn_fail_h3(c, rv);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	n = nghttp3_conn_read_stream(c->h3, sid, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
	if (n < 0) {
		qconn_fail_h3(c, (int)n);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	ngtcp2_conn_extend_max_stream_offset(conn, sid, (uint64_t)n);
	ngtcp2_conn_extend_max_offset(conn, (uint64_t)n);
	return 0;
}

static int
quic_acked_offset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t datalen,
    void *ud, void *sud)
{
	struct qconn *c = ud;
	int rv;

	if (c->h3 && (rv = nghttp3_conn_add_ack_offset(c->h3, sid, datalen)) != 0) {
		qconn_fail_h3(c, rv);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
quic_stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code,
    void *ud, void *sud)
{
	struct qconn *c = ud;
	int rv;

	if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
		code = NGHTTP3_H3_NO_ERROR;
	if (c->h3) {
		rv = nghttp3_conn_close_stream(c->h3, sid, code);
		if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) {
			qconn_fail_h3(c, rv);
			return NGTCP2_ERR_CALLBACK_FAILURE;
		}
	}
	/* Client-initiated bidirectional: give the stream credit back. */
	if ((sid & 0x3) == 0)
		ngtcp2_conn_extend_max_streams_bidi(conn, 1);
	if (sid == c->close_after_sid)
		c->close_requested = 1;
	return 0;
}

static int
quic_stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t code,
    void *ud, void *sud)
{
	struct qconn *c = ud;
	int rv;

	if (c->h3 && (rv = nghttp3_conn_shutdown_stream_read(c->h3, sid)) != 0) {
		qconn_fail_h3(c, rv);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
quic_stream_stop_sending_cb(ngtcp2_conn *conn, int64_t sid, uint64_t code, void *ud,
    void *sud)
{
	struct qconn *c = ud;
	int rv;

	if (c->h3 && (rv = nghttp3_conn_shutdown_stream_read(c->h3, sid)) != 0) {
		qconn_fail_h3(c, rv);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
quic_extend_max_remote_bidi_cb(ngtcp2_conn *conn, uint64_t max_streams, void *ud)
{
	struct qconn *c = ud;

	if (c->h3)
		nghttp3_conn_set_max_client_streams_bidi(c->h3, max_streams);
	return 0;
}

static int
quic_extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max_data,
    void *ud, void *sud)
{
	struct qconn *c = ud;
	int rv;

	if (c->h3 && (rv = nghttp3_conn_unblock_stream(c->h3, sid)) != 0) {
		qconn_fail_h3(c, rv);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static ngtcp2_conn *
quic_get_conn(ngtcp2_crypto_conn_ref *ref)
{
	struct qconn *c = ref->user_data;

	return c->conn;
}

/* The write loop: nghttp3 produces stream data, ngtcp2 packs it into packets. */
static void
qconn_write(struct qconn *c, uint64_t ts)
{
	uint8_t buf[QUIC_TX_BUF];
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	struct qstream *s;
	int rv;

	if (c->state != QCONN_OPEN)
		return;
	if (c->handshake_done && !c->h3 && (rv = qconn_setup_h3(c)) != 0) {
		qconn_fail_h3(c, rv);
		qconn_start_close(c, ts);
		return;
	}
	if (c->need_stop_sending) {
		c->need_stop_sending = 0;
		for (s = c->streams; s; s = s->next)
			if (s->stop_sending) {
				s->stop_sending = 0;
				ngtcp2_conn_shutdown_stream_read(c->conn, s->id, NGHTTP3_H3_NO_ERROR);
			}
	}
	if (c->close_requested) {
		static const char reason[] = "unauthorized";

		ngtcp2_connection_close_error_set_application_error(&c->ccerr,
		    NGHTTP3_H3_NO_ERROR, (const uint8_t *)reason, sizeof(reason) - 1);
		c->ccerr_set = 1;
		qconn_start_close(c, ts);
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

		if (c->h3 && ngtcp2_conn_get_max_data_left(c->conn)) {
			nvec = nghttp3_conn_writev_stream(c->h3, &sid, &fin, vec, 16);
			if (nvec < 0) {
				qconn_fail_h3(c, (int)nvec);
				qconn_start_close(c, ts);
				return;
			}
		}
		if (fin)
			flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
		n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, sizeof(buf), &ndatalen,
		    flags, sid, (const ngtcp2_vec *)vec, (size_t)nvec, ts);
		if (n < 0) {
			switch (n) {
			case NGTCP2_ERR_STREAM_DATA_BLOCKED:
				nghttp3_conn_block_stream(c->h3, sid);
				continue;
			case NGTCP2_ERR_STREAM_SHUT_WR:
				nghttp3_conn_shutdown_stream_write(c->h3, sid);
				continue;
			case NGTCP2_ERR_WRITE_MORE:
				if ((rv = nghttp3_conn_add_write_offset(c->h3, sid,
				    (size_t)ndatalen)) != 0) {
					qconn_fail_h3(c, rv);
					qconn_start_close(c, ts);
					return;
				}
				continue;
			}
			qconn_fail_liberr(c, (int)n, ts);
			return;
		}
		if (ndatalen >= 0 && sid >= 0 &&
		    (rv = nghttp3_conn_add_write_offset(c->h3, sid, (size_t)ndatalen)) != 0) {
			qconn_fail_h3(c, rv);
			qconn_start_close(c, ts);
			return;
		}
		if (n == 0)
			break;
		quic_send(c->srv, (struct sockaddr *)&c->remote, buf, (size_t)n);
	}
	qconn_arm(c);
}

static void
qconn_mark_dirty(struct qconn *c)
{
	if (c->dirty || c->state == QCONN_DEAD)
		return;
	c->dirty = 1;
	c->dirty_next = c->srv->dirty;
	c->srv->dirty = c;
}

static int
qconn_new(struct quic_server *srv, const ngtcp2_pkt_hd *hd, const struct sockaddr *remote,
    socklen_t remotelen, uint64_t ts, struct qconn **ret_c)
{
	static const ngtcp2_callbacks callbacks = {
		.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
		.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
		.encrypt = ngtcp2_crypto_encrypt_cb,
		.decrypt = ngtcp2_crypto_decrypt_cb,
		.hp_mask = ngtcp2_crypto_hp_mask_cb,
		.update_key = ngtcp2_crypto_update_key_cb,
		.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
		.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
		.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
		.version_negotiation = ngtcp2_crypto_version_negotiation_cb,
		.rand = quic_rand_cb,
		.get_new_connection_id = quic_get_new_cid_cb,
		.remove_connection_id = quic_remove_cid_cb,
		.handshake_completed = quic_handshake_completed_cb,
		.recv_stream_data = quic_recv_stream_data_cb,
		.acked_stream_data_offset = quic_acked_offset_cb,
		.stream_close = quic_stream_close_cb,
		.stream_reset = quic_stream_reset_cb,
		.stream_stop_sending = quic_stream_stop_sending_cb,
		.extend_max_remote_streams_bidi = quic_extend_max_remote_bidi_cb,
		.extend_max_stream_data = quic_extend_max_stream_data_cb,
	};
	static const gnutls_datum_t alpn = { (unsigned char *)"h3", 2 };
	const struct quic_config *cfg = &srv->cfg;
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_path path;
	ngtcp2_cid scid;
	struct qconn *c;
	int rv;

	c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->close_after_sid = -1;
	c->deadline = UINT64_MAX;
	memcpy(&c->remote, remote, remotelen);
	c->remotelen = remotelen;

	scid.datalen = QUIC_SCID_LEN;
	if (gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) < 0)
		goto out_free;

	ngtcp2_settings_default(&settings);
	settings.initial_ts = ts;
	settings.initial_rtt = cfg->initial_rtt_ms * NGTCP2_MILLISECONDS;
	ngtcp2_transport_params_default(&params);
	params.initial_max_stream_data_bidi_local = 256 * 1024;
	params.initial_max_stream_data_bidi_remote = 256 * 1024;
	params.initial_max_stream_data_uni = 256 * 1024;
	/* The connection window bounds the request bytes buffered per connection. */
	params.initial_max_data = 2 * cfg->max_body_bytes + 256 * 1024;
	params.initial_max_streams_bidi = cfg->max_streams;
	params.initial_max_streams_uni = 3;
	params.max_idle_timeout = cfg->idle_timeout_ms * NGTCP2_MILLISECONDS;
	params.active_connection_id_limit = 7;
	params.original_dcid = hd->dcid;
	if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token,
	    srv->static_secret, sizeof(srv->static_secret), &scid) != 0)
		goto out_free;
	params.stateless_reset_token_present = 1;

	path.local.addr = (struct sockaddr *)&srv->local;
	path.local.addrlen = srv->locallen;
	path.remote.addr = (struct sockaddr *)&c->remote;
	path.remote.addrlen = c->remotelen;
	path.user_data = NULL;

	if (gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET) < 0)
		goto out_free;
	if (ngtcp2_crypto_gnutls_configure_server_session(c->tls) != 0 ||
	    gnutls_priority_set_direct(c->tls, quic_priority, NULL) < 0 ||
	    gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, srv->cred->cred) < 0 ||
	    gnutls_alpn_set_protocols(c->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) < 0)
		goto out_tls;
	c->cred = srv->cred;
	c->cred->refs++;
	c->ref.get_conn = quic_get_conn;
	c->ref.user_data = c;
	gnutls_session_set_ptr(c->tls, &c->ref);

	rv = ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &path, hd->version,
	    &callbacks, &settings, &params, NULL, c);
	if (rv != 0)
		goto out_tls;
	ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);

	if (quic_cid_add(c, scid.data, scid.datalen) < 0 ||
	    quic_cid_add(c, hd->dcid.data, hd->dcid.datalen) < 0)
		goto out_conn;
	if (srv->loop) {
		uv_timer_init(srv->loop, &c->timer);
		c->timer.data = c;
	}
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	srv->stats.conns_active++;
	srv->stats.conns_accepted++;
	*ret_c = c;
	return 0;

out_conn:
	for (rv = 0; rv < QUIC_MAX_CIDS_PER_CONN + 1; rv++)
		if (c->cids[rv])
			quic_cid_unlink(srv, c->cids[rv]);
	ngtcp2_conn_del(c->conn);
out_tls:
	gnutls_deinit(c->tls);
	if (c->cred)
		quic_cred_unref(c->cred);
out_free:
	free(c);
	return -EIO;
}

static void
qconn_read(struct qconn *c, const struct sockaddr *remote, socklen_t remotelen,
    const uint8_t *data, size_t len, uint64_t ts)
{
	struct quic_server *srv = c->srv;
	ngtcp2_path path;
	ngtcp2_pkt_info pi = { 0 };
	int rv;

	if (c->state == QCONN_CLOSING) {
		/* Late packets get the saved close again (RFC 9000, 10.2.1). */
		quic_send(srv, remote, c->close_pkt, c->close_len);
		return;
	}
	if (c->state != QCONN_OPEN)
		return;
	path.local.addr = (struct sockaddr *)&srv->local;
	path.local.addrlen = srv->locallen;
	path.remote.addr = (struct sockaddr *)remote;
	path.remote.addrlen = remotelen;
	path.user_data = NULL;
	rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, data, len, ts);
	if (rv == 0) {
		/* Follow the peer's address (NAT rebinding) for our own sends. */
		if (remotelen <= sizeof(c->remote)) {
			memcpy(&c->remote, remote, remotelen);
			c->remotelen = remotelen;
		}
		qconn_mark_dirty(c);
		return;
	}
	switch (rv) {
	case NGTCP2_ERR_DRAINING:
		c->state = QCONN_DRAINING;
		c->deadline = ts + 3 * ngtcp2_conn_get_pto(c->conn);
		qconn_arm(c);
		return;
	case NGTCP2_ERR_DROP_CONN:
	case NGTCP2_ERR_RETRY:
		qconn_delete(c);
		return;
	case NGTCP2_ERR_CRYPTO:
		if (!c->ccerr_set) {
			ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->ccerr,
			    ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
			c->ccerr_set = 1;
		}
		qconn_start_close(c, ts);
		return;
	default:
		qconn_fail_liberr(c, rv, ts);
		return;
	}
}

/* Connections from remote's address (any port): one sandbox cannot take them all. */
static size_t
quic_conns_from(const struct quic_server *srv, const struct sockaddr *remote)
{
	const struct qconn *c;
	size_t n = 0;

	for (c = srv->conns; c; c = c->next) {
		const struct sockaddr *r = (const struct sockaddr *)&c->remote;

		if (r->sa_family != remote->sa_family)
			continue;
		if (r->sa_family == AF_INET &&
		    ((const struct sockaddr_in *)r)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)remote)->sin_addr.s_addr)
			n++;
		else if (r->sa_family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)r)->sin6_addr,
		    &((const struct sockaddr_in6 *)remote)->sin6_addr, 16) == 0)
			n++;
	}
	return n;
}

static void
quic_stateless_reset(struct quic_server *srv, const struct sockaddr *remote,
    const ngtcp2_version_cid *vc, size_t len)
{
	uint8_t buf[64], token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[41];
	ngtcp2_cid cid;
	size_t randlen;
	ngtcp2_ssize n;

	/* Only for packets larger than the reset we send back, so two endpoints can
	 * never bounce resets at each other, and only for our CID length. */
	if (len < 43 || vc->dcidlen != QUIC_SCID_LEN)
		return;
	randlen = len - 1 - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
	if (randlen > sizeof(rnd))
		randlen = sizeof(rnd);
	ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
	if (ngtcp2_crypto_generate_stateless_reset_token(token, srv->static_secret,
	    sizeof(srv->static_secret), &cid) != 0)
		return;
	quic_rand_cb(rnd, randlen, NULL);
	n = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rnd, randlen);
	if (n > 0) {
		srv->stats.stateless_resets++;
		quic_send(srv, remote, buf, (size_t)n);
	}
}

static void
quic_server_datagram(struct quic_server *srv, const struct sockaddr *remote,
    socklen_t remotelen, const uint8_t *data, size_t len, uint64_t ts)
{
	ngtcp2_version_cid vc;
	ngtcp2_pkt_hd hd;
	struct qconn *c;
	int rv;

	srv->stats.datagrams_in++;
	if (srv->closing)
		return;
	srv->last_ts = ts;
	rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, QUIC_SCID_LEN);
	if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
		uint8_t buf[256], r;
		uint32_t sv[] = { NGTCP2_PROTO_VER_V1 };
		ngtcp2_ssize n;

		/* Only for datagrams a real Initial would fill: no amplification. */
		if (len < 1200) {
			srv->stats.garbage++;
			return;
		}
		quic_rand_cb(&r, 1, NULL);
		n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), r, vc.scid,
		    vc.scidlen, vc.dcid, vc.dcidlen, sv, 1);
		if (n > 0)
			quic_send(srv, remote, buf, (size_t)n);
		return;
	}
	if (rv != 0) {
		srv->stats.garbage++;
		return;
	}
	c = quic_cid_find(srv, vc.dcid, vc.dcidlen);
	if (c) {
		qconn_read(c, remote, remotelen, data, len, ts);
		return;
	}
	if (!(data[0] & 0x80)) {
		/* A short header for a connection we do not know: a previous instance's
		 * or a forgotten one. Tell the peer at once (RFC 9000, 10.3). */
		srv->stats.garbage++;
		quic_stateless_reset(srv, remote, &vc, len);
		return;
	}
	if (ngtcp2_accept(&hd, data, len) != 0) {
		srv->stats.garbage++;
		return;
	}
	if (srv->nconns >= srv->cfg.max_connections ||
	    remotelen > sizeof(struct sockaddr_storage) ||
	    quic_conns_from(srv, remote) >= srv->cfg.max_connections_per_ip) {
		srv->stats.conns_refused++;
		return;
	}
	if (qconn_new(srv, &hd, remote, remotelen, ts, &c) < 0) {
		srv->stats.conns_refused++;
		return;
	}
	qconn_read(c, remote, remotelen, data, len, ts);
}

/* libuv glue */

static void
quic_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct quic_server *srv = h->data;

	*buf = uv_buf_init((char *)srv->rbuf, QUIC_RECV_SLOTS * 65536);
}

static void
quic_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
    unsigned flags)
{
	struct quic_server *srv = h->data;
	socklen_t alen;

	if (nread <= 0 || !addr)
		return;
	alen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
	srv->in_cb++;
	quic_server_datagram(srv, addr, alen, (const uint8_t *)buf->base, (size_t)nread,
	    quic_now());
	srv->in_cb--;
}

void
quic_server_flush(struct quic_server *srv, uint64_t ts)
{
	srv->last_ts = ts;
	srv->in_cb++;
	while (srv->dirty) {
		struct qconn *c = srv->dirty;

		srv->dirty = c->dirty_next;
		c->dirty = 0;
		qconn_write(c, ts);
	}
	srv->in_cb--;
}

static void
quic_check_cb(uv_check_t *h)
{
	struct quic_server *srv = h->data;

	if (srv->dirty)
		quic_server_flush(srv, quic_now());
}

static void
quic_idle_cb(uv_idle_t *h)
{
	struct quic_server *srv = h->data;

	uv_idle_stop(h);
	srv->idle_on = 0;
	if (srv->dirty)
		quic_server_flush(srv, quic_now());
}

void
quic_server_input(struct quic_server *srv, const struct sockaddr *remote,
    socklen_t remotelen, const uint8_t *data, size_t len, uint64_t ts)
{
	srv->in_cb++;
	quic_server_datagram(srv, remote, remotelen, data, len, ts);
	srv->in_cb--;
}

uint64_t
quic_server_expiry(const struct quic_server *srv)
{
	uint64_t min = UINT64_MAX;
	struct qconn *c;

	for (c = srv->conns; c; c = c->next)
		if (c->deadline < min)
			min = c->deadline;
	return min;
}

void
quic_server_handle_expiry(struct quic_server *srv, uint64_t ts)
{
	struct qconn *c, *next;

	srv->last_ts = ts;
	srv->in_cb++;
	for (c = srv->conns; c; c = next) {
		next = c->next;
		if (c->deadline <= ts)
			qconn_on_expiry(c, ts);
	}
	srv->in_cb--;
	quic_server_flush(srv, ts);
}

/* Creation and shutdown */

static int
quic_parse_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
    socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (!host)
		return -EINVAL;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		/* A wildcard bind breaks path.local (libuv gives no IP_PKTINFO). */
		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

static void
quic_failed_close_cb(uv_handle_t *h)
{
	free(h->data);
}

int
quic_server_new(uv_loop_t *loop, const struct quic_config *config, struct rpc *router,
    struct quic_server **ret_server)
{
	struct quic_server *srv;
	int rv;

	if (!config || !router || !config->cert_file || !config->key_file ||
	    (!loop && !config->send))
		return -EINVAL;
	srv = xcalloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->cfg = *config;
	srv->router = router;
	if (!srv->cfg.idle_timeout_ms)
		srv->cfg.idle_timeout_ms = 30000;
	if (!srv->cfg.initial_rtt_ms)
		srv->cfg.initial_rtt_ms = 5;
	if (!srv->cfg.max_connections)
		srv->cfg.max_connections = 1024;
	if (!srv->cfg.max_connections_per_ip)
		srv->cfg.max_connections_per_ip = 64;
	if (!srv->cfg.max_streams)
		srv->cfg.max_streams = 128;
	if (!srv->cfg.max_header_bytes)
		srv->cfg.max_header_bytes = 16384;
	if (!srv->cfg.max_body_bytes)
		srv->cfg.max_body_bytes = 1024 * 1024;
	if ((rv = quic_parse_addr(config->host, config->port, &srv->local,
	    &srv->locallen)) < 0)
		goto out_free;
	for (srv->nbuckets = 64; srv->nbuckets < srv->cfg.max_connections * 4;)
		srv->nbuckets *= 2;
	srv->buckets = xcalloc(srv->nbuckets, sizeof(*srv->buckets));
	if (config->reset_secret) {
		/* Stretch or fold any secret of 16+ bytes into the 32-byte key. */
		if (config->reset_secret_len < 16) {
			rv = -EINVAL;
			goto out_buckets;
		}
		gnutls_hash_fast(GNUTLS_DIG_SHA256, config->reset_secret,
		    config->reset_secret_len, srv->static_secret);
	} else if (gnutls_rnd(GNUTLS_RND_KEY, srv->static_secret,
	    sizeof(srv->static_secret)) < 0) {
		rv = -EIO;
		goto out_buckets;
	}
	srv->cfg.reset_secret = NULL;	/* copied; the caller's buffer is not kept */
	if ((rv = quic_cred_load(config->cert_file, config->key_file, &srv->cred)) < 0)
		goto out_buckets;
	/* The paths are the caller's; quic_server_reload() takes new ones. */
	srv->cfg.cert_file = srv->cfg.key_file = NULL;
	if (loop) {
		srv->rbuf = xmalloc(QUIC_RECV_SLOTS * 65536);
		if ((rv = uv_udp_init_ex(loop, &srv->udp,
		    srv->local.ss_family | UV_UDP_RECVMMSG)) < 0)
			goto out_rbuf;
		srv->udp.data = srv;
		if ((rv = uv_udp_bind(&srv->udp, (struct sockaddr *)&srv->local, 0)) < 0)
			goto out_udp;
		srv->locallen = sizeof(srv->local);
		uv_udp_getsockname(&srv->udp, (struct sockaddr *)&srv->local,
		    (int *)&srv->locallen);
		{
			int size = 4 * 1024 * 1024;

			uv_recv_buffer_size((uv_handle_t *)&srv->udp, &size);
		}
		if ((rv = uv_udp_recv_start(&srv->udp, quic_alloc_cb, quic_recv_cb)) < 0)
			goto out_udp;
		uv_check_init(loop, &srv->check);
		srv->check.data = srv;
		uv_check_start(&srv->check, quic_check_cb);
		uv_idle_init(loop, &srv->idle);
		srv->idle.data = srv;
	}
	*ret_server = srv;
	return 0;

out_udp:
	/* libuv references the handle until its close callback: free there. */
	quic_cred_unref(srv->cred);
	free(srv->buckets);
	free(srv->rbuf);
	uv_close((uv_handle_t *)&srv->udp, quic_failed_close_cb);
	return rv;
out_rbuf:
	free(srv->rbuf);
	quic_cred_unref(srv->cred);
out_buckets:
	free(srv->buckets);
out_free:
	free(srv);
	return rv;
}

int
quic_server_reload(struct quic_server *srv, const char *cert_file, const char *key_file)
{
	struct quic_cred *qc;
	int rv;

	if ((rv = quic_cred_load(cert_file, key_file, &qc)) < 0)
		return rv;
	quic_cred_unref(srv->cred);
	srv->cred = qc;
	return 0;
}

uint16_t
quic_server_port(const struct quic_server *srv)
{
	if (srv->local.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&srv->local)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&srv->local)->sin_port);
}

const struct quic_stats *
quic_server_stats(const struct quic_server *srv)
{
	return &srv->stats;
}

static void
quic_server_finish(struct quic_server *srv)
{
	void (*cb)(void *) = srv->close_cb;
	void *arg = srv->close_arg;

	quic_cred_unref(srv->cred);
	free(srv->buckets);
	free(srv->rbuf);
	free(srv);
	if (cb)
		cb(arg);
}

static void
quic_handle_closed(uv_handle_t *h)
{
	struct quic_server *srv = h->data;

	if (--srv->closing_handles == 0)
		quic_server_finish(srv);
}

void
quic_server_close(struct quic_server *srv, void (*cb)(void *), void *arg)
{
	uint64_t ts = quic_now();

	srv->closing = 1;
	srv->close_cb = cb;
	srv->close_arg = arg;
	srv->in_cb++;	/* cancel callbacks may try to answer: nothing more goes out */
	while (srv->conns) {
		struct qconn *c = srv->conns;

		if (c->state == QCONN_OPEN) {
			ngtcp2_connection_close_error_set_application_error(&c->ccerr,
			    NGHTTP3_H3_NO_ERROR, (const uint8_t *)"shutdown", 8);
			c->ccerr_set = 1;
			qconn_start_close(c, ts);
		}
		if (srv->conns == c)
			qconn_delete(c);
	}
	srv->dirty = NULL;
	if (!srv->loop) {
		quic_server_finish(srv);
		return;
	}
	/* Pending sends complete (or are cancelled) before the UDP handle's close cb. */
	uv_check_stop(&srv->check);
	srv->closing_handles += 3;
	uv_close((uv_handle_t *)&srv->check, quic_handle_closed);
	uv_close((uv_handle_t *)&srv->idle, quic_handle_closed);
	uv_close((uv_handle_t *)&srv->udp, quic_handle_closed);
}

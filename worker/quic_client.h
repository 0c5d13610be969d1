/*
 * quic_client: an HTTP/3 client over one QUIC connection (ngtcp2 0.12 +
 * nghttp3 0.8 + GnuTLS), for sandpit-worker, the tests and bench/rpc. It
 * includes only include/sandpit/ and its own headers, so the worker can use it.
 *
 * The server is always verified against the CA file given (and the server name,
 * which may be an IP literal); there is no way to skip verification.
 *
 * Requests run on concurrent bidirectional streams; requests beyond the server's
 * stream credit wait in a queue and go out as credit arrives. Each request gets
 * exactly one response callback: status >= 100 with the body, or a negative
 * error (-ECONNRESET the connection closed, -ECANCELED quic_client_close(),
 * -EMSGSIZE the response exceeded max_response_bytes, SP_EPROTO bad response).
 *
 * Loop mode (loop != NULL, config.send == NULL): a uv_udp socket connected to
 * host:port, a uv_timer_t, clock uv_hrtime(). Manual mode (loop == NULL,
 * config.send set): the caller carries datagrams and time, as with quic_server.
 * Callbacks run from input, expiry and flush processing; quic_client_request()
 * sends at once and may report a connection failure found while doing so.
 * Closing from inside a callback is allowed (it completes when the callback's
 * caller returns).
 */
#ifndef SANDPIT_QUIC_CLIENT_H
#define SANDPIT_QUIC_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

struct quic_client;

typedef void (*quic_client_send_fn)(void *arg, const uint8_t *data, size_t len);

enum quic_client_event {
	QUIC_CLIENT_CONNECTED = 1,	/* handshake done, server verified; err = 0 */
	QUIC_CLIENT_CLOSED,		/* the connection is gone; err says why */
};

/* err for QUIC_CLIENT_CLOSED: -ECONNRESET (peer closed), -ETIMEDOUT (idle or handshake
 * timeout), -EACCES (TLS failed: bad certificate, ALPN refused), SP_EPROTO (protocol). */
typedef void (*quic_client_event_fn)(void *arg, enum quic_client_event ev, int err);

typedef void (*quic_client_response_fn)(void *arg, int status, const uint8_t *body,
    size_t len);

struct quic_client_config {
	const char *host;		/* server address literal */
	uint16_t port;
	const char *ca_file;		/* PEM CA the server certificate must chain to */
	const char *server_name;	/* name or IP to verify; NULL = host */
	const char *alpn;		/* NULL = "h3" (tests offer others) */
	uint64_t initial_rtt_ms;	/* 0 = 5 */
	uint64_t idle_timeout_ms;	/* 0 = 30000 */
	size_t max_response_bytes;	/* 0 = 4 MiB */
	size_t max_queued;		/* requests waiting for stream credit; 0 = 1024 */
	quic_client_send_fn send;	/* manual mode */
	void *send_arg;
};

/*
 * Start connecting. ev(arg, ...) reports the handshake and the end of the
 * connection. Returns 0, -EINVAL, -ENOMEM, -EIO (CA file unreadable or empty) or a
 * uv error from the socket.
 */
int quic_client_new(uv_loop_t *loop, const struct quic_client_config *config,
    quic_client_event_fn ev, void *arg, struct quic_client **ret_client);

/*
 * Send a request. token (may be NULL) becomes "authorization: Bearer TOKEN".
 * The strings and body are copied. Returns 0, -ENOTCONN after the connection
 * closed, -ENOBUFS when the queue is full, -EINVAL or -ENOMEM.
 */
int quic_client_request(struct quic_client *cl, const char *method, const char *path,
    const char *token, const void *body, size_t len, quic_client_response_fn cb,
    void *arg);

/*
 * Close: CONNECTION_CLOSE (H3_NO_ERROR) if still open, every outstanding request
 * gets -ECANCELED, then cb(arg) once every handle is closed (manual mode: before
 * this returns, unless called from a callback, then when that callback returns).
 */
void quic_client_close(struct quic_client *cl, void (*cb)(void *arg), void *arg);

/* Manual mode. The client's own address as the server should see it. */
const struct sockaddr *quic_client_local(const struct quic_client *cl, socklen_t *len);
void quic_client_input(struct quic_client *cl, const uint8_t *data, size_t len, uint64_t ts);
void quic_client_flush(struct quic_client *cl, uint64_t ts);
uint64_t quic_client_expiry(const struct quic_client *cl);
void quic_client_handle_expiry(struct quic_client *cl, uint64_t ts);

/* Requests still waiting for a response (queued or on a stream). */
size_t quic_client_outstanding(const struct quic_client *cl);

#endif

/*
 * quic: the worker channel's HTTP/3 server (ngtcp2 0.12 + nghttp3 0.8 + GnuTLS)
 * on one uv_udp socket bound to one specific address.
 *
 * Each request stream is read into bounded buffers (headers and body), handed to
 * the rpc router as one complete request, and answered with the router's status
 * and JSON body. Limits: max_connections connections (further handshakes are
 * dropped and counted), max_streams concurrent request streams per connection
 * (QUIC stream credit, re-extended as streams close), max_header_bytes and
 * max_body_bytes per request (431 / 413 and STOP_SENDING), idle_timeout.
 * A response with close_conn (401) closes the connection once it is delivered.
 *
 * Errors from ngtcp2, nghttp3 and GnuTLS close that one connection (with
 * CONNECTION_CLOSE when there is still something to say) and are counted; they
 * never reach the caller. Datagrams that are not QUIC, or that name no known
 * connection and are not a valid Initial, are dropped and counted as garbage.
 *
 * Two ways to drive it:
 *  - loop mode (loop != NULL, config.send == NULL): binds host:port with
 *    uv_udp, runs timers with uv_timer_t and flushes once per loop iteration
 *    from a uv_check_t. Clock: uv_hrtime().
 *  - manual mode (loop == NULL, config.send set): no socket and no handles; the
 *    caller feeds datagrams with quic_server_input(), sends what config.send gets,
 *    and drives time with quic_server_flush() / quic_server_handle_expiry()
 *    under its own clock (in-memory tests with loss and reordering).
 */
#ifndef SANDPIT_QUIC_H
#define SANDPIT_QUIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

struct rpc;
struct quic_server;

/* Manual mode: one datagram for remote. Return value ignored (QUIC copes with loss). */
typedef void (*quic_send_fn)(void *arg, const struct sockaddr *remote,
    const uint8_t *data, size_t len);

struct quic_config {
	const char *host;		/* an address literal; 0.0.0.0 and :: are refused */
	uint16_t port;			/* 0 = any (loop mode; see quic_server_port()) */
	const char *cert_file;		/* PEM server certificate chain (read at creation) */
	const char *key_file;		/* PEM private key (idem) */
	uint64_t idle_timeout_ms;	/* 0 = 30000 */
	uint64_t initial_rtt_ms;	/* 0 = 5: the peers are on this host or its bridge */
	size_t max_connections;		/* 0 = 1024 */
	size_t max_connections_per_ip;	/* one sandbox's share; 0 = 64 */
	uint64_t max_streams;		/* concurrent request streams per connection; 0 = 128 */
	size_t max_header_bytes;	/* sum of name+value+32 per field; 0 = 16384 */
	size_t max_body_bytes;		/* 0 = 1 MiB */
	/* Key for stateless-reset tokens (>= 16 bytes, copied). Keep it across restarts
	 * (e.g. a 0600 file in the state directory) so that workers still connected to
	 * a previous instance get a stateless reset at once instead of waiting for their
	 * idle timeout. NULL = random per instance. */
	const uint8_t *reset_secret;
	size_t reset_secret_len;
	quic_send_fn send;		/* manual mode only */
	void *send_arg;
};

struct quic_stats {
	uint64_t datagrams_in, datagrams_out;
	uint64_t garbage;		/* undecodable or unroutable datagrams */
	uint64_t stateless_resets;	/* sent for short-header packets of unknown connections */
	uint64_t send_errors;		/* datagrams the kernel refused or we had to drop */
	uint64_t conns_accepted;
	uint64_t conns_active;
	uint64_t conns_refused;		/* over max_connections(_per_ip), or creation failed */
	uint64_t conns_failed;		/* closed with an error: TLS, ALPN, protocol */
	uint64_t conns_idle_closed;
	uint64_t streams_opened;
	uint64_t requests;		/* complete requests handed to rpc */
	uint64_t refused_requests;	/* 413, 431, malformed */
};

/*
 * Create the server. router is borrowed and must outlive the server. In loop
 * mode the socket is bound before this returns. Returns 0, -EINVAL (bad or
 * wildcard address, missing files, reset_secret shorter than 16 bytes),
 * -EADDRINUSE and other uv errors from bind, or -EIO when the certificate or
 * key cannot be loaded. When bind fails after the handle was created, the
 * memory is released by the loop's next close phase (run the loop before
 * uv_loop_close()).
 */
int quic_server_new(uv_loop_t *loop, const struct quic_config *config,
    struct rpc *router, struct quic_server **ret_server);

/*
 * Load a new certificate chain and key (after cert_ensure() renewed them) for the
 * connections that start from now on; live connections keep theirs. Returns 0,
 * -EINVAL or -EIO (the files cannot be loaded: the old ones stay in use).
 */
int quic_server_reload(struct quic_server *server, const char *cert_file,
    const char *key_file);

/* The bound UDP port (loop mode), for port 0. */
uint16_t quic_server_port(const struct quic_server *server);

const struct quic_stats *quic_server_stats(const struct quic_server *server);

/*
 * Graceful shutdown: every connection gets CONNECTION_CLOSE (H3_NO_ERROR) and
 * is freed, then the socket and handles are closed; cb(arg) runs once after the
 * last close callback (in manual mode, before this returns) and the server is
 * freed after cb returns. Do not use the server after calling this.
 */
void quic_server_close(struct quic_server *server, void (*cb)(void *arg), void *arg);

/* Manual mode: one datagram from remote, received at ts (ns, caller's clock). */
void quic_server_input(struct quic_server *server, const struct sockaddr *remote,
    socklen_t remotelen, const uint8_t *data, size_t len, uint64_t ts);
/* Manual mode: write what every connection has to send. */
void quic_server_flush(struct quic_server *server, uint64_t ts);
/* Manual mode: the earliest timer deadline (ns) or UINT64_MAX. */
uint64_t quic_server_expiry(const struct quic_server *server);
/* Manual mode: run every timer due at ts, then flush. */
void quic_server_handle_expiry(struct quic_server *server, uint64_t ts);

#endif

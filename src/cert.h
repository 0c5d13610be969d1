/*
 * cert: the daemon's own certificate authority and the server certificate the
 * worker channel presents (GnuTLS, ECDSA P-256).
 *
 * Files in the given directory, written atomically (temporary file + rename):
 *   ca.pem          the CA certificate, 0644: handed to every sandbox
 *   ca-key.pem      the CA key, 0600: never leaves the state directory
 *   server.pem      the server certificate, 0644, signed by the CA
 *   server-key.pem  the server key, 0600
 * The server certificate names 127.0.0.1, ::1, "localhost" and every address given.
 */
#ifndef SANDPIT_CERT_H
#define SANDPIT_CERT_H

#include <stddef.h>
#include <time.h>

#define CERT_CA_FILE		"ca.pem"
#define CERT_CA_KEY_FILE	"ca-key.pem"
#define CERT_SERVER_FILE	"server.pem"
#define CERT_SERVER_KEY_FILE	"server-key.pem"

#define CERT_CA_LIFETIME	(10L * 365 * 24 * 3600)
#define CERT_SERVER_LIFETIME	(30L * 24 * 3600)
#define CERT_RENEW_BEFORE	(7L * 24 * 3600)

struct cert_options {
	const char *dir;		/* must exist; the caller owns it */
	const char *const *ips;		/* extra IPv4/IPv6 literals for the SAN, may be NULL */
	size_t nips;
	long server_lifetime;		/* seconds; 0 = CERT_SERVER_LIFETIME */
	long renew_before;		/* seconds; 0 = CERT_RENEW_BEFORE */
	time_t now;			/* 0 = time(NULL); tests pass a fake clock */
};

/* What cert_ensure() did, as bits in *ret_done. */
#define CERT_DID_CA	0x1	/* created a new CA (and therefore a new server cert) */
#define CERT_DID_SERVER	0x2	/* issued a new server certificate */

/*
 * Make sure a valid CA and server certificate exist in opt->dir: create the CA
 * when it is missing, (re)issue the server certificate when it is missing,
 * expires within renew_before, is not signed by the CA, or lacks one of the
 * addresses. Synchronous (key generation takes a few ms); call at start-up and
 * from a daily timer. *ret_done (may be NULL) gets CERT_DID_* bits.
 * Returns 0, -EINVAL (bad address literal), -errno from the file system, or
 * SP_EPROTO when an existing file cannot be parsed (it is left alone).
 */
int cert_ensure(const struct cert_options *opt, unsigned *ret_done);

/*
 * The expiry time of the server certificate in dir (for metrics and for the
 * renewal timer). Returns 0 or a negative error as cert_ensure().
 */
int cert_server_expiry(const char *dir, time_t *ret_expiry);

#endif

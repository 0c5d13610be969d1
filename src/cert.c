/*
 * cert: creates and renews the daemon's CA and server certificate with GnuTLS.
 * It owns only the four files in the directory it is given; it never logs, never
 * deletes a file it cannot parse (that is an operator's call), and never lets a
 * private key exist on disk with a mode wider than 0600, even for a moment.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "sandpit/error.h"
#include "cert.h"
#include "xmalloc.h"

static int
cert_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Write data to dir/name with mode, atomically: a crash leaves the old file or the new. */
static int
cert_write_file(const char *dir, const char *name, const gnutls_datum_t *data, mode_t mode)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	size_t off = 0;
	int fd, ret;

	if ((ret = cert_path(path, sizeof(path), dir, name)) < 0)
		return ret;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	/* open() applies the umask; the mode must be exact either way. */
	if (fchmod(fd, mode) < 0)
		goto out_errno;
	while (off < data->size) {
		ssize_t n = write(fd, data->data + off, data->size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out_errno;
		off += (size_t)n;
	}
	if (fsync(fd) < 0)
		goto out_errno;
	close(fd);
	if (rename(tmp, path) < 0) {
		ret = -errno;
		unlink(tmp);
		return ret;
	}
	return 0;

out_errno:
	ret = -errno;
	close(fd);
	unlink(tmp);
	return ret;
}

/* Read dir/name; -ENOENT when it does not exist. Free with gnutls_free(). */
static int
cert_read_file(const char *dir, const char *name, gnutls_datum_t *out)
{
	char path[PATH_MAX];
	int ret;

	if ((ret = cert_path(path, sizeof(path), dir, name)) < 0)
		return ret;
	if (access(path, F_OK) < 0)
		return -errno;
	if (gnutls_load_file(path, out) < 0)
		return -EIO;
	return 0;
}

static int
cert_load_crt(const char *dir, const char *name, gnutls_x509_crt_t *ret_crt)
{
	gnutls_datum_t d;
	gnutls_x509_crt_t crt;
	int ret;

	if ((ret = cert_read_file(dir, name, &d)) < 0)
		return ret;
	gnutls_x509_crt_init(&crt);
	ret = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
	gnutls_free(d.data);
	if (ret < 0) {
		gnutls_x509_crt_deinit(crt);
		return SP_EPROTO;
	}
	*ret_crt = crt;
	return 0;
}

static int
cert_load_key(const char *dir, const char *name, gnutls_x509_privkey_t *ret_key)
{
	gnutls_datum_t d;
	gnutls_x509_privkey_t key;
	int ret;

	if ((ret = cert_read_file(dir, name, &d)) < 0)
		return ret;
	gnutls_x509_privkey_init(&key);
	ret = gnutls_x509_privkey_import(key, &d, GNUTLS_X509_FMT_PEM);
	gnutls_memset(d.data, 0, d.size);
	gnutls_free(d.data);
	if (ret < 0) {
		gnutls_x509_privkey_deinit(key);
		return SP_EPROTO;
	}
	*ret_key = key;
	return 0;
}

static int
cert_new_key(gnutls_x509_privkey_t *ret_key)
{
	gnutls_x509_privkey_t key;

	gnutls_x509_privkey_init(&key);
	if (gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
	    GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0) {
		gnutls_x509_privkey_deinit(key);
		return -EIO;
	}
	*ret_key = key;
	return 0;
}

/* The common part of both certificates: version, serial, validity, DN, key. */
static int
cert_new_crt(gnutls_x509_privkey_t key, const char *cn, time_t now, long lifetime,
    gnutls_x509_crt_t *ret_crt)
{
	gnutls_x509_crt_t crt;
	unsigned char serial[16];

	gnutls_x509_crt_init(&crt);
	if (gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial)) < 0)
		goto out_deinit;
	serial[0] &= 0x7f;	/* a positive INTEGER */
	serial[0] |= 0x01;	/* and never a leading zero byte */
	if (gnutls_x509_crt_set_version(crt, 3) < 0 ||
	    gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) < 0 ||
	    /* A minute of slack for peers whose clock is a little behind. */
	    gnutls_x509_crt_set_activation_time(crt, now - 60) < 0 ||
	    gnutls_x509_crt_set_expiration_time(crt, now + lifetime) < 0 ||
	    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0,
	    "sandpit", 7) < 0 ||
	    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
	    (unsigned)strlen(cn)) < 0 ||
	    gnutls_x509_crt_set_key(crt, key) < 0)
		goto out_deinit;
	*ret_crt = crt;
	return 0;

out_deinit:
	gnutls_x509_crt_deinit(crt);
	return -EIO;
}

static int
cert_export_crt(gnutls_x509_crt_t crt, gnutls_datum_t *out)
{
	return gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, out) < 0 ? -EIO : 0;
}

static int
cert_save(const char *dir, const char *crt_name, gnutls_x509_crt_t crt,
    const char *key_name, gnutls_x509_privkey_t key)
{
	gnutls_datum_t d;
	int ret;

	/* The key first: a certificate without its key would be useless. */
	if (gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &d) < 0)
		return -EIO;
	ret = cert_write_file(dir, key_name, &d, 0600);
	gnutls_memset(d.data, 0, d.size);
	gnutls_free(d.data);
	if (ret < 0)
		return ret;
	if ((ret = cert_export_crt(crt, &d)) < 0)
		return ret;
	ret = cert_write_file(dir, crt_name, &d, 0644);
	gnutls_free(d.data);
	return ret;
}

static int
cert_create_ca(const char *dir, time_t now, gnutls_x509_crt_t *ret_crt,
    gnutls_x509_privkey_t *ret_key)
{
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	unsigned char kid[64];
	size_t kidlen = sizeof(kid);
	int ret;

	if ((ret = cert_new_key(&key)) < 0)
		return ret;
	if ((ret = cert_new_crt(key, "sandpit worker-channel CA", now, CERT_CA_LIFETIME,
	    &crt)) < 0)
		goto out_key;
	ret = -EIO;
	if (gnutls_x509_crt_set_basic_constraints(crt, 1, 0) < 0 ||
	    gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN |
	    GNUTLS_KEY_CRL_SIGN | GNUTLS_KEY_DIGITAL_SIGNATURE) < 0 ||
	    gnutls_x509_crt_get_key_id(crt, 0, kid, &kidlen) < 0 ||
	    gnutls_x509_crt_set_subject_key_id(crt, kid, kidlen) < 0 ||
	    gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0)
		goto out_crt;
	if ((ret = cert_save(dir, CERT_CA_FILE, crt, CERT_CA_KEY_FILE, key)) < 0)
		goto out_crt;
	*ret_crt = crt;
	*ret_key = key;
	return 0;

out_crt:
	gnutls_x509_crt_deinit(crt);
out_key:
	gnutls_x509_privkey_deinit(key);
	return ret;
}

/* Parse an address literal into raw bytes; returns the length (4 or 16) or -EINVAL. */
static int
cert_parse_ip(const char *s, unsigned char out[16])
{
	if (inet_pton(AF_INET, s, out) == 1)
		return 4;
	if (inet_pton(AF_INET6, s, out) == 1)
		return 16;
	return -EINVAL;
}

static int
cert_issue_server(const struct cert_options *opt, time_t now, long lifetime,
    gnutls_x509_crt_t ca, gnutls_x509_privkey_t ca_key)
{
	static const char *const fixed[] = { "127.0.0.1", "::1" };
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	unsigned char kid[64], ip[16];
	size_t kidlen = sizeof(kid), i;
	int ret, n;

	if ((ret = cert_new_key(&key)) < 0)
		return ret;
	if ((ret = cert_new_crt(key, "sandpitd", now, lifetime, &crt)) < 0)
		goto out_key;
	ret = -EIO;
	if (gnutls_x509_crt_set_basic_constraints(crt, 0, -1) < 0 ||
	    gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) < 0 ||
	    gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0) < 0 ||
	    gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
	    GNUTLS_FSAN_APPEND) < 0)
		goto out_crt;
	for (i = 0; i < 2 + opt->nips; i++) {
		const char *s = i < 2 ? fixed[i] : opt->ips[i - 2];

		if ((n = cert_parse_ip(s, ip)) < 0) {
			ret = n;
			goto out_crt;
		}
		if (gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip,
		    (unsigned)n, GNUTLS_FSAN_APPEND) < 0)
			goto out_crt;
	}
	if (gnutls_x509_crt_get_key_id(crt, 0, kid, &kidlen) < 0 ||
	    gnutls_x509_crt_set_subject_key_id(crt, kid, kidlen) < 0)
		goto out_crt;
	kidlen = sizeof(kid);
	if (gnutls_x509_crt_get_subject_key_id(ca, kid, &kidlen, NULL) < 0 ||
	    gnutls_x509_crt_set_authority_key_id(crt, kid, kidlen) < 0 ||
	    gnutls_x509_crt_sign2(crt, ca, ca_key, GNUTLS_DIG_SHA256, 0) < 0)
		goto out_crt;
	ret = cert_save(opt->dir, CERT_SERVER_FILE, crt, CERT_SERVER_KEY_FILE, key);

out_crt:
	gnutls_x509_crt_deinit(crt);
out_key:
	gnutls_x509_privkey_deinit(key);
	return ret;
}

/* Does the server certificate still serve: signed by ca, not near expiry, all addresses? */
static int
cert_server_ok(const struct cert_options *opt, time_t now, long renew_before,
    gnutls_x509_crt_t ca)
{
	gnutls_x509_crt_t crt;
	unsigned status = 0;
	size_t i;
	int ok = 0;

	if (cert_load_crt(opt->dir, CERT_SERVER_FILE, &crt) < 0)
		return 0;
	if (gnutls_x509_crt_verify(crt, &ca, 1, 0, &status) < 0 || status != 0)
		goto out;
	if (gnutls_x509_crt_get_expiration_time(crt) - renew_before <= now)
		goto out;
	for (i = 0; i < opt->nips; i++) {
		unsigned char ip[16];
		int n = cert_parse_ip(opt->ips[i], ip);

		if (n < 0 || !gnutls_x509_crt_check_ip(crt, ip, (unsigned)n, 0))
			goto out;
	}
	ok = 1;
out:
	gnutls_x509_crt_deinit(crt);
	return ok;
}

int
cert_ensure(const struct cert_options *opt, unsigned *ret_done)
{
	gnutls_x509_crt_t ca = NULL;
	gnutls_x509_privkey_t ca_key = NULL;
	time_t now = opt->now ? opt->now : time(NULL);
	long lifetime = opt->server_lifetime > 0 ? opt->server_lifetime : CERT_SERVER_LIFETIME;
	long renew = opt->renew_before > 0 ? opt->renew_before : CERT_RENEW_BEFORE;
	unsigned done = 0;
	unsigned char ip[16];
	size_t i;
	int ret;

	for (i = 0; i < opt->nips; i++)
		if (cert_parse_ip(opt->ips[i], ip) < 0)
			return -EINVAL;
	/* A server certificate that outlives its renewal window is renewed at once. */
	if (renew >= lifetime)
		renew = lifetime / 2;

	ret = cert_load_crt(opt->dir, CERT_CA_FILE, &ca);
	if (ret == 0)
		ret = cert_load_key(opt->dir, CERT_CA_KEY_FILE, &ca_key);
	if (ret == -ENOENT) {
		if (ca) {
			/* A CA certificate without its key: the operator must decide. */
			gnutls_x509_crt_deinit(ca);
			return -ENOENT;
		}
		if ((ret = cert_create_ca(opt->dir, now, &ca, &ca_key)) < 0)
			return ret;
		done |= CERT_DID_CA;
	} else if (ret < 0) {
		if (ca)
			gnutls_x509_crt_deinit(ca);
		return ret;
	}

	if ((done & CERT_DID_CA) || !cert_server_ok(opt, now, renew, ca)) {
		if ((ret = cert_issue_server(opt, now, lifetime, ca, ca_key)) < 0)
			goto out;
		done |= CERT_DID_SERVER;
	}
	if (ret_done)
		*ret_done = done;
	ret = 0;
out:
	gnutls_x509_privkey_deinit(ca_key);
	gnutls_x509_crt_deinit(ca);
	return ret;
}

int
cert_server_expiry(const char *dir, time_t *ret_expiry)
{
	gnutls_x509_crt_t crt;
	int ret;

	if ((ret = cert_load_crt(dir, CERT_SERVER_FILE, &crt)) < 0)
		return ret;
	*ret_expiry = gnutls_x509_crt_get_expiration_time(crt);
	gnutls_x509_crt_deinit(crt);
	return 0;
}

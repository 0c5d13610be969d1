/* The daemon's CA and server certificate: creation, modes, reuse, renewal, SANs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "sandpit/error.h"
#include "cert.h"

struct dir {
	char path[32];
};

static void
dir_new(struct dir *d)
{
	strcpy(d->path, "/tmp/sp-cert-XXXXXX");
	assert_non_null(mkdtemp(d->path));
}

static void
dir_rm(struct dir *d)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->path);
	assert_int_equal(system(cmd), 0);
}

static mode_t
mode_of(struct dir *d, const char *name)
{
	char p[96];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", d->path, name);
	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 07777;
}

static gnutls_x509_crt_t
load(struct dir *d, const char *name)
{
	char p[96];
	gnutls_datum_t data;
	gnutls_x509_crt_t crt;

	snprintf(p, sizeof(p), "%s/%s", d->path, name);
	assert_int_equal(gnutls_load_file(p, &data), 0);
	gnutls_x509_crt_init(&crt);
	assert_int_equal(gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM), 0);
	gnutls_free(data.data);
	return crt;
}

/* Verify server.pem against ca.pem for hostname (an IP literal works too). */
static int
verifies(struct dir *d, const char *hostname, unsigned flags)
{
	gnutls_x509_crt_t ca = load(d, CERT_CA_FILE), srv = load(d, CERT_SERVER_FILE);
	gnutls_x509_trust_list_t tl;
	unsigned status = 1;

	gnutls_x509_trust_list_init(&tl, 0);
	assert_true(gnutls_x509_trust_list_add_cas(tl, &ca, 1, 0) == 1);
	assert_int_equal(gnutls_x509_trust_list_verify_crt(tl, &srv, 1, flags, &status, NULL), 0);
	if (status == 0 && hostname && !gnutls_x509_crt_check_hostname(srv, hostname))
		status = 1;
	gnutls_x509_trust_list_deinit(tl, 1);	/* frees ca too */
	gnutls_x509_crt_deinit(srv);
	return status == 0;
}

static void
test_create_modes_and_reuse(void **state)
{
	static const char *const ips[] = { "172.30.0.1", "fd00::1" };
	struct cert_options opt = { 0 };
	struct dir d;
	unsigned done = 0;
	time_t exp1, exp2;

	dir_new(&d);
	umask(0);	/* the modes must not depend on the caller's umask */
	opt.dir = d.path;
	opt.ips = ips;
	opt.nips = 2;
	assert_int_equal(cert_ensure(&opt, &done), 0);
	umask(022);
	assert_int_equal(done, CERT_DID_CA | CERT_DID_SERVER);
	assert_int_equal(mode_of(&d, CERT_CA_FILE), 0644);
	assert_int_equal(mode_of(&d, CERT_CA_KEY_FILE), 0600);
	assert_int_equal(mode_of(&d, CERT_SERVER_FILE), 0644);
	assert_int_equal(mode_of(&d, CERT_SERVER_KEY_FILE), 0600);
	assert_true(verifies(&d, "127.0.0.1", 0));
	assert_true(verifies(&d, "172.30.0.1", 0));
	assert_true(verifies(&d, "fd00::1", 0));
	assert_true(verifies(&d, "localhost", 0));
	assert_false(verifies(&d, "10.9.9.9", 0));
	assert_false(verifies(&d, "example.com", 0));

	/* A second start changes nothing. */
	assert_int_equal(cert_server_expiry(d.path, &exp1), 0);
	assert_int_equal(cert_ensure(&opt, &done), 0);
	assert_int_equal(done, 0);
	assert_int_equal(cert_server_expiry(d.path, &exp2), 0);
	assert_int_equal(exp1, exp2);
	assert_true(exp1 > time(NULL) + CERT_SERVER_LIFETIME - 3600);

	/* A new address: a new server certificate under the same CA. */
	opt.nips = 1;
	{
		static const char *const more[] = { "172.31.0.1" };

		opt.ips = more;
		assert_int_equal(cert_ensure(&opt, &done), 0);
		assert_int_equal(done, CERT_DID_SERVER);
		assert_true(verifies(&d, "172.31.0.1", 0));
	}
	dir_rm(&d);
}

static void
test_renewal(void **state)
{
	struct cert_options opt = { 0 };
	struct dir d;
	unsigned done;
	time_t now = time(NULL), exp1, exp2;

	dir_new(&d);
	opt.dir = d.path;
	opt.now = now;
	assert_int_equal(cert_ensure(&opt, &done), 0);
	assert_int_equal(cert_server_expiry(d.path, &exp1), 0);
	/* Just before the renewal window: kept. */
	opt.now = exp1 - CERT_RENEW_BEFORE - 10;
	assert_int_equal(cert_ensure(&opt, &done), 0);
	assert_int_equal(done, 0);
	/* Inside it: renewed, the CA kept, and the new one chains to it. */
	opt.now = exp1 - CERT_RENEW_BEFORE + 10;
	assert_int_equal(cert_ensure(&opt, &done), 0);
	assert_int_equal(done, CERT_DID_SERVER);
	assert_int_equal(cert_server_expiry(d.path, &exp2), 0);
	assert_true(exp2 > exp1);
	/* It starts at the simulated date, weeks ahead: check the chain, not the time. */
	assert_true(verifies(&d, "127.0.0.1", GNUTLS_VERIFY_DISABLE_TIME_CHECKS));
	dir_rm(&d);
}

static void
test_errors(void **state)
{
	static const char *const bad[] = { "not-an-ip" };
	struct cert_options opt = { 0 };
	struct dir d;
	char p[96];
	FILE *f;

	dir_new(&d);
	opt.dir = d.path;
	opt.ips = bad;
	opt.nips = 1;
	assert_int_equal(cert_ensure(&opt, NULL), -EINVAL);
	opt.nips = 0;
	/* A corrupt CA is reported, not replaced. */
	snprintf(p, sizeof(p), "%s/%s", d.path, CERT_CA_FILE);
	f = fopen(p, "w");
	fputs("garbage", f);
	fclose(f);
	assert_int_equal(cert_ensure(&opt, NULL), SP_EPROTO);
	opt.dir = "/nonexistent/sandpit";
	assert_true(cert_ensure(&opt, NULL) < 0);
	dir_rm(&d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_modes_and_reuse),
		cmocka_unit_test(test_renewal),
		cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Worker tokens: sign/verify, expiry, revocation, forgery, malformed input, key file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sandpit/error.h"
#include "auth.h"

static const uint8_t key1[AUTH_KEY_LEN] = { 1, 2, 3 };
static const uint8_t key2[AUTH_KEY_LEN] = { 9, 9, 9 };
static const char *const scopes[] = { "worker", "memory:read" };

/* Not inlined: GCC 12 at -O2 mistakes the returned token for a pointer to
 * this frame's local (a -Wdangling-pointer false positive). */
static __attribute__((noinline)) char *
sign(struct auth *a, const char *sub, long ttl, time_t now, char *jti)
{
	char *tok = NULL;

	assert_int_equal(auth_sign(a, sub, "acme", scopes, 2, ttl, now, &tok, jti), 0);
	return tok;
}

static void
test_roundtrip(void **state)
{
	struct auth *a;
	struct auth_claims c;
	char jti[AUTH_JTI_LEN + 1], *tok;

	assert_int_equal(auth_new_with_key(key1, &a), 0);
	tok = sign(a, "sb-3f2a", 600, 1000000, jti);
	assert_int_equal(strlen(jti), AUTH_JTI_LEN);
	assert_int_equal(auth_verify(a, tok, strlen(tok), 1000100, &c), 0);
	assert_string_equal(c.sub, "sb-3f2a");
	assert_string_equal(c.tenant, "acme");
	assert_string_equal(c.jti, jti);
	assert_int_equal(c.iat, 1000000);
	assert_int_equal(c.exp, 1000600);
	assert_int_equal(c.nscope, 2);
	assert_true(auth_has_scope(&c, "worker"));
	assert_true(auth_has_scope(&c, "memory:read"));
	assert_false(auth_has_scope(&c, "admin"));
	free(tok);
	auth_free(a);
}

static void
test_expired(void **state)
{
	struct auth *a;
	struct auth_claims c;
	char *tok;

	assert_int_equal(auth_new_with_key(key1, &a), 0);
	tok = sign(a, "sb-1", 60, 1000000, NULL);
	assert_int_equal(auth_verify(a, tok, strlen(tok), 1000059, &c), 0);
	memset(&c, 0x77, sizeof(c));
	assert_int_equal(auth_verify(a, tok, strlen(tok), 1000060, &c), -EKEYEXPIRED);
	assert_int_equal((unsigned char)c.sub[0], 0x77);	/* untouched on failure */
	free(tok);
	auth_free(a);
}

static void
test_revoked(void **state)
{
	struct auth *a;
	struct auth_claims c;
	char jti[AUTH_JTI_LEN + 1], *tok, *other;
	time_t now = time(NULL);

	assert_int_equal(auth_new_with_key(key1, &a), 0);
	tok = sign(a, "sb-1", 60, now, jti);
	other = sign(a, "sb-1", 60, now, NULL);
	assert_int_equal(auth_revoke(a, jti, now + 60), 0);
	assert_int_equal(auth_revoke(a, jti, now + 60), 0);	/* idempotent */
	assert_int_equal(auth_revoked_count(a, now), 1);
	assert_int_equal(auth_verify(a, tok, strlen(tok), now, &c), -EKEYREVOKED);
	assert_int_equal(auth_verify(a, other, strlen(other), now, &c), 0);
	/* After the token's own expiry the entry is pruned. */
	assert_int_equal(auth_revoked_count(a, now + 61), 0);
	assert_int_equal(auth_revoke(a, "bad jti!", now), SP_EINVAL);
	free(tok);
	free(other);
	auth_free(a);
}

static void
test_forged(void **state)
{
	struct auth *a, *b;
	struct auth_claims c;
	char *tok, *p, *forged;
	size_t len;

	assert_int_equal(auth_new_with_key(key1, &a), 0);
	assert_int_equal(auth_new_with_key(key2, &b), 0);
	tok = sign(b, "sb-1", 60, 0, NULL);
	/* Signed with another key. */
	assert_int_equal(auth_verify(a, tok, strlen(tok), 0, &c), -EACCES);
	free(tok);

	tok = sign(a, "sb-1", 60, 0, NULL);
	len = strlen(tok);
	/* One flipped bit in the signature. */
	forged = strdup(tok);
	forged[len - 3] = forged[len - 3] == 'A' ? 'B' : 'A';
	assert_int_equal(auth_verify(a, forged, len, 0, &c), -EACCES);
	free(forged);
	/* Another sandbox's payload under this token's signature. */
	{
		char *tok2 = sign(a, "sb-2", 60, 0, NULL);

		assert_true(asprintf(&forged, "%.*s%s", (int)(strrchr(tok2, '.') - tok2), tok2,
		    strrchr(tok, '.')) > 0);
		assert_int_equal(auth_verify(a, forged, strlen(forged), 0, &c), -EACCES);
		free(forged);
		free(tok2);
	}
	/* alg "none" with no signature. */
	p = strchr(tok, '.');
	assert_true(asprintf(&forged, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0%.*s.",
	    (int)(strrchr(tok, '.') - p), p) > 0);
	assert_int_equal(auth_verify(a, forged, strlen(forged), 0, &c), SP_EINVAL);
	free(forged);
	free(tok);
	auth_free(a);
	auth_free(b);
}

/* A validly signed token whose claims are bad must still be refused. */
static char *
sign_raw(const uint8_t *key, const char *payload)
{
	static const char hdr[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
	unsigned char mac[32], b64[512];
	unsigned maclen;
	char *s, *out, *p;
	int n;

	n = EVP_EncodeBlock(b64, (const unsigned char *)payload, (int)strlen(payload));
	while (n > 0 && b64[n - 1] == '=')
		b64[--n] = '\0';
	for (p = (char *)b64; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	assert_true(asprintf(&s, "%s.%s", hdr, b64) > 0);
	HMAC(EVP_sha256(), key, AUTH_KEY_LEN, (unsigned char *)s, strlen(s), mac, &maclen);
	n = EVP_EncodeBlock(b64, mac, 32);
	while (n > 0 && b64[n - 1] == '=')
		b64[--n] = '\0';
	for (p = (char *)b64; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	assert_true(asprintf(&out, "%s.%s", s, b64) > 0);
	free(s);
	return out;
}

static void
test_malformed(void **state)
{
	static const char *const bad_payloads[] = {
		"[]",
		"{\"sub\":\"sb\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,\"exp\":9999999999}",
		"{\"sub\":\"s b\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,\"exp\":9999999999,\"scope\":[]}",
		"{\"sub\":\"sb\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,\"exp\":\"x\",\"scope\":[]}",
		"{\"sub\":\"sb\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,\"exp\":9999999999,\"scope\":[1]}",
		"{\"sub\":\"sb\",\"sub\":\"sc\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,\"exp\":9999999999,\"scope\":[]}",
		"not json",
	};
	static const char *const garbage[] = { "", "a", "a.b", "a.b.c", "..", "a.b.c.d",
		"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.!!.??" };
	struct auth *a;
	struct auth_claims c;
	char *tok, big[AUTH_TOKEN_MAX + 2];
	size_t i;

	assert_int_equal(auth_new_with_key(key1, &a), 0);
	tok = sign_raw(key1, "{\"sub\":\"sb\",\"tenant\":\"t\",\"jti\":\"j1\",\"iat\":1,"
	    "\"exp\":9999999999,\"scope\":[\"worker\"]}");
	assert_int_equal(auth_verify(a, tok, strlen(tok), 0, &c), 0);	/* the helper is right */
	free(tok);
	for (i = 0; i < sizeof(bad_payloads) / sizeof(*bad_payloads); i++) {
		tok = sign_raw(key1, bad_payloads[i]);
		assert_int_equal(auth_verify(a, tok, strlen(tok), 0, &c), SP_EINVAL);
		free(tok);
	}
	for (i = 0; i < sizeof(garbage) / sizeof(*garbage); i++) {
		int rv = auth_verify(a, garbage[i], strlen(garbage[i]), 0, &c);

		assert_true(rv == SP_EINVAL || rv == -EACCES);
	}
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(auth_verify(a, big, strlen(big), 0, &c), SP_EINVAL);
	/* Bad arguments to sign. */
	assert_int_equal(auth_sign(a, "", "t", NULL, 0, 60, 0, &tok, NULL), SP_EINVAL);
	assert_int_equal(auth_sign(a, "sb", "t\"x", NULL, 0, 60, 0, &tok, NULL), SP_EINVAL);
	assert_int_equal(auth_sign(a, "sb", "t", NULL, 0, 0, 0, &tok, NULL), SP_EINVAL);
	auth_free(a);
}

static void
test_key_file(void **state)
{
	char dir[] = "/tmp/sp-auth-XXXXXX", path[64], cmd[96];
	struct auth *a, *b;
	struct auth_claims c;
	struct stat st;
	char *tok;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/worker.key", dir);
	assert_int_equal(auth_new(path, &a), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, AUTH_KEY_LEN);
	/* The same key after a restart: old tokens stay valid. */
	tok = sign(a, "sb-1", 60, 0, NULL);
	assert_int_equal(auth_new(path, &b), 0);
	assert_int_equal(auth_verify(b, tok, strlen(tok), 0, &c), 0);
	auth_free(b);
	/* A key readable by others is refused. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(auth_new(path, &b), -EPERM);
	/* A truncated key is refused. */
	assert_int_equal(chmod(path, 0600), 0);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short", 5), 5);
	close(fd);
	assert_int_equal(auth_new(path, &b), SP_ECONFIG);
	free(tok);
	auth_free(a);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_revoked),
		cmocka_unit_test(test_forged),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_key_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

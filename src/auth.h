/*
 * auth: worker identity tokens. A token is a JWT (RFC 7519) signed with
 * HMAC-SHA-256 (HS256) under a 32-byte key that only the daemon holds. Claims:
 *   sub     the sandbox id          tenant  the tenant name
 *   scope   an array of strings     exp/iat seconds since the epoch
 *   jti     a random token id (32 hex digits), the handle for revocation
 * Verification is constant-time in the signature (CRYPTO_memcmp) and checks
 * alg, exp, the revocation set and the shape of every claim.
 */
#ifndef SANDPIT_AUTH_H
#define SANDPIT_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AUTH_KEY_LEN		32
#define AUTH_TOKEN_MAX		4096	/* longer tokens are refused before decoding */
#define AUTH_ID_MAX		64	/* sub and tenant */
#define AUTH_SCOPE_MAX		32	/* one scope string */
#define AUTH_MAX_SCOPES		16
#define AUTH_JTI_LEN		32

struct auth;

struct auth_claims {
	char sub[AUTH_ID_MAX + 1];
	char tenant[AUTH_ID_MAX + 1];
	char jti[AUTH_JTI_LEN + 1];
	char scope[AUTH_MAX_SCOPES][AUTH_SCOPE_MAX + 1];
	size_t nscope;
	int64_t iat, exp;
};

/*
 * Load the key from key_path, or create it (32 random bytes, mode 0600) when the
 * file does not exist. A key file with a mode wider than 0600 or the wrong size
 * is refused (-EPERM / SP_ECONFIG). Returns 0 or a negative error.
 */
int auth_new(const char *key_path, struct auth **ret_auth);

/* An instance with the given key (tests, benches). */
int auth_new_with_key(const uint8_t key[AUTH_KEY_LEN], struct auth **ret_auth);

/* Frees the key (wiped) and the revocation set. NULL is fine. */
void auth_free(struct auth *auth);

/*
 * Sign a token for sandbox sub of tenant with the given scopes, valid for ttl
 * seconds from now (0 = time(NULL)). *ret_token is heap memory the caller frees;
 * ret_jti (may be NULL) receives the token id. Returns 0 or SP_EINVAL when an
 * argument is empty, too long, or has characters outside [A-Za-z0-9._:-].
 */
int auth_sign(struct auth *auth, const char *sub, const char *tenant,
    const char *const *scope, size_t nscope, long ttl, time_t now,
    char **ret_token, char ret_jti[AUTH_JTI_LEN + 1]);

/*
 * Verify token at time now (0 = time(NULL)) and fill *ret. Returns 0,
 * SP_EINVAL (malformed, wrong alg, bad claims), -EACCES (bad signature),
 * -EKEYEXPIRED (exp passed) or -EKEYREVOKED (jti revoked). *ret is
 * untouched on failure.
 */
int auth_verify(struct auth *auth, const char *token, size_t len, time_t now,
    struct auth_claims *ret);

/*
 * Revoke the token jti until exp (after which it fails verification anyway and
 * the entry is pruned). Returns 0 or SP_EINVAL for a malformed jti.
 */
int auth_revoke(struct auth *auth, const char *jti, int64_t exp);

/* Number of entries in the revocation set (after pruning at now). */
size_t auth_revoked_count(struct auth *auth, time_t now);

/* 1 when claims carry scope, else 0. */
int auth_has_scope(const struct auth_claims *claims, const char *scope);

#endif

/*
 * auth: signs and verifies worker tokens (JWT HS256) with OpenSSL's HMAC and
 * keeps the revocation set. The crypto is OpenSSL's; this file only encodes.
 * It never logs a token or the key, and never trusts a claim before the
 * signature over it has been checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sandpit/error.h"
#include "auth.h"
#include "xmalloc.h"

struct auth_revoked {
	char jti[AUTH_JTI_LEN + 1];
	int64_t exp;
};

struct auth {
	uint8_t key[AUTH_KEY_LEN];
	struct auth_revoked *revoked;
	size_t nrevoked, caprevoked;
};

/* {"alg":"HS256","typ":"JWT"}, fixed so the header is never parsed for the alg. */
static const char auth_header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

int
auth_new_with_key(const uint8_t key[AUTH_KEY_LEN], struct auth **ret_auth)
{
	struct auth *auth = xcalloc(1, sizeof(*auth));

	memcpy(auth->key, key, AUTH_KEY_LEN);
	*ret_auth = auth;
	return 0;
}

int
auth_new(const char *key_path, struct auth **ret_auth)
{
	uint8_t key[AUTH_KEY_LEN];
	struct stat st;
	ssize_t n;
	int fd, ret;

	fd = open(key_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
			return -EIO;
		fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		if (fchmod(fd, 0600) < 0 || write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) ||
		    fsync(fd) < 0) {
			ret = errno ? -errno : -EIO;
			close(fd);
			unlink(key_path);
			return ret;
		}
		close(fd);
		ret = auth_new_with_key(key, ret_auth);
		OPENSSL_cleanse(key, sizeof(key));
		return ret;
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	if ((st.st_mode & 077) != 0) {
		ret = -EPERM;
		goto out_close;
	}
	n = read(fd, key, sizeof(key));
	if (n != (ssize_t)sizeof(key) || st.st_size != (off_t)sizeof(key)) {
		ret = SP_ECONFIG;
		goto out_close;
	}
	ret = auth_new_with_key(key, ret_auth);
out_close:
	OPENSSL_cleanse(key, sizeof(key));
	close(fd);
	return ret;
}

void
auth_free(struct auth *auth)
{
	if (!auth)
		return;
	OPENSSL_cleanse(auth->key, sizeof(auth->key));
	free(auth->revoked);
	free(auth);
}

/* base64url without padding; out must hold 4*ceil(len/3)+1 bytes. */
static size_t
auth_b64url(char *out, const uint8_t *in, size_t len)
{
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	size_t i;

	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (i = 0; i < (size_t)n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return (size_t)n;
}

/* Decode base64url (no padding) into out (cap bytes); returns the length or -1. */
static ssize_t
auth_b64url_decode(uint8_t *out, size_t cap, const char *in, size_t len)
{
	char *tmp;
	size_t i, padded = (len + 3) / 4 * 4;
	int n;

	if (len % 4 == 1 || padded / 4 * 3 > cap)
		return -1;
	tmp = xmalloc(padded + 1);
	for (i = 0; i < len; i++) {
		char c = in[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '+' || c == '/' || c == '=')
			goto out_bad;
		tmp[i] = c;
	}
	for (; i < padded; i++)
		tmp[i] = '=';
	tmp[padded] = '\0';
	n = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
	free(tmp);
	if (n < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	return n - (ssize_t)(padded - len);
out_bad:
	free(tmp);
	return -1;
}

static int
auth_valid_id(const char *s, size_t max)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > max)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

static void
auth_mac(struct auth *auth, const char *data, size_t len, uint8_t mac[32])
{
	unsigned maclen = 32;

	HMAC(EVP_sha256(), auth->key, AUTH_KEY_LEN, (const unsigned char *)data, len,
	    mac, &maclen);
}

int
auth_sign(struct auth *auth, const char *sub, const char *tenant,
    const char *const *scope, size_t nscope, long ttl, time_t now,
    char **ret_token, char ret_jti[AUTH_JTI_LEN + 1])
{
	uint8_t rnd[AUTH_JTI_LEN / 2], mac[32];
	char jti[AUTH_JTI_LEN + 1], *payload, *p64, *signing, macb64[48];
	json_t *claims, *arr;
	size_t i, plen;

	if (!auth_valid_id(sub, AUTH_ID_MAX) || !auth_valid_id(tenant, AUTH_ID_MAX) ||
	    nscope > AUTH_MAX_SCOPES || ttl <= 0)
		return SP_EINVAL;
	for (i = 0; i < nscope; i++)
		if (!auth_valid_id(scope[i], AUTH_SCOPE_MAX))
			return SP_EINVAL;
	if (!now)
		now = time(NULL);
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(jti + 2 * i, 3, "%02x", rnd[i]);

	arr = json_array();
	for (i = 0; i < nscope; i++)
		json_array_append_new(arr, json_string(scope[i]));
	claims = json_pack("{s:s, s:s, s:o, s:I, s:I, s:s}", "sub", sub, "tenant", tenant,
	    "scope", arr, "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti);
	payload = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	if (!payload)
		abort();	/* only out of memory */
	plen = strlen(payload);
	p64 = xmalloc(plen / 3 * 4 + 8);
	auth_b64url(p64, (const uint8_t *)payload, plen);
	free(payload);
	xasprintf(&signing, "%s.%s", auth_header_b64, p64);
	free(p64);
	auth_mac(auth, signing, strlen(signing), mac);
	auth_b64url(macb64, mac, sizeof(mac));
	xasprintf(ret_token, "%s.%s", signing, macb64);
	free(signing);
	if (ret_jti)
		memcpy(ret_jti, jti, sizeof(jti));
	return 0;
}

static int
auth_copy_id(char *dst, json_t *v, size_t max)
{
	const char *s = json_string_value(v);

	if (!s || !auth_valid_id(s, max))
		return -1;
	strcpy(dst, s);
	return 0;
}

static void
auth_prune(struct auth *auth, time_t now)
{
	size_t i = 0;

	while (i < auth->nrevoked) {
		if (auth->revoked[i].exp < now)
			auth->revoked[i] = auth->revoked[--auth->nrevoked];
		else
			i++;
	}
}

static int
auth_is_revoked(struct auth *auth, const char *jti)
{
	size_t i;

	for (i = 0; i < auth->nrevoked; i++)
		if (strcmp(auth->revoked[i].jti, jti) == 0)
			return 1;
	return 0;
}

int
auth_verify(struct auth *auth, const char *token, size_t len, time_t now,
    struct auth_claims *ret)
{
	struct auth_claims c;
	const char *dot1, *dot2;
	uint8_t mac[32], got[48], payload[AUTH_TOKEN_MAX];
	ssize_t gotlen, plen;
	json_t *root, *scope, *v;
	json_error_t jerr;
	size_t i, hlen = sizeof(auth_header_b64) - 1;
	int ret_err = SP_EINVAL;

	if (len == 0 || len > AUTH_TOKEN_MAX || memchr(token, '\0', len))
		return SP_EINVAL;
	dot1 = memchr(token, '.', len);
	if (!dot1)
		return SP_EINVAL;
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
	if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
		return SP_EINVAL;
	/* Our header only: this refuses "alg":"none" and every algorithm confusion. */
	if ((size_t)(dot1 - token) != hlen || memcmp(token, auth_header_b64, hlen) != 0)
		return SP_EINVAL;
	gotlen = auth_b64url_decode(got, sizeof(got), dot2 + 1,
	    len - (size_t)(dot2 + 1 - token));
	if (gotlen != (ssize_t)sizeof(mac))
		return -EACCES;
	auth_mac(auth, token, (size_t)(dot2 - token), mac);
	if (CRYPTO_memcmp(mac, got, sizeof(mac)) != 0)
		return -EACCES;

	/* Signed by us from here on; the shape is still checked, not trusted. */
	plen = auth_b64url_decode(payload, sizeof(payload) - 1, dot1 + 1,
	    (size_t)(dot2 - dot1 - 1));
	if (plen <= 0)
		return SP_EINVAL;
	root = json_loadb((const char *)payload, (size_t)plen, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root))
		goto out;
	memset(&c, 0, sizeof(c));
	if (auth_copy_id(c.sub, json_object_get(root, "sub"), AUTH_ID_MAX) < 0 ||
	    auth_copy_id(c.tenant, json_object_get(root, "tenant"), AUTH_ID_MAX) < 0 ||
	    auth_copy_id(c.jti, json_object_get(root, "jti"), AUTH_JTI_LEN) < 0)
		goto out;
	v = json_object_get(root, "exp");
	if (!json_is_integer(v))
		goto out;
	c.exp = json_integer_value(v);
	v = json_object_get(root, "iat");
	if (!json_is_integer(v))
		goto out;
	c.iat = json_integer_value(v);
	scope = json_object_get(root, "scope");
	if (!json_is_array(scope) || json_array_size(scope) > AUTH_MAX_SCOPES)
		goto out;
	json_array_foreach(scope, i, v)
		if (auth_copy_id(c.scope[i], v, AUTH_SCOPE_MAX) < 0)
			goto out;
	c.nscope = json_array_size(scope);
	if (!now)
		now = time(NULL);
	if (c.exp <= now) {
		ret_err = -EKEYEXPIRED;
		goto out;
	}
	if (auth_is_revoked(auth, c.jti)) {
		ret_err = -EKEYREVOKED;
		goto out;
	}
	*ret = c;
	ret_err = 0;
out:
	json_decref(root);
	return ret_err;
}

int
auth_revoke(struct auth *auth, const char *jti, int64_t exp)
{
	if (!auth_valid_id(jti, AUTH_JTI_LEN))
		return SP_EINVAL;
	if (auth_is_revoked(auth, jti))
		return 0;
	auth_prune(auth, time(NULL));
	if (auth->nrevoked == auth->caprevoked) {
		auth->caprevoked = auth->caprevoked ? 2 * auth->caprevoked : 16;
		auth->revoked = xreallocarray(auth->revoked, auth->caprevoked,
		    sizeof(*auth->revoked));
	}
	strcpy(auth->revoked[auth->nrevoked].jti, jti);
	auth->revoked[auth->nrevoked].exp = exp;
	auth->nrevoked++;
	return 0;
}

size_t
auth_revoked_count(struct auth *auth, time_t now)
{
	auth_prune(auth, now ? now : time(NULL));
	return auth->nrevoked;
}

int
auth_has_scope(const struct auth_claims *claims, const char *scope)
{
	size_t i;

	for (i = 0; i < claims->nscope; i++)
		if (strcmp(claims->scope[i], scope) == 0)
			return 1;
	return 0;
}

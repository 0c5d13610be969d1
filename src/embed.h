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
#include <stdint.h>

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

/*
 * The optional HTTP embedder: an OpenAI-compatible POST {url} with
 * {"model": model, "input": [texts]} answering {"data": [{"index": i,
 * "embedding": [...]}, ...]} (Ollama, TEI, vLLM, llama.cpp server...). It
 * goes through the core's asynchronous HTTP client, so it never blocks the
 * loop, and its callback never fires inside embed_http_request().
 */
struct sp_httpc;
struct sp_http_call;
struct embed_http;

#define EMBED_HTTP_MAX_TEXTS 256
#define EMBED_HTTP_MAX_REPLY (64u << 20)

/*
 * Called once per request: status 0 with vecs (n × dims floats, unit length,
 * valid during the call), or a negative error (SP_EUNAVAIL, SP_ETIMEDOUT,
 * SP_ECANCELED, SP_EPROTO for a bad answer) with a message in err.
 */
typedef void (*embed_http_cb)(void *arg, int status, const float *vecs, size_t n,
			      unsigned dims, const char *err);

/* The client is borrowed and must outlive every request. 0 or SP_ECONFIG. */
int embed_http_new(struct sp_httpc *httpc, const char *url, const char *model,
		   uint64_t timeout_ms, struct embed_http **ret);
void embed_http_free(struct embed_http *e);	/* no request may be pending */
const char *embed_http_model(const struct embed_http *e);
/*
 * Embed texts[0..n) (1 ≤ n ≤ EMBED_HTTP_MAX_TEXTS). *call (may be NULL)
 * receives the handle for sp_http_cancel(). 0, or a negative error (no callback).
 */
int embed_http_request(struct embed_http *e, const char *const *texts, size_t n,
		       embed_http_cb cb, void *arg, struct sp_http_call **call);

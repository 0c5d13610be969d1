/*
 * A vector arena: the in-memory copy of one (tenant, embedding model)'s
 * active memory vectors, searched by an exact scan. Each item keeps its
 * float32 vector (unit length), an int8 copy with a per-vector scale for the
 * fast scan, the norm of its quantisation error, and the metadata the
 * filters need. SQLite stays the durable copy; the memory module loads the
 * arena at start and mirrors every insert, update and delete.
 *
 * Search: the int8 scan ranks every item passing the filter, the top C are
 * re-scored in float32. In exact mode every other item whose int8 score plus
 * its error bound could still reach the k-th float32 score is re-scored too,
 * so the top k equal a float32 brute force's (ties broken by rowid), by
 * construction rather than by luck.
 *
 * Not thread-safe: the loop thread owns every arena.
 */
#ifndef SANDPIT_ARENA_H
#define SANDPIT_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARENA_MAX_TAGS 16
#define ARENA_MAX_EXACT 1000	/* largest exact_k */

struct arena;

/* What the filters see of an item. Strings are kept as 64-bit hashes. */
struct arena_meta {
	int64_t rowid;			/* the item's SQLite rowid: the arena's key */
	uint64_t ns;			/* arena_hash(namespace) */
	uint64_t domain;		/* arena_hash(domain) */
	int64_t created_ms;
	float confidence;
	int8_t outcome;			/* -1 none, 0 failure, 1 success */
	uint8_t ntags;
	uint64_t tags[ARENA_MAX_TAGS];	/* arena_hash(tag) */
};

struct arena_filter {
	bool has_ns, has_domain;
	uint64_t ns, domain;
	int outcome;			/* -2 any, else must equal meta.outcome */
	float min_confidence;
	int64_t min_created_ms;		/* INT64_MIN for none */
	const uint64_t *tags;		/* every one must be on the item */
	unsigned ntags;
};

struct arena_hit {
	int64_t rowid;
	uint32_t idx;			/* position, valid until the next add/remove */
	float sim;			/* float32 cosine */
};

/* A filter that lets everything through. */
void arena_filter_init(struct arena_filter *f);
/* Whether an item's metadata passes f. */
bool arena_filter_pass(const struct arena_meta *m, const struct arena_filter *f);
/* The 64-bit hash the metadata uses for strings (namespace, domain, tags). */
uint64_t arena_hash(const char *s);

struct arena *arena_new(unsigned dims);
void arena_free(struct arena *a);		/* accepts NULL */
unsigned arena_dims(const struct arena *a);
size_t arena_count(const struct arena *a);

/*
 * Add an item (vec: dims floats, normalised here). An existing rowid is
 * replaced. Never fails (xmalloc).
 */
void arena_add(struct arena *a, const struct arena_meta *meta, const float *vec);
/* Remove rowid; false if it was not there. */
bool arena_remove(struct arena *a, int64_t rowid);
/* The metadata of rowid (mutable: confidence changes), or NULL. */
struct arena_meta *arena_get(struct arena *a, int64_t rowid, const float **vec);
/* The float32 vector at position idx. */
const float *arena_vec(const struct arena *a, uint32_t idx);

/*
 * The top c items for unit query q (dims floats) passing f, best first, into
 * out (room for c), scored in float32. Returns how many were found. The
 * first exact_k (≤ ARENA_MAX_EXACT) of them are guaranteed to equal
 * arena_brute()'s first exact_k; the rest are the int8 scan's best, re-scored.
 * exact_k = c makes the whole answer exact (at a higher re-score cost).
 */
size_t arena_search(struct arena *a, const float *q, const struct arena_filter *f,
		    size_t c, size_t exact_k, struct arena_hit *out);
/* The same by float32 brute force (tests, the bench's ground truth). */
size_t arena_brute(struct arena *a, const float *q, const struct arena_filter *f,
		   size_t c, struct arena_hit *out);
/* Number of float32 re-scores the last arena_search() did (tests, bench). */
size_t arena_last_rescored(const struct arena *a);

/* Float32 dot product of two dims-long vectors. */
float arena_dot(const float *a, const float *b, unsigned dims);

#endif

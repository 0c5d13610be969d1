/*
 * The ReasoningBank memory: items distilled from agents' tasks, stored in the
 * daemon's SQLite database, retrieved by relevance (cosine over an in-memory
 * arena per tenant and embedding model, optionally fused with FTS5 BM25),
 * scored by α·sim + β·recency + γ·reliability and diversified by MMR.
 *
 * Every call takes the tenant and every query is scoped by it: nothing of one
 * tenant is ever found, read, changed, consolidated or counted from another.
 * Calls run on the loop thread and are synchronous (short SQLite statements
 * on the store's connection), except consolidation, which runs on the libuv
 * thread pool with its own connection and calls back on the loop.
 *
 * Requests are jansson objects (the control API's and the worker channel's
 * JSON, as in DESIGN.md); answers are new references the caller owns.
 * Errors: SP_EINVAL or SP_ELIMIT with the reason in err (a 4xx, nothing
 * stored), SP_ENOTFOUND, SP_ECONFLICT, SP_EDB (the database failed: full,
 * read-only, corrupt; nothing half-applied).
 *
 * Config directives the integrator maps onto struct memory_config (defaults
 * from memory_config_defaults()):
 *   memory_dimensions N           384     hashing embedder dims (8–4096; 384–1024 advised)
 *   memory_weights A B G          0.65 0.15 0.20   score weights
 *   memory_half_life DURATION     45d     recency half-life (true half-life)
 *   memory_mmr_lambda X           0.7     MMR relevance weight, 0.5–1 (1 = off)
 *   memory_k N                    3       default k
 *   memory_k_max N                20      largest k a search may ask for
 *   memory_min_confidence X       0.3     default min_confidence filter
 *   memory_max_age DURATION       365d    default max_age filter
 *   memory_consolidate_every N    20      inserts per tenant between runs (0: on request only)
 *   memory_dup_threshold X        0.80    cosine for near-duplicates (hashing-calibrated)
 *   memory_contradiction_threshold X 0.55 cosine for contradictions (hashing-calibrated)
 *   memory_prune_age DURATION     180d    unused low-confidence items older than this go
 *   memory_scrub yes|no           yes     scrub secrets/PII from text before storing
 *   memory_max_text SIZE          16k     content bytes (title 512, description 2k)
 *   memory_max_batch N            256     items per insert request
 *   memory_usage_flush DURATION   1s      usage counter batching interval
 *   memory_embedder_url URL       unset   OpenAI-compatible /v1/embeddings endpoint
 *   memory_embedder_model NAME    unset   required with the URL; also the model id stored
 *   memory_embedder_timeout DURATION 30s
 */
#ifndef SANDPIT_MEMORY_H
#define SANDPIT_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

struct store;
struct memory;
struct sp_httpc;

struct memory_config {
	unsigned dimensions;
	float alpha, beta, gamma;
	double half_life_days;
	float lambda;
	unsigned k_default, k_max;
	float min_confidence;
	double max_age_days;
	unsigned consolidate_every;
	float dup_threshold, contradiction_threshold;
	unsigned quarantine_after;		/* contradicts links to well-used items (>) */
	unsigned quarantine_min_usage;		/* "well-used": usage_count ≥ this */
	double prune_age_days;
	float prune_confidence;			/* prune when confidence < this */
	unsigned consolidate_max_new;		/* new items examined per run */
	bool scrub;
	size_t max_title, max_description, max_content, max_query;
	size_t max_trajectory;			/* serialised trajectory JSON bytes */
	unsigned max_batch, max_tags;
	uint64_t usage_flush_ms;
	const char *embedder_url;		/* NULL: the hashing embedder */
	const char *embedder_model;		/* required with embedder_url */
	uint64_t embedder_timeout_ms;		/* 0: 30 s */
	struct sp_httpc *httpc;			/* the core's HTTP client, with embedder_url */
};

/* Fill cfg with the defaults listed above. */
void memory_config_defaults(struct memory_config *cfg);

/*
 * Apply the memory schema (component "memory") to store and load every
 * active item into the arenas. The config is copied (strings too). store
 * must outlive the memory. SP_ECONFIG for a bad config, SP_EDB.
 */
int memory_open(uv_loop_t *loop, struct store *store, const struct memory_config *cfg,
		struct memory **ret);
/*
 * Flush pending usage counts, cancel embedder calls and wait for their
 * callbacks, wait for running consolidations, close the timer, then call
 * cb(arg) from the loop and free m. No other call after. Close the memory
 * before the HTTP client it borrows.
 */
void memory_close(struct memory *m, void (*cb)(void *arg), void *arg);

/*
 * Insert one item (body is the item) or a batch ({"items": [...]}), all in
 * one transaction. *ret: the stored item, or {"items": [...]}.
 */
int memory_add(struct memory *m, const char *tenant, json_t *body, json_t **ret,
	       char *err, size_t errlen);
/* {"query": "...", "k": N, filters...} → {"results": [item + score + parts]}. */
int memory_search(struct memory *m, const char *tenant, json_t *body, json_t **ret,
		  char *err, size_t errlen);
int memory_get(struct memory *m, const char *tenant, const char *id, json_t **ret);
/* Hard delete of the item, its links and its text. */
int memory_delete(struct memory *m, const char *tenant, const char *id);
/*
 * {"ids": [...], "outcome": "success"|"failure"}: confidence moves by
 * +0.05 / −0.025 (clamped to [0,1]), success/failure counts grow.
 * *ret: {"updated": N, "missing": [ids not found in this tenant]}.
 */
int memory_feedback(struct memory *m, const char *tenant, json_t *body, json_t **ret,
		    char *err, size_t errlen);
/* {"task_id", "agent_id", "query", "trajectory": any, "outcome", "confidence", "namespace"}. */
int memory_trajectory_add(struct memory *m, const char *tenant, json_t *body, json_t **ret,
			  char *err, size_t errlen);

/*
 * Consolidate tenant on the thread pool. cb fires later on the loop with
 * status 0 and stats {"examined","merged","contradictions","quarantined",
 * "pruned"} (borrowed for the call), or a negative error (SP_EDB,
 * SP_ECANCELED at close). SP_ECONFLICT (returned now, no callback) when a run
 * for this tenant is already going.
 */
typedef void (*memory_consolidate_cb)(void *arg, int status, json_t *stats);
int memory_consolidate(struct memory *m, const char *tenant, memory_consolidate_cb cb,
		       void *arg);

/*
 * With the HTTP embedder (memory_embeds_async()), text must be embedded by
 * the remote model first, so adding and searching go through these: the
 * request is validated now (errors returned as from the synchronous calls,
 * no callback), then cb(arg, status, ret, err) fires later from the loop,
 * never inside the call, with the synchronous call's status and answer (ret
 * borrowed for the call) — or SP_EUNAVAIL / SP_ETIMEDOUT / SP_EPROTO when
 * the embedder fails, SP_ECANCELED at close. SP_ECONFLICT (no callback)
 * when the request needs no embedding (all vectors given): call the
 * synchronous function instead. The synchronous calls refuse text that
 * needs the HTTP embedder.
 */
typedef void (*memory_cb)(void *arg, int status, json_t *ret, const char *err);
bool memory_embeds_async(const struct memory *m);
int memory_add_async(struct memory *m, const char *tenant, json_t *body, memory_cb cb,
		     void *arg, char *err, size_t errlen);
int memory_search_async(struct memory *m, const char *tenant, json_t *body, memory_cb cb,
			void *arg, char *err, size_t errlen);

/* Write the batched usage counters now (tests, shutdown). 0 or SP_EDB. */
int memory_flush_usage(struct memory *m);
/* Items in tenant's arenas (tests, metrics). */
size_t memory_count(struct memory *m, const char *tenant);

#endif

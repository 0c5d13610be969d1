/*
 * Memory consolidation for one tenant, as a plain function over a SQLite
 * connection so it can run on the libuv thread pool (the memory module opens
 * a connection of its own for it; connections never cross threads).
 *
 * Rules (reasoningbank-memory.md §1.3, thresholds recalibrated for the
 * hashing embedder, see docs/memory.md):
 * - Each item not yet consolidated is compared with its nearest neighbours
 *   (exact top-M by cosine among the tenant's active items of the same
 *   embedding model), never all pairs of the tenant.
 * - Near-duplicate (cos ≥ dup, same outcome): keep the item with more usage,
 *   then higher confidence, then the older; the other becomes state
 *   'deleted' with a duplicate_of link, its usage added to the keeper's.
 * - Contradiction (cos ≥ contradiction, outcomes success vs failure): a
 *   contradicts link, nothing deleted. An active item contradicting more
 *   than quarantine_after items with usage ≥ quarantine_min_usage becomes
 *   'quarantined'.
 * - Prune: active items with usage 0, confidence < prune_confidence and older
 *   than prune_age are deleted.
 * All writes happen in one short transaction at the end.
 */
#ifndef SANDPIT_CONSOLIDATE_H
#define SANDPIT_CONSOLIDATE_H

#include <stddef.h>
#include <stdint.h>

struct sqlite3;

struct consolidate_params {
	float dup_threshold;
	float contradiction_threshold;
	unsigned neighbours;			/* M */
	unsigned quarantine_after;
	unsigned quarantine_min_usage;
	int64_t prune_age_ms;
	float prune_confidence;
	unsigned max_new;			/* new items examined per run */
};

struct consolidate_result {
	unsigned examined, merged, contradictions, quarantined, pruned;
	/* Items that left the active set (to drop from the arenas); malloc'd. */
	int64_t *removed;
	size_t nremoved;
};

/*
 * Consolidate tenant in db at time now_ms. 0, or SP_EDB (nothing written).
 * res is filled on success; free res->removed with free().
 */
int consolidate_run(struct sqlite3 *db, const char *tenant, const struct consolidate_params *p,
		    int64_t now_ms, struct consolidate_result *res);

#endif

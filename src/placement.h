/*
 * Placement: which provider gets a new sandbox. The policy is "auto",
 * "local" or the name of one configured provider; no provider name is known
 * here. "local" is "auto" without the burst. "auto"
 * fills the providers that run sandboxes on this host (SP_CAP_LOCAL) first,
 * in configured order, and bursts to the other providers, in configured
 * order, when the local ones are full, not ready or backing off.
 *
 * A provider that answers "rate limited" is backed off: not chosen until
 * its backoff passes (exponential from 1 s to 60 s, or the provider's own
 * retry-after hint when longer); then one create at a time probes it until
 * an outcome is reported; a success clears it all.
 *
 * A provider whose creates fail too often trips a circuit breaker: when at
 * least threshold_pct of its last window outcomes (and min_samples of them)
 * are failures, it is not chosen for reset_ms; then one start at a time may
 * try it (half-open): success closes the circuit, failure opens it again.
 *
 * State is in memory, on the loop thread; a take is atomic (choose and count
 * in one call). The caller owns struct placement; strings passed in are
 * copied; names handed out live until the next placement_configure(). Nothing
 * logs.
 */
#ifndef SANDPIT_PLACEMENT_H
#define SANDPIT_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_PROVIDERS_MAX		16
#define PLACEMENT_AUTO			"auto"
#define PLACEMENT_LOCAL			"local"	/* auto without the burst */
#define PLACEMENT_BACKOFF_BASE_MS	1000
#define PLACEMENT_BACKOFF_MAX_MS	60000

struct placement;

/* A configured provider: its ops->name and ops->caps and how many sandboxes it may hold. */
struct placement_provider {
	const char *name;
	unsigned caps;			/* SP_CAP_* */
	unsigned capacity;		/* 1..100000: max_sandboxes for a local one, its quota otherwise */
};

enum placement_breaker {
	PLACEMENT_BREAKER_CLOSED,	/* healthy */
	PLACEMENT_BREAKER_OPEN,		/* failing: not chosen until open_until */
	PLACEMENT_BREAKER_HALF_OPEN,	/* one trial start decides */
};

struct placement_breaker_conf {
	unsigned threshold_pct;		/* 1..100, default 50 */
	unsigned window;		/* outcomes remembered, 1..64, default 20 */
	unsigned min_samples;		/* before the breaker may trip, 1..window, default 10 */
	uint64_t reset_ms;		/* open for this long, then a trial; default 5000 */
};
void placement_breaker_default(struct placement_breaker_conf *c);

struct placement_choice {
	size_t index;			/* in the configured list */
	const char *name;		/* the provider's name (owned by placement) */
	bool burst;			/* auto chose a non-local provider */
	int64_t retry_at_ms;		/* on -EAGAIN: when the earliest backoff or open circuit ends */
};

/* What a create on a provider came to. */
enum placement_outcome {
	PLACEMENT_OK,
	PLACEMENT_RATE_LIMITED,		/* the provider said slow down (HTTP 429, a quota) */
	PLACEMENT_FAILED,		/* any other failure: counts towards the circuit breaker */
};

/*
 * providers in configured order (1..PLACEMENT_PROVIDERS_MAX, unique names).
 * Every provider starts not ready (placement_set_ready). SP_EINVAL with err.
 */
int placement_new(const struct placement_provider *list, size_t n, struct placement **ret,
		  char *err, size_t errlen);
void placement_free(struct placement *p);		/* accepts NULL */
/*
 * Replace the list (SIGHUP). Providers that stay keep their count, readiness
 * and backoff; new ones start not ready; dropped ones are forgotten (their
 * later placement_put() answers SP_ENOTFOUND). SP_EINVAL keeps the old list.
 */
int placement_configure(struct placement *p, const struct placement_provider *list, size_t n,
			char *err, size_t errlen);
/* Change the breaker's settings (SIGHUP); SP_EINVAL keeps the old ones. */
int placement_set_breaker(struct placement *p, const struct placement_breaker_conf *c);
/* The provider finished init (or went down). SP_ENOTFOUND. */
int placement_set_ready(struct placement *p, const char *name, bool ready);

/* Whether policy is "auto", "local" or a configured provider's name (for request validation). */
bool placement_policy_valid(const struct placement *p, const char *policy);

/*
 * Choose a provider for policy and count one sandbox on it. Errors, with err
 * naming every candidate's state ("local: full (max_sandboxes 64/64); cloud:
 * rate-limited for 1500 ms"; a full local provider names max_sandboxes, a
 * full remote one burst_max_sandboxes, the directives that set capacity):
 *   SP_EINVAL     unknown policy;
 *   -EAGAIN       the candidates with room are backing off or their
 *                 circuit is open: retry at ret->retry_at_ms;
 *   SP_ELIMIT     every ready candidate is full;
 *   SP_EUNAVAIL   no candidate is ready.
 */
int placement_take(struct placement *p, const char *policy, int64_t now_ms,
		   struct placement_choice *ret, char *err, size_t errlen);
/*
 * How many more sandboxes policy could place now: the free capacity of its
 * ready candidates (backoff and open circuits pass; capacity does not).
 * SP_EINVAL for an unknown policy.
 */
int placement_room(const struct placement *p, const char *policy, unsigned *ret);
/*
 * Count a sandbox found on provider at daemon start (re-adoption), whatever
 * its capacity, readiness or backoff. SP_ENOTFOUND.
 */
int placement_adopt(struct placement *p, const char *name);
/*
 * A sandbox on provider is gone (or its create failed): uncount it.
 * SP_ENOTFOUND; SP_ECONFLICT at 0.
 */
int placement_put(struct placement *p, const char *name);
/*
 * The outcome of a create on provider at now_ms; retry_after_ms is the
 * provider's hint (0 for none). SP_ENOTFOUND.
 */
int placement_report(struct placement *p, const char *name, enum placement_outcome o,
		     int64_t retry_after_ms, int64_t now_ms);

struct placement_state {
	unsigned capacity, in_use;
	bool ready, local;
	int64_t backoff_until_ms;	/* end of the last backoff (0: never; in the past: over) */
	unsigned rate_limited;		/* consecutive rate-limit answers */
	enum placement_breaker breaker;
	int64_t open_until_ms;		/* OPEN: refused until then */
	unsigned failures, samples;	/* in the breaker's window */
};
int placement_get(const struct placement *p, const char *name, struct placement_state *ret);

#endif

/*
 * Admission control for sandbox starts, on the loop thread: a per-host cap
 * on sandboxes starting or running here, a limit on concurrent starts here,
 * and a per-tenant cap that counts the tenant's starting and running
 * sandboxes wherever they run. A sandbox placed on a remote provider (no
 * SP_CAP_LOCAL: a burst) counts only against its tenant; the remote
 * provider's own limits show up as rate-limit answers (placement.h). A take
 * checks all three and reserves in one call (the loop has one thread, so a
 * call is atomic); a refusal names the limit, its value and the current
 * count. In memory: at daemon start the composition root re-adopts the
 * sandboxes it finds (admission_adopt) so the counts match the store.
 *
 * Ownership: struct admission_ticket is embedded in the caller's operation
 * (a sandbox start); it records what it holds, so releasing is idempotent
 * and a start that fails midway just calls admission_release(). Waiters are
 * embedded in their owner too and must be cancelled before being freed.
 * Callbacks fire synchronously from inside admission_started(),
 * admission_release() or admission_set_limits(); they may call back into
 * admission (take, release) but must not free the struct admission.
 */
#ifndef SANDPIT_ADMISSION_H
#define SANDPIT_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>

#define ADMISSION_TENANT_MAX	64	/* tenant name bytes */
#define ADMISSION_LIMIT_MAX	100000u
#define ADMISSION_OVERRIDES_MAX	1024

struct admission;

struct admission_override {
	const char *tenant;
	unsigned max;			/* this tenant's cap instead of tenant_max */
};

struct admission_limits {
	unsigned host_max;		/* sandboxes starting + running on this host (max_sandboxes) */
	unsigned starts_max;		/* concurrent starts (max_starts) */
	unsigned tenant_max;		/* per tenant, starting + running (tenant_max_sandboxes) */
	const struct admission_override *overrides;	/* copied by new/set_limits */
	size_t noverrides;
};

enum admission_limit {
	ADMISSION_HOST,
	ADMISSION_STARTS,
	ADMISSION_TENANT,
};
/* "max_sandboxes", "max_starts", "tenant_max_sandboxes": the directive a refusal names. */
const char *admission_limit_name(enum admission_limit l);

/* Why a take was refused, for the API's error body. */
struct admission_refusal {
	enum admission_limit limit;
	unsigned max;			/* the limit in force */
	unsigned current;		/* what it counts now */
};

enum admission_hold { ADMISSION_NONE, ADMISSION_STARTING, ADMISSION_RUNNING };
struct admission_ticket {
	enum admission_hold hold;
	bool local;			/* counts against the host (and its start slots) */
	char tenant[ADMISSION_TENANT_MAX + 1];
};

struct admission_waiter {
	struct admission_waiter *prev, *next;
	void (*cb)(void *arg);
	void *arg;
	bool queued;
};

struct admission_counts {
	unsigned starting, running;	/* host: local ones; tenant: everywhere */
	unsigned remote;		/* host only: held on remote providers */
};

/* All limits must be 1..ADMISSION_LIMIT_MAX; SP_EINVAL with err otherwise. */
int admission_new(const struct admission_limits *lim, struct admission **ret, char *err,
		  size_t errlen);
/* Free; tickets still held are forgotten, waiters are dropped without a call. Accepts NULL. */
void admission_free(struct admission *a);
/*
 * Replace the limits (SIGHUP). Nothing held is revoked: a cap lowered below
 * the current count refuses new takes until enough are released. A raised
 * start limit wakes waiters. SP_EINVAL keeps the old limits.
 */
int admission_set_limits(struct admission *a, const struct admission_limits *lim, char *err,
			 size_t errlen);

/*
 * Reserve a start for tenant into t (which must hold nothing); local says
 * whether the chosen provider runs it on this host. 0: t holds a starting
 * slot. SP_ELIMIT: the host cap (local only) or the tenant cap refuses.
 * -EAGAIN (local only): the start limit refuses, or others already wait for
 * a start slot: wait with admission_wait() and take again in its callback.
 * On refusal *why (may be NULL) and err (may be NULL) say which limit, its
 * value and the count. SP_EINVAL for a bad tenant name or a ticket that
 * holds something.
 */
int admission_take(struct admission *a, const char *tenant, bool local,
		   struct admission_ticket *t, struct admission_refusal *why, char *err,
		   size_t errlen);
/* The start succeeded: starting -> running (frees a start slot). SP_ECONFLICT if not starting. */
int admission_started(struct admission *a, struct admission_ticket *t);
/* Give back whatever t holds (starting or running); a no-op for an empty ticket. */
void admission_release(struct admission *a, struct admission_ticket *t);
/*
 * Hand what t holds to another tenant (a pooled sandbox claimed): the host
 * counts stay, the new tenant's cap is checked. SP_ELIMIT (with why and err)
 * leaves t as it was; SP_EINVAL for a bad name or an empty ticket.
 */
int admission_transfer(struct admission *a, struct admission_ticket *t, const char *tenant,
		       struct admission_refusal *why, char *err, size_t errlen);
/* Count an existing running sandbox (re-adoption at start), whatever the limits. */
int admission_adopt(struct admission *a, const char *tenant, bool local,
		    struct admission_ticket *t);

/*
 * Be called (once, FIFO) when a start slot frees. The callback should call
 * admission_take(): while waiters are queued, takes outside a wake-up get
 * -EAGAIN, so nobody jumps the queue. A waiter already queued: -EALREADY;
 * SP_ECONFLICT when a slot is free and nobody waits (take now instead). A
 * callback that queues itself again is called for a later slot, not this one.
 */
int admission_wait(struct admission *a, struct admission_waiter *w, void (*cb)(void *arg),
		   void *arg);
void admission_wait_cancel(struct admission *a, struct admission_waiter *w);
size_t admission_waiting(const struct admission *a);

/* Host counts (local, plus remote), or one tenant's everywhere when tenant is not NULL. */
void admission_counts(const struct admission *a, const char *tenant,
		      struct admission_counts *ret);
/* The cap that applies to tenant (its override or tenant_max). */
unsigned admission_tenant_limit(const struct admission *a, const char *tenant);

#endif

/*
 * Admission control: counts of starting and running sandboxes on this host
 * and per tenant (wherever they run), a FIFO of callers waiting for a start slot, and the limits in
 * force. It owns only its counters and copies of the limits; it does not
 * start anything, does not touch the store, and never logs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sandpit/error.h>

#include "admission.h"
#include "log.h"
#include "xmalloc.h"

struct admission_tenant {
	char name[ADMISSION_TENANT_MAX + 1];
	unsigned starting, running;
};

struct admission_ovr {
	char name[ADMISSION_TENANT_MAX + 1];
	unsigned max;
};

struct admission {
	unsigned host_max, starts_max, tenant_max;
	struct admission_ovr *ovr;
	size_t novr;

	unsigned starting, running;	/* local: they count against the host */
	unsigned remote;		/* held on remote providers (starting or running) */
	/* Tenants holding something; linear, since live tenants per host are few. */
	struct admission_tenant *tenants;
	size_t ntenants, cap;

	struct admission_waiter *head, *tail;
	size_t nwait;
	bool waking;			/* inside a wake-up: takes may use the freed slot */
};

static const char *const admission_limit_names[] = {
	[ADMISSION_HOST] = "max_sandboxes",
	[ADMISSION_STARTS] = "max_starts",
	[ADMISSION_TENANT] = "tenant_max_sandboxes",
};

const char *
admission_limit_name(enum admission_limit l)
{
	if ((unsigned)l > ADMISSION_TENANT)
		return "?";
	return admission_limit_names[l];
}

static bool
admission_tenant_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (i == ADMISSION_TENANT_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static int
admission_limits_check(const struct admission_limits *lim, char *err, size_t errlen)
{
	const struct { const char *name; unsigned v; } v[] = {
		{ "max_sandboxes", lim->host_max },
		{ "max_starts", lim->starts_max },
		{ "tenant_max_sandboxes", lim->tenant_max },
	};
	size_t i, j;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		if (v[i].v < 1 || v[i].v > ADMISSION_LIMIT_MAX) {
			sp_errf(err, errlen, "%s %u is outside 1..%u", v[i].name, v[i].v,
				      ADMISSION_LIMIT_MAX);
			return SP_EINVAL;
		}
	}
	if (lim->noverrides > ADMISSION_OVERRIDES_MAX ||
	    (lim->noverrides > 0 && lim->overrides == NULL)) {
		sp_errf(err, errlen, "more than %d tenant overrides", ADMISSION_OVERRIDES_MAX);
		return SP_EINVAL;
	}
	for (i = 0; i < lim->noverrides; i++) {
		const struct admission_override *o = &lim->overrides[i];

		if (!admission_tenant_valid(o->tenant)) {
			sp_errf(err, errlen, "override %zu: invalid tenant name", i);
			return SP_EINVAL;
		}
		if (o->max < 1 || o->max > ADMISSION_LIMIT_MAX) {
			sp_errf(err, errlen, "tenant '%s': limit %u is outside 1..%u",
				      o->tenant, o->max, ADMISSION_LIMIT_MAX);
			return SP_EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(lim->overrides[j].tenant, o->tenant) == 0) {
				sp_errf(err, errlen, "tenant '%s' has two overrides", o->tenant);
				return SP_EINVAL;
			}
		}
	}
	return 0;
}

static void
admission_limits_apply(struct admission *a, const struct admission_limits *lim)
{
	size_t i;

	a->host_max = lim->host_max;
	a->starts_max = lim->starts_max;
	a->tenant_max = lim->tenant_max;
	free(a->ovr);
	a->ovr = NULL;
	a->novr = lim->noverrides;
	if (a->novr > 0) {
		a->ovr = xcalloc(a->novr, sizeof(*a->ovr));
		for (i = 0; i < a->novr; i++) {
			snprintf(a->ovr[i].name, sizeof(a->ovr[i].name), "%s",
				 lim->overrides[i].tenant);
			a->ovr[i].max = lim->overrides[i].max;
		}
	}
}

int
admission_new(const struct admission_limits *lim, struct admission **ret, char *err,
	      size_t errlen)
{
	struct admission *a;
	int r;

	if ((r = admission_limits_check(lim, err, errlen)) < 0)
		return r;
	a = xcalloc(1, sizeof(*a));
	admission_limits_apply(a, lim);
	*ret = a;
	return 0;
}

void
admission_free(struct admission *a)
{
	struct admission_waiter *w, *next;

	if (a == NULL)
		return;
	for (w = a->head; w != NULL; w = next) {
		next = w->next;
		w->prev = w->next = NULL;
		w->queued = false;
	}
	free(a->ovr);
	free(a->tenants);
	free(a);
}

static void admission_wake(struct admission *a);

int
admission_set_limits(struct admission *a, const struct admission_limits *lim, char *err,
		     size_t errlen)
{
	int r;

	if ((r = admission_limits_check(lim, err, errlen)) < 0)
		return r;
	admission_limits_apply(a, lim);
	admission_wake(a);
	return 0;
}

unsigned
admission_tenant_limit(const struct admission *a, const char *tenant)
{
	size_t i;

	for (i = 0; tenant != NULL && i < a->novr; i++)
		if (strcmp(a->ovr[i].name, tenant) == 0)
			return a->ovr[i].max;
	return a->tenant_max;
}

static struct admission_tenant *
admission_tenant_find(const struct admission *a, const char *tenant)
{
	size_t i;

	for (i = 0; i < a->ntenants; i++)
		if (strcmp(a->tenants[i].name, tenant) == 0)
			return &a->tenants[i];
	return NULL;
}

static struct admission_tenant *
admission_tenant_get(struct admission *a, const char *tenant)
{
	struct admission_tenant *tc = admission_tenant_find(a, tenant);

	if (tc != NULL)
		return tc;
	if (a->ntenants == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 8;
		a->tenants = xreallocarray(a->tenants, a->cap, sizeof(*a->tenants));
	}
	tc = &a->tenants[a->ntenants++];
	memset(tc, 0, sizeof(*tc));
	snprintf(tc->name, sizeof(tc->name), "%s", tenant);
	return tc;
}

/* Forget a tenant that holds nothing, so the table stays as small as the live set. */
static void
admission_tenant_gc(struct admission *a, struct admission_tenant *tc)
{
	size_t i = (size_t)(tc - a->tenants);

	if (tc->starting > 0 || tc->running > 0)
		return;
	a->tenants[i] = a->tenants[--a->ntenants];
}

static int
admission_refuse(struct admission_refusal *why, enum admission_limit l, unsigned max,
		 unsigned current, int r)
{
	if (why != NULL)
		*why = (struct admission_refusal){ l, max, current };
	return r;
}

/* Whether tenant is at its cap; then why and err say so. */
static bool
admission_tenant_full(struct admission *a, const char *tenant, struct admission_refusal *why,
		      char *err, size_t errlen)
{
	struct admission_tenant *tc = admission_tenant_find(a, tenant);
	unsigned tcount = tc ? tc->starting + tc->running : 0;
	unsigned tmax = admission_tenant_limit(a, tenant);

	if (tcount < tmax)
		return false;
	sp_errf(err, errlen, "tenant_max_sandboxes is %u for tenant '%s': %u starting or "
		      "running (%u starting)", tmax, tenant, tcount, tc ? tc->starting : 0);
	(void)admission_refuse(why, ADMISSION_TENANT, tmax, tcount, SP_ELIMIT);
	return true;
}

int
admission_take(struct admission *a, const char *tenant, bool local, struct admission_ticket *t,
	       struct admission_refusal *why, char *err, size_t errlen)
{
	struct admission_tenant *tc;

	if (!admission_tenant_valid(tenant)) {
		sp_errf(err, errlen, "invalid tenant name");
		return SP_EINVAL;
	}
	if (t->hold != ADMISSION_NONE) {
		sp_errf(err, errlen, "ticket already holds a sandbox");
		return SP_EINVAL;
	}
	/* Hard caps first: waiting for a start slot would not help them. */
	if (local && a->starting + a->running >= a->host_max) {
		sp_errf(err, errlen, "max_sandboxes is %u: %u sandboxes starting or running "
			      "on this host", a->host_max, a->starting + a->running);
		return admission_refuse(why, ADMISSION_HOST, a->host_max,
					a->starting + a->running, SP_ELIMIT);
	}
	if (admission_tenant_full(a, tenant, why, err, errlen))
		return SP_ELIMIT;
	if (local && (a->starting >= a->starts_max || (a->nwait > 0 && !a->waking))) {
		sp_errf(err, errlen, "max_starts is %u: %u starts in progress, %zu waiting",
			      a->starts_max, a->starting, a->nwait);
		return admission_refuse(why, ADMISSION_STARTS, a->starts_max, a->starting,
					-EAGAIN);
	}
	tc = admission_tenant_get(a, tenant);
	tc->starting++;
	if (local)
		a->starting++;
	else
		a->remote++;
	t->hold = ADMISSION_STARTING;
	t->local = local;
	snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
	return 0;
}

int
admission_started(struct admission *a, struct admission_ticket *t)
{
	struct admission_tenant *tc;

	if (t->hold != ADMISSION_STARTING)
		return SP_ECONFLICT;
	tc = admission_tenant_find(a, t->tenant);
	if (tc == NULL || tc->starting == 0 || (t->local && a->starting == 0))
		fatalx("admission: ticket of tenant '%s' was never issued", t->tenant);
	tc->starting--;
	tc->running++;
	t->hold = ADMISSION_RUNNING;
	if (!t->local)
		return 0;
	a->starting--;
	a->running++;
	admission_wake(a);
	return 0;
}

void
admission_release(struct admission *a, struct admission_ticket *t)
{
	struct admission_tenant *tc;
	bool was_starting;

	if (t->hold == ADMISSION_NONE)
		return;
	tc = admission_tenant_find(a, t->tenant);
	if (tc == NULL)
		fatalx("admission: ticket of tenant '%s' was never issued", t->tenant);
	was_starting = t->hold == ADMISSION_STARTING;
	if (was_starting)
		tc->starting--;
	else
		tc->running--;
	if (!t->local)
		a->remote--;
	else if (was_starting)
		a->starting--;
	else
		a->running--;
	t->hold = ADMISSION_NONE;
	admission_tenant_gc(a, tc);
	if (was_starting && t->local)
		admission_wake(a);
}

int
admission_transfer(struct admission *a, struct admission_ticket *t, const char *tenant,
		   struct admission_refusal *why, char *err, size_t errlen)
{
	struct admission_tenant *from, *to;

	if (!admission_tenant_valid(tenant) || t->hold == ADMISSION_NONE) {
		sp_errf(err, errlen, t->hold == ADMISSION_NONE ? "ticket holds nothing" :
			      "invalid tenant name");
		return SP_EINVAL;
	}
	if (strcmp(t->tenant, tenant) == 0)
		return 0;
	if (admission_tenant_full(a, tenant, why, err, errlen))
		return SP_ELIMIT;
	/* get() may grow the table: find the old tenant after it. */
	to = admission_tenant_get(a, tenant);
	from = admission_tenant_find(a, t->tenant);
	if (from == NULL)
		fatalx("admission: ticket of tenant '%s' was never issued", t->tenant);
	if (t->hold == ADMISSION_STARTING) {
		from->starting--;
		to->starting++;
	} else {
		from->running--;
		to->running++;
	}
	admission_tenant_gc(a, from);
	snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
	return 0;
}

int
admission_adopt(struct admission *a, const char *tenant, bool local, struct admission_ticket *t)
{
	struct admission_tenant *tc;

	if (!admission_tenant_valid(tenant) || t->hold != ADMISSION_NONE)
		return SP_EINVAL;
	tc = admission_tenant_get(a, tenant);
	tc->running++;
	if (local)
		a->running++;
	else
		a->remote++;
	t->hold = ADMISSION_RUNNING;
	t->local = local;
	snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
	return 0;
}

/* ---- waiters ---- */

static void
admission_unlink(struct admission *a, struct admission_waiter *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		a->head = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	else
		a->tail = w->prev;
	w->prev = w->next = NULL;
	w->queued = false;
	a->nwait--;
}

/* Hand free start slots to waiters, oldest first. Not re-entered. */
static void
admission_wake(struct admission *a)
{
	struct admission_waiter *w;
	size_t budget = a->nwait;

	if (a->waking)
		return;
	a->waking = true;
	/* Only those queued now: a callback that queues itself again waits for the next slot. */
	while (budget-- > 0 && a->head != NULL && a->starting < a->starts_max) {
		w = a->head;
		admission_unlink(a, w);
		w->cb(w->arg);
	}
	a->waking = false;
}

int
admission_wait(struct admission *a, struct admission_waiter *w, void (*cb)(void *arg),
	       void *arg)
{
	if (w->queued)
		return -EALREADY;
	/* Nothing would ever wake it: the caller should take now. */
	if (a->nwait == 0 && a->starting < a->starts_max && !a->waking)
		return SP_ECONFLICT;
	w->cb = cb;
	w->arg = arg;
	w->next = NULL;
	w->prev = a->tail;
	if (a->tail != NULL)
		a->tail->next = w;
	else
		a->head = w;
	a->tail = w;
	w->queued = true;
	a->nwait++;
	return 0;
}

void
admission_wait_cancel(struct admission *a, struct admission_waiter *w)
{
	if (!w->queued)
		return;
	admission_unlink(a, w);
}

size_t
admission_waiting(const struct admission *a)
{
	return a->nwait;
}

void
admission_counts(const struct admission *a, const char *tenant, struct admission_counts *ret)
{
	const struct admission_tenant *tc;

	if (tenant == NULL) {
		*ret = (struct admission_counts){ a->starting, a->running, a->remote };
		return;
	}
	tc = admission_tenant_find(a, tenant);
	*ret = tc ? (struct admission_counts){ tc->starting, tc->running, 0 }
		  : (struct admission_counts){ 0, 0, 0 };
}

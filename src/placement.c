/*
 * Placement of new sandboxes on providers: the configured list with each
 * provider's count, readiness and rate-limit backoff, and the policy that
 * picks one. It owns only that state; it knows no provider by name, calls
 * no provider and never logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "placement.h"
#include "xmalloc.h"

#define PLACEMENT_NAME_MAX	32
#define PLACEMENT_CAPACITY_MAX	100000u

struct placement_slot {
	char name[PLACEMENT_NAME_MAX + 1];
	unsigned caps;
	unsigned capacity;
	unsigned in_use;
	bool ready;
	int64_t backoff_until;
	unsigned rate_limited;
	int64_t probe_until;		/* after a backoff: one create is out until then */
	/* The circuit breaker: the last outcomes (bit set = failure), newest in bit 0. */
	uint64_t outcomes;
	unsigned samples;		/* outcomes recorded, up to the window */
	enum placement_breaker breaker;
	int64_t open_until;		/* OPEN: refuse until then */
	int64_t trial_until;		/* HALF_OPEN: a trial is out until then */
};

struct placement {
	struct placement_slot s[PLACEMENT_PROVIDERS_MAX];
	size_t n;
	struct placement_breaker_conf breaker;
};

/* Append to err, keeping it terminated when it runs out of room. */
static void
placement_errcat(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
placement_errcat(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	size_t used;

	if (err == NULL || errlen == 0)
		return;
	used = strnlen(err, errlen);
	if (used >= errlen - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
}

static bool
placement_name_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || strcmp(s, PLACEMENT_AUTO) == 0)
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i == PLACEMENT_NAME_MAX)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_' || s[i] == '-'))
			return false;
	}
	return true;
}

static int
placement_check(const struct placement_provider *list, size_t n, char *err, size_t errlen)
{
	size_t i, j;

	if (n < 1 || n > PLACEMENT_PROVIDERS_MAX || list == NULL) {
		sp_errf(err, errlen, "%zu providers: placement needs 1..%d", n,
			      PLACEMENT_PROVIDERS_MAX);
		return SP_EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (!placement_name_valid(list[i].name)) {
			sp_errf(err, errlen, "provider %zu: invalid name", i);
			return SP_EINVAL;
		}
		if (list[i].capacity < 1 || list[i].capacity > PLACEMENT_CAPACITY_MAX) {
			sp_errf(err, errlen, "provider '%s': capacity %u is outside 1..%u",
				      list[i].name, list[i].capacity, PLACEMENT_CAPACITY_MAX);
			return SP_EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(list[i].name, list[j].name) == 0) {
				sp_errf(err, errlen, "provider '%s' is listed twice", list[i].name);
				return SP_EINVAL;
			}
		}
	}
	return 0;
}

static struct placement_slot *
placement_find(const struct placement *p, const char *name)
{
	size_t i;

	for (i = 0; name != NULL && i < p->n; i++)
		if (strcmp(p->s[i].name, name) == 0)
			return (struct placement_slot *)&p->s[i];
	return NULL;
}

int
placement_new(const struct placement_provider *list, size_t n, struct placement **ret,
	      char *err, size_t errlen)
{
	struct placement *p;
	int r;

	if ((r = placement_check(list, n, err, errlen)) < 0)
		return r;
	p = xcalloc(1, sizeof(*p));
	placement_breaker_default(&p->breaker);
	placement_configure(p, list, n, NULL, 0);
	*ret = p;
	return 0;
}

void
placement_free(struct placement *p)
{
	free(p);
}

int
placement_configure(struct placement *p, const struct placement_provider *list, size_t n,
		    char *err, size_t errlen)
{
	struct placement_slot next[PLACEMENT_PROVIDERS_MAX], *old;
	size_t i;
	int r;

	if ((r = placement_check(list, n, err, errlen)) < 0)
		return r;
	memset(next, 0, sizeof(next));
	for (i = 0; i < n; i++) {
		if ((old = placement_find(p, list[i].name)) != NULL)
			next[i] = *old;
		snprintf(next[i].name, sizeof(next[i].name), "%s", list[i].name);
		next[i].caps = list[i].caps;
		next[i].capacity = list[i].capacity;
	}
	memcpy(p->s, next, sizeof(next));
	p->n = n;
	return 0;
}

int
placement_set_ready(struct placement *p, const char *name, bool ready)
{
	struct placement_slot *s = placement_find(p, name);

	if (s == NULL)
		return SP_ENOTFOUND;
	s->ready = ready;
	return 0;
}

bool
placement_policy_valid(const struct placement *p, const char *policy)
{
	return policy != NULL && (strcmp(policy, PLACEMENT_AUTO) == 0 ||
				  strcmp(policy, PLACEMENT_LOCAL) == 0 ||
				  placement_find(p, policy) != NULL);
}

void
placement_breaker_default(struct placement_breaker_conf *c)
{
	*c = (struct placement_breaker_conf){
		.threshold_pct = 50,
		.window = 20,
		.min_samples = 10,
		.reset_ms = 5000,
	};
}

int
placement_set_breaker(struct placement *p, const struct placement_breaker_conf *c)
{
	if (c->threshold_pct < 1 || c->threshold_pct > 100 || c->window < 1 || c->window > 64 ||
	    c->min_samples < 1 || c->min_samples > c->window || c->reset_ms < 1 ||
	    c->reset_ms > 3600 * 1000)
		return SP_EINVAL;
	p->breaker = *c;
	return 0;
}

/* Why slot s cannot take a sandbox now, or 0 when it can. */
enum placement_block { PB_NONE, PB_NOT_READY, PB_FULL, PB_BACKOFF, PB_OPEN, PB_TRIAL, PB_PROBE };

static enum placement_block
placement_blocked(const struct placement_slot *s, int64_t now)
{
	if (!s->ready)
		return PB_NOT_READY;
	if (s->in_use >= s->capacity)
		return PB_FULL;
	if (s->breaker == PLACEMENT_BREAKER_OPEN && s->open_until > now)
		return PB_OPEN;
	if (s->breaker == PLACEMENT_BREAKER_HALF_OPEN && s->trial_until > now)
		return PB_TRIAL;
	if (s->backoff_until > now)
		return PB_BACKOFF;
	if (s->probe_until > now)
		return PB_PROBE;
	return PB_NONE;
}

/* When a blocked slot may be asked again (for -EAGAIN), or 0 if that is not a matter of time. */
static int64_t
placement_retry_at(const struct placement_slot *s, enum placement_block b)
{
	switch (b) {
	case PB_BACKOFF:
		return s->backoff_until;
	case PB_OPEN:
		return s->open_until;
	case PB_TRIAL:
		return s->trial_until;
	case PB_PROBE:
		return s->probe_until;
	default:
		return 0;
	}
}

static void
placement_describe(const struct placement_slot *s, enum placement_block b, int64_t now,
		   char *err, size_t errlen)
{
	const char *sep = (err != NULL && errlen > 0 && err[0] != '\0') ? "; " : "";

	switch (b) {
	case PB_NOT_READY:
		placement_errcat(err, errlen, "%s%s: not ready", sep, s->name);
		break;
	case PB_FULL:
		/* Named after the directive that sets the capacity (placement.h). */
		placement_errcat(err, errlen, "%s%s: full (%s %u/%u)", sep, s->name,
				 (s->caps & SP_CAP_LOCAL) ? "max_sandboxes" : "burst_max_sandboxes",
				 s->in_use, s->capacity);
		break;
	case PB_BACKOFF:
		placement_errcat(err, errlen, "%s%s: rate-limited for %" PRId64 " ms", sep, s->name,
				 s->backoff_until - now);
		break;
	case PB_OPEN:
		placement_errcat(err, errlen, "%s%s: failing (circuit open for %" PRId64 " ms)", sep,
				 s->name, s->open_until - now);
		break;
	case PB_TRIAL:
		placement_errcat(err, errlen, "%s%s: failing (one trial start in progress)", sep,
				 s->name);
		break;
	case PB_PROBE:
		placement_errcat(err, errlen, "%s%s: rate-limited (one trial start in progress)",
				 sep, s->name);
		break;
	case PB_NONE:
		break;
	}
}

/* The providers policy may use, in the order it tries them; 0 for an unknown policy. */
static size_t
placement_candidates(const struct placement *p, const char *policy, size_t *order)
{
	struct placement_slot *s;
	size_t n = 0;

	if (strcmp(policy, PLACEMENT_AUTO) != 0 && strcmp(policy, PLACEMENT_LOCAL) != 0) {
		if ((s = placement_find(p, policy)) == NULL)
			return 0;
		order[n++] = (size_t)(s - p->s);
		return n;
	}
	/* Local capacity first, then (auto) burst, each in configured order. */
	for (int pass = 0; pass < (strcmp(policy, PLACEMENT_LOCAL) == 0 ? 1 : 2); pass++)
		for (size_t i = 0; i < p->n; i++)
			if (((p->s[i].caps & SP_CAP_LOCAL) != 0) == (pass == 0))
				order[n++] = i;
	return n;
}

int
placement_room(const struct placement *p, const char *policy, unsigned *ret)
{
	size_t order[PLACEMENT_PROVIDERS_MAX], n;

	if (!placement_policy_valid(p, policy))
		return SP_EINVAL;
	n = placement_candidates(p, policy, order);
	*ret = 0;
	for (size_t i = 0; i < n; i++) {
		const struct placement_slot *s = &p->s[order[i]];

		if (s->ready && s->in_use < s->capacity)
			*ret += s->capacity - s->in_use;
	}
	return 0;
}

int
placement_take(struct placement *p, const char *policy, int64_t now_ms,
	       struct placement_choice *ret, char *err, size_t errlen)
{
	size_t order[PLACEMENT_PROVIDERS_MAX], n = 0, i;
	bool any_backoff = false, any_full = false, single;
	int64_t retry_at = INT64_MAX;
	struct placement_slot *s;
	enum placement_block b;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (policy == NULL) {
		sp_errf(err, errlen, "no placement policy");
		return SP_EINVAL;
	}
	single = strcmp(policy, PLACEMENT_AUTO) != 0 && strcmp(policy, PLACEMENT_LOCAL) != 0;
	if ((n = placement_candidates(p, policy, order)) == 0 && placement_policy_valid(p, policy)) {
		sp_errf(err, errlen, "no provider runs sandboxes on this host");
		return SP_EUNAVAIL;
	}
	if (n == 0) {
		sp_errf(err, errlen, "unknown placement '%.32s': use auto", policy);
		for (i = 0; i < p->n; i++)
			placement_errcat(err, errlen, ", %s", p->s[i].name);
		return SP_EINVAL;
	}
	for (i = 0; i < n; i++) {
		s = &p->s[order[i]];
		b = placement_blocked(s, now_ms);
		if (b == PB_NONE) {
			/* After an open circuit, one start at a time tries the provider. */
			if (s->breaker == PLACEMENT_BREAKER_OPEN) {
				s->breaker = PLACEMENT_BREAKER_HALF_OPEN;
				s->trial_until = now_ms + (int64_t)p->breaker.reset_ms;
			} else if (s->breaker == PLACEMENT_BREAKER_HALF_OPEN) {
				s->trial_until = now_ms + (int64_t)p->breaker.reset_ms;
			}
			/* After a backoff, one create probes the provider before the rest follow. */
			if (s->rate_limited > 0)
				s->probe_until = now_ms + PLACEMENT_BACKOFF_MAX_MS;
			s->in_use++;
			ret->index = order[i];
			ret->name = s->name;
			ret->burst = !single && (s->caps & SP_CAP_LOCAL) == 0;
			ret->retry_at_ms = 0;
			if (err != NULL && errlen > 0)
				err[0] = '\0';
			return 0;
		}
		placement_describe(s, b, now_ms, err, errlen);
		if (placement_retry_at(s, b) != 0) {
			any_backoff = true;
			if (placement_retry_at(s, b) < retry_at)
				retry_at = placement_retry_at(s, b);
		} else if (b == PB_FULL) {
			any_full = true;
		}
	}
	if (any_backoff) {
		ret->retry_at_ms = retry_at;
		return -EAGAIN;
	}
	return any_full ? SP_ELIMIT : SP_EUNAVAIL;
}

int
placement_adopt(struct placement *p, const char *name)
{
	struct placement_slot *s = placement_find(p, name);

	if (s == NULL)
		return SP_ENOTFOUND;
	s->in_use++;
	return 0;
}

int
placement_put(struct placement *p, const char *name)
{
	struct placement_slot *s = placement_find(p, name);

	if (s == NULL)
		return SP_ENOTFOUND;
	if (s->in_use == 0)
		return SP_ECONFLICT;
	s->in_use--;
	return 0;
}

/*
 * Record a create's outcome in the breaker's window. A rate limit is not a
 * failure here: backoff handles it. The trial after an open circuit decides
 * alone: success closes the circuit with a clean window, failure opens it
 * again.
 */
static void
placement_breaker_record(struct placement *p, struct placement_slot *s, bool failed,
			 int64_t now)
{
	const struct placement_breaker_conf *c = &p->breaker;
	uint64_t mask = c->window >= 64 ? UINT64_MAX : (((uint64_t)1 << c->window) - 1);
	unsigned fails;

	if (s->breaker == PLACEMENT_BREAKER_HALF_OPEN || s->breaker == PLACEMENT_BREAKER_OPEN) {
		if (failed) {
			s->breaker = PLACEMENT_BREAKER_OPEN;
			s->open_until = now + (int64_t)c->reset_ms;
		} else {
			s->breaker = PLACEMENT_BREAKER_CLOSED;
			s->outcomes = 0;
			s->samples = 0;
		}
		return;
	}
	s->outcomes = ((s->outcomes << 1) | (failed ? 1 : 0)) & mask;
	if (s->samples < c->window)
		s->samples++;
	fails = (unsigned)__builtin_popcountll(s->outcomes);
	if (s->samples >= c->min_samples && fails * 100 >= c->threshold_pct * s->samples) {
		s->breaker = PLACEMENT_BREAKER_OPEN;
		s->open_until = now + (int64_t)c->reset_ms;
	}
}

int
placement_report(struct placement *p, const char *name, enum placement_outcome o,
		 int64_t retry_after_ms, int64_t now_ms)
{
	struct placement_slot *s = placement_find(p, name);
	int64_t d = PLACEMENT_BACKOFF_BASE_MS;
	unsigned i;

	if (s == NULL)
		return SP_ENOTFOUND;
	s->probe_until = 0;
	switch (o) {
	case PLACEMENT_OK:
		s->rate_limited = 0;
		s->backoff_until = 0;
		placement_breaker_record(p, s, false, now_ms);
		break;
	case PLACEMENT_RATE_LIMITED:
		s->rate_limited++;
		for (i = 1; i < s->rate_limited && d < PLACEMENT_BACKOFF_MAX_MS; i++)
			d *= 2;
		if (d > PLACEMENT_BACKOFF_MAX_MS)
			d = PLACEMENT_BACKOFF_MAX_MS;
		/* The provider knows its quota better than our guess, within reason. */
		if (retry_after_ms > d)
			d = retry_after_ms < 10 * PLACEMENT_BACKOFF_MAX_MS ? retry_after_ms
									   : 10 * PLACEMENT_BACKOFF_MAX_MS;
		s->backoff_until = now_ms + d;
		break;
	case PLACEMENT_FAILED:
		placement_breaker_record(p, s, true, now_ms);
		break;
	}
	return 0;
}

int
placement_get(const struct placement *p, const char *name, struct placement_state *ret)
{
	const struct placement_slot *s = placement_find(p, name);

	if (s == NULL)
		return SP_ENOTFOUND;
	*ret = (struct placement_state){
		.capacity = s->capacity,
		.in_use = s->in_use,
		.ready = s->ready,
		.local = (s->caps & SP_CAP_LOCAL) != 0,
		.backoff_until_ms = s->backoff_until,
		.rate_limited = s->rate_limited,
		.breaker = s->breaker,
		.open_until_ms = s->open_until,
		.failures = (unsigned)__builtin_popcountll(s->outcomes),
		.samples = s->samples,
	};
	return 0;
}

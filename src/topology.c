/*
 * Swarm topologies: the routing rule between agents as pure functions over a
 * borrowed description. It owns nothing, allocates nothing and never logs;
 * the coordinator asks before it relays and answers the refusal itself.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sandpit/error.h>

#include "topology.h"

static const char *const topology_names[TOPOLOGY__COUNT] = {
	[TOPOLOGY_MESH] = "mesh",
	[TOPOLOGY_HIERARCHICAL] = "hierarchical",
	[TOPOLOGY_RING] = "ring",
	[TOPOLOGY_STAR] = "star",
};

int
topology_parse(const char *s, enum topology_kind *ret)
{
	int k;

	if (s == NULL)
		return SP_EINVAL;
	for (k = 0; k < TOPOLOGY__COUNT; k++) {
		if (strcmp(s, topology_names[k]) == 0) {
			*ret = (enum topology_kind)k;
			return 0;
		}
	}
	return SP_EINVAL;
}

const char *
topology_name(enum topology_kind k)
{
	if ((unsigned)k >= TOPOLOGY__COUNT)
		return "?";
	return topology_names[k];
}

static void
topology_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
topology_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Agent i's lead, or n when the description is broken there. */
static size_t
topology_lead(const struct topology *t, size_t i)
{
	size_t l;

	if (t->lead_of == NULL)
		return 0;
	l = t->lead_of[i];
	if (l >= t->n || t->lead_of[l] != l)
		return t->n;
	return l;
}

/* The shape alone (kind, n, hub), without walking lead_of. */
static int
topology_check_shape(const struct topology *t, char *err, size_t errlen)
{
	if (t == NULL) {
		topology_err(err, errlen, "no topology");
		return SP_EINVAL;
	}
	if ((unsigned)t->kind >= TOPOLOGY__COUNT) {
		topology_err(err, errlen, "unknown topology %d", (int)t->kind);
		return SP_EINVAL;
	}
	if (t->n < 1 || t->n > TOPOLOGY_AGENTS_MAX) {
		topology_err(err, errlen, "%zu agents is outside 1..%d", t->n, TOPOLOGY_AGENTS_MAX);
		return SP_EINVAL;
	}
	if (t->kind == TOPOLOGY_STAR && t->hub >= t->n) {
		topology_err(err, errlen, "star: hub %zu is not one of the %zu agents", t->hub, t->n);
		return SP_EINVAL;
	}
	return 0;
}

int
topology_check(const struct topology *t, char *err, size_t errlen)
{
	size_t i;
	int r;

	if ((r = topology_check_shape(t, err, errlen)) < 0)
		return r;
	if (t->kind != TOPOLOGY_HIERARCHICAL || t->lead_of == NULL)
		return 0;
	for (i = 0; i < t->n; i++) {
		if (t->lead_of[i] >= t->n) {
			topology_err(err, errlen, "hierarchical: agent %zu's lead %zu is not one of "
				     "the %zu agents", i, t->lead_of[i], t->n);
			return SP_EINVAL;
		}
		if (topology_lead(t, i) == t->n) {
			topology_err(err, errlen, "hierarchical: agent %zu's lead %zu is itself led "
				     "by agent %zu", i, t->lead_of[i], t->lead_of[t->lead_of[i]]);
			return SP_EINVAL;
		}
	}
	return 0;
}

int
topology_may_send(const struct topology *t, size_t from, size_t to, char *err, size_t errlen)
{
	size_t next, lead;
	int r;

	if ((r = topology_check_shape(t, err, errlen)) < 0)
		return r;
	if (from >= t->n || to >= t->n) {
		topology_err(err, errlen, "agent %zu is not one of the %zu agents",
			     from >= t->n ? from : to, t->n);
		return SP_EINVAL;
	}
	if (from == to) {
		topology_err(err, errlen, "agent %zu cannot address itself", from);
		return SP_EINVAL;
	}
	switch (t->kind) {
	case TOPOLOGY_MESH:
		return 0;
	case TOPOLOGY_HIERARCHICAL:
		lead = topology_lead(t, from);
		if (lead == t->n || topology_lead(t, to) == t->n) {
			topology_err(err, errlen, "hierarchical: broken lead of agent %zu",
				     lead == t->n ? from : to);
			return SP_EINVAL;
		}
		if (lead == from || lead == to)
			return 0;
		topology_err(err, errlen, "hierarchical: agent %zu may address only its lead, "
			     "agent %zu", from, lead);
		return -EACCES;
	case TOPOLOGY_RING:
		next = (from + 1) % t->n;
		if (to == next)
			return 0;
		topology_err(err, errlen, "ring: agent %zu may address only agent %zu", from, next);
		return -EACCES;
	case TOPOLOGY_STAR:
		if (from == t->hub || to == t->hub)
			return 0;
		topology_err(err, errlen, "star: agent %zu may address only the hub, agent %zu",
			     from, t->hub);
		return -EACCES;
	case TOPOLOGY__COUNT:
		break;
	}
	return SP_EINVAL;
}

int
topology_targets(const struct topology *t, size_t from, size_t *out, size_t max,
		 size_t *ret_n)
{
	size_t i, n = 0;
	int r;

	if ((r = topology_check_shape(t, NULL, 0)) < 0)
		return r;
	if (from >= t->n)
		return SP_EINVAL;
	if (t->kind == TOPOLOGY_HIERARCHICAL && topology_lead(t, from) == t->n)
		return SP_EINVAL;
	for (i = 0; i < t->n; i++) {
		if (i == from)
			continue;
		r = topology_may_send(t, from, i, NULL, 0);
		if (r == -EACCES)
			continue;
		if (r < 0)
			return r;
		if (n < max && out != NULL)
			out[n] = i;
		n++;
	}
	*ret_n = n;
	return 0;
}

/*
 * Swarm topologies: the routing rule between agents as pure functions over a
 * borrowed description. It owns nothing, allocates nothing and never logs;
 * the coordinator asks before it relays and answers the refusal itself.
 */
#include <errno.h>
#include <stdbool.h>
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

/* The default tree of topology.h: agent i's lead among n agents. */
static size_t
topology_default_lead(size_t n, size_t i)
{
	size_t leads = (n - 1 + TOPOLOGY_FANOUT) / (TOPOLOGY_FANOUT + 1);
	size_t workers = n - 1 - leads, base, extra, w;

	if (i <= leads)
		return 0;
	/* workers >= leads here, so base >= 1: the first `extra` groups have base + 1. */
	base = workers / leads;
	extra = workers % leads;
	w = i - leads - 1;
	if (w < extra * (base + 1))
		return 1 + w / (base + 1);
	return 1 + extra + (w - extra * (base + 1)) / base;
}

/* Agent i's lead, or n when the table is broken there. i < n. */
static size_t
topology_parent(const struct topology *t, size_t i)
{
	if (t->lead_of == NULL)
		return topology_default_lead(t->n, i);
	return t->lead_of[i] < t->n ? t->lead_of[i] : t->n;
}

/* Whether agent i leads anyone (the error path only: a scan). */
static bool
topology_leads_some(const struct topology *t, size_t i)
{
	for (size_t j = 0; j < t->n; j++)
		if (j != i && topology_parent(t, j) == i)
			return true;
	return false;
}

/* The shape alone (kind, n, hub), without walking lead_of. */
static int
topology_check_shape(const struct topology *t, char *err, size_t errlen)
{
	if (t == NULL) {
		sp_errf(err, errlen, "no topology");
		return SP_EINVAL;
	}
	if ((unsigned)t->kind >= TOPOLOGY__COUNT) {
		sp_errf(err, errlen, "unknown topology %d", (int)t->kind);
		return SP_EINVAL;
	}
	if (t->n < 1 || t->n > TOPOLOGY_AGENTS_MAX) {
		sp_errf(err, errlen, "%zu agents is outside 1..%d", t->n, TOPOLOGY_AGENTS_MAX);
		return SP_EINVAL;
	}
	if (t->kind == TOPOLOGY_STAR && t->hub >= t->n) {
		sp_errf(err, errlen, "star: hub %zu is not one of the %zu agents", t->hub, t->n);
		return SP_EINVAL;
	}
	return 0;
}

int
topology_check(const struct topology *t, char *err, size_t errlen)
{
	size_t i, j, k, root = 0, roots = 0;
	int r;

	if ((r = topology_check_shape(t, err, errlen)) < 0)
		return r;
	if (t->kind != TOPOLOGY_HIERARCHICAL || t->lead_of == NULL)
		return 0;
	for (i = 0; i < t->n; i++) {
		if (t->lead_of[i] >= t->n) {
			sp_errf(err, errlen, "hierarchical: agent %zu's lead %zu is not one of "
				     "the %zu agents", i, t->lead_of[i], t->n);
			return SP_EINVAL;
		}
		if (t->lead_of[i] == i && roots++ == 0)
			root = i;
	}
	if (roots != 1) {
		sp_errf(err, errlen, "hierarchical: %zu agents lead themselves, the tree "
			     "needs exactly one root", roots);
		return SP_EINVAL;
	}
	/* One root and n - 1 parent links: a tree unless some agent loops short of the root. */
	for (i = 0; i < t->n; i++) {
		for (j = i, k = 0; j != root && k < t->n; k++)
			j = t->lead_of[j];
		if (j != root) {
			sp_errf(err, errlen, "hierarchical: agent %zu's leads go round in a "
				     "loop and never reach the root, agent %zu", i, root);
			return SP_EINVAL;
		}
	}
	return 0;
}

int
topology_lead(const struct topology *t, size_t i, size_t *ret)
{
	size_t l;
	int r;

	if ((r = topology_check_shape(t, NULL, 0)) < 0)
		return r;
	if (t->kind != TOPOLOGY_HIERARCHICAL || i >= t->n ||
	    (l = topology_parent(t, i)) == t->n)
		return SP_EINVAL;
	*ret = l;
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
		sp_errf(err, errlen, "agent %zu is not one of the %zu agents",
			     from >= t->n ? from : to, t->n);
		return SP_EINVAL;
	}
	if (from == to) {
		sp_errf(err, errlen, "agent %zu cannot address itself", from);
		return SP_EINVAL;
	}
	switch (t->kind) {
	case TOPOLOGY_MESH:
		return 0;
	case TOPOLOGY_HIERARCHICAL:
		lead = topology_parent(t, from);
		if (lead == t->n || topology_parent(t, to) == t->n) {
			sp_errf(err, errlen, "hierarchical: broken lead of agent %zu",
				     lead == t->n ? from : to);
			return SP_EINVAL;
		}
		/* Tree edges only: up to one's lead, down to the agents one leads. */
		if (lead == to || topology_parent(t, to) == from)
			return 0;
		if (lead == from)
			sp_errf(err, errlen, "hierarchical: agent %zu may address only the "
				     "agents it leads", from);
		else if (err != NULL && errlen > 0 && topology_leads_some(t, from))
			sp_errf(err, errlen, "hierarchical: agent %zu may address only its "
				     "lead, agent %zu, and the agents it leads", from, lead);
		else
			sp_errf(err, errlen, "hierarchical: agent %zu may address only its "
				     "lead, agent %zu", from, lead);
		return -EACCES;
	case TOPOLOGY_RING:
		next = (from + 1) % t->n;
		if (to == next)
			return 0;
		sp_errf(err, errlen, "ring: agent %zu may address only agent %zu", from, next);
		return -EACCES;
	case TOPOLOGY_STAR:
		if (from == t->hub || to == t->hub)
			return 0;
		sp_errf(err, errlen, "star: agent %zu may address only the hub, agent %zu",
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
	if (t->kind == TOPOLOGY_HIERARCHICAL && topology_parent(t, from) == t->n)
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

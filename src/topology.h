/*
 * Who may address whom inside a swarm. Agents talk only through the
 * coordinator (/v1/worker/messages); before relaying a message the
 * coordinator asks topology_may_send(). Pure functions: no state, no
 * allocation, no logging; the swarm's description is borrowed for the call.
 *
 *   mesh          anyone may address anyone else.
 *   hierarchical  a tree: an agent may address its lead (its parent) and
 *                 the agents it leads (its children), nobody else. Workers
 *                 talk to their lead, leads to the root and their workers,
 *                 the root to the leads.
 *   ring          each agent may address only the next one (i -> i+1 mod n).
 *   star          the hub may address every spoke; a spoke only the hub.
 *
 * The default hierarchical tree (lead_of NULL) has three levels with a
 * fan-out of TOPOLOGY_FANOUT: agent 0 is the root (the swarm's coordinator
 * agent); agents 1..L are the leads, L = ceil((n - 1) / (TOPOLOGY_FANOUT + 1)),
 * all led by the root; the remaining agents L+1..n-1 are workers, split over
 * the leads in order into contiguous groups whose sizes differ by at most one,
 * the first groups the larger (so no lead has more than TOPOLOGY_FANOUT
 * workers). Ten agents: leads 1 and 2, workers 3-6 under lead 1, workers 7-9
 * under lead 2. Why four: it keeps each lead's inbox and share of the
 * coordination small, and a 10-agent swarm still gets two groups. The root's
 * own fan-out is the number of leads (205 at TOPOLOGY_AGENTS_MAX), which
 * suits the one agent whose job is coordinating.
 *
 * Agents are numbered 0..n-1: the slot each holds in its swarm (a replacement
 * takes over the slot of the agent it replaces). Nobody addresses itself.
 */
#ifndef SANDPIT_TOPOLOGY_H
#define SANDPIT_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>

enum topology_kind {
	TOPOLOGY_MESH,
	TOPOLOGY_HIERARCHICAL,
	TOPOLOGY_RING,
	TOPOLOGY_STAR,
	TOPOLOGY__COUNT,
};

/* Agents per swarm, whatever the topology. */
#define TOPOLOGY_AGENTS_MAX	1024
/* Workers per lead in the default hierarchical tree. */
#define TOPOLOGY_FANOUT		4

struct topology {
	enum topology_kind kind;
	size_t n;			/* agents, 1..TOPOLOGY_AGENTS_MAX */
	/*
	 * hierarchical: lead_of[i] is agent i's lead (its parent in the tree);
	 * the root, and only the root, is its own lead. NULL means the default
	 * tree above. Borrowed, n entries.
	 */
	const size_t *lead_of;
	size_t hub;			/* star: the hub's index (default 0) */
};

/* "mesh", "hierarchical", "ring", "star"; SP_EINVAL for anything else (NULL too). */
int topology_parse(const char *s, enum topology_kind *ret);
/* The name, or "?" out of range. */
const char *topology_name(enum topology_kind k);
/* The topology a swarm gets when the request names none. */
#define TOPOLOGY_DEFAULT	TOPOLOGY_HIERARCHICAL

/*
 * Whether the description is usable: kind known, n in range, for
 * hierarchical a lead_of table that is one tree (every lead_of[i] < n,
 * exactly one root, every agent reaches it), for star hub < n. 0 or
 * SP_EINVAL with the reason in err (may be NULL).
 */
int topology_check(const struct topology *t, char *err, size_t errlen);

/*
 * hierarchical: agent i's lead (the root answers itself) in *ret. 0, or
 * SP_EINVAL for another kind, a bad description or i >= n. Only the entries
 * on i's path are looked at; topology_check() checks the whole table.
 */
int topology_lead(const struct topology *t, size_t i, size_t *ret);

/*
 * Whether agent from may address agent to. 0 when allowed; -EACCES when the
 * topology forbids it (err says what it allows: "ring: agent 2 may address
 * only agent 3"); SP_EINVAL for a bad description or index, or from == to.
 * err may be NULL.
 */
int topology_may_send(const struct topology *t, size_t from, size_t to, char *err,
		      size_t errlen);

/*
 * The agents from may address, in increasing index order, for a broadcast
 * ("*"): up to max indexes written to out, the full count in *ret_n (which
 * may exceed max). 0 or SP_EINVAL.
 */
int topology_targets(const struct topology *t, size_t from, size_t *out, size_t max,
		     size_t *ret_n);

#endif

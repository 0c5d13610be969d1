/*
 * Who may address whom inside a swarm. Agents talk only through the
 * coordinator (/v1/worker/messages); before relaying a message the
 * coordinator asks topology_may_send(). Pure functions: no state, no
 * allocation, no logging; the swarm's description is borrowed for the call.
 *
 *   mesh          anyone may address anyone else.
 *   hierarchical  a worker may address only its lead; a lead may address
 *                 every agent (its workers and the other leads).
 *   ring          each agent may address only the next one (i -> i+1 mod n).
 *   star          the hub may address every spoke; a spoke only the hub.
 *
 * Agents are numbered 0..n-1 in the order they joined the swarm. Nobody
 * addresses itself.
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

struct topology {
	enum topology_kind kind;
	size_t n;			/* agents, 1..TOPOLOGY_AGENTS_MAX */
	/*
	 * hierarchical: lead_of[i] is agent i's lead; a lead is its own lead.
	 * NULL means agent 0 leads everyone. Borrowed, n entries.
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
 * hierarchical every lead_of[i] < n and names an agent that leads itself,
 * for star hub < n. 0 or SP_EINVAL with the reason in err (may be NULL).
 */
int topology_check(const struct topology *t, char *err, size_t errlen);

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

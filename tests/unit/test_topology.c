/*
 * topology: every ordered pair of agents for each kind against a rule written
 * out independently here (the default hierarchical tree too, for every size),
 * the refusal messages, broadcast targets, and bad descriptions (unknown
 * kind, sizes, indexes, lead tables that are not one tree).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sandpit/error.h>

#include "topology.h"

static void
test_parse_and_names(void **state)
{
	enum topology_kind k = TOPOLOGY__COUNT;

	(void)state;
	assert_int_equal(topology_parse("mesh", &k), 0);
	assert_int_equal(k, TOPOLOGY_MESH);
	assert_int_equal(topology_parse("hierarchical", &k), 0);
	assert_int_equal(k, TOPOLOGY_HIERARCHICAL);
	assert_int_equal(topology_parse("ring", &k), 0);
	assert_int_equal(k, TOPOLOGY_RING);
	assert_int_equal(topology_parse("star", &k), 0);
	assert_int_equal(k, TOPOLOGY_STAR);
	k = TOPOLOGY_RING;
	assert_int_equal(topology_parse("Mesh", &k), SP_EINVAL);
	assert_int_equal(topology_parse("", &k), SP_EINVAL);
	assert_int_equal(topology_parse("mesh ", &k), SP_EINVAL);
	assert_int_equal(topology_parse(NULL, &k), SP_EINVAL);
	assert_int_equal(k, TOPOLOGY_RING);	/* untouched on failure */
	assert_string_equal(topology_name(TOPOLOGY_STAR), "star");
	assert_string_equal(topology_name(TOPOLOGY__COUNT), "?");
	assert_string_equal(topology_name((enum topology_kind)-1), "?");
	assert_int_equal(TOPOLOGY_DEFAULT, TOPOLOGY_HIERARCHICAL);
}

static void
test_mesh_all_pairs(void **state)
{
	struct topology t = { .kind = TOPOLOGY_MESH, .n = 6 };
	size_t i, j;

	(void)state;
	for (i = 0; i < t.n; i++)
		for (j = 0; j < t.n; j++)
			assert_int_equal(topology_may_send(&t, i, j, NULL, 0), i == j ? SP_EINVAL : 0);
}

static void
test_ring_all_pairs(void **state)
{
	struct topology t = { .kind = TOPOLOGY_RING };
	char err[128];
	size_t n, i, j;
	int r;

	(void)state;
	for (n = 1; n <= 7; n++) {
		t.n = n;
		for (i = 0; i < n; i++) {
			for (j = 0; j < n; j++) {
				r = topology_may_send(&t, i, j, err, sizeof(err));
				if (i == j)
					assert_int_equal(r, SP_EINVAL);
				else if (j == (i + 1) % n)
					assert_int_equal(r, 0);
				else
					assert_int_equal(r, -EACCES);
			}
		}
	}
	t.n = 5;
	assert_int_equal(topology_may_send(&t, 4, 0, NULL, 0), 0);	/* wraps */
	assert_int_equal(topology_may_send(&t, 0, 4, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "ring: agent 0 may address only agent 1");
	assert_int_equal(topology_may_send(&t, 1, 0, NULL, 0), -EACCES);	/* one way */
}

static void
test_star_all_pairs(void **state)
{
	struct topology t = { .kind = TOPOLOGY_STAR, .n = 5, .hub = 2 };
	char err[128];
	size_t i, j;
	int r;

	(void)state;
	for (i = 0; i < t.n; i++) {
		for (j = 0; j < t.n; j++) {
			r = topology_may_send(&t, i, j, NULL, 0);
			if (i == j)
				assert_int_equal(r, SP_EINVAL);
			else if (i == 2 || j == 2)
				assert_int_equal(r, 0);
			else
				assert_int_equal(r, -EACCES);
		}
	}
	assert_int_equal(topology_may_send(&t, 0, 4, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "star: agent 0 may address only the hub, agent 2");
	t.hub = 5;
	assert_int_equal(topology_may_send(&t, 0, 1, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "hub 5"));
}

/*
 * The default tree written out from topology.h's words, independently of the
 * module: root 0, leads 1..L with L = ceil((n-1)/(F+1)), the workers after
 * them in contiguous groups, the first W mod L groups one larger.
 */
static void
expected_tree(size_t n, size_t *parent)
{
	size_t leads = 0, workers, i, g, left;

	while (leads * (TOPOLOGY_FANOUT + 1) < n - 1)
		leads++;
	workers = n - 1 - leads;
	parent[0] = 0;
	for (i = 1; i <= leads; i++)
		parent[i] = 0;
	i = leads + 1;
	for (g = 0; g < leads; g++)
		for (left = workers / leads + (g < workers % leads); left > 0; left--)
			parent[i++] = 1 + g;
	assert_int_equal(i, n);
}

static void
test_hierarchical_default_tree(void **state)
{
	static const size_t ten[10] = { 0, 0, 0, 1, 1, 1, 1, 2, 2, 2 };
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL };
	size_t parent[TOPOLOGY_AGENTS_MAX], kids[TOPOLOGY_AGENTS_MAX], n, i, j, l;
	int r;

	(void)state;
	/* Ten agents, as the header's example says. */
	t.n = 10;
	for (i = 0; i < 10; i++) {
		assert_int_equal(topology_lead(&t, i, &l), 0);
		assert_int_equal(l, ten[i]);
	}
	for (n = 1; n <= TOPOLOGY_AGENTS_MAX; n += n < 40 ? 1 : 37) {
		t.n = n;
		expected_tree(n, parent);
		memset(kids, 0, sizeof(kids));
		assert_int_equal(topology_check(&t, NULL, 0), 0);
		for (i = 0; i < n; i++) {
			assert_int_equal(topology_lead(&t, i, &l), 0);
			assert_int_equal(l, parent[i]);
			if (i != 0)
				kids[l]++;
		}
		/* No lead over more than the fan-out; nobody below a worker. */
		for (i = 1; i < n; i++) {
			assert_true(kids[i] <= TOPOLOGY_FANOUT);
			if (parent[i] != 0)
				assert_int_equal(kids[i], 0);
		}
		/* Tree edges both ways, nothing else. */
		if (n > 40)
			continue;
		for (i = 0; i < n; i++) {
			for (j = 0; j < n; j++) {
				r = topology_may_send(&t, i, j, NULL, 0);
				if (i == j)
					assert_int_equal(r, SP_EINVAL);
				else if (parent[i] == j || parent[j] == i)
					assert_int_equal(r, 0);
				else
					assert_int_equal(r, -EACCES);
			}
		}
	}
	/* The biggest swarm: lead 1 leads four, the root 205 leads. */
	t.n = TOPOLOGY_AGENTS_MAX;
	assert_int_equal(topology_may_send(&t, 0, 205, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 0, 206, NULL, 0), -EACCES);
	assert_int_equal(topology_may_send(&t, 206, 1, NULL, 0), 0);
	assert_int_equal(topology_lead(&t, TOPOLOGY_AGENTS_MAX, &l), SP_EINVAL);
	t.kind = TOPOLOGY_MESH;
	assert_int_equal(topology_lead(&t, 0, &l), SP_EINVAL);
}

static void
test_hierarchical_refusals(void **state)
{
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL, .n = 10 };
	char err[128];

	(void)state;
	/* A worker: its lead only, not a sibling, not the root, not the other lead. */
	assert_int_equal(topology_may_send(&t, 4, 1, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 4, 5, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "hierarchical: agent 4 may address only its lead, agent 1");
	assert_int_equal(topology_may_send(&t, 4, 0, NULL, 0), -EACCES);
	assert_int_equal(topology_may_send(&t, 4, 2, NULL, 0), -EACCES);
	/* A lead: the root and its own workers, not the other lead's. */
	assert_int_equal(topology_may_send(&t, 2, 0, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 2, 9, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 2, 3, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "hierarchical: agent 2 may address only its lead, agent 0, "
			    "and the agents it leads");
	assert_int_equal(topology_may_send(&t, 2, 1, NULL, 0), -EACCES);
	/* The root: the leads, not the workers. */
	assert_int_equal(topology_may_send(&t, 0, 1, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 0, 7, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "hierarchical: agent 0 may address only the agents it leads");
}

static void
test_hierarchical_given_tree(void **state)
{
	/* Root 3 over leads 0 and 5; workers 1, 2 under 0; worker 4 under 5. */
	static const size_t lead_of[6] = { 3, 0, 0, 3, 5, 3 };
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL, .n = 6, .lead_of = lead_of };
	char err[128];
	size_t i, j;
	int r, want;

	(void)state;
	assert_int_equal(topology_check(&t, err, sizeof(err)), 0);
	for (i = 0; i < t.n; i++) {
		for (j = 0; j < t.n; j++) {
			r = topology_may_send(&t, i, j, NULL, 0);
			if (i == j)
				want = SP_EINVAL;
			else
				want = lead_of[i] == j || lead_of[j] == i ? 0 : -EACCES;
			assert_int_equal(r, want);
		}
	}
	assert_int_equal(topology_may_send(&t, 1, 3, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "hierarchical: agent 1 may address only its lead, agent 0");
}

static void
test_hierarchical_broken_tables(void **state)
{
	static const size_t out_of_range[3] = { 0, 7, 0 };
	static const size_t two_roots[4] = { 0, 0, 2, 2 };
	static const size_t no_root[2] = { 1, 0 };
	static const size_t loop[5] = { 0, 0, 3, 4, 2 };	/* 2 -> 3 -> 4 -> 2 */
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL, .n = 3, .lead_of = out_of_range };
	char err[128];
	size_t out[4], n;

	(void)state;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "agent 1's lead 7"));
	assert_int_equal(topology_may_send(&t, 1, 0, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_may_send(&t, 0, 1, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_targets(&t, 1, out, 4, &n), SP_EINVAL);
	assert_int_equal(topology_lead(&t, 1, &n), SP_EINVAL);
	t.lead_of = two_roots;
	t.n = 4;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "2 agents lead themselves"));
	t.lead_of = no_root;
	t.n = 2;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "0 agents lead themselves"));
	t.lead_of = loop;
	t.n = 5;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "agent 2's leads go round in a loop"));
}

static void
test_bad_input(void **state)
{
	struct topology t = { .kind = TOPOLOGY_MESH, .n = 3 };
	char err[128];

	(void)state;
	assert_int_equal(topology_may_send(NULL, 0, 1, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(topology_check(NULL, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_may_send(&t, 0, 3, err, sizeof(err)), SP_EINVAL);
	assert_string_equal(err, "agent 3 is not one of the 3 agents");
	assert_int_equal(topology_may_send(&t, 9, 0, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_may_send(&t, 1, 1, err, sizeof(err)), SP_EINVAL);
	assert_string_equal(err, "agent 1 cannot address itself");
	t.n = 0;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "0 agents"));
	t.n = TOPOLOGY_AGENTS_MAX + 1;
	assert_int_equal(topology_may_send(&t, 0, 1, NULL, 0), SP_EINVAL);
	t.n = TOPOLOGY_AGENTS_MAX;
	assert_int_equal(topology_may_send(&t, 0, TOPOLOGY_AGENTS_MAX - 1, NULL, 0), 0);
	t.kind = TOPOLOGY__COUNT;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "unknown topology"));
	t.kind = (enum topology_kind)-3;
	assert_int_equal(topology_may_send(&t, 0, 1, NULL, 0), SP_EINVAL);
	/* A single agent has nobody to address, in any topology. */
	t.n = 1;
	t.kind = TOPOLOGY_RING;
	assert_int_equal(topology_check(&t, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 0, 0, NULL, 0), SP_EINVAL);
}

static void
test_targets(void **state)
{
	static const size_t lead_of[5] = { 0, 0, 0, 2, 2 };	/* root 0, leads 1 and 2 */
	struct topology t = { .kind = TOPOLOGY_MESH, .n = 5 };
	size_t out[8], n = 0;

	(void)state;
	assert_int_equal(topology_targets(&t, 2, out, 8, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 3);
	assert_int_equal(out[3], 4);
	/* Fewer slots than targets: the count still says how many. */
	assert_int_equal(topology_targets(&t, 0, out, 2, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(out[1], 2);
	t.kind = TOPOLOGY_RING;
	assert_int_equal(topology_targets(&t, 4, out, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 0);
	t.kind = TOPOLOGY_STAR;
	t.hub = 3;
	assert_int_equal(topology_targets(&t, 1, out, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 3);
	assert_int_equal(topology_targets(&t, 3, out, 8, &n), 0);
	assert_int_equal(n, 4);
	t.kind = TOPOLOGY_HIERARCHICAL;
	t.lead_of = lead_of;
	assert_int_equal(topology_targets(&t, 3, out, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 2);
	/* The root reaches its one lead; lead 2 its root and its workers. */
	assert_int_equal(topology_targets(&t, 0, out, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 2);
	assert_int_equal(topology_targets(&t, 2, out, 8, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 3);
	assert_int_equal(out[2], 4);
	/* The default tree of ten: lead 1 has the root and workers 3-6. */
	t.lead_of = NULL;
	t.n = 10;
	assert_int_equal(topology_targets(&t, 1, out, 8, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[4], 6);
	t.n = 5;
	assert_int_equal(topology_targets(&t, 5, out, 8, &n), SP_EINVAL);
	assert_int_equal(topology_targets(NULL, 0, out, 8, &n), SP_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_names),
		cmocka_unit_test(test_mesh_all_pairs),
		cmocka_unit_test(test_ring_all_pairs),
		cmocka_unit_test(test_star_all_pairs),
		cmocka_unit_test(test_hierarchical_default_tree),
		cmocka_unit_test(test_hierarchical_refusals),
		cmocka_unit_test(test_hierarchical_given_tree),
		cmocka_unit_test(test_hierarchical_broken_tables),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_targets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

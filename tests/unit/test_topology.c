/*
 * topology: every ordered pair of agents for each kind against a rule written
 * out independently here, the refusal messages, broadcast targets, and bad
 * descriptions (unknown kind, sizes, indexes, broken lead tables).
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

static void
test_hierarchical_default_lead(void **state)
{
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL, .n = 4 };
	size_t i, j;
	int r;

	(void)state;
	/* No table: agent 0 leads. */
	for (i = 0; i < t.n; i++) {
		for (j = 0; j < t.n; j++) {
			r = topology_may_send(&t, i, j, NULL, 0);
			if (i == j)
				assert_int_equal(r, SP_EINVAL);
			else if (i == 0 || j == 0)
				assert_int_equal(r, 0);
			else
				assert_int_equal(r, -EACCES);
		}
	}
}

static void
test_hierarchical_two_leads(void **state)
{
	/* Leads 0 and 3; workers 1, 2 under 0; workers 4, 5 under 3. */
	static const size_t lead_of[6] = { 0, 0, 0, 3, 3, 3 };
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
			else if (lead_of[i] == i)	/* a lead: anyone */
				want = 0;
			else
				want = j == lead_of[i] ? 0 : -EACCES;
			assert_int_equal(r, want);
		}
	}
	/* A worker may not reach the other group's lead, nor a sibling. */
	assert_int_equal(topology_may_send(&t, 1, 3, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "hierarchical: agent 1 may address only its lead, agent 0");
	assert_int_equal(topology_may_send(&t, 4, 5, NULL, 0), -EACCES);
	/* Leads reach each other and the other group's workers. */
	assert_int_equal(topology_may_send(&t, 0, 3, NULL, 0), 0);
	assert_int_equal(topology_may_send(&t, 3, 1, NULL, 0), 0);
}

static void
test_hierarchical_broken_tables(void **state)
{
	static const size_t out_of_range[3] = { 0, 7, 0 };
	static const size_t chained[4] = { 0, 0, 1, 0 };	/* 2's lead 1 is not a lead */
	static const size_t no_self_lead[2] = { 1, 0 };
	struct topology t = { .kind = TOPOLOGY_HIERARCHICAL, .n = 3, .lead_of = out_of_range };
	char err[128];
	size_t out[4], n;

	(void)state;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "agent 1's lead 7"));
	assert_int_equal(topology_may_send(&t, 1, 0, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_may_send(&t, 0, 1, NULL, 0), SP_EINVAL);
	assert_int_equal(topology_targets(&t, 1, out, 4, &n), SP_EINVAL);
	t.lead_of = chained;
	t.n = 4;
	assert_int_equal(topology_check(&t, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "agent 2"));
	assert_int_equal(topology_may_send(&t, 2, 1, NULL, 0), SP_EINVAL);
	t.lead_of = no_self_lead;
	t.n = 2;
	assert_int_equal(topology_check(&t, NULL, 0), SP_EINVAL);
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
	static const size_t lead_of[5] = { 0, 0, 2, 2, 2 };
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
	assert_int_equal(topology_targets(&t, 0, out, 8, &n), 0);
	assert_int_equal(n, 4);
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
		cmocka_unit_test(test_hierarchical_default_lead),
		cmocka_unit_test(test_hierarchical_two_leads),
		cmocka_unit_test(test_hierarchical_broken_tables),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_targets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

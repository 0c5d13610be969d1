/*
 * arena: the int8 scan with float32 re-rank in exact mode returns the same
 * top C as a float32 brute force (rowids and scores), with and without
 * filters, on clustered data full of near-ties; the rowid index survives
 * removes, swaps and replacements.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "embed.h"

static uint64_t rng = 88172645463325252ULL;

static double
urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static float
grand(void)
{
	double u = urand() + 1e-12, v = urand();

	return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

/* Clustered vectors: 20 centres, small noise, so many items are near-ties. */
static void
fill(struct arena *a, unsigned dims, size_t n, float noise)
{
	float *centres = malloc(20 * dims * sizeof(float)), *v = malloc(dims * sizeof(float));

	for (size_t i = 0; i < 20 * dims; i++)
		centres[i] = grand();
	for (size_t i = 0; i < n; i++) {
		struct arena_meta m = { 0 };
		const float *c = centres + (i % 20) * dims;

		for (unsigned d = 0; d < dims; d++)
			v[d] = c[d] + noise * grand();
		m.rowid = (int64_t)i + 1;
		m.ns = i % 3;
		m.outcome = (int8_t)(i % 2);
		m.confidence = (float)(i % 10) / 10.0f;
		m.created_ms = (int64_t)i;
		m.ntags = 1;
		m.tags[0] = arena_hash(i % 5 == 0 ? "five" : "other");
		arena_add(a, &m, v);
	}
	free(v);
	free(centres);
}

static void
query(unsigned dims, float *q, float noise, const struct arena *a)
{
	/* Near an existing item: the hard case for quantisation. */
	const float *base = arena_vec(a, (uint32_t)(urand() * (double)arena_count(a)));

	for (unsigned d = 0; d < dims; d++)
		q[d] = base[d] + noise * grand() / sqrtf((float)dims);
	embed_normalize(q, dims);
}

static void
check_exact(unsigned dims, size_t n, const struct arena_filter *f)
{
	struct arena *a = arena_new(dims);
	struct arena_hit got[100], want[100];
	float *q = malloc(dims * sizeof(float));
	size_t nq = 60, same_approx = 0, total = 0;

	fill(a, dims, n, 0.05f);
	for (size_t t = 0; t < nq; t++) {
		size_t c = t % 2 ? 50 : 100, ng, nw, na;
		struct arena_hit approx[100];

		query(dims, q, 0.3f, a);
		/* Every third query asks for an exact top 10 only, the others for all of c. */
		size_t ek = t % 3 == 0 ? 10 : c;

		ng = arena_search(a, q, f, c, ek, got);
		nw = arena_brute(a, q, f, c, want);
		assert_int_equal(ng, nw);
		for (size_t i = 0; i < (ng < ek ? ng : ek); i++) {
			assert_int_equal(got[i].rowid, want[i].rowid);
			assert_true(got[i].sim == want[i].sim);
		}
		assert_true(arena_last_rescored(a) >= ng);
		na = arena_search(a, q, f, c, 0, approx);
		for (size_t i = 0; i < na && i < 10; i++, total++)
			for (size_t j = 0; j < 10 && j < nw; j++)
				if (approx[i].rowid == want[j].rowid) {
					same_approx++;
					break;
				}
	}
	printf("dims %u n %zu: non-exact recall@10 %.4f\n", dims, n,
	       total ? (double)same_approx / (double)total : 1.0);
	free(q);
	arena_free(a);
}

static void
test_exact_matches_brute(void **state)
{
	struct arena_filter f;

	arena_filter_init(&f);
	check_exact(384, 4000, &f);
	check_exact(100, 3000, &f);	/* not a multiple of the int8 padding */
}

static void
test_exact_with_filters(void **state)
{
	struct arena_filter f;
	uint64_t five = arena_hash("five");

	arena_filter_init(&f);
	f.has_ns = true;
	f.ns = 1;
	f.outcome = 1;
	check_exact(384, 3000, &f);

	arena_filter_init(&f);
	f.tags = &five;
	f.ntags = 1;
	f.min_confidence = 0.5f;
	f.min_created_ms = 100;
	check_exact(128, 3000, &f);
}

static void
test_filter_fewer_than_c(void **state)
{
	struct arena *a = arena_new(64);
	struct arena_filter f;
	struct arena_hit out[50];
	float q[64];
	size_t n;

	fill(a, 64, 500, 0.1f);
	arena_filter_init(&f);
	f.min_created_ms = 490;		/* ten items */
	query(64, q, 0.1f, a);
	n = arena_search(a, q, &f, 50, 50, out);
	assert_int_equal(n, 10);
	for (size_t i = 0; i < n; i++)
		assert_true(out[i].rowid > 490);
	arena_free(a);
}

static void
test_remove_and_replace(void **state)
{
	struct arena *a = arena_new(32);
	struct arena_meta *m;
	struct arena_hit out[10];
	const float *v;
	float q[32];
	size_t i;

	fill(a, 32, 1000, 0.1f);
	/* Remove every third item: swaps move others, the index must follow. */
	for (i = 1; i <= 1000; i += 3)
		assert_true(arena_remove(a, (int64_t)i));
	assert_false(arena_remove(a, 1));
	assert_int_equal(arena_count(a), 1000 - 334);
	for (i = 1; i <= 1000; i++) {
		m = arena_get(a, (int64_t)i, &v);
		if ((i - 1) % 3 == 0)
			assert_null(m);
		else {
			assert_non_null(m);
			assert_int_equal(m->rowid, (int64_t)i);
			assert_true(fabsf(arena_dot(v, v, 32) - 1.0f) < 1e-4f);
		}
	}
	/* A removed item is never returned; a replaced one is found at its new place. */
	memcpy(q, arena_vec(a, 0), sizeof(q));
	{
		struct arena_meta nm = { 0 };
		float nv[32];

		for (i = 0; i < 32; i++)
			nv[i] = -q[i];
		nm.rowid = 2;
		arena_add(a, &nm, nv);
		assert_int_equal(arena_count(a), 1000 - 334);
		for (i = 0; i < 32; i++)
			q[i] = -q[i];
	}
	{
		struct arena_filter f;

		arena_filter_init(&f);
		assert_int_equal(arena_search(a, q, &f, 10, 10, out), 10);
		assert_int_equal(out[0].rowid, 2);
		assert_true(out[0].sim > 0.999f);
		for (i = 0; i < 10; i++)
			assert_true((out[i].rowid - 1) % 3 != 0);
	}
	arena_free(a);
}

static void
test_empty(void **state)
{
	struct arena *a = arena_new(16);
	struct arena_filter f;
	struct arena_hit out[3];
	float q[16] = { 1 };

	arena_filter_init(&f);
	assert_int_equal(arena_search(a, q, &f, 3, 3, out), 0);
	assert_int_equal(arena_brute(a, q, &f, 3, out), 0);
	arena_free(a);
	arena_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_matches_brute),
		cmocka_unit_test(test_exact_with_filters),
		cmocka_unit_test(test_filter_fewer_than_c),
		cmocka_unit_test(test_remove_and_replace),
		cmocka_unit_test(test_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

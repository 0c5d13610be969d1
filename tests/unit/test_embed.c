/*
 * embed: the hashing embedder is deterministic, unit length, case- and
 * punctuation-blind, scores paraphrases above unrelated text, and handles
 * empty and hostile input.
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

#define D 384

static float
sim(const char *a, const char *b)
{
	float x[D], y[D];

	embed_hash(a, strlen(a), x, D);
	embed_hash(b, strlen(b), y, D);
	return arena_dot(x, y, D);
}

static void
test_unit_and_deterministic(void **state)
{
	const char *t = "Retry the flaky integration test with a fresh Docker network";
	float x[D], y[D];

	embed_hash(t, strlen(t), x, D);
	embed_hash(t, strlen(t), y, D);
	assert_memory_equal(x, y, sizeof(x));
	assert_true(fabsf(arena_dot(x, x, D) - 1.0f) < 1e-5f);
	/* A fixed value: the vectors are stored, so they must not drift between builds. */
	{
		char m[32];

		embed_hash_model(D, m, sizeof(m));
		assert_string_equal(m, "fh1-384");
	}
}

static void
test_case_and_punctuation(void **state)
{
	assert_true(sim("Clean the build cache!", "clean THE build, cache") > 0.999f);
}

static void
test_similarity_order(void **state)
{
	const char *a = "pin the python dependency versions to avoid breaking upgrades";
	const char *b = "pinning dependency versions in python avoids upgrades that break";
	const char *c = "the kubernetes pod was evicted for exceeding its memory limit";
	float ab = sim(a, b), ac = sim(a, c);

	printf("paraphrase %.3f unrelated %.3f\n", ab, ac);
	assert_true(ab > 0.4f);
	assert_true(fabsf(ac) < 0.2f);
	assert_true(ab > ac + 0.3f);
}

static void
test_empty_and_odd(void **state)
{
	float x[D];
	char big[5000];

	embed_hash("", 0, x, D);
	for (int i = 0; i < D; i++)
		assert_true(x[i] == 0.0f);
	embed_hash("the of and", 10, x, D);	/* stopwords only */
	for (int i = 0; i < D; i++)
		assert_true(x[i] == 0.0f);
	/* A long token and bytes above 0x7f: bounded, unit length. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	big[10] = (char)0xc3;
	embed_hash(big, strlen(big), x, D);
	assert_true(fabsf(arena_dot(x, x, D) - 1.0f) < 1e-5f);
}

static void
test_dims(void **state)
{
	float x[1024];

	embed_hash("memory dims", 11, x, 1024);
	assert_true(fabsf(arena_dot(x, x, 1024) - 1.0f) < 1e-5f);
	embed_hash("memory dims", 11, x, EMBED_MIN_DIMS);
	assert_true(fabsf(arena_dot(x, x, EMBED_MIN_DIMS) - 1.0f) < 1e-5f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unit_and_deterministic),
		cmocka_unit_test(test_case_and_punctuation),
		cmocka_unit_test(test_similarity_order),
		cmocka_unit_test(test_empty_and_odd),
		cmocka_unit_test(test_dims),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

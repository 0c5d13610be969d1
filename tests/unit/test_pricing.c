/*
 * pricing: exact costs for known inputs (hand-computed), rounding, the
 * bounds at their largest (no overflow), amount parsing and formatting,
 * the "price" directive, the provider table and the running-time meter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sandpit/error.h>

#include "pricing.h"

#define GIB (1LL << 30)

static void
test_cost_exact(void **state)
{
	/* 0.000014 per CPU-second, 0.0000025 per GiB-second. */
	struct pricing_price p = { 14000, 2500 };
	int64_t c = -1;

	(void)state;
	/* 2 CPUs, 4 GiB, 1 hour: 2*3600*14000 + 4*3600*2500 = 100800000 + 36000000. */
	assert_int_equal(pricing_cost(&p, 2000000000LL, 4 * GIB, 3600000, &c), 0);
	assert_int_equal(c, 136800000);
	/* Nothing running costs nothing. */
	assert_int_equal(pricing_cost(&p, 2000000000LL, 4 * GIB, 0, &c), 0);
	assert_int_equal(c, 0);
	/* Half a CPU, 512 MiB, 1.5 s: 0.5*1.5*14000 = 10500; 0.5*1.5*2500 = 1875. */
	assert_int_equal(pricing_cost(&p, 500000000LL, GIB / 2, 1500, &c), 0);
	assert_int_equal(c, 12375);
	/* Rounding to the nearest nano-unit: 1 nano-CPU for 1 ms at 1 unit/s = 1e-12 units. */
	p = (struct pricing_price){ PRICING_NANO, 0 };
	assert_int_equal(pricing_cost(&p, 1, 0, 1, &c), 0);
	assert_int_equal(c, 0);
	/* 0.5 nano-units rounds up: 1 CPU for 1 ms at 0.0000005/s. */
	p = (struct pricing_price){ 500, 0 };
	assert_int_equal(pricing_cost(&p, 1000000000LL, 0, 1, &c), 0);
	assert_int_equal(c, 1);
	/* Memory priced alone: 1 byte short of 1 GiB for 1000 s at 1 nano/GiB-s = 999.99... -> 1000. */
	p = (struct pricing_price){ 0, 1 };
	assert_int_equal(pricing_cost(&p, 0, GIB - 1, 1000000, &c), 0);
	assert_int_equal(c, 1000);
}

static void
test_cost_bounds(void **state)
{
	struct pricing_price max = { PRICING_PRICE_MAX, PRICING_PRICE_MAX };
	struct pricing_price small = { 1, 1 };
	int64_t c = 77;

	(void)state;
	/* At every bound at once the 128-bit product does not overflow; the sum does not fit. */
	assert_int_equal(pricing_cost(&max, PRICING_CPUS_MAX, PRICING_MEMORY_MAX,
				      PRICING_DURATION_MAX, &c), -ERANGE);
	assert_int_equal(c, 77);
	/* Small prices at the bounds fit and are exact: 1000 CPUs * 31622400 s + 2^20 GiB * 31622400 s. */
	assert_int_equal(pricing_cost(&small, PRICING_CPUS_MAX, PRICING_MEMORY_MAX,
				      PRICING_DURATION_MAX, &c), 0);
	assert_int_equal(c, 1000LL * 31622400 + (1LL << 20) * 31622400);
	assert_int_equal(pricing_cost(&small, -1, 0, 1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(&small, 0, -1, 1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(&small, 0, 0, -1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(&small, PRICING_CPUS_MAX + 1, 0, 1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(&small, 0, PRICING_MEMORY_MAX + 1, 1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(&small, 0, 0, PRICING_DURATION_MAX + 1, &c), SP_EINVAL);
	small.cpu_second = -1;
	assert_int_equal(pricing_cost(&small, 0, 0, 1, &c), SP_EINVAL);
	assert_int_equal(pricing_cost(NULL, 0, 0, 1, &c), SP_EINVAL);
}

static void
test_amounts(void **state)
{
	static const struct { const char *s; int64_t v; } ok[] = {
		{ "0", 0 }, { "12", 12 * PRICING_NANO }, { "0.000014", 14000 },
		{ "3.5", 3500000000LL }, { "0.000000001", 1 }, { "1000", PRICING_PRICE_MAX },
		{ "007.10", 7100000000LL },
	};
	static const char *const bad[] = {
		"", ".5", "5.", "-1", "+1", "1e-3", "0.0000000001", "1000.000000001", "1001",
		"99999999999999999999", "1,5", " 1", "1 ", "abc", "0x10",
	};
	char buf[40];
	int64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = -1;
		assert_int_equal(pricing_parse_amount(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].v);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = -7;
		assert_int_equal(pricing_parse_amount(bad[i], &v), SP_EINVAL);
		assert_int_equal(v, -7);
	}
	assert_int_equal(pricing_parse_amount(NULL, &v), SP_EINVAL);
	pricing_format(14000, buf, sizeof(buf));
	assert_string_equal(buf, "0.000014");
	pricing_format(136800000, buf, sizeof(buf));
	assert_string_equal(buf, "0.1368");
	pricing_format(12 * PRICING_NANO, buf, sizeof(buf));
	assert_string_equal(buf, "12");
	pricing_format(0, buf, sizeof(buf));
	assert_string_equal(buf, "0");
	pricing_format(-500000000, buf, sizeof(buf));
	assert_string_equal(buf, "-0.5");
	pricing_format(INT64_MIN, buf, sizeof(buf));
	assert_string_equal(buf, "-9223372036.854775808");
	pricing_format(1, buf, sizeof(buf));
	assert_string_equal(buf, "0.000000001");
	/* Parse and format round-trip. */
	assert_int_equal(pricing_parse_amount("0.0000025", &v), 0);
	pricing_format(v, buf, sizeof(buf));
	assert_string_equal(buf, "0.0000025");
}

static void
test_add(void **state)
{
	int64_t s = INT64_MAX - 5;

	(void)state;
	assert_int_equal(pricing_add(&s, 5), 0);
	assert_int_equal(s, INT64_MAX);
	assert_int_equal(pricing_add(&s, 1), -ERANGE);
	assert_int_equal(s, INT64_MAX);
}

static void
test_directive_and_table(void **state)
{
	struct pricing_price p = { 0 }, got;
	struct pricing *t = pricing_new();
	char *prov = NULL, err[128], name[8];
	int i;

	(void)state;
	assert_int_equal(pricing_parse_directive("docker 0.000014\t0.0000025", &prov, &p,
						 err, sizeof(err)), 0);
	assert_string_equal(prov, "docker");
	assert_int_equal(p.cpu_second, 14000);
	assert_int_equal(p.gib_second, 2500);
	assert_int_equal(pricing_set(t, prov, &p), 0);
	free(prov);
	assert_int_equal(pricing_parse_directive("e2b 0.00005", &prov, &p, err, sizeof(err)),
			 SP_EINVAL);
	assert_non_null(strstr(err, "got 2 words"));
	assert_int_equal(pricing_parse_directive("e2b 1 2 3", &prov, &p, err, sizeof(err)),
			 SP_EINVAL);
	assert_int_equal(pricing_parse_directive("E2B 1 2", &prov, &p, err, sizeof(err)),
			 SP_EINVAL);
	assert_non_null(strstr(err, "invalid provider"));
	assert_int_equal(pricing_parse_directive("e2b -1 2", &prov, &p, err, sizeof(err)),
			 SP_EINVAL);
	assert_non_null(strstr(err, "price e2b"));
	assert_int_equal(pricing_parse_directive(NULL, &prov, &p, err, sizeof(err)), SP_EINVAL);

	assert_int_equal(pricing_get(t, "docker", &got), 0);
	assert_int_equal(got.cpu_second, 14000);
	assert_int_equal(pricing_get(t, "e2b", &got), SP_ENOTFOUND);
	assert_int_equal(pricing_get(t, NULL, &got), SP_ENOTFOUND);
	/* Replacing keeps one entry per provider. */
	p.cpu_second = 1;
	assert_int_equal(pricing_set(t, "docker", &p), 0);
	assert_int_equal(pricing_get(t, "docker", &got), 0);
	assert_int_equal(got.cpu_second, 1);
	p.gib_second = PRICING_PRICE_MAX + 1;
	assert_int_equal(pricing_set(t, "x", &p), SP_EINVAL);
	p.gib_second = 0;
	assert_int_equal(pricing_set(t, "", &p), SP_EINVAL);
	for (i = 1; i < PRICING_PROVIDERS_MAX; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		assert_int_equal(pricing_set(t, name, &p), 0);
	}
	assert_int_equal(pricing_set(t, "onemore", &p), SP_ELIMIT);
	pricing_free(t);
	pricing_free(NULL);
}

static void
test_meter(void **state)
{
	struct pricing_meter m;

	(void)state;
	pricing_meter_init(&m);
	assert_int_equal(pricing_meter_ms(&m, 1000), 0);
	pricing_meter_stop(&m, 1000);		/* stopped already: nothing */
	assert_int_equal(pricing_meter_ms(&m, 1000), 0);
	pricing_meter_start(&m, 1000);
	pricing_meter_start(&m, 1500);		/* running already: keeps 1000 */
	assert_int_equal(pricing_meter_ms(&m, 4000), 3000);
	pricing_meter_stop(&m, 4000);
	assert_int_equal(pricing_meter_ms(&m, 9000), 3000);
	pricing_meter_start(&m, 10000);
	assert_int_equal(pricing_meter_ms(&m, 10500), 3500);
	/* The clock steps back: never negative, never less than what was counted. */
	assert_int_equal(pricing_meter_ms(&m, 9000), 3000);
	pricing_meter_stop(&m, 9500);
	assert_int_equal(pricing_meter_ms(&m, 20000), 3000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cost_exact),
		cmocka_unit_test(test_cost_bounds),
		cmocka_unit_test(test_amounts),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_directive_and_table),
		cmocka_unit_test(test_meter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

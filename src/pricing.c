/*
 * Pricing: exact integer arithmetic on nano-units for the cost of running
 * time, decimal parsing and formatting of amounts, a per-provider price
 * table and a running-time meter. It owns only its table; it never logs and
 * never names a provider.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sandpit/error.h>

#include "pricing.h"
#include "xmalloc.h"

typedef __int128 i128;

/* num / den rounded to nearest, halves away from zero; num >= 0, den > 0. */
static i128
pricing_div_round(i128 num, i128 den)
{
	return (num + den / 2) / den;
}

int
pricing_cost(const struct pricing_price *p, int64_t nano_cpus, int64_t memory_bytes,
	     int64_t running_ms, int64_t *ret)
{
	i128 cpu, mem, sum;

	if (p == NULL || p->cpu_second < 0 || p->cpu_second > PRICING_PRICE_MAX ||
	    p->gib_second < 0 || p->gib_second > PRICING_PRICE_MAX ||
	    nano_cpus < 0 || nano_cpus > PRICING_CPUS_MAX ||
	    memory_bytes < 0 || memory_bytes > PRICING_MEMORY_MAX ||
	    running_ms < 0 || running_ms > PRICING_DURATION_MAX)
		return SP_EINVAL;
	/* CPU-seconds = nano_cpus/1e9 * ms/1e3; at the bounds the product stays below 2^115. */
	cpu = pricing_div_round((i128)nano_cpus * running_ms * p->cpu_second,
				(i128)1000000000 * 1000);
	/* GiB-seconds = bytes/2^30 * ms/1e3; below 2^125 at the bounds. */
	mem = pricing_div_round((i128)memory_bytes * running_ms * p->gib_second,
				((i128)1 << 30) * 1000);
	sum = cpu + mem;
	if (sum > INT64_MAX)
		return -ERANGE;
	*ret = (int64_t)sum;
	return 0;
}

int
pricing_parse_amount(const char *s, int64_t *ret)
{
	int64_t whole = 0, frac = 0;
	int digits = 0, fdigits = 0;
	const char *c = s;

	if (s == NULL)
		return SP_EINVAL;
	for (; *c >= '0' && *c <= '9'; c++, digits++) {
		whole = whole * 10 + (*c - '0');
		if (whole > PRICING_PRICE_MAX / PRICING_NANO)
			return SP_EINVAL;
	}
	if (*c == '.') {
		for (c++; *c >= '0' && *c <= '9'; c++, fdigits++) {
			if (fdigits == 9)
				return SP_EINVAL;	/* finer than a nano-unit */
			frac = frac * 10 + (*c - '0');
		}
		if (fdigits == 0)
			return SP_EINVAL;
	}
	if (*c != '\0' || digits == 0)
		return SP_EINVAL;
	for (; fdigits < 9; fdigits++)
		frac *= 10;
	if (whole * PRICING_NANO + frac > PRICING_PRICE_MAX)
		return SP_EINVAL;
	*ret = whole * PRICING_NANO + frac;
	return 0;
}

void
pricing_format(int64_t nano, char *buf, size_t len)
{
	uint64_t u, whole, frac;
	char fbuf[16];
	int i;

	u = nano < 0 ? (uint64_t)0 - (uint64_t)nano : (uint64_t)nano;
	whole = u / PRICING_NANO;
	frac = u % PRICING_NANO;
	if (frac == 0) {
		snprintf(buf, len, "%s%llu", nano < 0 ? "-" : "", (unsigned long long)whole);
		return;
	}
	snprintf(fbuf, sizeof(fbuf), "%09llu", (unsigned long long)frac);
	for (i = 8; i > 0 && fbuf[i] == '0'; i--)
		fbuf[i] = '\0';
	snprintf(buf, len, "%s%llu.%s", nano < 0 ? "-" : "", (unsigned long long)whole, fbuf);
}

int
pricing_add(int64_t *sum, int64_t b)
{
	int64_t r;

	if (__builtin_add_overflow(*sum, b, &r))
		return -ERANGE;
	*sum = r;
	return 0;
}

static bool
pricing_name_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i == 32)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_' || s[i] == '-'))
			return false;
	}
	return true;
}

int
pricing_parse_directive(const char *value, char **ret_provider, struct pricing_price *ret,
			char *err, size_t errlen)
{
	char buf[256], *tok[4], *save = NULL, *p;
	struct pricing_price pr;
	int n = 0;

	if (value == NULL || strlen(value) >= sizeof(buf)) {
		sp_errf(err, errlen, "price: expected \"PROVIDER CPU_SECOND GIB_SECOND\"");
		return SP_EINVAL;
	}
	strcpy(buf, value);
	for (p = strtok_r(buf, " \t", &save); p != NULL && n < 4; p = strtok_r(NULL, " \t", &save))
		tok[n++] = p;
	if (n != 3) {
		sp_errf(err, errlen, "price: expected \"PROVIDER CPU_SECOND GIB_SECOND\", "
			    "got %d word%s", n, n == 1 ? "" : "s");
		return SP_EINVAL;
	}
	if (!pricing_name_valid(tok[0])) {
		sp_errf(err, errlen, "price: invalid provider name '%.32s'", tok[0]);
		return SP_EINVAL;
	}
	if (pricing_parse_amount(tok[1], &pr.cpu_second) < 0 ||
	    pricing_parse_amount(tok[2], &pr.gib_second) < 0) {
		sp_errf(err, errlen, "price %s: amounts are decimals from 0 to 1000 with at "
			    "most 9 decimal places", tok[0]);
		return SP_EINVAL;
	}
	*ret_provider = xstrdup(tok[0]);
	*ret = pr;
	return 0;
}

struct pricing_entry {
	char name[33];
	struct pricing_price price;
};

struct pricing {
	struct pricing_entry e[PRICING_PROVIDERS_MAX];
	size_t n;
};

struct pricing *
pricing_new(void)
{
	return xcalloc(1, sizeof(struct pricing));
}

void
pricing_free(struct pricing *t)
{
	free(t);
}

int
pricing_set(struct pricing *t, const char *provider, const struct pricing_price *p)
{
	size_t i;

	if (!pricing_name_valid(provider) || p->cpu_second < 0 || p->gib_second < 0 ||
	    p->cpu_second > PRICING_PRICE_MAX || p->gib_second > PRICING_PRICE_MAX)
		return SP_EINVAL;
	for (i = 0; i < t->n; i++) {
		if (strcmp(t->e[i].name, provider) == 0) {
			t->e[i].price = *p;
			return 0;
		}
	}
	if (t->n == PRICING_PROVIDERS_MAX)
		return SP_ELIMIT;
	snprintf(t->e[t->n].name, sizeof(t->e[t->n].name), "%s", provider);
	t->e[t->n++].price = *p;
	return 0;
}

int
pricing_get(const struct pricing *t, const char *provider, struct pricing_price *ret)
{
	size_t i;

	for (i = 0; provider != NULL && i < t->n; i++) {
		if (strcmp(t->e[i].name, provider) == 0) {
			*ret = t->e[i].price;
			return 0;
		}
	}
	return SP_ENOTFOUND;
}

void
pricing_meter_init(struct pricing_meter *m)
{
	m->since_ms = -1;
	m->total_ms = 0;
}

void
pricing_meter_start(struct pricing_meter *m, int64_t now_ms)
{
	if (m->since_ms < 0)
		m->since_ms = now_ms < 0 ? 0 : now_ms;
}

void
pricing_meter_stop(struct pricing_meter *m, int64_t now_ms)
{
	if (m->since_ms < 0)
		return;
	if (now_ms > m->since_ms)
		m->total_ms += now_ms - m->since_ms;
	m->since_ms = -1;
}

int64_t
pricing_meter_ms(const struct pricing_meter *m, int64_t now_ms)
{
	if (m->since_ms >= 0 && now_ms > m->since_ms)
		return m->total_ms + (now_ms - m->since_ms);
	return m->total_ms;
}

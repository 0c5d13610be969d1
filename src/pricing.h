/*
 * The cost of sandboxes' running time. Prices are configured per provider,
 * per CPU-second and per GiB-second of the sandbox's limits (what it was
 * given, not what it used), in an unnamed currency unit. Amounts are kept as
 * int64 nano-units (1e-9 of a unit) and computed in 128-bit integers, so
 * nothing is lost to floating point; each component is rounded to the
 * nearest nano-unit once.
 *
 * Pure functions plus a table the caller owns (pricing_new/free); nothing
 * logs. Provider names are whatever the configuration says: the core names
 * none.
 */
#ifndef SANDPIT_PRICING_H
#define SANDPIT_PRICING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRICING_NANO		1000000000LL	/* nano-units per unit */
#define PRICING_PRICE_MAX	(1000LL * PRICING_NANO)	/* per CPU-second or GiB-second */
#define PRICING_CPUS_MAX	(1000LL * 1000000000LL)	/* nano-CPUs (1000 CPUs) */
#define PRICING_MEMORY_MAX	(1LL << 50)	/* bytes (1 PiB) */
#define PRICING_DURATION_MAX	(366LL * 24 * 3600 * 1000)	/* ms (a year) */
#define PRICING_PROVIDERS_MAX	64

struct pricing_price {
	int64_t cpu_second;		/* nano-units per CPU-second (1e9 nano-CPUs for 1 s) */
	int64_t gib_second;		/* nano-units per GiB (2^30 bytes) of memory for 1 s */
};

/*
 * Cost in nano-units of running nano_cpus and memory_bytes for running_ms.
 * SP_EINVAL for a negative or out-of-range input (the PRICING_*_MAX bounds).
 */
int pricing_cost(const struct pricing_price *p, int64_t nano_cpus, int64_t memory_bytes,
		 int64_t running_ms, int64_t *ret);

/* "0.000014", "12", "3.5" -> nano-units; at most 9 decimals, <= PRICING_PRICE_MAX. SP_EINVAL. */
int pricing_parse_amount(const char *s, int64_t *ret);
/* nano-units as a decimal without trailing zeros ("0.000014", "12", "-0.5"). */
void pricing_format(int64_t nano, char *buf, size_t len);
/* Add b to *sum; -ERANGE (sum untouched) on overflow. */
int pricing_add(int64_t *sum, int64_t b);

/*
 * The value of a "price" directive: "PROVIDER CPU_SECOND GIB_SECOND"
 * ("docker 0.000014 0.0000025"). *ret_provider is malloc'd. SP_EINVAL with
 * the reason in err.
 */
int pricing_parse_directive(const char *value, char **ret_provider, struct pricing_price *ret,
			    char *err, size_t errlen);

/* A table of prices by provider name; a provider with no entry costs nothing. */
struct pricing;
struct pricing *pricing_new(void);
void pricing_free(struct pricing *t);			/* accepts NULL */
/*
 * Set (or replace) provider's price. SP_EINVAL for a bad name or price,
 * SP_ELIMIT past PRICING_PROVIDERS_MAX.
 */
int pricing_set(struct pricing *t, const char *provider, const struct pricing_price *p);
/* SP_ENOTFOUND when provider has no price (its cost is then 0 and the API says "unpriced"). */
int pricing_get(const struct pricing *t, const char *provider, struct pricing_price *ret);

/*
 * A sandbox's running time: started and stopped as it goes running and
 * leaves running (possibly more than once). Embedded in its owner. A clock
 * that steps back never makes time negative.
 */
struct pricing_meter {
	int64_t since_ms;		/* running since, or -1 */
	int64_t total_ms;		/* accumulated before since_ms */
};
void pricing_meter_init(struct pricing_meter *m);
void pricing_meter_start(struct pricing_meter *m, int64_t now_ms);	/* no-op when running */
void pricing_meter_stop(struct pricing_meter *m, int64_t now_ms);	/* no-op when stopped */
int64_t pricing_meter_ms(const struct pricing_meter *m, int64_t now_ms);

#endif

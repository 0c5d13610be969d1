/*
 * sandpitd's configuration: the embedded defaults, the line grammar of
 * config.h, the core directives and the providers' own directives (validated
 * by type, kept as normalised text). It parses into a fresh struct and never
 * touches a running one; it never logs (errors are "file:line: message").
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <jansson.h>

#include <sandpit/error.h>

#include "config.h"
#include "log.h"
#include "pricing.h"
#include "xmalloc.h"

/* The longest line we read; longer lines are an error, not a truncation. */
#define CONFIG_LINE_MAX		4096

enum config_type {
	CT_PATH,		/* absolute path */
	CT_STRING,		/* any non-empty text */
	CT_GROUP,		/* a group name resolved to socket_gid */
	CT_UINT,		/* unsigned, into unsigned */
	CT_PORT,		/* 1..65535, into uint16_t */
	CT_INT64,		/* integer, into int64_t */
	CT_SIZE,		/* bytes with k/m/g/t suffix, into int64_t */
	CT_BYTES,		/* the same, into size_t */
	CT_DURATION,		/* ms/s/m/h/d, into uint64_t milliseconds */
	CT_CPUS,		/* decimal CPUs, into int64_t nano-CPUs */
	CT_LOGLEVEL,		/* err | warning | info | debug, into int */
	CT_PROVIDER,		/* a built provider's name */
	CT_FRACTION,		/* decimal, into float; min/max in thousandths */
	CT_DAYS,		/* a duration, into double days */
	CT_BOOL,		/* yes | no | true | false | on | off, into bool */
	CT_WEIGHTS,		/* "A B G": three fractions into consecutive floats */
};

struct config_directive {
	const char *name;
	enum config_type type;
	size_t off;
	int64_t min, max;	/* inclusive range of numeric types */
};

#define F(field)	offsetof(struct config, field)
#define KIB		1024LL
#define MIB		(1024LL * KIB)
#define GIB		(1024LL * MIB)
#define TIB		(1024LL * GIB)
#define SEC		1000LL
#define DAY		(86400LL * SEC)
#define NANO		1000000000LL

static const struct config_directive config_directives[] = {
	{ "state_dir",		CT_PATH,	F(state_dir),		0, 0 },
	{ "socket",		CT_PATH,	F(socket_path),		0, 0 },
	{ "socket_group",	CT_GROUP,	F(socket_group),	0, 0 },
	{ "max_clients",	CT_UINT,	F(max_clients),		1, 65536 },
	{ "max_body",		CT_BYTES,	F(max_body),		1 * KIB, 1 * GIB },
	{ "max_header",		CT_BYTES,	F(max_header),		1 * KIB, 1 * MIB },
	{ "log_level",		CT_LOGLEVEL,	F(log_level),		0, 0 },
	{ "provider",		CT_PROVIDER,	F(default_provider),	0, 0 },
	{ "max_sandboxes",	CT_UINT,	F(max_sandboxes),	1, 100000 },
	{ "tenant_max_sandboxes", CT_UINT,	F(tenant_max_sandboxes), 1, 100000 },
	{ "max_starts",		CT_UINT,	F(max_starts),		1, 1024 },
	{ "burst_max_sandboxes", CT_UINT,	F(burst_max_sandboxes),	1, 100000 },
	{ "untrusted_placement", CT_PROVIDER,	F(untrusted_placement),	0, 0 },
	{ "reconcile_interval",	CT_DURATION,	F(reconcile_interval_ms), 1 * SEC, DAY },
	{ "worker_image",	CT_STRING,	F(worker_image),	0, 0 },
	{ "worker_binary",	CT_PATH,	F(worker_binary),	0, 0 },
	{ "worker_port",	CT_PORT,	F(worker_port),		1, 65535 },
	{ "worker_listen",	CT_STRING,	F(worker_listen),	0, 0 },
	{ "worker_token_ttl",	CT_DURATION,	F(worker_token_ttl_ms),	60 * SEC, DAY },
	{ "worker_idle_timeout", CT_DURATION,	F(worker_idle_timeout_ms), 1 * SEC, 3600 * SEC },
	{ "worker_poll_timeout", CT_DURATION,	F(worker_poll_ms),	1 * SEC, 300 * SEC },
	{ "worker_max_body",	CT_BYTES,	F(worker_max_body),	64 * KIB, 16 * MIB },
	/* Docker refuses a memory limit under 6 MiB. */
	{ "sandbox_memory",	CT_SIZE,	F(sandbox_memory),	6 * MIB, TIB },
	{ "sandbox_memory_max",	CT_SIZE,	F(sandbox_memory_max),	6 * MIB, TIB },
	{ "sandbox_cpus",	CT_CPUS,	F(sandbox_cpus),	NANO / 100, 1024 * NANO },
	{ "sandbox_cpus_max",	CT_CPUS,	F(sandbox_cpus_max),	NANO / 100, 1024 * NANO },
	{ "sandbox_pids",	CT_INT64,	F(sandbox_pids),	8, 4194304 },
	{ "sandbox_pids_max",	CT_INT64,	F(sandbox_pids_max),	8, 4194304 },
	{ "sandbox_nofile",	CT_INT64,	F(sandbox_nofile),	16, 1048576 },
	{ "sandbox_tmp",	CT_SIZE,	F(sandbox_tmp),		1 * MIB, TIB },
	{ "sandbox_work",	CT_SIZE,	F(sandbox_work),	1 * MIB, TIB },
	{ "exec_timeout",	CT_DURATION,	F(exec_timeout_ms),	1 * SEC, 30 * DAY },
	{ "exec_timeout_max",	CT_DURATION,	F(exec_timeout_max_ms),	1 * SEC, 30 * DAY },
	{ "prices",		CT_STRING,	F(prices),		0, 0 },
	{ "pool_size",		CT_UINT,	F(pool_size),		0, 1024 },
	{ "memory_dimensions",	CT_UINT,	F(memory.dimensions),	8, 4096 },
	{ "memory_weights",	CT_WEIGHTS,	F(memory.alpha),	0, 1000 },
	{ "memory_half_life",	CT_DAYS,	F(memory.half_life_days), 1 * SEC, 3650 * DAY },
	{ "memory_mmr_lambda",	CT_FRACTION,	F(memory.lambda),	500, 1000 },
	{ "memory_k",		CT_UINT,	F(memory.k_default),	1, 20 },
	{ "memory_k_max",	CT_UINT,	F(memory.k_max),	1, 100 },
	{ "memory_min_confidence", CT_FRACTION,	F(memory.min_confidence), 0, 1000 },
	{ "memory_max_age",	CT_DAYS,	F(memory.max_age_days),	1 * SEC, 36500 * DAY },
	{ "memory_consolidate_every", CT_UINT,	F(memory.consolidate_every), 0, 1000000 },
	{ "memory_dup_threshold", CT_FRACTION,	F(memory.dup_threshold), 500, 1000 },
	{ "memory_contradiction_threshold", CT_FRACTION, F(memory.contradiction_threshold), 0, 1000 },
	{ "memory_prune_age",	CT_DAYS,	F(memory.prune_age_days), 1 * SEC, 36500 * DAY },
	{ "memory_scrub",	CT_BOOL,	F(memory.scrub),	0, 0 },
	{ "memory_max_text",	CT_BYTES,	F(memory.max_content),	1 * KIB, 16 * MIB },
	{ "memory_max_batch",	CT_UINT,	F(memory.max_batch),	1, 10000 },
	{ "memory_usage_flush",	CT_DURATION,	F(memory.usage_flush_ms), 10, 60 * SEC },
	{ "memory_embedder_url", CT_STRING,	F(memory.embedder_url),	0, 0 },
	{ "memory_embedder_model", CT_STRING,	F(memory.embedder_model), 0, 0 },
	{ "memory_embedder_timeout", CT_DURATION, F(memory.embedder_timeout_ms), 1 * SEC, 10 * 60 * SEC },
};
#define NDIRECTIVES	(sizeof(config_directives) / sizeof(config_directives[0]))

/* Parse state: the struct being filled and where each directive was set. */
struct config_parse {
	struct config *c;
	const struct sp_provider_ops *const *providers;
	const char *file;		/* for messages: the path or "(defaults)" */
	unsigned line;
	unsigned core_line[NDIRECTIVES];	/* 0 = not set in the file */
	struct { const char *name; unsigned line; } *pseen;	/* provider directives set */
	size_t npseen;
	char *err;
	size_t errlen;
};

static int
config_error(struct config_parse *p, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
config_error(struct config_parse *p, unsigned line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->err != NULL && p->errlen > 0) {
		if (line > 0)
			snprintf(p->err, p->errlen, "%s:%u: %s", p->file, line, msg);
		else
			snprintf(p->err, p->errlen, "%s: %s", p->file, msg);
	}
	return SP_ECONFIG;
}

/* Digits only, no sign, no space: strtoull accepts too much on its own. */
static int
config_parse_u64(const char *s, const char **end, uint64_t *ret)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return SP_ECONFIG;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return SP_ECONFIG;
		v = v * 10 + d;
	}
	*end = s;
	*ret = v;
	return 0;
}

int
config_parse_size(const char *s, int64_t *ret)
{
	const char *end;
	uint64_t v, mul = 1;

	if (s == NULL || config_parse_u64(s, &end, &v) < 0)
		return SP_ECONFIG;
	switch (*end) {
	case '\0':			break;
	case 'k': case 'K':		mul = KIB; end++; break;
	case 'm': case 'M':		mul = MIB; end++; break;
	case 'g': case 'G':		mul = GIB; end++; break;
	case 't': case 'T':		mul = TIB; end++; break;
	default:			return SP_ECONFIG;
	}
	if (*end != '\0')
		return SP_ECONFIG;
	if (v > (uint64_t)INT64_MAX / mul)
		return SP_ECONFIG;
	*ret = (int64_t)(v * mul);
	return 0;
}

int
config_parse_duration(const char *s, uint64_t *ret)
{
	const char *end;
	uint64_t v, mul;

	if (s == NULL || config_parse_u64(s, &end, &v) < 0)
		return SP_ECONFIG;
	if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = SEC;
	else if (strcmp(end, "m") == 0)
		mul = 60 * SEC;
	else if (strcmp(end, "h") == 0)
		mul = 3600 * SEC;
	else if (strcmp(end, "d") == 0)
		mul = DAY;
	else if (*end == '\0' && v == 0)
		mul = 1;		/* "0" needs no unit; any other bare number is ambiguous */
	else
		return SP_ECONFIG;
	if (v > UINT64_MAX / mul)
		return SP_ECONFIG;
	*ret = v * mul;
	return 0;
}

/* "1", "1.5", "0.25": nano-CPUs, at most nine decimals. */
static int
config_parse_cpus(const char *s, int64_t *ret)
{
	const char *end;
	uint64_t whole, frac = 0, scale = NANO;

	if (config_parse_u64(s, &end, &whole) < 0)
		return SP_ECONFIG;
	if (*end == '.') {
		end++;
		if (!isdigit((unsigned char)*end))
			return SP_ECONFIG;
		for (; isdigit((unsigned char)*end); end++) {
			if (scale == 1)
				return SP_ECONFIG;	/* finer than a nano-CPU */
			scale /= 10;
			frac += (uint64_t)(*end - '0') * scale;
		}
	}
	if (*end != '\0' || whole > (uint64_t)INT64_MAX / NANO - 1)
		return SP_ECONFIG;
	*ret = (int64_t)(whole * NANO + frac);
	return 0;
}

static int
config_parse_int(const char *s, int64_t *ret)
{
	const char *end;
	uint64_t v;
	bool neg = false;

	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (config_parse_u64(s, &end, &v) < 0 || *end != '\0')
		return SP_ECONFIG;
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return SP_ECONFIG;
		*ret = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return SP_ECONFIG;
		*ret = (int64_t)v;
	}
	return 0;
}

static int
config_parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return SP_ECONFIG;
}

static void
config_set_str(struct config *c, size_t off, const char *v)
{
	char **field = (char **)((char *)c + off);

	free(*field);
	*field = v ? xstrdup(v) : NULL;
}

/* Format bytes back as the shortest exact suffix, for messages. */
static void
config_fmt_size(char *buf, size_t len, int64_t v)
{
	static const char suf[] = "tgmk";
	static const int64_t mul[] = { TIB, GIB, MIB, KIB };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (v != 0 && v % mul[i] == 0) {
			snprintf(buf, len, "%lld%c", (long long)(v / mul[i]), suf[i]);
			return;
		}
	}
	snprintf(buf, len, "%lld", (long long)v);
}

static int
config_core_set(struct config_parse *p, const struct config_directive *d, const char *v)
{
	struct config *c = p->c;
	void *field = (char *)c + d->off;
	const struct sp_provider_ops *const *pp;
	char lo[32], hi[32];
	uint64_t u64;
	int64_t i64;

	switch (d->type) {
	case CT_PATH:
		if (v[0] != '/')
			return config_error(p, p->line, "%s: '%s' is not an absolute path",
					    d->name, v);
		if (strlen(v) >= PATH_MAX)
			return config_error(p, p->line, "%s: path too long", d->name);
		config_set_str(c, d->off, v);
		return 0;
	case CT_STRING:
		config_set_str(c, d->off, v);
		return 0;
	case CT_GROUP: {
		struct group gr, *res = NULL;
		char buf[4096];
		int r;

		r = getgrnam_r(v, &gr, buf, sizeof(buf), &res);
		if (r != 0 || res == NULL)
			return config_error(p, p->line, "unknown socket_group '%s'", v);
		c->socket_gid = res->gr_gid;
		config_set_str(c, d->off, v);
		return 0;
	}
	case CT_LOGLEVEL:
		if (strcmp(v, "err") == 0 || strcmp(v, "error") == 0)
			c->log_level = LOG_ERR;
		else if (strcmp(v, "warning") == 0 || strcmp(v, "warn") == 0)
			c->log_level = LOG_WARNING;
		else if (strcmp(v, "info") == 0)
			c->log_level = LOG_INFO;
		else if (strcmp(v, "debug") == 0)
			c->log_level = LOG_DEBUG;
		else
			return config_error(p, p->line,
					    "log_level: '%s' is not err, warning, info or debug", v);
		return 0;
	case CT_PROVIDER:
		/* "auto", "local": placement over the ready providers (placement.h). */
		if (p->providers != NULL && strcmp(v, "auto") != 0 && strcmp(v, "local") != 0) {
			for (pp = p->providers; *pp != NULL; pp++)
				if (strcmp((*pp)->name, v) == 0)
					break;
			if (*pp == NULL)
				return config_error(p, p->line, "%s: '%s' is not a built provider, "
						    "auto or local",
						    d->name, v);
		}
		config_set_str(c, d->off, v);
		return 0;
	case CT_UINT:
	case CT_PORT:
	case CT_INT64:
		if (config_parse_int(v, &i64) < 0)
			return config_error(p, p->line, "%s: '%s' is not an integer", d->name, v);
		if (i64 < d->min || i64 > d->max)
			return config_error(p, p->line, "%s: %lld is out of range %lld..%lld",
					    d->name, (long long)i64, (long long)d->min,
					    (long long)d->max);
		if (d->type == CT_UINT)
			*(unsigned *)field = (unsigned)i64;
		else if (d->type == CT_PORT)
			*(uint16_t *)field = (uint16_t)i64;
		else
			*(int64_t *)field = i64;
		return 0;
	case CT_SIZE:
	case CT_BYTES:
		if (config_parse_size(v, &i64) < 0)
			return config_error(p, p->line,
					    "%s: '%s' is not a size (bytes, or with k, m, g, t)",
					    d->name, v);
		if (i64 < d->min || i64 > d->max) {
			config_fmt_size(lo, sizeof(lo), d->min);
			config_fmt_size(hi, sizeof(hi), d->max);
			return config_error(p, p->line, "%s: %s is out of range %s..%s",
					    d->name, v, lo, hi);
		}
		if (d->type == CT_BYTES)
			*(size_t *)field = (size_t)i64;
		else
			*(int64_t *)field = i64;
		return 0;
	case CT_DURATION:
		if (config_parse_duration(v, &u64) < 0)
			return config_error(p, p->line,
					    "%s: '%s' is not a duration (with ms, s, m, h or d)",
					    d->name, v);
		if (u64 < (uint64_t)d->min || u64 > (uint64_t)d->max)
			return config_error(p, p->line, "%s: %s is out of range %llds..%lldd",
					    d->name, v, (long long)(d->min / SEC),
					    (long long)(d->max / DAY));
		*(uint64_t *)field = u64;
		return 0;
	case CT_FRACTION:
	case CT_WEIGHTS: {
		unsigned n = d->type == CT_WEIGHTS ? 3 : 1, i;
		const char *q = v;
		char *end;

		for (i = 0; i < n; i++) {
			double x;

			while (i > 0 && *q == ' ')
				q++;
			errno = 0;
			x = strtod(q, &end);
			if (end == q || errno != 0 || (*end != '\0' && *end != ' ') ||
			    !(x * 1000 >= d->min && x * 1000 <= d->max))
				return config_error(p, p->line, "%s: '%s' is not %s between %g and %g",
						    d->name, v, n == 1 ? "a number" : "three numbers",
						    d->min / 1000.0, d->max / 1000.0);
			((float *)field)[i] = (float)x;
			q = end;
		}
		if (*q != '\0')
			return config_error(p, p->line, "%s: '%s' has extra text", d->name, v);
		return 0;
	}
	case CT_DAYS:
		if (config_parse_duration(v, &u64) < 0 || u64 < (uint64_t)d->min ||
		    u64 > (uint64_t)d->max)
			return config_error(p, p->line, "%s: '%s' is not a duration between 1s "
					    "and %lldd", d->name, v, (long long)(d->max / DAY));
		*(double *)field = (double)u64 / DAY;
		return 0;
	case CT_BOOL:
		if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0)
			*(bool *)field = true;
		else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "off") == 0)
			*(bool *)field = false;
		else
			return config_error(p, p->line, "%s: '%s' is not yes or no", d->name, v);
		return 0;
	case CT_CPUS:
		if (config_parse_cpus(v, &i64) < 0)
			return config_error(p, p->line, "%s: '%s' is not a number of CPUs",
					    d->name, v);
		if (i64 < d->min || i64 > d->max)
			return config_error(p, p->line, "%s: %s is out of range 0.01..%lld",
					    d->name, v, (long long)(d->max / NANO));
		*(int64_t *)field = i64;
		return 0;
	}
	return config_error(p, p->line, "%s: internal: unknown type", d->name);
}

/* Find a provider directive by name, or NULL. */
static const struct sp_directive *
config_provider_directive(const struct sp_provider_ops *const *providers, const char *name)
{
	const struct sp_provider_ops *const *pp;
	const struct sp_directive *d;

	if (providers == NULL)
		return NULL;
	for (pp = providers; *pp != NULL; pp++)
		for (d = (*pp)->directives; d != NULL && d->name != NULL; d++)
			if (strcmp(d->name, name) == 0)
				return d;
	return NULL;
}

/*
 * Validate v for d and return its normalised text in *ret (malloc'd): sizes
 * and integers as plain decimal, booleans as "true"/"false", so providers
 * (which see only include/sandpit/) need nothing but strtoll and strcmp.
 */
static int
config_provider_value(const struct sp_directive *d, const char *v, char **ret, const char **why)
{
	int64_t i64;
	bool b;

	switch (d->type) {
	case SP_DIR_STRING:
		*ret = xstrdup(v);
		return 0;
	case SP_DIR_PATH:
		if (v[0] != '/') {
			*why = "is not an absolute path";
			return SP_ECONFIG;
		}
		*ret = xstrdup(v);
		return 0;
	case SP_DIR_INT:
		if (config_parse_int(v, &i64) < 0) {
			*why = "is not an integer";
			return SP_ECONFIG;
		}
		xasprintf(ret, "%lld", (long long)i64);
		return 0;
	case SP_DIR_SIZE:
		if (config_parse_size(v, &i64) < 0) {
			*why = "is not a size (bytes, or with k, m, g, t)";
			return SP_ECONFIG;
		}
		xasprintf(ret, "%lld", (long long)i64);
		return 0;
	case SP_DIR_BOOL:
		if (config_parse_bool(v, &b) < 0) {
			*why = "is not a boolean (yes/no, true/false, on/off, 1/0)";
			return SP_ECONFIG;
		}
		*ret = xstrdup(b ? "true" : "false");
		return 0;
	}
	*why = "has an unknown type";
	return SP_ECONFIG;
}

static void
config_kv_set(struct config *c, const char *name, char *value)
{
	size_t i;

	for (i = 0; i < c->nkv; i++) {
		if (strcmp(c->kv[i].name, name) == 0) {
			free(c->kv[i].value);
			c->kv[i].value = value;
			return;
		}
	}
	c->kv = xreallocarray(c->kv, c->nkv + 1, sizeof(*c->kv));
	c->kv[c->nkv].name = xstrdup(name);
	c->kv[c->nkv].value = value;
	c->nkv++;
}

static const char *const config_pool_fields[] = {
	"provider", "image", "cpus", "memory", "pids", "nofile", "tmp", "work", NULL,
};

/* One FIELD=VALUE of a pool directive into spec. */
static int
config_pool_field(struct config_parse *p, json_t *spec, char *kv)
{
	const struct sp_provider_ops *const *pp;
	char *v = strchr(kv, '=');
	size_t i;
	int64_t i64;

	if (v != NULL)
		*v++ = '\0';
	for (i = 0; config_pool_fields[i] != NULL; i++)
		if (strcmp(kv, config_pool_fields[i]) == 0)
			break;
	if (v == NULL || config_pool_fields[i] == NULL)
		return config_error(p, p->line, "pool: '%.64s' is not FIELD=VALUE with a field "
				    "of provider, image, cpus, memory, pids, nofile, tmp, work", kv);
	if (json_object_get(spec, kv) != NULL)
		return config_error(p, p->line, "pool: %s given twice", kv);
	if (strcmp(kv, "provider") == 0) {
		for (pp = p->providers; pp != NULL && *pp != NULL; pp++)
			if (strcmp((*pp)->name, v) == 0)
				break;
		if (*v == '\0' || (pp != NULL && *pp == NULL))
			return config_error(p, p->line, "pool: provider '%.64s' is not built in", v);
		json_object_set_new(spec, kv, json_string(v));
	} else if (strcmp(kv, "image") == 0) {
		/* The sandbox manager's rule for image references. */
		bool ok = *v != '\0' && *v != '-' && strlen(v) <= 255;

		for (const char *c = v; ok && *c != '\0'; c++)
			ok = isalnum((unsigned char)*c) || strchr("._/:@-", *c) != NULL;
		if (!ok)
			return config_error(p, p->line, "pool: image '%.64s' is not an image "
					    "reference", v);
		json_object_set_new(spec, kv, json_string(v));
	} else if (strcmp(kv, "cpus") == 0) {
		if (config_parse_cpus(v, &i64) < 0 || i64 < NANO / 100)
			return config_error(p, p->line, "pool: cpus '%.64s' is not a number of "
					    "CPUs (0.01 or more)", v);
		json_object_set_new(spec, kv, json_real((double)i64 / NANO));
	} else if (strcmp(kv, "pids") == 0 || strcmp(kv, "nofile") == 0) {
		if (config_parse_int(v, &i64) < 0 || i64 < 1)
			return config_error(p, p->line, "pool: %s '%.64s' is not a positive "
					    "integer", kv, v);
		json_object_set_new(spec, kv, json_integer(i64));
	} else {
		if (config_parse_size(v, &i64) < 0 || i64 < 1)
			return config_error(p, p->line, "pool: %s '%.64s' is not a size (bytes, or "
					    "with k, m, g, t)", kv, v);
		json_object_set_new(spec, kv, json_integer(i64));
	}
	return 0;
}

/* pool "NAME SIZE [FIELD=VALUE …]" (config.h): repeatable, one pool each. */
static int
config_pool(struct config_parse *p, const char *value)
{
	struct config *c = p->c;
	char *copy = xstrdup(value), *save = NULL, *name, *size, *kv;
	json_t *spec = json_object();
	int64_t n = -1;
	size_t i;
	int r = 0;

	name = strtok_r(copy, " \t", &save);
	size = strtok_r(NULL, " \t", &save);
	if (name == NULL || size == NULL) {
		r = config_error(p, p->line, "pool: \"NAME SIZE [FIELD=VALUE ...]\" is required");
		goto out;
	}
	for (i = 0; name[i] != '\0'; i++)
		if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
		      name[i] == '_' || name[i] == '-'))
			break;
	if (name[i] != '\0' || i > CONFIG_POOL_NAME_MAX) {
		r = config_error(p, p->line, "pool: '%.64s' is not a pool name (a-z, 0-9, _ and -, "
				 "at most %d)", name, CONFIG_POOL_NAME_MAX);
		goto out;
	}
	if (strcmp(name, "default") == 0) {
		r = config_error(p, p->line, "pool: the name 'default' is pool_size's pool");
		goto out;
	}
	for (i = 0; i < c->npools; i++)
		if (strcmp(c->pools[i].name, name) == 0) {
			r = config_error(p, p->line, "pool: duplicate pool '%s' (first on line %u)",
					 name, c->pools[i].line);
			goto out;
		}
	if (c->npools == CONFIG_POOLS_MAX) {
		r = config_error(p, p->line, "pool: more than %d pools", CONFIG_POOLS_MAX);
		goto out;
	}
	if (config_parse_int(size, &n) < 0 || n < 0 || n > CONFIG_POOL_SIZE_MAX) {
		r = config_error(p, p->line, "pool: size '%.64s' is not an integer 0..%d", size,
				 CONFIG_POOL_SIZE_MAX);
		goto out;
	}
	while ((kv = strtok_r(NULL, " \t", &save)) != NULL)
		if ((r = config_pool_field(p, spec, kv)) < 0)
			goto out;
	c->pools = xreallocarray(c->pools, c->npools + 1, sizeof(*c->pools));
	c->pools[c->npools] = (struct config_pool){ .name = xstrdup(name), .size = (unsigned)n,
		.spec = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS), .line = p->line };
	if (c->pools[c->npools].spec == NULL)
		fatalx("json_dumps failed");
	c->npools++;
out:
	json_decref(spec);
	free(copy);
	return r;
}

static int
config_directive(struct config_parse *p, const char *name, const char *value)
{
	const struct sp_directive *pd;
	const char *why = NULL;
	char *norm;
	size_t i;

	if (strcmp(name, "pool") == 0)
		return config_pool(p, value);
	for (i = 0; i < NDIRECTIVES; i++) {
		if (strcmp(config_directives[i].name, name) != 0)
			continue;
		if (p->core_line[i] != 0)
			return config_error(p, p->line, "duplicate directive '%s' (first on line %u)",
					    name, p->core_line[i]);
		p->core_line[i] = p->line;
		return config_core_set(p, &config_directives[i], value);
	}
	if ((pd = config_provider_directive(p->providers, name)) == NULL)
		return config_error(p, p->line, "unknown directive '%s'", name);
	/* Each known provider directive enters pseen at most once: bounded. */
	for (i = 0; i < p->npseen; i++)
		if (strcmp(p->pseen[i].name, pd->name) == 0)
			return config_error(p, p->line, "duplicate directive '%s' (first on line %u)",
					    name, p->pseen[i].line);
	if (config_provider_value(pd, value, &norm, &why) < 0)
		return config_error(p, p->line, "%s: '%s' %s", name, value, why);
	p->pseen = xreallocarray(p->pseen, p->npseen + 1, sizeof(*p->pseen));
	p->pseen[p->npseen].name = pd->name;
	p->pseen[p->npseen].line = p->line;
	p->npseen++;
	config_kv_set(p->c, pd->name, norm);
	return 0;
}

static bool
config_isspace(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

/*
 * Split one line (NUL-terminated, no newline) into name and value, in place.
 * *name is NULL for a blank or comment line.
 */
static int
config_split(struct config_parse *p, char *s, char **name, char **value)
{
	char *n, *v, *w;

	*name = *value = NULL;
	while (config_isspace(*s))
		s++;
	if (*s == '\0' || *s == '#')
		return 0;
	n = s;
	while (*s != '\0' && !config_isspace(*s))
		s++;
	if (*s != '\0')
		*s++ = '\0';
	for (w = n; *w != '\0'; w++)
		if (!(islower((unsigned char)*w) || isdigit((unsigned char)*w) ||
		      *w == '_' || *w == '.' || *w == '-'))
			return config_error(p, p->line, "unknown directive '%.64s'", n);
	while (config_isspace(*s))
		s++;
	if (*s == '\0' || *s == '#')
		return config_error(p, p->line, "%s: missing value", n);

	if (*s == '"') {
		/* Quoted: \" and \\ are the only escapes; unescape in place. */
		v = w = ++s;
		for (;;) {
			if (*s == '\0')
				return config_error(p, p->line, "%s: unterminated quoted value", n);
			if (*s == '"')
				break;
			if (*s == '\\') {
				s++;
				if (*s != '"' && *s != '\\')
					return config_error(p, p->line,
							    "%s: bad escape in quoted value "
							    "(only \\\" and \\\\)", n);
			}
			*w++ = *s++;
		}
		s++;
		*w = '\0';
		if (*s != '\0' && !config_isspace(*s))
			return config_error(p, p->line, "%s: unexpected text after quoted value", n);
	} else {
		v = s;
		while (*s != '\0' && !config_isspace(*s))
			s++;
		if (*s != '\0')
			*s++ = '\0';
	}
	while (config_isspace(*s))
		s++;
	if (*s != '\0' && *s != '#')
		return config_error(p, p->line,
				    "%s: unexpected text after the value (quote values with spaces)", n);
	if (*v == '\0')
		return config_error(p, p->line, "%s: missing value", n);
	for (w = v; *w != '\0'; w++)
		if ((unsigned char)*w < 0x20 || *w == 0x7f)
			return config_error(p, p->line, "%s: control character in value", n);
	*name = n;
	*value = v;
	return 0;
}

static int
config_read(struct config_parse *p, FILE *f)
{
	char line[CONFIG_LINE_MAX + 1], *name, *value;
	size_t len;
	bool nul;
	int ch, r;

	for (;;) {
		len = 0;
		nul = false;
		while ((ch = getc(f)) != EOF && ch != '\n') {
			if (len == CONFIG_LINE_MAX)
				return config_error(p, p->line + 1, "line longer than %d bytes",
						    CONFIG_LINE_MAX);
			if (ch == '\0')
				nul = true;
			line[len++] = (char)ch;
		}
		if (ch == EOF && len == 0) {
			if (ferror(f))
				return config_error(p, p->line, "read error: %s", strerror(errno));
			return 0;
		}
		p->line++;
		if (nul)
			return config_error(p, p->line, "NUL byte in line");
		line[len] = '\0';
		if ((r = config_split(p, line, &name, &value)) < 0)
			return r;
		if (name != NULL && (r = config_directive(p, name, value)) < 0)
			return r;
		if (ch == EOF) {
			if (ferror(f))
				return config_error(p, p->line, "read error: %s", strerror(errno));
			return 0;
		}
	}
}

/* The directory of /proc/self/exe + "/sandpit-worker", or a fixed fallback. */
static char *
config_default_worker_binary(void)
{
	char exe[PATH_MAX], *slash, *ret;
	ssize_t n;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return xstrdup("/usr/local/bin/sandpit-worker");
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (slash == NULL)
		return xstrdup("/usr/local/bin/sandpit-worker");
	*slash = '\0';
	xasprintf(&ret, "%s/sandpit-worker", exe);
	return ret;
}

static int
config_defaults(struct config_parse *p, struct config *c)
{
	const struct sp_provider_ops *const *pp;
	const struct sp_directive *d;
	const char *why = NULL;
	char cwd[PATH_MAX];
	char *norm;

	if (geteuid() == 0)
		c->state_dir = xstrdup("/var/lib/sandpit");
	else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return config_error(p, 0, "cannot resolve the default state_dir ./var: %s",
					    strerror(errno));
		xasprintf(&c->state_dir, "%s/var", strcmp(cwd, "/") == 0 ? "" : cwd);
	}
	c->socket_path = NULL;		/* derived from state_dir after the parse */
	c->socket_group = NULL;
	c->socket_gid = (gid_t)-1;
	c->max_clients = 64;
	c->max_body = 1 * MIB;
	c->max_header = 16 * KIB;
	c->log_level = LOG_INFO;
	c->default_provider = xstrdup("auto");
	c->untrusted_placement = xstrdup("auto");
	c->burst_max_sandboxes = 20;
	c->max_sandboxes = 64;
	c->tenant_max_sandboxes = 64;
	c->max_starts = 16;
	c->reconcile_interval_ms = 30 * SEC;
	c->worker_image = xstrdup("sandpit/worker:" SANDPIT_VERSION);
	c->worker_binary = config_default_worker_binary();
	c->worker_port = 7443;
	c->worker_listen = xstrdup("127.0.0.1 gateway");
	c->worker_token_ttl_ms = 3600 * SEC;
	c->worker_idle_timeout_ms = 30 * SEC;
	c->worker_poll_ms = 20 * SEC;
	c->worker_max_body = 1 * MIB;
	c->sandbox_memory = 512 * MIB;
	c->sandbox_memory_max = 8 * GIB;
	c->sandbox_cpus = 1 * NANO;
	c->sandbox_cpus_max = 4 * NANO;
	c->sandbox_pids = 256;
	c->sandbox_pids_max = 4096;
	c->sandbox_nofile = 1024;
	c->sandbox_tmp = 64 * MIB;
	c->sandbox_work = 256 * MIB;
	c->exec_timeout_ms = 10 * 60 * SEC;
	c->exec_timeout_max_ms = DAY;
	memory_config_defaults(&c->memory);
	/* The defaults hold string literals; the struct owns what it frees. */
	c->memory.embedder_url = NULL;
	c->memory.embedder_model = NULL;

	if (p->providers == NULL)
		return 0;
	for (pp = p->providers; *pp != NULL; pp++) {
		for (d = (*pp)->directives; d != NULL && d->name != NULL; d++) {
			if (d->def == NULL)
				continue;
			if (config_provider_value(d, d->def, &norm, &why) < 0)
				return config_error(p, 0, "built-in default of %s: '%s' %s",
						    d->name, d->def, why);
			config_kv_set(c, d->name, norm);
		}
	}
	return 0;
}

/* The line a directive was set on (0 when defaulted). */
static unsigned
config_line_of(struct config_parse *p, const char *name)
{
	size_t i;

	for (i = 0; i < NDIRECTIVES; i++)
		if (strcmp(config_directives[i].name, name) == 0)
			return p->core_line[i];
	return 0;
}

/* default <= max, reported on whichever of the two the file set last. */
static int
config_check_pair(struct config_parse *p, const char *name, const char *maxname,
		  bool bad, const char *what)
{
	unsigned a = config_line_of(p, name), b = config_line_of(p, maxname);

	if (!bad)
		return 0;
	return config_error(p, a > b ? a : b, "%s exceeds %s (%s)", name, maxname, what);
}

static int
config_finish(struct config_parse *p, struct config *c)
{
	const char *xdg;
	char a[32];
	int r;

	if (c->socket_path == NULL) {
		xdg = getenv("XDG_RUNTIME_DIR");
		if (geteuid() == 0)
			c->socket_path = xstrdup("/run/sandpit/sandpitd.sock");
		else if (xdg != NULL && xdg[0] == '/')
			xasprintf(&c->socket_path, "%s/sandpit/sandpitd.sock", xdg);
		else
			xasprintf(&c->socket_path, "%s/sandpitd.sock", c->state_dir);
	}
	if (strlen(c->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return config_error(p, config_line_of(p, "socket"),
				    "socket path '%s' is longer than a Unix socket allows (%zu)",
				    c->socket_path, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);

	config_fmt_size(a, sizeof(a), c->sandbox_memory);
	if ((r = config_check_pair(p, "sandbox_memory", "sandbox_memory_max",
				   c->sandbox_memory > c->sandbox_memory_max, a)) < 0)
		return r;
	snprintf(a, sizeof(a), "%lld nano-CPUs", (long long)c->sandbox_cpus);
	if ((r = config_check_pair(p, "sandbox_cpus", "sandbox_cpus_max",
				   c->sandbox_cpus > c->sandbox_cpus_max, a)) < 0)
		return r;
	snprintf(a, sizeof(a), "%lld", (long long)c->sandbox_pids);
	if ((r = config_check_pair(p, "sandbox_pids", "sandbox_pids_max",
				   c->sandbox_pids > c->sandbox_pids_max, a)) < 0)
		return r;
	snprintf(a, sizeof(a), "%llums", (unsigned long long)c->exec_timeout_ms);
	if ((r = config_check_pair(p, "exec_timeout", "exec_timeout_max",
				   c->exec_timeout_ms > c->exec_timeout_max_ms, a)) < 0)
		return r;
	snprintf(a, sizeof(a), "%u", c->memory.k_default);
	if ((r = config_check_pair(p, "memory_k", "memory_k_max",
				   c->memory.k_default > c->memory.k_max, a)) < 0)
		return r;
	if (c->prices != NULL) {
		struct pricing *t;
		char perr[256];

		if (config_prices(c->prices, &t, perr, sizeof(perr)) < 0)
			return config_error(p, config_line_of(p, "prices"), "prices: %s", perr);
		pricing_free(t);
	}
	if ((c->memory.embedder_url == NULL) != (c->memory.embedder_model == NULL))
		return config_error(p, config_line_of(p, c->memory.embedder_url ?
				    "memory_embedder_url" : "memory_embedder_model"),
				    "memory_embedder_url and memory_embedder_model go together");
	return 0;
}

int
config_load(const char *path, const struct sp_provider_ops *const *providers,
	    struct config **ret, char *err, size_t errlen)
{
	struct config_parse p;
	struct config *c;
	FILE *f;
	int r;

	memset(&p, 0, sizeof(p));
	p.providers = providers;
	p.file = path ? path : "(defaults)";
	p.err = err;
	p.errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	c = xcalloc(1, sizeof(*c));
	p.c = c;
	if ((r = config_defaults(&p, c)) < 0)
		goto out_free;
	if (path != NULL) {
		c->file = xstrdup(path);
		if ((f = fopen(path, "re")) == NULL) {
			r = config_error(&p, 0, "%s", strerror(errno));
			goto out_free;
		}
		r = config_read(&p, f);
		fclose(f);
		if (r < 0)
			goto out_free;
	}
	if ((r = config_finish(&p, c)) < 0)
		goto out_free;
	free(p.pseen);
	*ret = c;
	return 0;

out_free:
	free(p.pseen);
	config_free(c);
	return r;
}

void
config_free(struct config *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->file);
	free(c->state_dir);
	free(c->socket_path);
	free(c->socket_group);
	free(c->default_provider);
	free(c->untrusted_placement);
	free(c->worker_image);
	free(c->worker_binary);
	free((char *)c->memory.embedder_url);
	free((char *)c->memory.embedder_model);
	free(c->worker_listen);
	free(c->prices);
	for (i = 0; i < c->npools; i++) {
		free(c->pools[i].name);
		free(c->pools[i].spec);
	}
	free(c->pools);
	for (i = 0; i < c->nkv; i++) {
		free(c->kv[i].name);
		free(c->kv[i].value);
	}
	free(c->kv);
	free(c);
}

const char *
config_get(const struct config *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nkv; i++)
		if (strcmp(c->kv[i].name, name) == 0)
			return c->kv[i].value;
	return NULL;
}

int
config_prices(const char *value, struct pricing **ret, char *err, size_t errlen)
{
	struct pricing *t = pricing_new();
	char *copy = xstrdup(value), *save = NULL, *entry, *provider;
	struct pricing_price price;
	int r = 0;

	for (entry = strtok_r(copy, ";", &save); entry != NULL; entry = strtok_r(NULL, ";", &save)) {
		while (*entry == ' ' || *entry == '\t')
			entry++;
		if (*entry == '\0')
			continue;
		if ((r = pricing_parse_directive(entry, &provider, &price, err, errlen)) < 0)
			break;
		r = pricing_set(t, provider, &price);
		free(provider);
		if (r < 0) {
			snprintf(err, errlen, "too many providers");
			break;
		}
	}
	free(copy);
	if (r < 0) {
		pricing_free(t);
		return SP_ECONFIG;
	}
	*ret = t;
	return 0;
}

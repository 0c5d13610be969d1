/*
 * The warm pools: per template, a configured number of pre-started
 * sandboxes, each with its worker connected and idle, owned by the pools'
 * own tenant. pool_size is the pool "default" of the default template (no
 * template fields, placement auto); each pool directive (config.h) names
 * another template and its size. A swarm's template is matched by its
 * normalised key (pool_key(): every field resolved against the sandbox
 * defaults in force, sizes in bytes, CPUs in nano-CPUs), so {} and
 * {"memory":"512m"} are the same template when 512m is the default. Pools
 * with the same key serve together, in configuration order.
 *
 * A claim binds an idle sandbox to a tenant in O(1) on the daemon's side
 * (the sandbox row's tenant changes, every token issued for it is revoked
 * and a new one naming the tenant is written, so nothing tenant-specific
 * was in the sandbox before) and the pool refills in the background. An
 * empty pool answers -EAGAIN: the caller starts cold. A pool whose template
 * changes (SIGHUP) drops what it holds and refills; one no longer configured
 * empties and goes. Pooled sandboxes left by a previous run are destroyed,
 * not adopted. Nothing logs; the store, manager and workers are borrowed
 * (workers may be NULL in unit tests: a started sandbox then counts as
 * connected and a claim rebinds only the row).
 */
#ifndef SANDPIT_POOL_H
#define SANDPIT_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "config.h"
#include "sandbox.h"
#include "store.h"
#include "workers.h"

#define POOL_TENANT	SANDBOX_POOL_TENANT
#define POOL_SIZE_MAX	CONFIG_POOL_SIZE_MAX
#define POOL_KEY_MAX	512	/* bytes of a normalised template key, with its NUL */

struct pool;

int pool_new(uv_loop_t *loop, struct store *store, struct sandbox_mgr *mgr,
	     struct workers *workers, const struct config *const *cfg, struct pool **ret);
/* Start refilling (pools and sizes are read from the configuration in force at each tick). */
void pool_start(struct pool *p);
void pool_stop(struct pool *p);
void pool_close(struct pool *p, void (*cb)(void *arg), void *arg);

/*
 * The normalised key of a sandbox template (a swarm's, with "provider" for
 * its placement) under configuration c into buf: text naming every field.
 * SP_EINVAL for a template the sandbox manager would refuse by its shape
 * (unknown field, wrong type) or a buf too small (POOL_KEY_MAX is enough).
 */
int pool_key(const struct config *c, json_t *tmpl, char *buf, size_t len);
/* Whether a configured pool (of size > 0) holds the template tmpl. */
bool pool_serves(const struct pool *p, json_t *tmpl);
/*
 * Take an idle pooled sandbox of template tmpl for tenant: *ret names it
 * (SANDBOX_ID_LEN + 1 bytes). -ENOENT when no pool holds tmpl (start cold;
 * no miss is counted); -EAGAIN when its pool has none idle (a miss: start
 * cold); SP_ELIMIT when tenant's cap refuses (the sandbox stays pooled);
 * another negative error when the rebind failed (a miss: the sandbox is
 * destroyed, and the caller starts cold).
 */
int pool_claim(struct pool *p, json_t *tmpl, const char *tenant, char *ret);
/*
 * A cold start's latency, for the metrics (from request to worker
 * registered), counted for tmpl's pool when one is configured, and overall.
 */
void pool_cold(struct pool *p, json_t *tmpl, uint64_t ns);
/* Whether id is a pooled, unclaimed sandbox. */
bool pool_has(const struct pool *p, const char *id);

/*
 * Prometheus lines: hits, misses, claim latency (warm/cold), idle and
 * starting over every pool (sandpit_pool_*), and the same labelled by pool
 * (sandpit_pool_template_*{pool="NAME"}).
 */
void pool_metrics(struct pool *p, FILE *f);
json_t *pool_stats_json(struct pool *p);

#endif

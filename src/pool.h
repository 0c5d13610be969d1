/*
 * The warm pool: pool_size pre-started sandboxes of the default template
 * (no template fields, placement auto), each with its worker connected and
 * idle, owned by the pool's own tenant. A claim binds one to a tenant in
 * O(1) on the daemon's side (the sandbox row's tenant changes, every token
 * issued for it is revoked and a new one naming the tenant is written, so
 * nothing tenant-specific was in the sandbox before) and the pool refills in
 * the background. An empty pool answers -EAGAIN: the caller starts cold.
 * Pooled sandboxes left by a previous run are destroyed, not adopted.
 * Nothing logs; the store, manager and workers are borrowed.
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
#define POOL_SIZE_MAX	1024

struct pool;

int pool_new(uv_loop_t *loop, struct store *store, struct sandbox_mgr *mgr,
	     struct workers *workers, const struct config *const *cfg, struct pool **ret);
/* Start refilling (the size is read from the configuration in force at each tick). */
void pool_start(struct pool *p);
void pool_stop(struct pool *p);
void pool_close(struct pool *p, void (*cb)(void *arg), void *arg);

/* Whether a swarm with this template and placement may be served from the pool. */
bool pool_serves(const struct pool *p, json_t *tmpl);
/*
 * Take an idle pooled sandbox for tenant: *ret names it (SANDBOX_ID_LEN + 1
 * bytes). -EAGAIN when none is idle (start one cold, and count a miss with
 * pool_cold()); SP_ELIMIT when tenant's cap refuses (the sandbox stays
 * pooled); another negative error when the rebind failed (the sandbox is
 * destroyed, and the caller starts cold).
 */
int pool_claim(struct pool *p, const char *tenant, char *ret);
/* A cold start's latency, for the metrics (from request to worker registered). */
void pool_cold(struct pool *p, uint64_t ns);
/* Whether id is a pooled, unclaimed sandbox. */
bool pool_has(const struct pool *p, const char *id);

/* Prometheus lines: hits, misses, claim latency (warm/cold), idle and starting. */
void pool_metrics(struct pool *p, FILE *f);
json_t *pool_stats_json(struct pool *p);

#endif

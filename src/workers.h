/*
 * workers: the daemon's side of the worker channel. It owns the HTTP/3 servers
 * (one quic_server per worker_listen address), the router and its worker
 * routes, the token key and the revocation list, the daemon's certificates and
 * their renewal, each sandbox's files (token, ca.pem, endpoint) and the live
 * state of each sandbox's worker (registered, last heartbeat, waiting
 * long-polls). Tasks for a sandbox's worker live in the durable queue
 * (src/queue.h) under the swarm name = the sandbox id, worker name = the
 * sandbox id; the queue is borrowed.
 *
 * Per sandbox, under state_dir/workers/:
 *   <id>/          0700, owned by the sandbox's user (the provider's describe()
 *                  "user", "uid:gid"), mounted read-only at /run/sandpit
 *   <id>/token     0400  the worker's JWT, rewritten on refresh
 *   <id>/ca.pem    0444  the daemon's CA certificate
 *   <id>/endpoint  0444  "ADDR PORT\n": where the worker reaches the daemon
 *   <id>.jti       0600  host only: "jti exp" of every token issued, for revocation
 * and state_dir/worker-revoked (0600, "jti exp" lines) keeps revocations across
 * restarts until they expire.
 */
#ifndef SANDPIT_WORKERS_H
#define SANDPIT_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "queue.h"
#include "sandbox.h"
#include "store.h"

struct workers;
struct workers_exec;

struct workers_options {
	uv_loop_t *loop;
	struct store *store;
	struct queue *queue;			/* borrowed; outlives workers */
	struct sandbox_mgr *mgr;		/* borrowed; for tenant checks */
	const struct config *const *cfg;	/* the configuration in force */
};

/*
 * Set up certificates (state_dir/worker-tls), the token key
 * (state_dir/worker.key), the reset secret (state_dir/quic-reset.key), the
 * routes, and bind every literal worker_listen address ("gateway" is bound
 * once a provider reports its gateway). Returns 0 or a negative error with a
 * message in err; on error call workers_close() all the same.
 */
int workers_new(const struct workers_options *opt, struct workers **ret, char *err,
		size_t errlen);
/*
 * The channel's router, for modules that serve workers too (memory): add
 * routes with scope "worker"; handlers take the sandbox and tenant from
 * call->claims. Valid until workers_close() completes.
 */
struct rpc *workers_router(struct workers *w);
/* The hooks for sandbox_mgr_set_hooks(). */
void workers_hooks(struct workers *w, struct sandbox_hooks *ret);
/* Shutdown, first step: control-side execs end with SP_ECANCELED (their tasks stay queued/held). */
void workers_stop(struct workers *w);
/* Close every server (peers get CONNECTION_CLOSE), then every handle; cb(arg) at the end. */
void workers_close(struct workers *w, void (*cb)(void *arg), void *arg);

/*
 * Wait until the worker of sandbox id is connected: cb(arg, true) at once
 * (inside this call) when it is, when it registers, or cb(arg, false) after
 * timeout_ms or at workers_stop(). Returns a handle for workers_wait_cancel()
 * (which must not be used after cb), or NULL when cb already ran.
 */
struct workers_wait;
struct workers_wait *workers_wait_ready(struct workers *w, const char *id, uint64_t timeout_ms,
					void (*cb)(void *arg, bool ready), void *arg);
void workers_wait_cancel(struct workers_wait *wt);

/*
 * Swarms (src/swarm.c): swarm_of(arg, sandbox) names the swarm sandbox's
 * worker serves, or NULL; such a worker leases its own tasks first, then its
 * swarm's. workers_kick() hands newly queued tasks of swarm to its waiting
 * long-polls at once. workers_connected(): the worker of id registered.
 */
void workers_set_swarm_of(struct workers *w, const char *(*swarm_of)(void *arg, const char *sandbox),
			  void *arg);
void workers_kick(struct workers *w, const char *swarm);
/*
 * The sandbox id now belongs to tenant (a warm pool's claim): revoke every
 * token issued for it and write a new one naming tenant. The worker, refused
 * with 401, reads the new file and reconnects. 0 or a negative errno.
 */
int workers_rebind(struct workers *w, const char *id, const char *tenant);
bool workers_connected(struct workers *w, const char *id);

/* ["ADDR:PORT", …]: the servers bound now. */
json_t *workers_endpoints_json(struct workers *w);
/* Counters for /v1/info and /metrics: workers connected, rpc and quic (summed) counters. */
json_t *workers_stats_json(struct workers *w);

/* {"connected":bool,"registered_ms":ms|null,"last_seen_ms":ms|null} for sandbox id. */
json_t *workers_sandbox_json(struct workers *w, const char *id);

/*
 * Run body ({"cmd":[…],"env":{…},"timeout_ms":N,"workdir":"…"}) through the
 * worker of sandbox id (tenant's): a task is enqueued for it; its output
 * streams through out as the worker sends it, then done fires once with the
 * exit code. SP_EUNAVAIL when the worker has not registered. *ret allows
 * workers_exec_cancel() until done has fired (it cancels the task).
 */
int workers_exec(struct workers *w, const char *tenant, const char *id, json_t *body,
		 sandbox_output_cb out, sandbox_exec_cb done, void *arg,
		 struct workers_exec **ret, char *err, size_t errlen);
void workers_exec_cancel(struct workers_exec *ex);
/* A task of sandbox id as JSON (state, exit_code, output); SP_ENOTFOUND. */
int workers_task_json(struct workers *w, const char *tenant, const char *id, int64_t task,
		      json_t **ret);

/* --- request decoding (exposed for the unit tests) --- */

#define WORKERS_CHUNK_MAX	(256u * 1024)	/* decoded bytes in one output chunk */
#define WORKERS_ARGV_MAX	256
#define WORKERS_ENV_MAX		128

/* POST /v1/worker/tasks/{id}/output: {"attempt","lease","offset","fd","b64"} */
struct workers_chunk {
	uint32_t attempt;
	int64_t lease;
	uint64_t offset;		/* of the first byte in the task's output stream */
	int fd;				/* 1 or 2 */
	char *data;			/* malloc'd, decoded */
	size_t len;
};
int workers_decode_chunk(json_t *o, struct workers_chunk *ret, char *err, size_t errlen);

/* POST /v1/worker/tasks/{id}/result: {"attempt","lease","exit_code","duration_ms","timed_out","output_len"} */
struct workers_result {
	uint32_t attempt;
	int64_t lease;
	int exit_code;
	uint64_t duration_ms;
	bool timed_out;
	uint64_t output_len;		/* bytes the worker streamed in all */
};
int workers_decode_result(json_t *o, struct workers_result *ret, char *err, size_t errlen);

/*
 * Batches of the task routes: GET /v1/worker/tasks/next?max=N leases up to N
 * tasks in one answer, POST /v1/worker/results reports up to
 * WORKERS_BATCH_MAX results in one request.
 */
#define WORKERS_BATCH_MAX	64
/*
 * The max of a :path ("/v1/worker/tasks/next?max=N"): 0 when the query has no
 * max (the one-task answer), 1..WORKERS_BATCH_MAX, or SP_EINVAL (bad number,
 * out of range, repeated) with err set.
 */
int workers_decode_max(const char *path, unsigned *ret, char *err, size_t errlen);
/*
 * POST /v1/worker/results: {"results":[{"task",<the result's fields>}…]} with
 * 1..WORKERS_BATCH_MAX entries; ids[i] and res[i] get each (arrays of
 * WORKERS_BATCH_MAX). All or nothing: SP_EINVAL names the first bad entry.
 */
int workers_decode_results(json_t *o, int64_t *ids, struct workers_result *res, size_t *ret_n,
			   char *err, size_t errlen);

/* A task id in a path: a positive decimal without sign or leading zero; else -1. */
int64_t workers_task_id(const char *s);

/*
 * The exec body of the control route, checked and normalised into the task
 * body the worker gets ({"cmd":[…],"env":{…},"workdir":…,"timeout_ms":N}).
 * timeout_ms defaults to def_ms and may not exceed max_ms. "via" is ignored.
 */
int workers_decode_exec(json_t *body, uint64_t def_ms, uint64_t max_ms, json_t **ret,
			uint64_t *ret_timeout_ms, char *err, size_t errlen);

#endif

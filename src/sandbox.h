/*
 * The sandbox manager: the core's owner of sandboxes. It validates creation
 * specs against the configured limits, records every sandbox in the store
 * before its provider creates it and as it changes, runs commands in it,
 * destroys it, and reconciles the store with what the providers report (at
 * start and on a timer). It owns the provider instances: it initialises them,
 * retries a provider that is down, and closes them at shutdown.
 *
 * Calls that take a callback return 0 when the operation started (the
 * callback then fires exactly once, later, from the loop) or a negative error
 * with a message in err (no callback). Rows handed to callbacks are valid only
 * during the callback.
 */
#ifndef SANDPIT_SANDBOX_H
#define SANDPIT_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <uv.h>

#include <sandpit/provider.h>

#include "config.h"
#include "store.h"

struct sandbox_mgr;
struct sandbox_exec;

/*
 * Optional hooks for the worker channel (src/workers.c); the manager calls
 * them on the loop, never re-entrantly. Any of them may be NULL.
 *  provider_ready: provider p finished init (its describe() is now valid).
 *  prepare: before p creates sandbox id of tenant; may set *files_dir (heap,
 *    the manager frees it) to a host directory the provider mounts read-only
 *    at /run/sandpit. A negative return fails the create with that error.
 *  stopped: the sandbox exited or vanished on its own (it still exists in the
 *    store until destroyed).
 *  released: the sandbox was destroyed, or its create failed: revoke what
 *    prepare handed out and remove the directory.
 */
struct sandbox_hooks {
	void (*provider_ready)(void *arg, struct sp_provider *p);
	int (*prepare)(void *arg, struct sp_provider *p, const char *id, const char *tenant,
		       char **files_dir);
	void (*stopped)(void *arg, const char *id);
	void (*released)(void *arg, const char *id);
	void *arg;
};

/* The warm pool's tenant (pool.h): bounded by the host cap, not tenant_max_sandboxes. */
#define SANDBOX_POOL_TENANT "sandpit-pool"

/* Sandbox ids are "sb-" and 12 lower-case hex digits. */
#define SANDBOX_ID_LEN 15
bool sandbox_id_valid(const char *id);

typedef void (*sandbox_cb)(void *arg, int status, const struct sandbox_row *row,
			   const char *detail);
typedef int (*sandbox_output_cb)(void *arg, int fd, const char *data, size_t len);
typedef void (*sandbox_exec_cb)(void *arg, int status, const struct sp_exec_result *res,
				uint64_t duration_ms, const char *detail);

/*
 * host is lent to every provider (its loop, http client and config lookup);
 * cfg is the configuration in force (replaced with sandbox_mgr_set_config).
 * One provider is instantiated per entry of ops (NULL-terminated: the daemon
 * passes sp_providers, tests a fake) and initialised by start().
 */
int sandbox_mgr_new(uv_loop_t *loop, struct store *store, const struct config *cfg,
		    const struct sp_host *host, const struct sp_provider_ops *const *ops,
		    struct sandbox_mgr **ret);
void sandbox_mgr_set_config(struct sandbox_mgr *mgr, const struct config *cfg);
/* Install hooks (copied) before sandbox_mgr_start(). */
void sandbox_mgr_set_hooks(struct sandbox_mgr *mgr, const struct sandbox_hooks *hooks);
/* Initialise the providers, reconcile once each is up, then on a timer. */
void sandbox_mgr_start(struct sandbox_mgr *mgr);
/* Refuse new operations and cancel running execs (shutdown, first step). */
void sandbox_mgr_stop(struct sandbox_mgr *mgr);
/* Operations (create, destroy, exec) still in flight. */
size_t sandbox_mgr_inflight(const struct sandbox_mgr *mgr);
/* Close every provider (cancelling what is pending) and free; cb fires at the end. */
void sandbox_mgr_close(struct sandbox_mgr *mgr, void (*cb)(void *arg), void *arg);

/* The providers, for GET /v1/info. */
size_t sandbox_mgr_providers(const struct sandbox_mgr *mgr, struct sp_provider *const **ret);
/* Whether provider p is initialised, and the last init error if not. */
bool sandbox_mgr_provider_ready(const struct sandbox_mgr *mgr, const struct sp_provider *p,
				const char **detail);
/*
 * How many more sandboxes tenant could start now under policy ("auto" or a
 * provider's name): the free capacity of the providers policy may use, and
 * the tenant's cap. err says which limit binds. SP_EINVAL for a bad policy.
 */
int sandbox_mgr_room(struct sandbox_mgr *mgr, const char *tenant, const char *policy,
		     unsigned *ret, char *err, size_t errlen);
/* Whether the providers the default policy needs are up (GET /v1/health). */
bool sandbox_mgr_healthy(const struct sandbox_mgr *mgr);
/* Counts of sandboxes in each of states[0..n) for metrics, in one store read. */
int sandbox_mgr_count(struct sandbox_mgr *mgr, const char *const *states, size_t n,
		      long *ret);

/* Create and start a sandbox for tenant from spec (a JSON object, see docs/api.md). */
int sandbox_create(struct sandbox_mgr *mgr, const char *tenant, json_t *spec,
		   sandbox_cb cb, void *arg, char *err, size_t errlen);
/* Destroy a sandbox of tenant; destroying a destroyed one answers its row. */
int sandbox_destroy(struct sandbox_mgr *mgr, const char *tenant, const char *id,
		    sandbox_cb cb, void *arg, char *err, size_t errlen);
/*
 * Hand a live sandbox of tenant from to tenant to (a warm-pool claim): the
 * row and its admission count move; SP_ELIMIT (err names the cap) when to's
 * tenant_max_sandboxes refuses, SP_ENOTFOUND, SP_EDB; nothing changes then.
 */
int sandbox_rebind(struct sandbox_mgr *mgr, const char *id, const char *from, const char *to,
		   char *err, size_t errlen);
/* Synchronous reads from the store; SP_ENOTFOUND for another tenant's sandbox. */
int sandbox_get(struct sandbox_mgr *mgr, const char *tenant, const char *id,
		struct sandbox_row *ret);
int sandbox_list(struct sandbox_mgr *mgr, const char *tenant, bool all,
		 struct sandbox_row **ret, size_t *n);
/*
 * Run body ({"cmd":[…],"env":{…},"timeout_ms":N,"workdir":"…"}) in a running
 * sandbox; output streams through out, then done fires. *ret allows
 * sandbox_exec_cancel() until done has fired.
 */
int sandbox_exec(struct sandbox_mgr *mgr, const char *tenant, const char *id, json_t *body,
		 sandbox_output_cb out, sandbox_exec_cb done, void *arg,
		 struct sandbox_exec **ret, char *err, size_t errlen);
void sandbox_exec_cancel(struct sandbox_exec *ex);
/* Build the worker image with the default provider; detail names the image. */
int sandbox_build_image(struct sandbox_mgr *mgr, sp_done_cb cb, void *arg,
			char *err, size_t errlen);

#endif

/*
 * Swarms: N agents (sandboxes with a worker each) of one tenant that lease
 * the swarm's tasks from the durable queue (src/queue.h, swarm name = the
 * swarm id). The module owns the swarms and their agents (tables swarms and
 * swarm_agents, component "swarm"), spawns agents through the sandbox
 * manager, replaces agents whose sandbox stopped while the swarm needs them,
 * fails a swarm that cannot make progress with a reason, tears a deleted one
 * down, and reports results and events. It borrows the store, queue, sandbox
 * manager and worker channel, which must outlive it.
 *
 * A swarm's state: spawning (agents starting) -> running -> completed (every
 * task finished; new tasks make it running again) | failed (reason) |
 * deleted. Crash safety: an agent is recorded (and committed) in the same
 * call that creates its sandbox row, before the provider is asked, so a
 * restart knows every sandbox a swarm made.
 *
 * Errors are negative SP_E* values with a message in err; nothing logs.
 */
#ifndef SANDPIT_SWARM_H
#define SANDPIT_SWARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "pool.h"
#include "queue.h"
#include "sandbox.h"
#include "store.h"
#include "workers.h"

#define SWARM_ID_LEN		15	/* "sw-" and 12 hex digits */
#define SWARM_TASKS_MAX		1000	/* tasks per request */
#define SWARM_EVENTS_KEPT	512	/* events replayed to a new watcher */
#define SWARM_STALL_MS		60000	/* no agent for this long with work pending: failed */

struct swarm_mgr;
struct swarm_watch;

struct swarm_options {
	uv_loop_t *loop;
	struct store *store;
	struct queue *queue;			/* the swarm takes its event callback */
	struct sandbox_mgr *mgr;
	struct workers *workers;
	struct pool *pool;			/* the warm pool, or NULL */
	const struct config *const *cfg;
};

/* Migrate, load the swarms and take the queue's event callback. SP_EDB with err. */
int swarm_mgr_new(const struct swarm_options *o, struct swarm_mgr **ret, char *err,
		  size_t errlen);
/*
 * The sandbox hooks to install: inner's (the worker channel's) run first,
 * then the swarm's (record agents at prepare, replace stopped ones).
 */
void swarm_hooks(struct swarm_mgr *m, const struct sandbox_hooks *inner,
		 struct sandbox_hooks *ret);
/* Start the timers (spawning resumes once the providers are ready). */
void swarm_mgr_start(struct swarm_mgr *m);
/* Shutdown, first step: no new spawns; watchers get their last line. */
void swarm_mgr_stop(struct swarm_mgr *m);
/* Close the timers and free; cb(arg) at the end. Close the worker channel first. */
void swarm_mgr_close(struct swarm_mgr *m, void (*cb)(void *arg), void *arg);

/* POST /v1/swarms: 0 and the swarm object in *ret, or an error with err. */
int swarm_create(struct swarm_mgr *m, const char *tenant, json_t *body, json_t **ret,
		 char *err, size_t errlen);
/* GET /v1/swarms: the array of tenant's swarms. */
int swarm_list(struct swarm_mgr *m, const char *tenant, json_t **ret);
/* GET /v1/swarms/{id}: the swarm with counts, results and cost. SP_ENOTFOUND. */
int swarm_get(struct swarm_mgr *m, const char *tenant, const char *id, json_t **ret);
/* DELETE: cancel the tasks, destroy every agent. SP_ENOTFOUND. */
int swarm_delete(struct swarm_mgr *m, const char *tenant, const char *id, json_t **ret);
/*
 * POST /v1/swarms/{id}/tasks: one task object or {"tasks":[…]}; answered
 * only after queue_enqueue() committed. *ret = {"tasks":[ids]}.
 */
int swarm_add_tasks(struct swarm_mgr *m, const char *tenant, const char *id, json_t *body,
		    json_t **ret, char *err, size_t errlen);
/* GET /v1/tasks/{id}: a task of one of tenant's swarms. SP_ENOTFOUND. */
int swarm_task_get(struct swarm_mgr *m, const char *tenant, int64_t task, json_t **ret);

/*
 * Events of swarm id as NDJSON lines: the kept ones at once (inside this
 * call), then each as it happens; final is true on the last line (the swarm
 * completed, failed or was deleted, or the daemon stops), after which the
 * watch is gone. SP_ENOTFOUND. swarm_unwatch() before final only.
 */
typedef void (*swarm_event_cb)(void *arg, const char *line, size_t len, bool final);
int swarm_watch(struct swarm_mgr *m, const char *tenant, const char *id, swarm_event_cb cb,
		void *arg, struct swarm_watch **ret);
void swarm_unwatch(struct swarm_watch *w);

/*
 * Messages between agents (the worker routes POST and GET
 * /v1/worker/messages); sandbox is the calling agent's. Inboxes are durable
 * (table swarm_messages), addressed by topology slot (an agent's number, which
 * a replacement takes over, so a message waits for it), at most
 * SWARM_INBOX_MAX messages each, and go when the swarm fails or is deleted.
 *
 * swarm_send: to is an agent number or "*" (everyone the topology lets the
 * caller address); body any JSON value of at most SWARM_MESSAGE_MAX bytes.
 * Stored in every target inbox or in none, committed before 0 returns with
 * the count in *ret_delivered. SP_ENOTFOUND (not a live agent of a running
 * swarm), SP_EINVAL (to, body), -EACCES (the topology forbids it), -E2BIG,
 * SP_ELIMIT (a target inbox is full), SP_EDB; err says which.
 *
 * swarm_receive: *ret = [{"from": N, "body": …}…], oldest first, removed
 * from the inbox in the same transaction. SP_ENOTFOUND, SP_EDB.
 */
#define SWARM_INBOX_MAX		256	/* messages waiting per agent */
#define SWARM_MESSAGE_MAX	65536	/* bytes of one message's body, as JSON */
int swarm_send(struct swarm_mgr *m, const char *sandbox, json_t *to, json_t *body,
	       size_t *ret_delivered, char *err, size_t errlen);
int swarm_receive(struct swarm_mgr *m, const char *sandbox, json_t **ret, char *err,
		  size_t errlen);

/* For /metrics: swarms by state, agents live. */
json_t *swarm_stats_json(struct swarm_mgr *m);
void swarm_metrics(struct swarm_mgr *m, FILE *f);

#endif

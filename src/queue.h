/*
 * The durable task queue of the swarm coordinator, in the daemon's SQLite
 * database (tables queue_tasks, queue_results and queue_swarms, migrated
 * as component "queue"). A task belongs to a swarm and a tenant and moves
 *
 *	queued -> assigned -> running -> succeeded | failed | cancelled
 *
 * with a way back to queued when an attempt fails (retry with exponential
 * backoff), when its lease expires (lost worker), when its per-attempt timeout
 * passes, or when the daemon restarts and its lease holder is gone.
 *
 * Ownership: the queue borrows the store's connection (store_db()) and owns
 * its own prepared statements; queue_close() must run before store_close().
 * Strings handed in are copied; strings handed out (struct queue_task,
 * struct queue_grant) are owned by the caller and freed with the _done()
 * functions. Nothing here logs; errors come back as negative values and, for
 * bad input, a message in err (SP_EINVAL, SP_ELIMIT).
 *
 * ---- Durability (what a kill -9 can lose) ----
 *
 * "Committed" below means committed to SQLite's WAL on the store connection.
 * The store runs WAL with synchronous=NORMAL: a committed transaction survives
 * a kill -9 of the daemon (it is in the WAL file); a power loss or kernel
 * crash may roll back the last commits (SQLite's documented NORMAL
 * trade-off), which we accept as the store's policy.
 *
 * Operations come in two kinds:
 *
 *  - Synchronous: queue_enqueue(), queue_cancel(), queue_cancel_swarm(),
 *    queue_recover(), queue_purge_swarm(). They commit (together with any
 *    deferred work before them) before returning 0. An acknowledged enqueue
 *    is therefore never lost: acknowledge a task to a client only after
 *    queue_enqueue() returned 0.
 *
 *  - Deferred: queue_lease(), queue_start(), queue_heartbeat(),
 *    queue_output(), queue_result(), queue_sweep(), queue_worker_lost().
 *    They are applied inside the open group transaction and are visible to
 *    every later queue call at once, but they become durable only when the
 *    group commits: at queue_flush() (which the daemon calls on a short
 *    timer), when the group reaches limits.group_max operations, or at the
 *    next synchronous operation. Each deferred operation gets a sequence
 *    number (queue_seq() right after the call); the commit callback reports
 *    the highest durable one, so a caller that must not answer before
 *    durability can hold its answer until then.
 *
 *    A kill -9 loses at most the deferred operations since the last commit:
 *    a lost lease grant leaves the task queued (a worker that was already
 *    handed the grant is answered QUEUE_STALE later, and the task runs
 *    again); a lost heartbeat only shortens the lease; a lost result leaves
 *    the task held, and the restart recovery or the sweep returns it to the
 *    queue, so the attempt runs again and is recorded once. No acknowledged
 *    task is lost and none is recorded as succeeded twice, because a result
 *    is recorded under the primary key (task, attempt) in the same
 *    transaction that moves the task to its final state. To avoid running
 *    work twice after a crash, hand a grant to a worker, and acknowledge a
 *    result to it, only once its sequence number is durable.
 *
 *    A failed commit (disk full, I/O error) rolls the group back: the
 *    database is as if the daemon had been killed just before the group
 *    began, and the commit callback reports the error.
 *
 * The group keeps a transaction open on the shared connection between
 * flushes (so call queue_flush() on a short timer: an open group also holds
 * off WAL checkpoints). Another module that runs its own BEGIN on the store
 * connection must call queue_flush() first, and must not leave its own
 * transaction open across loop callbacks (queue calls would fail with
 * SP_EDB meanwhile); plain autocommit statements of other modules simply
 * join the group and commit with it.
 *
 * Callbacks (commit, event) fire synchronously from inside the queue call
 * that caused them and must not call back into the queue.
 */
#ifndef SANDPIT_QUEUE_H
#define SANDPIT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct queue;

enum queue_state {
	QUEUE_QUEUED = 0,
	QUEUE_ASSIGNED,			/* leased to a worker, not yet started */
	QUEUE_RUNNING,			/* the worker said it began */
	QUEUE_SUCCEEDED,
	QUEUE_FAILED,
	QUEUE_CANCELLED,
	QUEUE_STATE__COUNT,
};
/* "queued", "assigned", ...; "?" for a value out of range. */
const char *queue_state_name(enum queue_state s);
bool queue_state_terminal(enum queue_state s);

/* Hard bounds of the limits (queue_open refuses anything outside). */
#define QUEUE_BODY_MAX_MAX	(16u * 1024 * 1024)
#define QUEUE_OUTPUT_MAX_MAX	(16u * 1024 * 1024)
#define QUEUE_BATCH_MAX_MAX	100000u
#define QUEUE_OPEN_MAX_MAX	10000000u
#define QUEUE_PRIORITY_MIN	(-1000)
#define QUEUE_PRIORITY_MAX	1000
#define QUEUE_TIMEOUT_MAX_MS	(7ull * 24 * 3600 * 1000)
#define QUEUE_RETRIES_MAX	100u
#define QUEUE_ID_MAX		64	/* swarm, tenant and worker names, bytes */
#define QUEUE_REASON_MAX	512	/* a failure reason is cut to this many bytes */
#define QUEUE_LIST_MAX		1000	/* rows per queue_list() call */

struct queue_limits {
	size_t body_max;		/* task body bytes; default 64 KiB */
	size_t output_max;		/* output bytes kept per task; default 64 KiB */
	size_t batch_max;		/* tasks per queue_enqueue(); default 1000 */
	size_t open_max;		/* unfinished tasks per swarm; default 100000, >= batch_max */
	unsigned group_max;		/* deferred ops before a forced commit; default 512; 1 = no grouping */
	uint64_t lease_ms;		/* lease length, renewed by heartbeat; default 30 s */
	uint64_t backoff_base_ms;	/* first retry delay; default 500 ms */
	uint64_t backoff_max_ms;	/* retry delay cap; default 60 s */
};
/* The defaults above. */
void queue_limits_default(struct queue_limits *lim);

/* A clock in unix milliseconds (tests inject their own). */
typedef int64_t (*queue_clock_fn)(void *arg);
/* After each commit attempt: status 0 and the highest durable sequence, or SP_EDB. */
typedef void (*queue_commit_cb)(void *arg, int status, uint64_t durable_seq);
/*
 * A task changed state (fires when applied, before it is durable); from is
 * QUEUE_STATE__COUNT for a task just enqueued.
 */
typedef void (*queue_event_cb)(void *arg, int64_t task, const char *swarm,
			       enum queue_state from, enum queue_state to);

/*
 * Apply the queue's migrations and prepare. lim NULL takes the defaults; now
 * NULL takes CLOCK_REALTIME. SP_EINVAL for limits out of range, SP_EDB.
 */
int queue_open(struct store *store, const struct queue_limits *lim, queue_clock_fn now,
	       void *now_arg, struct queue **ret);
/* Commit what is pending (best effort) and free. Accepts NULL. */
void queue_close(struct queue *q);
/* Change limits (SIGHUP); SP_EINVAL leaves the old ones. Tasks keep what they were given. */
int queue_set_limits(struct queue *q, const struct queue_limits *lim);
void queue_set_commit_cb(struct queue *q, queue_commit_cb cb, void *arg);
void queue_set_event_cb(struct queue *q, queue_event_cb cb, void *arg);

/* SQLite's message for the last SP_EDB, for the edges to log. */
const char *queue_errmsg(const struct queue *q);
/* Commit the open group now. 0 (also when nothing is pending) or SP_EDB. */
int queue_flush(struct queue *q);
/* Deferred operations not yet committed. */
unsigned queue_pending(const struct queue *q);
/* Sequence number of the last deferred operation applied, and of the last durable one. */
uint64_t queue_seq(const struct queue *q);
uint64_t queue_durable_seq(const struct queue *q);

/* --- enqueue (synchronous) --- */
struct queue_task_spec {
	const char *body;		/* opaque to the queue (the task's JSON) */
	size_t body_len;		/* <= body_max */
	int priority;			/* higher first, FIFO within a priority */
	uint64_t timeout_ms;		/* per attempt, from lease to result; 1 .. QUEUE_TIMEOUT_MAX_MS */
	unsigned max_retries;		/* failed attempts retried this many times; <= QUEUE_RETRIES_MAX */
};
/*
 * Add n tasks (1..batch_max) to swarm for tenant, all or none, and commit.
 * ids[i] gets each task's id (ids increase in the order given; never reused).
 * SP_EINVAL / SP_ELIMIT with err naming the offending task and the limit;
 * SP_ELIMIT also when the swarm would hold more than open_max unfinished
 * tasks (the count is kept in the database, with the tasks).
 */
int queue_enqueue(struct queue *q, const char *swarm, const char *tenant,
		  const struct queue_task_spec *specs, size_t n, int64_t *ids,
		  char *err, size_t errlen);

/* --- the worker's side (deferred) --- */
struct queue_grant {
	int64_t task;
	uint32_t attempt;		/* 1 for the first lease, +1 per lease */
	int64_t lease;			/* the lease id the worker must quote; never shown to clients */
	int64_t expires_ms;		/* renew with queue_heartbeat() before this */
	int64_t deadline_ms;		/* the attempt times out here; heartbeats do not move it */
	char *body;			/* malloc'd copy, NUL-terminated; free with queue_grant_done */
	size_t body_len;
};
void queue_grant_done(struct queue_grant *g);
/*
 * Lease the next ready task of swarm (queued, not_before <= now; highest
 * priority, then oldest) to worker. -EAGAIN when none is ready, with
 * *ret_next_ms (if not NULL) set to when the earliest backing-off task becomes
 * ready, or 0 when no queued task remains.
 */
int queue_lease(struct queue *q, const char *swarm, const char *worker,
		struct queue_grant *ret, int64_t *ret_next_ms);

#define QUEUE_LEASE_MAX		64	/* grants per queue_lease_run() */
/*
 * Lease up to max (1..QUEUE_LEASE_MAX) ready tasks of swarm to worker, in
 * queue_lease's order, as one deferred operation, and mark them running at
 * once: queue_lease() followed by queue_start() for each, for a caller that
 * hands them straight to a worker that runs them (the events are the same:
 * queued -> assigned -> running). ret[0..*ret_n) are filled, each freed with
 * queue_grant_done(). -EAGAIN when none is ready, SP_EINVAL for max out of range.
 */
int queue_lease_run(struct queue *q, const char *swarm, const char *worker, size_t max,
		    struct queue_grant *ret, size_t *ret_n);

/* What the holder of a lease says about it. */
enum queue_verdict {
	QUEUE_ACCEPTED,			/* applied */
	QUEUE_DUPLICATE,		/* this (task, attempt) result was already recorded */
	QUEUE_STALE,			/* not the current attempt / lease / holder, expired, or the task is over */
};
const char *queue_verdict_name(enum queue_verdict v);

/* assigned -> running. Accepted again while running (idempotent). */
int queue_start(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
		const char *worker, enum queue_verdict *ret);
/* Renew the lease to now + lease_ms (never past the deadline); *ret_expires_ms may be NULL. */
int queue_heartbeat(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
		    const char *worker, enum queue_verdict *ret, int64_t *ret_expires_ms);

/*
 * Append a chunk of the attempt's output (the worker streams it as it runs).
 * Kept up to output_max bytes; past that the output is cut (truncated set)
 * and later chunks are dropped. A new attempt starts with empty output.
 */
int queue_output(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
		 const char *worker, const char *data, size_t len, enum queue_verdict *ret);

struct queue_outcome {
	bool ok;			/* succeeded; otherwise the attempt failed */
	int exit_code;
	const char *output;		/* replaces streamed output, kept up to output_max bytes
					   (then truncated is set); NULL keeps what was streamed */
	size_t output_len;
	const char *reason;		/* why it failed (NULL: "exit code N"); cut at QUEUE_REASON_MAX */
};
/*
 * Record the result of (task, attempt) from the holder of lease. Exactly
 * once: a second result for the same attempt is QUEUE_DUPLICATE, one from an
 * older attempt, another worker, an expired lease or a finished task is
 * QUEUE_STALE; both change nothing. A failed attempt is retried after
 * backoff_base_ms * 2^(failures-1) (capped at backoff_max_ms) until
 * max_retries is used up; then the task fails with the reason.
 * SP_ENOTFOUND for an unknown task.
 */
int queue_result(struct queue *q, int64_t task, uint32_t attempt, int64_t lease,
		 const char *worker, const struct queue_outcome *o, enum queue_verdict *ret);

/* --- the daemon's side --- */
/*
 * Deferred: expire up to max held tasks whose lease or deadline has passed
 * (each counts as a failed attempt: retried with backoff or failed with the
 * reason "lease expired" / "timed out after N ms"). *ret_n (may be NULL) gets
 * the number handled; call again when it equals max. Call it on a timer
 * (sweep interval) and when a worker is known to be gone.
 */
int queue_sweep(struct queue *q, size_t max, size_t *ret_n);
/*
 * Synchronous, at daemon start before workers are served: every assigned or
 * running task whose holder alive() says is gone (alive NULL: all) returns to
 * queued without counting a failure; the others get a fresh lease expiry
 * (now + lease_ms, never past the deadline) so the holder has time to
 * reconnect and heartbeat. *ret_requeued may be NULL.
 */
int queue_recover(struct queue *q, bool (*alive)(void *arg, const char *worker), void *arg,
		  size_t *ret_requeued);
/*
 * Deferred: the daemon learned that worker is gone (its sandbox exited or was
 * OOM-killed). Every task it holds fails this attempt with reason (NULL:
 * "worker lost") and is retried with backoff or failed, as for an expired
 * lease but without waiting for the expiry. *ret_n (may be NULL) gets how many.
 */
int queue_worker_lost(struct queue *q, const char *worker, const char *reason, size_t *ret_n);
/*
 * Synchronous: delete the finished tasks of swarm (and their result keys),
 * for retention once the swarm is deleted and its result read. Unfinished
 * tasks stay. *ret_n (may be NULL) gets how many were deleted.
 */
int queue_purge_swarm(struct queue *q, const char *swarm, size_t *ret_n);
/* Synchronous. SP_ENOTFOUND; a finished task is left alone and answers SP_ECONFLICT. */
int queue_cancel(struct queue *q, int64_t task);
/* Synchronous: every unfinished task of swarm. *ret_n (may be NULL) gets how many. */
int queue_cancel_swarm(struct queue *q, const char *swarm, size_t *ret_n);

/* --- reads --- */
struct queue_task {
	int64_t id;
	char *swarm;
	char *tenant;
	enum queue_state state;
	int priority;
	char *body;			/* NUL-terminated */
	size_t body_len;
	uint64_t timeout_ms;
	unsigned max_retries;
	uint32_t attempt;		/* leases granted so far */
	unsigned failures;		/* failed attempts (results, expiries, timeouts) */
	int64_t not_before_ms;
	char *worker;			/* holder while assigned/running, else the last one, or NULL */
	int64_t lease_expires_ms;	/* while assigned/running, else 0 */
	int64_t deadline_ms;
	int exit_code;
	char *output;			/* of the current or last attempt, NUL-terminated, or NULL */
	size_t output_len;
	bool truncated;
	char *reason;			/* last failure or cancel reason, or NULL */
	int64_t created_ms;
	int64_t updated_ms;
};
void queue_task_done(struct queue_task *t);
void queue_tasks_free(struct queue_task *t, size_t n);

/* SP_ENOTFOUND when absent. */
int queue_get(struct queue *q, int64_t id, struct queue_task *ret);
/* Tasks of swarm with id > after_id, by id, at most limit (1..QUEUE_LIST_MAX). */
int queue_list(struct queue *q, const char *swarm, int64_t after_id, size_t limit,
	       struct queue_task **ret, size_t *n);
struct queue_counts {
	int64_t n[QUEUE_STATE__COUNT];
};
int queue_counts(struct queue *q, const char *swarm, struct queue_counts *ret);

#endif

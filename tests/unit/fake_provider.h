/*
 * A fake provider for the core's unit tests. It keeps "containers" in memory
 * (in a process-wide table that survives the provider's close, as Docker's
 * containers survive a daemon restart), honours the instance label in list(),
 * and lets a test inject failures and delays per operation. Like every
 * provider, its callbacks fire from the loop (uv_timer), never inside a call.
 *
 * exec() writes its argv, joined by spaces and ended by "\n", to stdout and
 * exits with fake_set_exec_result()'s code (0 by default); a first argument
 * "stderr" writes to fd 2 instead.
 */
#ifndef SANDPIT_FAKE_PROVIDER_H
#define SANDPIT_FAKE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sandpit/provider.h>

extern const struct sp_provider_ops fake_provider_ops;
/*
 * The same fake as a remote provider named "cloud" (no SP_CAP_LOCAL, no
 * image, no events), sharing the container table; each lists only what it
 * made (and what fake_add() put there).
 */
extern const struct sp_provider_ops fake_cloud_ops;

enum fake_op {
	FAKE_INIT, FAKE_CREATE, FAKE_START, FAKE_EXEC, FAKE_DESTROY, FAKE_LIST,
	FAKE_STATUS, FAKE_BUILD_IMAGE, FAKE_WATCH, FAKE_OP_COUNT
};

struct fake_container {
	char ref[32];			/* "fake-<n>" */
	char instance[64];
	char sandbox_id[64];
	char tenant[64];
	char spec_hash[64];
	char provider[32];		/* the ops name that made it; "" for fake_add() */
	enum sp_instance_state state;
	int exit_code;
	bool oom_killed;
	bool used;
};

#define FAKE_MAX_CONTAINERS	256

/* Forget every container, failure, delay and counter. */
void fake_reset(void);

/* The next call of op starts, then its callback fires with status and detail. */
void fake_fail_next(enum fake_op op, int status, const char *detail);
/* The next call of op refuses to start: it returns rc and no callback fires. */
void fake_refuse_next(enum fake_op op, int rc);
/* Every later call of op completes after ms milliseconds (0: next loop turn). */
void fake_set_delay(enum fake_op op, uint64_t ms);
/* What exec reports next (and after): exit code, OOM kill, timeout. */
void fake_set_exec_result(int exit_code, bool oom_killed, bool timed_out);

/* How many times op was called (started or refused). */
unsigned fake_calls(enum fake_op op);
/* Calls still waiting for their callback, across every fake provider. */
unsigned fake_pending(void);

/* The container table, for assertions and for setting up a world. */
const struct fake_container *fake_find(const char *sandbox_id);
const struct fake_container *fake_find_ref(const char *ref);
size_t fake_count(void);
/* Add a container as if another run had made it; returns its ref (static). */
const char *fake_add(const char *instance, const char *sandbox_id, const char *tenant,
		     enum sp_instance_state state);
/* Make a container vanish, or change state, behind the core's back. */
void fake_remove(const char *ref);
void fake_set_state(const char *ref, enum sp_instance_state state, int exit_code,
		    bool oom_killed);
/* Report an event to the watch() callbacks of open fake providers. */
void fake_emit(const char *ref);

#endif

/*
 * Shared fixture for the worker-channel tests: a temporary state directory with
 * the daemon's CA and server certificate, a token key, and a router with a few
 * test routes.
 */
#ifndef SANDPIT_QUIC_TESTLIB_H
#define SANDPIT_QUIC_TESTLIB_H

#include <stddef.h>

#include "auth.h"
#include "rpc.h"

struct qt_env {
	char dir[64];
	char ca[128], cert[128], key[128];
	struct auth *auth;
	struct rpc *rpc;
	unsigned handler_calls;
	struct rpc_pending *waiters[16];	/* deferred GET /v1/wait */
	unsigned nwaiting, cancelled;
};

/* Create the directory, certificates, auth and routes:
 *   GET  /v1/ping                      public: {"pong":true}
 *   POST /v1/echo                      public: the body back
 *   POST /v1/worker/heartbeat          scope "worker": {"sub":..,"tenant":..}
 *   GET  /v1/sandboxes/{sandbox}/self  scope "worker", sandbox must match
 *   GET  /v1/wait                      public, deferred until qt_wake()
 *   POST /v1/wake                      public: qt_wake(), then {"woken":N}
 * Asserts on failure. */
void qt_env_init(struct qt_env *env);
/* Remove everything qt_env_init made. */
void qt_env_done(struct qt_env *env);
/* Answer every deferred /v1/wait with {"woke":true}; returns how many. */
unsigned qt_wake(struct qt_env *env);
/* A token for sandbox sub with scope "worker", valid for ttl seconds. */
char *qt_token(struct qt_env *env, const char *sub, long ttl, char jti[AUTH_JTI_LEN + 1]);

#endif

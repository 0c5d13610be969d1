/* The worker-channel test fixture (see quic_testlib.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cert.h"
#include "quic_testlib.h"

static void
qt_ping(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct qt_env *env = arg;

	env->handler_calls++;
	rpc_reply_json(resp, 200, json_pack("{s:b}", "pong", 1));
}

static void
qt_echo(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct qt_env *env = arg;

	env->handler_calls++;
	rpc_reply_json(resp, 200, call->json ? json_incref(call->json) : json_object());
}

static void
qt_whoami(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct qt_env *env = arg;

	env->handler_calls++;
	rpc_reply_json(resp, 200, json_pack("{s:s, s:s}", "sub", call->claims->sub,
	    "tenant", call->claims->tenant));
}

struct qt_waiter {
	struct qt_env *env;
	unsigned slot;
};

static void
qt_wait_cancel(void *arg)
{
	struct qt_waiter *w = arg;

	w->env->waiters[w->slot] = NULL;
	w->env->nwaiting--;
	w->env->cancelled++;
	free(w);
}

static void
qt_wait(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct qt_env *env = arg;
	struct qt_waiter *w;
	unsigned i;

	env->handler_calls++;
	for (i = 0; i < 16 && env->waiters[i]; i++)
		;
	if (i == 16) {
		rpc_reply_error(resp, 503, "busy", "too many waiters");
		return;
	}
	w = calloc(1, sizeof(*w));
	w->env = env;
	w->slot = i;
	env->waiters[i] = rpc_defer(call, qt_wait_cancel, w);
	assert_non_null(env->waiters[i]);
	env->nwaiting++;
}

unsigned
qt_wake(struct qt_env *env)
{
	unsigned i, n = 0;

	for (i = 0; i < 16; i++) {
		struct rpc_pending *p = env->waiters[i];

		if (!p)
			continue;
		/* The cancel context is freed here: after the reply it never runs. */
		free(p->cancel_arg);
		env->waiters[i] = NULL;
		env->nwaiting--;
		rpc_pending_reply(p, 200, json_pack("{s:b}", "woke", 1));
		n++;
	}
	return n;
}

static void
qt_wake_route(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct qt_env *env = arg;
	unsigned n = qt_wake(env);

	rpc_reply_json(resp, 200, json_pack("{s:i}", "woken", (int)n));
}

void
qt_env_init(struct qt_env *env)
{
	struct cert_options opt = { 0 };
	uint8_t key[AUTH_KEY_LEN];

	memset(env, 0, sizeof(*env));
	strcpy(env->dir, "/tmp/sp-quic-XXXXXX");
	assert_non_null(mkdtemp(env->dir));
	opt.dir = env->dir;
	assert_int_equal(cert_ensure(&opt, NULL), 0);
	snprintf(env->ca, sizeof(env->ca), "%s/%s", env->dir, CERT_CA_FILE);
	snprintf(env->cert, sizeof(env->cert), "%s/%s", env->dir, CERT_SERVER_FILE);
	snprintf(env->key, sizeof(env->key), "%s/%s", env->dir, CERT_SERVER_KEY_FILE);
	memset(key, 0x5a, sizeof(key));
	assert_int_equal(auth_new_with_key(key, &env->auth), 0);
	env->rpc = rpc_new(env->auth);
	assert_int_equal(rpc_add(env->rpc, "GET", "/v1/ping", NULL, RPC_ROUTE_PUBLIC, qt_ping,
	    env), 0);
	assert_int_equal(rpc_add(env->rpc, "POST", "/v1/echo", NULL, RPC_ROUTE_PUBLIC, qt_echo,
	    env), 0);
	assert_int_equal(rpc_add(env->rpc, "POST", "/v1/worker/heartbeat", "worker", 0,
	    qt_whoami, env), 0);
	assert_int_equal(rpc_add(env->rpc, "GET", "/v1/sandboxes/{sandbox}/self", "worker", 0,
	    qt_whoami, env), 0);
	assert_int_equal(rpc_add(env->rpc, "GET", "/v1/wait", NULL, RPC_ROUTE_PUBLIC, qt_wait,
	    env), 0);
	assert_int_equal(rpc_add(env->rpc, "POST", "/v1/wake", NULL, RPC_ROUTE_PUBLIC,
	    qt_wake_route, env), 0);
}

void
qt_env_done(struct qt_env *env)
{
	char cmd[128];

	rpc_free(env->rpc);
	auth_free(env->auth);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", env->dir);
	assert_int_equal(system(cmd), 0);
}

char *
qt_token(struct qt_env *env, const char *sub, long ttl, char jti[AUTH_JTI_LEN + 1])
{
	const char *scope[] = { "worker" };
	char *tok = NULL;

	assert_int_equal(auth_sign(env->auth, sub, "acme", scope, 1, ttl, 0, &tok, jti), 0);
	return tok;
}

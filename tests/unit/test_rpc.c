/* The route table: matching, captures, auth outcomes, error shape, counters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandpit/error.h"
#include "rpc.h"

static const uint8_t key[AUTH_KEY_LEN] = { 7 };

static void
h_task_output(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	json_t *chunk = call->json ? json_object_get(call->json, "chunk") : NULL;

	rpc_reply_json(resp, 200, json_pack("{s:s, s:s, s:s, s:O?}", "task", call->param[0],
	    "sub", call->claims->sub, "tenant", call->claims->tenant, "chunk", chunk));
}

static void
h_public(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	assert_null(call->claims);
	rpc_reply_json(resp, 201, json_pack("{s:s}", "path", call->req->path));
}

static void
h_silent(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
}

struct fx {
	struct auth *auth;
	struct rpc *rpc;
	char *tok, *tok_noscope, auth_hdr[AUTH_TOKEN_MAX + 16], auth_hdr2[AUTH_TOKEN_MAX + 16];
};

static void
fx_init(struct fx *fx)
{
	const char *worker[] = { "worker" }, *other[] = { "memory:read" };

	assert_int_equal(auth_new_with_key(key, &fx->auth), 0);
	fx->rpc = rpc_new(fx->auth);
	assert_int_equal(rpc_add(fx->rpc, "POST", "/v1/worker/tasks/{id}/output", "worker", 0,
	    h_task_output, NULL), 0);
	assert_int_equal(rpc_add(fx->rpc, "GET", "/v1/sandboxes/{sandbox}/tasks/{id}", "worker",
	    0, h_task_output, NULL), 0);
	assert_int_equal(rpc_add(fx->rpc, "GET", "/v1/health", NULL, RPC_ROUTE_PUBLIC, h_public,
	    NULL), 0);
	assert_int_equal(rpc_add(fx->rpc, "GET", "/v1/silent", NULL, RPC_ROUTE_PUBLIC, h_silent,
	    NULL), 0);
	assert_int_equal(auth_sign(fx->auth, "sb-1", "acme", worker, 1, 60, 0, &fx->tok, NULL),
	    0);
	assert_int_equal(auth_sign(fx->auth, "sb-1", "acme", other, 1, 60, 0, &fx->tok_noscope,
	    NULL), 0);
	snprintf(fx->auth_hdr, sizeof(fx->auth_hdr), "Bearer %s", fx->tok);
	snprintf(fx->auth_hdr2, sizeof(fx->auth_hdr2), "Bearer %s", fx->tok_noscope);
}

static void
fx_done(struct fx *fx)
{
	free(fx->tok);
	free(fx->tok_noscope);
	rpc_free(fx->rpc);
	auth_free(fx->auth);
}

static json_t *
dispatch(struct fx *fx, const char *method, const char *path, const char *authz,
    const char *body, int want_status, int want_close)
{
	struct rpc_request req = { method, path, authz, (const uint8_t *)body,
		body ? strlen(body) : 0, NULL };
	struct rpc_response resp;
	json_error_t err;
	json_t *j;

	rpc_dispatch(fx->rpc, &req, &resp);
	assert_int_equal(resp.status, want_status);
	assert_int_equal(resp.close_conn, want_close);
	j = json_loadb(resp.body, resp.body_len, 0, &err);
	assert_non_null(j);
	free(resp.body);
	return j;
}

static void
assert_error(json_t *j, const char *code)
{
	json_t *e = json_object_get(j, "error");

	assert_true(json_is_object(e));
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	assert_true(json_is_string(json_object_get(e, "message")));
	json_decref(j);
}

static void
test_routes(void **state)
{
	struct fx fx;
	json_t *j;

	fx_init(&fx);
	j = dispatch(&fx, "POST", "/v1/worker/tasks/t-42/output?x=1", fx.auth_hdr,
	    "{\"chunk\":\"hello\", \"tenant\":\"evil\"}", 200, 0);
	assert_string_equal(json_string_value(json_object_get(j, "task")), "t-42");
	/* The tenant comes from the token, never from the body. */
	assert_string_equal(json_string_value(json_object_get(j, "tenant")), "acme");
	assert_string_equal(json_string_value(json_object_get(j, "chunk")), "hello");
	json_decref(j);
	j = dispatch(&fx, "GET", "/v1/health", NULL, NULL, 201, 0);
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/health");
	json_decref(j);
	j = dispatch(&fx, "GET", "/v1/sandboxes/sb-1/tasks/9", fx.auth_hdr, NULL, 200, 0);
	json_decref(j);

	assert_error(dispatch(&fx, "GET", "/v1/nope", NULL, NULL, 404, 0), "not_found");
	assert_error(dispatch(&fx, "GET", "/v1//health", NULL, NULL, 404, 0), "not_found");
	assert_error(dispatch(&fx, "GET", "/v1/health/", NULL, NULL, 404, 0), "not_found");
	assert_error(dispatch(&fx, "GET", "relative", NULL, NULL, 404, 0), "not_found");
	assert_error(dispatch(&fx, "DELETE", "/v1/health", NULL, NULL, 405, 0),
	    "method_not_allowed");
	assert_error(dispatch(&fx, "GET", "/v1/silent", NULL, NULL, 500, 0), "internal");
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", fx.auth_hdr, "[1]",
	    400, 0), "bad_request");
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", fx.auth_hdr, "{\"a\":",
	    400, 0), "bad_request");
	fx_done(&fx);
}

static void
test_auth_outcomes(void **state)
{
	struct fx fx;
	char forged[AUTH_TOKEN_MAX + 32];
	const struct rpc_stats *st;

	fx_init(&fx);
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", NULL, NULL, 401, 1),
	    "unauthorized");
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", "Basic abc", NULL, 401,
	    1), "unauthorized");
	snprintf(forged, sizeof(forged), "%sx", fx.auth_hdr);
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", forged, NULL, 401, 1),
	    "unauthorized");
	/* Lacking the scope, or naming another sandbox: 403, the connection stays. */
	assert_error(dispatch(&fx, "POST", "/v1/worker/tasks/t/output", fx.auth_hdr2, NULL, 403,
	    0), "forbidden");
	assert_error(dispatch(&fx, "GET", "/v1/sandboxes/sb-2/tasks/9", fx.auth_hdr, NULL, 403,
	    0), "forbidden");
	st = rpc_stats(fx.rpc);
	assert_int_equal(st->requests, 5);
	assert_int_equal(st->unauthorized, 3);
	assert_int_equal(st->forbidden, 2);
	assert_int_equal(st->status_4xx, 5);
	fx_done(&fx);
}

static void
test_add_errors(void **state)
{
	struct rpc *rpc = rpc_new(NULL);
	struct rpc_request req = { "GET", "/x", NULL, NULL, 0, NULL };
	struct rpc_response resp;

	assert_int_equal(rpc_add(rpc, "GET", "/x", NULL, 0, h_public, NULL), 0);
	assert_int_equal(rpc_add(rpc, "GET", "/x", NULL, 0, h_public, NULL), SP_ECONFLICT);
	assert_int_equal(rpc_add(rpc, "GET", "x", NULL, 0, h_public, NULL), SP_EINVAL);
	assert_int_equal(rpc_add(rpc, "GET", "/a//b", NULL, 0, h_public, NULL), SP_EINVAL);
	assert_int_equal(rpc_add(rpc, "GET", "/a{b}", NULL, 0, h_public, NULL), SP_EINVAL);
	assert_int_equal(rpc_add(rpc, "GET", "/{a}/{b}/{c}/{d}/{e}", NULL, 0, h_public, NULL),
	    SP_EINVAL);
	assert_int_equal(rpc_add(rpc, "", "/y", NULL, 0, h_public, NULL), SP_EINVAL);
	/* Without an auth instance, a protected route answers 401. */
	rpc_dispatch(rpc, &req, &resp);
	assert_int_equal(resp.status, 401);
	free(resp.body);
	rpc_free(rpc);
}

static struct rpc_pending *deferred_p;
static int cancel_runs, sent_status;

static void
h_defer(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	/* A reply set before deferring is dropped in favour of the deferred one. */
	rpc_reply_json(resp, 200, NULL);
	deferred_p = rpc_defer(call, (void (*)(void *))arg, &cancel_runs);
}

static void
count_cancel(void *arg)
{
	(*(int *)arg)++;
}

static void
fake_send(struct rpc_pending *p, struct rpc_response *resp)
{
	sent_status = resp->status;
	assert_non_null(strstr(resp->body, "\"late\""));
	free(resp->body);
}

static void
test_deferred(void **state)
{
	struct rpc *rpc = rpc_new(NULL);
	struct rpc_pending pending = { .send = fake_send };
	struct rpc_request req = { "GET", "/later", NULL, NULL, 0, &pending };
	struct rpc_response resp;

	assert_int_equal(rpc_add(rpc, "GET", "/later", NULL, RPC_ROUTE_PUBLIC, h_defer,
	    (void *)count_cancel), 0);
	rpc_dispatch(rpc, &req, &resp);
	assert_int_equal(resp.status, 0);
	assert_null(resp.body);
	assert_ptr_equal(deferred_p, &pending);
	rpc_pending_reply(deferred_p, 202, json_pack("{s:b}", "late", 1));
	assert_int_equal(sent_status, 202);
	rpc_pending_cancel(&pending);	/* after the reply: a no-op */
	assert_int_equal(cancel_runs, 0);

	rpc_dispatch(rpc, &req, &resp);
	rpc_pending_cancel(&pending);
	rpc_pending_cancel(&pending);	/* at most once */
	assert_int_equal(cancel_runs, 1);
	assert_int_equal(rpc_stats(rpc)->deferred, 2);
	assert_int_equal(rpc_stats(rpc)->cancelled, 1);
	assert_int_equal(rpc_stats(rpc)->status_2xx, 1);

	/* A transport that cannot defer: rpc_defer() says so and the handler must reply. */
	req.pending = NULL;
	deferred_p = &pending;
	rpc_dispatch(rpc, &req, &resp);
	assert_null(deferred_p);
	assert_int_equal(resp.status, 200);
	free(resp.body);
	rpc_free(rpc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_auth_outcomes),
		cmocka_unit_test(test_add_errors),
		cmocka_unit_test(test_deferred),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

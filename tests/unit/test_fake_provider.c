/*
 * The fake provider keeps its promises: completions only from the loop,
 * containers honouring the instance label, exec echoing its argv, injected
 * failures, refusals and delays, cancel, and close cancelling what is pending.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "fake_provider.h"

struct res {
	int fired;
	int status;
	char detail[256];
	char ref[64];
	size_t n;
	char out[256];
	int out_fd;
	struct sp_exec_result xr;
	struct sp_instance inst;
};

static void
done_cb(void *arg, int status, const char *detail)
{
	struct res *r = arg;

	r->fired++;
	r->status = status;
	snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
}

static void
create_cb(void *arg, int status, const char *ref, const char *detail)
{
	struct res *r = arg;

	done_cb(arg, status, detail);
	snprintf(r->ref, sizeof(r->ref), "%s", ref != NULL ? ref : "");
}

static void
list_cb(void *arg, int status, const struct sp_instance *items, size_t n, const char *detail)
{
	struct res *r = arg;

	done_cb(arg, status, detail);
	r->n = n;
	if (n > 0)
		snprintf(r->ref, sizeof(r->ref), "%s", items[0].sandbox_id);
}

static void
status_cb(void *arg, int status, const struct sp_instance *inst, const char *detail)
{
	struct res *r = arg;

	done_cb(arg, status, detail);
	if (inst != NULL)
		r->inst.state = inst->state;
}

static int
out_cb(void *arg, int fd, const char *data, size_t len)
{
	struct res *r = arg;

	r->out_fd = fd;
	snprintf(r->out + strlen(r->out), sizeof(r->out) - strlen(r->out), "%.*s", (int)len,
	    data);
	return 0;
}

static void
exec_cb(void *arg, int status, const struct sp_exec_result *xr, const char *detail)
{
	struct res *r = arg;

	done_cb(arg, status, detail);
	if (xr != NULL)
		r->xr = *xr;
}

static uv_loop_t loop;
static struct sp_host host = { .loop = &loop, .instance = "inst-1" };

static void
open_provider(struct sp_provider *p)
{
	struct res r = { 0 };

	p->ops = &fake_provider_ops;
	p->host = &host;
	p->priv = calloc(1, fake_provider_ops.priv_size);
	assert_int_equal(p->ops->init(p, done_cb, &r), 0);
	assert_int_equal(r.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.fired, 1);
	assert_int_equal(r.status, 0);
}

static void
close_provider(struct sp_provider *p)
{
	struct res r = { 0 };

	p->ops->close(p, done_cb, &r);
	assert_int_equal(r.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.fired, 1);
	free(p->priv);
}

static int
setup(void **state)
{
	fake_reset();
	return uv_loop_init(&loop);
}

static int
teardown(void **state)
{
	assert_int_equal(fake_pending(), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	return 0;
}

static void
test_lifecycle(void **state)
{
	struct sp_provider p;
	struct sp_sandbox_spec spec = { .id = "sb-1", .tenant = "t", .spec_hash = "h" };
	const char *argv[] = { "echo", "hello", "world", NULL };
	struct sp_exec_spec es = { .argv = argv };
	struct res r = { 0 };
	char ref[64];

	open_provider(&p);
	assert_int_equal(p.ops->create(&p, &spec, create_cb, &r), 0);
	assert_int_equal(r.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, 0);
	strcpy(ref, r.ref);
	assert_int_equal(fake_find("sb-1")->state, SP_INST_CREATED);

	/* Not running yet: exec conflicts. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->exec(&p, ref, &es, out_cb, exec_cb, &r, NULL), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, SP_ECONFLICT);

	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->start(&p, ref, done_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, 0);

	memset(&r, 0, sizeof(r));
	fake_set_exec_result(3, false, false);
	assert_int_equal(p.ops->exec(&p, ref, &es, out_cb, exec_cb, &r, NULL), 0);
	assert_int_equal(r.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "echo hello world\n");
	assert_int_equal(r.out_fd, 1);
	assert_int_equal(r.xr.exit_code, 3);

	/* Same sandbox id again: conflict. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->create(&p, &spec, create_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, SP_ECONFLICT);

	/* list honours the instance label. */
	fake_add("other-instance", "sb-x", "t", SP_INST_RUNNING);
	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->list(&p, list_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.ref, "sb-1");

	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->destroy(&p, ref, done_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->status(&p, ref, status_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.inst.state, SP_INST_GONE);
	assert_null(fake_find("sb-1"));
	assert_int_equal(fake_calls(FAKE_CREATE), 2);
	close_provider(&p);
	/* Containers outlive the provider, as Docker's outlive the daemon. */
	assert_int_equal(fake_count(), 1);
}

static void
test_failures(void **state)
{
	struct sp_provider p;
	struct sp_sandbox_spec spec = { .id = "sb-2" };
	struct res r = { 0 };

	open_provider(&p);
	fake_refuse_next(FAKE_CREATE, SP_EUNAVAIL);
	assert_int_equal(p.ops->create(&p, &spec, create_cb, &r), SP_EUNAVAIL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.fired, 0);

	fake_fail_next(FAKE_CREATE, SP_EPROVIDER, "engine said no");
	assert_int_equal(p.ops->create(&p, &spec, create_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.fired, 1);
	assert_int_equal(r.status, SP_EPROVIDER);
	assert_string_equal(r.detail, "engine said no");
	assert_null(fake_find("sb-2"));

	/* Only the next call fails. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(p.ops->create(&p, &spec, create_cb, &r), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r.status, 0);
	assert_non_null(fake_find("sb-2"));
	close_provider(&p);
}

static void
test_delay_cancel_close(void **state)
{
	struct sp_provider p;
	const char *argv[] = { "stderr", "oops", NULL };
	struct sp_exec_spec es = { .argv = argv };
	struct res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct sp_exec *ex;
	const char *ref;

	open_provider(&p);
	ref = fake_add("inst-1", "sb-3", "t", SP_INST_RUNNING);

	/* Delayed: nothing after a non-blocking turn, done once the timer fires. */
	fake_set_delay(FAKE_EXEC, 50);
	assert_int_equal(p.ops->exec(&p, ref, &es, out_cb, exec_cb, &r1, NULL), 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(r1.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r1.status, 0);
	assert_int_equal(r1.out_fd, 2);
	assert_string_equal(r1.out, "oops\n");

	/* Cancel: ECANCELED, later, and no output. */
	fake_set_delay(FAKE_EXEC, 10000);
	assert_int_equal(p.ops->exec(&p, ref, &es, out_cb, exec_cb, &r2, &ex), 0);
	p.ops->exec_cancel(&p, ex);
	assert_int_equal(r2.fired, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(r2.status, SP_ECANCELED);
	assert_string_equal(r2.out, "");

	/* Close with a call pending: it is cancelled, then close completes. */
	fake_set_delay(FAKE_DESTROY, 10000);
	assert_int_equal(p.ops->destroy(&p, ref, done_cb, &r3), 0);
	assert_int_equal(fake_pending(), 1);
	close_provider(&p);
	assert_int_equal(r3.fired, 1);
	assert_int_equal(r3.status, SP_ECANCELED);
	assert_non_null(fake_find("sb-3"));
}

struct ev {
	int n;
	enum sp_instance_state state;
};

static void
event_cb(void *arg, const struct sp_instance *inst)
{
	struct ev *e = arg;

	e->n++;
	e->state = inst->state;
}

static void
test_watch(void **state)
{
	struct sp_provider p;
	struct ev e = { 0 };
	const char *ref;

	open_provider(&p);
	ref = fake_add("inst-1", "sb-4", "t", SP_INST_RUNNING);
	assert_int_equal(p.ops->watch(&p, event_cb, &e), 0);
	fake_set_state(ref, SP_INST_EXITED, 137, true);
	fake_emit(ref);
	assert_int_equal(e.n, 1);
	assert_int_equal(e.state, SP_INST_EXITED);
	close_provider(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay_cancel_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

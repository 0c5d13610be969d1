/*
 * admission: each limit refuses with its name, value and count; a take is
 * all-or-nothing; release is idempotent and frees slots; per-tenant
 * overrides; limits changed at run time (SIGHUP) revoke nothing; waiters are
 * woken FIFO and nobody jumps the queue; and a loop test where simulated
 * provider starts succeed or fail at random moments keeps every count within
 * its limit and returns to zero.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <sandpit/error.h>

#include "admission.h"

static struct admission *
mk(unsigned host, unsigned starts, unsigned tenant)
{
	struct admission_limits lim = { host, starts, tenant, NULL, 0 };
	struct admission *a = NULL;

	assert_int_equal(admission_new(&lim, &a, NULL, 0), 0);
	return a;
}

static void
test_limits_validated(void **state)
{
	struct admission_override dup[2] = { { "acme", 3 }, { "acme", 4 } };
	struct admission_override bad[1] = { { "no/slash", 3 } };
	struct admission_limits lim = { 10, 0, 5, NULL, 0 };
	struct admission *a = NULL;
	char err[128];

	(void)state;
	assert_int_equal(admission_new(&lim, &a, err, sizeof(err)), SP_EINVAL);
	assert_null(a);
	assert_non_null(strstr(err, "max_starts 0"));
	lim.starts_max = 3;
	lim.host_max = ADMISSION_LIMIT_MAX + 1;
	assert_int_equal(admission_new(&lim, &a, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "max_sandboxes"));
	lim.host_max = 10;
	lim.overrides = dup;
	lim.noverrides = 2;
	assert_int_equal(admission_new(&lim, &a, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "two overrides"));
	lim.overrides = bad;
	lim.noverrides = 1;
	assert_int_equal(admission_new(&lim, &a, err, sizeof(err)), SP_EINVAL);
	lim.noverrides = 0;
	assert_int_equal(admission_new(&lim, &a, err, sizeof(err)), 0);
	/* A bad reload keeps the old limits. */
	lim.tenant_max = 0;
	assert_int_equal(admission_set_limits(a, &lim, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(admission_tenant_limit(a, "x"), 5);
	admission_free(a);
	admission_free(NULL);
	assert_string_equal(admission_limit_name(ADMISSION_STARTS), "max_starts");
}

static void
test_host_cap(void **state)
{
	struct admission *a = mk(3, 10, 10);
	struct admission_ticket t[4] = { 0 };
	struct admission_refusal why;
	struct admission_counts c;
	char err[160];
	int i;

	(void)state;
	for (i = 0; i < 3; i++)
		assert_int_equal(admission_take(a, i == 0 ? "t1" : "t2", true, &t[i], &why, NULL, 0), 0);
	assert_int_equal(admission_started(a, &t[0]), 0);
	assert_int_equal(admission_take(a, "t3", true, &t[3], &why, err, sizeof(err)), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_HOST);
	assert_int_equal(why.max, 3);
	assert_int_equal(why.current, 3);
	assert_string_equal(err, "max_sandboxes is 3: 3 sandboxes starting or running on this host");
	assert_int_equal(t[3].hold, ADMISSION_NONE);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting, 2);
	assert_int_equal(c.running, 1);
	/* Releasing a running one makes room. */
	admission_release(a, &t[0]);
	assert_int_equal(t[0].hold, ADMISSION_NONE);
	admission_release(a, &t[0]);	/* idempotent */
	admission_counts(a, NULL, &c);
	assert_int_equal(c.running, 0);
	assert_int_equal(c.starting, 2);
	assert_int_equal(admission_take(a, "t3", true, &t[3], NULL, NULL, 0), 0);
	for (i = 1; i < 4; i++)
		admission_release(a, &t[i]);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting + c.running, 0);
	admission_free(a);
}

static void
test_tenant_cap_counts_starting(void **state)
{
	struct admission_override ovr[1] = { { "big", 4 } };
	struct admission_limits lim = { 100, 100, 2, ovr, 1 };
	struct admission_ticket t[8] = { 0 };
	struct admission_refusal why;
	struct admission_counts c;
	struct admission *a;
	char err[160];
	int i;

	(void)state;
	assert_int_equal(admission_new(&lim, &a, NULL, 0), 0);
	/* One running, one still starting: both count. */
	assert_int_equal(admission_take(a, "acme", true, &t[0], NULL, NULL, 0), 0);
	assert_int_equal(admission_started(a, &t[0]), 0);
	assert_int_equal(admission_take(a, "acme", true, &t[1], NULL, NULL, 0), 0);
	assert_int_equal(admission_take(a, "acme", true, &t[2], &why, err, sizeof(err)), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_TENANT);
	assert_int_equal(why.max, 2);
	assert_int_equal(why.current, 2);
	assert_string_equal(err, "tenant_max_sandboxes is 2 for tenant 'acme': 2 starting or "
			    "running (1 starting)");
	/* Another tenant is not affected; the override applies to its tenant only. */
	assert_int_equal(admission_take(a, "other", true, &t[2], NULL, NULL, 0), 0);
	for (i = 3; i < 7; i++)
		assert_int_equal(admission_take(a, "big", true, &t[i], NULL, NULL, 0), 0);
	assert_int_equal(admission_take(a, "big", true, &t[7], &why, NULL, 0), SP_ELIMIT);
	assert_int_equal(why.max, 4);
	assert_int_equal(admission_tenant_limit(a, "big"), 4);
	assert_int_equal(admission_tenant_limit(a, "acme"), 2);
	admission_counts(a, "acme", &c);
	assert_int_equal(c.starting, 1);
	assert_int_equal(c.running, 1);
	admission_counts(a, "nobody", &c);
	assert_int_equal(c.starting + c.running, 0);
	/* A failed start releases its slot. */
	admission_release(a, &t[1]);
	assert_int_equal(admission_take(a, "acme", true, &t[1], NULL, NULL, 0), 0);
	for (i = 0; i < 7; i++)
		admission_release(a, &t[i]);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting + c.running, 0);
	admission_free(a);
}

/* A pooled sandbox claimed: its count moves to the new tenant, host counts stay. */
static void
test_transfer(void **state)
{
	struct admission_ticket pool = { 0 }, mine = { 0 }, empty = { 0 };
	struct admission_refusal why;
	struct admission_counts c;
	struct admission *a = mk(10, 10, 1);
	char err[160];

	(void)state;
	assert_int_equal(admission_adopt(a, "pool", true, &pool), 0);
	assert_int_equal(admission_take(a, "acme", true, &mine, NULL, NULL, 0), 0);
	/* acme is at its cap of 1: refused, nothing moves. */
	assert_int_equal(admission_transfer(a, &pool, "acme", &why, err, sizeof(err)), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_TENANT);
	assert_non_null(strstr(err, "tenant 'acme'"));
	assert_string_equal(pool.tenant, "pool");
	admission_counts(a, "pool", &c);
	assert_int_equal(c.running, 1);
	/* To a tenant with room: its count, not the host's, changes. */
	assert_int_equal(admission_transfer(a, &pool, "other", NULL, NULL, 0), 0);
	assert_string_equal(pool.tenant, "other");
	admission_counts(a, "pool", &c);
	assert_int_equal(c.starting + c.running, 0);
	admission_counts(a, "other", &c);
	assert_int_equal(c.running, 1);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting, 1);
	assert_int_equal(c.running, 1);
	assert_int_equal(admission_transfer(a, &empty, "other", NULL, NULL, 0), SP_EINVAL);
	assert_int_equal(admission_transfer(a, &pool, "bad name!", NULL, NULL, 0), SP_EINVAL);
	admission_release(a, &pool);
	admission_release(a, &mine);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting + c.running, 0);
	admission_free(a);
}

static void
test_bad_calls(void **state)
{
	struct admission *a = mk(5, 5, 5);
	struct admission_ticket t = { 0 }, u = { 0 };
	char err[64];

	(void)state;
	assert_int_equal(admission_take(a, "", true, &t, NULL, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(admission_take(a, NULL, true, &t, NULL, NULL, 0), SP_EINVAL);
	assert_int_equal(admission_take(a, "a b", true, &t, NULL, NULL, 0), SP_EINVAL);
	assert_int_equal(admission_started(a, &t), SP_ECONFLICT);
	assert_int_equal(admission_take(a, "acme", true, &t, NULL, NULL, 0), 0);
	/* A ticket holds one thing at a time. */
	assert_int_equal(admission_take(a, "acme", true, &t, NULL, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(admission_started(a, &t), 0);
	assert_int_equal(admission_started(a, &t), SP_ECONFLICT);
	assert_int_equal(admission_adopt(a, "acme", true, &t), SP_EINVAL);
	admission_release(a, &t);
	admission_release(a, &u);	/* empty: no-op */
	admission_free(a);
}

static void
test_adopt_over_limit_and_reload(void **state)
{
	struct admission *a = mk(2, 2, 2);
	struct admission_limits lim = { 5, 2, 2, NULL, 0 };
	struct admission_ticket t[4] = { 0 };
	struct admission_refusal why;
	struct admission_counts c;

	(void)state;
	/* Re-adoption at start counts what exists, even above the caps. */
	assert_int_equal(admission_adopt(a, "acme", true, &t[0]), 0);
	assert_int_equal(admission_adopt(a, "acme", true, &t[1]), 0);
	assert_int_equal(admission_adopt(a, "acme", true, &t[2]), 0);
	admission_counts(a, "acme", &c);
	assert_int_equal(c.running, 3);
	assert_int_equal(admission_take(a, "other", true, &t[3], &why, NULL, 0), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_HOST);
	assert_int_equal(why.current, 3);
	/* SIGHUP raises the host cap: the tenant cap still holds acme back. */
	assert_int_equal(admission_set_limits(a, &lim, NULL, 0), 0);
	assert_int_equal(admission_take(a, "acme", true, &t[3], &why, NULL, 0), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_TENANT);
	assert_int_equal(admission_take(a, "other", true, &t[3], NULL, NULL, 0), 0);
	/* Lowering revokes nothing. */
	lim.host_max = 1;
	assert_int_equal(admission_set_limits(a, &lim, NULL, 0), 0);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.running + c.starting, 4);
	assert_int_equal(admission_started(a, &t[3]), 0);
	admission_release(a, &t[0]);
	admission_release(a, &t[1]);
	admission_release(a, &t[2]);
	admission_release(a, &t[3]);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.running + c.starting, 0);
	admission_free(a);
}

/* A burst to a remote provider counts against its tenant only. */
static void
test_remote_counts_tenant_only(void **state)
{
	struct admission *a = mk(2, 1, 4);
	struct admission_ticket l[2] = { 0 }, r[3] = { 0 };
	struct admission_refusal why;
	struct admission_counts c;

	(void)state;
	assert_int_equal(admission_take(a, "acme", true, &l[0], NULL, NULL, 0), 0);
	/* The only local start slot is busy, but remote starts do not use it. */
	assert_int_equal(admission_take(a, "acme", true, &l[1], &why, NULL, 0), -EAGAIN);
	assert_int_equal(admission_take(a, "acme", false, &r[0], NULL, NULL, 0), 0);
	assert_int_equal(admission_take(a, "acme", false, &r[1], NULL, NULL, 0), 0);
	assert_false(r[0].local);
	assert_int_equal(admission_started(a, &l[0]), 0);
	assert_int_equal(admission_take(a, "acme", true, &l[1], NULL, NULL, 0), 0);
	assert_int_equal(admission_started(a, &l[1]), 0);
	/* Host full (2 local), yet the tenant has room: a burst is admitted... */
	assert_int_equal(admission_take(a, "other", true, &r[2], &why, NULL, 0), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_HOST);
	assert_int_equal(admission_take(a, "other", false, &r[2], NULL, NULL, 0), 0);
	admission_release(a, &r[2]);
	/* ...until the tenant cap, which counts local and remote alike. */
	assert_int_equal(admission_take(a, "acme", false, &r[2], &why, NULL, 0), SP_ELIMIT);
	assert_int_equal(why.limit, ADMISSION_TENANT);
	assert_int_equal(why.current, 4);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting, 0);
	assert_int_equal(c.running, 2);
	assert_int_equal(c.remote, 2);
	assert_int_equal(admission_started(a, &r[0]), 0);
	admission_counts(a, "acme", &c);
	assert_int_equal(c.starting, 1);
	assert_int_equal(c.running, 3);
	admission_release(a, &r[0]);
	admission_release(a, &r[1]);
	admission_release(a, &l[0]);
	admission_release(a, &l[1]);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.starting + c.running + c.remote, 0);
	/* Re-adoption of a remote sandbox. */
	assert_int_equal(admission_adopt(a, "acme", false, &r[0]), 0);
	admission_counts(a, NULL, &c);
	assert_int_equal(c.remote, 1);
	assert_int_equal(c.running, 0);
	admission_release(a, &r[0]);
	admission_free(a);
}

struct wctx {
	struct admission *a;
	struct admission_ticket t;
	struct admission_waiter w;
	int order;
	int *seq;
	int status;
};

static void
on_slot(void *arg)
{
	struct wctx *x = arg;

	x->order = ++*x->seq;
	x->status = admission_take(x->a, "acme", true, &x->t, NULL, NULL, 0);
}

static void
test_start_slots_fifo(void **state)
{
	struct admission *a = mk(100, 2, 100);
	struct admission_ticket s[2] = { 0 }, late = { 0 };
	struct admission_limits lim = { 100, 3, 100, NULL, 0 };
	struct admission_refusal why;
	struct wctx w[3];
	char err[128];
	int seq = 0, i;

	(void)state;
	memset(w, 0, sizeof(w));
	assert_int_equal(admission_take(a, "acme", true, &s[0], NULL, NULL, 0), 0);
	assert_int_equal(admission_take(a, "acme", true, &s[1], NULL, NULL, 0), 0);
	/* The two slots are taken: three more callers wait, in order. */
	for (i = 0; i < 3; i++) {
		w[i].a = a;
		w[i].seq = &seq;
		w[i].status = 1;
		assert_int_equal(admission_take(a, "acme", true, &w[i].t, &why, err, sizeof(err)), -EAGAIN);
		assert_int_equal(why.limit, ADMISSION_STARTS);
		assert_int_equal(why.current, 2);
		assert_int_equal(admission_wait(a, &w[i].w, on_slot, &w[i]), 0);
	}
	assert_string_equal(err, "max_starts is 2: 2 starts in progress, 2 waiting");
	assert_int_equal(admission_wait(a, &w[0].w, on_slot, &w[0]), -EALREADY);
	assert_int_equal(admission_waiting(a), 3);
	/* One start finishes: the oldest waiter gets the slot, inside the call. */
	assert_int_equal(admission_started(a, &s[0]), 0);
	assert_int_equal(w[0].order, 1);
	assert_int_equal(w[0].status, 0);
	assert_int_equal(w[0].t.hold, ADMISSION_STARTING);
	assert_int_equal(w[1].order, 0);
	/* Each freed slot went to a waiter, so a newcomer finds them full and waits. */
	admission_release(a, &s[1]);	/* wakes w[1] */
	assert_int_equal(w[1].status, 0);
	assert_int_equal(admission_take(a, "acme", true, &late, &why, NULL, 0), -EAGAIN);
	/* A cancelled waiter is skipped; a raised limit (SIGHUP) wakes the next. */
	admission_wait_cancel(a, &w[2].w);
	admission_wait_cancel(a, &w[2].w);
	assert_int_equal(admission_waiting(a), 0);
	assert_int_equal(admission_wait(a, &w[2].w, on_slot, &w[2]), 0);
	assert_int_equal(admission_set_limits(a, &lim, NULL, 0), 0);
	assert_int_equal(w[2].status, 0);
	assert_int_equal(w[2].order, 3);
	/* No waiter and a free slot: waiting would never end. */
	admission_release(a, &w[0].t);
	assert_int_equal(admission_wait(a, &w[0].w, on_slot, &w[0]), SP_ECONFLICT);
	admission_release(a, &w[1].t);
	admission_release(a, &w[2].t);
	admission_free(a);
}

/*
 * A loop with simulated provider starts: 40 requests from 3 tenants, at most
 * 3 concurrent starts, tenant cap 6, host cap 10. Each start takes a few ms
 * of loop time and every third fails (released at once); each success runs a
 * little and is released. Limits are checked at every step.
 */
struct sim;
struct sim_req {
	struct sim *sim;
	int id;
	char tenant[8];
	struct admission_ticket t;
	struct admission_waiter w;
	uv_timer_t timer;
	int phase;			/* 0 waiting, 1 starting, 2 running, 3 done */
	int result;			/* 0 ran, SP_ELIMIT refused */
};
struct sim {
	uv_loop_t loop;
	struct admission *a;
	struct sim_req req[40];
	int max_starting, max_total, refused, failed, ran, closed;
};

static void
sim_check(struct sim *s)
{
	struct admission_counts c, tc;
	const char *tenants[3] = { "t0", "t1", "t2" };
	int i;

	admission_counts(s->a, NULL, &c);
	assert_true(c.starting <= 3);
	assert_true(c.starting + c.running <= 10);
	for (i = 0; i < 3; i++) {
		admission_counts(s->a, tenants[i], &tc);
		assert_true(tc.starting + tc.running <= 6);
	}
	if ((int)c.starting > s->max_starting)
		s->max_starting = (int)c.starting;
	if ((int)(c.starting + c.running) > s->max_total)
		s->max_total = (int)(c.starting + c.running);
}

static void sim_try(struct sim_req *r);

static void
sim_closed(uv_handle_t *h)
{
	struct sim_req *r = h->data;

	r->sim->closed++;
}

static void
sim_timer(uv_timer_t *t)
{
	struct sim_req *r = t->data;
	struct sim *s = r->sim;

	if (r->phase == 1) {
		/* The provider answers: every third start fails midway. */
		if (r->id % 3 == 0) {
			admission_release(s->a, &r->t);
			s->failed++;
			r->phase = 3;
			uv_close((uv_handle_t *)&r->timer, sim_closed);
		} else {
			assert_int_equal(admission_started(s->a, &r->t), 0);
			r->phase = 2;
			uv_timer_start(&r->timer, sim_timer, 2 + (uint64_t)(r->id % 4), 0);
		}
	} else if (r->phase == 2) {
		admission_release(s->a, &r->t);
		s->ran++;
		r->phase = 3;
		uv_close((uv_handle_t *)&r->timer, sim_closed);
	}
	sim_check(s);
}

static void
sim_woken(void *arg)
{
	sim_try(arg);
}

static void
sim_try(struct sim_req *r)
{
	struct sim *s = r->sim;
	int rc = admission_take(s->a, r->tenant, true, &r->t, NULL, NULL, 0);

	if (rc == 0) {
		r->phase = 1;
		uv_timer_start(&r->timer, sim_timer, 1 + (uint64_t)(r->id % 3), 0);
	} else if (rc == -EAGAIN) {
		assert_int_equal(admission_wait(s->a, &r->w, sim_woken, r), 0);
	} else {
		assert_int_equal(rc, SP_ELIMIT);
		s->refused++;
		r->phase = 3;
		uv_close((uv_handle_t *)&r->timer, sim_closed);
	}
	sim_check(s);
}

static void
test_loop_starts_fail_midway(void **state)
{
	struct sim *s = calloc(1, sizeof(*s));
	struct admission_counts c;
	int i;

	(void)state;
	assert_non_null(s);
	assert_int_equal(uv_loop_init(&s->loop), 0);
	s->a = mk(10, 3, 6);
	for (i = 0; i < 40; i++) {
		struct sim_req *r = &s->req[i];

		r->sim = s;
		r->id = i;
		snprintf(r->tenant, sizeof(r->tenant), "t%d", i % 3);
		uv_timer_init(&s->loop, &r->timer);
		r->timer.data = r;
		sim_try(r);
	}
	assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(s->closed, 40);
	assert_int_equal(s->ran + s->failed + s->refused, 40);
	assert_int_equal(admission_waiting(s->a), 0);
	assert_int_equal(s->max_starting, 3);	/* the start limit was reached, never passed */
	assert_true(s->failed > 0);
	admission_counts(s->a, NULL, &c);
	assert_int_equal(c.starting + c.running, 0);
	admission_free(s->a);
	assert_int_equal(uv_loop_close(&s->loop), 0);
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limits_validated),
		cmocka_unit_test(test_host_cap),
		cmocka_unit_test(test_tenant_cap_counts_starting),
		cmocka_unit_test(test_transfer),
		cmocka_unit_test(test_bad_calls),
		cmocka_unit_test(test_adopt_over_limit_and_reload),
		cmocka_unit_test(test_remote_counts_tenant_only),
		cmocka_unit_test(test_start_slots_fifo),
		cmocka_unit_test(test_loop_starts_fail_midway),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

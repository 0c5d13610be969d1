/*
 * placement: auto fills local providers first and bursts in configured
 * order; a named policy uses only its provider; each refusal (full, not
 * ready, rate-limited, unknown policy) comes with its error and message;
 * rate-limit backoff grows, honours the provider's hint and clears on
 * success; SIGHUP keeps state; and a loop test drives fake providers through
 * the real provider vtable, one of which answers "rate limited", so the
 * burst path runs end to end.
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
#include <sandpit/provider.h>

#include "admission.h"
#include "placement.h"

/* Names chosen so nothing can depend on a real provider's name. */
static const struct placement_provider three[3] = {
	{ "cloud-a", 0, 2 },
	{ "local-x", SP_CAP_LOCAL | SP_CAP_EXEC, 3 },
	{ "cloud-b", 0, 5 },
};

static struct placement *
mk_ready(void)
{
	struct placement *p = NULL;
	size_t i;

	assert_int_equal(placement_new(three, 3, &p, NULL, 0), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(placement_set_ready(p, three[i].name, true), 0);
	return p;
}

static void
test_config_checked(void **state)
{
	struct placement_provider bad[2] = { { "a", 0, 1 }, { "a", 0, 1 } };
	struct placement *p = NULL;
	char err[128];

	(void)state;
	assert_int_equal(placement_new(bad, 2, &p, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "listed twice"));
	bad[1].name = "auto";
	assert_int_equal(placement_new(bad, 2, &p, err, sizeof(err)), SP_EINVAL);
	bad[1].name = "Bad Name";
	assert_int_equal(placement_new(bad, 2, &p, err, sizeof(err)), SP_EINVAL);
	bad[1].name = "b";
	bad[1].capacity = 0;
	assert_int_equal(placement_new(bad, 2, &p, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "capacity 0"));
	assert_int_equal(placement_new(bad, 0, &p, err, sizeof(err)), SP_EINVAL);
	assert_null(p);
	placement_free(NULL);
}

static void
test_auto_local_first_then_burst(void **state)
{
	struct placement *p = mk_ready();
	struct placement_choice c;
	struct placement_state st;
	const char *want[] = { "local-x", "local-x", "local-x", "cloud-a", "cloud-a",
			       "cloud-b", "cloud-b", "cloud-b", "cloud-b", "cloud-b" };
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < 10; i++) {
		assert_int_equal(placement_take(p, "auto", 1000, &c, err, sizeof(err)), 0);
		assert_string_equal(c.name, want[i]);
		assert_int_equal(c.burst, i >= 3);
	}
	assert_int_equal(placement_take(p, "auto", 1000, &c, err, sizeof(err)), SP_ELIMIT);
	assert_string_equal(err, "local-x: full (max_sandboxes 3/3); cloud-a: full (burst_max_sandboxes 2/2); "
			    "cloud-b: full (burst_max_sandboxes 5/5)");
	/* A local sandbox goes away: the next one goes home again. */
	assert_int_equal(placement_put(p, "local-x"), 0);
	assert_int_equal(placement_take(p, "auto", 1000, &c, NULL, 0), 0);
	assert_string_equal(c.name, "local-x");
	assert_false(c.burst);
	assert_int_equal(placement_get(p, "cloud-b", &st), 0);
	assert_int_equal(st.in_use, 5);
	assert_false(st.local);
	assert_int_equal(placement_get(p, "local-x", &st), 0);
	assert_true(st.local);
	assert_int_equal(placement_get(p, "nope", &st), SP_ENOTFOUND);
	placement_free(p);
}

static void
test_named_policy(void **state)
{
	struct placement *p = mk_ready();
	struct placement_choice c;
	char err[256];
	int i;

	(void)state;
	assert_true(placement_policy_valid(p, "auto"));
	assert_true(placement_policy_valid(p, "cloud-b"));
	assert_false(placement_policy_valid(p, "docker"));
	assert_false(placement_policy_valid(p, NULL));
	for (i = 0; i < 2; i++) {
		assert_int_equal(placement_take(p, "cloud-a", 0, &c, NULL, 0), 0);
		assert_string_equal(c.name, "cloud-a");
		assert_false(c.burst);		/* asked for by name: not a burst */
	}
	/* Full, and a named policy does not spill elsewhere. */
	assert_int_equal(placement_take(p, "cloud-a", 0, &c, err, sizeof(err)), SP_ELIMIT);
	assert_string_equal(err, "cloud-a: full (burst_max_sandboxes 2/2)");
	assert_int_equal(placement_take(p, "e2b", 0, &c, err, sizeof(err)), SP_EINVAL);
	assert_string_equal(err, "unknown placement 'e2b': use auto, cloud-a, local-x, cloud-b");
	assert_int_equal(placement_take(p, NULL, 0, &c, err, sizeof(err)), SP_EINVAL);
	/* Not ready. */
	assert_int_equal(placement_set_ready(p, "cloud-b", false), 0);
	assert_int_equal(placement_take(p, "cloud-b", 0, &c, err, sizeof(err)), SP_EUNAVAIL);
	assert_string_equal(err, "cloud-b: not ready");
	assert_int_equal(placement_set_ready(p, "ghost", true), SP_ENOTFOUND);
	placement_free(p);
}

static void
test_nothing_ready(void **state)
{
	struct placement *p = NULL;
	struct placement_choice c;
	char err[256];

	(void)state;
	assert_int_equal(placement_new(three, 3, &p, NULL, 0), 0);
	assert_int_equal(placement_take(p, "auto", 0, &c, err, sizeof(err)), SP_EUNAVAIL);
	assert_string_equal(err, "local-x: not ready; cloud-a: not ready; cloud-b: not ready");
	/* Only a remote one up: auto bursts at once. */
	assert_int_equal(placement_set_ready(p, "cloud-b", true), 0);
	assert_int_equal(placement_take(p, "auto", 0, &c, err, sizeof(err)), 0);
	assert_string_equal(c.name, "cloud-b");
	assert_true(c.burst);
	placement_free(p);
}

static void
test_rate_limit_backoff(void **state)
{
	struct placement *p = mk_ready();
	struct placement_choice c;
	struct placement_state st;
	char err[256];
	int64_t t = 10000, expect[] = { 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000 };
	size_t i;

	(void)state;
	/* cloud-a says slow down: auto skips it for cloud-b until the backoff ends. */
	assert_int_equal(placement_report(p, "cloud-a", PLACEMENT_RATE_LIMITED, 0, t), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);	/* local fills */
	assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);
	assert_string_equal(c.name, "cloud-b");
	assert_int_equal(placement_put(p, "cloud-b"), 0);
	/* Asked for by name while backing off: -EAGAIN and when to come back. */
	assert_int_equal(placement_take(p, "cloud-a", t + 10, &c, err, sizeof(err)), -EAGAIN);
	assert_int_equal(c.retry_at_ms, t + 1000);
	assert_string_equal(err, "cloud-a: rate-limited for 990 ms");
	assert_int_equal(placement_take(p, "cloud-a", t + 1000, &c, NULL, 0), 0);
	assert_string_equal(c.name, "cloud-a");
	/* After the backoff one create probes; the next waits for its outcome. */
	assert_int_equal(placement_take(p, "cloud-a", t + 1001, &c, err, sizeof(err)), -EAGAIN);
	assert_string_equal(err, "cloud-a: rate-limited (one trial start in progress)");
	assert_int_equal(placement_take(p, "auto", t + 1001, &c, NULL, 0), 0);
	assert_string_equal(c.name, "cloud-b");
	assert_int_equal(placement_put(p, "cloud-b"), 0);
	assert_int_equal(placement_report(p, "cloud-a", PLACEMENT_OK, 0, t + 1002), 0);
	assert_int_equal(placement_take(p, "cloud-a", t + 1003, &c, NULL, 0), 0);
	assert_int_equal(placement_put(p, "cloud-a"), 0);
	assert_int_equal(placement_put(p, "cloud-a"), 0);

	/* Doubling, capped at 60 s. */
	for (i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		assert_int_equal(placement_report(p, "cloud-b", PLACEMENT_RATE_LIMITED, 0, t), 0);
		assert_int_equal(placement_get(p, "cloud-b", &st), 0);
		assert_int_equal(st.backoff_until_ms - t, expect[i]);
		assert_int_equal(st.rate_limited, i + 1);
	}
	/* The provider's longer hint wins; a shorter one does not shorten ours. */
	assert_int_equal(placement_report(p, "cloud-b", PLACEMENT_RATE_LIMITED, 90000, t), 0);
	assert_int_equal(placement_get(p, "cloud-b", &st), 0);
	assert_int_equal(st.backoff_until_ms - t, 90000);
	assert_int_equal(placement_report(p, "cloud-b", PLACEMENT_RATE_LIMITED, 5, t), 0);
	assert_int_equal(placement_get(p, "cloud-b", &st), 0);
	assert_int_equal(st.backoff_until_ms - t, 60000);
	/* Both remote ones backing off, local full: -EAGAIN at the earliest end. */
	assert_int_equal(placement_report(p, "cloud-a", PLACEMENT_RATE_LIMITED, 0, t), 0);
	assert_int_equal(placement_take(p, "auto", t, &c, err, sizeof(err)), -EAGAIN);
	assert_int_equal(placement_get(p, "cloud-a", &st), 0);
	assert_int_equal(c.retry_at_ms, st.backoff_until_ms);
	assert_non_null(strstr(err, "local-x: full (max_sandboxes 3/3); cloud-a: rate-limited"));
	/* A plain failure does not back off; a success clears the backoff. */
	assert_int_equal(placement_report(p, "cloud-b", PLACEMENT_FAILED, 0, t), 0);
	assert_int_equal(placement_report(p, "cloud-b", PLACEMENT_OK, 0, t), 0);
	assert_int_equal(placement_get(p, "cloud-b", &st), 0);
	assert_int_equal(st.rate_limited, 0);
	assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);
	assert_string_equal(c.name, "cloud-b");
	assert_int_equal(placement_report(p, "ghost", PLACEMENT_OK, 0, t), SP_ENOTFOUND);
	placement_free(p);
}

static void
test_circuit_breaker(void **state)
{
	struct placement_provider list[2] = { { "flaky", SP_CAP_LOCAL, 100 }, { "spare", 0, 100 } };
	struct placement_breaker_conf bc;
	struct placement_choice c;
	struct placement_state st;
	struct placement *p;
	char err[256];
	int64_t t = 1000;
	int i;

	(void)state;
	assert_int_equal(placement_new(list, 2, &p, NULL, 0), 0);
	assert_int_equal(placement_set_ready(p, "flaky", true), 0);
	assert_int_equal(placement_set_ready(p, "spare", true), 0);
	placement_breaker_default(&bc);
	bc.window = 10;
	bc.min_samples = 4;
	bc.threshold_pct = 50;
	bc.reset_ms = 5000;
	assert_int_equal(placement_set_breaker(p, &bc), 0);
	/* Three failures in three: not enough samples to judge yet. */
	for (i = 0; i < 3; i++)
		assert_int_equal(placement_report(p, "flaky", PLACEMENT_FAILED, 0, t), 0);
	assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);
	assert_string_equal(c.name, "flaky");
	assert_int_equal(placement_put(p, "flaky"), 0);
	/* Rate limits are backoff's business, not failures. */
	assert_int_equal(placement_report(p, "flaky", PLACEMENT_RATE_LIMITED, 0, t - 2000), 0);
	assert_int_equal(placement_get(p, "flaky", &st), 0);
	assert_int_equal(st.samples, 3);
	assert_int_equal(st.breaker, PLACEMENT_BREAKER_CLOSED);
	/* A fourth outcome, a success: 3 of 4 failed, past 50 %: the circuit opens. */
	assert_int_equal(placement_report(p, "flaky", PLACEMENT_OK, 0, t), 0);
	assert_int_equal(placement_get(p, "flaky", &st), 0);
	assert_int_equal(st.breaker, PLACEMENT_BREAKER_OPEN);
	assert_int_equal(st.failures, 3);
	/* auto bursts past it; by name it answers -EAGAIN until the reset. */
	assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);
	assert_string_equal(c.name, "spare");
	assert_true(c.burst);
	assert_int_equal(placement_take(p, "flaky", t + 1000, &c, err, sizeof(err)), -EAGAIN);
	assert_int_equal(c.retry_at_ms, t + 5000);
	assert_string_equal(err, "flaky: failing (circuit open for 4000 ms)");
	/* After the reset one trial goes through; others wait for its outcome. */
	t += 5000;
	assert_int_equal(placement_take(p, "flaky", t, &c, NULL, 0), 0);
	assert_int_equal(placement_get(p, "flaky", &st), 0);
	assert_int_equal(st.breaker, PLACEMENT_BREAKER_HALF_OPEN);
	assert_int_equal(placement_take(p, "flaky", t, &c, err, sizeof(err)), -EAGAIN);
	assert_string_equal(err, "flaky: failing (one trial start in progress)");
	assert_int_equal(placement_take(p, "auto", t, &c, NULL, 0), 0);
	assert_string_equal(c.name, "spare");
	/* The trial fails: open again for another reset period. */
	assert_int_equal(placement_report(p, "flaky", PLACEMENT_FAILED, 0, t), 0);
	assert_int_equal(placement_put(p, "flaky"), 0);
	assert_int_equal(placement_get(p, "flaky", &st), 0);
	assert_int_equal(st.breaker, PLACEMENT_BREAKER_OPEN);
	assert_int_equal(st.open_until_ms, t + 5000);
	/* A trial whose outcome never comes (put back unreported) expires and another runs. */
	t += 5000;
	assert_int_equal(placement_take(p, "flaky", t, &c, NULL, 0), 0);
	assert_int_equal(placement_put(p, "flaky"), 0);
	assert_int_equal(placement_take(p, "flaky", t + 4999, &c, NULL, 0), -EAGAIN);
	assert_int_equal(placement_take(p, "flaky", t + 5000, &c, NULL, 0), 0);
	/* This trial succeeds: closed, with a clean window. */
	assert_int_equal(placement_report(p, "flaky", PLACEMENT_OK, 0, t + 5000), 0);
	assert_int_equal(placement_get(p, "flaky", &st), 0);
	assert_int_equal(st.breaker, PLACEMENT_BREAKER_CLOSED);
	assert_int_equal(st.samples, 0);
	assert_int_equal(placement_take(p, "auto", t + 5000, &c, NULL, 0), 0);
	assert_string_equal(c.name, "flaky");
	/* Settings are checked. */
	bc.min_samples = 11;
	assert_int_equal(placement_set_breaker(p, &bc), SP_EINVAL);
	bc.min_samples = 4;
	bc.window = 65;
	assert_int_equal(placement_set_breaker(p, &bc), SP_EINVAL);
	bc.window = 10;
	bc.threshold_pct = 0;
	assert_int_equal(placement_set_breaker(p, &bc), SP_EINVAL);
	placement_free(p);
}

static void
test_put_and_reconfigure(void **state)
{
	struct placement_provider next[2] = {
		{ "local-x", SP_CAP_LOCAL, 1 },	/* capacity lowered */
		{ "cloud-c", 0, 4 },		/* new */
	};
	struct placement *p = mk_ready();
	struct placement_choice c;
	struct placement_state st;
	char err[128];

	(void)state;
	assert_int_equal(placement_put(p, "local-x"), SP_ECONFLICT);
	assert_int_equal(placement_put(p, "ghost"), SP_ENOTFOUND);
	/* Re-adoption counts even past capacity and while not ready. */
	assert_int_equal(placement_set_ready(p, "cloud-a", false), 0);
	for (int k = 0; k < 3; k++)
		assert_int_equal(placement_adopt(p, "cloud-a"), 0);
	assert_int_equal(placement_get(p, "cloud-a", &st), 0);
	assert_int_equal(st.in_use, 3);
	assert_int_equal(st.capacity, 2);
	assert_int_equal(placement_adopt(p, "ghost"), SP_ENOTFOUND);
	assert_int_equal(placement_set_ready(p, "cloud-a", true), 0);
	assert_int_equal(placement_take(p, "auto", 0, &c, NULL, 0), 0);
	assert_int_equal(placement_take(p, "auto", 0, &c, NULL, 0), 0);
	assert_int_equal(placement_report(p, "local-x", PLACEMENT_RATE_LIMITED, 0, 0), 0);
	/* A bad list keeps the old one. */
	next[1].capacity = 0;
	assert_int_equal(placement_configure(p, next, 2, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(placement_get(p, "cloud-a", &st), 0);
	next[1].capacity = 4;
	assert_int_equal(placement_configure(p, next, 2, err, sizeof(err)), 0);
	/* local-x keeps its count, readiness and backoff under the new capacity. */
	assert_int_equal(placement_get(p, "local-x", &st), 0);
	assert_int_equal(st.in_use, 2);
	assert_int_equal(st.capacity, 1);
	assert_true(st.ready);
	assert_int_equal(st.backoff_until_ms, 1000);
	assert_int_equal(placement_get(p, "cloud-a", &st), SP_ENOTFOUND);
	assert_int_equal(placement_get(p, "cloud-c", &st), 0);
	assert_false(st.ready);
	assert_int_equal(placement_take(p, "auto", 5000, &c, err, sizeof(err)), SP_ELIMIT);
	assert_string_equal(err, "local-x: full (max_sandboxes 2/1); cloud-c: not ready");
	placement_free(p);
}

/*
 * The order the coordinator uses: placement chooses (and counts), admission
 * reserves with local = the choice is not a burst, and a refusal puts the
 * placement back. With the host cap equal to the local capacity, auto
 * bursts instead of being refused by the host cap.
 */
static int
start_one(struct placement *pl, struct admission *adm, const char *tenant,
	  struct admission_ticket *t, char *where, size_t wlen)
{
	struct placement_choice c;
	int r;

	if ((r = placement_take(pl, "auto", 0, &c, NULL, 0)) < 0)
		return r;
	if ((r = admission_take(adm, tenant, !c.burst, t, NULL, NULL, 0)) < 0) {
		assert_int_equal(placement_put(pl, c.name), 0);
		return r;
	}
	snprintf(where, wlen, "%s", c.name);
	return 0;
}

static void
test_with_admission(void **state)
{
	struct placement_provider list[2] = { { "here", SP_CAP_LOCAL, 2 }, { "there", 0, 10 } };
	struct admission_limits lim = { 2, 5, 3, NULL, 0 };
	struct admission_ticket t[5] = { 0 };
	struct placement_state st;
	struct admission_counts c;
	struct admission *adm;
	struct placement *pl;
	char where[5][16];
	int i;

	(void)state;
	assert_int_equal(placement_new(list, 2, &pl, NULL, 0), 0);
	assert_int_equal(placement_set_ready(pl, "here", true), 0);
	assert_int_equal(placement_set_ready(pl, "there", true), 0);
	assert_int_equal(admission_new(&lim, &adm, NULL, 0), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(start_one(pl, adm, "acme", &t[i], where[i], sizeof(where[i])), 0);
	assert_string_equal(where[0], "here");
	assert_string_equal(where[1], "here");
	assert_string_equal(where[2], "there");	/* burst: the host cap did not refuse it */
	/* acme is at its tenant cap: refused, and the placement count is given back. */
	assert_int_equal(start_one(pl, adm, "acme", &t[3], where[3], sizeof(where[3])), SP_ELIMIT);
	assert_int_equal(placement_get(pl, "there", &st), 0);
	assert_int_equal(st.in_use, 1);
	assert_int_equal(start_one(pl, adm, "other", &t[4], where[4], sizeof(where[4])), 0);
	assert_string_equal(where[4], "there");
	admission_counts(adm, NULL, &c);
	assert_int_equal(c.starting, 2);
	assert_int_equal(c.remote, 2);
	for (i = 0; i < 5; i++)
		admission_release(adm, &t[i]);
	admission_free(adm);
	placement_free(pl);
}

/* ---- the burst path through fake providers on a loop ---- */

struct fake {
	struct sp_provider p;
	struct sp_provider_ops ops;
	int creates;
	int rate_limit_first;		/* answer the first N creates "rate limited" */
	uv_loop_t *loop;
};

struct fake_create {
	uv_timer_t timer;
	struct fake *f;
	sp_create_cb cb;
	void *arg;
	int status;
};

static void
fake_create_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
fake_create_fire(uv_timer_t *t)
{
	struct fake_create *fc = t->data;

	/* -EBUSY is how these fakes say 429; the caller maps it to PLACEMENT_RATE_LIMITED. */
	fc->cb(fc->arg, fc->status, fc->status == 0 ? "ref-1" : NULL,
	       fc->status == 0 ? NULL : "rate limited");
	uv_close((uv_handle_t *)&fc->timer, fake_create_closed);
}

static int
fake_create(struct sp_provider *p, const struct sp_sandbox_spec *spec, sp_create_cb cb,
	    void *arg)
{
	struct fake *f = (struct fake *)p;
	struct fake_create *fc = calloc(1, sizeof(*fc));

	(void)spec;
	assert_non_null(fc);
	fc->f = f;
	fc->cb = cb;
	fc->arg = arg;
	fc->status = f->creates++ < f->rate_limit_first ? -EBUSY : 0;
	uv_timer_init(f->loop, &fc->timer);
	fc->timer.data = fc;
	/* Never inside the call, as the seam requires. */
	uv_timer_start(&fc->timer, fake_create_fire, 0, 0);
	return 0;
}

struct job {
	struct placement *pl;
	struct fake **fakes;
	size_t nfakes;
	int64_t now;
	char placed_on[16];
	int tries;
	bool done;
};

static void job_try(struct job *j);

static void
job_created(void *arg, int status, const char *ref, const char *detail)
{
	struct job *j = arg;

	(void)ref;
	(void)detail;
	if (status == 0) {
		assert_int_equal(placement_report(j->pl, j->placed_on, PLACEMENT_OK, 0, j->now), 0);
		j->done = true;
		return;
	}
	assert_int_equal(status, -EBUSY);
	assert_int_equal(placement_report(j->pl, j->placed_on, PLACEMENT_RATE_LIMITED, 0, j->now),
			 0);
	assert_int_equal(placement_put(j->pl, j->placed_on), 0);
	job_try(j);
}

static void
job_try(struct job *j)
{
	struct placement_choice c;
	struct sp_sandbox_spec spec = { .id = "sb-000000000001", .tenant = "acme" };
	struct fake *f;

	j->tries++;
	assert_int_equal(placement_take(j->pl, "auto", j->now, &c, NULL, 0), 0);
	snprintf(j->placed_on, sizeof(j->placed_on), "%s", c.name);
	f = j->fakes[c.index];
	assert_string_equal(f->ops.name, c.name);
	assert_int_equal(f->ops.create(&f->p, &spec, job_created, j), 0);
}

static void
test_loop_burst_through_fake_providers(void **state)
{
	struct fake local = { 0 }, cloud1 = { 0 }, cloud2 = { 0 };
	struct fake *fakes[3] = { &cloud1, &local, &cloud2 };
	struct placement_provider list[3];
	struct job jobs[6];
	struct placement *pl;
	struct placement_state st;
	uv_loop_t loop;
	size_t i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	local.ops = (struct sp_provider_ops){ .name = "fake-local", .caps = SP_CAP_LOCAL,
					      .create = fake_create };
	cloud1.ops = (struct sp_provider_ops){ .name = "fake-cloud1", .create = fake_create };
	cloud2.ops = (struct sp_provider_ops){ .name = "fake-cloud2", .create = fake_create };
	cloud1.rate_limit_first = 1;
	for (i = 0; i < 3; i++) {
		fakes[i]->p.ops = &fakes[i]->ops;
		fakes[i]->loop = &loop;
		/* The list is built from the vtables, as the composition root would. */
		list[i] = (struct placement_provider){ fakes[i]->ops.name, fakes[i]->ops.caps,
						       i == 1 ? 2 : 10 };
	}
	assert_int_equal(placement_new(list, 3, &pl, NULL, 0), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(placement_set_ready(pl, list[i].name, true), 0);
	memset(jobs, 0, sizeof(jobs));
	/* All six asked for at once: 2 local, then cloud1 (first answer: rate limited). */
	for (i = 0; i < 6; i++) {
		jobs[i] = (struct job){ .pl = pl, .fakes = fakes, .nfakes = 3, .now = 50000 };
		job_try(&jobs[i]);
	}
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 6; i++)
		assert_true(jobs[i].done);
	assert_int_equal(local.creates, 2);
	/* cloud1 was asked 4 times at once and refused only the first. */
	assert_int_equal(cloud1.creates, 4);
	/* The refused one burst on to cloud2, since cloud1 was backing off. */
	assert_int_equal(cloud2.creates, 1);
	assert_int_equal(jobs[2].tries, 2);
	assert_string_equal(jobs[2].placed_on, "fake-cloud2");
	assert_int_equal(placement_get(pl, "fake-cloud1", &st), 0);
	assert_int_equal(st.in_use, 3);
	/* Later successes cleared the rate-limit run. */
	assert_int_equal(st.rate_limited, 0);
	assert_int_equal(placement_get(pl, "fake-local", &st), 0);
	assert_int_equal(st.in_use, 2);
	placement_free(pl);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_checked),
		cmocka_unit_test(test_auto_local_first_then_burst),
		cmocka_unit_test(test_named_policy),
		cmocka_unit_test(test_nothing_ready),
		cmocka_unit_test(test_rate_limit_backoff),
		cmocka_unit_test(test_circuit_breaker),
		cmocka_unit_test(test_put_and_reconfigure),
		cmocka_unit_test(test_with_admission),
		cmocka_unit_test(test_loop_burst_through_fake_providers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

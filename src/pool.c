/*
 * pool: the warm pool of pre-started sandboxes with connected workers. It
 * owns the pooled sandboxes until a claim hands one to a tenant, and their
 * counters; it starts and destroys sandboxes only through the sandbox
 * manager and never looks inside them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "pool.h"
#include "xmalloc.h"

#define POOL_TICK_MS		200
#define POOL_READY_MS		60000	/* a pooled sandbox whose worker never comes is dropped */

enum pstate { P_STARTING, P_WAITING, P_IDLE };

struct pstart;

struct pentry {
	struct pentry *next;
	char id[SANDBOX_ID_LEN + 1];
	enum pstate state;
	struct pstart *ps;		/* while starting */
	uint64_t since;			/* loop ms when it entered its state */
};

struct pool {
	uv_loop_t *loop;
	struct store *store;
	struct sandbox_mgr *mgr;
	struct workers *workers;
	const struct config *const *cfg;
	struct pentry *entries;		/* starting and waiting ones */
	struct pentry *idle, **idle_tail;	/* FIFO: the oldest is claimed first */
	unsigned nidle, nstarting;
	bool swept, stopping;
	uv_timer_t tick;
	uint64_t hits, misses;
	uint64_t warm_ns, cold_ns;	/* sums, for the mean */
	uint64_t warm_max_ns, cold_max_ns;
	void (*close_cb)(void *arg);
	void *close_arg;
};

struct pstart {
	struct pool *p;
	struct pentry *e;
	bool dropped;
};

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
ignore(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	(void)arg, (void)status, (void)row, (void)detail;
}

static void
destroy(struct pool *p, const char *id)
{
	char err[256];

	(void)sandbox_destroy(p->mgr, POOL_TENANT, id, ignore, NULL, err, sizeof(err));
}

static void
unlink_entry(struct pool *p, struct pentry *e)
{
	for (struct pentry **pp = &p->entries; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			return;
		}
}

static void
started(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct pstart *ps = arg;
	struct pool *p = ps->p;
	struct pentry *e = ps->e;

	(void)detail;
	free(ps);
	if (p == NULL)
		return;		/* the pool closed; the entry is gone */
	e->ps = NULL;
	p->nstarting--;
	if (status < 0 || row == NULL || p->stopping) {
		unlink_entry(p, e);
		if (status == 0 && row != NULL)
			destroy(p, row->id);
		free(e);
		return;
	}
	snprintf(e->id, sizeof(e->id), "%s", row->id);
	e->state = P_WAITING;
	e->since = uv_now(p->loop);
}

static void
start_one(struct pool *p)
{
	struct pstart *ps = xcalloc(1, sizeof(*ps));
	struct pentry *e = xcalloc(1, sizeof(*e));
	json_t *spec = json_object();
	char err[256];
	int r;

	ps->p = p;
	ps->e = e;
	e->state = P_STARTING;
	e->since = uv_now(p->loop);
	r = sandbox_create(p->mgr, POOL_TENANT, spec, started, ps, err, sizeof(err));
	json_decref(spec);
	if (r < 0) {
		free(ps);
		free(e);
		return;
	}
	e->ps = ps;
	e->next = p->entries;
	p->entries = e;
	p->nstarting++;
}

static bool
row_running(struct pool *p, const char *id)
{
	struct sandbox_row row;
	bool ok;

	if (sandbox_get(p->mgr, POOL_TENANT, id, &row) < 0)
		return false;
	ok = strcmp(row.state, "running") == 0;
	store_sandbox_row_done(&row);
	return ok;
}

/* Pooled sandboxes of an earlier run: destroyed, since their pool state is gone. */
static void
sweep_old(struct pool *p)
{
	struct sandbox_row *rows;
	size_t n;

	if (sandbox_list(p->mgr, POOL_TENANT, false, &rows, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (strcmp(rows[i].state, "destroyed") != 0)
			destroy(p, rows[i].id);
	store_sandbox_rows_free(rows, n);
	p->swept = true;
}

static unsigned
entries(const struct pool *p)
{
	unsigned n = 0;

	for (const struct pentry *e = p->entries; e != NULL; e = e->next)
		n++;
	return n;
}

static void
tick(uv_timer_t *t)
{
	struct pool *p = t->data;
	struct pentry *e, *next, **pp;
	uint64_t now = uv_now(p->loop);
	unsigned want = (*p->cfg)->pool_size;
	struct sp_provider *const *provs;

	if (p->stopping)
		return;
	if (sandbox_mgr_providers(p->mgr, &provs) == 0 ||
	    !sandbox_mgr_provider_ready(p->mgr, provs[0], NULL))
		return;
	if (!p->swept)
		sweep_old(p);
	for (e = p->entries; e != NULL; e = next) {
		next = e->next;
		if (e->state != P_WAITING)
			continue;
		if (!row_running(p, e->id) || now - e->since > POOL_READY_MS) {
			unlink_entry(p, e);
			destroy(p, e->id);
			free(e);
		} else if (workers_connected(p->workers, e->id)) {
			unlink_entry(p, e);
			e->next = NULL;
			e->state = P_IDLE;
			*p->idle_tail = e;
			p->idle_tail = &e->next;
			p->nidle++;
		}
	}
	/* Idle ones whose sandbox went away. */
	for (pp = &p->idle; *pp != NULL;) {
		e = *pp;
		if (!row_running(p, e->id)) {
			*pp = e->next;
			p->nidle--;
			free(e);
		} else {
			pp = &e->next;
		}
	}
	/* pool_size lowered (SIGHUP): the oldest idle ones go. */
	while (p->nidle > want && p->idle != NULL) {
		e = p->idle;
		p->idle = e->next;
		p->nidle--;
		destroy(p, e->id);
		free(e);
	}
	p->idle_tail = &p->idle;
	while (*p->idle_tail != NULL)
		p->idle_tail = &(*p->idle_tail)->next;
	/* Refill, a few at a time so swarms' cold starts are not starved. */
	for (unsigned i = 0; i < 4 && p->nidle + entries(p) < want; i++)
		start_one(p);
}

int
pool_new(uv_loop_t *loop, struct store *store, struct sandbox_mgr *mgr, struct workers *workers,
	 const struct config *const *cfg, struct pool **ret)
{
	struct pool *p = xcalloc(1, sizeof(*p));

	p->loop = loop;
	p->store = store;
	p->mgr = mgr;
	p->workers = workers;
	p->cfg = cfg;
	p->idle_tail = &p->idle;
	uv_timer_init(loop, &p->tick);
	p->tick.data = p;
	*ret = p;
	return 0;
}

void
pool_start(struct pool *p)
{
	uv_timer_start(&p->tick, tick, POOL_TICK_MS, POOL_TICK_MS);
}

void
pool_stop(struct pool *p)
{
	p->stopping = true;
	uv_timer_stop(&p->tick);
}

static void
closed(uv_handle_t *h)
{
	struct pool *p = h->data;
	struct pentry *e, *next;

	for (e = p->entries; e != NULL; e = next) {
		next = e->next;
		if (e->ps != NULL)
			e->ps->p = NULL;
		free(e);
	}
	for (e = p->idle; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	if (p->close_cb != NULL)
		p->close_cb(p->close_arg);
	free(p);
}

void
pool_close(struct pool *p, void (*cb)(void *arg), void *arg)
{
	pool_stop(p);
	p->close_cb = cb;
	p->close_arg = arg;
	uv_close((uv_handle_t *)&p->tick, closed);
}

bool
pool_serves(const struct pool *p, json_t *tmpl)
{
	return p != NULL && (*p->cfg)->pool_size > 0 && json_object_size(tmpl) == 0;
}

int
pool_claim(struct pool *p, const char *tenant, char *ret)
{
	uint64_t t0 = mono_ns(), dt;
	struct pentry *e = p->idle;
	char err[256];
	int r;

	if (e == NULL || p->stopping) {
		p->misses++;
		return -EAGAIN;
	}
	/* The row and its admission count first (the tenant's cap), then the tokens. */
	r = sandbox_rebind(p->mgr, e->id, POOL_TENANT, tenant, err, sizeof(err));
	if (r == SP_ELIMIT) {
		/* The tenant is full: the sandbox stays pooled for someone else. */
		p->misses++;
		return r;
	}
	p->idle = e->next;
	if (p->idle == NULL)
		p->idle_tail = &p->idle;
	p->nidle--;
	if (r == 0)
		r = workers_rebind(p->workers, e->id, tenant);
	if (r < 0) {
		/* Whoever owns the row now, it is not a pool sandbox any more. */
		(void)sandbox_destroy(p->mgr, tenant, e->id, ignore, NULL, err, sizeof(err));
		destroy(p, e->id);
		free(e);
		p->misses++;
		return r;
	}
	memcpy(ret, e->id, SANDBOX_ID_LEN + 1);
	free(e);
	p->hits++;
	dt = mono_ns() - t0;
	p->warm_ns += dt;
	if (dt > p->warm_max_ns)
		p->warm_max_ns = dt;
	return 0;
}

void
pool_cold(struct pool *p, uint64_t ns)
{
	p->cold_ns += ns;
	if (ns > p->cold_max_ns)
		p->cold_max_ns = ns;
}

bool
pool_has(const struct pool *p, const char *id)
{
	for (const struct pentry *e = p->idle; e != NULL; e = e->next)
		if (strcmp(e->id, id) == 0)
			return true;
	for (const struct pentry *e = p->entries; e != NULL; e = e->next)
		if (strcmp(e->id, id) == 0)
			return true;
	return false;
}

void
pool_metrics(struct pool *p, FILE *f)
{
	fprintf(f, "# HELP sandpit_pool_claims_total Agent starts served warm (hit) or cold (miss).\n"
		   "# TYPE sandpit_pool_claims_total counter\n"
		   "sandpit_pool_claims_total{result=\"hit\"} %llu\n"
		   "sandpit_pool_claims_total{result=\"miss\"} %llu\n"
		   "# HELP sandpit_pool_claim_seconds Time to an agent: warm claim, or cold start to worker registered.\n"
		   "# TYPE sandpit_pool_claim_seconds summary\n"
		   "sandpit_pool_claim_seconds_sum{kind=\"warm\"} %.6f\n"
		   "sandpit_pool_claim_seconds_count{kind=\"warm\"} %llu\n"
		   "sandpit_pool_claim_seconds_max{kind=\"warm\"} %.6f\n"
		   "sandpit_pool_claim_seconds_sum{kind=\"cold\"} %.6f\n"
		   "sandpit_pool_claim_seconds_count{kind=\"cold\"} %llu\n"
		   "sandpit_pool_claim_seconds_max{kind=\"cold\"} %.6f\n"
		   "# HELP sandpit_pool_sandboxes Pooled sandboxes, idle or starting.\n"
		   "# TYPE sandpit_pool_sandboxes gauge\n"
		   "sandpit_pool_sandboxes{state=\"idle\"} %u\n"
		   "sandpit_pool_sandboxes{state=\"starting\"} %u\n",
		(unsigned long long)p->hits, (unsigned long long)p->misses,
		(double)p->warm_ns / 1e9, (unsigned long long)p->hits, (double)p->warm_max_ns / 1e9,
		(double)p->cold_ns / 1e9, (unsigned long long)p->misses,
		(double)p->cold_max_ns / 1e9, p->nidle, entries(p));
}

json_t *
pool_stats_json(struct pool *p)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:f, s:f}", "size", (json_int_t)(*p->cfg)->pool_size,
			 "idle", (json_int_t)p->nidle, "hits", (json_int_t)p->hits, "misses",
			 (json_int_t)p->misses, "warm_mean_ms", p->hits ?
			 (double)p->warm_ns / 1e6 / (double)p->hits : 0.0, "warm_max_ms",
			 (double)p->warm_max_ns / 1e6);
}

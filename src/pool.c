/*
 * pool: the warm pools of pre-started sandboxes with connected workers, one
 * per configured template. It owns the pooled sandboxes until a claim hands
 * one to a tenant, and their counters; it starts and destroys sandboxes only
 * through the sandbox manager and never looks inside them.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "pool.h"
#include "xmalloc.h"

#define POOL_TICK_MS		200
#define POOL_READY_MS		60000	/* a pooled sandbox whose worker never comes is dropped */
#define POOL_STARTS_PER_TICK	4	/* over every pool: swarms' cold starts are not starved */

enum pstate { P_STARTING, P_WAITING, P_IDLE };

struct pstart;
struct ppool;

struct pentry {
	struct pentry *next;
	char id[SANDBOX_ID_LEN + 1];
	enum pstate state;
	struct pstart *ps;		/* while starting */
	struct ppool *pp;		/* NULL once dropped (its pool's template changed) */
	uint64_t since;			/* loop ms when it entered its state */
};

/* One template's pool; kept while configured or while it still has sandboxes. */
struct ppool {
	struct ppool *next;
	char name[CONFIG_POOL_NAME_MAX + 1];
	char key[POOL_KEY_MAX];		/* pool_key() of spec; "" when the template is invalid */
	json_t *spec;			/* what sandbox_create() gets */
	unsigned want;			/* 0 when not configured (any more) */
	bool configured;
	struct pentry *entries;		/* starting and waiting ones */
	struct pentry *idle, **idle_tail;	/* FIFO: the oldest is claimed first */
	unsigned nidle, nstarting;
	uint64_t hits, misses, ncold;
	uint64_t warm_ns, cold_ns, warm_max_ns, cold_max_ns;
};

struct pool {
	uv_loop_t *loop;
	struct store *store;
	struct sandbox_mgr *mgr;
	struct workers *workers;	/* NULL in unit tests: a started sandbox counts as connected */
	const struct config *const *cfg;
	struct ppool *pools;		/* "default" (pool_size) first, then the config's order */
	struct pentry *dropped;		/* starts in flight whose pool no longer wants them */
	bool swept, stopping;
	uv_timer_t tick;
	/* Over every pool, kept when a pool goes (counters must not decrease). */
	uint64_t hits, misses;
	uint64_t warm_ns, cold_ns;	/* sums, for the mean */
	uint64_t warm_max_ns, cold_max_ns;
	void (*close_cb)(void *arg);
	void *close_arg;
};

struct pstart {
	struct pool *p;			/* NULL once the pool closed (the entry is gone) */
	struct pentry *e;
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
unlink_from(struct pentry **head, struct pentry *e)
{
	for (struct pentry **pp = head; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			return;
		}
}

static unsigned
entries(const struct ppool *pp)
{
	unsigned n = 0;

	for (const struct pentry *e = pp->entries; e != NULL; e = e->next)
		n++;
	return n;
}

int
pool_key(const struct config *c, json_t *tmpl, char *buf, size_t len)
{
	const char *provider = c->default_provider, *image = c->worker_image, *k;
	int64_t ncpu = c->sandbox_cpus, memory = c->sandbox_memory, pids = c->sandbox_pids;
	int64_t nofile = c->sandbox_nofile, tmp = c->sandbox_tmp, work = c->sandbox_work, *size;
	json_t *v;
	int n;

	if (tmpl != NULL && !json_is_object(tmpl))
		return SP_EINVAL;
	json_object_foreach(tmpl, k, v) {
		if (strcmp(k, "provider") == 0 && json_is_string(v)) {
			provider = json_string_value(v);
		} else if (strcmp(k, "image") == 0 && json_is_string(v)) {
			image = json_string_value(v);
		} else if (strcmp(k, "cpus") == 0 && json_is_number(v) &&
			   json_number_value(v) > 0 && json_number_value(v) <= 1e9) {
			/* The sandbox manager's rounding: cpus -> nano-CPUs. */
			ncpu = llround(json_number_value(v) * 1e9);
		} else if (strcmp(k, "pids") == 0 && json_is_integer(v)) {
			pids = json_integer_value(v);
		} else if (strcmp(k, "nofile") == 0 && json_is_integer(v)) {
			nofile = json_integer_value(v);
		} else {
			if (strcmp(k, "memory") == 0)
				size = &memory;
			else if (strcmp(k, "tmp") == 0)
				size = &tmp;
			else if (strcmp(k, "work") == 0)
				size = &work;
			else
				return SP_EINVAL;	/* unknown, or a known field of the wrong type */
			/* Sizes as the sandbox manager reads them: bytes, or "512m". */
			if (json_is_integer(v))
				*size = json_integer_value(v);
			else if (!json_is_string(v) ||
				 config_parse_size(json_string_value(v), size) < 0)
				return SP_EINVAL;
		}
	}
	n = snprintf(buf, len, "provider=%s image=%s cpus=%lld memory=%lld pids=%lld nofile=%lld"
		     " tmp=%lld work=%lld", provider, image, (long long)ncpu, (long long)memory,
		     (long long)pids, (long long)nofile, (long long)tmp, (long long)work);
	return n > 0 && (size_t)n < len ? 0 : SP_EINVAL;
}

/* Every sandbox of pp goes: idle ones destroyed, starts in flight dropped. */
static void
drain(struct pool *p, struct ppool *pp)
{
	struct pentry *e, *next;

	for (e = pp->idle; e != NULL; e = next) {
		next = e->next;
		destroy(p, e->id);
		free(e);
	}
	pp->idle = NULL;
	pp->idle_tail = &pp->idle;
	pp->nidle = 0;
	for (e = pp->entries; e != NULL; e = next) {
		next = e->next;
		if (e->state == P_STARTING) {
			e->pp = NULL;
			e->next = p->dropped;
			p->dropped = e;
			continue;
		}
		destroy(p, e->id);
		free(e);
	}
	pp->entries = NULL;
	pp->nstarting = 0;
}

static struct ppool *
ppool_get(struct pool *p, const char *name)
{
	struct ppool **tail = &p->pools, *pp;

	for (; *tail != NULL; tail = &(*tail)->next)
		if (strcmp((*tail)->name, name) == 0)
			return *tail;
	pp = xcalloc(1, sizeof(*pp));
	snprintf(pp->name, sizeof(pp->name), "%s", name);
	pp->idle_tail = &pp->idle;
	*tail = pp;
	return pp;
}

/* Pool name as the configuration now says: its template and size. */
static void
ppool_set(struct pool *p, const char *name, unsigned size, const char *spec_text)
{
	struct ppool *pp = ppool_get(p, name);
	json_t *spec = json_loads(spec_text, 0, NULL);
	char key[POOL_KEY_MAX];

	if (spec == NULL || pool_key(*p->cfg, spec, key, sizeof(key)) < 0)
		key[0] = '\0';
	pp->configured = true;
	/* A new template (or new defaults under it): what the pool holds is stale. */
	if (pp->spec != NULL && (strcmp(pp->key, key) != 0 || !json_equal(pp->spec, spec)))
		drain(p, pp);
	json_decref(pp->spec);
	pp->spec = spec != NULL ? spec : json_object();
	snprintf(pp->key, sizeof(pp->key), "%s", key);
	pp->want = key[0] != '\0' ? size : 0;
}

/* Follow the configuration in force (SIGHUP swaps it). */
static void
sync_config(struct pool *p)
{
	const struct config *c = *p->cfg;
	struct ppool *pp;

	for (pp = p->pools; pp != NULL; pp = pp->next)
		pp->configured = false;
	ppool_set(p, "default", c->pool_size, "{}");
	for (size_t i = 0; i < c->npools; i++)
		ppool_set(p, c->pools[i].name, c->pools[i].size, c->pools[i].spec);
	for (pp = p->pools; pp != NULL; pp = pp->next)
		if (!pp->configured)
			pp->want = 0;
}

static void
ppool_free(struct ppool *pp)
{
	struct pentry *e, *next;

	for (e = pp->entries; e != NULL; e = next) {
		next = e->next;
		if (e->ps != NULL)
			e->ps->p = NULL;
		free(e);
	}
	for (e = pp->idle; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	json_decref(pp->spec);
	free(pp);
}

static void
started(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct pstart *ps = arg;
	struct pool *p = ps->p;
	struct pentry *e = ps->e;
	struct ppool *pp;

	(void)detail;
	free(ps);
	if (p == NULL)
		return;		/* the pool closed; the entry is gone */
	e->ps = NULL;
	if ((pp = e->pp) == NULL) {
		unlink_from(&p->dropped, e);
		if (status == 0 && row != NULL)
			destroy(p, row->id);
		free(e);
		return;
	}
	pp->nstarting--;
	if (status < 0 || row == NULL || p->stopping) {
		unlink_from(&pp->entries, e);
		if (status == 0 && row != NULL)
			destroy(p, row->id);
		free(e);
		return;
	}
	snprintf(e->id, sizeof(e->id), "%s", row->id);
	e->state = P_WAITING;
	e->since = uv_now(p->loop);
}

static int
start_one(struct pool *p, struct ppool *pp)
{
	struct pstart *ps = xcalloc(1, sizeof(*ps));
	struct pentry *e = xcalloc(1, sizeof(*e));
	char err[256];
	int r;

	ps->p = p;
	ps->e = e;
	e->pp = pp;
	e->state = P_STARTING;
	e->since = uv_now(p->loop);
	r = sandbox_create(p->mgr, POOL_TENANT, pp->spec, started, ps, err, sizeof(err));
	if (r < 0) {
		free(ps);
		free(e);
		return r;
	}
	e->ps = ps;
	e->next = pp->entries;
	pp->entries = e;
	pp->nstarting++;
	return 0;
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

/* Waiting ones whose worker came become idle; dead and surplus ones go. */
static void
ppool_tend(struct pool *p, struct ppool *pp, uint64_t now)
{
	struct pentry *e, *next, **ep;

	for (e = pp->entries; e != NULL; e = next) {
		next = e->next;
		if (e->state != P_WAITING)
			continue;
		if (!row_running(p, e->id) || now - e->since > POOL_READY_MS) {
			unlink_from(&pp->entries, e);
			destroy(p, e->id);
			free(e);
		} else if (p->workers == NULL || workers_connected(p->workers, e->id)) {
			unlink_from(&pp->entries, e);
			e->next = NULL;
			e->state = P_IDLE;
			*pp->idle_tail = e;
			pp->idle_tail = &e->next;
			pp->nidle++;
		}
	}
	/* Idle ones whose sandbox went away. */
	for (ep = &pp->idle; *ep != NULL;) {
		e = *ep;
		if (!row_running(p, e->id)) {
			*ep = e->next;
			pp->nidle--;
			free(e);
		} else {
			ep = &e->next;
		}
	}
	/* Size lowered or pool gone (SIGHUP): the oldest idle ones go. */
	while (pp->nidle > pp->want && pp->idle != NULL) {
		e = pp->idle;
		pp->idle = e->next;
		pp->nidle--;
		destroy(p, e->id);
		free(e);
	}
	pp->idle_tail = &pp->idle;
	while (*pp->idle_tail != NULL)
		pp->idle_tail = &(*pp->idle_tail)->next;
}

static void
tick(uv_timer_t *t)
{
	struct pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct sp_provider *const *provs;
	struct ppool **link, *pp;
	unsigned budget = POOL_STARTS_PER_TICK;

	if (p->stopping)
		return;
	sync_config(p);
	if (sandbox_mgr_providers(p->mgr, &provs) == 0 ||
	    !sandbox_mgr_provider_ready(p->mgr, provs[0], NULL))
		return;
	if (!p->swept)
		sweep_old(p);
	for (pp = p->pools; pp != NULL; pp = pp->next)
		ppool_tend(p, pp, now);
	/* Refill in order: a pool whose creates are refused waits for the next tick. */
	for (pp = p->pools; pp != NULL; pp = pp->next)
		while (budget > 0 && pp->nidle + entries(pp) < pp->want) {
			budget--;
			if (start_one(p, pp) < 0)
				break;
		}
	/* Pools no longer configured go once empty (their counters with them). */
	for (link = &p->pools; (pp = *link) != NULL;) {
		if (!pp->configured && pp->entries == NULL && pp->idle == NULL) {
			*link = pp->next;
			ppool_free(pp);
		} else {
			link = &pp->next;
		}
	}
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
	uv_timer_init(loop, &p->tick);
	p->tick.data = p;
	sync_config(p);
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
	struct ppool *pp, *pnext;

	for (pp = p->pools; pp != NULL; pp = pnext) {
		pnext = pp->next;
		ppool_free(pp);
	}
	for (e = p->dropped; e != NULL; e = next) {
		next = e->next;
		if (e->ps != NULL)
			e->ps->p = NULL;
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

/* The first pool (in order) holding tmpl's template that wants sandboxes, or NULL. */
static struct ppool *
match(const struct pool *p, json_t *tmpl, bool any_size)
{
	char key[POOL_KEY_MAX];

	if (p == NULL || pool_key(*p->cfg, tmpl, key, sizeof(key)) < 0)
		return NULL;
	for (struct ppool *pp = p->pools; pp != NULL; pp = pp->next)
		if ((pp->want > 0 || (any_size && pp->configured)) && pp->key[0] != '\0' &&
		    strcmp(pp->key, key) == 0)
			return pp;
	return NULL;
}

bool
pool_serves(const struct pool *p, json_t *tmpl)
{
	return match(p, tmpl, false) != NULL;
}

int
pool_claim(struct pool *p, json_t *tmpl, const char *tenant, char *ret)
{
	uint64_t t0 = mono_ns(), dt;
	struct ppool *first = match(p, tmpl, false), *pp;
	struct pentry *e = NULL;
	char err[256];
	int r;

	if (first == NULL)
		return -ENOENT;
	/* Pools of the same template serve together, the first one first. */
	for (pp = first; pp != NULL && !p->stopping; pp = pp->next)
		if (pp->want > 0 && pp->idle != NULL && strcmp(pp->key, first->key) == 0) {
			e = pp->idle;
			break;
		}
	if (e == NULL) {
		first->misses++;
		p->misses++;
		return -EAGAIN;
	}
	/* The row and its admission count first (the tenant's cap), then the tokens. */
	r = sandbox_rebind(p->mgr, e->id, POOL_TENANT, tenant, err, sizeof(err));
	if (r == SP_ELIMIT) {
		/* The tenant is full: the sandbox stays pooled for someone else. */
		first->misses++;
		p->misses++;
		return r;
	}
	pp->idle = e->next;
	if (pp->idle == NULL)
		pp->idle_tail = &pp->idle;
	pp->nidle--;
	if (r == 0 && p->workers != NULL)
		r = workers_rebind(p->workers, e->id, tenant);
	if (r < 0) {
		/* Whoever owns the row now, it is not a pool sandbox any more. */
		(void)sandbox_destroy(p->mgr, tenant, e->id, ignore, NULL, err, sizeof(err));
		destroy(p, e->id);
		free(e);
		pp->misses++;
		p->misses++;
		return r;
	}
	memcpy(ret, e->id, SANDBOX_ID_LEN + 1);
	free(e);
	dt = mono_ns() - t0;
	pp->hits++;
	pp->warm_ns += dt;
	if (dt > pp->warm_max_ns)
		pp->warm_max_ns = dt;
	p->hits++;
	p->warm_ns += dt;
	if (dt > p->warm_max_ns)
		p->warm_max_ns = dt;
	return 0;
}

void
pool_cold(struct pool *p, json_t *tmpl, uint64_t ns)
{
	struct ppool *pp = match(p, tmpl, true);

	p->cold_ns += ns;
	if (ns > p->cold_max_ns)
		p->cold_max_ns = ns;
	if (pp == NULL)
		return;
	pp->ncold++;
	pp->cold_ns += ns;
	if (ns > pp->cold_max_ns)
		pp->cold_max_ns = ns;
}

bool
pool_has(const struct pool *p, const char *id)
{
	for (const struct ppool *pp = p->pools; pp != NULL; pp = pp->next) {
		for (const struct pentry *e = pp->idle; e != NULL; e = e->next)
			if (strcmp(e->id, id) == 0)
				return true;
		for (const struct pentry *e = pp->entries; e != NULL; e = e->next)
			if (strcmp(e->id, id) == 0)
				return true;
	}
	return false;
}

void
pool_metrics(struct pool *p, FILE *f)
{
	unsigned idle = 0, starting = 0;
	const struct ppool *pp;

	for (pp = p->pools; pp != NULL; pp = pp->next) {
		idle += pp->nidle;
		starting += entries(pp);
	}
	/* Over every pool, as before pools were per template (scripts read these). */
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
		(double)p->cold_max_ns / 1e9, idle, starting);
	/* The same, labelled by pool (a pool's series go when it is unconfigured and empty). */
	fprintf(f, "# HELP sandpit_pool_template_claims_total Claims of swarm agents from one template's pool: hit, or miss (empty).\n"
		   "# TYPE sandpit_pool_template_claims_total counter\n");
	for (pp = p->pools; pp != NULL; pp = pp->next)
		fprintf(f, "sandpit_pool_template_claims_total{pool=\"%s\",result=\"hit\"} %llu\n"
			   "sandpit_pool_template_claims_total{pool=\"%s\",result=\"miss\"} %llu\n",
			pp->name, (unsigned long long)pp->hits, pp->name,
			(unsigned long long)pp->misses);
	fprintf(f, "# HELP sandpit_pool_template_claim_seconds Time to an agent of one template's pool: warm claim, or cold start to worker registered.\n"
		   "# TYPE sandpit_pool_template_claim_seconds summary\n");
	for (pp = p->pools; pp != NULL; pp = pp->next)
		fprintf(f, "sandpit_pool_template_claim_seconds_sum{pool=\"%s\",kind=\"warm\"} %.6f\n"
			   "sandpit_pool_template_claim_seconds_count{pool=\"%s\",kind=\"warm\"} %llu\n"
			   "sandpit_pool_template_claim_seconds_max{pool=\"%s\",kind=\"warm\"} %.6f\n"
			   "sandpit_pool_template_claim_seconds_sum{pool=\"%s\",kind=\"cold\"} %.6f\n"
			   "sandpit_pool_template_claim_seconds_count{pool=\"%s\",kind=\"cold\"} %llu\n"
			   "sandpit_pool_template_claim_seconds_max{pool=\"%s\",kind=\"cold\"} %.6f\n",
			pp->name, (double)pp->warm_ns / 1e9, pp->name, (unsigned long long)pp->hits,
			pp->name, (double)pp->warm_max_ns / 1e9, pp->name, (double)pp->cold_ns / 1e9,
			pp->name, (unsigned long long)pp->ncold, pp->name,
			(double)pp->cold_max_ns / 1e9);
	fprintf(f, "# HELP sandpit_pool_template_sandboxes One template's pooled sandboxes, idle or starting, and the size wanted.\n"
		   "# TYPE sandpit_pool_template_sandboxes gauge\n");
	for (pp = p->pools; pp != NULL; pp = pp->next)
		fprintf(f, "sandpit_pool_template_sandboxes{pool=\"%s\",state=\"idle\"} %u\n"
			   "sandpit_pool_template_sandboxes{pool=\"%s\",state=\"starting\"} %u\n"
			   "sandpit_pool_template_sandboxes{pool=\"%s\",state=\"wanted\"} %u\n",
			pp->name, pp->nidle, pp->name, entries(pp), pp->name, pp->want);
}

json_t *
pool_stats_json(struct pool *p)
{
	json_t *pools = json_array();
	unsigned idle = 0;

	for (const struct ppool *pp = p->pools; pp != NULL; pp = pp->next) {
		idle += pp->nidle;
		json_array_append_new(pools, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}",
				      "name", pp->name, "key", pp->key, "size", (json_int_t)pp->want,
				      "idle", (json_int_t)pp->nidle, "starting",
				      (json_int_t)entries(pp), "hits", (json_int_t)pp->hits,
				      "misses", (json_int_t)pp->misses));
	}
	return json_pack("{s:I, s:I, s:I, s:I, s:f, s:f, s:o}", "size",
			 (json_int_t)(*p->cfg)->pool_size, "idle", (json_int_t)idle, "hits",
			 (json_int_t)p->hits, "misses", (json_int_t)p->misses, "warm_mean_ms",
			 p->hits ? (double)p->warm_ns / 1e6 / (double)p->hits : 0.0, "warm_max_ms",
			 (double)p->warm_max_ns / 1e6, "pools", pools);
}

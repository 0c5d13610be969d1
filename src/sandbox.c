/*
 * The sandbox manager. It owns the provider instances and every sandbox's
 * life cycle: a row is written before the provider is asked to create, and
 * rewritten on every change, so a daemon killed at any moment leaves a store
 * that reconcile can match against what the providers still hold. It never
 * names a provider; it logs (it is an edge) but only once per failure.
 * Every create goes through placement (which provider) and admission (host,
 * start and tenant limits); what a live sandbox holds of both is a hold,
 * given back when its row leaves the live states, wherever that happens.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "admission.h"
#include "clock.h"
#include "log.h"
#include "placement.h"
#include "provider.h"
#include "sandbox.h"
#include "xmalloc.h"

#define SANDBOX_MAX_ARGV	256
#define SANDBOX_MAX_ARG		(64 * 1024)
#define SANDBOX_MAX_ENV		128
#define SANDBOX_MAX_PATH	1024

enum mgr_provider_state { PROV_DOWN, PROV_INITING, PROV_READY };

struct mgr_provider {
	struct sandbox_mgr *mgr;
	struct sp_provider *p;
	enum mgr_provider_state state;
	char *detail;			/* why it is down */
	bool reconciling;
	int64_t list_started_ms;	/* when the reconcile's list was asked for */
	bool watching;
	bool closed;
};

enum op_kind { OP_CREATE, OP_DESTROY, OP_EXEC, OP_BUILD, OP_DEFER };

/*
 * What a live sandbox (creating, starting, running, destroying) holds of
 * placement and admission; dropped when its row leaves those states.
 */
struct hold {
	struct hold *next;
	char id[SANDBOX_ID_LEN + 1];
	struct mgr_provider *mp;
	struct admission_ticket t;
};

/* An operation in flight; reconcile leaves its sandbox alone. */
struct op {
	struct op *prev, *next;
	enum op_kind kind;
	struct sandbox_mgr *mgr;
	struct mgr_provider *mp;
	struct sandbox_row row;
	sandbox_cb cb;
	void *arg;
	/* OP_CREATE */
	struct sp_sandbox_spec spec;
	char *image;
	char *files_dir;		/* from hooks.prepare, or NULL */
	struct admission_waiter waiter;	/* waiting for a start slot */
	bool waiting;
	/* OP_BUILD */
	sp_done_cb done_cb;
	/* OP_DEFER: a callback that must not fire inside the call */
	uv_timer_t timer;
	int status;
	char *detail;
};

struct sandbox_exec {
	struct op op;			/* first: the in-flight list holds it */
	char **argv;
	char **env;
	char *workdir;
	struct sp_exec *pex;
	sandbox_output_cb out;
	sandbox_exec_cb done;
	uint64_t started_ms;
	bool canceled;
};

struct sandbox_mgr {
	uv_loop_t *loop;
	struct store *store;
	const struct config *cfg;
	const struct sp_host *host;
	struct mgr_provider *providers;
	struct sp_provider **plist;	/* for sandbox_mgr_providers() */
	size_t nproviders;
	struct op inflight;		/* list head */
	size_t ninflight;
	uv_timer_t timer;		/* reconcile and provider retry */
	bool started;
	bool stopping;
	size_t closing;			/* providers whose close has not completed */
	struct sandbox_hooks hooks;
	struct placement *pl;
	struct admission *adm;
	struct hold *holds;
	void (*close_cb)(void *);
	void *close_arg;
};

static void mgr_reconcile(struct mgr_provider *mp);
static void mgr_released(struct sandbox_mgr *mgr, const char *id);
static void create_wait_cancel(struct op *op);

bool
sandbox_id_valid(const char *id)
{
	if (id == NULL || strlen(id) != SANDBOX_ID_LEN || strncmp(id, "sb-", 3) != 0)
		return false;
	for (const char *p = id + 3; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static char *
sandbox_new_id(void)
{
	unsigned char rnd[6];
	char *id = xmalloc(SANDBOX_ID_LEN + 1);

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		fatalx("getrandom failed");
	snprintf(id, SANDBOX_ID_LEN + 1, "sb-%02x%02x%02x%02x%02x%02x",
		 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
	return id;
}

/* --- in-flight operations --- */

static void
op_link(struct sandbox_mgr *mgr, struct op *op)
{
	op->mgr = mgr;
	op->next = mgr->inflight.next;
	op->prev = &mgr->inflight;
	mgr->inflight.next->prev = op;
	mgr->inflight.next = op;
	mgr->ninflight++;
}

static void
op_unlink(struct op *op)
{
	op->prev->next = op->next;
	op->next->prev = op->prev;
	op->mgr->ninflight--;
}

static bool
op_holds(const struct sandbox_mgr *mgr, const char *id)
{
	for (const struct op *op = mgr->inflight.next; op != &mgr->inflight; op = op->next)
		if (op->row.id != NULL && strcmp(op->row.id, id) == 0)
			return true;
	return false;
}

static void
op_free(struct op *op)
{
	store_sandbox_row_done(&op->row);
	free(op->image);
	free(op->files_dir);
	free(op->detail);
	free(op);
}

static void
op_defer_closed(uv_handle_t *h)
{
	op_free(h->data);
}

static void
op_defer_fire(uv_timer_t *t)
{
	struct op *op = t->data;

	op_unlink(op);
	op->cb(op->arg, op->status, op->status == 0 ? &op->row : NULL, op->detail);
	uv_close((uv_handle_t *)&op->timer, op_defer_closed);
}

/* Answer row (copied) or an error later from the loop, never inside the call. */
static void
op_defer(struct sandbox_mgr *mgr, const struct sandbox_row *row, int status, const char *detail,
	 sandbox_cb cb, void *arg)
{
	struct op *op = xcalloc(1, sizeof(*op));

	op->kind = OP_DEFER;
	op->cb = cb;
	op->arg = arg;
	op->status = status;
	op->detail = detail ? xstrdup(detail) : NULL;
	if (row != NULL) {
		op->row = *row;
		op->row.id = xstrdup(row->id);
		op->row.tenant = xstrdup(row->tenant);
		op->row.provider = xstrdup(row->provider);
		op->row.ref = row->ref ? xstrdup(row->ref) : NULL;
		op->row.state = xstrdup(row->state);
		op->row.spec_json = xstrdup(row->spec_json);
		op->row.spec_hash = xstrdup(row->spec_hash);
		op->row.error = row->error ? xstrdup(row->error) : NULL;
	}
	op_link(mgr, op);
	uv_timer_init(mgr->loop, &op->timer);
	op->timer.data = op;
	uv_timer_start(&op->timer, op_defer_fire, 0, 0);
}

/* --- rows --- */

static void hold_sync(struct sandbox_mgr *mgr, const struct sandbox_row *row);

static void
row_set(struct sandbox_mgr *mgr, struct sandbox_row *row, const char *state, const char *error)
{
	int r;

	free(row->state);
	row->state = xstrdup(state);
	if (error != NULL || strcmp(state, "running") == 0) {
		free(row->error);
		row->error = error ? xstrndup(error, 1024) : NULL;
	}
	row->updated_ms = clock_wall_ms();
	r = store_sandbox_update(mgr->store, row);
	if (r < 0)
		log_err("sandbox '%s': store update to %s: %s", row->id, state,
			store_errmsg(mgr->store));
	hold_sync(mgr, row);
}

static void
row_set_ref(struct sandbox_row *row, const char *ref)
{
	free(row->ref);
	row->ref = ref ? xstrdup(ref) : NULL;
}

static struct mgr_provider *
mgr_provider_by_name(struct sandbox_mgr *mgr, const char *name)
{
	for (size_t i = 0; i < mgr->nproviders; i++)
		if (strcmp(provider_name(mgr->providers[i].p), name) == 0)
			return &mgr->providers[i];
	return NULL;
}

static bool
state_is(const struct sandbox_row *row, const char *state)
{
	return strcmp(row->state, state) == 0;
}

/* --- holds: placement and admission of live sandboxes --- */

static bool
state_live(const char *state)
{
	return strcmp(state, "creating") == 0 || strcmp(state, "starting") == 0 ||
	       strcmp(state, "running") == 0 || strcmp(state, "destroying") == 0;
}

static struct hold *
hold_find(struct sandbox_mgr *mgr, const char *id)
{
	for (struct hold *h = mgr->holds; h != NULL; h = h->next)
		if (strcmp(h->id, id) == 0)
			return h;
	return NULL;
}

static void
hold_link(struct sandbox_mgr *mgr, struct hold *h, const char *id)
{
	snprintf(h->id, sizeof(h->id), "%s", id);
	h->next = mgr->holds;
	mgr->holds = h;
}

/* Give back what h holds and free it; h must not be linked. */
static void
hold_free(struct sandbox_mgr *mgr, struct hold *h)
{
	admission_release(mgr->adm, &h->t);
	if (h->mp != NULL)
		(void)placement_put(mgr->pl, provider_name(h->mp->p));
	free(h);
}

/* Count a live sandbox found in the store or by reconcile, whatever the limits. */
static void
hold_adopt(struct sandbox_mgr *mgr, const struct sandbox_row *row)
{
	struct mgr_provider *mp = mgr_provider_by_name(mgr, row->provider);
	struct hold *h = xcalloc(1, sizeof(*h));

	if (mp != NULL && placement_adopt(mgr->pl, row->provider) == 0)
		h->mp = mp;
	if (admission_adopt(mgr->adm, row->tenant, mp != NULL && provider_has(mp->p, SP_CAP_LOCAL),
			    &h->t) < 0) {
		hold_free(mgr, h);
		return;
	}
	hold_link(mgr, h, row->id);
}

/*
 * A row changed state: running frees a start slot, leaving the live states
 * frees all, and a sandbox that came back to life (reconcile found its
 * container running again) is counted again.
 */
static void
hold_sync(struct sandbox_mgr *mgr, const struct sandbox_row *row)
{
	struct hold **pp, *h;

	for (pp = &mgr->holds; (h = *pp) != NULL; pp = &h->next)
		if (strcmp(h->id, row->id) == 0)
			break;
	if (h == NULL) {
		if (state_live(row->state))
			hold_adopt(mgr, row);
		return;
	}
	if (strcmp(row->state, "running") == 0 && h->t.hold == ADMISSION_STARTING) {
		(void)admission_started(mgr->adm, &h->t);
	} else if (!state_live(row->state)) {
		*pp = h->next;
		hold_free(mgr, h);
	}
}

/* Count what the store says is live (daemon start), before reconcile settles it. */
static void
hold_adopt_all(struct sandbox_mgr *mgr)
{
	struct sandbox_row *rows;
	size_t n;

	if (store_sandbox_list(mgr->store, NULL, true, &rows, &n) < 0) {
		log_err("adopting sandboxes: store: %s", store_errmsg(mgr->store));
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (state_live(rows[i].state) && hold_find(mgr, rows[i].id) == NULL)
			hold_adopt(mgr, &rows[i]);
	store_sandbox_rows_free(rows, n);
}

static void
mgr_limits(const struct config *c, struct admission_limits *lim,
	   struct admission_override *pool)
{
	/* The warm pool's own tenant is bounded by the host cap only. */
	*pool = (struct admission_override){ SANDBOX_POOL_TENANT, ADMISSION_LIMIT_MAX };
	*lim = (struct admission_limits){
		.host_max = c->max_sandboxes, .starts_max = c->max_starts,
		.tenant_max = c->tenant_max_sandboxes, .overrides = pool, .noverrides = 1,
	};
}

/* The placement list: every built provider, local ones capped by max_sandboxes. */
static struct placement_provider *
mgr_placement_list(struct sandbox_mgr *mgr, const struct config *c)
{
	struct placement_provider *l = xcalloc(mgr->nproviders ? mgr->nproviders : 1, sizeof(*l));

	for (size_t i = 0; i < mgr->nproviders; i++) {
		unsigned caps = mgr->providers[i].p->ops->caps;

		l[i] = (struct placement_provider){
			.name = provider_name(mgr->providers[i].p), .caps = caps,
			.capacity = (caps & SP_CAP_LOCAL) ? c->max_sandboxes : c->burst_max_sandboxes,
		};
	}
	return l;
}

static void
mgr_set_state(struct mgr_provider *mp, enum mgr_provider_state state)
{
	mp->state = state;
	(void)placement_set_ready(mp->mgr->pl, provider_name(mp->p), state == PROV_READY);
}

/* --- providers: init, retry, events --- */

static void
mgr_event(void *arg, const struct sp_instance *inst)
{
	struct mgr_provider *mp = arg;
	struct sandbox_mgr *mgr = mp->mgr;
	struct sandbox_row row;

	if (inst->sandbox_id == NULL || !sandbox_id_valid(inst->sandbox_id) ||
	    op_holds(mgr, inst->sandbox_id))
		return;
	if (store_sandbox_get(mgr->store, inst->sandbox_id, &row) < 0)
		return;
	if (state_is(&row, "running") || state_is(&row, "starting")) {
		if (inst->state == SP_INST_EXITED) {
			row.exit_code = inst->exit_code;
			row.oom_killed = inst->oom_killed;
			row_set(mgr, &row, "exited", inst->oom_killed ? "killed: out of memory" : NULL);
			log_info("sandbox '%s': exited with %d%s", row.id, inst->exit_code,
				 inst->oom_killed ? " (OOM-killed)" : "");
			if (mgr->hooks.stopped != NULL)
				mgr->hooks.stopped(mgr->hooks.arg, row.id);
		} else if (inst->state == SP_INST_GONE) {
			row_set(mgr, &row, "lost", "the container vanished");
			log_warn("sandbox '%s': container vanished", row.id);
			if (mgr->hooks.stopped != NULL)
				mgr->hooks.stopped(mgr->hooks.arg, row.id);
		}
	}
	store_sandbox_row_done(&row);
}

static void
mgr_init_done(void *arg, int status, const char *detail)
{
	struct mgr_provider *mp = arg;
	struct sandbox_mgr *mgr = mp->mgr;
	int r;

	if (status == SP_ECANCELED || mgr->stopping) {
		mgr_set_state(mp, PROV_DOWN);
		return;
	}
	if (status < 0) {
		const char *why = detail ? detail : sp_strerror(status);

		/* Log a failure once, not at every retry. */
		if (mp->detail == NULL || strcmp(mp->detail, why) != 0)
			log_warn("provider '%s': not available: %s (retrying)",
				 provider_name(mp->p), why);
		free(mp->detail);
		mp->detail = xstrdup(why);
		mgr_set_state(mp, PROV_DOWN);
		return;
	}
	log_info("provider '%s': ready", provider_name(mp->p));
	free(mp->detail);
	mp->detail = NULL;
	mgr_set_state(mp, PROV_READY);
	if (mgr->hooks.provider_ready != NULL)
		mgr->hooks.provider_ready(mgr->hooks.arg, mp->p);
	if (!mp->watching) {
		r = provider_watch(mp->p, mgr_event, mp);
		mp->watching = r == 0;
		if (r < 0 && r != -ENOTSUP)
			log_warn("provider '%s': cannot watch events: %s",
				 provider_name(mp->p), sp_strerror(r));
	}
	mgr_reconcile(mp);
}

static void
mgr_provider_kick(struct mgr_provider *mp)
{
	int r;

	if (mp->state != PROV_DOWN || mp->mgr->stopping)
		return;
	mp->state = PROV_INITING;
	r = provider_init(mp->p, mgr_init_done, mp);
	if (r < 0) {
		mp->state = PROV_DOWN;
		if (mp->detail == NULL)
			log_warn("provider '%s': init: %s", provider_name(mp->p), sp_strerror(r));
		free(mp->detail);
		mp->detail = xstrdup(sp_strerror(r));
	}
}

static void
mgr_tick(uv_timer_t *t)
{
	struct sandbox_mgr *mgr = t->data;

	for (size_t i = 0; i < mgr->nproviders; i++) {
		struct mgr_provider *mp = &mgr->providers[i];

		if (mp->state == PROV_DOWN)
			mgr_provider_kick(mp);
		else if (mp->state == PROV_READY)
			mgr_reconcile(mp);
	}
}

/* --- reconcile --- */

struct reap {
	struct mgr_provider *mp;
	char *id;		/* the sandbox row to mark destroyed, or NULL */
	char *ref;
};

static void
reap_done(void *arg, int status, const char *detail)
{
	struct reap *rp = arg;
	struct sandbox_mgr *mgr = rp->mp->mgr;
	struct sandbox_row row;

	if (status < 0 && status != SP_ECANCELED) {
		log_warn("provider '%s': reap %.12s: %s", provider_name(rp->mp->p), rp->ref,
			 detail ? detail : sp_strerror(status));
	} else if (status == 0 && rp->id != NULL &&
		   store_sandbox_get(mgr->store, rp->id, &row) == 0) {
		if (state_is(&row, "destroying")) {
			row_set(mgr, &row, "destroyed", NULL);
			mgr_released(mgr, row.id);
		}
		store_sandbox_row_done(&row);
	}
	free(rp->id);
	free(rp->ref);
	free(rp);
}

static void
reap(struct mgr_provider *mp, const char *ref, const char *id)
{
	struct reap *rp = xcalloc(1, sizeof(*rp));
	int r;

	rp->mp = mp;
	rp->ref = xstrdup(ref);
	rp->id = id ? xstrdup(id) : NULL;
	r = provider_destroy(mp->p, ref, reap_done, rp);
	if (r < 0)
		reap_done(rp, r, NULL);
}

static void
mgr_reconcile_done(void *arg, int status, const struct sp_instance *items, size_t n,
		   const char *detail)
{
	struct mgr_provider *mp = arg;
	struct sandbox_mgr *mgr = mp->mgr;
	struct sandbox_row *rows = NULL;
	size_t nrows = 0;
	bool *seen = NULL;

	mp->reconciling = false;
	if (status == SP_ECANCELED || mgr->stopping)
		return;
	if (status < 0) {
		log_warn("provider '%s': reconcile: %s", provider_name(mp->p),
			 detail ? detail : sp_strerror(status));
		/* The provider may be gone: let the timer re-initialise it. */
		if (status == SP_EUNAVAIL)
			mgr_set_state(mp, PROV_DOWN);
		return;
	}
	if (store_sandbox_list(mgr->store, NULL, true, &rows, &nrows) < 0) {
		log_err("reconcile: store: %s", store_errmsg(mgr->store));
		return;
	}
	seen = xcalloc(nrows ? nrows : 1, sizeof(*seen));

	for (size_t i = 0; i < n; i++) {
		const struct sp_instance *in = &items[i];
		struct sandbox_row *row = NULL;

		if (in->sandbox_id != NULL && op_holds(mgr, in->sandbox_id))
			continue;
		for (size_t j = 0; in->sandbox_id != NULL && j < nrows; j++)
			if (strcmp(rows[j].id, in->sandbox_id) == 0 &&
			    strcmp(rows[j].provider, provider_name(mp->p)) == 0) {
				row = &rows[j];
				seen[j] = true;
				break;
			}
		if (row == NULL) {
			/* Ours by its instance label, unknown to the store: an orphan. */
			log_info("provider '%s': removing orphan %.12s (sandbox %s)",
				 provider_name(mp->p), in->ref,
				 in->sandbox_id ? in->sandbox_id : "?");
			reap(mp, in->ref, NULL);
			continue;
		}
		if (state_is(row, "failed") || state_is(row, "lost")) {
			/* Settled rows keep their story; a container behind one goes. */
			reap(mp, in->ref, NULL);
			continue;
		}
		if (row->ref == NULL || strcmp(row->ref, in->ref) != 0)
			row_set_ref(row, in->ref);
		if (state_is(row, "destroying")) {
			reap(mp, in->ref, row->id);
		} else if (in->state == SP_INST_RUNNING) {
			if (!state_is(row, "running")) {
				log_info("sandbox '%s': adopted (was %s)", row->id, row->state);
				row_set(mgr, row, "running", NULL);
			}
		} else if (in->state == SP_INST_EXITED) {
			if (!state_is(row, "exited")) {
				row->exit_code = in->exit_code;
				row->oom_killed = in->oom_killed;
				row_set(mgr, row, "exited",
					in->oom_killed ? "killed: out of memory" : "the container exited");
			}
		} else if (in->state == SP_INST_CREATED) {
			/* Created but never started: the daemon died in between. */
			row_set(mgr, row, "failed", "the daemon stopped while the sandbox was starting");
			reap(mp, in->ref, NULL);
		}
	}
	for (size_t j = 0; j < nrows; j++) {
		struct sandbox_row *row = &rows[j];

		if (seen[j] || strcmp(row->provider, provider_name(mp->p)) != 0 ||
		    op_holds(mgr, row->id) || state_is(row, "failed") || state_is(row, "lost"))
			continue;
		/* Changed after the list was asked for: the list cannot show it yet. */
		if (row->updated_ms >= mp->list_started_ms)
			continue;
		if (state_is(row, "destroying")) {
			row_set(mgr, row, "destroyed", NULL);
			mgr_released(mgr, row->id);
		} else if (state_is(row, "creating") || state_is(row, "starting"))
			row_set(mgr, row, "failed", "the daemon stopped before the sandbox was created");
		else {
			log_warn("sandbox '%s': its container vanished", row->id);
			row_set(mgr, row, "lost", "the container vanished");
		}
	}
	free(seen);
	store_sandbox_rows_free(rows, nrows);
}

static void
mgr_reconcile(struct mgr_provider *mp)
{
	int r;

	if (mp->reconciling || mp->state != PROV_READY || mp->mgr->stopping)
		return;
	mp->reconciling = true;
	mp->list_started_ms = clock_wall_ms();
	r = provider_list(mp->p, mgr_reconcile_done, mp);
	if (r < 0)
		mp->reconciling = false;
}

/* --- life cycle of the manager --- */

int
sandbox_mgr_new(uv_loop_t *loop, struct store *store, const struct config *cfg,
		const struct sp_host *host, const struct sp_provider_ops *const *ops,
		struct sandbox_mgr **ret)
{
	struct sandbox_mgr *mgr = xcalloc(1, sizeof(*mgr));
	struct admission_limits lim;
	struct admission_override pool;
	struct placement_provider *list;
	char err[256];
	size_t n = 0;

	mgr->loop = loop;
	mgr->store = store;
	mgr->cfg = cfg;
	mgr->host = host;
	mgr->inflight.next = mgr->inflight.prev = &mgr->inflight;
	while (ops[n] != NULL)
		n++;
	mgr->providers = xcalloc(n ? n : 1, sizeof(*mgr->providers));
	mgr->plist = xcalloc(n ? n : 1, sizeof(*mgr->plist));
	for (size_t i = 0; i < n; i++) {
		mgr->providers[i].mgr = mgr;
		mgr->providers[i].p = provider_new(ops[i], host);
		mgr->plist[i] = mgr->providers[i].p;
	}
	mgr->nproviders = n;
	mgr_limits(cfg, &lim, &pool);
	list = mgr_placement_list(mgr, cfg);
	/* Both lists are valid by construction (the config parser bounded every value). */
	if (admission_new(&lim, &mgr->adm, err, sizeof(err)) < 0 ||
	    placement_new(list, n, &mgr->pl, err, sizeof(err)) < 0)
		fatalx("sandbox manager: %s", err);
	free(list);
	uv_timer_init(loop, &mgr->timer);
	mgr->timer.data = mgr;
	*ret = mgr;
	return 0;
}

void
sandbox_mgr_set_config(struct sandbox_mgr *mgr, const struct config *cfg)
{
	struct admission_limits lim;
	struct admission_override pool;
	struct placement_provider *list = mgr_placement_list(mgr, cfg);
	char err[256];

	mgr->cfg = cfg;
	mgr_limits(cfg, &lim, &pool);
	if (admission_set_limits(mgr->adm, &lim, err, sizeof(err)) < 0 ||
	    placement_configure(mgr->pl, list, mgr->nproviders, err, sizeof(err)) < 0)
		log_err("new limits not applied: %s", err);
	free(list);
	if (mgr->started && !mgr->stopping)
		uv_timer_start(&mgr->timer, mgr_tick, cfg->reconcile_interval_ms,
			       cfg->reconcile_interval_ms);
}

void
sandbox_mgr_set_hooks(struct sandbox_mgr *mgr, const struct sandbox_hooks *hooks)
{
	mgr->hooks = *hooks;
}

static void
mgr_released(struct sandbox_mgr *mgr, const char *id)
{
	if (mgr->hooks.released != NULL)
		mgr->hooks.released(mgr->hooks.arg, id);
}

void
sandbox_mgr_start(struct sandbox_mgr *mgr)
{
	mgr->started = true;
	hold_adopt_all(mgr);
	for (size_t i = 0; i < mgr->nproviders; i++)
		mgr_provider_kick(&mgr->providers[i]);
	uv_timer_start(&mgr->timer, mgr_tick, mgr->cfg->reconcile_interval_ms,
		       mgr->cfg->reconcile_interval_ms);
}

void
sandbox_mgr_stop(struct sandbox_mgr *mgr)
{
	if (mgr->stopping)
		return;
	mgr->stopping = true;
	uv_timer_stop(&mgr->timer);
	for (struct op *op = mgr->inflight.next, *next; op != &mgr->inflight; op = next) {
		next = op->next;
		if (op->kind == OP_EXEC)
			sandbox_exec_cancel((struct sandbox_exec *)op);
		else if (op->kind == OP_CREATE && op->waiting)
			create_wait_cancel(op);
	}
}

size_t
sandbox_mgr_inflight(const struct sandbox_mgr *mgr)
{
	return mgr->ninflight;
}

static void
mgr_free(struct sandbox_mgr *mgr)
{
	void (*cb)(void *) = mgr->close_cb;
	void *arg = mgr->close_arg;

	for (size_t i = 0; i < mgr->nproviders; i++) {
		provider_free(mgr->providers[i].p);
		free(mgr->providers[i].detail);
	}
	while (mgr->holds != NULL) {
		struct hold *h = mgr->holds;

		mgr->holds = h->next;
		free(h);
	}
	admission_free(mgr->adm);
	placement_free(mgr->pl);
	free(mgr->providers);
	free(mgr->plist);
	free(mgr);
	if (cb != NULL)
		cb(arg);
}

static void
mgr_timer_closed(uv_handle_t *h)
{
	struct sandbox_mgr *mgr = h->data;

	if (--mgr->closing == 0)
		mgr_free(mgr);
}

static void
mgr_provider_closed(void *arg, int status, const char *detail)
{
	struct mgr_provider *mp = arg;
	struct sandbox_mgr *mgr = mp->mgr;

	mp->closed = true;
	if (--mgr->closing == 0)
		mgr_free(mgr);
}

void
sandbox_mgr_close(struct sandbox_mgr *mgr, void (*cb)(void *arg), void *arg)
{
	sandbox_mgr_stop(mgr);
	mgr->close_cb = cb;
	mgr->close_arg = arg;
	/* One count per provider and one for the timer handle. */
	mgr->closing = mgr->nproviders + 1;
	for (size_t i = 0; i < mgr->nproviders; i++)
		provider_close(mgr->providers[i].p, mgr_provider_closed, &mgr->providers[i]);
	uv_close((uv_handle_t *)&mgr->timer, mgr_timer_closed);
}

size_t
sandbox_mgr_providers(const struct sandbox_mgr *mgr, struct sp_provider *const **ret)
{
	*ret = mgr->plist;
	return mgr->nproviders;
}

bool
sandbox_mgr_provider_ready(const struct sandbox_mgr *mgr, const struct sp_provider *p,
			   const char **detail)
{
	for (size_t i = 0; i < mgr->nproviders; i++) {
		if (mgr->providers[i].p != p)
			continue;
		if (detail != NULL)
			*detail = mgr->providers[i].detail;
		return mgr->providers[i].state == PROV_READY;
	}
	return false;
}

int
sandbox_mgr_count(struct sandbox_mgr *mgr, const char *const *states, size_t n, long *ret)
{
	struct sandbox_row *rows;
	size_t nrows;
	int r;

	r = store_sandbox_list(mgr->store, NULL, false, &rows, &nrows);
	if (r < 0)
		return r;
	for (size_t j = 0; j < n; j++)
		ret[j] = 0;
	for (size_t i = 0; i < nrows; i++)
		for (size_t j = 0; j < n; j++)
			if (strcmp(rows[i].state, states[j]) == 0)
				ret[j]++;
	store_sandbox_rows_free(rows, nrows);
	return 0;
}

/* --- create --- */

static int
spec_int(json_t *v, const char *name, int64_t min, int64_t max, int64_t *ret,
	 char *err, size_t errlen)
{
	if (!json_is_integer(v)) {
		sp_errf(err, errlen, "%s: must be an integer", name);
		return SP_EINVAL;
	}
	if (json_integer_value(v) < min || json_integer_value(v) > max) {
		sp_errf(err, errlen, "%s: must be between %" PRId64 " and %" PRId64, name, min, max);
		return SP_EINVAL;
	}
	*ret = json_integer_value(v);
	return 0;
}

static int
spec_size(json_t *v, const char *name, int64_t min, int64_t max, int64_t *ret,
	  char *err, size_t errlen)
{
	int64_t n;

	if (json_is_string(v)) {
		if (config_parse_size(json_string_value(v), &n) < 0) {
			sp_errf(err, errlen, "%s: not a size (like \"512m\" or bytes)", name);
			return SP_EINVAL;
		}
	} else if (json_is_integer(v)) {
		n = json_integer_value(v);
	} else {
		sp_errf(err, errlen, "%s: must be a size string or a number of bytes", name);
		return SP_EINVAL;
	}
	if (n < min || n > max) {
		sp_errf(err, errlen, "%s: must be between %" PRId64 " and %" PRId64 " bytes",
		     name, min, max);
		return SP_EINVAL;
	}
	*ret = n;
	return 0;
}

static bool
image_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 255 || s[0] == '-')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("._/:@-", *s)))
			return false;
	return true;
}

/*
 * Validate spec against the configuration and normalise it into a JSON
 * object with every limit resolved; *ret is a new reference.
 */
static int
spec_normalise(struct sandbox_mgr *mgr, json_t *spec, json_t **ret, char *err, size_t errlen)
{
	const struct config *c = mgr->cfg;
	const char *provider = c->default_provider, *image = c->worker_image, *key;
	int64_t memory = c->sandbox_memory, pids = c->sandbox_pids, nofile = c->sandbox_nofile;
	int64_t tmp = c->sandbox_tmp, work = c->sandbox_work, ncpu = c->sandbox_cpus;
	json_t *v;
	int r = 0;

	if (spec != NULL && !json_is_object(spec)) {
		sp_errf(err, errlen, "the body must be a JSON object");
		return SP_EINVAL;
	}
	json_object_foreach(spec, key, v) {
		if (strcmp(key, "provider") == 0) {
			if (!json_is_string(v) || !placement_policy_valid(mgr->pl,
									   json_string_value(v))) {
				sp_errf(err, errlen, "provider: \"auto\", \"local\" or a built provider's name");
				return SP_EINVAL;
			}
			provider = json_string_value(v);
		} else if (strcmp(key, "image") == 0) {
			if (!json_is_string(v) || !image_name_valid(json_string_value(v))) {
				sp_errf(err, errlen, "image: not a valid image reference");
				return SP_EINVAL;
			}
			image = json_string_value(v);
		} else if (strcmp(key, "cpus") == 0) {
			double cpus;

			if (!json_is_number(v)) {
				sp_errf(err, errlen, "cpus: must be a number");
				return SP_EINVAL;
			}
			cpus = json_number_value(v);
			if (!(cpus >= 0.01) || cpus * 1e9 > (double)c->sandbox_cpus_max) {
				sp_errf(err, errlen, "cpus: must be between 0.01 and %g",
				     (double)c->sandbox_cpus_max / 1e9);
				return SP_EINVAL;
			}
			ncpu = llround(cpus * 1e9);
		} else if (strcmp(key, "memory") == 0) {
			r = spec_size(v, key, 16 << 20, c->sandbox_memory_max, &memory, err, errlen);
		} else if (strcmp(key, "pids") == 0) {
			r = spec_int(v, key, 8, c->sandbox_pids_max, &pids, err, errlen);
		} else if (strcmp(key, "nofile") == 0) {
			r = spec_int(v, key, 64, 1 << 20, &nofile, err, errlen);
		} else if (strcmp(key, "tmp") == 0) {
			r = spec_size(v, key, 1 << 20, c->sandbox_memory_max, &tmp, err, errlen);
		} else if (strcmp(key, "work") == 0) {
			r = spec_size(v, key, 1 << 20, c->sandbox_memory_max, &work, err, errlen);
		} else {
			sp_errf(err, errlen, "%s: unknown field", key);
			return SP_EINVAL;
		}
		if (r < 0)
			return r;
	}
	*ret = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "provider", provider, "image", image, "nano_cpus", (json_int_t)ncpu,
			 "memory", (json_int_t)memory, "pids", (json_int_t)pids,
			 "nofile", (json_int_t)nofile, "tmp", (json_int_t)tmp,
			 "work", (json_int_t)work);
	if (*ret == NULL)
		fatalx("spec_normalise: json_pack failed");
	return 0;
}

static char *
spec_hash(const char *text)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *hex = xmalloc(17);

	if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1)
		fatalx("EVP_Digest failed");
	for (int i = 0; i < 8; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return hex;
}

static void
create_finish(struct op *op, int status, const char *detail)
{
	op_unlink(op);
	op->cb(op->arg, status, status == 0 ? &op->row : NULL, detail);
	op_free(op);
}

/* Tell placement how a create on op's provider went (its backoff and breaker). */
static void
create_report(struct op *op, int status)
{
	enum placement_outcome o = status == 0 ? PLACEMENT_OK :
		status == SP_ELIMIT ? PLACEMENT_RATE_LIMITED : PLACEMENT_FAILED;

	if (status != SP_ECANCELED)
		(void)placement_report(op->mgr->pl, provider_name(op->mp->p), o, 0,
				       (int64_t)uv_now(op->mgr->loop));
}

static void
create_fail(struct op *op, int status, const char *detail)
{
	const char *why = detail ? detail : sp_strerror(status);

	/* At shutdown the row stays as it is; reconcile settles it next start. */
	if (status != SP_ECANCELED) {
		row_set(op->mgr, &op->row, "failed", why);
		log_warn("sandbox '%s': create: %s", op->row.id, why);
		mgr_released(op->mgr, op->row.id);
	}
	create_finish(op, status, why);
}

static void
create_cleanup_done(void *arg, int status, const char *detail)
{
	struct op *op = arg;

	if (status < 0 && status != SP_ECANCELED)
		log_warn("sandbox '%s': removing after a failed start: %s", op->row.id,
			 detail ? detail : sp_strerror(status));
	mgr_released(op->mgr, op->row.id);
	create_finish(op, op->status, op->detail);
}

static void
create_started(void *arg, int status, const char *detail)
{
	struct op *op = arg;
	const char *why = detail ? detail : sp_strerror(status);
	int r;

	create_report(op, status);
	if (status == 0) {
		row_set(op->mgr, &op->row, "running", NULL);
		create_finish(op, 0, NULL);
		return;
	}
	if (status == SP_ECANCELED) {
		create_finish(op, status, why);
		return;
	}
	/* A container that will not start is removed, not left behind. */
	row_set(op->mgr, &op->row, "failed", why);
	log_warn("sandbox '%s': start: %s", op->row.id, why);
	op->status = status;
	op->detail = xstrdup(why);
	r = provider_destroy(op->mp->p, op->row.ref, create_cleanup_done, op);
	if (r < 0)
		create_cleanup_done(op, r, NULL);
}

static void
create_created(void *arg, int status, const char *ref, const char *detail)
{
	struct op *op = arg;
	int r;

	if (status < 0) {
		create_report(op, status);
		create_fail(op, status, detail);
		return;
	}
	row_set_ref(&op->row, ref);
	row_set(op->mgr, &op->row, "starting", NULL);
	r = provider_start(op->mp->p, op->row.ref, create_started, op);
	if (r < 0)
		create_started(op, r, NULL);
}

static struct mgr_provider *
mgr_ready_provider(struct sandbox_mgr *mgr, const char *name, char *err, size_t errlen)
{
	struct mgr_provider *mp = mgr_provider_by_name(mgr, name);

	if (mp == NULL) {
		sp_errf(err, errlen, "provider '%s' is not built into this daemon", name);
		return NULL;
	}
	if (mp->state != PROV_READY) {
		sp_errf(err, errlen, "provider '%s' is not available: %s", name,
		     mp->detail ? mp->detail : "starting up");
		return NULL;
	}
	return mp;
}

/*
 * Choose op's provider for policy and reserve what the sandbox will hold.
 * 0 with op->mp and a hold; -EAGAIN when only a start slot is missing (the
 * hold has its placement, admission still to take); SP_ELIMIT, SP_EUNAVAIL,
 * SP_EINVAL with err and nothing held.
 */
static int
create_place(struct sandbox_mgr *mgr, const char *policy, const char *tenant, struct hold **ret,
	     char *err, size_t errlen)
{
	struct placement_choice ch;
	struct hold *h;
	int r;

	r = placement_take(mgr->pl, policy, (int64_t)uv_now(mgr->loop), &ch, err, errlen);
	if (r == -EAGAIN) {
		/* Every candidate with room is backing off: the caller retries later. */
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		sp_errf(err, errlen, "placement '%s': %s; retry in %lld ms", policy, why,
		     (long long)(ch.retry_at_ms - (int64_t)uv_now(mgr->loop)));
		return SP_ELIMIT;
	}
	if (r < 0) {
		/* Say which policy could not place it; "not available" for a provider down. */
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		sp_errf(err, errlen, "placement '%s': %s%s", policy,
		     r == SP_EUNAVAIL ? "not available: " : "", why);
		return r;
	}
	h = xcalloc(1, sizeof(*h));
	h->mp = mgr_provider_by_name(mgr, ch.name);
	r = admission_take(mgr->adm, tenant, provider_has(h->mp->p, SP_CAP_LOCAL), &h->t, NULL,
			   err, errlen);
	if (r < 0 && r != -EAGAIN) {
		hold_free(mgr, h);
		return r;
	}
	*ret = h;
	return r;
}

static void
create_go(struct op *op)
{
	int r = provider_create(op->mp->p, &op->spec, create_created, op);

	if (r < 0)
		create_fail(op, r, NULL);
}

/* A start slot freed: take it, or wait again, or give up on a cap that now refuses. */
static void
create_wake(void *arg)
{
	struct op *op = arg;
	struct hold *h = hold_find(op->mgr, op->row.id);
	char err[256];
	int r;

	op->waiting = false;
	r = h != NULL ? admission_take(op->mgr->adm, op->row.tenant, provider_has(op->mp->p,
				       SP_CAP_LOCAL), &h->t, NULL, err, sizeof(err)) : SP_ECANCELED;
	if (r == -EAGAIN && admission_wait(op->mgr->adm, &op->waiter, create_wake, op) == 0) {
		op->waiting = true;
		return;
	}
	if (r == -EAGAIN)
		r = admission_take(op->mgr->adm, op->row.tenant, true, &h->t, NULL, err,
				   sizeof(err));
	if (r < 0) {
		create_fail(op, r, r == SP_ECANCELED ? NULL : err);
		return;
	}
	create_go(op);
}

static void
create_wait_cancel(struct op *op)
{
	admission_wait_cancel(op->mgr->adm, &op->waiter);
	op->waiting = false;
	create_fail(op, SP_ECANCELED, "the daemon is shutting down");
}

int
sandbox_create(struct sandbox_mgr *mgr, const char *tenant, json_t *spec,
	       sandbox_cb cb, void *arg, char *err, size_t errlen)
{
	struct hold *hold;
	const char *policy;
	struct op *op;
	json_t *norm;
	bool wait;
	int r;

	if (mgr->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	r = spec_normalise(mgr, spec, &norm, err, errlen);
	if (r < 0)
		return r;
	policy = json_string_value(json_object_get(norm, "provider"));
	/* Idle warm sandboxes on a burst provider would be paid for doing nothing. */
	if (strcmp(tenant, SANDBOX_POOL_TENANT) == 0 && strcmp(policy, PLACEMENT_AUTO) == 0)
		policy = PLACEMENT_LOCAL;
	r = create_place(mgr, policy, tenant, &hold, err, errlen);
	if (r < 0 && r != -EAGAIN) {
		json_decref(norm);
		return r;
	}
	wait = r == -EAGAIN;

	op = xcalloc(1, sizeof(*op));
	op->kind = OP_CREATE;
	op->mp = hold->mp;
	op->cb = cb;
	op->arg = arg;
	op->row.id = sandbox_new_id();
	op->row.tenant = xstrdup(tenant);
	op->row.provider = xstrdup(provider_name(op->mp->p));
	op->row.state = xstrdup("creating");
	op->row.spec_json = json_dumps(norm, JSON_COMPACT | JSON_SORT_KEYS);
	if (op->row.spec_json == NULL)
		fatalx("json_dumps failed");
	op->row.spec_hash = spec_hash(op->row.spec_json);
	op->row.created_ms = op->row.updated_ms = clock_wall_ms();
	hold_link(mgr, hold, op->row.id);

	/* Recorded before the provider is asked, so a crash leaves a trace. */
	r = store_sandbox_insert(mgr->store, &op->row);
	if (r < 0) {
		sp_errf(err, errlen, "database: %s", store_errmsg(mgr->store));
		free(op->row.state);
		op->row.state = xstrdup("failed");
		hold_sync(mgr, &op->row);	/* never recorded: give back what it holds */
		json_decref(norm);
		op_free(op);
		return SP_EDB;
	}

	op->image = xstrdup(json_string_value(json_object_get(norm, "image")));
	op->spec = (struct sp_sandbox_spec){
		.id = op->row.id,
		.tenant = op->row.tenant,
		.image = op->image,
		.spec_hash = op->row.spec_hash,
		.memory_bytes = json_integer_value(json_object_get(norm, "memory")),
		.nano_cpus = json_integer_value(json_object_get(norm, "nano_cpus")),
		.pids_limit = json_integer_value(json_object_get(norm, "pids")),
		.nofile = json_integer_value(json_object_get(norm, "nofile")),
		.tmp_bytes = json_integer_value(json_object_get(norm, "tmp")),
		.work_bytes = json_integer_value(json_object_get(norm, "work")),
	};
	json_decref(norm);
	if (mgr->hooks.prepare != NULL) {
		r = mgr->hooks.prepare(mgr->hooks.arg, op->mp->p, op->row.id, op->row.tenant,
				       &op->files_dir);
		if (r < 0) {
			row_set(mgr, &op->row, "failed", sp_strerror(r));
			sp_errf(err, errlen, "preparing the worker's files: %s", sp_strerror(r));
			op_free(op);
			return r;
		}
		op->spec.files_dir = op->files_dir;
	}
	op_link(mgr, op);
	if (wait) {
		/* max_starts: the row says "creating" while it waits its turn. */
		if (admission_wait(mgr->adm, &op->waiter, create_wake, op) == 0) {
			op->waiting = true;
			return 0;
		}
		r = admission_take(mgr->adm, tenant, true, &hold->t, NULL, err, errlen);
		if (r < 0) {
			row_set(mgr, &op->row, "failed", err);
			mgr_released(mgr, op->row.id);
			op_unlink(op);
			op_free(op);
			return r;
		}
	}
	r = provider_create(op->mp->p, &op->spec, create_created, op);
	if (r < 0) {
		row_set(mgr, &op->row, "failed", sp_strerror(r));
		sp_errf(err, errlen, "%s", sp_strerror(r));
		mgr_released(mgr, op->row.id);
		op_unlink(op);
		op_free(op);
		return r;
	}
	return 0;
}

/* --- destroy --- */

static void
destroy_done(void *arg, int status, const char *detail)
{
	struct op *op = arg;
	const char *why = detail ? detail : sp_strerror(status);

	if (status == 0) {
		row_set(op->mgr, &op->row, "destroyed", NULL);
		mgr_released(op->mgr, op->row.id);
	} else if (status != SP_ECANCELED) {
		/* Left in "destroying": reconcile retries it. */
		row_set(op->mgr, &op->row, "destroying", why);
		log_warn("sandbox '%s': destroy: %s", op->row.id, why);
	}
	op_unlink(op);
	op->cb(op->arg, status, status == 0 ? &op->row : NULL, status == 0 ? NULL : why);
	op_free(op);
}

int
sandbox_destroy(struct sandbox_mgr *mgr, const char *tenant, const char *id,
		sandbox_cb cb, void *arg, char *err, size_t errlen)
{
	struct sandbox_row row;
	struct mgr_provider *mp;
	struct op *op;
	int r;

	if (mgr->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	r = sandbox_get(mgr, tenant, id, &row);
	if (r < 0) {
		sp_errf(err, errlen, "no sandbox '%s'", id);
		return r;
	}
	if (op_holds(mgr, id)) {
		sp_errf(err, errlen, "sandbox '%s' is busy (%s); try again", id, row.state);
		store_sandbox_row_done(&row);
		return SP_ECONFLICT;
	}
	if (state_is(&row, "destroyed") || row.ref == NULL) {
		if (!state_is(&row, "destroyed"))
			row_set(mgr, &row, "destroyed", NULL);
		op_defer(mgr, &row, 0, NULL, cb, arg);
		store_sandbox_row_done(&row);
		return 0;
	}
	mp = mgr_ready_provider(mgr, row.provider, err, errlen);
	if (mp == NULL) {
		store_sandbox_row_done(&row);
		return SP_EUNAVAIL;
	}
	op = xcalloc(1, sizeof(*op));
	op->kind = OP_DESTROY;
	op->mp = mp;
	op->cb = cb;
	op->arg = arg;
	op->row = row;
	row_set(mgr, &op->row, "destroying", NULL);
	op_link(mgr, op);
	r = provider_destroy(mp->p, op->row.ref, destroy_done, op);
	if (r < 0) {
		sp_errf(err, errlen, "%s", sp_strerror(r));
		op_unlink(op);
		op_free(op);
		return r;
	}
	return 0;
}

int
sandbox_get(struct sandbox_mgr *mgr, const char *tenant, const char *id, struct sandbox_row *ret)
{
	struct sandbox_row row;
	int r;

	if (!sandbox_id_valid(id))
		return SP_EINVAL;
	r = store_sandbox_get(mgr->store, id, &row);
	if (r < 0)
		return r;
	if (strcmp(row.tenant, tenant) != 0) {
		store_sandbox_row_done(&row);
		return SP_ENOTFOUND;
	}
	*ret = row;
	return 0;
}

int
sandbox_list(struct sandbox_mgr *mgr, const char *tenant, bool all,
	     struct sandbox_row **ret, size_t *n)
{
	return store_sandbox_list(mgr->store, tenant, !all, ret, n);
}

/* --- exec --- */

static void
strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void
exec_free(struct sandbox_exec *ex)
{
	strv_free(ex->argv);
	strv_free(ex->env);
	free(ex->workdir);
	store_sandbox_row_done(&ex->op.row);
	free(ex);
}

static int
exec_output(void *arg, int fd, const char *data, size_t len)
{
	struct sandbox_exec *ex = arg;

	if (ex->canceled)
		return SP_ECANCELED;
	return ex->out(ex->op.arg, fd, data, len);
}

static void
exec_done(void *arg, int status, const struct sp_exec_result *res, const char *detail)
{
	struct sandbox_exec *ex = arg;
	uint64_t took = (uint64_t)(clock_wall_ms() - (int64_t)ex->started_ms);

	op_unlink(&ex->op);
	ex->done(ex->op.arg, status, status == 0 ? res : NULL, took,
		 status == 0 ? NULL : (detail ? detail : sp_strerror(status)));
	exec_free(ex);
}

static bool
env_name_valid(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
		return false;
	for (s++; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static int
exec_parse(struct sandbox_mgr *mgr, struct sandbox_exec *ex, json_t *body, uint64_t *timeout,
	   char *err, size_t errlen)
{
	const char *key;
	json_t *v, *cmd = NULL;
	size_t i, n;

	*timeout = mgr->cfg->exec_timeout_ms;
	json_object_foreach(body, key, v) {
		if (strcmp(key, "cmd") == 0) {
			cmd = v;
		} else if (strcmp(key, "env") == 0) {
			const char *k;
			json_t *ev;

			if (!json_is_object(v) || json_object_size(v) > SANDBOX_MAX_ENV) {
				sp_errf(err, errlen, "env: must be an object of at most %d strings",
				     SANDBOX_MAX_ENV);
				return SP_EINVAL;
			}
			ex->env = xcalloc(json_object_size(v) + 1, sizeof(char *));
			n = 0;
			json_object_foreach(v, k, ev) {
				if (!env_name_valid(k) || strlen(k) > 256 || !json_is_string(ev) ||
				    json_string_length(ev) > SANDBOX_MAX_ARG ||
				    memchr(json_string_value(ev), '\0', json_string_length(ev))) {
					sp_errf(err, errlen, "env: '%.64s' is not a valid NAME: string", k);
					return SP_EINVAL;
				}
				xasprintf(&ex->env[n++], "%s=%s", k, json_string_value(ev));
			}
		} else if (strcmp(key, "timeout_ms") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    (uint64_t)json_integer_value(v) > mgr->cfg->exec_timeout_max_ms) {
				sp_errf(err, errlen, "timeout_ms: must be between 1 and %" PRIu64,
				     mgr->cfg->exec_timeout_max_ms);
				return SP_EINVAL;
			}
			*timeout = json_integer_value(v);
		} else if (strcmp(key, "workdir") == 0) {
			if (!json_is_string(v) || json_string_value(v)[0] != '/' ||
			    json_string_length(v) > SANDBOX_MAX_PATH ||
			    memchr(json_string_value(v), '\0', json_string_length(v))) {
				sp_errf(err, errlen, "workdir: must be an absolute path");
				return SP_EINVAL;
			}
			ex->workdir = xstrdup(json_string_value(v));
		} else {
			sp_errf(err, errlen, "%s: unknown field", key);
			return SP_EINVAL;
		}
	}
	if (!json_is_array(cmd) || (n = json_array_size(cmd)) == 0 || n > SANDBOX_MAX_ARGV) {
		sp_errf(err, errlen, "cmd: must be an array of 1 to %d strings", SANDBOX_MAX_ARGV);
		return SP_EINVAL;
	}
	ex->argv = xcalloc(n + 1, sizeof(char *));
	for (i = 0; i < n; i++) {
		json_t *a = json_array_get(cmd, i);

		if (!json_is_string(a) || json_string_length(a) > SANDBOX_MAX_ARG ||
		    memchr(json_string_value(a), '\0', json_string_length(a)) ||
		    (i == 0 && json_string_length(a) == 0)) {
			sp_errf(err, errlen, "cmd[%zu]: must be a non-empty string without NUL", i);
			return SP_EINVAL;
		}
		ex->argv[i] = xstrdup(json_string_value(a));
	}
	return 0;
}

int
sandbox_exec(struct sandbox_mgr *mgr, const char *tenant, const char *id, json_t *body,
	     sandbox_output_cb out, sandbox_exec_cb done, void *arg,
	     struct sandbox_exec **ret, char *err, size_t errlen)
{
	struct sandbox_exec *ex;
	struct sp_exec_spec spec;
	uint64_t timeout;
	int r;

	if (mgr->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	ex = xcalloc(1, sizeof(*ex));
	ex->op.kind = OP_EXEC;
	ex->op.arg = arg;
	ex->out = out;
	ex->done = done;
	r = sandbox_get(mgr, tenant, id, &ex->op.row);
	if (r < 0) {
		sp_errf(err, errlen, r == SP_EINVAL ? "invalid sandbox id" : "no sandbox '%s'", id);
		free(ex);
		return r;
	}
	r = exec_parse(mgr, ex, body, &timeout, err, errlen);
	if (r < 0)
		goto out_free;
	if (!state_is(&ex->op.row, "running") || ex->op.row.ref == NULL) {
		sp_errf(err, errlen, "sandbox '%s' is %s, not running", id, ex->op.row.state);
		r = SP_ECONFLICT;
		goto out_free;
	}
	ex->op.mp = mgr_ready_provider(mgr, ex->op.row.provider, err, errlen);
	if (ex->op.mp == NULL) {
		r = SP_EUNAVAIL;
		goto out_free;
	}
	spec = (struct sp_exec_spec){
		.argv = (const char *const *)ex->argv,
		.env = (const char *const *)ex->env,
		.workdir = ex->workdir,
		.timeout_ms = timeout,
	};
	ex->started_ms = clock_wall_ms();
	op_link(mgr, &ex->op);
	r = provider_exec(ex->op.mp->p, ex->op.row.ref, &spec, exec_output, exec_done, ex, &ex->pex);
	if (r < 0) {
		sp_errf(err, errlen, "%s", sp_strerror(r));
		op_unlink(&ex->op);
		goto out_free;
	}
	if (ret != NULL)
		*ret = ex;
	return 0;

out_free:
	exec_free(ex);
	return r;
}

void
sandbox_exec_cancel(struct sandbox_exec *ex)
{
	if (ex->canceled)
		return;
	ex->canceled = true;
	provider_exec_cancel(ex->op.mp->p, ex->pex);
}

/* --- image --- */

static void
build_done(void *arg, int status, const char *detail)
{
	struct op *op = arg;

	op_unlink(op);
	op->done_cb(op->arg, status, detail);
	op_free(op);
}

int
sandbox_build_image(struct sandbox_mgr *mgr, sp_done_cb cb, void *arg, char *err, size_t errlen)
{
	struct mgr_provider *mp;
	struct op *op;
	int r;

	if (mgr->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	/* The default provider, or with "auto" the first that builds images. */
	mp = mgr_provider_by_name(mgr, mgr->cfg->default_provider);
	for (size_t i = 0; mp == NULL && i < mgr->nproviders; i++)
		if (provider_has(mgr->providers[i].p, SP_CAP_IMAGE))
			mp = &mgr->providers[i];
	mp = mp != NULL ? mgr_ready_provider(mgr, provider_name(mp->p), err, errlen) : NULL;
	if (mp == NULL) {
		if (err != NULL && errlen > 0 && err[0] == '\0')
			sp_errf(err, errlen, "no provider builds images");
		return SP_EUNAVAIL;
	}
	op = xcalloc(1, sizeof(*op));
	op->kind = OP_BUILD;
	op->mp = mp;
	op->done_cb = cb;
	op->arg = arg;
	op_link(mgr, op);
	r = provider_build_image(mp->p, build_done, op);
	if (r < 0) {
		sp_errf(err, errlen, r == -ENOTSUP ? "provider '%s' builds no image" : "%s: %s",
		     provider_name(mp->p), sp_strerror(r));
		op_unlink(op);
		op_free(op);
	}
	return r;
}

int
sandbox_mgr_room(struct sandbox_mgr *mgr, const char *tenant, const char *policy, unsigned *ret,
		 char *err, size_t errlen)
{
	const struct config *c = mgr->cfg;
	struct mgr_provider *mp = mgr_provider_by_name(mgr, policy);
	struct admission_counts host, tc;
	unsigned room, tmax, local = 0;

	if (placement_room(mgr->pl, policy, &room) < 0) {
		sp_errf(err, errlen, "unknown placement '%s'", policy);
		return SP_EINVAL;
	}
	admission_counts(mgr->adm, NULL, &host);
	if (host.starting + host.running < c->max_sandboxes)
		local = c->max_sandboxes - (host.starting + host.running);
	if (mp != NULL && !provider_has(mp->p, SP_CAP_LOCAL))
		sp_errf(err, errlen, "burst_max_sandboxes: room for %u more on '%s' (%u each)", room,
		     policy, c->burst_max_sandboxes);
	else if (mp != NULL || room <= local)
		sp_errf(err, errlen, "max_sandboxes: %u of %u starting or running on this host",
		     host.starting + host.running, c->max_sandboxes);
	else
		sp_errf(err, errlen, "max_sandboxes: %u of %u starting or running on this host, "
		     "room for %u more on burst providers (burst_max_sandboxes %u each)",
		     host.starting + host.running, c->max_sandboxes, room - local,
		     c->burst_max_sandboxes);
	admission_counts(mgr->adm, tenant, &tc);
	tmax = admission_tenant_limit(mgr->adm, tenant);
	if (tc.starting + tc.running >= tmax || tmax - (tc.starting + tc.running) < room) {
		room = tc.starting + tc.running >= tmax ? 0 : tmax - (tc.starting + tc.running);
		sp_errf(err, errlen, "tenant_max_sandboxes: %u of %u starting or running for tenant "
		     "'%s'", tc.starting + tc.running, tmax, tenant);
	}
	*ret = room;
	return 0;
}

int
sandbox_rebind(struct sandbox_mgr *mgr, const char *id, const char *from, const char *to,
	       char *err, size_t errlen)
{
	struct hold *h = hold_find(mgr, id);
	int r;

	if (h == NULL || strcmp(h->t.tenant, from) != 0) {
		sp_errf(err, errlen, "sandbox '%s' is not a live sandbox of tenant '%s'", id, from);
		return SP_ENOTFOUND;
	}
	r = admission_transfer(mgr->adm, &h->t, to, NULL, err, errlen);
	if (r < 0)
		return r;
	if (store_sandbox_set_tenant(mgr->store, id, from, to) < 0) {
		sp_errf(err, errlen, "database: %s", store_errmsg(mgr->store));
		(void)admission_transfer(mgr->adm, &h->t, from, NULL, NULL, 0);
		return SP_EDB;
	}
	return 0;
}

bool
sandbox_mgr_healthy(const struct sandbox_mgr *mgr)
{
	const char *policy = mgr->cfg->default_provider;
	bool any = false;

	for (size_t i = 0; i < mgr->nproviders; i++) {
		const struct mgr_provider *mp = &mgr->providers[i];
		bool ready = mp->state == PROV_READY;

		if (strcmp(provider_name(mp->p), policy) == 0)
			return ready;
		/* With auto: every local provider must be up; burst ones are optional. */
		if (!ready && provider_has(mp->p, SP_CAP_LOCAL))
			return false;
		any |= ready;
	}
	return any;
}

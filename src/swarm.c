/*
 * swarm: the swarm coordinator's owner of swarms and their agents. It spawns
 * and replaces agents through the sandbox manager, records them before their
 * sandbox exists, turns queue events into swarm events, and decides when a
 * swarm completed or cannot progress. Tasks themselves are the queue's; the
 * worker channel hands them out. Nothing here logs or speaks HTTP.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "clock.h"
#include "log.h"
#include "pool.h"
#include "pricing.h"
#include "provider.h"
#include "rpc.h"
#include "swarm.h"
#include "topology.h"
#include "xmalloc.h"

#define SWARM_TICK_MS		250
#define SWARM_TASK_GRACE_MS	30000	/* queue deadline past the command's own timeout */
#define SWARM_SPAWN_RETRY_MS	1000
#define SWARM_SPAWN_POLL_MS	10	/* while spawning, readiness is checked this often */
#define SWARM_AGENTS_MAX	TOPOLOGY_AGENTS_MAX

static const char *const swarm_migrations[] = {
	"CREATE TABLE swarms ("
	" id TEXT PRIMARY KEY, tenant TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,"
	" spec TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
	" spawned_ms INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE swarm_agents ("
	" sandbox TEXT PRIMARY KEY, swarm TEXT NOT NULL, idx INTEGER NOT NULL);"
	"CREATE INDEX swarm_agents_swarm ON swarm_agents(swarm);",
	/* Agents' inboxes, addressed by slot; an agent's slot survives a restart. */
	"CREATE TABLE swarm_messages ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT, swarm TEXT NOT NULL, slot INTEGER NOT NULL,"
	" sender INTEGER NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL);"
	"CREATE INDEX swarm_messages_inbox ON swarm_messages(swarm, slot, seq);"
	"ALTER TABLE swarm_agents ADD COLUMN slot INTEGER;",
};

static const char *const topo_names[TOPOLOGY__COUNT] = {
	[TOPOLOGY_MESH] = "mesh", [TOPOLOGY_HIERARCHICAL] = "hierarchical",
	[TOPOLOGY_RING] = "ring", [TOPOLOGY_STAR] = "star",
};

struct agent {
	char sandbox[SANDBOX_ID_LEN + 1];
	unsigned idx;
	bool live;			/* its sandbox is creating, starting or running */
	bool reap;			/* gone on its own: destroy it from the next tick */
	bool ready;			/* its worker registered once */
	unsigned slot;			/* its place in the topology, 0..want-1 (a replacement takes over) */
	uint64_t t0;			/* loop ms of a cold start, for the pool's metrics */
};

struct event {
	char *line;			/* NDJSON, with its newline */
	size_t len, cap;
};

struct swarm {
	struct swarm *next;
	struct swarm_mgr *m;
	char id[SWARM_ID_LEN + 1];
	char tenant[QUEUE_ID_MAX + 1];
	char state[16];
	char *reason;
	json_t *spec;			/* the normalised request (without tasks) */
	json_t *tmpl;			/* the sandbox spec each agent gets */
	unsigned want;			/* agents */
	uint64_t task_timeout_ms;
	unsigned retry_limit;
	uint64_t ttl_ms, idle_ms;
	int64_t created_ms, updated_ms, spawned_ms, idle_since_ms;
	struct agent *agents;
	size_t nagents, cap;
	unsigned spawning;		/* creates in flight */
	unsigned spawn_failures, lost;
	char *last_failure;
	int64_t retry_at;		/* loop ms: next spawn attempt after a refusal */
	int64_t stalled_since;		/* loop ms: work pending and no live agent, or 0 */
	int64_t rows_checked;		/* loop ms: agents' sandbox rows last read by progress() */
	struct event ev[SWARM_EVENTS_KEPT];
	uint64_t nev;			/* events ever (ev is a ring) */
	struct swarm_watch *watches;
};

struct swarm_watch {
	struct swarm_watch *next;
	struct swarm *sw;
	swarm_event_cb cb;
	void *arg;
};

/* A create in flight; m is NULL once the manager closed (the callback only frees). */
struct spawn {
	struct spawn *next;
	struct swarm_mgr *m;
	char swarm[SWARM_ID_LEN + 1];
};

struct swarm_mgr {
	uv_loop_t *loop;
	struct store *store;
	struct queue *queue;
	struct sandbox_mgr *mgr;
	struct workers *workers;
	struct pool *pool;
	const struct config *const *cfg;
	struct sandbox_hooks inner;
	struct swarm *swarms;
	struct swarm *preparing;	/* the swarm whose agent sandbox_create() is making */
	struct spawn *spawns;		/* creates in flight */
	uv_timer_t tick, kick;
	bool stopping;
	unsigned closing;
	void (*close_cb)(void *arg);
	void *close_arg;
};

static bool
terminal(const struct swarm *sw)
{
	return strcmp(sw->state, "failed") == 0 || strcmp(sw->state, "deleted") == 0;
}

static struct swarm *
swarm_find(struct swarm_mgr *m, const char *id)
{
	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		if (strcmp(sw->id, id) == 0)
			return sw;
	return NULL;
}

static struct swarm *
swarm_of_tenant(struct swarm_mgr *m, const char *tenant, const char *id)
{
	struct swarm *sw = swarm_find(m, id);

	return sw != NULL && strcmp(sw->tenant, tenant) == 0 ? sw : NULL;
}

static struct agent *
agent_find(struct swarm_mgr *m, const char *sandbox, struct swarm **ret)
{
	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		for (size_t i = 0; i < sw->nagents; i++)
			if (strcmp(sw->agents[i].sandbox, sandbox) == 0) {
				*ret = sw;
				return &sw->agents[i];
			}
	return NULL;
}

static unsigned
agents_live(const struct swarm *sw)
{
	unsigned n = 0;

	for (size_t i = 0; i < sw->nagents; i++)
		n += sw->agents[i].live;
	return n;
}

/* --- persistence (autocommit statements join the queue's group; flushed after) --- */

static int
db_exec(struct swarm_mgr *m, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r, i = 1;

	if (sqlite3_prepare_v2(store_db(m->store), sql, -1, &st, NULL) != SQLITE_OK)
		return SP_EDB;
	va_start(ap, fmt);
	for (const char *f = fmt; *f != '\0'; f++, i++) {
		if (*f == 's') {
			const char *s = va_arg(ap, const char *);

			if (s == NULL)
				sqlite3_bind_null(st, i);
			else
				sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
		} else {
			sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
		}
	}
	va_end(ap);
	r = sqlite3_step(st);
	sqlite3_finalize(st);
	if (r != SQLITE_DONE)
		return SP_EDB;
	return queue_flush(m->queue);
}

static int
db_save(struct swarm *sw)
{
	sw->updated_ms = clock_wall_ms();
	return db_exec(sw->m, "UPDATE swarms SET state = ?, reason = ?, updated_ms = ?,"
		       " spawned_ms = ?, lost = ? WHERE id = ?", "ssiiis", sw->state, sw->reason,
		       sw->updated_ms, sw->spawned_ms, (int64_t)sw->lost, sw->id);
}

/* --- events --- */

static void watch_end(struct swarm_watch *w, const char *line, size_t len);
static void kick_cb(uv_timer_t *t);
static int agent_add(struct swarm *sw, const char *id);

/*
 * Record an event, given as the JSON object's members without braces, and
 * hand it to the watchers. Task events come here preformatted: one per task
 * state change, on the dispatch path.
 */
static void
emit_members(struct swarm *sw, const char *members, size_t mlen)
{
	struct event *e = &sw->ev[sw->nev % SWARM_EVENTS_KEPT];
	struct swarm_watch *w, *next;
	char tail[128];
	size_t tlen;
	bool final;

	tlen = (size_t)snprintf(tail, sizeof(tail),
				",\"seq\":%llu,\"time_ms\":%lld,\"swarm\":\"%s\"}\n",
				(unsigned long long)sw->nev, (long long)clock_wall_ms(), sw->id);
	if (e->cap < mlen + tlen + 2) {
		free(e->line);
		e->cap = mlen + tlen + 64;
		e->line = xmalloc(e->cap);
	}
	e->line[0] = '{';
	memcpy(e->line + 1, members, mlen);
	memcpy(e->line + 1 + mlen, tail, tlen + 1);
	e->len = 1 + mlen + tlen;
	sw->nev++;
	final = strcmp(sw->state, "completed") == 0 || terminal(sw);
	for (w = sw->watches; w != NULL; w = next) {
		next = w->next;
		if (final)
			watch_end(w, e->line, e->len);
		else
			w->cb(w->arg, e->line, e->len, false);
	}
}

static void
emit(struct swarm *sw, json_t *ev)
{
	char *text = json_dumps(ev, JSON_COMPACT);

	json_decref(ev);
	if (text == NULL || text[0] != '{' || strlen(text) < 2)
		fatalx("json_dumps failed");
	emit_members(sw, text + 1, strlen(text) - 2);
	free(text);
}

static void
set_state(struct swarm *sw, const char *state, const char *reason)
{
	json_t *ev;

	if (strcmp(sw->state, state) == 0)
		return;
	snprintf(sw->state, sizeof(sw->state), "%s", state);
	if (reason != NULL) {
		free(sw->reason);
		sw->reason = xstrdup(reason);
	}
	(void)db_save(sw);
	ev = json_pack("{s:s, s:s}", "type", "swarm", "state", state);
	if (reason != NULL)
		json_object_set_new(ev, "reason", json_string(reason));
	emit(sw, ev);
	if (terminal(sw)) {
		/* Nobody can receive any more: the inboxes go with the swarm. */
		(void)db_exec(sw->m, "DELETE FROM swarm_messages WHERE swarm = ?", "s", sw->id);
		/* Over for good: later watchers get the final line only; keep no history. */
		for (size_t i = 0; i < SWARM_EVENTS_KEPT; i++) {
			free(sw->ev[i].line);
			sw->ev[i].line = NULL;
		}
		sw->nev = 0;
	}
}

/* --- agents --- */

static void
destroyed(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	(void)arg, (void)status, (void)row, (void)detail;
}

static void
agent_destroy(struct swarm *sw, struct agent *a)
{
	char err[256];

	a->live = false;
	(void)sandbox_destroy(sw->m->mgr, sw->tenant, a->sandbox, destroyed, NULL, err,
			      sizeof(err));
}

static void
destroy_id(struct swarm *sw, const char *id)
{
	char err[256];

	(void)sandbox_destroy(sw->m->mgr, sw->tenant, id, destroyed, NULL, err, sizeof(err));
}

static void
teardown(struct swarm *sw)
{
	for (size_t i = 0; i < sw->nagents; i++)
		if (sw->agents[i].live)
			agent_destroy(sw, &sw->agents[i]);
}

static void
fail(struct swarm *sw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail(struct swarm *sw, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	queue_cancel_swarm(sw->m->queue, sw->id, NULL);
	teardown(sw);
	set_state(sw, "failed", reason);
}

static void
agent_event(struct swarm *sw, const char *sandbox, const char *state, const char *detail)
{
	json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "agent", "sandbox", sandbox,
			       "state", state);

	if (detail != NULL)
		json_object_set_new(ev, "detail", json_string(detail));
	emit(sw, ev);
}

static void
spawned(void *arg, int status, const struct sandbox_row *row, const char *detail)
{
	struct spawn *sp = arg;
	struct swarm *sw, *owner;
	struct agent *a;

	if (sp->m == NULL) {
		free(sp);
		return;
	}
	for (struct spawn **pp = &sp->m->spawns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == sp) {
			*pp = sp->next;
			break;
		}
	sw = swarm_find(sp->m, sp->swarm);

	if (sw != NULL)
		sw->spawning--;
	if (status == 0 && row != NULL) {
		a = agent_find(sp->m, row->id, &owner);
		/* A swarm deleted or failed meanwhile gets no new agent. */
		if (sw == NULL || terminal(sw)) {
			if (a != NULL && owner != NULL)
				agent_destroy(owner, a);
		} else {
			agent_event(sw, row->id, "running", NULL);
		}
		/* A start slot freed: swarms waiting for one go on. */
		if (!sp->m->stopping && !uv_is_active((uv_handle_t *)&sp->m->kick))
			uv_timer_start(&sp->m->kick, kick_cb, 0, 0);
	} else if (sw != NULL && status != SP_ECANCELED) {
		/* A provider that says "no room" (429) is backed off by placement, not a failure. */
		if (status != SP_ELIMIT)
			sw->spawn_failures++;
		free(sw->last_failure);
		sw->last_failure = xstrdup(detail ? detail : sp_strerror(status));
		if (!terminal(sw) && sw->spawn_failures > 2 * sw->want + 2)
			fail(sw, "cannot start agents: %u creates failed (last: %s)",
			     sw->spawn_failures, sw->last_failure);
		else
			sw->retry_at = (int64_t)uv_now(sp->m->loop) + SWARM_SPAWN_RETRY_MS;
	}
	free(sp);
}

/* Start one agent; the prepare hook records it under m->preparing. */
static int
spawn_one(struct swarm *sw, char *err, size_t errlen)
{
	struct swarm_mgr *m = sw->m;
	struct spawn *sp = xcalloc(1, sizeof(*sp));
	int r;

	sp->m = m;
	memcpy(sp->swarm, sw->id, sizeof(sp->swarm));
	m->preparing = sw;
	r = sandbox_create(m->mgr, sw->tenant, sw->tmpl, spawned, sp, err, errlen);
	m->preparing = NULL;
	if (r < 0) {
		free(sp);
		return r;
	}
	sp->next = m->spawns;
	m->spawns = sp;
	sw->spawning++;
	return 0;
}

/* Whether sw should have its agents now. */
static bool
wants_agents(const struct swarm *sw)
{
	return strcmp(sw->state, "spawning") == 0 || strcmp(sw->state, "running") == 0 ||
	       (strcmp(sw->state, "completed") == 0 && sw->idle_since_ms == 0);
}

static void
fill(struct swarm *sw)
{
	char err[512];
	int r;

	if (sw->m->stopping || !wants_agents(sw) || (int64_t)uv_now(sw->m->loop) < sw->retry_at)
		return;
	/*
	 * An agent counts as live from its prepare hook, inside sandbox_create().
	 * The manager's placement and admission decide where each goes, queue
	 * it for a start slot (max_starts) or refuse it (caps, backoff).
	 */
	while (agents_live(sw) < sw->want) {
		if (pool_serves(sw->m->pool, sw->tmpl)) {
			char id[SANDBOX_ID_LEN + 1];

			r = pool_claim(sw->m->pool, sw->tmpl, sw->tenant, id);
			if (r == 0) {
				if (agent_add(sw, id) == 0) {
					sw->agents[sw->nagents - 1].ready = true;
					agent_event(sw, id, "running", "warm");
					continue;
				}
				destroy_id(sw, id);
			} else if (r == SP_ELIMIT) {
				/* The tenant's cap: a cold start would be refused too. */
				snprintf(err, sizeof(err), "tenant_max_sandboxes: the tenant '%s' is "
					 "at its cap", sw->tenant);
				goto out_retry;
			}
		}
		r = spawn_one(sw, err, sizeof(err));
		if (r == SP_EINVAL) {
			fail(sw, "cannot start agents: %s", err);
			return;
		}
		if (r < 0)
			goto out_retry;
	}
	return;

out_retry:
	/* Limits, backoff and providers not ready: try again, until the stall check. */
	free(sw->last_failure);
	sw->last_failure = xstrdup(err);
	sw->retry_at = (int64_t)uv_now(sw->m->loop) + SWARM_SPAWN_RETRY_MS;
}

/*
 * The agent's sandbox stopped or went away (its tasks were re-queued by the
 * worker channel). Called from the manager's hooks: only bookkeeping here;
 * the next tick destroys what is left, replaces it or fails the swarm.
 */
static void
agent_gone(struct swarm_mgr *m, const char *sandbox, const char *why)
{
	struct swarm *sw;
	struct agent *a = agent_find(m, sandbox, &sw);
	struct sandbox_row row;
	char detail[128];

	if (a == NULL || !a->live)
		return;
	snprintf(detail, sizeof(detail), "%s", why);
	if (sandbox_get(m->mgr, sw->tenant, sandbox, &row) == 0) {
		if (row.oom_killed)
			snprintf(detail, sizeof(detail), "oom-killed");
		else if (strcmp(row.state, "exited") == 0)
			snprintf(detail, sizeof(detail), "exited with %d", row.exit_code);
		store_sandbox_row_done(&row);
	}
	a->live = false;
	a->reap = true;
	if (terminal(sw) || (strcmp(sw->state, "completed") == 0 && sw->idle_since_ms != 0))
		return;
	sw->lost++;
	free(sw->last_failure);
	sw->last_failure = xstrdup(detail);
	(void)db_save(sw);
	agent_event(sw, sandbox, "lost", detail);
	if (!m->stopping && !uv_is_active((uv_handle_t *)&m->kick))
		uv_timer_start(&m->kick, kick_cb, 0, 0);
}

/* Whether slot k is one of sw's and no live agent holds it. */
static bool
slot_free(const struct swarm *sw, unsigned k)
{
	if (k >= sw->want)
		return false;
	for (size_t i = 0; i < sw->nagents; i++)
		if (sw->agents[i].live && sw->agents[i].slot == k)
			return false;
	return true;
}

/* The lowest topology slot no live agent holds. */
static unsigned
free_slot(const struct swarm *sw)
{
	for (unsigned k = 0;; k++) {
		bool used = false;

		for (size_t i = 0; i < sw->nagents && !used; i++)
			used = sw->agents[i].live && sw->agents[i].slot == k;
		if (!used)
			return k;
	}
}

/* Record sandbox id as sw's next agent (committed) and count it live. */
static int
agent_add(struct swarm *sw, const char *id)
{
	unsigned slot = free_slot(sw);
	struct agent *a;
	int r;

	r = db_exec(sw->m, "INSERT INTO swarm_agents (sandbox, swarm, idx, slot) VALUES"
		    " (?, ?, ?, ?)", "ssii", id, sw->id, (int64_t)sw->nagents, (int64_t)slot);
	if (r < 0)
		return r;
	if (sw->nagents == sw->cap) {
		sw->cap = sw->cap ? 2 * sw->cap : 8;
		sw->agents = xrealloc(sw->agents, sw->cap * sizeof(*sw->agents));
	}
	a = &sw->agents[sw->nagents];
	memset(a, 0, sizeof(*a));
	snprintf(a->sandbox, sizeof(a->sandbox), "%s", id);
	a->idx = (unsigned)sw->nagents++;
	a->slot = slot;
	a->live = true;
	return 0;
}

static void
hook_provider_ready(void *arg, struct sp_provider *p)
{
	struct swarm_mgr *m = arg;

	if (m->inner.provider_ready != NULL)
		m->inner.provider_ready(m->inner.arg, p);
}

static int
hook_prepare(void *arg, struct sp_provider *p, const char *id, const char *tenant,
	     char **files_dir)
{
	struct swarm_mgr *m = arg;
	struct swarm *sw = m->preparing;
	int r;

	if (m->inner.prepare != NULL) {
		r = m->inner.prepare(m->inner.arg, p, id, tenant, files_dir);
		if (r < 0)
			return r;
	}
	if (sw == NULL)
		return 0;
	/* Committed before the provider creates anything: a restart finds every agent. */
	r = agent_add(sw, id);
	if (r < 0) {
		free(*files_dir);
		*files_dir = NULL;
		return r;
	}
	sw->agents[sw->nagents - 1].t0 = uv_now(m->loop);
	return 0;
}

static void
hook_stopped(void *arg, const char *id)
{
	struct swarm_mgr *m = arg;

	if (m->inner.stopped != NULL)
		m->inner.stopped(m->inner.arg, id);
	agent_gone(m, id, "stopped");
}

static void
hook_released(void *arg, const char *id)
{
	struct swarm_mgr *m = arg;

	if (m->inner.released != NULL)
		m->inner.released(m->inner.arg, id);
	agent_gone(m, id, "destroyed");
}

void
swarm_hooks(struct swarm_mgr *m, const struct sandbox_hooks *inner, struct sandbox_hooks *ret)
{
	m->inner = *inner;
	*ret = (struct sandbox_hooks){ .provider_ready = hook_provider_ready,
		.prepare = hook_prepare, .stopped = hook_stopped, .released = hook_released,
		.arg = m };
}

static const char *
swarm_of(void *arg, const char *sandbox)
{
	struct swarm *sw;
	struct agent *a = agent_find(arg, sandbox, &sw);

	return a != NULL && a->live && !terminal(sw) ? sw->id : NULL;
}

/* --- progress --- */

static void
progress(struct swarm *sw)
{
	struct swarm_mgr *m = sw->m;
	struct queue_counts c;
	int64_t open, total = 0, now = (int64_t)uv_now(m->loop);
	struct sandbox_row row;
	bool all_ready = true, recheck;

	for (size_t i = 0; i < sw->nagents; i++)
		if (sw->agents[i].reap) {
			sw->agents[i].reap = false;
			agent_destroy(sw, &sw->agents[i]);
		}
	if (terminal(sw))
		return;
	if (sw->lost > 2 * sw->want + 2) {
		fail(sw, "agents keep dying: %u sandboxes lost (last: %s)", sw->lost,
		     sw->last_failure ? sw->last_failure : "?");
		return;
	}
	/*
	 * Agents whose sandbox left running without a hook (reconcile after a
	 * restart): a store read per agent, so once per tick, not at every kick
	 * (a kick follows every finished task).
	 */
	recheck = now - sw->rows_checked >= SWARM_TICK_MS;
	if (recheck)
		sw->rows_checked = now;
	for (size_t i = 0; i < sw->nagents; i++) {
		struct agent *a = &sw->agents[i];

		if (!a->live)
			continue;
		if (recheck && sandbox_get(m->mgr, sw->tenant, a->sandbox, &row) == 0) {
			bool gone = strcmp(row.state, "creating") != 0 &&
				    strcmp(row.state, "starting") != 0 &&
				    strcmp(row.state, "running") != 0;

			store_sandbox_row_done(&row);
			if (gone) {
				agent_gone(m, a->sandbox, "gone");
				continue;
			}
		}
		if (m->workers != NULL && !workers_connected(m->workers, a->sandbox)) {
			all_ready = false;
		} else if (!a->ready) {
			a->ready = true;
			if (m->pool != NULL && a->t0 != 0)
				pool_cold(m->pool, sw->tmpl, (uv_now(m->loop) - a->t0) * 1000000);
		}
	}
	if (sw->ttl_ms > 0 && clock_wall_ms() - sw->created_ms >= (int64_t)sw->ttl_ms) {
		fail(sw, "ttl of %llu ms expired", (unsigned long long)sw->ttl_ms);
		return;
	}
	if (queue_counts(m->queue, sw->id, &c) < 0)
		return;
	for (int s = 0; s < QUEUE_STATE__COUNT; s++)
		total += c.n[s];
	open = c.n[QUEUE_QUEUED] + c.n[QUEUE_ASSIGNED] + c.n[QUEUE_RUNNING];
	if (strcmp(sw->state, "spawning") == 0 && agents_live(sw) >= sw->want && all_ready) {
		sw->spawned_ms = clock_wall_ms() - sw->created_ms;
		set_state(sw, "running", NULL);
	} else if (strcmp(sw->state, "spawning") == 0 && !m->stopping &&
		   !uv_is_active((uv_handle_t *)&m->kick)) {
		/* Look again soon: "all agents registered" is what callers wait for. */
		uv_timer_start(&m->kick, kick_cb, SWARM_SPAWN_POLL_MS, 0);
	}
	/* Done is done, even while agents a provider refuses are still wanted. */
	if ((strcmp(sw->state, "running") == 0 || strcmp(sw->state, "spawning") == 0) &&
	    total > 0 && open == 0) {
		sw->idle_since_ms = 0;
		set_state(sw, "completed", NULL);
	} else if (strcmp(sw->state, "completed") == 0 && open > 0) {
		sw->idle_since_ms = 0;
		set_state(sw, "running", NULL);
	}
	if (strcmp(sw->state, "completed") == 0 && sw->idle_ms > 0 && sw->idle_since_ms == 0 &&
	    clock_wall_ms() - sw->updated_ms >= (int64_t)sw->idle_ms) {
		/* Idle past its timeout: the agents go; new tasks bring them back. */
		sw->idle_since_ms = clock_wall_ms();
		teardown(sw);
	}
	/* Work pending, and no agent for SWARM_STALL_MS: fail rather than hang. */
	if (open > 0 && agents_live(sw) == 0) {
		if (sw->stalled_since == 0)
			sw->stalled_since = now;
		else if (now - sw->stalled_since >= SWARM_STALL_MS) {
			fail(sw, "no agent could be started for %d s (last: %s)",
			     SWARM_STALL_MS / 1000, sw->last_failure ? sw->last_failure :
			     "none");
			return;
		}
	} else {
		sw->stalled_since = 0;
	}
	if (strcmp(sw->state, "completed") == 0 && open > 0)
		sw->idle_since_ms = 0;
	fill(sw);
}

static void
tick(uv_timer_t *t)
{
	struct swarm_mgr *m = t->data;

	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		progress(sw);
}

static void
kick_cb(uv_timer_t *t)
{
	tick(t);
}

static void
queue_event(void *arg, int64_t task, const char *swarm, enum queue_state from,
	    enum queue_state to)
{
	struct swarm_mgr *m = arg;
	struct swarm *sw = swarm_find(m, swarm);
	char text[160];
	int n;

	if (sw == NULL)
		return;
	/* State names are fixed identifiers: nothing to escape. */
	if (from != QUEUE_STATE__COUNT)
		n = snprintf(text, sizeof(text), "\"type\":\"task\",\"task\":%lld,\"state\":\"%s\","
			     "\"from\":\"%s\"", (long long)task, queue_state_name(to),
			     queue_state_name(from));
	else
		n = snprintf(text, sizeof(text), "\"type\":\"task\",\"task\":%lld,\"state\":\"%s\"",
			     (long long)task, queue_state_name(to));
	emit_members(sw, text, (size_t)n);
	/* State decisions read the queue: not from inside its callback. */
	if (queue_state_terminal(to) && !m->stopping && !uv_is_active((uv_handle_t *)&m->kick))
		uv_timer_start(&m->kick, kick_cb, 0, 0);
}

/* --- load --- */

static int
template_of(struct swarm *sw)
{
	json_t *tmpl = json_object_get(sw->spec, "template");
	const char *placement = json_string_value(json_object_get(sw->spec, "placement"));

	sw->tmpl = tmpl != NULL ? json_deep_copy(tmpl) : json_object();
	/* Left out only when it is the default policy, so the warm pool can serve it. */
	if (placement != NULL && strcmp(placement, (*sw->m->cfg)->default_provider) != 0)
		json_object_set_new(sw->tmpl, "provider", json_string(placement));
	sw->want = (unsigned)json_integer_value(json_object_get(sw->spec, "agents"));
	sw->task_timeout_ms = (uint64_t)json_integer_value(json_object_get(sw->spec,
							   "task_timeout_ms"));
	sw->retry_limit = (unsigned)json_integer_value(json_object_get(sw->spec, "retry_limit"));
	sw->ttl_ms = (uint64_t)json_integer_value(json_object_get(sw->spec, "ttl_ms"));
	sw->idle_ms = (uint64_t)json_integer_value(json_object_get(sw->spec, "idle_timeout_ms"));
	return 0;
}

static struct swarm *
swarm_alloc(struct swarm_mgr *m)
{
	struct swarm *sw = xcalloc(1, sizeof(*sw));

	sw->m = m;
	return sw;
}

static void
swarm_free(struct swarm *sw)
{
	for (size_t i = 0; i < SWARM_EVENTS_KEPT; i++)
		free(sw->ev[i].line);
	free(sw->agents);
	free(sw->reason);
	free(sw->last_failure);
	json_decref(sw->spec);
	json_decref(sw->tmpl);
	free(sw);
}

static int
load(struct swarm_mgr *m)
{
	sqlite3 *db = store_db(m->store);
	sqlite3_stmt *st, *ag;
	struct sandbox_row row;
	int r;

	/* Inboxes of swarms that ended while the daemon was going down. */
	if (sqlite3_exec(db, "DELETE FROM swarm_messages WHERE swarm IN (SELECT id FROM swarms"
	    " WHERE state IN ('failed', 'deleted'))", NULL, NULL, NULL) != SQLITE_OK)
		return SP_EDB;
	if (sqlite3_prepare_v2(db, "SELECT id, tenant, state, reason, spec, created_ms,"
	    " updated_ms, spawned_ms, lost FROM swarms ORDER BY created_ms", -1, &st,
	    NULL) != SQLITE_OK)
		return SP_EDB;
	if (sqlite3_prepare_v2(db, "SELECT sandbox, idx, slot FROM swarm_agents WHERE swarm = ?"
	    " ORDER BY idx", -1, &ag, NULL) != SQLITE_OK) {
		sqlite3_finalize(st);
		return SP_EDB;
	}
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct swarm *sw = swarm_alloc(m);
		const char *reason = (const char *)sqlite3_column_text(st, 3);

		snprintf(sw->id, sizeof(sw->id), "%s", sqlite3_column_text(st, 0));
		snprintf(sw->tenant, sizeof(sw->tenant), "%s", sqlite3_column_text(st, 1));
		snprintf(sw->state, sizeof(sw->state), "%s", sqlite3_column_text(st, 2));
		sw->reason = reason ? xstrdup(reason) : NULL;
		sw->spec = json_loads((const char *)sqlite3_column_text(st, 4), 0, NULL);
		if (sw->spec == NULL)
			sw->spec = json_object();
		sw->created_ms = sqlite3_column_int64(st, 5);
		sw->updated_ms = sqlite3_column_int64(st, 6);
		sw->spawned_ms = sqlite3_column_int64(st, 7);
		sw->lost = (unsigned)sqlite3_column_int(st, 8);
		template_of(sw);
		sqlite3_bind_text(ag, 1, sw->id, -1, SQLITE_TRANSIENT);
		while (sqlite3_step(ag) == SQLITE_ROW) {
			struct agent *a;

			if (sw->nagents == sw->cap) {
				sw->cap = sw->cap ? 2 * sw->cap : 8;
				sw->agents = xrealloc(sw->agents, sw->cap * sizeof(*sw->agents));
			}
			a = &sw->agents[sw->nagents++];
			memset(a, 0, sizeof(*a));
			snprintf(a->sandbox, sizeof(a->sandbox), "%s", sqlite3_column_text(ag, 0));
			a->idx = (unsigned)sqlite3_column_int(ag, 1);
			if (store_sandbox_get(m->store, a->sandbox, &row) == 0) {
				bool live = strcmp(row.state, "creating") == 0 ||
					    strcmp(row.state, "starting") == 0 ||
					    strcmp(row.state, "running") == 0;

				store_sandbox_row_done(&row);
				if (live) {
					/* The slot it held (its inbox's address), unless taken. */
					unsigned slot = free_slot(sw);

					if (sqlite3_column_type(ag, 2) == SQLITE_INTEGER &&
					    slot_free(sw, (unsigned)sqlite3_column_int(ag, 2)))
						slot = (unsigned)sqlite3_column_int(ag, 2);
					a->slot = slot;
					a->live = true;
				}
			}
		}
		sqlite3_reset(ag);
		sw->next = m->swarms;
		m->swarms = sw;
	}
	sqlite3_finalize(ag);
	sqlite3_finalize(st);
	return r == SQLITE_DONE ? 0 : SP_EDB;
}

/* --- messages between agents (worker routes) --- */

static struct agent *
caller(struct swarm_mgr *m, const struct rpc_call *call, struct rpc_response *resp,
       struct swarm **ret)
{
	struct agent *a = agent_find(m, call->claims->sub, ret);

	if (a == NULL || !a->live || terminal(*ret)) {
		rpc_reply_error(resp, 403, "forbidden", "this sandbox is not an agent of a swarm");
		return NULL;
	}
	return a;
}

static void
topology_of(const struct swarm *sw, struct topology *t)
{
	enum topology_kind k = TOPOLOGY_DEFAULT;

	(void)topology_parse(json_string_value(json_object_get(sw->spec, "topology")), &k);
	*t = (struct topology){ .kind = k, .n = sw->want, .lead_of = NULL, .hub = 0 };
}

/* GET /v1/worker/swarm: who am I in my swarm. */
static void
r_whoami(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct swarm *sw;
	struct agent *a = caller(arg, call, resp, &sw);
	struct topology t;
	size_t lead;
	json_t *o;

	if (a == NULL)
		return;
	o = json_pack("{s:s, s:i, s:i, s:O}", "swarm", sw->id, "agent", (int)a->slot, "agents",
		      (int)sw->want, "topology", json_object_get(sw->spec, "topology"));
	/* In a tree an agent must know its lead (the root is its own). */
	topology_of(sw, &t);
	if (topology_lead(&t, a->slot, &lead) == 0)
		json_object_set_new(o, "lead", json_integer((json_int_t)lead));
	rpc_reply_json(resp, 200, o);
}

/* One statement without results on the store's connection. */
static int
msg_exec(struct swarm_mgr *m, const char *sql)
{
	return sqlite3_exec(store_db(m->store), sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : SP_EDB;
}

/* Our own transaction: the queue's open group commits first (queue.h). */
static int
msg_begin(struct swarm_mgr *m)
{
	int r;

	if ((r = queue_flush(m->queue)) < 0)
		return r;
	return msg_exec(m, "BEGIN IMMEDIATE");
}

/*
 * Commit when r is 0, else roll back; r, or SP_EDB when the commit failed.
 * A database error (r is SP_EDB) gets its message into err here.
 */
static int
msg_end(struct swarm_mgr *m, int r, char *err, size_t errlen)
{
	if (r == 0 && (r = msg_exec(m, "COMMIT")) == 0)
		return 0;
	if (r == SP_EDB)
		sp_errf(err, errlen, "database: %s", sqlite3_errmsg(store_db(m->store)));
	(void)msg_exec(m, "ROLLBACK");
	return r;
}

/* Store text from slot from in each target's inbox: all of them, or none. */
static int
msg_store(struct swarm *sw, unsigned from, const size_t *targets, size_t n, const char *text,
	  char *err, size_t errlen)
{
	sqlite3 *db = store_db(sw->m->store);
	sqlite3_stmt *count = NULL, *ins = NULL;
	int64_t now = clock_wall_ms();
	int r;

	if ((r = msg_begin(sw->m)) < 0) {
		sp_errf(err, errlen, "database: %s", sqlite3_errmsg(db));
		return r;
	}
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM swarm_messages WHERE swarm = ? AND"
	    " slot = ?", -1, &count, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO swarm_messages (swarm, slot, sender, body,"
	    " created_ms) VALUES (?, ?, ?, ?, ?)", -1, &ins, NULL) != SQLITE_OK) {
		r = SP_EDB;
		goto out_end;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		sqlite3_bind_text(count, 1, sw->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(count, 2, (int64_t)targets[i]);
		if (sqlite3_step(count) != SQLITE_ROW)
			r = SP_EDB;
		else if (sqlite3_column_int64(count, 0) >= SWARM_INBOX_MAX) {
			sp_errf(err, errlen, "agent %zu's inbox is full (%d messages waiting)",
			     targets[i], SWARM_INBOX_MAX);
			r = SP_ELIMIT;
		}
		sqlite3_reset(count);
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		sqlite3_bind_text(ins, 1, sw->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 2, (int64_t)targets[i]);
		sqlite3_bind_int64(ins, 3, from);
		sqlite3_bind_text(ins, 4, text, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 5, now);
		if (sqlite3_step(ins) != SQLITE_DONE)
			r = SP_EDB;
		sqlite3_reset(ins);
	}
out_end:
	sqlite3_finalize(count);
	sqlite3_finalize(ins);
	return msg_end(sw->m, r, err, errlen);
}

int
swarm_send(struct swarm_mgr *m, const char *sandbox, json_t *to, json_t *body,
	   size_t *ret_delivered, char *err, size_t errlen)
{
	struct swarm *sw;
	struct agent *a = agent_find(m, sandbox, &sw);
	size_t targets[SWARM_AGENTS_MAX], n = 0, len;
	struct topology t;
	char *text;
	int r;

	if (a == NULL || !a->live || terminal(sw)) {
		sp_errf(err, errlen, "this sandbox is not an agent of a swarm");
		return SP_ENOTFOUND;
	}
	if (body == NULL || (text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
		sp_errf(err, errlen, "body: any JSON value is required");
		return SP_EINVAL;
	}
	if ((len = strlen(text)) > SWARM_MESSAGE_MAX) {
		free(text);
		sp_errf(err, errlen, "a message body is at most %d bytes as JSON, this one is %zu",
		     SWARM_MESSAGE_MAX, len);
		return -E2BIG;
	}
	topology_of(sw, &t);
	if (json_is_string(to) && strcmp(json_string_value(to), "*") == 0) {
		r = topology_targets(&t, a->slot, targets, SWARM_AGENTS_MAX, &n);
	} else if (json_is_integer(to) && json_integer_value(to) >= 0 &&
		   json_integer_value(to) < (json_int_t)sw->want) {
		targets[0] = (size_t)json_integer_value(to);
		n = 1;
		r = topology_may_send(&t, a->slot, targets[0], err, errlen);
	} else {
		sp_errf(err, errlen, "to: an agent number 0..%u or \"*\"", sw->want - 1);
		r = SP_EINVAL;
	}
	/*
	 * Every target slot gets it, held by a live agent or not: a message to an
	 * agent being replaced waits for the replacement in the same slot.
	 */
	if (r == 0 && n > 0)
		r = msg_store(sw, a->slot, targets, n, text, err, errlen);
	free(text);
	if (r == 0)
		*ret_delivered = n;
	return r;
}

int
swarm_receive(struct swarm_mgr *m, const char *sandbox, json_t **ret, char *err,
	      size_t errlen)
{
	struct swarm *sw;
	struct agent *a = agent_find(m, sandbox, &sw);
	sqlite3 *db = store_db(m->store);
	sqlite3_stmt *sel = NULL, *del = NULL;
	json_t *msgs;
	int64_t last = 0;
	int r;

	if (a == NULL || !a->live || terminal(sw)) {
		sp_errf(err, errlen, "this sandbox is not an agent of a swarm");
		return SP_ENOTFOUND;
	}
	/* Read and delete in one transaction: each message is received once. */
	if ((r = msg_begin(m)) < 0) {
		sp_errf(err, errlen, "database: %s", sqlite3_errmsg(db));
		return r;
	}
	msgs = json_array();
	if (sqlite3_prepare_v2(db, "SELECT seq, sender, body FROM swarm_messages WHERE swarm = ?"
	    " AND slot = ? ORDER BY seq", -1, &sel, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "DELETE FROM swarm_messages WHERE swarm = ? AND slot = ? AND"
	    " seq <= ?", -1, &del, NULL) != SQLITE_OK) {
		r = SP_EDB;
		goto out_end;
	}
	sqlite3_bind_text(sel, 1, sw->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(sel, 2, a->slot);
	while ((r = sqlite3_step(sel)) == SQLITE_ROW) {
		json_t *body = json_loads((const char *)sqlite3_column_text(sel, 2),
					  JSON_DECODE_ANY, NULL);

		last = sqlite3_column_int64(sel, 0);
		json_array_append_new(msgs, json_pack("{s:I, s:o}", "from",
				      (json_int_t)sqlite3_column_int64(sel, 1), "body",
				      body != NULL ? body : json_null()));
	}
	r = r == SQLITE_DONE ? 0 : SP_EDB;
	if (r == 0 && last > 0) {
		sqlite3_bind_text(del, 1, sw->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(del, 2, a->slot);
		sqlite3_bind_int64(del, 3, last);
		r = sqlite3_step(del) == SQLITE_DONE ? 0 : SP_EDB;
	}
out_end:
	sqlite3_finalize(sel);
	sqlite3_finalize(del);
	if ((r = msg_end(m, r, err, errlen)) < 0) {
		json_decref(msgs);
		return r;
	}
	*ret = msgs;
	return 0;
}

/*
 * POST /v1/worker/messages {"to": N | "*", "body": any}: the topology decides
 * who may address whom; a forbidden message, or one for a full inbox, stores
 * nothing. Answered once the messages are committed.
 */
static void
r_send(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	char err[256] = "";
	size_t n = 0;
	int r = swarm_send(arg, call->claims->sub, json_object_get(call->json, "to"),
			   json_object_get(call->json, "body"), &n, err, sizeof(err));

	switch (r) {
	case 0:
		rpc_reply_json(resp, 200, json_pack("{s:I}", "delivered", (json_int_t)n));
		return;
	case SP_ENOTFOUND:
	case -EACCES:
		rpc_reply_error(resp, 403, "forbidden", err);
		return;
	case SP_EINVAL:
		rpc_reply_error(resp, 400, "bad_request", err);
		return;
	case -E2BIG:
		rpc_reply_error(resp, 413, "too_large", err);
		return;
	case SP_ELIMIT:
		rpc_reply_error(resp, 429, "limit_reached", err);
		return;
	default:
		rpc_reply_error(resp, 503, "unavailable", err);
		return;
	}
}

/* GET /v1/worker/messages: take what is waiting (oldest first). */
static void
r_receive(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	char err[256] = "";
	json_t *msgs;
	int r = swarm_receive(arg, call->claims->sub, &msgs, err, sizeof(err));

	if (r == SP_ENOTFOUND)
		rpc_reply_error(resp, 403, "forbidden", err);
	else if (r < 0)
		rpc_reply_error(resp, 503, "unavailable", err);
	else
		rpc_reply_json(resp, 200, json_pack("{s:o}", "messages", msgs));
}

int
swarm_mgr_new(const struct swarm_options *o, struct swarm_mgr **ret, char *err, size_t errlen)
{
	struct swarm_mgr *m = xcalloc(1, sizeof(*m));
	int r;

	m->loop = o->loop;
	m->store = o->store;
	m->queue = o->queue;
	m->mgr = o->mgr;
	m->workers = o->workers;
	m->pool = o->pool;
	m->cfg = o->cfg;
	if ((r = queue_flush(m->queue)) < 0 ||
	    (r = store_migrate(m->store, "swarm", swarm_migrations,
			       sizeof(swarm_migrations) / sizeof(swarm_migrations[0]))) < 0 ||
	    (r = load(m)) < 0) {
		sp_errf(err, errlen, "swarms: %s", store_errmsg(m->store));
		for (struct swarm *sw = m->swarms, *next; sw != NULL; sw = next) {
			next = sw->next;
			swarm_free(sw);
		}
		free(m);
		return r;
	}
	uv_timer_init(m->loop, &m->tick);
	uv_timer_init(m->loop, &m->kick);
	m->tick.data = m->kick.data = m;
	queue_set_event_cb(m->queue, queue_event, m);
	if (m->workers != NULL) {
		struct rpc *rpc = workers_router(m->workers);

		workers_set_swarm_of(m->workers, swarm_of, m);
		rpc_add(rpc, "GET", "/v1/worker/swarm", "worker", 0, r_whoami, m);
		rpc_add(rpc, "POST", "/v1/worker/messages", "worker", 0, r_send, m);
		rpc_add(rpc, "GET", "/v1/worker/messages", "worker", 0, r_receive, m);
	}
	*ret = m;
	return 0;
}

void
swarm_mgr_start(struct swarm_mgr *m)
{
	/* Failed and deleted swarms of a crashed daemon may still have agents. */
	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		if (terminal(sw))
			teardown(sw);
	uv_timer_start(&m->tick, tick, SWARM_TICK_MS, SWARM_TICK_MS);
}

void
swarm_mgr_stop(struct swarm_mgr *m)
{
	m->stopping = true;
	uv_timer_stop(&m->tick);
	uv_timer_stop(&m->kick);
	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		while (sw->watches != NULL)
			watch_end(sw->watches, NULL, 0);
}

static void
closed(uv_handle_t *h)
{
	struct swarm_mgr *m = h->data;

	if (--m->closing > 0)
		return;
	for (struct swarm *sw = m->swarms, *next; sw != NULL; sw = next) {
		next = sw->next;
		swarm_free(sw);
	}
	if (m->close_cb != NULL)
		m->close_cb(m->close_arg);
	free(m);
}

void
swarm_mgr_close(struct swarm_mgr *m, void (*cb)(void *arg), void *arg)
{
	swarm_mgr_stop(m);
	for (struct spawn *sp = m->spawns; sp != NULL; sp = sp->next)
		sp->m = NULL;
	m->spawns = NULL;
	queue_set_event_cb(m->queue, NULL, NULL);
	/* The worker channel closed before us (its routes call into m): nothing to undo there. */
	m->close_cb = cb;
	m->close_arg = arg;
	m->closing = 2;
	uv_close((uv_handle_t *)&m->tick, closed);
	uv_close((uv_handle_t *)&m->kick, closed);
}

/* --- requests --- */

static int
get_ms(json_t *o, const char *name, uint64_t min, uint64_t max, uint64_t def, uint64_t *ret,
       char *err, size_t errlen)
{
	json_t *v = json_object_get(o, name);
	uint64_t ms;

	if (v == NULL || json_is_null(v)) {
		*ret = def;
		return 0;
	}
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		ms = (uint64_t)json_integer_value(v);
	} else if (!json_is_string(v) || config_parse_duration(json_string_value(v), &ms) < 0) {
		sp_errf(err, errlen, "%s: milliseconds or a duration (\"30s\", \"5m\") is required",
		     name);
		return SP_EINVAL;
	}
	if (ms != 0 && (ms < min || ms > max)) {
		sp_errf(err, errlen, "%s: %llu ms is out of range (%llu..%llu, or 0)", name,
		     (unsigned long long)ms, (unsigned long long)min, (unsigned long long)max);
		return SP_EINVAL;
	}
	if (ms == 0 && min > 0 && def != 0 && strcmp(name, "task_timeout_ms") == 0) {
		sp_errf(err, errlen, "%s: must be positive", name);
		return SP_EINVAL;
	}
	*ret = ms;
	return 0;
}

/* A task as given (object, or a shell command string) -> the queue's spec body. */
static int
task_spec(const struct swarm *sw, json_t *t, size_t i, char **ret_body, int *ret_prio,
	  uint64_t *ret_timeout, char *err, size_t errlen)
{
	const struct config *c = *sw->m->cfg;
	json_t *body, *norm, *prio;
	char e[256];
	int r;

	if (json_is_string(t)) {
		body = json_pack("{s:[s,s,O]}", "cmd", "sh", "-c", t);
	} else if (json_is_object(t)) {
		body = json_deep_copy(t);
	} else {
		sp_errf(err, errlen, "tasks[%zu]: an object or a shell command string is required", i);
		return SP_EINVAL;
	}
	*ret_prio = 0;
	prio = json_object_get(body, "priority");
	if (prio != NULL) {
		if (!json_is_integer(prio) || json_integer_value(prio) < QUEUE_PRIORITY_MIN ||
		    json_integer_value(prio) > QUEUE_PRIORITY_MAX) {
			json_decref(body);
			sp_errf(err, errlen, "tasks[%zu]: priority: an integer %d..%d", i,
			     QUEUE_PRIORITY_MIN, QUEUE_PRIORITY_MAX);
			return SP_EINVAL;
		}
		*ret_prio = (int)json_integer_value(prio);
		json_object_del(body, "priority");
	}
	r = workers_decode_exec(body, sw->task_timeout_ms, c->exec_timeout_max_ms, &norm,
				ret_timeout, e, sizeof(e));
	json_decref(body);
	if (r < 0) {
		sp_errf(err, errlen, "tasks[%zu]: %s", i, e);
		return r;
	}
	*ret_body = json_dumps(norm, JSON_COMPACT);
	json_decref(norm);
	if (*ret_body == NULL)
		fatalx("json_dumps failed");
	return 0;
}

static int
enqueue(struct swarm *sw, json_t *tasks, json_t **ret_ids, char *err, size_t errlen)
{
	size_t n = json_array_size(tasks), i;
	struct queue_task_spec *specs;
	char **bodies;
	int64_t *ids;
	json_t *t;
	int r = 0;

	if (n == 0 || n > SWARM_TASKS_MAX) {
		sp_errf(err, errlen, "tasks: 1..%d per request", SWARM_TASKS_MAX);
		return SP_EINVAL;
	}
	specs = xcalloc(n, sizeof(*specs));
	bodies = xcalloc(n, sizeof(*bodies));
	ids = xcalloc(n, sizeof(*ids));
	json_array_foreach(tasks, i, t) {
		uint64_t timeout;

		r = task_spec(sw, t, i, &bodies[i], &specs[i].priority, &timeout, err, errlen);
		if (r < 0)
			goto out;
		specs[i].body = bodies[i];
		specs[i].body_len = strlen(bodies[i]);
		specs[i].timeout_ms = timeout + SWARM_TASK_GRACE_MS;
		specs[i].max_retries = sw->retry_limit;
	}
	r = queue_enqueue(sw->m->queue, sw->id, sw->tenant, specs, n, ids, err, errlen);
	if (r == 0 && ret_ids != NULL) {
		*ret_ids = json_array();
		for (i = 0; i < n; i++)
			json_array_append_new(*ret_ids, json_integer(ids[i]));
	}
out:
	for (i = 0; i < n; i++)
		free(bodies[i]);
	free(bodies);
	free(specs);
	free(ids);
	return r;
}

static const char *const create_keys[] = {
	"agents", "topology", "template", "placement", "untrusted", "tasks", "task_timeout_ms",
	"retry_limit", "ttl", "idle_timeout", NULL,
};
static const char *const template_keys[] = {
	"image", "cpus", "memory", "pids", "nofile", "tmp", "work", NULL,
};

static bool
key_known(const char *const *keys, const char *k)
{
	for (; *keys != NULL; keys++)
		if (strcmp(*keys, k) == 0)
			return true;
	return false;
}

static bool
placement_known(struct swarm_mgr *m, const char *p)
{
	struct sp_provider *const *provs;
	size_t n = sandbox_mgr_providers(m->mgr, &provs);

	if (strcmp(p, "auto") == 0 || strcmp(p, "local") == 0)
		return true;
	for (size_t i = 0; i < n; i++)
		if (strcmp(provider_name(provs[i]), p) == 0)
			return true;
	return false;
}

static void
new_id(char *id)
{
	unsigned char rnd[6];

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		fatalx("getrandom failed");
	snprintf(id, SWARM_ID_LEN + 1, "sw-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
		 rnd[3], rnd[4], rnd[5]);
}

int
swarm_create(struct swarm_mgr *m, const char *tenant, json_t *body, json_t **ret, char *err,
	     size_t errlen)
{
	const struct config *c = *m->cfg;
	json_t *v, *spec, *tasks, *empty;
	const char *key, *topo = "hierarchical", *placement;
	struct swarm *sw;
	uint64_t task_timeout, ttl, idle;
	int64_t agents, retries = 2;
	unsigned room;
	bool untrusted = false;
	char *text;
	int r;

	if (m->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	if (!json_is_object(body)) {
		sp_errf(err, errlen, "a JSON object is required");
		return SP_EINVAL;
	}
	json_object_foreach(body, key, v)
		if (!key_known(create_keys, key)) {
			sp_errf(err, errlen, "unknown field '%.64s'", key);
			return SP_EINVAL;
		}
	v = json_object_get(body, "agents");
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > SWARM_AGENTS_MAX) {
		sp_errf(err, errlen, "agents: an integer 1..%d is required", SWARM_AGENTS_MAX);
		return SP_EINVAL;
	}
	agents = json_integer_value(v);
	if ((v = json_object_get(body, "topology")) != NULL) {
		topo = json_string_value(v);
		bool ok = false;

		for (int i = 0; topo != NULL && i < TOPOLOGY__COUNT; i++)
			ok |= strcmp(topo, topo_names[i]) == 0;
		if (!ok) {
			sp_errf(err, errlen, "topology: one of hierarchical, mesh, ring, star");
			return SP_EINVAL;
		}
	}
	if ((v = json_object_get(body, "untrusted")) != NULL) {
		if (!json_is_boolean(v)) {
			sp_errf(err, errlen, "untrusted: true or false");
			return SP_EINVAL;
		}
		untrusted = json_is_true(v);
	}
	/* Untrusted work goes where the operator said, not where the caller asks. */
	placement = untrusted ? c->untrusted_placement : c->default_provider;
	if ((v = json_object_get(body, "placement")) != NULL) {
		const char *asked = json_string_value(v);

		if (asked == NULL || !placement_known(m, asked)) {
			sp_errf(err, errlen, "placement: \"auto\", \"local\" or a configured provider's name");
			return SP_EINVAL;
		}
		if (untrusted && strcmp(asked, placement) != 0) {
			sp_errf(err, errlen, "placement: untrusted swarms are placed by "
			     "untrusted_placement (%s), not '%s'", placement, asked);
			return SP_EINVAL;
		}
		placement = asked;
	}
	if ((v = json_object_get(body, "template")) != NULL) {
		if (!json_is_object(v)) {
			sp_errf(err, errlen, "template: an object is required");
			return SP_EINVAL;
		}
		json_object_foreach(v, key, spec)
			if (!key_known(template_keys, key)) {
				sp_errf(err, errlen, "template: unknown field '%.64s'", key);
				return SP_EINVAL;
			}
	}
	if ((v = json_object_get(body, "retry_limit")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > QUEUE_RETRIES_MAX) {
			sp_errf(err, errlen, "retry_limit: an integer 0..%u", QUEUE_RETRIES_MAX);
			return SP_EINVAL;
		}
		retries = json_integer_value(v);
	}
	if ((r = get_ms(body, "task_timeout_ms", 1, c->exec_timeout_max_ms, c->exec_timeout_ms,
			&task_timeout, err, errlen)) < 0 ||
	    (r = get_ms(body, "ttl", 1000, QUEUE_TIMEOUT_MAX_MS, 0, &ttl, err, errlen)) < 0 ||
	    (r = get_ms(body, "idle_timeout", 1000, QUEUE_TIMEOUT_MAX_MS, 0, &idle, err,
			errlen)) < 0)
		return r;
	if (task_timeout == 0)
		task_timeout = c->exec_timeout_ms;
	tasks = json_object_get(body, "tasks");
	if (tasks != NULL && (!json_is_array(tasks) || json_array_size(tasks) > SWARM_TASKS_MAX)) {
		sp_errf(err, errlen, "tasks: an array of at most %d", SWARM_TASKS_MAX);
		return SP_EINVAL;
	}
	/* Admission, before anything is written: the swarm's placement must hold every agent. */
	if ((r = sandbox_mgr_room(m->mgr, tenant, placement, &room, err, errlen)) < 0)
		return r;
	if (room < (unsigned)agents) {
		size_t n = strlen(err);

		snprintf(err + n, errlen - n, ", the swarm needs %lld", (long long)agents);
		return SP_ELIMIT;
	}

	sw = swarm_alloc(m);
	empty = json_object();
	new_id(sw->id);
	snprintf(sw->tenant, sizeof(sw->tenant), "%s", tenant);
	snprintf(sw->state, sizeof(sw->state), "spawning");
	sw->created_ms = sw->updated_ms = clock_wall_ms();
	sw->spec = json_pack("{s:I, s:s, s:s, s:b, s:O, s:I, s:I, s:I, s:I}", "agents",
			     (json_int_t)agents, "topology", topo, "placement", placement,
			     "untrusted", untrusted,
			     "template", json_object_get(body, "template") ?
			     json_object_get(body, "template") : empty,
			     "task_timeout_ms", (json_int_t)task_timeout,
			     "retry_limit", (json_int_t)retries, "ttl_ms", (json_int_t)ttl,
			     "idle_timeout_ms", (json_int_t)idle);
	json_decref(empty);
	if (sw->spec == NULL)
		fatalx("json_pack failed");
	template_of(sw);
	/* The tasks are checked before anything is written. */
	if (tasks != NULL) {
		size_t i;
		json_t *t;

		json_array_foreach(tasks, i, t) {
			char *b;
			int p;
			uint64_t to;

			if ((r = task_spec(sw, t, i, &b, &p, &to, err, errlen)) < 0) {
				swarm_free(sw);
				return r;
			}
			free(b);
		}
	}
	text = json_dumps(sw->spec, JSON_COMPACT | JSON_SORT_KEYS);
	r = db_exec(m, "INSERT INTO swarms (id, tenant, state, spec, created_ms, updated_ms)"
		    " VALUES (?, ?, ?, ?, ?, ?)", "ssssii", sw->id, sw->tenant, sw->state, text,
		    sw->created_ms, sw->updated_ms);
	free(text);
	if (r < 0) {
		sp_errf(err, errlen, "database: %s", store_errmsg(m->store));
		swarm_free(sw);
		return SP_EDB;
	}
	if (tasks != NULL && json_array_size(tasks) > 0 &&
	    (r = enqueue(sw, tasks, NULL, err, errlen)) < 0)
		goto out_delete;
	sw->next = m->swarms;
	m->swarms = sw;
	/* Warm agents first; then, if none, one synchronously: a template or a
	 * provider the manager refuses is the caller's 4xx. The room was checked
	 * above, so a limit now is a provider backing off: the swarm waits. */
	if (pool_serves(m->pool, sw->tmpl))
		fill(sw);
	r = agents_live(sw) > 0 ? 0 : spawn_one(sw, err, errlen);
	if (r == SP_ELIMIT) {
		sw->last_failure = xstrdup(err);
		sw->retry_at = (int64_t)uv_now(m->loop) + SWARM_SPAWN_RETRY_MS;
		r = 0;
	}
	if (r < 0) {
		m->swarms = sw->next;
		queue_cancel_swarm(m->queue, sw->id, NULL);
		queue_purge_swarm(m->queue, sw->id, NULL);
		if (r == SP_EUNAVAIL || r == SP_EDB)
			r = r == SP_EDB ? r : SP_EUNAVAIL;
		goto out_delete;
	}
	emit(sw, json_pack("{s:s, s:s}", "type", "swarm", "state", "spawning"));
	fill(sw);
	uv_timer_start(&m->kick, kick_cb, 0, 0);
	if (m->workers != NULL)
		workers_kick(m->workers, sw->id);
	return swarm_get(m, tenant, sw->id, ret);

out_delete:
	(void)db_exec(m, "DELETE FROM swarms WHERE id = ?", "s", sw->id);
	(void)db_exec(m, "DELETE FROM swarm_agents WHERE swarm = ?", "s", sw->id);
	swarm_free(sw);
	return r;
}

static json_t *task_json(const struct queue_task *t, bool output);

int
swarm_add_tasks(struct swarm_mgr *m, const char *tenant, const char *id, json_t *body,
		json_t **ret, char *err, size_t errlen)
{
	struct swarm *sw = swarm_of_tenant(m, tenant, id);
	json_t *tasks, *ids = NULL;
	int r;

	if (sw == NULL) {
		sp_errf(err, errlen, "no such swarm");
		return SP_ENOTFOUND;
	}
	if (terminal(sw)) {
		sp_errf(err, errlen, "the swarm is %s", sw->state);
		return SP_ECONFLICT;
	}
	if (json_is_object(body) && json_object_get(body, "tasks") != NULL) {
		if (json_object_size(body) != 1) {
			sp_errf(err, errlen, "a task, or {\"tasks\":[…]} alone");
			return SP_EINVAL;
		}
		tasks = json_incref(json_object_get(body, "tasks"));
		if (!json_is_array(tasks)) {
			json_decref(tasks);
			sp_errf(err, errlen, "tasks: an array is required");
			return SP_EINVAL;
		}
	} else {
		tasks = json_pack("[O]", body);
	}
	r = enqueue(sw, tasks, &ids, err, errlen);
	json_decref(tasks);
	if (r < 0)
		return r;
	/* A created resource answers with the resource: the tasks as queued. */
	{
		json_t *created = json_array(), *v;
		size_t i;

		json_array_foreach(ids, i, v) {
			struct queue_task t;

			if (queue_get(m->queue, json_integer_value(v), &t) == 0) {
				json_array_append_new(created, task_json(&t, false));
				queue_task_done(&t);
			} else {
				json_array_append_new(created, json_pack("{s:O}", "id", v));
			}
		}
		json_decref(ids);
		*ret = json_pack("{s:o}", "tasks", created);
	}
	if (strcmp(sw->state, "completed") == 0) {
		sw->idle_since_ms = 0;
		set_state(sw, "running", NULL);
	}
	fill(sw);
	if (m->workers != NULL)
		workers_kick(m->workers, sw->id);
	return 0;
}

static json_t *
task_json(const struct queue_task *t, bool output)
{
	json_t *o = json_pack("{s:I, s:s, s:s, s:i, s:i, s:i, s:I, s:I}", "id", (json_int_t)t->id,
			      "swarm", t->swarm, "state", queue_state_name(t->state),
			      "attempts", (int)t->attempt, "failures", (int)t->failures,
			      "priority", t->priority, "created_ms", (json_int_t)t->created_ms,
			      "updated_ms", (json_int_t)t->updated_ms);

	json_object_set_new(o, "exit_code", t->state == QUEUE_SUCCEEDED ||
			    t->state == QUEUE_FAILED ? json_integer(t->exit_code) : json_null());
	json_object_set_new(o, "worker", t->worker ? json_string(t->worker) : json_null());
	json_object_set_new(o, "reason", t->reason ? json_string(t->reason) : json_null());
	if (output) {
		json_object_set_new(o, "output", t->output ?
				    json_stringn_nocheck(t->output, t->output_len) : json_null());
		json_object_set_new(o, "truncated", json_boolean(t->truncated));
		json_object_set_new(o, "spec", json_loadb(t->body, t->body_len, 0, NULL));
	}
	return o;
}

int
swarm_task_get(struct swarm_mgr *m, const char *tenant, int64_t task, json_t **ret)
{
	struct queue_task t;
	int r = queue_get(m->queue, task, &t);

	if (r < 0)
		return r;
	if (strcmp(t.tenant, tenant) != 0 || swarm_find(m, t.swarm) == NULL) {
		queue_task_done(&t);
		return SP_ENOTFOUND;
	}
	*ret = task_json(&t, true);
	queue_task_done(&t);
	return 0;
}

static json_t *
counts_json(const struct queue_counts *c, int64_t *total)
{
	json_t *o = json_object();

	*total = 0;
	for (int s = 0; s < QUEUE_STATE__COUNT; s++) {
		json_object_set_new(o, queue_state_name((enum queue_state)s),
				    json_integer(c->n[s]));
		*total += c->n[s];
	}
	json_object_set_new(o, "total", json_integer(*total));
	return o;
}

/* A price a provider's describe() states in currency units, within pricing's bounds. */
static bool
price_of(json_t *v, int64_t *ret)
{
	double x = json_number_value(v);

	if (!json_is_number(v) || !(x >= 0) || x * PRICING_NANO > (double)PRICING_PRICE_MAX)
		return false;
	*ret = llround(x * PRICING_NANO);
	return true;
}

/*
 * The prices in force, read once per cost report: the prices directive, and
 * for a provider it names none, the provider's own (describe()'s
 * "price_vcpu_second" and "price_gib_second"). A provider in neither is
 * unpriced.
 */
static struct pricing *
price_table(struct swarm_mgr *m)
{
	const struct config *c = *m->cfg;
	struct sp_provider *const *ps;
	size_t n = sandbox_mgr_providers(m->mgr, &ps);
	struct pricing *t = NULL;
	struct pricing_price p;
	char err[256];

	if (c->prices != NULL)
		(void)config_prices(c->prices, &t, err, sizeof(err));
	if (t == NULL)
		t = pricing_new();
	for (size_t i = 0; i < n; i++) {
		json_t *d;

		if (pricing_get(t, provider_name(ps[i]), &p) == 0 || provider_describe(ps[i]) == NULL)
			continue;
		d = json_loads(provider_describe(ps[i]), 0, NULL);
		if (price_of(json_object_get(d, "price_vcpu_second"), &p.cpu_second) &&
		    price_of(json_object_get(d, "price_gib_second"), &p.gib_second))
			(void)pricing_set(t, provider_name(ps[i]), &p);
		json_decref(d);
	}
	return t;
}

/*
 * What the agents' running time costs: each sandbox's life (created to
 * destroyed, or now) priced per provider (price_table()), on the
 * limits it was given. Providers without a price are listed as unpriced.
 */
static json_t *
usage_json(struct swarm *sw)
{
	int64_t ms_total = 0, amount = 0, now = clock_wall_ms();
	double cpu_s = 0, gib_s = 0;
	struct pricing *prices = price_table(sw->m);
	json_t *unpriced = json_array();
	struct sandbox_row row;
	char text[64];

	for (size_t i = 0; i < sw->nagents; i++) {
		struct pricing_price price;
		int64_t end, ms, ncpu, mem, cost;
		json_t *spec;

		if (sandbox_get(sw->m->mgr, sw->tenant, sw->agents[i].sandbox, &row) < 0)
			continue;
		end = sw->agents[i].live ? now : row.updated_ms;
		ms = end > row.created_ms ? end - row.created_ms : 0;
		spec = json_loads(row.spec_json, 0, NULL);
		ncpu = json_integer_value(json_object_get(spec, "nano_cpus"));
		mem = json_integer_value(json_object_get(spec, "memory"));
		json_decref(spec);
		ms_total += ms;
		cpu_s += (double)ncpu / 1e9 * (double)ms / 1000;
		gib_s += (double)mem / (1024.0 * 1024 * 1024) * (double)ms / 1000;
		if (pricing_get(prices, row.provider, &price) == 0 &&
		    pricing_cost(&price, ncpu, mem, ms, &cost) == 0) {
			(void)pricing_add(&amount, cost);
		} else {
			bool listed = false;
			size_t k;
			json_t *v;

			json_array_foreach(unpriced, k, v)
				listed |= strcmp(json_string_value(v), row.provider) == 0;
			if (!listed)
				json_array_append_new(unpriced, json_string(row.provider));
		}
		store_sandbox_row_done(&row);
	}
	pricing_free(prices);
	pricing_format(amount, text, sizeof(text));
	return json_pack("{s:f, s:f, s:f, s:s, s:o}", "sandbox_seconds", (double)ms_total / 1000,
			 "cpu_seconds", cpu_s, "gib_seconds", gib_s, "amount", text,
			 "unpriced", unpriced);
}

static json_t *
swarm_json(struct swarm *sw, bool full)
{
	struct queue_counts c = { 0 };
	int64_t total;
	json_t *o, *sbs = json_array(), *where = json_object(), *list = json_array();

	(void)queue_counts(sw->m->queue, sw->id, &c);
	for (size_t i = 0; i < sw->nagents; i++) {
		const struct agent *a = &sw->agents[i];
		struct sandbox_row row;
		json_t *n;

		if (!a->live)
			continue;
		json_array_append_new(sbs, json_string(a->sandbox));
		/* A store read per agent: the full view only (not every list entry). */
		if (!full || sandbox_get(sw->m->mgr, sw->tenant, a->sandbox, &row) < 0)
			continue;
		/* Where each agent runs: a burst swarm spans providers. */
		n = json_object_get(where, row.provider);
		json_object_set_new(where, row.provider,
				    json_integer(n != NULL ? json_integer_value(n) + 1 : 1));
		json_array_append_new(list, json_pack("{s:s, s:I, s:s, s:s, s:b}", "sandbox",
						      a->sandbox, "slot", (json_int_t)a->slot,
						      "provider", row.provider, "state", row.state,
						      "ready", a->ready));
		store_sandbox_row_done(&row);
	}
	o = json_pack("{s:s, s:s, s:s, s:o, s:O, s:{s:I, s:I, s:I, s:I, s:o, s:o, s:o}, s:o, s:I,"
		      " s:I}",
		      "id", sw->id, "tenant", sw->tenant, "state", sw->state,
		      "reason", sw->reason ? json_string(sw->reason) : json_null(),
		      "spec", sw->spec,
		      "agents", "wanted", (json_int_t)sw->want, "live",
		      (json_int_t)agents_live(sw), "starting", (json_int_t)sw->spawning,
		      "lost", (json_int_t)sw->lost, "sandboxes", sbs, "by_provider", where,
		      "list", list,
		      "tasks", counts_json(&c, &total),
		      "created_ms", (json_int_t)sw->created_ms,
		      "spawn_ms", (json_int_t)sw->spawned_ms);
	/* Why agents are missing, while some are (a limit, a provider backing off). */
	json_object_set_new(o, "spawn_error", sw->last_failure != NULL &&
			    agents_live(sw) < sw->want ? json_string(sw->last_failure) : json_null());
	json_object_set_new(o, "success_rate", total > 0 ?
			    json_real((double)c.n[QUEUE_SUCCEEDED] / (double)total) : json_null());
	if (full) {
		struct queue_task *ts;
		size_t n = 0, out_len = 0;
		json_t *results = json_array();
		char *agg = xmalloc(QUEUE_OUTPUT_MAX_MAX / 256 + 1);
		const size_t agg_max = QUEUE_OUTPUT_MAX_MAX / 256;	/* 64 KiB */
		int64_t after = 0;

		while (queue_list(sw->m->queue, sw->id, after, QUEUE_LIST_MAX, &ts, &n) == 0) {
			if (n == 0) {
				queue_tasks_free(ts, n);
				break;
			}
			for (size_t i = 0; i < n; i++) {
				json_array_append_new(results, task_json(&ts[i], false));
				if (ts[i].output != NULL && out_len < agg_max) {
					size_t k = ts[i].output_len < agg_max - out_len ?
						   ts[i].output_len : agg_max - out_len;

					memcpy(agg + out_len, ts[i].output, k);
					out_len += k;
				}
				after = ts[i].id;
			}
			queue_tasks_free(ts, n);
			/* One page: a GET must not load every task's output of a big swarm. */
			break;
		}
		json_object_set_new(o, "results_truncated", json_boolean(total >
				    (int64_t)json_array_size(results)));
		json_object_set_new(o, "results", results);
		json_object_set_new(o, "output", json_stringn_nocheck(agg, out_len));
		free(agg);
		json_object_set_new(o, "cost", usage_json(sw));
	}
	return o;
}

int
swarm_get(struct swarm_mgr *m, const char *tenant, const char *id, json_t **ret)
{
	struct swarm *sw = swarm_of_tenant(m, tenant, id);

	if (sw == NULL)
		return SP_ENOTFOUND;
	*ret = swarm_json(sw, true);
	return 0;
}

int
swarm_list(struct swarm_mgr *m, const char *tenant, json_t **ret)
{
	json_t *a = json_array();

	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		if (strcmp(sw->tenant, tenant) == 0 && strcmp(sw->state, "deleted") != 0)
			json_array_append_new(a, swarm_json(sw, false));
	/* DESIGN.md: a list answers a JSON array. */
	*ret = a;
	return 0;
}

int
swarm_delete(struct swarm_mgr *m, const char *tenant, const char *id, json_t **ret)
{
	struct swarm *sw = swarm_of_tenant(m, tenant, id);
	size_t n = 0;

	if (sw == NULL)
		return SP_ENOTFOUND;
	if (strcmp(sw->state, "deleted") != 0) {
		queue_cancel_swarm(m->queue, sw->id, &n);
		teardown(sw);
		set_state(sw, "deleted", NULL);
	}
	*ret = swarm_json(sw, false);
	json_object_set_new(*ret, "cancelled", json_integer((json_int_t)n));
	return 0;
}

/* --- watches --- */

static void
watch_unlink(struct swarm_watch *w)
{
	for (struct swarm_watch **pp = &w->sw->watches; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
}

static void
watch_end(struct swarm_watch *w, const char *line, size_t len)
{
	watch_unlink(w);
	w->cb(w->arg, line, len, true);
	free(w);
}

int
swarm_watch(struct swarm_mgr *m, const char *tenant, const char *id, swarm_event_cb cb,
	    void *arg, struct swarm_watch **ret)
{
	struct swarm *sw = swarm_of_tenant(m, tenant, id);
	struct swarm_watch *w;
	uint64_t first;

	if (sw == NULL)
		return SP_ENOTFOUND;
	w = xcalloc(1, sizeof(*w));
	w->sw = sw;
	w->cb = cb;
	w->arg = arg;
	first = sw->nev > SWARM_EVENTS_KEPT ? sw->nev - SWARM_EVENTS_KEPT : 0;
	for (uint64_t i = first; i < sw->nev; i++) {
		struct event *e = &sw->ev[i % SWARM_EVENTS_KEPT];

		cb(arg, e->line, e->len, false);
	}
	if (m->stopping || strcmp(sw->state, "completed") == 0 || terminal(sw)) {
		char line[160];
		int len = snprintf(line, sizeof(line),
				   "{\"type\":\"swarm\",\"state\":\"%s\",\"swarm\":\"%s\"}\n",
				   sw->state, sw->id);

		cb(arg, line, (size_t)len, true);
		free(w);
		*ret = NULL;
		return 0;
	}
	w->next = sw->watches;
	sw->watches = w;
	*ret = w;
	return 0;
}

void
swarm_unwatch(struct swarm_watch *w)
{
	if (w == NULL)
		return;
	watch_unlink(w);
	free(w);
}

json_t *
swarm_stats_json(struct swarm_mgr *m)
{
	json_t *o = json_object();
	unsigned agents = 0;

	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next) {
		json_t *v = json_object_get(o, sw->state);

		json_object_set_new(o, sw->state, json_integer(v ? json_integer_value(v) + 1 : 1));
		agents += agents_live(sw);
	}
	return json_pack("{s:o, s:I}", "swarms", o, "agents_live", (json_int_t)agents);
}

void
swarm_metrics(struct swarm_mgr *m, FILE *f)
{
	static const char *const states[] = { "spawning", "running", "completed", "failed",
					      "deleted" };
	unsigned agents = 0;

	fprintf(f, "# HELP sandpit_swarms Swarms known to the daemon, by state.\n"
		   "# TYPE sandpit_swarms gauge\n");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		unsigned n = 0;

		for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
			n += strcmp(sw->state, states[i]) == 0;
		fprintf(f, "sandpit_swarms{state=\"%s\"} %u\n", states[i], n);
	}
	for (struct swarm *sw = m->swarms; sw != NULL; sw = sw->next)
		agents += agents_live(sw);
	fprintf(f, "# HELP sandpit_swarm_agents Live agents of all swarms.\n"
		   "# TYPE sandpit_swarm_agents gauge\n"
		   "sandpit_swarm_agents %u\n", agents);
}

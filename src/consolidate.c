/*
 * consolidate: one tenant's dedup, contradiction and prune pass. It runs on
 * a thread-pool thread with the connection it is given, reads a snapshot,
 * decides in memory, and writes everything in one short IMMEDIATE
 * transaction (the loop's connection waits on the busy timeout meanwhile).
 * It never touches the loop's arenas: it reports what left the active set.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "arena.h"
#include "consolidate.h"
#include "xmalloc.h"

struct cons_item {
	int64_t seq;
	int model;			/* index into the distinct models */
	unsigned dims;
	const float *vec;		/* into the snapshot buffer */
	int8_t outcome;			/* -1 none, 0 failure, 1 success */
	int64_t usage;
	double confidence;
	int64_t created_ms;
	bool fresh;			/* not consolidated yet */
	int64_t merged_into;		/* seq of the keeper, or 0 */
	int64_t add_usage;		/* usage folded in from merged items */
};

struct cons_link {
	int64_t src, dst;
	const char *relation;
	float weight;
};

struct cons_snap {
	struct cons_item *items;
	size_t n, cap;
	float *vecs;
	size_t nvec, capvec;
	char **models;
	size_t nmodels;
	struct cons_link *links;
	size_t nlinks, caplinks;
};

static void
cons_snap_free(struct cons_snap *s)
{
	free(s->items);
	free(s->vecs);
	for (size_t i = 0; i < s->nmodels; i++)
		free(s->models[i]);
	free(s->models);
	free(s->links);
}

static int
cons_model(struct cons_snap *s, const char *model)
{
	for (size_t i = 0; i < s->nmodels; i++)
		if (strcmp(s->models[i], model) == 0)
			return (int)i;
	s->models = xreallocarray(s->models, s->nmodels + 1, sizeof(*s->models));
	s->models[s->nmodels] = xstrdup(model);
	return (int)s->nmodels++;
}

static int
cons_load(sqlite3 *db, const char *tenant, struct cons_snap *s)
{
	sqlite3_stmt *st;
	size_t *off = NULL;
	int rc;

	if (sqlite3_prepare_v2(db, "SELECT seq, model, dims, embedding, outcome, usage_count,"
			       " confidence, created_ms, consolidated FROM mem_items"
			       " WHERE tenant = ?1 AND state = 'active' ORDER BY seq", -1, &st,
			       NULL) != SQLITE_OK)
		return SP_EDB;
	sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cons_item *it;
		unsigned dims = (unsigned)sqlite3_column_int(st, 2);
		const char *oc = (const char *)sqlite3_column_text(st, 4);

		if ((size_t)sqlite3_column_bytes(st, 3) != dims * sizeof(float))
			continue;
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 256;
			s->items = xreallocarray(s->items, s->cap, sizeof(*s->items));
			off = xreallocarray(off, s->cap, sizeof(*off));
		}
		while (s->nvec + dims > s->capvec) {
			s->capvec = s->capvec ? s->capvec * 2 : 65536;
			s->vecs = xreallocarray(s->vecs, s->capvec, sizeof(float));
		}
		memcpy(s->vecs + s->nvec, sqlite3_column_blob(st, 3), dims * sizeof(float));
		it = &s->items[s->n];
		memset(it, 0, sizeof(*it));
		it->seq = sqlite3_column_int64(st, 0);
		it->model = cons_model(s, (const char *)sqlite3_column_text(st, 1));
		it->dims = dims;
		it->outcome = oc == NULL ? -1 : strcmp(oc, "success") == 0 ? 1 : 0;
		it->usage = sqlite3_column_int64(st, 5);
		it->confidence = sqlite3_column_double(st, 6);
		it->created_ms = sqlite3_column_int64(st, 7);
		it->fresh = sqlite3_column_int(st, 8) == 0;
		off[s->n] = s->nvec;
		s->nvec += dims;
		s->n++;
	}
	sqlite3_finalize(st);
	/* The buffer moved while growing: point the items at it only now. */
	for (size_t i = 0; i < s->n; i++)
		s->items[i].vec = s->vecs + off[i];
	free(off);
	return rc == SQLITE_DONE ? 0 : SP_EDB;
}

static void
cons_link_add(struct cons_snap *s, int64_t src, int64_t dst, const char *rel, float w)
{
	if (s->nlinks == s->caplinks) {
		s->caplinks = s->caplinks ? s->caplinks * 2 : 64;
		s->links = xreallocarray(s->links, s->caplinks, sizeof(*s->links));
	}
	s->links[s->nlinks++] = (struct cons_link){ src, dst, rel, w };
}

/* Keeper first: more used, then more confident, then older (lower seq). */
static bool
cons_keeps(const struct cons_item *a, const struct cons_item *b)
{
	int64_t ua = a->usage + a->add_usage, ub = b->usage + b->add_usage;

	if (ua != ub)
		return ua > ub;
	if (a->confidence != b->confidence)
		return a->confidence > b->confidence;
	return a->seq < b->seq;
}

struct cons_nb {
	size_t idx;
	float sim;
};

/* The m nearest same-model neighbours of item i (exact scan), best first. */
static size_t
cons_neighbours(const struct cons_snap *s, size_t i, unsigned m, struct cons_nb *out)
{
	const struct cons_item *a = &s->items[i];
	size_t n = 0;

	for (size_t j = 0; j < s->n; j++) {
		const struct cons_item *b = &s->items[j];
		float sim;
		size_t k;

		if (j == i || b->model != a->model || b->dims != a->dims)
			continue;
		sim = arena_dot(a->vec, b->vec, a->dims);
		if (n == m && sim <= out[n - 1].sim)
			continue;
		k = n < m ? n++ : n - 1;
		while (k > 0 && out[k - 1].sim < sim) {
			out[k] = out[k - 1];
			k--;
		}
		out[k].idx = j;
		out[k].sim = sim;
	}
	return n;
}

static int
cons_step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : SP_EDB;
}

static int
cons_write(sqlite3 *db, const char *tenant, const struct consolidate_params *p, int64_t now,
	   struct cons_snap *s, struct consolidate_result *res)
{
	sqlite3_stmt *link = NULL, *merge = NULL, *keep = NULL, *mark = NULL, *q = NULL;
	int r = SP_EDB;

	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return SP_EDB;
	if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO mem_links (tenant, src, dst, relation,"
			       " weight, created_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE"
			       " (SELECT count(*) FROM mem_items WHERE tenant = ?1 AND seq IN (?2, ?3)) = 2",
			       -1, &link, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "UPDATE mem_items SET state = 'deleted', updated_ms = ?3"
			       " WHERE seq = ?1 AND tenant = ?2 AND state = 'active'", -1, &merge,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "UPDATE mem_items SET usage_count = usage_count + ?3,"
			       " updated_ms = ?4 WHERE seq = ?1 AND tenant = ?2", -1, &keep,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "UPDATE mem_items SET consolidated = 1 WHERE seq = ?1"
			       " AND tenant = ?2", -1, &mark, NULL) != SQLITE_OK)
		goto out_rollback;

	for (size_t i = 0; i < s->nlinks; i++) {
		sqlite3_bind_text(link, 1, tenant, -1, SQLITE_STATIC);
		sqlite3_bind_int64(link, 2, s->links[i].src);
		sqlite3_bind_int64(link, 3, s->links[i].dst);
		sqlite3_bind_text(link, 4, s->links[i].relation, -1, SQLITE_STATIC);
		sqlite3_bind_double(link, 5, s->links[i].weight);
		sqlite3_bind_int64(link, 6, now);
		if (cons_step(link) < 0)
			goto out_rollback;
		if (strcmp(s->links[i].relation, "contradicts") == 0 && sqlite3_changes(db) > 0)
			res->contradictions++;
	}
	for (size_t i = 0; i < s->n; i++) {
		struct cons_item *it = &s->items[i];

		if (it->merged_into != 0) {
			sqlite3_bind_int64(merge, 1, it->seq);
			sqlite3_bind_text(merge, 2, tenant, -1, SQLITE_STATIC);
			sqlite3_bind_int64(merge, 3, now);
			if (cons_step(merge) < 0)
				goto out_rollback;
			if (sqlite3_changes(db) > 0) {
				res->merged++;
				res->removed[res->nremoved++] = it->seq;
			}
		} else if (it->add_usage > 0) {
			sqlite3_bind_int64(keep, 1, it->seq);
			sqlite3_bind_text(keep, 2, tenant, -1, SQLITE_STATIC);
			sqlite3_bind_int64(keep, 3, it->add_usage);
			sqlite3_bind_int64(keep, 4, now);
			if (cons_step(keep) < 0)
				goto out_rollback;
		}
		if (it->fresh) {
			sqlite3_bind_int64(mark, 1, it->seq);
			sqlite3_bind_text(mark, 2, tenant, -1, SQLITE_STATIC);
			if (cons_step(mark) < 0)
				goto out_rollback;
		}
	}

	/* Quarantine: contradicts more than N well-used active items (either direction). */
	if (sqlite3_prepare_v2(db, "UPDATE mem_items SET state = 'quarantined', updated_ms = ?4"
			       " WHERE tenant = ?1 AND state = 'active' AND ("
			       "  SELECT count(*) FROM mem_links l JOIN mem_items o"
			       "  ON o.seq = CASE WHEN l.src = mem_items.seq THEN l.dst ELSE l.src END"
			       "  WHERE l.relation = 'contradicts' AND l.tenant = ?1"
			       "  AND (l.src = mem_items.seq OR l.dst = mem_items.seq)"
			       "  AND o.state = 'active' AND o.usage_count >= ?3) > ?2"
			       " RETURNING seq", -1, &q, NULL) != SQLITE_OK)
		goto out_rollback;
	sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 2, (int)p->quarantine_after);
	sqlite3_bind_int(q, 3, (int)p->quarantine_min_usage);
	sqlite3_bind_int64(q, 4, now);
	{
		int rc;

		while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			res->removed = xreallocarray(res->removed, res->nremoved + 1,
						     sizeof(*res->removed));
			res->removed[res->nremoved++] = sqlite3_column_int64(q, 0);
			res->quarantined++;
		}
		sqlite3_finalize(q);
		q = NULL;
		if (rc != SQLITE_DONE)
			goto out_rollback;
	}

	/* Prune: never used, low confidence, old. Hard delete (links cascade). */
	if (sqlite3_prepare_v2(db, "DELETE FROM mem_items WHERE tenant = ?1 AND state = 'active'"
			       " AND usage_count = 0 AND confidence < ?2 AND created_ms < ?3"
			       " RETURNING seq", -1, &q, NULL) != SQLITE_OK)
		goto out_rollback;
	sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_double(q, 2, p->prune_confidence);
	sqlite3_bind_int64(q, 3, now - p->prune_age_ms);
	{
		int rc;

		while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			res->removed = xreallocarray(res->removed, res->nremoved + 1,
						     sizeof(*res->removed));
			res->removed[res->nremoved++] = sqlite3_column_int64(q, 0);
			res->pruned++;
		}
		sqlite3_finalize(q);
		q = NULL;
		if (rc != SQLITE_DONE)
			goto out_rollback;
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto out_rollback;
	r = 0;
	goto out_finalize;

out_rollback:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out_finalize:
	sqlite3_finalize(link);
	sqlite3_finalize(merge);
	sqlite3_finalize(keep);
	sqlite3_finalize(mark);
	sqlite3_finalize(q);
	return r;
}

int
consolidate_run(sqlite3 *db, const char *tenant, const struct consolidate_params *p,
		int64_t now_ms, struct consolidate_result *res)
{
	struct cons_snap s = { 0 };
	struct cons_nb *nb;
	unsigned examined = 0;
	int r;

	memset(res, 0, sizeof(*res));
	if ((r = cons_load(db, tenant, &s)) < 0) {
		cons_snap_free(&s);
		return r;
	}
	nb = xmalloc((p->neighbours ? p->neighbours : 1) * sizeof(*nb));
	for (size_t i = 0; i < s.n && examined < p->max_new; i++) {
		struct cons_item *a = &s.items[i];
		size_t n;

		if (!a->fresh)
			continue;
		examined++;
		n = cons_neighbours(&s, i, p->neighbours, nb);
		for (size_t j = 0; j < n; j++) {
			struct cons_item *b = &s.items[nb[j].idx];

			if (nb[j].sim >= p->dup_threshold && a->outcome == b->outcome &&
			    a->merged_into == 0 && b->merged_into == 0) {
				struct cons_item *keeper = cons_keeps(a, b) ? a : b;
				struct cons_item *loser = keeper == a ? b : a;

				loser->merged_into = keeper->seq;
				keeper->add_usage += loser->usage + loser->add_usage;
				cons_link_add(&s, loser->seq, keeper->seq, "duplicate_of", nb[j].sim);
			} else if (nb[j].sim >= p->contradiction_threshold &&
				   a->outcome >= 0 && b->outcome >= 0 &&
				   a->outcome != b->outcome) {
				/* Symmetric: one row per pair, lower seq first. */
				cons_link_add(&s, a->seq < b->seq ? a->seq : b->seq,
					      a->seq < b->seq ? b->seq : a->seq, "contradicts",
					      nb[j].sim);
			}
		}
	}
	free(nb);
	/* Items beyond max_new stay fresh for the next run. */
	{
		unsigned seen = 0;

		for (size_t i = 0; i < s.n; i++)
			if (s.items[i].fresh && ++seen > p->max_new)
				s.items[i].fresh = false;
	}
	res->examined = examined;
	res->removed = xmalloc((s.n ? s.n : 1) * sizeof(*res->removed));
	r = cons_write(db, tenant, p, now_ms, &s, res);
	if (r < 0) {
		free(res->removed);
		memset(res, 0, sizeof(*res));
	}
	cons_snap_free(&s);
	return r;
}

/*
 * memory: the ReasoningBank module. It owns the memory tables (through
 * store_migrate), the per-tenant arenas that mirror the active items, the
 * batched usage counters and the consolidation runs it sends to the thread
 * pool. It validates every request itself (the control API and the worker
 * channel share it), scopes every statement by tenant, and never logs.
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
#include <sandpit/httpc.h>

#include "arena.h"
#include "clock.h"
#include "consolidate.h"
#include "embed.h"
#include "memory.h"
#include "scrub.h"
#include "store.h"
#include "xmalloc.h"

#define MEM_NBUCKETS 256
#define MEM_MAX_NAME 128		/* namespace, domain, agent_id, task_id */
#define MEM_MAX_MODEL 64
#define MEM_MAX_TAG 64
#define MEM_USAGE_MAX_PENDING 4096
#define MEM_RRF_K 60.0
#define MEM_DAY_MS 86400000.0

static const char *const memory_migrations[] = {
	/* 1: items, links, trajectories, full-text index. */
	"CREATE TABLE mem_items ("
	"  seq INTEGER PRIMARY KEY,"
	"  id TEXT NOT NULL UNIQUE,"
	"  tenant TEXT NOT NULL CHECK (tenant <> ''),"
	"  namespace TEXT NOT NULL DEFAULT '',"
	"  domain TEXT NOT NULL DEFAULT '',"
	"  agent_id TEXT,"
	"  task_id TEXT,"
	"  title TEXT NOT NULL,"
	"  description TEXT NOT NULL DEFAULT '',"
	"  content TEXT NOT NULL,"
	"  tags TEXT NOT NULL DEFAULT '[]',"
	"  outcome TEXT CHECK (outcome IN ('success', 'failure')),"
	"  confidence REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),"
	"  usage_count INTEGER NOT NULL DEFAULT 0,"
	"  success_count INTEGER NOT NULL DEFAULT 0,"
	"  failure_count INTEGER NOT NULL DEFAULT 0,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL,"
	"  last_used_ms INTEGER,"
	"  model TEXT NOT NULL,"
	"  dims INTEGER NOT NULL,"
	"  embedding BLOB NOT NULL CHECK (length(embedding) = 4 * dims),"
	"  state TEXT NOT NULL DEFAULT 'active'"
	"    CHECK (state IN ('active', 'quarantined', 'deleted')),"
	"  consolidated INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE INDEX mem_items_tenant ON mem_items(tenant, state, consolidated);"
	"CREATE TABLE mem_links ("
	"  tenant TEXT NOT NULL,"
	"  src INTEGER NOT NULL REFERENCES mem_items(seq) ON DELETE CASCADE,"
	"  dst INTEGER NOT NULL REFERENCES mem_items(seq) ON DELETE CASCADE,"
	"  relation TEXT NOT NULL CHECK (relation IN ('duplicate_of', 'contradicts', 'refines')),"
	"  weight REAL NOT NULL DEFAULT 1,"
	"  created_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (src, dst, relation)"
	");"
	"CREATE INDEX mem_links_dst ON mem_links(dst);"
	"CREATE TABLE mem_trajectories ("
	"  seq INTEGER PRIMARY KEY,"
	"  id TEXT NOT NULL UNIQUE,"
	"  tenant TEXT NOT NULL CHECK (tenant <> ''),"
	"  namespace TEXT NOT NULL DEFAULT '',"
	"  task_id TEXT,"
	"  agent_id TEXT,"
	"  query TEXT,"
	"  trajectory TEXT NOT NULL,"
	"  outcome TEXT CHECK (outcome IN ('success', 'failure')),"
	"  confidence REAL,"
	"  created_ms INTEGER NOT NULL"
	");"
	"CREATE INDEX mem_trajectories_tenant ON mem_trajectories(tenant, created_ms);"
	/* External content: the text lives once, in mem_items. Text is never updated. */
	"CREATE VIRTUAL TABLE mem_fts USING fts5(title, description, content, tags,"
	"  content='mem_items', content_rowid='seq');"
	"CREATE TRIGGER mem_items_ai AFTER INSERT ON mem_items BEGIN"
	"  INSERT INTO mem_fts(rowid, title, description, content, tags)"
	"  VALUES (new.seq, new.title, new.description, new.content, new.tags);"
	"END;"
	"CREATE TRIGGER mem_items_ad AFTER DELETE ON mem_items BEGIN"
	"  INSERT INTO mem_fts(mem_fts, rowid, title, description, content, tags)"
	"  VALUES ('delete', old.seq, old.title, old.description, old.content, old.tags);"
	"END;",
};

#define MEM_ITEM_COLS "seq, id, namespace, domain, agent_id, task_id, title, description, " \
	"content, tags, outcome, confidence, usage_count, success_count, failure_count, " \
	"created_ms, updated_ms, last_used_ms, model, dims, state"

enum mem_stmt {
	MS_INSERT,
	MS_GET_SEQ,
	MS_GET_ID,
	MS_DELETE,
	MS_FEEDBACK,
	MS_USAGE,
	MS_TRAJ,
	MS_FTS,
	MS__COUNT,
};

static const char *const mem_sql[MS__COUNT] = {
	[MS_INSERT] = "INSERT INTO mem_items (id, tenant, namespace, domain, agent_id, task_id,"
		" title, description, content, tags, outcome, confidence, created_ms, updated_ms,"
		" model, dims, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
		" ?12, ?13, ?13, ?14, ?15, ?16)",
	[MS_GET_SEQ] = "SELECT " MEM_ITEM_COLS " FROM mem_items WHERE seq = ?1 AND tenant = ?2",
	[MS_GET_ID] = "SELECT " MEM_ITEM_COLS " FROM mem_items WHERE id = ?1 AND tenant = ?2",
	[MS_DELETE] = "DELETE FROM mem_items WHERE id = ?1 AND tenant = ?2 RETURNING seq, model",
	[MS_FEEDBACK] = "UPDATE mem_items SET"
		" confidence = max(0.0, min(1.0, confidence + ?3)),"
		" success_count = success_count + ?4, failure_count = failure_count + ?5,"
		" updated_ms = ?6 WHERE id = ?1 AND tenant = ?2 RETURNING seq, model, confidence, state",
	[MS_USAGE] = "UPDATE mem_items SET usage_count = usage_count + ?2, last_used_ms = ?3"
		" WHERE seq = ?1",
	[MS_TRAJ] = "INSERT INTO mem_trajectories (id, tenant, namespace, task_id, agent_id,"
		" query, trajectory, outcome, confidence, created_ms)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[MS_FTS] = "SELECT m.seq FROM mem_fts JOIN mem_items m ON m.seq = mem_fts.rowid"
		" WHERE mem_fts MATCH ?1 AND m.tenant = ?2 AND m.state = 'active'"
		" ORDER BY bm25(mem_fts) LIMIT ?3",
};

/* One embedding model's arena within a tenant. */
struct mem_space {
	char *model;
	struct arena *arena;
	struct mem_space *next;
};

struct mem_tenant {
	char *name;
	struct mem_space *spaces;
	unsigned inserts;		/* since the last consolidation started */
	bool running;			/* a consolidation is on the thread pool */
	struct mem_tenant *next;
};

struct mem_usage {
	int64_t seq;
	int64_t count;
};

struct memory {
	uv_loop_t *loop;
	struct store *store;
	sqlite3 *db;
	struct memory_config cfg;
	char hash_model[32];
	sqlite3_stmt *stmt[MS__COUNT];
	struct mem_tenant *buckets[MEM_NBUCKETS];

	int64_t *usage;			/* seqs retrieved since the last flush */
	size_t nusage, capusage;
	uv_timer_t timer;
	bool timer_armed;

	struct embed_http *http;	/* the HTTP embedder, or NULL */
	struct mem_pending *pending;	/* requests waiting for it */
	unsigned works;			/* consolidations and embedder calls in flight */
	bool closing;
	void (*close_cb)(void *);
	void *close_arg;
};

/* A consolidation on the thread pool; owned by the memory until after_work. */
struct mem_work {
	uv_work_t req;
	struct memory *m;
	char *tenant;
	char *path;
	struct consolidate_params params;
	int64_t now_ms;
	int status;
	struct consolidate_result res;
	memory_consolidate_cb cb;
	void *arg;
};

static int
mem_err(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
mem_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* "mem_" + a ULID: 48 bits of milliseconds, 80 random bits, Crockford base32. */
static void
mem_new_id(const char *prefix, char *buf, size_t buflen)
{
	static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	unsigned char raw[16];
	uint64_t ms = (uint64_t)clock_wall_ms();
	char id[27];
	int i, bit;

	for (i = 0; i < 6; i++)
		raw[i] = (unsigned char)(ms >> (40 - 8 * i));
	if (getrandom(raw + 6, 10, 0) != 10) {
		/* getrandom on a booted kernel does not fail for 10 bytes. */
		for (i = 6; i < 16; i++)
			raw[i] = (unsigned char)rand();
	}
	/* 128 bits as 26 five-bit groups, the first group holding 3 bits. */
	for (i = 0; i < 26; i++) {
		int v = 0;

		for (bit = 0; bit < 5; bit++) {
			int pos = i * 5 + bit - 2;

			v <<= 1;
			if (pos >= 0 && (raw[pos / 8] >> (7 - pos % 8)) & 1)
				v |= 1;
		}
		id[i] = b32[v];
	}
	id[26] = '\0';
	snprintf(buf, buflen, "%s%s", prefix, id);
}

void
memory_config_defaults(struct memory_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->dimensions = 384;
	cfg->alpha = 0.65f;
	cfg->beta = 0.15f;
	cfg->gamma = 0.20f;
	cfg->half_life_days = 45;
	cfg->lambda = 0.7f;
	cfg->k_default = 3;
	cfg->k_max = 20;
	cfg->min_confidence = 0.3f;
	cfg->max_age_days = 365;
	cfg->consolidate_every = 20;
	cfg->dup_threshold = 0.80f;
	cfg->contradiction_threshold = 0.55f;
	cfg->quarantine_after = 5;
	cfg->quarantine_min_usage = 3;
	cfg->prune_age_days = 180;
	cfg->prune_confidence = 0.3f;
	cfg->consolidate_max_new = 2000;
	cfg->scrub = true;
	cfg->max_title = 512;
	cfg->max_description = 2048;
	cfg->max_content = 16384;
	cfg->max_query = 4096;
	cfg->max_trajectory = 256 * 1024;
	cfg->max_batch = 256;
	cfg->max_tags = ARENA_MAX_TAGS;
	cfg->usage_flush_ms = 1000;
}

/* --- statements and tenants --- */

static sqlite3_stmt *
mem_stmt(struct memory *m, enum mem_stmt k)
{
	if (m->stmt[k] == NULL &&
	    sqlite3_prepare_v3(m->db, mem_sql[k], -1, SQLITE_PREPARE_PERSISTENT, &m->stmt[k],
			       NULL) != SQLITE_OK)
		return NULL;
	sqlite3_reset(m->stmt[k]);
	sqlite3_clear_bindings(m->stmt[k]);
	return m->stmt[k];
}

static int
mem_exec(struct memory *m, const char *sql)
{
	return sqlite3_exec(m->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : SP_EDB;
}

static unsigned
mem_bucket(const char *tenant)
{
	return (unsigned)(arena_hash(tenant) % MEM_NBUCKETS);
}

static struct mem_tenant *
mem_tenant(struct memory *m, const char *tenant, bool create)
{
	struct mem_tenant **b = &m->buckets[mem_bucket(tenant)], *t;

	for (t = *b; t != NULL; t = t->next)
		if (strcmp(t->name, tenant) == 0)
			return t;
	if (!create)
		return NULL;
	t = xcalloc(1, sizeof(*t));
	t->name = xstrdup(tenant);
	t->next = *b;
	*b = t;
	return t;
}

static struct mem_space *
mem_space(struct mem_tenant *t, const char *model, unsigned dims)
{
	struct mem_space *s;

	for (s = t->spaces; s != NULL; s = s->next)
		if (strcmp(s->model, model) == 0)
			return s;
	if (dims == 0)
		return NULL;
	s = xcalloc(1, sizeof(*s));
	s->model = xstrdup(model);
	s->arena = arena_new(dims);
	s->next = t->spaces;
	t->spaces = s;
	return s;
}

static struct arena *
mem_arena(struct memory *m, const char *tenant, const char *model)
{
	struct mem_tenant *t = mem_tenant(m, tenant, false);
	struct mem_space *s;

	if (t == NULL || (s = mem_space(t, model, 0)) == NULL)
		return NULL;
	return s->arena;
}

static void
mem_tenants_free(struct memory *m)
{
	for (size_t i = 0; i < MEM_NBUCKETS; i++) {
		struct mem_tenant *t = m->buckets[i], *tn;

		for (; t != NULL; t = tn) {
			struct mem_space *s = t->spaces, *sn;

			tn = t->next;
			for (; s != NULL; s = sn) {
				sn = s->next;
				arena_free(s->arena);
				free(s->model);
				free(s);
			}
			free(t->name);
			free(t);
		}
		m->buckets[i] = NULL;
	}
}

/* --- metadata for the arena --- */

static int8_t
mem_outcome_code(const char *s)
{
	if (s == NULL)
		return -1;
	return strcmp(s, "success") == 0 ? 1 : 0;
}

static void
mem_meta_tags(struct arena_meta *meta, const char *tags_json)
{
	json_t *tags, *v;
	size_t i;

	meta->ntags = 0;
	/* Most items have no tags: skip the parser for them (start-up time). */
	if (tags_json == NULL || strcmp(tags_json, "[]") == 0)
		return;
	tags = json_loads(tags_json, 0, NULL);
	if (tags == NULL)
		return;
	json_array_foreach(tags, i, v) {
		if (meta->ntags == ARENA_MAX_TAGS)
			break;
		if (json_is_string(v))
			meta->tags[meta->ntags++] = arena_hash(json_string_value(v));
	}
	json_decref(tags);
}

static int
mem_load(struct memory *m)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(m->db, "SELECT seq, tenant, namespace, domain, tags, outcome,"
			       " confidence, created_ms, model, dims, embedding FROM mem_items"
			       " WHERE state = 'active'", -1, &st, NULL) != SQLITE_OK)
		return SP_EDB;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct arena_meta meta = { 0 };
		struct mem_space *s;
		unsigned dims = (unsigned)sqlite3_column_int(st, 9);
		const char *model = (const char *)sqlite3_column_text(st, 8);

		if (dims < EMBED_MIN_DIMS || dims > EMBED_MAX_DIMS ||
		    (size_t)sqlite3_column_bytes(st, 10) != dims * sizeof(float))
			continue;	/* the CHECK makes this unreachable short of tampering */
		meta.rowid = sqlite3_column_int64(st, 0);
		meta.ns = arena_hash((const char *)sqlite3_column_text(st, 2));
		meta.domain = arena_hash((const char *)sqlite3_column_text(st, 3));
		mem_meta_tags(&meta, (const char *)sqlite3_column_text(st, 4));
		meta.outcome = mem_outcome_code((const char *)sqlite3_column_text(st, 5));
		meta.confidence = (float)sqlite3_column_double(st, 6);
		meta.created_ms = sqlite3_column_int64(st, 7);
		s = mem_space(mem_tenant(m, (const char *)sqlite3_column_text(st, 1), true),
			      model, dims);
		if (arena_dims(s->arena) != dims)
			continue;
		arena_add(s->arena, &meta, sqlite3_column_blob(st, 10));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : SP_EDB;
}

int
memory_open(uv_loop_t *loop, struct store *store, const struct memory_config *cfg,
	    struct memory **ret)
{
	struct memory *m;
	int r;

	if (cfg->dimensions < EMBED_MIN_DIMS || cfg->dimensions > EMBED_MAX_DIMS ||
	    cfg->k_default < 1 || cfg->k_default > cfg->k_max || cfg->k_max > 1000 ||
	    cfg->lambda < 0.5f || cfg->lambda > 1.0f || cfg->half_life_days <= 0 ||
	    cfg->max_batch < 1 || cfg->max_tags > ARENA_MAX_TAGS)
		return SP_ECONFIG;
	m = xcalloc(1, sizeof(*m));
	if (cfg->embedder_url != NULL &&
	    (r = embed_http_new(cfg->httpc, cfg->embedder_url, cfg->embedder_model,
				cfg->embedder_timeout_ms, &m->http)) < 0) {
		free(m);
		return r;
	}
	m->loop = loop;
	m->store = store;
	m->db = store_db(store);
	m->cfg = *cfg;
	m->cfg.embedder_url = NULL;	/* kept in m->http */
	m->cfg.embedder_model = NULL;
	m->cfg.httpc = NULL;
	embed_hash_model(cfg->dimensions, m->hash_model, sizeof(m->hash_model));
	if ((r = store_migrate(store, "memory", memory_migrations,
			       sizeof(memory_migrations) / sizeof(memory_migrations[0]))) < 0)
		goto out_free;
	if ((r = mem_load(m)) < 0)
		goto out_free;
	uv_timer_init(loop, &m->timer);
	*ret = m;
	return 0;

out_free:
	mem_tenants_free(m);
	embed_http_free(m->http);
	free(m);
	return r;
}

/* --- validation --- */

static int
mem_str(json_t *obj, const char *key, size_t max, bool required, const char **ret,
	char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	*ret = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return mem_err(err, errlen, SP_EINVAL, "'%s' is required", key);
		return 0;
	}
	if (!json_is_string(v))
		return mem_err(err, errlen, SP_EINVAL, "'%s' must be a string", key);
	if (json_string_length(v) > max)
		return mem_err(err, errlen, SP_ELIMIT, "'%s' is longer than %zu bytes", key, max);
	if (required && json_string_length(v) == 0)
		return mem_err(err, errlen, SP_EINVAL, "'%s' must not be empty", key);
	*ret = json_string_value(v);
	return 0;
}

static int
mem_known(json_t *obj, const char *const *keys, char *err, size_t errlen)
{
	const char *k;
	json_t *v;

	json_object_foreach(obj, k, v) {
		size_t i;

		for (i = 0; keys[i] != NULL; i++)
			if (strcmp(keys[i], k) == 0)
				break;
		if (keys[i] == NULL)
			return mem_err(err, errlen, SP_EINVAL, "unknown field '%.64s'", k);
	}
	return 0;
}

static int
mem_outcome(json_t *obj, const char **ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, "outcome");

	*ret = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v) || (strcmp(json_string_value(v), "success") != 0 &&
				   strcmp(json_string_value(v), "failure") != 0))
		return mem_err(err, errlen, SP_EINVAL, "'outcome' must be \"success\" or \"failure\"");
	*ret = json_string_value(v);
	return 0;
}

static int
mem_unit(json_t *obj, const char *key, double lo, double hi, double *ret, char *err,
	 size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL)
		return 0;
	if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
	    json_number_value(v) < lo || json_number_value(v) > hi)
		return mem_err(err, errlen, SP_EINVAL, "'%s' must be a number in [%g, %g]", key,
			       lo, hi);
	*ret = json_number_value(v);
	return 0;
}

static int
mem_tags(struct memory *m, json_t *obj, json_t **ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, "tags"), *t;
	size_t i;

	*ret = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return mem_err(err, errlen, SP_EINVAL, "'tags' must be an array of strings");
	if (json_array_size(v) > m->cfg.max_tags)
		return mem_err(err, errlen, SP_ELIMIT, "more than %u tags", m->cfg.max_tags);
	json_array_foreach(v, i, t) {
		if (!json_is_string(t) || json_string_length(t) == 0)
			return mem_err(err, errlen, SP_EINVAL, "'tags' must be non-empty strings");
		if (json_string_length(t) > MEM_MAX_TAG)
			return mem_err(err, errlen, SP_ELIMIT, "a tag is longer than %d bytes",
				       MEM_MAX_TAG);
	}
	*ret = v;
	return 0;
}

/*
 * A client vector: dims numbers, all finite, not all zero. *ret is a
 * malloc'd unit vector.
 */
static int
mem_vector(json_t *v, float **ret, unsigned *dims, char *err, size_t errlen)
{
	size_t n = json_array_size(v), i;
	json_t *x;
	float *f;

	if (!json_is_array(v))
		return mem_err(err, errlen, SP_EINVAL, "'vector' must be an array of numbers");
	if (n < EMBED_MIN_DIMS || n > EMBED_MAX_DIMS)
		return mem_err(err, errlen, SP_EINVAL, "'vector' must have %d to %d dimensions",
			       EMBED_MIN_DIMS, EMBED_MAX_DIMS);
	f = xmalloc(n * sizeof(*f));
	json_array_foreach(v, i, x) {
		if (!json_is_number(x) || !isfinite(json_number_value(x)) ||
		    fabs(json_number_value(x)) > 1e30) {
			free(f);
			return mem_err(err, errlen, SP_EINVAL, "'vector' holds a non-number");
		}
		f[i] = (float)json_number_value(x);
	}
	if (embed_normalize(f, (unsigned)n) == 0.0f) {
		free(f);
		return mem_err(err, errlen, SP_EINVAL, "'vector' is all zeroes");
	}
	*ret = f;
	*dims = (unsigned)n;
	return 0;
}

/* A validated item, ready to insert; strings borrowed from the request or owned. */
struct mem_new {
	const char *ns, *domain, *agent, *task, *outcome, *model;
	char *title, *description, *content;	/* scrubbed copies */
	char *tags;				/* JSON text */
	double confidence;
	float *vec;
	unsigned dims;
	char id[40];
	struct arena_meta meta;
};

static void
mem_new_done(struct mem_new *n)
{
	free(n->title);
	free(n->description);
	free(n->content);
	free(n->tags);
	free(n->vec);
}

static char *
mem_clean(struct memory *m, const char *s)
{
	if (s == NULL)
		return xstrdup("");
	if (!m->cfg.scrub)
		return xstrdup(s);
	return scrub_text(s, strlen(s), NULL);
}

static int
mem_validate_item(struct memory *m, json_t *it, struct mem_new *n, bool dry, char *err,
		  size_t errlen)
{
	static const char *const keys[] = {
		"title", "description", "content", "tags", "domain", "namespace", "outcome",
		"confidence", "agent_id", "task_id", "vector", "model", NULL,
	};
	const char *title, *desc, *content;
	json_t *tags, *vec;
	int r;

	memset(n, 0, sizeof(*n));
	n->confidence = 0.5;
	if (!json_is_object(it))
		return mem_err(err, errlen, SP_EINVAL, "an item must be a JSON object");
	if ((r = mem_known(it, keys, err, errlen)) < 0 ||
	    (r = mem_str(it, "title", m->cfg.max_title, true, &title, err, errlen)) < 0 ||
	    (r = mem_str(it, "description", m->cfg.max_description, false, &desc, err,
			 errlen)) < 0 ||
	    (r = mem_str(it, "content", m->cfg.max_content, true, &content, err, errlen)) < 0 ||
	    (r = mem_str(it, "namespace", MEM_MAX_NAME, false, &n->ns, err, errlen)) < 0 ||
	    (r = mem_str(it, "domain", MEM_MAX_NAME, false, &n->domain, err, errlen)) < 0 ||
	    (r = mem_str(it, "agent_id", MEM_MAX_NAME, false, &n->agent, err, errlen)) < 0 ||
	    (r = mem_str(it, "task_id", MEM_MAX_NAME, false, &n->task, err, errlen)) < 0 ||
	    (r = mem_str(it, "model", MEM_MAX_MODEL, false, &n->model, err, errlen)) < 0 ||
	    (r = mem_outcome(it, &n->outcome, err, errlen)) < 0 ||
	    (r = mem_unit(it, "confidence", 0, 1, &n->confidence, err, errlen)) < 0 ||
	    (r = mem_tags(m, it, &tags, err, errlen)) < 0)
		return r;
	vec = json_object_get(it, "vector");
	if (vec != NULL) {
		if (n->model == NULL || n->model[0] == '\0')
			return mem_err(err, errlen, SP_EINVAL, "'vector' needs 'model'");
		if ((r = mem_vector(vec, &n->vec, &n->dims, err, errlen)) < 0)
			return r;
	} else if (n->model != NULL) {
		return mem_err(err, errlen, SP_EINVAL, "'model' is only for client 'vector's");
	}
	if (n->ns == NULL)
		n->ns = "";
	if (n->domain == NULL)
		n->domain = "";
	n->title = mem_clean(m, title);
	n->description = mem_clean(m, desc);
	n->content = mem_clean(m, content);
	if (tags != NULL) {
		size_t i;
		json_t *t;

		n->tags = json_dumps(tags, JSON_COMPACT);
		json_array_foreach(tags, i, t)
			n->meta.tags[n->meta.ntags++] = arena_hash(json_string_value(t));
	} else {
		n->tags = xstrdup("[]");
	}
	if (n->vec == NULL && m->http != NULL) {
		/* The HTTP embedder's vectors arrive through memory_add_async(). */
		if (!dry)
			return mem_err(err, errlen, SP_EINVAL,
				       "items need vectors from the HTTP embedder");
		n->model = embed_http_model(m->http);
	} else if (n->vec == NULL) {
		/* The embedding input: title, description and content joined. */
		char *text;

		xasprintf(&text, "%s\n%s\n%s", n->title, n->description, n->content);
		n->dims = m->cfg.dimensions;
		n->vec = xmalloc(n->dims * sizeof(float));
		embed_hash(text, strlen(text), n->vec, n->dims);
		free(text);
		n->model = m->hash_model;
	}
	n->meta.ns = arena_hash(n->ns);
	n->meta.domain = arena_hash(n->domain);
	n->meta.outcome = mem_outcome_code(n->outcome);
	n->meta.confidence = (float)n->confidence;
	return 0;
}

/* --- rows to JSON --- */

static json_t *
mem_text_or_null(sqlite3_stmt *st, int col)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return json_null();
	return json_string((const char *)sqlite3_column_text(st, col));
}

static json_t *
mem_row_json(sqlite3_stmt *st)
{
	json_t *o = json_object(), *tags;

	json_object_set_new(o, "id", json_string((const char *)sqlite3_column_text(st, 1)));
	json_object_set_new(o, "namespace", json_string((const char *)sqlite3_column_text(st, 2)));
	json_object_set_new(o, "domain", json_string((const char *)sqlite3_column_text(st, 3)));
	json_object_set_new(o, "agent_id", mem_text_or_null(st, 4));
	json_object_set_new(o, "task_id", mem_text_or_null(st, 5));
	json_object_set_new(o, "title", json_string((const char *)sqlite3_column_text(st, 6)));
	json_object_set_new(o, "description",
			    json_string((const char *)sqlite3_column_text(st, 7)));
	json_object_set_new(o, "content", json_string((const char *)sqlite3_column_text(st, 8)));
	tags = json_loads((const char *)sqlite3_column_text(st, 9), 0, NULL);
	json_object_set_new(o, "tags", tags ? tags : json_array());
	json_object_set_new(o, "outcome", mem_text_or_null(st, 10));
	json_object_set_new(o, "confidence", json_real(sqlite3_column_double(st, 11)));
	json_object_set_new(o, "usage_count", json_integer(sqlite3_column_int64(st, 12)));
	json_object_set_new(o, "success_count", json_integer(sqlite3_column_int64(st, 13)));
	json_object_set_new(o, "failure_count", json_integer(sqlite3_column_int64(st, 14)));
	json_object_set_new(o, "created_ms", json_integer(sqlite3_column_int64(st, 15)));
	json_object_set_new(o, "updated_ms", json_integer(sqlite3_column_int64(st, 16)));
	json_object_set_new(o, "last_used_ms", sqlite3_column_type(st, 17) == SQLITE_NULL ?
			    json_null() : json_integer(sqlite3_column_int64(st, 17)));
	json_object_set_new(o, "model", json_string((const char *)sqlite3_column_text(st, 18)));
	json_object_set_new(o, "dims", json_integer(sqlite3_column_int(st, 19)));
	json_object_set_new(o, "state", json_string((const char *)sqlite3_column_text(st, 20)));
	return o;
}

/* The item at seq in tenant, or NULL (SP_ENOTFOUND / SP_EDB in *r). */
static json_t *
mem_fetch_seq(struct memory *m, const char *tenant, int64_t seq, int *r)
{
	sqlite3_stmt *st = mem_stmt(m, MS_GET_SEQ);
	json_t *o = NULL;
	int rc;

	if (st == NULL) {
		*r = SP_EDB;
		return NULL;
	}
	sqlite3_bind_int64(st, 1, seq);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		o = mem_row_json(st);
	*r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? SP_ENOTFOUND : SP_EDB;
	sqlite3_reset(st);
	return o;
}

/* --- insert --- */

/* The stored item as GET would show it, built from what was inserted. */
static json_t *
mem_new_json(const struct mem_new *n, int64_t now)
{
	json_t *o = json_object(), *tags = json_loads(n->tags, 0, NULL);

	json_object_set_new(o, "id", json_string(n->id));
	json_object_set_new(o, "namespace", json_string(n->ns));
	json_object_set_new(o, "domain", json_string(n->domain));
	json_object_set_new(o, "agent_id", n->agent ? json_string(n->agent) : json_null());
	json_object_set_new(o, "task_id", n->task ? json_string(n->task) : json_null());
	json_object_set_new(o, "title", json_string(n->title));
	json_object_set_new(o, "description", json_string(n->description));
	json_object_set_new(o, "content", json_string(n->content));
	json_object_set_new(o, "tags", tags ? tags : json_array());
	json_object_set_new(o, "outcome", n->outcome ? json_string(n->outcome) : json_null());
	json_object_set_new(o, "confidence", json_real(n->confidence));
	json_object_set_new(o, "usage_count", json_integer(0));
	json_object_set_new(o, "success_count", json_integer(0));
	json_object_set_new(o, "failure_count", json_integer(0));
	json_object_set_new(o, "created_ms", json_integer(now));
	json_object_set_new(o, "updated_ms", json_integer(now));
	json_object_set_new(o, "last_used_ms", json_null());
	json_object_set_new(o, "model", json_string(n->model));
	json_object_set_new(o, "dims", json_integer(n->dims));
	json_object_set_new(o, "state", json_string("active"));
	return o;
}

static void mem_maybe_consolidate(struct memory *m, struct mem_tenant *t);

static int
mem_add(struct memory *m, const char *tenant, json_t *body, bool dry, json_t **ret, char *err,
	size_t errlen)
{
	struct mem_new *items;
	json_t *arr = NULL, *out;
	size_t n, i, done = 0;
	struct mem_tenant *t;
	int64_t now = clock_wall_ms();
	int r = 0;

	if (tenant == NULL || tenant[0] == '\0')
		return mem_err(err, errlen, SP_EINVAL, "no tenant");
	if (!json_is_object(body))
		return mem_err(err, errlen, SP_EINVAL, "the body must be a JSON object");
	if (json_object_get(body, "items") != NULL) {
		arr = json_object_get(body, "items");
		if (json_object_size(body) != 1)
			return mem_err(err, errlen, SP_EINVAL,
				       "a batch holds only \"items\"");
		if (!json_is_array(arr) || json_array_size(arr) == 0)
			return mem_err(err, errlen, SP_EINVAL,
				       "'items' must be a non-empty array");
		if (json_array_size(arr) > m->cfg.max_batch)
			return mem_err(err, errlen, SP_ELIMIT, "more than %u items in a batch",
				       m->cfg.max_batch);
		n = json_array_size(arr);
	} else {
		n = 1;
	}
	items = xcalloc(n, sizeof(*items));
	t = mem_tenant(m, tenant, false);
	for (i = 0; i < n; i++, done++) {
		char e[200];
		struct mem_space *s;

		if ((r = mem_validate_item(m, arr ? json_array_get(arr, i) : body, &items[i], dry,
					   e, sizeof(e))) < 0) {
			if (arr != NULL)
				mem_err(err, errlen, r, "items[%zu]: %s", i, e);
			else
				mem_err(err, errlen, r, "%s", e);
			done++;
			goto out_free;
		}
		/* Dimensions are fixed per (tenant, model) by the first vector stored. */
		s = t ? mem_space(t, items[i].model, 0) : NULL;
		if (s != NULL && items[i].dims != 0 && arena_dims(s->arena) != items[i].dims) {
			if (arr != NULL)
				r = mem_err(err, errlen, SP_EINVAL,
					    "items[%zu]: 'vector' has %u dimensions, model '%s' has %u",
					    i, items[i].dims, items[i].model, arena_dims(s->arena));
			else
				r = mem_err(err, errlen, SP_EINVAL,
					    "'vector' has %u dimensions, model '%s' has %u",
					    items[i].dims, items[i].model, arena_dims(s->arena));
			done++;
			goto out_free;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(items[j].model, items[i].model) == 0 &&
			    items[j].dims != items[i].dims && items[j].dims && items[i].dims) {
				r = mem_err(err, errlen, SP_EINVAL,
					    "items[%zu]: dimensions differ within model '%s'", i,
					    items[i].model);
				done++;
				goto out_free;
			}
	}

	if (dry) {
		r = 0;
		goto out_free;
	}
	if ((r = mem_exec(m, "BEGIN IMMEDIATE")) < 0) {
		mem_err(err, errlen, r, "database: %s", sqlite3_errmsg(m->db));
		goto out_free;
	}
	for (i = 0; i < n; i++) {
		struct mem_new *it = &items[i];
		sqlite3_stmt *st = mem_stmt(m, MS_INSERT);

		if (st == NULL) {
			r = SP_EDB;
			goto out_rollback;
		}
		mem_new_id("mem_", it->id, sizeof(it->id));
		sqlite3_bind_text(st, 1, it->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, it->ns, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, it->domain, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, it->agent, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, it->task, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, it->title, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, it->description, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, it->content, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 10, it->tags, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 11, it->outcome, -1, SQLITE_STATIC);
		sqlite3_bind_double(st, 12, it->confidence);
		sqlite3_bind_int64(st, 13, now);
		sqlite3_bind_text(st, 14, it->model, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 15, (int)it->dims);
		sqlite3_bind_blob(st, 16, it->vec, (int)(it->dims * sizeof(float)), SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE) {
			r = SP_EDB;
			goto out_rollback;
		}
		sqlite3_reset(st);
		it->meta.rowid = sqlite3_last_insert_rowid(m->db);
		it->meta.created_ms = now;
	}
	if (sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		r = SP_EDB;
		goto out_rollback;
	}

	/* Committed: now the arenas may follow. */
	t = mem_tenant(m, tenant, true);
	out = arr ? json_array() : NULL;
	for (i = 0; i < n; i++) {
		struct mem_space *s = mem_space(t, items[i].model, items[i].dims);
		json_t *o;

		arena_add(s->arena, &items[i].meta, items[i].vec);
		o = mem_new_json(&items[i], now);
		if (arr)
			json_array_append_new(out, o);
		else
			out = o;
	}
	*ret = arr ? json_pack("{so}", "items", out) : out;
	t->inserts += (unsigned)n;
	mem_maybe_consolidate(m, t);
	r = 0;
	goto out_free;

out_rollback:
	mem_err(err, errlen, r, "database: %s", sqlite3_errmsg(m->db));
	sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
out_free:
	for (i = 0; i < n; i++)
		mem_new_done(&items[i]);
	free(items);
	(void)done;
	return r;
}

int
memory_add(struct memory *m, const char *tenant, json_t *body, json_t **ret, char *err,
	   size_t errlen)
{
	return mem_add(m, tenant, body, false, ret, err, errlen);
}

/* --- usage batching --- */

static int
mem_cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int
memory_flush_usage(struct memory *m)
{
	int64_t now = clock_wall_ms();
	size_t i, j;
	int r = 0;

	if (m->nusage == 0)
		return 0;
	qsort(m->usage, m->nusage, sizeof(*m->usage), mem_cmp_i64);
	if (mem_exec(m, "BEGIN IMMEDIATE") < 0)
		return SP_EDB;
	for (i = 0; i < m->nusage; i = j) {
		sqlite3_stmt *st = mem_stmt(m, MS_USAGE);

		for (j = i; j < m->nusage && m->usage[j] == m->usage[i]; j++)
			;
		if (st == NULL) {
			r = SP_EDB;
			break;
		}
		sqlite3_bind_int64(st, 1, m->usage[i]);
		sqlite3_bind_int64(st, 2, (int64_t)(j - i));
		sqlite3_bind_int64(st, 3, now);
		if (sqlite3_step(st) != SQLITE_DONE) {
			r = SP_EDB;
			break;
		}
		sqlite3_reset(st);
	}
	if (r == 0 && mem_exec(m, "COMMIT") < 0)
		r = SP_EDB;
	if (r < 0) {
		/* Counts are advisory: keep them for the next flush, bounded. */
		sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
		if (m->nusage >= MEM_USAGE_MAX_PENDING)
			m->nusage = 0;
		return r;
	}
	m->nusage = 0;
	return 0;
}

static void
mem_timer_cb(uv_timer_t *h)
{
	struct memory *m = h->data;

	m->timer_armed = false;
	memory_flush_usage(m);
}

static void
mem_note_usage(struct memory *m, int64_t seq)
{
	if (m->nusage == m->capusage) {
		m->capusage = m->capusage ? m->capusage * 2 : 64;
		m->usage = xreallocarray(m->usage, m->capusage, sizeof(*m->usage));
	}
	m->usage[m->nusage++] = seq;
	if (m->nusage >= MEM_USAGE_MAX_PENDING) {
		memory_flush_usage(m);
		return;
	}
	if (!m->timer_armed && !m->closing) {
		m->timer.data = m;
		uv_timer_start(&m->timer, mem_timer_cb, m->cfg.usage_flush_ms, 0);
		m->timer_armed = true;
	}
}

/* --- search --- */

struct mem_cand {
	int64_t seq;
	uint32_t idx;
	float sim;
	double rrf;
	double score, rec, rel;
	int8_t picked;
};

static int
mem_cand_rrf_cmp(const void *a, const void *b)
{
	const struct mem_cand *x = a, *y = b;

	if (x->rrf != y->rrf)
		return x->rrf > y->rrf ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* An FTS5 query from free text: its content words, quoted, OR-ed; NULL if none. */
static char *
mem_fts_query(const char *q)
{
	size_t cap = strlen(q) * 4 + 16, len = 0, words = 0;
	char *out = xmalloc(cap);

	out[0] = '\0';
	while (*q && words < 32) {
		const char *s;

		while (*q && !((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
			       (*q >= '0' && *q <= '9') || (unsigned char)*q >= 0x80))
			q++;
		s = q;
		while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		       (*q >= '0' && *q <= '9') || (unsigned char)*q >= 0x80)
			q++;
		if (q - s < 3)
			continue;
		len += (size_t)snprintf(out + len, cap - len, "%s\"%.*s\"", words ? " OR " : "",
					(int)(q - s), s);
		words++;
	}
	if (words == 0) {
		free(out);
		return NULL;
	}
	return out;
}

static int
mem_search(struct memory *m, const char *tenant, json_t *body, bool dry, json_t **ret,
	   char *err, size_t errlen)
{
	static const char *const keys[] = {
		"query", "vector", "model", "k", "namespace", "domain", "tags", "outcome",
		"min_confidence", "max_age_days", "lambda", "weights", "hybrid", "exact", NULL,
	};
	const char *query, *model, *ns, *domain, *outcome;
	double min_conf = m->cfg.min_confidence, max_age = m->cfg.max_age_days;
	double lambda = m->cfg.lambda, alpha = m->cfg.alpha, beta = m->cfg.beta;
	double gamma = m->cfg.gamma, halflife = m->cfg.half_life_days;
	json_t *v, *tags, *results;
	uint64_t taghash[ARENA_MAX_TAGS];
	struct arena_filter f;
	struct arena *a;
	struct arena_hit *hits = NULL;
	struct mem_cand *cand = NULL;
	double *maxsim = NULL;
	float *q = NULL;
	unsigned qdims;
	size_t k = m->cfg.k_default, c, nhits, ncand = 0, i;
	bool hybrid = false, exact = true;
	int64_t now = clock_wall_ms();
	int r;

	if (tenant == NULL || tenant[0] == '\0')
		return mem_err(err, errlen, SP_EINVAL, "no tenant");
	if (!json_is_object(body))
		return mem_err(err, errlen, SP_EINVAL, "the body must be a JSON object");
	if ((r = mem_known(body, keys, err, errlen)) < 0 ||
	    (r = mem_str(body, "query", m->cfg.max_query, false, &query, err, errlen)) < 0 ||
	    (r = mem_str(body, "model", MEM_MAX_MODEL, false, &model, err, errlen)) < 0 ||
	    (r = mem_str(body, "namespace", MEM_MAX_NAME, false, &ns, err, errlen)) < 0 ||
	    (r = mem_str(body, "domain", MEM_MAX_NAME, false, &domain, err, errlen)) < 0 ||
	    (r = mem_outcome(body, &outcome, err, errlen)) < 0 ||
	    (r = mem_unit(body, "min_confidence", 0, 1, &min_conf, err, errlen)) < 0 ||
	    (r = mem_unit(body, "max_age_days", 0, 36500, &max_age, err, errlen)) < 0 ||
	    (r = mem_unit(body, "lambda", 0.5, 1, &lambda, err, errlen)) < 0 ||
	    (r = mem_tags(m, body, &tags, err, errlen)) < 0)
		return r;
	if ((v = json_object_get(body, "k")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > (json_int_t)m->cfg.k_max)
			return mem_err(err, errlen, SP_EINVAL, "'k' must be an integer in [1, %u]",
				       m->cfg.k_max);
		k = (size_t)json_integer_value(v);
	}
	if ((v = json_object_get(body, "weights")) != NULL) {
		static const char *const wkeys[] = { "alpha", "beta", "gamma", "half_life_days",
						     NULL };

		if (!json_is_object(v))
			return mem_err(err, errlen, SP_EINVAL, "'weights' must be an object");
		if ((r = mem_known(v, wkeys, err, errlen)) < 0 ||
		    (r = mem_unit(v, "alpha", 0, 1, &alpha, err, errlen)) < 0 ||
		    (r = mem_unit(v, "beta", 0, 1, &beta, err, errlen)) < 0 ||
		    (r = mem_unit(v, "gamma", 0, 1, &gamma, err, errlen)) < 0 ||
		    (r = mem_unit(v, "half_life_days", 0.001, 36500, &halflife, err,
				  errlen)) < 0)
			return r;
	}
	if ((v = json_object_get(body, "hybrid")) != NULL) {
		if (!json_is_boolean(v))
			return mem_err(err, errlen, SP_EINVAL, "'hybrid' must be true or false");
		hybrid = json_is_true(v);
	}
	if ((v = json_object_get(body, "exact")) != NULL) {
		if (!json_is_boolean(v))
			return mem_err(err, errlen, SP_EINVAL, "'exact' must be true or false");
		exact = json_is_true(v);
	}
	v = json_object_get(body, "vector");
	if (v != NULL) {
		if (model == NULL)
			return mem_err(err, errlen, SP_EINVAL, "'vector' needs 'model'");
		if ((r = mem_vector(v, &q, &qdims, err, errlen)) < 0)
			return r;
	} else {
		if (model != NULL)
			return mem_err(err, errlen, SP_EINVAL, "'model' is only for a 'vector'");
		if (query == NULL || query[0] == '\0')
			return mem_err(err, errlen, SP_EINVAL, "'query' or 'vector' is required");
		if (m->http != NULL)
			return dry ? 0 : mem_err(err, errlen, SP_EINVAL,
						 "the query needs the HTTP embedder");
		model = m->hash_model;
		qdims = m->cfg.dimensions;
		q = xmalloc(qdims * sizeof(float));
		embed_hash(query, strlen(query), q, qdims);
	}

	if (dry) {
		free(q);
		return 0;
	}
	results = json_array();
	a = mem_arena(m, tenant, model);
	if (a == NULL)
		goto out_reply;		/* nothing stored for this tenant and model */
	if (arena_dims(a) != qdims) {
		r = mem_err(err, errlen, SP_EINVAL, "'vector' has %u dimensions, model '%s' has %u",
			    qdims, model, arena_dims(a));
		json_decref(results);
		goto out_free;
	}

	arena_filter_init(&f);
	if (ns != NULL) {
		f.has_ns = true;
		f.ns = arena_hash(ns);
	}
	if (domain != NULL) {
		f.has_domain = true;
		f.domain = arena_hash(domain);
	}
	if (outcome != NULL)
		f.outcome = mem_outcome_code(outcome);
	f.min_confidence = (float)min_conf;
	if (max_age > 0)
		f.min_created_ms = now - (int64_t)(max_age * MEM_DAY_MS);
	if (tags != NULL) {
		json_t *t;

		json_array_foreach(tags, i, t)
			taghash[i] = arena_hash(json_string_value(t));
		f.tags = taghash;
		f.ntags = (unsigned)json_array_size(tags);
	}

	/* Candidates: the exact top C by cosine, C = max(50, 10k). */
	c = 10 * k > 50 ? 10 * k : 50;
	hits = xmalloc(c * sizeof(*hits));
	nhits = arena_search(a, q, &f, c, exact ? k : 0, hits);
	cand = xcalloc(2 * c, sizeof(*cand));
	for (i = 0; i < nhits; i++) {
		cand[ncand].seq = hits[i].rowid;
		cand[ncand].idx = hits[i].idx;
		cand[ncand].sim = hits[i].sim;
		cand[ncand].rrf = 1.0 / (MEM_RRF_K + (double)i + 1);
		ncand++;
	}
	if (hybrid && query != NULL) {
		char *fq = mem_fts_query(query);
		sqlite3_stmt *st = fq ? mem_stmt(m, MS_FTS) : NULL;
		size_t rank = 0;
		int rc = SQLITE_DONE;

		if (fq != NULL && st == NULL) {
			free(fq);
			r = mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
			json_decref(results);
			goto out_free;
		}
		if (st != NULL) {
			sqlite3_bind_text(st, 1, fq, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, (int64_t)c);
			while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
				int64_t seq = sqlite3_column_int64(st, 0);
				const float *vec;
				struct arena_meta *meta = arena_get(a, seq, &vec);
				size_t j;

				rank++;
				/* Another model's item, or filtered out: not a candidate. */
				if (meta == NULL || !arena_filter_pass(meta, &f))
					continue;
				for (j = 0; j < ncand; j++)
					if (cand[j].seq == seq)
						break;
				if (j == ncand) {
					cand[j].seq = seq;
					cand[j].idx = (uint32_t)((vec - arena_vec(a, 0)) / qdims);
					cand[j].sim = arena_dot(vec, q, qdims);
					ncand++;
				}
				cand[j].rrf += 1.0 / (MEM_RRF_K + (double)rank);
			}
			sqlite3_reset(st);
		}
		free(fq);
		if (rc != SQLITE_DONE) {
			r = mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
			json_decref(results);
			goto out_free;
		}
		qsort(cand, ncand, sizeof(*cand), mem_cand_rrf_cmp);
		if (ncand > c)
			ncand = c;
	}

	/* Score every candidate, then pick k by MMR. */
	for (i = 0; i < ncand; i++) {
		struct arena_meta *meta = arena_get(a, cand[i].seq, NULL);
		double age = (double)(now - meta->created_ms) / MEM_DAY_MS;

		if (age < 0)
			age = 0;
		cand[i].rec = exp2(-age / halflife);
		cand[i].rel = meta->confidence;
		/*
		 * Hybrid: relevance is the fused rank, scaled so first in both
		 * lists is 1, else cosine clamped to [0,1].
		 */
		if (hybrid)
			cand[i].rrf /= 2.0 / (MEM_RRF_K + 1);
		cand[i].score = alpha * (hybrid ? cand[i].rrf : cand[i].sim > 0 ? cand[i].sim : 0) +
				beta * cand[i].rec + gamma * cand[i].rel;
	}
	/* maxsim[i]: the largest cosine from candidate i to a picked one, kept incrementally. */
	maxsim = xcalloc(ncand ? ncand : 1, sizeof(*maxsim));
	for (size_t picked = 0; picked < k && picked < ncand; picked++) {
		size_t best = (size_t)-1;
		double bestv = -INFINITY;

		for (i = 0; i < ncand; i++) {
			double val;

			if (cand[i].picked)
				continue;
			val = lambda * cand[i].score - (1.0 - lambda) * maxsim[i];
			if (val > bestv || (val == bestv && cand[i].seq < cand[best].seq)) {
				bestv = val;
				best = i;
			}
		}
		if (lambda < 1.0)
			for (i = 0; i < ncand; i++) {
				double s;

				if (cand[i].picked || i == best)
					continue;
				s = arena_dot(arena_vec(a, cand[i].idx), arena_vec(a, cand[best].idx),
					      qdims);
				if (s > maxsim[i])
					maxsim[i] = s;
			}
		cand[best].picked = 1;
		{
			json_t *o = mem_fetch_seq(m, tenant, cand[best].seq, &r);

			if (o == NULL) {
				if (r == SP_ENOTFOUND)
					continue;	/* deleted by a thread-pool run meanwhile */
				r = mem_err(err, errlen, SP_EDB, "database: %s",
					    sqlite3_errmsg(m->db));
				json_decref(results);
				goto out_free;
			}
			json_object_set_new(o, "score", json_real(cand[best].score));
			json_object_set_new(o, "parts", json_pack("{sfsfsf}",
					    "sim", (double)cand[best].sim,
					    "recency", cand[best].rec,
					    "reliability", cand[best].rel));
			if (hybrid)
				json_object_set_new(json_object_get(o, "parts"), "fused",
						    json_real(cand[best].rrf));
			json_array_append_new(results, o);
			mem_note_usage(m, cand[best].seq);
		}
	}

out_reply:
	*ret = json_pack("{sosssi}", "results", results, "model", model, "k", (json_int_t)k);
	r = 0;
out_free:
	free(maxsim);
	free(cand);
	free(hits);
	free(q);
	return r;
}

int
memory_search(struct memory *m, const char *tenant, json_t *body, json_t **ret, char *err,
	      size_t errlen)
{
	return mem_search(m, tenant, body, false, ret, err, errlen);
}

/* --- the HTTP embedder's asynchronous paths --- */

/* A request waiting for the HTTP embedder; owned by the memory until done. */
struct mem_pending {
	struct memory *m;
	char *tenant;
	json_t *body;			/* a copy; vectors are added to it */
	bool search;
	json_t **slots;			/* the objects that get a "vector" (borrowed from body) */
	size_t nslots;
	memory_cb cb;
	void *arg;
	struct sp_http_call *call;
	struct mem_pending *next, **pprev;
};

static void mem_close_maybe_done(struct memory *m);

bool
memory_embeds_async(const struct memory *m)
{
	return m->http != NULL;
}

static void
mem_pending_done(void *arg, int status, const float *vecs, size_t n, unsigned dims,
		 const char *eerr)
{
	struct mem_pending *p = arg;
	struct memory *m = p->m;
	json_t *ret = NULL;
	char err[256] = "";
	int r = status;

	if (p->next != NULL)
		p->next->pprev = p->pprev;
	*p->pprev = p->next;
	if (status == 0 && m->closing)
		r = SP_ECANCELED;
	if (r == 0) {
		for (size_t i = 0; i < p->nslots; i++) {
			json_t *v = json_array();

			for (unsigned d = 0; d < dims; d++)
				json_array_append_new(v, json_real(vecs[i * dims + d]));
			json_object_set_new(p->slots[i], "vector", v);
			json_object_set_new(p->slots[i], "model",
					    json_string(embed_http_model(m->http)));
		}
		r = p->search ? mem_search(m, p->tenant, p->body, false, &ret, err, sizeof(err)) :
			mem_add(m, p->tenant, p->body, false, &ret, err, sizeof(err));
	} else {
		snprintf(err, sizeof(err), "%s", eerr ? eerr : sp_strerror(r));
	}
	(void)n;
	p->cb(p->arg, r, ret, err);
	json_decref(ret);
	json_decref(p->body);
	free(p->slots);
	free(p->tenant);
	free(p);
	m->works--;
	mem_close_maybe_done(m);
}

static int
mem_async(struct memory *m, const char *tenant, json_t *body, bool search, memory_cb cb,
	  void *arg, char *err, size_t errlen)
{
	struct mem_pending *p;
	const char **texts;
	char **owned;
	json_t *arr, *it, *ret = NULL;
	size_t i, n;
	int r;

	if (m->http == NULL || m->closing)
		return mem_err(err, errlen, m->closing ? SP_ECANCELED : SP_EINVAL,
			       "no HTTP embedder");
	/* Validate everything first: a bad request costs no embedder call. */
	r = search ? mem_search(m, tenant, body, true, &ret, err, errlen) :
		mem_add(m, tenant, body, true, &ret, err, errlen);
	if (r < 0)
		return r;
	p = xcalloc(1, sizeof(*p));
	p->m = m;
	p->tenant = xstrdup(tenant);
	p->body = json_deep_copy(body);
	p->search = search;
	p->cb = cb;
	p->arg = arg;
	arr = search ? NULL : json_object_get(p->body, "items");
	n = search ? 1 : arr ? json_array_size(arr) : 1;
	p->slots = xcalloc(n, sizeof(*p->slots));
	texts = xcalloc(n, sizeof(*texts));
	owned = xcalloc(n, sizeof(*owned));
	for (i = 0; i < n; i++) {
		it = arr ? json_array_get(arr, i) : p->body;
		if (json_object_get(it, "vector") != NULL)
			continue;	/* the client sent its own */
		if (search) {
			owned[p->nslots] = xstrdup(json_string_value(json_object_get(it, "query")));
		} else {
			/* The same input as the hashing path: scrubbed title, description, content. */
			const char *d = json_string_value(json_object_get(it, "description"));
			char *t = mem_clean(m, json_string_value(json_object_get(it, "title")));
			char *dd = mem_clean(m, d);
			char *c = mem_clean(m, json_string_value(json_object_get(it, "content")));

			xasprintf(&owned[p->nslots], "%s\n%s\n%s", t, dd, c);
			free(t);
			free(dd);
			free(c);
		}
		texts[p->nslots] = owned[p->nslots];
		p->slots[p->nslots++] = it;
	}
	if (p->nslots == 0) {
		/* Every vector came with the request: the caller uses the synchronous call. */
		r = SP_ECONFLICT;
	} else {
		r = embed_http_request(m->http, texts, p->nslots, mem_pending_done, p, &p->call);
	}
	for (i = 0; i < p->nslots; i++)
		free(owned[i]);
	free(owned);
	free(texts);
	if (r < 0) {
		if (r != SP_ECONFLICT)
			mem_err(err, errlen, r, "embedder: %s", sp_strerror(r));
		json_decref(p->body);
		free(p->slots);
		free(p->tenant);
		free(p);
		return r;
	}
	p->next = m->pending;
	if (p->next != NULL)
		p->next->pprev = &p->next;
	p->pprev = &m->pending;
	m->pending = p;
	m->works++;
	return 0;
}

int
memory_add_async(struct memory *m, const char *tenant, json_t *body, memory_cb cb, void *arg,
		 char *err, size_t errlen)
{
	return mem_async(m, tenant, body, false, cb, arg, err, errlen);
}

int
memory_search_async(struct memory *m, const char *tenant, json_t *body, memory_cb cb,
		    void *arg, char *err, size_t errlen)
{
	return mem_async(m, tenant, body, true, cb, arg, err, errlen);
}

/* --- get, delete, feedback, trajectories --- */

int
memory_get(struct memory *m, const char *tenant, const char *id, json_t **ret)
{
	sqlite3_stmt *st;
	int rc;

	if (tenant == NULL || id == NULL)
		return SP_EINVAL;
	if ((st = mem_stmt(m, MS_GET_ID)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = mem_row_json(st);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? SP_ENOTFOUND : SP_EDB;
}

int
memory_delete(struct memory *m, const char *tenant, const char *id)
{
	sqlite3_stmt *st;
	int64_t seq;
	char *model;
	struct arena *a;
	int rc;

	if (tenant == NULL || id == NULL)
		return SP_EINVAL;
	if ((st = mem_stmt(m, MS_DELETE)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? SP_ENOTFOUND : SP_EDB;
	}
	seq = sqlite3_column_int64(st, 0);
	model = xstrdup((const char *)sqlite3_column_text(st, 1));
	/* Step to the end so the statement (and its implicit transaction) completes. */
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(model);
		return SP_EDB;
	}
	if ((a = mem_arena(m, tenant, model)) != NULL)
		arena_remove(a, seq);
	free(model);
	return 0;
}

int
memory_feedback(struct memory *m, const char *tenant, json_t *body, json_t **ret, char *err,
		size_t errlen)
{
	static const char *const keys[] = { "ids", "outcome", NULL };
	json_t *ids, *id, *missing;
	const char *outcome;
	size_t i, updated = 0;
	bool success;
	int r;

	if (tenant == NULL || tenant[0] == '\0')
		return mem_err(err, errlen, SP_EINVAL, "no tenant");
	if (!json_is_object(body))
		return mem_err(err, errlen, SP_EINVAL, "the body must be a JSON object");
	if ((r = mem_known(body, keys, err, errlen)) < 0 ||
	    (r = mem_outcome(body, &outcome, err, errlen)) < 0)
		return r;
	if (outcome == NULL)
		return mem_err(err, errlen, SP_EINVAL, "'outcome' is required");
	success = strcmp(outcome, "success") == 0;
	ids = json_object_get(body, "ids");
	if (!json_is_array(ids) || json_array_size(ids) == 0)
		return mem_err(err, errlen, SP_EINVAL, "'ids' must be a non-empty array");
	if (json_array_size(ids) > m->cfg.max_batch)
		return mem_err(err, errlen, SP_ELIMIT, "more than %u ids", m->cfg.max_batch);
	json_array_foreach(ids, i, id)
		if (!json_is_string(id) || json_string_length(id) > 64)
			return mem_err(err, errlen, SP_EINVAL, "'ids' must be item ids");

	if (mem_exec(m, "BEGIN IMMEDIATE") < 0)
		return mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
	missing = json_array();
	json_array_foreach(ids, i, id) {
		sqlite3_stmt *st = mem_stmt(m, MS_FEEDBACK);
		int rc;

		if (st == NULL)
			goto out_rollback;
		sqlite3_bind_text(st, 1, json_string_value(id), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
		/* η = 0.05 times +1 for success, −0.5 for failure (§1.3). */
		sqlite3_bind_double(st, 3, success ? 0.05 : -0.025);
		sqlite3_bind_int(st, 4, success);
		sqlite3_bind_int(st, 5, !success);
		sqlite3_bind_int64(st, 6, clock_wall_ms());
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			struct arena *a = mem_arena(m, tenant,
						    (const char *)sqlite3_column_text(st, 1));
			struct arena_meta *meta = a ? arena_get(a, sqlite3_column_int64(st, 0),
								NULL) : NULL;

			if (meta != NULL)
				meta->confidence = (float)sqlite3_column_double(st, 2);
			updated++;
			rc = sqlite3_step(st);
		} else if (rc == SQLITE_DONE) {
			json_array_append(missing, id);
		}
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			goto out_rollback;
	}
	if (mem_exec(m, "COMMIT") < 0)
		goto out_rollback;
	*ret = json_pack("{sIso}", "updated", (json_int_t)updated, "missing", missing);
	return 0;

out_rollback:
	r = mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
	sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
	json_decref(missing);
	/*
	 * The arena may hold confidences of the rolled-back updates; they are
	 * advisory for ranking and SQLite's values win at the next start.
	 */
	return r;
}

int
memory_trajectory_add(struct memory *m, const char *tenant, json_t *body, json_t **ret,
		      char *err, size_t errlen)
{
	static const char *const keys[] = { "task_id", "agent_id", "query", "trajectory",
					    "outcome", "confidence", "namespace", NULL };
	const char *task, *agent, *query, *ns, *outcome;
	double conf = -1;
	json_t *traj;
	char *text, id[40];
	sqlite3_stmt *st;
	int r, rc;

	if (tenant == NULL || tenant[0] == '\0')
		return mem_err(err, errlen, SP_EINVAL, "no tenant");
	if (!json_is_object(body))
		return mem_err(err, errlen, SP_EINVAL, "the body must be a JSON object");
	if ((r = mem_known(body, keys, err, errlen)) < 0 ||
	    (r = mem_str(body, "task_id", MEM_MAX_NAME, false, &task, err, errlen)) < 0 ||
	    (r = mem_str(body, "agent_id", MEM_MAX_NAME, false, &agent, err, errlen)) < 0 ||
	    (r = mem_str(body, "namespace", MEM_MAX_NAME, false, &ns, err, errlen)) < 0 ||
	    (r = mem_str(body, "query", m->cfg.max_query, false, &query, err, errlen)) < 0 ||
	    (r = mem_outcome(body, &outcome, err, errlen)) < 0 ||
	    (r = mem_unit(body, "confidence", 0, 1, &conf, err, errlen)) < 0)
		return r;
	if ((traj = json_object_get(body, "trajectory")) == NULL)
		return mem_err(err, errlen, SP_EINVAL, "'trajectory' is required");
	text = json_dumps(traj, JSON_COMPACT | JSON_ENCODE_ANY);
	if (text == NULL)
		return mem_err(err, errlen, SP_EINVAL, "'trajectory' cannot be encoded");
	if (strlen(text) > m->cfg.max_trajectory) {
		free(text);
		return mem_err(err, errlen, SP_ELIMIT, "'trajectory' is larger than %zu bytes",
			       m->cfg.max_trajectory);
	}
	if (m->cfg.scrub) {
		char *s = scrub_text(text, strlen(text), NULL);

		free(text);
		text = s;
	}
	if ((st = mem_stmt(m, MS_TRAJ)) == NULL) {
		free(text);
		return mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
	}
	mem_new_id("traj_", id, sizeof(id));
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, ns ? ns : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, task, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, agent, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, query, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, text, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, outcome, -1, SQLITE_STATIC);
	if (conf >= 0)
		sqlite3_bind_double(st, 9, conf);
	sqlite3_bind_int64(st, 10, clock_wall_ms());
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	free(text);
	if (rc != SQLITE_DONE)
		return mem_err(err, errlen, SP_EDB, "database: %s", sqlite3_errmsg(m->db));
	*ret = json_pack("{ss}", "id", id);
	return 0;
}

size_t
memory_count(struct memory *m, const char *tenant)
{
	struct mem_tenant *t = mem_tenant(m, tenant, false);
	size_t n = 0;

	if (t == NULL)
		return 0;
	for (struct mem_space *s = t->spaces; s != NULL; s = s->next)
		n += arena_count(s->arena);
	return n;
}

/* --- consolidation on the thread pool --- */

static void
mem_work_cb(uv_work_t *req)
{
	struct mem_work *w = req->data;
	sqlite3 *db;

	/* A connection of our own: SQLite connections never cross threads here. */
	if (sqlite3_open_v2(w->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		sqlite3_close(db);
		w->status = SP_EDB;
		return;
	}
	sqlite3_busy_timeout(db, 5000);
	sqlite3_exec(db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
	w->status = consolidate_run(db, w->tenant, &w->params, w->now_ms, &w->res);
	sqlite3_close(db);
}

static void mem_close_maybe_done(struct memory *m);

static void
mem_after_work_cb(uv_work_t *req, int status)
{
	struct mem_work *w = req->data;
	struct memory *m = w->m;
	struct mem_tenant *t = mem_tenant(m, w->tenant, false);
	json_t *stats = NULL;

	if (status == UV_ECANCELED)
		w->status = SP_ECANCELED;
	if (w->status == 0 && t != NULL) {
		for (size_t i = 0; i < w->res.nremoved; i++)
			for (struct mem_space *s = t->spaces; s != NULL; s = s->next)
				if (arena_remove(s->arena, w->res.removed[i]))
					break;
	}
	if (w->status == 0)
		stats = json_pack("{sisisisisi}", "examined", w->res.examined,
				  "merged", w->res.merged, "contradictions", w->res.contradictions,
				  "quarantined", w->res.quarantined, "pruned", w->res.pruned);
	if (t != NULL)
		t->running = false;
	if (w->cb != NULL)
		w->cb(w->arg, w->status, stats);
	json_decref(stats);
	free(w->res.removed);
	free(w->tenant);
	free(w->path);
	free(w);
	m->works--;
	mem_close_maybe_done(m);
}

int
memory_consolidate(struct memory *m, const char *tenant, memory_consolidate_cb cb, void *arg)
{
	struct mem_tenant *t;
	struct mem_work *w;
	const char *path;
	int r;

	if (tenant == NULL || tenant[0] == '\0')
		return SP_EINVAL;
	if (m->closing)
		return SP_ECANCELED;
	t = mem_tenant(m, tenant, true);
	if (t->running)
		return SP_ECONFLICT;
	path = sqlite3_db_filename(m->db, "main");
	if (path == NULL || path[0] == '\0')
		return SP_EDB;	/* an in-memory database has no second connection */
	w = xcalloc(1, sizeof(*w));
	w->m = m;
	w->tenant = xstrdup(tenant);
	w->path = xstrdup(path);
	w->params.dup_threshold = m->cfg.dup_threshold;
	w->params.contradiction_threshold = m->cfg.contradiction_threshold;
	w->params.neighbours = 10;
	w->params.quarantine_after = m->cfg.quarantine_after;
	w->params.quarantine_min_usage = m->cfg.quarantine_min_usage;
	w->params.prune_age_ms = (int64_t)(m->cfg.prune_age_days * MEM_DAY_MS);
	w->params.prune_confidence = m->cfg.prune_confidence;
	w->params.max_new = m->cfg.consolidate_max_new;
	w->now_ms = clock_wall_ms();
	w->cb = cb;
	w->arg = arg;
	w->req.data = w;
	if ((r = uv_queue_work(m->loop, &w->req, mem_work_cb, mem_after_work_cb)) < 0) {
		free(w->tenant);
		free(w->path);
		free(w);
		return r;
	}
	/* Flush usage first so the run sees current counts (best effort). */
	memory_flush_usage(m);
	t->running = true;
	t->inserts = 0;
	m->works++;
	return 0;
}

static void
mem_maybe_consolidate(struct memory *m, struct mem_tenant *t)
{
	if (m->cfg.consolidate_every == 0 || t->inserts < m->cfg.consolidate_every ||
	    t->running || m->closing)
		return;
	/* Failures here are retried after the next inserts; nobody waits on them. */
	memory_consolidate(m, t->name, NULL, NULL);
}

/* --- close --- */

static void
mem_free(struct memory *m)
{
	for (size_t i = 0; i < MS__COUNT; i++)
		sqlite3_finalize(m->stmt[i]);
	mem_tenants_free(m);
	embed_http_free(m->http);
	free(m->usage);
	free(m);
}

static void
mem_timer_closed(uv_handle_t *h)
{
	struct memory *m = h->data;
	void (*cb)(void *) = m->close_cb;
	void *arg = m->close_arg;

	mem_free(m);
	if (cb != NULL)
		cb(arg);
}

static void
mem_close_maybe_done(struct memory *m)
{
	if (!m->closing || m->works > 0)
		return;
	m->timer.data = m;
	uv_close((uv_handle_t *)&m->timer, mem_timer_closed);
}

void
memory_close(struct memory *m, void (*cb)(void *arg), void *arg)
{
	m->closing = true;
	m->close_cb = cb;
	m->close_arg = arg;
	uv_timer_stop(&m->timer);
	m->timer_armed = false;
	memory_flush_usage(m);
	/* Their callbacks fire later with SP_ECANCELED and count works down. */
	for (struct mem_pending *p = m->pending; p != NULL; p = p->next)
		sp_http_cancel(p->call);
	mem_close_maybe_done(m);
}

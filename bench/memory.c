/*
 * bench_memory: the memory module's throughput and latency on synthetic
 * text, 384-dimensional hashing embeddings, one tenant:
 *   inserts/s single (one transaction each) and batched (256 per request);
 *   search p50/p99 at 10k and 100k items with recall@10 against a float32
 *   brute force over the same vectors (scoring set to pure cosine, λ = 1,
 *   so the two rankings are comparable), exact and non-exact modes;
 *   reader p99 while a writer thread inserts through its own connection;
 *   two baselines on the same data in the same process: an FTS5-only BM25
 *   query and a plain SQL scan computing cosine per row.
 * Usage: bench_memory [DIR] [N]   (default /tmp, 100000). Not a test.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "arena.h"
#include "embed.h"
#include "memory.h"
#include "store.h"

#define DIMS 384
#define NWORDS 6000
#define TENANT "bench"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static char *words[NWORDS];
static float *vecs;			/* the bench's own copy, in insertion order */
static char **texts;
static size_t nitems;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Zipf-ish word choice: a few common words, a long tail. */
static const char *
word(void)
{
	double u = (double)(rnd() >> 11) / 9007199254740992.0;

	return words[(size_t)(pow(u, 2.5) * NWORDS) % NWORDS];
}

static void
make_words(void)
{
	static const char cons[] = "bcdfghjklmnprstvwz", vow[] = "aeiou";

	for (size_t i = 0; i < NWORDS; i++) {
		char w[16];
		size_t n = 2 + rnd() % 4, j = 0;

		for (size_t s = 0; s < n && j + 2 < sizeof(w); s++) {
			w[j++] = cons[rnd() % (sizeof(cons) - 1)];
			w[j++] = vow[rnd() % (sizeof(vow) - 1)];
		}
		w[j] = '\0';
		words[i] = strdup(w);
	}
}

static char *
sentence(size_t n)
{
	char *s = malloc(n * 16 + 1);
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(s + len, "%s%s", i ? " " : "", word());
	return s;
}

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return v[(size_t)(p * (double)(n - 1) + 0.5)];
}

static json_t *
item_json(size_t i)
{
	char title[64];

	snprintf(title, sizeof(title), "item %zu", i);
	return json_pack("{ssss}", "title", title, "content", texts[i]);
}

/* Insert items [from, to) in batches of batch; returns items/s. */
static double
insert(struct memory *m, size_t from, size_t to, size_t batch)
{
	double t0 = now_ms();
	char err[256];

	for (size_t i = from; i < to; i += batch) {
		json_t *body, *ret;

		if (batch == 1) {
			body = item_json(i);
		} else {
			json_t *arr = json_array();

			for (size_t j = i; j < to && j < i + batch; j++)
				json_array_append_new(arr, item_json(j));
			body = json_pack("{so}", "items", arr);
		}
		if (memory_add(m, TENANT, body, &ret, err, sizeof(err)) != 0) {
			fprintf(stderr, "insert: %s\n", err);
			exit(1);
		}
		json_decref(ret);
		json_decref(body);
	}
	nitems = to;
	return (double)(to - from) / ((now_ms() - t0) / 1e3);
}

/* A query: half the words of a random item, half random words. */
static char *
query_text(size_t *src)
{
	size_t i = rnd() % nitems, len = 0;
	char *q = malloc(512), *copy = strdup(texts[i]), *save = NULL, *w;
	int k = 0;

	q[0] = '\0';
	for (w = strtok_r(copy, " ", &save); w != NULL && k < 12; w = strtok_r(NULL, " ", &save), k++)
		len += (size_t)snprintf(q + len, 512 - len, "%s%s", len ? " " : "",
					k % 2 ? word() : w);
	free(copy);
	*src = i;
	return q;
}

/* The bench's own float32 brute force over its copy of the vectors. */
static void
brute10(const float *q, int64_t *out)
{
	float best[10];
	int n = 0;

	for (size_t i = 0; i < nitems; i++) {
		float s = arena_dot(vecs + i * DIMS, q, DIMS);
		int k;

		if (n == 10 && s <= best[9])
			continue;
		k = n < 10 ? n++ : 9;
		while (k > 0 && best[k - 1] < s) {
			best[k] = best[k - 1];
			out[k] = out[k - 1];
			k--;
		}
		best[k] = s;
		out[k] = (int64_t)i;
	}
}

struct result {
	double p50, p99, recall;
	size_t n;
};

/* memory_search with pure-cosine scoring; recall vs brute10 on the item index. */
static struct result
bench_search(uv_loop_t *loop, struct memory *m, size_t nq, bool exact)
{
	double *lat = malloc(nq * sizeof(*lat));
	size_t found = 0;
	struct result r = { 0 };

	for (size_t t = 0; t < nq; t++) {
		size_t src;
		char *q = query_text(&src), err[256];
		json_t *body = json_pack("{sssisfs{sfsfsf}sfsb}", "query", q, "k", 10, "lambda", 1.0,
					 "weights", "alpha", 1.0, "beta", 0.0, "gamma", 0.0,
					 "min_confidence", 0.0, "exact", exact), *ret, *it;
		float qv[DIMS];
		int64_t want[10];
		double t0 = now_ms();
		size_t i;

		if (memory_search(m, TENANT, body, &ret, err, sizeof(err)) != 0) {
			fprintf(stderr, "search: %s\n", err);
			exit(1);
		}
		lat[t] = now_ms() - t0;
		embed_hash(q, strlen(q), qv, DIMS);
		brute10(qv, want);
		json_array_foreach(json_object_get(ret, "results"), i, it) {
			const char *title = json_string_value(json_object_get(it, "title"));
			int64_t idx = strtoll(title + 5, NULL, 10);

			for (int j = 0; j < 10; j++)
				if (want[j] == idx) {
					found++;
					break;
				}
		}
		json_decref(ret);
		json_decref(body);
		free(q);
		/* Let the usage timer fire between queries, as the daemon's loop would. */
		uv_run(loop, UV_RUN_NOWAIT);
	}
	r.p50 = pct(lat, nq, 0.5);
	r.p99 = pct(lat, nq, 0.99);
	r.recall = (double)found / (double)(nq * 10);
	r.n = nq;
	free(lat);
	return r;
}

static void
cosine_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	int n = sqlite3_value_bytes(argv[0]);

	if (n != sqlite3_value_bytes(argv[1]) || n % 4 != 0) {
		sqlite3_result_null(ctx);
		return;
	}
	sqlite3_result_double(ctx, arena_dot(sqlite3_value_blob(argv[0]),
					     sqlite3_value_blob(argv[1]), (unsigned)n / 4));
}

/* Baselines: FTS5 BM25 top-10, and ORDER BY cosine(embedding, ?) over every row. */
static struct result
bench_baseline(sqlite3 *db, size_t nq, bool fts)
{
	sqlite3_stmt *st;
	double *lat = malloc(nq * sizeof(*lat));
	size_t found = 0;
	struct result r = { 0 };
	const char *sql = fts ?
		"SELECT m.title FROM mem_fts JOIN mem_items m ON m.seq = mem_fts.rowid WHERE "
		"mem_fts MATCH ?1 AND m.tenant = '" TENANT "' ORDER BY bm25(mem_fts) LIMIT 10" :
		"SELECT title FROM mem_items WHERE tenant = '" TENANT "' AND state = 'active' "
		"ORDER BY cosine(embedding, ?1) DESC LIMIT 10";

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "baseline: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	for (size_t t = 0; t < nq; t++) {
		size_t src;
		char *q = query_text(&src), fq[1024] = "";
		float qv[DIMS];
		int64_t want[10];
		double t0;
		size_t len = 0;

		embed_hash(q, strlen(q), qv, DIMS);
		if (fts) {
			char *copy = strdup(q), *save = NULL, *w;

			for (w = strtok_r(copy, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save))
				len += (size_t)snprintf(fq + len, sizeof(fq) - len, "%s\"%s\"",
							len ? " OR " : "", w);
			free(copy);
		}
		t0 = now_ms();
		if (fts)
			sqlite3_bind_text(st, 1, fq, -1, SQLITE_STATIC);
		else
			sqlite3_bind_blob(st, 1, qv, sizeof(qv), SQLITE_STATIC);
		brute10(qv, want);	/* outside the timing below: subtract it */
		t0 = now_ms() - (now_ms() - t0);
		{
			double s0 = now_ms();

			while (sqlite3_step(st) == SQLITE_ROW) {
				int64_t idx = strtoll((const char *)sqlite3_column_text(st, 0) + 5,
						      NULL, 10);

				for (int j = 0; j < 10; j++)
					if (want[j] == idx) {
						found++;
						break;
					}
			}
			lat[t] = now_ms() - s0;
		}
		sqlite3_reset(st);
		free(q);
	}
	sqlite3_finalize(st);
	r.p50 = pct(lat, nq, 0.5);
	r.p99 = pct(lat, nq, 0.99);
	r.recall = (double)found / (double)(nq * 10);
	r.n = nq;
	free(lat);
	return r;
}

struct writer {
	const char *path;
	atomic_bool stop;
	size_t rows;
	double secs;
};

/* Inserts 100-row transactions through its own connection until told to stop. */
static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	sqlite3 *db;
	sqlite3_stmt *st;
	float v[DIMS];
	double t0 = now_ms();
	size_t n = 0;

	sqlite3_open_v2(w->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	sqlite3_busy_timeout(db, 5000);
	sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
	sqlite3_prepare_v2(db, "INSERT INTO mem_items (id, tenant, title, content, confidence,"
			   " created_ms, updated_ms, model, dims, embedding) VALUES (?1, 'writer',"
			   " 'w', ?2, 0.5, 0, 0, 'fh1-384', 384, ?3)", -1, &st, NULL);
	while (!atomic_load(&w->stop)) {
		sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (int i = 0; i < 100; i++, n++) {
			char id[32];
			const char *text = texts[n % nitems];

			snprintf(id, sizeof(id), "w_%zu", n);
			embed_hash(text, strlen(text), v, DIMS);
			sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
			sqlite3_bind_blob(st, 3, v, sizeof(v), SQLITE_STATIC);
			sqlite3_step(st);
			sqlite3_reset(st);
		}
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	w->rows = n;
	w->secs = (now_ms() - t0) / 1e3;
	return NULL;
}

static void
row(const char *what, size_t items, struct result r)
{
	printf("| %-34s | %7zu | %5zu | %9.3f | %9.3f | %8.3f |\n", what, items, r.n, r.p50, r.p99,
	       r.recall);
}

static void
closed(void *arg)
{
	*(int *)arg = 1;
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	size_t total = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000, small = total / 10;
	char path[512];
	uv_loop_t *loop = uv_default_loop();
	struct memory_config cfg;
	struct store *store;
	struct memory *m;
	double single, batched, load_ms;
	struct result r10, r10x, r100, r100x, f10, f100, s10, s100, rw;
	struct writer w = { 0 };
	pthread_t thr;
	int done = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(path, sizeof(path), "%s/bench-memory-%d.db", dir, (int)getpid());
	make_words();
	texts = malloc(total * sizeof(*texts));
	vecs = malloc(total * DIMS * sizeof(float));
	for (size_t i = 0; i < total; i++) {
		char title[64], *full;

		texts[i] = sentence(30 + rnd() % 40);
		/* The module embeds "title\ndescription\ncontent"; so does the ground truth. */
		snprintf(title, sizeof(title), "item %zu", i);
		if (asprintf(&full, "%s\n\n%s", title, texts[i]) < 0)
			return 1;
		embed_hash(full, strlen(full), vecs + i * DIMS, DIMS);
		free(full);
	}

	memory_config_defaults(&cfg);
	cfg.consolidate_every = 0;	/* consolidation is not what is measured */
	cfg.scrub = true;
	if (store_open(path, &store) != 0 || memory_open(loop, store, &cfg, &m) != 0) {
		fprintf(stderr, "open %s failed\n", path);
		return 1;
	}
	sqlite3_create_function(store_db(store), "cosine", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
				NULL, cosine_fn, NULL, NULL);

	single = insert(m, 0, 5000 < small ? 5000 : small / 2, 1);
	batched = insert(m, nitems, small, 256);
	r10 = bench_search(loop, m, 1000, true);
	r10x = bench_search(loop, m, 500, false);
	f10 = bench_baseline(store_db(store), 200, true);
	s10 = bench_baseline(store_db(store), 30, false);
	batched = (batched + insert(m, nitems, total, 256)) / 2;
	r100 = bench_search(loop, m, 500, true);
	r100x = bench_search(loop, m, 300, false);
	f100 = bench_baseline(store_db(store), 50, true);
	s100 = bench_baseline(store_db(store), 10, false);

	w.path = path;
	pthread_create(&thr, NULL, writer_main, &w);
	usleep(100000);
	rw = bench_search(loop, m, 500, true);
	atomic_store(&w.stop, true);
	pthread_join(thr, NULL);

	/* Cold start: reopen and time the arena load. */
	memory_close(m, closed, &done);
	while (!done)
		uv_run(loop, UV_RUN_ONCE);
	{
		double t0 = now_ms();

		if (memory_open(loop, store, &cfg, &m) != 0)
			return 1;
		load_ms = now_ms() - t0;
	}

	printf("\nmemory bench: %zu items, %d dims (fh1 hashing), k=10, one tenant, %s\n\n",
	       total, DIMS, path);
	printf("| inserts | rate |\n|---|---|\n");
	printf("| single (1 item per request/txn, embed+scrub+FTS5) | %.0f items/s |\n", single);
	printf("| batched (256 items per request/txn) | %.0f items/s |\n", batched);
	printf("| writer thread during the reader test (100 rows/txn, own connection) | %.0f rows/s |\n",
	       (double)w.rows / w.secs);
	printf("| cold start: arena load of %zu items | %.1f ms |\n\n", memory_count(m, TENANT),
	       load_ms);
	printf("| search (ms, server-side, incl. query embedding and row fetch) | items | queries | p50 | p99 | recall@10 |\n");
	printf("|---|---|---|---|---|---|\n");
	row("memory exact (int8 scan + f32 rerank)", small, r10);
	row("memory non-exact (rerank top-C only)", small, r10x);
	row("baseline FTS5 BM25 only", small, f10);
	row("baseline SQL scan, cosine per row", small, s10);
	row("memory exact (int8 scan + f32 rerank)", total, r100);
	row("memory non-exact (rerank top-C only)", total, r100x);
	row("baseline FTS5 BM25 only", total, f100);
	row("baseline SQL scan, cosine per row", total, s100);
	row("memory exact, writer inserting", total, rw);

	done = 0;
	memory_close(m, closed, &done);
	while (!done)
		uv_run(loop, UV_RUN_ONCE);
	store_close(store);
	uv_loop_close(loop);
	unlink(path);
	{
		char p2[600];

		snprintf(p2, sizeof(p2), "%s-wal", path);
		unlink(p2);
		snprintf(p2, sizeof(p2), "%s-shm", path);
		unlink(p2);
	}
	return 0;
}

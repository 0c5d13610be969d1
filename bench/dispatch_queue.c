/*
 * bench_dispatch_queue: the task queue alone, no workers, no channel. Each
 * task goes enqueue -> lease -> start -> result, and a run ends when every
 * result is durable (committed). "grouped" enqueues in batches of 100 and
 * defers lease/start/result into group transactions flushed every 2 ms (the
 * daemon's flush timer, emulated here) or at group_max; "naive" enqueues one
 * task per call and commits every write on its own (group_max 1). Both run
 * with the store's synchronous=NORMAL and again with synchronous=FULL (an
 * fsync per commit). One more grouped run enqueues every task before
 * draining, to show the lease scan with a deep backlog, and one moves WAL
 * checkpoints off the loop thread (a thread with its own connection), to
 * show what they cost the loop. Each run is bounded
 * by a task count and a time budget,
 * so the whole bench stays well under a minute.
 *   usage: bench_dispatch_queue [TASKS]   (default 20000)
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "queue.h"
#include "store.h"

#define BATCH		100
#define FLUSH_NS	(2 * 1000 * 1000)
#define BUDGET_NS	(6ull * 1000 * 1000 * 1000)	/* per run */

enum step { S_ENQ, S_LEASE, S_START, S_RESULT, S_FLUSH, S__N };
static const char *const step_names[S__N] = { "enqueue", "lease", "start", "result", "flush" };

struct lat {
	uint64_t *ns;
	size_t n, cap;
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
lat_add(struct lat *l, uint64_t v)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->ns = realloc(l->ns, l->cap * sizeof(*l->ns));
		if (l->ns == NULL)
			abort();
	}
	l->ns[l->n++] = v;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
lat_pct(struct lat *l, double p)
{
	size_t i;

	if (l->n == 0)
		return 0;
	i = (size_t)(p * (double)(l->n - 1) + 0.5);
	return (double)l->ns[i] / 1000.0;	/* µs */
}

struct run {
	const char *name;
	bool grouped;
	bool full_sync;
	bool backlog;			/* enqueue everything first, then drain */
	bool bg_checkpoint;		/* no auto-checkpoint; a thread checkpoints instead */
	size_t done;			/* tasks whose result is durable */
	double secs;
	struct lat lat[S__N];
};

static void
die(const char *what, int r)
{
	fprintf(stderr, "bench_dispatch_queue: %s: %d\n", what, r);
	exit(1);
}

static void
rm_db(const char *path)
{
	char p[512];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

/*
 * What the store could do: checkpoint the WAL from a thread with its own
 * connection (PASSIVE never blocks the writer), instead of SQLite's
 * auto-checkpoint running inside a COMMIT on the loop thread.
 */
struct ckpt {
	pthread_t thread;
	const char *path;
	atomic_bool stop;
	int rounds;
};

static void *
ckpt_main(void *arg)
{
	struct ckpt *c = arg;
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	sqlite3 *db;

	if (sqlite3_open(c->path, &db) != SQLITE_OK)
		return NULL;
	sqlite3_busy_timeout(db, 100);
	while (!atomic_load(&c->stop)) {
		nanosleep(&ts, NULL);
		sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		c->rounds++;
	}
	sqlite3_close(db);
	return NULL;
}

static void
run_one(const char *path, struct run *run, size_t ntasks)
{
	struct ckpt ck = { .path = path };
	struct queue_task_spec specs[BATCH];
	static const char body[] = "{\"cmd\":[\"true\"]}";
	struct queue_outcome out = { .ok = true, .output = "ok\n", .output_len = 3 };
	struct queue_limits lim;
	struct queue_grant g;
	enum queue_verdict v;
	struct store *s;
	struct queue *q;
	int64_t ids[BATCH];
	uint64_t t0, t, last_flush, deadline;
	size_t enq = 0, i, per;
	int r;

	rm_db(path);
	if ((r = store_open(path, &s)) < 0)
		die("store_open", r);
	if (run->full_sync && sqlite3_exec(store_db(s), "PRAGMA synchronous=FULL", NULL, NULL,
					   NULL) != SQLITE_OK)
		die("synchronous=FULL", -1);
	if (run->bg_checkpoint) {
		if (sqlite3_exec(store_db(s), "PRAGMA wal_autocheckpoint=0", NULL, NULL,
				 NULL) != SQLITE_OK)
			die("wal_autocheckpoint", -1);
		atomic_init(&ck.stop, false);
		if (pthread_create(&ck.thread, NULL, ckpt_main, &ck) != 0)
			die("pthread_create", -1);
	}
	queue_limits_default(&lim);
	lim.batch_max = BATCH;
	lim.group_max = run->grouped ? 512 : 1;
	if ((r = queue_open(s, &lim, NULL, NULL, &q)) < 0)
		die("queue_open", r);
	for (i = 0; i < BATCH; i++)
		specs[i] = (struct queue_task_spec){ .body = body, .body_len = sizeof(body) - 1,
						     .timeout_ms = 60000, .max_retries = 1 };
	per = run->grouped ? BATCH : 1;

	t0 = last_flush = now_ns();
	deadline = t0 + BUDGET_NS;
	/*
	 * Enqueue a batch, then drain it through lease/start/result, so the
	 * queue holds a realistic backlog rather than everything at once.
	 */
	while (enq < ntasks && now_ns() < deadline) {
		size_t k, want = ntasks - enq < BATCH ? ntasks - enq : BATCH;

		/* With a backlog, the first round enqueues every task. */
		do {
			for (k = 0; k < want; k += per) {
				t = now_ns();
				r = queue_enqueue(q, "bench", "acme", specs, per, ids, NULL, 0);
				if (r < 0)
					die("enqueue", r);
				lat_add(&run->lat[S_ENQ], now_ns() - t);
			}
			enq += want;
		} while (run->backlog && enq < ntasks && now_ns() < deadline);
		if (run->backlog)
			want = enq;
		for (k = 0; k < want; k++) {
			t = now_ns();
			if ((r = queue_lease(q, "bench", "w1", &g, NULL)) < 0)
				die("lease", r);
			lat_add(&run->lat[S_LEASE], now_ns() - t);
			t = now_ns();
			if ((r = queue_start(q, g.task, g.attempt, g.lease, "w1", &v)) < 0 ||
			    v != QUEUE_ACCEPTED)
				die("start", r);
			lat_add(&run->lat[S_START], now_ns() - t);
			t = now_ns();
			if ((r = queue_result(q, g.task, g.attempt, g.lease, "w1", &out, &v)) < 0 ||
			    v != QUEUE_ACCEPTED)
				die("result", r);
			lat_add(&run->lat[S_RESULT], now_ns() - t);
			queue_grant_done(&g);
			/* The daemon's flush timer. */
			if (run->grouped && (t = now_ns()) - last_flush >= FLUSH_NS) {
				if ((r = queue_flush(q)) < 0)
					die("flush", r);
				last_flush = now_ns();
				lat_add(&run->lat[S_FLUSH], last_flush - t);
			}
		}
	}
	t = now_ns();
	if ((r = queue_flush(q)) < 0)
		die("flush", r);
	if (run->grouped)
		lat_add(&run->lat[S_FLUSH], now_ns() - t);
	run->secs = (double)(now_ns() - t0) / 1e9;
	if (run->bg_checkpoint) {
		atomic_store(&ck.stop, true);
		pthread_join(ck.thread, NULL);
	}
	{
		struct queue_counts c;

		if (queue_counts(q, "bench", &c) < 0)
			die("counts", -1);
		run->done = (size_t)c.n[QUEUE_SUCCEEDED];
	}
	queue_close(q);
	store_close(s);
	rm_db(path);
	for (i = 0; i < S__N; i++)
		qsort(run->lat[i].ns, run->lat[i].n, sizeof(uint64_t), cmp_u64);
}

int
main(int argc, char **argv)
{
	struct run runs[] = {
		{ .name = "grouped", .grouped = true, .full_sync = false },
		{ .name = "grouped, all queued first", .grouped = true, .full_sync = false,
		  .backlog = true },
		{ .name = "grouped, checkpoints on a thread", .grouped = true, .full_sync = false,
		  .bg_checkpoint = true },
		{ .name = "naive", .grouped = false, .full_sync = false },
		{ .name = "grouped", .grouped = true, .full_sync = true },
		{ .name = "naive", .grouped = false, .full_sync = true },
	};
	size_t ntasks = 20000, i, k;
	char dir[] = "/var/tmp/sp-bench-queue-XXXXXX", path[128];

	if (argc > 1)
		ntasks = strtoul(argv[1], NULL, 10);
	if (ntasks == 0 || ntasks > 1000000) {
		fprintf(stderr, "usage: bench_dispatch_queue [TASKS (1..1000000)]\n");
		return 2;
	}
	/* On disk (not tmpfs), so synchronous=FULL pays a real fsync. */
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/queue.db", dir);
	for (i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
		run_one(path, &runs[i], ntasks);
	rmdir(dir);

	printf("queue alone: enqueue -> lease -> start -> result, results durable at the end;\n"
	       "%zu tasks or %llu s per run; grouped = batch enqueue of %d + deferred writes\n"
	       "flushed every 2 ms / 512 ops; naive = one transaction per write.\n\n",
	       ntasks, (unsigned long long)(BUDGET_NS / 1000000000ull), BATCH);
	printf("| mode | synchronous | tasks | secs | tasks/s |");
	for (k = 0; k < S__N; k++)
		printf(" %s p50/p99 µs |", step_names[k]);
	printf("\n|---|---|---|---|---|");
	for (k = 0; k < S__N; k++)
		printf("---|");
	printf("\n");
	for (i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		struct run *r = &runs[i];

		printf("| %s | %s | %zu | %.2f | %.0f |", r->name, r->full_sync ? "FULL" : "NORMAL",
		       r->done, r->secs, (double)r->done / r->secs);
		for (k = 0; k < S__N; k++) {
			if (r->lat[k].n == 0)
				printf(" - |");
			else
				printf(" %.1f / %.1f |", lat_pct(&r->lat[k], 0.5),
				       lat_pct(&r->lat[k], 0.99));
			free(r->lat[k].ns);
		}
		printf("\n");
	}
	printf("\nenqueue latency is per call (grouped: %d tasks per call; naive: 1).\n", BATCH);
	return 0;
}

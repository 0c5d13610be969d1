/*
 * consolidate: near-duplicates merged (keeper chosen by usage, loser linked
 * duplicate_of and leaving the arena), contradictions linked, quarantine
 * after many contradicted well-used items, pruning of old unused
 * low-confidence items, incremental runs, the automatic trigger on the
 * thread pool, and tenant isolation of all of it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "consolidate.h"
#include "memory.h"
#include "memtest.h"
#include "store.h"

struct done {
	int called, status;
	json_int_t merged, contradictions, quarantined, pruned, examined;
};

static void
on_done(void *arg, int status, json_t *stats)
{
	struct done *d = arg;

	d->called++;
	d->status = status;
	if (stats != NULL) {
		d->merged = json_integer_value(json_object_get(stats, "merged"));
		d->contradictions = json_integer_value(json_object_get(stats, "contradictions"));
		d->quarantined = json_integer_value(json_object_get(stats, "quarantined"));
		d->pruned = json_integer_value(json_object_get(stats, "pruned"));
		d->examined = json_integer_value(json_object_get(stats, "examined"));
	}
}

static void
run(struct memtest *t, const char *tenant, struct done *d)
{
	memset(d, 0, sizeof(*d));
	assert_int_equal(memory_consolidate(t->mem, tenant, on_done, d), 0);
	/* A second request while one runs is refused, not queued. */
	assert_int_equal(memory_consolidate(t->mem, tenant, on_done, d), SP_ECONFLICT);
	while (d->called == 0)
		uv_run(&t->loop, UV_RUN_ONCE);
	assert_int_equal(d->called, 1);
	assert_int_equal(d->status, 0);
}

static int64_t
db_int(struct memtest *t, const char *fmt, ...)
{
	sqlite3_stmt *st;
	int64_t v = -1;
	char sql[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	assert_int_equal(sqlite3_prepare_v2(store_db(t->store), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void
db_exec(struct memtest *t, const char *sql)
{
	assert_int_equal(sqlite3_exec(store_db(t->store), sql, NULL, NULL, NULL), SQLITE_OK);
}

#define LESSON "Order the Dockerfile so the dependency manifest is copied and " \
	"installed before the source tree, so code edits keep the cached dependency layer"

static void
test_duplicates_merged(void **state)
{
	struct memtest t = { 0 };
	struct done d;
	char a[48], b[48], other[48];

	memtest_open(&t, NULL);
	snprintf(a, sizeof(a), "%s", memtest_add(&t, "acme", "{\"title\":\"Cache docker "
		 "layers\",\"content\":\"" LESSON "\",\"outcome\":\"success\"}"));
	snprintf(b, sizeof(b), "%s", memtest_add(&t, "acme", "{\"title\":\"Cache docker "
		 "layers\",\"content\":\"" LESSON " as noted\",\"outcome\":\"success\"}"));
	snprintf(other, sizeof(other), "%s", memtest_add(&t, "acme", "{\"title\":\"Evicted "
		 "pods\",\"content\":\"Raise the memory limit of a pod that was OOM killed\"}"));
	/* The same lesson in another tenant: never merged with acme's. */
	memtest_add(&t, "zeta", "{\"title\":\"Cache docker layers\",\"content\":\"" LESSON "\","
		    "\"outcome\":\"success\"}");
	/* b is the more used: it is kept even though a is older. */
	{
		char sql[200];

		snprintf(sql, sizeof(sql), "UPDATE mem_items SET usage_count = 4 WHERE id = '%s'", b);
		db_exec(&t, sql);
	}
	run(&t, "acme", &d);
	assert_int_equal(d.examined, 3);
	assert_int_equal(d.merged, 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE id = '%s' AND state = "
				"'deleted'", a), 1);
	assert_int_equal(db_int(&t, "SELECT usage_count FROM mem_items WHERE id = '%s'", b), 4);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_links l JOIN mem_items s ON "
				"s.seq = l.src JOIN mem_items k ON k.seq = l.dst WHERE s.id = '%s' "
				"AND k.id = '%s' AND relation = 'duplicate_of'", a, b), 1);
	/* Gone from the arena; the others stay; zeta untouched. */
	assert_int_equal(memory_count(t.mem, "acme"), 2);
	assert_int_equal(memory_count(t.mem, "zeta"), 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_links WHERE tenant = 'zeta'"), 0);
	assert_int_equal(db_int(&t, "SELECT consolidated FROM mem_items WHERE tenant = 'zeta'"), 0);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_links l JOIN mem_items i ON "
				"i.seq IN (l.src, l.dst) WHERE i.tenant <> l.tenant"), 0);

	/* Incremental: nothing new, nothing examined. */
	run(&t, "acme", &d);
	assert_int_equal(d.examined, 0);
	assert_int_equal(d.merged, 0);
	memtest_cleanup(&t);
}

static void
test_contradiction_and_quarantine(void **state)
{
	struct memtest t = { 0 };
	struct done d;
	char ok[48], bad[48];

	memtest_open(&t, NULL);
	snprintf(ok, sizeof(ok), "%s", memtest_add(&t, "acme", "{\"title\":\"Retry flaky network "
		 "tests\",\"content\":\"Retry the flaky network integration tests with "
		 "exponential backoff\",\"outcome\":\"success\"}"));
	snprintf(bad, sizeof(bad), "%s", memtest_add(&t, "acme", "{\"title\":\"Retry flaky "
		 "network tests\",\"content\":\"Retrying flaky network integration tests did not "
		 "help, the service was down\",\"outcome\":\"failure\"}"));
	run(&t, "acme", &d);
	assert_int_equal(d.merged, 0);
	assert_int_equal(d.contradictions, 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE tenant = 'acme' AND "
				"state = 'active'"), 2);

	/* Six more well-used items that bad contradicts: bad is quarantined. */
	for (int i = 0; i < 6; i++) {
		char sql[300];
		const char *id = memtest_add(&t, "acme", "{\"title\":\"x\",\"content\":\"unrelated "
					     "filler item\",\"outcome\":\"success\"}");

		snprintf(sql, sizeof(sql), "UPDATE mem_items SET usage_count = 3, consolidated = 1 "
			 "WHERE id = '%s'", id);
		db_exec(&t, sql);
		snprintf(sql, sizeof(sql), "INSERT INTO mem_links (tenant, src, dst, relation, "
			 "created_ms) SELECT 'acme', b.seq, o.seq, 'contradicts', 0 FROM mem_items "
			 "b, mem_items o WHERE b.id = '%s' AND o.id = '%s'", bad, id);
		db_exec(&t, sql);
	}
	run(&t, "acme", &d);
	assert_int_equal(d.quarantined, 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE id = '%s' AND state = "
				"'quarantined'", bad), 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE id = '%s' AND state = "
				"'active'", ok), 1);
	assert_int_equal(memory_count(t.mem, "acme"), 7);
	memtest_cleanup(&t);
}

static void
test_prune(void **state)
{
	struct memtest t = { 0 };
	struct done d;
	char old[48], used[48], sure[48];

	memtest_open(&t, NULL);
	snprintf(old, sizeof(old), "%s", memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":"
		 "\"alpha lesson\",\"confidence\":0.2}"));
	snprintf(used, sizeof(used), "%s", memtest_add(&t, "acme", "{\"title\":\"b\",\"content\":"
		 "\"bravo lesson\",\"confidence\":0.2}"));
	snprintf(sure, sizeof(sure), "%s", memtest_add(&t, "acme", "{\"title\":\"c\",\"content\":"
		 "\"charlie lesson\",\"confidence\":0.9}"));
	memtest_add(&t, "acme", "{\"title\":\"d\",\"content\":\"delta lesson\",\"confidence\":0.2}");
	db_exec(&t, "UPDATE mem_items SET created_ms = created_ms - 200 * 86400000 WHERE "
		"title IN ('a', 'b', 'c')");
	{
		char sql[200];

		snprintf(sql, sizeof(sql), "UPDATE mem_items SET usage_count = 1 WHERE id = '%s'",
			 used);
		db_exec(&t, sql);
	}
	run(&t, "acme", &d);
	assert_int_equal(d.pruned, 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE id = '%s'", old), 0);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE tenant = 'acme'"), 3);
	assert_int_equal(memory_count(t.mem, "acme"), 3);
	memtest_cleanup(&t);
}

static void
test_automatic_trigger(void **state)
{
	struct memtest t = { 0 };
	struct memory_config cfg;

	memory_config_defaults(&cfg);
	cfg.consolidate_every = 3;
	memtest_open(&t, &cfg);
	memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":\"" LESSON "\"}");
	memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":\"" LESSON "\"}");
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE consolidated = 1"), 0);
	memtest_add(&t, "acme", "{\"title\":\"b\",\"content\":\"something else entirely\"}");
	/* The third insert queued a run; the loop finishes it. */
	while (db_int(&t, "SELECT count(*) FROM mem_items WHERE consolidated = 1") < 3)
		uv_run(&t.loop, UV_RUN_ONCE);
	/* Let after_work run so the arena follows. */
	while (memory_count(t.mem, "acme") != 2)
		uv_run(&t.loop, UV_RUN_ONCE);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items WHERE state = 'deleted'"), 1);
	memtest_cleanup(&t);
}

static void
test_close_waits_for_run(void **state)
{
	struct memtest t = { 0 };
	struct done d = { 0 };

	memtest_open(&t, NULL);
	memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":\"" LESSON "\"}");
	assert_int_equal(memory_consolidate(t.mem, "acme", on_done, &d), 0);
	/* Close right away: the callback still fires once, before close completes. */
	memtest_close(&t);
	assert_int_equal(d.called, 1);
	memtest_cleanup(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duplicates_merged),
		cmocka_unit_test(test_contradiction_and_quarantine),
		cmocka_unit_test(test_prune),
		cmocka_unit_test(test_automatic_trigger),
		cmocka_unit_test(test_close_waits_for_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

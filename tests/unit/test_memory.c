/*
 * memory: insert, get, search, delete, feedback and trajectories through the
 * module's API; bad input rejected with nothing stored; tenant isolation;
 * restart keeps everything; a read-only or full database fails the request
 * and leaves the module serving; scoring parts and MMR.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "embed.h"
#include "httpc.h"
#include "memory.h"
#include "memtest.h"
#include "store.h"

/* Measured when the corpus was written (see test_retrieval_quality). */
#define HIT3_FLOOR 0.55		/* measured 0.587 (hit@1 0.493) */
#define HIT3_HYBRID_FLOOR 0.60	/* measured 0.632 */

static int
search(struct memtest *t, const char *tenant, const char *json, json_t **ret)
{
	json_t *body = memtest_json(json);
	char err[256];
	int r = memory_search(t->mem, tenant, body, ret, err, sizeof(err));

	json_decref(body);
	return r;
}

static size_t
nresults(json_t *ret)
{
	return json_array_size(json_object_get(ret, "results"));
}

static const char *
result_id(json_t *ret, size_t i)
{
	return json_string_value(json_object_get(json_array_get(json_object_get(ret, "results"),
								i), "id"));
}

static int64_t
db_int(struct memtest *t, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(store_db(t->store), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void
test_add_get_search_delete(void **state)
{
	struct memtest t = { 0 };
	json_t *ret;
	const char *id;
	char idc[48];

	memtest_open(&t, NULL);
	id = memtest_add(&t, "acme", "{\"title\":\"Pin python dependencies\","
			 "\"description\":\"Avoid breaking upgrades\","
			 "\"content\":\"Write exact versions into requirements.txt; mail ops@acme.io "
			 "with key sk-abcdefghijklmnopqrstuvwx\",\"tags\":[\"python\",\"deps\"],"
			 "\"domain\":\"build\",\"namespace\":\"swarm-1\",\"outcome\":\"success\","
			 "\"confidence\":0.8,\"agent_id\":\"a1\",\"task_id\":\"t1\"}");
	snprintf(idc, sizeof(idc), "%s", id);
	assert_true(strncmp(idc, "mem_", 4) == 0);
	memtest_add(&t, "acme", "{\"title\":\"Evicted pods\",\"content\":\"Raise the memory "
		    "limit of the kubernetes pod when it is OOM killed\"}");

	assert_int_equal(memory_get(t.mem, "acme", idc, &ret), 0);
	assert_string_equal(json_string_value(json_object_get(ret, "title")),
			    "Pin python dependencies");
	/* Scrubbed before it was stored. */
	assert_non_null(strstr(json_string_value(json_object_get(ret, "content")), "[email]"));
	assert_non_null(strstr(json_string_value(json_object_get(ret, "content")), "[secret]"));
	assert_null(strstr(json_string_value(json_object_get(ret, "content")), "sk-abc"));
	assert_string_equal(json_string_value(json_object_get(ret, "model")), "fh1-384");
	assert_int_equal(json_array_size(json_object_get(ret, "tags")), 2);
	json_decref(ret);

	assert_int_equal(search(&t, "acme", "{\"query\":\"how do I pin dependency versions "
				"in python\",\"k\":1}", &ret), 0);
	assert_int_equal(nresults(ret), 1);
	assert_string_equal(result_id(ret, 0), idc);
	{
		json_t *r0 = json_array_get(json_object_get(ret, "results"), 0);
		json_t *parts = json_object_get(r0, "parts");
		double sim = json_real_value(json_object_get(parts, "sim"));
		double rec = json_real_value(json_object_get(parts, "recency"));
		double rel = json_real_value(json_object_get(parts, "reliability"));
		double score = json_real_value(json_object_get(r0, "score"));

		assert_true(sim > 0.2 && sim <= 1.0);
		assert_true(rec > 0.99 && rec <= 1.0);	/* just created */
		assert_true(fabs(rel - 0.8) < 1e-6);
		assert_true(fabs(score - (0.65 * sim + 0.15 * rec + 0.20 * rel)) < 1e-5);
	}
	json_decref(ret);

	/* Filters: domain and tags select, an unknown tag finds nothing. */
	assert_int_equal(search(&t, "acme", "{\"query\":\"pod memory\",\"domain\":\"build\"}",
				&ret), 0);
	assert_int_equal(nresults(ret), 1);
	assert_string_equal(result_id(ret, 0), idc);
	json_decref(ret);
	assert_int_equal(search(&t, "acme", "{\"query\":\"python\",\"tags\":[\"python\","
				"\"nope\"]}", &ret), 0);
	assert_int_equal(nresults(ret), 0);
	json_decref(ret);
	assert_int_equal(search(&t, "acme", "{\"query\":\"python\",\"outcome\":\"failure\"}",
				&ret), 0);
	assert_int_equal(nresults(ret), 0);
	json_decref(ret);

	assert_int_equal(memory_delete(t.mem, "acme", idc), 0);
	assert_int_equal(memory_delete(t.mem, "acme", idc), SP_ENOTFOUND);
	assert_int_equal(memory_get(t.mem, "acme", idc, &ret), SP_ENOTFOUND);
	assert_int_equal(memory_count(t.mem, "acme"), 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_fts WHERE mem_fts MATCH 'requirements'"), 0);
	memtest_cleanup(&t);
}

static void
test_bad_input_stores_nothing(void **state)
{
	static const struct {
		const char *body;
		int err;
	} adds[] = {
		{ "[]", SP_EINVAL },
		{ "{\"content\":\"x\"}", SP_EINVAL },
		{ "{\"title\":\"t\"}", SP_EINVAL },
		{ "{\"title\":\"\",\"content\":\"x\"}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"colour\":\"red\"}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"outcome\":\"maybe\"}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"confidence\":1.5}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"tags\":\"a\"}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"tags\":[1]}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"vector\":[1,2,3,4,5,6,7,8]}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"model\":\"m\"}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"model\":\"m\",\"vector\":[1,2]}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"model\":\"m\",\"vector\":[0,0,0,0,0,0,0,0]}",
		  SP_EINVAL },
		{ "{\"items\":[]}", SP_EINVAL },
		{ "{\"items\":[{\"title\":\"t\",\"content\":\"x\"}],\"k\":1}", SP_EINVAL },
		/* One bad item fails the whole batch. */
		{ "{\"items\":[{\"title\":\"t\",\"content\":\"x\"},{\"title\":\"t\"}]}", SP_EINVAL },
		{ "{\"title\":\"t\",\"content\":\"x\",\"tags\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
		  "\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
		  SP_ELIMIT },
	};
	static const char *const searches[] = {
		"{}", "{\"query\":\"\"}", "{\"query\":\"x\",\"k\":0}", "{\"query\":\"x\",\"k\":21}",
		"{\"query\":\"x\",\"k\":2.5}", "{\"query\":\"x\",\"colour\":1}",
		"{\"query\":\"x\",\"lambda\":0.2}", "{\"query\":\"x\",\"min_confidence\":-1}",
		"{\"query\":\"x\",\"weights\":{\"delta\":1}}", "{\"query\":\"x\",\"hybrid\":1}",
		"{\"query\":\"x\",\"vector\":[1,2,3,4,5,6,7,8]}",
		"{\"query\":\"x\",\"model\":\"m\"}", "{\"query\":\"x\",\"outcome\":\"meh\"}",
	};
	struct memtest t = { 0 };
	struct memory_config cfg;
	char big[20000], *json;
	json_t *body, *ret = NULL;
	char err[256];

	memory_config_defaults(&cfg);
	cfg.max_batch = 4;
	memtest_open(&t, &cfg);
	for (size_t i = 0; i < sizeof(adds) / sizeof(adds[0]); i++) {
		body = memtest_json(adds[i].body);
		err[0] = '\0';
		assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)),
				 adds[i].err);
		assert_true(err[0] != '\0');
		json_decref(body);
	}
	/* Oversized content and batch. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_true(asprintf(&json, "{\"title\":\"t\",\"content\":\"%s\"}", big) > 0);
	body = memtest_json(json);
	free(json);
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_ELIMIT);
	json_decref(body);
	body = memtest_json("{\"items\":[{\"title\":\"t\",\"content\":\"x\"},{\"title\":\"t\","
			    "\"content\":\"x\"},{\"title\":\"t\",\"content\":\"x\"},{\"title\":"
			    "\"t\",\"content\":\"x\"},{\"title\":\"t\",\"content\":\"x\"}]}");
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_ELIMIT);
	/* Missing tenant. */
	assert_int_equal(memory_add(t.mem, NULL, body, &ret, err, sizeof(err)), SP_EINVAL);
	assert_int_equal(memory_add(t.mem, "", body, &ret, err, sizeof(err)), SP_EINVAL);
	json_decref(body);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items"), 0);
	assert_int_equal(memory_count(t.mem, "acme"), 0);

	memtest_add(&t, "acme", "{\"title\":\"t\",\"content\":\"something\"}");
	for (size_t i = 0; i < sizeof(searches) / sizeof(searches[0]); i++) {
		body = memtest_json(searches[i]);
		ret = NULL;
		assert_int_equal(memory_search(t.mem, "acme", body, &ret, err, sizeof(err)),
				 SP_EINVAL);
		assert_null(ret);
		json_decref(body);
	}
	/* Wrong dimensions for a model already stored. */
	memtest_add(&t, "acme", "{\"title\":\"v\",\"content\":\"v\",\"model\":\"m\","
		    "\"vector\":[1,0,0,0,0,0,0,0]}");
	body = memtest_json("{\"title\":\"v\",\"content\":\"v\",\"model\":\"m\","
			    "\"vector\":[1,0,0,0,0,0,0,0,0]}");
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EINVAL);
	assert_non_null(strstr(err, "dimensions"));
	json_decref(body);
	body = memtest_json("{\"model\":\"m\",\"vector\":[1,0,0,0,0,0,0,0,0]}");
	assert_int_equal(memory_search(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EINVAL);
	json_decref(body);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items"), 2);
	/* Feedback and trajectories validate too. */
	body = memtest_json("{\"ids\":[],\"outcome\":\"success\"}");
	assert_int_equal(memory_feedback(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EINVAL);
	json_decref(body);
	body = memtest_json("{\"ids\":[\"x\"]}");
	assert_int_equal(memory_feedback(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EINVAL);
	json_decref(body);
	body = memtest_json("{\"task_id\":\"t\"}");
	assert_int_equal(memory_trajectory_add(t.mem, "acme", body, &ret, err, sizeof(err)),
			 SP_EINVAL);
	json_decref(body);
	memtest_cleanup(&t);
}

static void
test_client_vectors(void **state)
{
	struct memtest t = { 0 };
	json_t *ret;
	const char *id;
	char idc[48];

	memtest_open(&t, NULL);
	id = memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":\"a\",\"model\":\"mini\","
			 "\"vector\":[1,0,0,0,0,0,0,0.1]}");
	snprintf(idc, sizeof(idc), "%s", id);
	memtest_add(&t, "acme", "{\"title\":\"b\",\"content\":\"b\",\"model\":\"mini\","
		    "\"vector\":[0,1,0,0,0,0,0,0]}");
	assert_int_equal(search(&t, "acme", "{\"model\":\"mini\",\"vector\":[2,0,0,0,0,0,0,0],"
				"\"k\":1}", &ret), 0);
	assert_int_equal(nresults(ret), 1);
	assert_string_equal(result_id(ret, 0), idc);
	json_decref(ret);
	/* Text queries use the hashing model: client-model vectors are never compared. */
	assert_int_equal(search(&t, "acme", "{\"query\":\"a b\"}", &ret), 0);
	assert_int_equal(nresults(ret), 0);
	json_decref(ret);
	memtest_cleanup(&t);
}

static void
test_tenant_isolation(void **state)
{
	struct memtest t = { 0 };
	json_t *ret, *body;
	char ida[48], err[256];
	int called = 0;

	memtest_open(&t, NULL);
	snprintf(ida, sizeof(ida), "%s", memtest_add(&t, "alpha", "{\"title\":\"Secret plan\","
		 "\"content\":\"alpha tenant rotates the signing keys every monday\","
		 "\"outcome\":\"success\"}"));
	memtest_add(&t, "beta", "{\"title\":\"Other\",\"content\":\"beta things\"}");

	/* Find: the exact text, by B, finds nothing; by A, finds it. */
	assert_int_equal(search(&t, "beta", "{\"query\":\"alpha tenant rotates the signing "
				"keys every monday\",\"k\":20,\"hybrid\":true,\"min_confidence\":0}",
				&ret), 0);
	for (size_t i = 0; i < nresults(ret); i++)
		assert_string_not_equal(result_id(ret, i), ida);
	json_decref(ret);
	assert_int_equal(search(&t, "alpha", "{\"query\":\"signing keys\",\"hybrid\":true}",
				&ret), 0);
	assert_int_equal(nresults(ret), 1);
	json_decref(ret);

	/* Get, delete, feedback by B: not found, A's item unchanged. */
	assert_int_equal(memory_get(t.mem, "beta", ida, &ret), SP_ENOTFOUND);
	assert_int_equal(memory_delete(t.mem, "beta", ida), SP_ENOTFOUND);
	body = json_pack("{s[s]ss}", "ids", ida, "outcome", "failure");
	assert_int_equal(memory_feedback(t.mem, "beta", body, &ret, err, sizeof(err)), 0);
	assert_int_equal(json_integer_value(json_object_get(ret, "updated")), 0);
	assert_int_equal(json_array_size(json_object_get(ret, "missing")), 1);
	json_decref(ret);
	json_decref(body);
	assert_int_equal(memory_get(t.mem, "alpha", ida, &ret), 0);
	assert_true(fabs(json_real_value(json_object_get(ret, "confidence")) - 0.5) < 1e-9);
	assert_int_equal(json_integer_value(json_object_get(ret, "failure_count")), 0);
	json_decref(ret);

	/* Consolidation of B leaves A's rows alone (A's item is unconsolidated still). */
	assert_int_equal(memory_consolidate(t.mem, "beta", NULL, NULL), 0);
	while (db_int(&t, "SELECT count(*) FROM mem_items WHERE tenant='beta' AND consolidated=1") == 0)
		uv_run(&t.loop, UV_RUN_ONCE);
	(void)called;
	assert_int_equal(db_int(&t, "SELECT consolidated FROM mem_items WHERE tenant='alpha'"), 0);

	/* Usage: B's searches never count on A's items. */
	assert_int_equal(search(&t, "beta", "{\"query\":\"beta things\"}", &ret), 0);
	json_decref(ret);
	assert_int_equal(memory_flush_usage(t.mem), 0);
	assert_int_equal(db_int(&t, "SELECT usage_count FROM mem_items WHERE tenant='alpha'"), 1);
	/* B's two searches both returned B's only item. */
	assert_int_equal(db_int(&t, "SELECT usage_count FROM mem_items WHERE tenant='beta'"), 2);
	assert_int_equal(memory_count(t.mem, "alpha"), 1);
	memtest_cleanup(&t);
}

static void
test_feedback_usage_restart(void **state)
{
	struct memtest t = { 0 };
	json_t *ret, *body;
	char id[48], err[256];

	memtest_open(&t, NULL);
	snprintf(id, sizeof(id), "%s", memtest_add(&t, "acme", "{\"title\":\"Cache docker "
		 "layers\",\"content\":\"Order the Dockerfile so dependency layers are cached\","
		 "\"confidence\":0.5}"));
	body = memtest_json("{\"items\":[{\"title\":\"x1\",\"content\":\"unrelated one\"},"
			    "{\"title\":\"x2\",\"content\":\"unrelated two\"}]}");
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), 0);
	assert_int_equal(json_array_size(json_object_get(ret, "items")), 2);
	json_decref(ret);
	json_decref(body);

	body = json_pack("{s[ss]ss}", "ids", id, "mem_nope", "outcome", "success");
	assert_int_equal(memory_feedback(t.mem, "acme", body, &ret, err, sizeof(err)), 0);
	assert_int_equal(json_integer_value(json_object_get(ret, "updated")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(ret, "missing"), 0)),
			    "mem_nope");
	json_decref(ret);
	json_decref(body);
	body = json_pack("{s[s]ss}", "ids", id, "outcome", "failure");
	assert_int_equal(memory_feedback(t.mem, "acme", body, &ret, err, sizeof(err)), 0);
	json_decref(ret);
	json_decref(body);

	/* Two retrievals: usage is batched, not written on the read path. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(search(&t, "acme", "{\"query\":\"docker layer cache\",\"k\":1}",
					&ret), 0);
		assert_string_equal(result_id(ret, 0), id);
		json_decref(ret);
	}
	assert_int_equal(db_int(&t, "SELECT usage_count FROM mem_items WHERE id LIKE 'mem_%' "
				"AND title LIKE 'Cache%'"), 0);
	body = memtest_json("{\"task_id\":\"t9\",\"agent_id\":\"a\",\"query\":\"q\","
			    "\"trajectory\":[{\"step\":1,\"note\":\"mail bob@example.com\"}],"
			    "\"outcome\":\"success\",\"confidence\":0.9}");
	assert_int_equal(memory_trajectory_add(t.mem, "acme", body, &ret, err, sizeof(err)), 0);
	json_decref(ret);
	json_decref(body);

	/* Restart: close flushes usage; the arena reloads from SQLite. */
	memtest_close(&t);
	memtest_open(&t, NULL);
	assert_int_equal(memory_count(t.mem, "acme"), 3);
	assert_int_equal(memory_get(t.mem, "acme", id, &ret), 0);
	assert_int_equal(json_integer_value(json_object_get(ret, "usage_count")), 2);
	assert_int_equal(json_integer_value(json_object_get(ret, "success_count")), 1);
	assert_int_equal(json_integer_value(json_object_get(ret, "failure_count")), 1);
	assert_true(fabs(json_real_value(json_object_get(ret, "confidence")) - 0.525) < 1e-9);
	json_decref(ret);
	assert_int_equal(search(&t, "acme", "{\"query\":\"docker layer cache\",\"k\":1}", &ret), 0);
	assert_string_equal(result_id(ret, 0), id);
	assert_true(fabs(json_real_value(json_object_get(json_object_get(json_array_get(
		json_object_get(ret, "results"), 0), "parts"), "reliability")) - 0.525) < 1e-6);
	json_decref(ret);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_trajectories WHERE tenant='acme' "
				"AND trajectory LIKE '%[email]%'"), 1);
	memtest_cleanup(&t);
}

static void
test_mmr_and_recency(void **state)
{
	struct memtest t = { 0 };
	json_t *ret;
	char near1[48], diverse[48];

	memtest_open(&t, NULL);
	snprintf(near1, sizeof(near1), "%s", memtest_add(&t, "acme", "{\"title\":\"retry flaky "
		 "network tests\",\"content\":\"retry flaky network tests with backoff\"}"));
	memtest_add(&t, "acme", "{\"title\":\"retry flaky network tests\",\"content\":\"retry "
		    "flaky network tests with backoff please\"}");
	snprintf(diverse, sizeof(diverse), "%s", memtest_add(&t, "acme", "{\"title\":\"network "
		 "timeouts\",\"content\":\"raise network timeouts in tests\"}"));
	/* λ = 1: pure score, the two near-copies come first. */
	assert_int_equal(search(&t, "acme", "{\"query\":\"retry flaky network tests\",\"k\":2,"
				"\"lambda\":1}", &ret), 0);
	assert_int_equal(nresults(ret), 2);
	assert_string_not_equal(result_id(ret, 0), diverse);
	assert_string_not_equal(result_id(ret, 1), diverse);
	json_decref(ret);
	/* λ = 0.5: the second pick avoids the near-copy. */
	assert_int_equal(search(&t, "acme", "{\"query\":\"retry flaky network tests\",\"k\":2,"
				"\"lambda\":0.5}", &ret), 0);
	assert_int_equal(nresults(ret), 2);
	assert_string_equal(result_id(ret, 1), diverse);
	json_decref(ret);

	/* Recency is a true half-life: age one half-life → 0.5. */
	sqlite3_exec(store_db(t.store), "UPDATE mem_items SET created_ms = created_ms - "
		     "45 * 86400000", NULL, NULL, NULL);
	memtest_close(&t);
	memtest_open(&t, NULL);
	assert_int_equal(search(&t, "acme", "{\"query\":\"raise network timeouts\",\"k\":1}",
				&ret), 0);
	{
		double rec = json_real_value(json_object_get(json_object_get(json_array_get(
			json_object_get(ret, "results"), 0), "parts"), "recency"));

		assert_true(fabs(rec - 0.5) < 0.001);
	}
	json_decref(ret);
	/* max_age_days excludes it. */
	assert_int_equal(search(&t, "acme", "{\"query\":\"raise network timeouts\","
				"\"max_age_days\":30}", &ret), 0);
	assert_int_equal(nresults(ret), 0);
	json_decref(ret);
	memtest_cleanup(&t);
}

static void
test_db_failures(void **state)
{
	struct memtest t = { 0 };
	json_t *ret, *body;
	char err[256], id[48];

	memtest_open(&t, NULL);
	snprintf(id, sizeof(id), "%s", memtest_add(&t, "acme", "{\"title\":\"kept\","
		 "\"content\":\"kept before the failure\"}"));

	/* Read-only: the write fails with SP_EDB, nothing lands in the arena, reads go on. */
	assert_int_equal(sqlite3_exec(store_db(t.store), "PRAGMA query_only=1", NULL, NULL, NULL),
			 SQLITE_OK);
	body = memtest_json("{\"title\":\"new\",\"content\":\"during read only\"}");
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EDB);
	assert_non_null(strstr(err, "database"));
	json_decref(body);
	assert_int_equal(memory_count(t.mem, "acme"), 1);
	assert_int_equal(memory_delete(t.mem, "acme", id), SP_EDB);
	assert_int_equal(search(&t, "acme", "{\"query\":\"kept failure\"}", &ret), 0);
	assert_int_equal(nresults(ret), 1);
	json_decref(ret);
	assert_int_equal(memory_get(t.mem, "acme", id, &ret), 0);
	json_decref(ret);
	assert_int_equal(sqlite3_exec(store_db(t.store), "PRAGMA query_only=0", NULL, NULL, NULL),
			 SQLITE_OK);

	/* Full: cap the file at its current size; a large batch fails whole. */
	{
		char sql[64];

		snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
			 (long long)db_int(&t, "PRAGMA page_count"));
		assert_int_equal(sqlite3_exec(store_db(t.store), sql, NULL, NULL, NULL), SQLITE_OK);
	}
	{
		json_t *items = json_array();
		char content[8000];

		memset(content, 'z', sizeof(content) - 1);
		content[sizeof(content) - 1] = '\0';
		for (int i = 0; i < 50; i++)
			json_array_append_new(items, json_pack("{ssss}", "title", "big",
							       "content", content));
		body = json_pack("{so}", "items", items);
	}
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EDB);
	json_decref(body);
	assert_int_equal(memory_count(t.mem, "acme"), 1);
	assert_int_equal(db_int(&t, "SELECT count(*) FROM mem_items"), 1);
	assert_int_equal(search(&t, "acme", "{\"query\":\"kept\"}", &ret), 0);
	assert_int_equal(nresults(ret), 1);
	json_decref(ret);
	memtest_cleanup(&t);
}

static void
test_corrupt_db(void **state)
{
	struct memtest t = { 0 };
	FILE *f;

	memtest_open(&t, NULL);
	memtest_add(&t, "acme", "{\"title\":\"a\",\"content\":\"b\"}");
	memtest_close(&t);
	/* Overwrite the header: the store (and so memory) refuses to open. */
	{
		char p[160];

		snprintf(p, sizeof(p), "%s-wal", t.path);
		unlink(p);
	}
	f = fopen(t.path, "r+");
	assert_non_null(f);
	fputs("this is not a sqlite database, not at all......", f);
	fclose(f);
	{
		struct store *s = NULL;

		assert_int_equal(store_open(t.path, &s), SP_EDB);
	}
	memtest_cleanup(&t);
}

/*
 * Retrieval quality on the hand-written corpus: every item is stored, every
 * paraphrased query must find its item in the top 3. hit@k is printed for
 * the hashing embedder alone and fused with BM25; the floors asserted are
 * the values measured when the corpus was written, minus a small margin.
 */
struct corpus_item {
	char *title, *content, *query;
	char id[48];
};

static size_t
corpus_load(struct corpus_item **ret)
{
	const char *src = getenv("SANDPIT_SOURCE_DIR");
	char path[512], line[2048];
	struct corpus_item *items = NULL;
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/tests/unit/data/memory_corpus.txt", src ? src : "..");
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		char *a, *b, *nl;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		if ((nl = strchr(line, '\n')) != NULL)
			*nl = '\0';
		a = strstr(line, " | ");
		assert_non_null(a);
		b = strstr(a + 3, " | ");
		assert_non_null(b);
		*a = *b = '\0';
		items = realloc(items, (n + 1) * sizeof(*items));
		items[n].title = strdup(line);
		items[n].content = strdup(a + 3);
		items[n].query = strdup(b + 3);
		n++;
	}
	fclose(f);
	*ret = items;
	return n;
}

static double
corpus_hits(struct memtest *t, struct corpus_item *items, size_t n, int k, bool hybrid)
{
	size_t hits = 0;

	for (size_t i = 0; i < n; i++) {
		json_t *body = json_pack("{sssisb}", "query", items[i].query, "k", k, "hybrid",
					 hybrid), *ret;
		char err[256];

		assert_int_equal(memory_search(t->mem, "corpus", body, &ret, err, sizeof(err)), 0);
		for (size_t j = 0; j < nresults(ret); j++)
			if (strcmp(result_id(ret, j), items[i].id) == 0) {
				hits++;
				break;
			}
		json_decref(ret);
		json_decref(body);
	}
	return (double)hits / (double)n;
}

static void
test_retrieval_quality(void **state)
{
	struct memtest t = { 0 };
	struct corpus_item *items;
	size_t n = corpus_load(&items);
	double h1, h3, h3h, h1h;

	assert_true(n >= 200);
	memtest_open(&t, NULL);
	for (size_t i = 0; i < n; i++) {
		json_t *body = json_pack("{ssss}", "title", items[i].title, "content",
					 items[i].content), *ret;
		char err[256];

		assert_int_equal(memory_add(t.mem, "corpus", body, &ret, err, sizeof(err)), 0);
		snprintf(items[i].id, sizeof(items[i].id), "%s",
			 json_string_value(json_object_get(ret, "id")));
		json_decref(ret);
		json_decref(body);
	}
	h1 = corpus_hits(&t, items, n, 1, false);
	h3 = corpus_hits(&t, items, n, 3, false);
	h1h = corpus_hits(&t, items, n, 1, true);
	h3h = corpus_hits(&t, items, n, 3, true);
	printf("retrieval corpus: %zu items, %zu queries; hashing fh1-384: hit@1 %.3f hit@3 %.3f;"
	       " hybrid (+BM25 RRF): hit@1 %.3f hit@3 %.3f\n", n, n, h1, h3, h1h, h3h);
	assert_true(h3 >= HIT3_FLOOR);
	assert_true(h3h >= HIT3_HYBRID_FLOOR);
	for (size_t i = 0; i < n; i++) {
		free(items[i].title);
		free(items[i].content);
		free(items[i].query);
	}
	free(items);
	memtest_cleanup(&t);
}

/*
 * The HTTP embedder against a tiny loopback server (libuv TCP on
 * 127.0.0.1:0) that answers /v1/embeddings with 16-dimensional hashing
 * vectors, fails with 500 on demand, or never answers (to test close).
 */
struct async_done {
	int called, status;
	json_t *ret;
	char err[256];
};

static void
async_cb(void *arg, int status, json_t *ret, const char *err)
{
	struct async_done *d = arg;

	d->called++;
	d->status = status;
	d->ret = json_incref(ret);
	snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
}

static void
wait_done(struct memtest *t, struct async_done *d)
{
	while (d->called == 0)
		uv_run(&t->loop, UV_RUN_ONCE);
}

static void
httpc_closed(void *arg)
{
	*(int *)arg = 1;
}

static void
test_http_embedder(void **state)
{
	struct memtest t = { 0 };
	struct fake_emb f = { 0 };
	struct memory_config cfg;
	struct sp_httpc *httpc;
	int closed = 0, reqs;
	char url[128], err[256], id[48];
	struct async_done d = { 0 };
	json_t *body, *ret;

	strcpy(t.dir, "/tmp/sp-test-mem-XXXXXX");
	assert_non_null(mkdtemp(t.dir));
	snprintf(t.path, sizeof(t.path), "%s/sandpit.db", t.dir);
	assert_int_equal(uv_loop_init(&t.loop), 0);
	fake_emb_start(&f, &t.loop, url, sizeof(url));
	assert_int_equal(httpc_new(&t.loop, &httpc), 0);

	memory_config_defaults(&cfg);
	cfg.embedder_url = url;
	cfg.embedder_model = "fake-16";
	cfg.httpc = httpc;
	memtest_open(&t, &cfg);
	assert_true(memory_embeds_async(t.mem));

	/* Insert: embedded remotely, stored under the embedder's model id. */
	body = memtest_json("{\"title\":\"Pin python dependencies\",\"content\":\"Write exact "
			    "versions into requirements.txt\"}");
	assert_int_equal(memory_add_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)), 0);
	assert_int_equal(d.called, 0);		/* never inside the call */
	json_decref(body);
	wait_done(&t, &d);
	if (d.status != 0)
		fail_msg("add: %d %s", d.status, d.err);
	assert_string_equal(json_string_value(json_object_get(d.ret, "model")), "fake-16");
	assert_int_equal(json_integer_value(json_object_get(d.ret, "dims")), 16);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(d.ret, "id")));
	json_decref(d.ret);
	memset(&d, 0, sizeof(d));
	body = memtest_json("{\"items\":[{\"title\":\"Evicted pods\",\"content\":\"raise the pod "
			    "memory limit\"},{\"title\":\"Docker cache\",\"content\":\"order the "
			    "layers\"}]}");
	assert_int_equal(memory_add_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)), 0);
	json_decref(body);
	wait_done(&t, &d);
	assert_int_equal(d.status, 0);
	json_decref(d.ret);
	assert_int_equal(f.requests, 2);	/* one call per request, not per item */

	/* The synchronous call refuses text that needs the remote model. */
	body = memtest_json("{\"title\":\"x\",\"content\":\"y\"}");
	assert_int_equal(memory_add(t.mem, "acme", body, &ret, err, sizeof(err)), SP_EINVAL);
	json_decref(body);

	/* Search: the query goes through the embedder too. */
	memset(&d, 0, sizeof(d));
	body = memtest_json("{\"query\":\"python dependencies requirements versions\",\"k\":1}");
	assert_int_equal(memory_search_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)),
			 0);
	json_decref(body);
	wait_done(&t, &d);
	assert_int_equal(d.status, 0);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(d.ret,
			    "results"), 0), "id")), id);
	json_decref(d.ret);

	/* Bad input: refused before any embedder call. */
	reqs = f.requests;
	body = memtest_json("{\"query\":\"x\",\"k\":99}");
	assert_int_equal(memory_search_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)),
			 SP_EINVAL);
	json_decref(body);
	body = memtest_json("{\"title\":\"x\"}");
	assert_int_equal(memory_add_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)),
			 SP_EINVAL);
	json_decref(body);
	assert_int_equal(f.requests, reqs);

	/* The embedder fails: the request fails, nothing is stored. */
	f.mode = 1;
	memset(&d, 0, sizeof(d));
	body = memtest_json("{\"title\":\"x\",\"content\":\"while the embedder is down\"}");
	assert_int_equal(memory_add_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)), 0);
	json_decref(body);
	wait_done(&t, &d);
	assert_int_equal(d.status, SP_EUNAVAIL);
	assert_null(d.ret);
	assert_int_equal(memory_count(t.mem, "acme"), 3);

	/* Close while a call is pending: its callback fires once with SP_ECANCELED. */
	f.mode = 2;
	memset(&d, 0, sizeof(d));
	body = memtest_json("{\"query\":\"never answered\"}");
	assert_int_equal(memory_search_async(t.mem, "acme", body, async_cb, &d, err, sizeof(err)),
			 0);
	json_decref(body);
	while (f.requests == reqs + 1)
		uv_run(&t.loop, UV_RUN_ONCE);
	memtest_close(&t);
	assert_int_equal(d.called, 1);
	assert_int_equal(d.status, SP_ECANCELED);

	httpc_close(httpc, httpc_closed, &closed);
	while (!closed)
		uv_run(&t.loop, UV_RUN_ONCE);
	fake_emb_stop(&f);
	uv_run(&t.loop, UV_RUN_DEFAULT);
	memtest_cleanup(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_get_search_delete),
		cmocka_unit_test(test_bad_input_stores_nothing),
		cmocka_unit_test(test_client_vectors),
		cmocka_unit_test(test_tenant_isolation),
		cmocka_unit_test(test_feedback_usage_restart),
		cmocka_unit_test(test_mmr_and_recency),
		cmocka_unit_test(test_db_failures),
		cmocka_unit_test(test_corrupt_db),
		cmocka_unit_test(test_retrieval_quality),
		cmocka_unit_test(test_http_embedder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

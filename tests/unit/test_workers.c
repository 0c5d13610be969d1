/*
 * workers: decoding of the worker routes' bodies (output chunks, results),
 * task ids in paths, and the control-side exec body that becomes a task.
 * The routes themselves run against real containers in
 * tests/integration/worker_channel.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "workers.h"

static json_t *
J(const char *text)
{
	json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

	assert_non_null(j);
	return j;
}

static int
chunk(const char *text, struct workers_chunk *c)
{
	char err[256];
	json_t *j = J(text);
	int r = workers_decode_chunk(j, c, err, sizeof(err));

	json_decref(j);
	return r;
}

static void
test_chunk_ok(void **state)
{
	struct workers_chunk c;

	assert_int_equal(chunk("{\"attempt\":2,\"lease\":77,\"offset\":10,\"fd\":2,\"b64\":\"aGVsbG8=\"}",
			       &c), 0);
	assert_int_equal(c.attempt, 2);
	assert_int_equal(c.lease, 77);
	assert_int_equal(c.offset, 10);
	assert_int_equal(c.fd, 2);
	assert_int_equal(c.len, 5);
	assert_memory_equal(c.data, "hello", 5);
	free(c.data);
	/* Padding of two, none, and the empty chunk. */
	assert_int_equal(chunk("{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"AA==\"}", &c), 0);
	assert_int_equal(c.len, 1);
	assert_int_equal((unsigned char)c.data[0], 0);
	free(c.data);
	assert_int_equal(chunk("{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"YWJj\"}", &c), 0);
	assert_int_equal(c.len, 3);
	assert_memory_equal(c.data, "abc", 3);
	free(c.data);
	assert_int_equal(chunk("{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"\"}", &c), 0);
	assert_int_equal(c.len, 0);
	free(c.data);
}

static void
test_chunk_bad(void **state)
{
	static const char *const bad[] = {
		"[]",
		"{}",
		"{\"attempt\":0,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"\"}",
		"{\"attempt\":1,\"lease\":-1,\"offset\":0,\"fd\":1,\"b64\":\"\"}",
		"{\"attempt\":1,\"lease\":0,\"offset\":-5,\"fd\":1,\"b64\":\"\"}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":3,\"b64\":\"\"}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":0,\"b64\":\"\"}",
		"{\"attempt\":\"1\",\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"\"}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":5}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"abc\"}",
		"{\"attempt\":1,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"a!c=\"}",
		"{\"attempt\":4294967296,\"lease\":0,\"offset\":0,\"fd\":1,\"b64\":\"\"}",
	};
	struct workers_chunk c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (chunk(bad[i], &c) != SP_EINVAL)
			fail_msg("accepted: %s", bad[i]);
}

static void
test_chunk_limit(void **state)
{
	size_t n = (WORKERS_CHUNK_MAX / 3 + 1) * 4;
	char *b64 = malloc(n + 1);
	struct workers_chunk c;
	json_t *j;
	char err[256];

	/* One group of four past the limit is refused before anything is decoded. */
	memset(b64, 'A', n);
	b64[n] = '\0';
	j = json_pack("{s:i, s:i, s:i, s:i, s:s}", "attempt", 1, "lease", 0, "offset", 0, "fd", 1,
		      "b64", b64);
	assert_int_equal(workers_decode_chunk(j, &c, err, sizeof(err)), SP_EINVAL);
	json_decref(j);
	b64[WORKERS_CHUNK_MAX / 3 * 4] = '\0';
	j = json_pack("{s:i, s:i, s:i, s:i, s:s}", "attempt", 1, "lease", 0, "offset", 0, "fd", 1,
		      "b64", b64);
	assert_int_equal(workers_decode_chunk(j, &c, err, sizeof(err)), 0);
	assert_int_equal(c.len, WORKERS_CHUNK_MAX / 3 * 3);
	free(c.data);
	json_decref(j);
	free(b64);
}

static int
result(const char *text, struct workers_result *r)
{
	char err[256];
	json_t *j = J(text);
	int rc = workers_decode_result(j, r, err, sizeof(err));

	json_decref(j);
	return rc;
}

static void
test_result(void **state)
{
	struct workers_result r;

	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":3,\"duration_ms\":12,"
				"\"timed_out\":true,\"output_len\":100}", &r), 0);
	assert_int_equal(r.attempt, 1);
	assert_int_equal(r.lease, 9);
	assert_int_equal(r.exit_code, 3);
	assert_int_equal(r.duration_ms, 12);
	assert_true(r.timed_out);
	assert_int_equal(r.output_len, 100);
	/* Optional fields default to 0 / false. */
	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":0}", &r), 0);
	assert_false(r.timed_out);
	assert_int_equal(r.duration_ms, 0);

	assert_int_equal(result("{\"attempt\":1,\"lease\":9}", &r), SP_EINVAL);
	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":256}", &r), SP_EINVAL);
	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":-1}", &r), SP_EINVAL);
	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":0,\"timed_out\":1}", &r),
			 SP_EINVAL);
	assert_int_equal(result("{\"attempt\":1,\"lease\":9,\"exit_code\":0,\"duration_ms\":-3}", &r),
			 SP_EINVAL);
	assert_int_equal(result("\"x\"", &r), SP_EINVAL);
}

static int
max_of(const char *path)
{
	char err[128];
	unsigned v = 99;
	int r = workers_decode_max(path, &v, err, sizeof(err));

	return r < 0 ? r : (int)v;
}

static void
test_max(void **state)
{
	assert_int_equal(max_of("/v1/worker/tasks/next"), 0);
	assert_int_equal(max_of("/v1/worker/tasks/next?"), 0);
	assert_int_equal(max_of("/v1/worker/tasks/next?x=1"), 0);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=1"), 1);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=64"), 64);
	assert_int_equal(max_of("/v1/worker/tasks/next?a=b&max=7&c"), 7);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=8#frag"), 8);
	assert_int_equal(max_of("/v1/worker/tasks/next?maxi=3"), 0);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=0"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=65"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=010"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=99999999999999999999"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=-1"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=2x"), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max="), SP_EINVAL);
	assert_int_equal(max_of("/v1/worker/tasks/next?max=2&max=3"), SP_EINVAL);
}

static void
test_results(void **state)
{
	struct workers_result res[WORKERS_BATCH_MAX];
	int64_t ids[WORKERS_BATCH_MAX];
	char err[256];
	size_t n = 0;
	json_t *j, *a;

	j = J("{\"results\":[{\"task\":5,\"attempt\":2,\"lease\":9,\"exit_code\":1},"
	      "{\"task\":6,\"attempt\":1,\"lease\":3,\"exit_code\":0,\"timed_out\":true}]}");
	assert_int_equal(workers_decode_results(j, ids, res, &n, err, sizeof(err)), 0);
	json_decref(j);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 5);
	assert_int_equal(res[0].attempt, 2);
	assert_int_equal(res[0].exit_code, 1);
	assert_int_equal(ids[1], 6);
	assert_true(res[1].timed_out);

	/* Each bad shape, and one bad entry among good ones, refuses the whole batch. */
	const char *bad[] = {
		"{}", "{\"results\":{}}", "{\"results\":[]}", "{\"results\":[1]}",
		"{\"results\":[{\"attempt\":1,\"lease\":1,\"exit_code\":0}]}",
		"{\"results\":[{\"task\":0,\"attempt\":1,\"lease\":1,\"exit_code\":0}]}",
		"{\"results\":[{\"task\":1,\"attempt\":1,\"lease\":1,\"exit_code\":0},"
		"{\"task\":2,\"attempt\":1,\"lease\":1}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = J(bad[i]);
		if (workers_decode_results(j, ids, res, &n, err, sizeof(err)) != SP_EINVAL)
			fail_msg("accepted: %s", bad[i]);
		json_decref(j);
	}
	/* The bound: WORKERS_BATCH_MAX entries pass, one more does not. */
	a = json_array();
	for (int i = 0; i < WORKERS_BATCH_MAX; i++)
		json_array_append_new(a, json_pack("{s:i, s:i, s:i, s:i}", "task", i + 1,
		    "attempt", 1, "lease", 1, "exit_code", 0));
	j = json_pack("{s:o}", "results", a);
	assert_int_equal(workers_decode_results(j, ids, res, &n, err, sizeof(err)), 0);
	assert_int_equal(n, WORKERS_BATCH_MAX);
	json_array_append_new(a, json_pack("{s:i, s:i, s:i, s:i}", "task", 99, "attempt", 1,
	    "lease", 1, "exit_code", 0));
	assert_int_equal(workers_decode_results(j, ids, res, &n, err, sizeof(err)), SP_EINVAL);
	json_decref(j);
}

static void
test_task_id(void **state)
{
	assert_int_equal(workers_task_id("1"), 1);
	assert_int_equal(workers_task_id("123456789012345678"), 123456789012345678LL);
	assert_int_equal(workers_task_id("0"), -1);
	assert_int_equal(workers_task_id("01"), -1);
	assert_int_equal(workers_task_id("-1"), -1);
	assert_int_equal(workers_task_id("+1"), -1);
	assert_int_equal(workers_task_id("1x"), -1);
	assert_int_equal(workers_task_id(""), -1);
	assert_int_equal(workers_task_id(NULL), -1);
	assert_int_equal(workers_task_id("1234567890123456789"), -1);
}

static int
exec_body(const char *text, json_t **out, uint64_t *t)
{
	char err[256];
	json_t *j = J(text);
	int r = workers_decode_exec(j, 1000, 5000, out, t, err, sizeof(err));

	json_decref(j);
	return r;
}

static void
test_exec(void **state)
{
	json_t *o;
	uint64_t t;
	char *s;

	assert_int_equal(exec_body("{\"via\":\"worker\",\"cmd\":[\"sh\",\"-c\",\"echo\"],"
				   "\"env\":{\"A_1\":\"x\"},\"workdir\":\"/work/d\"}", &o, &t), 0);
	assert_int_equal(t, 1000);
	s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	/* "via" is not part of the task; the default timeout is. */
	assert_string_equal(s, "{\"cmd\":[\"sh\",\"-c\",\"echo\"],\"env\":{\"A_1\":\"x\"},"
			    "\"timeout_ms\":1000,\"workdir\":\"/work/d\"}");
	free(s);
	json_decref(o);
	assert_int_equal(exec_body("{\"cmd\":[\"true\"],\"timeout_ms\":5000}", &o, &t), 0);
	assert_int_equal(t, 5000);
	json_decref(o);

	assert_int_equal(exec_body("{\"cmd\":[\"true\"],\"timeout_ms\":5001}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"true\"],\"timeout_ms\":0}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[]}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":\"ls\"}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"\"]}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"a\\u0000b\"]}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\", 3]}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"env\":{\"1A\":\"x\"}}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"env\":{\"A=B\":\"x\"}}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"env\":{\"A\":1}}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"env\":[]}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"workdir\":\"rel\"}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("{\"cmd\":[\"ls\"],\"workdir\":7}", &o, &t), SP_EINVAL);
	assert_int_equal(exec_body("[\"ls\"]", &o, &t), SP_EINVAL);
}

static void
test_exec_argv_limit(void **state)
{
	json_t *body = json_object(), *cmd = json_array(), *o;
	char err[256];
	uint64_t t;

	for (int i = 0; i <= WORKERS_ARGV_MAX; i++)
		json_array_append_new(cmd, json_string("x"));
	json_object_set_new(body, "cmd", cmd);
	assert_int_equal(workers_decode_exec(body, 1000, 5000, &o, &t, err, sizeof(err)), SP_EINVAL);
	json_array_remove(cmd, 0);
	assert_int_equal(workers_decode_exec(body, 1000, 5000, &o, &t, err, sizeof(err)), 0);
	json_decref(o);
	json_decref(body);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_ok),
		cmocka_unit_test(test_chunk_bad),
		cmocka_unit_test(test_chunk_limit),
		cmocka_unit_test(test_result),
		cmocka_unit_test(test_task_id),
		cmocka_unit_test(test_max),
		cmocka_unit_test(test_results),
		cmocka_unit_test(test_exec),
		cmocka_unit_test(test_exec_argv_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

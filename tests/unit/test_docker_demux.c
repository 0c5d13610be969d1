/*
 * The exec stream demultiplexer: frames whole, split at every byte, empty,
 * interleaved stdout/stderr, garbage headers, oversized frames and a consumer
 * that aborts. The event parser of the watch stream too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <sandpit/error.h>

#include "../../providers/docker/docker_internal.h"

struct sink {
	char out[4096], err[4096];
	size_t out_len, err_len;
	int calls;
	int abort_at;			/* return -EPIPE on this call (1-based), 0 never */
};

static int
sink_cb(void *arg, int fd, const char *data, size_t len)
{
	struct sink *s = arg;

	s->calls++;
	if (s->abort_at != 0 && s->calls == s->abort_at)
		return -EPIPE;
	assert_true(fd == 1 || fd == 2);
	if (fd == 1) {
		memcpy(s->out + s->out_len, data, len);
		s->out_len += len;
	} else {
		memcpy(s->err + s->err_len, data, len);
		s->err_len += len;
	}
	return 0;
}

static size_t
frame(unsigned char *buf, int type, const char *payload)
{
	size_t len = strlen(payload);

	buf[0] = (unsigned char)type;
	buf[1] = buf[2] = buf[3] = 0;
	buf[4] = (unsigned char)(len >> 24);
	buf[5] = (unsigned char)(len >> 16);
	buf[6] = (unsigned char)(len >> 8);
	buf[7] = (unsigned char)len;
	memcpy(buf + 8, payload, len);
	return 8 + len;
}

static size_t
stream(unsigned char *buf)
{
	size_t n = 0;

	n += frame(buf + n, 1, "hello ");
	n += frame(buf + n, 2, "warning\n");
	n += frame(buf + n, 1, "");
	n += frame(buf + n, 1, "world\n");
	return n;
}

static void
test_whole(void **state)
{
	unsigned char buf[256];
	size_t n = stream(buf);
	struct docker_demux m = { 0 };
	struct sink s = { 0 };

	assert_int_equal(docker_demux_feed(&m, (char *)buf, n, sink_cb, &s), 0);
	assert_true(docker_demux_clean(&m));
	assert_int_equal(s.out_len, 12);
	assert_memory_equal(s.out, "hello world\n", 12);
	assert_int_equal(s.err_len, 8);
	assert_memory_equal(s.err, "warning\n", 8);
}

/* Every split point, and byte by byte: the same output. */
static void
test_split(void **state)
{
	unsigned char buf[256];
	size_t n = stream(buf);

	for (size_t cut = 0; cut <= n; cut++) {
		struct docker_demux m = { 0 };
		struct sink s = { 0 };

		assert_int_equal(docker_demux_feed(&m, (char *)buf, cut, sink_cb, &s), 0);
		assert_int_equal(docker_demux_feed(&m, (char *)buf + cut, n - cut, sink_cb, &s), 0);
		assert_true(docker_demux_clean(&m));
		assert_int_equal(s.out_len, 12);
		assert_memory_equal(s.out, "hello world\n", 12);
		assert_int_equal(s.err_len, 8);
	}
	{
		struct docker_demux m = { 0 };
		struct sink s = { 0 };

		for (size_t i = 0; i < n; i++)
			assert_int_equal(docker_demux_feed(&m, (char *)buf + i, 1, sink_cb, &s), 0);
		assert_true(docker_demux_clean(&m));
		assert_memory_equal(s.out, "hello world\n", 12);
	}
}

static void
test_truncated(void **state)
{
	unsigned char buf[64];
	size_t n = frame(buf, 1, "abcdef");
	struct docker_demux m = { 0 };
	struct sink s = { 0 };

	assert_int_equal(docker_demux_feed(&m, (char *)buf, n - 2, sink_cb, &s), 0);
	assert_false(docker_demux_clean(&m));
	assert_int_equal(s.out_len, 4);
	m = (struct docker_demux){ 0 };
	assert_int_equal(docker_demux_feed(&m, (char *)buf, 5, sink_cb, &s), 0);
	assert_false(docker_demux_clean(&m));
}

static void
test_garbage(void **state)
{
	const char *junk[] = { "HTTP/1.1 200 OK\r\n", "\x07\0\0\0\0\0\0\1x", "\x01\x01\0\0\0\0\0\1x" };

	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		struct docker_demux m = { 0 };
		struct sink s = { 0 };

		assert_int_equal(docker_demux_feed(&m, junk[i], 9 + (i == 0) * 8, sink_cb, &s),
		    SP_EPROTO);
		assert_int_equal(s.calls, 0);
	}
}

static void
test_oversized(void **state)
{
	unsigned char hdr[8] = { 1, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff };
	struct docker_demux m = { 0 };
	struct sink s = { 0 };

	assert_int_equal(docker_demux_feed(&m, (char *)hdr, 8, sink_cb, &s), SP_EPROTO);
	assert_int_equal(s.calls, 0);
}

static void
test_abort(void **state)
{
	unsigned char buf[256];
	size_t n = stream(buf);
	struct docker_demux m = { 0 };
	struct sink s = { .abort_at = 2 };

	assert_int_equal(docker_demux_feed(&m, (char *)buf, n, sink_cb, &s), -EPIPE);
	assert_int_equal(s.calls, 2);
}

static void
test_event_parse(void **state)
{
	struct sp_instance inst;
	json_t *ev;

	ev = json_loads("{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"abc\","
	    "\"Attributes\":{\"exitCode\":\"137\",\"io.sandpit.sandbox\":\"sb-1\","
	    "\"io.sandpit.tenant\":\"t\"}},\"timeNano\":1}", 0, NULL);
	assert_true(docker_watch_parse(ev, &inst));
	assert_string_equal(inst.ref, "abc");
	assert_int_equal(inst.state, SP_INST_EXITED);
	assert_int_equal(inst.exit_code, 137);
	assert_string_equal(inst.sandbox_id, "sb-1");
	assert_string_equal(inst.tenant, "t");
	json_decref(ev);

	ev = json_loads("{\"Type\":\"container\",\"Action\":\"oom\",\"Actor\":{\"ID\":\"abc\"}}",
	    0, NULL);
	assert_true(docker_watch_parse(ev, &inst));
	assert_true(inst.oom_killed);
	assert_null(inst.sandbox_id);
	json_decref(ev);

	ev = json_loads("{\"Type\":\"container\",\"Action\":\"destroy\",\"Actor\":{\"ID\":\"x\"}}",
	    0, NULL);
	assert_true(docker_watch_parse(ev, &inst));
	assert_int_equal(inst.state, SP_INST_GONE);
	json_decref(ev);

	/* Not ours to report, or malformed. */
	const char *skip[] = {
		"{\"Type\":\"network\",\"Action\":\"die\",\"Actor\":{\"ID\":\"x\"}}",
		"{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"x\"}}",
		"{\"Type\":\"container\",\"Action\":\"die\"}",
		"{\"Type\":7,\"Action\":[],\"Actor\":\"x\"}",
		"[]",
	};
	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++) {
		ev = json_loads(skip[i], JSON_DECODE_ANY, NULL);
		assert_non_null(ev);
		assert_false(docker_watch_parse(ev, &inst));
		json_decref(ev);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_event_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

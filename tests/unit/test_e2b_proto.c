/*
 * The E2B provider's pure parts: Connect envelope framing fed whole, split
 * and byte by byte, huge, garbage and truncated; process events and
 * end-of-stream errors; HTTP error mapping; base64; the retry policy and
 * costs. No loop, no network.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../providers/e2b/e2b.h"

/* ---------------------------------------------------------------- helpers */

struct frames {
	unsigned n;
	unsigned flags[16];
	char json[16][256];
	int stop_at;			/* return -77 from this frame (1-based), or 0 */
};

static int
frame_cb(void *arg, unsigned flags, const char *json, size_t len)
{
	struct frames *f = arg;

	assert_true(f->n < 16);
	assert_int_equal(strlen(json), len);	/* NUL-terminated, no NUL inside */
	f->flags[f->n] = flags;
	snprintf(f->json[f->n], sizeof(f->json[0]), "%s", json);
	f->n++;
	if (f->stop_at != 0 && (int)f->n == f->stop_at)
		return -77;
	return 0;
}

/* Append one envelope to buf at *len. */
static void
put_env(char *buf, size_t *len, unsigned flags, const char *json)
{
	size_t n = strlen(json);

	buf[(*len)++] = (char)flags;
	buf[(*len)++] = (char)(n >> 24);
	buf[(*len)++] = (char)(n >> 16);
	buf[(*len)++] = (char)(n >> 8);
	buf[(*len)++] = (char)n;
	memcpy(buf + *len, json, n);
	*len += n;
}

static size_t
sample_stream(char *buf)
{
	size_t len = 0;

	put_env(buf, &len, 0, "{\"event\":{\"start\":{\"pid\":42}}}");
	put_env(buf, &len, 0, "{\"event\":{\"data\":{\"stdout\":\"aGVsbG8K\"}}}");
	put_env(buf, &len, 0, "{\"event\":{\"keepalive\":{}}}");
	put_env(buf, &len, 0, "{\"event\":{\"end\":{\"exited\":true,\"status\":\"exit status 0\"}}}");
	put_env(buf, &len, E2B_ENV_END, "{}");
	return len;
}

/* ---------------------------------------------------------------- envelopes */

static void
test_env_whole_stream(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	char buf[1024];
	size_t len = sample_stream(buf);

	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), 0);
	assert_int_equal(f.n, 5);
	assert_string_equal(f.json[0], "{\"event\":{\"start\":{\"pid\":42}}}");
	assert_int_equal(f.flags[4], E2B_ENV_END);
	assert_string_equal(f.json[4], "{}");
	assert_int_equal(e2b_env_finish(&ps, &why), 0);
	e2b_env_done(&ps);
}

static void
test_env_split_every_byte(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	char buf[1024];
	size_t len = sample_stream(buf), i;

	/* Every split point, and then one byte at a time. */
	for (size_t cut = 0; cut <= len; cut++) {
		memset(&f, 0, sizeof(f));
		e2b_env_init(&ps, E2B_MAX_FRAME);
		assert_int_equal(e2b_env_feed(&ps, buf, cut, frame_cb, &f, &why), 0);
		assert_int_equal(e2b_env_feed(&ps, buf + cut, len - cut, frame_cb, &f, &why), 0);
		assert_int_equal(f.n, 5);
		assert_string_equal(f.json[3],
		    "{\"event\":{\"end\":{\"exited\":true,\"status\":\"exit status 0\"}}}");
		assert_int_equal(e2b_env_finish(&ps, &why), 0);
		e2b_env_done(&ps);
	}
	memset(&f, 0, sizeof(f));
	e2b_env_init(&ps, E2B_MAX_FRAME);
	for (i = 0; i < len; i++)
		assert_int_equal(e2b_env_feed(&ps, buf + i, 1, frame_cb, &f, &why), 0);
	assert_int_equal(f.n, 5);
	assert_int_equal(e2b_env_finish(&ps, &why), 0);
	e2b_env_done(&ps);
}

static void
test_env_huge_frame(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	/* The emulator's huge_frame: a length of 0xfffffff0. */
	const char hdr[] = { 0, (char)0xff, (char)0xff, (char)0xff, (char)0xf0, '{' };

	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, hdr, sizeof(hdr), frame_cb, &f, &why), SP_EPROTO);
	assert_non_null(strstr(why, "frame limit"));
	assert_int_equal(f.n, 0);
	assert_null(ps.buf);		/* nothing was allocated for it */
	e2b_env_done(&ps);

	/* Just over a small limit fails; exactly at it passes. */
	char buf[64];
	size_t len = 0;

	put_env(buf, &len, 0, "{\"a\":1}");	/* 7 bytes */
	e2b_env_init(&ps, 6);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), SP_EPROTO);
	e2b_env_done(&ps);
	e2b_env_init(&ps, 7);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), 0);
	assert_int_equal(f.n, 1);
	e2b_env_done(&ps);
}

static void
test_env_bad_flags(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	char buf[64];
	size_t len = 0;

	put_env(buf, &len, E2B_ENV_COMPRESSED, "{}");
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), SP_EPROTO);
	assert_non_null(strstr(why, "compressed"));
	e2b_env_done(&ps);

	len = 0;
	put_env(buf, &len, 0x80, "{}");
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), SP_EPROTO);
	assert_non_null(strstr(why, "unknown flags"));
	e2b_env_done(&ps);

	/* A JSON error body where a stream was expected: '{' is not a flag byte. */
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, "{\"code\":502}", 12, frame_cb, &f, &why), SP_EPROTO);
	assert_int_equal(f.n, 0);
	e2b_env_done(&ps);
}

static void
test_env_truncated_and_no_end(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	char buf[1024];
	size_t len = sample_stream(buf);

	/* Cut inside the data envelope (the emulator's "truncated"). */
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, 40, frame_cb, &f, &why), 0);
	assert_int_equal(e2b_env_finish(&ps, &why), SP_EPROTO);
	assert_non_null(strstr(why, "truncated"));
	e2b_env_done(&ps);

	/* Cut inside a header. */
	memset(&f, 0, sizeof(f));
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, 3, frame_cb, &f, &why), 0);
	assert_int_equal(e2b_env_finish(&ps, &why), SP_EPROTO);
	e2b_env_done(&ps);

	/* Whole frames, but the end-of-stream envelope never came. */
	memset(&f, 0, sizeof(f));
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len - 7, frame_cb, &f, &why), 0);
	assert_int_equal(f.n, 4);
	assert_int_equal(e2b_env_finish(&ps, &why), SP_EUNAVAIL);
	assert_non_null(strstr(why, "without an end-of-stream"));
	e2b_env_done(&ps);
}

static void
test_env_after_end_and_abort(void **state)
{
	struct e2b_env_parser ps;
	struct frames f = { 0 };
	const char *why = NULL;
	char buf[1024];
	size_t len = sample_stream(buf);

	put_env(buf, &len, 0, "{}");
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), SP_EPROTO);
	assert_non_null(strstr(why, "after the end"));
	e2b_env_done(&ps);

	/* A callback's error stops the feed at once and comes back as is. */
	memset(&f, 0, sizeof(f));
	f.stop_at = 2;
	e2b_env_init(&ps, E2B_MAX_FRAME);
	assert_int_equal(e2b_env_feed(&ps, buf, len, frame_cb, &f, &why), -77);
	assert_int_equal(f.n, 2);
	e2b_env_done(&ps);
}

static void
test_env_wrap(void **state)
{
	size_t n;
	char *b = e2b_env_wrap("{\"x\":1}", 7, &n);

	assert_int_equal(n, 12);
	assert_int_equal(b[0], 0);
	assert_int_equal(b[4], 7);
	assert_memory_equal(b + 5, "{\"x\":1}", 7);
	free(b);
}

/* ---------------------------------------------------------------- events */

static void
parse_ok(const char *json, struct e2b_event *ev)
{
	const char *why = NULL;

	assert_int_equal(e2b_event_parse(json, strlen(json), ev, &why), 0);
}

static void
parse_bad(const char *json, const char *want)
{
	struct e2b_event ev;
	const char *why = NULL;

	assert_int_equal(e2b_event_parse(json, strlen(json), &ev, &why), SP_EPROTO);
	assert_non_null(why);
	assert_non_null(strstr(why, want));
	assert_null(ev.data);
}

static void
test_events(void **state)
{
	struct e2b_event ev;

	parse_ok("{\"event\":{\"start\":{\"pid\":1234}}}", &ev);
	assert_int_equal(ev.type, E2B_EV_START);
	assert_int_equal(ev.pid, 1234);
	parse_ok("{\"event\":{\"start\":{\"pid\":\"77\"}}}", &ev);	/* int64 as string */
	assert_int_equal(ev.pid, 77);

	parse_ok("{\"event\":{\"data\":{\"stdout\":\"aGVsbG8K\"}}}", &ev);
	assert_int_equal(ev.type, E2B_EV_DATA);
	assert_int_equal(ev.fd, 1);
	assert_int_equal(ev.data_len, 6);
	assert_memory_equal(ev.data, "hello\n", 6);
	e2b_event_free(&ev);
	parse_ok("{\"event\":{\"data\":{\"stderr\":\"AAEC\"}}}", &ev);
	assert_int_equal(ev.fd, 2);
	assert_int_equal(ev.data_len, 3);
	assert_int_equal(ev.data[2], 2);
	e2b_event_free(&ev);
	parse_ok("{\"event\":{\"data\":{\"stdout\":\"\"}}}", &ev);
	assert_int_equal(ev.data_len, 0);
	e2b_event_free(&ev);

	parse_ok("{\"event\":{\"keepalive\":{}}}", &ev);
	assert_int_equal(ev.type, E2B_EV_KEEPALIVE);

	/* proto3 omits zero: no exitCode means 0. */
	parse_ok("{\"event\":{\"end\":{\"exited\":true,\"status\":\"exit status 0\"}}}", &ev);
	assert_int_equal(ev.type, E2B_EV_END);
	assert_int_equal(ev.exit_code, 0);
	assert_false(ev.signaled);
	parse_ok("{\"event\":{\"end\":{\"exitCode\":3,\"exited\":true}}}", &ev);
	assert_int_equal(ev.exit_code, 3);
	parse_ok("{\"event\":{\"end\":{\"exitCode\":-1,\"status\":\"signal: killed\"}}}", &ev);
	assert_int_equal(ev.exit_code, 137);
	assert_true(ev.signaled);
	parse_ok("{\"event\":{\"end\":{\"exitCode\":-1,\"status\":\"signal: terminated\"}}}", &ev);
	assert_int_equal(ev.exit_code, 143);

	parse_bad("{\"event\": {\"data\": {\"stdout\": !!not json", "not a JSON object");
	parse_bad("[1,2]", "not a JSON object");
	parse_bad("{\"result\":{}}", "without an \"event\"");
	parse_bad("{\"event\":{\"start\":{}}}", "pid");
	parse_bad("{\"event\":{\"start\":{\"pid\":-4}}}", "pid");
	parse_bad("{\"event\":{\"data\":{\"stdout\":\"@@@@\"}}}", "base64");
	parse_bad("{\"event\":{\"data\":{\"stdout\":5}}}", "data event without");
	parse_bad("{\"event\":{\"end\":{\"exitCode\":\"x\"}}}", "exitCode");
	parse_bad("{\"event\":{\"teleport\":{}}}", "unknown event");
}

static void
test_eos(void **state)
{
	char d[256];

	assert_int_equal(e2b_eos_parse("{}", 2, d, sizeof(d)), 0);
	assert_int_equal(e2b_eos_parse("{\"metadata\":{}}", 15, d, sizeof(d)), 0);
	const char *dl = "{\"error\":{\"code\":\"deadline_exceeded\","
	    "\"message\":\"context deadline exceeded\"}}";
	assert_int_equal(e2b_eos_parse(dl, strlen(dl), d, sizeof(d)), SP_ETIMEDOUT);
	assert_string_equal(d, "deadline_exceeded: context deadline exceeded");
	const char *nf = "{\"error\":{\"code\":\"not_found\",\"message\":\"process gone\"}}";
	assert_int_equal(e2b_eos_parse(nf, strlen(nf), d, sizeof(d)), SP_ENOTFOUND);
	const char *in = "{\"error\":{\"code\":\"internal\",\"message\":\"exec: \\\"nope\\\": "
	    "executable file not found in $PATH\"}}";
	assert_int_equal(e2b_eos_parse(in, strlen(in), d, sizeof(d)), SP_EPROVIDER);
	assert_non_null(strstr(d, "executable file not found"));
	assert_int_equal(e2b_eos_parse("nope", 4, d, sizeof(d)), SP_EPROTO);
}

static void
test_http_errors(void **state)
{
	char d[256];
	const char *b;

	b = "{\"code\":401,\"message\":\"Invalid API key\"}";
	assert_int_equal(e2b_http_error(401, b, strlen(b), "create", d, sizeof(d)), SP_EPROVIDER);
	assert_non_null(strstr(d, "credentials refused"));
	b = "{\"code\":404,\"message\":\"sandbox \\\"x\\\" doesn't exist\"}";
	assert_int_equal(e2b_http_error(404, b, strlen(b), "get", d, sizeof(d)), SP_ENOTFOUND);
	b = "{\"code\":429,\"message\":\"Rate limit exceeded\"}";
	assert_int_equal(e2b_http_error(429, b, strlen(b), "create", d, sizeof(d)), SP_EUNAVAIL);
	assert_string_equal(d, "create: HTTP 429: Rate limit exceeded");
	b = "{\"code\":429,\"message\":\"you have reached the maximum number of concurrent E2B "
	    "sandboxes (20)\"}";
	assert_int_equal(e2b_http_error(429, b, strlen(b), "create", d, sizeof(d)), SP_ELIMIT);
	b = "{\"sandboxId\":\"abc\",\"message\":\"The sandbox was not found\",\"code\":502}";
	assert_int_equal(e2b_http_error(502, b, strlen(b), "exec", d, sizeof(d)), SP_ENOTFOUND);
	b = "<html>bad gateway</html>";
	assert_int_equal(e2b_http_error(502, b, strlen(b), "exec", d, sizeof(d)), SP_EUNAVAIL);
	assert_non_null(strstr(d, "(no message)"));
	b = "{\"code\":\"not_found\",\"message\":\"process with pid 9 not found\"}";
	assert_int_equal(e2b_http_error(404, b, strlen(b), "signal", d, sizeof(d)), SP_ENOTFOUND);
	assert_non_null(strstr(d, "HTTP 404 not_found"));
	assert_int_equal(e2b_http_error(500, "", 0, "kill", d, sizeof(d)), SP_EUNAVAIL);
	assert_int_equal(e2b_http_error(400, "{}", 2, "create", d, sizeof(d)), SP_EINVAL);
	assert_int_equal(e2b_http_error(507, "{}", 2, "upload", d, sizeof(d)), SP_ELIMIT);
	/* Control characters from the peer never reach a detail. */
	b = "{\"code\":500,\"message\":\"a\\nb\\u001bc\"}";
	e2b_http_error(500, b, strlen(b), "x", d, sizeof(d));
	assert_null(strchr(d, '\n'));
	assert_null(strchr(d, 0x1b));
}

static void
test_base64(void **state)
{
	const char *in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *out[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char enc[32], dec[32];

	for (size_t i = 0; i < 7; i++) {
		e2b_b64_encode(in[i], strlen(in[i]), enc);
		assert_string_equal(enc, out[i]);
		assert_int_equal(e2b_b64_decode(enc, strlen(enc), dec, sizeof(dec)),
				 (long)strlen(in[i]));
		assert_memory_equal(dec, in[i], strlen(in[i]));
	}
	assert_int_equal(e2b_b64_decode("Zm9vYg", 6, dec, sizeof(dec)), 4);	/* unpadded */
	assert_int_equal(e2b_b64_decode("Zm9v!", 5, dec, sizeof(dec)), -1);
	assert_int_equal(e2b_b64_decode("Z", 1, dec, sizeof(dec)), -1);
	assert_int_equal(e2b_b64_decode("Zm9vYmFy", 8, dec, 5), -1);		/* no room */
}

/* ---------------------------------------------------------------- retries */

static void
test_retry_classify(void **state)
{
	assert_int_equal(e2b_retry_classify(SP_EUNAVAIL, 0, NULL), E2B_RETRY_YES);
	assert_int_equal(e2b_retry_classify(SP_ETIMEDOUT, 0, NULL), E2B_RETRY_AMBIGUOUS);
	assert_int_equal(e2b_retry_classify(SP_EPROTO, 0, NULL), E2B_RETRY_AMBIGUOUS);
	assert_int_equal(e2b_retry_classify(SP_ECANCELED, 0, NULL), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(-E2BIG, 0, NULL), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 200, "{}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 201, "{}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 400, "{}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 401, "{}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 404, "{}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 429, "{\"message\":\"Rate limit exceeded\"}"),
			 E2B_RETRY_YES);
	assert_int_equal(e2b_retry_classify(0, 429, "{\"message\":\"maximum number of "
					    "concurrent E2B sandboxes\"}"), E2B_RETRY_NO);
	assert_int_equal(e2b_retry_classify(0, 503, "{}"), E2B_RETRY_YES);
	assert_int_equal(e2b_retry_classify(0, 500, "{}"), E2B_RETRY_AMBIGUOUS);
	assert_int_equal(e2b_retry_classify(0, 502, "{}"), E2B_RETRY_AMBIGUOUS);
	assert_int_equal(e2b_retry_classify(0, 504, "{}"), E2B_RETRY_AMBIGUOUS);
	assert_int_equal(e2b_retry_classify(0, 501, "{}"), E2B_RETRY_NO);
}

static void
test_retry_delay(void **state)
{
	struct e2b_retry_policy pol = {
		.max_retries = 5, .base_ms = 100, .cap_ms = 1000, .budget_ms = 10000,
	};
	uint64_t full;

	assert_int_equal(e2b_retry_delay(&pol, 0, 0, NULL, 0), -1);
	assert_int_equal(e2b_retry_delay(&pol, 6, 0, NULL, 0), -1);	/* past max_retries */
	/* Equal jitter: within [d/2, d] for d = base * 2^(attempt-1), capped. */
	for (unsigned a = 1; a <= 5; a++) {
		full = 100u << (a - 1);
		if (full > 1000)
			full = 1000;
		for (uint32_t rnd = 0; rnd < 3000; rnd += 7) {
			int64_t d = e2b_retry_delay(&pol, a, 0, NULL, rnd);

			assert_true(d >= (int64_t)(full / 2));
			assert_true(d <= (int64_t)full);
		}
		assert_int_equal(e2b_retry_delay(&pol, a, 0, NULL, 0), (int64_t)full / 2);
	}
	/* Retry-After (seconds) replaces the backoff, with at most 249 ms jitter. */
	assert_int_equal(e2b_retry_delay(&pol, 1, 0, "2", 0), 2000);
	assert_int_equal(e2b_retry_delay(&pol, 1, 0, "2", 249), 2249);
	assert_int_equal(e2b_retry_delay(&pol, 1, 0, "2", 250), 2000);
	/* An HTTP-date or garbage falls back to the backoff. */
	assert_true(e2b_retry_delay(&pol, 1, 0, "Wed, 21 Oct 2026 07:28:00 GMT", 0) <= 100);
	/* The budget: no retry that would start after it. */
	assert_int_equal(e2b_retry_delay(&pol, 1, 9000, "2", 0), -1);
	assert_int_equal(e2b_retry_delay(&pol, 1, 9950, NULL, 99), -1);
	assert_int_equal(e2b_retry_delay(&pol, 1, 9950, NULL, 0), 50);
	assert_int_equal(e2b_retry_delay(&pol, 1, 0, "99999999", 0), -1);
	pol.max_retries = 0;
	assert_int_equal(e2b_retry_delay(&pol, 1, 0, NULL, 0), -1);
}

static void
test_cost(void **state)
{
	/* The billing page's example: 8 vCPU + 4 GiB = $0.468 per hour. */
	double c = e2b_cost(3600, 8, 4096, 0.000014, 0.0000045);

	assert_true(c > 0.4679 && c < 0.4681);
	assert_true(e2b_cost(0, 8, 4096, 0.000014, 0.0000045) == 0);
	assert_true(e2b_cost(-5, 8, 4096, 0.000014, 0.0000045) == 0);
}

static int
parse_any(void *arg, unsigned flags, const char *json, size_t len)
{
	struct e2b_event ev;
	const char *why;
	char d[128];

	if (flags & E2B_ENV_END)
		(void)e2b_eos_parse(json, len, d, sizeof(d));
	else if (e2b_event_parse(json, len, &ev, &why) == 0)
		e2b_event_free(&ev);
	return 0;
}

/*
 * Random and mutated streams, split at random points: every feed ends in 0 or
 * a clean error and the parser never reads or allocates out of bounds (the
 * ASan build runs this too). A stand-in until a libFuzzer target exists.
 */
static void
test_env_random(void **state)
{
	struct e2b_env_parser ps;
	const char *why;
	char good[1024], buf[1024];
	size_t glen = sample_stream(good), len, off, n;
	uint64_t x = 0x9e3779b97f4a7c15u;
	unsigned ok = 0;
	int r;

	for (int it = 0; it < 5000; it++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		if (it % 2 == 0) {
			/* A valid stream with a few bytes flipped. */
			memcpy(buf, good, glen);
			len = glen;
			for (int k = 0; k < 1 + (int)(x % 4); k++)
				buf[(x >> (8 * k)) % len] ^= (char)(x >> (16 + k));
		} else {
			len = x % sizeof(buf);
			for (size_t i = 0; i < len; i++)
				buf[i] = (char)((x >> (i % 56)) + i * 31);
			/* Keep lengths small sometimes so whole frames form. */
			if (len > 5 && (x & 1))
				buf[1] = buf[2] = buf[3] = 0;
		}
		e2b_env_init(&ps, 4096);
		r = 0;
		for (off = 0; off < len && r == 0; off += n) {
			n = 1 + (x >> 3) % 64;
			if (n > len - off)
				n = len - off;
			r = e2b_env_feed(&ps, buf + off, n, parse_any, NULL, &why);
		}
		assert_true(r == 0 || r == SP_EPROTO);
		if (r == 0 && e2b_env_finish(&ps, &why) == 0)
			ok++;
		e2b_env_done(&ps);
	}
	assert_true(ok > 0);		/* some mutations leave a valid stream */
}

static void
test_envd_url(void **state)
{
	struct e2b e = { 0 };
	struct e2b_sbx sb = { .id = "abcdefghij0123456789" };
	char *u;

	e.domain = "e2b.app";
	e.envd_url = "https://{port}-{sandbox}.{domain}";
	u = e2b_envd_url(&e, &sb, "/process.Process/Start");
	assert_string_equal(u, "https://49983-abcdefghij0123456789.e2b.app/process.Process/Start");
	free(u);
	/* The API's domain wins over the configured one. */
	sb.domain = "eu.e2b.dev";
	u = e2b_envd_url(&e, &sb, "/files?path=/x");
	assert_string_equal(u, "https://49983-abcdefghij0123456789.eu.e2b.dev/files?path=/x");
	free(u);
	/* Headers mode: a fixed URL, trailing slashes dropped. */
	e.envd_url = "http://127.0.0.1:4000//";
	u = e2b_envd_url(&e, &sb, "/health");
	assert_string_equal(u, "http://127.0.0.1:4000/health");
	free(u);
	/* Any number of placeholders fits (ASan watches the buffer). */
	e.envd_url = "http://{sandbox}{sandbox}{sandbox}{domain}{domain}{port}{port}{x}";
	u = e2b_envd_url(&e, &sb, "");
	assert_string_equal(u, "http://abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789"
			    "eu.e2b.deveu.e2b.dev4998349983{x}");
	free(u);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_whole_stream),
		cmocka_unit_test(test_env_split_every_byte),
		cmocka_unit_test(test_env_huge_frame),
		cmocka_unit_test(test_env_bad_flags),
		cmocka_unit_test(test_env_truncated_and_no_end),
		cmocka_unit_test(test_env_after_end_and_abort),
		cmocka_unit_test(test_env_wrap),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_eos),
		cmocka_unit_test(test_http_errors),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_retry_classify),
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_cost),
		cmocka_unit_test(test_envd_url),
		cmocka_unit_test(test_env_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

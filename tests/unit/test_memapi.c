/*
 * memapi over a real control socket: a client thread speaks HTTP with
 * libcurl over the Unix socket while the main thread runs the loop with ctl
 * and memory. Covers every route, the status codes of bad input (with
 * nothing stored), the tenant header, and tenant isolation end to end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include <sandpit/error.h>

#include "ctl.h"
#include "httpc.h"
#include "memapi.h"
#include "memory.h"
#include "memtest.h"

#define MAX_CALLS 64

struct call {
	const char *method;
	char path[160];
	const char *tenant;		/* NULL: no header */
	char *body;			/* owned */
	long status;
	json_t *resp;
};

struct fx {
	struct memtest mt;
	struct ctl *ctl;
	char sock[160];
	uv_async_t done;
	pthread_t thr;
	void (*script)(struct fx *f);
	char failure[512];
	/* Values carried between calls of a script. */
	char id_a[48];
	int closed;
	/* With the HTTP embedder. */
	bool http;
	struct fake_emb emb;
	struct sp_httpc *httpc;
};

static size_t
on_data(char *p, size_t sz, size_t n, void *arg)
{
	char **buf = arg;
	size_t old = *buf ? strlen(*buf) : 0;

	*buf = realloc(*buf, old + sz * n + 1);
	memcpy(*buf + old, p, sz * n);
	(*buf)[old + sz * n] = '\0';
	return sz * n;
}

/* One request from the client thread; returns the status, *resp the JSON. */
static long
req(struct fx *f, const char *method, const char *tenant, const char *path, const char *body,
    json_t **resp)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char url[256], hdr[128], *out = NULL;
	long status = 0;

	snprintf(url, sizeof(url), "http://sandpit%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, f->sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (tenant != NULL) {
		snprintf(hdr, sizeof(hdr), "X-Sandpit-Tenant: %s", tenant);
		h = curl_slist_append(h, hdr);
	}
	if (body != NULL) {
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (resp != NULL)
		*resp = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return status;
}

/* Record the first failure; the main thread asserts after the loop ends. */
#define CHECK(f, cond) do { \
	if (!(cond) && (f)->failure[0] == '\0') \
		snprintf((f)->failure, sizeof((f)->failure), "%s:%d: %s", __FILE__, __LINE__, #cond); \
} while (0)

static const char *
jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static const char *
errcode(json_t *o)
{
	return jstr(json_object_get(o, "error"), "code");
}

static void
script_routes(struct fx *f)
{
	json_t *r = NULL;
	char path[160];
	long st;

	st = req(f, "POST", "alpha", "/v1/memories", "{\"title\":\"Pin python dependencies\","
		 "\"content\":\"Write exact versions into requirements.txt\",\"tags\":[\"python\"],"
		 "\"outcome\":\"success\"}", &r);
	CHECK(f, st == 201);
	snprintf(f->id_a, sizeof(f->id_a), "%s", jstr(r, "id"));
	CHECK(f, strncmp(f->id_a, "mem_", 4) == 0);
	json_decref(r);

	st = req(f, "POST", "alpha", "/v1/memories", "{\"items\":[{\"title\":\"a\",\"content\":"
		 "\"docker layer cache order\"},{\"title\":\"b\",\"content\":\"pod memory limit\"}]}",
		 &r);
	CHECK(f, st == 201);
	CHECK(f, json_array_size(json_object_get(r, "items")) == 2);
	json_decref(r);

	st = req(f, "POST", "alpha", "/v1/memories/search", "{\"query\":\"lock python package "
		 "versions\",\"k\":2}", &r);
	CHECK(f, st == 200);
	CHECK(f, json_array_size(json_object_get(r, "results")) == 2);
	CHECK(f, strcmp(jstr(json_array_get(json_object_get(r, "results"), 0), "id"), f->id_a) == 0);
	CHECK(f, json_is_object(json_object_get(json_array_get(json_object_get(r, "results"), 0),
						"parts")));
	json_decref(r);

	snprintf(path, sizeof(path), "/v1/memories/%s", f->id_a);
	st = req(f, "GET", "alpha", path, NULL, &r);
	CHECK(f, st == 200);
	CHECK(f, strcmp(jstr(r, "title"), "Pin python dependencies") == 0);
	json_decref(r);

	/* Tenant isolation through the API: beta sees nothing of alpha's. */
	st = req(f, "GET", "beta", path, NULL, &r);
	CHECK(f, st == 404);
	CHECK(f, strcmp(errcode(r), "not_found") == 0);
	json_decref(r);
	st = req(f, "DELETE", "beta", path, NULL, &r);
	CHECK(f, st == 404);
	json_decref(r);
	st = req(f, "POST", "beta", "/v1/memories/search", "{\"query\":\"python dependencies "
		 "requirements\",\"k\":20,\"hybrid\":true,\"min_confidence\":0}", &r);
	CHECK(f, st == 200);
	CHECK(f, json_array_size(json_object_get(r, "results")) == 0);
	json_decref(r);
	{
		char body[128];

		snprintf(body, sizeof(body), "{\"ids\":[\"%s\"],\"outcome\":\"failure\"}", f->id_a);
		st = req(f, "POST", "beta", "/v1/memories/feedback", body, &r);
		CHECK(f, st == 200);
		CHECK(f, json_integer_value(json_object_get(r, "updated")) == 0);
		json_decref(r);
		st = req(f, "POST", "alpha", "/v1/memories/feedback", body, &r);
		CHECK(f, st == 200);
		CHECK(f, json_integer_value(json_object_get(r, "updated")) == 1);
		json_decref(r);
	}
	/* No header: the "default" tenant, which has nothing. */
	st = req(f, "GET", NULL, path, NULL, &r);
	CHECK(f, st == 404);
	json_decref(r);

	st = req(f, "POST", "alpha", "/v1/memories/consolidate", NULL, &r);
	CHECK(f, st == 200);
	CHECK(f, json_integer_value(json_object_get(r, "examined")) == 3);
	json_decref(r);
	st = req(f, "POST", "beta", "/v1/memories/consolidate", "{}", &r);
	CHECK(f, st == 200);
	CHECK(f, json_integer_value(json_object_get(r, "examined")) == 0);
	json_decref(r);

	st = req(f, "POST", "alpha", "/v1/trajectories", "{\"task_id\":\"t1\",\"trajectory\":"
		 "[{\"step\":\"build\"}],\"outcome\":\"success\"}", &r);
	CHECK(f, st == 201);
	CHECK(f, strncmp(jstr(r, "id"), "traj_", 5) == 0);
	json_decref(r);

	st = req(f, "DELETE", "alpha", path, NULL, &r);
	CHECK(f, st == 200);
	json_decref(r);
	st = req(f, "GET", "alpha", path, NULL, &r);
	CHECK(f, st == 404);
	json_decref(r);
}

static void
script_bad_input(struct fx *f)
{
	static const struct {
		const char *path, *body;
		long status;
	} cases[] = {
		{ "/v1/memories", "{\"title\":", 400 },			/* malformed JSON */
		{ "/v1/memories", "{\"content\":\"x\"}", 400 },
		{ "/v1/memories", "{\"title\":\"t\",\"content\":\"x\",\"extra\":1}", 400 },
		{ "/v1/memories", "{\"items\":[{\"title\":\"t\",\"content\":\"x\"},{\"title\":\"t\","
		  "\"content\":\"x\"},{\"title\":\"t\",\"content\":\"x\"}]}", 413 },
		{ "/v1/memories", "{\"title\":\"t\",\"content\":\"x\",\"model\":\"m\",\"vector\":[1]}",
		  400 },
		{ "/v1/memories/search", "{\"query\":\"x\",\"k\":21}", 400 },
		{ "/v1/memories/search", "{\"query\":\"x\",\"k\":0}", 400 },
		{ "/v1/memories/search", "{\"query\":\"x\",\"where\":{}}", 400 },
		{ "/v1/memories/search", "[1,2]", 400 },
		{ "/v1/memories/feedback", "{\"ids\":[\"a\"],\"outcome\":\"meh\"}", 400 },
		{ "/v1/memories/consolidate", "{\"all\":true}", 400 },
		{ "/v1/trajectories", "{}", 400 },
	};
	char big[20100];
	json_t *r;
	long st;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		st = req(f, "POST", "alpha", cases[i].path, cases[i].body, &r);
		if (st != cases[i].status && f->failure[0] == '\0')
			snprintf(f->failure, sizeof(f->failure), "case %zu (%s %s): status %ld",
				 i, cases[i].path, cases[i].body, st);
		CHECK(f, r != NULL && errcode(r)[0] != '\0');
		json_decref(r);
	}
	/* Oversized content: 413. */
	snprintf(big, sizeof(big), "{\"title\":\"t\",\"content\":\"%0*d\"}", 20000, 0);
	st = req(f, "POST", "alpha", "/v1/memories", big, &r);
	CHECK(f, st == 413);
	CHECK(f, strcmp(errcode(r), "too_large") == 0);
	json_decref(r);
	/* An invalid tenant name: 400. */
	st = req(f, "POST", "Not A Tenant!", "/v1/memories", "{\"title\":\"t\",\"content\":\"x\"}",
		 &r);
	CHECK(f, st == 400);
	json_decref(r);
	/* Nothing stored by any of it. */
	st = req(f, "POST", "alpha", "/v1/memories/search", "{\"query\":\"t x\",\"k\":20,"
		 "\"min_confidence\":0}", &r);
	CHECK(f, st == 200);
	CHECK(f, json_array_size(json_object_get(r, "results")) == 0);
	json_decref(r);
}

static void *
client_main(void *arg)
{
	struct fx *f = arg;

	f->script(f);
	uv_async_send(&f->done);
	return NULL;
}

static void
on_ctl_closed(void *arg)
{
	*(int *)arg = 1;
}

static void
on_client_done(uv_async_t *a)
{
	struct fx *f = a->data;

	uv_close((uv_handle_t *)a, NULL);
	ctl_close(f->ctl, on_ctl_closed, &f->closed);
}

static void
httpc_closed(void *arg)
{
	*(int *)arg = 1;
}

static void
run_script_http(void (*script)(struct fx *f), bool http)
{
	struct fx f = { 0 };
	char url[128];
	struct memory_config cfg;
	struct ctl_limits lim = { .max_clients = 16, .max_body = 1 << 20, .max_header = 8192,
				  .max_stream_queue = 1 << 20 };
	memory_config_defaults(&cfg);
	cfg.max_batch = 2;
	cfg.consolidate_every = 0;
	f.http = http;
	if (http) {
		strcpy(f.mt.dir, "/tmp/sp-test-mem-XXXXXX");
		assert_non_null(mkdtemp(f.mt.dir));
		snprintf(f.mt.path, sizeof(f.mt.path), "%s/sandpit.db", f.mt.dir);
		assert_int_equal(uv_loop_init(&f.mt.loop), 0);
		fake_emb_start(&f.emb, &f.mt.loop, url, sizeof(url));
		assert_int_equal(httpc_new(&f.mt.loop, &f.httpc), 0);
		cfg.embedder_url = url;
		cfg.embedder_model = "fake-16";
		cfg.httpc = f.httpc;
	}
	memtest_open(&f.mt, &cfg);
	snprintf(f.sock, sizeof(f.sock), "%s/ctl.sock", f.mt.dir);
	assert_int_equal(ctl_new(&f.mt.loop, &lim, &f.ctl), 0);
	memapi_register(f.ctl, f.mt.mem);
	assert_int_equal(ctl_listen(f.ctl, f.sock, (gid_t)-1), 0);
	f.script = script;
	assert_int_equal(uv_async_init(&f.mt.loop, &f.done, on_client_done), 0);
	f.done.data = &f;
	assert_int_equal(pthread_create(&f.thr, NULL, client_main, &f), 0);
	/* Runs until the client is done, which closes ctl. */
	while (!f.closed)
		uv_run(&f.mt.loop, UV_RUN_ONCE);
	pthread_join(f.thr, NULL);
	if (http) {
		int closed = 0;

		memtest_close(&f.mt);		/* before the HTTP client it borrows */
		httpc_close(f.httpc, httpc_closed, &closed);
		while (!closed)
			uv_run(&f.mt.loop, UV_RUN_ONCE);
		fake_emb_stop(&f.emb);
		uv_run(&f.mt.loop, UV_RUN_DEFAULT);
	}
	if (f.failure[0] != '\0')
		fail_msg("%s", f.failure);
	unlink(f.sock);
	memtest_cleanup(&f.mt);
}

static void
run_script(void (*script)(struct fx *f))
{
	run_script_http(script, false);
}

/* The routes with the HTTP embedder: text goes through the remote model. */
static void
script_http(struct fx *f)
{
	json_t *r = NULL;
	long st;

	st = req(f, "POST", "alpha", "/v1/memories", "{\"title\":\"Pin python dependencies\","
		 "\"content\":\"Write exact versions into requirements.txt\"}", &r);
	CHECK(f, st == 201);
	CHECK(f, strcmp(jstr(r, "model"), "fake-16") == 0);
	snprintf(f->id_a, sizeof(f->id_a), "%s", jstr(r, "id"));
	json_decref(r);
	st = req(f, "POST", "alpha", "/v1/memories/search", "{\"query\":\"python requirements "
		 "versions\",\"k\":1}", &r);
	CHECK(f, st == 200);
	CHECK(f, strcmp(jstr(json_array_get(json_object_get(r, "results"), 0), "id"),
			f->id_a) == 0);
	json_decref(r);
	st = req(f, "POST", "alpha", "/v1/memories/search", "{\"query\":\"x\",\"k\":0}", &r);
	CHECK(f, st == 400);
	json_decref(r);
	/* Client vectors skip the embedder (the synchronous path). */
	st = req(f, "POST", "alpha", "/v1/memories", "{\"title\":\"v\",\"content\":\"v\","
		 "\"model\":\"own\",\"vector\":[1,0,0,0,0,0,0,0]}", &r);
	CHECK(f, st == 201);
	json_decref(r);
	/* The embedder fails: 503, nothing stored. */
	f->emb.mode = 1;
	st = req(f, "POST", "alpha", "/v1/memories", "{\"title\":\"t\",\"content\":\"c\"}", &r);
	CHECK(f, st == 503);
	CHECK(f, strcmp(errcode(r), "embedder_unavailable") == 0);
	json_decref(r);
}

static void
test_http_embedder_routes(void **state)
{
	run_script_http(script_http, true);
}

static void
test_routes(void **state)
{
	run_script(script_routes);
}

static void
test_bad_input(void **state)
{
	run_script(script_bad_input);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_http_embedder_routes),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

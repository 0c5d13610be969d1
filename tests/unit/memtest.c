/* Support for the memory tests: temporary database, loop and memory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "embed.h"
#include "memory.h"
#include "memtest.h"
#include "store.h"

void
memtest_open(struct memtest *t, const struct memory_config *cfg)
{
	struct memory_config def;

	if (t->dir[0] == '\0') {
		strcpy(t->dir, "/tmp/sp-test-mem-XXXXXX");
		assert_non_null(mkdtemp(t->dir));
		snprintf(t->path, sizeof(t->path), "%s/sandpit.db", t->dir);
		assert_int_equal(uv_loop_init(&t->loop), 0);
	}
	if (cfg == NULL) {
		memory_config_defaults(&def);
		cfg = &def;
	}
	assert_int_equal(store_open(t->path, &t->store), 0);
	assert_int_equal(memory_open(&t->loop, t->store, cfg, &t->mem), 0);
}

static void
memtest_closed(void *arg)
{
	*(int *)arg = 1;
}

void
memtest_close(struct memtest *t)
{
	int done = 0;

	memory_close(t->mem, memtest_closed, &done);
	while (!done)
		uv_run(&t->loop, UV_RUN_ONCE);
	t->mem = NULL;
	store_close(t->store);
	t->store = NULL;
}

void
memtest_cleanup(struct memtest *t)
{
	char p[160];

	if (t->mem != NULL)
		memtest_close(t);
	unlink(t->path);
	snprintf(p, sizeof(p), "%s-wal", t->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", t->path);
	unlink(p);
	rmdir(t->dir);
	assert_int_equal(uv_loop_close(&t->loop), 0);
}

json_t *
memtest_json(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (j == NULL)
		fail_msg("bad test JSON: %s: %s", e.text, text);
	return j;
}

const char *
memtest_add(struct memtest *t, const char *tenant, const char *json)
{
	static char ids[8][48];
	static int slot;
	json_t *body = memtest_json(json), *ret = NULL;
	char err[256] = "";
	int r = memory_add(t->mem, tenant, body, &ret, err, sizeof(err));

	if (r != 0)
		fail_msg("memory_add %d: %s", r, err);
	slot = (slot + 1) % 8;
	snprintf(ids[slot], sizeof(ids[slot]), "%s", json_string_value(json_object_get(ret, "id")));
	json_decref(ret);
	json_decref(body);
	return ids[slot];
}

/* --- a loopback OpenAI-compatible embedder for the HTTP embedder tests --- */


static void
fake_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct fake_emb *f = h->data;

	b->base = f->buf + f->len;
	b->len = sizeof(f->buf) - f->len - 1;
}

static void
fake_written(uv_write_t *w, int status)
{
	free(w->data);
	free(w);
}

static void
fake_reply(struct fake_emb *f, const char *body, int code)
{
	uv_write_t *w = malloc(sizeof(*w));
	char *out;
	uv_buf_t b;
	int n = asprintf(&out, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s", code, strlen(body), body);

	assert_true(n > 0);
	w->data = out;
	b = uv_buf_init(out, (unsigned)n);
	uv_write(w, (uv_stream_t *)&f->conn, &b, 1, fake_written);
}

static void
fake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct fake_emb *f = s->data;
	char *hdr_end, *cl;
	size_t need;

	if (nread < 0) {
		if (f->conn_open)
			uv_close((uv_handle_t *)&f->conn, NULL);
		f->conn_open = false;
		return;
	}
	f->len += (size_t)nread;
	f->buf[f->len] = '\0';
	if ((hdr_end = strstr(f->buf, "\r\n\r\n")) == NULL)
		return;
	cl = strcasestr(f->buf, "Content-Length:");
	need = (size_t)(hdr_end + 4 - f->buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
	if (f->len < need)
		return;
	f->requests++;
	if (getenv("FAKE_DEBUG"))
		fprintf(stderr, "fake got: [%s]\n", f->buf);
	if (f->mode == 1) {
		fake_reply(f, "{\"error\":\"boom\"}", 500);
	} else if (f->mode == 0) {
		json_t *req = json_loads(hdr_end + 4, 0, NULL), *in = json_object_get(req, "input");
		json_t *data = json_array(), *t;
		size_t i;
		char *body;

		assert_string_equal(json_string_value(json_object_get(req, "model")), "fake-16");
		json_array_foreach(in, i, t) {
			float v[16];
			json_t *e = json_array();

			embed_hash(json_string_value(t), json_string_length(t), v, 16);
			for (int d = 0; d < 16; d++)
				json_array_append_new(e, json_real(v[d]));
			json_array_append_new(data, json_pack("{sisoss}", "index", (int)i,
							      "embedding", e, "object", "embedding"));
		}
		{
			json_t *root = json_pack("{so}", "data", data);

			body = json_dumps(root, JSON_COMPACT);
			json_decref(root);
		}
		fake_reply(f, body, 200);
		free(body);
		json_decref(req);
	}
	f->len = 0;
}

static void
fake_accept(uv_stream_t *s, int status)
{
	struct fake_emb *f = s->data;

	assert_int_equal(status, 0);
	if (f->conn_open) {
		/* One connection at a time is all libcurl needs here; refuse extras. */
		uv_tcp_t *extra = malloc(sizeof(*extra));

		uv_tcp_init(s->loop, extra);
		uv_accept(s, (uv_stream_t *)extra);
		uv_close((uv_handle_t *)extra, (uv_close_cb)free);
		return;
	}
	uv_tcp_init(s->loop, &f->conn);
	f->conn.data = f;
	f->conn_open = true;
	f->len = 0;
	assert_int_equal(uv_accept(s, (uv_stream_t *)&f->conn), 0);
	uv_read_start((uv_stream_t *)&f->conn, fake_alloc, fake_read);
}


void
fake_emb_start(struct fake_emb *f, uv_loop_t *loop, char *url, size_t urllen)
{
	struct sockaddr_in addr;
	struct sockaddr_storage bound;
	int blen = sizeof(bound);

	memset(f, 0, sizeof(*f));
	uv_tcp_init(loop, &f->srv);
	f->srv.data = f;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	assert_int_equal(uv_tcp_bind(&f->srv, (struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&f->srv, 8, fake_accept), 0);
	uv_tcp_getsockname(&f->srv, (struct sockaddr *)&bound, &blen);
	f->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
	snprintf(url, urllen, "http://127.0.0.1:%d/v1/embeddings", f->port);
}

void
fake_emb_stop(struct fake_emb *f)
{
	if (f->conn_open)
		uv_close((uv_handle_t *)&f->conn, NULL);
	f->conn_open = false;
	uv_close((uv_handle_t *)&f->srv, NULL);
}

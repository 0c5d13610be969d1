/* Helpers shared by the memory tests: a temporary database and a loop. */
#ifndef SANDPIT_TEST_MEMTEST_H
#define SANDPIT_TEST_MEMTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <uv.h>

struct store;
struct memory;
struct memory_config;

struct memtest {
	char dir[64];
	char path[128];
	uv_loop_t loop;
	struct store *store;
	struct memory *mem;
};

/* mkdtemp, loop init, store + memory open (cfg NULL: defaults). Asserts. */
void memtest_open(struct memtest *t, const struct memory_config *cfg);
/* Close memory (running the loop until its callback) and store; keeps files. */
void memtest_close(struct memtest *t);
/* Remove the files and the directory; asserts uv_loop_close() == 0. */
void memtest_cleanup(struct memtest *t);
/* Parse JSON text (asserts it parses). */
json_t *memtest_json(const char *text);
/* Add one item; asserts success; returns its id (static buffer per call slot). */
const char *memtest_add(struct memtest *t, const char *tenant, const char *json);


/*
 * A loopback OpenAI-compatible embedder on 127.0.0.1:0 answering 16-dim
 * hashing vectors for model "fake-16"; mode 1 answers 500, mode 2 never answers.
 */
struct fake_emb {
	uv_tcp_t srv;
	uv_tcp_t conn;
	bool conn_open;
	char buf[65536];
	size_t len;
	int requests;
	int mode;			/* 0 answer, 1 HTTP 500, 2 never answer */
	int port;
};

void fake_emb_start(struct fake_emb *f, uv_loop_t *loop, char *url, size_t urllen);
/* Close its handles (run the loop afterwards). */
void fake_emb_stop(struct fake_emb *f);

#endif

/* Helpers shared by the memory tests: a temporary database and a loop. */
#ifndef SANDPIT_TEST_MEMTEST_H
#define SANDPIT_TEST_MEMTEST_H

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

#endif

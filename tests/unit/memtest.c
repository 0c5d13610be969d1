/* Support for the memory tests: temporary database, loop and memory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

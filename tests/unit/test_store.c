/*
 * store: migrations (once, idempotent, per component), meta, sandbox rows,
 * persistence across reopen, and clean failure on a corrupt file. Every test
 * works on a fresh temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "store.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/sp-test-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/sandpit.db", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char p[160];

	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

static int64_t
query_int(struct store *s, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void
test_open_wal_and_mode(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	struct stat sb;
	sqlite3_stmt *st;

	assert_int_equal(store_open(f->path, &s), 0);
	assert_non_null(s);
	assert_int_equal(sqlite3_prepare_v2(store_db(s), "PRAGMA journal_mode", -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	assert_int_equal(query_int(s, "PRAGMA foreign_keys"), 1);
	assert_int_equal(query_int(s, "PRAGMA synchronous"), 1);	/* NORMAL */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	store_close(s);
}

static void
test_migrations_once(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;

	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='core'"), 1);
	assert_int_equal(query_int(s, "SELECT count(*) FROM sqlite_master WHERE name='sandboxes'"), 1);
	assert_int_equal(query_int(s, "SELECT count(*) FROM sqlite_master "
				      "WHERE type='index' AND tbl_name='sandboxes' AND sql IS NOT NULL"), 2);
	store_close(s);

	/* Reopen: the migration would fail (CREATE TABLE meta exists) if re-run. */
	s = NULL;
	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(query_int(s, "SELECT count(*) FROM schema_version"), 1);
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='core'"), 1);
	store_close(s);
}

static void
test_component_migrations(void **state)
{
	struct fixture *f = *state;
	static const char *const v1[] = { "CREATE TABLE mem(x INTEGER)" };
	static const char *const v2[] = {
		"CREATE TABLE mem(x INTEGER)",
		"ALTER TABLE mem ADD COLUMN y TEXT",
	};
	static const char *const bad[] = {
		"CREATE TABLE mem(x INTEGER)",
		"ALTER TABLE mem ADD COLUMN y TEXT",
		"CREATE TABLE half(a INTEGER); THIS IS NOT SQL",
	};
	struct store *s = NULL;

	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(store_migrate(s, "memory", v1, 1), 0);
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='memory'"), 1);
	assert_int_equal(store_migrate(s, "memory", v1, 1), 0);		/* idempotent */
	assert_int_equal(store_migrate(s, "memory", v2, 2), 0);		/* only step 2 runs */
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='memory'"), 2);
	assert_int_equal(query_int(s, "SELECT count(*) FROM pragma_table_info('mem')"), 2);
	/* A failing step rolls back whole: no table 'half', version stays 2. */
	assert_int_equal(store_migrate(s, "memory", bad, 3), SP_EDB);
	assert_non_null(strstr(store_errmsg(s), "memory 3"));
	assert_int_equal(query_int(s, "SELECT count(*) FROM sqlite_master WHERE name='half'"), 0);
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='memory'"), 2);
	/* A database newer than the code is refused. */
	assert_int_equal(store_migrate(s, "memory", v1, 1), SP_EDB);
	/* The core is untouched by another component. */
	assert_int_equal(query_int(s, "SELECT version FROM schema_version WHERE component='core'"), 1);
	store_close(s);
}

static void
test_meta(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char *v = NULL;

	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(store_meta_get(s, "instance", &v), -ENOENT);
	assert_null(v);
	assert_int_equal(store_meta_set(s, "instance", "abc"), 0);
	assert_int_equal(store_meta_get(s, "instance", &v), 0);
	assert_string_equal(v, "abc");
	free(v);
	assert_int_equal(store_meta_set(s, "instance", "def"), 0);
	assert_int_equal(store_meta_get(s, "instance", &v), 0);
	assert_string_equal(v, "def");
	free(v);
	store_close(s);
}

static void
fill(struct sandbox_row *r, const char *id, const char *tenant, const char *state, int64_t t)
{
	memset(r, 0, sizeof(*r));
	r->id = (char *)id;
	r->tenant = (char *)tenant;
	r->provider = (char *)"docker";
	r->state = (char *)state;
	r->spec_json = (char *)"{\"memory\":1}";
	r->spec_hash = (char *)"h1";
	r->created_ms = t;
	r->updated_ms = t;
}

static void
test_sandboxes(void **state)
{
	struct fixture *f = *state;
	struct sandbox_row r, got, *rows;
	struct store *s = NULL;
	size_t n;

	assert_int_equal(store_open(f->path, &s), 0);
	fill(&r, "sb-000000000001", "alice", "creating", 1000);
	assert_int_equal(store_sandbox_insert(s, &r), 0);
	/* The same id twice is a constraint error, not a crash. */
	assert_int_equal(store_sandbox_insert(s, &r), SP_EDB);
	assert_non_null(strstr(store_errmsg(s), "UNIQUE"));
	fill(&r, "sb-000000000002", "bob", "running", 2000);
	assert_int_equal(store_sandbox_insert(s, &r), 0);
	fill(&r, "sb-000000000003", "alice", "destroyed", 3000);
	assert_int_equal(store_sandbox_insert(s, &r), 0);

	assert_int_equal(store_sandbox_get(s, "sb-000000000001", &got), 0);
	assert_string_equal(got.tenant, "alice");
	assert_string_equal(got.provider, "docker");
	assert_string_equal(got.state, "creating");
	assert_string_equal(got.spec_json, "{\"memory\":1}");
	assert_string_equal(got.spec_hash, "h1");
	assert_null(got.ref);
	assert_null(got.error);
	assert_int_equal(got.created_ms, 1000);
	store_sandbox_row_done(&got);

	memset(&got, 0x5a, sizeof(got));
	assert_int_equal(store_sandbox_get(s, "sb-nope", &got), SP_ENOTFOUND);

	fill(&r, "sb-000000000001", "alice", "exited", 1000);
	r.ref = (char *)"c0ffee";
	r.error = (char *)"oom";
	r.exit_code = 137;
	r.oom_killed = true;
	r.updated_ms = 5000;
	assert_int_equal(store_sandbox_update(s, &r), 0);
	assert_int_equal(store_sandbox_get(s, "sb-000000000001", &got), 0);
	assert_string_equal(got.ref, "c0ffee");
	assert_string_equal(got.state, "exited");
	assert_string_equal(got.error, "oom");
	assert_int_equal(got.exit_code, 137);
	assert_true(got.oom_killed);
	assert_int_equal(got.updated_ms, 5000);
	assert_int_equal(got.created_ms, 1000);
	store_sandbox_row_done(&got);

	fill(&r, "sb-absent", "alice", "exited", 1);
	assert_int_equal(store_sandbox_update(s, &r), SP_ENOTFOUND);

	assert_int_equal(store_sandbox_list(s, NULL, false, &rows, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(rows[0].id, "sb-000000000001");
	assert_string_equal(rows[2].id, "sb-000000000003");
	store_sandbox_rows_free(rows, n);

	assert_int_equal(store_sandbox_list(s, NULL, true, &rows, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].id, "sb-000000000001");
	assert_string_equal(rows[1].id, "sb-000000000002");
	store_sandbox_rows_free(rows, n);

	assert_int_equal(store_sandbox_list(s, "alice", false, &rows, &n), 0);
	assert_int_equal(n, 2);
	store_sandbox_rows_free(rows, n);

	assert_int_equal(store_sandbox_list(s, "alice", true, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].id, "sb-000000000001");
	store_sandbox_rows_free(rows, n);

	assert_int_equal(store_sandbox_list(s, "carol", false, &rows, &n), 0);
	assert_int_equal(n, 0);
	store_sandbox_rows_free(rows, n);
	store_close(s);
}

static void
test_reopen_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct sandbox_row r, got;
	struct store *s = NULL;
	char *v;

	assert_int_equal(store_open(f->path, &s), 0);
	fill(&r, "sb-00000000000a", "t", "running", 42);
	assert_int_equal(store_sandbox_insert(s, &r), 0);
	assert_int_equal(store_meta_set(s, "instance", "i-1"), 0);
	store_close(s);

	s = NULL;
	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(store_sandbox_get(s, "sb-00000000000a", &got), 0);
	assert_string_equal(got.state, "running");
	assert_int_equal(got.created_ms, 42);
	store_sandbox_row_done(&got);
	assert_int_equal(store_meta_get(s, "instance", &v), 0);
	assert_string_equal(v, "i-1");
	free(v);
	store_close(s);
}

static void
test_corrupt_file(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char junk[8192];
	size_t i;
	int fd;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(store_open(f->path, &s), SP_EDB);
	assert_null(s);
	{
		char err[256];

		assert_int_equal(store_open_err(f->path, &s, err, sizeof(err)), SP_EDB);
		assert_null(s);
		assert_non_null(strstr(err, "not a database"));
	}
}

/* As a user who may read but not write the file (root may write anything). */
static int
child_readonly(const char *path)
{
	struct store *s = NULL;
	char err[256];
	int r;

	if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
	    setresuid(65534, 65534, 65534) != 0)
		return 9;
	r = store_open_err(path, &s, err, sizeof(err));
	if (r != SP_EDB || s != NULL)
		return 10;
	if (strstr(err, "read-only") == NULL)
		return 11;
	return 0;
}

static void
test_readonly_file(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	pid_t pid;
	int st;

	if (geteuid() != 0)
		skip();		/* the child must become another user */
	assert_int_equal(store_open(f->path, &s), 0);
	assert_int_equal(store_meta_set(s, "k", "v"), 0);
	store_close(s);
	/* Readable by everyone, writable by root only; the directory too. */
	assert_int_equal(chmod(f->path, 0644), 0);
	assert_int_equal(chmod(f->dir, 0755), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_readonly(f->path));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
test_missing_dir(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char p[192];

	snprintf(p, sizeof(p), "%s/no/such/dir/db", f->dir);
	assert_int_equal(store_open(p, &s), -ENOENT);
	assert_null(s);
	{
		char err[256];

		assert_int_equal(store_open_err(p, &s, err, sizeof(err)), -ENOENT);
		assert_non_null(strstr(err, "No such file"));
	}
	assert_string_equal(store_errmsg(NULL), "no database");
	store_close(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_wal_and_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrations_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_component_migrations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sandboxes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The daemon's SQLite database: one connection in WAL mode, the versioned
 * migrations of each component, the meta table and the sandboxes table. It
 * owns the connection and its cached prepared statements; it never logs
 * (errors come back as SP_EDB with the SQLite message in store_errmsg()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <sandpit/error.h>

#include "store.h"
#include "xmalloc.h"

/* The core's own schema. Append new versions; never edit a released one. */
static const char *const store_core_migrations[] = {
	/* 1 */
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY NOT NULL,"
	"  value TEXT NOT NULL"
	");"
	"CREATE TABLE sandboxes ("
	"  id TEXT PRIMARY KEY NOT NULL,"
	"  tenant TEXT NOT NULL,"
	"  provider TEXT NOT NULL,"
	"  ref TEXT,"
	"  state TEXT NOT NULL,"
	"  spec_json TEXT NOT NULL,"
	"  spec_hash TEXT NOT NULL,"
	"  error TEXT,"
	"  exit_code INTEGER NOT NULL DEFAULT 0,"
	"  oom_killed INTEGER NOT NULL DEFAULT 0,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL"
	");"
	"CREATE INDEX sandboxes_tenant ON sandboxes(tenant);"
	"CREATE INDEX sandboxes_state ON sandboxes(state);",
};

enum store_stmt {
	ST_META_GET,
	ST_META_SET,
	ST_SB_INSERT,
	ST_SB_UPDATE,
	ST_SB_GET,
	ST_SB_LIST,
	ST__COUNT,
};

#define SB_COLUMNS \
	"id, tenant, provider, ref, state, spec_json, spec_hash, error, " \
	"exit_code, oom_killed, created_ms, updated_ms"

static const char *const store_sql[ST__COUNT] = {
	[ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[ST_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
			"ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[ST_SB_INSERT] = "INSERT INTO sandboxes(" SB_COLUMNS ") "
			 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[ST_SB_UPDATE] = "UPDATE sandboxes SET ref = ?2, state = ?3, error = ?4, "
			 "exit_code = ?5, oom_killed = ?6, updated_ms = ?7 WHERE id = ?1",
	[ST_SB_GET] = "SELECT " SB_COLUMNS " FROM sandboxes WHERE id = ?1",
	/* ?1 NULL matches every tenant; ?2 = 1 drops destroyed rows. */
	[ST_SB_LIST] = "SELECT " SB_COLUMNS " FROM sandboxes "
		       "WHERE (?1 IS NULL OR tenant = ?1) "
		       "AND (?2 = 0 OR state <> 'destroyed') "
		       "ORDER BY created_ms, id",
};

/* A bound on store_sandbox_list()'s result, so a runaway table cannot eat memory. */
#define STORE_LIST_MAX	100000

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[ST__COUNT];
	char errmsg[256];
};

static int
store_fail(struct store *s, const char *what)
{
	const char *msg = s->db ? sqlite3_errmsg(s->db) : "out of memory";

	snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, msg);
	return SP_EDB;
}

static int
store_exec(struct store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(s->errmsg, sizeof(s->errmsg), "%s",
			 msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return SP_EDB;
	}
	return 0;
}

/* The cached statement for k, reset and cleared, or NULL (s->errmsg set). */
static sqlite3_stmt *
store_stmt(struct store *s, enum store_stmt k)
{
	if (s->stmt[k] == NULL) {
		if (sqlite3_prepare_v3(s->db, store_sql[k], -1, SQLITE_PREPARE_PERSISTENT,
				       &s->stmt[k], NULL) != SQLITE_OK) {
			store_fail(s, "prepare");
			s->stmt[k] = NULL;
			return NULL;
		}
	}
	sqlite3_reset(s->stmt[k]);
	sqlite3_clear_bindings(s->stmt[k]);
	return s->stmt[k];
}

static int
store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v == NULL)
		return sqlite3_bind_null(st, i);
	return sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

/* Run a statement that returns no row. */
static int
store_step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE) {
		store_fail(s, what);
		sqlite3_reset(st);
		return SP_EDB;
	}
	sqlite3_reset(st);
	return 0;
}

int
store_open(const char *path, struct store **ret)
{
	return store_open_err(path, ret, NULL, 0);
}

/* PRAGMA journal_mode=WAL answers the mode in force; anything else is a failure. */
static int
store_set_wal(struct store *s)
{
	sqlite3_stmt *st;
	const char *mode;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
		return store_fail(s, "journal_mode");
	if (sqlite3_step(st) != SQLITE_ROW) {
		r = store_fail(s, "journal_mode");
	} else {
		mode = (const char *)sqlite3_column_text(st, 0);
		if (mode == NULL || strcmp(mode, "wal") != 0) {
			snprintf(s->errmsg, sizeof(s->errmsg),
				 "journal_mode: WAL refused (mode is '%s')", mode ? mode : "?");
			r = SP_EDB;
		}
	}
	sqlite3_finalize(st);
	return r;
}

int
store_open_err(const char *path, struct store **ret, char *err, size_t errlen)
{
	struct store *s;
	int fd, r;

	/*
	 * Make the file ourselves with mode 0600 before SQLite sees it: it
	 * holds tenants' specs and the instance id. SQLite's -wal and -shm
	 * files take the main file's permissions.
	 */
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		/* A read-only file is reported below with SQLite's words, not here. */
		if (errno != EACCES && errno != EROFS) {
			r = -errno;
			if (err != NULL && errlen > 0)
				snprintf(err, errlen, "%s: %s", path, strerror(-r));
			return r;
		}
	} else {
		close(fd);
	}

	s = xcalloc(1, sizeof(*s));
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		r = store_fail(s, "open");
		goto out_close;
	}
	sqlite3_extended_result_codes(s->db, 1);
	/*
	 * Another process (sqlite3 by hand, a backup) may hold a lock briefly;
	 * the loop thread waits at most this long before the call fails.
	 */
	sqlite3_busy_timeout(s->db, 5000);

	/*
	 * SQLite silently falls back to read-only when it cannot write the
	 * file; the daemon cannot work like that, so say so now rather than at
	 * the first insert.
	 */
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		snprintf(s->errmsg, sizeof(s->errmsg), "open: %s is read-only", path);
		r = SP_EDB;
		goto out_close;
	}
	/* A corrupt or non-database file fails here with SQLITE_NOTADB. */
	if ((r = store_set_wal(s)) < 0)
		goto out_close;
	if ((r = store_exec(s, "PRAGMA synchronous=NORMAL;"
				"PRAGMA foreign_keys=ON;")) < 0)
		goto out_close;
	if ((r = store_exec(s, "CREATE TABLE IF NOT EXISTS schema_version ("
				"  component TEXT PRIMARY KEY NOT NULL,"
				"  version INTEGER NOT NULL)")) < 0)
		goto out_close;
	r = store_migrate(s, "core", store_core_migrations,
			  sizeof(store_core_migrations) / sizeof(store_core_migrations[0]));
	if (r < 0)
		goto out_close;
	*ret = s;
	return 0;

out_close:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", s->errmsg);
	store_close(s);
	return r;
}

void
store_close(struct store *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	/* sqlite3_close_v2 never fails for a lingering statement; we finalised them all. */
	sqlite3_close_v2(s->db);
	free(s);
}

struct sqlite3 *
store_db(struct store *s)
{
	return s->db;
}

const char *
store_errmsg(struct store *s)
{
	if (s == NULL)
		return "no database";
	return s->errmsg[0] ? s->errmsg : "no error";
}

static int
store_version(struct store *s, const char *component, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(s->db, "SELECT version FROM schema_version WHERE component = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return store_fail(s, "schema_version");
	sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*ret = 0;
	else {
		store_fail(s, "schema_version");
		sqlite3_finalize(st);
		return SP_EDB;
	}
	sqlite3_finalize(st);
	return 0;
}

int
store_migrate(struct store *s, const char *component, const char *const *scripts, size_t n)
{
	sqlite3_stmt *st;
	int64_t have;
	size_t v;
	int r;

	if ((r = store_version(s, component, &have)) < 0)
		return r;
	/* A database newer than this binary: refuse rather than misread it. */
	if (have < 0 || (uint64_t)have > n) {
		snprintf(s->errmsg, sizeof(s->errmsg),
			 "component '%s' is at schema version %lld, this build knows %zu",
			 component, (long long)have, n);
		return SP_EDB;
	}
	for (v = (size_t)have; v < n; v++) {
		if ((r = store_exec(s, "BEGIN IMMEDIATE")) < 0)
			return r;
		if ((r = store_exec(s, scripts[v])) < 0)
			goto out_rollback;
		if (sqlite3_prepare_v2(s->db, "INSERT INTO schema_version(component, version) "
				       "VALUES (?1, ?2) ON CONFLICT(component) "
				       "DO UPDATE SET version = excluded.version",
				       -1, &st, NULL) != SQLITE_OK) {
			r = store_fail(s, "schema_version");
			goto out_rollback;
		}
		sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)(v + 1));
		if (sqlite3_step(st) != SQLITE_DONE) {
			r = store_fail(s, "schema_version");
			sqlite3_finalize(st);
			goto out_rollback;
		}
		sqlite3_finalize(st);
		if ((r = store_exec(s, "COMMIT")) < 0)
			goto out_rollback;
	}
	return 0;

out_rollback:
	{
		/* Keep the first error's message, not the rollback's. */
		char keep[sizeof(s->errmsg)];

		memcpy(keep, s->errmsg, sizeof(keep));
		/* The precision keeps the prefix from truncating the message. */
		snprintf(s->errmsg, sizeof(s->errmsg), "migration %.32s %zu: %.180s",
			 component, v + 1, keep);
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	}
	return r;
}

int
store_meta_get(struct store *s, const char *key, char **ret)
{
	sqlite3_stmt *st;
	int rc;

	if ((st = store_stmt(s, ST_META_GET)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret = xstrdup((const char *)sqlite3_column_text(st, 0));
		sqlite3_reset(st);
		return 0;
	}
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return -ENOENT;
	}
	store_fail(s, "meta get");
	sqlite3_reset(st);
	return SP_EDB;
}

int
store_meta_set(struct store *s, const char *key, const char *value)
{
	sqlite3_stmt *st;

	if ((st = store_stmt(s, ST_META_SET)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_TRANSIENT);
	return store_step_done(s, st, "meta set");
}

int
store_sandbox_insert(struct store *s, const struct sandbox_row *row)
{
	sqlite3_stmt *st;

	if ((st = store_stmt(s, ST_SB_INSERT)) == NULL)
		return SP_EDB;
	store_bind_text(st, 1, row->id);
	store_bind_text(st, 2, row->tenant);
	store_bind_text(st, 3, row->provider);
	store_bind_text(st, 4, row->ref);
	store_bind_text(st, 5, row->state);
	store_bind_text(st, 6, row->spec_json);
	store_bind_text(st, 7, row->spec_hash);
	store_bind_text(st, 8, row->error);
	sqlite3_bind_int(st, 9, row->exit_code);
	sqlite3_bind_int(st, 10, row->oom_killed ? 1 : 0);
	sqlite3_bind_int64(st, 11, row->created_ms);
	sqlite3_bind_int64(st, 12, row->updated_ms);
	return store_step_done(s, st, "sandbox insert");
}

int
store_sandbox_set_tenant(struct store *s, const char *id, const char *from, const char *to)
{
	sqlite3_stmt *st;
	int r;

	r = sqlite3_prepare_v2(s->db, "UPDATE sandboxes SET tenant = ? WHERE id = ? AND tenant = ?",
			       -1, &st, NULL);
	if (r != SQLITE_OK)
		return SP_EDB;
	store_bind_text(st, 1, to);
	store_bind_text(st, 2, id);
	store_bind_text(st, 3, from);
	r = store_step_done(s, st, "sandbox tenant");
	sqlite3_finalize(st);
	if (r < 0)
		return r;
	return sqlite3_changes(s->db) == 1 ? 0 : SP_ENOTFOUND;
}

int
store_sandbox_update(struct store *s, const struct sandbox_row *row)
{
	sqlite3_stmt *st;
	int r;

	if ((st = store_stmt(s, ST_SB_UPDATE)) == NULL)
		return SP_EDB;
	store_bind_text(st, 1, row->id);
	store_bind_text(st, 2, row->ref);
	store_bind_text(st, 3, row->state);
	store_bind_text(st, 4, row->error);
	sqlite3_bind_int(st, 5, row->exit_code);
	sqlite3_bind_int(st, 6, row->oom_killed ? 1 : 0);
	sqlite3_bind_int64(st, 7, row->updated_ms);
	if ((r = store_step_done(s, st, "sandbox update")) < 0)
		return r;
	if (sqlite3_changes(s->db) == 0)
		return SP_ENOTFOUND;
	return 0;
}

static char *
store_col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? xstrdup((const char *)t) : NULL;
}

static void
store_row_read(sqlite3_stmt *st, struct sandbox_row *row)
{
	row->id = store_col_text(st, 0);
	row->tenant = store_col_text(st, 1);
	row->provider = store_col_text(st, 2);
	row->ref = store_col_text(st, 3);
	row->state = store_col_text(st, 4);
	row->spec_json = store_col_text(st, 5);
	row->spec_hash = store_col_text(st, 6);
	row->error = store_col_text(st, 7);
	row->exit_code = sqlite3_column_int(st, 8);
	row->oom_killed = sqlite3_column_int(st, 9) != 0;
	row->created_ms = sqlite3_column_int64(st, 10);
	row->updated_ms = sqlite3_column_int64(st, 11);
}

int
store_sandbox_get(struct store *s, const char *id, struct sandbox_row *ret)
{
	sqlite3_stmt *st;
	int rc;

	if ((st = store_stmt(s, ST_SB_GET)) == NULL)
		return SP_EDB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		store_row_read(st, ret);
		sqlite3_reset(st);
		return 0;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return SP_ENOTFOUND;
	return store_fail(s, "sandbox get");
}

int
store_sandbox_list(struct store *s, const char *tenant, bool live_only,
		   struct sandbox_row **ret, size_t *n)
{
	struct sandbox_row *rows = NULL;
	size_t count = 0, cap = 0;
	sqlite3_stmt *st;
	int rc;

	if ((st = store_stmt(s, ST_SB_LIST)) == NULL)
		return SP_EDB;
	store_bind_text(st, 1, tenant);
	sqlite3_bind_int(st, 2, live_only ? 1 : 0);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (count == STORE_LIST_MAX) {
			snprintf(s->errmsg, sizeof(s->errmsg),
				 "sandbox list: more than %d rows", STORE_LIST_MAX);
			rc = SQLITE_FULL;
			break;
		}
		if (count == cap) {
			cap = cap ? cap * 2 : 16;
			rows = xreallocarray(rows, cap, sizeof(*rows));
		}
		memset(&rows[count], 0, sizeof(rows[count]));
		store_row_read(st, &rows[count++]);
	}
	if (rc != SQLITE_DONE) {
		if (rc != SQLITE_FULL)
			store_fail(s, "sandbox list");
		sqlite3_reset(st);
		store_sandbox_rows_free(rows, count);
		return SP_EDB;
	}
	sqlite3_reset(st);
	*ret = rows;
	*n = count;
	return 0;
}

void
store_sandbox_row_done(struct sandbox_row *row)
{
	if (row == NULL)
		return;
	free(row->id);
	free(row->tenant);
	free(row->provider);
	free(row->ref);
	free(row->state);
	free(row->spec_json);
	free(row->spec_hash);
	free(row->error);
	memset(row, 0, sizeof(*row));
}

void
store_sandbox_rows_free(struct sandbox_row *rows, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		store_sandbox_row_done(&rows[i]);
	free(rows);
}

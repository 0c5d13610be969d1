/*
 * The daemon's one SQLite database (WAL mode). It owns the connection and the
 * schema: versioned migrations per component, applied in order inside a
 * transaction at open. Calls are synchronous and short (the loop thread does
 * them); long work belongs on the thread pool with its own connection.
 */
#ifndef SANDPIT_STORE_H
#define SANDPIT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct sqlite3;

/* A sandbox row. Strings are owned by the row (store_sandbox_row_done frees them). */
struct sandbox_row {
	char *id;			/* "sb-0123456789ab" */
	char *tenant;
	char *provider;			/* the provider's ops->name */
	char *ref;			/* the provider's reference (container id), or NULL */
	char *state;			/* creating | starting | running | destroying | destroyed | exited | failed | lost */
	char *spec_json;		/* the normalised creation spec */
	char *spec_hash;
	char *error;			/* last error, or NULL */
	int exit_code;			/* when exited */
	bool oom_killed;
	int64_t created_ms;		/* unix ms */
	int64_t updated_ms;
};

/* Open (create) the database at path, set WAL, apply migrations. 0 or SP_EDB/-errno. */
int store_open(const char *path, struct store **ret);
/*
 * The same, and on failure a message for the edges to log in err (SQLite's
 * words: "file is not a database", "... is read-only"), since there is no
 * struct store to ask store_errmsg(). err may be NULL.
 */
int store_open_err(const char *path, struct store **ret, char *err, size_t errlen);
void store_close(struct store *s);		/* accepts NULL */
struct sqlite3 *store_db(struct store *s);
/* The last SQLite error message for the edges to log. */
const char *store_errmsg(struct store *s);

/*
 * Apply the migrations of component (each a SQL script) that the database
 * has not seen, in order, each in its own transaction, recording the version
 * in table schema_version(component, version). Modules with tables of their
 * own (memory, swarm) call this at start-up with their own list.
 */
int store_migrate(struct store *s, const char *component, const char *const *scripts, size_t n);

/* Key/value facts about the daemon (its instance id). *ret is malloc'd; -ENOENT if unset. */
int store_meta_get(struct store *s, const char *key, char **ret);
int store_meta_set(struct store *s, const char *key, const char *value);

int store_sandbox_insert(struct store *s, const struct sandbox_row *row);
/* Write every mutable field (ref, state, error, exit_code, oom_killed, updated_ms). */
/* Move sandbox id from tenant from to tenant to (a warm-pool claim); SP_ENOTFOUND. */
int store_sandbox_set_tenant(struct store *s, const char *id, const char *from, const char *to);
int store_sandbox_update(struct store *s, const struct sandbox_row *row);
/* SP_ENOTFOUND when absent. The row is filled only on success. */
int store_sandbox_get(struct store *s, const char *id, struct sandbox_row *ret);
/*
 * Rows of tenant (NULL: all tenants); with live_only, those not destroyed.
 * *ret is a malloc'd array of *n rows (free with store_sandbox_rows_free).
 */
int store_sandbox_list(struct store *s, const char *tenant, bool live_only,
		       struct sandbox_row **ret, size_t *n);
void store_sandbox_row_done(struct sandbox_row *row);
void store_sandbox_rows_free(struct sandbox_row *rows, size_t n);

#endif

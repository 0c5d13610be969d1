/*
 * The sandpit CLI's internal contract. Command groups live one per file
 * (status.c, sandbox.c, image.c, …) and are listed in main.c's command table;
 * client.c speaks HTTP to sandpitd over the Unix socket; util.c holds the
 * pure parts (parsing, NDJSON splitting, tables) that test_cli exercises.
 *
 * Exit codes: 0 success, 1 an error (printed as "sandpit: <message>"), 2 a
 * usage error; `run` and `exec` pass the command's own code through.
 */
#ifndef SANDPIT_CLI_H
#define SANDPIT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <time.h>
#include <sys/types.h>

#include <jansson.h>

#define CLI_EXIT_ERR	1
#define CLI_EXIT_USAGE	2

/* Global options, parsed before the command. */
struct cli {
	const char *socket;		/* the resolved socket path */
	const char *tenant;		/* or NULL */
	bool json;			/* print raw JSON */
	const char *progress;		/* label of a progress line on a terminal, or NULL */
};

/*
 * One command, or a group of them (subs set, fn NULL). Tables end with an
 * entry whose name is NULL. A new group is one file plus one line in main.c.
 */
struct cli_cmd {
	const char *name;
	const char *args;		/* usage after the name, "[--all]" */
	const char *help;		/* one line */
	int (*fn)(struct cli *cli, int argc, char **argv);	/* argv[0] is the name */
	const struct cli_cmd *subs;
};

extern const struct cli_cmd cli_cmd_status;
extern const struct cli_cmd cli_cmd_run;
extern const struct cli_cmd cli_cmd_sandbox;
extern const struct cli_cmd cli_cmd_image;
extern const struct cli_cmd cli_cmd_mem;
extern const struct cli_cmd cli_cmd_swarm;
extern const struct cli_cmd cli_cmd_task;

/* Print "sandpit: <msg>" to stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print a usage error and the command's usage line; returns CLI_EXIT_USAGE. */
int cli_usage(const char *cmd, const char *args, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* --- client.c: HTTP over the Unix socket (libcurl easy) --- */

/*
 * A buffered request. body (borrowed) is sent as JSON when not NULL. On a 2xx
 * answer stores the parsed JSON (or NULL for an empty body) in *ret and
 * returns 0. Otherwise prints the error (the server's error.message, or the
 * connection failure) and returns CLI_EXIT_ERR.
 */
int cli_call(struct cli *cli, const char *method, const char *path, json_t *body,
	     json_t **ret);

/*
 * A streamed request: every line of a 2xx body goes to line(); the transfer
 * stops early when line() returns non-zero, or when *stop becomes true (a
 * signal handler's flag; may be NULL). Returns 0 once the body ended, else
 * prints the error and returns CLI_EXIT_ERR (-1 when stopped by *stop).
 */
int cli_stream(struct cli *cli, const char *method, const char *path, json_t *body,
	       int (*line)(const char *line, size_t len, void *arg), void *arg,
	       volatile const sig_atomic_t *stop);

/* "/v1/sandboxes/" + %-escaped id + suffix; caller frees. */
char *cli_path_id(const char *prefix, const char *id, const char *suffix);
/*
 * The `show` commands: parse `[--json] ID` (cmd and what name it in usage
 * errors), GET prefix + ID. With --json the answer is printed and *ret is
 * NULL; otherwise *ret is the object, the caller's to print and release.
 * 0 or a CLI exit status.
 */
int cli_show(struct cli *cli, int argc, char **argv, const char *cmd, const char *prefix,
	     const char *what, json_t **ret);

/* --- util.c: the pure parts --- */

/* The socket path: --socket, else $SANDPIT_SOCKET, else the default for our uid. */
const char *cli_default_socket(char *buf, size_t len);

/* "512m", "1g", "64KiB", "1048576" → bytes (binary units). 0 or -EINVAL/-ERANGE. */
int cli_parse_size(const char *s, int64_t *ret);
/* "10s", "500ms", "2m", "1h", "1.5s", "10" (seconds) → milliseconds. 0 or -EINVAL/-ERANGE. */
int cli_parse_duration(const char *s, int64_t *ret);

/* What run, exec and sandbox create accept. */
struct cli_run_opts {
	json_t *spec;			/* POST /v1/sandboxes body (owned) */
	json_t *env;			/* exec env object (owned) */
	int64_t timeout_ms;		/* exec timeout, -1 when not given */
	const char *workdir;
	bool keep;
	char **cmd;			/* after "--" (or the first non-option) */
	int ncmd;
};

/* Which option families a command takes. */
#define CLI_OPT_SPEC	(1u << 0)	/* --cpus --memory --pids --nofile --tmp --work --image --provider */
#define CLI_OPT_EXEC	(1u << 1)	/* --env --timeout --workdir */
#define CLI_OPT_KEEP	(1u << 2)	/* --keep */
#define CLI_OPT_CMD	(1u << 3)	/* a command after the options is required */

/*
 * Parse argv[1..argc) for the families in which. Options take "--opt VALUE"
 * or "--opt=VALUE"; "--json" is accepted too and sets *json. On error writes
 * a message to err and returns -EINVAL; the caller frees o with
 * cli_run_opts_done() either way.
 */
int cli_parse_run_opts(int argc, char **argv, unsigned which, struct cli_run_opts *o,
		       bool *json, char *err, size_t errlen);
void cli_run_opts_done(struct cli_run_opts *o);

/*
 * NDJSON framing: feed bytes, get whole lines (without the newline, NUL
 * terminated) in order. A line longer than max is an error (-E2BIG).
 */
struct cli_lines {
	char *buf;
	size_t len;
	size_t max;
};
void cli_lines_init(struct cli_lines *l, size_t max);
int cli_lines_feed(struct cli_lines *l, const char *data, size_t n,
		   int (*line)(const char *line, size_t len, void *arg), void *arg);
/* Deliver a last unterminated line, if any. */
int cli_lines_finish(struct cli_lines *l,
		     int (*line)(const char *line, size_t len, void *arg), void *arg);
void cli_lines_done(struct cli_lines *l);

/* Decode base64 (standard alphabet, padding optional). Returns length or -EINVAL. */
ssize_t cli_b64_decode(const char *s, size_t n, unsigned char *out, size_t outlen);

/* Columns aligned, two spaces apart, header first; cells[row * ncols + col]. */
void cli_table_print(FILE *f, const char *const *header, size_t ncols,
		     const char *const *cells, size_t nrows);

/* Age of an RFC 3339 UTC time ("2026-11-26T07:00:00Z") at now: "42s", "5m", "3h", "2d"; "-" if unparsable. */
void cli_format_age(time_t now, const char *when, char *out, size_t len);

/* Print j indented on stdout (--json). */
void cli_print_json(json_t *j);
/* o[k] when it is a string, else "-" (for tables). */
const char *cli_jstr(json_t *o, const char *k);
/* o[a] (or o[a][b] when b is not NULL) as an integer; 0 when absent. */
long long cli_jint(json_t *o, const char *a, const char *b);
/*
 * "--name VALUE" or "--name=VALUE" at argv[*i] (advancing *i past a separate
 * value); NULL when argv[*i] is another argument, or with *missing set when
 * the value is missing.
 */
const char *cli_opt(int argc, char **argv, int *i, const char *name, bool *missing);
/*
 * "CMD ID… [--json]": DELETE prefix+ID for each ID, printing the id (or the
 * answer with --json); CLI_EXIT_ERR if any failed, a usage error naming what
 * when no id is given.
 */
int cli_delete_each(struct cli *cli, int argc, char **argv, const char *cmd, const char *prefix,
		    const char *what);

#endif

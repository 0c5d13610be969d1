/*
 * sandpit run and sandpit sandbox create|ls|show|rm|exec. It owns the exec
 * stream's rendering (stdout/stderr as they arrive, then the exit status) and
 * the rule that `run` destroys its sandbox, also on Ctrl-C or SIGTERM.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static volatile sig_atomic_t cli_signal;

static void
on_signal(int sig)
{
	cli_signal = sig;
}

/*
 * The first SIGINT/SIGTERM/SIGHUP stops the stream so the sandbox can be destroyed;
 * a second one (SA_RESETHAND) kills us the usual way.
 */
static void
catch_signals(void)
{
	struct sigaction sa;

	cli_signal = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESETHAND;	/* no SA_RESTART: let curl's poll return */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* A closed output pipe must not kill us before the sandbox is gone. */
	signal(SIGPIPE, SIG_IGN);
}

static const char *
str(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* --- exec streaming ----------------------------------------------------- */

struct exec_state {
	bool json;
	bool done;
	int exit_code;
	bool oom;
	bool timed_out;
	char *error;
};

static int
exec_line(const char *line, size_t len, void *arg)
{
	struct exec_state *st = arg;
	json_t *j, *v;

	if (st->json) {
		fwrite(line, 1, len, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	}
	j = json_loadb(line, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		cli_err("sandpitd sent an invalid output line");
		return -EPROTO;
	}
	if ((v = json_object_get(j, "stream")) != NULL) {
		FILE *out = json_is_string(v) && strcmp(json_string_value(v), "stderr") == 0 ?
		    stderr : stdout;
		const char *d = str(j, "data"), *b = str(j, "data_b64");

		if (st->json)
			;
		else if (d != NULL)
			fwrite(d, 1, json_string_length(json_object_get(j, "data")), out);
		else if (b != NULL) {
			size_t n = strlen(b);
			unsigned char *buf = malloc(n / 4 * 3 + 3);
			ssize_t m;

			if (buf == NULL)
				abort();
			m = cli_b64_decode(b, n, buf, n / 4 * 3 + 3);
			if (m > 0)
				fwrite(buf, 1, (size_t)m, out);
			free(buf);
		}
		fflush(out);
	} else if ((v = json_object_get(j, "error")) != NULL) {
		const char *m = str(v, "message");

		free(st->error);
		st->error = strdup(m != NULL ? m : "exec failed");
		st->done = true;
	} else if ((v = json_object_get(j, "exit_code")) != NULL) {
		st->exit_code = json_is_integer(v) ? (int)json_integer_value(v) : 1;
		st->oom = json_is_true(json_object_get(j, "oom_killed"));
		st->timed_out = json_is_true(json_object_get(j, "timed_out"));
		st->done = true;
	}
	json_decref(j);
	return 0;
}

/* Run cmd in sandbox id, streaming its output; returns the exit status to use. */
static int
exec_in(struct cli *cli, const char *id, const struct cli_run_opts *o, bool via_worker)
{
	struct exec_state st = { .json = cli->json };
	json_t *body, *cmd;
	char *path;
	int r;

	cmd = json_array();
	for (int i = 0; i < o->ncmd; i++)
		json_array_append_new(cmd, json_string(o->cmd[i]));
	body = json_pack("{s:o}", "cmd", cmd);
	if (json_object_size(o->env) > 0)
		json_object_set(body, "env", o->env);
	if (o->timeout_ms > 0)
		json_object_set_new(body, "timeout_ms", json_integer(o->timeout_ms));
	if (o->workdir != NULL)
		json_object_set_new(body, "workdir", json_string(o->workdir));
	if (via_worker)
		json_object_set_new(body, "via", json_string("worker"));
	path = cli_path_id("/v1/sandboxes/", id, "/exec");
	r = cli_stream(cli, "POST", path, body, exec_line, &st, &cli_signal);
	free(path);
	json_decref(body);
	if (r == -1 || cli_signal)
		r = 128 + (cli_signal != 0 ? cli_signal : SIGINT);
	else if (r != 0)
		;
	else if (st.error != NULL) {
		cli_err("%s", st.error);
		r = CLI_EXIT_ERR;
	} else if (!st.done) {
		cli_err("the output stream ended without an exit status");
		r = CLI_EXIT_ERR;
	} else if (st.oom) {
		cli_err("killed: out of memory");
		r = 137;
	} else if (st.timed_out) {
		cli_err("timed out");
		r = 124;
	} else
		r = st.exit_code < 0 || st.exit_code > 255 ? CLI_EXIT_ERR : st.exit_code;
	free(st.error);
	return r;
}

/* --- run ---------------------------------------------------------------- */

static int
destroy(struct cli *cli, const char *id)
{
	json_t *res = NULL;
	char *path = cli_path_id("/v1/sandboxes/", id, "");
	int r = cli_call(cli, "DELETE", path, NULL, &res);

	free(path);
	json_decref(res);
	return r;
}

static int
run_main(struct cli *cli, int argc, char **argv)
{
	struct cli_run_opts o;
	json_t *sb = NULL;
	char err[256], *id = NULL;
	int r;

	if (cli_parse_run_opts(argc, argv, CLI_OPT_SPEC | CLI_OPT_EXEC | CLI_OPT_KEEP | CLI_OPT_CMD,
	    &o, &cli->json, err, sizeof(err)) < 0) {
		cli_run_opts_done(&o);
		return cli_usage("run", cli_cmd_run.args, "%s", err);
	}
	catch_signals();
	/* The first run on a fresh install also builds the worker image. */
	cli->progress = "creating a sandbox";
	r = cli_call(cli, "POST", "/v1/sandboxes", o.spec, &sb);
	cli->progress = NULL;
	if (r != 0)
		goto out;
	if (str(sb, "id") == NULL) {
		cli_err("sandpitd created a sandbox without an id");
		r = CLI_EXIT_ERR;
		goto out;
	}
	id = strdup(str(sb, "id"));
	if (cli_signal)
		r = 128 + cli_signal;
	else
		r = exec_in(cli, id, &o, false);
	if (o.keep)
		fprintf(stderr, "sandpit: kept sandbox %s\n", id);
	else if (destroy(cli, id) != 0)
		fprintf(stderr, "sandpit: sandbox %s may still exist\n", id);
out:
	free(id);
	json_decref(sb);
	cli_run_opts_done(&o);
	return r;
}

const struct cli_cmd cli_cmd_run = {
	.name = "run",
	.args = "[limit options] [exec options] [--keep] -- CMD [ARGS…]",
	.help = "run a command in a new sandbox, then destroy it (unless --keep)",
	.fn = run_main,
};

/* --- sandbox ------------------------------------------------------------ */

static int
sandbox_create(struct cli *cli, int argc, char **argv)
{
	struct cli_run_opts o;
	json_t *sb = NULL;
	char err[256];
	int r;

	if (cli_parse_run_opts(argc, argv, CLI_OPT_SPEC, &o, &cli->json, err, sizeof(err)) < 0) {
		cli_run_opts_done(&o);
		return cli_usage("sandbox create", "[limit options]", "%s", err);
	}
	cli->progress = "creating a sandbox";
	r = cli_call(cli, "POST", "/v1/sandboxes", o.spec, &sb);
	cli->progress = NULL;
	if (r == 0) {
		if (cli->json)
			cli_print_json(sb);
		else
			printf("%s\n", str(sb, "id") != NULL ? str(sb, "id") : "?");
	}
	json_decref(sb);
	cli_run_opts_done(&o);
	return r;
}

static int
sandbox_ls(struct cli *cli, int argc, char **argv)
{
	static const char *const header[] = { "ID", "TENANT", "PROVIDER", "STATE", "AGE", "WORKER",
		"IMAGE" };
	const char **cells;
	char (*ages)[16], (*wstate)[32];
	bool all = false;
	json_t *list = NULL, *sb;
	time_t now = time(NULL);
	size_t i;
	int r;

	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--all") == 0 || strcmp(argv[k], "-a") == 0)
			all = true;
		else if (strcmp(argv[k], "--json") == 0)
			cli->json = true;
		else
			return cli_usage("sandbox ls", "[--all]", "unexpected argument '%s'", argv[k]);
	}
	r = cli_call(cli, "GET", all ? "/v1/sandboxes?all=1" : "/v1/sandboxes", NULL, &list);
	if (r != 0)
		return r;
	if (cli->json) {
		cli_print_json(list);
		json_decref(list);
		return 0;
	}
	if (!json_is_array(list)) {
		cli_err("sandpitd did not answer a list");
		json_decref(list);
		return CLI_EXIT_ERR;
	}
	cells = calloc(json_array_size(list) * 7 + 1, sizeof(*cells));
	ages = calloc(json_array_size(list) + 1, sizeof(*ages));
	wstate = calloc(json_array_size(list) + 1, sizeof(*wstate));
	if (cells == NULL || ages == NULL || wstate == NULL)
		abort();
	json_array_foreach(list, i, sb) {
		json_t *w = json_object_get(sb, "worker");
		json_t *seen = json_object_get(w, "last_seen_ms");

		cli_format_age(now, str(sb, "created_at"), ages[i], sizeof(ages[i]));
		/* "up 3s": connected, last heard of 3 s ago; "down" or "-" (none known). */
		if (json_is_true(json_object_get(w, "connected")) && json_is_integer(seen))
			snprintf(wstate[i], sizeof(wstate[i]), "up %llds",
				 (long long)(now - json_integer_value(seen) / 1000));
		else
			snprintf(wstate[i], sizeof(wstate[i]), "%s", json_is_integer(seen) ? "down" : "-");
		cells[i * 7 + 0] = str(sb, "id");
		cells[i * 7 + 1] = str(sb, "tenant");
		cells[i * 7 + 2] = str(sb, "provider");
		cells[i * 7 + 3] = str(sb, "state");
		cells[i * 7 + 4] = ages[i];
		cells[i * 7 + 5] = wstate[i];
		cells[i * 7 + 6] = str(sb, "image");
	}
	cli_table_print(stdout, header, 7, cells, json_array_size(list));
	free(cells);
	free(ages);
	free(wstate);
	json_decref(list);
	return 0;
}

static void
show_value(const char *label, json_t *v)
{
	char *s;

	if (v == NULL || json_is_null(v))
		return;
	if (json_is_string(v)) {
		printf("%-11s %s\n", label, json_string_value(v));
		return;
	}
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s != NULL)
		printf("%-11s %s\n", label, s);
	free(s);
}

static int
sandbox_show(struct cli *cli, int argc, char **argv)
{
	static const char *const keys[] = {
		"id", "tenant", "provider", "state", "ref", "image", "created_at",
		"updated_at", "exit_code", "oom_killed", "error", "worker",
	};
	json_t *sb, *lim, *v;
	const char *k;
	int r;

	if ((r = cli_show(cli, argc, argv, "sandbox show", "/v1/sandboxes/", "sandbox",
			  &sb)) != 0 || sb == NULL)
		return r;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char label[32];

		snprintf(label, sizeof(label), "%s:", keys[i]);
		show_value(label, json_object_get(sb, keys[i]));
	}
	lim = json_object_get(sb, "limits");
	if (json_is_object(lim)) {
		printf("limits:    ");
		json_object_foreach(lim, k, v) {
			char *s = json_dumps(v, JSON_ENCODE_ANY);

			printf(" %s=%s", k, s != NULL ? s : "?");
			free(s);
		}
		printf("\n");
	}
	json_decref(sb);
	return 0;
}

static int
sandbox_rm(struct cli *cli, int argc, char **argv)
{
	return cli_delete_each(cli, argc, argv, "sandbox rm", "/v1/sandboxes/", "sandbox");
}

static int
sandbox_exec(struct cli *cli, int argc, char **argv)
{
	struct cli_run_opts o;
	char err[256];
	const char *id;
	bool via_worker = false;
	int r;

	/* --via-worker: run it through the sandbox's sandpit-worker instead of the provider. */
	if (argc >= 2 && strcmp(argv[1], "--via-worker") == 0) {
		via_worker = true;
		argc--;
		argv++;
	}
	/* The id comes first: sandbox exec [--via-worker] ID [exec options] -- CMD… */
	if (argc < 2 || argv[1][0] == '-')
		return cli_usage("sandbox exec", "ID [exec options] -- CMD…", "no sandbox id given");
	id = argv[1];
	if (cli_parse_run_opts(argc - 1, argv + 1, CLI_OPT_EXEC | CLI_OPT_CMD, &o, &cli->json,
	    err, sizeof(err)) < 0) {
		cli_run_opts_done(&o);
		return cli_usage("sandbox exec", "ID [exec options] -- CMD…", "%s", err);
	}
	catch_signals();
	r = exec_in(cli, id, &o, via_worker);
	cli_run_opts_done(&o);
	return r;
}

static const struct cli_cmd sandbox_subs[] = {
	{ .name = "create", .args = "[limit options]", .fn = sandbox_create,
	  .help = "create a sandbox and print its id" },
	{ .name = "ls", .args = "[--all]", .fn = sandbox_ls,
	  .help = "list sandboxes (--all: destroyed ones too)" },
	{ .name = "show", .args = "ID", .fn = sandbox_show,
	  .help = "show one sandbox" },
	{ .name = "rm", .args = "ID…", .fn = sandbox_rm,
	  .help = "destroy sandboxes" },
	{ .name = "exec", .args = "[--via-worker] ID [exec options] -- CMD [ARGS…]", .fn = sandbox_exec,
	  .help = "run a command in a sandbox, streaming its output; exit with its status" },
	{ .name = NULL },
};

const struct cli_cmd cli_cmd_sandbox = {
	.name = "sandbox",
	.help = "sandboxes",
	.subs = sandbox_subs,
};

/*
 * sandpit swarm create|ls|show|wait|events|rm: the swarm routes of the control API as commands, tables by default and
 * the API's JSON with --json. It only builds requests and prints answers;
 * the daemon validates. `wait` polls and draws a progress line on a TTY.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void
sw_summary(json_t *s)
{
	printf("%-16s %-10s agents %lld/%lld (lost %lld)  tasks %lld/%lld done, %lld failed",
	       cli_jstr(s, "id"), cli_jstr(s, "state"), cli_jint(s, "agents", "live"),
	       cli_jint(s, "agents", "wanted"), cli_jint(s, "agents", "lost"),
	       cli_jint(s, "tasks", "succeeded") + cli_jint(s, "tasks", "failed") +
	       cli_jint(s, "tasks", "cancelled"), cli_jint(s, "tasks", "total"),
	       cli_jint(s, "tasks", "failed"));
	if (json_is_string(json_object_get(s, "reason")))
		printf("  reason: %s", cli_jstr(s, "reason"));
	putchar('\n');
}

static int sw_wait_id(struct cli *cli, const char *id, int64_t timeout_ms, bool quiet);

static int
sw_create(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "--agents N [--topology T] [--placement P] [--untrusted] "
		"[--image I] [--cpus X] [--memory SIZE] [--pids N] [--task-timeout D] [--retries N] [--ttl D] "
		"[--idle-timeout D] [--task CMD]… [--wait]";
	json_t *body = json_object(), *tmpl = json_object(), *tasks = json_array(), *ret = NULL;
	bool wait = false;
	const char *v;
	int r = CLI_EXIT_USAGE;

	for (int a = 1; a < argc; a++) {
		bool missing = false;

		if (strcmp(argv[a], "--json") == 0) {
			cli->json = true;
		} else if (strcmp(argv[a], "--wait") == 0) {
			wait = true;
		} else if (strcmp(argv[a], "--untrusted") == 0) {
			json_object_set_new(body, "untrusted", json_true());
		} else if ((v = cli_opt(argc, argv, &a, "--agents", &missing)) != NULL) {
			json_object_set_new(body, "agents", json_integer(atoll(v)));
		} else if ((v = cli_opt(argc, argv, &a, "--topology", &missing)) != NULL) {
			json_object_set_new(body, "topology", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--placement", &missing)) != NULL) {
			json_object_set_new(body, "placement", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--image", &missing)) != NULL) {
			json_object_set_new(tmpl, "image", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--cpus", &missing)) != NULL) {
			json_object_set_new(tmpl, "cpus", json_real(atof(v)));
		} else if ((v = cli_opt(argc, argv, &a, "--memory", &missing)) != NULL) {
			json_object_set_new(tmpl, "memory", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--pids", &missing)) != NULL) {
			json_object_set_new(tmpl, "pids", json_integer(atoll(v)));
		} else if ((v = cli_opt(argc, argv, &a, "--task-timeout", &missing)) != NULL) {
			json_object_set_new(body, "task_timeout_ms", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--retries", &missing)) != NULL) {
			json_object_set_new(body, "retry_limit", json_integer(atoll(v)));
		} else if ((v = cli_opt(argc, argv, &a, "--ttl", &missing)) != NULL) {
			json_object_set_new(body, "ttl", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--idle-timeout", &missing)) != NULL) {
			json_object_set_new(body, "idle_timeout", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--task", &missing)) != NULL) {
			json_array_append_new(tasks, json_string(v));
		} else {
			r = cli_usage("swarm create", usage, missing ? "'%s' needs a value" :
				      "unexpected argument '%s'", argv[a]);
			goto out;
		}
	}
	if (json_object_get(body, "agents") == NULL) {
		r = cli_usage("swarm create", usage, "--agents is required");
		goto out;
	}
	if (json_object_size(tmpl) > 0)
		json_object_set(body, "template", tmpl);
	if (json_array_size(tasks) > 0)
		json_object_set(body, "tasks", tasks);
	r = cli_call(cli, "POST", "/v1/swarms", body, &ret);
	if (r != 0)
		goto out;
	if (cli->json && !wait)
		cli_print_json(ret);
	else
		printf("%s\n", cli_jstr(ret, "id"));
	fflush(stdout);
	if (wait)
		r = sw_wait_id(cli, cli_jstr(ret, "id"), -1, false);
out:
	json_decref(ret);
	json_decref(body);
	json_decref(tmpl);
	json_decref(tasks);
	return r;
}

static int
sw_ls(struct cli *cli, int argc, char **argv)
{
	json_t *ret = NULL, *s;
	size_t i;
	int r;

	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--json") == 0)
			cli->json = true;
		else
			return cli_usage("swarm ls", "", "unexpected argument '%s'", argv[a]);
	}
	if ((r = cli_call(cli, "GET", "/v1/swarms", NULL, &ret)) != 0)
		return r;
	if (cli->json) {
		cli_print_json(ret);
	} else {
		printf("%-16s %-10s %-9s %-14s %s\n", "ID", "STATE", "AGENTS", "TASKS(ok/all)",
		       "REASON");
		json_array_foreach(ret, i, s) {
			char agents[32], tasks[48];

			snprintf(agents, sizeof(agents), "%lld/%lld", cli_jint(s, "agents", "live"),
				 cli_jint(s, "agents", "wanted"));
			snprintf(tasks, sizeof(tasks), "%lld/%lld", cli_jint(s, "tasks", "succeeded"),
				 cli_jint(s, "tasks", "total"));
			printf("%-16s %-10s %-9s %-14s %s\n", cli_jstr(s, "id"), cli_jstr(s, "state"),
			       agents, tasks, cli_jstr(s, "reason"));
		}
	}
	json_decref(ret);
	return 0;
}

static int
sw_show(struct cli *cli, int argc, char **argv)
{
	json_t *ret, *t;
	size_t i;
	int r;

	if ((r = cli_show(cli, argc, argv, "swarm show", "/v1/swarms/", "swarm", &ret)) != 0 ||
	    ret == NULL)
		return r;
	sw_summary(ret);
	printf("spawn %lld ms, success rate %.1f%%, %.1f sandbox-seconds\n",
	       cli_jint(ret, "spawn_ms", NULL),
	       100.0 * json_number_value(json_object_get(ret, "success_rate")),
	       json_number_value(json_object_get(json_object_get(ret, "cost"),
						 "sandbox_seconds")));
	/* Where each agent runs (a burst swarm spans providers). */
	printf("%-16s %-5s %-10s %-10s %s\n", "AGENT", "SLOT", "PROVIDER", "STATE", "WORKER");
	json_array_foreach(json_object_get(json_object_get(ret, "agents"), "list"), i, t)
		printf("%-16s %-5lld %-10s %-10s %s\n", cli_jstr(t, "sandbox"),
		       cli_jint(t, "slot", NULL), cli_jstr(t, "provider"), cli_jstr(t, "state"),
		       json_is_true(json_object_get(t, "ready")) ? "connected" : "starting");
	printf("%-8s %-10s %-5s %-8s %s\n", "TASK", "STATE", "EXIT", "ATTEMPTS", "REASON");
	json_array_foreach(json_object_get(ret, "results"), i, t) {
		char code[16] = "-";

		if (json_is_integer(json_object_get(t, "exit_code")))
			snprintf(code, sizeof(code), "%lld", cli_jint(t, "exit_code", NULL));
		printf("%-8lld %-10s %-5s %-8lld %s\n", cli_jint(t, "id", NULL), cli_jstr(t, "state"),
		       code, cli_jint(t, "attempts", NULL), cli_jstr(t, "reason"));
	}
	json_decref(ret);
	return 0;
}

static volatile sig_atomic_t sw_stop;

static void
sw_on_signal(int sig)
{
	(void)sig;
	sw_stop = 1;
}

/* Poll until the swarm completed, failed or was deleted; 0 when it completed. */
static int
sw_wait_id(struct cli *cli, const char *id, int64_t timeout_ms, bool quiet)
{
	char *path = cli_path_id("/v1/swarms/", id, "");
	bool tty = isatty(STDERR_FILENO) && !quiet;
	struct timespec t0, now;
	json_t *ret = NULL;
	const char *st;
	int r;

	signal(SIGINT, sw_on_signal);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		json_decref(ret);
		ret = NULL;
		if ((r = cli_call(cli, "GET", path, NULL, &ret)) != 0)
			break;
		st = cli_jstr(ret, "state");
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (tty) {
			long long done = cli_jint(ret, "tasks", "succeeded") +
					 cli_jint(ret, "tasks", "failed") +
					 cli_jint(ret, "tasks", "cancelled");
			long long total = cli_jint(ret, "tasks", "total");
			int width = 24, fill = total > 0 ? (int)(done * width / total) : 0;

			fprintf(stderr, "\r\033[K%s [%.*s%*s] agents %lld/%lld  tasks %lld/%lld  %lds",
				st, fill, "########################", width - fill, "",
				cli_jint(ret, "agents", "live"), cli_jint(ret, "agents", "wanted"),
				done, total, (long)(now.tv_sec - t0.tv_sec));
		}
		if (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
		    strcmp(st, "deleted") == 0) {
			r = strcmp(st, "completed") == 0 ? 0 : CLI_EXIT_ERR;
			break;
		}
		if (sw_stop || (timeout_ms >= 0 && (now.tv_sec - t0.tv_sec) * 1000 +
		    (now.tv_nsec - t0.tv_nsec) / 1000000 >= timeout_ms)) {
			r = CLI_EXIT_ERR;
			if (tty)
				fputc('\n', stderr);
			cli_err("%s: still %s", id, st);
			goto out;
		}
		usleep(200000);
	}
	if (tty)
		fputs("\r\033[K", stderr);
	if (ret != NULL) {
		if (cli->json)
			cli_print_json(ret);
		else
			sw_summary(ret);
	}
out:
	json_decref(ret);
	free(path);
	return r;
}

static int
sw_wait(struct cli *cli, int argc, char **argv)
{
	const char *id = NULL, *v;
	int64_t timeout = -1;

	for (int a = 1; a < argc; a++) {
		bool missing = false;

		if (strcmp(argv[a], "--json") == 0) {
			cli->json = true;
		} else if ((v = cli_opt(argc, argv, &a, "--timeout", &missing)) != NULL) {
			if (cli_parse_duration(v, &timeout) < 0)
				return cli_usage("swarm wait", "ID [--timeout D]",
						 "bad duration '%s'", v);
		} else if (missing || id != NULL) {
			return cli_usage("swarm wait", "ID [--timeout D]",
					 "unexpected argument '%s'", argv[a]);
		} else {
			id = argv[a];
		}
	}
	if (id == NULL)
		return cli_usage("swarm wait", "ID [--timeout D]", "a swarm id is required");
	return sw_wait_id(cli, id, timeout, false);
}

static int
sw_event_line(const char *line, size_t len, void *arg)
{
	(void)arg;
	fwrite(line, 1, len, stdout);
	putchar('\n');
	fflush(stdout);
	return 0;
}

static int
sw_events(struct cli *cli, int argc, char **argv)
{
	char *path;
	int r;

	if (argc != 2)
		return cli_usage("swarm events", "ID", "a swarm id is required");
	path = cli_path_id("/v1/swarms/", argv[1], "/events");
	signal(SIGINT, sw_on_signal);
	r = cli_stream(cli, "GET", path, NULL, sw_event_line, NULL, &sw_stop);
	free(path);
	return r < 0 ? 0 : r;
}

static int
sw_rm(struct cli *cli, int argc, char **argv)
{
	int rc = 0;

	if (argc < 2)
		return cli_usage("swarm rm", "ID…", "a swarm id is required");
	for (int a = 1; a < argc; a++) {
		char *path = cli_path_id("/v1/swarms/", argv[a], "");
		json_t *ret = NULL;

		if (cli_call(cli, "DELETE", path, NULL, &ret) != 0)
			rc = CLI_EXIT_ERR;
		else
			printf("%s\n", argv[a]);
		json_decref(ret);
		free(path);
	}
	return rc;
}

static const struct cli_cmd swarm_subs[] = {
	{ .name = "create", .args = "--agents N [options] [--task CMD]… [--wait]", .fn = sw_create,
	  .help = "start a swarm of N agents (each in its own sandbox) and print its id" },
	{ .name = "ls", .args = "", .fn = sw_ls, .help = "list this tenant's swarms" },
	{ .name = "show", .args = "ID", .fn = sw_show,
	  .help = "counts, success rate, cost and per-task outcomes" },
	{ .name = "wait", .args = "ID [--timeout D]", .fn = sw_wait,
	  .help = "wait until the swarm completed (exit 0) or failed (exit 1)" },
	{ .name = "events", .args = "ID", .fn = sw_events,
	  .help = "stream the swarm's state changes as NDJSON" },
	{ .name = "rm", .args = "ID…", .fn = sw_rm,
	  .help = "cancel the tasks and destroy every agent" },
	{ .name = NULL },
};

const struct cli_cmd cli_cmd_swarm = {
	.name = "swarm",
	.help = "swarms of agents",
	.subs = swarm_subs,
};

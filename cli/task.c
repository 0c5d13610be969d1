/*
 * sandpit task add|show: a swarm's tasks through the control API, a line by
 * default and the API's JSON with --json. The daemon validates.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int
task_add(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "SWARM [--priority N] [--timeout D] -- CMD…  |  SWARM --sh 'SCRIPT'";
	json_t *task = json_object(), *cmd = json_array(), *ret = NULL;
	const char *swarm = NULL, *v;
	char *path;
	int a, r = CLI_EXIT_USAGE;

	for (a = 1; a < argc; a++) {
		bool missing = false;

		if (strcmp(argv[a], "--json") == 0) {
			cli->json = true;
		} else if (strcmp(argv[a], "--") == 0) {
			a++;
			break;
		} else if ((v = cli_opt(argc, argv, &a, "--priority", &missing)) != NULL) {
			json_object_set_new(task, "priority", json_integer(atoll(v)));
		} else if ((v = cli_opt(argc, argv, &a, "--timeout", &missing)) != NULL) {
			int64_t ms;

			if (cli_parse_duration(v, &ms) < 0) {
				r = cli_usage("task add", usage, "bad duration '%s'", v);
				goto out;
			}
			json_object_set_new(task, "timeout_ms", json_integer(ms));
		} else if ((v = cli_opt(argc, argv, &a, "--sh", &missing)) != NULL) {
			json_array_append_new(cmd, json_string("sh"));
			json_array_append_new(cmd, json_string("-c"));
			json_array_append_new(cmd, json_string(v));
		} else if (!missing && swarm == NULL && argv[a][0] != '-') {
			swarm = argv[a];
		} else {
			r = cli_usage("task add", usage, missing ? "'%s' needs a value" :
				      "unexpected argument '%s'", argv[a]);
			goto out;
		}
	}
	for (; a < argc; a++)
		json_array_append_new(cmd, json_string(argv[a]));
	if (swarm == NULL || json_array_size(cmd) == 0) {
		r = cli_usage("task add", usage, "a swarm and a command are required");
		goto out;
	}
	json_object_set(task, "cmd", cmd);
	path = cli_path_id("/v1/swarms/", swarm, "/tasks");
	r = cli_call(cli, "POST", path, task, &ret);
	free(path);
	if (r != 0)
		goto out;
	if (cli->json)
		cli_print_json(ret);
	else
		printf("%lld\n", (long long)json_integer_value(json_object_get(json_array_get(
		       json_object_get(ret, "tasks"), 0), "id")));
out:
	json_decref(ret);
	json_decref(task);
	json_decref(cmd);
	return r;
}

static int
task_show(struct cli *cli, int argc, char **argv)
{
	json_t *ret;
	int r;

	if ((r = cli_show(cli, argc, argv, "task show", "/v1/tasks/", "task", &ret)) != 0 ||
	    ret == NULL)
		return r;
	printf("task %lld of %s: %s", cli_jint(ret, "id", NULL), cli_jstr(ret, "swarm"),
	       cli_jstr(ret, "state"));
	if (json_is_integer(json_object_get(ret, "exit_code")))
		printf(", exit %lld", cli_jint(ret, "exit_code", NULL));
	printf(", %lld attempt(s)", cli_jint(ret, "attempts", NULL));
	if (json_is_string(json_object_get(ret, "reason")))
		printf(", %s", cli_jstr(ret, "reason"));
	putchar('\n');
	if (json_is_string(json_object_get(ret, "output")))
		fputs(json_string_value(json_object_get(ret, "output")), stdout);
	json_decref(ret);
	return 0;
}

static const struct cli_cmd task_subs[] = {
	{ .name = "add", .args = "SWARM [--priority N] [--timeout D] -- CMD…", .fn = task_add,
	  .help = "queue a task for a swarm's agents and print its id" },
	{ .name = "show", .args = "ID", .fn = task_show,
	  .help = "a task's state, exit code, attempts and output" },
	{ .name = NULL },
};

const struct cli_cmd cli_cmd_task = {
	.name = "task",
	.help = "tasks of swarms",
	.subs = task_subs,
};

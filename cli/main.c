/*
 * sandpit: the command-line client of sandpitd's control socket. main.c owns
 * the global options and the command table; each command group lives in its
 * own file and joins with one line in commands[] below.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

static const struct cli_cmd *const commands[] = {
	&cli_cmd_status,
	&cli_cmd_run,
	&cli_cmd_sandbox,
	&cli_cmd_image,
	&cli_cmd_mem,
	&cli_cmd_swarm,
	&cli_cmd_task,
	NULL,
};

static void
help_group(FILE *f, const struct cli_cmd *g)
{
	for (const struct cli_cmd *s = g->subs; s->name != NULL; s++)
		fprintf(f, "  %s %s %s\n      %s\n", g->name, s->name, s->args, s->help);
}

static void
help(FILE *f)
{
	fprintf(f,
	    "usage: sandpit [--socket PATH] [--tenant NAME] [--json] COMMAND [ARGS…]\n"
	    "\n"
	    "Global options:\n"
	    "  --socket PATH   sandpitd's control socket (default: $SANDPIT_SOCKET, else\n"
	    "                  /run/sandpit/sandpitd.sock as root, $XDG_RUNTIME_DIR/sandpit/\n"
	    "                  sandpitd.sock otherwise, or ./var/sandpitd.sock)\n"
	    "  --tenant NAME   act for this tenant (X-Sandpit-Tenant)\n"
	    "  --json          print the API's JSON instead of tables\n"
	    "  -h, --help      this help;  --version  the version\n"
	    "\n"
	    "Commands:\n");
	for (size_t i = 0; commands[i] != NULL; i++) {
		const struct cli_cmd *c = commands[i];

		if (c->subs != NULL)
			help_group(f, c);
		else
			fprintf(f, "  %s %s\n      %s\n", c->name, c->args, c->help);
	}
	fprintf(f,
	    "\nLimit options (run, sandbox create): --cpus N --memory SIZE --pids N\n"
	    "  --nofile N --tmp SIZE --work SIZE --image IMG --provider NAME\n"
	    "Exec options (run, sandbox exec): --env K=V (repeatable) --timeout DUR\n"
	    "  --workdir DIR\n"
	    "Exit status: 0, 1 on errors, 2 on usage errors; run and exec return the\n"
	    "command's own status (137 when killed for memory, 124 on timeout).\n");
}

static int
run_group(struct cli *cli, const struct cli_cmd *g, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		if (argc < 2) {
			fprintf(stderr, "sandpit: %s needs a subcommand\n", g->name);
			help_group(stderr, g);
			return CLI_EXIT_USAGE;
		}
		help_group(stdout, g);
		return 0;
	}
	for (const struct cli_cmd *s = g->subs; s->name != NULL; s++) {
		if (strcmp(s->name, argv[1]) == 0)
			return s->fn(cli, argc - 1, argv + 1);
	}
	fprintf(stderr, "sandpit: unknown command '%s %s'\n", g->name, argv[1]);
	help_group(stderr, g);
	return CLI_EXIT_USAGE;
}

int
main(int argc, char **argv)
{
	struct cli cli = { 0 };
	char sockbuf[4096];
	bool missing = false;
	const char *v;
	int i, r = CLI_EXIT_USAGE;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if ((v = cli_opt(argc, argv, &i, "--socket", &missing)) != NULL)
			cli.socket = v;
		else if ((v = cli_opt(argc, argv, &i, "--tenant", &missing)) != NULL)
			cli.tenant = v;
		else if (missing) {
			fprintf(stderr, "sandpit: %s needs a value\n", argv[i]);
			return CLI_EXIT_USAGE;
		} else if (strcmp(argv[i], "--json") == 0)
			cli.json = true;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			help(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("sandpit %s\n", SANDPIT_VERSION);
			return 0;
		} else {
			fprintf(stderr, "sandpit: unknown option '%s' (see sandpit --help)\n", argv[i]);
			return CLI_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		help(stderr);
		return CLI_EXIT_USAGE;
	}
	if (cli.socket == NULL)
		cli.socket = cli_default_socket(sockbuf, sizeof(sockbuf));
	if (strcmp(argv[i], "help") == 0) {
		help(stdout);
		return 0;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		cli_err("cannot initialise libcurl");
		return CLI_EXIT_ERR;
	}
	for (size_t k = 0; commands[k] != NULL; k++) {
		const struct cli_cmd *c = commands[k];

		if (strcmp(c->name, argv[i]) != 0)
			continue;
		r = c->subs != NULL ? run_group(&cli, c, argc - i, argv + i) :
		    c->fn(&cli, argc - i, argv + i);
		goto out;
	}
	fprintf(stderr, "sandpit: unknown command '%s' (see sandpit --help)\n", argv[i]);
out:
	curl_global_cleanup();
	return r;
}

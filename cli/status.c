/*
 * sandpit status: GET /v1/health and /v1/info as a short summary. It only
 * reads; it changes nothing on the daemon.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Scalars of an object as "k=v k=v"; nested values are skipped. */
static void
print_scalars(json_t *obj)
{
	const char *k;
	json_t *v;
	bool first = true;

	json_object_foreach(obj, k, v) {
		char *s;

		if (json_is_object(v) || json_is_array(v))
			continue;
		s = json_dumps(v, JSON_ENCODE_ANY);
		if (s == NULL)
			continue;
		printf("%s%s=%s", first ? " " : " ", k, json_is_string(v) ? json_string_value(v) : s);
		first = false;
		free(s);
	}
}

static const char *
str(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : "-";
}

static int
status_main(struct cli *cli, int argc, char **argv)
{
	json_t *health = NULL, *info = NULL, *a, *v;
	size_t i;
	int r;

	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			cli->json = true;
		else
			return cli_usage("status", "", "unexpected argument '%s'", argv[k]);
	}
	if ((r = cli_call(cli, "GET", "/v1/health", NULL, &health)) != 0)
		return r;
	if ((r = cli_call(cli, "GET", "/v1/info", NULL, &info)) != 0)
		goto out;
	if (cli->json) {
		json_t *both = json_pack("{s:O?,s:O?}", "health", health, "info", info);

		json_dumpf(both, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(both);
		goto out;
	}
	printf("sandpitd %s: %s\n", str(info, "version"), str(health, "status"));
	printf("instance:   %s\n", str(info, "instance"));
	printf("socket:     %s\n", str(info, "socket"));
	printf("state dir:  %s\n", str(info, "state_dir"));
	a = json_object_get(info, "providers");
	printf("providers: ");
	if (json_array_size(a) == 0)
		printf(" none");
	json_array_foreach(a, i, v) {
		json_t *caps = json_object_get(v, "caps"), *c;
		size_t j;

		printf("%s %s [", i > 0 ? "\n           " : "", str(v, "name"));
		json_array_foreach(caps, j, c)
			printf("%s%s", j > 0 ? "," : "", json_is_string(c) ? json_string_value(c) : "?");
		printf("]");
		if (json_is_object(json_object_get(v, "info")))
			print_scalars(json_object_get(v, "info"));
	}
	printf("\nworkers:   ");
	a = json_object_get(info, "worker_endpoints");
	if (json_array_size(a) == 0)
		printf(" -");
	json_array_foreach(a, i, v)
		printf(" %s", json_is_string(v) ? json_string_value(v) : "?");
	printf("\n");
out:
	json_decref(health);
	json_decref(info);
	return r;
}

const struct cli_cmd cli_cmd_status = {
	.name = "status",
	.args = "",
	.help = "show whether sandpitd answers, its version, providers and endpoints",
	.fn = status_main,
};

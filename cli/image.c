/*
 * sandpit image: the worker image. `build` asks the daemon to build
 * sandpit/worker:<version> locally (no registry); the daemon does the work.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int
image_build(struct cli *cli, int argc, char **argv)
{
	json_t *body, *res = NULL;
	int r;

	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			cli->json = true;
		else
			return cli_usage("image build", "", "unexpected argument '%s'", argv[k]);
	}
	if (!cli->json)
		fprintf(stderr, "building the worker image…\n");
	body = json_object();
	r = cli_call(cli, "POST", "/v1/images/build", body, &res);
	json_decref(body);
	if (r != 0)
		return r;
	if (cli->json) {
		json_dumpf(res, stdout, JSON_COMPACT);
		putchar('\n');
	} else {
		json_t *img = json_object_get(res, "image"), *id = json_object_get(res, "id");

		printf("%s %s\n", json_is_string(img) ? json_string_value(img) : "?",
		    json_is_string(id) ? json_string_value(id) : "");
	}
	json_decref(res);
	return 0;
}

static const struct cli_cmd image_subs[] = {
	{ .name = "build", .args = "", .fn = image_build,
	  .help = "build the worker image sandpit/worker:<version> locally" },
	{ .name = NULL },
};

const struct cli_cmd cli_cmd_image = {
	.name = "image",
	.help = "worker image",
	.subs = image_subs,
};

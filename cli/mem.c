/*
 * sandpit mem add|search|show|rm|consolidate: the memory routes of the
 * control API as commands, tables by default and the API's JSON with
 * --json. It only builds requests and prints answers; the daemon validates.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MEM_MAX_FILE (16u << 20)

static char *
mem_read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *buf;
	size_t n = 0, cap = 4096;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(cap);
	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n - 1, f);

		n += got;
		if (got == 0)
			break;
		if (n + 1 == cap) {
			if (cap >= MEM_MAX_FILE) {
				snprintf(err, errlen, "%s: larger than %u bytes", path, MEM_MAX_FILE);
				free(buf);
				buf = NULL;
				break;
			}
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	if (buf != NULL)
		buf[n] = '\0';
	else if (err[0] == '\0')
		snprintf(err, errlen, "out of memory");
	if (f != stdin)
		fclose(f);
	return buf;
}

static int
mem_add(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "[--file F|-] | --title T --content C|--content-file F "
		"[--description D] [--tag X]… [--domain D] [--namespace N] "
		"[--outcome success|failure] [--confidence X]";
	static const char *const strs[] = { "--title", "--content", "--description", "--domain",
					    "--namespace", "--outcome", NULL };
	json_t *body = json_object(), *tags = json_array(), *ret = NULL;
	const char *file = NULL, *v;
	char err[256] = "";
	int r = CLI_EXIT_USAGE;

	for (int a = 1; a < argc; a++) {
		bool missing = false, done = false;

		if (strcmp(argv[a], "--json") == 0) {
			cli->json = true;
			continue;
		}
		for (size_t s = 0; strs[s] != NULL && !done; s++)
			if ((v = cli_opt(argc, argv, &a, strs[s], &missing)) != NULL) {
				json_object_set_new(body, strs[s] + 2, json_string(v));
				done = true;
			}
		if (done)
			continue;
		if ((v = cli_opt(argc, argv, &a, "--tag", &missing)) != NULL) {
			json_array_append_new(tags, json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--confidence", &missing)) != NULL) {
			char *end;
			double d = strtod(v, &end);

			if (*end != '\0' || end == v) {
				r = cli_usage("mem add", usage, "--confidence wants a number");
				goto out;
			}
			json_object_set_new(body, "confidence", json_real(d));
		} else if ((v = cli_opt(argc, argv, &a, "--content-file", &missing)) != NULL) {
			char *text = mem_read_file(v, err, sizeof(err));

			if (text == NULL) {
				cli_err("%s", err);
				r = CLI_EXIT_ERR;
				goto out;
			}
			json_object_set_new(body, "content", json_string(text));
			free(text);
		} else if ((v = cli_opt(argc, argv, &a, "--file", &missing)) != NULL) {
			file = v;
		} else {
			r = cli_usage("mem add", usage, missing ? "'%s' needs a value" :
				      "unexpected argument '%s'", argv[a]);
			goto out;
		}
		if (missing) {
			r = cli_usage("mem add", usage, "'%s' needs a value", argv[a]);
			goto out;
		}
	}
	if (file != NULL) {
		char *text;
		json_error_t je;

		if (json_object_size(body) > 0 || json_array_size(tags) > 0) {
			r = cli_usage("mem add", usage, "--file replaces the other options");
			goto out;
		}
		if ((text = mem_read_file(file, err, sizeof(err))) == NULL) {
			cli_err("%s", err);
			r = CLI_EXIT_ERR;
			goto out;
		}
		json_decref(body);
		body = json_loads(text, 0, &je);
		free(text);
		if (body == NULL) {
			cli_err("%s:%d: %s", file, je.line, je.text);
			r = CLI_EXIT_ERR;
			goto out;
		}
	} else {
		if (json_object_get(body, "title") == NULL || json_object_get(body, "content") == NULL) {
			r = cli_usage("mem add", usage, "--title and --content are required");
			goto out;
		}
		if (json_array_size(tags) > 0)
			json_object_set(body, "tags", tags);
	}
	if ((r = cli_call(cli, "POST", "/v1/memories", body, &ret)) != 0)
		goto out;
	if (cli->json) {
		cli_print_json(ret);
	} else if (json_is_array(json_object_get(ret, "items"))) {
		size_t i;
		json_t *it;

		json_array_foreach(json_object_get(ret, "items"), i, it)
			printf("%s\n", cli_jstr(it, "id"));
	} else {
		printf("%s\n", cli_jstr(ret, "id"));
	}
	r = 0;
out:
	json_decref(ret);
	json_decref(body);
	json_decref(tags);
	return r;
}

static int
mem_search(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "QUERY… [-k N] [--domain D] [--namespace N] [--tag X]… "
		"[--outcome O] [--min-confidence X] [--max-age-days N] [--hybrid]";
	json_t *body = json_object(), *tags = json_array(), *ret = NULL, *res, *it;
	char query[4096] = "";
	size_t qlen = 0, i;
	const char *v;
	int r = CLI_EXIT_USAGE;

	for (int a = 1; a < argc; a++) {
		bool missing = false;

		if (strcmp(argv[a], "--json") == 0) {
			cli->json = true;
		} else if (strcmp(argv[a], "--hybrid") == 0) {
			json_object_set_new(body, "hybrid", json_true());
		} else if ((v = cli_opt(argc, argv, &a, "-k", &missing)) != NULL) {
			char *end;
			long k = strtol(v, &end, 10);

			if (*end != '\0' || end == v) {
				r = cli_usage("mem search", usage, "-k wants an integer");
				goto out;
			}
			json_object_set_new(body, "k", json_integer(k));
		} else if ((v = cli_opt(argc, argv, &a, "--domain", &missing)) != NULL) {
			json_object_set_new(body, "domain", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--namespace", &missing)) != NULL) {
			json_object_set_new(body, "namespace", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--outcome", &missing)) != NULL) {
			json_object_set_new(body, "outcome", json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--tag", &missing)) != NULL) {
			json_array_append_new(tags, json_string(v));
		} else if ((v = cli_opt(argc, argv, &a, "--min-confidence", &missing)) != NULL ||
			   (v = cli_opt(argc, argv, &a, "--max-age-days", &missing)) != NULL) {
			char *end;
			double d = strtod(v, &end);

			if (*end != '\0' || end == v) {
				r = cli_usage("mem search", usage, "'%s' wants a number", argv[a - 1]);
				goto out;
			}
			json_object_set_new(body, strncmp(argv[a - 1], "--min", 5) == 0 ?
					    "min_confidence" : "max_age_days", json_real(d));
		} else if (missing || argv[a][0] == '-') {
			r = cli_usage("mem search", usage, missing ? "'%s' needs a value" :
				      "unexpected option '%s'", argv[a]);
			goto out;
		} else {
			int n = snprintf(query + qlen, sizeof(query) - qlen, "%s%s",
					 qlen ? " " : "", argv[a]);

			if (n < 0 || (size_t)n >= sizeof(query) - qlen) {
				r = cli_usage("mem search", usage, "query too long");
				goto out;
			}
			qlen += (size_t)n;
		}
	}
	if (qlen == 0) {
		r = cli_usage("mem search", usage, "no query given");
		goto out;
	}
	json_object_set_new(body, "query", json_string(query));
	if (json_array_size(tags) > 0)
		json_object_set(body, "tags", tags);
	if ((r = cli_call(cli, "POST", "/v1/memories/search", body, &ret)) != 0)
		goto out;
	if (cli->json) {
		cli_print_json(ret);
		goto out;
	}
	res = json_object_get(ret, "results");
	{
		static const char *const header[] = { "ID", "SCORE", "SIM", "OUTCOME", "TITLE" };
		size_t n = json_array_size(res);
		char **cells = calloc(n * 5 + 1, sizeof(*cells));

		json_array_foreach(res, i, it) {
			json_t *parts = json_object_get(it, "parts");
			const char *oc = cli_jstr(it, "outcome");

			cells[i * 5] = strdup(cli_jstr(it, "id"));
			if (asprintf(&cells[i * 5 + 1], "%.3f",
				     json_number_value(json_object_get(it, "score"))) < 0)
				cells[i * 5 + 1] = NULL;
			if (asprintf(&cells[i * 5 + 2], "%.3f",
				     json_number_value(json_object_get(parts, "sim"))) < 0)
				cells[i * 5 + 2] = NULL;
			cells[i * 5 + 3] = strdup(oc);
			cells[i * 5 + 4] = strdup(cli_jstr(it, "title"));
		}
		cli_table_print(stdout, header, 5, (const char *const *)cells, n);
		for (i = 0; i < n * 5; i++)
			free(cells[i]);
		free(cells);
	}
out:
	json_decref(ret);
	json_decref(body);
	json_decref(tags);
	return r;
}

static int
mem_show(struct cli *cli, int argc, char **argv)
{
	static const char *const keys[] = { "id", "title", "description", "content", "tags",
		"domain", "namespace", "outcome", "confidence", "usage_count", "success_count",
		"failure_count", "state", "model", "agent_id", "task_id", "created_ms" };
	json_t *it;
	int r;

	if ((r = cli_show(cli, argc, argv, "mem show", "/v1/memories/", "memory", &it)) != 0 ||
	    it == NULL)
		return r;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(it, keys[i]);
		char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

		printf("%-14s %s\n", keys[i], json_is_string(v) ? json_string_value(v) :
		       s != NULL ? s : "-");
		free(s);
	}
	json_decref(it);
	return 0;
}

static int
mem_rm(struct cli *cli, int argc, char **argv)
{
	return cli_delete_each(cli, argc, argv, "mem rm", "/v1/memories/", "memory");
}

static int
mem_consolidate(struct cli *cli, int argc, char **argv)
{
	json_t *ret = NULL, *body;
	int r;

	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--json") == 0)
			cli->json = true;
		else
			return cli_usage("mem consolidate", "", "unexpected argument '%s'", argv[a]);
	}
	body = json_object();
	r = cli_call(cli, "POST", "/v1/memories/consolidate", body, &ret);
	json_decref(body);
	if (r != 0)
		return r;
	if (cli->json)
		cli_print_json(ret);
	else
		printf("examined %lld, merged %lld, contradictions %lld, quarantined %lld, "
		       "pruned %lld\n",
		       (long long)json_integer_value(json_object_get(ret, "examined")),
		       (long long)json_integer_value(json_object_get(ret, "merged")),
		       (long long)json_integer_value(json_object_get(ret, "contradictions")),
		       (long long)json_integer_value(json_object_get(ret, "quarantined")),
		       (long long)json_integer_value(json_object_get(ret, "pruned")));
	json_decref(ret);
	return 0;
}

static const struct cli_cmd mem_subs[] = {
	{ .name = "add", .args = "--title T --content C [options] | --file F", .fn = mem_add,
	  .help = "store a memory item (or a batch from a JSON file) and print its id" },
	{ .name = "search", .args = "QUERY… [-k N] [filters] [--hybrid]", .fn = mem_search,
	  .help = "retrieve the most relevant items, with their scores" },
	{ .name = "show", .args = "ID", .fn = mem_show,
	  .help = "show one item" },
	{ .name = "rm", .args = "ID…", .fn = mem_rm,
	  .help = "delete items" },
	{ .name = "consolidate", .args = "", .fn = mem_consolidate,
	  .help = "merge duplicates, link contradictions, prune (this tenant)" },
	{ .name = NULL },
};

const struct cli_cmd cli_cmd_mem = {
	.name = "mem",
	.help = "reasoning memory",
	.subs = mem_subs,
};

/*
 * The CLI's pure parts: socket path defaults, size and duration parsing, the
 * option parser shared by run/exec/create, NDJSON framing, base64 and table
 * rendering, and the two message printers. Nothing here talks to the network
 * or exits; test_cli covers it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

void
cli_err(const char *fmt, ...)
{
	va_list ap;

	fputs("sandpit: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
cli_usage(const char *cmd, const char *args, const char *fmt, ...)
{
	va_list ap;

	fputs("sandpit: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: sandpit [global options] %s%s%s\n", cmd,
	    args != NULL && *args != '\0' ? " " : "", args != NULL ? args : "");
	return CLI_EXIT_USAGE;
}

const char *
cli_default_socket(char *buf, size_t len)
{
	const char *env = getenv("SANDPIT_SOCKET");
	const char *xdg;

	if (env != NULL && *env != '\0')
		return env;
	if (geteuid() == 0)
		return "/run/sandpit/sandpitd.sock";
	xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg != NULL && *xdg != '\0') {
		snprintf(buf, len, "%s/sandpit/sandpitd.sock", xdg);
		return buf;
	}
	return "./var/sandpitd.sock";
}

/* A non-negative decimal number with an optional fraction; end set past it. */
static int
parse_number(const char *s, double *v, const char **end)
{
	char *e;

	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	*v = strtod(s, &e);
	if (errno != 0 || !isfinite(*v))
		return -ERANGE;
	*end = e;
	return 0;
}

int
cli_parse_size(const char *s, int64_t *ret)
{
	static const struct { const char *suffix; double mult; } units[] = {
		{ "", 1 }, { "b", 1 },
		{ "k", 1024.0 }, { "kb", 1024.0 }, { "kib", 1024.0 },
		{ "m", 1048576.0 }, { "mb", 1048576.0 }, { "mib", 1048576.0 },
		{ "g", 1073741824.0 }, { "gb", 1073741824.0 }, { "gib", 1073741824.0 },
		{ "t", 1099511627776.0 }, { "tb", 1099511627776.0 }, { "tib", 1099511627776.0 },
	};
	const char *end;
	double v;
	int r;

	if ((r = parse_number(s, &v, &end)) < 0)
		return r;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix) != 0)
			continue;
		v *= units[i].mult;
		if (v >= 9.0e18)
			return -ERANGE;
		if (units[i].mult == 1 && v != (double)(int64_t)v)
			return -EINVAL;	/* "1.5" bytes */
		*ret = (int64_t)v;
		return 0;
	}
	return -EINVAL;
}

int
cli_parse_duration(const char *s, int64_t *ret)
{
	static const struct { const char *suffix; double ms; } units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "min", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	const char *end;
	double v;
	int r;

	if ((r = parse_number(s, &v, &end)) < 0)
		return r;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		v *= units[i].ms;
		if (v >= 9.0e15)
			return -ERANGE;
		*ret = (int64_t)(v + 0.5);	/* no libm: v is non-negative */
		return 0;
	}
	return -EINVAL;
}

static int opt_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
opt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int
parse_count(const char *v, json_int_t *ret)
{
	char *end;
	long long n;

	if (!isdigit((unsigned char)v[0]))
		return -EINVAL;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || n <= 0)
		return -EINVAL;
	*ret = n;
	return 0;
}

int
cli_parse_run_opts(int argc, char **argv, unsigned which, struct cli_run_opts *o,
		   bool *json, char *err, size_t errlen)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->spec = json_object();
	o->env = json_object();
	o->timeout_ms = -1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		char name[32];
		const char *eq;
		size_t nlen;

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;		/* the command starts */
		if (strncmp(a, "--", 2) != 0)
			return opt_err(err, errlen, "unknown option '%s'", a);
		eq = strchr(a, '=');
		nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
		if (nlen >= sizeof(name))
			return opt_err(err, errlen, "unknown option '%s'", a);
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		if (strcmp(name, "--json") == 0 || strcmp(name, "--keep") == 0) {
			if (eq != NULL)
				return opt_err(err, errlen, "%s takes no value", name);
			if (name[2] == 'j')
				*json = true;
			else if (which & CLI_OPT_KEEP)
				o->keep = true;
			else
				return opt_err(err, errlen, "unknown option '%s'", a);
			continue;
		}
		if (eq != NULL)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			return opt_err(err, errlen, "%s needs a value", name);

		if (which & CLI_OPT_SPEC) {
			int64_t n64;
			json_int_t n;

			if (strcmp(name, "--cpus") == 0) {
				char *end;
				double c = strtod(val, &end);

				if (!isdigit((unsigned char)val[0]) || *end != '\0' || !(c > 0) || c > 1024)
					return opt_err(err, errlen, "--cpus: '%s' is not a positive number", val);
				json_object_set_new(o->spec, "cpus", json_real(c));
				continue;
			}
			if (strcmp(name, "--memory") == 0 || strcmp(name, "--tmp") == 0 ||
			    strcmp(name, "--work") == 0) {
				if (cli_parse_size(val, &n64) < 0 || n64 <= 0)
					return opt_err(err, errlen, "%s: '%s' is not a size (512m, 1g, …)",
					    name, val);
				json_object_set_new(o->spec, name + 2, json_integer(n64));
				continue;
			}
			if (strcmp(name, "--pids") == 0 || strcmp(name, "--nofile") == 0) {
				if (parse_count(val, &n) < 0)
					return opt_err(err, errlen, "%s: '%s' is not a positive integer",
					    name, val);
				json_object_set_new(o->spec, name + 2, json_integer(n));
				continue;
			}
			if (strcmp(name, "--image") == 0 || strcmp(name, "--provider") == 0) {
				if (*val == '\0')
					return opt_err(err, errlen, "%s: empty value", name);
				json_object_set_new(o->spec, name + 2, json_string(val));
				continue;
			}
		}
		if (which & CLI_OPT_EXEC) {
			if (strcmp(name, "--env") == 0) {
				const char *e = strchr(val, '=');
				char *k;

				if (e == NULL || e == val)
					return opt_err(err, errlen, "--env: '%s' is not K=V", val);
				k = strndup(val, (size_t)(e - val));
				if (k == NULL)
					abort();
				json_object_set_new(o->env, k, json_string(e + 1));
				free(k);
				continue;
			}
			if (strcmp(name, "--timeout") == 0) {
				if (cli_parse_duration(val, &o->timeout_ms) < 0 || o->timeout_ms <= 0)
					return opt_err(err, errlen,
					    "--timeout: '%s' is not a duration (30s, 500ms, 2m, …)", val);
				continue;
			}
			if (strcmp(name, "--workdir") == 0) {
				o->workdir = val;
				continue;
			}
		}
		return opt_err(err, errlen, "unknown option '%s'", name);
	}
	o->cmd = argv + i;
	o->ncmd = argc - i;
	if ((which & CLI_OPT_CMD) && o->ncmd == 0)
		return opt_err(err, errlen, "no command given (put it after --)");
	if (!(which & CLI_OPT_CMD) && o->ncmd > 0)
		return opt_err(err, errlen, "unexpected argument '%s'", o->cmd[0]);
	return 0;
}

void
cli_run_opts_done(struct cli_run_opts *o)
{
	json_decref(o->spec);
	json_decref(o->env);
	o->spec = o->env = NULL;
}

void
cli_lines_init(struct cli_lines *l, size_t max)
{
	l->buf = NULL;
	l->len = 0;
	l->max = max;
}

int
cli_lines_feed(struct cli_lines *l, const char *data, size_t n,
	       int (*line)(const char *line, size_t len, void *arg), void *arg)
{
	while (n > 0) {
		const char *nl = memchr(data, '\n', n);
		size_t take = nl != NULL ? (size_t)(nl - data) : n;
		char *nb;
		int r;

		if (l->len + take > l->max)
			return -E2BIG;
		nb = realloc(l->buf, l->len + take + 1);
		if (nb == NULL)
			abort();
		l->buf = nb;
		memcpy(l->buf + l->len, data, take);
		l->len += take;
		l->buf[l->len] = '\0';
		if (nl == NULL)
			return 0;
		data += take + 1;
		n -= take + 1;
		if (l->len > 0 && l->buf[l->len - 1] == '\r')
			l->buf[--l->len] = '\0';
		r = l->len > 0 ? line(l->buf, l->len, arg) : 0;
		l->len = 0;
		if (r != 0)
			return r;
	}
	return 0;
}

int
cli_lines_finish(struct cli_lines *l,
		 int (*line)(const char *line, size_t len, void *arg), void *arg)
{
	int r = 0;

	if (l->len > 0)
		r = line(l->buf, l->len, arg);
	l->len = 0;
	return r;
}

void
cli_lines_done(struct cli_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = 0;
}

static int
b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

ssize_t
cli_b64_decode(const char *s, size_t n, unsigned char *out, size_t outlen)
{
	uint32_t acc = 0;
	size_t o = 0;
	int bits = 0;

	while (n > 0 && s[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)s[i]);

		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == outlen)
				return -E2BIG;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6)
		return -EINVAL;	/* a lone trailing character */
	return (ssize_t)o;
}

void
cli_table_print(FILE *f, const char *const *header, size_t ncols,
		const char *const *cells, size_t nrows)
{
	size_t w[16] = { 0 };

	if (ncols > 16)
		ncols = 16;
	for (size_t c = 0; c < ncols; c++) {
		w[c] = strlen(header[c]);
		for (size_t r = 0; r < nrows; r++) {
			const char *s = cells[r * ncols + c];
			size_t n = s != NULL ? strlen(s) : 1;

			if (n > w[c])
				w[c] = n;
		}
	}
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			const char *s = r == 0 ? header[c] : cells[(r - 1) * ncols + c];

			if (s == NULL)
				s = "-";
			if (c + 1 == ncols)
				fprintf(f, "%s\n", s);
			else
				fprintf(f, "%-*s  ", (int)w[c], s);
		}
	}
}

void
cli_format_age(time_t now, const char *when, char *out, size_t len)
{
	struct tm tm = { 0 };
	long long d;
	time_t t;

	if (when == NULL || strptime(when, "%Y-%m-%dT%H:%M:%S", &tm) == NULL) {
		snprintf(out, len, "-");
		return;
	}
	t = timegm(&tm);
	d = (long long)(now - t);
	if (d < 0)
		d = 0;
	if (d < 120)
		snprintf(out, len, "%llds", d);
	else if (d < 7200)
		snprintf(out, len, "%lldm", d / 60);
	else if (d < 172800)
		snprintf(out, len, "%lldh", d / 3600);
	else
		snprintf(out, len, "%lldd", d / 86400);
}

int
cli_show(struct cli *cli, int argc, char **argv, const char *cmd, const char *prefix,
	 const char *what, json_t **ret)
{
	const char *id = NULL;
	char *path;
	int r;

	*ret = NULL;
	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--json") == 0)
			cli->json = true;
		else if (id == NULL && argv[a][0] != '-')
			id = argv[a];
		else
			return cli_usage(cmd, "ID", "unexpected argument '%s'", argv[a]);
	}
	if (id == NULL)
		return cli_usage(cmd, "ID", "no %s id given", what);
	path = cli_path_id(prefix, id, "");
	r = cli_call(cli, "GET", path, NULL, ret);
	free(path);
	if (r == 0 && cli->json) {
		cli_print_json(*ret);
		json_decref(*ret);
		*ret = NULL;
	}
	return r;
}

void
cli_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
}

const char *
cli_jstr(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? json_string_value(v) : "-";
}

long long
cli_jint(json_t *o, const char *a, const char *b)
{
	json_t *v = json_object_get(o, a);

	if (b != NULL)
		v = json_object_get(v, b);
	return (long long)json_integer_value(v);
}

const char *
cli_opt(int argc, char **argv, int *i, const char *name, bool *missing)
{
	size_t n = strlen(name);

	if (strncmp(argv[*i], name, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int
cli_delete_each(struct cli *cli, int argc, char **argv, const char *cmd, const char *prefix,
		const char *what)
{
	int r = 0, n = 0;

	for (int a = 1; a < argc; a++)
		if (strcmp(argv[a], "--json") == 0)
			cli->json = true;
	for (int a = 1; a < argc; a++) {
		json_t *res = NULL;
		char *path;

		if (strcmp(argv[a], "--json") == 0)
			continue;
		n++;
		path = cli_path_id(prefix, argv[a], "");
		if (cli_call(cli, "DELETE", path, NULL, &res) != 0)
			r = CLI_EXIT_ERR;
		else if (cli->json) {
			json_dumpf(res, stdout, JSON_COMPACT);
			putchar('\n');
		} else
			printf("%s\n", argv[a]);
		free(path);
		json_decref(res);
	}
	if (n == 0)
		return cli_usage(cmd, "ID…", "no %s id given", what);
	return r;
}

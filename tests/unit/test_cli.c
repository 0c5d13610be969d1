/*
 * The CLI: its pure parts (sizes, durations, options, NDJSON framing, base64,
 * tables, ages), then its commands end to end against a fake API served by
 * the real ctl module on a Unix socket from a second thread. The commands'
 * stdout and stderr are captured through temporary files.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "cli.h"
#include "ctl.h"

/* --- pure parts --------------------------------------------------------- */

static void
test_sizes_durations(void **state)
{
	int64_t v;

	assert_int_equal(cli_parse_size("1024", &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(cli_parse_size("512m", &v), 0);
	assert_int_equal(v, 536870912);
	assert_int_equal(cli_parse_size("64KiB", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(cli_parse_size("1.5G", &v), 0);
	assert_int_equal(v, 1610612736);
	assert_int_equal(cli_parse_size("1.5", &v), -EINVAL);
	assert_int_equal(cli_parse_size("12x", &v), -EINVAL);
	assert_int_equal(cli_parse_size("", &v), -EINVAL);
	assert_int_equal(cli_parse_size("-1m", &v), -EINVAL);
	assert_int_equal(cli_parse_size("99999999t", &v), -ERANGE);

	assert_int_equal(cli_parse_duration("10", &v), 0);
	assert_int_equal(v, 10000);
	assert_int_equal(cli_parse_duration("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(cli_parse_duration("1.5s", &v), 0);
	assert_int_equal(v, 1500);
	assert_int_equal(cli_parse_duration("2m", &v), 0);
	assert_int_equal(v, 120000);
	assert_int_equal(cli_parse_duration("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_equal(cli_parse_duration("3 s", &v), -EINVAL);
	assert_int_equal(cli_parse_duration("s", &v), -EINVAL);
}

static void
test_run_opts(void **state)
{
	char *argv[] = { "run", "--cpus", "1.5", "--memory=512m", "--pids", "64",
	    "--env", "A=1", "--env=B=x=y", "--timeout", "2s", "--keep", "--json",
	    "--image", "img:1", "--", "sh", "-c", "echo hi", NULL };
	char *bad1[] = { "run", "--cpus", "0", "--", "x", NULL };
	char *bad2[] = { "run", "--memory", NULL };
	char *bad3[] = { "run", "--frobnicate", "--", "x", NULL };
	char *bad4[] = { "run", "--pids", "2", NULL };
	char *bad5[] = { "create", "--env", "A=1", NULL };
	char *bad6[] = { "create", "stray", NULL };
	char *nodash[] = { "exec", "--env", "K=V", "ls", "-l", NULL };
	struct cli_run_opts o;
	bool json = false;
	char err[256];

	assert_int_equal(cli_parse_run_opts(19, argv, CLI_OPT_SPEC | CLI_OPT_EXEC | CLI_OPT_KEEP |
	    CLI_OPT_CMD, &o, &json, err, sizeof(err)), 0);
	assert_true(json);
	assert_true(o.keep);
	assert_int_equal(o.timeout_ms, 2000);
	assert_int_equal(o.ncmd, 3);
	assert_string_equal(o.cmd[0], "sh");
	assert_string_equal(o.cmd[2], "echo hi");
	assert_true(json_real_value(json_object_get(o.spec, "cpus")) == 1.5);
	assert_int_equal(json_integer_value(json_object_get(o.spec, "memory")), 536870912);
	assert_int_equal(json_integer_value(json_object_get(o.spec, "pids")), 64);
	assert_string_equal(json_string_value(json_object_get(o.spec, "image")), "img:1");
	assert_string_equal(json_string_value(json_object_get(o.env, "A")), "1");
	assert_string_equal(json_string_value(json_object_get(o.env, "B")), "x=y");
	cli_run_opts_done(&o);

	assert_int_equal(cli_parse_run_opts(5, bad1, CLI_OPT_SPEC | CLI_OPT_CMD, &o, &json,
	    err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--cpus"));
	cli_run_opts_done(&o);
	assert_int_equal(cli_parse_run_opts(2, bad2, CLI_OPT_SPEC | CLI_OPT_CMD, &o, &json,
	    err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	cli_run_opts_done(&o);
	assert_int_equal(cli_parse_run_opts(4, bad3, CLI_OPT_SPEC | CLI_OPT_CMD, &o, &json,
	    err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown option"));
	cli_run_opts_done(&o);
	assert_int_equal(cli_parse_run_opts(3, bad4, CLI_OPT_SPEC | CLI_OPT_CMD, &o, &json,
	    err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no command"));
	cli_run_opts_done(&o);
	/* create takes no exec options and no command. */
	assert_int_equal(cli_parse_run_opts(3, bad5, CLI_OPT_SPEC, &o, &json, err, sizeof(err)),
	    -EINVAL);
	cli_run_opts_done(&o);
	assert_int_equal(cli_parse_run_opts(2, bad6, CLI_OPT_SPEC, &o, &json, err, sizeof(err)),
	    -EINVAL);
	cli_run_opts_done(&o);
	/* Without "--", the command starts at the first non-option; its own flags stay its own. */
	assert_int_equal(cli_parse_run_opts(5, nodash, CLI_OPT_EXEC | CLI_OPT_CMD, &o, &json,
	    err, sizeof(err)), 0);
	assert_int_equal(o.ncmd, 2);
	assert_string_equal(o.cmd[1], "-l");
	cli_run_opts_done(&o);
}

struct lines_seen {
	char got[8][64];
	int n;
	int stop_at;
};

static int
collect(const char *line, size_t len, void *arg)
{
	struct lines_seen *s = arg;

	assert_int_equal(strlen(line), len);
	if (s->n < 8)
		snprintf(s->got[s->n], sizeof(s->got[0]), "%s", line);
	s->n++;
	return s->n == s->stop_at ? 1 : 0;
}

static void
test_lines(void **state)
{
	struct lines_seen s = { .n = 0 };
	struct cli_lines l;
	const char *text = "{\"a\":1}\n\n{\"b\":2}\r\n{\"c\"";

	cli_lines_init(&l, 32);
	/* Byte by byte: framing must not depend on how reads split. */
	for (size_t i = 0; i < strlen(text); i++)
		assert_int_equal(cli_lines_feed(&l, text + i, 1, collect, &s), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.got[0], "{\"a\":1}");
	assert_string_equal(s.got[1], "{\"b\":2}");
	assert_int_equal(cli_lines_feed(&l, ":3}", 3, collect, &s), 0);
	assert_int_equal(cli_lines_finish(&l, collect, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.got[2], "{\"c\":3}");
	/* A line over the bound is refused, not buffered. */
	char big[40];
	memset(big, 'x', sizeof(big));
	assert_int_equal(cli_lines_feed(&l, big, sizeof(big), collect, &s), -E2BIG);
	cli_lines_done(&l);
	/* A handler can stop the feed. */
	cli_lines_init(&l, 32);
	s.n = 0;
	s.stop_at = 1;
	assert_int_equal(cli_lines_feed(&l, "a\nb\n", 4, collect, &s), 1);
	assert_int_equal(s.n, 1);
	cli_lines_done(&l);
}

static void
test_b64_table_age(void **state)
{
	unsigned char out[16];
	char *buf = NULL, age[16];
	size_t len = 0;
	FILE *f;

	assert_int_equal(cli_b64_decode("aGk=", 4, out, sizeof(out)), 2);
	assert_memory_equal(out, "hi", 2);
	assert_int_equal(cli_b64_decode("/w==", 4, out, sizeof(out)), 1);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(cli_b64_decode("aGVsbG8", 7, out, sizeof(out)), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(cli_b64_decode("a*==", 4, out, sizeof(out)), -EINVAL);
	assert_int_equal(cli_b64_decode("aGVsbG8", 7, out, 3), -E2BIG);

	f = open_memstream(&buf, &len);
	assert_non_null(f);
	{
		const char *const hdr[] = { "ID", "STATE", "IMAGE" };
		const char *const cells[] = {
			"sb-1", "running", "img",
			"sb-123456", NULL, "x",
		};

		cli_table_print(f, hdr, 3, cells, 2);
	}
	fclose(f);
	assert_string_equal(buf,
	    "ID         STATE    IMAGE\n"
	    "sb-1       running  img\n"
	    "sb-123456  -        x\n");
	free(buf);

	cli_format_age(1000000000 + 42, "2001-09-09T01:46:40Z", age, sizeof(age));
	assert_string_equal(age, "42s");
	cli_format_age(1000000000 + 3 * 3600, "2001-09-09T01:46:40Z", age, sizeof(age));
	assert_string_equal(age, "3h");
	cli_format_age(1000000000 + 5 * 86400, "2001-09-09T01:46:40Z", age, sizeof(age));
	assert_string_equal(age, "5d");
	cli_format_age(0, "yesterday", age, sizeof(age));
	assert_string_equal(age, "-");
}

static void
test_default_socket(void **state)
{
	char buf[256];

	setenv("SANDPIT_SOCKET", "/tmp/x.sock", 1);
	assert_string_equal(cli_default_socket(buf, sizeof(buf)), "/tmp/x.sock");
	unsetenv("SANDPIT_SOCKET");
	/* Tests run as root. */
	if (geteuid() == 0)
		assert_string_equal(cli_default_socket(buf, sizeof(buf)), "/run/sandpit/sandpitd.sock");
}

/* --- commands against a fake API --------------------------------------- */

struct fake {
	uv_loop_t loop;
	struct ctl *ctl;
	uv_async_t stop;
	pthread_t th;
	char dir[64];
	char path[128];
	/* what the server saw; read by the main thread only after join */
	int created;
	int deleted;
	int aborted;
	char last_spec[512];
	char last_exec[512];
	char last_tenant[64];
	struct ctl_req *hung;
};

static const char sandbox_json[] =
    "{\"id\":\"sb-0123456789ab\",\"tenant\":\"default\",\"provider\":\"docker\","
    "\"state\":\"running\",\"ref\":\"c0ffee\",\"image\":\"sandpit/worker:0.1.0\","
    "\"limits\":{\"cpus\":1.5,\"memory\":536870912},\"created_at\":\"2020-01-01T00:00:00Z\","
    "\"updated_at\":\"2020-01-01T00:00:00Z\",\"error\":null,\"exit_code\":null,"
    "\"oom_killed\":false}";

static void
h_health(struct ctl_req *req, void *arg)
{
	ctl_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void
h_info(struct ctl_req *req, void *arg)
{
	ctl_reply_json(req, 200, json_loads("{\"version\":\"0.1.0\",\"instance\":\"i-1\","
	    "\"state_dir\":\"/var/lib/sandpit\",\"socket\":\"/s\",\"providers\":[{\"name\":"
	    "\"docker\",\"caps\":[\"exec\",\"list\"],\"ready\":true,\"info\":{\"api\":\"1.41\",\"runtime\":null}},"
	    "{\"name\":\"e2b\",\"caps\":[],\"ready\":false,\"detail\":\"no API key\"}],"
	    "\"worker_endpoints\":[\"127.0.0.1:7443\"]}", 0, NULL));
}

static void
h_create(struct ctl_req *req, void *arg)
{
	struct fake *f = arg;
	json_t *spec = ctl_req_json(req);
	const char *t = ctl_req_tenant(req);
	char *s;

	if (spec == NULL)
		return;
	s = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
	snprintf(f->last_spec, sizeof(f->last_spec), "%s", s);
	free(s);
	snprintf(f->last_tenant, sizeof(f->last_tenant), "%s", t != NULL ? t : "(invalid)");
	if (json_object_get(spec, "image") != NULL &&
	    strcmp(json_string_value(json_object_get(spec, "image")), "bad") == 0) {
		json_decref(spec);
		ctl_reply_error(req, 400, "bad_request", "image 'bad' is not allowed");
		return;
	}
	json_decref(spec);
	f->created++;
	ctl_reply_json(req, 201, json_loads(sandbox_json, 0, NULL));
}

static void
h_list(struct ctl_req *req, void *arg)
{
	json_t *a = json_array();

	json_array_append_new(a, json_loads(sandbox_json, 0, NULL));
	if (ctl_req_query(req, "all") != NULL)
		json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s}", "id", "sb-dead",
		    "tenant", "t", "provider", "docker", "state", "destroyed"));
	ctl_reply_json(req, 200, a);
}

static void
h_get(struct ctl_req *req, void *arg)
{
	if (strcmp(ctl_req_param(req, "id"), "sb-0123456789ab") != 0) {
		ctl_reply_error(req, 404, "not_found", "no sandbox '%s'", ctl_req_param(req, "id"));
		return;
	}
	ctl_reply_json(req, 200, json_loads(sandbox_json, 0, NULL));
}

static void
h_delete(struct ctl_req *req, void *arg)
{
	struct fake *f = arg;
	json_t *sb;

	if (strcmp(ctl_req_param(req, "id"), "sb-0123456789ab") != 0) {
		ctl_reply_error(req, 404, "not_found", "no sandbox '%s'", ctl_req_param(req, "id"));
		return;
	}
	f->deleted++;
	sb = json_loads(sandbox_json, 0, NULL);
	json_object_set_new(sb, "state", json_string("destroyed"));
	ctl_reply_json(req, 200, sb);
}

static void
stream_line(struct ctl_req *req, const char *s)
{
	ctl_stream_write(req, s, strlen(s));
	ctl_stream_write(req, "\n", 1);
}

static void
on_hung_abort(void *arg)
{
	struct fake *f = arg;

	f->aborted++;
	/* The client is gone; finish the reply so the request is freed. */
	ctl_stream_end(f->hung);
	f->hung = NULL;
}

static void
h_exec(struct ctl_req *req, void *arg)
{
	struct fake *f = arg;
	json_t *body = ctl_req_json(req);
	const char *what;
	char *s;

	if (body == NULL)
		return;
	s = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	snprintf(f->last_exec, sizeof(f->last_exec), "%s", s);
	free(s);
	what = json_string_value(json_array_get(json_object_get(body, "cmd"), 0));
	if (what == NULL)
		what = "";
	if (strcmp(what, "fail") == 0) {
		json_decref(body);
		ctl_reply_error(req, 409, "conflict", "sandbox is not running");
		return;
	}
	ctl_stream_begin(req, 200, "application/x-ndjson");
	if (strcmp(what, "ok") == 0) {
		stream_line(req, "{\"stream\":\"stdout\",\"data\":\"hello \"}");
		stream_line(req, "{\"stream\":\"stderr\",\"data\":\"oops\\n\"}");
		/* "world\n" with a byte that is not UTF-8 in front. */
		stream_line(req, "{\"stream\":\"stdout\",\"data_b64\":\"/3dvcmxkCg==\"}");
		stream_line(req, "{\"exit_code\":3,\"oom_killed\":false,\"timed_out\":false,"
		    "\"duration_ms\":12}");
	} else if (strcmp(what, "oom") == 0) {
		stream_line(req, "{\"exit_code\":137,\"oom_killed\":true,\"timed_out\":false}");
	} else if (strcmp(what, "slow") == 0) {
		stream_line(req, "{\"exit_code\":124,\"oom_killed\":false,\"timed_out\":true}");
	} else if (strcmp(what, "midway") == 0) {
		stream_line(req, "{\"stream\":\"stdout\",\"data\":\"part\"}");
		stream_line(req, "{\"error\":{\"code\":\"provider_error\",\"message\":\"docker went away\"}}");
	} else if (strcmp(what, "cut") == 0) {
		stream_line(req, "{\"stream\":\"stdout\",\"data\":\"part\"}");
	} else if (strcmp(what, "hang") == 0) {
		f->hung = req;
		ctl_req_on_abort(req, on_hung_abort, f);
		stream_line(req, "{\"stream\":\"stdout\",\"data\":\"started\\n\"}");
		/* The client is told to stop as soon as it has seen this line. */
		kill(getpid(), SIGINT);
		json_decref(body);
		return;
	}
	json_decref(body);
	ctl_stream_end(req);
}

static void
h_build(struct ctl_req *req, void *arg)
{
	/* The daemon may leave out the id. */
	ctl_reply_json(req, 200, json_pack("{s:s}", "image", "sandpit/worker:0.1.0"));
}

static void
on_stop(uv_async_t *a)
{
	struct fake *f = a->data;

	ctl_close(f->ctl, NULL, NULL);
	uv_close((uv_handle_t *)a, NULL);
}

static void *
fake_main(void *arg)
{
	struct fake *f = arg;
	sigset_t set;

	/* SIGINT is for the CLI on the main thread. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int
fake_setup(void **state)
{
	static const struct ctl_limits lim = {
		.max_clients = 8, .max_body = 65536, .max_header = 8192,
		.max_stream_queue = 1 << 20,
	};
	struct fake *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/sp-cli-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/sandpitd.sock", f->dir);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(ctl_new(&f->loop, &lim, &f->ctl), 0);
	ctl_route_add(f->ctl, "GET", "/v1/health", h_health, f);
	ctl_route_add(f->ctl, "GET", "/v1/info", h_info, f);
	ctl_route_add(f->ctl, "POST", "/v1/sandboxes", h_create, f);
	ctl_route_add(f->ctl, "GET", "/v1/sandboxes", h_list, f);
	ctl_route_add(f->ctl, "GET", "/v1/sandboxes/{id}", h_get, f);
	ctl_route_add(f->ctl, "DELETE", "/v1/sandboxes/{id}", h_delete, f);
	ctl_route_add(f->ctl, "POST", "/v1/sandboxes/{id}/exec", h_exec, f);
	ctl_route_add(f->ctl, "POST", "/v1/images/build", h_build, f);
	assert_int_equal(ctl_listen(f->ctl, f->path, (gid_t)-1), 0);
	uv_async_init(&f->loop, &f->stop, on_stop);
	f->stop.data = f;
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	*state = f;
	return 0;
}

static int
fake_teardown(void **state)
{
	struct fake *f = *state;
	char cmd[128];

	uv_async_send(&f->stop);
	pthread_join(f->th, NULL);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	curl_global_cleanup();
	free(f);
	return 0;
}

struct out {
	int rc;
	char out[8192];
	char err[8192];
};

static void
slurp(FILE *fp, char *buf, size_t len)
{
	size_t n;

	rewind(fp);
	n = fread(buf, 1, len - 1, fp);
	buf[n] = '\0';
	fclose(fp);
}

/* Run a command the way main() does, with stdout and stderr captured. */
static void
run_cmd(struct fake *f, struct out *o, const struct cli_cmd *cmd, const char *tenant,
	int json, ...)
{
	struct cli cli = { .socket = f->path, .tenant = tenant, .json = json != 0 };
	char *argv[32];
	int argc = 0, so, se;
	FILE *fo = tmpfile(), *fe = tmpfile();
	const char *a;
	va_list ap;

	assert_non_null(fo);
	assert_non_null(fe);
	va_start(ap, json);
	while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	fflush(stderr);
	so = dup(1);
	se = dup(2);
	dup2(fileno(fo), 1);
	dup2(fileno(fe), 2);
	if (cmd->subs != NULL) {
		const struct cli_cmd *s;

		for (s = cmd->subs; s->name != NULL && strcmp(s->name, argv[0]) != 0; s++)
			;
		assert_non_null(s->name);
		o->rc = s->fn(&cli, argc, argv);
	} else
		o->rc = cmd->fn(&cli, argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	slurp(fo, o->out, sizeof(o->out));
	slurp(fe, o->err, sizeof(o->err));
}

static void
test_cmd_run(void **state)
{
	struct fake *f = *state;
	struct out o;

	run_cmd(f, &o, &cli_cmd_run, "team-a", false, "run", "--cpus", "1.5", "--memory", "512m",
	    "--env", "K=V", "--timeout", "10s", "--", "ok", "arg", NULL);
	assert_int_equal(o.rc, 3);
	assert_string_equal(o.out, "hello \xffworld\n");
	assert_string_equal(o.err, "oops\n");
	/* Timeouts and environment reach the exec body; limits the create body. */
	assert_string_equal(f->last_exec,
	    "{\"cmd\":[\"ok\",\"arg\"],\"env\":{\"K\":\"V\"},\"timeout_ms\":10000}");
	assert_string_equal(f->last_spec, "{\"cpus\":1.5,\"memory\":536870912}");
	assert_string_equal(f->last_tenant, "team-a");
	assert_int_equal(f->created, 1);
	assert_int_equal(f->deleted, 1);

	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "oom", NULL);
	assert_int_equal(o.rc, 137);
	assert_non_null(strstr(o.err, "killed: out of memory"));
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "slow", NULL);
	assert_int_equal(o.rc, 124);
	assert_non_null(strstr(o.err, "timed out"));
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "midway", NULL);
	assert_int_equal(o.rc, 1);
	assert_string_equal(o.out, "part");
	assert_string_equal(o.err, "sandpit: docker went away\n");
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "cut", NULL);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "without an exit status"));
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "fail", NULL);
	assert_int_equal(o.rc, 1);
	assert_string_equal(o.err, "sandpit: sandbox is not running\n");
	/* Each of those destroyed its sandbox. */
	assert_int_equal(f->deleted, 6);

	/* --keep keeps it; an error from create is the server's message. */
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "--keep", "--", "ok", NULL);
	assert_int_equal(o.rc, 3);
	assert_int_equal(f->deleted, 6);
	assert_non_null(strstr(o.err, "kept sandbox sb-0123456789ab"));
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "--image", "bad", "--", "ok", NULL);
	assert_int_equal(o.rc, 1);
	assert_string_equal(o.err, "sandpit: image 'bad' is not allowed\n");

	/* --json passes the NDJSON through and still returns the exit code. */
	run_cmd(f, &o, &cli_cmd_run, NULL, true, "run", "oom", NULL);
	assert_int_equal(o.rc, 137);
	assert_non_null(strstr(o.out, "\"oom_killed\":true"));

	/* Usage errors exit 2. */
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "--pids", "x", "--", "ok", NULL);
	assert_int_equal(o.rc, 2);
}

static void
test_cmd_run_interrupted(void **state)
{
	struct fake *f = *state;
	int deleted = f->deleted;
	struct out o;

	/* The fake sends SIGINT once the stream started; the sandbox still goes. */
	run_cmd(f, &o, &cli_cmd_run, NULL, false, "run", "hang", NULL);
	assert_int_equal(o.rc, 130);
	assert_int_equal(f->deleted, deleted + 1);
	assert_int_equal(f->aborted, 1);
	signal(SIGINT, SIG_DFL);
}

static void
test_cmd_sandbox(void **state)
{
	struct fake *f = *state;
	struct out o;

	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "create", "--pids", "9", NULL);
	assert_int_equal(o.rc, 0);
	assert_string_equal(o.out, "sb-0123456789ab\n");
	assert_string_equal(f->last_spec, "{\"pids\":9}");

	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "ls", NULL);
	assert_int_equal(o.rc, 0);
	/* The age is years by now: the AGE column is as wide as "2000d". */
	assert_non_null(strstr(o.out, "ID               TENANT   PROVIDER  STATE    AGE    WORKER  IMAGE\n"));
	assert_non_null(strstr(o.out, "sb-0123456789ab  default  docker    running  "));
	assert_non_null(strstr(o.out, "d  -       sandpit/worker:0.1.0\n"));
	assert_null(strstr(o.out, "sb-dead"));
	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "ls", "--all", NULL);
	assert_non_null(strstr(o.out, "sb-dead"));
	run_cmd(f, &o, &cli_cmd_sandbox, NULL, true, "ls", NULL);
	assert_int_equal(o.rc, 0);
	assert_true(o.out[0] == '[');

	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "show", "sb-0123456789ab", NULL);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.out, "state:      running\n"));
	assert_non_null(strstr(o.out, "memory=536870912"));
	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "show", "sb-nope", NULL);
	assert_int_equal(o.rc, 1);
	assert_string_equal(o.err, "sandpit: no sandbox 'sb-nope'\n");
	/* Ids are escaped into the path, never interpreted. */
	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "show", "a/../b", NULL);
	assert_int_equal(o.rc, 1);

	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "rm", "sb-0123456789ab", "sb-nope", NULL);
	assert_int_equal(o.rc, 1);
	assert_string_equal(o.out, "sb-0123456789ab\n");
	assert_string_equal(o.err, "sandpit: no sandbox 'sb-nope'\n");

	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "exec", "sb-0123456789ab", "--workdir",
	    "/w", "--", "ok", NULL);
	assert_int_equal(o.rc, 3);
	assert_string_equal(o.out, "hello \xffworld\n");
	assert_string_equal(f->last_exec, "{\"cmd\":[\"ok\"],\"workdir\":\"/w\"}");
	run_cmd(f, &o, &cli_cmd_sandbox, NULL, false, "exec", "--", "ok", NULL);
	assert_int_equal(o.rc, 2);
}

static void
test_cmd_status_image(void **state)
{
	struct fake *f = *state;
	struct out o;

	run_cmd(f, &o, &cli_cmd_status, NULL, false, "status", NULL);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.out, "sandpitd 0.1.0: ok\n"));
	assert_non_null(strstr(o.out, "docker ready [exec,list] api=1.41\n"));
	assert_non_null(strstr(o.out, "e2b down (no API key) []"));
	assert_non_null(strstr(o.out, "127.0.0.1:7443"));
	run_cmd(f, &o, &cli_cmd_image, NULL, false, "build", NULL);
	assert_int_equal(o.rc, 0);
	assert_string_equal(o.out, "sandpit/worker:0.1.0\n");
}

static void
test_cmd_unreachable(void **state)
{
	struct cli cli = { .socket = "/nonexistent/sandpitd.sock" };
	struct fake f = { .dir = "" };
	struct out o;

	snprintf(f.path, sizeof(f.path), "%s", cli.socket);
	run_cmd(&f, &o, &cli_cmd_status, NULL, false, "status", NULL);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err,
	    "sandpit: cannot reach sandpitd at /nonexistent/sandpitd.sock: "));
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_sizes_durations),
		cmocka_unit_test(test_run_opts),
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_b64_table_age),
		cmocka_unit_test(test_default_socket),
		cmocka_unit_test(test_cmd_unreachable),
	};
	const struct CMUnitTest cmds[] = {
		cmocka_unit_test(test_cmd_run),
		cmocka_unit_test(test_cmd_run_interrupted),
		cmocka_unit_test(test_cmd_sandbox),
		cmocka_unit_test(test_cmd_status_image),
	};
	int r;

	r = cmocka_run_group_tests(pure, NULL, NULL);
	r += cmocka_run_group_tests(cmds, fake_setup, fake_teardown);
	return r;
}

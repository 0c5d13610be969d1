/*
 * The E2B provider driven through its ops against the real E2B emulator
 * (tests/e2b-emulator, which the official SDK accepts), started here on a
 * kernel-chosen 127.0.0.1 port and stopped at the end. Each fault the
 * emulator can inject is switched on through its admin endpoint for one
 * test and the outcome checked both in the provider's callbacks and in the
 * emulator's own state (requests seen, sandboxes made). Every test closes
 * the provider and the loop: uv_loop_close() == 0 proves nothing leaked.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "httpc.h"
#include "../../providers/e2b/e2b.h"

extern const struct sp_provider_ops sp_e2b_provider;

#define KEY	"e2b_0123456789abcdef0123456789abcdef"

static pid_t emu_pid;
static int emu_port;
static char tmpdir[64];
static char keyfile[128];
static char instance[64];

/* ---------------------------------------------------------------- the emulator */

static int
emu_start(void)
{
	const char *src = getenv("SANDPIT_SOURCE_DIR");
	char run[512], line[256];
	int fds[2];
	FILE *f;

	if (src == NULL)
		src = ".";
	snprintf(run, sizeof(run), "%s/tests/e2b-emulator/run", src);
	if (access(run, X_OK) != 0 || system("node --version >/dev/null 2>&1") != 0)
		return -1;
	if (pipe(fds) < 0)
		return -1;
	if ((emu_pid = fork()) == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execl(run, run, "--port", "0", "--host", "127.0.0.1", "--api-key", KEY,
		      "--max-sandboxes", "200", "--quiet", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	/* The ready line names the port the kernel chose. */
	if (fgets(line, sizeof(line), f) == NULL ||
	    sscanf(line, "e2b-emulator listening on 127.0.0.1:%d", &emu_port) != 1) {
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

struct buf {
	char *p;
	size_t n;
};

static size_t
buf_write(char *d, size_t sz, size_t nm, void *arg)
{
	struct buf *b = arg;

	b->p = realloc(b->p, b->n + sz * nm + 1);
	memcpy(b->p + b->n, d, sz * nm);
	b->n += sz * nm;
	b->p[b->n] = '\0';
	return sz * nm;
}

/* A blocking request from the test side (admin endpoint, or a plain API call). */
static json_t *
emu(const char *method, const char *path, const char *body, long *status)
{
	struct curl_slist *h = NULL;
	struct buf b = { 0 };
	char url[512];
	json_t *j = NULL;
	long st = 0;
	CURL *c = curl_easy_init();

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", emu_port, path);
	h = curl_slist_append(h, "X-API-Key: " KEY);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	if (status != NULL)
		*status = st;
	if (b.n > 0)
		j = json_loadb(b.p, b.n, 0, NULL);
	free(b.p);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return j;
}

static void
fault(const char *json)
{
	long st;
	json_t *j = emu("POST", "/_emulator/faults", json, &st);

	assert_int_equal(st, 200);
	json_decref(j);
}

/* Requests the emulator saw for op ("create", "envd:/process.Process/Start"). */
static int
emu_count(const char *op)
{
	json_t *j = emu("GET", "/_emulator/requests", NULL, NULL), *it;
	size_t i;
	int n = 0;

	json_array_foreach(j, i, it) {
		const char *o = json_string_value(json_object_get(it, "op"));

		if (o != NULL && strcmp(o, op) == 0)
			n++;
	}
	json_decref(j);
	return n;
}

static int
emu_sandboxes(void)
{
	json_t *j = emu("GET", "/_emulator/state", NULL, NULL);
	int n = (int)json_array_size(json_object_get(j, "sandboxes"));

	json_decref(j);
	return n;
}

/* ---------------------------------------------------------------- the host */

struct kv {
	const char *k;
	char v[256];
};

static struct kv confv[32];

static void
conf_set(const char *k, const char *fmt, ...)
{
	va_list ap;
	size_t i;

	for (i = 0; i < 32 && confv[i].k != NULL; i++)
		if (strcmp(confv[i].k, k) == 0)
			break;
	assert_true(i < 32);
	confv[i].k = k;
	va_start(ap, fmt);
	vsnprintf(confv[i].v, sizeof(confv[i].v), fmt, ap);
	va_end(ap);
}

static const char *
host_conf(const struct sp_host *h, const char *name)
{
	for (size_t i = 0; i < 32 && confv[i].k != NULL; i++)
		if (strcmp(confv[i].k, name) == 0)
			return confv[i].v[0] != '\0' ? confv[i].v : NULL;
	return NULL;
}

static char logged[2048];

static void
host_log(int prio, const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(logged);

	va_start(ap, fmt);
	vsnprintf(logged + n, sizeof(logged) - n, fmt, ap);
	va_end(ap);
}

struct t {
	uv_loop_t loop;
	struct sp_httpc *http;
	struct sp_host host;
	struct sp_provider p;
	struct e2b *e;
	bool inited;
};

static struct t T;

static void
wait_for(bool *flag)
{
	while (!*flag)
		assert_int_not_equal(uv_run(&T.loop, UV_RUN_ONCE), -1);
}

struct res {
	bool done;
	int status;
	char detail[512];
	char ref[64];
	struct sp_exec_result er;
	char out[1 << 18];
	size_t out_len;
	char err[4096];
	size_t err_len;
	size_t n;
	char refs[256][32];
	char sids[256][64];
	enum sp_instance_state state;
	bool fired_inside;
	bool in_call;
};

static void
set_detail(struct res *r, int status, const char *detail)
{
	assert_false(r->done);		/* exactly once */
	assert_false(r->in_call);	/* never inside the call */
	r->done = true;
	r->status = status;
	snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
}

static void
on_done(void *arg, int status, const char *detail)
{
	set_detail(arg, status, detail);
}

static void
on_create(void *arg, int status, const char *ref, const char *detail)
{
	struct res *r = arg;

	set_detail(r, status, detail);
	if (ref != NULL)
		snprintf(r->ref, sizeof(r->ref), "%s", ref);
}

static int
on_out(void *arg, int fd, const char *data, size_t len)
{
	struct res *r = arg;

	if (fd == 1) {
		assert_true(r->out_len + len < sizeof(r->out));
		memcpy(r->out + r->out_len, data, len);
		r->out_len += len;
	} else {
		assert_int_equal(fd, 2);
		assert_true(r->err_len + len < sizeof(r->err));
		memcpy(r->err + r->err_len, data, len);
		r->err_len += len;
	}
	return 0;
}

static void
on_exec(void *arg, int status, const struct sp_exec_result *res, const char *detail)
{
	struct res *r = arg;

	set_detail(r, status, detail);
	if (res != NULL)
		r->er = *res;
	else
		assert_true(status < 0);
}

static void
on_list(void *arg, int status, const struct sp_instance *items, size_t n, const char *detail)
{
	struct res *r = arg;

	set_detail(r, status, detail);
	r->n = n;
	for (size_t i = 0; i < n && i < 256; i++) {
		snprintf(r->refs[i], sizeof(r->refs[i]), "%s", items[i].ref);
		snprintf(r->sids[i], sizeof(r->sids[i]), "%s",
			 items[i].sandbox_id != NULL ? items[i].sandbox_id : "");
	}
}

static void
on_status(void *arg, int status, const struct sp_instance *inst, const char *detail)
{
	struct res *r = arg;

	set_detail(r, status, detail);
	if (inst != NULL)
		r->state = inst->state;
}

static void
conf_defaults(void)
{
	memset(confv, 0, sizeof(confv));
	conf_set("e2b.api_url", "http://127.0.0.1:%d", emu_port);
	/* Headers mode: a fixed envd URL, routed by E2b-Sandbox-Id/-Port. */
	conf_set("e2b.envd_url", "http://127.0.0.1:%d", emu_port);
	conf_set("e2b.api_key_file", "%s", keyfile);
	conf_set("e2b.timeout", "120");
	conf_set("e2b.request_timeout", "5000");
	conf_set("e2b.max_retries", "4");
	conf_set("e2b.retry_budget", "20000");
	conf_set("e2b.retry_base", "100");
	conf_set("e2b.retry_cap", "1000");
	conf_set("e2b.keepalive", "1");
}

/* Bring the provider up; returns init's status (callback or immediate). */
static int
prov_init(struct res *r)
{
	int rc;

	memset(&T.p, 0, sizeof(T.p));
	T.p.ops = &sp_e2b_provider;
	T.p.host = &T.host;
	T.p.priv = calloc(1, sp_e2b_provider.priv_size);
	T.e = T.p.priv;
	r->in_call = true;
	rc = sp_e2b_provider.init(&T.p, on_done, r);
	r->in_call = false;
	if (rc < 0)
		return rc;
	wait_for(&r->done);
	T.inited = true;
	return r->status;
}

static int
setup(void **state)
{
	struct res r = { 0 };

	emu("POST", "/_emulator/reset", NULL, NULL);
	conf_defaults();
	logged[0] = '\0';
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host = (struct sp_host){
		.loop = &T.loop, .http = T.http, .instance = instance, .state_dir = tmpdir,
		.conf = host_conf, .log = host_log,
	};
	*state = &T;
	assert_int_equal(prov_init(&r), 0);
	assert_string_equal(r.detail, "");
	return 0;
}

static void
httpc_closed(void *arg)
{
	*(bool *)arg = true;
}

static int
teardown(void **state)
{
	struct res r = { 0 };
	bool closed = false;

	r.in_call = true;
	sp_e2b_provider.close(&T.p, on_done, &r);
	r.in_call = false;
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	free(T.p.priv);
	httpc_close(T.http, httpc_closed, &closed);
	wait_for(&closed);
	assert_int_equal(uv_run(&T.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&T.loop), 0);
	/* The key never reaches a log line. */
	assert_null(strstr(logged, KEY));
	return 0;
}

/* ---------------------------------------------------------------- op helpers */

static void
do_create(struct res *r, const char *sid)
{
	struct sp_sandbox_spec spec = { .id = sid, .tenant = "t1", .spec_hash = "h1" };

	memset(r, 0, sizeof(*r));
	r->in_call = true;
	assert_int_equal(sp_e2b_provider.create(&T.p, &spec, on_create, r), 0);
	r->in_call = false;
	wait_for(&r->done);
}

static void
create_ok(char *ref, const char *sid)
{
	struct res r;

	do_create(&r, sid);
	assert_int_equal(r.status, 0);
	assert_int_equal(strlen(r.ref), 20);
	strcpy(ref, r.ref);
}

static void
do_exec(struct res *r, const char *ref, const char *const *argv, uint64_t timeout_ms,
	const char *workdir)
{
	struct sp_exec_spec spec = { .argv = argv, .timeout_ms = timeout_ms, .workdir = workdir };
	struct sp_exec *ex = NULL;

	memset(r, 0, sizeof(*r));
	r->in_call = true;
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, r, &ex), 0);
	r->in_call = false;
	assert_non_null(ex);
	wait_for(&r->done);
}

static void
do_list(struct res *r)
{
	memset(r, 0, sizeof(*r));
	r->in_call = true;
	assert_int_equal(sp_e2b_provider.list(&T.p, on_list, r), 0);
	r->in_call = false;
	wait_for(&r->done);
}

static void
do_status(struct res *r, const char *ref)
{
	memset(r, 0, sizeof(*r));
	r->in_call = true;
	assert_int_equal(sp_e2b_provider.status(&T.p, ref, on_status, r), 0);
	r->in_call = false;
	wait_for(&r->done);
}

static void
do_destroy(struct res *r, const char *ref)
{
	memset(r, 0, sizeof(*r));
	r->in_call = true;
	assert_int_equal(sp_e2b_provider.destroy(&T.p, ref, on_done, r), 0);
	r->in_call = false;
	wait_for(&r->done);
}

static const char *const sh_echo[] = { "/bin/sh", "-c", "echo hello; echo oops >&2; exit 3", NULL };
static const char *const sh_sleep[] = { "/bin/sh", "-c", "echo started; sleep 30", NULL };

/* ---------------------------------------------------------------- tests */

static void
test_key_sources(void **state)
{
	struct res r = { 0 };
	char dir[128], path[256];
	FILE *f;

	/* Close the provider setup made, then try inits by hand. */
	teardown(state);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;

	/* No file, no systemd credential: init fails (from the loop) with a reason. */
	conf_set("e2b.api_key_file", "%s", "");
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(prov_init(&r), SP_ECONFIG);
	assert_non_null(strstr(r.detail, "no API key"));
	/* The core retries init on the same state: a key file that appeared works. */
	conf_set("e2b.api_key_file", "%s/missing", tmpdir);
	memset(&r, 0, sizeof(r));
	r.in_call = true;
	assert_int_equal(sp_e2b_provider.init(&T.p, on_done, &r), 0);
	r.in_call = false;
	wait_for(&r.done);
	assert_int_equal(r.status, SP_ECONFIG);
	assert_non_null(strstr(r.detail, "missing"));
	conf_set("e2b.api_key_file", "%s", keyfile);
	conf_set("e2b.price_vcpu_second", "cheap");
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.init(&T.p, on_done, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, SP_ECONFIG);
	assert_non_null(strstr(r.detail, "e2b.price_vcpu_second"));
	conf_set("e2b.price_vcpu_second", "");
	conf_set("e2b.api_url", "ftp://127.0.0.1:%d", emu_port);
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.init(&T.p, on_done, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, SP_ECONFIG);
	assert_non_null(strstr(r.detail, "not an http(s) URL"));
	conf_set("e2b.api_url", "http://127.0.0.1:%d", emu_port);
	memset(&r, 0, sizeof(r));
	r.in_call = true;
	assert_int_equal(sp_e2b_provider.init(&T.p, on_done, &r), 0);
	r.in_call = false;
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	teardown(state);

	/* The systemd credential e2b-api-key. */
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;
	snprintf(dir, sizeof(dir), "%s/creds", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/e2b-api-key", dir);
	f = fopen(path, "w");
	fprintf(f, "%s\n", KEY);
	fclose(f);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(prov_init(&r), 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	teardown(state);

	/* A key the API refuses: init fails with 401, and the key is in no detail. */
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;
	snprintf(path, sizeof(path), "%s/badkey", tmpdir);
	f = fopen(path, "w");
	fprintf(f, "e2b_ffff0000ffff\n");
	fclose(f);
	conf_set("e2b.api_key_file", "%s", path);
	memset(&r, 0, sizeof(r));
	assert_int_equal(prov_init(&r), SP_EPROVIDER);
	assert_non_null(strstr(r.detail, "401"));
	assert_null(strstr(r.detail, "ffff0000"));
	/* setup's twin: leave a provider for teardown to close. */
}

static void
test_close_during_init(void **state)
{
	struct res r = { 0 }, c = { 0 };

	/* Close right after an init whose failure is still to be reported,
	 * then after one whose probe is in flight: both end SP_ECANCELED. */
	for (int i = 0; i < 2; i++) {
		teardown(state);
		assert_int_equal(uv_loop_init(&T.loop), 0);
		assert_int_equal(httpc_new(&T.loop, &T.http), 0);
		T.host.loop = &T.loop;
		T.host.http = T.http;
		conf_set("e2b.api_key_file", "%s", i == 0 ? "" : keyfile);
		memset(&T.p, 0, sizeof(T.p));
		T.p.ops = &sp_e2b_provider;
		T.p.host = &T.host;
		T.p.priv = calloc(1, sp_e2b_provider.priv_size);
		T.e = T.p.priv;
		memset(&r, 0, sizeof(r));
		memset(&c, 0, sizeof(c));
		assert_int_equal(sp_e2b_provider.init(&T.p, on_done, &r), 0);
		c.in_call = true;
		sp_e2b_provider.close(&T.p, on_done, &c);
		c.in_call = false;
		wait_for(&c.done);
		assert_true(r.done);
		assert_int_equal(r.status, SP_ECANCELED);
		free(T.p.priv);
		bool closed = false;
		httpc_close(T.http, httpc_closed, &closed);
		wait_for(&closed);
		assert_int_equal(uv_loop_close(&T.loop), 0);
		conf_set("e2b.api_key_file", "%s", keyfile);
		setup(state);
	}
}

static void
test_round_trip(void **state)
{
	char ref[64];
	struct res r;
	json_t *st, *sb, *md;
	const char *const bad[] = { "", NULL };
	struct sp_exec_spec spec = { .argv = bad };

	create_ok(ref, "sb-000000000001");
	/* The emulator holds it with our metadata and secure envd. */
	st = emu("GET", "/_emulator/state", NULL, NULL);
	sb = json_array_get(json_object_get(st, "sandboxes"), 0);
	md = json_object_get(sb, "metadata");
	assert_string_equal(json_string_value(json_object_get(sb, "sandboxID")), ref);
	assert_string_equal(json_string_value(json_object_get(md, SP_LABEL_INSTANCE)), instance);
	assert_string_equal(json_string_value(json_object_get(md, SP_LABEL_SANDBOX)),
			    "sb-000000000001");
	assert_string_equal(json_string_value(json_object_get(md, SP_LABEL_TENANT)), "t1");
	json_decref(st);

	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 3);
	assert_false(r.er.timed_out);
	assert_int_equal(r.out_len, 6);
	assert_memory_equal(r.out, "hello\n", 6);
	assert_int_equal(r.err_len, 5);
	assert_memory_equal(r.err, "oops\n", 5);

	/* Binary output of 200 KiB arrives whole, across many data events. */
	const char *const big[] = { "/bin/sh", "-c", "head -c 204800 /dev/zero | tr '\\0' x", NULL };
	do_exec(&r, ref, big, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 0);
	assert_int_equal(r.out_len, 204800);
	assert_int_equal(r.out[204799], 'x');

	/* A program that does not exist: current envd starts it through a
	 * shell wrapper, so it is a command that exits 127 (older envd
	 * answered a start error; the provider reports either cleanly). */
	const char *const nope[] = { "/nonexistent/prog", NULL };
	do_exec(&r, ref, nope, 10000, NULL);
	if (r.status == 0)
		assert_int_equal(r.er.exit_code, 127);
	else
		assert_non_null(strstr(r.detail, "nonexistent"));

	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, NULL),
			 SP_EINVAL);
	assert_int_equal(sp_e2b_provider.destroy(&T.p, "../etc", on_done, &r), SP_EINVAL);

	do_list(&r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.refs[0], ref);
	assert_string_equal(r.sids[0], "sb-000000000001");
	do_status(&r, ref);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.state, SP_INST_RUNNING);

	do_destroy(&r, ref);
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_sandboxes(), 0);
	do_destroy(&r, ref);			/* already gone: 404 is success */
	assert_int_equal(r.status, 0);
	do_status(&r, ref);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.state, SP_INST_GONE);
	do_list(&r);
	assert_int_equal(r.n, 0);
}

static void
test_host_addressing(void **state)
{
	char ref[64];
	struct res r;
	json_t *j, *it;
	size_t i, n = 0;
	const char *h;

	/*
	 * Host mode, as against E2B itself: envd at {port}-{sandbox}.{domain}.
	 * libcurl resolves *.localhost to loopback without asking DNS, and the
	 * emulator routes by the host prefix as E2B's proxy does.
	 */
	teardown(state);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;
	conf_set("e2b.envd_url", "http://{port}-{sandbox}.{domain}:%d", emu_port);
	conf_set("e2b.domain", "localhost");
	memset(&r, 0, sizeof(r));
	assert_int_equal(prov_init(&r), 0);
	create_ok(ref, "sb-000000000020");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 3);
	assert_memory_equal(r.out, "hello\n", 6);
	j = emu("GET", "/_emulator/requests", NULL, NULL);
	json_array_foreach(j, i, it) {
		h = json_string_value(json_object_get(it, "sandboxID"));
		if (h != NULL && strcmp(h, ref) == 0)
			n++;
	}
	json_decref(j);
	assert_true(n >= 1);		/* the emulator saw envd calls for this sandbox */
}

static void
test_envd_unreachable(void **state)
{
	char ref[64];
	struct res r;

	/* envd cannot be reached at all: retried (nothing ran), then reported. */
	teardown(state);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;
	conf_set("e2b.envd_url", "http://127.0.0.1:1");
	conf_set("e2b.max_retries", "2");
	memset(&r, 0, sizeof(r));
	assert_int_equal(prov_init(&r), 0);
	create_ok(ref, "sb-000000000021");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "cannot reach envd"));
}

static void
test_rate_limit_429(void **state)
{
	char ref[64];

	/* Two refusals with Retry-After: 1, then the create goes through. */
	fault("{\"kind\":\"rate_limit\",\"op\":\"create\",\"count\":2,\"retryAfter\":1}");
	create_ok(ref, "sb-000000000002");
	assert_int_equal(emu_count("create"), 3);
	assert_int_equal(emu_sandboxes(), 1);
}

static void
test_rate_limit_exhausted(void **state)
{
	struct res r;

	fault("{\"kind\":\"rate_limit\",\"op\":\"list\",\"count\":-1,\"retryAfter\":1}");
	T.e->retry.max_retries = 1;
	do_list(&r);
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "429"));
	assert_non_null(strstr(r.detail, "after 1 retries"));
	assert_int_equal(emu_count("list"), 1 + 2);	/* init's probe + two tries */
	emu("DELETE", "/_emulator/faults", NULL, NULL);
}

static void
test_concurrency_429(void **state)
{
	struct res r;

	/* Retrying cannot help until a sandbox ends: one request, SP_ELIMIT. */
	fault("{\"kind\":\"concurrency\",\"op\":\"create\"}");
	do_create(&r, "sb-000000000003");
	assert_int_equal(r.status, SP_ELIMIT);
	assert_non_null(strstr(r.detail, "concurrent"));
	assert_int_equal(emu_count("create"), 1);
	assert_int_equal(emu_sandboxes(), 0);
}

static void
test_5xx_retried(void **state)
{
	struct res r;

	fault("{\"kind\":\"http_error\",\"op\":\"list\",\"status\":503,\"count\":2}");
	do_list(&r);
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_count("list"), 1 + 3);

	/* A 500 that does not go away: retried within the count, then reported. */
	fault("{\"kind\":\"http_error\",\"op\":\"get\",\"status\":500,\"count\":-1}");
	do_status(&r, "abcdefghij0123456789");
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "HTTP 500"));
	assert_non_null(strstr(r.detail, "after 4 retries"));
	assert_int_equal(emu_count("get"), 5);
	emu("DELETE", "/_emulator/faults", NULL, NULL);

	/* A 4xx is not retried. */
	fault("{\"kind\":\"http_error\",\"op\":\"list\",\"status\":400,\"message\":\"bad\"}");
	do_list(&r);
	assert_int_equal(r.status, SP_EINVAL);
	assert_int_equal(emu_count("list"), 1 + 4);
}

static void
test_create_timeout_no_duplicate(void **state)
{
	struct res r;

	/*
	 * The emulator sits on the create for 600 ms, past our 300 ms limit.
	 * The outcome is unknown, so the provider lists by the sandbox's
	 * metadata before trying again; this emulator drops a request whose
	 * client went away, so the check finds nothing and the retry makes
	 * the one sandbox.
	 */
	T.e->request_timeout_ms = 300;
	T.e->retry.base_ms = 2000;
	fault("{\"kind\":\"delay\",\"op\":\"create\",\"ms\":600}");
	do_create(&r, "sb-000000000004");
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_sandboxes(), 1);
	assert_int_equal(emu_count("create"), 2);
	assert_int_equal(emu_count("list"), 1 + 1);	/* init's probe + the check */
}

static void
test_create_ambiguous_adopts(void **state)
{
	char body[512], ref[64];
	struct res r;
	json_t *j;
	long st;

	/*
	 * The gateway answers 504 although the backend made the sandbox (here
	 * made beforehand with the same metadata, as the lost attempt would
	 * have). The check finds it: adopted, with its access token, and no
	 * second create is sent.
	 */
	snprintf(body, sizeof(body), "{\"templateID\":\"base\",\"timeout\":300,\"secure\":true,"
		 "\"metadata\":{\"%s\":\"%s\",\"%s\":\"sb-000000000016\"}}", SP_LABEL_INSTANCE,
		 instance, SP_LABEL_SANDBOX);
	j = emu("POST", "/sandboxes", body, &st);
	assert_int_equal(st, 201);
	fault("{\"kind\":\"http_error\",\"op\":\"create\",\"status\":504}");
	do_create(&r, "sb-000000000016");
	assert_int_equal(r.status, 0);
	assert_string_equal(r.ref, json_string_value(json_object_get(j, "sandboxID")));
	json_decref(j);
	assert_int_equal(emu_sandboxes(), 1);
	assert_int_equal(emu_count("create"), 1 + 1);	/* ours by hand + the 504 */
	assert_int_equal(emu_count("get"), 1);		/* the token fetched */
	strcpy(ref, r.ref);
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 3);

	/* If the check itself fails, the create is reported unknown, not repeated. */
	fault("[{\"kind\":\"http_error\",\"op\":\"create\",\"status\":502},"
	      "{\"kind\":\"http_error\",\"op\":\"list\",\"status\":401}]");
	do_create(&r, "sb-000000000017");
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "checking whether it made a sandbox failed"));
	assert_int_equal(emu_count("create"), 3);
	assert_int_equal(emu_sandboxes(), 1);
}

static void
test_create_dropped_retried(void **state)
{
	struct res r;

	/* The connection drops before the emulator acted: check, then create again. */
	fault("{\"kind\":\"drop_connection\",\"op\":\"create\"}");
	do_create(&r, "sb-000000000005");
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_count("create"), 2);
	assert_int_equal(emu_sandboxes(), 1);
}

static void
test_create_lost_response_adopts(void **state)
{
	char ref[64];
	struct res r;
	json_t *st, *sb;
	const char *mode[] = { "close", "reset" }, *sid[] = { "sb-000000000018", "sb-000000000019" };

	/*
	 * The emulator makes the sandbox, then the response dies on the way
	 * back (a FIN, then an RST, before the first byte). The provider cannot
	 * know whether the create acted, so it lists by the sandbox's metadata
	 * before repeating it: the one sandbox made is found and adopted (its
	 * access token fetched), and no second create is sent.
	 */
	for (int i = 0; i < 2; i++) {
		char f[128];

		snprintf(f, sizeof(f), "{\"kind\":\"lose_response\",\"op\":\"create\","
			 "\"mode\":\"%s\"}", mode[i]);
		fault(f);
		do_create(&r, sid[i]);
		assert_int_equal(r.status, 0);
		assert_int_equal(strlen(r.ref), 20);
		assert_int_equal(emu_count("create"), i + 1);
		assert_int_equal(emu_count("list"), 1 + i + 1);	/* init's probe + each check */
		assert_int_equal(emu_count("get"), i + 1);
		assert_int_equal(emu_sandboxes(), i + 1);
		/* The adopted one is the sandbox the lost create made, with our metadata. */
		st = emu("GET", "/_emulator/state", NULL, NULL);
		sb = json_array_get(json_object_get(st, "sandboxes"), (size_t)i);
		if (strcmp(json_string_value(json_object_get(sb, "sandboxID")), r.ref) != 0)
			sb = json_array_get(json_object_get(st, "sandboxes"), (size_t)(1 - i));
		assert_string_equal(json_string_value(json_object_get(sb, "sandboxID")), r.ref);
		assert_string_equal(json_string_value(json_object_get(json_object_get(sb, "metadata"),
				    SP_LABEL_SANDBOX)), sid[i]);
		json_decref(st);
		strcpy(ref, r.ref);
		/* And it is usable: commands reach it with the fetched token. */
		do_exec(&r, ref, sh_echo, 10000, NULL);
		assert_int_equal(r.status, 0);
		assert_int_equal(r.er.exit_code, 3);
	}
}

static void
test_exec_lost_reply_runs_once(void **state)
{
	const char *const append[] = { "/bin/sh", "-c", "echo x >> /tmp/runs; echo done", NULL };
	/* The lost runs may still be writing: wait for both, then count. */
	const char *const count[] = { "/bin/sh", "-c", "while [ \"$(wc -l < /tmp/runs)\" -lt 2 ]; "
				      "do sleep 0.05; done; wc -l < /tmp/runs", NULL };
	const char *mode[] = { "close", "reset" };
	char ref[64], f[160];
	struct res r;

	/*
	 * envd starts the command, then the reply is lost (FIN, then RST).
	 * Neither libcurl (a fresh connection) nor the provider (the request
	 * had left: httpc's request_sent) sends it again: each exec fails with
	 * a reason and each command ran exactly once.
	 */
	create_ok(ref, "sb-000000000021");
	for (int i = 0; i < 2; i++) {
		snprintf(f, sizeof(f), "{\"kind\":\"lose_response\",\"op\":"
			 "\"envd:/process.Process/Start\",\"mode\":\"%s\"}", mode[i]);
		fault(f);
		do_exec(&r, ref, append, 10000, NULL);
		assert_int_equal(r.status, SP_EUNAVAIL);
		assert_int_equal(emu_count("envd:/process.Process/Start"), i + 1);
	}
	assert_non_null(strstr(r.detail, "it may have run, so it is not repeated"));
	do_exec(&r, ref, count, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.out_len, 2);
	assert_memory_equal(r.out, "2\n", 2);
}

static void
test_envd_502_not_found(void **state)
{
	char ref[64];
	struct res r;

	create_ok(ref, "sb-000000000006");
	fault("{\"kind\":\"sandbox_not_found\",\"op\":\"envd\"}");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_ENOTFOUND);
	assert_non_null(strstr(r.detail, "502"));
	assert_non_null(strstr(r.detail, "not found"));
	/* Switched off again, the same sandbox works. */
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);

	/* The proxy's 429 before anything ran: retried after Retry-After. */
	emu("DELETE", "/_emulator/requests", NULL, NULL);
	fault("{\"kind\":\"rate_limit\",\"op\":\"envd:/process.Process/Start\",\"retryAfter\":1}");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 3);
	assert_int_equal(emu_count("envd:/process.Process/Start"), 2);

	/* An envd 500 after the request was taken: not retried (it may have run). */
	fault("{\"kind\":\"http_error\",\"op\":\"envd:/process.Process/Start\",\"status\":500}");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "HTTP 500"));
	assert_int_equal(emu_count("envd:/process.Process/Start"), 3);

	/* A bad access token: refused, with the reason. */
	free(e2b_sbx_find(T.e, ref)->token);
	e2b_sbx_find(T.e, ref)->token = strdup("wrong");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_EPROVIDER);
	assert_non_null(strstr(r.detail, "credentials refused"));
}

static void
test_stream_cut(void **state)
{
	char ref[64];
	struct res r;

	create_ok(ref, "sb-000000000007");
	/* TCP reset after the start event. */
	fault("{\"kind\":\"cut_stream\",\"op\":\"envd:/process.Process/Start\",\"afterEvents\":1}");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_EUNAVAIL);
	assert_non_null(strstr(r.detail, "without an end event"));

	/* A clean end of the HTTP body with no end message. */
	fault("{\"kind\":\"cut_stream\",\"op\":\"envd:/process.Process/Start\",\"afterEvents\":1,"
	      "\"mode\":\"eof\"}");
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_true(r.status == SP_EUNAVAIL || r.status == SP_EPROTO);
	assert_non_null(strstr(r.detail, "end"));
}

static void
test_garbage_streams(void **state)
{
	static const char *const variants[] = { "bad_json", "huge_frame", "truncated", "bad_flags" };
	char ref[64], f[256];
	struct res r;

	create_ok(ref, "sb-000000000008");
	for (size_t i = 0; i < 4; i++) {
		snprintf(f, sizeof(f), "{\"kind\":\"garbage_stream\",\"op\":\"envd:/process.Process/"
			 "Start\",\"variant\":\"%s\"}", variants[i]);
		fault(f);
		do_exec(&r, ref, sh_echo, 10000, NULL);
		assert_int_equal(r.status, SP_EPROTO);
		assert_true(strlen(r.detail) > 0);
	}
	/* And the provider carries on. */
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
}

static void
test_deadline(void **state)
{
	char ref[64];
	struct res r;
	const char *const slow[] = { "/bin/sh", "-c", "sleep 20", NULL };

	create_ok(ref, "sb-000000000009");
	/* The injected deadline_exceeded end-of-stream. */
	fault("{\"kind\":\"deadline_exceeded\",\"op\":\"envd:/process.Process/Start\"}");
	do_exec(&r, ref, sh_sleep, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_true(r.er.timed_out);
	assert_int_equal(r.er.exit_code, 137);

	/* A real one: envd runs the command under Connect-Timeout-Ms. */
	do_exec(&r, ref, slow, 300, NULL);
	assert_int_equal(r.status, 0);
	assert_true(r.er.timed_out);
}

static void
test_keepalive_long_command(void **state)
{
	char ref[64];
	struct res r;
	const char *const quiet[] = { "/bin/sh", "-c", "sleep 4; echo done", NULL };

	/* Silent for 4 s with keepalives every 1 s: the 3 s idle guard holds. */
	create_ok(ref, "sb-000000000010");
	do_exec(&r, ref, quiet, 20000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 0);
	assert_memory_equal(r.out, "done\n", 5);
}

static void
test_timeout_refreshed_while_busy(void **state)
{
	char ref[64];
	struct res r;
	const char *const slow[] = { "/bin/sh", "-c", "sleep 5; echo still-here", NULL };
	struct sp_exec_spec spec = { .argv = slow, .env = NULL, .timeout_ms = 20000 };

	/*
	 * A 3 s sandbox lifetime and a 5 s command: only the provider's
	 * refreshes while the command runs keep the sandbox from expiring.
	 */
	teardown(state);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	assert_int_equal(httpc_new(&T.loop, &T.http), 0);
	T.host.loop = &T.loop;
	T.host.http = T.http;
	conf_set("e2b.timeout", "3");
	memset(&r, 0, sizeof(r));
	assert_int_equal(prov_init(&r), 0);
	create_ok(ref, "sb-000000000018");
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, NULL), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 0);
	assert_memory_equal(r.out, "still-here\n", 11);
	assert_true(emu_count("timeout") >= 2);
	assert_int_equal(emu_sandboxes(), 1);
}

static void
test_env_and_workdir(void **state)
{
	char ref[64];
	struct res r;
	const char *const show[] = { "/bin/sh", "-c", "printf '%s|%s' \"$FOO\" \"$(basename $PWD)\"",
				     NULL };
	const char *const env[] = { "FOO=bar baz", NULL };
	const char *const bad_env[] = { "NOEQUALS", NULL };
	struct sp_exec_spec spec = { .argv = show, .env = env, .workdir = "/tmp",
				     .timeout_ms = 10000 };

	create_ok(ref, "sb-000000000019");
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, NULL), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.out_len, strlen("bar baz|tmp"));
	assert_memory_equal(r.out, "bar baz|tmp", r.out_len);
	spec.env = bad_env;
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, NULL),
			 SP_EINVAL);
}

static void
test_expiry(void **state)
{
	char ref[64], path[128];
	struct res r;

	create_ok(ref, "sb-000000000011");
	snprintf(path, sizeof(path), "/_emulator/sandboxes/%s/expire", ref);
	json_decref(emu("POST", path, NULL, NULL));
	do_exec(&r, ref, sh_echo, 10000, NULL);
	assert_int_equal(r.status, SP_ENOTFOUND);
	do_status(&r, ref);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.state, SP_INST_GONE);
	do_list(&r);
	assert_int_equal(r.n, 0);

	/* A sandbox that expires while a command runs: the stream ends early. */
	create_ok(ref, "sb-000000000012");
	memset(&r, 0, sizeof(r));
	struct sp_exec_spec spec = { .argv = sh_sleep, .timeout_ms = 20000 };
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, NULL), 0);
	while (r.out_len == 0)
		uv_run(&T.loop, UV_RUN_ONCE);
	snprintf(path, sizeof(path), "/_emulator/sandboxes/%s/expire", ref);
	json_decref(emu("POST", path, NULL, NULL));
	wait_for(&r.done);
	/* The emulator kills the process: it ends, by signal, or the stream breaks. */
	assert_true(r.status < 0 || r.er.exit_code == 137);
}

static void
cancel_soon(uv_timer_t *t)
{
	sp_e2b_provider.exec_cancel(&T.p, t->data);
}

static void
test_cancel_and_signal(void **state)
{
	char ref[64];
	long long pid;
	struct res r, s;
	struct sp_exec *ex = NULL;
	struct sp_exec_spec spec = { .argv = sh_sleep, .timeout_ms = 30000 };
	const char *const bg[] = { "/bin/sh", "-c", "exec sleep 30", NULL };
	uv_timer_t t;
	json_t *st;
	int tries;

	create_ok(ref, "sb-000000000013");
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &r, &ex), 0);
	while (r.out_len == 0)
		uv_run(&T.loop, UV_RUN_ONCE);
	uv_timer_init(&T.loop, &t);
	t.data = ex;
	uv_timer_start(&t, cancel_soon, 0, 0);
	wait_for(&r.done);
	assert_int_equal(r.status, SP_ECANCELED);
	uv_close((uv_handle_t *)&t, NULL);

	/* A background process, and SIGTERM to its pid. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(e2b_exec_background(T.e, ref, bg, NULL, on_done, &s), 0);
	wait_for(&s.done);
	assert_int_equal(s.status, 0);
	pid = atoll(s.detail);
	assert_true(pid > 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(e2b_signal(T.e, ref, pid, 15, on_done, &s), 0);
	wait_for(&s.done);
	assert_int_equal(s.status, 0);
	/* Both processes (the canceled one got SIGKILL) leave the emulator's
	 * table; no event tells the test when, so poll its state, bounded. */
	for (tries = 0; tries < 100; tries++) {
		st = emu("GET", "/_emulator/state", NULL, NULL);
		size_t n = json_array_size(json_object_get(json_array_get(
		    json_object_get(st, "sandboxes"), 0), "processes"));
		json_decref(st);
		if (n == 0)
			break;
		usleep(50000);
	}
	assert_true(tries < 100);
	/* A signal to a pid that is gone: not_found counts as done. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(e2b_signal(T.e, ref, pid, 9, on_done, &s), 0);
	wait_for(&s.done);
	assert_int_equal(s.status, 0);
}

static void
got_file(void *arg, int status, const char *data, size_t len, const char *detail)
{
	struct res *r = arg;

	set_detail(r, status, detail);
	if (data != NULL) {
		assert_true(len <= sizeof(r->out));
		memcpy(r->out, data, len);
		r->out_len = len;
	}
}

static void
test_files_and_background_start(void **state)
{
	char ref[64], dir[128], path[256], blob[70000];
	const char *const cmd[] = { "/bin/sh", "-c", "cat token ca.pem > out.tmp && mv out.tmp out; "
				    "sleep 30", NULL };
	const char *const wait_out[] = { "/bin/sh", "-c", "while [ ! -s out ]; do sleep 0.05; done; "
					 "cat out", NULL };
	struct sp_sandbox_spec spec = { .id = "sb-000000000014", .cmd = cmd, .files_dir = dir };
	struct res r;
	FILE *f;

	/* The stand-in for the worker's files: a token and a CA certificate. */
	snprintf(dir, sizeof(dir), "%s/files", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/token", dir);
	f = fopen(path, "w");
	fputs("tok-123\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	f = fopen(path, "w");
	fputs("-----BEGIN CERTIFICATE-----\n", f);
	fclose(f);

	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.create(&T.p, &spec, on_create, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	strcpy(ref, r.ref);

	/* start: timeout refresh, both files uploaded, the command in the background. */
	memset(&r, 0, sizeof(r));
	r.in_call = true;
	assert_int_equal(sp_e2b_provider.start(&T.p, ref, on_done, &r), 0);
	r.in_call = false;
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_count("timeout"), 1);
	assert_int_equal(emu_count("envd:/files"), 2);

	do_exec(&r, ref, wait_out, 10000, "/home/user/.sandpit");
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 0);
	assert_int_equal(r.out_len, strlen("tok-123\n-----BEGIN CERTIFICATE-----\n"));
	assert_memory_equal(r.out, "tok-123\n-----BEGIN CERTIFICATE-----\n", r.out_len);

	/* A second start only refreshes the timeout. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.start(&T.p, ref, on_done, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_count("envd:/files"), 2);
	assert_int_equal(emu_count("envd:/process.Process/Start"), 2);

	/* Upload and download round trip, binary with NULs. */
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (char)(i * 7);
	memset(&r, 0, sizeof(r));
	assert_int_equal(e2b_upload(T.e, ref, "/tmp/sub/blob.bin", blob, sizeof(blob), on_done,
				    &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(e2b_download(T.e, ref, "/tmp/sub/blob.bin", 0, got_file, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.out_len, sizeof(blob));
	assert_memory_equal(r.out, blob, sizeof(blob));
	/* Missing file: 404; larger than the caller's limit: -E2BIG. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(e2b_download(T.e, ref, "/tmp/none", 0, got_file, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, SP_ENOTFOUND);
	memset(&r, 0, sizeof(r));
	assert_int_equal(e2b_download(T.e, ref, "/tmp/sub/blob.bin", 1000, got_file, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, -E2BIG);
}

/* init() again on the live provider (the core does so after a failure). */
static int
reinit(struct res *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->in_call = true;
	rc = sp_e2b_provider.init(&T.p, on_done, r);
	r->in_call = false;
	if (rc < 0)
		return rc;
	wait_for(&r->done);
	return r->status;
}

/* describe()'s "endpoint", or "" when it has none. */
static void
described_endpoint(char *out, size_t sz)
{
	json_t *d = json_loads(sp_e2b_provider.describe(&T.p), 0, NULL);
	const char *ep = json_string_value(json_object_get(d, "endpoint"));

	assert_non_null(d);
	snprintf(out, sz, "%s", ep != NULL ? ep : "");
	json_decref(d);
}

static void
test_worker_endpoint(void **state)
{
	static const char *const bad[] = {
		"localhost 7443", "127.0.0.1", "127.0.0.1 0", "127.0.0.1 70000", "0.0.0.0 7443",
		":: 7443", "::1:7443", "[::1]7443", "[::1]:", "127.0.0.1 74x3", "127.0.0.1 -1",
		"127.0.0.1:7443:1", " 7443", "1.2.3.4.5 80",
	};
	static const struct { const char *in, *out; } good[] = {
		{ "127.0.0.2 7443", "127.0.0.2 7443" }, { "127.0.0.2:9000", "127.0.0.2 9000" },
		{ "[::1]:443", "::1 443" }, { "10.1.2.3    8443", "10.1.2.3 8443" },
		{ "2001:db8::7 65535", "2001:db8::7 65535" },
	};
	char ep[128];
	struct res r;

	/* Unset: no "endpoint", so the core writes its own default. */
	described_endpoint(ep, sizeof(ep));
	assert_string_equal(ep, "");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		conf_set("e2b.worker_endpoint", "%s", bad[i]);
		assert_int_equal(reinit(&r), SP_ECONFIG);
		assert_non_null(strstr(r.detail, "e2b.worker_endpoint"));
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		conf_set("e2b.worker_endpoint", "%s", good[i].in);
		assert_int_equal(reinit(&r), 0);
		described_endpoint(ep, sizeof(ep));
		assert_string_equal(ep, good[i].out);
	}
}

static void
test_worker_started_with_dir(void **state)
{
	char ref[64], dir[128], fake[128], path[256];
	const char *const wait_args[] = { "/bin/sh", "-c", "while [ ! -s args ]; do sleep 0.05; "
					  "done; cat args; cat endpoint", NULL };
	struct sp_sandbox_spec spec = { .id = "sb-000000000020", .files_dir = dir };
	struct res r;
	FILE *f;

	/*
	 * A sandbox without a command runs the worker: the host's binary is
	 * uploaded with the files and started with --dir naming where they
	 * landed (the worker's default, /run/sandpit, is not there in E2B) and
	 * --work naming the user's home (no /work there either).
	 * The stand-in binary records its arguments.
	 */
	snprintf(fake, sizeof(fake), "%s/fake-worker", tmpdir);
	f = fopen(fake, "w");
	fputs("#!/bin/sh\nprintf '%s\\n' \"$@\" > args.tmp && mv args.tmp args\nexec sleep 30\n",
	      f);
	fclose(f);
	snprintf(dir, sizeof(dir), "%s/wfiles", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/endpoint", dir);
	f = fopen(path, "w");
	fputs("127.0.0.2 7443\n", f);
	fclose(f);
	T.host.worker_binary = fake;

	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.create(&T.p, &spec, on_create, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	strcpy(ref, r.ref);
	memset(&r, 0, sizeof(r));
	assert_int_equal(sp_e2b_provider.start(&T.p, ref, on_done, &r), 0);
	wait_for(&r.done);
	assert_int_equal(r.status, 0);
	assert_int_equal(emu_count("envd:/files"), 2);		/* endpoint + the binary */
	do_exec(&r, ref, wait_args, 10000, "/home/user/.sandpit");
	T.host.worker_binary = NULL;
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 0);
	r.out[r.out_len] = '\0';
	/* --dir is the command's cwd: /home/user/.sandpit inside the sandbox
	 * (a host path under the emulator's root without a mount namespace);
	 * --work is the sandbox user's home, where tasks without a workdir run. */
	assert_true(strncmp(r.out, "--dir\n", 6) == 0);
	assert_non_null(strstr(r.out, "/home/user/.sandpit\n--work\n"));
	assert_non_null(strstr(r.out, "/home/user\n127.0.0.2 7443\n"));
}

static void
test_reconcile_list(void **state)
{
	char body[512], mine[64];
	struct res r;
	long st;
	int i;
	json_t *j;

	/*
	 * 120 sandboxes with our instance that this provider never made (a
	 * previous run), 3 of another daemon: list pages through ours only.
	 */
	for (i = 0; i < 123; i++) {
		snprintf(body, sizeof(body), "{\"templateID\":\"base\",\"timeout\":300,\"secure\":true,"
			 "\"metadata\":{\"%s\":\"%s\",\"%s\":\"sb-old%06d\"}}", SP_LABEL_INSTANCE,
			 i < 120 ? instance : "other-daemon", SP_LABEL_SANDBOX, i);
		j = emu("POST", "/sandboxes", body, &st);
		assert_int_equal(st, 201);
		if (i == 0)
			snprintf(mine, sizeof(mine), "%s",
				 json_string_value(json_object_get(j, "sandboxID")));
		json_decref(j);
	}
	do_list(&r);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.n, 120);
	assert_true(emu_count("list") >= 1 + 2);	/* two pages */
	for (size_t k = 0; k < r.n; k++)
		assert_non_null(strstr(r.sids[k], "sb-old"));

	/* One it does not know: commands reach it (the token is fetched). */
	do_exec(&r, mine, sh_echo, 10000, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.er.exit_code, 3);
	do_destroy(&r, mine);
	assert_int_equal(r.status, 0);
	do_list(&r);
	assert_int_equal(r.n, 119);
}

static void
test_close_with_pending(void **state)
{
	char ref[64];
	struct res a = { 0 }, b = { 0 }, c = { 0 };
	struct sp_exec_spec spec = { .argv = sh_sleep, .timeout_ms = 30000 };
	struct sp_sandbox_spec cs = { .id = "sb-000000000015" };

	create_ok(ref, "sb-000000000015");
	assert_int_equal(sp_e2b_provider.exec(&T.p, ref, &spec, on_out, on_exec, &a, NULL), 0);
	while (a.out_len == 0)
		uv_run(&T.loop, UV_RUN_ONCE);
	/* A create waiting in backoff, and one in flight. */
	T.e->retry.budget_ms = 120000;
	fault("{\"kind\":\"rate_limit\",\"op\":\"create\",\"count\":1,\"retryAfter\":30}");
	assert_int_equal(sp_e2b_provider.create(&T.p, &cs, on_create, &b), 0);
	while (emu_count("create") < 2)
		uv_run(&T.loop, UV_RUN_NOWAIT);
	fault("{\"kind\":\"delay\",\"op\":\"list\",\"ms\":30000}");
	assert_int_equal(sp_e2b_provider.list(&T.p, on_list, &c), 0);
	/* teardown closes: everything pending ends with SP_ECANCELED. */
	teardown(state);
	assert_true(a.done && b.done && c.done);
	assert_int_equal(a.status, SP_ECANCELED);
	assert_int_equal(b.status, SP_ECANCELED);
	assert_int_equal(c.status, SP_ECANCELED);
	emu("DELETE", "/_emulator/faults", NULL, NULL);
	/* Leave something for the group's teardown to close. */
	setup(state);
}

static int
group_setup(void **state)
{
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sandpit-e2bprov.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(keyfile, sizeof(keyfile), "%s/key", tmpdir);
	f = fopen(keyfile, "w");
	fprintf(f, "%s\n", KEY);
	fclose(f);
	snprintf(instance, sizeof(instance), "test-inst-%d", (int)getpid());
	unsetenv("CREDENTIALS_DIRECTORY");
	if (emu_start() < 0) {
		fprintf(stderr, "e2b emulator (node) not available\n");
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	char cmd[128];
	int st;

	if (emu_pid > 0) {
		kill(emu_pid, SIGTERM);
		waitpid(emu_pid, &st, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		return -1;
	curl_global_cleanup();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_sources, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_during_init, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_addressing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_envd_unreachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_429, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_exhausted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrency_429, setup, teardown),
		cmocka_unit_test_setup_teardown(test_5xx_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_timeout_no_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_ambiguous_adopts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_dropped_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_lost_response_adopts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_lost_reply_runs_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_envd_502_not_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive_long_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_refreshed_while_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_and_workdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_and_signal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_files_and_background_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_started_with_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_pending, setup, teardown),
	};

	alarm(600);
	if (getenv("E2B_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("E2B_TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

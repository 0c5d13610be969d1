/*
 * The Docker provider against the real dockerd, driven through its ops with a
 * real loop and httpc: image build, every hardening field, what a sandbox can
 * and cannot do (root, capabilities, writes to /, fork bombs, memory hogs,
 * unshare, the host and other sandboxes), list, destroy and a missing engine.
 * Everything it creates carries this process's id and is removed at the end,
 * also on failure. It sends no packet outside this machine.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "httpc.h"

extern const struct sp_provider_ops sp_docker_provider;

#define MEM_LIMIT	(32ll << 20)
#define PIDS_LIMIT	64

static uv_loop_t loop;
static char files_dir[64];
static struct sp_httpc *http;
static char instance[64], network[64], bridge[16], image[80], worker[512], source[512];
static char socket_path[256] = "/var/run/docker.sock";
static char gateway[64];
static struct sp_host host;
static struct sp_provider prov;
static char logbuf[8192];

static const char *
conf(const struct sp_host *h, const char *name)
{
	if (strcmp(name, "docker.network") == 0)
		return network;
	if (strcmp(name, "docker.bridge") == 0)
		return bridge;
	if (strcmp(name, "docker.socket") == 0)
		return socket_path;
	return NULL;
}

static void
test_log(int prio, const char *fmt, ...)
{
	size_t off = strlen(logbuf);
	va_list ap;

	va_start(ap, fmt);
	if (off < sizeof(logbuf) - 2) {
		vsnprintf(logbuf + off, sizeof(logbuf) - off - 1, fmt, ap);
		strcat(logbuf, "\n");
	}
	va_end(ap);
	va_start(ap, fmt);
	fprintf(stderr, "log<%d>: ", prio);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- synchronous wrappers: run the loop until the callback fired ---- */

struct wait {
	bool done;
	int status;
	char detail[1024];
	char ref[128];
	struct sp_instance inst;
	char sandbox_id[64];
	size_t n;
	char refs[16][128];
	char ids[16][64];
	struct sp_exec_result res;
	char out[65536];
	size_t out_len;
	char err[65536];
	size_t err_len;
};

/* A hang fails the test (and the teardown still cleans up) instead of the ctest timeout. */
#define WAIT_LIMIT_MS	120000
static uv_timer_t watchdog;
static bool expired;

static void
watchdog_cb(uv_timer_t *t)
{
	expired = true;
	uv_stop(&loop);
}

static void
run_until_flag(bool *done, const char *what)
{
	expired = false;
	uv_timer_start(&watchdog, watchdog_cb, WAIT_LIMIT_MS, 0);
	/*
	 * Callbacks uv_stop() the loop: a UV_RUN_ONCE whose callback ran in the
	 * timer phase would otherwise go on to block in poll.
	 */
	while (!*done && !expired)
		uv_run(&loop, UV_RUN_DEFAULT);
	uv_timer_stop(&watchdog);
	if (!*done)
		fail_msg("no callback after %d s: %s", WAIT_LIMIT_MS / 1000, what);
}

#define run_until(w)	run_until_flag(&(w)->done, #w " at line " _SP_STR(__LINE__))
#define _SP_STR(x)	_SP_STR2(x)
#define _SP_STR2(x)	#x

static void
done_cb(void *arg, int status, const char *detail)
{
	struct wait *w = arg;

	w->done = true;
	uv_stop(&loop);
	w->status = status;
	snprintf(w->detail, sizeof(w->detail), "%s", detail != NULL ? detail : "");
}

static void
create_cb(void *arg, int status, const char *ref, const char *detail)
{
	struct wait *w = arg;

	done_cb(arg, status, detail);
	if (ref != NULL)
		snprintf(w->ref, sizeof(w->ref), "%s", ref);
}

static void
list_cb(void *arg, int status, const struct sp_instance *items, size_t n, const char *detail)
{
	struct wait *w = arg;

	done_cb(arg, status, detail);
	w->n = n;
	for (size_t i = 0; i < n && i < 16; i++) {
		snprintf(w->refs[i], sizeof(w->refs[i]), "%s", items[i].ref);
		snprintf(w->ids[i], sizeof(w->ids[i]), "%s",
		    items[i].sandbox_id != NULL ? items[i].sandbox_id : "");
	}
}

static void
status_cb(void *arg, int status, const struct sp_instance *inst, const char *detail)
{
	struct wait *w = arg;

	done_cb(arg, status, detail);
	if (inst != NULL) {
		w->inst = *inst;
		snprintf(w->sandbox_id, sizeof(w->sandbox_id), "%s",
		    inst->sandbox_id != NULL ? inst->sandbox_id : "");
	}
}

static int
out_cb(void *arg, int fd, const char *data, size_t len)
{
	struct wait *w = arg;
	char *buf = fd == 2 ? w->err : w->out;
	size_t *blen = fd == 2 ? &w->err_len : &w->out_len;

	assert_true(fd == 1 || fd == 2);
	if (len > 65535 - *blen)
		len = 65535 - *blen;
	memcpy(buf + *blen, data, len);
	*blen += len;
	buf[*blen] = '\0';
	return 0;
}

static void
exec_cb(void *arg, int status, const struct sp_exec_result *res, const char *detail)
{
	struct wait *w = arg;

	done_cb(arg, status, detail);
	if (res != NULL)
		w->res = *res;
}

static int
sh(const char *ref, const char *script, uint64_t timeout_ms, struct wait *w)
{
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	const struct sp_exec_spec spec = { .argv = argv, .timeout_ms = timeout_ms };
	int rc;

	memset(w, 0, sizeof(*w));
	rc = prov.ops->exec(&prov, ref, &spec, out_cb, exec_cb, w, NULL);
	assert_int_equal(rc, 0);
	assert_false(w->done);
	run_until(w);
	if (w->status != 0)
		fprintf(stderr, "exec '%s': %d %s\n", script, w->status, w->detail);
	return w->status;
}

/* ---- direct engine access for checks and clean-up ---- */

struct get {
	bool done;
	int status;
	long http;
	json_t *json;
};

static void
get_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct get *g = arg;

	g->done = true;
	uv_stop(&loop);
	g->status = status;
	g->http = resp->status;
	if (status == 0 && resp->body_len > 0)
		g->json = json_loadb(resp->body, resp->body_len, 0, NULL);
}

static json_t *
engine(const char *method, const char *path, long *code)
{
	char url[512];
	struct sp_http_opts o = { .method = method, .url = url, .unix_socket = socket_path,
				  .timeout_ms = 30000 };
	struct get g = { 0 };

	snprintf(url, sizeof(url), "http://localhost/v1.41%s", path);
	assert_int_equal(sp_http_request(http, &o, NULL, get_done, &g, NULL), 0);
	while (!g.done)
		uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(g.status, 0);
	if (code != NULL)
		*code = g.http;
	return g.json;
}

static void
cleanup_everything(void)
{
	char cmd[1024], in[64], fwd[64];

	snprintf(cmd, sizeof(cmd), "ids=$(docker ps -aq --filter label=%s=%s); "
	    "[ -z \"$ids\" ] || docker rm -f $ids >/dev/null 2>&1", SP_LABEL_INSTANCE, instance);
	(void)!system(cmd);
	snprintf(cmd, sizeof(cmd), "docker network rm %s >/dev/null 2>&1", network);
	(void)!system(cmd);
	snprintf(cmd, sizeof(cmd), "docker rmi -f %s >/dev/null 2>&1", image);
	(void)!system(cmd);
	snprintf(in, sizeof(in), "SANDPIT-IN-%s", bridge);
	snprintf(fwd, sizeof(fwd), "SANDPIT-FW-%s", bridge);
	snprintf(cmd, sizeof(cmd), "iptables -w -D INPUT -i %s -j %s 2>/dev/null; "
	    "iptables -w -F %s 2>/dev/null; iptables -w -X %s 2>/dev/null; "
	    "iptables -w -D DOCKER-USER -j %s 2>/dev/null; iptables -w -D FORWARD -j %s "
	    "2>/dev/null; iptables -w -F %s 2>/dev/null; iptables -w -X %s 2>/dev/null; true",
	    bridge, in, in, in, fwd, fwd, fwd, fwd);
	(void)!system(cmd);
}

/*
 * Runs of this test that were killed (a ctest timeout) could not clean up.
 * Remove what belongs to a run whose process is gone: containers labelled
 * sandpit-test-<pid>, networks sandpit-test-[open-]<pid>, images
 * sandpit-test/worker:<pid> and the chains of bridge spt<pid>. A live pid is
 * left alone.
 */
static void
sweep_dead_runs(void)
{
	static const char script[] =
	    "pids=$( { docker ps -a --format '{{.Label \"io.sandpit.instance\"}}';"
	    "  docker network ls --format '{{.Name}}' | sed 's/^sandpit-test-open-/sandpit-test-/';"
	    "  iptables -w -S 2>/dev/null | sed -n 's/^-N SANDPIT-IN-spt\\([0-9]*\\)$/sandpit-test-\\1/p';"
	    "  docker images --format '{{.Repository}}:{{.Tag}}' | sed -n 's|^sandpit-test/worker:|sandpit-test-|p';"
	    "} | sed -n 's/^sandpit-test-\\([0-9][0-9]*\\)$/\\1/p' | sort -u);"
	    "for p in $pids; do"
	    "  kill -0 $p 2>/dev/null && continue;"
	    "  [ -d /proc/$p ] && continue;"
	    "  ids=$(docker ps -aq --filter label=io.sandpit.instance=sandpit-test-$p);"
	    "  [ -z \"$ids\" ] || docker rm -f $ids >/dev/null 2>&1;"
	    "  docker network rm sandpit-test-$p sandpit-test-open-$p >/dev/null 2>&1;"
	    "  docker rmi -f sandpit-test/worker:$p >/dev/null 2>&1;"
	    "  b=spt$p;"
	    "  iptables -w -D INPUT -i $b -j SANDPIT-IN-$b 2>/dev/null;"
	    "  iptables -w -F SANDPIT-IN-$b 2>/dev/null; iptables -w -X SANDPIT-IN-$b 2>/dev/null;"
	    "  iptables -w -D DOCKER-USER -j SANDPIT-FW-$b 2>/dev/null;"
	    "  iptables -w -D FORWARD -j SANDPIT-FW-$b 2>/dev/null;"
	    "  iptables -w -F SANDPIT-FW-$b 2>/dev/null; iptables -w -X SANDPIT-FW-$b 2>/dev/null;"
	    "done; true";

	(void)!system(script);
}

static void
provider_open(struct sp_provider *p, void *priv, int *status, char *detail, size_t len)
{
	struct wait w = { 0 };

	p->ops = &sp_docker_provider;
	p->host = &host;
	p->priv = priv;
	assert_int_equal(p->ops->init(p, done_cb, &w), 0);
	assert_false(w.done);
	run_until(&w);
	*status = w.status;
	snprintf(detail, len, "%s", w.detail);
}

static void
provider_close(struct sp_provider *p)
{
	struct wait w = { 0 };

	p->ops->close(p, done_cb, &w);
	assert_false(w.done);
	run_until(&w);
	free(p->priv);
}

static int
group_setup(void **state)
{
	const char *b = getenv("SANDPIT_BUILD_DIR"), *s = getenv("SANDPIT_SOURCE_DIR");
	char detail[1024];
	int status;

	if (b == NULL || s == NULL) {
		fprintf(stderr, "SANDPIT_BUILD_DIR and SANDPIT_SOURCE_DIR must be set\n");
		return -1;
	}
	snprintf(source, sizeof(source), "%s", s);
	snprintf(worker, sizeof(worker), "%s/sandpit-worker", b);
	snprintf(instance, sizeof(instance), "sandpit-test-%d", (int)getpid());
	snprintf(network, sizeof(network), "sandpit-test-%d", (int)getpid());
	snprintf(bridge, sizeof(bridge), "spt%d", (int)getpid() % 10000000);
	snprintf(image, sizeof(image), "sandpit-test/worker:%d", (int)getpid());
	sweep_dead_runs();
	cleanup_everything();

	if (uv_loop_init(&loop) != 0 || httpc_new(&loop, &http) != 0)
		return -1;
	uv_timer_init(&loop, &watchdog);
	host.loop = &loop;
	host.http = http;
	host.instance = instance;
	host.state_dir = "/tmp";
	host.worker_image = image;
	host.worker_binary = worker;
	host.worker_port = (uint16_t)(40000 + getpid() % 20000);
	host.conf = conf;
	host.log = test_log;

	provider_open(&prov, calloc(1, sp_docker_provider.priv_size), &status, detail,
	    sizeof(detail));
	if (status != 0) {
		fprintf(stderr, "init: %d %s\n", status, detail);
		return -1;
	}
	return 0;
}

static void
closed_cb(void *arg)
{
	*(int *)arg = 1;
	uv_stop(&loop);
}

static int
group_teardown(void **state)
{
	int closed = 0, rc;

	/* Remove what we made first, so a crash below leaves nothing behind. */
	cleanup_everything();
	if (files_dir[0] != '\0') {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", files_dir);
		(void)!system(cmd);
	}
	provider_close(&prov);
	uv_close((uv_handle_t *)&watchdog, NULL);
	httpc_close(http, closed_cb, &closed);
	while (!closed)
		uv_run(&loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&loop);
	if (rc != 0)
		fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
	return rc;
}

/* ---- sandboxes ---- */

static char ref_a[128], ref_b[128];
static char id_a[64], id_b[64];

static void
create_sandbox(const char *id, char *ref, const char *files)
{
	static const char *const sleeper[] = { "/bin/busybox", "sleep", "100000", NULL };
	struct sp_sandbox_spec spec = {
		.id = id, .tenant = "test-tenant", .spec_hash = "hash-1",
		/*
		 * Not the image's CMD (the worker): the QUIC worker may rightly give
		 * up without a daemon to talk to, and these sandboxes must stay up.
		 * The CMD itself is checked on the image, the binary by an exec.
		 */
		.cmd = sleeper,
		.memory_bytes = MEM_LIMIT, .nano_cpus = 500000000, .pids_limit = PIDS_LIMIT,
		.nofile = 256, .tmp_bytes = 8 << 20, .work_bytes = 16 << 20,
		.files_dir = files,
	};
	struct wait w = { 0 };

	assert_int_equal(prov.ops->create(&prov, &spec, create_cb, &w), 0);
	assert_false(w.done);
	run_until(&w);
	if (w.status != 0)
		fprintf(stderr, "create: %d %s\n", w.status, w.detail);
	assert_int_equal(w.status, 0);
	assert_true(strlen(w.ref) == 64);
	strcpy(ref, w.ref);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->start(&prov, ref, done_cb, &w), 0);
	run_until(&w);
	if (w.status != 0)
		fprintf(stderr, "start: %d %s\n", w.status, w.detail);
	assert_int_equal(w.status, 0);
}

static void
test_image_build(void **state)
{
	struct wait w1 = { 0 }, w2 = { 0 };
	char path[256];
	json_t *img, *labels;
	long code;

	/* Two at once: one build, both told. */
	assert_int_equal(prov.ops->build_image(&prov, done_cb, &w1), 0);
	assert_int_equal(prov.ops->build_image(&prov, done_cb, &w2), 0);
	run_until(&w1);
	run_until(&w2);
	if (w1.status != 0)
		fprintf(stderr, "build: %s\n", w1.detail);
	assert_int_equal(w1.status, 0);
	assert_int_equal(w2.status, 0);
	assert_string_equal(w1.detail, image);

	snprintf(path, sizeof(path), "/images/%s/json", image);
	img = engine("GET", path, &code);
	assert_int_equal(code, 200);
	labels = json_object_get(json_object_get(img, "Config"), "Labels");
	assert_int_equal(strlen(json_string_value(json_object_get(labels,
	    "io.sandpit.content"))), 64);
	assert_string_equal(json_string_value(json_object_get(json_object_get(img, "Config"),
	    "User")), "65534:65534");
	assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(img,
	    "Config"), "Cmd"), 0)), "/usr/local/bin/sandpit-worker");
	assert_string_equal(json_string_value(json_object_get(json_object_get(img, "Config"),
	    "WorkingDir")), "/work");
	json_decref(img);
}

static void
test_create_hardening(void **state)
{
	char path[256], want[128];
	json_t *c, *hc, *sec, *lab, *tmpfs, *ul, *net, *v;
	bool nnp = false, seccomp = false;
	size_t i;
	long code;

	snprintf(id_a, sizeof(id_a), "sb-a%d", (int)getpid());
	snprintf(id_b, sizeof(id_b), "sb-b%d", (int)getpid());
	/* B gets a files directory, readable by the sandbox user. */
	strcpy(files_dir, "/tmp/sp-files-XXXXXX");
	assert_non_null(mkdtemp(files_dir));
	assert_int_equal(chmod(files_dir, 0755), 0);
	{
		char token[128];
		FILE *f;

		snprintf(token, sizeof(token), "%s/token", files_dir);
		f = fopen(token, "w");
		assert_non_null(f);
		fputs("secret-ish\n", f);
		fclose(f);
		assert_int_equal(chmod(token, 0444), 0);
	}
	create_sandbox(id_a, ref_a, NULL);
	create_sandbox(id_b, ref_b, files_dir);

	snprintf(path, sizeof(path), "/containers/%s/json", ref_a);
	c = engine("GET", path, &code);
	assert_int_equal(code, 200);
	assert_string_equal(json_string_value(json_object_get(json_object_get(c, "State"),
	    "Status")), "running");
	snprintf(want, sizeof(want), "/sandpit-%s", id_a);
	assert_string_equal(json_string_value(json_object_get(c, "Name")), want);
	assert_string_equal(json_string_value(json_object_get(json_object_get(c, "Config"),
	    "User")), "65534:65534");
	hc = json_object_get(c, "HostConfig");
	assert_int_equal(json_array_size(json_object_get(hc, "CapDrop")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "CapDrop"), 0)),
	    "ALL");
	assert_true(json_array_size(json_object_get(hc, "CapAdd")) == 0);
	assert_true(json_is_false(json_object_get(hc, "Privileged")));
	sec = json_object_get(hc, "SecurityOpt");
	json_array_foreach(sec, i, v) {
		if (strcmp(json_string_value(v), "no-new-privileges:true") == 0)
			nnp = true;
		if (strncmp(json_string_value(v), "seccomp=", 8) == 0 &&
		    strstr(json_string_value(v), "SCMP_ACT_ERRNO") != NULL)
			seccomp = true;
	}
	assert_true(nnp);
	assert_true(seccomp);
	assert_true(json_is_true(json_object_get(hc, "ReadonlyRootfs")));
	assert_true(json_is_true(json_object_get(hc, "Init")));
	assert_string_equal(json_string_value(json_object_get(hc, "IpcMode")), "private");
	assert_string_equal(json_string_value(json_object_get(hc, "NetworkMode")), network);
	assert_int_equal(json_integer_value(json_object_get(hc, "Memory")), MEM_LIMIT);
	assert_int_equal(json_integer_value(json_object_get(hc, "MemorySwap")), MEM_LIMIT);
	assert_int_equal(json_integer_value(json_object_get(hc, "NanoCpus")), 500000000);
	assert_int_equal(json_integer_value(json_object_get(hc, "PidsLimit")), PIDS_LIMIT);
	ul = json_array_get(json_object_get(hc, "Ulimits"), 0);
	assert_string_equal(json_string_value(json_object_get(ul, "Name")), "nofile");
	assert_int_equal(json_integer_value(json_object_get(ul, "Soft")), 256);
	assert_int_equal(json_integer_value(json_object_get(ul, "Hard")), 256);
	tmpfs = json_object_get(hc, "Tmpfs");
	assert_non_null(strstr(json_string_value(json_object_get(tmpfs, "/tmp")),
	    "size=8388608"));
	assert_non_null(strstr(json_string_value(json_object_get(tmpfs, "/tmp")), "noexec"));
	assert_non_null(strstr(json_string_value(json_object_get(tmpfs, "/work")),
	    "size=16777216"));
	assert_true(json_array_size(json_object_get(hc, "Binds")) == 0);
	assert_true(json_is_false(json_object_get(hc, "AutoRemove")));
	lab = json_object_get(json_object_get(c, "Config"), "Labels");
	assert_string_equal(json_string_value(json_object_get(lab, SP_LABEL_INSTANCE)), instance);
	assert_string_equal(json_string_value(json_object_get(lab, SP_LABEL_SANDBOX)), id_a);
	assert_string_equal(json_string_value(json_object_get(lab, SP_LABEL_TENANT)),
	    "test-tenant");
	assert_string_equal(json_string_value(json_object_get(lab, SP_LABEL_SPEC_HASH)), "hash-1");
	/* No Docker socket, no mount but the tmpfs. */
	assert_true(json_array_size(json_object_get(c, "Mounts")) == 0);
	json_decref(c);

	snprintf(path, sizeof(path), "/networks/%s", network);
	net = engine("GET", path, &code);
	assert_int_equal(code, 200);
	assert_true(json_is_true(json_object_get(net, "Internal")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(net, "Options"),
	    "com.docker.network.bridge.enable_icc")), "false");
	v = json_array_get(json_object_get(json_object_get(net, "IPAM"), "Config"), 0);
	snprintf(gateway, sizeof(gateway), "%s", json_string_value(json_object_get(v,
	    "Gateway")));
	assert_true(strlen(gateway) > 0);
	json_decref(net);
}

static void
test_exec_identity(void **state)
{
	struct wait w;

	assert_int_equal(sh(ref_a, "id -u", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_string_equal(w.out, "65534\n");
	assert_false(w.res.oom_killed);
	assert_false(w.res.timed_out);

	assert_int_equal(sh(ref_a, "grep CapEff /proc/self/status", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_non_null(strstr(w.out, "0000000000000000"));
	assert_int_equal(sh(ref_a, "grep -E 'CapPrm|CapBnd' /proc/self/status", 0, &w), 0);
	assert_null(strstr(w.out, "00000000a"));
	assert_int_equal(sh(ref_a, "grep NoNewPrivs /proc/self/status", 0, &w), 0);
	assert_non_null(strstr(w.out, "1"));

	/* Read-only root; /work and /tmp writable, /tmp without exec. */
	assert_int_equal(sh(ref_a, "touch /x", 0, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
	assert_non_null(strstr(w.err, "Read-only"));
	assert_int_equal(sh(ref_a, "echo hi > /work/f && cat /work/f && pwd", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_string_equal(w.out, "hi\n/work\n");
	assert_int_equal(sh(ref_a, "cp /bin/busybox /tmp/bb && /tmp/bb true", 0, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);

	/* stdout and stderr apart, the exit code through. */
	assert_int_equal(sh(ref_a, "echo out; echo err >&2; exit 7", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 7);
	assert_string_equal(w.out, "out\n");
	assert_string_equal(w.err, "err\n");

	/* B's files are there, read-only; the environment and workdir are ours. */
	assert_int_equal(sh(ref_b, "cat /run/sandpit/token; touch /run/sandpit/x", 0, &w), 0);
	assert_string_equal(w.out, "secret-ish\n");
	assert_int_not_equal(w.res.exit_code, 0);
	{
		const char *argv[] = { "/bin/sh", "-c", "echo $FOO; pwd", NULL };
		const char *env[] = { "FOO=bar baz", NULL };
		const struct sp_exec_spec spec = { .argv = argv, .env = env, .workdir = "/tmp" };

		memset(&w, 0, sizeof(w));
		assert_int_equal(prov.ops->exec(&prov, ref_a, &spec, out_cb, exec_cb, &w, NULL), 0);
		run_until(&w);
		assert_int_equal(w.status, 0);
		assert_string_equal(w.out, "bar baz\n/tmp\n");
	}

	/* Output larger than one frame and one read. */
	assert_int_equal(sh(ref_a, "head -c 300000 /dev/zero | tr '\\0' x", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_int_equal(w.out_len, 65535);
}

static void
test_seccomp(void **state)
{
	struct wait w;

	/* The shell and common applets run under the profile. */
	assert_int_equal(sh(ref_a, "ls / >/dev/null && cat /etc/passwd >/dev/null && "
	    "echo a | head -c 1 && sleep 0.1 && dd if=/dev/zero of=/dev/null bs=1k count=1 "
	    "2>/dev/null && date >/dev/null && ps >/dev/null && echo ok", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_string_equal(w.out, "aok\n");
	/* The worker runs in the image: static, or (sanitizer builds) with its libraries. */
	assert_int_equal(sh(ref_a, "sandpit-worker --version", 0, &w), 0);
	assert_int_equal(w.res.exit_code, 0);
	assert_non_null(strstr(w.out, "sandpit-worker"));
	/* unshare(2) is denied: busybox unshare fails. */
	assert_int_equal(sh(ref_a, "unshare -U -r true", 0, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
	assert_int_equal(sh(ref_a, "unshare -n true", 0, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
}

static void
test_exec_timeout(void **state)
{
	struct wait w;

	assert_int_equal(sh(ref_a, "echo started; sleep 20", 500, &w), 0);
	assert_true(w.res.timed_out);
	assert_int_equal(w.res.exit_code, 137);
	assert_string_equal(w.out, "started\n");

	/* A background child keeps the stream open: we stop waiting after a grace. */
	assert_int_equal(sh(ref_a, "sleep 30 & sleep 30", 500, &w), 0);
	assert_true(w.res.timed_out);
	assert_int_equal(w.res.exit_code, 137);

	/* A quick command under a timeout is not "timed out". */
	assert_int_equal(sh(ref_a, "true", 5000, &w), 0);
	assert_false(w.res.timed_out);
	assert_int_equal(w.res.exit_code, 0);
}

static void
test_fork_bomb(void **state)
{
	struct wait w;
	int tries;

	/* Bounded: sleepers die by themselves; the shell dies at the first failed fork. */
	assert_int_equal(sh(ref_b, "i=0; while [ $i -lt 2000 ]; do sleep 3 >/dev/null 2>&1 & "
	    "i=$((i+1)); done; echo survived", 20000, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
	assert_false(w.res.timed_out);
	assert_null(strstr(w.out, "survived"));
	assert_non_null(strstr(w.err, "fork"));

	/* The sandbox lives on: once the sleepers are gone, execs work again. */
	for (tries = 0; tries < 40; tries++) {
		memset(&w, 0, sizeof(w));
		if (sh(ref_b, "echo alive", 0, &w) == 0 && w.res.exit_code == 0 &&
		    strcmp(w.out, "alive\n") == 0)
			break;
		usleep(250000);		/* polling the sandbox, not synchronising */
	}
	assert_true(tries < 40);
}

static void
test_oom(void **state)
{
	struct wait w;

	/* The shell keeps the whole command substitution in memory: 256 MiB > 32 MiB. */
	assert_int_equal(sh(ref_a, "x=$(head -c 268435456 /dev/zero | tr '\\0' a); "
	    "echo ${#x}", 60000, &w), 0);
	assert_true(w.res.oom_killed);
	assert_int_not_equal(w.res.exit_code, 0);

	/* And the next exec is not reported as OOM. */
	assert_int_equal(sh(ref_a, "true", 0, &w), 0);
	assert_false(w.res.oom_killed);
}

static int
listen_on(const char *addr, int type, uint16_t port, uint16_t *bound)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*bound = ntohs(sin.sin_port);
	return fd;
}

static void
test_host_unreachable(void **state)
{
	struct wait w;
	char script[256], buf[64];
	uint16_t port, wport;
	int fd, ufd;
	ssize_t n;

	/* Only root installs the host firewall this relies on (otherwise: a warning). */
	if (geteuid() != 0)
		skip();
	/* A TCP listener on the bridge address (not the worker port) is out of reach. */
	fd = listen_on(gateway, SOCK_STREAM, 0, &port);
	assert_int_not_equal(port, host.worker_port);
	snprintf(script, sizeof(script), "nc -w 2 %s %u </dev/null", gateway, port);
	assert_int_equal(sh(ref_a, script, 20000, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
	assert_int_equal(accept(fd, NULL, NULL), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	close(fd);

	/* The worker port on the gateway is the one way through (UDP). */
	ufd = listen_on(gateway, SOCK_DGRAM, host.worker_port, &wport);
	/* busybox's nc has no UDP; its tftp client sends one read request. */
	snprintf(script, sizeof(script), "tftp -g -r hello -l /work/t %s %u", gateway,
	    (unsigned)wport);
	assert_int_equal(sh(ref_a, script, 1500, &w), 0);
	n = recv(ufd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 8);
	/* RRQ: opcode 1, then the file name. */
	assert_int_equal(buf[1], 1);
	assert_string_equal(buf + 2, "hello");
	close(ufd);
}

static void
test_sandbox_to_sandbox(void **state)
{
	const char *argv[] = { "nc", "-l", "-p", "8080", NULL };
	const struct sp_exec_spec spec = { .argv = argv, .timeout_ms = 15000 };
	static struct wait lw;		/* outlives a failed assertion */
	struct wait w;
	char path[256], script[256], ip[64];
	json_t *c, *nets, *n;
	const char *key;
	long code;
	int tries;

	snprintf(path, sizeof(path), "/containers/%s/json", ref_b);
	c = engine("GET", path, &code);
	nets = json_object_get(json_object_get(c, "NetworkSettings"), "Networks");
	ip[0] = '\0';
	json_object_foreach(nets, key, n)
		snprintf(ip, sizeof(ip), "%s", json_string_value(json_object_get(n, "IPAddress")));
	json_decref(c);
	assert_true(strlen(ip) > 0);

	/* B listens (checked from inside B), A tries to connect. */
	assert_int_equal(prov.ops->exec(&prov, ref_b, &spec, out_cb, exec_cb, &lw, NULL), 0);
	for (tries = 0; tries < 50; tries++) {
		if (sh(ref_b, "netstat -ltn | grep -q ':8080 '", 0, &w) == 0 &&
		    w.res.exit_code == 0)
			break;
		usleep(100000);
	}
	assert_true(tries < 50);
	snprintf(script, sizeof(script), "echo x | nc -w 2 %s 8080", ip);
	assert_int_equal(sh(ref_a, script, 20000, &w), 0);
	assert_int_not_equal(w.res.exit_code, 0);
	/* The listener never got a connection: it runs until its timeout. */
	run_until(&lw);
	assert_int_equal(lw.status, 0);
	assert_true(lw.res.timed_out);
	assert_string_equal(lw.out, "");
}

static void
test_list_status(void **state)
{
	struct wait w = { 0 };
	bool a = false, b = false;

	assert_int_equal(prov.ops->list(&prov, list_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);
	assert_int_equal(w.n, 2);
	for (size_t i = 0; i < w.n; i++) {
		if (strcmp(w.refs[i], ref_a) == 0 && strcmp(w.ids[i], id_a) == 0)
			a = true;
		if (strcmp(w.refs[i], ref_b) == 0 && strcmp(w.ids[i], id_b) == 0)
			b = true;
	}
	assert_true(a && b);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->status(&prov, ref_a, status_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);
	assert_int_equal(w.inst.state, SP_INST_RUNNING);
	assert_string_equal(w.sandbox_id, id_a);
}

struct events {
	int gone, exited;
	char ref[128];
};

static void
event_cb(void *arg, const struct sp_instance *inst)
{
	struct events *e = arg;

	if (strcmp(inst->ref, e->ref) != 0)
		return;
	uv_stop(&loop);
	if (inst->state == SP_INST_GONE)
		e->gone++;
	if (inst->state == SP_INST_EXITED)
		e->exited++;
}

static void
test_destroy_and_events(void **state)
{
	static struct events ev;
	struct wait w = { 0 };

	strcpy(ev.ref, ref_b);
	assert_int_equal(prov.ops->watch(&prov, event_cb, &ev), 0);
	assert_int_equal(prov.ops->destroy(&prov, ref_b, done_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);
	/* Already gone: still success. */
	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->destroy(&prov, ref_b, done_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->status(&prov, ref_b, status_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);
	assert_int_equal(w.inst.state, SP_INST_GONE);

	/* The watch saw it die and go. */
	{
		bool gone = false;

		expired = false;
		uv_timer_start(&watchdog, watchdog_cb, WAIT_LIMIT_MS, 0);
		while (!(gone = ev.gone > 0) && !expired)
			uv_run(&loop, UV_RUN_DEFAULT);
		uv_timer_stop(&watchdog);
		assert_true(gone);
	}
	assert_int_equal(ev.exited, 1);

	/* Exec in a vanished sandbox fails cleanly. */
	{
		const char *argv[] = { "true", NULL };
		const struct sp_exec_spec spec = { .argv = argv };

		memset(&w, 0, sizeof(w));
		assert_int_equal(prov.ops->exec(&prov, ref_b, &spec, out_cb, exec_cb, &w, NULL), 0);
		run_until(&w);
		assert_int_equal(w.status, SP_ENOTFOUND);
	}
}

static void
test_missing_socket(void **state)
{
	struct sp_provider p2;
	char detail[1024];
	int status;

	snprintf(socket_path, sizeof(socket_path), "/tmp/sandpit-no-such-%d.sock",
	    (int)getpid());
	provider_open(&p2, calloc(1, sp_docker_provider.priv_size), &status, detail,
	    sizeof(detail));
	snprintf(socket_path, sizeof(socket_path), "/var/run/docker.sock");
	assert_int_equal(status, SP_EUNAVAIL);
	assert_non_null(strstr(detail, "sandpit-no-such"));
	provider_close(&p2);
}

static void
test_refuses_open_network(void **state)
{
	struct sp_provider p2;
	char detail[1024], saved[64], cmd[256];
	int status;

	snprintf(saved, sizeof(saved), "%s", network);
	snprintf(network, sizeof(network), "sandpit-test-open-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "docker network create %s >/dev/null", network);
	assert_int_equal(system(cmd), 0);
	provider_open(&p2, calloc(1, sp_docker_provider.priv_size), &status, detail,
	    sizeof(detail));
	snprintf(cmd, sizeof(cmd), "docker network rm %s >/dev/null", network);
	(void)!system(cmd);
	snprintf(network, sizeof(network), "%s", saved);
	assert_int_equal(status, SP_ECONFIG);
	assert_non_null(strstr(detail, "not internal"));
	provider_close(&p2);
}

static int
count_lines(const char *cmd)
{
	char line[512];
	FILE *f = popen(cmd, "r");
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		n++;
	pclose(f);
	return n;
}

/* A second start on the same bridge re-installs the rules without doubling them. */
static void
test_firewall_idempotent(void **state)
{
	struct sp_provider p2;
	char detail[1024], cmd[256];
	int status;

	if (geteuid() != 0)
		skip();
	provider_open(&p2, calloc(1, sp_docker_provider.priv_size), &status, detail,
	    sizeof(detail));
	assert_int_equal(status, 0);
	assert_non_null(strstr(p2.ops->describe(&p2), "\"firewall\":\"enforced\""));
	provider_close(&p2);
	snprintf(cmd, sizeof(cmd), "iptables -w -S INPUT | grep -- '-i %s -j SANDPIT-IN-%s$'",
	    bridge, bridge);
	assert_int_equal(count_lines(cmd), 1);
	snprintf(cmd, sizeof(cmd), "iptables -w -S SANDPIT-IN-%s | grep -- '^-A'", bridge);
	assert_int_equal(count_lines(cmd), 3);
	snprintf(cmd, sizeof(cmd), "iptables -w -S | grep -- '-j SANDPIT-FW-%s$'", bridge);
	assert_int_equal(count_lines(cmd), 1);
	snprintf(cmd, sizeof(cmd), "iptables -w -S SANDPIT-FW-%s | grep -- '^-A'", bridge);
	assert_int_equal(count_lines(cmd), 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_build),
		cmocka_unit_test(test_create_hardening),
		cmocka_unit_test(test_exec_identity),
		cmocka_unit_test(test_seccomp),
		cmocka_unit_test(test_exec_timeout),
		cmocka_unit_test(test_fork_bomb),
		cmocka_unit_test(test_oom),
		cmocka_unit_test(test_host_unreachable),
		cmocka_unit_test(test_sandbox_to_sandbox),
		cmocka_unit_test(test_list_status),
		cmocka_unit_test(test_destroy_and_events),
		cmocka_unit_test(test_firewall_idempotent),
		cmocka_unit_test(test_missing_socket),
		cmocka_unit_test(test_refuses_open_network),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

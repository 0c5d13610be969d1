/*
 * The Docker provider against a scripted fake engine on a Unix socket (served
 * by a thread of this test): API negotiation, refusing old engines and open
 * networks, Docker errors turned into bounded details and SP_E* codes,
 * garbage answered with SP_EPROTO, an exec streamed and demultiplexed, and the
 * firewall warning when it is off. No real dockerd is involved.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

/* Route tables below leave trailing fields out on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "httpc.h"

extern const struct sp_provider_ops sp_docker_provider;

/* A canned answer for requests whose "METHOD path" starts with prefix. */
struct route {
	const char *prefix;
	const char *resp;		/* the whole HTTP response */
	size_t len;			/* 0: strlen(resp) */
	const char *after;		/* only once a request starting so was seen */
};

static struct {
	char dir[32];
	char path[64];
	int fd;
	pthread_t thread;
	pthread_mutex_t mu;
	struct route routes[16];	/* copied: a late request may outlive a test */
	char seen[64][1024];		/* request lines, in order */
	int nseen;
	bool stop;
	char *allocs[64];		/* answers, freed once the server thread is gone */
	int nallocs;
} eng;

#define OK_PING "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK"
#define JSON(code, body) "HTTP/1.1 " code "\r\nContent-Type: application/json\r\n" \
	"Connection: close\r\nContent-Length: " body
#define NET_GOOD "{\"Id\":\"0123456789abcdef\",\"Internal\":true,\"Options\":" \
	"{\"com.docker.network.bridge.enable_icc\":\"false\"}," \
	"\"IPAM\":{\"Config\":[{\"Subnet\":\"10.9.0.0/24\",\"Gateway\":\"10.9.0.1\"}]}}"

static void
set_routes(const struct route *r)
{
	size_t n = 0;

	pthread_mutex_lock(&eng.mu);
	for (; r[n].prefix != NULL && n < 15; n++)
		eng.routes[n] = r[n];
	memset(&eng.routes[n], 0, sizeof(eng.routes[n]));
	pthread_mutex_unlock(&eng.mu);
}

static char *
http_json(const char *status, const char *body)
{
	char *s;

	if (asprintf(&s, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
	    "Content-Length: %zu\r\n\r\n%s", status, strlen(body), body) < 0)
		abort();
	/* The server thread may still be sending it when a test ends. */
	if (eng.nallocs == 64)
		abort();
	eng.allocs[eng.nallocs++] = s;
	return s;
}

static void *
conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16384], line[1024];
	size_t len = 0, clen = 0;
	char *end, *p;
	const struct route *r;
	const char *resp;
	size_t rlen;

	for (;;) {
		ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

		if (n <= 0)
			goto out;
		len += (size_t)n;
		buf[len] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
	}
	if ((p = strcasestr(buf, "Content-Length:")) != NULL)
		clen = strtoul(p + 15, NULL, 10);
	/* Drain the body (bounded by our own requests). */
	for (size_t have = len - (size_t)(end + 4 - buf); have < clen;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n <= 0)
			goto out;
		have += (size_t)n;
	}
	sscanf(buf, "%1023[^\r]", line);
	if ((p = strstr(line, " HTTP/1.")) != NULL)
		*p = '\0';
	pthread_mutex_lock(&eng.mu);
	if (eng.nseen < 64)
		snprintf(eng.seen[eng.nseen++], sizeof(eng.seen[0]), "%s", line);
	pthread_mutex_unlock(&eng.mu);
	pthread_mutex_lock(&eng.mu);
	for (r = eng.routes; r->prefix != NULL; r++) {
		bool ok = r->after == NULL;

		for (int i = 0; i < eng.nseen && !ok; i++)
			ok = strncmp(eng.seen[i], r->after, strlen(r->after)) == 0;
		if (ok && strncmp(line, r->prefix, strlen(r->prefix)) == 0)
			break;
	}
	resp = r->resp;
	rlen = r->resp == NULL ? 0 : r->len != 0 ? r->len : strlen(r->resp);
	pthread_mutex_unlock(&eng.mu);
	/* Answers are literals or live until the server stops. */
	if (resp != NULL)
		(void)!send(fd, resp, rlen, MSG_NOSIGNAL);
out:
	close(fd);
	return NULL;
}

static void *
server_main(void *arg)
{
	for (;;) {
		pthread_t t;
		int fd = accept(eng.fd, NULL, NULL);

		if (fd < 0 || eng.stop) {
			if (fd >= 0)
				close(fd);
			break;
		}
		pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd);
		/* One at a time keeps the order of requests the order we record. */
		pthread_join(t, NULL);
	}
	return NULL;
}

static int
server_setup(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	strcpy(eng.dir, "/tmp/sp-dapi-XXXXXX");
	if (mkdtemp(eng.dir) == NULL)
		return -1;
	snprintf(eng.path, sizeof(eng.path), "%s/docker.sock", eng.dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", eng.path);
	eng.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(eng.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(eng.fd, 64) < 0)
		return -1;
	pthread_mutex_init(&eng.mu, NULL);
	return pthread_create(&eng.thread, NULL, server_main, NULL);
}

static int
server_teardown(void **state)
{
	eng.stop = true;
	shutdown(eng.fd, SHUT_RDWR);
	pthread_join(eng.thread, NULL);
	close(eng.fd);
	unlink(eng.path);
	rmdir(eng.dir);
	for (int i = 0; i < eng.nallocs; i++)
		free(eng.allocs[i]);
	return 0;
}

/* ---- the provider under test ---- */

static uv_loop_t loop;
static struct sp_httpc *http;
static struct sp_host host;
static struct sp_provider prov;
static char logbuf[4096];
static const char *conf_firewall = "off";

static const char *
conf(const struct sp_host *h, const char *name)
{
	if (strcmp(name, "docker.socket") == 0)
		return eng.path;
	if (strcmp(name, "docker.firewall") == 0)
		return conf_firewall;
	if (strcmp(name, "docker.network") == 0)
		return "testnet";
	return NULL;
}

static void
test_log(int prio, const char *fmt, ...)
{
	va_list ap;
	size_t off = strlen(logbuf);

	va_start(ap, fmt);
	vsnprintf(logbuf + off, sizeof(logbuf) - off, fmt, ap);
	va_end(ap);
}

struct wait {
	bool done;
	int status;
	char detail[2048];
	char ref[128];
	char out[256], err[256];
	struct sp_exec_result res;
	size_t n;
};

/*
 * Callbacks uv_stop() the loop: a UV_RUN_ONCE whose callback ran in the timer
 * phase would otherwise go on to block in poll with nothing left to wake it.
 */
static void
run_until(struct wait *w)
{
	while (!w->done)
		uv_run(&loop, UV_RUN_DEFAULT);
}

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
	snprintf(w->ref, sizeof(w->ref), "%s", ref != NULL ? ref : "");
}

static void
list_cb(void *arg, int status, const struct sp_instance *items, size_t n, const char *detail)
{
	struct wait *w = arg;

	done_cb(arg, status, detail);
	w->n = n;
}

static int
out_cb(void *arg, int fd, const char *data, size_t len)
{
	struct wait *w = arg;
	char *b = fd == 1 ? w->out : w->err;

	snprintf(b + strlen(b), 256 - strlen(b), "%.*s", (int)len, data);
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
setup(void **state)
{
	pthread_mutex_lock(&eng.mu);
	eng.nseen = 0;
	pthread_mutex_unlock(&eng.mu);
	logbuf[0] = '\0';
	if (uv_loop_init(&loop) != 0 || httpc_new(&loop, &http) != 0)
		return -1;
	host = (struct sp_host){ .loop = &loop, .http = http, .instance = "unit",
				 .worker_image = "sandpit/worker:test", .worker_port = 4433,
				 .conf = conf, .log = test_log };
	prov = (struct sp_provider){ .ops = &sp_docker_provider, .host = &host,
				     .priv = calloc(1, sp_docker_provider.priv_size) };
	setenv("SANDPIT_SOURCE_DIR", getenv("SANDPIT_SOURCE_DIR") != NULL ?
	    getenv("SANDPIT_SOURCE_DIR") : ".", 1);
	return 0;
}

static void
closed_cb(void *arg)
{
	*(bool *)arg = true;
	uv_stop(&loop);
}

static int
teardown(void **state)
{
	struct wait w = { 0 };
	bool closed = false;

	prov.ops->close(&prov, done_cb, &w);
	run_until(&w);
	free(prov.priv);
	httpc_close(http, closed_cb, &closed);
	while (!closed)
		uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	return 0;
}

static int
init(struct wait *w)
{
	memset(w, 0, sizeof(*w));
	assert_int_equal(prov.ops->init(&prov, done_cb, w), 0);
	assert_false(w->done);
	run_until(w);
	return w->status;
}

static void
test_old_engine(void **state)
{
	const struct route routes[] = {
		{ "GET /_ping", "HTTP/1.1 200 OK\r\nApi-Version: 1.40\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK", 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), SP_EPROVIDER);
	assert_non_null(strstr(w.detail, "1.40"));
}

static void
test_garbage_ping(void **state)
{
	const struct route routes[] = {
		{ "GET /_ping", "no http here\r\n\r\n", 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), SP_EPROTO);
}

static void
test_no_api_version(void **state)
{
	const struct route routes[] = {
		{ "GET /_ping", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK", 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), SP_EPROTO);
}

static void
test_open_network_refused(void **state)
{
	char *net = http_json("200 OK", "{\"Id\":\"x\",\"Internal\":false,\"Options\":{}}");
	const struct route routes[] = {
		{ "GET /_ping", OK_PING, 0 },
		{ "GET /v1.41/networks/testnet", net, 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), SP_ECONFIG);
	assert_non_null(strstr(w.detail, "not internal"));
}

static void
test_garbage_network(void **state)
{
	char *net = http_json("200 OK", "<html>oops</html>");
	const struct route routes[] = {
		{ "GET /_ping", OK_PING, 0 },
		{ "GET /v1.41/networks/testnet", net, 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), SP_EPROTO);
}

/* A newer engine: we speak our newest version; missing network is created. */
static void
test_negotiate_and_create_network(void **state)
{
	char *missing = http_json("404 Not Found", "{\"message\":\"network testnet not found\"}");
	char *created = http_json("201 Created", "{\"Id\":\"0123456789abcdef\"}");
	char *net = http_json("200 OK", NET_GOOD);
	struct wait w;

	/* First inspect 404, then create, then the second inspect finds it. */
	const struct route seq[] = {
		{ "GET /_ping",
		  "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nConnection: close\r\nContent-Length: 2\r\n\r\nOK", 0, NULL },
		{ "POST /v1.44/networks/create", created, 0, NULL },
		{ "GET /v1.44/networks/testnet", net, 0, "POST /v1.44/networks/create" },
		{ "GET /v1.44/networks/testnet", missing, 0, NULL },
		{ NULL, NULL, 0, NULL },
	};

	set_routes(seq);
	assert_int_equal(init(&w), 0);
	assert_non_null(strstr(logbuf, "NOT enforced"));
	assert_non_null(strstr(logbuf, "docker.firewall is off"));
	assert_non_null(strstr(prov.ops->describe(&prov), "\"gateway\":\"10.9.0.1\""));
	assert_non_null(strstr(prov.ops->describe(&prov), "\"api\":\"v1.44\""));
}

static void
test_errors_and_exec(void **state)
{
	static char big[8192];
	char *net = http_json("200 OK", NET_GOOD);
	char *conflict = http_json("409 Conflict",
	    "{\"message\":\"Conflict. The container name \\\"/sandpit-sb-1\\\" is already in use\"}");
	char *huge, *gone = http_json("404 Not Found", "{\"message\":\"No such container: c1\"}");
	char *execd = http_json("201 Created", "{\"Id\":\"e1e1\"}");
	char *inspect = http_json("200 OK", "{\"Running\":false,\"ExitCode\":3,\"Pid\":9}");
	char *garbage_list = http_json("200 OK", "{\"not\":\"a list\"}");
	static char stream[256];
	size_t slen;
	struct wait w;
	struct sp_sandbox_spec spec = {
		.id = "sb-1", .image = "custom:img", .memory_bytes = 1 << 20, .nano_cpus = 1,
		.pids_limit = 1, .nofile = 1, .tmp_bytes = 1, .work_bytes = 1,
	};
	const char *argv[] = { "true", NULL };
	struct sp_exec_spec es = { .argv = argv };

	memset(big, 'm', sizeof(big) - 1);
	{
		char body[8300];

		snprintf(body, sizeof(body), "{\"message\":\"%s\"}", big);
		huge = http_json("500 Internal Server Error", body);
	}
	/* A demultiplexed stream: stdout "hi\n", stderr "err\n". */
	slen = (size_t)snprintf(stream, sizeof(stream),
	    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n");
	memcpy(stream + slen, "\1\0\0\0\0\0\0\3hi\n\2\0\0\0\0\0\0\4err\n", 23);
	slen += 23;

	const struct route routes[] = {
		{ "GET /_ping", OK_PING, 0 },
		{ "GET /v1.41/networks/testnet", net, 0 },
		{ "POST /v1.41/containers/create", conflict, 0 },
		{ "POST /v1.41/containers/c1/start", huge, 0 },
		{ "DELETE /v1.41/containers/c1", gone, 0 },
		{ "POST /v1.41/containers/c1/exec", execd, 0 },
		{ "POST /v1.41/exec/e1e1/start", stream, slen },
		{ "GET /v1.41/exec/e1e1/json", inspect, 0 },
		{ "GET /v1.41/containers/json", garbage_list, 0 },
		{ NULL, NULL, 0 },
	};

	set_routes(routes);
	assert_int_equal(init(&w), 0);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->create(&prov, &spec, create_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, SP_ECONFLICT);
	assert_non_null(strstr(w.detail, "already in use"));

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->start(&prov, "c1", done_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, SP_EPROVIDER);
	assert_true(strlen(w.detail) < 600);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->destroy(&prov, "c1", done_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->exec(&prov, "c1", &es, out_cb, exec_cb, &w, NULL), 0);
	run_until(&w);
	assert_int_equal(w.status, 0);
	assert_string_equal(w.out, "hi\n");
	assert_string_equal(w.err, "err\n");
	assert_int_equal(w.res.exit_code, 3);
	assert_false(w.res.oom_killed);

	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->list(&prov, list_cb, &w), 0);
	run_until(&w);
	assert_int_equal(w.status, SP_EPROTO);

	/* Strings that are not UTF-8 are refused, never dropped from a command. */
	{
		const char *bad[] = { "echo", "\xff\xfe", NULL };
		struct sp_exec_spec bs = { .argv = bad };
		struct sp_sandbox_spec bspec = spec;

		assert_int_equal(prov.ops->exec(&prov, "c1", &bs, out_cb, exec_cb, &w, NULL),
		    SP_EINVAL);
		bspec.tenant = "\xc3";
		assert_int_equal(prov.ops->create(&prov, &bspec, create_cb, &w), SP_EINVAL);
		bspec.tenant = "t";
		bspec.cmd = bad;
		assert_int_equal(prov.ops->create(&prov, &bspec, create_cb, &w), SP_EINVAL);
	}

	/* Refs that would escape the URL path are refused up front. */
	assert_int_equal(prov.ops->start(&prov, "../../x", done_cb, &w), SP_EINVAL);
	assert_int_equal(prov.ops->destroy(&prov, "a?b", done_cb, &w), SP_EINVAL);

}

static void
test_garbage_exec_stream(void **state)
{
	char *net = http_json("200 OK", NET_GOOD);
	char *execd = http_json("201 Created", "{\"Id\":\"e2e2\"}");
	const char *argv[] = { "true", NULL };
	struct sp_exec_spec es = { .argv = argv };
	const struct route routes[] = {
		{ "GET /_ping", OK_PING, 0 },
		{ "GET /v1.41/networks/testnet", net, 0 },
		{ "POST /v1.41/containers/c1/exec", execd, 0 },
		{ "POST /v1.41/exec/e2e2/start",
		  "HTTP/1.1 200 OK\r\n\r\nthis is not a multiplexed stream", 0 },
		{ NULL, NULL, 0 },
	};
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), 0);
	memset(&w, 0, sizeof(w));
	assert_int_equal(prov.ops->exec(&prov, "c1", &es, out_cb, exec_cb, &w, NULL), 0);
	run_until(&w);
	assert_int_equal(w.status, SP_EPROTO);
	assert_string_equal(w.out, "");
}

/* Close with a call in flight: the call ends (cancelled or failed), then close. */
static void
test_close_cancels(void **state)
{
	char *net = http_json("200 OK", NET_GOOD);
	const struct route routes[] = {
		{ "GET /_ping", OK_PING, 0 },
		{ "GET /v1.41/networks/testnet", net, 0 },
		/* No route for the list: the engine never answers, the call hangs. */
		{ NULL, NULL, 0 },
	};
	struct wait w, lw = { 0 };

	set_routes(routes);
	assert_int_equal(init(&w), 0);
	assert_int_equal(prov.ops->list(&prov, list_cb, &lw), 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	memset(&w, 0, sizeof(w));
	prov.ops->close(&prov, done_cb, &w);
	run_until(&w);
	assert_true(lw.done);
	assert_true(lw.status == SP_ECANCELED || lw.status == SP_EPROTO);
	/* teardown closes again: make that a fresh provider. */
	memset(prov.priv, 0, sp_docker_provider.priv_size);
}

static void
test_bad_config(void **state)
{
	struct wait w;

	conf_firewall = "maybe";
	assert_int_equal(init(&w), SP_ECONFIG);
	conf_firewall = "off";
	assert_non_null(strstr(w.detail, "docker.firewall"));
	/* Nothing reached the engine (a late request of the last test may have). */
	pthread_mutex_lock(&eng.mu);
	for (int i = 0; i < eng.nseen; i++)
		assert_null(strstr(eng.seen[i], "_ping"));
	pthread_mutex_unlock(&eng.mu);
}

struct events {
	int n;
	int exit_code;
	bool oom_killed;
	enum sp_instance_state state;
	char sandbox[32];
};

static void
event_cb(void *arg, const struct sp_instance *inst)
{
	struct events *e = arg;

	e->n++;
	uv_stop(&loop);
	e->exit_code = inst->exit_code;
	e->oom_killed = inst->oom_killed;
	e->state = inst->state;
	snprintf(e->sandbox, sizeof(e->sandbox), "%s", inst->sandbox_id);
}

/* The event stream drops after each event: the watch reconnects with since=. */
static void
test_watch_reconnects(void **state)
{
	char *net = http_json("200 OK", NET_GOOD);
	const struct route routes[] = {
		{ "GET /_ping", OK_PING },
		{ "GET /v1.41/networks/testnet", net },
		{ "GET /v1.41/events", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		  "Connection: close\r\n\r\n{\"Type\":\"container\",\"Action\":\"die\","
		  "\"Actor\":{\"ID\":\"c1\",\"Attributes\":{\"exitCode\":\"3\","
		  "\"io.sandpit.sandbox\":\"sb-9\"}},\"timeNano\":1700000000000000123}\n" },
		{ NULL, NULL },
	};
	struct events ev = { 0 };
	struct wait w;
	bool since = false;

	set_routes(routes);
	assert_int_equal(init(&w), 0);
	assert_int_equal(prov.ops->watch(&prov, event_cb, &ev), 0);
	assert_int_equal(prov.ops->watch(&prov, event_cb, &ev), SP_ECONFLICT);
	while (ev.n < 2)
		uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(ev.exit_code, 3);
	assert_string_equal(ev.sandbox, "sb-9");
	pthread_mutex_lock(&eng.mu);
	for (int i = 0; i < eng.nseen; i++)
		if (strstr(eng.seen[i], "since=1700000000.000000124") != NULL)
			since = true;
	pthread_mutex_unlock(&eng.mu);
	assert_true(since);
}

/* oom then die for the same container: the die is reported as an OOM kill. */
static void
test_watch_oom_die(void **state)
{
	char *net = http_json("200 OK", NET_GOOD);
	const struct route routes[] = {
		{ "GET /_ping", OK_PING },
		{ "GET /v1.41/networks/testnet", net },
		{ "GET /v1.41/events", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		  "Connection: close\r\n\r\n"
		  "{\"Type\":\"container\",\"Action\":\"oom\",\"Actor\":{\"ID\":\"c7\"},"
		  "\"timeNano\":5}\n"
		  "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"c7\","
		  "\"Attributes\":{\"exitCode\":\"137\"}},\"timeNano\":6}\n" },
		{ NULL, NULL },
	};
	struct events ev = { 0 };
	struct wait w;

	set_routes(routes);
	assert_int_equal(init(&w), 0);
	assert_int_equal(prov.ops->watch(&prov, event_cb, &ev), 0);
	while (ev.n < 2)
		uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(ev.state, SP_INST_EXITED);
	assert_int_equal(ev.exit_code, 137);
	assert_true(ev.oom_killed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_old_engine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_api_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_network_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_network, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiate_and_create_network, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_and_exec, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_exec_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_cancels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_reconnects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_oom_die, setup, teardown),
	};

	return cmocka_run_group_tests(tests, server_setup, server_teardown);
}

/*
 * sandpitd: the composition root. It parses the flags and the configuration,
 * opens the store, wires the modules together on one libuv loop, handles the
 * signals (TERM/INT: stop accepting, let in-flight work finish or persist,
 * close every handle; HUP: swap in a new configuration only if it is valid),
 * and speaks sd_notify. It is the only file that knows every module.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api.h"
#include "config.h"
#include "ctl.h"
#include "httpc.h"
#include "log.h"
#include "memapi.h"
#include "memory.h"
#include "notify.h"
#include "pool.h"
#include "provider.h"
#include "queue.h"
#include "sandbox.h"
#include "store.h"
#include "swarm.h"
#include "swarmapi.h"
#include "workers.h"
#include "xmalloc.h"

/* How long in-flight operations may take to finish after SIGTERM. */
#define SHUTDOWN_GRACE_MS	20000

struct daemon {
	uv_loop_t loop;
	struct config *cfg;		/* in force; replaced on SIGHUP */
	const char *conf_file;		/* -f, or NULL for embedded defaults */
	const char *opt_state_dir;	/* --state-dir */
	const char *opt_socket;		/* --socket */
	int opt_verbose;

	struct store *store;
	char *instance;
	struct sp_httpc *http;
	struct sandbox_mgr *mgr;
	struct memory *memory;
	struct queue *queue;
	struct workers *workers;	/* the worker channel (HTTP/3) */
	struct swarm_mgr *swarms;	/* the swarm coordinator */
	struct pool *pool;		/* the warm pool */
	struct ctl *ctl;
	struct api api;
	struct sp_host host;

	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t watchdog;
	uv_timer_t shutdown_timer;
	int64_t shutdown_deadline;
	bool stopping;
	bool mgr_closed;
	int exit_status;
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: sandpitd [-nv] [-f file] [--state-dir dir] [--socket path]\n"
		   "  -f FILE          configuration file (default: embedded defaults)\n"
		   "  -n               check the configuration and exit\n"
		   "  -v               more logging (repeat for debug)\n"
		   "  --state-dir DIR  state directory (database, certificates)\n"
		   "  --socket PATH    control socket\n"
		   "  --version        print the version\n");
}

static const char *
daemon_conf(const struct sp_host *host, const char *name)
{
	struct daemon *d = host->core;

	return config_get(d->cfg, name);
}

static void
daemon_log(int prio, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(prio, "%s", line);
}

/* Apply the command-line overrides, which win over the file. */
static void
daemon_override(struct daemon *d, struct config *c)
{
	if (d->opt_state_dir != NULL) {
		free(c->state_dir);
		c->state_dir = xstrdup(d->opt_state_dir);
	}
	if (d->opt_socket != NULL) {
		free(c->socket_path);
		c->socket_path = xstrdup(d->opt_socket);
	}
	if (d->opt_verbose == 1 && c->log_level < LOG_INFO)
		c->log_level = LOG_INFO;
	else if (d->opt_verbose > 1)
		c->log_level = LOG_DEBUG;
}

static struct ctl_limits
daemon_ctl_limits(const struct config *c)
{
	return (struct ctl_limits){
		.max_clients = c->max_clients,
		.max_body = c->max_body,
		.max_header = c->max_header,
		.max_stream_queue = 8 << 20,
	};
}

static int
mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The instance id labels every sandbox; it is made once and kept in the store. */
static int
daemon_instance(struct daemon *d)
{
	unsigned char rnd[8];
	int r;

	r = store_meta_get(d->store, "instance", &d->instance);
	if (r == 0)
		return 0;
	if (r != -ENOENT)
		return r;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -errno;
	xasprintf(&d->instance, "sp-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
		  rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	return store_meta_set(d->store, "instance", d->instance);
}

/* Swarm and pool lines of /metrics. */
static void
daemon_metrics(void *arg, FILE *f)
{
	struct daemon *d = arg;

	if (d->swarms != NULL)
		swarm_metrics(d->swarms, f);
	if (d->pool != NULL)
		pool_metrics(d->pool, f);
}

/* --- shutdown --- */

static void
daemon_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void
daemon_close_handles(struct daemon *d)
{
	uv_close((uv_handle_t *)&d->sigterm, daemon_handle_closed);
	uv_close((uv_handle_t *)&d->sigint, daemon_handle_closed);
	uv_close((uv_handle_t *)&d->sighup, daemon_handle_closed);
	uv_close((uv_handle_t *)&d->watchdog, daemon_handle_closed);
	uv_close((uv_handle_t *)&d->shutdown_timer, daemon_handle_closed);
}

static void
daemon_ctl_closed(void *arg)
{
	struct daemon *d = arg;

	d->ctl = NULL;
	daemon_close_handles(d);
}

static void
daemon_http_closed(void *arg)
{
	struct daemon *d = arg;

	d->http = NULL;
	if (d->ctl != NULL)
		ctl_close(d->ctl, daemon_ctl_closed, d);
	else
		daemon_ctl_closed(d);
}

static void
daemon_memory_closed(void *arg)
{
	struct daemon *d = arg;

	d->memory = NULL;
	/* Providers and the memory are closed: nothing uses the HTTP client. */
	if (d->http != NULL)
		httpc_close(d->http, daemon_http_closed, d);
	else
		daemon_http_closed(d);
}

static void
daemon_mgr_closed(void *arg)
{
	struct daemon *d = arg;

	d->mgr = NULL;
	if (d->memory != NULL)
		memory_close(d->memory, daemon_memory_closed, d);
	else
		daemon_memory_closed(d);
}

static void
daemon_pool_closed(void *arg)
{
	struct daemon *d = arg;

	d->pool = NULL;
	if (d->mgr != NULL)
		sandbox_mgr_close(d->mgr, daemon_mgr_closed, d);
	else
		daemon_mgr_closed(d);
}

static void
daemon_swarms_closed(void *arg)
{
	struct daemon *d = arg;

	d->swarms = NULL;
	if (d->pool != NULL)
		pool_close(d->pool, daemon_pool_closed, d);
	else
		daemon_pool_closed(d);
}

/* The swarms and the pool close after the worker channel: its routes call into them. */
static void
daemon_workers_closed(void *arg)
{
	struct daemon *d = arg;

	d->workers = NULL;
	if (d->swarms != NULL)
		swarm_mgr_close(d->swarms, daemon_swarms_closed, d);
	else
		daemon_swarms_closed(d);
}

/* Close whatever daemon_start() made, in reverse order of dependence. */
static void
daemon_teardown(struct daemon *d)
{
	/* Nothing of the swarms or the pool calls into the workers from here on. */
	if (d->swarms != NULL)
		swarm_mgr_stop(d->swarms);
	if (d->pool != NULL)
		pool_stop(d->pool);
	/* Workers first: peers hear CONNECTION_CLOSE while the store is still open. */
	if (d->workers != NULL)
		workers_close(d->workers, daemon_workers_closed, d);
	else
		daemon_workers_closed(d);
}

static void
daemon_shutdown_poll(uv_timer_t *t)
{
	struct daemon *d = t->data;
	bool late = uv_now(&d->loop) >= (uint64_t)d->shutdown_deadline;

	if (!late && (ctl_pending(d->ctl) > 0 || sandbox_mgr_inflight(d->mgr) > 0))
		return;
	if (late)
		log_warn("shutdown: %zu requests and %zu operations still in flight; "
			 "cancelling them (their sandboxes are reconciled at the next start)",
			 ctl_pending(d->ctl), sandbox_mgr_inflight(d->mgr));
	uv_timer_stop(t);
	daemon_teardown(d);
}

static void
daemon_stop(struct daemon *d, int signum)
{
	if (d->stopping) {
		/* A second signal: do not wait any longer. */
		d->shutdown_deadline = 0;
		return;
	}
	d->stopping = true;
	log_info("received %s: shutting down", strsignal(signum));
	notify_send("STOPPING=1");
	ctl_stop_accepting(d->ctl);
	sandbox_mgr_stop(d->mgr);
	if (d->swarms != NULL)
		swarm_mgr_stop(d->swarms);
	if (d->pool != NULL)
		pool_stop(d->pool);
	if (d->workers != NULL)
		workers_stop(d->workers);
	uv_timer_stop(&d->watchdog);
	d->shutdown_deadline = uv_now(&d->loop) + SHUTDOWN_GRACE_MS;
	uv_timer_start(&d->shutdown_timer, daemon_shutdown_poll, 0, 50);
}

/* --- signals --- */

static void
daemon_reload(struct daemon *d)
{
	struct ctl_limits limits;
	struct config *c;
	char err[512];

	if (d->conf_file == NULL) {
		log_info("SIGHUP: no configuration file; nothing to reload");
		return;
	}
	if (config_load(d->conf_file, sp_providers, &c, err, sizeof(err)) < 0) {
		log_err("SIGHUP: %s; keeping the configuration in force", err);
		return;
	}
	daemon_override(d, c);
	if (strcmp(c->state_dir, d->cfg->state_dir) != 0 ||
	    strcmp(c->socket_path, d->cfg->socket_path) != 0)
		log_warn("SIGHUP: state_dir and socket changes take effect at restart");
	/* Keep what cannot change while running. */
	free(c->state_dir);
	c->state_dir = xstrdup(d->cfg->state_dir);
	free(c->socket_path);
	c->socket_path = xstrdup(d->cfg->socket_path);

	log_set_level(c->log_level);
	limits = daemon_ctl_limits(c);
	ctl_set_limits(d->ctl, &limits);
	sandbox_mgr_set_config(d->mgr, c);
	config_free(d->cfg);
	d->cfg = c;
	log_info("SIGHUP: configuration reloaded from %s", d->conf_file);
}

static void
daemon_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;

	if (signum == SIGHUP) {
		if (!d->stopping)
			daemon_reload(d);
		return;
	}
	daemon_stop(d, signum);
}

static void
daemon_watchdog(uv_timer_t *t)
{
	notify_send("WATCHDOG=1");
}

/* --- start --- */

static int
daemon_start(struct daemon *d)
{
	struct ctl_limits limits;
	char *dbpath, err[512];
	uint64_t wd;
	int r;

	/* Initialised first so a failed start can close them like a normal stop. */
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	uv_signal_init(&d->loop, &d->sighup);
	uv_timer_init(&d->loop, &d->watchdog);
	uv_timer_init(&d->loop, &d->shutdown_timer);
	d->sigterm.data = d->sigint.data = d->sighup.data = d;
	d->watchdog.data = d->shutdown_timer.data = d;

	r = mkdir_p(d->cfg->state_dir, 0700);
	if (r < 0) {
		log_err("state directory %s: %s", d->cfg->state_dir, strerror(-r));
		return r;
	}
	xasprintf(&dbpath, "%s/sandpit.db", d->cfg->state_dir);
	r = store_open_err(dbpath, &d->store, err, sizeof(err));
	if (r < 0) {
		log_err("database %s: %s", dbpath, err);
		free(dbpath);
		return r;
	}
	free(dbpath);
	r = daemon_instance(d);
	if (r < 0) {
		log_err("database: instance id: %s", store_errmsg(d->store));
		return r;
	}

	r = httpc_new(&d->loop, &d->http);
	if (r < 0) {
		log_err("http client: %s", sp_strerror(r));
		return r;
	}
	d->host = (struct sp_host){
		.loop = &d->loop,
		.http = d->http,
		.instance = d->instance,
		.state_dir = d->cfg->state_dir,
		.worker_image = d->cfg->worker_image,
		.worker_binary = d->cfg->worker_binary,
		.worker_port = d->cfg->worker_port,
		.conf = daemon_conf,
		.log = daemon_log,
		.core = d,
	};
	sandbox_mgr_new(&d->loop, d->store, d->cfg, &d->host, sp_providers, &d->mgr);
	if (d->cfg->memory.embedder_url != NULL)
		d->cfg->memory.httpc = d->http;
	r = memory_open(&d->loop, d->store, &d->cfg->memory, &d->memory);
	if (r < 0) {
		log_err("memory: %s", r == SP_EDB ? store_errmsg(d->store) : sp_strerror(r));
		return r;
	}

	r = queue_open(d->store, NULL, NULL, NULL, &d->queue);
	if (r < 0) {
		log_err("task queue: %s", d->queue ? queue_errmsg(d->queue) : sp_strerror(r));
		return r;
	}
	r = workers_new(&(struct workers_options){ .loop = &d->loop, .store = d->store,
		.queue = d->queue, .mgr = d->mgr,
		.cfg = (const struct config *const *)&d->cfg }, &d->workers, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		return r;
	}
	pool_new(&d->loop, d->store, d->mgr, d->workers, (const struct config *const *)&d->cfg,
		 &d->pool);
	r = swarm_mgr_new(&(struct swarm_options){ .loop = &d->loop, .store = d->store,
		.queue = d->queue, .mgr = d->mgr, .workers = d->workers, .pool = d->pool,
		.cfg = (const struct config *const *)&d->cfg }, &d->swarms, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		return r;
	}
	{
		struct sandbox_hooks hooks, inner;

		workers_hooks(d->workers, &inner);
		swarm_hooks(d->swarms, &inner, &hooks);
		sandbox_mgr_set_hooks(d->mgr, &hooks);
	}
	/* Workers reach the memory too; their tenant is their token's. */
	r = memapi_rpc_register(workers_router(d->workers), d->memory, "worker");
	if (r < 0) {
		log_err("worker channel: memory routes: %s", sp_strerror(r));
		return r;
	}

	limits = daemon_ctl_limits(d->cfg);
	r = ctl_new(&d->loop, &limits, &d->ctl);
	if (r < 0) {
		log_err("control server: %s", sp_strerror(r));
		return r;
	}
	d->api = (struct api){
		.ctl = d->ctl,
		.mgr = d->mgr,
		.cfg = (const struct config *const *)&d->cfg,
		.instance = d->instance,
		.started_ms = (int64_t)time(NULL) * 1000,
		.workers = d->workers,
		.metrics_more = daemon_metrics,
		.metrics_arg = d,
	};
	api_register(&d->api);
	memapi_register(d->ctl, d->memory);
	swarmapi_register(d->ctl, d->swarms);
	r = ctl_listen(d->ctl, d->cfg->socket_path, d->cfg->socket_gid);
	if (r < 0) {
		log_err("control socket %s: %s", d->cfg->socket_path, sp_strerror(r));
		return r;
	}

	uv_signal_start(&d->sigterm, daemon_signal, SIGTERM);
	uv_signal_start(&d->sigint, daemon_signal, SIGINT);
	uv_signal_start(&d->sighup, daemon_signal, SIGHUP);
	wd = notify_watchdog_usec();
	if (wd > 0)
		uv_timer_start(&d->watchdog, daemon_watchdog, wd / 2000, wd / 2000);

	sandbox_mgr_start(d->mgr);
	swarm_mgr_start(d->swarms);
	pool_start(d->pool);
	log_info("sandpitd %s listening on %s (instance %s, state in %s)", SANDPIT_VERSION,
		 d->cfg->socket_path, d->instance, d->cfg->state_dir);
	notify_send("READY=1");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "state-dir", required_argument, NULL, 'S' },
		{ "socket", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon d = { 0 };
	bool check_only = false;
	char err[512];
	int ch, r;

	while ((ch = getopt_long(argc, argv, "f:nvh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'f': d.conf_file = optarg; break;
		case 'n': check_only = true; break;
		case 'v': d.opt_verbose++; break;
		case 'S': d.opt_state_dir = optarg; break;
		case 's': d.opt_socket = optarg; break;
		case 'V': printf("sandpitd %s\n", SANDPIT_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	if (config_load(d.conf_file, sp_providers, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "sandpitd: %s\n", err);
		return 1;
	}
	daemon_override(&d, d.cfg);
	if (check_only) {
		printf("%s: configuration OK\n", d.conf_file ? d.conf_file : "(embedded defaults)");
		config_free(d.cfg);
		return 0;
	}
	log_set_level(d.cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	umask(077);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_err("libcurl initialisation failed");
		return 1;
	}

	uv_loop_init(&d.loop);
	r = daemon_start(&d);
	if (r < 0) {
		d.exit_status = 1;
		d.stopping = true;
		daemon_teardown(&d);
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d.loop);
	if (r != 0) {
		log_err("shutdown: handles still open on the loop (%s)", uv_strerror(r));
		d.exit_status = 1;
	}
	queue_close(d.queue);
	store_close(d.store);
	free(d.instance);
	config_free(d.cfg);
	curl_global_cleanup();
	if (d.exit_status == 0)
		log_info("stopped");
	return d.exit_status;
}

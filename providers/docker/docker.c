/*
 * The Docker provider: its ops table, directives and state, and the
 * container life cycle (init, create, start, destroy, status, list). It talks
 * to the engine only through docker_api.c, keeps no sandbox state of its own
 * (labels on the containers are the record), and never puts a secret or the
 * Docker socket into a sandbox.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "docker_internal.h"

#define DOCKER_SECCOMP_MAX	(1u << 20)
#define DOCKER_LIST_MAX		4096	/* containers one list() reports */

static const struct sp_directive docker_directives[] = {
	{ "docker.socket", SP_DIR_PATH, "/var/run/docker.sock",
	  "Unix socket of the Docker engine" },
	{ "docker.network", SP_DIR_STRING, "sandpit0",
	  "internal bridge network the sandboxes join (created when missing)" },
	{ "docker.bridge", SP_DIR_STRING, "sandpit0",
	  "host interface name of that network's bridge (at most 15 characters)" },
	{ "docker.subnet", SP_DIR_STRING, NULL,
	  "subnet of the network in CIDR form (default: Docker picks one)" },
	{ "docker.seccomp_profile", SP_DIR_PATH, NULL,
	  "seccomp profile of the sandboxes (default: ../seccomp/sandbox.json next to the "
	  "executable, $SANDPIT_SOURCE_DIR/seccomp, /usr/local/share/sandpit/seccomp)" },
	{ "docker.firewall", SP_DIR_STRING, "auto",
	  "auto: install host firewall rules when privileged (warn otherwise); off: never" },
	{ "docker.user", SP_DIR_STRING, "65534:65534", "uid:gid sandboxes run as (never 0)" },
	{ "docker.runtime", SP_DIR_STRING, NULL, "OCI runtime, e.g. runsc (default: engine's)" },
	{ "docker.busybox", SP_DIR_PATH, "/bin/busybox",
	  "statically linked busybox put into the worker image" },
	{ NULL, 0, NULL, NULL },
};

void
docker_ref(struct docker *d)
{
	d->refs++;
}

static void
docker_closed(uv_handle_t *h)
{
	struct docker *d = h->data;
	sp_done_cb cb = d->close_cb;
	void *arg = d->close_arg;

	free(d->socket);
	free(d->network);
	free(d->bridge);
	free(d->subnet);
	free(d->user);
	free(d->runtime);
	free(d->seccomp_path);
	free(d->busybox);
	free(d->seccomp);
	free(d->bridge_real);
	free(d->describe);
	free(d->image.repo);
	free(d->image.tag);
	if (cb != NULL)
		cb(arg, 0, NULL);
}

void
docker_unref(struct docker *d)
{
	if (--d->refs == 0 && d->state == DOCKER_CLOSING)
		uv_close((uv_handle_t *)&d->defer, docker_closed);
}

static const char *
docker_conf(struct docker *d, const char *name)
{
	const struct sp_directive *dir;
	const char *v = NULL;

	if (d->host->conf != NULL)
		v = d->host->conf(d->host, name);
	if (v != NULL)
		return v;
	for (dir = docker_directives; dir->name != NULL; dir++)
		if (strcmp(dir->name, name) == 0)
			return dir->def;
	return NULL;
}

static char *
docker_conf_dup(struct docker *d, const char *name)
{
	const char *v = docker_conf(d, name);

	return v != NULL && *v != '\0' ? docker_xstrdup(v) : NULL;
}

/* An id, name or reference we put into a URL path: a conservative charset. */
static bool
docker_name_ok(const char *s, size_t max)
{
	size_t n = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++, n++) {
		if (n >= max)
			return false;
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	}
	return true;
}

/*
 * The default profile: next to the executable (a build tree or an install
 * prefix), then the source tree the tests name, then the install location.
 */
static char *
docker_find_seccomp(void)
{
	char exe[PATH_MAX], *slash, *path;
	const char *src;
	ssize_t n;

	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL) {
			*slash = '\0';
			path = docker_xprintf("%s/../seccomp/sandbox.json", exe);
			if (access(path, R_OK) == 0)
				return path;
			free(path);
			path = docker_xprintf("%s/../share/sandpit/seccomp/sandbox.json", exe);
			if (access(path, R_OK) == 0)
				return path;
			free(path);
		}
	}
	if ((src = getenv("SANDPIT_SOURCE_DIR")) != NULL) {
		path = docker_xprintf("%s/seccomp/sandbox.json", src);
		if (access(path, R_OK) == 0)
			return path;
		free(path);
	}
	path = docker_xstrdup("/usr/local/share/sandpit/seccomp/sandbox.json");
	if (access(path, R_OK) == 0)
		return path;
	free(path);
	return NULL;
}

/* Read and validate the profile (a small local file, read once at start-up). */
static int
docker_load_seccomp(struct docker *d, char *detail, size_t len)
{
	json_error_t jerr;
	json_t *j;

	if (d->seccomp_path == NULL && (d->seccomp_path = docker_find_seccomp()) == NULL) {
		snprintf(detail, len, "docker.seccomp_profile: no profile found next to the "
		    "executable (../seccomp/sandbox.json), in $SANDPIT_SOURCE_DIR/seccomp or "
		    "/usr/local/share/sandpit/seccomp; set the directive");
		return SP_ECONFIG;
	}
	j = json_load_file(d->seccomp_path, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL || !json_is_object(j) ||
	    !json_is_string(json_object_get(j, "defaultAction"))) {
		snprintf(detail, len, "docker.seccomp_profile: %s:%d: %s", d->seccomp_path,
		    jerr.line, j == NULL ? jerr.text : "not a Docker seccomp profile");
		json_decref(j);
		return SP_ECONFIG;
	}
	if ((d->seccomp = json_dumps(j, JSON_COMPACT)) == NULL)
		abort();
	json_decref(j);
	if (strlen(d->seccomp) > DOCKER_SECCOMP_MAX) {
		snprintf(detail, len, "docker.seccomp_profile: %s is too large", d->seccomp_path);
		return SP_ECONFIG;
	}
	return 0;
}

static int
docker_read_directives(struct docker *d, char *detail, size_t len)
{
	const char *fw = docker_conf(d, "docker.firewall");

	/* A second init after a failed one reads them afresh. */
	free(d->socket);
	free(d->network);
	free(d->bridge);
	free(d->subnet);
	free(d->seccomp_path);
	free(d->user);
	free(d->runtime);
	free(d->busybox);
	free(d->seccomp);
	d->seccomp = NULL;
	d->socket = docker_conf_dup(d, "docker.socket");
	d->network = docker_conf_dup(d, "docker.network");
	d->bridge = docker_conf_dup(d, "docker.bridge");
	d->subnet = docker_conf_dup(d, "docker.subnet");
	d->seccomp_path = docker_conf_dup(d, "docker.seccomp_profile");
	d->user = docker_conf_dup(d, "docker.user");
	d->runtime = docker_conf_dup(d, "docker.runtime");
	d->busybox = docker_conf_dup(d, "docker.busybox");

	if (d->socket == NULL || d->network == NULL || d->bridge == NULL || d->user == NULL ||
	    d->busybox == NULL) {
		snprintf(detail, len, "docker: socket, network, bridge, user and busybox "
		    "must not be empty");
		return SP_ECONFIG;
	}
	if (fw == NULL || strcmp(fw, "auto") == 0) {
		d->firewall = true;
	} else if (strcmp(fw, "off") == 0) {
		d->firewall = false;
	} else {
		snprintf(detail, len, "docker.firewall: '%s' is not auto or off", fw);
		return SP_ECONFIG;
	}
	if (!docker_name_ok(d->network, 64)) {
		snprintf(detail, len, "docker.network: '%s' is not a valid network name",
		    d->network);
		return SP_ECONFIG;
	}
	if (!docker_name_ok(d->bridge, 15)) {
		snprintf(detail, len, "docker.bridge: '%s' is not an interface name "
		    "(at most 15 of [A-Za-z0-9_.-])", d->bridge);
		return SP_ECONFIG;
	}
	if (strcmp(d->user, "0") == 0 || strncmp(d->user, "0:", 2) == 0 ||
	    strncmp(d->user, "root", 4) == 0) {
		snprintf(detail, len, "docker.user: sandboxes never run as root");
		return SP_ECONFIG;
	}
	if (d->runtime != NULL && !docker_name_ok(d->runtime, 64)) {
		snprintf(detail, len, "docker.runtime: '%s' is not a runtime name", d->runtime);
		return SP_ECONFIG;
	}
	return docker_load_seccomp(d, detail, len);
}

/* ---- init: ping, network, firewall ------------------------------------ */

static void
docker_init_fail(struct docker *d, int status, const char *detail)
{
	sp_done_cb cb = d->init_cb;

	d->init_cb = NULL;
	if (d->state == DOCKER_INIT)
		d->state = DOCKER_NEW;
	cb(d->init_arg, status, detail);
}

static void
docker_init_firewall_done(void *arg, int status, const char *detail)
{
	struct docker *d = arg;
	sp_done_cb cb = d->init_cb;
	json_t *j;

	if (status < 0) {
		docker_init_fail(d, status, detail);
		return;
	}
	/* gateway and user are read by the core's worker channel (provider.h). */
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?}", "api", d->api,
	    "network", d->network, "bridge", d->bridge_real, "gateway", d->gateway,
	    "user", d->user,
	    "seccomp_profile", d->seccomp_path,
	    "firewall", d->fw.failed[0] == '\0' ? "enforced" : "not enforced",
	    "runtime", d->runtime);
	if (j == NULL || (d->describe = json_dumps(j, JSON_COMPACT)) == NULL)
		abort();
	json_decref(j);
	d->state = DOCKER_READY;
	d->init_cb = NULL;
	cb(d->init_arg, 0, NULL);
}

/* The network exists: it must be internal with icc off; read its gateway and bridge. */
static void
docker_init_network_check(struct docker *d, json_t *net)
{
	json_t *opts = json_object_get(net, "Options"), *cfg, *c;
	const char *icc = json_string_value(json_object_get(opts,
	    "com.docker.network.bridge.enable_icc"));
	const char *br = json_string_value(json_object_get(opts,
	    "com.docker.network.bridge.name"));
	const char *id = json_string_value(json_object_get(net, "Id"));
	char detail[512];
	size_t i;

	if (!json_is_true(json_object_get(net, "Internal"))) {
		snprintf(detail, sizeof(detail), "docker network '%s' exists but is not internal: "
		    "sandpit refuses it (remove it or name another with docker.network)",
		    d->network);
		docker_init_fail(d, SP_ECONFIG, detail);
		return;
	}
	if (icc == NULL || strcmp(icc, "false") != 0) {
		snprintf(detail, sizeof(detail), "docker network '%s' allows traffic between "
		    "containers (enable_icc is not false): sandpit refuses it", d->network);
		docker_init_fail(d, SP_ECONFIG, detail);
		return;
	}
	cfg = json_object_get(json_object_get(net, "IPAM"), "Config");
	json_array_foreach(cfg, i, c) {
		const char *gw = json_string_value(json_object_get(c, "Gateway"));

		if (gw != NULL && strchr(gw, ':') == NULL && strlen(gw) < sizeof(d->gateway)) {
			snprintf(d->gateway, sizeof(d->gateway), "%s", gw);
			break;
		}
	}
	if (d->gateway[0] == '\0') {
		snprintf(detail, sizeof(detail), "docker network '%s' has no IPv4 gateway",
		    d->network);
		docker_init_fail(d, SP_EPROVIDER, detail);
		return;
	}
	/* Without the option Docker names the bridge br-<first 12 of the id>. */
	free(d->bridge_real);
	if (br != NULL && docker_name_ok(br, 15))
		d->bridge_real = docker_xstrdup(br);
	else if (id != NULL && strlen(id) >= 12)
		d->bridge_real = docker_xprintf("br-%.12s", id);
	else
		d->bridge_real = docker_xstrdup(d->bridge);

	docker_firewall_start(d, docker_init_firewall_done, d);
}

static void docker_init_inspect(struct docker *d, bool created);

static void
docker_init_created(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;

	/* 409: someone created it meanwhile; inspect decides whether it will do. */
	if (status < 0 && status != SP_ECONFLICT) {
		docker_init_fail(d, status, detail);
		return;
	}
	docker_init_inspect(d, true);
}

static void
docker_init_create_network(struct docker *d)
{
	struct docker_req req = { .method = "POST", .path = "/networks/create" };
	json_t *body;
	int rc;

	body = json_pack("{s:s, s:s, s:b, s:b, s:b, s:{s:s, s:s}, s:{s:s}}",
	    "Name", d->network, "Driver", "bridge", "Internal", 1, "CheckDuplicate", 1,
	    "Attachable", 0,
	    "Options", "com.docker.network.bridge.enable_icc", "false",
	    "com.docker.network.bridge.name", d->bridge,
	    "Labels", SP_LABEL_INSTANCE, d->host->instance != NULL ? d->host->instance : "");
	if (body == NULL)
		abort();
	if (d->subnet != NULL) {
		json_t *ipam = json_pack("{s:s, s:[{s:s}]}", "Driver", "default",
		    "Config", "Subnet", d->subnet);

		json_object_set_new(body, "IPAM", ipam);
	}
	req.json = body;
	rc = docker_api(d, &req, docker_init_created, d, NULL);
	json_decref(body);
	if (rc < 0)
		docker_init_fail(d, rc, "docker: cannot start the network request");
}

static void
docker_init_inspected(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;

	if (status == SP_ENOTFOUND) {
		docker_init_create_network(d);
		return;
	}
	if (status < 0) {
		docker_init_fail(d, status, detail);
		return;
	}
	if (!json_is_object(r->json)) {
		docker_init_fail(d, SP_EPROTO, "docker: network inspect answered no object");
		return;
	}
	docker_init_network_check(d, r->json);
}

static void
docker_init_inspected_after_create(void *arg, int status, const struct docker_reply *r,
				   const char *detail)
{
	struct docker *d = arg;

	if (status < 0) {
		docker_init_fail(d, status, detail);
		return;
	}
	docker_init_inspected(arg, status, r, detail);
}

static void
docker_init_inspect(struct docker *d, bool created)
{
	struct docker_req req = { .method = "GET" };
	char *path, *name = docker_api_escape(d->network);
	int rc;

	path = docker_xprintf("/networks/%s", name);
	req.path = path;
	rc = docker_api(d, &req, created ? docker_init_inspected_after_create :
	    docker_init_inspected, d, NULL);
	free(path);
	free(name);
	if (rc < 0)
		docker_init_fail(d, rc, "docker: cannot start the network request");
}

static void
docker_init_pinged(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;
	unsigned major = 0, minor = 0;
	char buf[256];

	if (status < 0) {
		docker_init_fail(d, status, detail);
		return;
	}
	if (r->api_version == NULL || sscanf(r->api_version, "%u.%u", &major, &minor) != 2 ||
	    major != 1) {
		docker_init_fail(d, SP_EPROTO, "docker: /_ping gave no usable Api-Version header");
		return;
	}
	if (minor < DOCKER_API_MIN_MINOR) {
		snprintf(buf, sizeof(buf), "docker engine speaks API 1.%u; sandpit needs 1.%d or "
		    "later (Docker 20.10+)", minor, DOCKER_API_MIN_MINOR);
		docker_init_fail(d, SP_EPROVIDER, buf);
		return;
	}
	if (minor > DOCKER_API_MAX_MINOR)
		minor = DOCKER_API_MAX_MINOR;
	snprintf(d->api, sizeof(d->api), "v1.%u", minor);
	docker_init_inspect(d, false);
}

static void
docker_init_deferred_fail(uv_timer_t *t)
{
	struct docker *d = t->data;

	docker_init_fail(d, d->init_status, d->init_detail);
	docker_unref(d);
}

static int
docker_init(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	struct docker_req req = { .method = "GET", .path = "/_ping", .unversioned = true,
				  .raw = true, .timeout_ms = 10000 };
	char detail[512];
	int rc;

	if (d->state != DOCKER_NEW)
		return SP_ECONFLICT;
	d->p = p;
	d->host = p->host;
	LIST_INIT(&d->calls);
	LIST_INIT(&d->execs);
	if (!d->defer_init) {
		uv_timer_init(d->host->loop, &d->defer);
		d->defer.data = d;
		d->defer_init = true;
	}
	d->init_cb = cb;
	d->init_arg = arg;
	d->state = DOCKER_INIT;
	if ((rc = docker_read_directives(d, detail, sizeof(detail))) < 0) {
		/* Through the callback, later, so the detail reaches the log. */
		d->init_status = rc;
		snprintf(d->init_detail, sizeof(d->init_detail), "%s", detail);
		/* Held so a close() meanwhile waits for this callback. */
		docker_ref(d);
		uv_timer_start(&d->defer, docker_init_deferred_fail, 0, 0);
		return 0;
	}
	if ((rc = docker_api(d, &req, docker_init_pinged, d, NULL)) < 0) {
		d->state = DOCKER_NEW;
		return rc;
	}
	return 0;
}

static void
docker_close(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct docker *d = docker_of(p);

	if (!d->defer_init) {
		uv_timer_init(p->host->loop, &d->defer);
		d->defer.data = d;
		d->defer_init = true;
	}
	d->state = DOCKER_CLOSING;
	d->close_cb = cb;
	d->close_arg = arg;
	docker_watch_stop(d);
	docker_exec_cancel_all(d);
	docker_image_cancel(d);
	docker_firewall_cancel(d);
	docker_api_cancel_all(d);
	/* The last pending thing closes the timer; with none, do it now. */
	d->refs++;
	docker_unref(d);
}

/* ---- create ------------------------------------------------------------ */

struct docker_create {
	struct docker *d;
	json_t *body;
	char *path;
	bool worker_image;
	bool retried;
	sp_create_cb cb;
	void *arg;
};

static void docker_create_send(struct docker_create *c);

static void
docker_create_finish(struct docker_create *c, int status, const char *ref, const char *detail)
{
	c->cb(c->arg, status, ref, detail);
	json_decref(c->body);
	free(c->path);
	free(c);
}

static void
docker_create_image_ready(void *arg, int status, const char *detail)
{
	struct docker_create *c = arg;

	if (status < 0) {
		docker_create_finish(c, status, NULL, detail);
		return;
	}
	docker_create_send(c);
}

static void
docker_create_done(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker_create *c = arg;
	const char *id;

	if (status == SP_ENOTFOUND && c->worker_image && !c->retried &&
	    c->d->state == DOCKER_READY && detail != NULL && strstr(detail, "image") != NULL) {
		/* The worker image vanished since we checked: build it and retry once. */
		c->retried = true;
		c->d->image.ok = false;
		if ((status = docker_image_ensure(c->d, docker_create_image_ready, c)) == 0)
			return;
	}
	if (status < 0) {
		docker_create_finish(c, status, NULL, detail);
		return;
	}
	id = json_string_value(json_object_get(r->json, "Id"));
	if (id == NULL || !docker_name_ok(id, 128)) {
		docker_create_finish(c, SP_EPROTO, NULL, "docker: create answered no container Id");
		return;
	}
	docker_create_finish(c, 0, id, NULL);
}

static void
docker_create_send(struct docker_create *c)
{
	struct docker_req req = { .method = "POST", .path = c->path, .json = c->body };
	int rc;

	if ((rc = docker_api(c->d, &req, docker_create_done, c, NULL)) < 0)
		docker_create_finish(c, rc, NULL, "docker: cannot start the create request");
}

static json_t *
docker_create_body(struct docker *d, const struct sp_sandbox_spec *spec, const char *image)
{
	json_t *body, *cmd, *env, *labels, *hc, *tmpfs, *sec;
	char *opt;

	labels = json_pack("{s:s, s:s, s:s, s:s}",
	    SP_LABEL_INSTANCE, d->host->instance != NULL ? d->host->instance : "",
	    SP_LABEL_SANDBOX, spec->id,
	    SP_LABEL_TENANT, spec->tenant != NULL ? spec->tenant : "",
	    SP_LABEL_SPEC_HASH, spec->spec_hash != NULL ? spec->spec_hash : "");
	if (labels == NULL)
		/* A string that is not UTF-8: refuse it rather than drop it. */
		return NULL;
	/* Only what the worker needs to find the daemon: never a secret. */
	env = json_array();
	json_array_append_new(env, json_string("PATH=/usr/local/bin:/bin"));
	json_array_append_new(env, json_string("HOME=/work"));
	opt = docker_xprintf("SANDPIT_SANDBOX_ID=%s", spec->id);
	json_array_append_new(env, json_string(opt));
	free(opt);
	opt = docker_xprintf("SANDPIT_DAEMON=%s:%u", d->gateway, (unsigned)d->host->worker_port);
	json_array_append_new(env, json_string(opt));
	free(opt);

	tmpfs = json_object();
	opt = docker_xprintf("rw,noexec,nosuid,nodev,size=%lld", (long long)spec->tmp_bytes);
	json_object_set_new(tmpfs, "/tmp", json_string(opt));
	free(opt);
	/* /work allows exec: agents write and run scripts and programs there. */
	opt = docker_xprintf("rw,nosuid,nodev,size=%lld,uid=65534,gid=65534,mode=0700",
	    (long long)spec->work_bytes);
	json_object_set_new(tmpfs, "/work", json_string(opt));
	free(opt);

	sec = json_array();
	json_array_append_new(sec, json_string("no-new-privileges:true"));
	opt = docker_xprintf("seccomp=%s", d->seccomp);
	json_array_append_new(sec, json_string(opt));
	free(opt);

	hc = json_pack("{s:I, s:I, s:I, s:I, s:[{s:s, s:I, s:I}], s:[s], s:b, s:o, s:b, s:o,"
	    " s:b, s:s, s:s, s:b}",
	    "Memory", (json_int_t)spec->memory_bytes,
	    "MemorySwap", (json_int_t)spec->memory_bytes,
	    "NanoCpus", (json_int_t)spec->nano_cpus,
	    "PidsLimit", (json_int_t)spec->pids_limit,
	    "Ulimits", "Name", "nofile", "Soft", (json_int_t)spec->nofile,
	    "Hard", (json_int_t)spec->nofile,
	    "CapDrop", "ALL",
	    "Privileged", 0,
	    "SecurityOpt", sec,
	    "ReadonlyRootfs", 1,
	    "Tmpfs", tmpfs,
	    "Init", 1,
	    "IpcMode", "private",
	    "NetworkMode", d->network,
	    "AutoRemove", 0);
	if (hc == NULL)
		abort();
	if (d->runtime != NULL)
		json_object_set_new(hc, "Runtime", json_string(d->runtime));
	if (spec->files_dir != NULL)
		json_object_set_new(hc, "Mounts", json_pack("[{s:s, s:s, s:s, s:b}]",
		    "Type", "bind", "Source", spec->files_dir, "Target", "/run/sandpit",
		    "ReadOnly", 1));

	body = json_pack("{s:s, s:s, s:s, s:o, s:o, s:b, s:b, s:b, s:b, s:o}",
	    "Image", image, "User", d->user, "WorkingDir", "/work", "Env", env,
	    "Labels", labels, "Tty", 0, "OpenStdin", 0, "AttachStdout", 0, "AttachStderr", 0,
	    "HostConfig", hc);
	if (body == NULL)
		return NULL;
	if (spec->cmd != NULL) {
		if ((cmd = docker_json_strv(spec->cmd, 4096)) == NULL) {
			json_decref(body);
			return NULL;
		}
		json_object_set_new(body, "Cmd", cmd);
	}
	return body;
}

static int
docker_create(struct sp_provider *p, const struct sp_sandbox_spec *spec, sp_create_cb cb,
	      void *arg)
{
	struct docker *d = docker_of(p);
	struct docker_create *c;
	const char *image = spec->image != NULL ? spec->image : d->host->worker_image;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (!docker_name_ok(spec->id, 64) || image == NULL || spec->memory_bytes <= 0 ||
	    spec->nano_cpus <= 0 || spec->pids_limit <= 0 || spec->nofile <= 0 ||
	    spec->tmp_bytes <= 0 || spec->work_bytes <= 0)
		return SP_EINVAL;

	c = docker_xcalloc(1, sizeof(*c));
	c->d = d;
	c->cb = cb;
	c->arg = arg;
	c->path = docker_xprintf("/containers/create?name=sandpit-%s", spec->id);
	if ((c->body = docker_create_body(d, spec, image)) == NULL) {
		free(c->path);
		free(c);
		return SP_EINVAL;
	}
	c->worker_image = d->host->worker_image != NULL &&
	    strcmp(image, d->host->worker_image) == 0;
	if (c->worker_image && !d->image.ok) {
		rc = docker_image_ensure(d, docker_create_image_ready, c);
	} else {
		struct docker_req req = { .method = "POST", .path = c->path, .json = c->body };

		rc = docker_api(d, &req, docker_create_done, c, NULL);
	}
	if (rc < 0) {
		json_decref(c->body);
		free(c->path);
		free(c);
	}
	return rc;
}

/* ---- start, destroy ------------------------------------------------------ */

struct docker_simple {
	sp_done_cb cb;
	void *arg;
	bool gone_ok;			/* 404 counts as success (destroy) */
};

static void
docker_simple_done(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker_simple *s = arg;

	if (status == SP_ENOTFOUND && s->gone_ok)
		status = 0;
	s->cb(s->arg, status, status < 0 ? detail : NULL);
	free(s);
}

static int
docker_simple(struct docker *d, const char *method, const char *path, bool gone_ok,
	      sp_done_cb cb, void *arg)
{
	struct docker_req req = { .method = method, .path = path };
	struct docker_simple *s;
	int rc;

	s = docker_xcalloc(1, sizeof(*s));
	s->cb = cb;
	s->arg = arg;
	s->gone_ok = gone_ok;
	if ((rc = docker_api(d, &req, docker_simple_done, s, NULL)) < 0)
		free(s);
	return rc;
}

static int
docker_start(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	char *path;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (!docker_name_ok(ref, 128))
		return SP_EINVAL;
	path = docker_xprintf("/containers/%s/start", ref);
	rc = docker_simple(d, "POST", path, false, cb, arg);
	free(path);
	return rc;
}

static int
docker_destroy(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	char *path;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (!docker_name_ok(ref, 128))
		return SP_EINVAL;
	path = docker_xprintf("/containers/%s?force=true&v=true", ref);
	rc = docker_simple(d, "DELETE", path, true, cb, arg);
	free(path);
	return rc;
}

/* ---- status, list ------------------------------------------------------------ */

void
docker_labels(json_t *labels, struct sp_instance *inst)
{
	inst->sandbox_id = json_string_value(json_object_get(labels, SP_LABEL_SANDBOX));
	inst->tenant = json_string_value(json_object_get(labels, SP_LABEL_TENANT));
	inst->spec_hash = json_string_value(json_object_get(labels, SP_LABEL_SPEC_HASH));
}

static enum sp_instance_state
docker_state(const char *s)
{
	if (s == NULL)
		return SP_INST_GONE;
	if (strcmp(s, "created") == 0)
		return SP_INST_CREATED;
	if (strcmp(s, "running") == 0 || strcmp(s, "paused") == 0 ||
	    strcmp(s, "restarting") == 0)
		return SP_INST_RUNNING;
	if (strcmp(s, "removing") == 0)
		return SP_INST_GONE;
	return SP_INST_EXITED;		/* exited, dead */
}

struct docker_status {
	sp_status_cb cb;
	void *arg;
	char *ref;
};

static void
docker_status_done(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker_status *s = arg;
	struct sp_instance inst = { .ref = s->ref, .state = SP_INST_GONE };
	json_t *st;

	if (status == SP_ENOTFOUND) {
		s->cb(s->arg, 0, &inst, NULL);
	} else if (status < 0) {
		s->cb(s->arg, status, NULL, detail);
	} else if (!json_is_object(r->json) ||
	    !json_is_object(st = json_object_get(r->json, "State"))) {
		s->cb(s->arg, SP_EPROTO, NULL, "docker: container inspect answered no State");
	} else {
		const char *id = json_string_value(json_object_get(r->json, "Id"));

		inst.ref = id != NULL ? id : s->ref;
		inst.state = docker_state(json_string_value(json_object_get(st, "Status")));
		inst.exit_code = (int)json_integer_value(json_object_get(st, "ExitCode"));
		inst.oom_killed = json_is_true(json_object_get(st, "OOMKilled"));
		docker_labels(json_object_get(json_object_get(r->json, "Config"), "Labels"),
		    &inst);
		s->cb(s->arg, 0, &inst, NULL);
	}
	free(s->ref);
	free(s);
}

static int
docker_status(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	struct docker_req req = { .method = "GET" };
	struct docker_status *s;
	char *path;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (!docker_name_ok(ref, 128))
		return SP_EINVAL;
	s = docker_xcalloc(1, sizeof(*s));
	s->cb = cb;
	s->arg = arg;
	s->ref = docker_xstrdup(ref);
	path = docker_xprintf("/containers/%s/json", ref);
	req.path = path;
	rc = docker_api(d, &req, docker_status_done, s, NULL);
	free(path);
	if (rc < 0) {
		free(s->ref);
		free(s);
	}
	return rc;
}

struct docker_list {
	sp_list_cb cb;
	void *arg;
};

static void
docker_list_done(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker_list *l = arg;
	struct sp_instance *items = NULL;
	size_t i, n = 0;
	json_t *c;

	if (status < 0) {
		l->cb(l->arg, status, NULL, 0, detail);
		goto out;
	}
	if (!json_is_array(r->json)) {
		l->cb(l->arg, SP_EPROTO, NULL, 0, "docker: container list is not an array");
		goto out;
	}
	if (json_array_size(r->json) > DOCKER_LIST_MAX) {
		l->cb(l->arg, SP_ELIMIT, NULL, 0, "docker: too many containers to list");
		goto out;
	}
	items = docker_xcalloc(json_array_size(r->json), sizeof(*items));
	json_array_foreach(r->json, i, c) {
		struct sp_instance *it = &items[n];
		const char *st = json_string_value(json_object_get(c, "Status"));
		int code;

		it->ref = json_string_value(json_object_get(c, "Id"));
		if (it->ref == NULL)
			continue;
		it->state = docker_state(json_string_value(json_object_get(c, "State")));
		/* The list carries the exit code only in its text: "Exited (137) 2 s ago". */
		if (st != NULL && sscanf(st, "Exited (%d)", &code) == 1)
			it->exit_code = code;
		docker_labels(json_object_get(c, "Labels"), it);
		n++;
	}
	l->cb(l->arg, 0, items, n, NULL);
out:
	free(items);
	free(l);
}

static int
docker_list(struct sp_provider *p, sp_list_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	struct docker_req req = { .method = "GET" };
	struct docker_list *l;
	char *filter, *esc, *path;
	json_t *f;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	filter = docker_xprintf("%s=%s", SP_LABEL_INSTANCE,
	    d->host->instance != NULL ? d->host->instance : "");
	f = json_pack("{s:[s]}", "label", filter);
	free(filter);
	if (f == NULL || (filter = json_dumps(f, JSON_COMPACT)) == NULL)
		abort();
	json_decref(f);
	esc = docker_api_escape(filter);
	free(filter);
	path = docker_xprintf("/containers/json?all=1&filters=%s", esc);
	free(esc);
	l = docker_xcalloc(1, sizeof(*l));
	l->cb = cb;
	l->arg = arg;
	req.path = path;
	rc = docker_api(d, &req, docker_list_done, l, NULL);
	free(path);
	if (rc < 0)
		free(l);
	return rc;
}

static const char *
docker_describe(struct sp_provider *p)
{
	struct docker *d = docker_of(p);

	return d->describe != NULL ? d->describe : "{}";
}

const struct sp_provider_ops sp_docker_provider = {
	.name = "docker",
	.caps = SP_CAP_EXEC | SP_CAP_LIST | SP_CAP_LOCAL | SP_CAP_IMAGE | SP_CAP_EVENTS,
	.priv_size = sizeof(struct docker),
	.directives = docker_directives,
	.init = docker_init,
	.close = docker_close,
	.create = docker_create,
	.start = docker_start,
	.exec = docker_exec,
	.exec_cancel = docker_exec_cancel,
	.destroy = docker_destroy,
	.list = docker_list,
	.status = docker_status,
	.build_image = docker_build_image,
	.watch = docker_watch,
	.describe = docker_describe,
};

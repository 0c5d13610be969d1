/*
 * docker_exec: run a command in a running sandbox (exec create, then a
 * streamed exec start whose stdout/stderr frames are demultiplexed as they
 * arrive, then exec inspect for the exit code), with its timeout and OOM
 * report. It owns struct sp_exec and its timer; it never blocks the loop
 * beyond reading one small cgroup file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "docker_internal.h"

#define EXEC_GRACE_MS		3000	/* after the deadline, before we stop waiting */
#define EXEC_INSPECT_TRIES	100
#define EXEC_INSPECT_DELAY_MS	20
#define EXEC_ARGV_MAX		4096

enum exec_phase { EXEC_CREATE, EXEC_STREAM, EXEC_INSPECT, EXEC_OOM, EXEC_DONE };

struct sp_exec {
	struct docker *d;
	LIST_ENTRY(sp_exec) entry;
	enum exec_phase phase;
	char *ref;
	char id[80];
	sp_output_cb out;
	sp_exec_cb cb;
	void *arg;
	struct docker_call *call;	/* the request in flight, or NULL */
	struct docker_demux demux;
	uv_timer_t timer;		/* deadline, then grace, then inspect retries */
	uint64_t timeout_ms;
	bool deadline_hit;		/* timeout_ms passed while it ran */
	bool cut;			/* we stopped the stream after the grace */
	bool canceled;
	int out_status;			/* out's negative return */
	long long oom_before;		/* cgroup oom_kill count, -1 when unreadable */
	int tries;
	struct sp_exec_result res;
};

int
docker_demux_feed(struct docker_demux *m, const char *data, size_t len, sp_output_cb out,
		  void *arg)
{
	while (len > 0) {
		if (m->left == 0) {
			size_t take = sizeof(m->hdr) - m->hdr_len;
			uint32_t flen;

			if (take > len)
				take = len;
			memcpy(m->hdr + m->hdr_len, data, take);
			m->hdr_len += take;
			data += take;
			len -= take;
			if (m->hdr_len < sizeof(m->hdr))
				return 0;
			if (m->hdr[0] > 2 || m->hdr[1] != 0 || m->hdr[2] != 0 || m->hdr[3] != 0)
				return SP_EPROTO;
			flen = (uint32_t)m->hdr[4] << 24 | (uint32_t)m->hdr[5] << 16 |
			    (uint32_t)m->hdr[6] << 8 | m->hdr[7];
			if (flen > DOCKER_FRAME_MAX)
				return SP_EPROTO;
			/* stdin (0) never comes back; treat it as stdout if it does. */
			m->fd = m->hdr[0] == 2 ? 2 : 1;
			m->left = flen;
			m->hdr_len = 0;
			continue;
		}
		{
			size_t take = m->left < len ? m->left : len;
			int rc;

			if ((rc = out(arg, m->fd, data, take)) < 0)
				return rc;
			m->left -= take;
			data += take;
			len -= take;
		}
	}
	return 0;
}

bool
docker_demux_clean(const struct docker_demux *m)
{
	return m->left == 0 && m->hdr_len == 0;
}

/*
 * The kernel's count of OOM kills in the container's memory cgroup: cgroup v1
 * (cgroupfs or systemd driver) memory.oom_control, or cgroup v2 memory.events.
 */
static long long
exec_oom_count(const char *id)
{
	/* prefix + id + suffix: cgroup v1 (cgroupfs, systemd), then cgroup v2. */
	static const char *const dirs[][2] = {
		{ "/sys/fs/cgroup/memory/docker/", "/memory.oom_control" },
		{ "/sys/fs/cgroup/memory/system.slice/docker-", ".scope/memory.oom_control" },
		{ "/sys/fs/cgroup/docker/", "/memory.events" },
		{ "/sys/fs/cgroup/system.slice/docker-", ".scope/memory.events" },
	};
	char path[256], line[128];
	long long n = -1;

	if (strlen(id) != 64)
		return -1;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && n < 0; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s%s%s", dirs[i][0], id, dirs[i][1]);
		if ((f = fopen(path, "re")) == NULL)
			continue;
		while (fgets(line, sizeof(line), f) != NULL)
			if (sscanf(line, "oom_kill %lld", &n) == 1)
				break;
		fclose(f);
	}
	return n;
}

static void
exec_closed(uv_handle_t *h)
{
	struct sp_exec *ex = h->data;
	struct docker *d = ex->d;

	free(ex->ref);
	free(ex);
	docker_unref(d);
}

static void
exec_finish(struct sp_exec *ex, int status, const char *detail)
{
	ex->phase = EXEC_DONE;
	LIST_REMOVE(ex, entry);
	uv_timer_stop(&ex->timer);
	ex->cb(ex->arg, status, status == 0 ? &ex->res : NULL, detail);
	uv_close((uv_handle_t *)&ex->timer, exec_closed);
}

static void exec_inspect(struct sp_exec *ex);

static void
exec_state_done(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct sp_exec *ex = arg;
	json_t *st = json_object_get(r->json, "State");

	ex->call = NULL;
	if (ex->canceled) {
		exec_finish(ex, SP_ECANCELED, NULL);
		return;
	}
	/* Without the cgroup, the engine's sticky flag is the best we have. */
	if (status == 0 && json_is_true(json_object_get(st, "OOMKilled")))
		ex->res.oom_killed = true;
	exec_finish(ex, 0, NULL);
}

static void
exec_oom_check(struct sp_exec *ex)
{
	struct docker_req req = { .method = "GET" };
	long long after;
	char *path;
	int rc;

	if (ex->oom_before >= 0 && (after = exec_oom_count(ex->ref)) >= 0) {
		ex->res.oom_killed = after > ex->oom_before;
		exec_finish(ex, 0, NULL);
		return;
	}
	if (ex->res.exit_code != 137) {
		exec_finish(ex, 0, NULL);
		return;
	}
	ex->phase = EXEC_OOM;
	path = docker_xprintf("/containers/%s/json", ex->ref);
	req.path = path;
	rc = docker_api(ex->d, &req, exec_state_done, ex, &ex->call);
	free(path);
	if (rc < 0)
		exec_finish(ex, 0, NULL);
}

static void
exec_retry_cb(uv_timer_t *t)
{
	struct sp_exec *ex = t->data;

	if (ex->canceled) {
		exec_finish(ex, SP_ECANCELED, NULL);
		return;
	}
	exec_inspect(ex);
}

static void
exec_inspected(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct sp_exec *ex = arg;
	json_t *code;

	ex->call = NULL;
	if (ex->canceled) {
		exec_finish(ex, SP_ECANCELED, NULL);
		return;
	}
	if (status < 0) {
		exec_finish(ex, status, detail);
		return;
	}
	code = json_object_get(r->json, "ExitCode");
	if (json_is_true(json_object_get(r->json, "Running")) || !json_is_integer(code)) {
		/* The stream can end a moment before the engine records the exit. */
		if (++ex->tries < EXEC_INSPECT_TRIES) {
			uv_timer_start(&ex->timer, exec_retry_cb, EXEC_INSPECT_DELAY_MS, 0);
			return;
		}
		if (!ex->cut) {
			exec_finish(ex, SP_EPROTO, "docker: exec never reported an exit code");
			return;
		}
		ex->res.exit_code = 137;
	} else {
		ex->res.exit_code = (int)json_integer_value(code);
	}
	/* busybox timeout kills with SIGKILL: 137 after our deadline is the timeout. */
	ex->res.timed_out = ex->deadline_hit && (ex->res.exit_code == 137 || ex->cut);
	exec_oom_check(ex);
}

static void
exec_inspect(struct sp_exec *ex)
{
	struct docker_req req = { .method = "GET" };
	char *path;
	int rc;

	ex->phase = EXEC_INSPECT;
	path = docker_xprintf("/exec/%s/json", ex->id);
	req.path = path;
	rc = docker_api(ex->d, &req, exec_inspected, ex, &ex->call);
	free(path);
	if (rc < 0)
		exec_finish(ex, rc, "docker: cannot start the exec inspect request");
}

static int
exec_data(void *arg, const char *data, size_t len)
{
	struct sp_exec *ex = arg;
	int rc;

	if (ex->canceled)
		return SP_ECANCELED;
	rc = docker_demux_feed(&ex->demux, data, len, ex->out, ex->arg);
	if (rc < 0 && rc != SP_EPROTO)
		ex->out_status = rc;
	return rc;
}

static void
exec_streamed(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct sp_exec *ex = arg;

	ex->call = NULL;
	if (ex->canceled) {
		exec_finish(ex, SP_ECANCELED, NULL);
		return;
	}
	if (ex->out_status < 0) {
		exec_finish(ex, ex->out_status, "exec output consumer aborted");
		return;
	}
	if (status == SP_EPROTO && detail == NULL)
		detail = "docker: malformed exec output stream";
	if (status < 0 && !(status == SP_ECANCELED && ex->cut)) {
		exec_finish(ex, status, detail);
		return;
	}
	exec_inspect(ex);
}

static void
exec_deadline_cb(uv_timer_t *t)
{
	struct sp_exec *ex = t->data;

	if (!ex->deadline_hit) {
		/* busybox timeout in the sandbox kills it now; give the stream a moment. */
		ex->deadline_hit = true;
		uv_timer_start(&ex->timer, exec_deadline_cb, EXEC_GRACE_MS, 0);
		return;
	}
	/*
	 * Still streaming: a background child keeps stdout open. Stop waiting; the
	 * child lives on until the sandbox goes (bounded by its pids limit).
	 */
	if (ex->phase == EXEC_STREAM && ex->call != NULL) {
		ex->cut = true;
		docker_api_cancel(ex->call);
	}
}

static void
exec_created(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct sp_exec *ex = arg;
	struct docker_req req = { .method = "POST", .timeout_ms = UINT64_MAX,
				  .on_data = exec_data, .data_arg = ex };
	const char *id;
	char *path;
	int rc;

	ex->call = NULL;
	if (ex->canceled) {
		exec_finish(ex, SP_ECANCELED, NULL);
		return;
	}
	if (status < 0) {
		exec_finish(ex, status, detail);
		return;
	}
	id = json_string_value(json_object_get(r->json, "Id"));
	if (id == NULL || strlen(id) >= sizeof(ex->id) || strspn(id,
	    "0123456789abcdef") != strlen(id)) {
		exec_finish(ex, SP_EPROTO, "docker: exec create answered no Id");
		return;
	}
	snprintf(ex->id, sizeof(ex->id), "%s", id);
	ex->phase = EXEC_STREAM;
	path = docker_xprintf("/exec/%s/start", ex->id);
	req.path = path;
	req.json = json_pack("{s:b, s:b}", "Detach", 0, "Tty", 0);
	rc = docker_api(ex->d, &req, exec_streamed, ex, &ex->call);
	json_decref(req.json);
	free(path);
	if (rc < 0)
		exec_finish(ex, rc, "docker: cannot start the exec stream");
}

int
docker_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
	    sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret)
{
	struct docker *d = docker_of(p);
	struct docker_req req = { .method = "POST" };
	struct sp_exec *ex;
	json_t *cmd, *env, *body;
	char *path, secs[32];
	size_t n = 0;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (ref == NULL || strlen(ref) > 128 || strspn(ref, "0123456789abcdefABCDEF"
	    "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ_-.") != strlen(ref) || *ref == '\0')
		return SP_EINVAL;
	if (spec->argv == NULL || spec->argv[0] == NULL || out == NULL || cb == NULL)
		return SP_EINVAL;

	cmd = json_array();
	if (spec->timeout_ms != 0) {
		/*
		 * The engine cannot kill an exec, so the command runs under busybox
		 * timeout, which SIGKILLs it from inside the sandbox at the deadline.
		 */
		snprintf(secs, sizeof(secs), "%llu.%03llu",
		    (unsigned long long)(spec->timeout_ms / 1000),
		    (unsigned long long)(spec->timeout_ms % 1000));
		json_array_append_new(cmd, json_string("/bin/busybox"));
		json_array_append_new(cmd, json_string("timeout"));
		json_array_append_new(cmd, json_string("-s"));
		json_array_append_new(cmd, json_string("KILL"));
		json_array_append_new(cmd, json_string(secs));
	}
	for (const char *const *a = spec->argv; *a != NULL; a++, n++) {
		if (n >= EXEC_ARGV_MAX) {
			json_decref(cmd);
			return SP_EINVAL;
		}
		json_array_append_new(cmd, json_string(*a));
	}
	env = json_array();
	for (const char *const *e = spec->env; e != NULL && *e != NULL; e++)
		json_array_append_new(env, json_string(*e));
	body = json_pack("{s:b, s:b, s:b, s:b, s:o, s:o, s:s, s:s}",
	    "AttachStdin", 0, "AttachStdout", 1, "AttachStderr", 1, "Tty", 0,
	    "Cmd", cmd, "Env", env,
	    "WorkingDir", spec->workdir != NULL ? spec->workdir : "/work",
	    "User", d->user);
	if (body == NULL)
		/* json_string() refused a string that is not UTF-8. */
		return SP_EINVAL;

	ex = docker_xcalloc(1, sizeof(*ex));
	ex->d = d;
	ex->ref = docker_xstrdup(ref);
	ex->out = out;
	ex->cb = cb;
	ex->arg = arg;
	ex->timeout_ms = spec->timeout_ms;
	ex->phase = EXEC_CREATE;
	ex->oom_before = exec_oom_count(ref);

	path = docker_xprintf("/containers/%s/exec", ref);
	req.path = path;
	req.json = body;
	rc = docker_api(d, &req, exec_created, ex, &ex->call);
	free(path);
	json_decref(body);
	if (rc < 0) {
		free(ex->ref);
		free(ex);
		return rc;
	}
	uv_timer_init(d->host->loop, &ex->timer);
	ex->timer.data = ex;
	docker_ref(d);
	if (spec->timeout_ms != 0)
		uv_timer_start(&ex->timer, exec_deadline_cb, spec->timeout_ms, 0);
	LIST_INSERT_HEAD(&d->execs, ex, entry);
	if (ret != NULL)
		*ret = ex;
	return 0;
}

void
docker_exec_cancel(struct sp_provider *p, struct sp_exec *ex)
{
	if (ex == NULL || ex->canceled || ex->phase == EXEC_DONE)
		return;
	ex->canceled = true;
	if (ex->call != NULL)
		docker_api_cancel(ex->call);
	else
		/* Between requests (an inspect retry): finish from the timer. */
		uv_timer_start(&ex->timer, exec_retry_cb, 0, 0);
}

void
docker_exec_cancel_all(struct docker *d)
{
	struct sp_exec *ex;

	LIST_FOREACH(ex, &d->execs, entry)
		docker_exec_cancel(d->p, ex);
}

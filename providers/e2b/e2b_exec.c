/*
 * Commands in an E2B sandbox through envd's process service: Start as a
 * Connect server-stream whose envelopes are parsed as they arrive, guarded by
 * an idle limit (keepalives) and a deadline; signals through SendSignal. A
 * stream that breaks, lies or stops without its end message fails the one
 * exec with a reason; nothing here can stall the loop or outlive close().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "e2b.h"

#define EXEC_RAW_MAX	4096		/* error body kept when the reply is not a stream */
#define EXEC_GRACE_MS	5000		/* after the deadline, before we give up on envd */
#define EXEC_STOPPED	(-ECONNABORTED)	/* we ended the stream on purpose */

struct sp_exec {
	TAILQ_ENTRY(sp_exec) entry;
	struct e2b *e;
	char *ref;
	sp_output_cb out;
	sp_exec_cb cb;
	sp_done_cb bg_cb;		/* background start: reported at the start event */
	void *arg;
	char *body;			/* the request envelope */
	size_t body_len;
	uint64_t timeout_ms;
	struct sp_http_call *http;
	uv_timer_t timer;		/* idle / deadline guard, or retry backoff */
	struct e2b_env_parser ps;
	char raw[EXEC_RAW_MAX + 1];	/* NUL-terminated */
	size_t raw_len;
	int fail;			/* first failure seen in the stream */
	char why[320];
	int64_t pid;
	bool got_start, got_end, eos_timeout;
	bool canceled, expired, finished, waiting, fetching;
	struct sp_exec_result res;
	uint64_t deadline_at;		/* loop time; 0 = none */
	uint64_t started_ms;
	unsigned attempt;
};

static int exec_send(struct sp_exec *ex, struct e2b_sbx *sb);

static void
exec_closed(uv_handle_t *h)
{
	struct sp_exec *ex = h->data;
	struct e2b *e = ex->e;

	free(ex->ref);
	free(ex->body);
	e2b_env_done(&ex->ps);
	free(ex);
	e->pending--;
	e2b_pending_done(e);
}

static void
signal_done(void *arg, int status, const char *detail)
{
	/* Best effort: the command's own callback already said what happened. */
}

/* Kill what may still run in the sandbox after we stopped listening to it. */
static void
exec_kill_remote(struct sp_exec *ex)
{
	if (ex->pid > 0 && !ex->got_end && !ex->e->closing && ex->bg_cb == NULL)
		(void)e2b_signal(ex->e, ex->ref, ex->pid, 9, signal_done, NULL);
}

/* Report once; the struct goes when its HTTP call and timer are done. */
static void
exec_finish(struct sp_exec *ex, int status, const char *detail)
{
	struct e2b_sbx *sb;
	char pid[32];

	if (ex->finished)
		return;
	ex->finished = true;
	TAILQ_REMOVE(&ex->e->execs, ex, entry);
	if ((sb = e2b_sbx_find(ex->e, ex->ref)) != NULL && sb->busy > 0)
		sb->busy--;
	if (status < 0 || ex->expired)
		exec_kill_remote(ex);
	if (ex->bg_cb != NULL) {
		snprintf(pid, sizeof(pid), "%lld", (long long)ex->pid);
		ex->bg_cb(ex->arg, status, status < 0 ? detail : pid);
	} else {
		ex->cb(ex->arg, status, status < 0 ? NULL : &ex->res, detail);
	}
	if (ex->http == NULL) {
		uv_timer_stop(&ex->timer);
		uv_close((uv_handle_t *)&ex->timer, exec_closed);
	} else {
		sp_http_cancel(ex->http);
	}
}

static void
exec_fail(struct sp_exec *ex, int status, const char *what, const char *why)
{
	if (ex->fail != 0)
		return;
	ex->fail = status;
	snprintf(ex->why, sizeof(ex->why), "%s%s", what, why);
}

static void
exec_guard(uv_timer_t *t)
{
	struct sp_exec *ex = t->data;
	struct e2b_sbx *sb;
	int r;

	if (ex->waiting) {
		/* A retry's backoff ran out. */
		ex->waiting = false;
		if (ex->canceled || ex->e->closing) {
			exec_finish(ex, SP_ECANCELED, "exec: canceled");
			return;
		}
		if ((sb = e2b_sbx_find(ex->e, ex->ref)) == NULL) {
			exec_finish(ex, SP_ENOTFOUND, "exec: the sandbox record went away");
			return;
		}
		if ((r = exec_send(ex, sb)) < 0)
			exec_finish(ex, r, "exec: could not start the request");
		return;
	}
	if (ex->http == NULL)
		return;
	if (ex->deadline_at != 0 && uv_now(ex->e->host->loop) >= ex->deadline_at) {
		ex->expired = true;
		exec_fail(ex, SP_ETIMEDOUT, "exec: ", "no end of the command after its deadline");
	} else {
		exec_fail(ex, SP_EUNAVAIL, "exec: ", "the stream stayed silent past the keepalive "
			  "limit (sandbox gone or connection stalled)");
	}
	sp_http_cancel(ex->http);
}

static void
exec_arm(struct sp_exec *ex)
{
	uint64_t now = uv_now(ex->e->host->loop);
	uint64_t at = now + ex->e->keepalive_s * 3000;

	if (ex->deadline_at != 0 && ex->deadline_at < at)
		at = ex->deadline_at;
	uv_timer_start(&ex->timer, exec_guard, at > now ? at - now : 0, 0);
}

static int
exec_frame(void *arg, unsigned flags, const char *json, size_t len)
{
	struct sp_exec *ex = arg;
	struct e2b_event ev;
	const char *why;
	char detail[256];
	int r;

	if (flags & E2B_ENV_END) {
		if ((r = e2b_eos_parse(json, len, detail, sizeof(detail))) < 0) {
			if (r == SP_ETIMEDOUT)
				ex->eos_timeout = true;
			exec_fail(ex, r, "exec: the stream ended with an error: ", detail);
		}
		return 0;
	}
	if ((r = e2b_event_parse(json, len, &ev, &why)) < 0) {
		exec_fail(ex, r, "exec: bad process event: ", why);
		return r;
	}
	switch (ev.type) {
	case E2B_EV_START:
		ex->pid = ev.pid;
		ex->got_start = true;
		if (ex->bg_cb != NULL)
			return EXEC_STOPPED;	/* started: envd keeps it running without us */
		break;
	case E2B_EV_DATA:
		if (ex->out != NULL && ev.data_len > 0 &&
		    ex->out(ex->arg, ev.fd, ev.data, ev.data_len) < 0) {
			exec_fail(ex, SP_ECANCELED, "exec: ", "the output consumer stopped it");
			e2b_event_free(&ev);
			return SP_ECANCELED;
		}
		break;
	case E2B_EV_KEEPALIVE:
		break;
	case E2B_EV_END:
		ex->got_end = true;
		ex->res.exit_code = ev.exit_code;
		break;
	}
	e2b_event_free(&ev);
	return 0;
}

static int
exec_data(void *arg, const char *data, size_t len)
{
	struct sp_exec *ex = arg;
	const char *why;
	size_t n;
	int r;

	if (ex->finished)
		return EXEC_STOPPED;
	/* Keep the start of the body: when the reply is an error, not a stream,
	 * this is its JSON. */
	if (ex->ps.frames == 0 && ex->raw_len < EXEC_RAW_MAX) {
		n = EXEC_RAW_MAX - ex->raw_len;
		if (n > len)
			n = len;
		memcpy(ex->raw + ex->raw_len, data, n);
		ex->raw_len += n;
		ex->raw[ex->raw_len] = '\0';
	}
	if (ex->fail != 0 && ex->ps.frames == 0) {
		/* Not a stream: read on (bounded) so the error body is whole. */
		return ex->raw_len < EXEC_RAW_MAX ? 0 : SP_EPROTO;
	}
	exec_arm(ex);
	r = e2b_env_feed(&ex->ps, data, len, exec_frame, ex, &why);
	if (r == EXEC_STOPPED || r == 0)
		return r;
	exec_fail(ex, r, "exec: broken stream: ", why);
	if (ex->ps.frames == 0 && r == SP_EPROTO)
		return ex->raw_len < EXEC_RAW_MAX ? 0 : SP_EPROTO;
	return r;
}

static void
exec_http_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct sp_exec *ex = arg;
	char detail[400];
	const char *why;
	int64_t d;
	int r;

	ex->http = NULL;
	uv_timer_stop(&ex->timer);
	if (ex->finished) {
		uv_close((uv_handle_t *)&ex->timer, exec_closed);
		return;
	}
	if (ex->canceled || ex->e->closing) {
		exec_finish(ex, SP_ECANCELED, "exec: canceled");
		return;
	}
	if (ex->bg_cb != NULL && ex->got_start) {
		exec_finish(ex, 0, NULL);
		return;
	}
	if ((resp->status != 0 && resp->status != 200) || status == SP_EUNAVAIL) {
		if (resp->status == 0)
			snprintf(detail, sizeof(detail), "exec: cannot reach envd: %s",
				 sp_strerror(status));
		r = resp->status == 0 ? status : e2b_http_error(resp->status, ex->raw,
		    ex->raw_len, "exec", detail, sizeof(detail));
		/* Refused before anything ran (a rate limit, an unavailable envd,
		 * no connection): no process was started, so it may be retried.
		 * A connection cut after the request went out may have started
		 * it: never repeated, so a command runs at most once. */
		if (resp->status == 0 && resp->request_sent)
			snprintf(detail, sizeof(detail), "exec: the connection to envd broke "
				 "after the command was sent (%s); it may have run, so it is not "
				 "repeated", sp_strerror(status));
		else if ((resp->status == 429 && !e2b_is_concurrency_429(429, ex->raw)) ||
		    resp->status == 503 || resp->status == 0) {
			d = e2b_retry_delay(&ex->e->retry, ex->attempt + 1,
					    uv_now(ex->e->host->loop) - ex->started_ms,
					    resp->retry_after, e2b_rand(ex->e));
			if (d >= 0) {
				ex->attempt++;
				ex->waiting = true;
				ex->fail = 0;
				ex->raw_len = 0;
				e2b_env_done(&ex->ps);
				e2b_env_init(&ex->ps, E2B_MAX_FRAME);
				uv_timer_start(&ex->timer, exec_guard, (uint64_t)d, 0);
				return;
			}
		}
		exec_finish(ex, r, detail);
		return;
	}
	if (ex->expired || ex->eos_timeout) {
		/* The deadline passed: envd killed it (or we gave up on it). */
		ex->res.timed_out = true;
		ex->res.exit_code = 128 + 9;
		exec_finish(ex, 0, NULL);
		return;
	}
	if (ex->got_end && (ex->fail == 0 || ex->fail == SP_EUNAVAIL)) {
		/* The result is known even if the last envelope went missing. */
		exec_finish(ex, 0, NULL);
		return;
	}
	if (ex->fail != 0) {
		exec_finish(ex, ex->fail, ex->why);
		return;
	}
	if (status < 0 && status != EXEC_STOPPED) {
		snprintf(detail, sizeof(detail), "exec: the stream broke without an end event "
			 "(%s): sandbox gone or connection cut", sp_strerror(status));
		exec_finish(ex, SP_EUNAVAIL, detail);
		return;
	}
	if ((r = e2b_env_finish(&ex->ps, &why)) < 0 || !ex->got_end) {
		snprintf(detail, sizeof(detail), "exec: %s", r < 0 ? why :
			 "the stream ended without an end event");
		exec_finish(ex, r < 0 ? r : SP_EPROTO, detail);
		return;
	}
	exec_finish(ex, 0, NULL);
}

static int
exec_send(struct sp_exec *ex, struct e2b_sbx *sb)
{
	struct e2b *e = ex->e;
	char *url, **h, ka[64], to[64];
	const char *extra[5] = {
		"Content-Type: application/connect+json", "Connect-Protocol-Version: 1",
		ka, NULL, NULL,
	};
	struct sp_http_opts o = { 0 };
	int r;

	snprintf(ka, sizeof(ka), "Keepalive-Ping-Interval: %llu",
		 (unsigned long long)e->keepalive_s);
	/* The process lives under this deadline in envd; none for background work. */
	if (ex->timeout_ms > 0) {
		snprintf(to, sizeof(to), "Connect-Timeout-Ms: %llu",
			 (unsigned long long)ex->timeout_ms);
		extra[3] = to;
	}
	url = e2b_envd_url(e, sb, "/process.Process/Start");
	h = e2b_envd_headers(e, sb, extra);
	o.method = "POST";
	o.url = url;
	o.headers = (const char *const *)h;
	o.body = ex->body;
	o.body_len = ex->body_len;
	o.connect_timeout_ms = 10000;
	/* A command runs at most once: no silent resend by libcurl. */
	o.fresh_connect = true;
	r = sp_http_request(e->host->http, &o, exec_data, exec_http_done, ex, &ex->http);
	free(url);
	e2b_headers_free(h);
	if (r < 0)
		return r;
	if (uv_now(e->host->loop) - sb->refreshed_ms >= (uint64_t)e->timeout_s * 1000 / 3)
		e2b_sbx_refresh(e, sb);
	exec_arm(ex);
	return 0;
}

static void
exec_got_sbx(void *arg, int status, struct e2b_sbx *sb, const char *detail)
{
	struct sp_exec *ex = arg;

	ex->fetching = false;
	if (ex->canceled || ex->e->closing) {
		exec_finish(ex, SP_ECANCELED, "exec: canceled");
		return;
	}
	if (status < 0) {
		exec_finish(ex, status, detail);
		return;
	}
	sb->busy++;
	if ((status = exec_send(ex, sb)) < 0)
		exec_finish(ex, status, "exec: could not start the request");
}

static char *
exec_request(const char *const *argv, const char *const *env, const char *cwd)
{
	json_t *args = json_array(), *envs = json_object(), *proc, *msg;
	char *text = NULL;
	const char *eq;
	int r;

	for (size_t i = 1; argv[i] != NULL; i++)
		json_array_append_new(args, json_string(argv[i]));
	for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
		char *k;

		if ((eq = strchr(env[i], '=')) == NULL || eq == env[i])
			goto out;
		k = e2b_xstrndup(env[i], (size_t)(eq - env[i]));
		r = json_object_set_new(envs, k, json_string(eq + 1));
		free(k);
		if (r < 0)
			goto out;
	}
	proc = json_pack("{s:s, s:O, s:O}", "cmd", argv[0], "args", args, "envs", envs);
	if (proc == NULL)
		goto out;
	if (cwd != NULL)
		json_object_set_new(proc, "cwd", json_string(cwd));
	msg = json_pack("{s:o, s:b}", "process", proc, "stdin", 0);
	if (msg != NULL)
		text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
out:
	json_decref(args);
	json_decref(envs);
	return text;
}

static int
exec_begin(struct e2b *e, const char *ref, const char *const *argv, const char *const *env,
	   const char *cwd, uint64_t timeout_ms, struct sp_exec **ret)
{
	struct sp_exec *ex;
	char *text;

	if (e->closing)
		return SP_ECANCELED;
	if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0')
		return SP_EINVAL;
	if (strlen(ref) > 64)
		return SP_EINVAL;
	if ((text = exec_request(argv, env, cwd)) == NULL)
		return SP_EINVAL;		/* bad env entry or text that is not UTF-8 */
	if (strlen(text) > E2B_MAX_FRAME) {
		free(text);
		return SP_EINVAL;
	}
	ex = e2b_xcalloc(1, sizeof(*ex));
	ex->e = e;
	ex->ref = e2b_xstrdup(ref);
	ex->body = e2b_env_wrap(text, strlen(text), &ex->body_len);
	free(text);
	ex->timeout_ms = timeout_ms;
	ex->started_ms = uv_now(e->host->loop);
	if (timeout_ms > 0)
		ex->deadline_at = ex->started_ms + timeout_ms + EXEC_GRACE_MS;
	e2b_env_init(&ex->ps, E2B_MAX_FRAME);
	uv_timer_init(e->host->loop, &ex->timer);
	ex->timer.data = ex;
	e->pending++;
	TAILQ_INSERT_TAIL(&e->execs, ex, entry);
	*ret = ex;
	return 0;
}

static int
exec_go(struct sp_exec *ex)
{
	struct e2b_sbx *sb = e2b_sbx_find(ex->e, ex->ref);
	int r;

	if (sb != NULL)
		r = exec_send(ex, sb);
	else if ((r = e2b_sbx_fetch(ex->e, ex->ref, exec_got_sbx, ex)) == 0)
		ex->fetching = true;
	if (r == 0 && sb != NULL)
		sb->busy++;
	if (r < 0) {
		/* No callback may fire: unlink and free quietly. */
		ex->finished = true;
		TAILQ_REMOVE(&ex->e->execs, ex, entry);
		uv_close((uv_handle_t *)&ex->timer, exec_closed);
	}
	return r;
}

int
e2b_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
	 sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret)
{
	struct e2b *e = p->priv;
	struct sp_exec *ex;
	int r;

	if (spec == NULL || cb == NULL)
		return SP_EINVAL;
	r = exec_begin(e, ref, spec->argv, spec->env, spec->workdir, spec->timeout_ms, &ex);
	if (r < 0)
		return r;
	ex->out = out;
	ex->cb = cb;
	ex->arg = arg;
	if ((r = exec_go(ex)) < 0)
		return r;
	if (ret != NULL)
		*ret = ex;
	return 0;
}

int
e2b_exec_background(struct e2b *e, const char *ref, const char *const *argv, const char *cwd,
		    sp_done_cb cb, void *arg)
{
	struct sp_exec *ex;
	int r;

	if ((r = exec_begin(e, ref, argv, NULL, cwd, 0, &ex)) < 0)
		return r;
	ex->bg_cb = cb;
	ex->arg = arg;
	return exec_go(ex);
}

void
e2b_exec_cancel(struct sp_provider *p, struct sp_exec *ex)
{
	if (ex == NULL || ex->finished || ex->canceled)
		return;
	ex->canceled = true;
	exec_kill_remote(ex);
	if (ex->http != NULL)
		sp_http_cancel(ex->http);
	else if (ex->waiting)
		uv_timer_start(&ex->timer, exec_guard, 0, 0);
	/* fetching: exec_got_sbx sees the flag */
}

void
e2b_exec_cancel_all(struct e2b *e)
{
	struct sp_exec *ex;

	TAILQ_FOREACH(ex, &e->execs, entry) {
		ex->canceled = true;
		if (ex->http != NULL)
			sp_http_cancel(ex->http);
		else if (ex->waiting)
			uv_timer_start(&ex->timer, exec_guard, 0, 0);
	}
}

/* ---------------------------------------------------------------- signals */

struct signal_ctx {
	sp_done_cb cb;
	void *arg;
};

static void
signal_call_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct signal_ctx *sc = c->arg;
	char detail[320];
	int r = 0;

	if (status < 0)
		r = status;
	else if (resp->status != 200)
		r = e2b_http_error(resp->status, resp->body, resp->body_len, "signal", detail,
				   sizeof(detail));
	/* not_found: the process is already gone, which is what a kill wants. */
	if (r == SP_ENOTFOUND && status == 0 && resp->status == 404)
		r = 0;
	if (status < 0)
		snprintf(detail, sizeof(detail), "signal: %s", sp_strerror(status));
	sc->cb(sc->arg, r, r < 0 ? detail : NULL);
	free(sc);
}

int
e2b_signal(struct e2b *e, const char *ref, int64_t pid, int sig, sp_done_cb cb, void *arg)
{
	static const char *const extra[] = {
		"Content-Type: application/json", "Connect-Protocol-Version: 1", NULL,
	};
	struct e2b_sbx *sb;
	struct signal_ctx *sc;
	struct e2b_call *c;
	char *url, *body;
	int r;

	if (e->closing)
		return SP_ECANCELED;
	if (pid <= 0 || (sig != 9 && sig != 15))
		return SP_EINVAL;
	if ((sb = e2b_sbx_find(e, ref)) == NULL)
		return SP_ENOTFOUND;
	sc = e2b_xcalloc(1, sizeof(*sc));
	sc->cb = cb;
	sc->arg = arg;
	url = e2b_envd_url(e, sb, "/process.Process/SendSignal");
	body = e2b_xasprintf("{\"process\":{\"pid\":%lld},\"signal\":\"%s\"}", (long long)pid,
			     sig == 9 ? "SIGNAL_SIGKILL" : "SIGNAL_SIGTERM");
	c = e2b_call_new(e, "POST", url, e2b_envd_headers(e, sb, extra), body, strlen(body),
			 signal_call_done, sc);
	free(url);
	free(body);
	if ((r = e2b_call_start(c)) < 0)
		free(sc);
	return r;
}

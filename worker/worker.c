/*
 * sandpit-worker: the sandbox's main process (under Docker's init). It reads
 * its identity from /run/sandpit (token, ca.pem, endpoint), keeps one verified
 * HTTP/3 connection to sandpitd, registers, heartbeats, long-polls for tasks,
 * runs each as a child process group with its own rlimits and timeout, streams
 * its output in acknowledged chunks (kept until the daemon has stored them, so a
 * daemon restart loses nothing), reports the exit code, and reconnects with
 * exponential backoff and jitter. It also serves the sandbox's agent code on
 * 127.0.0.1:WORKER_LOCAL_PORT (HTTP/1.1), forwarding /v1/ requests to the daemon
 * with its own token. It includes only include/sandpit/ and worker/ headers.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "quic_client.h"

#define WORKER_LOCAL_PORT	7070		/* the agent-facing endpoint, 127.0.0.1 only */
#define WORKER_FILES		"/run/sandpit"
#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		5000
#define CHUNK_MAX		(32u * 1024)	/* bytes per output request */
#define BUFFER_MAX		(8u << 20)	/* unacknowledged output before reading pauses */
#define LOCAL_MAX_CONNS		64
#define LOCAL_HEAD_MAX		(16u * 1024)
#define LOCAL_BODY_MAX		(1u << 20)
#define TOKEN_MAX		4096
#define TASKS_MAX		64		/* --tasks: the daemon's batch bound (WORKERS_BATCH_MAX) */

/* One piece of output, in the order it was read. */
struct seg {
	struct seg *next;
	uint64_t off;			/* in the task's output stream (stdout and stderr together) */
	int fd;
	size_t len;
	char data[];
};

struct task {
	struct task *next;		/* in wk->tasks */
	struct worker *wk;
	int64_t id;
	uint32_t attempt;
	int64_t lease;
	uv_process_t proc;
	uv_pipe_t pipe[2];		/* stdout, stderr */
	uv_timer_t timer;
	int handles;			/* open handles; the task is freed at 0 */
	int open_pipes;
	bool exited, timed_out, abandoned, reading;
	int exit_code;
	uint64_t started_ms, duration_ms;
	struct seg *head, *tail;
	uint64_t acked, produced;
	bool sending, result_due, result_sending, done;
};

struct local_conn {
	struct local_conn *next;
	struct worker *wk;
	uv_tcp_t tcp;
	char *buf;
	size_t len, cap, head_len, body_len;
	bool forwarded, closing;
};

struct worker {
	uv_loop_t *loop;
	const char *dir;
	char work[256];			/* tasks' default cwd and HOME (work_dir()) */
	char host[64];
	uint16_t port;
	char ca[512];
	char token[TOKEN_MAX + 1];
	struct quic_client *qc;
	bool connected, registered, polling, stopping, hb_sending;
	unsigned backoff_ms;
	uint64_t down_ms;		/* since when we have no registration (start, drop) */
	unsigned attempts;		/* connects since then */
	uint64_t heartbeat_ms;
	int64_t token_exp;
	struct task *tasks;		/* held, newest first */
	unsigned ntasks, slots;		/* slots: tasks run at once (--tasks) */
	bool results_sending;
	uv_timer_t retry, heartbeat, refresh;
	uv_signal_t sigterm, sigint;
	uv_tcp_t local;
	int local_port;
	struct local_conn *conns;
	size_t nconns;
	int exit_status;
};

static void wk_connect(struct worker *wk);
static void wk_poll(struct worker *wk);
static void wk_report(struct worker *wk);
static void task_pump(struct task *t);
static struct task *task_find(struct worker *wk, int64_t id);

static void
logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
logf_(const char *fmt, ...)
{
	va_list ap;

	fputs("sandpit-worker: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint64_t
now_ms(void)
{
	return uv_hrtime() / 1000000;
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

/* Read dir/name into buf (NUL-terminated, trailing whitespace cut). */
static int
read_small(const char *dir, const char *name, char *buf, size_t size)
{
	char path[512];
	ssize_t n;
	size_t len = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	return len > 0 ? 0 : -ENODATA;
}

static int
load_files(struct worker *wk)
{
	char ep[128];
	unsigned port;
	int r;

	if ((r = read_small(wk->dir, "token", wk->token, sizeof(wk->token))) < 0)
		return r;
	if ((r = read_small(wk->dir, "endpoint", ep, sizeof(ep))) < 0)
		return r;
	if (sscanf(ep, "%63s %u", wk->host, &port) != 2 || port == 0 || port > 65535)
		return -EINVAL;
	wk->port = (uint16_t)port;
	snprintf(wk->ca, sizeof(wk->ca), "%s/ca.pem", wk->dir);
	return 0;
}

/* --- connection --- */

static void
wk_retry_fire(uv_timer_t *t)
{
	wk_connect(t->data);
}

/* Reconnect after the backoff, doubled each time up to the cap, with ±50% jitter. */
static void
wk_schedule(struct worker *wk)
{
	uint32_t rnd = 0;
	uint64_t delay;

	if (wk->stopping)
		return;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)uv_hrtime();
	delay = wk->backoff_ms / 2 + rnd % (wk->backoff_ms + 1);
	wk->backoff_ms = wk->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : wk->backoff_ms * 2;
	uv_timer_start(&wk->retry, wk_retry_fire, delay, 0);
}

static void
wk_client_freed(void *arg)
{
	struct worker *wk = arg;

	wk_schedule(wk);
}

static void
wk_drop(struct worker *wk)
{
	struct quic_client *qc = wk->qc;

	if (qc == NULL)
		return;
	wk->qc = NULL;
	if (wk->registered) {
		wk->down_ms = now_ms();
		wk->attempts = 0;
	}
	wk->connected = wk->registered = wk->polling = wk->hb_sending = false;
	wk->results_sending = false;
	for (struct task *t = wk->tasks; t != NULL; t = t->next)
		t->sending = t->result_sending = false;
	uv_timer_stop(&wk->heartbeat);
	uv_timer_stop(&wk->refresh);
	quic_client_close(qc, wk_client_freed, wk);
}

static int
wk_request(struct worker *wk, const char *method, const char *path, json_t *body,
	   quic_client_response_fn cb, void *arg)
{
	char *text = NULL;
	int r;

	if (wk->qc == NULL)
		return -ENOTCONN;
	if (body != NULL) {
		text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		if (text == NULL)
			abort();
	}
	r = quic_client_request(wk->qc, method, path, wk->token, text, text ? strlen(text) : 0,
				cb, arg);
	free(text);
	return r;
}

/* A response that says the connection or the token is gone. */
static bool
wk_failed(struct worker *wk, int status)
{
	if (status == 401) {
		/* Refreshed while we were away, or revoked: read the file again. */
		logf_("the daemon refused our token (401)");
		load_files(wk);
		wk_drop(wk);
		return true;
	}
	if (status < 0) {
		wk_drop(wk);
		return true;
	}
	return false;
}

static void
hb_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct worker *wk = arg;
	json_t *j, *stale, *v;
	size_t i;

	wk->hb_sending = false;
	if (wk_failed(wk, status) || status != 200)
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	stale = json_object_get(j, "stale");
	json_array_foreach(stale, i, v) {
		struct task *t = task_find(wk, json_integer_value(v));

		if (t != NULL && !t->abandoned) {
			logf_("task %lld is no longer ours: stopping it", (long long)t->id);
			t->abandoned = true;
			if (!t->exited)
				kill(-t->proc.pid, SIGKILL);
		}
	}
	json_decref(j);
}

static void
hb_fire(uv_timer_t *tm)
{
	struct worker *wk = tm->data;
	json_t *tasks = json_array();

	if (!wk->registered || wk->hb_sending) {
		json_decref(tasks);
		return;
	}
	for (struct task *t = wk->tasks; t != NULL; t = t->next)
		if (!t->abandoned)
			json_array_append_new(tasks, json_pack("{s:I, s:I, s:I}", "task",
			    (json_int_t)t->id, "attempt", (json_int_t)t->attempt, "lease",
			    (json_int_t)t->lease));
	/* Results the daemon could not store last time go again now. */
	wk_report(wk);
	if (wk_request(wk, "POST", "/v1/worker/heartbeat", json_pack("{s:o}", "tasks", tasks),
		       hb_done, wk) == 0)
		wk->hb_sending = true;
}

static void refresh_fire(uv_timer_t *tm);

static void
refresh_arm(struct worker *wk)
{
	int64_t left = wk->token_exp - (int64_t)time(NULL);

	/* At half the remaining life, at least a second from now. */
	uv_timer_start(&wk->refresh, refresh_fire, left > 2 ? (uint64_t)left * 500 : 1000, 0);
}

static void
refresh_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct worker *wk = arg;
	json_t *j;
	const char *tok;

	if (wk_failed(wk, status))
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	tok = json_string_value(json_object_get(j, "token"));
	if (status == 200 && tok != NULL && strlen(tok) <= TOKEN_MAX) {
		snprintf(wk->token, sizeof(wk->token), "%s", tok);
		wk->token_exp = json_integer_value(json_object_get(j, "exp"));
	}
	json_decref(j);
	refresh_arm(wk);
}

static void
refresh_fire(uv_timer_t *tm)
{
	struct worker *wk = tm->data;

	wk_request(wk, "POST", "/v1/worker/token", json_object(), refresh_done, wk);
}

static void
register_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct worker *wk = arg;
	json_t *j;

	if (wk_failed(wk, status))
		return;
	if (status != 200) {
		logf_("register: HTTP %d", status);
		wk_drop(wk);
		return;
	}
	j = json_loadb((const char *)body, len, 0, NULL);
	wk->heartbeat_ms = (uint64_t)json_integer_value(json_object_get(j, "heartbeat_ms"));
	if (wk->heartbeat_ms < 100)
		wk->heartbeat_ms = 5000;
	wk->token_exp = json_integer_value(json_object_get(j, "token_exp"));
	json_decref(j);
	wk->registered = true;
	wk->backoff_ms = BACKOFF_MIN_MS;
	/* How long start-up (or a reconnect) took to a usable channel: spawn time. */
	logf_("registered with %s:%u after %llu ms (%u connect%s)", wk->host, (unsigned)wk->port,
	      (unsigned long long)(now_ms() - wk->down_ms), wk->attempts,
	      wk->attempts == 1 ? "" : "s");
	uv_timer_start(&wk->heartbeat, hb_fire, wk->heartbeat_ms, wk->heartbeat_ms);
	refresh_arm(wk);
	for (struct task *t = wk->tasks; t != NULL; t = t->next)
		task_pump(t);
	wk_report(wk);
	wk_poll(wk);
}

static void
wk_event(void *arg, enum quic_client_event ev, int err)
{
	struct worker *wk = arg;

	if (ev == QUIC_CLIENT_CONNECTED) {
		wk->connected = true;
		if (wk_request(wk, "POST", "/v1/worker/register",
			       json_pack("{s:s, s:i}", "version", SANDPIT_VERSION, "pid", (int)getpid()),
			       register_done, wk) < 0)
			wk_drop(wk);
		return;
	}
	if (wk->connected || err != -ETIMEDOUT)
		logf_("connection closed (%s)", strerror(-err));
	wk_drop(wk);
}

static void
wk_connect(struct worker *wk)
{
	struct quic_client_config cfg = { 0 };
	int r;

	if (wk->stopping || wk->qc != NULL)
		return;
	if ((r = load_files(wk)) < 0) {
		logf_("%s: %s", wk->dir, strerror(-r));
		wk_schedule(wk);
		return;
	}
	cfg.host = wk->host;
	cfg.port = wk->port;
	cfg.ca_file = wk->ca;
	cfg.idle_timeout_ms = 30000;
	wk->attempts++;
	r = quic_client_new(wk->loop, &cfg, wk_event, wk, &wk->qc);
	if (r < 0) {
		wk->qc = NULL;
		logf_("cannot connect to %s:%u: %s", wk->host, (unsigned)wk->port, strerror(-r));
		wk_schedule(wk);
	}
}

/* --- tasks --- */

static void
task_closed(uv_handle_t *h)
{
	struct task *t = h->data;

	if (--t->handles > 0)
		return;
	while (t->head != NULL) {
		struct seg *s = t->head;

		t->head = s->next;
		free(s);
	}
	free(t);
}

/* The task is over for us (reported, or abandoned): free it and ask for the next. */
static void
task_end(struct task *t)
{
	struct worker *wk = t->wk;

	t->done = true;
	for (struct task **pp = &wk->tasks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			wk->ntasks--;
			break;
		}
	uv_timer_stop(&t->timer);
	uv_close((uv_handle_t *)&t->timer, task_closed);
	/* A live child is killed; proc_exit then closes its handle. */
	if (!t->exited)
		kill(-t->proc.pid, SIGKILL);
	for (int i = 0; i < 2; i++)
		if (!uv_is_closing((uv_handle_t *)&t->pipe[i]))
			uv_close((uv_handle_t *)&t->pipe[i], task_closed);
	if (wk->registered)
		wk_poll(wk);
}

static void pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

static size_t
task_buffered(const struct task *t)
{
	return (size_t)(t->produced - t->acked);
}

static void
task_resume_reading(struct task *t)
{
	if (t->reading || task_buffered(t) >= BUFFER_MAX)
		return;
	for (int i = 0; i < 2; i++)
		if (!uv_is_closing((uv_handle_t *)&t->pipe[i]))
			uv_read_start((uv_stream_t *)&t->pipe[i], pipe_alloc, pipe_read);
	t->reading = true;
}

static struct task *
task_find(struct worker *wk, int64_t id)
{
	for (struct task *t = wk->tasks; t != NULL; t = t->next)
		if (t->id == id)
			return t;
	return NULL;
}

static void
results_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct worker *wk = arg;
	json_t *j, *a, *v;
	struct task *t, *next;
	size_t i;

	if (wk_failed(wk, status))
		return;		/* wk_drop cleared the flags; sent again after the reconnect */
	wk->results_sending = false;
	if (status >= 500) {
		/* The daemon could not store them: again with the next heartbeat. */
		for (t = wk->tasks; t != NULL; t = t->next)
			t->result_sending = false;
		return;
	}
	j = json_loadb((const char *)body, len, 0, NULL);
	a = json_object_get(j, "results");
	if (status != 200)
		logf_("results refused (HTTP %d)", status);
	json_array_foreach(a, i, v) {
		const char *verdict = json_string_value(json_object_get(v, "verdict"));

		t = task_find(wk, json_integer_value(json_object_get(v, "task")));
		if (t != NULL && verdict != NULL && strcmp(verdict, "accepted") != 0 &&
		    strcmp(verdict, "duplicate") != 0)
			logf_("task %lld: result refused (%s)", (long long)t->id, verdict);
	}
	json_decref(j);
	/* Every result sent is settled now: recorded, a duplicate, or refused for good. */
	for (t = wk->tasks; t != NULL; t = next) {
		next = t->next;
		if (t->result_sending)
			task_end(t);
	}
	wk_report(wk);
}

/* Send the results that are due, up to TASKS_MAX in one request, one request at a time. */
static void
wk_report(struct worker *wk)
{
	json_t *a;
	struct task *t;

	if (!wk->registered || wk->results_sending)
		return;
	a = json_array();
	for (t = wk->tasks; t != NULL && json_array_size(a) < TASKS_MAX; t = t->next) {
		if (!t->result_due || t->done)
			continue;
		json_array_append_new(a, json_pack("{s:I, s:I, s:I, s:i, s:I, s:b, s:I}", "task",
		    (json_int_t)t->id, "attempt", (json_int_t)t->attempt, "lease",
		    (json_int_t)t->lease, "exit_code", t->exit_code, "duration_ms",
		    (json_int_t)t->duration_ms, "timed_out", t->timed_out, "output_len",
		    (json_int_t)t->produced));
		t->result_sending = true;
	}
	if (json_array_size(a) == 0) {
		json_decref(a);
		return;
	}
	if (wk_request(wk, "POST", "/v1/worker/results", json_pack("{s:o}", "results", a),
		       results_done, wk) == 0) {
		wk->results_sending = true;
		return;
	}
	for (t = wk->tasks; t != NULL; t = t->next)
		t->result_sending = false;
}

static void
output_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct task *t = arg;
	struct worker *wk = t->wk;
	json_t *j;
	int64_t upto;

	t->sending = false;
	if (t->done || wk_failed(wk, status))
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	if (status == 200)
		upto = json_integer_value(json_object_get(j, "acked"));
	else if (status == 409 && json_object_get(j, "expected") != NULL)
		upto = json_integer_value(json_object_get(j, "expected"));
	else
		upto = -1;
	json_decref(j);
	if (status == 409 && upto < 0) {
		/* Stale: the task was cancelled or timed out on the daemon's side. */
		logf_("task %lld: the daemon no longer wants it", (long long)t->id);
		t->abandoned = true;
		task_end(t);
		return;
	}
	if (upto < 0)
		return;		/* retried from the next pump */
	if ((uint64_t)upto > t->acked)
		t->acked = (uint64_t)upto;
	else if ((uint64_t)upto < t->acked && (t->head == NULL || (uint64_t)upto < t->head->off)) {
		logf_("task %lld: the daemon lost output we no longer hold", (long long)t->id);
		t->acked = t->head != NULL ? t->head->off : t->produced;
	} else {
		t->acked = (uint64_t)upto;
	}
	while (t->head != NULL && t->head->off + t->head->len <= t->acked) {
		struct seg *s = t->head;

		t->head = s->next;
		if (t->head == NULL)
			t->tail = NULL;
		free(s);
	}
	task_resume_reading(t);
	task_pump(t);
}

/* Send what is due: the next unacknowledged chunk, or the result once all is acked. */
static void
task_pump(struct task *t)
{
	struct worker *wk = t->wk;
	char path[96], *b64;
	struct seg *s;
	size_t from, n;
	json_t *j;

	if (t->done || !wk->registered || t->sending || t->result_sending)
		return;
	s = t->head;
	while (s != NULL && s->off + s->len <= t->acked)
		s = s->next;
	if (s != NULL) {
		from = t->acked > s->off ? (size_t)(t->acked - s->off) : 0;
		n = s->len - from > CHUNK_MAX ? CHUNK_MAX : s->len - from;
		b64 = xmalloc(4 * ((n + 2) / 3) + 1);
		{
			/* Base64 by hand: the worker links no crypto library of its own. */
			static const char tab[] =
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
			const unsigned char *in = (const unsigned char *)s->data + from;
			size_t o = 0, i;

			for (i = 0; i + 2 < n; i += 3) {
				b64[o++] = tab[in[i] >> 2];
				b64[o++] = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
				b64[o++] = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
				b64[o++] = tab[in[i + 2] & 63];
			}
			if (i < n) {
				b64[o++] = tab[in[i] >> 2];
				if (i + 1 < n) {
					b64[o++] = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
					b64[o++] = tab[(in[i + 1] & 15) << 2];
				} else {
					b64[o++] = tab[(in[i] & 3) << 4];
					b64[o++] = '=';
				}
				b64[o++] = '=';
			}
			b64[o] = '\0';
		}
		j = json_pack("{s:I, s:I, s:I, s:i, s:s}", "attempt", (json_int_t)t->attempt,
		    "lease", (json_int_t)t->lease, "offset", (json_int_t)(s->off + from),
		    "fd", s->fd, "b64", b64);
		free(b64);
		snprintf(path, sizeof(path), "/v1/worker/tasks/%lld/output", (long long)t->id);
		if (wk_request(wk, "POST", path, j, output_done, t) == 0)
			t->sending = true;
		return;
	}
	if (!t->exited || t->open_pipes > 0)
		return;
	/* All output is acknowledged: the result goes with the next batch. */
	t->result_due = true;
	wk_report(wk);
}

static void
pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	buf->base = xmalloc(65536);
	buf->len = 65536;
}

static void
pipe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct task *t = st->data;
	int fd = st == (uv_stream_t *)&t->pipe[0] ? 1 : 2;
	struct seg *s;

	if (n > 0 && !t->abandoned) {
		s = xmalloc(sizeof(*s) + (size_t)n);
		s->next = NULL;
		s->off = t->produced;
		s->fd = fd;
		s->len = (size_t)n;
		memcpy(s->data, buf->base, (size_t)n);
		t->produced += (uint64_t)n;
		if (t->tail != NULL)
			t->tail->next = s;
		else
			t->head = s;
		t->tail = s;
		if (task_buffered(t) >= BUFFER_MAX) {
			/* Back-pressure: the child blocks on a full pipe until acks come. */
			uv_read_stop((uv_stream_t *)&t->pipe[0]);
			uv_read_stop((uv_stream_t *)&t->pipe[1]);
			t->reading = false;
		}
	}
	free(buf->base);
	if (n < 0) {
		uv_close((uv_handle_t *)st, task_closed);
		t->open_pipes--;
	}
	task_pump(t);
}

static void
proc_exit(uv_process_t *p, int64_t status, int sig)
{
	struct task *t = p->data;

	t->exited = true;
	t->exit_code = sig != 0 ? 128 + sig : (int)status;
	t->duration_ms = now_ms() - t->started_ms;
	uv_timer_stop(&t->timer);
	uv_close((uv_handle_t *)p, task_closed);
	/* Orphans of the group would keep the pipes open. */
	kill(-p->pid, SIGKILL);
	if (t->done)
		return;
	task_pump(t);
}

static void
task_timeout(uv_timer_t *tm)
{
	struct task *t = tm->data;

	t->timed_out = true;
	kill(-t->proc.pid, SIGKILL);
}

/*
 * The child's limits: no core files, and RLIMIT_CPU at the timeout (the
 * wall-clock timer kills the group in any case). The command is spawned
 * directly and limited with prlimit(2) as soon as uv_spawn returns, which is
 * after its exec: re-executing this (dynamically linked) binary only to call
 * setrlimit first cost about 5x the fork and exec of a small command. The
 * price: a process the command forks in its very first instants may miss the
 * CPU limit; it is still in the group that the timeout kills.
 */
static void
task_limit(struct task *t, uint64_t timeout_ms)
{
	struct rlimit zero = { 0, 0 }, cpu;
	rlim_t secs = timeout_ms / 1000 + 1;

	cpu.rlim_cur = secs;
	cpu.rlim_max = secs + 5;
	if (prlimit(t->proc.pid, RLIMIT_CORE, &zero, NULL) < 0 ||
	    prlimit(t->proc.pid, RLIMIT_CPU, &cpu, NULL) < 0)
		logf_("task %lld: prlimit: %s", (long long)t->id, strerror(errno));
}

static void
task_start(struct worker *wk, json_t *g)
{
	json_t *spec = json_object_get(g, "spec"), *cmd = json_object_get(spec, "cmd"), *v;
	json_t *env = json_object_get(spec, "env");
	const char *wd = json_string_value(json_object_get(spec, "workdir")), *key;
	uint64_t timeout = (uint64_t)json_integer_value(json_object_get(spec, "timeout_ms"));
	uv_process_options_t po = { 0 };
	uv_stdio_container_t io[3];
	char **argv, **envp;
	size_t i, n = 0, ne = 0;
	struct task *t;
	int r;

	t = calloc(1, sizeof(*t));
	if (t == NULL)
		abort();
	t->wk = wk;
	t->id = json_integer_value(json_object_get(g, "task"));
	t->attempt = (uint32_t)json_integer_value(json_object_get(g, "attempt"));
	t->lease = json_integer_value(json_object_get(g, "lease"));
	t->started_ms = now_ms();
	t->next = wk->tasks;
	wk->tasks = t;
	wk->ntasks++;
	uv_timer_init(wk->loop, &t->timer);
	t->timer.data = t;
	t->handles = 1;

	argv = xmalloc((json_array_size(cmd) + 1) * sizeof(char *));
	json_array_foreach(cmd, i, v)
		argv[n++] = (char *)json_string_value(v);
	argv[n] = NULL;
	envp = xmalloc((json_object_size(env) + 3) * sizeof(char *));
	envp[ne++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin");
	if (asprintf(&envp[ne++], "HOME=%s", wk->work) < 0)
		abort();
	json_object_foreach(env, key, v) {
		char *e;

		if (asprintf(&e, "%s=%s", key, json_string_value(v)) < 0)
			abort();
		envp[ne++] = e;
	}
	envp[ne] = NULL;

	for (i = 0; i < 2; i++) {
		uv_pipe_init(wk->loop, &t->pipe[i], 0);
		t->pipe[i].data = t;
		t->handles++;
	}
	io[0].flags = UV_IGNORE;
	io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	io[1].data.stream = (uv_stream_t *)&t->pipe[0];
	io[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	io[2].data.stream = (uv_stream_t *)&t->pipe[1];
	po.file = argv[0] != NULL ? argv[0] : "";
	po.args = argv;
	po.env = envp;
	po.cwd = wd != NULL ? wd : wk->work;
	po.flags = UV_PROCESS_DETACHED;	/* its own process group, killed as one */
	po.stdio_count = 3;
	po.stdio = io;
	po.exit_cb = proc_exit;
	t->proc.data = t;
	r = uv_spawn(wk->loop, &t->proc, &po);
	for (i = 0; i < ne; i++)
		free(envp[i]);
	free(envp);
	free(argv);
	if (r == 0)
		task_limit(t, timeout);
	if (r < 0) {
		/* Report it as the shell would: 127 or 126, with the reason on stderr. */
		char msg[256];
		int len = snprintf(msg, sizeof(msg), "sandpit-worker: cannot run: %s\n",
				   uv_strerror(r));
		struct seg *s = xmalloc(sizeof(*s) + (size_t)len);

		s->next = NULL;
		s->off = 0;
		s->fd = 2;
		s->len = (size_t)len;
		memcpy(s->data, msg, (size_t)len);
		t->head = t->tail = s;
		t->produced = (uint64_t)len;
		t->exited = true;
		t->exit_code = r == UV_ENOENT ? 127 : 126;
		for (i = 0; i < 2; i++)
			uv_close((uv_handle_t *)&t->pipe[i], task_closed);
		t->open_pipes = 0;
		task_pump(t);
		return;
	}
	t->handles++;
	t->open_pipes = 2;
	uv_timer_start(&t->timer, task_timeout, timeout > 0 ? timeout : 600000, 0);
	task_resume_reading(t);
	logf_("task %lld: started (pid %d)", (long long)t->id, t->proc.pid);
}

static void
poll_done(void *arg, int status, const uint8_t *body, size_t len)
{
	struct worker *wk = arg;
	json_t *j, *g;
	size_t i;

	wk->polling = false;
	if (wk_failed(wk, status))
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	/* Every grant is started: the daemon sent no more than we asked for. */
	if (status == 200 && !wk->stopping)
		json_array_foreach(json_object_get(j, "tasks"), i, g)
			if (json_is_integer(json_object_get(g, "task")) &&
			    task_find(wk, json_integer_value(json_object_get(g, "task"))) == NULL)
				task_start(wk, g);
	json_decref(j);
	wk_poll(wk);
}

/* Long-poll for as many tasks as there are free slots. */
static void
wk_poll(struct worker *wk)
{
	char path[64];

	if (wk->polling || !wk->registered || wk->ntasks >= wk->slots || wk->stopping)
		return;
	snprintf(path, sizeof(path), "/v1/worker/tasks/next?max=%u", wk->slots - wk->ntasks);
	if (wk_request(wk, "GET", path, NULL, poll_done, wk) == 0)
		wk->polling = true;
}

/* --- the local endpoint for agent code --- */

static void
local_closed(uv_handle_t *h)
{
	struct local_conn *c = h->data;
	struct worker *wk = c->wk;

	for (struct local_conn **pp = &wk->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	wk->nconns--;
	free(c->buf);
	free(c);
}

static void
local_close(struct local_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	uv_close((uv_handle_t *)&c->tcp, local_closed);
}

static void
local_written(uv_write_t *req, int status)
{
	struct local_conn *c = req->data;

	free(req);
	local_close(c);
}

static void
local_reply(struct local_conn *c, int status, const void *body, size_t len)
{
	uv_write_t *req;
	uv_buf_t b[2];
	char head[256];
	int n;

	if (c->closing)
		return;
	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n", status,
		     status < 300 ? "OK" : "Error", len);
	req = xmalloc(sizeof(*req) + (size_t)n + len);
	memcpy((char *)(req + 1), head, (size_t)n);
	memcpy((char *)(req + 1) + n, body, len);
	b[0] = uv_buf_init((char *)(req + 1), (unsigned)((size_t)n + len));
	req->data = c;
	if (uv_write(req, (uv_stream_t *)&c->tcp, b, 1, local_written) < 0) {
		free(req);
		local_close(c);
	}
}

static void
local_error(struct local_conn *c, int status, const char *code, const char *msg)
{
	char body[512];
	int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
			 code, msg);

	local_reply(c, status, body, (size_t)n);
}

static void
local_answered(void *arg, int status, const uint8_t *body, size_t len)
{
	struct local_conn *c = arg;

	if (status < 0) {
		local_error(c, 502, "unavailable", "the daemon is not reachable");
		return;
	}
	local_reply(c, status, body, len);
}

/* A whole request is in c->buf: forward it (only /v1/ paths, with our token). */
static void
local_forward(struct local_conn *c)
{
	char method[16], path[1024];
	struct worker *wk = c->wk;

	c->forwarded = true;
	if (sscanf(c->buf, "%15s %1023s HTTP/1.", method, path) != 2) {
		local_error(c, 400, "bad_request", "malformed request line");
		return;
	}
	if (strncmp(path, "/v1/", 4) != 0) {
		local_error(c, 404, "not_found", "only /v1/ routes are forwarded");
		return;
	}
	if (!wk->registered) {
		local_error(c, 503, "unavailable", "not connected to the daemon yet");
		return;
	}
	if (quic_client_request(wk->qc, method, path, wk->token, c->buf + c->head_len,
				c->body_len, local_answered, c) < 0)
		local_error(c, 503, "unavailable", "cannot send to the daemon");
}

static void
local_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct local_conn *c = h->data;

	if (c->cap - c->len < 4096) {
		c->cap = c->cap ? c->cap * 2 : 8192;
		c->buf = realloc(c->buf, c->cap + 1);
		if (c->buf == NULL)
			abort();
	}
	*buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void
local_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct local_conn *c = st->data;
	char *end, *cl;

	if (n < 0) {
		local_close(c);
		return;
	}
	if (c->forwarded)
		return;
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	if (c->head_len == 0) {
		if ((end = strstr(c->buf, "\r\n\r\n")) == NULL) {
			if (c->len > LOCAL_HEAD_MAX)
				local_error(c, 431, "too_large", "request head too large");
			return;
		}
		c->head_len = (size_t)(end - c->buf) + 4;
		for (cl = c->buf; (cl = strcasestr(cl, "\r\ncontent-length:")) != NULL &&
		     cl < end; cl++) {
			c->body_len = strtoul(cl + 17, NULL, 10);
			break;
		}
		if (c->body_len > LOCAL_BODY_MAX) {
			local_error(c, 413, "too_large", "request body too large");
			return;
		}
	}
	if (c->len - c->head_len >= c->body_len) {
		uv_read_stop(st);
		local_forward(c);
	} else if (c->len > LOCAL_HEAD_MAX + LOCAL_BODY_MAX) {
		local_error(c, 413, "too_large", "request too large");
	}
}

static void
local_accept(uv_stream_t *srv, int status)
{
	struct worker *wk = srv->data;
	struct local_conn *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->wk = wk;
	uv_tcp_init(wk->loop, &c->tcp);
	c->tcp.data = c;
	c->next = wk->conns;
	wk->conns = c;
	wk->nconns++;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0 || wk->nconns > LOCAL_MAX_CONNS) {
		local_close(c);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, local_alloc, local_read);
}

static int
local_listen(struct worker *wk)
{
	struct sockaddr_in sin;
	int r;

	uv_tcp_init(wk->loop, &wk->local);
	wk->local.data = wk;
	uv_ip4_addr("127.0.0.1", wk->local_port, &sin);
	if ((r = uv_tcp_bind(&wk->local, (const struct sockaddr *)&sin, 0)) < 0 ||
	    (r = uv_listen((uv_stream_t *)&wk->local, 64, local_accept)) < 0)
		logf_("local endpoint 127.0.0.1:%d: %s", wk->local_port, uv_strerror(r));
	return r;
}

/* --- life cycle --- */

static void
noop_closed(uv_handle_t *h)
{
	(void)h;
}

static void
stop_freed(void *arg)
{
	(void)arg;
}

static void
wk_stop(uv_signal_t *s, int signum)
{
	struct worker *wk = s->data;

	if (wk->stopping)
		return;
	wk->stopping = true;
	logf_("%s: stopping", strsignal(signum));
	while (wk->tasks != NULL)
		task_end(wk->tasks);
	if (wk->qc != NULL) {
		struct quic_client *qc = wk->qc;

		wk->qc = NULL;
		quic_client_close(qc, stop_freed, wk);
	}
	for (struct local_conn *c = wk->conns; c != NULL; c = c->next)
		local_close(c);
	uv_close((uv_handle_t *)&wk->local, noop_closed);
	uv_close((uv_handle_t *)&wk->retry, noop_closed);
	uv_close((uv_handle_t *)&wk->heartbeat, noop_closed);
	uv_close((uv_handle_t *)&wk->refresh, noop_closed);
	uv_close((uv_handle_t *)&wk->sigterm, noop_closed);
	uv_close((uv_handle_t *)&wk->sigint, noop_closed);
}

/* "--exec SECONDS -- CMD...": the task's child sets its limits and becomes CMD. */
static int
exec_child(int argc, char **argv)
{
	struct rlimit zero = { 0, 0 }, cpu;
	unsigned long secs;

	if (argc < 5 || strcmp(argv[3], "--") != 0)
		return 2;
	secs = strtoul(argv[2], NULL, 10);
	cpu.rlim_cur = secs;
	cpu.rlim_max = secs + 5;
	setrlimit(RLIMIT_CORE, &zero);
	if (secs > 0)
		setrlimit(RLIMIT_CPU, &cpu);
	signal(SIGPIPE, SIG_DFL);
	execvp(argv[4], argv + 4);
	fprintf(stderr, "sandpit-worker: %s: %s\n", argv[4], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}

/*
 * Where tasks run without a workdir, unless --work names it: /work in our
 * own image (a writable tmpfs), else the worker's HOME, else /tmp.
 */
static void
work_dir(char *buf, size_t len)
{
	const char *home = getenv("HOME");
	struct stat st;

	if (stat("/work", &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(buf, len, "/work");
	else if (home != NULL && home[0] == '/' && strlen(home) < len &&
		 stat(home, &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(buf, len, "%s", home);
	else
		snprintf(buf, len, "/tmp");
}

int
main(int argc, char *argv[])
{
	struct worker wk = { 0 };
	uv_loop_t loop;
	int r;

	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		printf("sandpit-worker %s\n", SANDPIT_VERSION);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "--exec") == 0)
		return exec_child(argc, argv);
	wk.dir = WORKER_FILES;
	wk.local_port = WORKER_LOCAL_PORT;
	wk.slots = 1;
	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--dir") == 0 && a + 1 < argc) {
			wk.dir = argv[++a];
		} else if (strcmp(argv[a], "--work") == 0 && a + 1 < argc && argv[a + 1][0] == '/' &&
			   strlen(argv[a + 1]) < sizeof(wk.work)) {
			snprintf(wk.work, sizeof(wk.work), "%s", argv[++a]);
		} else if (strcmp(argv[a], "--local-port") == 0 && a + 1 < argc &&
			   atoi(argv[a + 1]) > 0 && atoi(argv[a + 1]) < 65536) {
			wk.local_port = atoi(argv[++a]);
		} else if (strcmp(argv[a], "--tasks") == 0 && a + 1 < argc &&
			   atoi(argv[a + 1]) > 0 && atoi(argv[a + 1]) <= TASKS_MAX) {
			wk.slots = (unsigned)atoi(argv[++a]);
		} else {
			fprintf(stderr, "usage: sandpit-worker [--version] [--dir DIR] "
				"[--work DIR] [--local-port PORT] [--tasks N]\n");
			return 2;
		}
	}
	if (wk.work[0] == '\0')
		work_dir(wk.work, sizeof(wk.work));
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stderr, NULL, _IOLBF, 0);
	uv_loop_init(&loop);
	wk.loop = &loop;
	wk.backoff_ms = BACKOFF_MIN_MS;
	wk.down_ms = now_ms();
	uv_timer_init(&loop, &wk.retry);
	uv_timer_init(&loop, &wk.heartbeat);
	uv_timer_init(&loop, &wk.refresh);
	wk.retry.data = wk.heartbeat.data = wk.refresh.data = &wk;
	uv_signal_init(&loop, &wk.sigterm);
	uv_signal_init(&loop, &wk.sigint);
	wk.sigterm.data = wk.sigint.data = &wk;
	uv_signal_start(&wk.sigterm, wk_stop, SIGTERM);
	uv_signal_start(&wk.sigint, wk_stop, SIGINT);
	local_listen(&wk);
	wk_connect(&wk);
	uv_run(&loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&loop);
	if (r != 0)
		logf_("handles left open at exit: %s", uv_strerror(r));
	return r == 0 ? wk.exit_status : 1;
}

/*
 * workers: the worker channel inside sandpitd. It owns the quic servers, the
 * router with the /v1/worker routes, the token key, the certificates, each
 * sandbox's files and its worker's live state, and the control-side execs that
 * wait for a worker's output. Tasks live in the queue (borrowed); this module
 * never keeps a second copy of them. Requests are never logged (peers' errors
 * are counted by rpc and quic); only the background work with no caller to
 * return to (certificate renewal, binding the gateway, an advertised address)
 * logs.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth.h"
#include "cert.h"
#include "clock.h"
#include "log.h"
#include "provider.h"
#include "quic.h"
#include "rpc.h"
#include "workers.h"
#include "xmalloc.h"

#define WORKERS_MAX_SERVERS	8
#define WORKERS_MAX_ADVERTISED	4	/* providers' advertised worker addresses in the cert */
#define WORKERS_MAX_POLLS	4	/* long-polls waiting per sandbox */
#define WORKERS_HEARTBEAT_MS	5000	/* what register tells the worker */
#define WORKERS_STALE_MS	(3 * WORKERS_HEARTBEAT_MS)
#define WORKERS_TICK_MS		1000
#define WORKERS_RENEW_MS	(24ull * 3600 * 1000)
#define WORKERS_RESET_LEN	32
#define WORKERS_TASK_GRACE_MS	30000	/* the task's deadline past the command's own timeout */

struct wsb;

/* A long-poll of GET /v1/worker/tasks/next waiting for work. */
struct wpoll {
	struct wpoll *next;
	struct wsb *sb;
	struct rpc_pending *pending;	/* NULL once answered or cancelled */
	unsigned max;			/* ?max=N: up to N tasks as {"tasks":[…]}; 0: {"task":…} */
	uv_timer_t timer;
};

/* What the daemon knows about one sandbox's worker (since it started). */
struct wsb {
	struct wsb *next;
	char id[AUTH_ID_MAX + 1];
	char tenant[AUTH_ID_MAX + 1];
	bool registered;
	int64_t registered_ms, last_seen_ms;
	struct wpoll *polls;
	size_t npolls;
};

struct workers_exec {
	struct workers_exec *next;
	struct workers *w;
	int64_t task;
	char sandbox[AUTH_ID_MAX + 1];
	uint64_t forwarded;		/* bytes of output handed to out */
	sandbox_output_cb out;
	sandbox_exec_cb done;
	void *arg;
	uint64_t started_ms;		/* loop time of the enqueue */
	uint64_t give_up_ms;		/* loop time after which a task never finished is cancelled */
};

/* A control client waiting for a sandbox's worker (GET …?wait=ready). */
struct workers_wait {
	struct workers_wait *next;
	struct workers *w;
	char id[AUTH_ID_MAX + 1];
	void (*cb)(void *arg, bool ready);
	void *arg;
	uv_timer_t timer;
};

struct workers {
	uv_loop_t *loop;
	struct store *store;
	struct queue *queue;
	struct sandbox_mgr *mgr;
	const struct config *const *cfg;
	char *tls_dir, *files_root, *revoked_path;
	struct auth *auth;
	struct rpc *rpc;
	uint8_t reset[WORKERS_RESET_LEN];
	struct quic_server *servers[WORKERS_MAX_SERVERS];
	char *server_addr[WORKERS_MAX_SERVERS];
	size_t nservers;
	bool want_gateway;
	char gateway[64];		/* the provider's, once known */
	/* Addresses providers tell their workers to reach ("endpoint"): the cert names them. */
	char advertised[WORKERS_MAX_ADVERTISED][64];
	size_t nadvertised;
	char user[64];			/* "uid:gid" the sandboxes run as, or "" */
	struct wsb *sbs;
	struct workers_exec *execs;
	struct workers_wait *waits;
	/* A sandbox that belongs to a swarm also leases that swarm's tasks (swarm.c). */
	const char *(*swarm_of)(void *arg, const char *sandbox);
	void *swarm_arg;
	uv_timer_t tick, renew;
	size_t closing;			/* servers and handles whose close has not completed */
	bool stopping;
	void (*close_cb)(void *arg);
	void *close_arg;
};

/* --- decoding (pure; unit-tested) --- */

static int
get_int(json_t *o, const char *name, int64_t min, int64_t max, int64_t *ret, bool required,
	char *err, size_t errlen)
{
	json_t *v = json_object_get(o, name);

	if (v == NULL && !required)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
		sp_errf(err, errlen, "%s: an integer in %lld..%lld is required", name,
		     (long long)min, (long long)max);
		return SP_EINVAL;
	}
	*ret = json_integer_value(v);
	return 0;
}

int64_t
workers_task_id(const char *s)
{
	int64_t v = 0;

	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 18)
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

int
workers_decode_chunk(json_t *o, struct workers_chunk *ret, char *err, size_t errlen)
{
	int64_t attempt, lease, offset, fd;
	const char *b64;
	size_t n, len;
	unsigned char *data;
	int dec;

	if (!json_is_object(o)) {
		sp_errf(err, errlen, "a JSON object is required");
		return SP_EINVAL;
	}
	if (get_int(o, "attempt", 1, UINT32_MAX, &attempt, true, err, errlen) < 0 ||
	    get_int(o, "lease", 0, INT64_MAX, &lease, true, err, errlen) < 0 ||
	    get_int(o, "offset", 0, INT64_MAX, &offset, true, err, errlen) < 0 ||
	    get_int(o, "fd", 1, 2, &fd, true, err, errlen) < 0)
		return SP_EINVAL;
	b64 = json_string_value(json_object_get(o, "b64"));
	if (b64 == NULL) {
		sp_errf(err, errlen, "b64: a base64 string is required");
		return SP_EINVAL;
	}
	n = json_string_length(json_object_get(o, "b64"));
	if (n % 4 != 0 || n / 4 * 3 > WORKERS_CHUNK_MAX) {
		sp_errf(err, errlen, "b64: padded base64 of at most %u bytes is required",
		     WORKERS_CHUNK_MAX);
		return SP_EINVAL;
	}
	data = xmalloc(n / 4 * 3 + 1);
	dec = n == 0 ? 0 : EVP_DecodeBlock(data, (const unsigned char *)b64, (int)n);
	if (dec < 0) {
		free(data);
		sp_errf(err, errlen, "b64: not base64");
		return SP_EINVAL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	len = (size_t)dec;
	if (n >= 1 && b64[n - 1] == '=')
		len--;
	if (n >= 2 && b64[n - 2] == '=')
		len--;
	data[len] = '\0';
	*ret = (struct workers_chunk){
		.attempt = (uint32_t)attempt, .lease = lease, .offset = (uint64_t)offset,
		.fd = (int)fd, .data = (char *)data, .len = len,
	};
	return 0;
}

int
workers_decode_result(json_t *o, struct workers_result *ret, char *err, size_t errlen)
{
	int64_t attempt, lease, code, dur = 0, olen = 0;
	json_t *to;

	if (!json_is_object(o)) {
		sp_errf(err, errlen, "a JSON object is required");
		return SP_EINVAL;
	}
	if (get_int(o, "attempt", 1, UINT32_MAX, &attempt, true, err, errlen) < 0 ||
	    get_int(o, "lease", 0, INT64_MAX, &lease, true, err, errlen) < 0 ||
	    get_int(o, "exit_code", 0, 255, &code, true, err, errlen) < 0 ||
	    get_int(o, "duration_ms", 0, INT64_MAX, &dur, false, err, errlen) < 0 ||
	    get_int(o, "output_len", 0, INT64_MAX, &olen, false, err, errlen) < 0)
		return SP_EINVAL;
	to = json_object_get(o, "timed_out");
	if (to != NULL && !json_is_boolean(to)) {
		sp_errf(err, errlen, "timed_out: a boolean is required");
		return SP_EINVAL;
	}
	*ret = (struct workers_result){
		.attempt = (uint32_t)attempt, .lease = lease, .exit_code = (int)code,
		.duration_ms = (uint64_t)dur, .timed_out = json_is_true(to),
		.output_len = (uint64_t)olen,
	};
	return 0;
}

int
workers_decode_max(const char *path, unsigned *ret, char *err, size_t errlen)
{
	const char *p = strchr(path, '?'), *end;
	unsigned v = 0;
	bool seen = false;

	*ret = 0;
	if (p == NULL)
		return 0;
	for (p++; ; p = end + 1) {
		end = p + strcspn(p, "&#");
		/* Other parameters are not ours to refuse. */
		if (end - p >= 4 && strncmp(p, "max=", 4) == 0) {
			if (seen || end - p == 4 || p[4] == '0' || end - p > 4 + 2)
				goto bad;
			seen = true;
			for (v = 0, p += 4; p < end; p++) {
				if (*p < '0' || *p > '9')
					goto bad;
				v = v * 10 + (unsigned)(*p - '0');
			}
			if (v > WORKERS_BATCH_MAX)
				goto bad;
		}
		if (*end != '&')
			break;
	}
	*ret = v;
	return 0;
bad:
	sp_errf(err, errlen, "max: an integer in 1..%u is required", WORKERS_BATCH_MAX);
	return SP_EINVAL;
}

int
workers_decode_results(json_t *o, int64_t *ids, struct workers_result *res, size_t *ret_n,
		       char *err, size_t errlen)
{
	json_t *a = json_object_get(o, "results"), *e;
	char sub[200];
	size_t i;

	if (!json_is_array(a) || json_array_size(a) < 1 ||
	    json_array_size(a) > WORKERS_BATCH_MAX) {
		sp_errf(err, errlen, "results: an array of 1..%u results is required",
		     WORKERS_BATCH_MAX);
		return SP_EINVAL;
	}
	json_array_foreach(a, i, e) {
		if (get_int(e, "task", 1, INT64_MAX, &ids[i], true, sub, sizeof(sub)) < 0 ||
		    workers_decode_result(e, &res[i], sub, sizeof(sub)) < 0) {
			sp_errf(err, errlen, "results[%zu]: %s", i, sub);
			return SP_EINVAL;
		}
	}
	*ret_n = json_array_size(a);
	return 0;
}

static bool
env_name_ok(const char *s)
{
	if (*s == '\0' || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

int
workers_decode_exec(json_t *body, uint64_t def_ms, uint64_t max_ms, json_t **ret,
		    uint64_t *ret_timeout_ms, char *err, size_t errlen)
{
	json_t *cmd, *env, *v, *out;
	const char *key, *wd;
	int64_t t = (int64_t)def_ms;
	size_t i;

	if (!json_is_object(body)) {
		sp_errf(err, errlen, "a JSON object is required");
		return SP_EINVAL;
	}
	cmd = json_object_get(body, "cmd");
	if (!json_is_array(cmd) || json_array_size(cmd) == 0 ||
	    json_array_size(cmd) > WORKERS_ARGV_MAX) {
		sp_errf(err, errlen, "cmd: an array of 1..%d strings is required", WORKERS_ARGV_MAX);
		return SP_EINVAL;
	}
	json_array_foreach(cmd, i, v) {
		if (!json_is_string(v) || json_string_length(v) > 65536 ||
		    strlen(json_string_value(v)) != json_string_length(v) ||
		    (i == 0 && json_string_length(v) == 0)) {
			sp_errf(err, errlen, "cmd[%zu]: a string without NUL bytes is required", i);
			return SP_EINVAL;
		}
	}
	env = json_object_get(body, "env");
	if (env != NULL) {
		if (!json_is_object(env) || json_object_size(env) > WORKERS_ENV_MAX) {
			sp_errf(err, errlen, "env: an object of at most %d strings is required",
			     WORKERS_ENV_MAX);
			return SP_EINVAL;
		}
		json_object_foreach(env, key, v) {
			if (!env_name_ok(key) || !json_is_string(v) ||
			    strlen(json_string_value(v)) != json_string_length(v)) {
				sp_errf(err, errlen, "env: '%.64s' is not NAME=string", key);
				return SP_EINVAL;
			}
		}
	}
	wd = json_string_value(json_object_get(body, "workdir"));
	if (json_object_get(body, "workdir") != NULL &&
	    (wd == NULL || wd[0] != '/' || strlen(wd) > 1024)) {
		sp_errf(err, errlen, "workdir: an absolute path is required");
		return SP_EINVAL;
	}
	if (get_int(body, "timeout_ms", 1, (int64_t)max_ms, &t, false, err, errlen) < 0)
		return SP_EINVAL;
	out = json_pack("{s:O, s:I}", "cmd", cmd, "timeout_ms", (json_int_t)t);
	if (out == NULL)
		fatalx("json_pack failed");
	if (env != NULL)
		json_object_set(out, "env", env);
	if (wd != NULL)
		json_object_set_new(out, "workdir", json_string(wd));
	*ret = out;
	*ret_timeout_ms = (uint64_t)t;
	return 0;
}

/* --- files --- */

/* Write data to dir/name atomically with mode and owner (uid -1: leave). */
static int
file_put(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
	 uid_t uid, gid_t gid)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	const char *p = data;
	ssize_t n;
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		return -errno;
	while (len > 0) {
		if ((n = write(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (r == 0 && uid != (uid_t)-1 && fchown(fd, uid, gid) < 0)
		r = -errno;
	if (r == 0 && fchmod(fd, mode) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static int
file_get(const char *path, char *buf, size_t size, size_t *ret_len)
{
	ssize_t n;
	size_t len = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	while (len < size && (n = read(fd, buf + len, size - len)) > 0)
		len += (size_t)n;
	close(fd);
	*ret_len = len;
	return 0;
}

/* The reset secret: 32 random bytes kept in a 0600 file across restarts. */
static int
reset_secret(const char *path, uint8_t out[WORKERS_RESET_LEN])
{
	struct stat st;
	size_t len;
	char dir[PATH_MAX], *slash;
	int r;

	if (stat(path, &st) == 0) {
		if ((st.st_mode & 077) != 0)
			return -EPERM;
		r = file_get(path, (char *)out, WORKERS_RESET_LEN, &len);
		if (r < 0)
			return r;
		return len == WORKERS_RESET_LEN ? 0 : SP_ECONFIG;
	}
	if (errno != ENOENT)
		return -errno;
	if (getrandom(out, WORKERS_RESET_LEN, 0) != WORKERS_RESET_LEN)
		return -EIO;
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return -EINVAL;
	*slash = '\0';
	return file_put(dir, slash + 1, out, WORKERS_RESET_LEN, 0600, (uid_t)-1, (gid_t)-1);
}

/* Read "jti exp" lines of path and revoke the live ones; rewrite it pruned. */
static void
revoked_load(struct workers *w)
{
	FILE *f = fopen(w->revoked_path, "re");
	char jti[AUTH_JTI_LEN + 2], *out = NULL;
	long long exp;
	size_t outlen = 0;
	FILE *o;

	if (f == NULL)
		return;
	o = open_memstream(&out, &outlen);
	while (fscanf(f, "%33s %lld", jti, &exp) == 2)
		if (exp > (long long)time(NULL) && auth_revoke(w->auth, jti, exp) == 0)
			fprintf(o, "%s %lld\n", jti, exp);
	fclose(f);
	fclose(o);
	{
		char dir[PATH_MAX], *slash;

		snprintf(dir, sizeof(dir), "%s", w->revoked_path);
		slash = strrchr(dir, '/');
		*slash = '\0';
		file_put(dir, slash + 1, out, outlen, 0600, (uid_t)-1, (gid_t)-1);
	}
	free(out);
}

static void
revoked_append(struct workers *w, const char *jti, int64_t exp)
{
	FILE *f = fopen(w->revoked_path, "ae");

	if (f == NULL)
		return;
	fprintf(f, "%s %lld\n", jti, (long long)exp);
	fclose(f);
}

/*
 * The sandbox user's ids from "uid:gid". Only root can give files away; a
 * daemon that is not root leaves them its own (documented: its sandboxes
 * must then run as its uid to read the token).
 */
static bool
user_ids(const char *user, uid_t *uid, gid_t *gid)
{
	unsigned long u, g;
	char *end;

	if (user == NULL || *user < '0' || *user > '9' || geteuid() != 0)
		return false;
	u = strtoul(user, &end, 10);
	g = u;
	if (*end == ':') {
		g = strtoul(end + 1, &end, 10);
	}
	if (*end != '\0' || u == 0 || u > 4000000000ul || g > 4000000000ul)
		return false;
	*uid = (uid_t)u;
	*gid = (gid_t)g;
	return true;
}

/* Issue a token for id/tenant, write it to its file and remember its jti. */
static int
token_issue(struct workers *w, const char *id, const char *tenant, char **ret_token,
	    int64_t *ret_exp)
{
	static const char *const scope[] = { "worker" };
	char dir[PATH_MAX], jti[AUTH_JTI_LEN + 1], line[128];
	long ttl = (long)((*w->cfg)->worker_token_ttl_ms / 1000);
	int64_t exp = (int64_t)time(NULL) + ttl;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	char *tok;
	FILE *f;
	int r;

	r = auth_sign(w->auth, id, tenant, scope, 1, ttl, 0, &tok, jti);
	if (r < 0)
		return r;
	/* The jti first: a token we cannot revoke must not be handed out. */
	snprintf(dir, sizeof(dir), "%s/%s.jti", w->files_root, id);
	if ((f = fopen(dir, "ae")) == NULL) {
		r = -errno;
		free(tok);
		return r;
	}
	snprintf(line, sizeof(line), "%s %lld\n", jti, (long long)exp);
	fputs(line, f);
	if (fclose(f) != 0) {
		free(tok);
		return -EIO;
	}
	snprintf(dir, sizeof(dir), "%s/%s", w->files_root, id);
	user_ids(w->user, &uid, &gid);
	r = file_put(dir, "token", tok, strlen(tok), 0400, uid, gid);
	if (r < 0) {
		free(tok);
		return r;
	}
	if (ret_token != NULL)
		*ret_token = tok;
	else
		free(tok);
	if (ret_exp != NULL)
		*ret_exp = exp;
	return 0;
}

/* --- live state --- */

static struct wsb *
sb_find(struct workers *w, const char *id)
{
	for (struct wsb *s = w->sbs; s != NULL; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static struct wsb *
sb_get(struct workers *w, const struct auth_claims *c)
{
	struct wsb *s = sb_find(w, c->sub);

	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		snprintf(s->id, sizeof(s->id), "%s", c->sub);
		snprintf(s->tenant, sizeof(s->tenant), "%s", c->tenant);
		s->next = w->sbs;
		w->sbs = s;
	}
	s->last_seen_ms = clock_wall_ms();
	return s;
}

static void
poll_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Take p off its sandbox's list and close its timer; p is freed later. */
static void
poll_drop(struct wpoll *p)
{
	struct wsb *s = p->sb;

	for (struct wpoll **pp = &s->polls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			s->npolls--;
			break;
		}
	p->pending = NULL;
	uv_close((uv_handle_t *)&p->timer, poll_closed);
}

static void
poll_answer(struct wpoll *p, json_t *j)
{
	struct rpc_pending *pend = p->pending;

	poll_drop(p);
	rpc_pending_reply(pend, 200, j);
}

static void
poll_cancel(void *arg)
{
	poll_drop(arg);
}

/* No task: {"task":null}, or {"tasks":[]} for a batch poll. */
static json_t *
poll_none(unsigned max)
{
	return max > 0 ? json_pack("{s:[]}", "tasks") : json_pack("{s:n}", "task");
}

static void
poll_timeout(uv_timer_t *t)
{
	struct wpoll *p = t->data;

	poll_answer(p, poll_none(p->max));
}

static bool
sb_connected(const struct wsb *s)
{
	return s != NULL && s->registered && (s->npolls > 0 ||
	    clock_wall_ms() - s->last_seen_ms < WORKERS_STALE_MS);
}

static void
sb_free(struct workers *w, struct wsb *s)
{
	while (s->polls != NULL)
		poll_answer(s->polls, poll_none(s->polls->max));
	for (struct wsb **pp = &w->sbs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	free(s);
}

/* --- tasks --- */

static struct workers_exec *
exec_find(struct workers *w, int64_t task)
{
	for (struct workers_exec *e = w->execs; e != NULL; e = e->next)
		if (e->task == task)
			return e;
	return NULL;
}

static void
exec_unlink(struct workers_exec *e)
{
	for (struct workers_exec **pp = &e->w->execs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
}

#define EXEC_DUR_DAEMON	UINT64_MAX	/* no duration from the worker: measure it here */

/* The task ended: tell the control client and forget the exec. */
static void
exec_finish_dur(struct workers_exec *e, int status, const struct sp_exec_result *res,
		const char *detail, uint64_t dur)
{
	if (dur == EXEC_DUR_DAEMON)
		dur = uv_now(e->w->loop) - e->started_ms;
	exec_unlink(e);
	e->done(e->arg, status, res, dur, detail);
	free(e);
}

static void
exec_finish(struct workers_exec *e, int status, const struct sp_exec_result *res,
	    const char *detail)
{
	exec_finish_dur(e, status, res, detail, EXEC_DUR_DAEMON);
}

/* Finish every exec whose task the queue reports over (timeouts, cancels, lost workers). */
static void
exec_settle(struct workers *w)
{
	struct workers_exec *e, *next;
	struct queue_task t;

	for (e = w->execs; e != NULL; e = next) {
		next = e->next;
		if (queue_get(w->queue, e->task, &t) < 0)
			continue;
		if (!queue_state_terminal(t.state) && uv_now(w->loop) >= e->give_up_ms) {
			/* Never leased in time (its worker went away before taking it). */
			queue_task_done(&t);
			queue_cancel(w->queue, e->task);
			exec_finish(e, SP_ETIMEDOUT, NULL, "the sandbox's worker did not run the task");
			continue;
		}
		if (queue_state_terminal(t.state)) {
			struct sp_exec_result res = { .exit_code = t.exit_code };

			if (t.state == QUEUE_CANCELLED) {
				exec_finish(e, SP_ECANCELED, NULL, t.reason ? t.reason : "cancelled");
			} else if (t.state == QUEUE_FAILED && t.reason != NULL &&
				   strncmp(t.reason, "timed out", 9) == 0) {
				res.exit_code = 137;
				res.timed_out = true;
				exec_finish(e, 0, &res, NULL);
			} else if (t.state == QUEUE_FAILED && t.reason != NULL &&
				   strncmp(t.reason, "exit code", 9) != 0) {
				exec_finish(e, SP_EUNAVAIL, NULL, t.reason);
			} else {
				exec_finish(e, 0, &res, NULL);
			}
		}
		queue_task_done(&t);
	}
}

/*
 * Lease up to max tasks of s, its own (exec via worker) first, then its
 * swarm's, already marked running (the worker starts what it is handed).
 * *own_empty, once set, skips the first look for the rest of the round.
 */
static size_t
sb_lease(struct workers *w, struct wsb *s, size_t max, struct queue_grant *g, bool *own_empty)
{
	const char *swarm;
	size_t n = 0, m = 0;

	if (!*own_empty && queue_lease_run(w->queue, s->id, s->id, max, g, &n) < 0)
		*own_empty = true;
	if (n < max && w->swarm_of != NULL && (swarm = w->swarm_of(w->swarm_arg, s->id)) != NULL &&
	    queue_lease_run(w->queue, swarm, s->id, max - n, g + n, &m) < 0)
		m = 0;
	return n + m;
}

/*
 * Hand the next tasks of s to its waiting long-polls, as long as both exist:
 * each poll gets up to its max in one answer, and one commit covers them.
 */
static void
sb_deliver(struct workers *w, struct wsb *s)
{
	struct queue_grant g[WORKERS_BATCH_MAX];
	json_t *grants, *spec;
	struct wpoll *p;
	size_t n, i;
	bool own_empty = false;

	while ((p = s->polls) != NULL) {
		n = sb_lease(w, s, p->max > 0 ? p->max : 1, g, &own_empty);
		if (n == 0)
			return;
		grants = json_array();
		for (i = 0; i < n; i++) {
			spec = json_loadb(g[i].body, g[i].body_len, 0, NULL);
			json_array_append_new(grants, json_pack("{s:I, s:I, s:I, s:I, s:o}",
			    "task", (json_int_t)g[i].task, "attempt", (json_int_t)g[i].attempt,
			    "lease", (json_int_t)g[i].lease, "deadline_ms",
			    (json_int_t)g[i].deadline_ms, "spec", spec != NULL ? spec : json_object()));
			queue_grant_done(&g[i]);
		}
		/* Durable before the worker runs them: a crash must not run one twice unseen. */
		if (queue_flush(w->queue) < 0) {
			json_decref(grants);
			return;
		}
		if (p->max > 0) {
			poll_answer(p, json_pack("{s:o}", "tasks", grants));
		} else {
			poll_answer(p, json_incref(json_array_get(grants, 0)));
			json_decref(grants);
		}
	}
}

/* --- waiting for a worker --- */

static void
wait_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
wait_drop(struct workers_wait *wt)
{
	for (struct workers_wait **pp = &wt->w->waits; *pp != NULL; pp = &(*pp)->next)
		if (*pp == wt) {
			*pp = wt->next;
			break;
		}
	uv_close((uv_handle_t *)&wt->timer, wait_closed);
}

static void
wait_fire(struct workers_wait *wt, bool ready)
{
	void (*cb)(void *, bool) = wt->cb;
	void *arg = wt->arg;

	wait_drop(wt);
	cb(arg, ready);
}

static void
wait_timeout(uv_timer_t *t)
{
	wait_fire(t->data, false);
}

/* The worker of id registered: every waiter for it is answered. */
static void
wait_wake(struct workers *w, const char *id)
{
	struct workers_wait *wt, *next;

	for (wt = w->waits; wt != NULL; wt = next) {
		next = wt->next;
		if (strcmp(wt->id, id) == 0)
			wait_fire(wt, true);
	}
}

/* --- routes --- */

static void
r_register(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	struct sandbox_row row;

	if (store_sandbox_get(w->store, s->id, &row) < 0) {
		rpc_reply_error(resp, 403, "forbidden", "no such sandbox");
		return;
	}
	if (strcmp(row.state, "running") != 0 && strcmp(row.state, "starting") != 0) {
		store_sandbox_row_done(&row);
		rpc_reply_error(resp, 403, "forbidden", "the sandbox is not running");
		return;
	}
	store_sandbox_row_done(&row);
	if (!s->registered)
		s->registered_ms = clock_wall_ms();
	s->registered = true;
	wait_wake(w, s->id);
	rpc_reply_json(resp, 200, json_pack("{s:s, s:s, s:i, s:I, s:I}", "sandbox", s->id,
	    "tenant", s->tenant, "heartbeat_ms", WORKERS_HEARTBEAT_MS,
	    "poll_ms", (json_int_t)(*w->cfg)->worker_poll_ms,
	    "token_exp", (json_int_t)call->claims->exp));
}

static void
r_heartbeat(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	json_t *tasks = json_object_get(call->json, "tasks"), *t, *stale = json_array();
	enum queue_verdict v;
	size_t i;

	if (tasks != NULL && (!json_is_array(tasks) || json_array_size(tasks) > 64)) {
		json_decref(stale);
		rpc_reply_error(resp, 400, "bad_request", "tasks: an array of at most 64");
		return;
	}
	json_array_foreach(tasks, i, t) {
		int64_t id = 0, att = 0, lease = 0;

		if (get_int(t, "task", 1, INT64_MAX, &id, true, NULL, 0) < 0 ||
		    get_int(t, "attempt", 1, UINT32_MAX, &att, true, NULL, 0) < 0 ||
		    get_int(t, "lease", 0, INT64_MAX, &lease, true, NULL, 0) < 0)
			continue;
		if (queue_heartbeat(w->queue, id, (uint32_t)att, lease, s->id, &v, NULL) < 0 ||
		    v == QUEUE_STALE)
			json_array_append_new(stale, json_integer(id));
	}
	rpc_reply_json(resp, 200, json_pack("{s:b, s:o}", "ok", 1, "stale", stale));
}

static void
r_next(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	struct wpoll *p;
	unsigned max;
	char err[128];

	if (workers_decode_max(call->req->path, &max, err, sizeof(err)) < 0) {
		rpc_reply_error(resp, 400, "bad_request", err);
		return;
	}
	if (s->npolls >= WORKERS_MAX_POLLS) {
		rpc_reply_error(resp, 409, "conflict", "too many long-polls for this sandbox");
		return;
	}
	if (w->stopping) {
		rpc_reply_json(resp, 200, poll_none(max));
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->sb = s;
	p->max = max;
	p->pending = rpc_defer(call, poll_cancel, p);
	if (p->pending == NULL) {
		/* The transport cannot keep it open: answer at once. */
		free(p);
		rpc_reply_json(resp, 200, poll_none(max));
		return;
	}
	uv_timer_init(w->loop, &p->timer);
	p->timer.data = p;
	uv_timer_start(&p->timer, poll_timeout, (*w->cfg)->worker_poll_ms, 0);
	p->next = s->polls;
	s->polls = p;
	s->npolls++;
	sb_deliver(w, s);
}

/* Another sandbox's task is absent to s (a swarm's task: unless s holds it). */
static bool
task_visible(const struct queue_task *t, const char *sub)
{
	return strcmp(t->swarm, sub) == 0 || (t->worker != NULL && strcmp(t->worker, sub) == 0);
}

/* The task of the path and the verdict checks shared by output and result. */
static int
task_of(struct workers *w, const struct rpc_call *call, struct rpc_response *resp,
	struct queue_task *t)
{
	int64_t id = workers_task_id(call->param[0]);

	if (id < 0) {
		rpc_reply_error(resp, 400, "bad_request", "a task id is a positive integer");
		return -1;
	}
	if (queue_get(w->queue, id, t) < 0 || !task_visible(t, call->claims->sub)) {
		if (t->swarm != NULL)
			queue_task_done(t);
		rpc_reply_error(resp, 404, "not_found", "no such task");
		return -1;
	}
	return 0;
}

static void
r_output(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	struct workers_chunk c;
	struct workers_exec *e;
	struct queue_task t = { 0 };
	enum queue_verdict v = QUEUE_STALE;
	uint64_t have, skip;
	char err[256];

	if (workers_decode_chunk(call->json, &c, err, sizeof(err)) < 0) {
		rpc_reply_error(resp, 400, "bad_request", err);
		return;
	}
	if (task_of(w, call, resp, &t) < 0) {
		free(c.data);
		return;
	}
	have = t.output_len;
	if (!t.truncated && c.offset > have) {
		rpc_reply_json(resp, 409, json_pack("{s:{s:s, s:s}, s:I}", "error", "code", "gap",
		    "message", "output must continue at the stored length", "expected",
		    (json_int_t)have));
		goto out;
	}
	skip = t.truncated ? 0 : have - c.offset;
	if (!t.truncated && skip >= c.len) {
		/* Already stored (a resend after a lost answer or a restart). */
		rpc_reply_json(resp, 200, json_pack("{s:I}", "acked", (json_int_t)(c.offset + c.len)));
		goto out;
	}
	if (queue_output(w->queue, t.id, c.attempt, c.lease, s->id, c.data + skip, c.len - skip,
	    &v) < 0 || v == QUEUE_STALE) {
		rpc_reply_error(resp, 409, "stale", "the task is over or no longer yours");
		goto out;
	}
	if (queue_flush(w->queue) < 0) {
		rpc_reply_error(resp, 503, "unavailable", "the database failed");
		goto out;
	}
	e = exec_find(w, t.id);
	if (e != NULL && c.offset + c.len > e->forwarded) {
		uint64_t from = e->forwarded > c.offset ? e->forwarded - c.offset : 0;

		e->forwarded = c.offset + c.len;
		/* A client that went away is handled by its abort (workers_exec_cancel). */
		(void)e->out(e->arg, c.fd, c.data + from, c.len - from);
	}
	rpc_reply_json(resp, 200, json_pack("{s:I}", "acked", (json_int_t)(c.offset + c.len)));
out:
	queue_task_done(&t);
	free(c.data);
}

static void
r_result(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	struct workers_result res;
	struct queue_task t = { 0 };
	struct queue_outcome o;
	struct workers_exec *e;
	enum queue_verdict v;
	char err[256], reason[64];

	if (workers_decode_result(call->json, &res, err, sizeof(err)) < 0) {
		rpc_reply_error(resp, 400, "bad_request", err);
		return;
	}
	if (task_of(w, call, resp, &t) < 0)
		return;
	if (res.timed_out)
		snprintf(reason, sizeof(reason), "timed out after %llu ms",
			 (unsigned long long)res.duration_ms);
	else
		snprintf(reason, sizeof(reason), "exit code %d", res.exit_code);
	o = (struct queue_outcome){ .ok = res.exit_code == 0 && !res.timed_out,
		.exit_code = res.exit_code, .reason = reason };
	if (queue_result(w->queue, t.id, res.attempt, res.lease, s->id, &o, &v) < 0) {
		rpc_reply_error(resp, 503, "unavailable", "the database failed");
		goto out;
	}
	if (v == QUEUE_STALE) {
		rpc_reply_error(resp, 409, "stale", "the task is over or no longer yours");
		goto out;
	}
	if (queue_flush(w->queue) < 0) {
		rpc_reply_error(resp, 503, "unavailable", "the database failed");
		goto out;
	}
	if (v == QUEUE_ACCEPTED && (e = exec_find(w, t.id)) != NULL) {
		struct sp_exec_result r = { .exit_code = res.exit_code,
			.timed_out = res.timed_out };

		/* The worker measured the command itself. */
		exec_finish_dur(e, 0, &r, NULL, res.duration_ms);
	}
	rpc_reply_json(resp, 200, json_pack("{s:s}", "verdict", queue_verdict_name(v)));
out:
	queue_task_done(&t);
}

/*
 * Several results in one request: each entry is judged as by r_result and gets
 * its verdict ("accepted", "duplicate", "stale", or "not_found" for a task
 * this sandbox cannot see), and one commit makes them all durable before the
 * answer. A body that does not decode changes nothing (400).
 */
static void
r_results(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	struct workers_result res[WORKERS_BATCH_MAX];
	int64_t ids[WORKERS_BATCH_MAX];
	enum queue_verdict v[WORKERS_BATCH_MAX];
	bool seen[WORKERS_BATCH_MAX];
	struct queue_outcome o;
	struct workers_exec *e;
	json_t *out;
	char err[256], reason[64];
	size_t n, i;

	if (workers_decode_results(call->json, ids, res, &n, err, sizeof(err)) < 0) {
		rpc_reply_error(resp, 400, "bad_request", err);
		return;
	}
	for (i = 0; i < n; i++) {
		struct queue_task t;
		int r;

		if (res[i].timed_out)
			snprintf(reason, sizeof(reason), "timed out after %llu ms",
				 (unsigned long long)res[i].duration_ms);
		else
			snprintf(reason, sizeof(reason), "exit code %d", res[i].exit_code);
		o = (struct queue_outcome){ .ok = res[i].exit_code == 0 && !res[i].timed_out,
			.exit_code = res[i].exit_code, .reason = reason };
		/*
		 * Only the holder's lease is accepted or a duplicate, so the queue's
		 * verdict alone settles those; a task this sandbox cannot see is
		 * answered as absent, like the one-task route's 404.
		 */
		r = queue_result(w->queue, ids[i], res[i].attempt, res[i].lease, s->id, &o, &v[i]);
		if (r == SP_ENOTFOUND) {
			seen[i] = false;
			continue;
		}
		if (r < 0) {
			rpc_reply_error(resp, 503, "unavailable", "the database failed");
			return;
		}
		seen[i] = true;
		if (v[i] == QUEUE_STALE && queue_get(w->queue, ids[i], &t) == 0) {
			seen[i] = task_visible(&t, s->id);
			queue_task_done(&t);
		}
	}
	if (queue_flush(w->queue) < 0) {
		rpc_reply_error(resp, 503, "unavailable", "the database failed");
		return;
	}
	out = json_array();
	for (i = 0; i < n; i++) {
		if (seen[i] && v[i] == QUEUE_ACCEPTED && (e = exec_find(w, ids[i])) != NULL) {
			struct sp_exec_result r = { .exit_code = res[i].exit_code,
				.timed_out = res[i].timed_out };

			exec_finish_dur(e, 0, &r, NULL, res[i].duration_ms);
		}
		json_array_append_new(out, json_pack("{s:I, s:s}", "task", (json_int_t)ids[i],
		    "verdict", seen[i] ? queue_verdict_name(v[i]) : "not_found"));
	}
	rpc_reply_json(resp, 200, json_pack("{s:o}", "results", out));
}

static void
r_token(const struct rpc_call *call, struct rpc_response *resp, void *arg)
{
	struct workers *w = arg;
	struct wsb *s = sb_get(w, call->claims);
	char *tok;
	int64_t exp;
	int r;

	r = token_issue(w, s->id, call->claims->tenant, &tok, &exp);
	if (r < 0) {
		rpc_reply_error(resp, 503, "unavailable", "cannot issue a token");
		return;
	}
	rpc_reply_json(resp, 200, json_pack("{s:s, s:I}", "token", tok, "exp", (json_int_t)exp));
	free(tok);
}

/* --- servers --- */

static int
server_bind(struct workers *w, const char *addr, char *err, size_t errlen)
{
	const struct config *c = *w->cfg;
	char cert[PATH_MAX], key[PATH_MAX];
	struct quic_config qc;
	int r;

	if (w->nservers >= WORKERS_MAX_SERVERS) {
		sp_errf(err, errlen, "worker_listen: at most %d addresses", WORKERS_MAX_SERVERS);
		return SP_ECONFIG;
	}
	snprintf(cert, sizeof(cert), "%s/%s", w->tls_dir, CERT_SERVER_FILE);
	snprintf(key, sizeof(key), "%s/%s", w->tls_dir, CERT_SERVER_KEY_FILE);
	qc = (struct quic_config){
		.host = addr, .port = c->worker_port, .cert_file = cert, .key_file = key,
		.idle_timeout_ms = c->worker_idle_timeout_ms,
		.max_body_bytes = c->worker_max_body,
		.reset_secret = w->reset, .reset_secret_len = sizeof(w->reset),
	};
	r = quic_server_new(w->loop, &qc, w->rpc, &w->servers[w->nservers]);
	if (r < 0) {
		sp_errf(err, errlen, "worker channel on %s:%u: %s", addr, (unsigned)c->worker_port,
		     r == -EINVAL ? "not an address literal (or a wildcard)" : sp_strerror(r));
		return r;
	}
	w->server_addr[w->nservers++] = xstrdup(addr);
	return 0;
}

static int
certs_ensure(struct workers *w, char *err, size_t errlen)
{
	const char *ips[1 + WORKERS_MAX_ADVERTISED];
	unsigned done = 0;
	char cert[PATH_MAX], key[PATH_MAX];
	size_t nips = 0;
	int r;

	if (w->gateway[0] != '\0')
		ips[nips++] = w->gateway;
	for (size_t i = 0; i < w->nadvertised; i++)
		ips[nips++] = w->advertised[i];
	r = cert_ensure(&(struct cert_options){ .dir = w->tls_dir, .ips = ips, .nips = nips },
	    &done);
	if (r < 0) {
		sp_errf(err, errlen, "certificates in %s: %s", w->tls_dir, sp_strerror(r));
		return r;
	}
	if (done & CERT_DID_CA)
		log_info("worker channel: created a new CA in %s", w->tls_dir);
	if (done & CERT_DID_SERVER) {
		log_info("worker channel: issued a new server certificate");
		snprintf(cert, sizeof(cert), "%s/%s", w->tls_dir, CERT_SERVER_FILE);
		snprintf(key, sizeof(key), "%s/%s", w->tls_dir, CERT_SERVER_KEY_FILE);
		for (size_t i = 0; i < w->nservers; i++)
			if ((r = quic_server_reload(w->servers[i], cert, key)) < 0)
				log_warn("worker channel on %s: reload: %s", w->server_addr[i],
					 sp_strerror(r));
	}
	return 0;
}

static void
renew_tick(uv_timer_t *t)
{
	struct workers *w = t->data;
	char err[512];

	if (certs_ensure(w, err, sizeof(err)) < 0)
		log_warn("worker channel: %s", err);
}

static void
tick(uv_timer_t *t)
{
	struct workers *w = t->data;
	size_t n = 0;

	do {
		if (queue_sweep(w->queue, 256, &n) < 0)
			break;
	} while (n == 256);
	queue_flush(w->queue);
	exec_settle(w);
	/* Tasks the sweep put back (or whose backoff ended) go to waiting polls. */
	for (struct wsb *s = w->sbs; s != NULL; s = s->next)
		if (s->polls != NULL)
			sb_deliver(w, s);
}

/*
 * A provider's "endpoint" ("ADDRESS PORT"): where its sandboxes' workers
 * reach the channel (a forwarded or public address). The worker verifies the
 * certificate against ADDRESS, so a new one has the certificate reissued.
 */
static void
advertise(struct workers *w, const char *ep)
{
	char host[64], err[512];
	unsigned char ip[16];
	size_t n = strcspn(ep, " ");

	if (n == 0 || n >= sizeof(host))
		return;
	memcpy(host, ep, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1)
		return;
	for (size_t i = 0; i < w->nadvertised; i++)
		if (strcmp(w->advertised[i], host) == 0)
			return;
	if (w->nadvertised >= WORKERS_MAX_ADVERTISED) {
		log_warn("worker channel: more than %d advertised addresses; %s is not in the "
			 "certificate", WORKERS_MAX_ADVERTISED, host);
		return;
	}
	snprintf(w->advertised[w->nadvertised++], sizeof(w->advertised[0]), "%s", host);
	if (certs_ensure(w, err, sizeof(err)) < 0)
		log_err("worker channel: %s", err);
}

/* The endpoint file's line: the provider's "endpoint", else its gateway (or loopback). */
static void
endpoint_line(struct workers *w, json_t *d, char *ep, size_t sz)
{
	const char *adv = json_string_value(json_object_get(d, "endpoint"));
	const char *gw = json_string_value(json_object_get(d, "gateway"));

	if (adv != NULL && strchr(adv, ' ') != NULL && strchr(adv, '\n') == NULL &&
	    strlen(adv) + 2 <= sz)
		snprintf(ep, sz, "%s\n", adv);
	else
		snprintf(ep, sz, "%s %u\n", gw != NULL ? gw : "127.0.0.1",
			 (unsigned)(*w->cfg)->worker_port);
}

static void
hook_provider_ready(void *arg, struct sp_provider *p)
{
	struct workers *w = arg;
	json_t *d = json_loads(provider_describe(p), 0, NULL);
	const char *gw = json_string_value(json_object_get(d, "gateway"));
	const char *user = json_string_value(json_object_get(d, "user"));
	const char *adv = json_string_value(json_object_get(d, "endpoint"));
	char err[512];
	bool bound = false;

	if (adv != NULL)
		advertise(w, adv);

	if (user != NULL && strlen(user) < sizeof(w->user))
		snprintf(w->user, sizeof(w->user), "%s", user);
	if (gw != NULL && w->want_gateway && w->gateway[0] == '\0' && strlen(gw) < sizeof(w->gateway)) {
		snprintf(w->gateway, sizeof(w->gateway), "%s", gw);
		if (certs_ensure(w, err, sizeof(err)) < 0)
			log_err("worker channel: %s", err);
		for (size_t i = 0; i < w->nservers; i++)
			bound |= strcmp(w->server_addr[i], gw) == 0;
		if (!bound && server_bind(w, gw, err, sizeof(err)) < 0)
			log_err("worker channel: %s", err);
		else if (!bound)
			log_info("worker channel listening on %s:%u (the sandbox network's gateway)",
				 gw, (unsigned)(*w->cfg)->worker_port);
	}
	json_decref(d);
}

static void hook_released(void *arg, const char *id);

static int
hook_prepare(void *arg, struct sp_provider *p, const char *id, const char *tenant,
	     char **files_dir)
{
	struct workers *w = arg;
	char dir[PATH_MAX], src[PATH_MAX], ca[16384], ep[128];
	json_t *d = json_loads(provider_describe(p), 0, NULL);
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	size_t calen;
	int r;

	endpoint_line(w, d, ep, sizeof(ep));
	json_decref(d);
	user_ids(w->user, &uid, &gid);
	snprintf(dir, sizeof(dir), "%s/%s", w->files_root, id);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (uid != (uid_t)-1 && chown(dir, uid, gid) < 0)
		return -errno;
	snprintf(src, sizeof(src), "%s/%s", w->tls_dir, CERT_CA_FILE);
	if ((r = file_get(src, ca, sizeof(ca), &calen)) < 0)
		return r;
	if ((r = file_put(dir, "ca.pem", ca, calen, 0444, uid, gid)) < 0 ||
	    (r = file_put(dir, "endpoint", ep, strlen(ep), 0444, uid, gid)) < 0 ||
	    (r = token_issue(w, id, tenant, NULL, NULL)) < 0) {
		hook_released(w, id);
		return r;
	}
	*files_dir = xstrdup(dir);
	return 0;
}

static void
rm_dir(const char *dir)
{
	static const char *const names[] = { "token", "ca.pem", "endpoint", ".token.tmp",
		".ca.pem.tmp", ".endpoint.tmp" };
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path))
			continue;
		unlink(path);
	}
	rmdir(dir);
}

/*
 * Revoke every unexpired token issued for sandbox id (its "<id>.jti" list,
 * whose path goes into path). The list itself stays: the caller removes or
 * restarts it.
 */
static void
tokens_revoke(struct workers *w, const char *id, char *path, size_t len)
{
	char jti[AUTH_JTI_LEN + 2];
	long long exp;
	FILE *f;

	snprintf(path, len, "%s/%s.jti", w->files_root, id);
	if ((f = fopen(path, "re")) == NULL)
		return;
	while (fscanf(f, "%33s %lld", jti, &exp) == 2)
		if (exp > (long long)time(NULL) && auth_revoke(w->auth, jti, exp) == 0)
			revoked_append(w, jti, exp);
	fclose(f);
}

static void
hook_released(void *arg, const char *id)
{
	struct workers *w = arg;
	char path[PATH_MAX];
	struct workers_exec *e, *next;
	struct wsb *s;

	tokens_revoke(w, id, path, sizeof(path));
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", w->files_root, id);
	rm_dir(path);
	queue_cancel_swarm(w->queue, id, NULL);
	for (e = w->execs; e != NULL; e = next) {
		next = e->next;
		if (strcmp(e->sandbox, id) == 0)
			exec_finish(e, SP_ECANCELED, NULL, "the sandbox was destroyed");
	}
	if ((s = sb_find(w, id)) != NULL)
		sb_free(w, s);
}

/* The sandbox exited or vanished: what its worker held fails now, not at lease expiry. */
static void
hook_stopped(void *arg, const char *id)
{
	struct workers *w = arg;
	struct wsb *s;

	queue_worker_lost(w->queue, id, "the sandbox stopped", NULL);
	queue_flush(w->queue);
	exec_settle(w);
	if ((s = sb_find(w, id)) != NULL)
		s->registered = false;
}

void
workers_hooks(struct workers *w, struct sandbox_hooks *ret)
{
	*ret = (struct sandbox_hooks){ .provider_ready = hook_provider_ready,
		.prepare = hook_prepare, .stopped = hook_stopped, .released = hook_released,
		.arg = w };
}

/* Leases of tasks held by a sandbox that is still running survive a restart. */
static bool
holder_alive(void *arg, const char *worker)
{
	struct workers *w = arg;
	struct sandbox_row row;
	bool alive;

	if (store_sandbox_get(w->store, worker, &row) < 0)
		return false;
	alive = strcmp(row.state, "running") == 0 || strcmp(row.state, "starting") == 0;
	store_sandbox_row_done(&row);
	return alive;
}

int
workers_new(const struct workers_options *opt, struct workers **ret, char *err, size_t errlen)
{
	struct workers *w = xcalloc(1, sizeof(*w));
	const struct config *c = *opt->cfg;
	char path[PATH_MAX], *list, *save, *a;
	int r;

	w->loop = opt->loop;
	w->store = opt->store;
	w->queue = opt->queue;
	w->mgr = opt->mgr;
	w->cfg = opt->cfg;
	uv_timer_init(w->loop, &w->tick);
	uv_timer_init(w->loop, &w->renew);
	w->tick.data = w->renew.data = w;
	*ret = w;

	xasprintf(&w->tls_dir, "%s/worker-tls", c->state_dir);
	xasprintf(&w->files_root, "%s/workers", c->state_dir);
	xasprintf(&w->revoked_path, "%s/worker-revoked", c->state_dir);
	if ((mkdir(w->tls_dir, 0700) < 0 && errno != EEXIST) ||
	    (mkdir(w->files_root, 0700) < 0 && errno != EEXIST)) {
		r = -errno;
		sp_errf(err, errlen, "worker channel: cannot make its directories: %s", strerror(errno));
		return r;
	}
	/* Docker (root) resolves the bind source; no sandbox user needs to traverse this. */
	chmod(w->files_root, 0700);
	if ((r = certs_ensure(w, err, errlen)) < 0)
		return r;
	snprintf(path, sizeof(path), "%s/worker.key", c->state_dir);
	if ((r = auth_new(path, &w->auth)) < 0) {
		sp_errf(err, errlen, "worker token key %s: %s", path, sp_strerror(r));
		return r;
	}
	revoked_load(w);
	snprintf(path, sizeof(path), "%s/quic-reset.key", c->state_dir);
	if ((r = reset_secret(path, w->reset)) < 0) {
		sp_errf(err, errlen, "%s: %s", path, sp_strerror(r));
		return r;
	}
	w->rpc = rpc_new(w->auth);
	rpc_add(w->rpc, "POST", "/v1/worker/register", "worker", 0, r_register, w);
	rpc_add(w->rpc, "POST", "/v1/worker/heartbeat", "worker", 0, r_heartbeat, w);
	rpc_add(w->rpc, "GET", "/v1/worker/tasks/next", "worker", 0, r_next, w);
	rpc_add(w->rpc, "POST", "/v1/worker/tasks/{id}/output", "worker", 0, r_output, w);
	rpc_add(w->rpc, "POST", "/v1/worker/tasks/{id}/result", "worker", 0, r_result, w);
	rpc_add(w->rpc, "POST", "/v1/worker/results", "worker", 0, r_results, w);
	rpc_add(w->rpc, "POST", "/v1/worker/token", "worker", 0, r_token, w);

	if ((r = queue_recover(w->queue, holder_alive, w, NULL)) < 0) {
		sp_errf(err, errlen, "task queue: %s", queue_errmsg(w->queue));
		return r;
	}
	list = xstrdup(c->worker_listen);
	for (a = strtok_r(list, " \t,", &save); a != NULL; a = strtok_r(NULL, " \t,", &save)) {
		if (strcmp(a, "gateway") == 0) {
			w->want_gateway = true;
			continue;
		}
		if ((r = server_bind(w, a, err, errlen)) < 0) {
			free(list);
			return r;
		}
		log_info("worker channel listening on %s:%u", a,
			 (unsigned)quic_server_port(w->servers[w->nservers - 1]));
	}
	free(list);
	uv_timer_start(&w->tick, tick, WORKERS_TICK_MS, WORKERS_TICK_MS);
	uv_timer_start(&w->renew, renew_tick, WORKERS_RENEW_MS, WORKERS_RENEW_MS);
	return 0;
}

void
workers_stop(struct workers *w)
{
	w->stopping = true;
	while (w->waits != NULL)
		wait_fire(w->waits, false);
	/* The tasks stay held: their workers finish them and report after the restart. */
	while (w->execs != NULL)
		exec_finish(w->execs, SP_ECANCELED, NULL, "the daemon is shutting down");
}

static void
workers_free(struct workers *w)
{
	void (*cb)(void *) = w->close_cb;
	void *arg = w->close_arg;

	while (w->sbs != NULL) {
		struct wsb *s = w->sbs;

		w->sbs = s->next;
		free(s);
	}
	for (size_t i = 0; i < w->nservers; i++)
		free(w->server_addr[i]);
	rpc_free(w->rpc);
	auth_free(w->auth);
	free(w->tls_dir);
	free(w->files_root);
	free(w->revoked_path);
	explicit_bzero(w->reset, sizeof(w->reset));
	free(w);
	cb(arg);
}

static void
closed_one(struct workers *w)
{
	if (--w->closing == 0)
		workers_free(w);
}

static void
handle_closed(uv_handle_t *h)
{
	closed_one(h->data);
}

static void
server_closed(void *arg)
{
	closed_one(arg);
}

void
workers_close(struct workers *w, void (*cb)(void *arg), void *arg)
{
	w->stopping = true;
	w->close_cb = cb;
	w->close_arg = arg;
	while (w->waits != NULL)
		wait_fire(w->waits, false);
	while (w->execs != NULL)
		exec_finish(w->execs, SP_ECANCELED, NULL, "the daemon is shutting down");
	/* Pending long-polls are cancelled by their servers' close (poll_cancel). */
	w->closing = 2 + w->nservers;
	for (size_t i = 0; i < w->nservers; i++)
		quic_server_close(w->servers[i], server_closed, w);
	uv_close((uv_handle_t *)&w->tick, handle_closed);
	uv_close((uv_handle_t *)&w->renew, handle_closed);
}

json_t *
workers_sandbox_json(struct workers *w, const char *id)
{
	struct wsb *s = w != NULL ? sb_find(w, id) : NULL;

	return json_pack("{s:b, s:o, s:o}", "connected", sb_connected(s),
	    "registered_ms", s != NULL && s->registered ? json_integer(s->registered_ms) : json_null(),
	    "last_seen_ms", s != NULL ? json_integer(s->last_seen_ms) : json_null());
}

int
workers_exec(struct workers *w, const char *tenant, const char *id, json_t *body,
	     sandbox_output_cb out, sandbox_exec_cb done, void *arg,
	     struct workers_exec **ret, char *err, size_t errlen)
{
	const struct config *c = *w->cfg;
	struct sandbox_row row;
	struct workers_exec *e;
	struct queue_task_spec spec;
	struct wsb *s;
	uint64_t timeout;
	json_t *task;
	char *text;
	int64_t tid;
	int r;

	if (w->stopping) {
		sp_errf(err, errlen, "the daemon is shutting down");
		return SP_EUNAVAIL;
	}
	r = sandbox_get(w->mgr, tenant, id, &row);
	if (r < 0) {
		sp_errf(err, errlen, "no sandbox '%s'", id);
		return r;
	}
	r = strcmp(row.state, "running") == 0 ? 0 : SP_ECONFLICT;
	if (r < 0)
		sp_errf(err, errlen, "sandbox '%s' is %s, not running", id, row.state);
	store_sandbox_row_done(&row);
	if (r < 0)
		return r;
	s = sb_find(w, id);
	if (!sb_connected(s)) {
		sp_errf(err, errlen, "the worker of sandbox '%s' has not registered", id);
		return SP_EUNAVAIL;
	}
	r = workers_decode_exec(body, c->exec_timeout_ms, c->exec_timeout_max_ms, &task, &timeout,
				err, errlen);
	if (r < 0)
		return r;
	text = json_dumps(task, JSON_COMPACT);
	json_decref(task);
	if (text == NULL)
		fatalx("json_dumps failed");
	spec = (struct queue_task_spec){ .body = text, .body_len = strlen(text),
		.timeout_ms = timeout + WORKERS_TASK_GRACE_MS, .max_retries = 0 };
	r = queue_enqueue(w->queue, id, tenant, &spec, 1, &tid, err, errlen);
	free(text);
	if (r < 0)
		return r;
	e = xcalloc(1, sizeof(*e));
	e->w = w;
	e->task = tid;
	snprintf(e->sandbox, sizeof(e->sandbox), "%s", id);
	e->out = out;
	e->done = done;
	e->arg = arg;
	e->started_ms = uv_now(w->loop);
	/* The queue's deadline runs from the lease; this one bounds the wait for it too. */
	e->give_up_ms = e->started_ms + timeout + 2 * WORKERS_TASK_GRACE_MS;
	e->next = w->execs;
	w->execs = e;
	*ret = e;
	sb_deliver(w, s);
	return 0;
}

void
workers_exec_cancel(struct workers_exec *e)
{
	struct workers *w = e->w;

	/* The worker learns it from its next heartbeat or chunk (stale) and kills the command. */
	queue_cancel(w->queue, e->task);
	exec_finish(e, SP_ECANCELED, NULL, "cancelled");
}

int
workers_task_json(struct workers *w, const char *tenant, const char *id, int64_t task,
		  json_t **ret)
{
	struct queue_task t;
	json_t *out;
	int r;

	r = queue_get(w->queue, task, &t);
	if (r < 0)
		return r;
	if (strcmp(t.swarm, id) != 0 || strcmp(t.tenant, tenant) != 0) {
		queue_task_done(&t);
		return SP_ENOTFOUND;
	}
	out = json_stringn(t.output != NULL ? t.output : "", t.output != NULL ? t.output_len : 0);
	if (out == NULL) {
		/* Not UTF-8: send the bytes as base64, as the exec stream does. */
		char *b64 = xmalloc(4 * ((t.output_len + 2) / 3) + 1);

		EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)t.output,
				(int)t.output_len);
		out = json_pack("{s:s}", "b64", b64);
		free(b64);
	}
	*ret = json_pack("{s:I, s:s, s:s, s:i, s:o, s:b, s:o, s:I}", "id", (json_int_t)t.id,
	    "sandbox", t.swarm, "state", queue_state_name(t.state), "exit_code", t.exit_code,
	    "output", out, "truncated", t.truncated,
	    "reason", t.reason ? json_string(t.reason) : json_null(),
	    "attempt", (json_int_t)t.attempt);
	queue_task_done(&t);
	if (*ret == NULL)
		fatalx("json_pack failed");
	return 0;
}

struct workers_wait *
workers_wait_ready(struct workers *w, const char *id, uint64_t timeout_ms,
		   void (*cb)(void *arg, bool ready), void *arg)
{
	struct workers_wait *wt;

	if (sb_connected(sb_find(w, id)) || w->stopping) {
		cb(arg, !w->stopping);
		return NULL;
	}
	wt = xcalloc(1, sizeof(*wt));
	wt->w = w;
	snprintf(wt->id, sizeof(wt->id), "%s", id);
	wt->cb = cb;
	wt->arg = arg;
	uv_timer_init(w->loop, &wt->timer);
	wt->timer.data = wt;
	uv_timer_start(&wt->timer, wait_timeout, timeout_ms, 0);
	wt->next = w->waits;
	w->waits = wt;
	return wt;
}

void
workers_wait_cancel(struct workers_wait *wt)
{
	wait_drop(wt);
}

json_t *
workers_endpoints_json(struct workers *w)
{
	json_t *a = json_array();
	char buf[96];

	for (size_t i = 0; i < w->nservers; i++) {
		snprintf(buf, sizeof(buf), "%s:%u", w->server_addr[i],
			 (unsigned)quic_server_port(w->servers[i]));
		json_array_append_new(a, json_string(buf));
	}
	return a;
}

json_t *
workers_stats_json(struct workers *w)
{
	const struct rpc_stats *r = rpc_stats(w->rpc);
	struct quic_stats q = { 0 };
	size_t connected = 0;

	for (struct wsb *s = w->sbs; s != NULL; s = s->next)
		connected += sb_connected(s);
	for (size_t i = 0; i < w->nservers; i++) {
		const struct quic_stats *x = quic_server_stats(w->servers[i]);

		q.datagrams_in += x->datagrams_in;
		q.datagrams_out += x->datagrams_out;
		q.garbage += x->garbage;
		q.stateless_resets += x->stateless_resets;
		q.conns_accepted += x->conns_accepted;
		q.conns_active += x->conns_active;
		q.conns_refused += x->conns_refused;
		q.conns_failed += x->conns_failed;
		q.requests += x->requests;
		q.refused_requests += x->refused_requests;
	}
	return json_pack("{s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I,"
	    " s:I, s:I, s:I, s:I, s:I, s:I}}",
	    "workers_connected", (json_int_t)connected,
	    "rpc", "requests", (json_int_t)r->requests, "unauthorized", (json_int_t)r->unauthorized,
	    "forbidden", (json_int_t)r->forbidden, "not_found", (json_int_t)r->not_found,
	    "bad_request", (json_int_t)r->bad_request, "deferred", (json_int_t)r->deferred,
	    "status_5xx", (json_int_t)r->status_5xx,
	    "quic", "datagrams_in", (json_int_t)q.datagrams_in,
	    "datagrams_out", (json_int_t)q.datagrams_out, "garbage", (json_int_t)q.garbage,
	    "stateless_resets", (json_int_t)q.stateless_resets,
	    "conns_accepted", (json_int_t)q.conns_accepted,
	    "conns_active", (json_int_t)q.conns_active,
	    "conns_refused", (json_int_t)q.conns_refused,
	    "conns_failed", (json_int_t)q.conns_failed, "requests", (json_int_t)q.requests,
	    "refused_requests", (json_int_t)q.refused_requests);
}

struct rpc *
workers_router(struct workers *w)
{
	return w->rpc;
}

void
workers_set_swarm_of(struct workers *w, const char *(*swarm_of)(void *arg, const char *sandbox),
		     void *arg)
{
	w->swarm_of = swarm_of;
	w->swarm_arg = arg;
}

void
workers_kick(struct workers *w, const char *swarm)
{
	const char *sw;

	for (struct wsb *s = w->sbs; s != NULL; s = s->next) {
		if (s->polls == NULL || w->swarm_of == NULL)
			continue;
		sw = w->swarm_of(w->swarm_arg, s->id);
		if (sw != NULL && strcmp(sw, swarm) == 0)
			sb_deliver(w, s);
	}
}

bool
workers_connected(struct workers *w, const char *id)
{
	struct wsb *s = sb_find(w, id);

	return s != NULL && s->registered;
}

int
workers_rebind(struct workers *w, const char *id, const char *tenant)
{
	char path[PATH_MAX];
	struct wsb *s;
	FILE *f;

	/* Every token issued so far names the old tenant: revoke them all first. */
	tokens_revoke(w, id, path, sizeof(path));
	if ((f = fopen(path, "we")) == NULL)
		return -errno;
	fclose(f);
	if ((s = sb_find(w, id)) != NULL)
		snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
	return token_issue(w, id, tenant, NULL, NULL);
}

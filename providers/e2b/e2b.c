/*
 * The E2B provider: cloud sandboxes through E2B's control-plane REST API,
 * with commands and files through each sandbox's envd. This file owns the
 * configuration, the API key (read once, never logged, never in a detail),
 * the per-sandbox records (access tokens) and the request machinery that
 * retries within a budget. It never blocks the loop and never calls back
 * inside an operation's call.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "e2b.h"

#define E2B_KEY_MAX	4096

static const struct sp_directive e2b_directives[] = {
	{ "e2b.api_url", SP_DIR_STRING, "https://api.e2b.app", "E2B control-plane base URL" },
	{ "e2b.domain", SP_DIR_STRING, "e2b.app", "domain of sandbox hosts when the API names none" },
	{ "e2b.envd_url", SP_DIR_STRING, "https://{port}-{sandbox}.{domain}",
	  "envd base URL; {port} {sandbox} {domain} are replaced. A fixed URL "
	  "(http://127.0.0.1:N) routes by the E2b-Sandbox-Id/-Port headers alone" },
	{ "e2b.api_key_file", SP_DIR_PATH, NULL,
	  "file holding the API key (default: $CREDENTIALS_DIRECTORY/e2b-api-key)" },
	{ "e2b.template", SP_DIR_STRING, "base", "template of new sandboxes" },
	{ "e2b.timeout", SP_DIR_INT, "300", "sandbox lifetime in seconds, refreshed while in use" },
	{ "e2b.request_timeout", SP_DIR_INT, "60000", "control-plane request limit, ms" },
	{ "e2b.max_retries", SP_DIR_INT, "5", "retries of a failed request (429, 5xx, transport)" },
	{ "e2b.retry_budget", SP_DIR_INT, "60000", "no retry starts later than this, ms" },
	{ "e2b.retry_base", SP_DIR_INT, "500", "first backoff, ms (doubles, with jitter)" },
	{ "e2b.retry_cap", SP_DIR_INT, "30000", "largest backoff, ms" },
	{ "e2b.keepalive", SP_DIR_INT, "30", "envd keepalive interval of command streams, s" },
	{ "e2b.files_path", SP_DIR_STRING, "/home/user/.sandpit",
	  "where a sandbox's files and main command live inside it" },
	{ "e2b.worker_endpoint", SP_DIR_STRING, NULL,
	  "where the worker in an E2B sandbox reaches the daemon's worker channel: "
	  "\"ADDRESS PORT\" (or ADDRESS:PORT, [IPv6]:PORT), an IP literal the channel "
	  "listens on or is forwarded to; its certificate names ADDRESS. Unset: the "
	  "core's default (loopback), which only an emulator on this host can reach" },
	{ "e2b.price_vcpu_second", SP_DIR_STRING, "0.000014", "USD per vCPU-second" },
	{ "e2b.price_gib_second", SP_DIR_STRING, "0.0000045", "USD per GiB-second of memory" },
	{ NULL, 0, NULL, NULL },
};

static struct e2b *
e2b_of(struct sp_provider *p)
{
	return p->priv;
}

uint32_t
e2b_rand(struct e2b *e)
{
	/* xorshift64: jitter needs spread, not secrecy. */
	e->seed ^= e->seed << 13;
	e->seed ^= e->seed >> 7;
	e->seed ^= e->seed << 17;
	return (uint32_t)(e->seed >> 16);
}

static char *
e2b_urlenc(const char *s)
{
	char *o = e2b_xmalloc(strlen(s) * 3 + 1), *d = o;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
			*d++ = (char)c;
		else
			d += sprintf(d, "%%%02X", c);
	}
	*d = '\0';
	return o;
}

/* ---------------------------------------------------------------- headers */

void
e2b_headers_free(char **h)
{
	if (h == NULL)
		return;
	for (char **p = h; *p != NULL; p++)
		free(*p);
	free(h);
}

char **
e2b_api_headers(struct e2b *e, bool json)
{
	char **h = e2b_xcalloc(4, sizeof(*h));
	int n = 0;

	h[n++] = e2b_xstrdup(e->key_header);
	h[n++] = e2b_xstrdup("User-Agent: sandpitd/" SANDPIT_VERSION);
	if (json)
		h[n++] = e2b_xstrdup("Content-Type: application/json");
	return h;
}

char **
e2b_envd_headers(struct e2b *e, const struct e2b_sbx *sb, const char *const *extra)
{
	size_t n = 0, i = 0;
	char **h;

	while (extra != NULL && extra[n] != NULL)
		n++;
	h = e2b_xcalloc(n + 5, sizeof(*h));
	h[i++] = e2b_xasprintf("E2b-Sandbox-Id: %s", sb->id);
	h[i++] = e2b_xasprintf("E2b-Sandbox-Port: %d", E2B_ENVD_PORT);
	if (sb->token != NULL)
		h[i++] = e2b_xasprintf("X-Access-Token: %s", sb->token);
	h[i++] = e2b_xstrdup("User-Agent: sandpitd/" SANDPIT_VERSION);
	for (size_t k = 0; k < n; k++)
		h[i++] = e2b_xstrdup(extra[k]);
	return h;
}

char *
e2b_envd_url(struct e2b *e, const struct e2b_sbx *sb, const char *path)
{
	const char *t = e->envd_url, *dom = sb->domain != NULL ? sb->domain : e->domain;
	/* Every template byte may at worst become the longest substitution. */
	size_t cap = (strlen(t) + 1) * (strlen(sb->id) + strlen(dom) + 8) + strlen(path) + 1,
	    n = 0;
	char *o = e2b_xmalloc(cap);

	while (*t != '\0') {
		const char *sub = NULL;
		char port[8];

		if (strncmp(t, "{port}", 6) == 0) {
			snprintf(port, sizeof(port), "%d", E2B_ENVD_PORT);
			sub = port;
			t += 6;
		} else if (strncmp(t, "{sandbox}", 9) == 0) {
			sub = sb->id;
			t += 9;
		} else if (strncmp(t, "{domain}", 8) == 0) {
			sub = dom;
			t += 8;
		}
		if (sub != NULL) {
			memcpy(o + n, sub, strlen(sub));
			n += strlen(sub);
		} else {
			o[n++] = *t++;
		}
	}
	while (n > 0 && o[n - 1] == '/')
		n--;
	memcpy(o + n, path, strlen(path) + 1);
	return o;
}

/* ---------------------------------------------------------------- calls */

/* Forget the configuration and the key (before a re-init, and at close). */
static void
e2b_conf_free(struct e2b *e)
{
	if (e->api_key != NULL) {
		explicit_bzero(e->api_key, strlen(e->api_key));
		explicit_bzero(e->key_header, strlen(e->key_header));
	}
	free(e->api_key);
	free(e->key_header);
	free(e->api_url);
	free(e->domain);
	free(e->envd_url);
	free(e->template_id);
	free(e->files_path);
	free(e->worker_endpoint);
	free(e->describe);
	e->api_key = e->key_header = e->api_url = e->domain = e->envd_url = NULL;
	e->template_id = e->files_path = e->worker_endpoint = e->describe = NULL;
}

void
e2b_pending_done(struct e2b *e)
{
	if (!e->closing || e->pending != 0 || e->handles_open != 0 || e->close_fired)
		return;
	e->close_fired = true;
	e2b_conf_free(e);
	while (!TAILQ_EMPTY(&e->sbxs))
		e2b_sbx_remove(e, TAILQ_FIRST(&e->sbxs)->id);
	if (e->close_cb != NULL)
		e->close_cb(e->close_arg, 0, NULL);
}

static void
call_closed(uv_handle_t *h)
{
	struct e2b_call *c = h->data;
	struct e2b *e = c->e;

	free(c);
	e->pending--;
	e2b_pending_done(e);
}

struct e2b_call *
e2b_call_new(struct e2b *e, const char *method, const char *url, char **headers,
	     const char *body, size_t body_len, e2b_call_cb cb, void *arg)
{
	struct e2b_call *c = e2b_xcalloc(1, sizeof(*c));

	c->e = e;
	c->method = e2b_xstrdup(method);
	c->url = e2b_xstrdup(url);
	c->headers = headers;
	if (body != NULL) {
		c->body = e2b_xmalloc(body_len + 1);
		memcpy(c->body, body, body_len);
		c->body[body_len] = '\0';
		c->body_len = body_len;
	}
	c->timeout_ms = e->request_timeout_ms;
	c->retry = true;
	c->cb = cb;
	c->arg = arg;
	uv_timer_init(e->host->loop, &c->timer);
	c->timer.data = c;
	e->pending++;
	TAILQ_INSERT_TAIL(&e->calls, c, entry);
	return c;
}

static void
call_release(struct e2b_call *c)
{
	TAILQ_REMOVE(&c->e->calls, c, entry);
	free(c->method);
	free(c->url);
	e2b_headers_free(c->headers);
	free(c->body);
	uv_close((uv_handle_t *)&c->timer, call_closed);
}

void
e2b_call_finish(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	if (c->finished)
		return;
	c->finished = true;
	c->in_check = false;
	c->cb(c, status, resp);
	call_release(c);
}

static void call_http_done(void *arg, int status, const struct sp_http_resp *resp);

static int
call_send(struct e2b_call *c)
{
	struct sp_http_opts o = {
		.method = c->method,
		.url = c->url,
		.headers = (const char *const *)c->headers,
		.body = c->body,
		.body_len = c->body_len,
		.timeout_ms = c->timeout_ms,
		.connect_timeout_ms = 10000,
		.max_body = c->max_body != 0 ? c->max_body : 4u << 20,
		.fresh_connect = c->fresh,
	};

	return sp_http_request(c->e->host->http, &o, NULL, call_http_done, c, &c->http);
}

void
e2b_call_resend(struct e2b_call *c)
{
	int r;

	c->in_check = false;
	if (c->canceled) {
		e2b_call_finish(c, SP_ECANCELED, NULL);
		return;
	}
	if ((r = call_send(c)) < 0)
		e2b_call_finish(c, r, NULL);
}

static void
call_timer(uv_timer_t *t)
{
	struct e2b_call *c = t->data;
	bool check = c->recheck != NULL && c->in_check;

	c->waiting = false;
	if (c->canceled) {
		e2b_call_finish(c, SP_ECANCELED, NULL);
		return;
	}
	if (check)
		c->recheck(c);
	else
		e2b_call_resend(c);
}

static void
call_http_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct e2b_call *c = arg;
	enum e2b_retry_class cls;
	int64_t d;

	c->http = NULL;
	if (c->canceled || c->e->closing) {
		e2b_call_finish(c, SP_ECANCELED, resp);
		return;
	}
	cls = e2b_retry_classify(status, resp->status, resp->body);
	/*
	 * SP_EUNAVAIL is a refused connection, but also a send cut by a reset
	 * after the request went out: then the server may have acted.
	 */
	if (cls == E2B_RETRY_YES && status == SP_EUNAVAIL && resp->request_sent)
		cls = E2B_RETRY_AMBIGUOUS;
	if (c->retry && cls != E2B_RETRY_NO) {
		d = e2b_retry_delay(&c->e->retry, c->attempt + 1,
				    uv_now(c->e->host->loop) - c->started_ms,
				    resp->status == 429 || resp->status == 503 ? resp->retry_after : NULL,
				    e2b_rand(c->e));
		if (d >= 0) {
			if (status < 0)
				snprintf(c->last, sizeof(c->last), "%s", sp_strerror(status));
			else
				snprintf(c->last, sizeof(c->last), "HTTP %ld", resp->status);
			c->attempt++;
			c->in_check = cls == E2B_RETRY_AMBIGUOUS && c->recheck != NULL;
			c->waiting = true;
			uv_timer_start(&c->timer, call_timer, (uint64_t)d, 0);
			return;
		}
	}
	e2b_call_finish(c, status, resp);
}

int
e2b_call_start(struct e2b_call *c)
{
	int r;

	c->started_ms = uv_now(c->e->host->loop);
	if (c->e->closing)
		r = SP_ECANCELED;
	else
		r = call_send(c);
	if (r < 0) {
		c->finished = true;
		call_release(c);
	}
	return r;
}

static void
call_cancel(struct e2b_call *c)
{
	c->canceled = true;
	if (c->http != NULL)
		sp_http_cancel(c->http);
	else if (c->waiting)
		uv_timer_start(&c->timer, call_timer, 0, 0);
	/* in a recheck: the check's own call is canceled and finishes this one */
}

/* A detail for a failed call: transport error, or the HTTP error mapped. */
static int
call_error(struct e2b_call *c, int status, const struct sp_http_resp *resp, const char *what,
	   char *detail, size_t sz)
{
	int r;
	size_t n;

	if (status < 0) {
		snprintf(detail, sz, "%s: %s", what, sp_strerror(status));
		r = status;
	} else {
		r = e2b_http_error(resp->status, resp->body, resp->body_len, what, detail, sz);
	}
	if (c->attempt > 0 && status != SP_ECANCELED) {
		n = strlen(detail);
		snprintf(detail + n, sz - n, " (after %u retries)", c->attempt);
	}
	return r;
}

/* ---------------------------------------------------------------- records */

struct e2b_sbx *
e2b_sbx_find(struct e2b *e, const char *id)
{
	struct e2b_sbx *sb;

	TAILQ_FOREACH(sb, &e->sbxs, entry)
		if (strcmp(sb->id, id) == 0)
			return sb;
	return NULL;
}

struct e2b_sbx *
e2b_sbx_add(struct e2b *e, const char *id, const char *token, const char *domain)
{
	struct e2b_sbx *sb = e2b_sbx_find(e, id);

	if (sb == NULL) {
		/* Bounded: the oldest idle record goes; it is refetched when needed. */
		if (e->nsbx >= E2B_MAX_SANDBOXES) {
			struct e2b_sbx *old;

			TAILQ_FOREACH(old, &e->sbxs, entry)
				if (old->busy == 0)
					break;
			if (old != NULL)
				e2b_sbx_remove(e, old->id);
		}
		sb = e2b_xcalloc(1, sizeof(*sb));
		sb->id = e2b_xstrdup(id);
		/* Found, not made by this create: its main command already runs. */
		sb->booted = true;
		TAILQ_INSERT_TAIL(&e->sbxs, sb, entry);
		e->nsbx++;
	}
	free(sb->token);
	free(sb->domain);
	sb->token = token != NULL ? e2b_xstrdup(token) : NULL;
	sb->domain = domain != NULL ? e2b_xstrdup(domain) : NULL;
	sb->refreshed_ms = uv_now(e->host->loop);
	return sb;
}

void
e2b_sbx_remove(struct e2b *e, const char *id)
{
	struct e2b_sbx *sb = e2b_sbx_find(e, id);

	if (sb == NULL)
		return;
	TAILQ_REMOVE(&e->sbxs, sb, entry);
	e->nsbx--;
	if (sb->token != NULL)
		explicit_bzero(sb->token, strlen(sb->token));
	free(sb->token);
	free(sb->domain);
	free(sb->id);
	e2b_headers_free(sb->cmd);
	free(sb->files_dir);
	free(sb);
}

static bool
valid_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 64)
		return false;
	for (; *id != '\0'; id++)
		if (!islower((unsigned char)*id) && !isdigit((unsigned char)*id) && *id != '-')
			return false;
	return true;
}

struct fetch_ctx {
	e2b_sbx_cb cb;
	void *arg;
};

/* Take sandboxID, envdAccessToken and domain from a Sandbox or SandboxDetail. */
static int
sbx_from_json(struct e2b *e, const char *body, size_t len, struct e2b_sbx **ret,
	      char *detail, size_t sz)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	const char *id, *tok, *dom;

	id = json_string_value(json_object_get(root, "sandboxID"));
	tok = json_string_value(json_object_get(root, "envdAccessToken"));
	dom = json_string_value(json_object_get(root, "domain"));
	if (!json_is_object(root) || id == NULL || !valid_id(id) ||
	    json_string_value(json_object_get(root, "envdVersion")) == NULL) {
		snprintf(detail, sz, "E2B answered a sandbox without a valid sandboxID or envdVersion");
		json_decref(root);
		return SP_EPROTO;
	}
	if (tok != NULL && (strlen(tok) > 512 || strpbrk(tok, "\r\n") != NULL)) {
		snprintf(detail, sz, "E2B answered an unusable envdAccessToken");
		json_decref(root);
		return SP_EPROTO;
	}
	if (dom != NULL && (strlen(dom) > 253 || strpbrk(dom, "/\r\n {}") != NULL))
		dom = NULL;
	*ret = e2b_sbx_add(e, id, tok, dom);
	json_decref(root);
	return 0;
}

static void
fetch_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct fetch_ctx *f = c->arg;
	struct e2b_sbx *sb = NULL;
	char detail[320];
	int r;

	if (status < 0 || resp->status != 200)
		r = call_error(c, status, resp, "get sandbox", detail, sizeof(detail));
	else
		r = sbx_from_json(c->e, resp->body, resp->body_len, &sb, detail, sizeof(detail));
	f->cb(f->arg, r, sb, r < 0 ? detail : NULL);
	free(f);
}

int
e2b_sbx_fetch(struct e2b *e, const char *id, e2b_sbx_cb cb, void *arg)
{
	struct fetch_ctx *f;
	struct e2b_call *c;
	char *url;
	int r;

	if (!valid_id(id))
		return SP_EINVAL;
	f = e2b_xcalloc(1, sizeof(*f));
	f->cb = cb;
	f->arg = arg;
	url = e2b_xasprintf("%s/sandboxes/%s", e->api_url, id);
	c = e2b_call_new(e, "GET", url, e2b_api_headers(e, false), NULL, 0, fetch_done, f);
	free(url);
	if ((r = e2b_call_start(c)) < 0)
		free(f);
	return r;
}

static void
refresh_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	/* Best effort: a failure shows up as the sandbox expiring, which
	 * status and reconcile report; there is no one to tell here. */
}

void
e2b_sbx_refresh(struct e2b *e, struct e2b_sbx *sb)
{
	struct e2b_call *c;
	char *url, *body;

	if (e->closing)
		return;
	sb->refreshed_ms = uv_now(e->host->loop);
	url = e2b_xasprintf("%s/sandboxes/%s/timeout", e->api_url, sb->id);
	body = e2b_xasprintf("{\"timeout\":%lld}", (long long)e->timeout_s);
	c = e2b_call_new(e, "POST", url, e2b_api_headers(e, true), body, strlen(body),
			 refresh_done, NULL);
	(void)e2b_call_start(c);
	free(url);
	free(body);
}

static void
e2b_tick(uv_timer_t *t)
{
	struct e2b *e = t->data;
	struct e2b_sbx *sb;
	uint64_t now = uv_now(e->host->loop), every = (uint64_t)e->timeout_s * 1000 / 3;

	TAILQ_FOREACH(sb, &e->sbxs, entry)
		if (sb->busy > 0 && now - sb->refreshed_ms >= every)
			e2b_sbx_refresh(e, sb);
}

/* ---------------------------------------------------------------- init */

static const char *
conf(struct e2b *e, const char *name)
{
	return e->host->conf(e->host, name);
}

static int64_t
conf_int(struct e2b *e, const char *name, int64_t def, int64_t lo, int64_t hi)
{
	const char *v = conf(e, name);
	long long n;

	if (v == NULL)
		return def;
	n = strtoll(v, NULL, 10);
	return n < lo ? lo : n > hi ? hi : n;
}

static char *
conf_str(struct e2b *e, const char *name, const char *def)
{
	const char *v = conf(e, name);

	return e2b_xstrdup(v != NULL ? v : def);
}

/*
 * Read the API key. A small file on a local (usually ramfs) credentials
 * directory, read once before the provider serves anything: a blocking read
 * here costs microseconds, so it does not go through the threadpool.
 */
static int
read_key(struct e2b *e, char *detail, size_t sz)
{
	const char *path = conf(e, "e2b.api_key_file"), *cred;
	char pbuf[4096], buf[E2B_KEY_MAX + 1];
	ssize_t n;
	size_t len;
	int fd;

	if (path == NULL) {
		if ((cred = getenv("CREDENTIALS_DIRECTORY")) == NULL) {
			snprintf(detail, sz, "no API key: set e2b.api_key_file or pass the systemd "
				 "credential e2b-api-key");
			return SP_ECONFIG;
		}
		snprintf(pbuf, sizeof(pbuf), "%s/e2b-api-key", cred);
		path = pbuf;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		snprintf(detail, sz, "API key file %.200s: %s", path, strerror(errno));
		return SP_ECONFIG;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0) {
		snprintf(detail, sz, "API key file %.200s: %s", path, strerror(errno));
		return SP_ECONFIG;
	}
	len = (size_t)n;
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		len--;
	buf[len] = '\0';
	if (len == 0 || len > E2B_KEY_MAX - 1) {
		snprintf(detail, sz, "API key file %.200s: %s", path, len == 0 ? "empty" : "too long");
		explicit_bzero(buf, sizeof(buf));
		return SP_ECONFIG;
	}
	for (size_t i = 0; i < len; i++)
		if (!isgraph((unsigned char)buf[i])) {
			snprintf(detail, sz, "API key file %.200s: the key holds spaces or control "
				 "characters", path);
			explicit_bzero(buf, sizeof(buf));
			return SP_ECONFIG;
		}
	e->api_key = e2b_xstrdup(buf);
	e->key_header = e2b_xasprintf("X-API-Key: %s", buf);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

struct init_ctx {
	sp_done_cb cb;
	void *arg;
	int status;			/* a failure reported through e->defer */
	char detail[400];
};

static void
init_probe_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct init_ctx *ic = c->arg;
	char detail[320];

	c->e->init = NULL;
	if (status == 0 && (resp->status == 401 || resp->status == 403)) {
		call_error(c, status, resp, "E2B API key check", detail, sizeof(detail));
		ic->cb(ic->arg, SP_EPROVIDER, detail);
	} else if (status == SP_ECANCELED) {
		ic->cb(ic->arg, SP_ECANCELED, "closed during init");
	} else if (status < 0 || resp->status != 200) {
		/* The API may come back: calls retry on their own. */
		call_error(c, status, resp, "E2B API not answering at start", detail, sizeof(detail));
		ic->cb(ic->arg, 0, detail);
	} else {
		ic->cb(ic->arg, 0, NULL);
	}
	free(ic);
}

/* A failure found inside init() is reported from the loop, as the seam wants. */
static void
init_deferred(uv_timer_t *t)
{
	struct e2b *e = t->data;
	struct init_ctx *ic = e->init;

	e->init = NULL;
	ic->cb(ic->arg, e->closing ? SP_ECANCELED : ic->status, ic->detail);
	free(ic);
}

static void
handle_closed(uv_handle_t *h)
{
	struct e2b *e = h->data;

	/* A deferred init failure still owed its callback. */
	if (h == (uv_handle_t *)&e->defer && e->init != NULL && e->init->status < 0) {
		struct init_ctx *ic = e->init;

		e->init = NULL;
		ic->cb(ic->arg, SP_ECANCELED, "closed during init");
		free(ic);
	}
	e->handles_open--;
	e2b_pending_done(e);
}

/* The handles live from the first init() (or close()) to the end of close(). */
static void
e2b_handles(struct e2b *e, struct sp_provider *p)
{
	if (e->host != NULL)
		return;
	e->p = p;
	e->host = p->host;
	TAILQ_INIT(&e->sbxs);
	TAILQ_INIT(&e->calls);
	TAILQ_INIT(&e->execs);
	e->seed = (uint64_t)uv_hrtime() ^ (uint64_t)getpid() << 32 ^ (uintptr_t)e;
	if (e->seed == 0)
		e->seed = 1;
	uv_timer_init(e->host->loop, &e->tick);
	e->tick.data = e;
	uv_timer_init(e->host->loop, &e->defer);
	e->defer.data = e;
	e->handles_open = 2;
}

static int
conf_price(struct e2b *e, const char *name, const char *def, double *ret, struct init_ctx *ic)
{
	const char *v = conf(e, name);
	char *end;

	if (v == NULL)
		v = def;
	errno = 0;
	*ret = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || *ret < 0 || *ret > 1) {
		snprintf(ic->detail, sizeof(ic->detail), "%s: '%.40s' is not a price in USD "
			 "(0..1 per second)", name, v);
		return SP_ECONFIG;
	}
	return 0;
}

static int
conf_url(struct e2b *e, const char *name, const char *v, struct init_ctx *ic)
{
	if ((strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) ||
	    strpbrk(v, " \r\n") != NULL) {
		snprintf(ic->detail, sizeof(ic->detail), "%s: '%.80s' is not an http(s) URL",
			 name, v);
		return SP_ECONFIG;
	}
	return 0;
}

/*
 * e2b.worker_endpoint: "ADDRESS PORT", "ADDRESS:PORT" or "[ADDRESS]:PORT",
 * normalised to "ADDRESS PORT" (what the worker reads from its endpoint
 * file). The worker connects to IP literals only and checks the certificate
 * against ADDRESS, so a host name is refused here, not in every sandbox.
 */
static int
conf_endpoint(struct e2b *e, struct init_ctx *ic)
{
	const char *v = conf(e, "e2b.worker_endpoint"), *sep;
	char host[INET6_ADDRSTRLEN + 1], *end;
	unsigned char ip[16] = { 0 }, any[16] = { 0 };
	size_t hlen;
	long port;

	if (v == NULL)
		return 0;
	if (v[0] == '[') {
		sep = strchr(v, ']');
		if (sep == NULL || sep[1] != ':')
			goto bad;
		hlen = (size_t)(sep - v - 1);
		v++;
		sep += 2;
	} else if ((sep = strchr(v, ' ')) != NULL) {
		hlen = (size_t)(sep - v);
		while (*sep == ' ')
			sep++;
	} else {
		/* One colon: host:port; more: a bare IPv6 address without a port. */
		if ((sep = strchr(v, ':')) == NULL || strchr(sep + 1, ':') != NULL)
			goto bad;
		hlen = (size_t)(sep - v);
		sep++;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		goto bad;
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	errno = 0;
	port = strtol(sep, &end, 10);
	if (!isdigit((unsigned char)*sep) || errno != 0 || *end != '\0' || port < 1 || port > 65535)
		goto bad;
	/* The unspecified address names no host a sandbox could reach. */
	if ((inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1) ||
	    memcmp(ip, any, sizeof(ip)) == 0)
		goto bad;
	e->worker_endpoint = e2b_xasprintf("%s %ld", host, port);
	return 0;
bad:
	snprintf(ic->detail, sizeof(ic->detail), "e2b.worker_endpoint: '%.80s' is not \"ADDRESS "
		 "PORT\" with an IP address and a port 1..65535", conf(e, "e2b.worker_endpoint"));
	return SP_ECONFIG;
}

/*
 * The core calls init() again after a failure (a key file that appears
 * later, an API that comes back), so everything here may run many times on
 * the same state: the previous configuration is dropped first.
 */
static int
e2b_init(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct init_ctx *ic;
	struct e2b_call *c;
	char *url, *inst, *filter;
	json_t *d;
	int r;

	e2b_handles(e, p);
	if (e->closing)
		return SP_ECANCELED;
	if (e->init != NULL)
		return -EBUSY;
	e2b_conf_free(e);
	ic = e2b_xcalloc(1, sizeof(*ic));
	ic->cb = cb;
	ic->arg = arg;
	if ((r = read_key(e, ic->detail, sizeof(ic->detail))) < 0) {
		ic->status = r;
		e->init = ic;
		uv_timer_start(&e->defer, init_deferred, 0, 0);
		return 0;
	}
	e->api_url = conf_str(e, "e2b.api_url", "https://api.e2b.app");
	while (strlen(e->api_url) > 0 && e->api_url[strlen(e->api_url) - 1] == '/')
		e->api_url[strlen(e->api_url) - 1] = '\0';
	e->domain = conf_str(e, "e2b.domain", "e2b.app");
	e->envd_url = conf_str(e, "e2b.envd_url", "https://{port}-{sandbox}.{domain}");
	e->template_id = conf_str(e, "e2b.template", "base");
	e->files_path = conf_str(e, "e2b.files_path", "/home/user/.sandpit");
	e->timeout_s = conf_int(e, "e2b.timeout", 300, 1, 86400);
	e->request_timeout_ms = (uint64_t)conf_int(e, "e2b.request_timeout", 60000, 100, 600000);
	e->keepalive_s = (uint64_t)conf_int(e, "e2b.keepalive", 30, 1, 3600);
	e->retry.max_retries = (unsigned)conf_int(e, "e2b.max_retries", 5, 0, 100);
	e->retry.budget_ms = (uint64_t)conf_int(e, "e2b.retry_budget", 60000, 0, 3600000);
	e->retry.base_ms = (uint64_t)conf_int(e, "e2b.retry_base", 500, 1, 600000);
	e->retry.cap_ms = (uint64_t)conf_int(e, "e2b.retry_cap", 30000, 1, 3600000);
	if ((r = conf_price(e, "e2b.price_vcpu_second", "0.000014", &e->price_vcpu_s, ic)) < 0 ||
	    (r = conf_price(e, "e2b.price_gib_second", "0.0000045", &e->price_gib_s, ic)) < 0 ||
	    (r = conf_url(e, "e2b.api_url", e->api_url, ic)) < 0 ||
	    (r = conf_url(e, "e2b.envd_url", e->envd_url, ic)) < 0 ||
	    (r = conf_endpoint(e, ic)) < 0) {
		ic->status = r;
		e->init = ic;
		uv_timer_start(&e->defer, init_deferred, 0, 0);
		return 0;
	}

	d = json_pack("{s:s, s:s, s:s, s:I, s:f, s:f, s:{s:I, s:I, s:I}}",
		      "api_url", e->api_url, "domain", e->domain, "template", e->template_id,
		      "timeout_s", (json_int_t)e->timeout_s,
		      "price_vcpu_second", e->price_vcpu_s, "price_gib_second", e->price_gib_s,
		      "retry", "max_retries", (json_int_t)e->retry.max_retries,
		      "budget_ms", (json_int_t)e->retry.budget_ms,
		      "base_ms", (json_int_t)e->retry.base_ms);
	/* "endpoint" is the generic key the core writes into a worker's endpoint file. */
	if (e->worker_endpoint != NULL)
		json_object_set_new(d, "endpoint", json_string(e->worker_endpoint));
	e->describe = json_dumps(d, JSON_COMPACT);
	json_decref(d);

	/* Refresh the timeout of busy sandboxes well before it runs out. */
	uv_timer_start(&e->tick, e2b_tick, 1000, (uint64_t)e->timeout_s * 1000 / 6 + 1);
	uv_unref((uv_handle_t *)&e->tick);

	/* Probe the key with the cheapest authenticated call there is. */
	inst = e2b_xasprintf("%s=%s", SP_LABEL_INSTANCE, e->host->instance);
	filter = e2b_urlenc(inst);
	url = e2b_xasprintf("%s/v2/sandboxes?limit=1&metadata=%s", e->api_url, filter);
	c = e2b_call_new(e, "GET", url, e2b_api_headers(e, false), NULL, 0, init_probe_done, ic);
	c->retry = false;
	free(url);
	free(filter);
	free(inst);
	e->init = ic;
	if ((r = e2b_call_start(c)) < 0) {
		e->init = NULL;
		free(ic);
	}
	return r;
}

static void
e2b_close(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct e2b_call *c, *next;

	e2b_handles(e, p);
	e->closing = true;
	e->close_cb = cb;
	e->close_arg = arg;
	for (c = TAILQ_FIRST(&e->calls); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		call_cancel(c);
	}
	e2b_exec_cancel_all(e);
	/* Close callbacks always come later, from the loop: so does cb. */
	uv_close((uv_handle_t *)&e->tick, handle_closed);
	uv_close((uv_handle_t *)&e->defer, handle_closed);
}

/* ---------------------------------------------------------------- create */

struct create_ctx {
	struct e2b *e;
	sp_create_cb cb;
	void *arg;
	char *sandbox;			/* the core's id */
	char **cmd;
	char *files_dir;
	struct e2b_call *outer;
	struct e2b_call *check;
};

static void
create_free(struct create_ctx *cc)
{
	free(cc->sandbox);
	e2b_headers_free(cc->cmd);
	free(cc->files_dir);
	free(cc);
}

static void
create_adopt(struct create_ctx *cc, struct e2b_sbx *sb)
{
	if (cc->cmd != NULL) {
		e2b_headers_free(sb->cmd);
		sb->cmd = cc->cmd;
		cc->cmd = NULL;
	}
	free(sb->files_dir);
	sb->files_dir = cc->files_dir;
	cc->files_dir = NULL;
	sb->booted = false;
}

static void
create_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct create_ctx *cc = c->arg;
	struct e2b_sbx *sb;
	char detail[320];
	int r;

	if (cc->outer == NULL) {
		/* Finished by the recheck, which already reported. */
		create_free(cc);
		return;
	}
	if (status < 0 || resp == NULL || resp->status != 201) {
		if (status == 0 && resp == NULL)
			status = SP_EUNAVAIL;
		r = call_error(c, status, resp, "create", detail, sizeof(detail));
		cc->cb(cc->arg, r, NULL, detail);
	} else if ((r = sbx_from_json(cc->e, resp->body, resp->body_len, &sb, detail,
				      sizeof(detail))) < 0) {
		cc->cb(cc->arg, r, NULL, detail);
	} else {
		create_adopt(cc, sb);
		cc->cb(cc->arg, 0, sb->id, NULL);
	}
	create_free(cc);
}

static void
create_adopted(void *arg, int status, struct e2b_sbx *sb, const char *detail)
{
	struct create_ctx *cc = arg;
	struct e2b_call *outer = cc->outer;

	if (status < 0) {
		cc->cb(cc->arg, status, NULL, detail);
	} else {
		create_adopt(cc, sb);
		cc->cb(cc->arg, 0, sb->id, NULL);
	}
	cc->outer = NULL;
	e2b_call_finish(outer, status, NULL);
}

static void
create_check_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct create_ctx *cc = c->arg;
	struct e2b_call *outer = cc->outer;
	const char *id = NULL;
	char detail[320];
	json_t *root = NULL;
	int r;

	cc->check = NULL;
	if (status == 0 && resp->status == 200) {
		root = json_loadb(resp->body, resp->body_len, 0, NULL);
		if (json_is_array(root) && json_array_size(root) > 0)
			id = json_string_value(json_object_get(json_array_get(root, 0), "sandboxID"));
		if (json_is_array(root) && id == NULL) {
			/* Not there: the earlier attempt made nothing; try again. */
			json_decref(root);
			e2b_call_resend(outer);
			return;
		}
	}
	if (id != NULL && (r = e2b_sbx_fetch(cc->e, id, create_adopted, cc)) == 0) {
		json_decref(root);
		return;
	}
	json_decref(root);
	/* The outcome of the create is unknown: do not make a second sandbox.
	 * A stray one carries our metadata, so reconcile finds it. */
	if (status < 0)
		snprintf(detail, sizeof(detail), "create: %s, and checking whether it made a "
			 "sandbox failed: %s", outer->last, sp_strerror(status));
	else
		snprintf(detail, sizeof(detail), "create: %s, and checking whether it made a "
			 "sandbox failed: HTTP %ld", outer->last, resp->status);
	cc->cb(cc->arg, status == SP_ECANCELED ? SP_ECANCELED : SP_EUNAVAIL, NULL, detail);
	cc->outer = NULL;
	e2b_call_finish(outer, SP_EUNAVAIL, NULL);
}

static char *
metadata_filter(struct e2b *e, const char *sandbox)
{
	char *k1 = e2b_urlenc(SP_LABEL_INSTANCE), *v1 = e2b_urlenc(e->host->instance);
	char *raw, *enc;

	if (sandbox != NULL) {
		char *k2 = e2b_urlenc(SP_LABEL_SANDBOX), *v2 = e2b_urlenc(sandbox);

		raw = e2b_xasprintf("%s=%s&%s=%s", k1, v1, k2, v2);
		free(k2);
		free(v2);
	} else {
		raw = e2b_xasprintf("%s=%s", k1, v1);
	}
	enc = e2b_urlenc(raw);
	free(raw);
	free(k1);
	free(v1);
	return enc;
}

/* After an ambiguous failure: did the create make the sandbox after all? */
static void
create_recheck(struct e2b_call *outer)
{
	struct create_ctx *cc = outer->arg;
	struct e2b *e = cc->e;
	char *filter = metadata_filter(e, cc->sandbox), *url;
	int r;

	url = e2b_xasprintf("%s/v2/sandboxes?metadata=%s", e->api_url, filter);
	cc->check = e2b_call_new(e, "GET", url, e2b_api_headers(e, false), NULL, 0,
				 create_check_done, cc);
	free(url);
	free(filter);
	if ((r = e2b_call_start(cc->check)) < 0) {
		cc->check = NULL;
		cc->cb(cc->arg, r, NULL, "create: could not check for a sandbox made by an "
		       "earlier attempt");
		cc->outer = NULL;
		e2b_call_finish(outer, r, NULL);
	}
}

static int
e2b_create(struct sp_provider *p, const struct sp_sandbox_spec *spec, sp_create_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct create_ctx *cc;
	json_t *body, *md;
	const char *tmpl;
	char *text, *url;
	size_t n = 0;
	int r;

	if (e->closing)
		return SP_ECANCELED;
	if (spec->id == NULL || strlen(spec->id) > 128)
		return SP_EINVAL;
	md = json_pack("{s:s, s:s}", SP_LABEL_INSTANCE, e->host->instance, SP_LABEL_SANDBOX, spec->id);
	if (spec->tenant != NULL)
		json_object_set_new(md, SP_LABEL_TENANT, json_string(spec->tenant));
	if (spec->spec_hash != NULL)
		json_object_set_new(md, SP_LABEL_SPEC_HASH, json_string(spec->spec_hash));
	/* E2B sizes come from the template; an image other than the worker's
	 * names another template. */
	tmpl = e->template_id;
	if (spec->image != NULL && (e->host->worker_image == NULL ||
	    strcmp(spec->image, e->host->worker_image) != 0))
		tmpl = spec->image;
	body = json_pack("{s:s, s:I, s:o, s:b, s:b}", "templateID", tmpl,
			 "timeout", (json_int_t)e->timeout_s, "metadata", md, "secure", 1,
			 "autoPause", 0);
	if (body == NULL)
		return SP_EINVAL;	/* a string that is not UTF-8 */
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);

	cc = e2b_xcalloc(1, sizeof(*cc));
	cc->e = e;
	cc->cb = cb;
	cc->arg = arg;
	cc->sandbox = e2b_xstrdup(spec->id);
	if (spec->cmd != NULL) {
		while (spec->cmd[n] != NULL)
			n++;
		cc->cmd = e2b_xcalloc(n + 1, sizeof(char *));
		for (size_t i = 0; i < n; i++)
			cc->cmd[i] = e2b_xstrdup(spec->cmd[i]);
	}
	if (spec->files_dir != NULL)
		cc->files_dir = e2b_xstrdup(spec->files_dir);
	url = e2b_xasprintf("%s/sandboxes", e->api_url);
	cc->outer = e2b_call_new(e, "POST", url, e2b_api_headers(e, true), text, strlen(text),
				 create_done, cc);
	cc->outer->recheck = create_recheck;
	/* A create whose answer is lost must come back to us, to be checked by
	 * listing, not be resent by libcurl on a new connection (a duplicate). */
	cc->outer->fresh = true;
	free(url);
	free(text);
	if ((r = e2b_call_start(cc->outer)) < 0)
		create_free(cc);
	return r;
}

/* ---------------------------------------------------------------- start, destroy */

static int
e2b_start(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);

	if (e->closing)
		return SP_ECANCELED;
	if (!valid_id(ref))
		return SP_EINVAL;
	return e2b_boot(e, ref, cb, arg);
}

struct done_ctx {
	sp_done_cb cb;
	void *arg;
	char *ref;
};

static void
destroy_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct done_ctx *dc = c->arg;
	char detail[320];
	int r = 0;

	/* A sandbox already gone is success: a repeat kill answers 404. */
	if (status < 0 || (resp->status != 204 && resp->status != 200 && resp->status != 404))
		r = call_error(c, status, resp, "kill", detail, sizeof(detail));
	else
		e2b_sbx_remove(c->e, dc->ref);
	dc->cb(dc->arg, r, r < 0 ? detail : NULL);
	free(dc->ref);
	free(dc);
}

/* A body-less control-plane call on /sandboxes/{ref}; ctx is the caller's to free on failure. */
static int
sbx_call(struct e2b *e, const char *method, const char *ref, e2b_call_cb done, void *ctx)
{
	char *url = e2b_xasprintf("%s/sandboxes/%s", e->api_url, ref);
	struct e2b_call *c = e2b_call_new(e, method, url, e2b_api_headers(e, false), NULL, 0,
					  done, ctx);

	free(url);
	return e2b_call_start(c);
}

static int
e2b_destroy(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct done_ctx *dc;
	int r;

	if (e->closing)
		return SP_ECANCELED;
	if (!valid_id(ref))
		return SP_EINVAL;
	dc = e2b_xcalloc(1, sizeof(*dc));
	dc->cb = cb;
	dc->arg = arg;
	dc->ref = e2b_xstrdup(ref);
	if ((r = sbx_call(e, "DELETE", ref, destroy_done, dc)) < 0) {
		free(dc->ref);
		free(dc);
	}
	return r;
}

/* ---------------------------------------------------------------- list, status */

static enum sp_instance_state
state_of(const char *s)
{
	/* A paused sandbox exists but does not run; connect would resume it. */
	if (s != NULL && strcmp(s, "paused") == 0)
		return SP_INST_CREATED;
	return SP_INST_RUNNING;
}

static void
instance_of(json_t *it, struct sp_instance *inst)
{
	json_t *md = json_object_get(it, "metadata");

	memset(inst, 0, sizeof(*inst));
	inst->ref = json_string_value(json_object_get(it, "sandboxID"));
	inst->sandbox_id = json_string_value(json_object_get(md, SP_LABEL_SANDBOX));
	inst->tenant = json_string_value(json_object_get(md, SP_LABEL_TENANT));
	inst->spec_hash = json_string_value(json_object_get(md, SP_LABEL_SPEC_HASH));
	inst->state = state_of(json_string_value(json_object_get(it, "state")));
}

struct list_ctx {
	struct e2b *e;
	sp_list_cb cb;
	void *arg;
	json_t *items;			/* every page so far */
	unsigned pages;
	char *filter;
};

static int list_page(struct list_ctx *lc, const char *token);

static void
list_finish(struct list_ctx *lc, int status, const char *detail)
{
	struct sp_instance *v = NULL;
	size_t n = 0, i;
	json_t *it;

	if (status == 0) {
		v = e2b_xcalloc(json_array_size(lc->items), sizeof(*v));
		json_array_foreach(lc->items, i, it) {
			instance_of(it, &v[n]);
			if (v[n].ref != NULL && valid_id(v[n].ref))
				n++;
		}
	}
	lc->cb(lc->arg, status, v, n, detail);
	free(v);
	json_decref(lc->items);
	free(lc->filter);
	free(lc);
}

static void
list_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct list_ctx *lc = c->arg;
	char detail[320], *tok;
	json_t *root;
	int r;

	if (status < 0 || resp->status != 200) {
		r = call_error(c, status, resp, "list", detail, sizeof(detail));
		list_finish(lc, r, detail);
		return;
	}
	root = json_loadb(resp->body, resp->body_len, 0, NULL);
	if (!json_is_array(root)) {
		json_decref(root);
		list_finish(lc, SP_EPROTO, "list: E2B answered something that is not a JSON array");
		return;
	}
	json_array_extend(lc->items, root);
	json_decref(root);
	if (resp->next_token == NULL || resp->next_token[0] == '\0') {
		list_finish(lc, 0, NULL);
		return;
	}
	if (++lc->pages >= E2B_LIST_MAX_PAGES || strlen(resp->next_token) > 1024) {
		list_finish(lc, SP_EPROTO, "list: more pages than the limit (or an oversized "
			    "next token)");
		return;
	}
	tok = e2b_urlenc(resp->next_token);
	r = list_page(lc, tok);
	free(tok);
	if (r < 0) {
		snprintf(detail, sizeof(detail), "list: %s", sp_strerror(r));
		list_finish(lc, r, detail);
	}
}

static int
list_page(struct list_ctx *lc, const char *token)
{
	struct e2b *e = lc->e;
	struct e2b_call *c;
	char *url;

	url = e2b_xasprintf("%s/v2/sandboxes?metadata=%s&state=running,paused&limit=100%s%s",
			    e->api_url, lc->filter, token != NULL ? "&nextToken=" : "",
			    token != NULL ? token : "");
	c = e2b_call_new(e, "GET", url, e2b_api_headers(e, false), NULL, 0, list_done, lc);
	free(url);
	return e2b_call_start(c);
}

static int
e2b_list(struct sp_provider *p, sp_list_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct list_ctx *lc;
	int r;

	if (e->closing)
		return SP_ECANCELED;
	lc = e2b_xcalloc(1, sizeof(*lc));
	lc->e = e;
	lc->cb = cb;
	lc->arg = arg;
	lc->items = json_array();
	lc->filter = metadata_filter(e, NULL);
	if ((r = list_page(lc, NULL)) < 0) {
		json_decref(lc->items);
		free(lc->filter);
		free(lc);
	}
	return r;
}

struct status_ctx {
	sp_status_cb cb;
	void *arg;
	char *ref;
};

static void
status_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct status_ctx *sc = c->arg;
	struct sp_instance inst;
	char detail[320];
	json_t *root;
	int r;

	if (status == 0 && resp->status == 404) {
		memset(&inst, 0, sizeof(inst));
		inst.ref = sc->ref;
		inst.state = SP_INST_GONE;
		e2b_sbx_remove(c->e, sc->ref);
		sc->cb(sc->arg, 0, &inst, NULL);
	} else if (status < 0 || resp->status != 200) {
		r = call_error(c, status, resp, "status", detail, sizeof(detail));
		sc->cb(sc->arg, r, NULL, detail);
	} else {
		root = json_loadb(resp->body, resp->body_len, 0, NULL);
		if (!json_is_object(root) || json_string_value(json_object_get(root,
		    "sandboxID")) == NULL) {
			sc->cb(sc->arg, SP_EPROTO, NULL, "status: E2B answered a sandbox without "
			       "a sandboxID");
		} else {
			instance_of(root, &inst);
			sc->cb(sc->arg, 0, &inst, NULL);
		}
		json_decref(root);
	}
	free(sc->ref);
	free(sc);
}

static int
e2b_status(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg)
{
	struct e2b *e = e2b_of(p);
	struct status_ctx *sc;
	int r;

	if (e->closing)
		return SP_ECANCELED;
	if (!valid_id(ref))
		return SP_EINVAL;
	sc = e2b_xcalloc(1, sizeof(*sc));
	sc->cb = cb;
	sc->arg = arg;
	sc->ref = e2b_xstrdup(ref);
	if ((r = sbx_call(e, "GET", ref, status_done, sc)) < 0) {
		free(sc->ref);
		free(sc);
	}
	return r;
}

static const char *
e2b_describe(struct sp_provider *p)
{
	return e2b_of(p)->describe;
}

const struct sp_provider_ops sp_e2b_provider = {
	.name = "e2b",
	.caps = SP_CAP_EXEC | SP_CAP_LIST,
	.priv_size = sizeof(struct e2b),
	.directives = e2b_directives,
	.init = e2b_init,
	.close = e2b_close,
	.create = e2b_create,
	.start = e2b_start,
	.exec = e2b_exec,
	.exec_cancel = e2b_exec_cancel,
	.destroy = e2b_destroy,
	.list = e2b_list,
	.status = e2b_status,
	.describe = e2b_describe,
};

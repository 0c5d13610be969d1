/*
 * docker_api: one Engine API request over the Unix socket through the core's
 * HTTP client, with the reply parsed as JSON and Docker's {"message"} turned
 * into a bounded detail and an SP_E* status. It owns the pending calls (so
 * close can cancel them). It logs nothing above debug level: at debug, one
 * line per finished call with its status and duration (where a spawn's time
 * goes), never a body.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <sandpit/error.h>
#include <sandpit/httpc.h>

#include "docker_internal.h"

struct docker_call {
	struct docker *d;
	struct sp_http_call *http;
	docker_api_cb cb;
	void *arg;
	bool raw;
	sp_http_data_cb on_data;
	void *data_arg;
	uint64_t sent_ns;		/* uv_hrtime() when it was handed to the client */
	uint64_t sent_loop_ms;		/* uv_now(): orders calls against each other */
	char what[192];			/* "METHOD /path" for the debug log, cut */
	LIST_ENTRY(docker_call) entry;
};

void *
docker_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);

	if (p == NULL)
		abort();
	return p;
}

void *
docker_xrealloc(void *p, size_t size)
{
	if ((p = realloc(p, size == 0 ? 1 : size)) == NULL)
		abort();
	return p;
}

char *
docker_xstrdup(const char *s)
{
	char *r = strdup(s);

	if (r == NULL)
		abort();
	return r;
}

char *
docker_xprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

char *
docker_api_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = docker_xcalloc(n * 3 + 1, 1), *o = out;

	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

json_t *
docker_json_strv(const char *const *v, size_t max)
{
	json_t *a = json_array(), *s;
	size_t n = 0;

	for (; v != NULL && *v != NULL; v++, n++) {
		if (n == max || (s = json_string(*v)) == NULL) {
			json_decref(a);
			return NULL;
		}
		json_array_append_new(a, s);
	}
	return a;
}

int
docker_api_status(long http)
{
	if (http == 404)
		return SP_ENOTFOUND;
	if (http == 409)
		return SP_ECONFLICT;
	return SP_EPROVIDER;
}

static int
docker_api_data(void *arg, const char *data, size_t len)
{
	struct docker_call *call = arg;

	return call->on_data(call->data_arg, data, len);
}

static void
docker_api_done(void *arg, int status, const struct sp_http_resp *resp)
{
	struct docker_call *call = arg;
	struct docker *d = call->d;
	struct docker_reply r = { .http = resp->status, .raw = resp->body,
				  .raw_len = resp->body_len, .api_version = resp->api_version };
	char detail[DOCKER_DETAIL_MAX + 64];
	json_t *json = NULL;

	LIST_REMOVE(call, entry);
	if (d->host->log != NULL)
		d->host->log(LOG_DEBUG, "docker: %s: HTTP %ld, status %d, after %.1f ms "
		    "(sent at loop time %" PRIu64 " ms)", call->what, resp->status, status,
		    (double)(uv_hrtime() - call->sent_ns) / 1e6, call->sent_loop_ms);
	detail[0] = '\0';
	if (resp->body_len > 0 && !call->raw)
		json = json_loadb(resp->body, resp->body_len, JSON_DECODE_ANY, NULL);
	r.json = json;

	if (status < 0) {
		if (status == SP_EUNAVAIL)
			snprintf(detail, sizeof(detail), "cannot connect to the Docker engine at %s",
			    d->socket);
		else
			snprintf(detail, sizeof(detail), "Docker engine: %s", sp_strerror(status));
	} else if ((resp->status >= 200 && resp->status < 300) || resp->status == 304) {
		if (resp->body_len > 0 && !call->raw && json == NULL) {
			status = SP_EPROTO;
			snprintf(detail, sizeof(detail),
			    "Docker engine answered HTTP %ld with a body that is not JSON",
			    resp->status);
		}
	} else {
		const char *msg = json_string_value(json_object_get(json, "message"));

		status = resp->status == 0 ? SP_EPROTO : docker_api_status(resp->status);
		if (msg != NULL)
			snprintf(detail, sizeof(detail), "docker: %.*s", DOCKER_DETAIL_MAX, msg);
		else
			snprintf(detail, sizeof(detail), "Docker engine answered HTTP %ld",
			    resp->status);
	}
	call->cb(call->arg, status, &r, detail[0] != '\0' ? detail : NULL);
	json_decref(json);
	free(call);
	docker_unref(d);
}

int
docker_api(struct docker *d, const struct docker_req *req, docker_api_cb cb, void *arg,
	   struct docker_call **ret)
{
	const char *hdrs[3] = { NULL, NULL, NULL };
	struct sp_http_opts o = { 0 };
	struct docker_call *call;
	char *url, *body = NULL, *ctype = NULL;
	int rc;

	if (req->unversioned)
		url = docker_xprintf("http://localhost%s", req->path);
	else
		url = docker_xprintf("http://localhost/%s%s", d->api, req->path);
	if (req->json != NULL) {
		if ((body = json_dumps(req->json, JSON_COMPACT)) == NULL)
			abort();
		hdrs[0] = "Content-Type: application/json";
		o.body = body;
		o.body_len = strlen(body);
	} else if (req->body != NULL) {
		ctype = docker_xprintf("Content-Type: %s",
		    req->content_type != NULL ? req->content_type : "application/octet-stream");
		hdrs[0] = ctype;
		o.body = req->body;
		o.body_len = req->body_len;
	}
	o.method = req->method;
	o.url = url;
	o.unix_socket = d->socket;
	o.headers = hdrs;
	o.timeout_ms = req->timeout_ms == UINT64_MAX ? 0 :
	    req->timeout_ms != 0 ? req->timeout_ms : DOCKER_REQ_TIMEOUT_MS;
	o.connect_timeout_ms = 10000;
	o.max_body = req->max_body;

	call = docker_xcalloc(1, sizeof(*call));
	call->d = d;
	call->cb = cb;
	call->arg = arg;
	call->raw = req->raw;
	call->on_data = req->on_data;
	call->data_arg = req->data_arg;
	snprintf(call->what, sizeof(call->what), "%s %s", req->method, req->path);
	call->sent_ns = uv_hrtime();
	call->sent_loop_ms = uv_now(d->host->loop);
	rc = sp_http_request(d->host->http, &o, req->on_data != NULL ? docker_api_data : NULL,
	    docker_api_done,
	    call, &call->http);
	free(url);
	free(body);
	free(ctype);
	if (rc < 0) {
		free(call);
		return rc;
	}
	LIST_INSERT_HEAD(&d->calls, call, entry);
	docker_ref(d);
	if (ret != NULL)
		*ret = call;
	return 0;
}

void
docker_api_cancel(struct docker_call *call)
{
	if (call != NULL)
		sp_http_cancel(call->http);
}

void
docker_api_cancel_all(struct docker *d)
{
	struct docker_call *call;

	LIST_FOREACH(call, &d->calls, entry)
		sp_http_cancel(call->http);
}

/*
 * The CLI's HTTP client: libcurl's easy interface over the daemon's Unix
 * socket (CURLOPT_UNIX_SOCKET_PATH). One call at a time, bounded response
 * bodies, errors printed once here as "sandpit: <server message>".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"

#define CLI_MAX_RESPONSE	(64u << 20)
#define CLI_MAX_LINE		(16u << 20)

struct xfer {
	CURL *curl;
	char *buf;			/* buffered body (errors, or everything when not streaming) */
	size_t len;
	bool too_big;
	/* streaming */
	struct cli_lines lines;
	int (*line)(const char *line, size_t len, void *arg);
	void *arg;
	int line_rc;
	volatile const sig_atomic_t *stop;
	bool stopped;
};

static void
buf_add(struct xfer *x, const char *data, size_t n)
{
	char *nb;

	if (x->len + n > CLI_MAX_RESPONSE) {
		x->too_big = true;
		return;
	}
	nb = realloc(x->buf, x->len + n + 1);
	if (nb == NULL)
		abort();
	x->buf = nb;
	memcpy(x->buf + x->len, data, n);
	x->len += n;
	x->buf[x->len] = '\0';
}

static size_t
on_data(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
	if (x->line == NULL || status < 200 || status >= 300) {
		buf_add(x, data, n);
		return x->too_big ? 0 : n;
	}
	x->line_rc = cli_lines_feed(&x->lines, data, n, x->line, x->arg);
	return x->line_rc == 0 ? n : 0;
}

static int
on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct xfer *x = arg;

	if (x->stop != NULL && *x->stop) {
		x->stopped = true;
		return 1;
	}
	return 0;
}

char *
cli_path_id(const char *prefix, const char *id, const char *suffix)
{
	char *esc = curl_easy_escape(NULL, id, 0);
	char *s;

	if (esc == NULL || asprintf(&s, "%s%s%s", prefix, esc, suffix) < 0)
		abort();
	curl_free(esc);
	return s;
}

/* Print the server's error message for a non-2xx answer. */
static void
print_http_error(long status, const char *body)
{
	json_t *j = body != NULL ? json_loads(body, 0, NULL) : NULL;
	json_t *m = json_object_get(json_object_get(j, "error"), "message");

	if (json_is_string(m))
		cli_err("%s", json_string_value(m));
	else
		cli_err("sandpitd answered HTTP %ld", status);
	json_decref(j);
}

static int
perform(struct cli *cli, const char *method, const char *path, json_t *body,
	struct xfer *x, long *status)
{
	struct curl_slist *hdrs = NULL;
	char url[2048], tenant[128];
	char *payload = NULL;
	CURLcode rc;
	CURL *c;

	c = curl_easy_init();
	if (c == NULL)
		abort();
	x->curl = c;
	snprintf(url, sizeof(url), "http://localhost%s", path);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, cli->socket);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (cli->tenant != NULL) {
		snprintf(tenant, sizeof(tenant), "X-Sandpit-Tenant: %s", cli->tenant);
		hdrs = curl_slist_append(hdrs, tenant);
	}
	if (body != NULL) {
		payload = json_dumps(body, JSON_COMPACT);
		if (payload == NULL)
			abort();
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_slist_free_all(hdrs);
	free(payload);
	curl_easy_cleanup(c);
	x->curl = NULL;

	if (x->stopped)
		return -1;
	if (rc == CURLE_WRITE_ERROR && x->line_rc != 0)
		return x->line_rc > 0 ? 0 : CLI_EXIT_ERR;	/* the line handler chose to stop */
	if (rc == CURLE_COULDNT_CONNECT || (rc != CURLE_OK && *status == 0)) {
		const char *why = curl_easy_strerror(rc);

		if (rc == CURLE_COULDNT_CONNECT) {
			/* curl's text hides errno; say what usually went wrong. */
			why = access(cli->socket, F_OK) != 0 ? "no such socket (is sandpitd running?)" :
			    access(cli->socket, W_OK) != 0 ? "permission denied" :
			    "connection refused (is sandpitd running?)";
		}
		cli_err("cannot reach sandpitd at %s: %s", cli->socket, why);
		return CLI_EXIT_ERR;
	}
	if (x->too_big) {
		cli_err("response from sandpitd larger than %u bytes", CLI_MAX_RESPONSE);
		return CLI_EXIT_ERR;
	}
	if (*status < 200 || *status >= 300) {
		print_http_error(*status, x->buf);
		return CLI_EXIT_ERR;
	}
	if (rc != CURLE_OK) {
		cli_err("%s %s: %s", method, path, curl_easy_strerror(rc));
		return CLI_EXIT_ERR;
	}
	return 0;
}

int
cli_call(struct cli *cli, const char *method, const char *path, json_t *body,
	 json_t **ret)
{
	struct xfer x = { 0 };
	json_error_t jerr;
	long status = 0;
	int r;

	*ret = NULL;
	r = perform(cli, method, path, body, &x, &status);
	if (r == 0 && x.len > 0) {
		*ret = json_loadb(x.buf, x.len, 0, &jerr);
		if (*ret == NULL) {
			cli_err("sandpitd sent invalid JSON: %s", jerr.text);
			r = CLI_EXIT_ERR;
		}
	}
	free(x.buf);
	return r;
}

int
cli_stream(struct cli *cli, const char *method, const char *path, json_t *body,
	   int (*line)(const char *line, size_t len, void *arg), void *arg,
	   volatile const sig_atomic_t *stop)
{
	struct xfer x = { 0 };
	long status = 0;
	int r;

	cli_lines_init(&x.lines, CLI_MAX_LINE);
	x.line = line;
	x.arg = arg;
	x.stop = stop;
	r = perform(cli, method, path, body, &x, &status);
	if (r == 0 && x.line_rc == 0) {
		x.line_rc = cli_lines_finish(&x.lines, line, arg);
		if (x.line_rc < 0)
			r = CLI_EXIT_ERR;
	}
	if (r == CLI_EXIT_ERR && x.line_rc == -E2BIG)
		cli_err("a line from sandpitd is longer than %u bytes", CLI_MAX_LINE);
	cli_lines_done(&x.lines);
	free(x.buf);
	return r;
}

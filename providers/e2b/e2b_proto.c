/*
 * The pure parts of the E2B provider: Connect envelope framing, envd process
 * events, end-of-stream and HTTP error mapping, base64, the retry policy and
 * costs. No I/O and no loop here, so all of it is unit-tested directly; every
 * input is a peer's and is bounded before it is used.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "e2b.h"

void *
e2b_xmalloc(size_t n)
{
	void *p = malloc(n != 0 ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

void *
e2b_xcalloc(size_t n, size_t m)
{
	void *p = calloc(n != 0 ? n : 1, m != 0 ? m : 1);

	if (p == NULL)
		abort();
	return p;
}

void *
e2b_xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n != 0 ? n : 1)) == NULL)
		abort();
	return p;
}

char *
e2b_xstrdup(const char *s)
{
	return e2b_xstrndup(s, strlen(s));
}

char *
e2b_xstrndup(const char *s, size_t n)
{
	char *d = e2b_xmalloc(n + 1);

	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *
e2b_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

/* ---------------------------------------------------------------- envelopes */

void
e2b_env_init(struct e2b_env_parser *ps, size_t max_frame)
{
	memset(ps, 0, sizeof(*ps));
	ps->max_frame = max_frame;
}

void
e2b_env_done(struct e2b_env_parser *ps)
{
	free(ps->buf);
	ps->buf = NULL;
}

int
e2b_env_feed(struct e2b_env_parser *ps, const char *data, size_t len,
	     e2b_env_frame_cb cb, void *arg, const char **why)
{
	size_t n;
	unsigned flags;
	int r;

	while (len > 0) {
		if (ps->eos) {
			*why = "data after the end-of-stream envelope";
			return SP_EPROTO;
		}
		if (ps->hdr_len < 5) {
			n = 5 - ps->hdr_len;
			if (n > len)
				n = len;
			memcpy(ps->hdr + ps->hdr_len, data, n);
			ps->hdr_len += n;
			data += n;
			len -= n;
			if (ps->hdr_len < 5)
				return 0;
			if (ps->hdr[0] & ~(unsigned)E2B_ENV_END) {
				*why = (ps->hdr[0] & E2B_ENV_COMPRESSED) ?
				    "compressed envelope (compression was not negotiated)" :
				    "envelope with unknown flags";
				return SP_EPROTO;
			}
			ps->len = (uint32_t)ps->hdr[1] << 24 | (uint32_t)ps->hdr[2] << 16 |
			    (uint32_t)ps->hdr[3] << 8 | ps->hdr[4];
			if (ps->len > ps->max_frame) {
				*why = "envelope larger than the frame limit";
				return SP_EPROTO;
			}
			ps->buf = e2b_xmalloc((size_t)ps->len + 1);
			ps->have = 0;
		}
		n = ps->len - ps->have;
		if (n > len)
			n = len;
		memcpy(ps->buf + ps->have, data, n);
		ps->have += n;
		data += n;
		len -= n;
		if (ps->have < ps->len)
			return 0;
		/* One whole frame: hand it over and reset for the next header. */
		ps->buf[ps->len] = '\0';
		flags = ps->hdr[0];
		ps->hdr_len = 0;
		ps->frames++;
		if (flags & E2B_ENV_END)
			ps->eos = true;
		r = cb(arg, flags, ps->buf, ps->len);
		free(ps->buf);
		ps->buf = NULL;
		if (r < 0)
			return r;
	}
	return 0;
}

int
e2b_env_finish(const struct e2b_env_parser *ps, const char **why)
{
	if (ps->hdr_len != 0) {
		*why = "stream cut inside an envelope (truncated)";
		return SP_EPROTO;
	}
	if (!ps->eos) {
		*why = "stream ended without an end-of-stream envelope";
		return SP_EUNAVAIL;
	}
	return 0;
}

char *
e2b_env_wrap(const char *json, size_t len, size_t *ret_len)
{
	char *b = e2b_xmalloc(len + 5);

	b[0] = 0;
	b[1] = (char)(len >> 24);
	b[2] = (char)(len >> 16);
	b[3] = (char)(len >> 8);
	b[4] = (char)len;
	memcpy(b + 5, json, len);
	*ret_len = len + 5;
	return b;
}

/* ---------------------------------------------------------------- base64 */

static int
b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long
e2b_b64_decode(const char *in, size_t len, char *out, size_t outsz)
{
	uint32_t acc = 0;
	size_t o = 0, i, pad = 0;
	int bits = 0, v;

	while (len > 0 && in[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	if ((len + pad) % 4 != 0 && pad != 0)
		return -1;
	if (len % 4 == 1)
		return -1;
	for (i = 0; i < len; i++) {
		if ((v = b64_val((unsigned char)in[i])) < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= outsz)
				return -1;
			out[o++] = (char)(acc >> bits);
		}
	}
	return (long)o;
}

void
e2b_b64_encode(const void *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = in;
	size_t i;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (i < len) {
		v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

/* ---------------------------------------------------------------- events */

/* proto3 JSON: int64 may be a string or a number. */
static int
json_int(json_t *v, int64_t *ret)
{
	char *end;
	long long n;

	if (json_is_integer(v)) {
		*ret = json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		errno = 0;
		n = strtoll(json_string_value(v), &end, 10);
		if (errno != 0 || *end != '\0' || end == json_string_value(v))
			return -1;
		*ret = n;
		return 0;
	}
	return -1;
}

static int
signal_number(const char *word)
{
	static const struct { const char *w; int n; } tab[] = {
		{ "killed", 9 }, { "terminated", 15 }, { "interrupt", 2 }, { "hangup", 1 },
		{ "aborted", 6 }, { "segmentation fault", 11 }, { "quit", 3 },
		{ "broken pipe", 13 }, { "alarm clock", 14 }, { "user defined signal 1", 10 },
		{ "user defined signal 2", 12 }, { "bus error", 7 },
		{ "floating point exception", 8 },
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strncmp(word, tab[i].w, strlen(tab[i].w)) == 0)
			return tab[i].n;
	return 9;
}

int
e2b_event_parse(const char *json, size_t len, struct e2b_event *ev, const char **why)
{
	json_t *root, *e, *v, *s;
	const char *str;
	int64_t i;
	int r = SP_EPROTO;

	memset(ev, 0, sizeof(*ev));
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root)) {
		*why = "event is not a JSON object";
		goto out;
	}
	if (!json_is_object(e = json_object_get(root, "event"))) {
		*why = "message without an \"event\" object";
		goto out;
	}
	if ((v = json_object_get(e, "start")) != NULL) {
		if (!json_is_object(v) || json_int(json_object_get(v, "pid"), &i) < 0 || i <= 0) {
			*why = "start event without a valid pid";
			goto out;
		}
		ev->type = E2B_EV_START;
		ev->pid = i;
	} else if ((v = json_object_get(e, "data")) != NULL) {
		if (!json_is_object(v)) {
			*why = "data event is not an object";
			goto out;
		}
		ev->type = E2B_EV_DATA;
		ev->fd = 1;
		if ((s = json_object_get(v, "stderr")) != NULL)
			ev->fd = 2;
		else if ((s = json_object_get(v, "stdout")) == NULL)
			s = json_object_get(v, "pty");
		if (!json_is_string(s)) {
			*why = "data event without stdout, stderr or pty text";
			goto out;
		}
		str = json_string_value(s);
		ev->data = e2b_xmalloc(json_string_length(s) / 4 * 3 + 3);
		long n = e2b_b64_decode(str, json_string_length(s), ev->data,
					json_string_length(s) / 4 * 3 + 3);
		if (n < 0) {
			*why = "data event with invalid base64";
			e2b_event_free(ev);
			goto out;
		}
		ev->data_len = (size_t)n;
	} else if ((v = json_object_get(e, "keepalive")) != NULL) {
		ev->type = E2B_EV_KEEPALIVE;
	} else if ((v = json_object_get(e, "end")) != NULL) {
		if (!json_is_object(v)) {
			*why = "end event is not an object";
			goto out;
		}
		ev->type = E2B_EV_END;
		/* proto3 JSON omits zero values: a missing exitCode is 0. */
		i = 0;
		if ((s = json_object_get(v, "exitCode")) != NULL && json_int(s, &i) < 0) {
			*why = "end event with a non-integer exitCode";
			goto out;
		}
		str = json_string_value(json_object_get(v, "status"));
		if (str != NULL && strncmp(str, "signal: ", 8) == 0) {
			ev->signaled = true;
			ev->exit_code = 128 + signal_number(str + 8);
		} else if (i < 0 || i > 255) {
			/* -1 without a signal status: envd could not say; call it killed. */
			ev->signaled = i < 0;
			ev->exit_code = i < 0 ? 128 + 9 : (int)(i & 255);
		} else {
			ev->exit_code = (int)i;
		}
	} else {
		*why = "unknown event type";
		goto out;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}

void
e2b_event_free(struct e2b_event *ev)
{
	free(ev->data);
	ev->data = NULL;
	ev->data_len = 0;
}

int
e2b_connect_code_error(const char *code)
{
	static const struct { const char *c; int e; } tab[] = {
		{ "canceled", SP_ECANCELED }, { "invalid_argument", SP_EINVAL },
		{ "deadline_exceeded", SP_ETIMEDOUT }, { "not_found", SP_ENOTFOUND },
		{ "already_exists", SP_ECONFLICT }, { "permission_denied", SP_EPROVIDER },
		{ "resource_exhausted", SP_ELIMIT }, { "failed_precondition", SP_ECONFLICT },
		{ "aborted", SP_ECONFLICT }, { "out_of_range", SP_EINVAL },
		{ "unimplemented", SP_EPROVIDER }, { "unavailable", SP_EUNAVAIL },
		{ "unauthenticated", SP_EPROVIDER },
	};
	size_t i;

	if (code != NULL)
		for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
			if (strcmp(code, tab[i].c) == 0)
				return tab[i].e;
	return SP_EPROVIDER;		/* unknown, internal, data_loss */
}

/* Copy s into a detail, keeping only printable ASCII (peer text). */
static void
detail_clean(char *d)
{
	for (; *d != '\0'; d++)
		if (!isprint((unsigned char)*d))
			*d = '?';
}

int
e2b_eos_parse(const char *json, size_t len, char *detail, size_t detailsz)
{
	json_t *root, *err;
	const char *code, *msg;
	int r;

	detail[0] = '\0';
	root = json_loadb(json, len, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		snprintf(detail, detailsz, "end-of-stream message is not a JSON object");
		return SP_EPROTO;
	}
	if ((err = json_object_get(root, "error")) == NULL || json_is_null(err)) {
		json_decref(root);
		return 0;
	}
	code = json_string_value(json_object_get(err, "code"));
	msg = json_string_value(json_object_get(err, "message"));
	r = e2b_connect_code_error(code);
	snprintf(detail, detailsz, "%s: %.200s", code != NULL ? code : "unknown",
		 msg != NULL ? msg : "(no message)");
	detail_clean(detail);
	json_decref(root);
	return r;
}

bool
e2b_is_concurrency_429(long status, const char *body)
{
	return status == 429 && body != NULL && strstr(body, "concurrent") != NULL;
}

int
e2b_http_error(long status, const char *body, size_t len, const char *what,
	       char *detail, size_t detailsz)
{
	json_t *root;
	json_t *code;
	const char *msg = NULL, *ccode = NULL;
	int r;

	root = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
	if (json_is_object(root)) {
		msg = json_string_value(json_object_get(root, "message"));
		code = json_object_get(root, "code");
		if (json_is_string(code))
			ccode = json_string_value(code);	/* a Connect error */
	}
	if (ccode != NULL) {
		r = e2b_connect_code_error(ccode);
	} else {
		switch (status) {
		case 400: case 422: r = SP_EINVAL; break;
		case 401: case 403: r = SP_EPROVIDER; break;
		case 404: r = SP_ENOTFOUND; break;
		case 409: r = SP_ECONFLICT; break;
		case 429: r = e2b_is_concurrency_429(status, body) ? SP_ELIMIT : SP_EUNAVAIL; break;
		case 502:
			/* The envd proxy's "The sandbox was not found" (integer code). */
			r = msg != NULL && strstr(msg, "not found") != NULL ? SP_ENOTFOUND : SP_EUNAVAIL;
			break;
		case 504: r = SP_ETIMEDOUT; break;
		case 507: r = SP_ELIMIT; break;
		default: r = status >= 500 ? SP_EUNAVAIL : SP_EPROVIDER; break;
		}
	}
	if (status == 401)
		snprintf(detail, detailsz, "%s: HTTP 401: credentials refused (%.120s)", what,
			 msg != NULL ? msg : "no message");
	else
		snprintf(detail, detailsz, "%s: HTTP %ld%s%s: %.200s", what, status,
			 ccode != NULL ? " " : "", ccode != NULL ? ccode : "",
			 msg != NULL ? msg : "(no message)");
	detail_clean(detail);
	json_decref(root);
	return r;
}

/* ---------------------------------------------------------------- retries */

enum e2b_retry_class
e2b_retry_classify(int status, long http, const char *body)
{
	if (status == SP_ECANCELED || status == -E2BIG || status == -ENOMEM)
		return E2B_RETRY_NO;
	if (status == SP_EUNAVAIL)
		return E2B_RETRY_YES;		/* could not connect: nothing was sent */
	if (status < 0)
		return E2B_RETRY_AMBIGUOUS;	/* cut or timed out after sending */
	if (http == 429)
		return e2b_is_concurrency_429(http, body) ? E2B_RETRY_NO : E2B_RETRY_YES;
	if (http == 503)
		return E2B_RETRY_YES;
	if (http == 500 || http == 502 || http == 504)
		return E2B_RETRY_AMBIGUOUS;
	return E2B_RETRY_NO;
}

int64_t
e2b_retry_delay(const struct e2b_retry_policy *pol, unsigned attempt,
		uint64_t elapsed_ms, const char *retry_after, uint32_t rnd)
{
	uint64_t d;
	char *end;
	unsigned long long ra;

	if (attempt == 0 || attempt > pol->max_retries)
		return -1;
	if (retry_after != NULL && isdigit((unsigned char)retry_after[0])) {
		errno = 0;
		ra = strtoull(retry_after, &end, 10);
		if (errno != 0 || ra > 86400)
			return -1;
		/* Honour it, plus a little jitter so a crowd does not return at once. */
		d = ra * 1000 + rnd % 250;
	} else {
		d = pol->base_ms;
		for (unsigned i = 1; i < attempt && d < pol->cap_ms; i++)
			d *= 2;
		if (d > pol->cap_ms)
			d = pol->cap_ms;
		d = d / 2 + (d / 2 != 0 ? rnd % (d / 2 + 1) : 0);
	}
	if (elapsed_ms + d > pol->budget_ms)
		return -1;
	return (int64_t)d;
}

double
e2b_cost(double seconds, double cpus, double mem_mb, double per_vcpu_s, double per_gib_s)
{
	if (seconds <= 0)
		return 0;
	return seconds * (cpus * per_vcpu_s + mem_mb / 1024.0 * per_gib_s);
}

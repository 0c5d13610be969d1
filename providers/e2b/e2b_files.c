/*
 * Files in an E2B sandbox through envd's /files endpoint (octet-stream
 * upload, plain download), and start(): refresh the sandbox's timeout, upload
 * the spec's files directory (read on the threadpool, bounded) and start the
 * main command in the background through the process service. Host files are
 * never read on the loop thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2b.h"

static char *
path_enc(const char *s)
{
	char *o = e2b_xmalloc(strlen(s) * 3 + 1), *d = o;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~' || c == '/')
			*d++ = (char)c;
		else
			d += sprintf(d, "%%%02X", c);
	}
	*d = '\0';
	return o;
}

/* ---------------------------------------------------------------- upload */

struct xfer_ctx {
	struct e2b *e;
	char *ref;
	sp_done_cb done;
	e2b_download_cb got;
	void *arg;
	char *path;
	const void *data;		/* upload: borrowed until the call is built */
	size_t len;
	size_t max;
};

static void
xfer_free(struct xfer_ctx *x)
{
	struct e2b_sbx *sb = e2b_sbx_find(x->e, x->ref);

	if (sb != NULL && sb->busy > 0)
		sb->busy--;
	free(x->ref);
	free(x->path);
	free(x);
}

static void
upload_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct xfer_ctx *x = c->arg;
	char detail[320];
	int r = 0;

	if (status < 0) {
		r = status;
		snprintf(detail, sizeof(detail), "upload %s: %s", x->path, sp_strerror(status));
	} else if (resp->status != 200 && resp->status != 204) {
		r = e2b_http_error(resp->status, resp->body, resp->body_len, "upload", detail,
				   sizeof(detail));
	}
	x->done(x->arg, r, r < 0 ? detail : NULL);
	xfer_free(x);
}

static void
download_done(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct xfer_ctx *x = c->arg;
	char detail[320];
	int r = 0;

	if (status < 0) {
		r = status;
		snprintf(detail, sizeof(detail), "download %s: %s%s", x->path, sp_strerror(status),
			 status == -E2BIG ? " (larger than the limit)" : "");
	} else if (resp->status != 200) {
		r = e2b_http_error(resp->status, resp->body, resp->body_len, "download", detail,
				   sizeof(detail));
	}
	x->got(x->arg, r, r < 0 ? NULL : resp->body, r < 0 ? 0 : resp->body_len,
	       r < 0 ? detail : NULL);
	xfer_free(x);
}

static int
xfer_go(struct xfer_ctx *x, struct e2b_sbx *sb)
{
	static const char *const up[] = { "Content-Type: application/octet-stream", NULL };
	struct e2b *e = x->e;
	struct e2b_call *c;
	char *enc = path_enc(x->path), *q, *url;
	int r;

	q = e2b_xasprintf("/files?path=%s", enc);
	url = e2b_envd_url(e, sb, q);
	if (x->done != NULL) {
		c = e2b_call_new(e, "POST", url, e2b_envd_headers(e, sb, up), x->data, x->len,
				 upload_done, x);
	} else {
		c = e2b_call_new(e, "GET", url, e2b_envd_headers(e, sb, NULL), NULL, 0,
				 download_done, x);
		c->max_body = x->max;
	}
	/* Big files take longer than a control-plane call. */
	c->timeout_ms = e->request_timeout_ms + x->len / 1024;
	x->data = NULL;
	free(enc);
	free(q);
	free(url);
	if ((r = e2b_call_start(c)) == 0) {
		sb->busy++;
		if (uv_now(e->host->loop) - sb->refreshed_ms >= (uint64_t)e->timeout_s * 1000 / 3)
			e2b_sbx_refresh(e, sb);
	}
	return r;
}

static int
xfer_start(struct e2b *e, const char *ref, const char *path, struct xfer_ctx **ret)
{
	struct e2b_sbx *sb;
	struct xfer_ctx *x;

	if (e->closing)
		return SP_ECANCELED;
	if (path == NULL || path[0] == '\0' || strlen(path) > 4096)
		return SP_EINVAL;
	/* A record is needed for the access token; start() or exec() fetch it. */
	if ((sb = e2b_sbx_find(e, ref)) == NULL)
		return SP_ENOTFOUND;
	x = e2b_xcalloc(1, sizeof(*x));
	x->e = e;
	x->ref = e2b_xstrdup(ref);
	x->path = e2b_xstrdup(path);
	*ret = x;
	return 0;
}

int
e2b_upload(struct e2b *e, const char *ref, const char *path, const void *data, size_t len,
	   sp_done_cb cb, void *arg)
{
	struct xfer_ctx *x;
	int r;

	if (len > E2B_MAX_UPLOAD)
		return SP_ELIMIT;
	if ((r = xfer_start(e, ref, path, &x)) < 0)
		return r;
	x->done = cb;
	x->arg = arg;
	x->data = data;
	x->len = len;
	if ((r = xfer_go(x, e2b_sbx_find(e, ref))) < 0) {
		free(x->ref);
		free(x->path);
		free(x);
	}
	return r;
}

int
e2b_download(struct e2b *e, const char *ref, const char *path, size_t max,
	     e2b_download_cb cb, void *arg)
{
	struct xfer_ctx *x;
	int r;

	if ((r = xfer_start(e, ref, path, &x)) < 0)
		return r;
	x->got = cb;
	x->arg = arg;
	x->max = max != 0 ? max : E2B_MAX_UPLOAD;
	if ((r = xfer_go(x, e2b_sbx_find(e, ref))) < 0) {
		free(x->ref);
		free(x->path);
		free(x);
	}
	return r;
}

/* ---------------------------------------------------------------- boot */

struct boot_file {
	char *name;			/* base name inside files_path */
	char *data;
	size_t len;
};

struct boot_ctx {
	struct e2b *e;
	char *ref;
	sp_done_cb cb;
	void *arg;
	uv_work_t work;
	char *dir;			/* host files_dir, or NULL */
	const char *worker;		/* host worker binary, when cmd is NULL */
	struct boot_file files[E2B_MAX_UPLOAD_FILES + 1];
	size_t nfiles, next;
	int read_err;
	char detail[320];
	bool counted;			/* holds e->pending while on the threadpool */
};

static void boot_next(struct boot_ctx *b);

static void
boot_free(struct boot_ctx *b)
{
	for (size_t i = 0; i < b->nfiles; i++) {
		free(b->files[i].name);
		free(b->files[i].data);
	}
	free(b->dir);
	free(b->ref);
	free(b);
}

static void
boot_finish(struct boot_ctx *b, int status, const char *detail)
{
	struct e2b *e = b->e;
	bool counted = b->counted;

	b->cb(b->arg, status, detail);
	boot_free(b);
	if (counted) {
		e->pending--;
		e2b_pending_done(e);
	}
}

/* Threadpool: read one regular file, bounded. */
static int
boot_read(const char *path, const char *name, struct boot_file *f, size_t *total,
	  char *detail, size_t sz)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		snprintf(detail, sz, "start: %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return 1;		/* not a regular file: skipped */
	}
	if ((size_t)st.st_size > E2B_MAX_UPLOAD || *total + (size_t)st.st_size > E2B_MAX_UPLOAD) {
		close(fd);
		snprintf(detail, sz, "start: %s: files larger than the upload limit", path);
		return SP_ELIMIT;
	}
	f->data = e2b_xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		n = read(fd, f->data + got, (size_t)st.st_size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	f->len = got;
	f->name = e2b_xstrdup(name);
	*total += got;
	return 0;
}

static void
boot_work(uv_work_t *w)
{
	struct boot_ctx *b = w->data;
	struct dirent *de;
	size_t total = 0;
	char *path;
	DIR *d;
	int r;

	if (b->dir != NULL) {
		if ((d = opendir(b->dir)) == NULL) {
			b->read_err = -errno;
			snprintf(b->detail, sizeof(b->detail), "start: files %s: %s", b->dir,
				 strerror(errno));
			return;
		}
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			if (b->nfiles >= E2B_MAX_UPLOAD_FILES) {
				b->read_err = SP_ELIMIT;
				snprintf(b->detail, sizeof(b->detail), "start: files %s: more than "
					 "%d files", b->dir, E2B_MAX_UPLOAD_FILES);
				break;
			}
			path = e2b_xasprintf("%s/%s", b->dir, de->d_name);
			r = boot_read(path, de->d_name, &b->files[b->nfiles], &total, b->detail,
				      sizeof(b->detail));
			free(path);
			if (r < 0) {
				b->read_err = r;
				break;
			}
			if (r == 0)
				b->nfiles++;
		}
		closedir(d);
	}
	if (b->read_err == 0 && b->worker != NULL) {
		r = boot_read(b->worker, "sandpit-worker", &b->files[b->nfiles], &total, b->detail,
			      sizeof(b->detail));
		if (r < 0)
			b->read_err = r;
		else if (r == 0)
			b->nfiles++;
	}
}

static void
boot_read_done(uv_work_t *w, int status)
{
	struct boot_ctx *b = w->data;

	if (b->e->closing || status == UV_ECANCELED) {
		boot_finish(b, SP_ECANCELED, "start: canceled");
		return;
	}
	if (b->read_err < 0) {
		boot_finish(b, b->read_err, b->detail);
		return;
	}
	boot_next(b);
}

static void
boot_started(void *arg, int status, const char *detail)
{
	struct boot_ctx *b = arg;
	struct e2b_sbx *sb;

	if (status == 0 && (sb = e2b_sbx_find(b->e, b->ref)) != NULL)
		sb->booted = true;
	boot_finish(b, status, status < 0 ? detail : NULL);
}

static void
boot_uploaded(void *arg, int status, const char *detail)
{
	struct boot_ctx *b = arg;

	if (status < 0) {
		boot_finish(b, status, detail);
		return;
	}
	b->next++;
	boot_next(b);
}

/* Upload the next file, or start the main command when all are there. */
static void
boot_next(struct boot_ctx *b)
{
	struct e2b *e = b->e;
	struct e2b_sbx *sb = e2b_sbx_find(e, b->ref);
	/*
	 * The worker reads token, ca.pem and endpoint from --dir, which is
	 * where they were uploaded: the command's cwd. $PWD rather than
	 * files_path, so an emulator that runs commands under a host
	 * directory (no mount namespace) still points it at its own files.
	 */
	static const char *const worker_argv[] = {
		"/bin/sh", "-c", "chmod 0755 sandpit-worker && exec ./sandpit-worker --dir \"$PWD\" "
		"--work \"$HOME\"",
		NULL,
	};
	char *path;
	int r;

	if (e->closing) {
		boot_finish(b, SP_ECANCELED, "start: canceled");
		return;
	}
	if (sb == NULL) {
		boot_finish(b, SP_ENOTFOUND, "start: the sandbox went away");
		return;
	}
	if (b->next < b->nfiles) {
		path = e2b_xasprintf("%s/%s", e->files_path, b->files[b->next].name);
		r = e2b_upload(e, b->ref, path, b->files[b->next].data, b->files[b->next].len,
			       boot_uploaded, b);
		free(path);
		if (r < 0)
			boot_finish(b, r, "start: could not start an upload");
		return;
	}
	if (sb->cmd == NULL && b->worker == NULL) {
		boot_started(b, 0, NULL);
		return;
	}
	/* The command runs in files_path when files went there, so it finds them
	 * by relative names; envd keeps it running after we stop listening. */
	r = e2b_exec_background(e, b->ref, sb->cmd != NULL ? (const char *const *)sb->cmd :
				worker_argv, b->nfiles > 0 ? e->files_path : NULL, boot_started, b);
	if (r < 0)
		boot_finish(b, r, "start: could not start the main command");
}

static void
boot_refreshed(struct e2b_call *c, int status, const struct sp_http_resp *resp)
{
	struct boot_ctx *b = c->arg;
	struct e2b *e = b->e;
	struct e2b_sbx *sb;
	char detail[320];
	int r;

	if (status < 0 || resp->status != 204) {
		if (status < 0) {
			r = status;
			snprintf(detail, sizeof(detail), "start: timeout refresh: %s",
				 sp_strerror(status));
		} else {
			r = e2b_http_error(resp->status, resp->body, resp->body_len,
					   "start: timeout refresh", detail, sizeof(detail));
		}
		boot_finish(b, r, detail);
		return;
	}
	if ((sb = e2b_sbx_find(e, b->ref)) == NULL || sb->booted ||
	    (sb->cmd == NULL && sb->files_dir == NULL && e->host->worker_binary == NULL)) {
		boot_finish(b, 0, NULL);
		return;
	}
	if (sb->files_dir != NULL)
		b->dir = e2b_xstrdup(sb->files_dir);
	if (sb->cmd == NULL)
		b->worker = e->host->worker_binary;
	b->work.data = b;
	b->counted = true;
	e->pending++;
	if ((r = uv_queue_work(e->host->loop, &b->work, boot_work, boot_read_done)) < 0)
		boot_finish(b, r, "start: could not queue the file read");
}

static void
boot_got_sbx(void *arg, int status, struct e2b_sbx *sb, const char *detail)
{
	struct boot_ctx *b = arg;
	struct e2b_call *c;
	char *url, *body;
	int r;

	if (status < 0) {
		boot_finish(b, status, detail);
		return;
	}
	url = e2b_xasprintf("%s/sandboxes/%s/timeout", b->e->api_url, b->ref);
	body = e2b_xasprintf("{\"timeout\":%lld}", (long long)b->e->timeout_s);
	sb->refreshed_ms = uv_now(b->e->host->loop);
	c = e2b_call_new(b->e, "POST", url, e2b_api_headers(b->e, true), body, strlen(body),
			 boot_refreshed, b);
	free(url);
	free(body);
	if ((r = e2b_call_start(c)) < 0)
		boot_finish(b, r, "start: could not start the timeout refresh");
}

int
e2b_boot(struct e2b *e, const char *ref, sp_done_cb cb, void *arg)
{
	struct boot_ctx *b;
	struct e2b_call *c;
	char *url, *body;
	int r;

	b = e2b_xcalloc(1, sizeof(*b));
	b->e = e;
	b->ref = e2b_xstrdup(ref);
	b->cb = cb;
	b->arg = arg;
	if (e2b_sbx_find(e, ref) == NULL) {
		/* After a restart: fetch the record (and token) first. */
		if ((r = e2b_sbx_fetch(e, ref, boot_got_sbx, b)) < 0)
			boot_free(b);
		return r;
	}
	url = e2b_xasprintf("%s/sandboxes/%s/timeout", e->api_url, ref);
	body = e2b_xasprintf("{\"timeout\":%lld}", (long long)e->timeout_s);
	c = e2b_call_new(e, "POST", url, e2b_api_headers(e, true), body, strlen(body),
			 boot_refreshed, b);
	free(url);
	free(body);
	if ((r = e2b_call_start(c)) < 0)
		boot_free(b);
	else
		e2b_sbx_find(e, ref)->refreshed_ms = uv_now(e->host->loop);
	return r;
}

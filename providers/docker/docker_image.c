/*
 * docker_image: the worker image without a registry. A work thread reads
 * busybox and sandpit-worker (with its shared libraries when it is not
 * static), hashes them and writes a root filesystem tarball in memory
 * (libarchive); the loop then asks the engine whether the image carries that
 * hash and imports the tarball when it does not. One build runs at a time;
 * later callers wait for it. Never blocks the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "docker_internal.h"

#define IMAGE_FILE_MAX		(256u << 20)
#define IMAGE_APPLETS_MAX	(64u << 10)
#define IMAGE_WORKER_PATH	"usr/local/bin/sandpit-worker"
#define IMAGE_LIBS_MAX		64

extern char **environ;

struct image_buf {
	unsigned char *data;
	size_t len, cap;
};

struct image_lib {
	char *path;			/* without the leading '/' */
	struct image_buf data;
};

static int
image_read_file(const char *path, struct image_buf *b, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > IMAGE_FILE_MAX) {
		snprintf(err, errlen, "%s is not a regular file of at most 256 MiB", path);
		close(fd);
		return SP_ECONFIG;
	}
	b->data = docker_xrealloc(NULL, (size_t)st.st_size + 1);
	b->len = 0;
	while (b->len < (size_t)st.st_size) {
		n = read(fd, b->data + b->len, (size_t)st.st_size - b->len);
		if (n <= 0) {
			snprintf(err, errlen, "cannot read %s", path);
			close(fd);
			return -EIO;
		}
		b->len += (size_t)n;
	}
	close(fd);
	return 0;
}

/* Run argv without a shell and read its stdout (bounded); *status gets its exit. */
static int
image_run(char *const argv[], struct image_buf *out, int *status)
{
	posix_spawn_file_actions_t fa;
	int pfd[2], st;
	pid_t pid;
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pfd[0]);
		close(pfd[1]);
		return -ENOENT;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	out->data = docker_xrealloc(NULL, IMAGE_APPLETS_MAX + 1);
	out->len = 0;
	while (out->len < IMAGE_APPLETS_MAX &&
	    (n = read(pfd[0], out->data + out->len, IMAGE_APPLETS_MAX - out->len)) > 0)
		out->len += (size_t)n;
	out->data[out->len] = '\0';
	close(pfd[0]);
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	return 0;
}

/* busybox --list: the applet names, one per line. */
static int
image_applets(const char *busybox, struct image_buf *out, char *err, size_t errlen)
{
	char *argv[] = { (char *)busybox, "--list", NULL };
	int status = 0;

	if (image_run(argv, out, &status) < 0 || status != 0) {
		snprintf(err, errlen, "%s --list failed", busybox);
		return SP_ECONFIG;
	}
	return 0;
}

/*
 * The shared libraries of a dynamically linked worker (a sanitizer build),
 * from ldd, so the image can still run it: the image has no libc of its own.
 * A static worker has none ("not a dynamic executable", exit 1).
 */
static int
image_libs(const char *worker, struct image_lib **ret, size_t *nret, char *err, size_t errlen)
{
	char *argv[] = { "/usr/bin/ldd", (char *)worker, NULL };
	struct image_buf out = { 0 };
	struct image_lib *libs = NULL;
	size_t n = 0, total = 0;
	char *line, *save, *path, *end;
	int status = 0, rc = 0;

	*ret = NULL;
	*nret = 0;
	if (access(argv[0], X_OK) != 0 || image_run(argv, &out, &status) < 0 || status != 0) {
		free(out.data);
		return 0;
	}
	for (line = strtok_r((char *)out.data, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if ((path = strstr(line, "=> ")) != NULL)
			path += 3;
		else
			path = line + strspn(line, " \t");
		if (*path != '/')
			continue;	/* linux-vdso, "not found" */
		if ((end = strchr(path, ' ')) != NULL)
			*end = '\0';
		if (n == IMAGE_LIBS_MAX) {
			rc = SP_ECONFIG;
			snprintf(err, errlen, "%s needs more than %d shared libraries", worker,
			    IMAGE_LIBS_MAX);
			break;
		}
		libs = docker_xrealloc(libs, (n + 1) * sizeof(*libs));
		memset(&libs[n], 0, sizeof(libs[n]));
		libs[n].path = docker_xstrdup(path + 1);
		if ((rc = image_read_file(path, &libs[n].data, err, errlen)) < 0) {
			free(libs[n].path);
			break;
		}
		total += libs[n].data.len;
		n++;
		if (total > IMAGE_FILE_MAX) {
			rc = SP_ECONFIG;
			snprintf(err, errlen, "the shared libraries of %s exceed 256 MiB", worker);
			break;
		}
	}
	free(out.data);
	*ret = libs;
	*nret = n;
	return rc;
}

static void
image_libs_free(struct image_lib *libs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(libs[i].path);
		free(libs[i].data.data);
	}
	free(libs);
}

static la_ssize_t
image_tar_write(struct archive *a, void *arg, const void *data, size_t len)
{
	struct image_buf *b = arg;

	if (b->len + len > b->cap) {
		size_t cap = b->cap == 0 ? (1u << 20) : b->cap;

		while (cap < b->len + len)
			cap *= 2;
		b->data = docker_xrealloc(b->data, cap);
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return (la_ssize_t)len;
}

static int
image_tar_entry(struct archive *a, const char *path, mode_t type, mode_t perm, int64_t uid,
		const void *data, size_t len, const char *link)
{
	struct archive_entry *e = archive_entry_new();
	int rc = 0;

	if (e == NULL)
		abort();
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_uid(e, uid);
	archive_entry_set_gid(e, uid);
	archive_entry_set_mtime(e, 0, 0);
	if (type == AE_IFREG)
		archive_entry_set_size(e, (la_int64_t)len);
	if (link != NULL)
		archive_entry_set_symlink(e, link);
	if (archive_write_header(a, e) != ARCHIVE_OK)
		rc = -EIO;
	else if (type == AE_IFREG && len > 0 && archive_write_data(a, data, len) != (la_ssize_t)len)
		rc = -EIO;
	archive_entry_free(e);
	return rc;
}

static int
image_tar(struct image_buf *tar, const struct image_buf *busybox,
	  const struct image_buf *worker, const struct image_lib *libs, size_t nlibs,
	  char *applets)
{
	static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
	    "nobody:x:65534:65534:nobody:/work:/bin/sh\n";
	static const char group[] = "root:x:0:\nnogroup:x:65534:\n";
	static const struct { const char *path; mode_t perm; int64_t uid; } dirs[] = {
		{ "bin", 0755, 0 }, { "etc", 0755, 0 }, { "tmp", 01777, 0 },
		{ "work", 0700, 65534 }, { "run", 0755, 0 }, { "run/sandpit", 0755, 0 },
		{ "usr", 0755, 0 }, { "usr/local", 0755, 0 }, { "usr/local/bin", 0755, 0 },
		{ "proc", 0555, 0 }, { "sys", 0555, 0 }, { "dev", 0755, 0 }, { "root", 0700, 0 },
	};
	struct archive *a;
	char *save, *name, path[128];
	int rc = 0;

	if ((a = archive_write_new()) == NULL)
		abort();
	archive_write_set_format_pax_restricted(a);
	if (archive_write_open(a, tar, NULL, image_tar_write, NULL) != ARCHIVE_OK) {
		archive_write_free(a);
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && rc == 0; i++)
		rc = image_tar_entry(a, dirs[i].path, AE_IFDIR, dirs[i].perm, dirs[i].uid,
		    NULL, 0, NULL);
	if (rc == 0)
		rc = image_tar_entry(a, "bin/busybox", AE_IFREG, 0755, 0, busybox->data,
		    busybox->len, NULL);
	if (rc == 0)
		rc = image_tar_entry(a, IMAGE_WORKER_PATH, AE_IFREG, 0755, 0, worker->data,
		    worker->len, NULL);
	for (size_t i = 0; i < nlibs && rc == 0; i++)
		rc = image_tar_entry(a, libs[i].path, AE_IFREG, 0755, 0, libs[i].data.data,
		    libs[i].data.len, NULL);
	if (rc == 0)
		rc = image_tar_entry(a, "etc/passwd", AE_IFREG, 0644, 0, passwd,
		    sizeof(passwd) - 1, NULL);
	if (rc == 0)
		rc = image_tar_entry(a, "etc/group", AE_IFREG, 0644, 0, group,
		    sizeof(group) - 1, NULL);
	for (name = strtok_r(applets, "\n", &save); name != NULL && rc == 0;
	    name = strtok_r(NULL, "\n", &save)) {
		if (strcmp(name, "busybox") == 0 || strchr(name, '/') != NULL ||
		    strlen(name) > 64 || name[0] == '.' || name[0] == '\0')
			continue;
		snprintf(path, sizeof(path), "bin/%s", name);
		rc = image_tar_entry(a, path, AE_IFLNK, 0777, 0, NULL, 0, "busybox");
	}
	if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
		rc = -EIO;
	archive_write_free(a);
	return rc;
}

/* The work thread: touches only the image struct and the read-only directives. */
static void
image_work(uv_work_t *w)
{
	struct docker *d = w->data;
	struct docker_image *im = &d->image;
	struct image_buf bb = { 0 }, wk = { 0 }, applets = { 0 }, tar = { 0 };
	struct image_lib *libs = NULL;
	size_t nlibs = 0;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int rc;

	im->work_detail[0] = '\0';
	if (d->host->worker_binary == NULL) {
		snprintf(im->work_detail, sizeof(im->work_detail),
		    "no sandpit-worker binary is configured");
		rc = SP_ECONFIG;
		goto out;
	}
	if ((rc = image_read_file(d->busybox, &bb, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((rc = image_read_file(d->host->worker_binary, &wk, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((rc = image_libs(d->host->worker_binary, &libs, &nlibs, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		abort();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, bb.data, bb.len);
	EVP_DigestUpdate(ctx, wk.data, wk.len);
	im->asan = false;
	for (size_t i = 0; i < nlibs; i++) {
		if (strstr(libs[i].path, "libasan") != NULL)
			im->asan = true;
		EVP_DigestUpdate(ctx, libs[i].path, strlen(libs[i].path) + 1);
		EVP_DigestUpdate(ctx, libs[i].data.data, libs[i].data.len);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(im->content + 2 * i, 3, "%02x", md[i]);

	if ((rc = image_applets(d->busybox, &applets, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((rc = image_tar(&tar, &bb, &wk, libs, nlibs, (char *)applets.data)) < 0) {
		snprintf(im->work_detail, sizeof(im->work_detail), "cannot write the image tarball");
		free(tar.data);
		goto out;
	}
	im->tar = tar.data;
	im->tar_len = tar.len;
out:
	im->work_status = rc;
	free(bb.data);
	free(wk.data);
	free(applets.data);
	image_libs_free(libs, nlibs);
}

static void
image_finish(struct docker *d, int status, const char *detail)
{
	struct docker_image *im = &d->image;
	struct docker_waiter *w = im->waiters, *next;
	char buf[300];

	im->waiters = NULL;
	im->busy = false;
	free(im->tar);
	im->tar = NULL;
	im->tar_len = 0;
	if (status == 0) {
		im->ok = true;
		snprintf(buf, sizeof(buf), "%s:%s", im->repo, im->tag);
		detail = buf;
	}
	for (; w != NULL; w = next) {
		next = w->next;
		w->cb(w->arg, status, detail);
		free(w);
	}
	docker_unref(d);
}

static void
image_imported(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;
	char buf[DOCKER_DETAIL_MAX + 64];
	const char *p, *end;

	if (status < 0) {
		image_finish(d, status, detail);
		return;
	}
	/* A stream of JSON progress objects; an "error" in any of them failed it. */
	for (p = r->raw, end = r->raw + r->raw_len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		json_t *j = json_loadb(p, len, 0, NULL);
		const char *err = json_string_value(json_object_get(j, "error"));

		if (err != NULL) {
			snprintf(buf, sizeof(buf), "docker: image import: %.*s",
			    DOCKER_DETAIL_MAX, err);
			json_decref(j);
			image_finish(d, SP_EPROVIDER, buf);
			return;
		}
		json_decref(j);
		p += len + 1;
	}
	image_finish(d, 0, NULL);
}

static void
image_import(struct docker *d)
{
	struct docker_image *im = &d->image;
	struct docker_req req = { .method = "POST", .body = im->tar, .body_len = im->tar_len,
				  .content_type = "application/x-tar", .raw = true,
				  .timeout_ms = DOCKER_IMPORT_TIMEOUT_MS };
	char *changes[6], *esc[6], *path, *repo, *tag;
	int n = 5, rc;

	changes[0] = docker_xstrdup("CMD [\"/" IMAGE_WORKER_PATH "\"]");
	changes[1] = docker_xstrdup("USER 65534:65534");
	changes[2] = docker_xstrdup("WORKDIR /work");
	changes[3] = docker_xstrdup("ENV PATH=/usr/local/bin:/bin");
	changes[4] = docker_xprintf("LABEL " DOCKER_CONTENT_LABEL "=%s", im->content);
	/*
	 * An AddressSanitizer worker: LeakSanitizer needs ptrace, which the
	 * profile denies, and would turn every exit into a failure.
	 */
	if (im->asan)
		changes[n++] = docker_xstrdup("ENV ASAN_OPTIONS=detect_leaks=0");
	for (int i = 0; i < n; i++)
		esc[i] = docker_api_escape(changes[i]);
	repo = docker_api_escape(im->repo);
	tag = docker_api_escape(im->tag);
	path = docker_xprintf("/images/create?fromSrc=-&repo=%s&tag=%s&changes=%s&changes=%s"
	    "&changes=%s&changes=%s&changes=%s%s%s", repo, tag, esc[0], esc[1], esc[2], esc[3],
	    esc[4], n > 5 ? "&changes=" : "", n > 5 ? esc[5] : "");
	for (int i = 0; i < n; i++) {
		free(changes[i]);
		free(esc[i]);
	}
	free(repo);
	free(tag);
	req.path = path;
	rc = docker_api(d, &req, image_imported, d, NULL);
	free(path);
	if (rc < 0)
		image_finish(d, rc, "docker: cannot start the image import");
}

static void
image_inspected(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;
	const char *have;

	if (status < 0 && status != SP_ENOTFOUND) {
		image_finish(d, status, detail);
		return;
	}
	have = json_string_value(json_object_get(json_object_get(json_object_get(r->json,
	    "Config"), "Labels"), DOCKER_CONTENT_LABEL));
	if (status == 0 && have != NULL && strcmp(have, d->image.content) == 0) {
		image_finish(d, 0, NULL);
		return;
	}
	/* Missing, or built from other binaries: never run a stale worker. */
	image_import(d);
}

static void
image_after_work(uv_work_t *w, int status)
{
	struct docker *d = w->data;
	struct docker_image *im = &d->image;
	struct docker_req req = { .method = "GET" };
	char *name, *path;
	int rc;

	if (status == UV_ECANCELED || d->state == DOCKER_CLOSING) {
		image_finish(d, SP_ECANCELED, NULL);
		return;
	}
	if (im->work_status < 0) {
		image_finish(d, im->work_status, im->work_detail);
		return;
	}
	name = docker_xprintf("%s:%s", im->repo, im->tag);
	path = docker_xprintf("/images/%s/json", name);
	free(name);
	req.path = path;
	rc = docker_api(d, &req, image_inspected, d, NULL);
	free(path);
	if (rc < 0)
		image_finish(d, rc, "docker: cannot start the image inspect");
}

int
docker_image_ensure(struct docker *d, sp_done_cb cb, void *arg)
{
	struct docker_image *im = &d->image;
	struct docker_waiter *w, **tail;
	const char *name, *colon, *slash;
	int rc;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (im->repo == NULL) {
		name = d->host->worker_image != NULL ? d->host->worker_image :
		    "sandpit/worker:" SANDPIT_VERSION;
		colon = strrchr(name, ':');
		slash = strrchr(name, '/');
		if (colon != NULL && (slash == NULL || colon > slash)) {
			im->repo = docker_xprintf("%.*s", (int)(colon - name), name);
			im->tag = docker_xstrdup(colon + 1);
		} else {
			im->repo = docker_xstrdup(name);
			im->tag = docker_xstrdup("latest");
		}
	}
	w = docker_xcalloc(1, sizeof(*w));
	w->cb = cb;
	w->arg = arg;
	for (tail = &im->waiters; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = w;
	if (im->busy)
		return 0;
	im->busy = true;
	im->work.data = d;
	if ((rc = uv_queue_work(d->host->loop, &im->work, image_work, image_after_work)) < 0) {
		im->busy = false;
		im->waiters = NULL;
		free(w);
		return rc;
	}
	docker_ref(d);
	return 0;
}

int
docker_build_image(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	return docker_image_ensure(docker_of(p), cb, arg);
}

void
docker_image_cancel(struct docker *d)
{
	/* A build not yet started is dropped; one running finishes and is discarded. */
	if (d->image.busy)
		uv_cancel((uv_req_t *)&d->image.work);
}

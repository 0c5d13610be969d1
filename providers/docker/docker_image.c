/*
 * docker_image: the worker image without a registry. A work thread reads
 * busybox and sandpit-worker, hashes them and writes a root filesystem
 * tarball in memory (libarchive); the loop then asks the engine whether the
 * image carries that hash and imports the tarball when it does not. One build
 * runs at a time; later callers wait for it. Never blocks the loop.
 * sandpit-worker is linked dynamically (a static GnuTLS is not possible from
 * Debian's packages): the work thread runs ldd on it and puts every library
 * and the dynamic loader into the image at the paths ldd names.
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
#define IMAGE_LDD		"/usr/bin/ldd"

extern char **environ;

struct image_buf {
	unsigned char *data;
	size_t len, cap;
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

/* busybox --list, run without a shell; the applet names, one per line. */
static int
image_applets(const char *busybox, struct image_buf *out, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = { (char *)busybox, "--list", NULL };
	int pfd[2], status;
	pid_t pid;
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	if (posix_spawn(&pid, busybox, &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pfd[0]);
		close(pfd[1]);
		snprintf(err, errlen, "cannot run %s --list", busybox);
		return SP_ECONFIG;
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
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, errlen, "%s --list failed", busybox);
		return SP_ECONFIG;
	}
	return 0;
}

/* The worker's shared libraries: the paths ldd prints, read into memory. */
struct image_libs {
	char *path[IMAGE_LIBS_MAX];
	struct image_buf buf[IMAGE_LIBS_MAX];
	size_t n;
};

static void
image_libs_free(struct image_libs *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->path[i]);
		free(l->buf[i].data);
	}
	l->n = 0;
}

/*
 * ldd BINARY, run without a shell, and read every absolute path it names
 * ("libx.so => /lib/.../libx.so (0x…)" and the loader "/lib64/ld-…so (0x…)").
 * A static binary ("not a dynamic executable") has none.
 */
static int
image_libs(const char *binary, struct image_libs *l, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = { IMAGE_LDD, (char *)binary, NULL };
	struct image_buf out = { 0 };
	char *line, *save, *p, *end;
	int pfd[2], status, rc = 0;
	pid_t pid;
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	if (posix_spawn(&pid, IMAGE_LDD, &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pfd[0]);
		close(pfd[1]);
		snprintf(err, errlen, "cannot run %s %s", IMAGE_LDD, binary);
		return SP_ECONFIG;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	out.data = docker_xrealloc(NULL, IMAGE_APPLETS_MAX + 1);
	while (out.len < IMAGE_APPLETS_MAX &&
	    (n = read(pfd[0], out.data + out.len, IMAGE_APPLETS_MAX - out.len)) > 0)
		out.len += (size_t)n;
	out.data[out.len] = '\0';
	close(pfd[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
		free(out.data);
		snprintf(err, errlen, "%s %s failed", IMAGE_LDD, binary);
		return SP_ECONFIG;
	}
	for (line = strtok_r((char *)out.data, "\n", &save); line != NULL && rc == 0;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, "not found") != NULL) {
			snprintf(err, errlen, "%s needs a library ldd cannot find: %s", binary, line);
			rc = SP_ECONFIG;
			break;
		}
		p = strstr(line, "=> ");
		p = p != NULL ? p + 3 : line + strspn(line, " \t");
		if (*p != '/' || (end = strstr(p, " (")) == NULL)
			continue;
		*end = '\0';
		if (l->n == IMAGE_LIBS_MAX || strstr(p, "/../") != NULL) {
			snprintf(err, errlen, "%s: too many or odd library paths", binary);
			rc = SP_ECONFIG;
			break;
		}
		l->path[l->n] = docker_xstrdup(p);
		rc = image_read_file(p, &l->buf[l->n], err, errlen);
		l->n++;
	}
	free(out.data);
	return rc;
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

/* Add dirs of path ("lib/x86_64-linux-gnu/libuv.so.1") not yet in the tarball. */
static int
image_tar_parents(struct archive *a, const char *path, char (*made)[128], size_t *nmade)
{
	char dir[128];
	const char *p;
	size_t i;
	int rc;

	for (p = strchr(path, '/'); p != NULL; p = strchr(p + 1, '/')) {
		if ((size_t)(p - path) >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, (size_t)(p - path));
		dir[p - path] = '\0';
		for (i = 0; i < *nmade && strcmp(made[i], dir) != 0; i++)
			;
		if (i < *nmade)
			continue;
		if (*nmade == 32 || strcmp(dir, "usr") == 0 || strcmp(dir, "usr/local") == 0 ||
		    strcmp(dir, "usr/local/bin") == 0 || strcmp(dir, "etc") == 0)
			continue;
		snprintf(made[(*nmade)++], 128, "%s", dir);
		if ((rc = image_tar_entry(a, dir, AE_IFDIR, 0755, 0, NULL, 0, NULL)) < 0)
			return rc;
	}
	return 0;
}

static int
image_tar(struct image_buf *tar, const struct image_buf *busybox,
	  const struct image_buf *worker, const struct image_libs *libs, char *applets)
{
	char made[32][128];
	size_t nmade = 0;
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
	for (size_t i = 0; i < libs->n && rc == 0; i++) {
		const char *rel = libs->path[i] + 1;

		rc = image_tar_parents(a, rel, made, &nmade);
		if (rc == 0)
			rc = image_tar_entry(a, rel, AE_IFREG, 0755, 0, libs->buf[i].data,
			    libs->buf[i].len, NULL);
	}
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
	struct image_libs libs = { .n = 0 };
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
	if ((rc = image_libs(d->host->worker_binary, &libs, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		abort();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, bb.data, bb.len);
	EVP_DigestUpdate(ctx, wk.data, wk.len);
	for (size_t i = 0; i < libs.n; i++) {
		EVP_DigestUpdate(ctx, libs.path[i], strlen(libs.path[i]) + 1);
		EVP_DigestUpdate(ctx, libs.buf[i].data, libs.buf[i].len);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(im->content + 2 * i, 3, "%02x", md[i]);

	if ((rc = image_applets(d->busybox, &applets, im->work_detail,
	    sizeof(im->work_detail))) < 0)
		goto out;
	if ((rc = image_tar(&tar, &bb, &wk, &libs, (char *)applets.data)) < 0) {
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
	image_libs_free(&libs);
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
	char *changes[5], *esc[5], *path, *repo, *tag;
	int rc;

	changes[0] = docker_xstrdup("CMD [\"/" IMAGE_WORKER_PATH "\"]");
	changes[1] = docker_xstrdup("USER 65534:65534");
	changes[2] = docker_xstrdup("WORKDIR /work");
	changes[3] = docker_xstrdup("ENV PATH=/usr/local/bin:/bin");
	changes[4] = docker_xprintf("LABEL " DOCKER_CONTENT_LABEL "=%s", im->content);
	for (int i = 0; i < 5; i++)
		esc[i] = docker_api_escape(changes[i]);
	repo = docker_api_escape(im->repo);
	tag = docker_api_escape(im->tag);
	path = docker_xprintf("/images/create?fromSrc=-&repo=%s&tag=%s&changes=%s&changes=%s"
	    "&changes=%s&changes=%s&changes=%s", repo, tag, esc[0], esc[1], esc[2], esc[3],
	    esc[4]);
	for (int i = 0; i < 5; i++) {
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

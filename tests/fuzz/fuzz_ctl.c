/*
 * libFuzzer target for ctl's request handling: each input is written as raw
 * bytes to a real connection on a ctl server (one loop and socket for the
 * whole run), then the write side is shut; the server must parse, route,
 * answer or refuse, and close, with no crash, leak or sanitizer report.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sandpit/error.h>

#include "ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	uv_loop_t loop;
	struct ctl *ctl;
	char path[108];
};

static void
h_json(struct ctl_req *req, void *arg)
{
	json_t *j = ctl_req_json(req);

	if (j == NULL)
		return;
	ctl_reply_json(req, 201, j);
}

static void
h_params(struct ctl_req *req, void *arg)
{
	const char *t = ctl_req_tenant(req);
	size_t len;

	(void)ctl_req_body(req, &len);
	(void)ctl_req_header(req, "Content-Type");
	ctl_reply_json(req, 200, json_pack("{s:s,s:s?,s:s?,s:I}", "id", ctl_req_param(req, "id"),
	    "q", ctl_req_query(req, "q"), "tenant", t, "len", (json_int_t)len));
}

static void
h_stream(struct ctl_req *req, void *arg)
{
	ctl_stream_begin(req, 200, "application/x-ndjson");
	ctl_stream_write(req, "{\"a\":1}\n", 8);
	ctl_stream_write(req, "{\"b\":2}\n", 8);
	ctl_stream_end(req);
}

static void
h_err(struct ctl_req *req, void *arg)
{
	ctl_reply_err(req, SP_ECONFLICT, ctl_req_param(req, "id"));
}

static struct fz *
fz_get(void)
{
	static const struct ctl_limits lim = {
		.max_clients = 4, .max_body = 8192, .max_header = 4096,
		.max_stream_queue = 65536,
	};
	static struct fz *fz;
	char dir[] = "/tmp/sp-fuzz-XXXXXX";

	if (fz != NULL)
		return fz;
	fz = calloc(1, sizeof(*fz));
	if (fz == NULL || mkdtemp(dir) == NULL)
		abort();
	snprintf(fz->path, sizeof(fz->path), "%s/ctl.sock", dir);
	if (uv_loop_init(&fz->loop) != 0 || ctl_new(&fz->loop, &lim, &fz->ctl) != 0)
		abort();
	ctl_route_add(fz->ctl, "POST", "/v1/sandboxes", h_json, NULL);
	ctl_route_add(fz->ctl, "GET", "/v1/sandboxes/{id}", h_params, NULL);
	ctl_route_add(fz->ctl, "DELETE", "/v1/sandboxes/{id}", h_err, NULL);
	ctl_route_add(fz->ctl, "POST", "/v1/sandboxes/{id}/exec", h_stream, NULL);
	if (ctl_listen(fz->ctl, fz->path, (gid_t)-1) != 0)
		abort();
	return fz;
}

static void
client_readable(uv_poll_t *p, int status, int events)
{
	char buf[65536];
	ssize_t n;

	for (;;) {
		n = read(*(int *)p->data, buf, sizeof(buf));
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		break;
	}
	/* The server closed: this input is done. */
	uv_poll_stop(p);
	uv_stop(p->loop);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz *fz = fz_get();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uv_poll_t poll;
	int fd;

	/* Below the socket buffer, so one write takes it all. */
	if (size > 65536)
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		abort();
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fz->path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	shutdown(fd, SHUT_WR);
	uv_poll_init(&fz->loop, &poll, fd);
	poll.data = &fd;
	uv_poll_start(&poll, UV_READABLE | UV_DISCONNECT, client_readable);
	uv_run(&fz->loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&poll, NULL);
	uv_run(&fz->loop, UV_RUN_NOWAIT);
	close(fd);
	return 0;
}

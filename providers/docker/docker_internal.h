/*
 * The Docker provider's private state and the seams between its files:
 * docker.c (ops and state), docker_api.c (Engine API requests and error
 * mapping), docker_exec.c (exec and the stream demultiplexer), docker_image.c
 * (the worker image), docker_firewall.c (host firewall), docker_watch.c
 * (events). Everything here runs on the loop thread unless it says otherwise.
 */
#ifndef SANDPIT_DOCKER_INTERNAL_H
#define SANDPIT_DOCKER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/queue.h>

#include <jansson.h>
#include <uv.h>

#include <sandpit/provider.h>

/* Engine API versions: the oldest we accept and the newest we speak. */
#define DOCKER_API_MIN_MINOR	41
#define DOCKER_API_MAX_MINOR	44

#define DOCKER_DETAIL_MAX	512	/* bytes of a Docker error message we keep */
#define DOCKER_REQ_TIMEOUT_MS	60000	/* ordinary requests */
#define DOCKER_IMPORT_TIMEOUT_MS 300000

#define DOCKER_CONTENT_LABEL	"io.sandpit.content"

struct docker;
struct docker_call;

/* Allocation that aborts, as the core's xmalloc does (providers see no src/). */
void *docker_xcalloc(size_t n, size_t size);
void *docker_xrealloc(void *p, size_t size);
char *docker_xstrdup(const char *s);
char *docker_xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Completion of an Engine API call. status is 0 for a 2xx (or 304) reply, or
 * SP_ENOTFOUND (404), SP_ECONFLICT (409), SP_EPROVIDER (other HTTP errors),
 * SP_EPROTO (a reply we cannot parse), SP_EUNAVAIL / SP_ETIMEDOUT /
 * SP_ECANCELED (transport). reply is the parsed JSON body (borrowed, may be
 * NULL); raw/raw_len the body text; detail Docker's bounded message.
 */
struct docker_reply {
	long http;
	json_t *json;
	const char *raw;
	size_t raw_len;
	const char *api_version;	/* /_ping's Api-Version header */
};
typedef void (*docker_api_cb)(void *arg, int status, const struct docker_reply *r,
			      const char *detail);

struct docker_req {
	const char *method;
	const char *path;		/* "/containers/create?name=x", without the version */
	bool unversioned;		/* /_ping */
	json_t *json;			/* request body (borrowed), or NULL */
	const void *body;		/* or a raw body */
	size_t body_len;
	const char *content_type;	/* for the raw body */
	uint64_t timeout_ms;		/* 0: DOCKER_REQ_TIMEOUT_MS; streams pass UINT64_MAX */
	size_t max_body;
	bool raw;			/* do not parse the reply as JSON */
	sp_http_data_cb on_data;	/* stream the body instead of buffering */
	void *data_arg;
};

/*
 * Start a call. Returns 0 (cb fires later, exactly once) or a negative error
 * (no callback). *ret, if given, may be passed to docker_api_cancel() until
 * cb fires. Calls still pending at close are cancelled.
 */
int docker_api(struct docker *d, const struct docker_req *req, docker_api_cb cb, void *arg,
	       struct docker_call **ret);
void docker_api_cancel(struct docker_call *call);
void docker_api_cancel_all(struct docker *d);
/* Percent-encode s for a URL query or path (result is allocated). */
char *docker_api_escape(const char *s);
/* A JSON array of the strings of v; NULL if one is not UTF-8 or there are over max. */
json_t *docker_json_strv(const char *const *v, size_t max);
/* Map an HTTP error status to an SP_E* value. */
int docker_api_status(long http);

/* The stdout/stderr demultiplexer of a non-TTY exec stream. */
#define DOCKER_FRAME_MAX	(1u << 20)
struct docker_demux {
	uint8_t hdr[8];
	size_t hdr_len;
	size_t left;			/* payload bytes of the current frame still to come */
	int fd;
};
/*
 * Feed bytes as they arrive; complete payload pieces go to out(arg, fd, ...).
 * Returns 0, SP_EPROTO on a malformed header or oversized frame, or out's
 * negative return.
 */
int docker_demux_feed(struct docker_demux *m, const char *data, size_t len,
		      sp_output_cb out, void *arg);
/* True when the stream ended between frames. */
bool docker_demux_clean(const struct docker_demux *m);

struct docker_waiter {
	sp_done_cb cb;
	void *arg;
	struct docker_waiter *next;
};

struct docker_image {
	bool busy;			/* a build is in flight */
	bool ok;			/* the image is known current */
	struct docker_waiter *waiters;
	uv_work_t work;
	/* Filled by the work thread. */
	int work_status;
	char work_detail[256];
	char content[65];		/* sha256 hex of busybox + worker (+ its libraries) */
	bool asan;			/* the worker is an AddressSanitizer build */
	unsigned char *tar;
	size_t tar_len;
	char *repo, *tag;
};

struct docker_firewall {
	bool running;
	unsigned step;
	bool hook_docker_user;		/* DOCKER-USER exists: hook forward rules there */
	bool check_ok;
	uv_process_t proc;
	sp_done_cb cb;
	void *arg;
	char failed[256];		/* the first step that failed */
};

struct docker_watch {
	bool active;
	sp_event_cb cb;
	void *arg;
	struct docker_call *call;
	uv_timer_t timer;		/* reconnect backoff */
	uint64_t backoff_ms;
	char since[32];			/* last event time "sec.nanos" */
	char *line;			/* bounded line buffer */
	size_t line_len;
#define DOCKER_WATCH_OOM_RING	32
	char oom[DOCKER_WATCH_OOM_RING][72];	/* containers with a recent oom event */
	unsigned oom_next;
};

enum docker_state { DOCKER_NEW, DOCKER_INIT, DOCKER_READY, DOCKER_CLOSING };

struct docker {
	struct sp_provider *p;
	const struct sp_host *host;
	enum docker_state state;

	/* Directives. */
	char *socket, *network, *bridge, *subnet, *user, *runtime, *seccomp_path, *busybox;
	bool firewall;
	char *seccomp;			/* the profile, compact JSON text */

	char api[16];			/* "v1.41" */
	char gateway[64];		/* the network's gateway address */
	char *bridge_real;		/* the bridge interface actually in use */
	char *describe;

	unsigned refs;			/* pending calls, work items, handles */
	LIST_HEAD(, docker_call) calls;
	LIST_HEAD(, sp_exec) execs;
	uv_timer_t defer;		/* fires close's callback from the loop */
	bool defer_init;
	int init_status;		/* a configuration error init reports later */
	char init_detail[512];
	sp_done_cb init_cb, close_cb;
	void *init_arg, *close_arg;

	struct docker_image image;
	struct docker_firewall fw;
	struct docker_watch watch;
};

static inline struct docker *
docker_of(struct sp_provider *p)
{
	return p->priv;
}

/* A pending thing ends: drop a reference and finish close() when it was the last. */
void docker_ref(struct docker *d);
void docker_unref(struct docker *d);

/* docker_exec.c */
int docker_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
		sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret);
void docker_exec_cancel(struct sp_provider *p, struct sp_exec *ex);
void docker_exec_cancel_all(struct docker *d);

/* docker_image.c: make sure the worker image exists and matches the binaries. */
int docker_image_ensure(struct docker *d, sp_done_cb cb, void *arg);
int docker_build_image(struct sp_provider *p, sp_done_cb cb, void *arg);
void docker_image_cancel(struct docker *d);

/* docker_firewall.c: install the host rules; cb fires with 0 even when not enforced. */
int docker_firewall_start(struct docker *d, sp_done_cb cb, void *arg);
void docker_firewall_cancel(struct docker *d);
/* The names of the chains for a bridge (for tests and clean-up). */
void docker_firewall_chains(const char *bridge, char *in, char *fwd, size_t len);

/* docker_watch.c */
int docker_watch(struct sp_provider *p, sp_event_cb cb, void *arg);
void docker_watch_stop(struct docker *d);
/* Parse one event line into inst (strings borrowed from ev); false if not ours. */
bool docker_watch_parse(json_t *ev, struct sp_instance *inst);

/* Fill inst from a container's labels object (strings borrowed). */
void docker_labels(json_t *labels, struct sp_instance *inst);

#endif

/*
 * The E2B provider's internal contract, shared by its files and by its tests.
 *
 * e2b_proto.c holds the pure parts (Connect envelope framing, process events,
 * base64, the retry policy, error mapping): no I/O, no loop, unit-tested.
 * e2b.c holds the control plane and the request machinery with retries,
 * e2b_exec.c the process service, e2b_files.c the files API and the start-up
 * of a sandbox's main command. Only <sandpit/...> headers are included.
 */
#ifndef SANDPIT_E2B_H
#define SANDPIT_E2B_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include <sandpit/provider.h>

#define E2B_ENVD_PORT		49983
#define E2B_MAX_FRAME		(1u << 20)	/* largest Connect envelope accepted */
#define E2B_MAX_SANDBOXES	4096		/* records kept (tokens); older ones are refetched */
#define E2B_LIST_MAX_PAGES	100		/* 100 x 100 sandboxes per list */
#define E2B_MAX_UPLOAD		(64u << 20)	/* one file through POST /files */
#define E2B_MAX_UPLOAD_FILES	64		/* files taken from files_dir */

/* ---- allocation: abort on out-of-memory, as the core does (STYLE.md) ---- */
void *e2b_xmalloc(size_t n);
void *e2b_xcalloc(size_t n, size_t m);
void *e2b_xrealloc(void *p, size_t n);
char *e2b_xstrdup(const char *s);
char *e2b_xstrndup(const char *s, size_t n);
char *e2b_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- Connect envelopes (e2b_proto.c) ---- */

#define E2B_ENV_COMPRESSED	0x01
#define E2B_ENV_END		0x02

/*
 * Incremental parser of a Connect server-stream: 1 flag byte, 4-byte
 * big-endian length, then that many bytes of JSON. Bytes may arrive split
 * anywhere. Frames larger than max_frame, unknown or compressed flags and data
 * after the end-of-stream envelope are protocol errors.
 */
struct e2b_env_parser {
	uint8_t hdr[5];
	size_t hdr_len;
	uint32_t len;			/* payload length of the frame being read */
	char *buf;			/* payload so far (owned), NUL-terminated when full */
	size_t have;
	size_t max_frame;
	unsigned frames;		/* complete frames delivered */
	bool eos;			/* the end-of-stream envelope was delivered */
};

/* Called per complete frame; json is NUL-terminated. Return 0 or negative to stop. */
typedef int (*e2b_env_frame_cb)(void *arg, unsigned flags, const char *json, size_t len);

void e2b_env_init(struct e2b_env_parser *ps, size_t max_frame);
void e2b_env_done(struct e2b_env_parser *ps);
/*
 * Feed bytes. Returns 0, SP_EPROTO with a reason in why (static text) for a
 * framing error, or the callback's negative value. After an error the parser
 * must not be fed again.
 */
int e2b_env_feed(struct e2b_env_parser *ps, const char *data, size_t len,
		 e2b_env_frame_cb cb, void *arg, const char **why);
/* At end of body: 0 when the stream ended on a frame boundary after the end envelope. */
int e2b_env_finish(const struct e2b_env_parser *ps, const char **why);
/* Build one request envelope around json (malloc'd, *ret_len bytes). */
char *e2b_env_wrap(const char *json, size_t len, size_t *ret_len);

/* ---- process events (e2b_proto.c) ---- */

enum e2b_event_type { E2B_EV_START, E2B_EV_DATA, E2B_EV_KEEPALIVE, E2B_EV_END };

struct e2b_event {
	enum e2b_event_type type;
	int64_t pid;			/* START */
	int fd;				/* DATA: 1 stdout, 2 stderr (pty counts as 1) */
	char *data;			/* DATA: decoded bytes (owned; e2b_event_free) */
	size_t data_len;
	int exit_code;			/* END: shell-style: code, or 128+signal */
	bool signaled;			/* END: killed by a signal */
};

/* Parse a {"event":{...}} message. Returns 0 or SP_EPROTO with why (static text). */
int e2b_event_parse(const char *json, size_t len, struct e2b_event *ev, const char **why);
void e2b_event_free(struct e2b_event *ev);

/*
 * Parse the end-of-stream JSON: 0 on success ({} or no error), else the
 * sp_error for its Connect code, with code/message copied into detail.
 */
int e2b_eos_parse(const char *json, size_t len, char *detail, size_t detailsz);

/* Map a Connect error code name ("not_found") to an sp_error. */
int e2b_connect_code_error(const char *code);

/*
 * Map a non-2xx HTTP reply (control plane, envd proxy or Connect unary error)
 * to an sp_error and a detail "what: HTTP 429: Rate limit exceeded". The body
 * is read as E2B's {"code","message"} or Connect's {"code":"...","message"}.
 */
int e2b_http_error(long status, const char *body, size_t len, const char *what,
		   char *detail, size_t detailsz);
/* The reply is E2B's concurrency 429 (retrying will not help until a sandbox ends). */
bool e2b_is_concurrency_429(long status, const char *body);

/* Strict standard base64 (padding optional). Returns decoded length or -1. */
long e2b_b64_decode(const char *in, size_t len, char *out, size_t outsz);
/* Encode; out must hold 4 * ((len + 2) / 3) + 1 bytes. */
void e2b_b64_encode(const void *in, size_t len, char *out);

/* ---- retry policy (e2b_proto.c) ---- */

struct e2b_retry_policy {
	unsigned max_retries;		/* retries after the first attempt */
	uint64_t base_ms;		/* first backoff */
	uint64_t cap_ms;		/* largest backoff */
	uint64_t budget_ms;		/* no retry starts later than this after the first attempt */
};

enum e2b_retry_class {
	E2B_RETRY_NO,			/* final: success or an error retrying cannot fix */
	E2B_RETRY_YES,			/* nothing reached the server, or it said "try again" */
	E2B_RETRY_AMBIGUOUS,		/* the server may have acted: check before repeating */
};

/* Classify one outcome: transport status (0 or negative) and HTTP status. */
enum e2b_retry_class e2b_retry_classify(int status, long http, const char *body);

/*
 * The delay before retry number attempt (1 for the first retry), or -1 to
 * give up: attempts past max_retries, or a delay that would end past the
 * budget. Exponential backoff base*2^(attempt-1) capped at cap, with "equal
 * jitter" (half fixed, half random from rnd); a Retry-After header (seconds)
 * replaces the backoff when present.
 */
int64_t e2b_retry_delay(const struct e2b_retry_policy *pol, unsigned attempt,
			uint64_t elapsed_ms, const char *retry_after, uint32_t rnd);

/* Cost of running seconds at cpus vCPUs and mem_mb MiB, with per-second prices. */
double e2b_cost(double seconds, double cpus, double mem_mb, double per_vcpu_s, double per_gib_s);

/* ---- the provider's state (e2b.c) ---- */

struct e2b_sbx {
	TAILQ_ENTRY(e2b_sbx) entry;
	char *id;			/* sandboxID */
	char *token;			/* envdAccessToken, or NULL (not secure) */
	char *domain;			/* from the API, or NULL for e2b.domain */
	int busy;			/* execs and file transfers in flight */
	uint64_t refreshed_ms;		/* last timeout refresh (loop time) */
	char **cmd;			/* main command from the spec, or NULL (worker) */
	char *files_dir;		/* host directory to upload at start, or NULL */
	bool booted;			/* main command started */
};

struct e2b_call;
struct sp_exec;
struct init_ctx;

struct e2b {
	struct sp_provider *p;
	const struct sp_host *host;
	char *api_url;
	char *domain;
	char *envd_url;			/* template: {port} {sandbox} {domain} */
	char *api_key;			/* secret: never logged, never in a detail */
	char *key_header;		/* "X-API-Key: ..." */
	char *template_id;
	char *files_path;		/* where files_dir lands in the sandbox */
	char *worker_endpoint;		/* "ADDRESS PORT" for workers, or NULL */
	int64_t timeout_s;
	uint64_t request_timeout_ms;
	uint64_t keepalive_s;
	struct e2b_retry_policy retry;
	double price_vcpu_s, price_gib_s;
	char *describe;
	TAILQ_HEAD(, e2b_sbx) sbxs;
	size_t nsbx;
	TAILQ_HEAD(, e2b_call) calls;
	TAILQ_HEAD(, sp_exec) execs;
	unsigned pending;		/* calls and execs whose handles are still open */
	uv_timer_t tick;		/* timeout refresh of busy sandboxes */
	uv_timer_t defer;		/* reports a failure found inside init() */
	struct init_ctx *init;		/* the init in progress, or NULL */
	int handles_open;		/* tick and defer, until their close callbacks */
	bool closing, close_fired;
	sp_done_cb close_cb;
	void *close_arg;
	uint64_t seed;
};

/* What a finished call reports: status 0 and resp (any HTTP status), or a negative error. */
typedef void (*e2b_call_cb)(struct e2b_call *c, int status, const struct sp_http_resp *resp);

struct e2b_call {
	TAILQ_ENTRY(e2b_call) entry;
	struct e2b *e;
	char *method;
	char *url;
	char **headers;			/* NULL-terminated, owned */
	char *body;
	size_t body_len;
	uint64_t timeout_ms;
	size_t max_body;
	bool retry;			/* retry per the policy */
	bool fresh;			/* never on a reused connection: must not be resent unseen */
	/* Called instead of a resend after an ambiguous failure; must end in
	 * e2b_call_resend() or e2b_call_finish(). */
	void (*recheck)(struct e2b_call *c);
	unsigned attempt;
	uint64_t started_ms;
	uv_timer_t timer;
	struct sp_http_call *http;
	bool waiting;			/* timer armed */
	bool in_check;			/* recheck running */
	bool canceled;
	bool finished;
	e2b_call_cb cb;
	void *arg;
	char last[160];			/* the last failure, for a final detail */
};

/* The envd access token and routing headers of a sandbox call. */
char **e2b_envd_headers(struct e2b *e, const struct e2b_sbx *sb, const char *const *extra);
char *e2b_envd_url(struct e2b *e, const struct e2b_sbx *sb, const char *path);

struct e2b_call *e2b_call_new(struct e2b *e, const char *method, const char *url,
			      char **headers, const char *body, size_t body_len,
			      e2b_call_cb cb, void *arg);
/* Start the first attempt. Returns 0 or a negative error (the call is then freed). */
int e2b_call_start(struct e2b_call *c);
void e2b_call_resend(struct e2b_call *c);
/* Finish a call from outside its HTTP callback (recheck paths); resp may be NULL. */
void e2b_call_finish(struct e2b_call *c, int status, const struct sp_http_resp *resp);
char **e2b_api_headers(struct e2b *e, bool json);
void e2b_headers_free(char **h);

struct e2b_sbx *e2b_sbx_find(struct e2b *e, const char *id);
struct e2b_sbx *e2b_sbx_add(struct e2b *e, const char *id, const char *token, const char *domain);
void e2b_sbx_remove(struct e2b *e, const char *id);
/*
 * Fetch the record of sandbox id (GET /sandboxes/{id}: its access token) when
 * e2b_sbx_find() has none, e.g. after a restart. cb fires later, never
 * inside; returns 0 or a negative error.
 */
typedef void (*e2b_sbx_cb)(void *arg, int status, struct e2b_sbx *sb, const char *detail);
int e2b_sbx_fetch(struct e2b *e, const char *id, e2b_sbx_cb cb, void *arg);
/* Refresh the sandbox's timeout now (fire and forget). */
void e2b_sbx_refresh(struct e2b *e, struct e2b_sbx *sb);

void e2b_pending_done(struct e2b *e);
uint32_t e2b_rand(struct e2b *e);

/* ---- exec (e2b_exec.c) ---- */
int e2b_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
	     sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret);
void e2b_exec_cancel(struct sp_provider *p, struct sp_exec *ex);
void e2b_exec_cancel_all(struct e2b *e);
/*
 * Start argv in the background (envd runs it with no deadline; the stream is
 * dropped once its start event arrives). cb reports the pid in detail.
 */
int e2b_exec_background(struct e2b *e, const char *ref, const char *const *argv,
			const char *cwd, sp_done_cb cb, void *arg);
/* Send SIGTERM or SIGKILL (sig 15 or 9) to pid in sandbox ref. */
int e2b_signal(struct e2b *e, const char *ref, int64_t pid, int sig, sp_done_cb cb, void *arg);

/* ---- files (e2b_files.c) ---- */
/* Write data to path in the sandbox (parents created, file overwritten). */
int e2b_upload(struct e2b *e, const char *ref, const char *path, const void *data, size_t len,
	       sp_done_cb cb, void *arg);
/* Read path from the sandbox; cb gets the bytes (valid during the call). */
typedef void (*e2b_download_cb)(void *arg, int status, const char *data, size_t len,
				const char *detail);
int e2b_download(struct e2b *e, const char *ref, const char *path, size_t max,
		 e2b_download_cb cb, void *arg);
/* start(): refresh the timeout, upload files_dir, start the main command. */
int e2b_boot(struct e2b *e, const char *ref, sp_done_cb cb, void *arg);

#endif

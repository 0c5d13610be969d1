/*
 * The provider seam: the only contract between the core and a sandbox backend.
 *
 * A provider is a table of operations (struct sp_provider_ops) with a
 * capability bitmask and the size of its private state, which the core
 * allocates zeroed and hands back as p->priv. Every operation is
 * asynchronous: it returns 0 when it has started (the callback then fires
 * exactly once, later, from the loop, never inside the call) or a negative
 * error when it could not start (no callback fires). Optional hooks may be
 * NULL; the core calls every hook through the wrappers of its provider module
 * (src/provider.h), which answer -ENOTSUP for a missing one, so callers never
 * check for NULL.
 *
 * Strings handed to a callback are valid only during the callback.
 */
#ifndef SANDPIT_PROVIDER_H
#define SANDPIT_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/httpc.h>

struct sp_provider;

/* Capability bits. */
#define SP_CAP_EXEC	(1u << 0)	/* exec() runs commands in a running sandbox */
#define SP_CAP_LIST	(1u << 1)	/* list() enumerates this daemon's sandboxes */
#define SP_CAP_LOCAL	(1u << 2)	/* sandboxes run on this host */
#define SP_CAP_IMAGE	(1u << 3)	/* build_image() makes the worker image locally */
#define SP_CAP_EVENTS	(1u << 4)	/* watch() reports exits and OOM kills as they happen */

/* Labels every sandbox carries, so reconcile can find and match it. */
#define SP_LABEL_INSTANCE	"io.sandpit.instance"
#define SP_LABEL_SANDBOX	"io.sandpit.sandbox"
#define SP_LABEL_TENANT		"io.sandpit.tenant"
#define SP_LABEL_SPEC_HASH	"io.sandpit.spec-hash"

/* What the core lends a provider. Valid from init() until close() completes. */
struct sp_host {
	uv_loop_t *loop;
	struct sp_httpc *http;
	const char *instance;		/* this daemon's instance id (label value) */
	const char *state_dir;		/* the daemon's state directory */
	const char *worker_image;	/* "sandpit/worker:<version>" */
	const char *worker_binary;	/* path of the sandpit-worker binary on the host */
	uint16_t worker_port;		/* UDP port of the worker channel (the only port a sandbox may reach) */
	/* Look up a directive of this provider ("docker.socket"); NULL when unset. */
	const char *(*conf)(const struct sp_host *host, const char *name);
	/* Log a message (syslog priority, LOG_*); never pass a secret. */
	void (*log)(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
	void *core;			/* the core's own pointer; providers must not touch it */
};

/*
 * A provider-specific configuration directive, validated by the core's config
 * parser. host->conf() answers it normalised: SIZE and INT as plain decimal
 * (parse with strtoll), BOOL as "true" or "false", PATH absolute.
 */
enum sp_directive_type { SP_DIR_STRING, SP_DIR_INT, SP_DIR_BOOL, SP_DIR_SIZE, SP_DIR_PATH };
struct sp_directive {
	const char *name;		/* full name, "docker.socket" */
	enum sp_directive_type type;
	const char *def;		/* default value as text, or NULL */
	const char *help;		/* one line for sandpitd.conf.example */
};

/* What to create. Every limit is set; the core fills defaults from the config. */
struct sp_sandbox_spec {
	const char *id;			/* the core's sandbox id, "sb-0123456789ab" */
	const char *tenant;
	const char *image;		/* NULL: the worker image */
	const char *const *cmd;		/* NULL-terminated main command, or NULL for the worker */
	const char *spec_hash;		/* hash of the spec, for labels and pool matching */
	int64_t memory_bytes;		/* memory limit (swap is set equal: no swap) */
	int64_t nano_cpus;		/* CPU limit, 1e9 = one CPU */
	int64_t pids_limit;
	int64_t nofile;			/* RLIMIT_NOFILE soft = hard */
	int64_t tmp_bytes;		/* size of the /tmp tmpfs */
	int64_t work_bytes;		/* size of the /work tmpfs */
	const char *files_dir;		/* host directory mounted read-only at /run/sandpit, or NULL */
};

/* A sandbox as the provider sees it (list, status, watch). */
enum sp_instance_state {
	SP_INST_CREATED,		/* exists, not started */
	SP_INST_RUNNING,
	SP_INST_EXITED,			/* stopped; exit_code (and oom_killed) say how */
	SP_INST_GONE,			/* does not exist (any more) */
};
struct sp_instance {
	const char *ref;		/* provider reference (container id) */
	const char *sandbox_id;		/* the SP_LABEL_SANDBOX label, or NULL if absent */
	const char *tenant;
	const char *spec_hash;
	enum sp_instance_state state;
	int exit_code;
	bool oom_killed;
};

struct sp_exec_spec {
	const char *const *argv;	/* NULL-terminated, argv[0] looked up in PATH */
	const char *const *env;		/* NULL-terminated "K=V", or NULL */
	const char *workdir;		/* or NULL for /work */
	uint64_t timeout_ms;		/* 0 = none; on expiry the command is killed */
};

struct sp_exec_result {
	int exit_code;			/* 128+signal when killed by a signal */
	bool oom_killed;		/* the kernel's OOM killer ended it */
	bool timed_out;			/* timeout_ms expired and it was killed */
};

typedef void (*sp_done_cb)(void *arg, int status, const char *detail);
typedef void (*sp_create_cb)(void *arg, int status, const char *ref, const char *detail);
typedef void (*sp_list_cb)(void *arg, int status, const struct sp_instance *items, size_t n,
			   const char *detail);
typedef void (*sp_status_cb)(void *arg, int status, const struct sp_instance *inst,
			     const char *detail);
/* fd is 1 (stdout) or 2 (stderr). Return 0, or negative to abort the exec. */
typedef int (*sp_output_cb)(void *arg, int fd, const char *data, size_t len);
typedef void (*sp_exec_cb)(void *arg, int status, const struct sp_exec_result *res,
			   const char *detail);
/* An event from watch(): a sandbox exited, was OOM-killed or vanished. */
typedef void (*sp_event_cb)(void *arg, const struct sp_instance *inst);

struct sp_exec;				/* a running exec, for sp_provider_exec_cancel() */

struct sp_provider_ops {
	const char *name;
	unsigned caps;
	size_t priv_size;
	const struct sp_directive *directives;	/* NULL-terminated by name == NULL, or NULL */

	/* Prepare (negotiate the API, make the network, ...). Required. */
	int (*init)(struct sp_provider *p, sp_done_cb cb, void *arg);
	/* Cancel what is pending (callbacks fire with SP_ECANCELED) and release everything. */
	void (*close)(struct sp_provider *p, sp_done_cb cb, void *arg);

	int (*create)(struct sp_provider *p, const struct sp_sandbox_spec *spec,
		      sp_create_cb cb, void *arg);
	int (*start)(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg);
	int (*exec)(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
		    sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret);
	void (*exec_cancel)(struct sp_provider *p, struct sp_exec *ex);
	/* Remove the sandbox whatever its state; a sandbox already gone is success. */
	int (*destroy)(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg);
	/* Every sandbox labelled with this daemon's instance. */
	int (*list)(struct sp_provider *p, sp_list_cb cb, void *arg);
	int (*status)(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg);
	/* Optional: build the worker image; detail names it. */
	int (*build_image)(struct sp_provider *p, sp_done_cb cb, void *arg);
	/* Optional: report exits as they happen until close(). */
	int (*watch)(struct sp_provider *p, sp_event_cb cb, void *arg);
	/*
	 * Optional: facts for GET /v1/info (a JSON object as text, owned by the
	 * provider), valid after init. Keys the core reads when present:
	 * "gateway", the address a sandbox reaches the host at (the worker
	 * channel binds it); "user", "uid:gid" a sandbox runs as (owner of
	 * the files under spec.files_dir); "endpoint", "ADDRESS PORT" a
	 * sandbox's worker reaches the channel at (written into its endpoint
	 * file instead of the gateway; the channel's certificate names ADDRESS);
	 * "price_vcpu_second" and "price_gib_second" (numbers, currency units),
	 * what a sandbox costs when the prices directive names no price for the
	 * provider.
	 */
	const char *(*describe)(struct sp_provider *p);
};

struct sp_provider {
	const struct sp_provider_ops *ops;
	const struct sp_host *host;
	void *priv;			/* ops->priv_size bytes, zeroed, owned by the core */
};

/* The built providers, NULL-terminated (generated by the build). */
extern const struct sp_provider_ops *const sp_providers[];

#endif

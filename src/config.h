/*
 * sandpitd's configuration: a small line grammar, one directive per line,
 * "name value" with '#' comments and optional double quotes around a value.
 * Core directives fill struct config; provider directives (declared in each
 * provider's ops->directives, "docker.socket") are validated by type and kept
 * as text for config_get(). A file is parsed into a fresh struct, which the
 * caller swaps in only when the parse succeeded (SIGHUP).
 */
#ifndef SANDPIT_CONFIG_H
#define SANDPIT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <sandpit/provider.h>

#include "memory.h"

struct config_kv {
	char *name;
	char *value;
};

/*
 * A warm pool of one template: the repeatable directive
 *	pool "NAME SIZE [FIELD=VALUE …]"
 * FIELD is a sandbox spec field (provider, image, cpus, memory, pids,
 * nofile, tmp, work; sizes with k/m/g/t), each at most once; fields left out
 * take the sandbox defaults in force. NAME (a-z, 0-9, _ and -, at most
 * CONFIG_POOL_NAME_MAX) labels the pool's metrics; "default" is taken by
 * pool_size, which stays the default template's pool.
 */
#define CONFIG_POOLS_MAX	32
#define CONFIG_POOL_NAME_MAX	32
#define CONFIG_POOL_SIZE_MAX	1024
struct config_pool {
	char *name;
	unsigned size;			/* 0..CONFIG_POOL_SIZE_MAX */
	char *spec;			/* the template as a sandbox spec: JSON text, keys sorted */
	unsigned line;			/* where it was set */
};

struct config {
	char *file;			/* the file parsed, or NULL for the embedded defaults */

	char *state_dir;		/* state_dir: database, certificates, per-sandbox files */
	char *socket_path;		/* socket: the control socket */
	char *socket_group;		/* socket_group: group allowed besides root, or NULL */
	gid_t socket_gid;		/* resolved socket_group, or (gid_t)-1 */
	unsigned max_clients;		/* max_clients: concurrent control connections */
	size_t max_body;		/* max_body: request body bytes */
	size_t max_header;		/* max_header: request head bytes */
	int log_level;			/* log_level: err | warning | info | debug (LOG_*) */

	char *default_provider;		/* provider: placement policy ("auto", "local", a name) */
	unsigned max_sandboxes;		/* max_sandboxes: per host, starting + running */
	unsigned tenant_max_sandboxes;	/* tenant_max_sandboxes: per tenant, starting + running (swarms) */
	unsigned max_starts;		/* max_starts: sandboxes created at once on this host */
	unsigned burst_max_sandboxes;	/* burst_max_sandboxes: per non-local provider */
	char *untrusted_placement;	/* untrusted_placement: policy of untrusted swarms */
	uint64_t reconcile_interval_ms;	/* reconcile_interval */

	char *worker_image;		/* worker_image: "sandpit/worker:<version>" */
	char *worker_binary;		/* worker_binary: path, default next to sandpitd */
	uint16_t worker_port;		/* worker_port: UDP port of the worker channel */
	char *worker_listen;		/* worker_listen: addresses, space-separated; "gateway" = the provider's */
	uint64_t worker_token_ttl_ms;	/* worker_token_ttl: life of a worker token */
	uint64_t worker_idle_timeout_ms;	/* worker_idle_timeout: QUIC idle timeout */
	uint64_t worker_poll_ms;	/* worker_poll_timeout: longest wait of tasks/next */
	size_t worker_max_body;		/* worker_max_body: request body bytes on the channel */

	/* Sandbox limits: the defaults a request gets, and the most it may ask for. */
	int64_t sandbox_memory, sandbox_memory_max;	/* bytes */
	int64_t sandbox_cpus, sandbox_cpus_max;		/* nano-CPUs */
	int64_t sandbox_pids, sandbox_pids_max;
	int64_t sandbox_nofile;
	int64_t sandbox_tmp, sandbox_work;		/* tmpfs bytes */
	uint64_t exec_timeout_ms, exec_timeout_max_ms;
	char *prices;			/* prices: "PROVIDER CPU_S GIB_S; …" (pricing.h), or NULL */
	unsigned pool_size;		/* pool_size: warm sandboxes of the default template (0: none) */
	struct config_pool *pools;	/* pool: warm pools of other templates, in file order */
	size_t npools;

	/* memory_*: the ReasoningBank's settings (see memory.h); restart to change. */
	struct memory_config memory;

	struct config_kv *kv;		/* provider directives, as given or defaulted */
	size_t nkv;
};

/*
 * Parse path (or only the embedded defaults when path is NULL) into a new
 * struct. Directives of the given providers are accepted and type-checked.
 * On error returns SP_ECONFIG with "file:line: message" in err, and *ret is
 * untouched. Defaults that depend on the user (root or not) are applied here.
 */
int config_load(const char *path, const struct sp_provider_ops *const *providers,
		struct config **ret, char *err, size_t errlen);
void config_free(struct config *c);

/*
 * A provider directive's value (or its default), or NULL. Values are
 * normalised when parsed: SP_DIR_SIZE and SP_DIR_INT as plain decimal
 * ("64m" -> "67108864"), SP_DIR_BOOL as "true" or "false" (from yes/no,
 * true/false, on/off, 1/0), SP_DIR_PATH absolute, strings as written.
 */
const char *config_get(const struct config *c, const char *name);

/*
 * The prices directive ("docker 0.000014 0.0000025; e2b 0.00005 0.00001")
 * as a pricing table (*ret, the caller frees). SP_ECONFIG with err.
 */
struct pricing;
int config_prices(const char *value, struct pricing **ret, char *err, size_t errlen);

/* Parse "64m", "1g", "512k", "1024" into bytes; 0 or SP_ECONFIG. */
int config_parse_size(const char *s, int64_t *ret);
/* Parse "30s", "500ms", "5m", "1h" into milliseconds; 0 or SP_ECONFIG. */
int config_parse_duration(const char *s, uint64_t *ret);

#endif

/*
 * docker_firewall: the host rules that let a sandbox reach nothing on the
 * host but the daemon's worker UDP port on the gateway, and nothing through
 * it (other sandboxes, the outside). iptables runs through uv_spawn, one
 * idempotent step after another, never blocking the loop. Without privilege
 * or iptables it warns, naming what is not enforced, and init goes on. The
 * rules stay after close: sandboxes outlive a daemon restart.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "docker_internal.h"

enum fw_kind {
	FW_MUST,			/* failure: the firewall is not enforced */
	FW_IGNORE,			/* failure is fine (-N of an existing chain) */
	FW_CHECK,			/* success skips the next step (-C before -I) */
	FW_PROBE,			/* success sets hook_docker_user */
};

#define FW_ARGS_MAX	24

static const char *
fw_iptables(void)
{
	static const char *const paths[] = { "/usr/sbin/iptables", "/sbin/iptables",
					     "/usr/bin/iptables", "/bin/iptables" };

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

/*
 * Per-bridge chain names, so two daemons (or a test) on different bridges
 * never flush each other's rules. At most 11 + 15 characters, under
 * iptables' limit of 28.
 */
void
docker_firewall_chains(const char *bridge, char *in, char *fwd, size_t len)
{
	snprintf(in, len, "SANDPIT-IN-%s", bridge);
	snprintf(fwd, len, "SANDPIT-FW-%s", bridge);
}

/* Step n's arguments (after "iptables -w"); false past the last step. */
static bool
fw_step(struct docker *d, unsigned n, const char **argv, enum fw_kind *kind,
	char *in, char *fwd, char *port)
{
	const char *br = d->bridge_real;
	const char *hook = d->fw.hook_docker_user ? "DOCKER-USER" : "FORWARD";
	unsigned i = 0;

#define A(...) do { const char *a_[] = { __VA_ARGS__ }; \
	for (size_t k_ = 0; k_ < sizeof(a_) / sizeof(a_[0]); k_++) argv[i++] = a_[k_]; \
	} while (0)
	switch (n) {
	case 0: *kind = FW_PROBE;  A("-n", "-L", "DOCKER-USER"); break;
	case 1: *kind = FW_IGNORE; A("-N", in); break;
	case 2: *kind = FW_MUST;   A("-F", in); break;
	case 3: *kind = FW_MUST;   A("-A", in, "-m", "conntrack", "--ctstate",
				     "ESTABLISHED,RELATED", "-j", "ACCEPT"); break;
	case 4: *kind = FW_MUST;   A("-A", in, "-p", "udp", "-d", d->gateway, "--dport", port,
				     "-j", "ACCEPT"); break;
	case 5: *kind = FW_MUST;   A("-A", in, "-j", "DROP"); break;
	case 6: *kind = FW_CHECK;  A("-C", "INPUT", "-i", br, "-j", in); break;
	case 7: *kind = FW_MUST;   A("-I", "INPUT", "1", "-i", br, "-j", in); break;
	case 8: *kind = FW_IGNORE; A("-N", fwd); break;
	case 9: *kind = FW_MUST;   A("-F", fwd); break;
	case 10: *kind = FW_MUST;  A("-A", fwd, "-i", br, "-j", "DROP"); break;
	case 11: *kind = FW_MUST;  A("-A", fwd, "-o", br, "-j", "DROP"); break;
	case 12: *kind = FW_CHECK; A("-C", hook, "-j", fwd); break;
	case 13: *kind = FW_MUST;  A("-I", hook, "1", "-j", fwd); break;
	default: return false;
	}
#undef A
	argv[i] = NULL;
	return true;
}

static void fw_next(struct docker *d);

static void
fw_done(struct docker *d, int status)
{
	sp_done_cb cb = d->fw.cb;

	d->fw.running = false;
	d->fw.cb = NULL;
	if (status == 0 && d->fw.failed[0] != '\0')
		d->host->log(LOG_WARNING, "docker: host firewall NOT enforced for bridge %s (%s): "
		    "sandboxes can reach every service the host exposes on %s, not only UDP "
		    "port %u; only Docker's internal network and icc=false separate them",
		    d->bridge_real, d->fw.failed, d->gateway, (unsigned)d->host->worker_port);
	cb(d->fw.arg, status, NULL);
}

static void
fw_proc_closed(uv_handle_t *h)
{
	struct docker *d = h->data;

	if (d->state == DOCKER_CLOSING)
		fw_done(d, SP_ECANCELED);
	else
		fw_next(d);
	docker_unref(d);
}

static void
fw_defer_cb(uv_timer_t *t)
{
	struct docker *d = t->data;

	if (d->state == DOCKER_CLOSING)
		fw_done(d, SP_ECANCELED);
	else
		fw_next(d);
	docker_unref(d);
}

static void
fw_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
	struct docker *d = proc->data;
	bool ok = exit_status == 0 && term_signal == 0;
	const char *argv[FW_ARGS_MAX];
	char in[64], fwd[64], port[16];
	enum fw_kind kind;

	snprintf(port, sizeof(port), "%u", (unsigned)d->host->worker_port);
	docker_firewall_chains(d->bridge_real, in, fwd, sizeof(in));
	fw_step(d, d->fw.step, argv, &kind, in, fwd, port);
	switch (kind) {
	case FW_PROBE:
		d->fw.hook_docker_user = ok;
		d->fw.step++;
		break;
	case FW_CHECK:
		d->fw.step += ok ? 2 : 1;
		break;
	case FW_IGNORE:
		d->fw.step++;
		break;
	case FW_MUST:
		if (!ok) {
			size_t off = (size_t)snprintf(d->fw.failed, sizeof(d->fw.failed),
			    "iptables");

			for (unsigned i = 0; argv[i] != NULL && off < sizeof(d->fw.failed); i++)
				off += (size_t)snprintf(d->fw.failed + off,
				    sizeof(d->fw.failed) - off, " %s", argv[i]);
			if (off < sizeof(d->fw.failed))
				snprintf(d->fw.failed + off, sizeof(d->fw.failed) - off,
				    " failed");
			d->fw.step = UINT32_MAX;
		} else {
			d->fw.step++;
		}
		break;
	}
	uv_close((uv_handle_t *)proc, fw_proc_closed);
}

static void
fw_next(struct docker *d)
{
	const char *argv[FW_ARGS_MAX + 4], *path = fw_iptables();
	char in[64], fwd[64], port[16];
	uv_stdio_container_t stdio[3] = {
		{ .flags = UV_IGNORE }, { .flags = UV_IGNORE }, { .flags = UV_IGNORE },
	};
	uv_process_options_t o = { 0 };
	enum fw_kind kind;
	int rc;

	snprintf(port, sizeof(port), "%u", (unsigned)d->host->worker_port);
	docker_firewall_chains(d->bridge_real, in, fwd, sizeof(in));
	if (d->fw.step == UINT32_MAX || path == NULL ||
	    !fw_step(d, d->fw.step, argv + 3, &kind, in, fwd, port)) {
		fw_done(d, 0);
		return;
	}
	/* Wait for the xtables lock, but not forever: init waits for us. */
	argv[0] = "iptables";
	argv[1] = "-w";
	argv[2] = "10";
	o.file = path;
	o.args = (char **)argv;
	o.exit_cb = fw_exit;
	o.stdio = stdio;
	o.stdio_count = 3;
	d->fw.proc.data = d;
	docker_ref(d);
	if ((rc = uv_spawn(d->host->loop, &d->fw.proc, &o)) < 0) {
		snprintf(d->fw.failed, sizeof(d->fw.failed), "cannot run %s: %s", path,
		    uv_strerror(rc));
		d->fw.step = UINT32_MAX;
		uv_close((uv_handle_t *)&d->fw.proc, fw_proc_closed);
	}
}

int
docker_firewall_start(struct docker *d, sp_done_cb cb, void *arg)
{
	d->fw.cb = cb;
	d->fw.arg = arg;
	d->fw.step = 0;
	d->fw.failed[0] = '\0';
	d->fw.running = true;
	if (!d->firewall)
		snprintf(d->fw.failed, sizeof(d->fw.failed), "docker.firewall is off");
	else if (geteuid() != 0)
		snprintf(d->fw.failed, sizeof(d->fw.failed), "not running as root");
	else if (fw_iptables() == NULL)
		snprintf(d->fw.failed, sizeof(d->fw.failed), "iptables is not installed");
	else if (d->host->worker_port == 0)
		snprintf(d->fw.failed, sizeof(d->fw.failed), "no worker port is configured");
	if (d->fw.failed[0] != '\0') {
		d->fw.step = UINT32_MAX;
		/* Report from the loop, as if a step had run. */
		docker_ref(d);
		uv_timer_start(&d->defer, fw_defer_cb, 0, 0);
		return 0;
	}
	fw_next(d);
	return 0;
}

void
docker_firewall_cancel(struct docker *d)
{
	/* iptables finishes in milliseconds: let the step end, then stop. */
	(void)d;
}

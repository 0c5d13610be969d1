/*
 * The control API's routes for health, info, metrics, images and sandboxes:
 * JSON in, JSON out, on top of the ctl server and the sandbox manager. The
 * memory and swarm routes register themselves from their own modules.
 */
#ifndef SANDPIT_API_H
#define SANDPIT_API_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "ctl.h"
#include "sandbox.h"
#include "workers.h"

struct api {
	struct ctl *ctl;
	struct sandbox_mgr *mgr;
	const struct config *const *cfg;	/* the configuration in force (swapped on SIGHUP) */
	const char *instance;
	int64_t started_ms;
	struct workers *workers;		/* the worker channel, or NULL */
	/* More /metrics lines (swarms, warm pool), or NULL. */
	void (*metrics_more)(void *arg, FILE *f);
	void *metrics_arg;
};

/* Register the routes on api->ctl; api must outlive the ctl server. */
void api_register(struct api *api);

#endif

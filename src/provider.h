/*
 * The core's side of the provider seam: instantiating a provider from its ops
 * table (the core allocates its private state) and calling its hooks. Optional
 * hooks that a provider leaves NULL answer -ENOTSUP here, so no caller checks.
 * Nothing in this module names a provider.
 */
#ifndef SANDPIT_PROVIDER_CORE_H
#define SANDPIT_PROVIDER_CORE_H

#include <sandpit/provider.h>

/* The built provider called name, or NULL. */
const struct sp_provider_ops *provider_find(const char *name);

/* Allocate a provider (zeroed private state) bound to host. Never fails. */
struct sp_provider *provider_new(const struct sp_provider_ops *ops, const struct sp_host *host);
/* Free after close() has completed. Accepts NULL. */
void provider_free(struct sp_provider *p);

static inline const char *
provider_name(const struct sp_provider *p)
{
	return p->ops->name;
}

static inline int
provider_has(const struct sp_provider *p, unsigned cap)
{
	return (p->ops->caps & cap) == cap;
}

int provider_init(struct sp_provider *p, sp_done_cb cb, void *arg);
/* Always calls cb once, later (a provider without close gets a deferred call). */
void provider_close(struct sp_provider *p, sp_done_cb cb, void *arg);
int provider_create(struct sp_provider *p, const struct sp_sandbox_spec *spec,
		    sp_create_cb cb, void *arg);
int provider_start(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg);
int provider_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
		  sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret);
void provider_exec_cancel(struct sp_provider *p, struct sp_exec *ex);
int provider_destroy(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg);
int provider_list(struct sp_provider *p, sp_list_cb cb, void *arg);
int provider_status(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg);
int provider_build_image(struct sp_provider *p, sp_done_cb cb, void *arg);
int provider_watch(struct sp_provider *p, sp_event_cb cb, void *arg);
/* A JSON object as text, or "{}". */
const char *provider_describe(struct sp_provider *p);

#endif

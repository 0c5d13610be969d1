/*
 * Provider instances and the hook wrappers. It owns each provider's private
 * state (ops->priv_size bytes); it must never look at a provider's name
 * except to find it by the name the configuration gives.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "xmalloc.h"

const struct sp_provider_ops *
provider_find(const char *name)
{
	for (size_t i = 0; sp_providers[i] != NULL; i++)
		if (strcmp(sp_providers[i]->name, name) == 0)
			return sp_providers[i];
	return NULL;
}

struct sp_provider *
provider_new(const struct sp_provider_ops *ops, const struct sp_host *host)
{
	struct sp_provider *p = xcalloc(1, sizeof(*p));

	p->ops = ops;
	p->host = host;
	p->priv = ops->priv_size ? xcalloc(1, ops->priv_size) : NULL;
	return p;
}

void
provider_free(struct sp_provider *p)
{
	if (p == NULL)
		return;
	free(p->priv);
	free(p);
}

int
provider_init(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	return p->ops->init(p, cb, arg);
}

struct provider_deferred {
	uv_timer_t timer;
	sp_done_cb cb;
	void *arg;
};

static void
provider_deferred_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
provider_deferred_fire(uv_timer_t *t)
{
	struct provider_deferred *d = t->data;

	d->cb(d->arg, 0, NULL);
	uv_close((uv_handle_t *)&d->timer, provider_deferred_closed);
}

void
provider_close(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct provider_deferred *d;

	if (p->ops->close != NULL) {
		p->ops->close(p, cb, arg);
		return;
	}
	/* Keep the promise that callbacks never fire inside the call. */
	d = xcalloc(1, sizeof(*d));
	d->cb = cb;
	d->arg = arg;
	uv_timer_init(p->host->loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, provider_deferred_fire, 0, 0);
}

int
provider_create(struct sp_provider *p, const struct sp_sandbox_spec *spec,
		sp_create_cb cb, void *arg)
{
	if (p->ops->create == NULL)
		return -ENOTSUP;
	return p->ops->create(p, spec, cb, arg);
}

int
provider_start(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	if (p->ops->start == NULL)
		return -ENOTSUP;
	return p->ops->start(p, ref, cb, arg);
}

int
provider_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
	      sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret)
{
	if (p->ops->exec == NULL || !provider_has(p, SP_CAP_EXEC))
		return -ENOTSUP;
	return p->ops->exec(p, ref, spec, out, cb, arg, ret);
}

void
provider_exec_cancel(struct sp_provider *p, struct sp_exec *ex)
{
	if (p->ops->exec_cancel != NULL && ex != NULL)
		p->ops->exec_cancel(p, ex);
}

int
provider_destroy(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	if (p->ops->destroy == NULL)
		return -ENOTSUP;
	return p->ops->destroy(p, ref, cb, arg);
}

int
provider_list(struct sp_provider *p, sp_list_cb cb, void *arg)
{
	if (p->ops->list == NULL || !provider_has(p, SP_CAP_LIST))
		return -ENOTSUP;
	return p->ops->list(p, cb, arg);
}

int
provider_status(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg)
{
	if (p->ops->status == NULL)
		return -ENOTSUP;
	return p->ops->status(p, ref, cb, arg);
}

int
provider_build_image(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	if (p->ops->build_image == NULL || !provider_has(p, SP_CAP_IMAGE))
		return -ENOTSUP;
	return p->ops->build_image(p, cb, arg);
}

int
provider_watch(struct sp_provider *p, sp_event_cb cb, void *arg)
{
	if (p->ops->watch == NULL || !provider_has(p, SP_CAP_EVENTS))
		return -ENOTSUP;
	return p->ops->watch(p, cb, arg);
}

const char *
provider_describe(struct sp_provider *p)
{
	const char *s = p->ops->describe != NULL ? p->ops->describe(p) : NULL;

	return s != NULL ? s : "{}";
}

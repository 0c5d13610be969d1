/*
 * The fake provider (see fake_provider.h): in-memory containers, injected
 * failures and delays, completions from uv_timers so nothing fires inside a
 * call. It owns its pending calls and the process-wide container table; it is
 * for tests only and trusts its caller.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <uv.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "fake_provider.h"
#include "xmalloc.h"

struct fake_priv;

struct fake_call {
	struct fake_priv *fp;
	enum fake_op op;
	uv_timer_t timer;
	int status;			/* injected failure, or 0 */
	char detail[256];
	bool canceled;
	bool fired;
	sp_done_cb done;
	sp_create_cb create;
	sp_list_cb list;
	sp_status_cb status_cb;
	sp_exec_cb exec;
	sp_output_cb out;
	void *arg;
	char ref[64];
	char id[64], tenant[64], hash[64];
	char **argv;
	LIST_ENTRY(fake_call) entry;
};

/* The exec handle is the call. */
struct sp_exec {
	struct fake_call call;
};

struct fake_priv {
	struct sp_provider *p;
	LIST_HEAD(, fake_call) calls;
	bool closing;
	bool timer_init;
	uv_timer_t close_timer;
	sp_done_cb close_cb;
	void *close_arg;
	sp_event_cb watch_cb;
	void *watch_arg;
	LIST_ENTRY(fake_priv) entry;
};

static struct {
	struct fake_container c[FAKE_MAX_CONTAINERS];
	unsigned next_ref;
	int fail_status[FAKE_OP_COUNT];
	char fail_detail[FAKE_OP_COUNT][256];
	int refuse[FAKE_OP_COUNT];
	uint64_t delay[FAKE_OP_COUNT];
	unsigned calls[FAKE_OP_COUNT];
	unsigned pending;
	struct sp_exec_result exec_res;
	LIST_HEAD(, fake_priv) open;
} fake;

void
fake_reset(void)
{
	memset(fake.c, 0, sizeof(fake.c));
	memset(fake.fail_status, 0, sizeof(fake.fail_status));
	memset(fake.fail_detail, 0, sizeof(fake.fail_detail));
	memset(fake.refuse, 0, sizeof(fake.refuse));
	memset(fake.delay, 0, sizeof(fake.delay));
	memset(fake.calls, 0, sizeof(fake.calls));
	memset(&fake.exec_res, 0, sizeof(fake.exec_res));
	fake.next_ref = 0;
}

void
fake_fail_next(enum fake_op op, int status, const char *detail)
{
	fake.fail_status[op] = status;
	snprintf(fake.fail_detail[op], sizeof(fake.fail_detail[op]), "%s",
	    detail != NULL ? detail : "");
}

void
fake_refuse_next(enum fake_op op, int rc)
{
	fake.refuse[op] = rc;
}

void
fake_set_delay(enum fake_op op, uint64_t ms)
{
	fake.delay[op] = ms;
}

void
fake_set_exec_result(int exit_code, bool oom_killed, bool timed_out)
{
	fake.exec_res.exit_code = exit_code;
	fake.exec_res.oom_killed = oom_killed;
	fake.exec_res.timed_out = timed_out;
}

unsigned
fake_calls(enum fake_op op)
{
	return fake.calls[op];
}

unsigned
fake_pending(void)
{
	return fake.pending;
}

static struct fake_container *
fake_lookup_ref(const char *ref)
{
	for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++)
		if (fake.c[i].used && strcmp(fake.c[i].ref, ref) == 0)
			return &fake.c[i];
	return NULL;
}

const struct fake_container *
fake_find_ref(const char *ref)
{
	return fake_lookup_ref(ref);
}

const struct fake_container *
fake_find(const char *sandbox_id)
{
	for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++)
		if (fake.c[i].used && strcmp(fake.c[i].sandbox_id, sandbox_id) == 0)
			return &fake.c[i];
	return NULL;
}

size_t
fake_count(void)
{
	size_t n = 0;

	for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++)
		n += fake.c[i].used;
	return n;
}

const char *
fake_add(const char *instance, const char *sandbox_id, const char *tenant,
	 enum sp_instance_state state)
{
	for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++) {
		struct fake_container *c = &fake.c[i];

		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		snprintf(c->ref, sizeof(c->ref), "fake-%u", ++fake.next_ref);
		snprintf(c->instance, sizeof(c->instance), "%s", instance != NULL ? instance : "");
		snprintf(c->sandbox_id, sizeof(c->sandbox_id), "%s",
		    sandbox_id != NULL ? sandbox_id : "");
		snprintf(c->tenant, sizeof(c->tenant), "%s", tenant != NULL ? tenant : "");
		c->state = state;
		return c->ref;
	}
	return NULL;
}

void
fake_remove(const char *ref)
{
	struct fake_container *c = fake_lookup_ref(ref);

	if (c != NULL)
		c->used = false;
}

void
fake_set_state(const char *ref, enum sp_instance_state state, int exit_code, bool oom_killed)
{
	struct fake_container *c = fake_lookup_ref(ref);

	if (c == NULL)
		return;
	c->state = state;
	c->exit_code = exit_code;
	c->oom_killed = oom_killed;
}

static void
fake_inst(const struct fake_container *c, struct sp_instance *inst)
{
	memset(inst, 0, sizeof(*inst));
	inst->ref = c->ref;
	inst->sandbox_id = c->sandbox_id;
	inst->tenant = c->tenant;
	inst->spec_hash = c->spec_hash;
	inst->state = c->state;
	inst->exit_code = c->exit_code;
	inst->oom_killed = c->oom_killed;
}

void
fake_emit(const char *ref)
{
	const struct fake_container *c = fake_lookup_ref(ref);
	struct sp_instance inst = { .ref = ref, .state = SP_INST_GONE };
	struct fake_priv *fp;

	if (c != NULL)
		fake_inst(c, &inst);
	LIST_FOREACH(fp, &fake.open, entry)
		if (fp->watch_cb != NULL && !fp->closing)
			fp->watch_cb(fp->watch_arg, &inst);
}

/* ---- pending calls ---- */

static void
fake_close_done(uv_handle_t *h)
{
	struct fake_priv *fp = h->data;

	LIST_REMOVE(fp, entry);
	fp->close_cb(fp->close_arg, 0, NULL);
}

static void
fake_maybe_closed(struct fake_priv *fp)
{
	if (fp->closing && LIST_EMPTY(&fp->calls) && !uv_is_closing((uv_handle_t *)&fp->close_timer))
		uv_close((uv_handle_t *)&fp->close_timer, fake_close_done);
}

static void
fake_call_closed(uv_handle_t *h)
{
	struct fake_call *call = h->data;
	struct fake_priv *fp = call->fp;

	LIST_REMOVE(call, entry);
	for (char **a = call->argv; a != NULL && *a != NULL; a++)
		free(*a);
	free(call->argv);
	free(call);
	fake.pending--;
	fake_maybe_closed(fp);
}

static void
fake_fire_exec(struct fake_call *call, int status, const char *detail)
{
	struct fake_container *c = fake_lookup_ref(call->ref);
	struct sp_exec_result res = fake.exec_res;
	int fd = 1, rc;
	char *line;
	size_t len = 0;
	char **a = call->argv;

	if (status == 0 && c == NULL) {
		status = SP_ENOTFOUND;
		detail = "no such container";
	} else if (status == 0 && c->state != SP_INST_RUNNING) {
		status = SP_ECONFLICT;
		detail = "container is not running";
	}
	if (status < 0) {
		call->exec(call->arg, status, NULL, detail);
		return;
	}
	if (a[0] != NULL && strcmp(a[0], "stderr") == 0) {
		fd = 2;
		a++;
	}
	for (char **p = a; *p != NULL; p++)
		len += strlen(*p) + 1;
	line = xcalloc(1, len + 1);
	for (char **p = a; *p != NULL; p++) {
		strcat(line, *p);
		strcat(line, p[1] != NULL ? " " : "\n");
	}
	rc = len > 0 ? call->out(call->arg, fd, line, strlen(line)) : 0;
	free(line);
	if (rc < 0)
		call->exec(call->arg, rc, NULL, "output consumer aborted");
	else
		call->exec(call->arg, 0, &res, NULL);
}

static void
fake_fire(uv_timer_t *t)
{
	struct fake_call *call = t->data;
	struct fake_priv *fp = call->fp;
	struct sp_host const *host = fp->p->host;
	int status = call->canceled ? SP_ECANCELED : call->status;
	const char *detail = call->canceled ? "cancelled" : call->detail[0] != '\0' ?
	    call->detail : NULL;
	struct fake_container *c;
	struct sp_instance inst, *items;
	size_t n;

	/* The call stays listed until its timer handle is closed, so the
	 * provider's close cannot complete while a handle still points at it. */
	call->fired = true;
	switch (call->op) {
	case FAKE_INIT:
	case FAKE_BUILD_IMAGE:
		call->done(call->arg, status, status == 0 && call->op == FAKE_BUILD_IMAGE ?
		    "fake/worker:test" : detail);
		break;
	case FAKE_CREATE:
		if (status == 0) {
			for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++)
				if (fake.c[i].used && strcmp(fake.c[i].sandbox_id, call->id) == 0 &&
				    strcmp(fake.c[i].instance, host->instance) == 0) {
					status = SP_ECONFLICT;
					detail = "container name already in use";
				}
		}
		if (status == 0) {
			const char *ref = fake_add(host->instance, call->id, call->tenant,
			    SP_INST_CREATED);

			if (ref == NULL) {
				call->create(call->arg, SP_ELIMIT, NULL, "fake: table full");
				break;
			}
			c = fake_lookup_ref(ref);
			snprintf(c->spec_hash, sizeof(c->spec_hash), "%s", call->hash);
			snprintf(c->provider, sizeof(c->provider), "%s", fp->p->ops->name);
			call->create(call->arg, 0, ref, NULL);
		} else {
			call->create(call->arg, status, NULL, detail);
		}
		break;
	case FAKE_START:
		if (status == 0 && (c = fake_lookup_ref(call->ref)) == NULL) {
			status = SP_ENOTFOUND;
			detail = "no such container";
		} else if (status == 0) {
			c->state = SP_INST_RUNNING;
		}
		call->done(call->arg, status, detail);
		break;
	case FAKE_DESTROY:
		if (status == 0)
			fake_remove(call->ref);
		call->done(call->arg, status, detail);
		break;
	case FAKE_EXEC:
		fake_fire_exec(call, status, detail);
		break;
	case FAKE_LIST:
		if (status < 0) {
			call->list(call->arg, status, NULL, 0, detail);
			break;
		}
		items = xcalloc(FAKE_MAX_CONTAINERS, sizeof(*items));
		n = 0;
		for (size_t i = 0; i < FAKE_MAX_CONTAINERS; i++)
			if (fake.c[i].used && strcmp(fake.c[i].instance, host->instance) == 0 &&
			    (fake.c[i].provider[0] == '\0' ||
			     strcmp(fake.c[i].provider, fp->p->ops->name) == 0))
				fake_inst(&fake.c[i], &items[n++]);
		call->list(call->arg, 0, items, n, NULL);
		free(items);
		break;
	case FAKE_STATUS:
		if (status < 0) {
			call->status_cb(call->arg, status, NULL, detail);
			break;
		}
		if ((c = fake_lookup_ref(call->ref)) != NULL) {
			fake_inst(c, &inst);
		} else {
			memset(&inst, 0, sizeof(inst));
			inst.ref = call->ref;
			inst.state = SP_INST_GONE;
		}
		call->status_cb(call->arg, 0, &inst, NULL);
		break;
	default:
		break;
	}
	uv_close((uv_handle_t *)&call->timer, fake_call_closed);
}

/*
 * Start a call of op: count it, apply a refusal, or queue the completion with
 * its injected failure and delay. Returns the call, or NULL with *rc set.
 */
static struct fake_call *
fake_start(struct sp_provider *p, enum fake_op op, int *rc)
{
	struct fake_priv *fp = p->priv;
	struct fake_call *call;

	fake.calls[op]++;
	if (fake.refuse[op] != 0) {
		*rc = fake.refuse[op];
		fake.refuse[op] = 0;
		return NULL;
	}
	if (fp->closing) {
		*rc = SP_ECANCELED;
		return NULL;
	}
	call = xcalloc(1, sizeof(*call));
	call->fp = fp;
	call->op = op;
	call->status = fake.fail_status[op];
	snprintf(call->detail, sizeof(call->detail), "%s", fake.fail_detail[op]);
	fake.fail_status[op] = 0;
	fake.fail_detail[op][0] = '\0';
	uv_timer_init(p->host->loop, &call->timer);
	call->timer.data = call;
	uv_timer_start(&call->timer, fake_fire, fake.delay[op], 0);
	LIST_INSERT_HEAD(&fp->calls, call, entry);
	fake.pending++;
	*rc = 0;
	return call;
}

static int
fake_init(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct fake_priv *fp = p->priv;
	struct fake_call *call;
	int rc;

	if (!fp->timer_init) {
		fp->p = p;
		LIST_INIT(&fp->calls);
		uv_timer_init(p->host->loop, &fp->close_timer);
		fp->close_timer.data = fp;
		fp->timer_init = true;
		LIST_INSERT_HEAD(&fake.open, fp, entry);
	}
	if ((call = fake_start(p, FAKE_INIT, &rc)) == NULL)
		return rc;
	call->done = cb;
	call->arg = arg;
	return 0;
}

static void
fake_cancel(struct fake_call *call)
{
	if (call->canceled || call->fired)
		return;
	call->canceled = true;
	uv_timer_start(&call->timer, fake_fire, 0, 0);
}

static void
fake_close(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct fake_priv *fp = p->priv;
	struct fake_call *call;

	if (!fp->timer_init) {
		fp->p = p;
		LIST_INIT(&fp->calls);
		uv_timer_init(p->host->loop, &fp->close_timer);
		fp->close_timer.data = fp;
		fp->timer_init = true;
		LIST_INSERT_HEAD(&fake.open, fp, entry);
	}
	fp->closing = true;
	fp->close_cb = cb;
	fp->close_arg = arg;
	LIST_FOREACH(call, &fp->calls, entry)
		fake_cancel(call);
	fake_maybe_closed(fp);
}

static int
fake_create(struct sp_provider *p, const struct sp_sandbox_spec *spec, sp_create_cb cb,
	    void *arg)
{
	struct fake_call *call;
	int rc;

	if (spec->id == NULL)
		return SP_EINVAL;
	if ((call = fake_start(p, FAKE_CREATE, &rc)) == NULL)
		return rc;
	call->create = cb;
	call->arg = arg;
	snprintf(call->id, sizeof(call->id), "%s", spec->id);
	snprintf(call->tenant, sizeof(call->tenant), "%s", spec->tenant != NULL ? spec->tenant : "");
	snprintf(call->hash, sizeof(call->hash), "%s",
	    spec->spec_hash != NULL ? spec->spec_hash : "");
	return 0;
}

static int
fake_ref_op(struct sp_provider *p, enum fake_op op, const char *ref, sp_done_cb cb, void *arg)
{
	struct fake_call *call;
	int rc;

	if (ref == NULL)
		return SP_EINVAL;
	if ((call = fake_start(p, op, &rc)) == NULL)
		return rc;
	call->done = cb;
	call->arg = arg;
	snprintf(call->ref, sizeof(call->ref), "%s", ref);
	return 0;
}

static int
fake_start_op(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	return fake_ref_op(p, FAKE_START, ref, cb, arg);
}

static int
fake_destroy(struct sp_provider *p, const char *ref, sp_done_cb cb, void *arg)
{
	return fake_ref_op(p, FAKE_DESTROY, ref, cb, arg);
}

static int
fake_exec(struct sp_provider *p, const char *ref, const struct sp_exec_spec *spec,
	  sp_output_cb out, sp_exec_cb cb, void *arg, struct sp_exec **ret)
{
	struct fake_call *call;
	size_t n = 0;
	int rc;

	if (ref == NULL || spec->argv == NULL || spec->argv[0] == NULL)
		return SP_EINVAL;
	if ((call = fake_start(p, FAKE_EXEC, &rc)) == NULL)
		return rc;
	call->exec = cb;
	call->out = out;
	call->arg = arg;
	snprintf(call->ref, sizeof(call->ref), "%s", ref);
	while (spec->argv[n] != NULL)
		n++;
	call->argv = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		call->argv[i] = xstrdup(spec->argv[i]);
	if (ret != NULL)
		*ret = (struct sp_exec *)call;
	return 0;
}

static void
fake_exec_cancel(struct sp_provider *p, struct sp_exec *ex)
{
	if (ex != NULL)
		fake_cancel(&ex->call);
}

static int
fake_list(struct sp_provider *p, sp_list_cb cb, void *arg)
{
	struct fake_call *call;
	int rc;

	if ((call = fake_start(p, FAKE_LIST, &rc)) == NULL)
		return rc;
	call->list = cb;
	call->arg = arg;
	return 0;
}

static int
fake_status(struct sp_provider *p, const char *ref, sp_status_cb cb, void *arg)
{
	struct fake_call *call;
	int rc;

	if (ref == NULL)
		return SP_EINVAL;
	if ((call = fake_start(p, FAKE_STATUS, &rc)) == NULL)
		return rc;
	call->status_cb = cb;
	call->arg = arg;
	snprintf(call->ref, sizeof(call->ref), "%s", ref);
	return 0;
}

static int
fake_build_image(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	struct fake_call *call;
	int rc;

	if ((call = fake_start(p, FAKE_BUILD_IMAGE, &rc)) == NULL)
		return rc;
	call->done = cb;
	call->arg = arg;
	return 0;
}

static int
fake_watch(struct sp_provider *p, sp_event_cb cb, void *arg)
{
	struct fake_priv *fp = p->priv;
	int rc;

	fake.calls[FAKE_WATCH]++;
	if ((rc = fake.refuse[FAKE_WATCH]) != 0 || (rc = fake.fail_status[FAKE_WATCH]) != 0) {
		fake.refuse[FAKE_WATCH] = 0;
		fake.fail_status[FAKE_WATCH] = 0;
		return rc;
	}
	if (fp->watch_cb != NULL)
		return SP_ECONFLICT;
	fp->watch_cb = cb;
	fp->watch_arg = arg;
	return 0;
}

static const char *
fake_describe(struct sp_provider *p)
{
	return "{\"fake\":true}";
}

static const struct sp_directive fake_directives[] = {
	{ "fake.option", SP_DIR_STRING, "default", "an option of the fake provider" },
	{ NULL, 0, NULL, NULL },
};

const struct sp_provider_ops fake_provider_ops = {
	.name = "fake",
	.caps = SP_CAP_EXEC | SP_CAP_LIST | SP_CAP_LOCAL | SP_CAP_IMAGE | SP_CAP_EVENTS,
	.priv_size = sizeof(struct fake_priv),
	.directives = fake_directives,
	.init = fake_init,
	.close = fake_close,
	.create = fake_create,
	.start = fake_start_op,
	.exec = fake_exec,
	.exec_cancel = fake_exec_cancel,
	.destroy = fake_destroy,
	.list = fake_list,
	.status = fake_status,
	.build_image = fake_build_image,
	.watch = fake_watch,
	.describe = fake_describe,
};

/* The same fake, as a remote provider: another name, no SP_CAP_LOCAL (a burst target). */
const struct sp_provider_ops fake_cloud_ops = {
	.name = "cloud",
	.caps = SP_CAP_EXEC | SP_CAP_LIST,
	.priv_size = sizeof(struct fake_priv),
	.init = fake_init,
	.close = fake_close,
	.create = fake_create,
	.start = fake_start_op,
	.exec = fake_exec,
	.exec_cancel = fake_exec_cancel,
	.destroy = fake_destroy,
	.list = fake_list,
	.status = fake_status,
	.describe = fake_describe,
};

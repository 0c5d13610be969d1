/*
 * docker_watch: the engine's event stream for this instance's containers
 * (die, oom, destroy), parsed line by line with a bounded buffer and handed to
 * the core's event callback. After a drop it reconnects with since= the last
 * event seen, backing off. Owns its call, timer and line buffer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sandpit/error.h>
#include <sandpit/provider.h>

#include "docker_internal.h"

#define WATCH_LINE_MAX		(64u << 10)
#define WATCH_BACKOFF_MIN_MS	100
#define WATCH_BACKOFF_MAX_MS	5000

static void watch_connect(struct docker *d);

bool
docker_watch_parse(json_t *ev, struct sp_instance *inst)
{
	const char *type = json_string_value(json_object_get(ev, "Type"));
	const char *action = json_string_value(json_object_get(ev, "Action"));
	json_t *actor = json_object_get(ev, "Actor");
	json_t *attrs = json_object_get(actor, "Attributes");
	const char *code;

	memset(inst, 0, sizeof(*inst));
	if (type == NULL || strcmp(type, "container") != 0 || action == NULL)
		return false;
	inst->ref = json_string_value(json_object_get(actor, "ID"));
	if (inst->ref == NULL)
		return false;
	if (strcmp(action, "die") == 0) {
		inst->state = SP_INST_EXITED;
		if ((code = json_string_value(json_object_get(attrs, "exitCode"))) != NULL)
			inst->exit_code = atoi(code);
	} else if (strcmp(action, "oom") == 0) {
		/* The OOM killer struck; the container may well live on. */
		inst->state = SP_INST_RUNNING;
		inst->oom_killed = true;
	} else if (strcmp(action, "destroy") == 0) {
		inst->state = SP_INST_GONE;
	} else {
		return false;
	}
	docker_labels(attrs, inst);
	return true;
}

/*
 * A die event does not say why. Remember the containers that had an oom event
 * (a small ring; the die follows within moments) and mark their die as an
 * OOM kill, so a main process the OOM killer took is reported as such.
 */
static void
watch_oom_note(struct docker_watch *w, struct sp_instance *inst)
{
	size_t i;

	if (inst->oom_killed && inst->state == SP_INST_RUNNING) {
		snprintf(w->oom[w->oom_next], sizeof(w->oom[0]), "%s", inst->ref);
		w->oom_next = (w->oom_next + 1) % DOCKER_WATCH_OOM_RING;
		return;
	}
	if (inst->state != SP_INST_EXITED && inst->state != SP_INST_GONE)
		return;
	for (i = 0; i < DOCKER_WATCH_OOM_RING; i++) {
		if (w->oom[i][0] != '\0' && strcmp(w->oom[i], inst->ref) == 0) {
			if (inst->state == SP_INST_EXITED)
				inst->oom_killed = true;
			else
				w->oom[i][0] = '\0';	/* gone: forget it */
		}
	}
}

static void
watch_line(struct docker *d, const char *line, size_t len)
{
	struct docker_watch *w = &d->watch;
	struct sp_instance inst;
	json_t *ev, *tn;

	if ((ev = json_loadb(line, len, 0, NULL)) == NULL)
		return;
	tn = json_object_get(ev, "timeNano");
	if (json_is_integer(tn)) {
		/* One nanosecond on, so a reconnect does not replay this event. */
		long long t = json_integer_value(tn) + 1;

		snprintf(w->since, sizeof(w->since), "%lld.%09lld", t / 1000000000LL,
		    t % 1000000000LL);
	}
	w->backoff_ms = WATCH_BACKOFF_MIN_MS;
	if (docker_watch_parse(ev, &inst)) {
		watch_oom_note(w, &inst);
		w->cb(w->arg, &inst);
	}
	json_decref(ev);
}

static int
watch_data(void *arg, const char *data, size_t len)
{
	struct docker *d = arg;
	struct docker_watch *w = &d->watch;

	if (!w->active)
		return SP_ECANCELED;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			watch_line(d, w->line, w->line_len);
			w->line_len = 0;
			if (!w->active)
				return SP_ECANCELED;
			continue;
		}
		if (w->line_len == WATCH_LINE_MAX)
			/* An event this large is not one: drop the stream, reconnect. */
			return SP_EPROTO;
		w->line[w->line_len++] = data[i];
	}
	return 0;
}

static void
watch_timer_cb(uv_timer_t *t)
{
	struct docker *d = t->data;

	if (d->watch.active)
		watch_connect(d);
}

static void
watch_ended(void *arg, int status, const struct docker_reply *r, const char *detail)
{
	struct docker *d = arg;
	struct docker_watch *w = &d->watch;

	w->call = NULL;
	w->line_len = 0;
	if (!w->active || d->state == DOCKER_CLOSING)
		return;
	uv_timer_start(&w->timer, watch_timer_cb, w->backoff_ms, 0);
	w->backoff_ms *= 2;
	if (w->backoff_ms > WATCH_BACKOFF_MAX_MS)
		w->backoff_ms = WATCH_BACKOFF_MAX_MS;
}

static void
watch_connect(struct docker *d)
{
	struct docker_watch *w = &d->watch;
	struct docker_req req = { .method = "GET", .timeout_ms = UINT64_MAX, .raw = true,
				  .on_data = watch_data, .data_arg = d };
	char *label, *filters, *esc, *path;
	json_t *f;

	label = docker_xprintf("%s=%s", SP_LABEL_INSTANCE,
	    d->host->instance != NULL ? d->host->instance : "");
	f = json_pack("{s:[s], s:[s], s:[s, s, s]}", "type", "container", "label", label,
	    "event", "die", "oom", "destroy");
	free(label);
	if (f == NULL || (filters = json_dumps(f, JSON_COMPACT)) == NULL)
		abort();
	json_decref(f);
	esc = docker_api_escape(filters);
	free(filters);
	path = docker_xprintf("/events?filters=%s&since=%s", esc, w->since);
	free(esc);
	req.path = path;
	if (docker_api(d, &req, watch_ended, d, &w->call) < 0) {
		w->call = NULL;
		uv_timer_start(&w->timer, watch_timer_cb, WATCH_BACKOFF_MAX_MS, 0);
	}
	free(path);
}

int
docker_watch(struct sp_provider *p, sp_event_cb cb, void *arg)
{
	struct docker *d = docker_of(p);
	struct docker_watch *w = &d->watch;

	if (d->state != DOCKER_READY)
		return d->state == DOCKER_CLOSING ? SP_ECANCELED : SP_EUNAVAIL;
	if (w->active || w->line != NULL)
		return SP_ECONFLICT;
	w->active = true;
	w->cb = cb;
	w->arg = arg;
	w->backoff_ms = WATCH_BACKOFF_MIN_MS;
	w->line = docker_xcalloc(1, WATCH_LINE_MAX);
	snprintf(w->since, sizeof(w->since), "%lld", (long long)time(NULL));
	uv_timer_init(d->host->loop, &w->timer);
	w->timer.data = d;
	docker_ref(d);
	watch_connect(d);
	return 0;
}

static void
watch_timer_closed(uv_handle_t *h)
{
	struct docker *d = h->data;

	free(d->watch.line);
	d->watch.line = NULL;
	docker_unref(d);
}

void
docker_watch_stop(struct docker *d)
{
	struct docker_watch *w = &d->watch;

	if (!w->active)
		return;
	w->active = false;
	if (w->call != NULL)
		docker_api_cancel(w->call);
	uv_close((uv_handle_t *)&w->timer, watch_timer_closed);
}

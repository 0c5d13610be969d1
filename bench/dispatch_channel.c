/*
 * bench/dispatch_channel: the worker protocol without the processes, for
 * bench/dispatch.sh. It speaks exactly what sandpit-worker --tasks SLOTS
 * speaks (register, GET /v1/worker/tasks/next?max=N, POST /v1/worker/results)
 * over one verified HTTP/3 connection per worker identity, but "runs" every
 * task it is granted as an instant exit 0. So it measures the coordinator and
 * the channel with durable results, and nothing of fork and exec.
 *   usage: bench_dispatch_channel PORT SLOTS TOTAL DIR...
 * Each DIR holds a worker's token and ca.pem. Exits 0 once TOTAL results were
 * accepted, 1 on an error or after 300 s.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "quic_client.h"

#define PW_MAX		256
#define BATCH_MAX	64		/* the daemon's WORKERS_BATCH_MAX */

struct pw {
	struct quic_client *qc;
	char token[4096];
	char ca[PATH_MAX];
	bool polling, sending;
	unsigned held;			/* granted, result not yet answered */
	json_t *due;			/* results waiting for the next request */
};

static struct pw pws[PW_MAX];
static size_t npw;
static unsigned slots;
static long total, accepted;
static uv_loop_t loop;
static uv_timer_t deadline;
static int status = 1;
static bool finished;

static void pw_poll(struct pw *p);
static void pw_report(struct pw *p);

static void
freed(void *arg)
{
	(void)arg;
}

static void
finish(int st)
{
	if (finished)
		return;
	finished = true;
	status = st;
	/* A close answers the client's open requests at once (-ECANCELED): qc goes first. */
	for (size_t i = 0; i < npw; i++)
		if (pws[i].qc != NULL) {
			struct quic_client *qc = pws[i].qc;

			pws[i].qc = NULL;
			quic_client_close(qc, freed, NULL);
		}
	uv_timer_stop(&deadline);
	uv_close((uv_handle_t *)&deadline, NULL);
}

static bool
answered(struct pw *p, int st, const char *what)
{
	if (p->qc == NULL || finished)
		return false;
	if (st != 200) {
		fprintf(stderr, "dispatch_channel: %s: HTTP %d\n", what, st);
		finish(1);
		return false;
	}
	return true;
}

static void
results_done(void *arg, int st, const uint8_t *body, size_t len)
{
	struct pw *p = arg;
	json_t *j, *v;
	size_t i;

	p->sending = false;
	if (!answered(p, st, "results"))
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	json_array_foreach(json_object_get(j, "results"), i, v)
		if (strcmp(json_string_value(json_object_get(v, "verdict")), "accepted") == 0)
			accepted++;
	p->held -= (unsigned)json_array_size(json_object_get(j, "results"));
	json_decref(j);
	if (accepted >= total) {
		finish(0);
		return;
	}
	pw_report(p);
	pw_poll(p);
}

static void
pw_report(struct pw *p)
{
	json_t *batch;
	char *text;

	if (p->sending || json_array_size(p->due) == 0)
		return;
	batch = json_pack("{s:o}", "results", p->due);
	p->due = json_array();
	text = json_dumps(batch, JSON_COMPACT);
	json_decref(batch);
	if (quic_client_request(p->qc, "POST", "/v1/worker/results", p->token, text, strlen(text),
				results_done, p) == 0)
		p->sending = true;
	free(text);
}

static void
poll_done(void *arg, int st, const uint8_t *body, size_t len)
{
	struct pw *p = arg;
	json_t *j, *g;
	size_t i;

	p->polling = false;
	if (!answered(p, st, "poll"))
		return;
	j = json_loadb((const char *)body, len, 0, NULL);
	json_array_foreach(json_object_get(j, "tasks"), i, g) {
		json_array_append_new(p->due, json_pack("{s:O, s:O, s:O, s:i, s:i}",
		    "task", json_object_get(g, "task"), "attempt", json_object_get(g, "attempt"),
		    "lease", json_object_get(g, "lease"), "exit_code", 0, "duration_ms", 0));
		p->held++;
	}
	json_decref(j);
	pw_report(p);
	pw_poll(p);
}

static void
pw_poll(struct pw *p)
{
	char path[64];

	if (p->qc == NULL || p->polling || p->held >= slots)
		return;
	snprintf(path, sizeof(path), "/v1/worker/tasks/next?max=%u", slots - p->held);
	if (quic_client_request(p->qc, "GET", path, p->token, NULL, 0, poll_done, p) == 0)
		p->polling = true;
}

static void
register_done(void *arg, int st, const uint8_t *body, size_t len)
{
	(void)body;
	(void)len;
	if (answered(arg, st, "register"))
		pw_poll(arg);
}

static void
pw_event(void *arg, enum quic_client_event ev, int err)
{
	struct pw *p = arg;
	static const char reg[] = "{\"version\":\"bench\",\"pid\":1}";

	if (ev == QUIC_CLIENT_CONNECTED) {
		quic_client_request(p->qc, "POST", "/v1/worker/register", p->token, reg,
				    strlen(reg), register_done, p);
		return;
	}
	if (p->qc != NULL && !finished) {
		fprintf(stderr, "dispatch_channel: connection closed (%s)\n", strerror(-err));
		finish(1);
	}
}

static void
timed_out(uv_timer_t *t)
{
	(void)t;
	fprintf(stderr, "dispatch_channel: %ld of %ld results after 300 s\n", accepted, total);
	finish(1);
}

int
main(int argc, char *argv[])
{
	struct quic_client_config cfg = { 0 };
	char path[PATH_MAX];
	FILE *f;

	if (argc < 5 || atoi(argv[2]) < 1 || atoi(argv[2]) > BATCH_MAX || atol(argv[3]) < 1 ||
	    argc - 4 > PW_MAX) {
		fprintf(stderr, "usage: bench_dispatch_channel PORT SLOTS TOTAL DIR...\n");
		return 2;
	}
	slots = (unsigned)atoi(argv[2]);
	total = atol(argv[3]);
	uv_loop_init(&loop);
	uv_timer_init(&loop, &deadline);
	uv_timer_start(&deadline, timed_out, 300000, 0);
	cfg.host = "127.0.0.1";
	cfg.port = (uint16_t)atoi(argv[1]);
	for (int a = 4; a < argc; a++) {
		struct pw *p = &pws[npw++];

		snprintf(path, sizeof(path), "%s/token", argv[a]);
		if ((f = fopen(path, "r")) == NULL || fgets(p->token, sizeof(p->token), f) == NULL) {
			fprintf(stderr, "dispatch_channel: %s: %s\n", path, strerror(errno));
			return 1;
		}
		fclose(f);
		p->token[strcspn(p->token, "\n")] = '\0';
		snprintf(p->ca, sizeof(p->ca), "%s/ca.pem", argv[a]);
		p->due = json_array();
		cfg.ca_file = p->ca;
		if (quic_client_new(&loop, &cfg, pw_event, p, &p->qc) < 0) {
			fprintf(stderr, "dispatch_channel: cannot connect\n");
			return 1;
		}
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < npw; i++)
		json_decref(pws[i].due);
	uv_loop_close(&loop);
	printf("%ld\n", accepted);
	return status;
}

/*
 * stderr logging with syslog priority prefixes. It owns nothing but the level;
 * it must never allocate, so it stays usable when memory has run out.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

static int log_max = LOG_INFO;

void
log_set_level(int prio)
{
	log_max = prio;
}

int
log_level(void)
{
	return log_max;
}

static void
log_vmsg(int prio, const char *fmt, va_list ap)
{
	char line[2048];
	int n;

	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	/* One write per line so concurrent writers never interleave mid-line. */
	fprintf(stderr, "<%d>%s\n", prio, line);
}

void
log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	if (prio > log_max)
		return;
	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_CRIT, fmt, ap);
	va_end(ap);
	abort();
}

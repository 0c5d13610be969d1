/*
 * Allocation that aborts on out-of-memory (tmux's xmalloc). The daemon's state
 * is in SQLite and systemd restarts it, so running out of memory is fatal;
 * every allocation a peer can cause must therefore have a hard bound upstream.
 */
#ifndef SANDPIT_XMALLOC_H
#define SANDPIT_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
int xasprintf(char **ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int xvasprintf(char **ret, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#endif

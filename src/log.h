/*
 * Logging to stderr with syslog priority prefixes ("<3>message"), which
 * journald and most supervisors understand. Only the edges log (main, ctl,
 * rpc, swarm, pool); library modules return errors instead. Never log a secret.
 */
#ifndef SANDPIT_LOG_H
#define SANDPIT_LOG_H

#include <syslog.h>

/* Messages above this priority (LOG_DEBUG > LOG_INFO) are dropped. Default LOG_INFO. */
void log_set_level(int prio);
int log_level(void);
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)	log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_DEBUG, __VA_ARGS__)

/* A broken internal invariant: log and abort. Never for peer input. */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif

/*
 * Error values shared by the core, the providers, the worker and the CLI.
 *
 * Every fallible call returns 0 or a negative value: either a negative errno
 * (-ENOMEM, -ENOENT, ...) or one of the project codes below, which live in a
 * reserved range above every errno so the two never collide.
 */
#ifndef SANDPIT_ERROR_H
#define SANDPIT_ERROR_H

#include <stddef.h>

enum sp_error {
	SP_E_FIRST = 10000,
	SP_EPROTO = -10001,	/* a peer answered something we cannot parse */
	SP_EPROVIDER = -10002,	/* the provider refused; the detail string says why */
	SP_ECONFIG = -10003,	/* configuration is invalid */
	SP_EINVAL = -10004,	/* a request is invalid; the detail string says why */
	SP_ENOTFOUND = -10005,	/* no such object (sandbox, container, image) */
	SP_ECONFLICT = -10006,	/* the object is not in a state that allows this */
	SP_EUNAVAIL = -10007,	/* a backend is down or not answering */
	SP_ETIMEDOUT = -10008,	/* an operation ran out of time */
	SP_ECANCELED = -10009,	/* the operation was cancelled (shutdown, peer gone) */
	SP_ELIMIT = -10010,	/* a configured limit refuses the request */
	SP_EDB = -10011,	/* the database failed (full, read-only, corrupt) */
	SP_E_LAST = 10011,
};

/* A static description of err (a negative errno or an sp_error); never NULL. */
const char *sp_strerror(int err);

/*
 * Format a detail message into the caller's buffer err (errlen bytes, always
 * terminated); err may be NULL or errlen 0, then nothing is written.
 */
void sp_errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif

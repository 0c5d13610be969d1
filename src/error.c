/*
 * sp_strerror(): names for negative errnos and the project's own codes, and
 * sp_errf(), the one way the core formats a detail into a caller's buffer.
 * It owns only static strings.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sandpit/error.h>

const char *
sp_strerror(int err)
{
	switch (err) {
	case 0:			return "success";
	case SP_EPROTO:		return "peer sent something that cannot be parsed";
	case SP_EPROVIDER:	return "provider refused the request";
	case SP_ECONFIG:	return "invalid configuration";
	case SP_EINVAL:		return "invalid request";
	case SP_ENOTFOUND:	return "not found";
	case SP_ECONFLICT:	return "conflicts with the current state";
	case SP_EUNAVAIL:	return "backend unavailable";
	case SP_ETIMEDOUT:	return "timed out";
	case SP_ECANCELED:	return "cancelled";
	case SP_ELIMIT:		return "limit reached";
	case SP_EDB:		return "database error";
	}
	if (err < 0 && err > -SP_E_FIRST)
		return strerror(-err);
	return "unknown error";
}

void
sp_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

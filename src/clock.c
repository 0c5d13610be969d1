/*
 * clock: the wall clock in Unix milliseconds, one definition for every
 * module that records a time. Nothing else.
 */
#include <time.h>

#include "clock.h"

int64_t
clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

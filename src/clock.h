/*
 * The wall clock the core records times with (rows, events, leases): Unix
 * milliseconds. Loop-relative timing uses uv_now(); this is for what is
 * stored or shown.
 */
#ifndef SANDPIT_CLOCK_H
#define SANDPIT_CLOCK_H

#include <stdint.h>

int64_t clock_wall_ms(void);

#endif

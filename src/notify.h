/*
 * The sd_notify datagram protocol, without libsystemd: one AF_UNIX datagram
 * to $NOTIFY_SOCKET (a path, or an abstract name starting with '@').
 */
#ifndef SANDPIT_NOTIFY_H
#define SANDPIT_NOTIFY_H

#include <stdint.h>

/* Send state ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=..."). 0 when
 * NOTIFY_SOCKET is unset or the datagram was sent, or a negative errno. */
int notify_send(const char *state);

/* The watchdog interval from WATCHDOG_USEC (honouring WATCHDOG_PID), in
 * microseconds, or 0 when no watchdog is asked for. */
uint64_t notify_watchdog_usec(void);

#endif

/*
 * The core's side of the asynchronous HTTP client (include/sandpit/httpc.h
 * holds the request API that providers use). The core creates one client per
 * loop and closes it at shutdown.
 */
#ifndef SANDPIT_HTTPC_INTERNAL_H
#define SANDPIT_HTTPC_INTERNAL_H

#include <uv.h>

#include <sandpit/httpc.h>

/*
 * Create a client driven by loop. Returns 0 and *ret, or a negative error
 * (-ENOMEM when libcurl cannot set up). The caller owns the client and must
 * end it with httpc_close() before closing the loop.
 */
int httpc_new(uv_loop_t *loop, struct sp_httpc **ret);

/*
 * Cancel every pending request (each done fires, later, with SP_ECANCELED),
 * close every libuv handle and free the client; cb(arg) fires from the loop
 * once the last handle is closed. No request may be started after this.
 * cb may be NULL.
 */
void httpc_close(struct sp_httpc *c, void (*cb)(void *), void *arg);

#endif

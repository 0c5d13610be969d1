/*
 * The memory routes of the control API (DESIGN.md):
 *   POST   /v1/memories              one item, or {"items": [...]}    → 201
 *   POST   /v1/memories/search       {"query", "k", filters...}       → 200 {"results": [...]}
 *   GET    /v1/memories/{id}                                          → 200 item
 *   DELETE /v1/memories/{id}                                          → 200 {"id", "deleted": true}
 *   POST   /v1/memories/feedback     {"ids": [...], "outcome"}        → 200 {"updated", "missing"}
 *   POST   /v1/memories/consolidate  {}                               → 200 stats (after the run)
 *   POST   /v1/trajectories          {"task_id", "trajectory", ...}   → 201 {"id"}
 * The tenant is ctl_req_tenant()'s. Errors: 400 bad_request (invalid
 * input, missing tenant), 413 too_large (text, batch or tag limits), 404,
 * 409 (a consolidation already running), 500 database_error.
 */
#ifndef SANDPIT_MEMAPI_H
#define SANDPIT_MEMAPI_H

struct ctl;
struct memory;
struct rpc;

/* Register the routes; mem must outlive ctl's serving (close ctl first). */
void memapi_register(struct ctl *ctl, struct memory *mem);

/*
 * The same routes on the worker channel's router, for tokens carrying scope;
 * the tenant is always the verified token's. mem must outlive the router's
 * serving (close the worker channel first). 0 or rpc_add()'s error.
 */
int memapi_rpc_register(struct rpc *rpc, struct memory *mem, const char *scope);

#endif

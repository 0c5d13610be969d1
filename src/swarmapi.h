/*
 * The swarm routes of the control API (docs/api.md):
 *   POST   /v1/swarms                 create                      → 201 swarm
 *   GET    /v1/swarms                 list                        → 200 [swarm…]
 *   GET    /v1/swarms/{id}            counts, results, cost        → 200 swarm
 *   DELETE /v1/swarms/{id}            cancel tasks, destroy agents → 200 swarm
 *   POST   /v1/swarms/{id}/tasks      one task or {"tasks":[…]}    → 201 {"tasks":[task…]}
 *   GET    /v1/swarms/{id}/events     NDJSON stream of state changes
 *   GET    /v1/tasks/{id}             a task with its output       → 200 task
 */
#ifndef SANDPIT_SWARMAPI_H
#define SANDPIT_SWARMAPI_H

struct ctl;
struct swarm_mgr;

/* Register the routes; m must outlive ctl's serving. */
void swarmapi_register(struct ctl *ctl, struct swarm_mgr *m);

#endif

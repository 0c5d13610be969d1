#!/usr/bin/env bash
# kill -9 of sandpitd in the middle of a swarm, then a restart: the agents'
# containers are re-adopted, their workers reconnect, tasks whose workers
# are gone return to the queue, and the swarm finishes with every accepted
# task succeeded exactly once and no orphan container. Twice: once while
# tasks run, once right after the create (agents still spawning).
# Packets go only to 127.0.0.1 and to the test's own Docker network.
. "$(dirname "$0")/lib.sh"

T_IMAGE="sandpit/worker-$T_TAG:test"
trap 'cleanup; docker_api DELETE "/images/$T_IMAGE?force=true" >/dev/null 2>&1' EXIT
write_config "worker_image \"$T_IMAGE\"
max_sandboxes 8"
DB="$T_STATE/sandpit.db"

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
pass "daemon and Docker provider up"
body() { cut -d' ' -f2- <<<"$1"; }
INST=$(instance_id)

wait_state() {	# wait_state ID STATE SECONDS
	for _ in $(seq 1 $(($3 * 10))); do
		ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -e --arg s "$2" '.state == $s' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
succeeded() { ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -r '.tasks.succeeded'; }
# No task has two successful results, and every task of the swarm has exactly one.
exactly_once() {	# exactly_once SWARM N
	local dup one
	dup=$(sqlite3 "$DB" "select count(*) from (select task from queue_results where ok = 1 group by task having count(*) > 1)")
	one=$(sqlite3 "$DB" "select count(distinct r.task) from queue_results r join queue_tasks t on t.id = r.task where r.ok = 1 and t.swarm = '$1'")
	[ "$dup" -eq 0 ] && [ "$one" -eq "$2" ]
}
restart() {
	kill9_daemon
	start_daemon && wait_provider_ready
}

# --- kill -9 while tasks run ---
N=24
TASKS=$(for i in $(seq 1 $N); do printf '"sleep 0.4; echo task-%d; [ %d -gt 0 ]"\n' "$i" "$i"; done | jq -s -c .)
r=$(ctl POST /v1/swarms "{\"agents\":3,\"retry_limit\":2,\"tasks\":$TASKS}")
SW=$(body "$r" | jq -r .id)
check "swarm with $N tasks accepted ($SW)" grep -q '^201 ' <<<"$r"
for _ in $(seq 1 300); do [ "$(succeeded "$SW")" -ge 4 ] && break; sleep 0.1; done
BEFORE=$(succeeded "$SW")
check "some tasks succeeded before the crash ($BEFORE of $N)" test "$BEFORE" -ge 4 -a "$BEFORE" -lt "$N"
r=$(ctl POST "/v1/swarms/$SW/tasks" '{"tasks":["echo late-1","echo late-2"]}')
check "two more tasks accepted just before the crash" grep -q '^201 ' <<<"$r"
N=$((N + 2))
restart || { fail "daemon restarted"; finish; exit 1; }
pass "daemon killed with -9 and restarted"
check "the swarm finishes after the restart" wait_state "$SW" completed 120
r=$(body "$(ctl GET "/v1/swarms/$SW")")
check "every accepted task succeeded ($(jq -c .tasks <<<"$r"))" \
	jq -e --argjson n "$N" '.tasks.total == $n and .tasks.succeeded == $n' <<<"$r" >/dev/null
check "no task recorded as succeeded twice, each exactly once" exactly_once "$SW" "$N"
check "every task's output is there" bash -c 'o=$(jq -r .output <<<"$1"); for i in $(seq 1 24); do grep -qx "task-$i" <<<"$o" || exit 1; done; grep -qx late-2 <<<"$o"' _ "$r"
LIVE=$(jq -r .agents.live <<<"$r")
NC=$(instance_containers "$INST" | wc -l)
check "no orphan: the daemon's containers are the live agents ($NC containers, $LIVE agents)" test "$NC" -eq "$LIVE"

# --- kill -9 right after the create, agents still spawning ---
r=$(ctl POST /v1/swarms '{"agents":3,"tasks":["echo a","echo b","echo c","echo d"]}')
SW2=$(body "$r" | jq -r .id)
check "second swarm accepted ($SW2)" grep -q '^201 ' <<<"$r"
restart || { fail "daemon restarted"; finish; exit 1; }
pass "daemon killed with -9 while spawning, and restarted"
check "the second swarm finishes after the restart" wait_state "$SW2" completed 120
check "its 4 tasks succeeded exactly once" exactly_once "$SW2" 4
r=$(body "$(ctl GET "/v1/swarms/$SW2")")
echo "$r" | jq -c '{state, agents, tasks}'

# --- delete both: nothing of this daemon remains ---
ctl DELETE "/v1/swarms/$SW" >/dev/null
ctl DELETE "/v1/swarms/$SW2" >/dev/null
for _ in $(seq 1 150); do [ -z "$(instance_containers "$INST")" ] && break; sleep 0.1; done
check "no orphan container after the swarms are deleted" test -z "$(instance_containers "$INST")"
check "the daemon stops cleanly" stop_daemon
finish

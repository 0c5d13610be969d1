#!/usr/bin/env bash
# Bursting from Docker to E2B, end to end: the real sandpitd with both
# providers, Docker capped at N=2 sandboxes (max_sandboxes) and the E2B
# emulator (real sandpit-workers in its sandboxes) allowed N more
# (burst_max_sandboxes). A swarm of 2N agents with placement auto puts N on
# Docker and N on E2B, runs tasks on both and completes. Then the emulator
# refuses every create (its concurrency 429): a swarm that finds Docker full
# waits (E2B backed off), and falls back to Docker as soon as capacity frees.
# A kill -9 of the daemon mid-swarm re-adopts the agents on both providers and
# loses no task. Then "untrusted": routed by untrusted_placement, another
# placement is 400.
# Packets go only to 127.0.0.0/8, the Unix sockets and the test's own
# containers on the network it made.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_e2b.sh"
trap 'stop_emulator; cleanup' EXIT

WPORT=$((20000 + $$ % 20000))	# lib.sh's worker_port
body() { cut -d' ' -f2- <<<"$1"; }
jqt() { jq -e "$@" >/dev/null; }

start_emulator --isolation mountns || { fail "the E2B emulator started"; finish; exit 1; }
pass "the E2B emulator listens on $EMU"
write_config "max_sandboxes 2
burst_max_sandboxes 2
untrusted_placement e2b
prices \"docker 0.000014 0.0000025\"
$(emu_directives "127.0.0.1:$WPORT")"
start_daemon && wait_provider_ready && wait_e2b_ready ||
	{ fail "daemon up, both providers ready"; finish; exit 1; }
pass "daemon up: docker and e2b ready"
INST=$(instance_id)

wait_state() {	# wait_state ID STATE SECONDS
	for _ in $(seq 1 $(($3 * 10))); do
		ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -e --arg s "$2" '.state == $s' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
# Tasks that do real work and check it; /tmp exists in both kinds of sandbox.
tasks() {	# tasks N -> a JSON array of N tasks
	jq -n -c --argjson n "$1" '[range($n) | {cmd: ["sh", "-c",
		"sleep 0.3; i=0; s=0; while [ $i -lt \(. + 10) ]; do i=$((i+1)); s=$((s+i)); done; echo task\(.)=$s"],
		workdir: "/tmp"}]'
}

# --- 2N agents: N on Docker, N burst to E2B, tasks on both ---
r=$(ctl POST /v1/swarms '{"agents":4}')
SW=$(body "$r" | jq -r .id)
check "a swarm of 4 agents with Docker capped at 2 -> 201 ($SW)" grep -q '^201 ' <<<"$r"
check "all 4 agents registered" wait_state "$SW" running 120
r=$(body "$(ctl GET "/v1/swarms/$SW")")
echo "$r" | jq -c .agents
check "2 agents on docker, 2 on e2b" jqt '.agents.by_provider == {"docker": 2, "e2b": 2}' <<<"$r"
check "the agent list names each one's provider" \
	jqt '[.agents.list[].provider] | sort == ["docker", "docker", "e2b", "e2b"]' <<<"$r"
check "2 Docker containers of this daemon" test "$(instance_containers "$INST" | wc -l)" -eq 2
check "2 emulator sandboxes of this daemon" test "$(emu_ids_of "$INST" | wc -l)" -eq 2
r=$(ctl POST /v1/sandboxes '{}')
check "a 5th sandbox -> 429 naming both limits ($(body "$r" | jq -r .error.message))" \
	bash -c 'grep -q "^429 " <<<"$1" && grep -q "max_sandboxes 2/2" <<<"$1" &&
		grep -q "burst_max_sandboxes 2/2" <<<"$1"' _ "$r"
r=$(ctl POST "/v1/swarms/$SW/tasks" "{\"tasks\":$(tasks 16)}")
check "16 tasks accepted" grep -q '^201 ' <<<"$r"
check "the swarm completes" wait_state "$SW" completed 120
r=$(body "$(ctl GET "/v1/swarms/$SW")")
check "16 of 16 succeeded" jqt '.tasks.succeeded == 16 and .success_rate == 1' <<<"$r"
check "each task's output is its checked sum" bash -c '
	o=$(jq -r .output <<<"$1")
	for i in $(seq 0 15); do n=$((i + 10)); grep -qx "task$i=$((n * (n + 1) / 2))" <<<"$o" || exit 1; done' _ "$r"
used=$(for t in $(jq -r '.results[].id' <<<"$r"); do
	w=$(body "$(ctl GET "/v1/tasks/$t")" | jq -r .worker)
	jq -r --arg w "$w" '.agents.list[] | select(.sandbox == $w) | .provider' <<<"$r"
done | sort | uniq -c | tr -s ' \n' ' ')
check "tasks ran on both providers' agents ($used)" \
	bash -c 'grep -q "docker" <<<"$1" && grep -q "e2b" <<<"$1"' _ "$used"
# docker's price from the prices directive, e2b's from its own e2b.price_* (describe).
check "the cost prices both providers ($(jq -c .cost <<<"$r"))" \
	jqt '(.cost.amount | tonumber) > 0 and (.cost.unpriced | length) == 0' <<<"$r"
out=$("$SANDPIT" swarm show "$SW")
check "swarm show says where each agent runs" \
	bash -c '[ "$(grep -c " docker " <<<"$1")" -eq 2 ] && [ "$(grep -c " e2b " <<<"$1")" -eq 2 ]' _ "$out"
# --- kill -9 mid-swarm: both providers' agents are re-adopted, nothing is lost ---
DB="$T_STATE/sandpit.db"
r=$(ctl POST "/v1/swarms/$SW/tasks" "{\"tasks\":$(tasks 24 | jq -c 'map(.cmd[2] |= "sleep 0.2; " + .)')}")
check "24 more tasks accepted" grep -q '^201 ' <<<"$r"
for _ in $(seq 1 300); do
	[ "$(body "$(ctl GET "/v1/swarms/$SW")" | jq .tasks.succeeded)" -ge 20 ] && break
	sleep 0.1
done
kill9_daemon
start_daemon && wait_provider_ready && wait_e2b_ready || { fail "daemon restarted"; finish; exit 1; }
pass "daemon killed with -9 mid-swarm and restarted"
check "the swarm finishes after the restart" wait_state "$SW" completed 120
r=$(body "$(ctl GET "/v1/swarms/$SW")")
check "all 40 tasks succeeded ($(jq -c .tasks <<<"$r"))" jqt '.tasks.total == 40 and .tasks.succeeded == 40' <<<"$r"
dup=$(sqlite3 "$DB" "select count(*) from (select task from queue_results where ok = 1 group by task having count(*) > 1)")
check "no task recorded as succeeded twice" test "$dup" -eq 0
check "the same 2 + 2 agents, re-adopted ($(jq -c .agents.by_provider <<<"$r"))" \
	jqt '.agents.by_provider == {"docker": 2, "e2b": 2} and .agents.lost == 0' <<<"$r"
check "still exactly 2 containers and 2 emulator sandboxes" \
	bash -c '[ "$1" -eq 2 ] && [ "$2" -eq 2 ]' _ "$(instance_containers "$INST" | wc -l)" "$(emu_ids_of "$INST" | wc -l)"

check "DELETE -> 200" grep -q '^200 ' <<<"$(ctl DELETE "/v1/swarms/$SW")"
for _ in $(seq 1 100); do
	[ -z "$(emu_ids_of "$INST")" ] && [ -z "$(instance_containers "$INST")" ] && break
	sleep 0.1
done
check "no sandbox left on either provider" \
	bash -c '[ -z "$1" ] && [ -z "$2" ]' _ "$(emu_ids_of "$INST")" "$(instance_containers "$INST")"

# --- E2B refuses creates: back off, fall back to Docker when capacity frees ---
emu_config '{"maxSandboxes":0}'
r=$(ctl POST /v1/swarms '{"agents":2}')
A=$(body "$r" | jq -r .id)
check "swarm A takes Docker's 2 slots" wait_state "$A" running 120
check "...both on docker" jqt '.agents.by_provider == {"docker": 2}' <<<"$(body "$(ctl GET "/v1/swarms/$A")")"
curl -s -X DELETE "$EMU/_emulator/requests" >/dev/null
r=$(ctl POST /v1/swarms "{\"agents\":2,\"tasks\":$(tasks 4)}")
B=$(body "$r" | jq -r .id)
check "swarm B is accepted: E2B has room on paper ($B)" grep -q '^201 ' <<<"$r"
for _ in $(seq 1 100); do
	curl -s "$EMU/_emulator/requests" | jq -e 'any(.[]; .op == "create" and .status == 429)' >/dev/null && break
	sleep 0.1
done
check "the emulator refused B's E2B create with 429" \
	bash -c 'curl -s "$1/_emulator/requests" | jq -e "any(.[]; .op == \"create\" and .status == 429)" >/dev/null' _ "$EMU"
sleep 2
r=$(body "$(ctl GET "/v1/swarms/$B")")
check "B waits with no agent and its tasks queued ($(jq -c '{state, agents: .agents.live, tasks: .tasks.queued, spawn_error}' <<<"$r"))" \
	jqt '.state == "spawning" and .agents.live == 0 and .tasks.queued == 4 and
	     (.spawn_error | test("429|rate-limited"))' <<<"$r"
# Both agents' first creates race the first 429; after that one probe per backoff.
n=$(curl -s "$EMU/_emulator/requests" | jq '[.[] | select(.op == "create")] | length')
check "placement backs E2B off instead of hammering it ($n creates in 2 s)" test "$n" -le 3
r=$(ctl POST /v1/sandboxes '{}')
check "a direct sandbox names the backoff ($(body "$r" | jq -r .error.message))" \
	bash -c 'grep -q "^429 " <<<"$1" && grep -q "e2b: rate-limited" <<<"$1"' _ "$r"
check "DELETE A frees Docker" grep -q '^200 ' <<<"$(ctl DELETE "/v1/swarms/$A")"
check "B falls back to Docker and completes" wait_state "$B" completed 120
r=$(body "$(ctl GET "/v1/swarms/$B")")
check "B ran on docker only, 4 of 4 succeeded" \
	jqt '.agents.by_provider == {"docker": 2} and .tasks.succeeded == 4' <<<"$r"
check "DELETE B" grep -q '^200 ' <<<"$(ctl DELETE "/v1/swarms/$B")"
emu_config '{"maxSandboxes":20}'

# --- untrusted: placed by untrusted_placement (e2b here) ---
r=$(ctl POST /v1/swarms '{"agents":1,"untrusted":true,"placement":"docker"}')
check "untrusted with placement docker -> 400 ($(body "$r" | jq -r .error.message))" \
	bash -c 'grep -q "^400 " <<<"$1" && grep -q untrusted_placement <<<"$1"' _ "$r"
r=$(ctl POST /v1/swarms '{"agents":1,"untrusted":"yes"}')
check "untrusted must be a boolean -> 400" grep -q '^400 ' <<<"$r"
for _ in $(seq 1 100); do [ -z "$(instance_containers "$INST")" ] && break; sleep 0.1; done
r=$(ctl POST /v1/swarms "{\"agents\":1,\"untrusted\":true,\"tasks\":$(tasks 1)}")
U=$(body "$r" | jq -r .id)
check "an untrusted swarm -> 201 ($U)" grep -q '^201 ' <<<"$r"
check "...completes" wait_state "$U" completed 120
r=$(body "$(ctl GET "/v1/swarms/$U")")
check "...on e2b although Docker has room" \
	jqt '.agents.by_provider == {"e2b": 1} and .spec.untrusted == true and .spec.placement == "e2b"' <<<"$r"
check "DELETE U" grep -q '^200 ' <<<"$(ctl DELETE "/v1/swarms/$U")"
for _ in $(seq 1 100); do [ -z "$(emu_ids_of "$INST")" ] && break; sleep 0.1; done
check "nothing left in the emulator" test -z "$(emu_ids_of "$INST")"

stop_daemon
check "sandpitd exits 0 on SIGTERM" test $? -eq 0
finish

#!/usr/bin/env bash
# A swarm end to end: real sandpitd, real containers running sandpit-worker.
# Bad requests change nothing; a 3-agent swarm runs shell tasks that write
# and check results; tasks added later run; the events stream ends with the
# swarm's completion; a sandbox killed mid-task (docker kill) has its task
# redone on a replacement agent; DELETE tears every container down.
# Packets go only to 127.0.0.1 and to the test's own Docker network.
. "$(dirname "$0")/lib.sh"

T_IMAGE="sandpit/worker-$T_TAG:test"
trap 'cleanup; docker_api DELETE "/images/$T_IMAGE?force=true" >/dev/null 2>&1' EXIT
write_config "worker_image \"$T_IMAGE\"
max_sandboxes 8
prices \"docker 0.000014 0.0000025\""

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
pass "daemon and Docker provider up"
body() { cut -d' ' -f2- <<<"$1"; }
INST=$(instance_id)

# wait_state ID STATE SECONDS
wait_state() {
	for _ in $(seq 1 $(($3 * 10))); do
		ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -e --arg s "$2" '.state == $s' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# --- bad input: a clear 4xx and nothing made ---
for bad in '{}' '{"agents":0}' '{"agents":2000}' '{"agents":2,"topology":"tree"}' \
	'{"agents":2,"placement":"mars"}' '{"agents":2,"template":{"colour":"red"}}' \
	'{"agents":2,"retry_limit":1000}' '{"agents":2,"ttl":"10"}' '{"agents":2,"tasks":[{"cmd":"x"}]}' \
	'{"agents":2,"tasks":[42]}' '{"agents":2,"frobnicate":1}' '{"agents":2,"template":{"memory":"1t"}}'; do
	r=$(ctl POST /v1/swarms "$bad")
	check "bad swarm $bad -> 400 ($(body "$r" | jq -r .error.message))" grep -q '^400 ' <<<"$r"
done
r=$(ctl POST /v1/swarms '{"agents":9}')
check "more agents than max_sandboxes -> 429 naming the limit ($(body "$r" | jq -r .error.message))" \
	bash -c 'grep -q "^429 " <<<"$1" && grep -q max_sandboxes <<<"$1"' _ "$r"
r=$(ctl GET /v1/swarms)
check "nothing was made by bad requests" jq -e 'type == "array" and length == 0' <<<"$(body "$r")" >/dev/null
check "no container was made by bad requests" test -z "$(instance_containers "$INST")"

# --- a swarm completes ---
TASKS='[{"cmd":["sh","-c","i=1; s=0; while [ $i -le 100 ]; do s=$((s+i)); i=$((i+1)); done; echo sum=$s; [ $s -eq 5050 ]"]},
 "echo hello > /tmp/f && grep -q hello /tmp/f && echo file-ok",
 "exit 3",
 "hostname | grep -q . && echo host-ok",
 "echo $((6*7))",
 "sleep 0.2; echo slept"]'
r=$(ctl POST /v1/swarms "{\"agents\":3,\"topology\":\"mesh\",\"retry_limit\":1,\"tasks\":$TASKS}")
SW=$(body "$r" | jq -r .id)
check "POST /v1/swarms -> 201 ($SW)" grep -q '^201 ' <<<"$r"
curl -sN --unix-socket "$T_SOCK" "http://localhost/v1/swarms/$SW/events" >"$T_DIR/events" &
EV=$!
check "the swarm completes" wait_state "$SW" completed 90
r=$(body "$(ctl GET "/v1/swarms/$SW")")
echo "$r" | jq -c '{state, agents, tasks, success_rate, spawn_ms, cost}'
check "5 of 6 tasks succeeded, 1 failed after its retry" \
	jq -e '.tasks.succeeded == 5 and .tasks.failed == 1 and .success_rate > 0.83 and .success_rate < 0.84' <<<"$r" >/dev/null
check "the failing task was attempted twice (retry_limit 1)" \
	jq -e '[.results[] | select(.state == "failed")][0] | .attempts == 2 and .exit_code == 3' <<<"$r" >/dev/null
check "the aggregated output holds the checked results" \
	bash -c 'o=$(jq -r .output <<<"$1"); grep -q sum=5050 <<<"$o" && grep -q file-ok <<<"$o" && grep -qx 42 <<<"$o" && grep -q host-ok <<<"$o"' _ "$r"
N=$(instance_containers "$INST" | wc -l)
check "3 agents live, in 3 containers of this daemon ($N)" \
	bash -c 'jq -e ".agents.live == 3" <<<"$1" >/dev/null && [ "$2" -eq 3 ]' _ "$r" "$N"
check "the cost is priced from the config ($(jq -c .cost <<<"$r"))" \
	bash -c 'jq -e ".cost.sandbox_seconds > 0 and (.cost.amount | tonumber) > 0 and (.cost.unpriced | length) == 0" <<<"$1" >/dev/null' _ "$r"
wait "$EV"
check "the events stream saw tasks succeed and ended with completed" \
	bash -c 'grep -q "\"state\":\"succeeded\"" "$1" && tail -n1 "$1" | jq -e ".state == \"completed\"" >/dev/null' _ "$T_DIR/events"
T1=$(jq -r '.results[0].id' <<<"$r")
r=$(ctl GET "/v1/tasks/$T1")
check "GET /v1/tasks/{id} has the output" bash -c 'jq -e ".output | test(\"sum=5050\")" <<<"$1" >/dev/null' _ "$(body "$r")"
check "GET /v1/tasks of another tenant -> 404" grep -qx '404' <<<"$(curl -s -o /dev/null -w '%{http_code}\n' --unix-socket "$T_SOCK" -H 'X-Sandpit-Tenant: other' "http://localhost/v1/tasks/$T1")"

# --- the CLI ---
out=$("$SANDPIT" swarm ls)
check "swarm ls lists the swarm as completed" bash -c 'grep "$1" <<<"$2" | grep -q completed' _ "$SW" "$out"
out=$("$SANDPIT" swarm show "$SW")
check "swarm show prints the per-task table" bash -c 'grep -q "^TASK" <<<"$1" && grep -c "succeeded" <<<"$1" | grep -qx 5' _ "$out"
TID=$("$SANDPIT" task add "$SW" -- sh -c 'echo cli-task')
check "task add prints the new task's id ($TID)" grep -qE '^[0-9]+$' <<<"$TID"
"$SANDPIT" swarm wait "$SW" --timeout 30s >/dev/null; st=$?
check "swarm wait exits 0 once the swarm completed" test "$st" -eq 0
out=$("$SANDPIT" task show "$TID")
check "task show prints the state and output" bash -c 'grep -q succeeded <<<"$1" && grep -qx cli-task <<<"$1"' _ "$out"
S2=$("$SANDPIT" swarm create --agents 1 --task 'echo one' --task 'exit 4' --retries 0 --wait | head -n1); st=$?
check "swarm create --wait ($S2) completes" test -n "$S2"
out=$("$SANDPIT" --json swarm show "$S2")
check "...with one success and one failure" jq -e '.tasks.succeeded == 1 and .tasks.failed == 1' <<<"$out" >/dev/null
"$SANDPIT" swarm rm "$S2" >/dev/null
check "swarm rm of an unknown swarm fails" bash -c '! "$1" swarm rm sw-000000000000 2>/dev/null' _ "$SANDPIT"

# --- messages between agents, as the topology allows (ring of 3: only to the next) ---
MSG='me=$(wget -qO- http://127.0.0.1:7070/v1/worker/swarm | tr -d " " | sed -n "s/.*\"agent\":\([0-9]*\).*/\1/p")
next=$(( (me + 1) % 3 )); other=$(( (me + 2) % 3 ))
wget -qO- --post-data "{\"to\":$next,\"body\":{\"hello\":$me}}" http://127.0.0.1:7070/v1/worker/messages; echo
wget -qO- --post-data "{\"to\":$other,\"body\":1}" http://127.0.0.1:7070/v1/worker/messages 2>/dev/null || echo forbidden
echo me=$me'
r=$(ctl POST /v1/swarms "$(jq -n -c --arg s "$MSG" '{agents: 3, topology: "ring", tasks: [{cmd: ["sh", "-c", $s]}]}')")
SR=$(body "$r" | jq -r .id)
check "ring swarm created ($SR)" grep -q '^201 ' <<<"$r"
check "the ring swarm completes" wait_state "$SR" completed 60
o=$(body "$(ctl GET "/v1/swarms/$SR")" | jq -r .output)
check "an agent may message the next one and not another ($(tr '\n' ' ' <<<"$o"))" \
	bash -c 'grep -q "\"delivered\": *1" <<<"$1" && grep -qx forbidden <<<"$1" && grep -q "^me=[0-2]$" <<<"$1"' _ "$o"
ctl DELETE "/v1/swarms/$SR" >/dev/null

# --- tasks added later run; one is killed mid-task with its container ---
r=$(ctl POST "/v1/swarms/$SW/tasks" '{"tasks":["echo later-1","echo later-2"]}')
check "POST tasks -> 201 with the tasks, queued" bash -c 'grep -q "^201 " <<<"$1" && jq -e ".tasks | length == 2 and all(.id > 0 and .state == \"queued\")" <<<"${1#* }" >/dev/null' _ "$r"
check "the swarm completes again" wait_state "$SW" completed 30
r=$(ctl POST "/v1/swarms/$SW/tasks" '{"cmd":["sh","-c","sleep 4; echo survived"]}')
TK=$(body "$r" | jq -r '.tasks[0].id')
for _ in $(seq 1 100); do
	W=$(ctl GET "/v1/tasks/$TK" | cut -d' ' -f2- | jq -r 'select(.state == "running") | .worker')
	[ -n "$W" ] && break
	sleep 0.1
done
REF=$(ctl GET "/v1/sandboxes/$W" | cut -d' ' -f2- | jq -r .ref)
docker_api POST "/containers/$REF/kill" >/dev/null
check "the task whose container was killed mid-run is redone and succeeds" wait_state "$SW" completed 60
r=$(body "$(ctl GET "/v1/tasks/$TK")")
check "...on another agent, in a later attempt ($(jq -c '{state,attempts,worker,output}' <<<"$r"))" \
	jq -e --arg w "$W" '.state == "succeeded" and .attempts >= 2 and .worker != $w and (.output | test("survived"))' <<<"$r" >/dev/null
r=$(body "$(ctl GET "/v1/swarms/$SW")")
check "the lost agent was replaced (lost 1, live 3)" jq -e '.agents.lost == 1 and .agents.live == 3' <<<"$r" >/dev/null

# --- delete ---
r=$(ctl DELETE "/v1/swarms/$SW")
check "DELETE -> 200" grep -q '^200 ' <<<"$r"
for _ in $(seq 1 100); do [ -z "$(instance_containers "$INST")" ] && break; sleep 0.1; done
check "every container of the swarm is gone" test -z "$(instance_containers "$INST")"
r=$(ctl POST "/v1/swarms/$SW/tasks" '{"cmd":["true"]}')
check "tasks for a deleted swarm -> 409 ($r)" grep -q '^409 ' <<<"$r"
check "the daemon stops cleanly" stop_daemon
finish

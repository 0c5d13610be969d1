#!/usr/bin/env bash
# Workers in E2B, end to end: the real sandpitd with its E2B provider pointed
# at the E2B emulator (tests/e2b-emulator, sandboxes as local processes in a
# private mount namespace), a swarm with "placement":"e2b", and the real
# sandpit-worker uploaded into each emulator sandbox and started there. The
# workers reach the daemon at the advertised e2b.worker_endpoint, 127.0.0.2
# (not the loopback default, so the endpoint file and the certificate's SAN
# are proven to come from it), register over QUIC, run shell tasks and the
# swarm completes; DELETE kills the emulator sandboxes. Then reconcile: the
# emulator holds sandboxes with this daemon's instance metadata that the
# daemon never made (made here with curl) and one of another instance; the
# daemon kills its orphans and leaves the other alone.
# Packets go only to 127.0.0.0/8 and the daemon's Unix socket.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_e2b.sh"
WPORT=$((20000 + $$ % 20000))	# lib.sh's worker_port
ADV=127.0.0.2			# the advertised address: loopback, but not 127.0.0.1
trap 'stop_emulator; cleanup' EXIT

# A mount namespace per sandbox is required: tasks then see the sandbox's
# own /tmp and /home, never this host's.
start_emulator --isolation mountns || { fail "the E2B emulator started"; finish; exit 1; }
pass "the E2B emulator listens on $EMU"
write_config "max_sandboxes 8
worker_listen \"127.0.0.1 $ADV\"
$(emu_directives "$ADV:$WPORT")
prices \"e2b 0.000014 0.0000045\""
start_daemon && wait_e2b_ready || { fail "daemon up, E2B provider ready"; finish; exit 1; }
pass "daemon up, E2B provider ready against the emulator"
INST=$(instance_id)
body() { cut -d' ' -f2- <<<"$1"; }
jqt() { jq -e "$@" >/dev/null; }	# a jq test on stdin (its output would hide check's line)

r=$(body "$(ctl GET /v1/info)")
check "the E2B provider describes the advertised endpoint ($ADV $WPORT)" \
	bash -c 'jq -e --arg e "$2" "[.. | objects | select(.endpoint? == \$e)] | length == 1" <<<"$1" >/dev/null' _ "$r" "$ADV $WPORT"
check "the worker channel's certificate names the advertised address" \
	bash -c 'openssl x509 -in "$1" -noout -ext subjectAltName | grep -q "IP Address:$2"' _ "$T_STATE/worker-tls/server.pem" "$ADV"

wait_state() {	# wait_state ID STATE SECONDS
	for _ in $(seq 1 $(($3 * 10))); do
		ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -e --arg s "$2" '.state == $s' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# --- a swarm on E2B completes ---
# A task without a workdir runs in the sandbox user's home (--work "$HOME"):
# the Docker image's /work does not exist in an E2B sandbox.
TASKS=$(jq -n -c '[
  {cmd: ["sh", "-c", "i=1; s=0; while [ $i -le 100 ]; do s=$((s+i)); i=$((i+1)); done; echo sum=$s; [ $s -eq 5050 ]"]},
  {cmd: ["sh", "-c", "test -x /home/user/.sandpit/sandpit-worker && test -s /home/user/.sandpit/token && echo in-sandbox && cat /home/user/.sandpit/endpoint"]},
  {cmd: ["sh", "-c", "echo hello > f && grep -q hello /tmp/f && echo file-ok"], workdir: "/tmp"},
  {cmd: ["sh", "-c", "exit 3"]},
  {cmd: ["sh", "-c", "echo $((6*7))"]},
  {cmd: ["sh", "-c", "sleep 0.2; echo slept; echo cwd=$(pwd) home=$HOME"]}
]')
r=$(ctl POST /v1/swarms "{\"agents\":2,\"placement\":\"e2b\",\"retry_limit\":1,\"tasks\":$TASKS}")
SW=$(body "$r" | jq -r .id)
check "POST /v1/swarms placement e2b -> 201 ($SW)" grep -q '^201 ' <<<"$r"
check "the swarm completes" wait_state "$SW" completed 120
r=$(body "$(ctl GET "/v1/swarms/$SW")")
echo "$r" | jq -c '{state, agents, tasks, success_rate, spawn_ms, cost}'
check "5 of 6 tasks succeeded, 1 failed after its retry" \
	jqt '.tasks.succeeded == 5 and .tasks.failed == 1' <<<"$r"
check "the failing task was attempted twice with exit 3" \
	jqt '[.results[] | select(.state == "failed")][0] | .attempts == 2 and .exit_code == 3' <<<"$r"
check "the outputs hold the checked results, from inside the sandboxes ($(jq -c .output <<<"$r" | head -c 300))" \
	bash -c 'o=$(jq -r .output <<<"$1"); grep -q sum=5050 <<<"$o" && grep -q file-ok <<<"$o" &&
		grep -qx 42 <<<"$o" && grep -q in-sandbox <<<"$o" && grep -qx "$2" <<<"$o" &&
		grep -qx "cwd=/home/user home=/home/user" <<<"$o"' _ "$r" "$ADV $WPORT"
check "2 agents live" jqt '.agents.live == 2 and (.agents.sandboxes | length) == 2' <<<"$r"
check "the cost is priced from the e2b prices ($(jq -c .cost <<<"$r"))" \
	jqt '.cost.sandbox_seconds > 0 and (.cost.amount | tonumber) > 0 and (.cost.unpriced | length) == 0' <<<"$r"
EMU_IDS=$(emu_ids_of "$INST" | sort)
emu_list() { emu_api GET "/v2/sandboxes?metadata=$(jq -rn --arg i "io.sandpit.instance=$INST" '$i | @uri')"; }
check "the E2B list API shows this daemon's 2 sandboxes" jqt 'type == "array" and length == 2' <<<"$(emu_list)"
check "2 emulator sandboxes carry this daemon's instance ($(wc -w <<<"$EMU_IDS"))" test "$(wc -w <<<"$EMU_IDS")" -eq 2
ok=1
for sb in $(jq -r '.agents.sandboxes[]' <<<"$r"); do
	s=$(body "$(ctl GET "/v1/sandboxes/$sb")")
	jq -e '.provider == "e2b" and .state == "running"' <<<"$s" >/dev/null || ok=0
	grep -qx "$(jq -r .ref <<<"$s")" <<<"$EMU_IDS" || ok=0
done
check "each agent is an e2b sandbox whose ref is an emulator sandbox" test "$ok" -eq 1
ok=1
for t in $(jq -r '.results[].id' <<<"$r"); do
	w=$(body "$(ctl GET "/v1/tasks/$t")" | jq -r .worker)
	jq -e --arg w "$w" '.agents.sandboxes | index($w) != null' <<<"$r" >/dev/null || ok=0
done
check "every task ran on one of the swarm's E2B workers" test "$ok" -eq 1
n=$(emu_state | jq --arg i "$INST" '[.sandboxes[] | select(.metadata["io.sandpit.instance"] == $i) |
	.processes[]] | length')
check "each emulator sandbox still runs its worker in the background ($n processes)" test "$n" -ge 2

out=$("$SANDPIT" swarm show "$SW")
echo "$out"
check "swarm show prints the swarm and its per-task table" \
	bash -c 'grep -q "^TASK" <<<"$1" && [ "$(grep -c succeeded <<<"$1")" -eq 5 ] && grep -q "failed" <<<"$1"' _ "$out"

# --- delete: the emulator sandboxes go ---
r=$(ctl DELETE "/v1/swarms/$SW")
check "DELETE -> 200" grep -q '^200 ' <<<"$r"
for _ in $(seq 1 100); do [ -z "$(emu_ids_of "$INST")" ] && break; sleep 0.1; done
check "every emulator sandbox of the swarm was killed" test -z "$(emu_ids_of "$INST")"
r=$(emu_list)
check "...and the E2B list API agrees ($r)" jqt 'type == "array" and length == 0' <<<"$r"
check "...through the E2B API (DELETE /sandboxes/{id} for each)" \
	bash -c 'for id in $2; do curl -s "$1/_emulator/requests" | jq -e --arg id "$id" \
		"any(.[]; .op == \"kill\" and .path == \"/sandboxes/\" + \$id and .status == 204)" >/dev/null || exit 1; done' \
	_ "$EMU" "$EMU_IDS"

# --- reconcile: orphans with our instance are killed, another instance's stay ---
mk() {	# mk INSTANCE SANDBOX -> the emulator's sandboxID
	emu_api POST /sandboxes "$(jq -n -c --arg i "$1" --arg s "$2" \
		'{templateID: "base", timeout: 120, secure: true,
		  metadata: {"io.sandpit.instance": $i, "io.sandpit.sandbox": $s}}')" | jq -r .sandboxID
}
# The request log starts here: reconcile may reap as soon as the first one exists.
curl -s -X DELETE "$EMU/_emulator/requests" >/dev/null
O1=$(mk "$INST" sb-orphan000001)
O2=$(mk "$INST" sb-orphan000002)
OTHER=$(mk "other-daemon-$T_TAG" sb-theirs00001)
check "three sandboxes made behind the daemon's back ($O1 $O2 $OTHER)" \
	bash -c '[ ${#1} -eq 20 ] && [ ${#2} -eq 20 ] && [ ${#3} -eq 20 ]' _ "$O1" "$O2" "$OTHER"
for _ in $(seq 1 300); do [ -z "$(emu_ids_of "$INST")" ] && break; sleep 0.1; done
check "reconcile killed both orphans carrying this daemon's instance" test -z "$(emu_ids_of "$INST")"
check "...and logged them as orphans" bash -c '[ "$(grep -c "removing orphan" "$1")" -ge 2 ]' _ "$T_LOG"
# One more reconcile pass (a list after the kills) and the other's is still there.
for _ in $(seq 1 300); do
	curl -s "$EMU/_emulator/requests" | jq -e '(map(.op) | rindex("kill")) as $k |
		$k != null and any(.[$k:][]; .op == "list")' >/dev/null && break
	sleep 0.1
done
check "a later reconcile pass ran" bash -c 'curl -s "$1/_emulator/requests" | jq -e "(map(.op) | rindex(\"kill\")) as \$k |
	\$k != null and any(.[\$k:][]; .op == \"list\")" >/dev/null' _ "$EMU"
left=$(emu_ids_of "other-daemon-$T_TAG")
check "the sandbox of another instance is left alone ($left)" test "$left" = "$OTHER"
check "...never asked to die, and never listed (the list filters on our instance)" \
	bash -c 'curl -s "$1/_emulator/requests" | jq -e --arg id "$2" --arg i "$3" \
		"all(.[]; .path != \"/sandboxes/\" + \$id) and all(.[] | select(.op == \"list\"); .query | contains(\$i))" >/dev/null' \
	_ "$EMU" "$OTHER" "$INST"
emu_api DELETE "/sandboxes/$OTHER" >/dev/null

check "the daemon stops cleanly" stop_daemon
stop_emulator
check "the emulator logged no internal error" bash -c '! grep -q "internal error" "$1"' _ "$T_DIR/emu.err"
finish

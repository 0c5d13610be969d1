#!/usr/bin/env bash
# The worker channel end to end: real sandpitd, real hardened containers running
# sandpit-worker over HTTP/3 to the daemon (verified against the daemon's CA, with
# their own tokens). Tasks through `sandpit sandbox exec --via-worker`, the
# token's secrecy (docker inspect, /proc/*/environ), tokens of another sandbox
# and revoked ones, a refresh, and a daemon restart in the middle of a task.
# Packets go only to 127.0.0.1 and to the test's own Docker network.
. "$(dirname "$0")/lib.sh"

WORKER="$SANDPIT_BUILD_DIR/sandpit-worker"
LOCAL_PORT=$((30000 + $$ % 20000))
HOSTW_PID=""
stop_hostw() { [ -n "$HOSTW_PID" ] && kill -TERM "$HOSTW_PID" 2>/dev/null && wait "$HOSTW_PID"; HOSTW_PID=""; }
# An image of our own: other daemons on this engine build sandpit/worker:<version>
# from their own sandpit-worker, and a swap between two creates would run theirs.
T_IMAGE="sandpit/worker-$T_TAG:test"
trap 'stop_hostw; cleanup; docker_api DELETE "/images/$T_IMAGE?force=true" >/dev/null 2>&1' EXIT
write_config "worker_image \"$T_IMAGE\""

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
pass "daemon and Docker provider up"

# wait_worker ID: until GET /v1/sandboxes/ID shows the worker connected (10 s).
wait_worker() {
	for _ in $(seq 1 100); do
		ctl GET "/v1/sandboxes/$1" | cut -d' ' -f2- | jq -e '.worker.connected == true' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
body() { cut -d' ' -f2- <<<"$1"; }

r=$(ctl POST /v1/sandboxes '{}')
A=$(body "$r" | jq -r .id); AREF=$(body "$r" | jq -r .ref)
check "sandbox A created ($A)" grep -q '^201 ' <<<"$r"
r=$(ctl GET "/v1/sandboxes/$A?wait=ready&timeout=10s")
check "GET ?wait=ready answers once A's worker has registered over HTTP/3" \
	bash -c 'jq -e ".worker.connected == true" <<<"$1" >/dev/null' _ "$(body "$r")"
r=$(ctl GET "/v1/sandboxes/$A?wait=later")
check "an unknown wait is 400" grep -q '^400 ' <<<"$r"
r=$(ctl GET "/v1/sandboxes/$A")
check "GET shows the worker: connected, registered and last seen" \
	jq -e '.worker.connected == true and (.worker.registered_ms > 0) and (.worker.last_seen_ms > 0)' <<<"$(body "$r")" >/dev/null
out=$("$SANDPIT" sandbox ls)
check "sandbox ls has a WORKER column that says up" bash -c 'grep -q WORKER <<<"$1" && grep "$2" <<<"$1" | grep -q " up "' _ "$out" "$A"

# --- tasks through the worker ---
out=$("$SANDPIT" sandbox exec --via-worker "$A" -- sh -c 'echo to-out; echo to-err >&2; id -u' 2>"$T_DIR/err"); st=$?
check "exec --via-worker: stdout ($out)" bash -c '[ "$1" = "to-out
65534" ]' _ "$out"
check "exec --via-worker: stderr" grep -qx to-err "$T_DIR/err"
check "exec --via-worker: exit 0" test "$st" -eq 0
"$SANDPIT" sandbox exec --via-worker "$A" -- sh -c 'exit 7'; st=$?
check "exec --via-worker: the exit code comes back (7 = $st)" test "$st" -eq 7
r=$(ctl POST "/v1/sandboxes/$A/exec" '{"via":"worker","cmd":["sh","-c","seq 1 20000"]}')
n=$(body "$r" | jq -r 'select(.stream == "stdout") | .data' | tr -d '\n' | wc -c)
want=$(seq 1 20000 | tr -d '\n' | wc -c)
check "a large output arrives whole in NDJSON ($n of $want bytes)" test "$n" -eq "$want"
check "the stream ends with the exit code" bash -c 'tail -n1 <<<"$1" | jq -e ".exit_code == 0" >/dev/null' _ "$(body "$r")"
r=$(ctl POST "/v1/sandboxes/$A/exec" '{"via":"worker","cmd":["sleep","30"],"timeout_ms":500}')
check "a task over its timeout is killed (timed_out)" bash -c 'tail -n1 <<<"$1" | jq -e ".timed_out == true" >/dev/null' _ "$(body "$r")"
"$SANDPIT" sandbox exec --via-worker "$A" -- sh -c 'ulimit -c' >"$T_DIR/ulim"
check "the task's child has its own rlimits (core $(cat "$T_DIR/ulim"))" grep -qx 0 "$T_DIR/ulim"

# --- the token stays a file ---
TOKEN=$(cat "$T_STATE/workers/$A/token")
check "the token file is 0400 and its directory 0700" \
	bash -c '[ "$(stat -c %a "$1/token")" = 400 ] && [ "$(stat -c %a "$1")" = 700 ]' _ "$T_STATE/workers/$A"
INSPECT=$(docker_api GET "/containers/$AREF/json")
check "docker inspect never shows the token (env, labels, args)" bash -c '! grep -qF -- "$1" <<<"$2"' _ "$TOKEN" "$INSPECT"
check "inspect: /run/sandpit is a read-only bind" \
	jq -e '[.Mounts[] | select(.Destination == "/run/sandpit" and .RW == false)] | length == 1' <<<"$INSPECT" >/dev/null
"$SANDPIT" sandbox exec "$A" -- sh -c 'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" <"$f"; done' >"$T_DIR/environ" 2>"$T_DIR/environ.err"
check "no /proc/*/environ inside holds the token ($(wc -c <"$T_DIR/environ") bytes read; $(head -c 200 "$T_DIR/environ.err"))" \
	bash -c '[ -s "$2" ] && ! grep -qF -- "$1" "$2"' _ "$TOKEN" "$T_DIR/environ"
"$SANDPIT" sandbox exec "$A" -- sh -c 'echo x > /run/sandpit/token' 2>/dev/null; st=$?
check "the files are read-only inside (exit $st)" test "$st" -ne 0

# --- the local endpoint for agent code, and a token refresh ---
out=$("$SANDPIT" sandbox exec "$A" -- wget -qO- --post-data '{}' http://127.0.0.1:7070/v1/worker/token)
check "the local endpoint forwards with the worker's identity (refresh)" \
	bash -c 'jq -e ".token | length > 0" <<<"$1" >/dev/null' _ "$out"
check "the refreshed token is in the file" bash -c '[ "$(cat "$1")" = "$2" ] && [ "$2" != "$3" ]' _ \
	"$T_STATE/workers/$A/token" "$(jq -r .token <<<"$out")" "$TOKEN"
out=$("$SANDPIT" sandbox exec --via-worker "$A" -- echo still-works)
check "the worker carries on after the refresh" test "$out" = still-works

# --- restart in the middle of a task: the worker reconnects, no output lost ---
r=$(ctl POST /v1/sandboxes '{}')
B=$(body "$r" | jq -r .id)
check "sandbox B created ($(cut -c1-200 <<<"$r"))" grep -q '^201 ' <<<"$r"
check "sandbox B's worker registers" wait_worker "$B"
"$SANDPIT" sandbox exec --via-worker "$B" -- sh -c 'for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.3; done' \
	>"$T_DIR/bout" 2>/dev/null &
CLI=$!
for _ in $(seq 1 100); do grep -q line2 "$T_DIR/bout" && break; sleep 0.05; done
check "the task is streaming (line2 seen)" grep -q line2 "$T_DIR/bout"
stop_daemon; st=$?
check "SIGTERM mid-task: the daemon stops cleanly ($st)" test "$st" -eq 0
wait "$CLI" 2>/dev/null
start_daemon || fail "daemon restarts"
check "B's worker reconnects after the restart" wait_worker "$B"
TID=$(sqlite3 "$T_STATE/sandpit.db" "select id from queue_tasks where swarm='$B' order by id desc limit 1")
for _ in $(seq 1 100); do
	ctl GET "/v1/sandboxes/$B/tasks/$TID" | grep -q '"succeeded"' && break
	sleep 0.1
done
r=$(ctl GET "/v1/sandboxes/$B/tasks/$TID")
check "the task finished after the restart ($(body "$r" | jq -c '{state,exit_code}'))" \
	bash -c 'jq -e ".state == \"succeeded\" and .exit_code == 0" <<<"$1" >/dev/null' _ "$(body "$r")"
check "its output is whole, each line once" bash -c '[ "$1" = "$(seq -f line%g 1 8)" ]' _ \
	"$(body "$r" | jq -r .output | sed '/^$/d')"

# --- another sandbox's token; a revoked token ---
# A worker on the host with A's files, pointed at 127.0.0.1: it is A.
mkdir -m 700 "$T_DIR/afiles"
cp "$T_STATE/workers/$A/token" "$T_STATE/workers/$A/ca.pem" "$T_DIR/afiles/"
echo "127.0.0.1 $(grep -o 'worker_port [0-9]*' "$T_DIR/sandpitd.conf" | cut -d' ' -f2)" >"$T_DIR/afiles/endpoint"
"$WORKER" --dir "$T_DIR/afiles" --local-port "$LOCAL_PORT" 2>"$T_DIR/hostw.log" &
HOSTW_PID=$!
for _ in $(seq 1 100); do grep -q registered "$T_DIR/hostw.log" && break; sleep 0.05; done
check "a worker with A's token registers on 127.0.0.1 (verified server)" grep -q registered "$T_DIR/hostw.log"
"$SANDPIT" sandbox exec --via-worker "$B" -- sleep 2 >/dev/null 2>&1 &
CLI=$!
sleep 0.5
TID=$(sqlite3 "$T_STATE/sandpit.db" "select id from queue_tasks where swarm='$B' order by id desc limit 1")
code=$(curl -s -o "$T_DIR/x" -w '%{http_code}' -X POST -d '{"attempt":1,"lease":1,"exit_code":0}' \
	"http://127.0.0.1:$LOCAL_PORT/v1/worker/tasks/$TID/result")
check "A's token cannot report B's task ($code)" test "$code" = 404
code=$(curl -s -o "$T_DIR/x" -w '%{http_code}' -X POST -d '{"attempt":1,"lease":1,"offset":0,"fd":1,"b64":"eA=="}' \
	"http://127.0.0.1:$LOCAL_PORT/v1/worker/tasks/$TID/output")
check "nor send output for it ($code)" test "$code" = 404
wait "$CLI"; st=$?
check "B's own task still completes (exit $st)" test "$st" -eq 0
r=$(ctl DELETE "/v1/sandboxes/$A")
check "destroy A" grep -q '^200 ' <<<"$r"
check "A's files are removed" test ! -e "$T_STATE/workers/$A"
for _ in $(seq 1 100); do grep -q 'refused our token (401)' "$T_DIR/hostw.log" && break; sleep 0.1; done
check "A's token is refused once A is destroyed (401)" grep -q 'refused our token (401)' "$T_DIR/hostw.log"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "http://127.0.0.1:$LOCAL_PORT/v1/worker/heartbeat")
check "and its requests no longer reach the daemon ($code)" test "$code" = 503
r=$(ctl GET /v1/info)
check "/v1/info lists the endpoints and counts the 401s ($(body "$r" | jq -c '[.worker_endpoints, .worker_channel.rpc.unauthorized]'))" \
	bash -c 'jq -e "(.worker_endpoints | length == 2) and (.worker_endpoints[0] | startswith(\"127.0.0.1:\")) and .worker_channel.rpc.unauthorized > 0" <<<"$1" >/dev/null' _ "$(body "$r")"
kill -TERM "$HOSTW_PID"; wait "$HOSTW_PID"; st=$?; HOSTW_PID=""
check "SIGTERM stops a worker cleanly (exit $st)" test "$st" -eq 0

# --- the sandbox stops under a running task: the task fails at once, not at lease expiry ---
"$SANDPIT" sandbox exec --via-worker "$B" -- sleep 60 >/dev/null 2>"$T_DIR/kerr" &
CLI=$!
sleep 0.5
TID=$(sqlite3 "$T_STATE/sandpit.db" "select id from queue_tasks where swarm='$B' order by id desc limit 1")
docker_api POST "/containers/$(ctl GET "/v1/sandboxes/$B" | cut -d' ' -f2- | jq -r .ref)/kill" >/dev/null
wait "$CLI"; st=$?
r=$(ctl GET "/v1/sandboxes/$B/tasks/$TID")
check "a killed sandbox fails its worker's task (exit $st, $(body "$r" | jq -c '{state,reason}'))" \
	bash -c '[ "$2" -ne 0 ] && jq -e ".state == \"failed\" and .reason == \"the sandbox stopped\"" <<<"$1" >/dev/null' \
	_ "$(body "$r")" "$st"

ctl DELETE "/v1/sandboxes/$B" >/dev/null
stop_daemon; st=$?
check "the daemon stops cleanly ($st)" test "$st" -eq 0
finish

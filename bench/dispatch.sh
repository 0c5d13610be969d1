#!/usr/bin/env bash
# bench/dispatch: no-op tasks (`true`) of one swarm through real
# sandpit-worker processes over the real HTTP/3 channel, with durable
# results. The swarm's agents are real sandboxes; once they registered, their
# containers are paused and the same identities run as worker processes on
# the host (the bench measures the coordinator and the channel, not Docker).
# Tasks/s from the first POST to the last result, and per-task end-to-end
# latency (enqueue to result recorded), with 16 and 64 workers.
# Each worker runs up to SLOTS tasks at once (sandpit-worker --tasks), leasing
# that many per long-poll and reporting results in batches.
#   usage: bench/dispatch.sh BUILD_DIR [TASKS] [SLOTS]
set -euo pipefail
build=$(cd "$1" && pwd); ntasks=${2:-4000}; slots=${3:-1}
out="$build/bench"; mkdir -p "$out"
tmp=$(mktemp -d /tmp/sandpit-bdisp.XXXXXX)
sock="$tmp/sandpitd.sock"
net="sandpit-bd$$"; bridge="spd$$"; port=$((20000 + $$ % 20000)); lport=$((40000 + $$ % 10000))
cat >"$tmp/sandpitd.conf" <<CONF
state_dir "$tmp/state"
socket "$sock"
docker.network "$net"
docker.bridge "$bridge"
worker_port $port
worker_poll_timeout 1s
max_sandboxes 80
sandbox_memory 32m
log_level warning
CONF
"$build/sandpitd" -f "$tmp/sandpitd.conf" 2>"$tmp/log" &
dpid=$!
wpids=()
cleanup() {
	for p in "${wpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	[ ${#wpids[@]} -eq 0 ] || wait "${wpids[@]}" 2>/dev/null || true
	for id in $(sqlite3 "$tmp/state/sandpit.db" "select ref from sandboxes where state != 'destroyed' and ref is not null" 2>/dev/null); do
		curl -s --unix-socket /var/run/docker.sock -X POST "http://localhost/v1.41/containers/$id/unpause" >/dev/null || true
	done
	kill -TERM "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null || true
	for id in $(sqlite3 "$tmp/state/sandpit.db" "select ref from sandboxes where state != 'destroyed' and ref is not null" 2>/dev/null); do
		curl -s --unix-socket /var/run/docker.sock -X DELETE "http://localhost/v1.41/containers/$id?force=true" >/dev/null || true
	done
	curl -s --unix-socket /var/run/docker.sock -X DELETE "http://localhost/v1.41/networks/$net" >/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
export SANDPIT_SOCKET="$sock"
ctl() { curl -s --unix-socket "$sock" -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "@$3"} "http://localhost$2"; }
docker_post() { curl -s --unix-socket /var/run/docker.sock -X POST "http://localhost/v1.41$1" >/dev/null; }
now_ms() { date +%s%3N; }
for _ in $(seq 1 300); do
	curl -s --unix-socket "$sock" http://localhost/v1/health 2>/dev/null | grep -q '"ok"' && break
	sleep 0.1
done
for _ in $(seq 1 600); do
	curl -s --unix-socket "$sock" http://localhost/v1/health | jq -e '.status == "ok"' >/dev/null && break
	sleep 0.1
done
"$build/sandpit" run -- true >/dev/null	# builds the worker image if needed

# The task bodies, built once (not timed): batches of at most 1000 no-op tasks.
jq -n -c '{tasks: [range(1000) | {cmd: ["true"]}]}' >"$tmp/tasks-1000.json"
jq -n -c --argjson n "$((ntasks % 1000))" '{tasks: [range($n) | {cmd: ["true"]}]}' >"$tmp/tasks-rest.json"
# Four POSTs at a time, so that starting curl does not leave the daemon idle
# between batches when the workers drain each one at once (64 workers).
enqueue() {
	local k posts=()
	for k in $(seq 1 $((ntasks / 1000))); do
		ctl POST "/v1/swarms/$sw/tasks" "$tmp/tasks-1000.json" >/dev/null &
		posts+=($!)
		[ ${#posts[@]} -lt 4 ] || { wait "${posts[@]}"; posts=(); }
	done
	[ ${#posts[@]} -eq 0 ] || wait "${posts[@]}"
	[ $((ntasks % 1000)) -eq 0 ] || ctl POST "/v1/swarms/$sw/tasks" "$tmp/tasks-rest.json" >/dev/null
}
# measure KIND W FROM T0 T1: the row of the tasks of swarm $sw with id > FROM
measure() {
	local ok lat tps
	ok=$(sqlite3 "$tmp/state/sandpit.db" "select count(*) from queue_tasks where swarm = '$sw' and state = 3 and id > $3")
	lat=$(sqlite3 "$tmp/state/sandpit.db" "select updated_ms - created_ms from queue_tasks where swarm = '$sw' and state = 3 and id > $3 order by 1" |
		awk '{a[NR]=$1} END { printf "%d %d %d %d", a[int(NR*0.5)+1], a[int(NR*0.95)+1], a[int(NR*0.99)+1], a[NR] }')
	tps=$(awk -v n="$ok" -v ms="$(($5 - $4))" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
	results+=("$1 $2 $ok $(($5 - $4)) $tps $lat")
}
last_id() { sqlite3 "$tmp/state/sandpit.db" "select coalesce(max(id), 0) from queue_tasks"; }

results=()
for W in 16 64; do
	echo "{\"agents\":$W,\"retry_limit\":0}" >"$tmp/create.json"
	sw=$(ctl POST /v1/swarms "$tmp/create.json" | jq -r .id)
	for _ in $(seq 1 1200); do
		[ "$(ctl GET "/v1/swarms/$sw" | jq -r .state)" = running ] && break
		sleep 0.1
	done
	agents=$(ctl GET "/v1/swarms/$sw" | jq -r '.agents.sandboxes[]')
	# The containers' workers stop (paused); their identities move to host processes.
	for a in $agents; do
		docker_post "/containers/$(ctl GET "/v1/sandboxes/$a" | jq -r .ref)/pause"
	done
	sleep 2.5	# every long-poll of a paused worker times out (worker_poll_timeout 1s)
	i=0; dirs=()
	for a in $agents; do
		d="$tmp/w-$a"; mkdir -m 700 "$d"; dirs+=("$d")
		cp "$tmp/state/workers/$a/token" "$tmp/state/workers/$a/ca.pem" "$d/"
		echo "127.0.0.1 $port" >"$d/endpoint"
		"$build/sandpit-worker" --dir "$d" --local-port $((lport + i)) --tasks "$slots" 2>"$d/log" &
		wpids+=($!); i=$((i + 1))
	done
	for a in $agents; do
		for _ in $(seq 1 200); do grep -q registered "$tmp/w-$a/log" && break; sleep 0.05; done
	done
	# 1. sandpit-worker: each task forks and execs `true`.
	from=$(last_id); t0=$(now_ms)
	enqueue
	# The list's light view (no results page, no cost): the poll must not
	# cost the daemon more than the tasks it waits for.
	for _ in $(seq 1 12000); do
		[ "$(ctl GET /v1/swarms | jq -r --arg s "$sw" '.[] | select(.id == $s) | .state')" = completed ] && break
		sleep 0.02
	done
	t1=$(now_ms)
	measure worker "$W" "$from" "$t0" "$t1"
	for p in "${wpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait "${wpids[@]}" 2>/dev/null || true
	wpids=()
	# 2. The same identities and protocol with no process per task
	# (bench_dispatch_channel): the coordinator and the channel alone.
	from=$(last_id)
	"$build/bench/bench_dispatch_channel" "$port" "$slots" "$ntasks" "${dirs[@]}" >"$tmp/channel.out" &
	cpid=$!
	sleep 1		# connected and registered: its long-polls wait for tasks
	t0=$(now_ms)
	enqueue
	wait "$cpid" || echo "bench_dispatch_channel failed" >&2
	t1=$(now_ms)
	measure channel "$W" "$from" "$t0" "$t1"
	for a in $agents; do
		docker_post "/containers/$(ctl GET "/v1/sandboxes/$a" | jq -r .ref)/unpause"
	done
	ctl DELETE "/v1/swarms/$sw" >/dev/null
	for _ in $(seq 1 600); do
		[ "$(sqlite3 "$tmp/state/sandpit.db" "select count(*) from sandboxes where state != 'destroyed'")" = 0 ] && break
		sleep 0.1
	done
done
printf '\nbench/dispatch: %d no-op tasks per row, one swarm, over HTTP/3 with durable results; SLOTS=%d tasks per worker at once\n' "$ntasks" "$slots"
printf '  worker:  sandpit-worker processes on the host (--tasks %d), each task forks and execs `true`\n' "$slots"
printf '  channel: the same identities and protocol in one process (bench_dispatch_channel), no process per task\n'
printf '%-8s %-8s %8s %9s %9s %12s %12s %12s %12s\n' run workers tasks wall_ms tasks/s e2e_p50_ms e2e_p95_ms e2e_p99_ms e2e_max_ms
for r in "${results[@]}"; do
	read -r k w ok ms tps p50 p95 p99 mx <<<"$r"
	printf '%-8s %-8s %8s %9s %9s %12s %12s %12s %12s\n' "$k" "$w" "$ok" "$ms" "$tps" "$p50" "$p95" "$p99" "$mx"
done
printf 'goal >= 15000 tasks/s through the coordinator\n'
printf '%s\n' "${results[@]}" | jq -R -s -c 'split("\n") | map(select(length > 0) | split(" ") |
	{run: .[0]} + (.[1:] | map(tonumber) | {workers: .[0], tasks: .[1], wall_ms: .[2],
	tasks_per_s: .[3], p50_ms: .[4], p95_ms: .[5], p99_ms: .[6], max_ms: .[7]}))' \
	>"$out/dispatch.json"

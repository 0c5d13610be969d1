#!/usr/bin/env bash
# bench/dispatch: no-op tasks (`true`) of one swarm through real
# sandpit-worker processes over the real HTTP/3 channel, with durable
# results. The swarm's agents are real sandboxes; once they registered, their
# containers are paused and the same identities run as worker processes on
# the host (the bench measures the coordinator and the channel, not Docker).
# Tasks/s from the first POST to the last result, and per-task end-to-end
# latency (enqueue to result recorded), with 16 and 64 workers.
#   usage: bench/dispatch.sh BUILD_DIR [TASKS]
set -euo pipefail
build=$(cd "$1" && pwd); ntasks=${2:-4000}
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

# batch FILE FIRST N: a {"tasks":[…]} body of N no-op tasks
batch() { jq -n -c --argjson n "$3" '{tasks: [range($n) | {cmd: ["true"]}]}' >"$1"; }

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
	i=0
	for a in $agents; do
		d="$tmp/w-$a"; mkdir -m 700 "$d"
		cp "$tmp/state/workers/$a/token" "$tmp/state/workers/$a/ca.pem" "$d/"
		echo "127.0.0.1 $port" >"$d/endpoint"
		"$build/sandpit-worker" --dir "$d" --local-port $((lport + i)) 2>"$d/log" &
		wpids+=($!); i=$((i + 1))
	done
	for a in $agents; do
		for _ in $(seq 1 200); do grep -q registered "$tmp/w-$a/log" && break; sleep 0.05; done
	done
	left=$ntasks; t0=$(now_ms)
	while [ "$left" -gt 0 ]; do
		n=$((left > 1000 ? 1000 : left))
		batch "$tmp/tasks.json" 0 "$n"
		ctl POST "/v1/swarms/$sw/tasks" "$tmp/tasks.json" >/dev/null
		left=$((left - n))
	done
	for _ in $(seq 1 12000); do
		[ "$(ctl GET "/v1/swarms/$sw" | jq -r .state)" = completed ] && break
		sleep 0.02
	done
	t1=$(now_ms)
	ok=$(sqlite3 "$tmp/state/sandpit.db" "select count(*) from queue_tasks where swarm = '$sw' and state = 3")
	lat=$(sqlite3 "$tmp/state/sandpit.db" "select updated_ms - created_ms from queue_tasks where swarm = '$sw' and state = 3 order by 1" |
		awk '{a[NR]=$1} END { printf "%d %d %d %d", a[int(NR*0.5)+1], a[int(NR*0.95)+1], a[int(NR*0.99)+1], a[NR] }')
	tps=$(awk -v n="$ok" -v ms="$((t1 - t0))" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
	results+=("$W $ok $((t1 - t0)) $tps $lat")
	for p in "${wpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait "${wpids[@]}" 2>/dev/null || true
	wpids=()
	for a in $agents; do
		docker_post "/containers/$(ctl GET "/v1/sandboxes/$a" | jq -r .ref)/unpause"
	done
	ctl DELETE "/v1/swarms/$sw" >/dev/null
	for _ in $(seq 1 600); do
		[ "$(sqlite3 "$tmp/state/sandpit.db" "select count(*) from sandboxes where state != 'destroyed'")" = 0 ] && break
		sleep 0.1
	done
done
printf '\nbench/dispatch: %d no-op tasks (`true`) of one swarm through host sandpit-worker processes over HTTP/3, durable results\n' "$ntasks"
printf '%-8s %8s %9s %9s %12s %12s %12s %12s\n' workers tasks wall_ms tasks/s e2e_p50_ms e2e_p95_ms e2e_p99_ms e2e_max_ms
for r in "${results[@]}"; do
	read -r w ok ms tps p50 p95 p99 mx <<<"$r"
	printf '%-8s %8s %9s %9s %12s %12s %12s %12s\n' "$w" "$ok" "$ms" "$tps" "$p50" "$p95" "$p99" "$mx"
done
printf 'goal >= 15000 tasks/s through the coordinator (these tasks fork `true` in a worker each)\n'
printf '%s\n' "${results[@]}" | jq -R -s -c 'split("\n") | map(select(length > 0) | split(" ") | map(tonumber) |
	{workers: .[0], tasks: .[1], wall_ms: .[2], tasks_per_s: .[3], p50_ms: .[4], p95_ms: .[5], p99_ms: .[6], max_ms: .[7]})' \
	>"$out/dispatch.json"

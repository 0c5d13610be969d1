#!/usr/bin/env bash
# bench/spawn: ten sandboxes created, started and running `true` through
# sandpitd (`sandpit run -- true` x10 in parallel), against `docker run --rm`
# x10 in parallel with the same hardening, in the same run. Several rounds,
# alternating, medians and percentiles. Then a 10-agent swarm from the
# request to all ten workers registered: cold (the pool off, alternating with
# docker run x10 again) and warm (claimed from a pool of 10 that refills
# between rounds). Prints the tables and writes JSON.
#   usage: bench/spawn.sh BUILD_DIR [ROUNDS]
set -euo pipefail
build=$(cd "$1" && pwd); rounds=${2:-7}; n=10
src=$(cd "$(dirname "$0")/.." && pwd)
out="$build/bench"; mkdir -p "$out"
tmp=$(mktemp -d /tmp/sandpit-bench.XXXXXX)
sock="$tmp/sandpitd.sock"
net="sandpit-bench$$"; bridge="spb$$"
cat >"$tmp/sandpitd.conf" <<CONF
state_dir "$tmp/state"
socket "$sock"
docker.network "$net"
docker.bridge "$bridge"
log_level warning
CONF
"$build/sandpitd" -f "$tmp/sandpitd.conf" 2>"$tmp/log" &
dpid=$!
cleanup() {
	kill -TERM "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null || true
	curl -s --unix-socket /var/run/docker.sock -X DELETE "http://localhost/v1.41/networks/$net" >/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
export SANDPIT_SOCKET="$sock"
for _ in $(seq 1 300); do
	curl -s --unix-socket "$sock" http://localhost/v1/health 2>/dev/null | grep -q '"ok"' && break
	sleep 0.1
done
# Warm up: builds the worker image if needed and warms Docker's caches.
"$build/sandpit" run -- true
info=$(curl -s --unix-socket "$sock" http://localhost/v1/info)
image=$(jq -r .worker_image <<<"$info")
profile=$(jq -r '.providers[] | select(.name=="docker") | .info.seccomp_profile // empty' <<<"$info")
[ -n "$profile" ] || profile="$src/seccomp/sandbox.json"
docker run --rm --network "$net" "$image" true

now_ms() { date +%s%3N; }
# Before each measured round: let the engine finish what the last round left
# (shim exits, network and layer clean-up) so neither side pays for the other.
settle() { sleep "${SETTLE:-0.5}"; }
sandpit_round() {
	local t0 t1; settle; t0=$(now_ms)
	for _ in $(seq 1 $n); do "$build/sandpit" run -- true & done
	wait; t1=$(now_ms); echo $((t1 - t0))
}
docker_round() {
	local t0 t1; settle; t0=$(now_ms)
	for _ in $(seq 1 $n); do
		docker run --rm --user 65534:65534 --cap-drop ALL --security-opt no-new-privileges:true \
			--security-opt "seccomp=$profile" --read-only \
			--tmpfs /tmp:rw,noexec,nosuid,size=64m --tmpfs /work:rw,nosuid,size=256m \
			--memory 512m --memory-swap 512m --cpus 1 --pids-limit 256 \
			--ulimit nofile=1024:1024 --init --network "$net" "$image" true &
	done
	wait; t1=$(now_ms); echo $((t1 - t0))
}
s=(); d=()
for r in $(seq 1 "$rounds"); do
	s+=("$(sandpit_round)")
	d+=("$(docker_round)")
done
stats() {	# prints "median p10 p90 min max"
	printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {
		m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
		p10 = a[int(0.1*(NR-1))+1]; p90 = a[int(0.9*(NR-1)+0.999)+1]
		printf "%d %d %d %d %d\n", m, p10, p90, a[1], a[NR] }'
}
read -r sm sp10 sp90 smin smax <<<"$(stats "${s[@]}")"
read -r dm dp10 dp90 dmin dmax <<<"$(stats "${d[@]}")"
ratio=$(awk -v a="$sm" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')
printf '\nbench/spawn: %d sandboxes in parallel running `true`, %d rounds (wall ms)\n' $n "$rounds"
printf '%-34s %8s %8s %8s %8s %8s\n' "" median p10 p90 min max
printf '%-34s %8d %8d %8d %8d %8d\n' "sandpit run x$n (via sandpitd)" "$sm" "$sp10" "$sp90" "$smin" "$smax"
printf '%-34s %8d %8d %8d %8d %8d\n' "docker run --rm x$n (baseline)" "$dm" "$dp10" "$dp90" "$dmin" "$dmax"
printf 'ratio sandpit/docker (medians): %s   goal <= 0.80\n' "$ratio"

# --- swarms: request to every worker registered ---
ctl() { curl -s --unix-socket "$sock" -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "http://localhost$2"; }
metric() { curl -s --unix-socket "$sock" http://localhost/metrics | awk -v k="$1" '$1 == k { print $2 }'; }
# swarm_round BODY: prints the wall ms from POST to state "running" (all workers
# registered) and the daemon's own spawn_ms of the swarm (no client overhead).
# It waits on the swarm's event stream (one curl blocked in read) rather than
# polling: a curl|jq poll loop burns about a core on this 2-core machine, CPU
# the sandboxes' starts need and the docker CLI rounds never pay.
swarm_round() {
	local t0 t1 id st=spawning line resp fd cpid
	settle
	t0=$(now_ms)
	resp=$(ctl POST /v1/swarms "$1")
	[[ $resp =~ \"id\":\"([^\"]+)\" ]] || { echo "swarm create: $resp" >&2; exit 1; }
	id=${BASH_REMATCH[1]}
	exec {fd}< <(exec timeout 300 curl -sN --unix-socket "$sock" \
		"http://localhost/v1/swarms/$id/events")
	cpid=$!
	# The stream replays what happened before it was opened, so nothing is missed.
	while IFS= read -r -u "$fd" line; do
		[[ $line =~ ^\{\"type\":\"swarm\",\"state\":\"([a-z]+)\" ]] || continue
		st=${BASH_REMATCH[1]}
		[ "$st" = spawning ] || break
	done
	t1=$(now_ms)
	kill "$cpid" 2>/dev/null || true
	exec {fd}<&-
	[ "$st" = running ] || { echo "swarm $id: $st" >&2; exit 1; }
	echo "$((t1 - t0)) $(ctl GET "/v1/swarms/$id" | jq -r .spawn_ms)"
	ctl DELETE "/v1/swarms/$id" >/dev/null
	# Let the teardown finish before the next round measures.
	for _ in $(seq 1 600); do
		[ "$(ctl GET /v1/sandboxes | jq '[.[] | select(.state != "destroyed")] | length')" = 0 ] && break
		sleep 0.05
	done
}
srounds=${SWARM_ROUNDS:-5}
c=(); cdaemon=(); d2=()
for r in $(seq 1 "$srounds"); do
	# No pool is configured during the cold rounds: every agent starts cold.
	read -r ms dms <<<"$(swarm_round '{"agents":10,"template":{"pids":256}}')"
	c+=("$ms"); cdaemon+=("$dms")
	d2+=("$(docker_round)")
done
# Warm: a pool of 10, refilled before each round.
sed -i '/^pool_size /d' "$tmp/sandpitd.conf"; echo "pool_size 10" >>"$tmp/sandpitd.conf"
kill -HUP "$dpid"
w=(); wdaemon=()
wrounds=${WARM_ROUNDS:-20}
for r in $(seq 1 "$wrounds"); do
	for _ in $(seq 1 1200); do [ "$(metric 'sandpit_pool_sandboxes{state="idle"}')" = 10 ] && break; sleep 0.05; done
	read -r ms dms <<<"$(swarm_round '{"agents":10}')"
	w+=("$ms"); wdaemon+=("$dms")
done
hits=$(metric 'sandpit_pool_claims_total{result="hit"}')
# The pool empties itself (pool_size 0), so nothing is left behind.
sed -i '/^pool_size /d' "$tmp/sandpitd.conf"; kill -HUP "$dpid"
for _ in $(seq 1 600); do
	[ "$(ctl GET '/v1/sandboxes?all=1' | jq 'length')" != x ] || break
	[ "$(sqlite3 "$tmp/state/sandpit.db" "select count(*) from sandboxes where state != 'destroyed'")" = 0 ] && break
	sleep 0.05
done
wsum=$(metric 'sandpit_pool_claim_seconds_sum{kind="warm"}')
wmax=$(metric 'sandpit_pool_claim_seconds_max{kind="warm"}')
read -r cm cp10 cp90 cmin cmax <<<"$(stats "${c[@]}")"
read -r cdm cdp10 cdp90 cdmin cdmax <<<"$(stats "${cdaemon[@]}")"
read -r d2m d2p10 d2p90 d2min d2max <<<"$(stats "${d2[@]}")"
read -r wm wp10 wp90 wmin wmax_r <<<"$(stats "${w[@]}")"
read -r wdm wdp10 wdp90 wdmin wdmax <<<"$(stats "${wdaemon[@]}")"
p95() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END { printf "%d", a[int(0.95*(NR-1)+0.999)+1] }'; }
cratio=$(awk -v a="$cm" -v b="$d2m" 'BEGIN { printf "%.2f", a / b }')
printf '\nbench/spawn: a 10-agent swarm, request to all 10 workers registered, %d rounds (wall ms)\n' "$srounds"
printf '%-34s %8s %8s %8s %8s %8s\n' "" median p10 p90 min max
printf '%-34s %8d %8d %8d %8d %8d\n' "swarm x10 cold" "$cm" "$cp10" "$cp90" "$cmin" "$cmax"
printf '%-34s %8d %8d %8d %8d %8d\n' "  the same, daemon's spawn_ms" "$cdm" "$cdp10" "$cdp90" "$cdmin" "$cdmax"
printf '%-34s %8d %8d %8d %8d %8d\n' "docker run --rm x10 (same rounds)" "$d2m" "$d2p10" "$d2p90" "$d2min" "$d2max"
printf '%-34s %8d %8d %8d %8d %8d\n' "swarm x10 warm, pool ($wrounds rounds)" "$wm" "$wp10" "$wp90" "$wmin" "$wmax_r"
printf '%-34s %8d %8d %8d %8d %8d\n' "  the same, daemon's spawn_ms" "$wdm" "$wdp10" "$wdp90" "$wdmin" "$wdmax"
printf 'ratio cold swarm/docker (medians): %s   goal <= 0.80\n' "$cratio"
printf 'warm 10-agent claim p95: %s ms daemon side (%s ms wall, two curl processes included)   goal <= 20 ms\n' \
	"$(p95 "${wdaemon[@]}")" "$(p95 "${w[@]}")"
printf 'warm claims: %s, mean %s ms, max %s ms per agent (daemon side)\n' \
	"$hits" "$(awk -v s="$wsum" -v n="$hits" 'BEGIN { printf "%.3f", n ? s / n * 1000 : 0 }')" \
	"$(awk -v m="$wmax" 'BEGIN { printf "%.3f", m * 1000 }')"
jq -n --argjson s "[$(IFS=,; echo "${s[*]}")]" --argjson d "[$(IFS=,; echo "${d[*]}")]" \
	--argjson c "[$(IFS=,; echo "${c[*]}")]" --argjson cd "[$(IFS=,; echo "${cdaemon[*]}")]" --argjson d2 "[$(IFS=,; echo "${d2[*]}")]" \
	--argjson w "[$(IFS=,; echo "${w[*]}")]" --argjson wd "[$(IFS=,; echo "${wdaemon[*]}")]" \
	--arg ratio "$ratio" '{bench:"spawn", n:10, sandpit_ms:$s, docker_ms:$d, ratio:($ratio|tonumber),
	  swarm_cold_ms:$c, swarm_cold_daemon_ms:$cd, swarm_docker_ms:$d2, swarm_warm_ms:$w, swarm_warm_daemon_ms:$wd}' \
	>"$out/spawn.json"

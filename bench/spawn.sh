#!/usr/bin/env bash
# bench/spawn: ten sandboxes created, started and running `true` through
# sandpitd (`sandpit run -- true` x10 in parallel), against `docker run --rm`
# x10 in parallel with the same hardening, in the same run. Several rounds,
# alternating, medians and percentiles. Prints a table and writes JSON.
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
sandpit_round() {
	local t0 t1; t0=$(now_ms)
	for _ in $(seq 1 $n); do "$build/sandpit" run -- true & done
	wait; t1=$(now_ms); echo $((t1 - t0))
}
docker_round() {
	local t0 t1; t0=$(now_ms)
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
jq -n --argjson s "[$(IFS=,; echo "${s[*]}")]" --argjson d "[$(IFS=,; echo "${d[*]}")]" \
	--arg ratio "$ratio" '{bench:"spawn", n:10, sandpit_ms:$s, docker_ms:$d, ratio:($ratio|tonumber)}' \
	>"$out/spawn.json"

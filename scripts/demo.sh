#!/usr/bin/env bash
# make demo: a real workload in hardened sandboxes, through sandpitd and the
# CLI, on the daemon's embedded defaults. Uses a daemon already answering on
# the default socket, or starts one for the demo and stops it afterwards.
set -euo pipefail
build=$(cd "$1" && pwd)
SANDPIT="$build/sandpit"
tmp=$(mktemp -d /tmp/sandpit-demo.XXXXXX)
started=""
cleanup() {
	if [ -n "$started" ]; then
		kill -TERM "$started" 2>/dev/null; wait "$started" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
if ! "$SANDPIT" status >/dev/null 2>&1; then
	echo "demo: starting sandpitd on its embedded defaults (log: $tmp/sandpitd.log)"
	"$build/sandpitd" 2>"$tmp/sandpitd.log" &
	started=$!
	for _ in $(seq 1 300); do
		"$SANDPIT" --json status 2>/dev/null | grep -q '"status": *"ok"' && break
		kill -0 "$started" 2>/dev/null || { cat "$tmp/sandpitd.log"; exit 1; }
		sleep 0.1
	done
fi
"$SANDPIT" status
echo
t0=$(now_ms)
"$SANDPIT" image build >/dev/null
echo "demo: worker image ready in $(( $(now_ms) - t0 )) ms"

# name | expected output | shell script run inside its own sandbox
tasks=(
"primes below 50000|5133|awk 'BEGIN{for(n=2;n<50000;n++){p=1;for(d=2;d*d<=n;d++)if(n%d==0){p=0;break};c+=p};print c}'"
"sort 200k numbers, check order|sorted|seq 200000 | awk '{print (\$1*7919)%200003}' | sort -n > /work/s && sort -c -n /work/s && echo sorted"
"sha256 of 64 MiB in tmpfs|$(head -c 67108864 /dev/zero | sha256sum | cut -d' ' -f1)|head -c 67108864 /dev/zero > /work/z && sha256sum /work/z | cut -d' ' -f1"
"word count of a generated text|40000|i=0; while [ \$i -lt 10000 ]; do echo 'the quick brown fox'; i=\$((i+1)); done | wc -w"
"runs as a non-root user|65534|id -u"
"holds no capabilities|0000000000000000|grep CapEff /proc/self/status | awk '{print \$2}'"
"root filesystem is read-only|refused|touch /etc/x 2>/dev/null && echo written || echo refused"
"host services unreachable|refused|g=\$(awk '\$2==\"00000000\"{print \$3}' /proc/net/route); gw=\$((0x\${g:6:2})).\$((0x\${g:4:2})).\$((0x\${g:2:2})).\$((0x\${g:0:2})); nc -w 2 \$gw 22 </dev/null 2>/dev/null && echo connected || echo refused"
)
# The last probe dials the host's own address on the sandbox bridge (its
# default gateway), port 22: the daemon's firewall leaves a sandbox only the
# worker port, so it must not connect. No packet leaves this machine.

printf '\ndemo: running %d tasks, each in its own hardened sandbox, in parallel\n' ${#tasks[@]}
t0=$(now_ms)
i=0
pids=()
for t in "${tasks[@]}"; do
	script=${t#*|}; script=${script#*|}
	(
		s=$(now_ms)
		out=$("$SANDPIT" run --memory 256m --timeout 120s -- sh -c "$script" 2>"$tmp/err.$i") || true
		e=$(now_ms)
		printf '%s\n%s\n' "$out" "$((e - s))" >"$tmp/out.$i"
	) &
	pids+=($!)
	i=$((i + 1))
done
wait "${pids[@]}"	# not a bare wait: the daemon may be our child too
total=$(( $(now_ms) - t0 ))

printf '\n%-34s %-18s %-4s %8s\n' TASK RESULT OK "TIME(ms)"
printf '%-34s %-18s %-4s %8s\n' "----" "------" "--" "--------"
ok=0; i=0
for t in "${tasks[@]}"; do
	name=${t%%|*}; rest=${t#*|}; want=${rest%%|*}
	got=$(head -n1 "$tmp/out.$i"); ms=$(tail -n1 "$tmp/out.$i")
	if [ "$got" = "$want" ]; then mark=yes; ok=$((ok + 1)); else mark=NO; fi
	printf '%-34s %-18.18s %-4s %8s\n' "$name" "$got" "$mark" "$ms"
	i=$((i + 1))
done
printf '\n%d of %d tasks correct; wall time for all: %d ms\n' "$ok" "${#tasks[@]}" "$total"
[ "$ok" -eq "${#tasks[@]}" ] || exit 1

# --- the main job: a 10-agent swarm working through a queue of tasks ---
swarm_tasks=("${tasks[@]}"
"fibonacci(25), iteratively|75025|a=0; b=1; i=0; while [ \$i -lt 25 ]; do t=\$((a+b)); a=\$b; b=\$t; i=\$((i+1)); done; echo \$a"
"tar + gzip round trip|same|mkdir -p /work/d && seq 50000 > /work/d/f && tar -C /work -czf /work/a.tgz d && mkdir /work/x && tar -C /work/x -xzf /work/a.tgz && cmp -s /work/d/f /work/x/d/f && echo same"
"sum 1..100000|5000050000|seq 100000 | awk '{s+=\$1} END {printf \"%.0f\\n\", s}'"
"count numbers with a 7 below 100000|40951|seq 99999 | grep -c 7"
"store a lesson in shared memory|stored|wget -qO- --header 'Content-Type: application/json' --post-data '{\"title\":\"Pin the toolchain\",\"content\":\"The build broke after an unpinned compiler upgrade: pin tool versions in the lockfile.\",\"domain\":\"build\",\"outcome\":\"success\"}' http://127.0.0.1:7070/v1/memories >/dev/null && echo stored"
"recall it from any agent's sandbox|Pin the toolchain|i=0; while [ \$i -lt 100 ]; do r=\$(wget -qO- --header 'Content-Type: application/json' --post-data '{\"query\":\"why did the build break after the compiler upgrade\",\"k\":1,\"domain\":\"build\"}' http://127.0.0.1:7070/v1/memories/search); case \$r in *'Pin the toolchain'*) echo 'Pin the toolchain'; exit 0;; esac; i=\$((i+1)); sleep 0.1; done; exit 1"
)
args=()
for t in "${swarm_tasks[@]}"; do script=${t#*|}; script=${script#*|}; args+=(--task "$script"); done
printf '\ndemo: a swarm of 10 agents (10 sandboxes, a worker in each) sharing a queue of %d tasks\n' ${#swarm_tasks[@]}
t0=$(now_ms)
sw=$("$SANDPIT" swarm create --agents 10 --topology mesh --retries 1 "${args[@]}")
state=spawning
for _ in $(seq 1 1200); do
	state=$("$SANDPIT" --json swarm show "$sw" | jq -r .state)
	[ "$state" = spawning ] || break
	sleep 0.05
done
t_spawned=$(now_ms)
"$SANDPIT" swarm wait "$sw" --timeout 300s >/dev/null || true
t_done=$(now_ms)
"$SANDPIT" --json swarm show "$sw" >"$tmp/swarm.json"
printf '\n%-36s %-18s %-4s %-8s %s\n' TASK RESULT OK AGENT ATTEMPTS
printf '%-36s %-18s %-4s %-8s %s\n' "----" "------" "--" "-----" "--------"
ok=0; i=0
for t in "${swarm_tasks[@]}"; do
	name=${t%%|*}; rest=${t#*|}; want=${rest%%|*}
	id=$(jq -r ".results[$i].id" "$tmp/swarm.json")
	"$SANDPIT" --json task show "$id" >"$tmp/task.json"
	got=$(jq -r '.output // "" | split("\n")[0]' "$tmp/task.json")
	if [ "$got" = "$want" ] && [ "$(jq -r .state "$tmp/task.json")" = succeeded ]; then mark=yes; ok=$((ok + 1)); else mark=NO; fi
	printf '%-36s %-18.18s %-4s %-8s %s\n' "$name" "$got" "$mark" "$(jq -r '.worker // "-" | .[3:9]' "$tmp/task.json")" \
		"$(jq -r .attempts "$tmp/task.json")"
	i=$((i + 1))
done
printf '\nswarm %s: %s, %d of %d tasks correct, success rate %s, cost %s (%s sandbox-seconds)\n' "$sw" \
	"$(jq -r .state "$tmp/swarm.json")" "$ok" "${#swarm_tasks[@]}" "$(jq -r .success_rate "$tmp/swarm.json")" \
	"$(jq -r 'if (.cost.unpriced | length) > 0 then "unpriced (no prices directive)" else .cost.amount end' "$tmp/swarm.json")" "$(jq -r '.cost.sandbox_seconds' "$tmp/swarm.json")"
printf 'spawn (request to all 10 workers registered): %d ms; run (tasks): %d ms; total %d ms\n' \
	$((t_spawned - t0)) $((t_done - t_spawned)) $((t_done - t0))
"$SANDPIT" swarm rm "$sw" >/dev/null
[ "$ok" -eq "${#swarm_tasks[@]}" ]

#!/usr/bin/env bash
# Hardened Docker sandboxes through the real daemon and CLI: what `docker
# inspect` shows, and what a process inside can and cannot do. Every packet
# goes to this machine only: the sandbox network's gateway (a host address)
# and the test's own sandboxes.
. "$(dirname "$0")/lib.sh"

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
pass "daemon and Docker provider up"

# --- sandpit run: output, exit codes ---
out=$("$SANDPIT" run -- id -u); st=$?
check "sandpit run -- id -u is not root (uid '$out')" bash -c '[ "$1" -eq 0 ] && [ -n "$2" ] && [ "$2" != 0 ]' _ "$st" "$out"
out=$("$SANDPIT" run -- sh -c 'echo to-out; echo to-err >&2' 2>"$T_DIR/err"); st=$?
check "stdout and stderr stream to the right places" \
	bash -c '[ "$1" = to-out ] && grep -qx to-err "$2" && [ "$3" -eq 0 ]' _ "$out" "$T_DIR/err" "$st"
"$SANDPIT" run -- sh -c 'exit 7'; st=$?
check "the command's exit code becomes the CLI's (7 = $st)" test "$st" -eq 7
"$SANDPIT" run --timeout 1s -- sleep 30 2>"$T_DIR/err"; st=$?
check "a command over its timeout is stopped (exit $st: $(cat "$T_DIR/err"))" test "$st" -eq 124
r=$(ctl GET /v1/sandboxes); left=$(cut -d' ' -f2- <<<"$r" | jq length)
check "sandpit run destroys its sandboxes (live: $left)" test "$left" -eq 0

# --- one sandbox, inspected ---
r=$(ctl POST /v1/sandboxes '{"memory":"64m","pids":64,"cpus":0.5}')
check "POST /v1/sandboxes answers 201 ($(cut -c1-60 <<<"$r"))" grep -q '^201 ' <<<"$r"
SB=$(cut -d' ' -f2- <<<"$r" | jq -r .id)
REF=$(cut -d' ' -f2- <<<"$r" | jq -r .ref)
check "the sandbox is running" test "$(cut -d' ' -f2- <<<"$r" | jq -r .state)" = running
INSPECT=$(docker_api GET "/containers/$REF/json")
jqt() { jq -e "$1" >/dev/null <<<"$INSPECT"; }
check "inspect: a non-root user" jqt '.Config.User != "" and (.Config.User | startswith("0") | not) and (.Config.User | startswith("root") | not)'
check "inspect: CapDrop ALL" jqt '.HostConfig.CapDrop == ["ALL"] and (.HostConfig.CapAdd // [] | length) == 0'
check "inspect: not privileged" jqt '.HostConfig.Privileged == false'
check "inspect: no-new-privileges" jqt '[.HostConfig.SecurityOpt[] | select(startswith("no-new-privileges"))] | length == 1'
check "inspect: our seccomp profile" jqt '[.HostConfig.SecurityOpt[] | select(startswith("seccomp=") and (contains("unconfined") | not))] | length == 1'
check "inspect: read-only root" jqt '.HostConfig.ReadonlyRootfs == true'
check "inspect: size-capped tmpfs for /tmp and /work" jqt '(.HostConfig.Tmpfs["/tmp"] | contains("size=")) and (.HostConfig.Tmpfs["/work"] | contains("size="))'
check "inspect: Memory = MemorySwap = 64 MiB" jqt '.HostConfig.Memory == 67108864 and .HostConfig.MemorySwap == 67108864'
check "inspect: NanoCpus 0.5 CPU" jqt '.HostConfig.NanoCpus == 500000000'
check "inspect: PidsLimit 64" jqt '.HostConfig.PidsLimit == 64'
check "inspect: nofile ulimit" jqt '[.HostConfig.Ulimits[] | select(.Name == "nofile" and .Soft == .Hard and .Soft > 0)] | length == 1'
check "inspect: an init process" jqt '.HostConfig.Init == true'
check "inspect: on the daemon's network only" jqt ".HostConfig.NetworkMode == \"$T_NET\" and (.NetworkSettings.Networks | keys == [\"$T_NET\"])"
check "inspect: labels name instance, sandbox, tenant and spec hash" \
	jqt ".Config.Labels[\"io.sandpit.sandbox\"] == \"$SB\" and .Config.Labels[\"io.sandpit.tenant\"] == \"default\" and (.Config.Labels[\"io.sandpit.instance\"] | length > 0) and (.Config.Labels[\"io.sandpit.spec-hash\"] | length > 0)"
check "inspect: the Docker socket is not mounted" jqt '[.Mounts[] | select(.Source | contains("docker.sock"))] | length == 0'
NETJ=$(docker_api GET "/networks/$T_NET")
check "the network is internal with inter-container traffic off" \
	jq -e '.Internal == true and .Options["com.docker.network.bridge.enable_icc"] == "false"' <<<"$NETJ" >/dev/null
GW=$(jq -r '.IPAM.Config[0].Gateway' <<<"$NETJ")

sx() { "$SANDPIT" sandbox exec "$SB" -- "$@"; }
out=$(sx sh -c 'grep CapEff /proc/self/status')
check "inside: CapEff is 0 ($out)" grep -Eq 'CapEff:\s+0+$' <<<"$out"
out=$(sx id -u)
check "inside: id -u is not 0 ($out)" bash -c '[ -n "$1" ] && [ "$1" != 0 ]' _ "$out"
sx touch /written-to-root 2>/dev/null; st=$?
check "inside: writing to / fails (exit $st)" test "$st" -ne 0
sx sh -c 'echo ok >/work/f && cat /work/f' >"$T_DIR/w"; st=$?
check "inside: /work is writable (control)" bash -c '[ "$1" -eq 0 ] && grep -qx ok "$2"' _ "$st" "$T_DIR/w"
sx unshare -U true 2>/dev/null; st=$?
check "inside: unshare is refused (exit $st)" test "$st" -ne 0

# Fork bomb, bounded: far more children than the pids limit allows.
out=$(sx sh -c 'i=0; n=0; while [ $i -lt 200 ]; do sleep 3 & [ $? -eq 0 ] && n=$((n+1)); i=$((i+1)); done; echo started=$n' 2>&1)
started=$(grep -o 'started=[0-9]*' <<<"$out" | cut -d= -f2)
check "inside: the pids limit stops a fork bomb (started ${started:-?} of 200)" \
	bash -c '[ -n "$1" ] && [ "$1" -lt 64 ] || grep -qi "fork" <<<"$2"' _ "${started:-}" "$out"
ok=1; for _ in $(seq 1 50); do sx true 2>/dev/null && { ok=0; break; }; sleep 0.2; done
check "the sandbox survives the fork bomb" test "$ok" -eq 0

# Memory hog: dd's buffer alone is three times the limit.
"$SANDPIT" --json sandbox exec "$SB" -- dd if=/dev/zero of=/dev/null bs=192M count=1 >"$T_DIR/oom.json" 2>"$T_DIR/oom.err"; st=$?
check "a memory hog is OOM-killed (exit $st)" test "$st" -eq 137
r=$(ctl POST "/v1/sandboxes/$SB/exec" '{"cmd":["dd","if=/dev/zero","of=/dev/null","bs=192M","count=1"]}')
check "the API reports oom_killed ($(tail -c 120 <<<"$r"))" grep -q '"oom_killed": *true' <<<"$r"
"$SANDPIT" sandbox exec "$SB" -- dd if=/dev/zero of=/dev/null bs=192M count=1 2>"$T_DIR/oom.err"
check "the CLI says it was out of memory" grep -qi "out of memory" "$T_DIR/oom.err"

# --- network: nothing on the host but the worker port, no other sandbox ---
PORT=$((20000 + $$ % 20000))
python3 - "$GW" "$PORT" "$T_DIR/accepted" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); s.settimeout(1)
n = 0; end = time.time() + 40
open(sys.argv[3], "w").write("0")
while time.time() < end:
    try:
        c, _ = s.accept(); n += 1; open(sys.argv[3], "w").write(str(n)); c.close()
    except socket.timeout:
        pass
    try:
        if open(sys.argv[3] + ".stop").read(): break
    except OSError:
        pass
PY
LPID=$!
for _ in $(seq 1 50); do [ -f "$T_DIR/accepted" ] && break; sleep 0.1; done
python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' "$GW" "$PORT"
check "control: the host listener on $GW:$PORT accepts from the host" test "$(cat "$T_DIR/accepted")" = 1
sx nc -w 2 "$GW" "$PORT" </dev/null 2>/dev/null; st=$?
sleep 0.5
check "inside: the host's bridge address $GW:$PORT is unreachable (nc exit $st, accepted $(cat "$T_DIR/accepted"))" \
	bash -c '[ "$1" -ne 0 ] && [ "$(cat "$2")" = 1 ]' _ "$st" "$T_DIR/accepted"
echo stop >"$T_DIR/accepted.stop"; wait "$LPID" 2>/dev/null

r=$(ctl POST /v1/sandboxes '{"memory":"64m"}'); SB2=$(cut -d' ' -f2- <<<"$r" | jq -r .id)
REF2=$(cut -d' ' -f2- <<<"$r" | jq -r .ref)
IP2=$(docker_api GET "/containers/$REF2/json" | jq -r ".NetworkSettings.Networks[\"$T_NET\"].IPAddress")
# B listens once on 8081 (busybox nc -l serves one connection; its stdin is a
# pipe that stays open, or it could quit before reading what it received). A
# tries to reach it; then B itself connects, which only works if the listener
# was up and still unused, so the negative result cannot come from a dead one.
"$SANDPIT" sandbox exec "$SB2" -- sh -c 'sleep 60 | nc -l -p 8081 >/work/got 2>/dev/null &'
sleep 0.5
sx sh -c "echo intruder | nc -w 2 $IP2 8081" 2>/dev/null; st=$?
ok=1
for _ in $(seq 1 20); do
	"$SANDPIT" sandbox exec "$SB2" -- sh -c 'echo self | nc -w 1 127.0.0.1 8081' 2>/dev/null && { ok=0; break; }
	sleep 0.3
done
got=$("$SANDPIT" sandbox exec "$SB2" -- cat /work/got)
check "control: B's listener was up and answered B itself (got '$got')" bash -c '[ "$1" -eq 0 ] && [ "$2" = self ]' _ "$ok" "$got"
check "inside: another sandbox ($IP2:8081) is unreachable (nc exit $st)" bash -c '[ "$1" -ne 0 ] && ! grep -q intruder <<<"$2"' _ "$st" "$got"

# --- listing and removal ---
out=$("$SANDPIT" sandbox ls)
check "sandpit sandbox ls shows both sandboxes" bash -c 'grep -q "$1" <<<"$3" && grep -q "$2" <<<"$3"' _ "$SB" "$SB2" "$out"
n=$("$SANDPIT" --json sandbox ls | jq length)
check "sandpit --json sandbox ls is a JSON array of 2 ($n)" test "$n" = 2
"$SANDPIT" sandbox rm "$SB" "$SB2" >/dev/null
check "sandpit sandbox rm removes the containers" \
	bash -c '[ "$(docker_api GET "/containers/$1/json" | jq -r .message)" != null ]' _ "$REF"
r=$(ctl GET "/v1/sandboxes/$SB")
check "the row says destroyed" grep -q '"state": *"destroyed"' <<<"$r"

stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
finish

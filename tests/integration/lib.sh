# Shared helpers for the integration tests: start the real sandpitd on a
# private state directory, socket and Docker network, drive it with the real
# CLI and curl, count results, and clean up exactly what the test made.
# Sourced, not run. Needs root, a Docker engine and the built binaries.
set -u

: "${SANDPIT_BUILD_DIR:?set by CTest}"
: "${SANDPIT_SOURCE_DIR:?set by CTest}"
SANDPITD="$SANDPIT_BUILD_DIR/sandpitd"
SANDPIT="$SANDPIT_BUILD_DIR/sandpit"

T_NAME=$(basename "$0" .sh)
T_DIR=$(mktemp -d "/tmp/sandpit-${T_NAME}.XXXXXX")
T_SOCK="$T_DIR/sandpitd.sock"
T_STATE="$T_DIR/state"
T_LOG="$T_DIR/sandpitd.log"
# Short, unique names: a Linux interface name is at most 15 bytes.
T_TAG="t$$"
T_NET="sandpit-$T_TAG"
T_BRIDGE="spt$$"
T_PID=""
T_PASS=0
T_FAIL=0

export SANDPIT_SOCKET="$T_SOCK"

pass() { T_PASS=$((T_PASS + 1)); echo "ok - $*"; }
fail() { T_FAIL=$((T_FAIL + 1)); echo "not ok - $*"; }
check() {	# check "description" command...
	local what=$1; shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}

docker_api() {	# docker_api METHOD PATH [BODY]
	if [ $# -ge 3 ]; then
		curl -s --unix-socket /var/run/docker.sock -X "$1" -H 'Content-Type: application/json' \
			-d "$3" "http://localhost/v1.41$2"
	else
		curl -s --unix-socket /var/run/docker.sock -X "$1" "http://localhost/v1.41$2"
	fi
}

export -f docker_api

# ctl METHOD PATH [BODY] -> prints "STATUS BODY"
ctl() {
	local out
	if [ $# -ge 3 ]; then
		out=$(curl -s -w '\n%{http_code}' --unix-socket "$T_SOCK" -X "$1" \
			-H 'Content-Type: application/json' --data-binary "$3" "http://localhost$2")
	else
		out=$(curl -s -w '\n%{http_code}' --unix-socket "$T_SOCK" -X "$1" "http://localhost$2")
	fi
	printf '%s %s\n' "$(printf '%s' "$out" | tail -n1)" "$(printf '%s' "$out" | sed '$d')"
}

# ctl_file METHOD PATH FILE -> like ctl, with the body read from FILE
ctl_file() {
	local out
	out=$(curl -s -w '\n%{http_code}' --unix-socket "$T_SOCK" -X "$1" \
		-H 'Content-Type: application/json' --data-binary "@$3" "http://localhost$2")
	printf '%s %s\n' "$(printf '%s' "$out" | tail -n1)" "$(printf '%s' "$out" | sed '$d')"
}

write_config() {	# write_config [extra directive lines]
	cat >"$T_DIR/sandpitd.conf" <<CONF
# written by $T_NAME
state_dir "$T_STATE"
socket "$T_SOCK"
reconcile_interval 2s
sandbox_memory 128m
docker.network "$T_NET"
docker.bridge "$T_BRIDGE"
worker_port $((20000 + $$ % 20000))
${1:-}
CONF
}

start_daemon() {	# start_daemon [extra sandpitd args]
	[ -f "$T_DIR/sandpitd.conf" ] || write_config
	"$SANDPITD" -f "$T_DIR/sandpitd.conf" "$@" >>"$T_LOG" 2>&1 &
	T_PID=$!
	for _ in $(seq 1 100); do
		if curl -sf --unix-socket "$T_SOCK" http://localhost/v1/health >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$T_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "sandpitd did not come up; its log:" >&2
	cat "$T_LOG" >&2
	return 1
}

wait_provider_ready() {	# until the default provider reports ready
	for _ in $(seq 1 300); do
		ctl GET /v1/health | grep -q '"status": *"ok"' && return 0
		sleep 0.1
	done
	echo "provider never became ready; daemon log:" >&2
	tail -n 30 "$T_LOG" >&2
	return 1
}

stop_daemon() {	# SIGTERM and wait; returns the daemon's exit status
	local st=0
	[ -n "$T_PID" ] || return 0
	kill -TERM "$T_PID" 2>/dev/null
	wait "$T_PID" || st=$?
	T_PID=""
	return $st
}

kill9_daemon() {
	[ -n "$T_PID" ] || return 0
	kill -KILL "$T_PID" 2>/dev/null
	wait "$T_PID" 2>/dev/null
	T_PID=""
}

instance_id() {
	curl -s --unix-socket "$T_SOCK" http://localhost/v1/info | jq -r .instance
}

# Containers of this test's daemon instance (ids), from Docker itself.
instance_containers() {	# instance_containers INSTANCE
	docker_api GET "/containers/json?all=1&filters=$(printf '{"label":["io.sandpit.instance=%s"]}' "$1" | jq -sRr @uri)" |
		jq -r '.[].Id'
}

cleanup() {
	local inst
	if [ -n "$T_PID" ]; then kill -KILL "$T_PID" 2>/dev/null; wait "$T_PID" 2>/dev/null; fi
	if [ -f "$T_STATE/sandpit.db" ]; then
		inst=$(sqlite3 "$T_STATE/sandpit.db" "select value from meta where key='instance'" 2>/dev/null)
		if [ -n "$inst" ]; then
			for c in $(instance_containers "$inst"); do
				docker_api DELETE "/containers/$c?force=true&v=true" >/dev/null
			done
		fi
	fi
	docker_api DELETE "/networks/$T_NET" >/dev/null 2>&1
	if [ "$T_FAIL" -ne 0 ]; then
		echo "--- daemon log ($T_LOG) ---"
		tail -n 60 "$T_LOG" 2>/dev/null
	fi
	rm -rf "$T_DIR"
}
trap cleanup EXIT

finish() {
	echo "$T_PASS passed, $T_FAIL failed"
	[ "$T_FAIL" -eq 0 ]
}

# raw_status 'BYTES' -> the HTTP status the daemon answers to exactly those bytes
raw_status() {
	python3 - "$T_SOCK" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode().decode('unicode_escape').encode('latin-1'))
data = b''
try:
    while b'\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
line = data.split(b'\r\n', 1)[0].decode(errors='replace')
print(line.split(' ')[1] if line.startswith('HTTP/1.') else 'none')
PY
}

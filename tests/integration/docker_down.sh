#!/usr/bin/env bash
# A Docker engine that is down, or that answers garbage: requests fail cleanly
# with a clear error, and the daemon keeps serving.
. "$(dirname "$0")/lib.sh"

FAKE="$T_DIR/fake-docker.sock"
write_config "docker.socket \"$T_DIR/no-such-docker.sock\""
start_daemon || { fail "daemon starts without Docker"; finish; exit 1; }
pass "the daemon starts with no Docker engine"
r=$(ctl GET /v1/health)
check "health says degraded ($r)" grep -q '"degraded"' <<<"$r"
r=$(ctl POST /v1/sandboxes '{}')
check "create answers 503 with a clear message ($r)" bash -c 'grep -q "^503 " <<<"$1" && grep -q "not available" <<<"$1"' _ "$r"
r=$(ctl GET /v1/sandboxes)
check "listing still works ($r)" grep -q '^200 \[' <<<"$r"
stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0

# An engine that answers garbage to everything.
python3 - "$FAKE" <<'PY' &
import socket, os, sys, threading
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(path); s.listen(16)
def serve(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{not json!!")
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
FPID=$!
for _ in $(seq 1 50); do [ -S "$FAKE" ] && break; sleep 0.1; done
write_config "docker.socket \"$FAKE\""
start_daemon || { fail "daemon starts against a garbage engine"; finish; exit 1; }
sleep 1
r=$(ctl POST /v1/sandboxes '{}')
check "create against a garbage engine fails cleanly ($(cut -c1-100 <<<"$r"))" grep -Eq '^5[0-9][0-9] .*"error"' <<<"$r"
r=$(ctl GET /v1/health)
check "the daemon keeps serving ($r)" grep -q '^200 ' <<<"$r"
kill "$FPID" 2>/dev/null; wait "$FPID" 2>/dev/null
stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
finish

#!/usr/bin/env bash
# The daemon on its own: config checking, the control socket and its bad
# inputs, sd_notify, SIGHUP and a clean SIGTERM. Uses the real Docker engine
# only through the daemon's provider.
. "$(dirname "$0")/lib.sh"

# --- configuration checks (-n) ---
check "-n accepts the commented example" \
	"$SANDPITD" -n -f "$SANDPIT_SOURCE_DIR/config/sandpitd.conf.example"
check "-n accepts no file at all (embedded defaults)" "$SANDPITD" -n
printf 'socket /tmp/x.sock\nmax_clients lots\n' >"$T_DIR/bad.conf"
out=$("$SANDPITD" -n -f "$T_DIR/bad.conf" 2>&1); st=$?
check "-n refuses a bad config" test "$st" -ne 0
check "the error names file:line ($out)" grep -q "bad.conf:2:" <<<"$out"
printf 'no_such_directive 1\n' >"$T_DIR/bad2.conf"
out=$("$SANDPITD" -n -f "$T_DIR/bad2.conf" 2>&1)
check "an unknown directive is named with its line ($out)" grep -q "bad2.conf:1:" <<<"$out"

# --- sd_notify: a datagram socket stands in for systemd ---
NOTIFY="$T_DIR/notify.sock"
python3 - "$NOTIFY" >"$T_DIR/notify.txt" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg, flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    pass
PY
NOTIFY_PID=$!
for _ in $(seq 1 50); do [ -S "$NOTIFY" ] && break; sleep 0.1; done

write_config
NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=400000 start_daemon || { fail "daemon starts"; finish; exit 1; }
pass "daemon starts on the test config"
check "the socket is mode 0660" test "$(stat -c %a "$T_SOCK")" = 660

r=$(ctl GET /v1/health)
check "GET /v1/health answers 200 ($r)" grep -q '^200 ' <<<"$r"
r=$(ctl GET /v1/info)
check "GET /v1/info names the version and the docker provider" \
	bash -c 'grep -q "\"version\"" <<<"$1" && grep -q "\"docker\"" <<<"$1"' _ "$r"
r=$(ctl GET /metrics)
check "GET /metrics is Prometheus text" grep -q 'sandpit_build_info' <<<"$r"
check "curl --unix-socket works as documented" \
	curl -sf --unix-socket "$T_SOCK" http://localhost/v1/health -o /dev/null

# --- bad input: a clear 4xx with the error shape, and nothing changes ---
errshape() { grep -Eq "^$1 .*\"error\": *\{.*\"code\"" <<<"$2" && grep -q '"message"' <<<"$2"; }
before=$(sqlite3 "$T_STATE/sandpit.db" 'select count(*) from sandboxes')
r=$(ctl POST /v1/sandboxes '{"memory": ')
check "malformed JSON gets 400 ($r)" errshape 400 "$r"
r=$(ctl POST /v1/sandboxes '{"colour":"blue"}')
check "an unknown field gets 400 ($r)" errshape 400 "$r"
r=$(ctl POST /v1/sandboxes '{"memory":true}')
check "a mistyped field gets 400 ($r)" errshape 400 "$r"
r=$(ctl POST /v1/sandboxes '{"pids":100000000}')
check "a limit over the maximum gets 400 ($r)" errshape 400 "$r"
r=$(ctl POST /v1/sandboxes '[1,2,3]')
check "a JSON array body gets 400 ($r)" errshape 400 "$r"
{ printf '{"image":"'; head -c 2000000 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$T_DIR/big.json"
r=$(ctl_file POST /v1/sandboxes "$T_DIR/big.json")
check "an oversized body gets 413 ($(cut -c1-80 <<<"$r"))" errshape 413 "$r"
r=$(ctl GET /v1/sandboxes/not-an-id)
check "an invalid id gets 400 ($r)" errshape 400 "$r"
r=$(ctl GET /v1/sandboxes/sb-000000000000)
check "an unknown id gets 404 ($r)" errshape 404 "$r"
r=$(ctl DELETE /v1/sandboxes/sb-000000000000)
check "deleting an unknown id gets 404 ($r)" errshape 404 "$r"
r=$(ctl POST /v1/sandboxes/sb-000000000000/exec '{"cmd":["true"]}')
check "exec in an unknown sandbox gets 404 ($r)" errshape 404 "$r"
r=$(ctl GET /v1/nothing-here)
check "an unknown route gets 404 ($r)" errshape 404 "$r"
r=$(ctl PUT /v1/health)
check "a wrong method gets 405 ($r)" errshape 405 "$r"
r=$(curl -s -w '\n%{http_code}' --unix-socket "$T_SOCK" -H 'X-Sandpit-Tenant: NOT valid!' http://localhost/v1/sandboxes | tail -n1)
check "an invalid tenant header gets 400 ($r)" test "$r" = 400
r=$(raw_status 'GARBAGE\r\n\r\n')
check "a malformed request line gets 400 ($r)" test "$r" = 400
after=$(sqlite3 "$T_STATE/sandpit.db" 'select count(*) from sandboxes')
check "bad input stored nothing ($before -> $after)" test "$before" = "$after"
r=$(ctl GET /v1/health)
check "the daemon still serves after bad input" grep -q '^200 ' <<<"$r"

# --- SIGHUP: a broken file is refused and the old one kept; a good one swaps in ---
cp "$T_DIR/sandpitd.conf" "$T_DIR/good.conf"
echo "max_body nonsense" >>"$T_DIR/sandpitd.conf"
kill -HUP "$T_PID"
for _ in $(seq 1 50); do grep -q "SIGHUP:.*sandpitd.conf:" "$T_LOG" && break; sleep 0.1; done
check "SIGHUP with a broken file logs file:line and keeps running" \
	bash -c 'grep -q "SIGHUP:.*sandpitd.conf:[0-9]*:" "$1" && kill -0 "$2"' _ "$T_LOG" "$T_PID"
cp "$T_DIR/good.conf" "$T_DIR/sandpitd.conf"
echo "max_body 2m" >>"$T_DIR/sandpitd.conf"
kill -HUP "$T_PID"
for _ in $(seq 1 50); do grep -q "configuration reloaded" "$T_LOG" && break; sleep 0.1; done
check "SIGHUP with a valid file reloads it" grep -q "configuration reloaded" "$T_LOG"
{ printf '{"image":"'; head -c 1500000 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$T_DIR/big.json"
r=$(ctl_file POST /v1/sandboxes "$T_DIR/big.json")
check "the reloaded max_body is in force (1.5 MB now reaches validation: $(cut -c1-60 <<<"$r"))" errshape 400 "$r"

# --- log lines carry syslog priority prefixes ---
check "log lines start with <N>" grep -Eq '^<[0-7]>' "$T_LOG"

# --- SIGTERM: clean exit, every handle closed ---
sleep 0.5	# let a watchdog ping go out
stop_daemon; st=$?
check "SIGTERM exits 0 (uv_loop_close succeeded)" test "$st" -eq 0
check "the log says it stopped" grep -q "stopped" "$T_LOG"
wait "$NOTIFY_PID" 2>/dev/null
check "READY=1 was sent" grep -q "READY=1" "$T_DIR/notify.txt"
check "WATCHDOG=1 was sent" grep -q "WATCHDOG=1" "$T_DIR/notify.txt"
check "STOPPING=1 was sent" grep -q "STOPPING=1" "$T_DIR/notify.txt"

finish

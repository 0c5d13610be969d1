#!/bin/bash
# Interop: Debian's gtlsclient (ngtcp2's own HTTP/3 example client; it shares the
# library, not our code) calls routes of our HTTP/3 server on 127.0.0.1 and the
# answers are checked: GET, POST with a JSON body, 16 concurrent streams, an
# unknown route (404 with the error shape), 10% loss each way, version
# negotiation, a client-initiated key update, and a graceful shutdown on SIGTERM. gtlsclient has no CA option (it never verifies); our own
# client's verification is tested in tests/unit/test_quic.c.
set -euo pipefail

BUILD=${SANDPIT_BUILD_DIR:?}
SERVER=$BUILD/tests/interop_h3_server
GTLS=/usr/bin/gtlsclient
[ -x "$GTLS" ] || { echo "SKIP: $GTLS not installed (package ngtcp2-client)"; exit 77; }
[ -x "$SERVER" ] || { echo "FAIL: $SERVER not built"; exit 1; }

WORK=$(mktemp -d /tmp/sp-interop-XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$WORK/state"
"$SERVER" "$WORK/state" >"$WORK/port" 2>"$WORK/server.err" &
PID=$!
for _ in $(seq 100); do
	[ -s "$WORK/port" ] && break
	kill -0 "$PID" || { cat "$WORK/server.err"; exit 1; }
	sleep 0.05
done
PORT=$(head -1 "$WORK/port")
[[ $PORT =~ ^[0-9]+$ ]] || { echo "FAIL: no port"; exit 1; }
URL=https://127.0.0.1:$PORT
fail() { echo "FAIL: $*"; exit 1; }

# The CA and key files were created with tight modes.
[ "$(stat -c %a "$WORK/state/ca-key.pem")" = 600 ] || fail "ca-key.pem mode"
[ "$(stat -c %a "$WORK/state/server-key.pem")" = 600 ] || fail "server-key.pem mode"

gtls() { timeout 20 "$GTLS" --exit-on-all-streams-close --no-quic-dump "$@"; }

# 1. GET: the body lands in the download directory.
mkdir "$WORK/dl1"
gtls -q --download="$WORK/dl1" 127.0.0.1 "$PORT" "$URL/v1/ping"
[ "$(cat "$WORK/dl1/ping")" = '{"pong":true}' ] || fail "GET /v1/ping: $(cat "$WORK/dl1/ping")"
echo "ok: GET /v1/ping"

# 2. POST a JSON body, get it back.
printf '{"hello":"world","n":[1,2,3]}' >"$WORK/body.json"
mkdir "$WORK/dl2"
gtls -q --download="$WORK/dl2" -m POST -d "$WORK/body.json" 127.0.0.1 "$PORT" "$URL/v1/echo"
[ "$(cat "$WORK/dl2/echo")" = '{"hello":"world","n":[1,2,3]}' ] || fail "POST /v1/echo"
echo "ok: POST /v1/echo"

# 3. 16 concurrent streams on one connection, each 200.
out=$(gtls --no-http-dump -n 16 127.0.0.1 "$PORT" "$URL/v1/ping" 2>&1)
n=$(grep -c '\[:status: 200\]' <<<"$out" || true)
[ "$n" = 16 ] || fail "16 streams: $n answered 200"
echo "ok: 16 concurrent streams"

# 4. An unknown route: 404 with the control API's error shape.
mkdir "$WORK/dl4"
out=$(gtls --download="$WORK/dl4" 127.0.0.1 "$PORT" "$URL/v1/nope" 2>&1)
grep -q '\[:status: 404\]' <<<"$out" || fail "unknown route status"
grep -q '"error":{"code":"not_found"' "$WORK/dl4/nope" || fail "unknown route body"
echo "ok: 404 for an unknown route"

# 5. 10% loss each way: still the right answer.
mkdir "$WORK/dl5"
gtls -q -t 0.1 -r 0.1 --download="$WORK/dl5" -n 8 127.0.0.1 "$PORT" "$URL/v1/ping"
[ "$(cat "$WORK/dl5/ping")" = '{"pong":true}' ] || fail "lossy GET"
echo "ok: GET under 10% loss"

# 6. Version negotiation: an unknown version gets a VN packet, then v1 works.
mkdir "$WORK/dl6"
out=$(gtls --no-http-dump -v 0x1a2a3a4a --preferred-versions v1 --download="$WORK/dl6" \
	127.0.0.1 "$PORT" "$URL/v1/ping" 2>&1)
grep -q 'type=VN' <<<"$out" || fail "no version negotiation"
[ "$(cat "$WORK/dl6/ping")" = '{"pong":true}' ] || fail "GET after version negotiation"
echo "ok: version negotiation"

# 7. A key update initiated by the client mid-connection.
out=$(gtls --no-http-dump --key-update=1ms --delay-stream=20ms -n 4 127.0.0.1 "$PORT" \
	"$URL/v1/ping" 2>&1)
grep -q 'key update confirmed' <<<"$out" || fail "key update not confirmed"
n=$(grep -c '\[:status: 200\]' <<<"$out" || true)
[ "$n" = 4 ] || fail "after key update: $n answered 200"
echo "ok: key update"

# 8. Graceful shutdown: the server closes and exits 0 with a clean loop.
kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
[ "$rc" = 0 ] || { cat "$WORK/server.err"; fail "server exit $rc"; }
grep -q '^closed: ' "$WORK/server.err" || fail "no close report"
echo "ok: graceful shutdown ($(cat "$WORK/server.err"))"

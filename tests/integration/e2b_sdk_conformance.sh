#!/usr/bin/env bash
# Conformance of the E2B emulator against the official E2B JavaScript SDK:
# installs the pinned SDK (npm ci) when node_modules is missing or stale,
# starts tests/e2b-emulator/run on a free loopback port, runs
# tests/e2b-emulator/conformance.mjs (then selftest.mjs) against it and
# stops the emulator on exit. The SDK is pointed at 127.0.0.1 only; the script's network guard
# fails the run if anything tries to leave loopback.
set -euo pipefail

src=${SANDPIT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
emu="$src/tests/e2b-emulator"

fail() {
	echo "e2b_sdk_conformance: $*" >&2
	echo "0 passed, 1 failed"
	exit 1
}

command -v node >/dev/null || fail "node is not installed (scripts/setup.sh installs it)"
command -v npm >/dev/null || fail "npm is not installed (scripts/setup.sh installs it)"
# The pinned SDK declares engines node ">=20.18.1 <21 || >=22".
node -e '
	const [a, b, c] = process.versions.node.split(".").map(Number);
	const ok = a > 21 || (a === 20 && (b > 18 || (b === 18 && c >= 1)));
	process.exit(ok ? 0 : 1);
' || fail "node $(node --version) is too old for the pinned e2b SDK (needs >= 20.18.1)"

# npm ci when node_modules is missing or was installed from another lock.
stamp="$emu/node_modules/.sandpit-lock.sha256"
want=$(sha256sum "$emu/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d "$emu/node_modules/e2b" ]; then
	echo "e2b_sdk_conformance: installing the pinned SDK (npm ci)"
	(cd "$emu" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
	echo "$want" >"$stamp"
fi

work=$(mktemp -d /tmp/e2b-conformance.XXXXXX)
emu_pid=
stop_emulator() {
	if [ -n "$emu_pid" ] && kill -0 "$emu_pid" 2>/dev/null; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$emu_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$emu_pid" 2>/dev/null || true
	fi
	emu_pid=
}
cleanup() {
	stop_emulator
	rm -rf "$work"
}
trap cleanup EXIT

api_key="e2b_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
port=
# start_emulator ARGS...: --port 0 lets the kernel pick a free port; the
# ready line names it (no race).
start_emulator() {
	: >"$work/emulator.out"
	"$emu/run" --port 0 --api-key "$api_key" "$@" >"$work/emulator.out" 2>>"$work/emulator.err" &
	emu_pid=$!
	port=
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^e2b-emulator listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/emulator.out")
		[ -n "$port" ] && return 0
		kill -0 "$emu_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/emulator.err" >&2
	fail "the emulator did not print its ready line"
}

# The official SDK first, then the raw-protocol self-test (what the C
# provider relies on and the SDK never sends), then the self-test again
# with commands run without a mount namespace. Each prints
# "<name>: N passed, N failed"; the closing line here is their sum.
total_pass=0
total_fail=0
status=0
run_script() {
	local script=$1 rc=0 line
	(cd "$emu" && E2B_EMULATOR_URL="http://127.0.0.1:$port" E2B_EMULATOR_API_KEY="$api_key" \
		timeout 300 node "$script") | tee "$work/out" || rc=$?
	[ "$rc" -eq 0 ] || status=1
	line=$(sed -n 's/^[a-z-]*: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$work/out" | tail -1)
	if [ -z "$line" ]; then
		echo "e2b_sdk_conformance: $script ended without its summary (exit $rc)" >&2
		total_fail=$((total_fail + 1))
		status=1
		return
	fi
	total_pass=$((total_pass + ${line% *}))
	total_fail=$((total_fail + ${line#* }))
}

start_emulator
echo "e2b_sdk_conformance: emulator on 127.0.0.1:$port, SDK e2b@$(node -p "require('$emu/node_modules/e2b/package.json').version")"
run_script conformance.mjs
run_script selftest.mjs
stop_emulator
start_emulator --isolation none
echo "e2b_sdk_conformance: emulator with --isolation none on 127.0.0.1:$port"
run_script selftest.mjs
stop_emulator

if [ -s "$work/emulator.err" ]; then
	echo "--- emulator stderr" >&2
	cat "$work/emulator.err" >&2
fi
# Whatever a client sent, the emulator must never have hit an internal error.
if grep -q 'internal error' "$work/emulator.err" 2>/dev/null; then
	echo "e2b_sdk_conformance: the emulator logged internal errors" >&2
	total_fail=$((total_fail + 1))
fi
[ "$total_fail" -eq 0 ] || status=1
echo "$total_pass passed, $total_fail failed"
exit "$status"

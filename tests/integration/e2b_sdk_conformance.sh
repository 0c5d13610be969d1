#!/usr/bin/env bash
# Conformance of the E2B emulator against the official E2B JavaScript SDK:
# installs the pinned SDK (npm ci) when node_modules is missing or stale,
# starts tests/e2b-emulator/run on a free loopback port, runs
# tests/e2b-emulator/conformance.mjs against it and stops the emulator on
# exit. The SDK is pointed at 127.0.0.1 only; the script's network guard
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
cleanup() {
	if [ -n "$emu_pid" ] && kill -0 "$emu_pid" 2>/dev/null; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$emu_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$emu_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

api_key="e2b_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# --port 0: the kernel picks a free port, the ready line names it (no race).
"$emu/run" --port 0 --api-key "$api_key" >"$work/emulator.out" 2>"$work/emulator.err" &
emu_pid=$!

port=
for _ in $(seq 1 100); do
	port=$(sed -n 's/^e2b-emulator listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/emulator.out")
	[ -n "$port" ] && break
	kill -0 "$emu_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$port" ]; then
	cat "$work/emulator.err" >&2
	fail "the emulator did not print its ready line"
fi
echo "e2b_sdk_conformance: emulator on 127.0.0.1:$port, SDK e2b@$(node -p "require('$emu/node_modules/e2b/package.json').version")"

status=0
(cd "$emu" && E2B_EMULATOR_URL="http://127.0.0.1:$port" E2B_EMULATOR_API_KEY="$api_key" \
	timeout 300 node conformance.mjs) || status=$?
if [ -s "$work/emulator.err" ]; then
	echo "--- emulator stderr" >&2
	cat "$work/emulator.err" >&2
fi
exit "$status"

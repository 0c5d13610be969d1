# Helpers for the tests that run the E2B emulator next to the real sandpitd:
# start it on a port the kernel picks (loopback only), talk to its E2B API
# and its admin paths, wait for the daemon's E2B provider. Sourced after
# lib.sh, not run. The caller's EXIT trap must call stop_emulator.
EMU_RUN="$SANDPIT_SOURCE_DIR/tests/e2b-emulator/run"
EMU_PID=""
EMU_PORT=""
EMU=""
EMU_KEY="e2b_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
EMU_KEY_FILE="$T_DIR/e2b-key"

start_emulator() {	# start_emulator [emulator options]; sets EMU_PORT and EMU
	command -v node >/dev/null || { echo "node is not installed (scripts/setup.sh)" >&2; return 1; }
	"$EMU_RUN" --port 0 --api-key "$EMU_KEY" --quiet "$@" \
		>"$T_DIR/emu.out" 2>"$T_DIR/emu.err" &
	EMU_PID=$!
	for _ in $(seq 1 100); do
		EMU_PORT=$(sed -n 's/^e2b-emulator listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$T_DIR/emu.out")
		[ -n "$EMU_PORT" ] && break
		kill -0 "$EMU_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$EMU_PORT" ]; then
		cat "$T_DIR/emu.err" >&2
		return 1
	fi
	EMU="http://127.0.0.1:$EMU_PORT"
	printf '%s\n' "$EMU_KEY" >"$EMU_KEY_FILE"
	chmod 600 "$EMU_KEY_FILE"
}

stop_emulator() {
	[ -n "$EMU_PID" ] || return 0
	kill -TERM "$EMU_PID" 2>/dev/null
	wait "$EMU_PID" 2>/dev/null
	EMU_PID=""
}

# The provider directives that point sandpitd's E2B provider at the emulator.
emu_directives() {	# emu_directives WORKER_ENDPOINT
	cat <<CONF
e2b.api_url "$EMU"
e2b.envd_url "$EMU"
e2b.api_key_file "$EMU_KEY_FILE"
e2b.worker_endpoint "$1"
e2b.timeout 120
e2b.retry_base 100
e2b.retry_cap 1000
CONF
}

emu_api() {	# emu_api METHOD PATH [JSON] -> body (the emulator's E2B API, with the key)
	if [ $# -ge 3 ]; then
		curl -s -X "$1" -H "X-API-Key: $EMU_KEY" -H 'Content-Type: application/json' \
			--data-binary "$3" "$EMU$2"
	else
		curl -s -X "$1" -H "X-API-Key: $EMU_KEY" "$EMU$2"
	fi
}
emu_state() { curl -s "$EMU/_emulator/state"; }
emu_config() { curl -s -X POST -H 'Content-Type: application/json' --data-binary "$1" "$EMU/_emulator/config" >/dev/null; }
# Sandbox ids in the emulator whose metadata names instance $1.
emu_ids_of() { emu_state | jq -r --arg i "$1" '.sandboxes[] | select(.metadata["io.sandpit.instance"] == $i) | .sandboxID'; }

wait_e2b_ready() {	# until the daemon's E2B provider is up
	for _ in $(seq 1 300); do
		ctl GET /v1/health | cut -d' ' -f2- | jq -e '.providers.e2b == "ready"' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}

#!/usr/bin/env bash
# The memory routes on the worker channel: agent code inside a sandbox reaches
# them through the worker's local endpoint (HTTP/1.1 on 127.0.0.1:7070, carried
# over HTTP/3 with the worker's token), and the tenant is always the token's.
. "$(dirname "$0")/lib.sh"

# An image of our own, as worker_channel.sh explains.
T_IMAGE="sandpit/worker-$T_TAG:test"
trap 'cleanup; docker_api DELETE "/images/$T_IMAGE?force=true" >/dev/null 2>&1' EXIT
write_config "worker_image \"$T_IMAGE\""
start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }

# create TENANT -> sandbox id, once its worker has registered
create() {
	local r id
	r=$(curl -s --unix-socket "$T_SOCK" -X POST -H "X-Sandpit-Tenant: $1" http://localhost/v1/sandboxes)
	id=$(jq -r .id <<<"$r")
	curl -s --unix-socket "$T_SOCK" -H "X-Sandpit-Tenant: $1" \
		"http://localhost/v1/sandboxes/$id?wait=ready&timeout=20s" >/dev/null
	echo "$id"
}
# inside SANDBOX TENANT METHOD PATH [BODY]: an agent's request to the local endpoint
inside() {
	if [ $# -ge 5 ]; then
		"$SANDPIT" --tenant "$2" sandbox exec "$1" -- wget -qO- --header 'Content-Type: application/json' \
			--post-data "$5" "http://127.0.0.1:7070$4" 2>/dev/null
	else
		"$SANDPIT" --tenant "$2" sandbox exec "$1" -- wget -qO- "http://127.0.0.1:7070$4" 2>/dev/null
	fi
}

A=$(create acme)
B=$(create other)
check "two sandboxes of two tenants, workers registered ($A, $B)" \
	bash -c '[ -n "$1" ] && [ "$1" != null ] && [ -n "$2" ] && [ "$2" != null ]' _ "$A" "$B"

out=$(inside "$A" acme POST /v1/memories '{"title":"Cache node_modules","content":"Caching node_modules between CI runs halved the build time.","tags":["ci"],"outcome":"success"}')
MID=$(jq -r .id <<<"$out" 2>/dev/null)
check "an agent stores a memory through its worker ($MID)" bash -c '[ -n "$1" ] && [ "$1" != null ]' _ "$MID"
out=$(inside "$A" acme POST /v1/memories/search '{"query":"how to make the CI build faster","k":3}')
check "the agent finds it again" bash -c 'jq -e --arg id "$2" ".results[0].id == \$id" <<<"$1" >/dev/null' _ "$out" "$MID"
r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$T_SOCK" -H 'X-Sandpit-Tenant: acme' "http://localhost/v1/memories/$MID")
check "it belongs to the token's tenant, acme ($r)" test "$r" = 200
r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$T_SOCK" "http://localhost/v1/memories/$MID")
check "the default tenant does not see it ($r)" test "$r" = 404
out=$(inside "$B" other POST /v1/memories/search '{"query":"how to make the CI build faster","k":3}')
check "a sandbox of another tenant finds nothing ($(cut -c1-60 <<<"$out"))" \
	bash -c 'jq -e ".results | length == 0" <<<"$1" >/dev/null' _ "$out"
out=$(inside "$B" other GET "/v1/memories/$MID")
check "nor can it get the item by id" test -z "$out"
before=$(sqlite3 "$T_STATE/sandpit.db" "select count(*) from mem_items")
out=$(inside "$B" other POST /v1/memories '{"title":"spoof","content":"x","tenant":"acme"}')
after=$(sqlite3 "$T_STATE/sandpit.db" "select count(*) from mem_items")
check "a tenant named in the body is refused, nothing stored ($before -> $after)" \
	bash -c '[ -z "$1" ] && [ "$2" = "$3" ]' _ "$out" "$before" "$after"
out=$(inside "$A" acme POST /v1/memories/feedback "{\"ids\":[\"$MID\"],\"outcome\":\"success\"}")
check "feedback through the worker ($(cut -c1-60 <<<"$out"))" bash -c 'jq -e ".updated == 1" <<<"$1" >/dev/null' _ "$out"
r=$(ctl GET /v1/info | cut -d' ' -f2-)
check "the channel counted the requests" bash -c 'jq -e ".worker_channel" <<<"$1" >/dev/null' _ "$r"

"$SANDPIT" --tenant acme sandbox rm "$A" >/dev/null
"$SANDPIT" --tenant other sandbox rm "$B" >/dev/null
stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
finish

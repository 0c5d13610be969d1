#!/usr/bin/env bash
# The warm pool with real containers: pool_size sandboxes start with their
# workers connected under the pool's tenant; a swarm's agents are claimed
# from it (hits in /metrics), rebound to the swarm's tenant with a fresh
# token (the old ones revoked), and run tasks; the pool refills; a restart
# destroys the old pooled sandboxes and builds a new pool (no orphan).
# Packets go only to 127.0.0.1 and to the test's own Docker network.
. "$(dirname "$0")/lib.sh"

T_IMAGE="sandpit/worker-$T_TAG:test"
trap 'cleanup; docker_api DELETE "/images/$T_IMAGE?force=true" >/dev/null 2>&1' EXIT
write_config "worker_image \"$T_IMAGE\"
max_sandboxes 8
pool_size 3"

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
pass "daemon and Docker provider up"
body() { cut -d' ' -f2- <<<"$1"; }
INST=$(instance_id)
metric() { curl -s --unix-socket "$T_SOCK" http://localhost/metrics | awk -v k="$1" '$1 == k { print $2 }'; }
wait_idle() {	# wait_idle N SECONDS
	for _ in $(seq 1 $(($2 * 10))); do [ "$(metric 'sandpit_pool_sandboxes{state="idle"}')" = "$1" ] && return 0; sleep 0.1; done
	return 1
}
wait_state() {
	for _ in $(seq 1 $(($3 * 10))); do
		ctl GET "/v1/swarms/$1" | cut -d' ' -f2- | jq -e --arg s "$2" '.state == $s' >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
jwt_tenant() { cut -d. -f2 <"$1" | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r .tenant; }

check "the pool fills: 3 idle sandboxes with connected workers" wait_idle 3 60
POOLED=$(sqlite3 "$T_STATE/sandpit.db" "select id from sandboxes where tenant = 'sandpit-pool' and state = 'running'")
check "they belong to the pool's tenant, not a caller's" test "$(wc -l <<<"$POOLED")" -eq 3
r=$(ctl GET /v1/sandboxes)
check "a tenant does not see pooled sandboxes" jq -e 'length == 0' <<<"$(body "$r")" >/dev/null

r=$(ctl POST /v1/swarms '{"agents":2,"tasks":["echo warm-1","echo warm-2","id -u"]}')
SW=$(body "$r" | jq -r .id)
check "swarm created ($SW)" grep -q '^201 ' <<<"$r"
r=$(body "$r")
A1=$(jq -r '.agents.sandboxes[0]' <<<"$r")
check "its agents are pooled sandboxes, live at once ($(jq -c .agents <<<"$r"))" \
	bash -c 'jq -e ".agents.live == 2" <<<"$1" >/dev/null && grep -qx "$2" <<<"$3"' _ "$r" "$A1" "$POOLED"
check "two warm hits counted" test "$(metric 'sandpit_pool_claims_total{result="hit"}')" = 2
check "the claimed sandbox now belongs to the tenant" grep -q '^200 ' <<<"$(ctl GET "/v1/sandboxes/$A1")"
check "its token file names the tenant now" test "$(jwt_tenant "$T_STATE/workers/$A1/token")" = default
check "the swarm completes on the claimed agents" wait_state "$SW" completed 60
r=$(body "$(ctl GET "/v1/swarms/$SW")")
check "all 3 tasks succeeded" jq -e '.tasks.succeeded == 3' <<<"$r" >/dev/null
check "the outputs are there" bash -c 'o=$(jq -r .output <<<"$1"); grep -qx warm-1 <<<"$o" && grep -qx warm-2 <<<"$o"' _ "$r"
check "the pool refills to 3 idle" wait_idle 3 60
check "the warm claim latency is recorded" \
	bash -c '[ "$(awk "BEGIN { print ($1 > 0 && $1 < 1) }")" = 1 ]' _ "$(metric 'sandpit_pool_claim_seconds_max{kind="warm"}')"
ctl DELETE "/v1/swarms/$SW" >/dev/null
for _ in $(seq 1 100); do [ "$(instance_containers "$INST" | wc -l)" -eq 3 ] && break; sleep 0.1; done
check "after delete only the 3 pooled containers remain" test "$(instance_containers "$INST" | wc -l)" -eq 3

check "the daemon stops cleanly" stop_daemon
start_daemon && wait_provider_ready || { fail "daemon restarted"; finish; exit 1; }
check "after a restart the pool fills again" wait_idle 3 60
for _ in $(seq 1 100); do [ "$(instance_containers "$INST" | wc -l)" -eq 3 ] && break; sleep 0.1; done
check "the old pooled containers were destroyed, no orphan ($(instance_containers "$INST" | wc -l) containers)" \
	test "$(instance_containers "$INST" | wc -l)" -eq 3
check "the daemon stops cleanly again" stop_daemon
finish

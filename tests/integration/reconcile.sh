#!/usr/bin/env bash
# kill -9 of the daemon with live sandboxes, and during creations, then a
# restart: no orphan container, and a database that matches Docker.
. "$(dirname "$0")/lib.sh"

start_daemon && wait_provider_ready || { fail "daemon and provider up"; finish; exit 1; }
INST=$(instance_id)
ids=()
for i in 1 2 3; do
	r=$(ctl POST /v1/sandboxes '{"memory":"32m"}')
	ids+=("$(cut -d' ' -f2- <<<"$r" | jq -r .id)")
done
check "three sandboxes running" test "$(instance_containers "$INST" | wc -l)" -eq 3

kill9_daemon
pass "daemon killed with SIGKILL"
# Behind the dead daemon's back: one container vanishes, one orphan appears.
gone_ref=$(sqlite3 "$T_STATE/sandpit.db" "select ref from sandboxes where id='${ids[0]}'")
docker_api DELETE "/containers/$gone_ref?force=true" >/dev/null
IMG=$(sqlite3 "$T_STATE/sandpit.db" "select json_extract(spec_json,'\$.image') from sandboxes where id='${ids[1]}'")
orphan=$(docker_api POST "/containers/create?name=sandpit-orphan-$T_TAG" \
	"{\"Image\":\"$IMG\",\"Labels\":{\"io.sandpit.instance\":\"$INST\",\"io.sandpit.sandbox\":\"sb-0000000000ff\"},\"HostConfig\":{\"NetworkMode\":\"none\"}}" | jq -r .Id)
check "an orphan container with our instance label exists" test -n "$orphan" -a "$orphan" != null

start_daemon && wait_provider_ready || { fail "restart"; finish; exit 1; }
for _ in $(seq 1 100); do
	[ "$(docker_api GET "/containers/$orphan/json" | jq -r .Id)" = null ] && break
	sleep 0.1
done
check "the orphan was removed" test "$(docker_api GET "/containers/$orphan/json" | jq -r .Id)" = null
for _ in $(seq 1 100); do
	[ "$(sqlite3 "$T_STATE/sandpit.db" "select state from sandboxes where id='${ids[0]}'")" = lost ] && break
	sleep 0.1
done
check "the vanished sandbox is marked lost" \
	test "$(sqlite3 "$T_STATE/sandpit.db" "select state from sandboxes where id='${ids[0]}'")" = lost
for id in "${ids[1]}" "${ids[2]}"; do
	check "sandbox $id adopted and still running" \
		test "$(ctl GET "/v1/sandboxes/$id" | cut -d' ' -f2- | jq -r .state)" = running
done
out=$("$SANDPIT" sandbox exec "${ids[1]}" -- echo alive)
check "an adopted sandbox still runs commands ($out)" test "$out" = alive

# kill -9 in the middle of creations.
for i in 1 2 3 4; do
	ctl POST /v1/sandboxes '{"memory":"32m"}' >/dev/null &
done
sleep 0.4
kill9_daemon
wait 2>/dev/null
start_daemon && wait_provider_ready || { fail "restart after mid-create kill"; finish; exit 1; }
# Two reconcile rounds (reconcile_interval is 2 s) settle everything.
sleep 5
db_live=$(sqlite3 "$T_STATE/sandpit.db" "select ref from sandboxes where state in ('running','exited') order by ref" | sort)
dk=$(instance_containers "$INST" | sort)
check "every container of the instance has a running row, and the reverse" test "$db_live" = "$dk"
stuck=$(sqlite3 "$T_STATE/sandpit.db" "select count(*) from sandboxes where state in ('creating','starting','destroying')")
check "no row is stuck creating/starting/destroying ($stuck)" test "$stuck" -eq 0

# Clean up through the daemon: nothing may be left.
for id in $(ctl GET /v1/sandboxes | cut -d' ' -f2- | jq -r '.[].id'); do
	"$SANDPIT" sandbox rm "$id" >/dev/null
done
check "after rm, no container of the instance remains" test -z "$(instance_containers "$INST")"
stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
finish

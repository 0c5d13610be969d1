#!/usr/bin/env bash
# The ReasoningBank memory through the real daemon: the CLI and the control
# socket, tenant isolation, bad input, and a restart that keeps everything.
. "$(dirname "$0")/lib.sh"

start_daemon || { fail "daemon starts"; finish; exit 1; }
S="$SANDPIT"
id1=$("$S" --tenant acme mem add --title "Retry flaky network tests" --description "backoff" \
	--content "When integration tests fail on network timeouts, retry them with exponential backoff and jitter." \
	--tag testing --tag network --outcome success)
id2=$("$S" --tenant acme mem add --title "Pin the compiler" \
	--content "Builds broke when the compiler was upgraded; pin the toolchain version in CI.")
check "two items stored ($id1, $id2)" bash -c '[ -n "$1" ] && [ -n "$2" ] && [ "$1" != "$2" ]' _ "$id1" "$id2"
top=$("$S" --tenant acme --json mem search "network tests keep timing out" | jq -r '.results[0].id')
check "search finds the relevant item first ($top)" test "$top" = "$id1"
parts=$("$S" --tenant acme --json mem search "network timeouts" | jq -e '.results[0].parts | has("sim") and has("recency") and has("reliability")')
check "results carry their score parts" test "$parts" = true
n=$("$S" --tenant other --json mem search "network tests keep timing out" | jq '.results | length')
check "another tenant finds nothing ($n)" test "$n" = 0
r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$T_SOCK" -H 'X-Sandpit-Tenant: other' "http://localhost/v1/memories/$id1")
check "another tenant cannot get it ($r)" test "$r" = 404
r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$T_SOCK" -X DELETE -H 'X-Sandpit-Tenant: other' "http://localhost/v1/memories/$id1")
check "another tenant cannot delete it ($r)" test "$r" = 404

count() { sqlite3 "$T_STATE/sandpit.db" "select count(*) from mem_items" 2>/dev/null; }
before=$(count)
r=$(ctl POST /v1/memories/search '{"query":"x","k":500}')
check "k out of range gets 400 ($(cut -c1-80 <<<"$r"))" grep -q '^400 ' <<<"$r"
r=$(ctl POST /v1/memories '{"title":"t","content":"c","colour":"red"}')
check "an unknown field gets 400 ($(cut -c1-80 <<<"$r"))" grep -q '^400 ' <<<"$r"
r=$(ctl POST /v1/memories '{"title":"t"')
check "malformed JSON gets 400" grep -q '^400 ' <<<"$r"
v16=$(jq -cn '[range(16)] | map(. / 16)'); v32=$(jq -cn '[range(32)] | map(. / 32)')
r=$(ctl POST /v1/memories "{\"title\":\"own vector\",\"content\":\"c\",\"namespace\":\"vec\",\"vector\":$v16,\"model\":\"client-model\"}")
check "a client vector is accepted ($(cut -c1-60 <<<"$r"))" grep -q '^201 ' <<<"$r"
before=$(count)
r=$(ctl POST /v1/memories "{\"title\":\"t\",\"content\":\"c\",\"namespace\":\"vec\",\"vector\":$v32,\"model\":\"client-model\"}")
check "a vector of the wrong dimension gets 400 ($(cut -c1-100 <<<"$r"))" grep -q "^400 .*has 32 dimensions" <<<"$r"
check "bad input stored nothing ($before -> $(count))" bash -c '[ -n "$1" ] && [ "$1" = "$2" ]' _ "$before" "$(count)"

sec=$("$S" --tenant acme mem add --title "Deploy key" --content "the token is ghp_abcdefghijklmnopqrstuvwxyz0123456789 and mail bob@example.com")
stored=$("$S" --tenant acme --json mem show "$sec" | jq -r .content)
check "secrets and e-mail addresses are scrubbed before storing ($stored)" \
	bash -c '! grep -q "ghp_abcdef" <<<"$1" && ! grep -q "bob@example.com" <<<"$1"' _ "$stored"

stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
start_daemon || { fail "restart"; finish; exit 1; }
top=$("$S" --tenant acme --json mem search "network tests keep timing out" | jq -r '.results[0].id')
check "a restart keeps the memory ($top)" test "$top" = "$id1"
"$S" --tenant acme mem rm "$id2" >/dev/null
r=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$T_SOCK" -H 'X-Sandpit-Tenant: acme' "http://localhost/v1/memories/$id2")
check "rm deletes ($r)" test "$r" = 404
"$S" --tenant acme mem consolidate >/dev/null; st=$?
check "consolidate runs (exit $st)" test "$st" -eq 0
stop_daemon; st=$?
check "SIGTERM exits 0" test "$st" -eq 0
finish

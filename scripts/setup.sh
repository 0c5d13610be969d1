#!/usr/bin/env bash
# Make this machine able to build and run sandpit: the Debian packages it needs,
# and a Docker engine answering on /var/run/docker.sock. Safe to run again.
set -euo pipefail

PKGS=(build-essential cmake pkg-config
      libuv1-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libseccomp-dev
      libarchive-dev libssl-dev libhttp-parser-dev libcmocka-dev
      libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev
      busybox-static docker.io iptables ngtcp2-client curl jq sqlite3 python3)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "sandpit needs these Debian packages; as root, run:" >&2
		echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

ping_docker() {
	curl -sf --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
}
if ! ping_docker; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: no Docker engine answers on /var/run/docker.sock; start dockerd as root" >&2
		exit 1
	fi
	echo "setup: starting dockerd"
	# The machine may refuse service starts, so run the engine directly. It
	# outlives this script on purpose: the daemon and the tests need it.
	mkdir -p /var/log
	nohup dockerd >/var/log/sandpit-dockerd.log 2>&1 </dev/null &
	for _ in $(seq 1 60); do
		ping_docker && break
		sleep 0.5
	done
	ping_docker || { echo "setup: dockerd did not answer; see /var/log/sandpit-dockerd.log" >&2; exit 1; }
fi

# Node.js >= 20.18.1 with npm runs the official E2B SDK's conformance test
# against tests/e2b-emulator (npm package e2b, pinned there). Debian 12's own
# nodejs is 18.x, too old for it, so this checks rather than installs.
if ! command -v node >/dev/null || ! command -v npm >/dev/null ||
   ! node -e 'const [a,b,c]=process.versions.node.split(".").map(Number);
	      process.exit(a>20||(a===20&&(b>18||(b===18&&c>=1)))?0:1)'; then
	echo "setup: the E2B SDK conformance test needs Node.js >= 20.18.1 with npm" >&2
	echo "       (Debian 12's nodejs is 18.x); install a newer Node.js and run again" >&2
	exit 1
fi

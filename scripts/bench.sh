#!/usr/bin/env bash
# make bench: every benchmark in bench/ (scripts and built programs), each
# printing its table; machine-readable results land in BUILD/bench/.
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/.." && pwd)
status=0
for b in "$src"/bench/*.sh; do
	[ -e "$b" ] || continue
	echo "== $(basename "$b" .sh)"
	bash "$b" "$build" || status=1
done
for b in "$build"/bench/bench_* "$build"/bench_*; do
	[ -x "$b" ] || continue
	echo "== $(basename "$b")"
	"$b" || status=1
done
exit $status

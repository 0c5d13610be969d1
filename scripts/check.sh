#!/usr/bin/env bash
# Run every test on the normal build, then again on the ASan+UBSan build.
set -euo pipefail
build=$1 asan=$2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
echo "== tests (normal build) =="
(cd "$build" && ctest --output-on-failure --no-tests=error) || status=1
echo "== tests (ASan+UBSan build) =="
(cd "$asan" && ctest --output-on-failure --no-tests=error) || status=1
exit $status

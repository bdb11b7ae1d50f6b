#!/usr/bin/env bash
# Quickstart 2: build everything, then run the whole suite (unit, integration with the real daemon,
# golden vectors, and the unit tests under ASan+UBSan). Ends with ctest's summary line; exits non-zero if
# anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
# The unit and in-process core tests again, built with AddressSanitizer and UndefinedBehaviorSanitizer in
# their own folder; the suite below runs them (test "sanitizers: unit tests under ASan+UBSan").
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOSH_SANITIZE=address,undefined >/dev/null
cmake --build build-asan --target unit_tests
cd build
exec ctest --output-on-failure -j"$(nproc)" "$@"

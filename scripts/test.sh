#!/usr/bin/env bash
# Quickstart 2: build everything, then run the whole suite (unit, integration with the real daemon,
# golden vectors, the unit tests and fuzz targets under ASan+UBSan). Prints the time of each phase, then
# ends with ctest's summary line; exits non-zero if anything failed. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
phases=()
t0=$SECONDS
phase() { phases+=("$(printf '%-34s %5d s' "$1" $((SECONDS - t0)))"); t0=$SECONDS; }

./scripts/bootstrap.sh
phase "packages (scripts/bootstrap.sh)"
# The unit tests are run once, under the sanitizers, from build-asan/ (OSH_UNIT_TESTS_FROM): build/ does
# not compile a copy of its own.
OSH_CMAKE_OPTIONS="-DOSH_UNIT_TESTS_FROM=$PWD/build-asan" ./scripts/build.sh
phase "build (build/)"
# The unit tests and the fuzz targets' harnesses, built with AddressSanitizer and
# UndefinedBehaviorSanitizer in their own folder; the suite below runs them (each unit test by its name,
# tests fuzz_*). Only those targets are built there, at -O1 -g1 (what the sanitizers'
# own documentation advises: reports keep their line numbers, and it compiles faster than -O2 -g).
# The generated protobuf code and Catch2's runner, which are not ours and are not instrumented there, are
# taken from build/ (OSH_PLAIN_TREE) instead of being compiled a second time.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DOSH_SANITIZE=address,undefined -DOSH_PLAIN_TREE="$PWD/build" >/dev/null
cmake --build build-asan --target unit_tests fuzz_harnesses -- -j"$(nproc)"
phase "build (build-asan/, ASan+UBSan)"

# Longest tests first: ctest orders by the costs of earlier runs, and a fresh checkout starts from the
# costs of a reference run (tests/ctest-costs.txt) until it has its own. Twice as many tests as cores at
# once: most of a test's time is spent waiting on real processes and sockets (a run at one per core kept
# the cores 45% busy), and no test asserts a duration.
mkdir -p build/Testing/Temporary
[ -f build/Testing/Temporary/CTestCostData.txt ] || [ ! -f tests/ctest-costs.txt ] ||
  cp tests/ctest-costs.txt build/Testing/Temporary/CTestCostData.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
jobs=$(($(nproc) * 2))
(cd build && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
phase "tests (ctest -j$jobs)"
echo
echo "Time per phase:"
printf '  %s\n' "${phases[@]}"
# The run ends with ctest's own summary line.
grep -E '^[0-9]+% tests passed|^Total Test time' "$log" || true
exit "$rc"

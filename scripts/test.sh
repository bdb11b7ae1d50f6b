#!/usr/bin/env bash
# Quickstart 2: build everything (build-test/, build-asan/), then run the whole suite (integration with
# the real daemon, golden vectors, docs run as written, packages, the unit tests and fuzz targets under
# ASan+UBSan). Prints the time of each phase, then
# ends with ctest's summary line; exits non-zero if anything failed. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
phases=()
t0=$SECONDS
phase() { phases+=("$(printf '%-34s %5d s' "$1" $((SECONDS - t0)))"); t0=$SECONDS; }

./scripts/bootstrap.sh
phase "packages (scripts/bootstrap.sh)"
# The suite's own tree, build-test/: everything, at -O1 without debug information. The suite runs the
# programs, it does not time them (no test asserts a duration), and this compiles in about two thirds of
# -O2 -g1's time (issue 30: the test command on a fresh machine in 25 minutes). What ships and what is
# measured is built at -O2 in build/ (the run command, scripts/package-deb.sh, the benchmarks); sanitizer
# reports keep their line numbers (build-asan/ is -g1).
# The unit tests are run once, under the sanitizers, from build-asan/ (OSH_UNIT_TESTS_FROM): build-test/
# does not compile a copy of its own.
# The suite's own code (test runners, fixtures, the benchmarks' smoke runs) is compiled at -O0 in both
# trees (OSH_TEST_ONLY_OPT, OSH_BENCH_OPT): it halves that code's compile again; the product's code keeps
# -O1.
cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" \
  -DOSH_TEST_ONLY_OPT=-O0 -DOSH_BENCH_OPT=-O0 -DOSH_UNIT_TESTS_FROM="$PWD/build-asan" >/dev/null
cmake --build build-test -- -j"$(nproc)"
phase "build (build-test/, -O1)"
# The unit tests and the fuzz targets' harnesses, built with AddressSanitizer and
# UndefinedBehaviorSanitizer in their own folder; the suite below runs them (each unit test by its name,
# tests fuzz_*). Only those targets are built there, at -O1 -g1 (what the sanitizers' own documentation
# advises: reports keep their line numbers). The generated protobuf code and Catch2's runner, which are
# not ours and are not instrumented there, are taken from build-test/ (OSH_PLAIN_TREE) instead of being
# compiled a second time.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DOSH_SANITIZE=address,undefined -DOSH_TEST_ONLY_OPT=-O0 -DOSH_PLAIN_TREE="$PWD/build-test" >/dev/null
cmake --build build-asan --target unit_tests fuzz_harnesses -- -j"$(nproc)"
phase "build (build-asan/, ASan+UBSan)"

# Longest tests first: ctest orders by the costs of earlier runs, and a fresh checkout starts from the
# costs of a reference run (tests/ctest-costs.txt) until it has its own. Three times as many tests as
# cores at once: most of a test's time is spent waiting on real processes and sockets (a run at one per
# core kept the cores 45% busy, one at two per core 47%), and no test asserts a duration; the CPU-bound
# fuzz targets count as two each (PROCESSORS).
mkdir -p build-test/Testing/Temporary
[ -f build-test/Testing/Temporary/CTestCostData.txt ] || [ ! -f tests/ctest-costs.txt ] ||
  cp tests/ctest-costs.txt build-test/Testing/Temporary/CTestCostData.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
jobs=$(($(nproc) * 3))
(cd build-test && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
phase "tests (ctest -j$jobs)"
echo
echo "Time per phase:"
printf '  %s\n' "${phases[@]}"
# The run ends with ctest's own summary line.
grep -E '^[0-9]+% tests passed|^Total Test time' "$log" || true
exit "$rc"

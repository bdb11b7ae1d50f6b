#!/usr/bin/env bash
# ThreadSanitizer run of the unit and in-process core tests (too slow for CI: run it locally).
#   scripts/tsan.sh [CATCH_TEST_SPEC...]     default: every unit test
# Builds build-tsan/ (-DOSH_SANITIZE=thread; tests/tsan_absl_annotations.cc makes Debian's uninstrumented
# Abseil Mutex visible to TSan), runs the tests with halt_on_error, and exits non-zero on any report.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOSH_SANITIZE=thread >/dev/null
cmake --build build-tsan --target unit_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" exec build-tsan/tests/unit_tests "$@"

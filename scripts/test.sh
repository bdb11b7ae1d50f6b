#!/usr/bin/env bash
# Quickstart 2: build everything, then run the whole suite (unit, integration with the real daemon,
# golden vectors). Ends with ctest's summary line; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
exec ctest --output-on-failure -j"$(nproc)" "$@"

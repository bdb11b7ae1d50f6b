#!/usr/bin/env bash
# Installs what is missing (scripts/bootstrap.sh), then configures and builds into ./build with Ninja.
# Extra arguments go to `cmake --build` (e.g. a target name).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
fi
cmake --build build -- -j"$(nproc)" ${1:+"$@"}

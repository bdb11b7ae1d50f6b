#!/usr/bin/env bash
# Installs what is missing (scripts/bootstrap.sh), then configures and builds into ./build with Ninja.
# Extra arguments go to `cmake --build` (e.g. a target name).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
if [ ! -f build/build.ninja ]; then
  # -g1: line tables only (backtraces and sanitizer reports keep file:line; the .deb is stripped anyway),
  # for a build that takes a fifth less time than -g.
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
fi
cmake --build build -- -j"$(nproc)" ${1:+"$@"}

#!/usr/bin/env bash
# Quickstart 1: build if needed, then run the gateway with the embedded default (builtin driver,
# SQLite and sockets under ./var). Arguments go to policy-gateway (see `policy-gateway --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh policy-gateway policyctl >&2
exec ./build/gateway/policy-gateway "$@"

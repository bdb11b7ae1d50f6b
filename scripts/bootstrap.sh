#!/usr/bin/env bash
# Installs the Debian 12 packages the project builds and tests with, plus any named as arguments
# (scripts/fuzz.sh adds clang for libFuzzer; the suite does not need it). Idempotent: quiet and fast when
# everything is already present. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  protobuf-compiler libprotobuf-dev libprotoc-dev
  libgrpc++-dev protobuf-compiler-grpc
  libabsl-dev libssl-dev libsqlite3-dev
  libtomlplusplus-dev libyaml-cpp-dev libcli11-dev catch2 libsystemd-dev libcpp-httplib-dev libspdlog-dev
  libsimdjson-dev   # JSON lines read fast: policyctl decide --replay (recorded egress intents)
  librhonabwy-dev   # JOSE (EdDSA JWT, JWKS): the OpenShell gateway interceptor's caller authentication
  libjansson-dev    # JSON with keys in order and typed values: policy-gateway --check-config -o json
  libcurl4-openssl-dev   # HTTP(S) requests to tile servers and witnesses, bounded (common/http_client.h)
  libmicrohttpd-dev   # the HTTP servers (metrics_listen, log_listen, policy-log-witness): event-driven, slow clients hold no worker
  openssl    # docs/network-walkthrough.md (run by the suite) makes its CA and certificates with it
  help2man   # man pages generated from each program's --help
  lintian    # the suite checks the Debian packages with it (tests/check_deb.sh)
  python3-h2   # the hostile HTTP/2 client of the hostile-input tests (tests/tools/h2_flood.py)
  python3-grpcio python3-protobuf   # the Python example driver (examples/python_driver) and its conformance test
  libpq-dev postgresql   # PostgreSQL: the tests start a throw-away cluster (initdb) on a Unix socket
  golang-go golang-golang-x-mod-dev   # the verifiable log's interop test: Go's sumdb/tlog and sumdb/note check ours
)
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

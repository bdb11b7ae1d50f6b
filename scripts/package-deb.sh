#!/usr/bin/env bash
# Builds the Debian package (openshell-policy-gateway_<version>_amd64.deb) into ./dist: binaries
# (stripped), the systemd unit, docs, protos and an example config that the post-install script copies
# to /etc/openshell/gateway.toml when none is there. Install it with `apt install ./dist/*.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "package-deb: building (scripts/build.sh)" >&2
./scripts/build.sh
mkdir -p dist
echo "package-deb: installing into a staging tree, stripping the binaries and packing (cpack -G DEB)" >&2
(cd build && cpack -G DEB -B "$PWD/../dist" >/dev/null)
rm -rf dist/_CPack_Packages
echo "package-deb: done" >&2
ls -l dist/*.deb

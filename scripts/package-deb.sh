#!/usr/bin/env bash
# Builds the Debian packages into ./dist (deploy/debian/packaging.cmake says what each holds):
#   openshell-policy-gateway_<version>_amd64.deb          the daemon, tools, unit, conffile, docs
#   libopenshell-sandbox-client-dev_<version>_amd64.deb   the supervisor client library
#   openshell-policy-gateway-examples_<version>_amd64.deb example policies, ceilings and drivers
# Install with `apt install ./dist/openshell-policy-gateway_*.deb` (and the others as needed). Prints
# each step as it goes (the build's own progress, then CPack's steps per package).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "package-deb: building (scripts/build.sh)" >&2
./scripts/build.sh
mkdir -p dist
echo "package-deb: installing each package's files into a staging tree, stripping the binaries, finding" \
     "their library dependencies (dpkg-shlibdeps) and packing (cpack -G DEB)" >&2
(cd build && cpack -G DEB -B "$PWD/../dist") | sed 's/^CPack[A-Za-z]*: /package-deb: /' >&2
rm -rf dist/_CPack_Packages
echo "package-deb: done" >&2
ls -l dist/*.deb

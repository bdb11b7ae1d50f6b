#!/usr/bin/env bash
# ctest deb_package: builds the three .debs with CPack from this build, unpacks them into a scratch root
# (dpkg-deb -x, nothing installed on the machine), checks the layout an operator, a supervisor author and
# a newcomer rely on, the maintainer scripts and the conffile, the packages' dependencies, that the
# packaged gateway checks the packaged config, and runs lintian on all three: no error and no warning
# but the one named below.
#   check_deb.sh BUILD_DIR
set -euo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; exit 1; }
deb() { ls "$work"/out/"$1"_*.deb; }
gateway=$(deb openshell-policy-gateway) dev=$(deb libopenshell-sandbox-client-dev) examples=$(deb openshell-policy-gateway-examples)
root=$work/root
for d in "$gateway" "$dev" "$examples"; do dpkg-deb -x "$d" "$root"; done
in_package() {  # in_package DEB PATH...: each PATH is in that package
  local d=$1; shift
  local listing; listing=$(dpkg-deb -c "$d")
  for path in "$@"; do
    grep -q " \./$path\$" <<<"$listing" || { echo "deb: $(basename "$d") lacks /$path" >&2; exit 1; }
  done
}
in_package "$gateway" usr/bin/policy-gateway usr/bin/policyctl usr/bin/null-policy-driver usr/bin/policy-driver-conformance \
  usr/bin/policy-log-witness usr/lib/systemd/system/policy-gateway.service etc/openshell/gateway.toml \
  usr/share/openshell/proto/openshell/policy/driver/v1/driver.proto usr/share/man/man1/policyctl.1.gz \
  usr/share/doc/openshell-policy-gateway/policy-gateway.md usr/share/doc/openshell-policy-gateway/trust-store.md \
  usr/share/doc/openshell-policy-gateway/contract/SPEC.md usr/share/doc/openshell-policy-gateway/contract/SCHEMA.md \
  usr/share/doc/openshell-policy-gateway/copyright usr/share/doc/openshell-policy-gateway/changelog.gz
in_package "$dev" usr/lib/openshell-policy-gateway/libosh_sandbox_client.a usr/lib/pkgconfig/openshell-sandbox-client.pc \
  usr/include/openshell-policy-gateway/sandbox_client/sandbox_client.h usr/share/doc/libopenshell-sandbox-client-dev/copyright
in_package "$examples" usr/libexec/openshell-policy-gateway/example-signing-driver \
  usr/libexec/openshell-policy-gateway/example-supervisor usr/share/openshell/examples/policies/github.yaml \
  usr/share/openshell/examples/python_driver/driver.py usr/share/openshell/examples/python_driver/check_conformance.sh \
  usr/share/doc/openshell-policy-gateway-examples/copyright
# The runtime package holds no archive or header (they are the -dev package's).
if dpkg-deb -c "$gateway" | grep -qE '\.a$|/include/'; then echo "deb: archives or headers in the runtime package" >&2; exit 1; fi
grep -q '^ExecStart=/usr/bin/policy-gateway --config /etc/openshell/gateway.toml$' \
  "$root/usr/lib/systemd/system/policy-gateway.service" || { echo "deb: the unit's ExecStart is not /usr/bin/..." >&2; exit 1; }
depends=$(dpkg-deb -f "$gateway" Depends)
for library in libgrpc libprotobuf libsqlite3 libssl libsystemd libpq5; do  # libpq5: loaded at run time
  grep -q "$library" <<<"$depends" || { echo "deb: Depends lacks $library: $depends" >&2; exit 1; }
done
dpkg-deb -e "$gateway" "$work/control"
for script in postinst prerm postrm; do
  [[ -x $work/control/$script ]] || { echo "deb: no $script" >&2; exit 1; }
  sh -n "$work/control/$script"
done
grep -qx /etc/openshell/gateway.toml "$work/control/conffiles" || { echo "deb: gateway.toml is not a conffile" >&2; exit 1; }
# The packaged binary checks the packaged conffile (its state and socket paths moved into the scratch root).
sed "s|/var/lib/|$root/var/lib/|; s|/run/|$root/run/|g" "$root/etc/openshell/gateway.toml" >"$work/gateway.toml"
"$root/usr/bin/policy-gateway" --config "$work/gateway.toml" --check-config >"$work/check.out"
grep -q '^config ok$' "$work/check.out" || { cat "$work/check.out" >&2; exit 1; }
# lintian (Debian's package checker). Allowed: the .pc file in /usr/lib/pkgconfig rather than the
# multiarch folder (the install tree and docs use <prefix>/lib/pkgconfig; not a cross-compiling library).
set +e
lintian --fail-on error,warning --suppress-tags pkg-config-unavailable-for-cross-compilation \
  "$gateway" "$dev" "$examples" >"$work/lintian.out" 2>&1
lintian_rc=$?
set -e
grep -v '^running with root privileges' "$work/lintian.out" || true
[[ $lintian_rc -eq 0 ]] || { echo "deb: lintian reports errors or warnings (above; exit $lintian_rc)" >&2; exit 1; }
for d in "$gateway" "$dev" "$examples"; do
  echo "deb ok: $(basename "$d"), $(dpkg-deb -f "$d" Installed-Size) KiB installed"
done
echo "Depends of the gateway: $depends"

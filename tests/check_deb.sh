#!/usr/bin/env bash
# ctest deb_package: builds the .deb with CPack from this build, unpacks it into a scratch root
# (dpkg-deb -x, nothing installed on the machine) and checks the layout an operator relies on, the
# unit's paths, the package's dependencies, and that the packaged gateway checks the packaged config.
#   check_deb.sh BUILD_DIR
set -euo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; exit 1; }
deb=$(ls "$work"/out/*.deb)
root=$work/root
dpkg-deb -x "$deb" "$root"
for path in usr/bin/policy-gateway usr/bin/policyctl usr/bin/null-policy-driver usr/bin/policy-driver-conformance usr/bin/policy-log-witness \
            usr/lib/systemd/system/policy-gateway.service usr/share/openshell/examples/gateway.toml \
            usr/share/openshell/examples/python_driver/driver.py \
            usr/share/openshell/proto/openshell/policy/driver/v1/driver.proto \
            usr/share/doc/openshell-policy-gateway/policy-gateway.md usr/share/doc/openshell-policy-gateway/trust-store.md; do
  [[ -e $root/$path ]] || { echo "deb: missing /$path" >&2; exit 1; }
done
grep -q '^ExecStart=/usr/bin/policy-gateway --config /etc/openshell/gateway.toml$' \
  "$root/usr/lib/systemd/system/policy-gateway.service" || { echo "deb: the unit's ExecStart is not /usr/bin/..." >&2; exit 1; }
depends=$(dpkg-deb -f "$deb" Depends)
for library in libgrpc libprotobuf libsqlite3 libssl libsystemd libpq5; do  # libpq5: loaded at run time
  grep -q "$library" <<<"$depends" || { echo "deb: Depends lacks $library: $depends" >&2; exit 1; }
done
dpkg-deb -e "$deb" "$work/control"
[[ -x $work/control/postinst ]] || { echo "deb: no postinst" >&2; exit 1; }
# The packaged binary checks the packaged example (its state and socket paths moved into the scratch root).
sed "s|/var/lib/|$root/var/lib/|; s|/run/|$root/run/|g" "$root/usr/share/openshell/examples/gateway.toml" >"$work/gateway.toml"
"$root/usr/bin/policy-gateway" --config "$work/gateway.toml" --check-config >"$work/check.out"
grep -q '^config ok$' "$work/check.out" || { cat "$work/check.out" >&2; exit 1; }
echo "deb ok: $(basename "$deb"), $(dpkg-deb -f "$deb" Installed-Size) KiB installed; Depends: $depends"

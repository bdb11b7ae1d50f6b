#!/usr/bin/env bash
# ctest systemd_unit: the shipped unit is one systemd accepts, and its ExecStartPre/ExecStart command runs
# --check-config cleanly on the shipped example configuration.
#   check_systemd_unit.sh UNIT GATEWAY_BINARY EXAMPLE_CONFIG
set -euo pipefail
unit=$1 gateway=$2 example=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -q '^Type=notify$' "$unit" || { echo "unit: not Type=notify" >&2; exit 1; }
for directive in NoNewPrivileges=yes ProtectSystem=strict StateDirectory= RuntimeDirectory=; do
  grep -q "^$directive" "$unit" || { echo "unit: missing $directive" >&2; exit 1; }
done
# The unit with its binary and config replaced by the build's and a scratch copy.
config_in_unit=$(sed -n 's/^ExecStart=[^ ]* --config \([^ ]*\)$/\1/p' "$unit")
[[ -n $config_in_unit ]] || { echo "unit: no 'ExecStart=... --config FILE' line" >&2; exit 1; }
sed "s|^state_dir = .*|state_dir = \"$work/state\"|; s|/run/openshell-policy-gateway/|$work/run/|" "$example" >"$work/gateway.toml"
sed "s|[^= ]*/policy-gateway |$gateway |; s|$config_in_unit|$work/gateway.toml|" "$unit" >"$work/policy-gateway.service"
if command -v systemd-analyze >/dev/null; then
  # Offline: no manager needed. Only this unit's own problems count.
  out=$(systemd-analyze verify "$work/policy-gateway.service" 2>&1 || true)
  if grep -v -e 'Failed to connect' -e 'Cannot determine cgroup' -e 'not executable' <<<"$out" | grep -q 'policy-gateway.service'; then
    echo "systemd-analyze verify: $out" >&2
    exit 1
  fi
fi
exec_start=$(sed -n 's/^ExecStart=//p' "$work/policy-gateway.service")
# shellcheck disable=SC2086
$exec_start --check-config >"$work/check.out"
grep -q '^config ok$' "$work/check.out" || { cat "$work/check.out" >&2; exit 1; }
[[ ! -e $work/state ]] || { echo "--check-config created the state folder" >&2; exit 1; }
echo "systemd unit ok: $(grep -c '=' "$unit") directives; ExecStart --check-config ok"

#!/usr/bin/env bash
# A throw-away PostgreSQL server for trying replicas on one machine (docs/replicas.md), made the way the
# tests make theirs: Debian's server binaries, a cluster in a folder of its own, no TCP (a Unix socket in
# that folder), trust authentication, run as an unprivileged user (nobody) when started as root.
#
#   scripts/dev-postgres.sh start [DIR]   initialise DIR (default /tmp/openshell-dev-postgres) if needed, start the
#                                         server, create the database "openshell", print its URL
#   scripts/dev-postgres.sh url [DIR]     print the URL of the running server's database
#   scripts/dev-postgres.sh stop [DIR]    stop the server (the data stays in DIR)
#   scripts/dev-postgres.sh destroy [DIR] stop it and delete DIR
#
# The URL (postgresql://postgres@<percent-encoded DIR>:5433/openshell) is what `database` takes in
# gateway.toml or `--database` on the command line. Never for production: anyone who can reach the
# socket folder is the database's superuser.
set -euo pipefail
cd "$(dirname "$0")/.."
command=${1:-}
dir=$(realpath -m "${2:-${TMPDIR:-/tmp}/openshell-dev-postgres}")
port=5433
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $bin/postgres ]] || { echo "dev-postgres: PostgreSQL's server is not installed (./scripts/bootstrap.sh installs it)" >&2; exit 2; }

as_server() {  # runs "$@" as the folder's owner: nobody when we are root (from /, which nobody can enter)
  if [[ $(id -u) -eq 0 ]]; then (cd / && setpriv --reuid=65534 --regid=65534 --clear-groups "$@"); else "$@"; fi
}
url() {
  local encoded
  encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$dir")
  echo "postgresql://postgres@${encoded}:${port}/openshell"
}
running() { as_server "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

case "$command" in
  start)
    if [[ ! -d $dir/data ]]; then
      echo "dev-postgres: initialising a cluster in $dir" >&2
      mkdir -p "$dir"
      chmod 0700 "$dir"
      [[ $(id -u) -eq 0 ]] && chown 65534:65534 "$dir"
      as_server "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! running; then
      echo "dev-postgres: starting the server (socket in $dir, log in $dir/server.log)" >&2
      as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-k $dir -p $port -c listen_addresses= -c max_connections=200" start >/dev/null ||
        { tail -20 "$dir/server.log" >&2; exit 1; }
    fi
    as_server "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'openshell'" | grep -q 1 ||
      as_server "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE DATABASE openshell"
    url
    ;;
  url)
    running || { echo "dev-postgres: no server is running in $dir" >&2; exit 1; }
    url
    ;;
  stop)
    if running; then as_server "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; fi
    echo "dev-postgres: stopped (data kept in $dir)" >&2
    ;;
  destroy)
    if [[ -d $dir/data ]] && running; then as_server "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; fi
    rm -rf "$dir"
    echo "dev-postgres: $dir removed" >&2
    ;;
  -h|--help|help) sed -n '2,15p' "$0" ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac

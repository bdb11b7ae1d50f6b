#!/bin/sh
# Interoperability of tlog/ with Go's golang.org/x/mod/sumdb/{tlog,note} (Debian golang-go and
# golang-golang-x-mod-dev, GOPATH mode, offline). Fails — never skips — when Go or the module is missing.
#   tlog_interop.sh TLOG_FIXTURE GO_PROGRAM_DIR N
set -eu
fixture=$1
godir=$2
n=$3
command -v go >/dev/null 2>&1 || { echo "tlog_interop: go is not installed (scripts/bootstrap.sh installs golang-go)" >&2; exit 1; }
test -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog || {
  echo "tlog_interop: golang.org/x/mod is missing (scripts/bootstrap.sh installs golang-golang-x-mod-dev)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$fixture" write "$work/log" "$n"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" GOFLAGS= GOPROXY=off \
  go run "$godir/main.go" "$work/log"
"$fixture" check "$work/log"

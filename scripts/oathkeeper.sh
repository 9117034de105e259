#!/usr/bin/env bash
# Builds Ory Oathkeeper, pinned, into bin/tools/oathkeeper unless it is
# there already: the peer make bench-peers measures extauthz against. Its
# module cannot be installed with `go install` (the proxy refuses its
# version list), so it is built from a scratch module; its go-sqlite3 is
# pinned back to a version that builds with this Go. About 3 minutes cold.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
tools=$PWD/bin/tools
version=v0.40.9
if [ -x "$tools/oathkeeper" ] && "$tools/oathkeeper" version 2>/dev/null | grep -q "${version#v}"; then
  exit 0
fi
mkdir -p "$tools"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "building Ory Oathkeeper $version into bin/tools (once; about 3 minutes)"
cd "$scratch"
$go mod init oathkeeper-build >/dev/null 2>&1
$go get -tool "github.com/ory/oathkeeper@$version"
$go mod edit -replace github.com/mattn/go-sqlite3=github.com/mattn/go-sqlite3@v1.14.10
$go mod tidy
$go build -ldflags "-X github.com/ory/oathkeeper/x.Version=$version" -o "$tools/oathkeeper" github.com/ory/oathkeeper

#!/usr/bin/env bash
# Installs the command-line tools the tests and the demo drive, into
# bin/tools, unless they are there already. Versions are pinned here.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
tools=$PWD/bin/tools
mkdir -p "$tools"

install() { # name module@version
  if [ -x "$tools/$1" ]; then return; fi
  echo "installing $2 into bin/tools (once; about a minute)"
  GOBIN=$tools GOFLAGS=-mod=mod $go install "$2"
}

install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4

#!/usr/bin/env bash
# Installs the command-line tools the tests and the demo drive, into
# bin/tools, unless they are there already: all of them, or those named
# (scripts/tools.sh grpcurl). Versions are pinned here; a tool's file name
# holds its version, so a new pin installs anew.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
tools=$PWD/bin/tools
mkdir -p "$tools"
wanted=("$@")

install() { # name version module/cmd [build flags...] (a few minutes each, once)
  local name=$1 version=$2 pkg=$3
  shift 3
  if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then return; fi
  if [ -x "$tools/$name-$version" ]; then return; fi
  echo "installing $pkg@$version into bin/tools (once)"
  local tmp
  tmp=$(mktemp -d)
  GOBIN=$tmp GOFLAGS=-mod=mod $go install "$@" "$pkg@$version"
  mv "$tmp/$name" "$tools/$name-$version"
  rm -rf "$tmp"
  ln -sf "$name-$version" "$tools/$name"
}

install grpcurl v1.9.4 github.com/fullstorydev/grpcurl/cmd/grpcurl
install helm v3.22.0 helm.sh/helm/v3/cmd/helm
install caddy v2.11.9 github.com/caddyserver/caddy/v2/cmd/caddy
# Without service discovery (remove_all_sd): rules need none, and it builds
# in about 4 minutes on two cores instead of many more.
install promtool v0.316.0 github.com/prometheus/prometheus/cmd/promtool -tags remove_all_sd

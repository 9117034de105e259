#!/usr/bin/env bash
# Regenerates the Go code of proto/ with pinned plugins. Needs protoc
# (Debian's protobuf-compiler, installed when missing and possible).
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
tools=$PWD/bin/tools
mkdir -p "$tools"
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
  else
    echo "protoc is missing: install protobuf-compiler" >&2
    exit 1
  fi
fi
[ -x "$tools/protoc-gen-go" ] || GOBIN=$tools $go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x "$tools/protoc-gen-go-grpc" ] || GOBIN=$tools $go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
PATH=$tools:$PATH protoc --proto_path=proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  $(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
echo "generated: $(cd proto && find . -name '*.pb.go' | sort | tr '\n' ' ')"

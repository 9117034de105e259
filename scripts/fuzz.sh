#!/usr/bin/env bash
# Runs every fuzz target of the repository for the given time each (default 5s).
# A failing input is saved under the package's testdata/fuzz and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-5s}
go=${GO:-go}

for pkg in $($go list ./...); do
  dir=$($go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz $pkg $target for $fuzztime"
    $go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
  done
done

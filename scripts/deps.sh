#!/usr/bin/env bash
# Installs the Debian packages whose servers the tests start for real
# (redis-server, redis-sentinel, redis-cli, nginx with auth_request), and
# curl, which they drive besides grpcurl, when they are missing. Without
# them the tests that need them skip, except under CI, where they fail.
# Named, it installs those commands alone: scripts/deps.sh wrk is the HTTP
# load generator make bench drives HTTP mode with (not needed by the tests).
set -euo pipefail

need=()
if [ $# -eq 0 ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  command -v curl >/dev/null || need+=(curl ca-certificates)
fi
for name in "$@"; do
  case $name in
    wrk) command -v wrk >/dev/null || need+=(wrk) ;;
    *) echo "scripts/deps.sh: unknown name $name" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  fi
fi
if ! command -v apt-get >/dev/null || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
  echo "missing ${need[*]}: install them with apt-get (or your package manager)" >&2
  [ -n "${CI:-}" ] && exit 1
  exit 0
fi
echo "installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

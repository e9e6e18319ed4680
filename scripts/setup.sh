#!/usr/bin/env bash
# Installs what `npm run demo`, `npm test` and `npm run bench` need on a fresh
# clone: the npm dependencies, and etcd from Debian's etcd-server package.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund
fi

if [ -n "${ETCD_BIN:-}" ]; then
  [ -x "$ETCD_BIN" ] || { echo "setup: ETCD_BIN=$ETCD_BIN is not an executable" >&2; exit 1; }
elif ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing etcd (apt-get install etcd-server etcd-client)" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2
  else
    cat >&2 <<'MSG'
setup: etcd is not installed, and the tests and the demo start a throwaway etcd.
  Debian/Ubuntu:  sudo apt-get install -y etcd-server etcd-client
  elsewhere:      put an etcd >= 3.4 binary on PATH, or set ETCD_BIN=/path/to/etcd
MSG
    exit 1
  fi
fi

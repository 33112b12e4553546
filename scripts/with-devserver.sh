#!/usr/bin/env bash
# Runs a command with the dev server (embedded mock) listening on 127.0.0.1:PORT, then stops it.
# Usage: scripts/with-devserver.sh PORT -- command...
# The server inherits the environment: MOCK_CORS=1 lets pages on other origins call the mock.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$1; shift; [ "${1:-}" = "--" ] && shift

log=$(mktemp)
PORT=$port target/release/devserver >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT

for _ in $(seq 100); do
  grep -q "http://" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "dev server did not start" >&2; exit 1; }
  sleep 0.1
done
grep -q "http://" "$log" || { cat "$log"; echo "dev server did not start in 10 s" >&2; exit 1; }
"$@"

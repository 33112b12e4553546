#!/usr/bin/env bash
# Prints the gzip size of what a page downloads (.wasm + JS glue) and holds it to a budget.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-61440}
wasm=pkg/runflow_kontext_bg.wasm
glue=pkg/runflow_kontext.js
gz() { gzip -9c "$1" | wc -c; }
raw_wasm=$(wc -c <"$wasm"); raw_glue=$(wc -c <"$glue")
gz_wasm=$(gz "$wasm"); gz_glue=$(gz "$glue")
total=$((gz_wasm + gz_glue))
printf '%-28s %9s %9s\n' file bytes gzip
printf '%-28s %9d %9d\n' "$wasm" "$raw_wasm" "$gz_wasm" "$glue" "$raw_glue" "$gz_glue"
printf '%-28s %9d %9d   (budget %d)\n' total $((raw_wasm + raw_glue)) "$total" "$budget"
if [ "$total" -gt "$budget" ]; then
  echo "size: over budget by $((total - budget)) bytes" >&2
  exit 1
fi

#!/usr/bin/env bash
# `make fuzz`: each target for FUZZ_SECONDS on nightly, from its working corpus (fuzz/target/corpus,
# not in git), the kept corpus (fuzz/corpus) and the hand-written seeds (fuzz/seeds); then the
# working corpus is minimised (`cargo fuzz cmin`) and the FUZZ_CORPUS_FILES inputs that added the
# most coverage in that merge become fuzz/corpus/<target>/, which tests/fuzz_corpus.rs replays on
# stable. Exits 1 when a target crashed: the input is in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${FUZZ_SECONDS:-30}
max_len=${FUZZ_MAX_LEN:-4096}
keep=${FUZZ_CORPUS_FILES:-50}
targets=${FUZZ_TARGETS:-run_parsing error_envelope retry_after signature_header input_validation proxy_rules}

log() { printf '\033[1m[fuzz]\033[0m %s\n' "$*"; }
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

failed=()
for target in $targets; do
  work=target/corpus/$target
  mkdir -p "$work" "corpus/$target" "seeds/$target"
  log "$target: $seconds s"
  # Nonzero on a crash; that is reported below, after the corpus is kept.
  cargo +nightly fuzz run "$target" "$work" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 >"target/$target.log" 2>&1 || true
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^SUMMARY|Test unit written|stat::number_of_executed_units|stat::peak_rss' \
    "target/$target.log" || true
  if grep -q 'Test unit written' "target/$target.log"; then failed+=("$target"); fi

  cp corpus/"$target"/* "$work"/ 2>/dev/null || true
  merge=$PWD/target/$target.merge
  rm -f "$merge"
  cargo +nightly fuzz cmin "$target" "$work" -- -max_len="$max_len" -merge_control_file="$merge" \
    >"target/$target.cmin.log" 2>&1
  # The control file lists the inputs, then per input the coverage it added (COV <index> ...).
  rm -f corpus/"$target"/*
  awk 'NR == 1 { n = $1 } NR > 2 && NR <= n + 2 { path[NR - 3] = $0 } /^COV/ { print NF - 2, path[$2] }' "$merge" |
    sort -k1,1nr | awk -v keep="$keep" 'NR <= keep' | while read -r _ path; do
      name=$(basename "$path")
      if [ -f "$work/$name" ]; then cp "$work/$name" "corpus/$target/"; fi
    done
  log "$target: minimised to $(find "$work" -type f | wc -l) inputs; kept $(find "corpus/$target" -type f | wc -l) in fuzz/corpus/$target ($(du -sb "corpus/$target" | cut -f1) bytes)"
done

if [ ${#failed[@]} -gt 0 ]; then
  log "crashed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi

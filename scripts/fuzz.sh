#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each, starting from the corpus kept
# in fuzz/corpus. cargo-fuzz needs nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP lets
# the machine's one stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
log="$(mktemp)"
work="$(mktemp -d)"  # new inputs go here; the kept corpus is read, not rewritten
for target in form_params redirect_uri basic_header jwt_parse; do
  echo "fuzz: $target for ${secs}s"
  mkdir -p "$work/$target"
  # A crash (or a build failure) makes cargo fuzz exit non-zero and keeps the input
  # under fuzz/artifacts/.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$secs" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target failed"
    exit 1
  fi
  grep -E '^Done' "$log" || true
done
echo "fuzz: no crash in any target"

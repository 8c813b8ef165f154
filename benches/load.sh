#!/usr/bin/env bash
# HTTP load benchmark: a release provisio on loopback, driven by wrk, on SQLite and (when it
# is up) PostgreSQL, side by side in one run. Prints one table row per scenario with its ratio
# to /readyz (one database round trip) and to /healthz (no database), the server's RSS after the
# run, and whether each goal of BENCHMARKS.md is met. The numbers go into BENCHMARKS.md with
# the command that produced them.
#
#   benches/load.sh [SECONDS]     (default 5 s per scenario; needs wrk, curl and python3)
#   CONNS=32 ACCOUNTS=30000 STORES="sqlite postgres" benches/load.sh 10
#   BIN=/path/to/provisio benches/load.sh   (a binary built elsewhere; CARGO_TARGET_DIR is honoured)
#
# Scenarios, all against the same server (bundled example hooks loaded):
#   healthz     the HTTP ceiling (no database)
#   readyz      one `SELECT 1` round trip: the ceiling of anything that reads the database
#   anonymous   GET /provisioning: space from memory + document, no database round trip
#   me          GET /provisioning/me with an API key: identity in one read, no write
#   token       GET /provisioning/{token}: each request consumes a distinct fresh token
#   qrcode      GET /provisioning/qrcode/{token}: PNG rendering (CPU-bound, not a document)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${CONNS:-32}
# One fresh token per account; the token scenario must never run out (it would measure 404s).
ACCOUNTS=${ACCOUNTS:-$(( DUR * 10000 > 30000 ? DUR * 10000 : 30000 ))}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 69; }
# BIN=path/to/provisio measures that binary instead of building this checkout.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/provisio
fi
W=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$W"' EXIT

# Creates accounts through the API as fast as the server takes them, writing each new account's
# provisioning token to a file; once every creation is answered it writes FILE.done, and the
# shell interrupts wrk (whose threads cannot end a run before its -d duration by themselves).
cat >"$W/create.lua" <<'LUA'
local n, answered, out, done_path = 0, 0, nil, nil
function init(args)
  n = tonumber(args[1]); out = io.open(args[2], "w"); done_path = args[2] .. ".done"
end
local i = 0
function request()
  i = i + 1
  return wrk.format("POST", "/api/accounts",
    { ["content-type"] = "application/json", ["accept"] = "application/json", ["x-api-key"] = wrk.key },
    string.format('{"username":"u%d","password":"bench-pass-%d"}', i, i))
end
function response(status, headers, body)
  local t = body:match('"provisioning_token"%s*:%s*"([^"]+)"')
  if t then out:write(t, "\n") else io.stderr:write("account creation: HTTP ", status, " ", body:sub(1, 200), "\n") end
  answered = answered + 1
  if answered == n then out:flush(); io.open(done_path, "w"):close() end
end
LUA

# wrk's summary → "req/s p50_ms p99_ms non2xx" (latencies normalised to milliseconds).
parse_wrk() {
  python3 -c '
import re, sys
out = sys.stdin.read()
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    f = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * f
rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
print(rps, f"{p50:.2f}", f"{p99:.2f}", bad.group(1) if bad else 0)
'
}

run_backend() {
  local name=$1 db=$2 port=$3
  local args=(--data-dir "$W/$name" --listen "127.0.0.1:$port" --hooks-dir "$PWD/hooks")
  [ -n "$db" ] && args+=(--database "$db")
  "$BIN" "${args[@]}" space add bench.example.com --host 127.0.0.1 >/dev/null
  local key
  key=$("$BIN" "${args[@]}" admin add admin@bench.example.com --password bench-admin-pass --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  # Limits that protect a public server would throttle one load generator on one address.
  PROVISIO_RATE_LIMIT__FAILURES_PER_MINUTE=0 PROVISIO_RATE_LIMIT__ANONYMOUS_PER_MINUTE=0 \
    PROVISIO_LOG=warn "$BIN" "${args[@]}" serve >"$W/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  local base="http://127.0.0.1:$port"
  sed "s/wrk.key/\"$key\"/" "$W/create.lua" >"$W/$name.create.lua"
  wrk -t1 -c8 -d3600s -s "$W/$name.create.lua" "$base" -- "$ACCOUNTS" "$W/$name.tokens" >/dev/null &
  local creator=$!
  while [ ! -e "$W/$name.tokens.done" ] && kill -0 "$creator" 2>/dev/null; do sleep 0.5; done
  kill -INT "$creator" 2>/dev/null || true
  wait "$creator" 2>/dev/null || true
  [ -e "$W/$name.tokens.done" ] || { echo "account creation failed" >&2; exit 1; }
  local made; made=$(wc -l <"$W/$name.tokens")
  local one; one=$(head -1 "$W/$name.tokens"); tail -n +2 "$W/$name.tokens" >"$W/$name.consume"

  bench() { # scenario, extra wrk args...
    local scen=$1; shift
    local out; out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$@" 2>&1)
    read -r rps p50 p99 bad < <(parse_wrk <<<"$out")
    local note=""
    [ "$scen" = token ] && note=$(grep -o 'TOKENS.*' <<<"$out" || true)
    [ "$scen" != token ] && [ "$bad" != 0 ] && note="non-2xx: $bad"
    echo "$scen $rps $p50 $p99 $note" >>"$W/$name.rows"
  }
  : >"$W/$name.rows"
  bench healthz "$base/healthz"
  bench readyz "$base/readyz"
  bench anonymous -H 'x-linphone-provisioning: 1' "$base/provisioning"
  bench me -H 'x-linphone-provisioning: 1' -H "x-api-key: $key" "$base/provisioning/me"
  bench token -s benches/tokens.lua "$base" -- "$W/$name.consume"
  bench qrcode "$base/provisioning/qrcode/$one"
  local rss; rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$name" "$W/$name.rows" "$rss" "$made" <<'PY'
import sys
name, rows, rss, made = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
r = {}
for line in open(rows):
    scen, rps, p50, p99, *note = line.split(maxsplit=4)
    r[scen] = (float(rps), float(p50), float(p99), " ".join(note).strip())
hz, rz = r["healthz"][0], r["readyz"][0]
for scen, (rps, p50, p99, note) in r.items():
    print(f"| {name:<10} | {scen:<9} | {rps:>9,.0f} | {p50:>7.2f} | {p99:>7.2f} | {rps/rz:>6.3f} | {rps/hz:>6.3f} | {note}")
pg = name == "postgres"
goals = [
    ("me >= %.1f x readyz" % (0.6 if pg else 0.5), r["me"][0] / rz >= (0.6 if pg else 0.5)),
    ("token >= 0.3 x readyz", r["token"][0] / rz >= 0.3) if pg else None,
    ("me p99 <= 15 ms", r["me"][2] <= 15) if pg else None,
    ("token p99 <= %d ms" % (25 if pg else 50), r["token"][2] <= (25 if pg else 50)),
    ("anonymous >= 0.5 x healthz", r["anonymous"][0] / hz >= 0.5),
    ("RSS <= 64 MiB", rss <= 64),
]
print(f"  {name}: server RSS after the run {rss:.1f} MiB; {made} accounts, one fresh token each")
for g in goals:
    if g:
        print(f"  {name}: goal {g[0]}: {'met' if g[1] else 'NOT met'}")
PY
}

echo "| store      | scenario  |     req/s |  p50 ms |  p99 ms | /readyz | /healthz | notes"
echo "|------------|-----------|----------:|--------:|--------:|-------:|-------:|------"
STORES=${STORES:-sqlite postgres}
[[ " $STORES " == *" sqlite "* ]] && run_backend sqlite "" 18318
if [[ " $STORES " != *" postgres "* ]]; then
  :
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  DB="bench_$$"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $DB" >/dev/null
  # Loopback: no TLS (the default `prefer` would encrypt every round trip on the same cores).
  run_backend postgres "postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" 18319
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
else
  echo "(PostgreSQL not running: skipped)"
fi

#!/usr/bin/env bash
# Does a busy purger slow the hot paths? One server, three phases measured alike: JWT issuance
# and card pairs with nothing to purge (A1), the same while the purger works off a backlog of
# BACKLOG_ROWS expired card tokens inserted just before (B), and again once the backlog is gone
# (A2). B is compared with A1 and A2, whose difference is the run's own spread.
#
#   bench/purge-backlog.sh [--postgres URL]
#
# Environment: BACKLOG_ROWS=1000000, BACKLOG_DURATION=10 (s per scenario), BACKLOG_CONNECTIONS=64,
# BACKLOG_PURGE_FLAGS (extra serve flags, e.g. "--purge-batch 250 --purge-pause-ms 100"),
# BACKLOG_WAIT=600 (s to wait for the purger to finish before A2; what is left then is deleted
# with one statement, so A2 runs without a backlog),
# BENCH_PORT, BENCH_SKIP_BUILD, BENCH_SERVER_BIN as bench/run.sh; results in bench/target/backlog.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
PG_URL=""
[[ "${1:-}" == --postgres ]] && PG_URL="${2:?--postgres needs a URL}"
ROWS="${BACKLOG_ROWS:-1000000}"
DURATION="${BACKLOG_DURATION:-10}"
CONNECTIONS="${BACKLOG_CONNECTIONS:-64}"
PORT="${BENCH_PORT:-18080}"
SERVER_BIN="${BENCH_SERVER_BIN:-$ROOT/target/release/cardgate}"
LOADGEN="$BENCH/target/release/loadgen"
OUT_DIR="$BENCH/target/backlog"
BASE_URL="http://127.0.0.1:$PORT"
JWT_ID="bench-jwt"; JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456789"
CARD_ID="6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

TMP=""; SERVER_PID=""; PG_DB=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    [[ -n "$PG_DB" ]] && { timeout 30 psql "$PG_URL" -qXc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; }
    [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p cardgate)
    cargo build --release --manifest-path "$BENCH/loadgen/Cargo.toml" --target-dir "$BENCH/target"
fi
TMP="$(mktemp -d -t cardgate-backlog.XXXXXX)"
mkdir -p "$OUT_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$OUT_DIR/backlog-$STAMP.jsonl"; : > "$RESULTS"
SUMMARY="$OUT_DIR/backlog-$STAMP.txt"

COLS="id, hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, issued_at, expires_at, max_uses, uses_made, revoked"
if [[ -n "$PG_URL" ]]; then
    PG_DB="cardgate_backlog_$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    timeout 30 psql "$PG_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $PG_DB" >/dev/null
    DATABASE_URL="${PG_URL%/*}/$PG_DB"
    sql() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
    insert_backlog() {
        sql "INSERT INTO card_tokens ($COLS) SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), '\\x00'::bytea, 'card_token', 'bench', 'bench-jwt', 'sandbox', NULL, NULL, '', 0, g, 1, 0, false FROM generate_series(1, $ROWS) g"
    }
else
    : > "$TMP/backlog.db"
    DATABASE_URL="sqlite://$TMP/backlog.db"
    sql() { sqlite3 -cmd ".timeout 60000" "$TMP/backlog.db" "$1"; }
    insert_backlog() {
        sql "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $ROWS) INSERT INTO card_tokens ($COLS) SELECT CAST(printf('%032d', g) AS BLOB), x'00', 'card_token', 'bench', 'bench-jwt', 'sandbox', NULL, NULL, '', 0, g, 1, 0, 0 FROM s" >/dev/null
    }
fi
expired() { sql "SELECT COUNT(*) FROM card_tokens WHERE expires_at < 1000000000"; }
export CARDGATE_DATABASE_URL="$DATABASE_URL" CARDGATE_MASTER_KEY="$(head -c32 /dev/urandom | base64)"

"$SERVER_BIN" import "$BENCH/bench-tenant.json" >/dev/null
"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --log-format json \
    --purge-interval-secs 1 --purge-grace-secs 0 --stats-interval-secs 3600 ${BACKLOG_PURGE_FLAGS:-} >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do curl -s -o /dev/null --max-time 1 "$BASE_URL/healthz" && break; sleep 0.25; done

measure() {
    local phase="$1"
    for s in token-jwt card-pair; do
        local extra=()
        [[ "$s" == card-pair ]] && extra=(--card-id "$CARD_ID")
        "$LOADGEN" --url "$BASE_URL" --scenario "$s" --connections "$CONNECTIONS" --duration "$DURATION" \
            --warmup 1 --client-id "$JWT_ID" --client-secret "$JWT_SECRET" --server-pid "$SERVER_PID" "${extra[@]}" \
            | grep '^{' | sed "s/^{/{\"phase\":\"$phase\",/" >> "$RESULTS"
    done
}

{
    echo "purge backlog $STAMP  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')  database: ${PG_URL:+postgres}${PG_URL:-sqlite}"
    echo "purger flags: --purge-interval-secs 1 --purge-grace-secs 0 ${BACKLOG_PURGE_FLAGS:-(defaults: batch 1000, pause 20 ms)}"
    echo "backlog: $ROWS expired card tokens; ${DURATION}s per scenario; $CONNECTIONS connections; cores: $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$SUMMARY"
measure A1
t0=$(date +%s.%N); insert_backlog; t1=$(date +%s.%N)
echo "inserted $ROWS expired rows in $(echo "$t1 - $t0" | bc) s; backlog at the start of B: $(expired)" | tee -a "$SUMMARY"
measure B
echo "backlog at the end of B: $(expired) rows left" | tee -a "$SUMMARY"
for _ in $(seq 1 "${BACKLOG_WAIT:-600}"); do [[ "$(expired)" == 0 ]] && break; sleep 1; done
left="$(expired)"
if [[ "$left" != 0 ]]; then
    sql "DELETE FROM card_tokens WHERE expires_at < 1000000000" >/dev/null
    echo "the purger had $left rows left after ${BACKLOG_WAIT}s: deleted with one statement before A2" | tee -a "$SUMMARY"
else
    echo "backlog gone $(echo "$(date +%s.%N) - $t1" | bc) s after the insert" | tee -a "$SUMMARY"
fi
measure A2

python3 - "$RESULTS" <<'EOF' | tee -a "$SUMMARY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for s in ("token-jwt", "card-pair"):
    r = {x["phase"]: x["rps"] for x in rows if x["scenario"] == s}
    a = (r["A1"] + r["A2"]) / 2
    print(f"{s:<10} A1 {r['A1']:8.1f}/s  B (purging) {r['B']:8.1f}/s  A2 {r['A2']:8.1f}/s   "
          f"B/mean(A) {r['B'] / a:.3f}   spread |A1-A2|/mean(A) {abs(r['A1'] - r['A2']) / a:.3f}")
EOF

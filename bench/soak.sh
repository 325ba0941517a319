#!/usr/bin/env bash
# cardgate soak: constant load (JWT issuance, card pairs with short-lived card tokens, MFA
# step-up sessions) for SOAK_MINUTES, with the purger on and the audit log exported and pruned
# every minute; each minute records the database size, the server's RSS and the throughput of
# each load, into a CSV and an SVG plot (bench/soak_plot.py, no dependencies).
#
#   bench/soak.sh                                   # SQLite in a temp dir
#   bench/soak.sh --postgres postgres://postgres@127.0.0.1:5432/postgres
#
# Environment:
#   SOAK_MINUTES=20          how long
#   SOAK_CARD_TTL=60         card token lifetime (s); MFA sessions live 300 s, JWTs are not stored
#   SOAK_GRACE=30            --purge-grace-secs
#   SOAK_PURGE_INTERVAL=5    --purge-interval-secs
#   SOAK_AUDIT_RETENTION=120 audit retention (s): exported events older than this are pruned
#   SOAK_CONNECTIONS=8       keep-alive connections per load (three loads run at once)
#   SOAK_OUT=bench/target/soak   where soak-*.csv / soak-*.svg / soak-*.txt are kept
#   BENCH_PORT, BENCH_SKIP_BUILD, BENCH_SERVER_BIN, BENCH_KEEP_TMP as bench/run.sh
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
PG_URL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --postgres) PG_URL="${2:?--postgres needs a URL}"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done

MINUTES="${SOAK_MINUTES:-20}"
CARD_TTL="${SOAK_CARD_TTL:-60}"
GRACE="${SOAK_GRACE:-30}"
PURGE_INTERVAL="${SOAK_PURGE_INTERVAL:-5}"
AUDIT_RETENTION="${SOAK_AUDIT_RETENTION:-120}"
CONNECTIONS="${SOAK_CONNECTIONS:-8}"
PORT="${BENCH_PORT:-18080}"
OUT_DIR="${SOAK_OUT:-$BENCH/target/soak}"
SERVER_BIN="${BENCH_SERVER_BIN:-$ROOT/target/release/cardgate}"
LOADGEN="$BENCH/target/release/loadgen"
BASE_URL="http://127.0.0.1:$PORT"
JWT_ID="bench-jwt"; JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456789"
CARD_ID="6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
PERSON_ID="0b7c3f0e-8f9a-4a53-9a53-3e6f2b1d9c11"

log() { printf '==> %s\n' "$*" >&2; }

TMP=""; SERVER_PID=""; PG_DB=""; PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    [[ -n "$PG_DB" ]] && { timeout 30 psql "$PG_URL" -qXc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; }
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then echo "kept temp dir: $TMP" >&2; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p cardgate)
    cargo build --release --manifest-path "$BENCH/loadgen/Cargo.toml" --target-dir "$BENCH/target"
fi

TMP="$(mktemp -d -t cardgate-soak.XXXXXX)"
mkdir -p "$OUT_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
CSV="$OUT_DIR/soak-$STAMP.csv"
SVG="$OUT_DIR/soak-$STAMP.svg"
SUMMARY="$OUT_DIR/soak-$STAMP.txt"
MASTER_KEY="$(head -c32 /dev/urandom | base64)"

if [[ -n "$PG_URL" ]]; then
    PG_DB="cardgate_soak_$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    timeout 30 psql "$PG_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $PG_DB" >/dev/null
    DATABASE_URL="${PG_URL%/*}/$PG_DB"
    db_bytes() { psql "$DATABASE_URL" -qAtXc "SELECT pg_database_size(current_database())"; }
    wal_bytes() { echo 0; }
else
    : > "$TMP/soak.db"
    DATABASE_URL="sqlite://$TMP/soak.db"
    db_bytes() { stat -c %s "$TMP/soak.db"; }
    wal_bytes() { stat -c %s "$TMP/soak.db-wal" 2>/dev/null || echo 0; }
fi
export CARDGATE_DATABASE_URL="$DATABASE_URL" CARDGATE_MASTER_KEY="$MASTER_KEY"

"$SERVER_BIN" import "$BENCH/bench-tenant.json" >/dev/null
"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --log-format json \
    --purge-grace-secs "$GRACE" --purge-interval-secs "$PURGE_INTERVAL" \
    --audit-retention-secs "$AUDIT_RETENTION" --stats-interval-secs 30 \
    >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
    curl -s -o /dev/null --max-time 1 "$BASE_URL/healthz" && break
    sleep 0.25
done

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }
gauge() { curl -s --max-time 5 "$BASE_URL/metrics" | awk -v k="$1" 'index($0, k"{") == 1 || index($0, k" ") == 1 { s += $NF } END { print s + 0 }'; }

{
    echo "cardgate soak $STAMP  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "database: ${PG_URL:+postgres}${PG_URL:-sqlite}  minutes: $MINUTES  card ttl: ${CARD_TTL}s  grace: ${GRACE}s  audit retention: ${AUDIT_RETENTION}s  connections: 3 x $CONNECTIONS  cores: $(nproc)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on this machine count)"
} | tee "$SUMMARY" >&2

echo "minute,db_bytes,wal_bytes,rss_kb,token_rps,pair_rps,mfa_rps,rows,audit_events,loadavg" > "$CSV"
PREV_EXPORT=""
for m in $(seq 1 "$MINUTES"); do
    RES="$TMP/minute-$m.jsonl"; : > "$RES"
    PIDS=()
    common=(--url "$BASE_URL" --connections "$CONNECTIONS" --duration 58 --warmup 0.5 --json-out "$RES"
            --client-id "$JWT_ID" --client-secret "$JWT_SECRET")
    "$LOADGEN" --scenario token-jwt "${common[@]}" >/dev/null & PIDS+=($!)
    "$LOADGEN" --scenario card-pair --card-id "$CARD_ID" \
        --mint-body "{\"operations\":[\"VIEW_CARD\"],\"ttl_seconds\":$CARD_TTL}" "${common[@]}" >/dev/null & PIDS+=($!)
    "$LOADGEN" --scenario mfa-session --person-id "$PERSON_ID" "${common[@]}" >/dev/null & PIDS+=($!)
    # The audit log leaves every minute (checked against the previous export), so the purger
    # may prune it once it is older than the retention.
    sleep 20
    EXPORT="$TMP/audit-$m.jsonl"
    "$SERVER_BIN" audit export --out "$EXPORT" 2>>"$TMP/export.log" || echo "export $m failed" >&2
    if [[ -n "$PREV_EXPORT" ]]; then
        "$SERVER_BIN" audit verify --file "$PREV_EXPORT" --file "$EXPORT" >>"$TMP/export.log" 2>&1 \
            || echo "!!! export $m does not continue export $((m - 1))" | tee -a "$SUMMARY" >&2
        rm -f "$PREV_EXPORT"
    fi
    PREV_EXPORT="$EXPORT"
    for p in "${PIDS[@]}"; do wait "$p" || echo "loadgen exited $? in minute $m" >&2; done
    PIDS=()
    rps() { awk -v s="$1" -F'"rps":' 'index($0, "\"scenario\":\""s"\"") { split($2, a, ","); print a[1] }' "$RES"; }
    row="$m,$(db_bytes),$(wal_bytes),$(rss_kb),$(rps token-jwt),$(rps card-pair),$(rps mfa-session),$(gauge cardgate_rows),$(gauge cardgate_audit_events),$(cut -d' ' -f1 /proc/loadavg)"
    echo "$row" >> "$CSV"
    log "minute $m: $row"
done

"$SERVER_BIN" status --purge-grace-secs "$GRACE" --audit-retention-secs "$AUDIT_RETENTION" >> "$SUMMARY" 2>/dev/null || true
python3 "$BENCH/soak_plot.py" "$CSV" "$SVG" | tee -a "$SUMMARY"
echo "csv: $CSV"; echo "svg: $SVG"; echo "summary: $SUMMARY"

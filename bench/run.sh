#!/usr/bin/env bash
# cardgate benchmark: build, import a bench tenant, start the server, run every
# load scenario against it (each right after a GET /healthz run), print a summary
# with ratios to the adjacent healthz of the same run, stop the server and clean up.
#
#   bench/run.sh                                   # SQLite in a temp dir
#   bench/run.sh --postgres postgres://postgres@127.0.0.1:5432/postgres
#
# Environment:
#   BENCH_DURATION=10        measured seconds per scenario
#   BENCH_WARMUP=2           warm-up seconds per scenario (not counted)
#   BENCH_CONNECTIONS=64     keep-alive connections
#   BENCH_LOADGEN_THREADS=1  loadgen runtime threads
#   BENCH_PORT=18080         listen port (127.0.0.1 only)
#   BENCH_SCENARIOS="token-jwt ..."  subset / order of the scenarios; also card-mint,
#                            widget-token, widget-token-fresh-key, widget-token-retry-key
#                            (Synctera widget tokens against the native mint, issue 11)
#   BENCH_REPEAT=1           run the whole list this many times; the summary gives medians
#   BENCH_HEALTHZ_DURATION=5 seconds of GET /healthz measured right before every scenario:
#                            each ratio is to that adjacent healthz (this VM's speed drifts)
#   BENCH_OUT=bench/target/results            where results-*.jsonl / summary-*.txt are kept
#   BENCH_KEEP_TMP=1         keep the temp dir (database, server log) for inspection
#   BENCH_SKIP_BUILD=1       do not run cargo build (binaries must exist)
#   BENCH_SERVER_BIN=path    server binary (default target/release/cardgate)
#   BENCH_MINT_AUTH=basic    card-pair mint auth: basic (client id:secret) or bearer (client_credentials token)
#
# token-dpop and card-pair-dpop are token-jwt and card-pair with a fresh ES256 DPoP proof on
# every request (RFC 9449); the summary states what DPoP adds in server CPU per request, in
# ES256 verifications measured by `loadgen es256-verify` at the end of the same run.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

PG_URL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --postgres) PG_URL="${2:?--postgres needs a URL}"; shift 2 ;;
        --postgres=*) PG_URL="${1#--postgres=}"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_LOADGEN_THREADS:-1}"
PORT="${BENCH_PORT:-18080}"
SCENARIOS="${BENCH_SCENARIOS:-healthz token-jwt token-opaque introspect-jwt introspect-opaque card-pair token-dpop card-pair-dpop card-reveal bankezy-token bankezy-reveal}"
OUT_DIR="${BENCH_OUT:-$BENCH/target/results}"
SERVER_BIN="${BENCH_SERVER_BIN:-$ROOT/target/release/cardgate}"
LOADGEN="$BENCH/target/release/loadgen"
BASE_URL="http://127.0.0.1:$PORT"

# Credentials — must match bench/bench-tenant.json.
JWT_ID="bench-jwt";       JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456789"
JWT_API_KEY="bench-jwt-apikey-0123456789abcdef0123456789"
OPQ_ID="bench-opaque";    OPQ_SECRET="bench-opaque-secret-0123456789abcdef01234567"
CARD_ID="6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
EZ_KEY="bench-bankezy-apikey-0123456789abcdef012345"
EZ_SDK_KEY="bench-bankezy-sdkkey-0123456789abcdef012345"
EZ_PAYLOAD="YmVuY2gtYmFua2V6eS1wYXlsb2FkLWtleS0zMmJ5dGU"

for t in curl timeout base64 head; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[[ -n "$PG_URL" ]] && { command -v psql >/dev/null || { echo "--postgres needs psql" >&2; exit 1; }; }

log() { printf '\n==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- cleanup
TMP=""
SERVER_PID=""
LOADGEN_PID=""
PG_DB=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$LOADGEN_PID" ]]; then kill -TERM "$LOADGEN_PID" 2>/dev/null || true; wait "$LOADGEN_PID" 2>/dev/null || true; fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server did not stop on SIGTERM within 10 s; sending SIGKILL" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$PG_DB" ]]; then
        timeout 30 psql "$PG_URL" -v ON_ERROR_STOP=1 -qXc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
            || timeout 30 psql "$PG_URL" -qXc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 \
            || echo "WARNING: could not drop database $PG_DB" >&2
    fi
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then
            echo "kept temp dir: $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building cardgate (release)"
    (cd "$ROOT" && cargo build --release -p cardgate)
    log "building the P-256 primitive timer (release)"
    (cd "$ROOT" && cargo build --release -p cardgate-jose --example p256_cost)
    log "building loadgen (release)"
    cargo build --release --manifest-path "$BENCH/loadgen/Cargo.toml" --target-dir "$BENCH/target"
fi
[[ -x "$SERVER_BIN" ]] || { echo "server binary not found: $SERVER_BIN" >&2; exit 1; }
[[ -x "$LOADGEN" ]] || { echo "loadgen binary not found: $LOADGEN" >&2; exit 1; }

# ---------------------------------------------------------------- setup
TMP="$(mktemp -d -t cardgate-bench.XXXXXX)"
mkdir -p "$OUT_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$OUT_DIR/results-$STAMP.jsonl"
SUMMARY="$OUT_DIR/summary-$STAMP.txt"
: > "$RESULTS"

MASTER_KEY="$(head -c32 /dev/urandom | base64)"

if [[ -n "$PG_URL" ]]; then
    PG_DB="cardgate_bench_$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    log "creating PostgreSQL database $PG_DB"
    timeout 30 psql "$PG_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $PG_DB" >/dev/null
    # Same URL with the database path replaced (query string kept).
    base="${PG_URL%%\?*}"; query=""
    [[ "$PG_URL" == *\?* ]] && query="?${PG_URL#*\?}"
    hostpart="${base#*://}"
    scheme="${base%%://*}"
    if [[ "$hostpart" == */* ]]; then hostpart="${hostpart%%/*}"; fi
    DATABASE_URL="$scheme://$hostpart/$PG_DB$query"
    DB_DESC="postgres ($PG_DB)"
else
    : > "$TMP/bench.db"   # an empty file is a valid empty SQLite database
    DATABASE_URL="sqlite://$TMP/bench.db"
    DB_DESC="sqlite ($TMP/bench.db)"
fi

# Refuse to benchmark whatever else may already be listening on the port.
if curl -s -o /dev/null --max-time 1 "$BASE_URL/healthz"; then
    echo "something is already listening on 127.0.0.1:$PORT — stop it or set BENCH_PORT" >&2
    exit 1
fi

log "importing bench tenant into $DB_DESC"
timeout 120 "$SERVER_BIN" import "$BENCH/bench-tenant.json" --database-url "$DATABASE_URL" --master-key "$MASTER_KEY"

log "starting server on 127.0.0.1:$PORT (log: $TMP/server.log)"
"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --database-url "$DATABASE_URL" --master-key "$MASTER_KEY" --log-format json \
    >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

server_log_tail() { echo "---- last lines of the server log ----" >&2; tail -n 40 "$TMP/server.log" >&2 || true; }

up=0
for _ in $(seq 1 120); do   # 120 x 0.25 s = 30 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "server exited during start-up" >&2; server_log_tail; exit 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE_URL/healthz" || true)"
    if [[ "$code" == 200 ]]; then up=1; break; fi
    sleep 0.25
done
if [[ "$up" != 1 ]]; then
    echo "server did not answer GET /healthz with 200 within 30 s" >&2; server_log_tail; exit 1
fi

# ---------------------------------------------------------------- scenarios
creds_for() {
    case "$1" in
        healthz) ;;
        *-opaque) echo "--client-id $OPQ_ID --client-secret $OPQ_SECRET" ;;
        token-jwt|introspect-jwt|token-dpop) echo "--client-id $JWT_ID --client-secret $JWT_SECRET" ;;
        card-pair-dpop) echo "--client-id $JWT_ID --client-secret $JWT_SECRET --card-id $CARD_ID" ;;
        card-pair) echo "--client-id $JWT_ID --client-secret $JWT_SECRET --card-id $CARD_ID --mint-auth ${BENCH_MINT_AUTH:-basic}" ;;
        card-mint|widget-token|widget-token-fresh-key|widget-token-retry-key) echo "--api-key $JWT_API_KEY --card-id $CARD_ID" ;;
        card-reveal) echo "--client-id $JWT_ID --client-secret $JWT_SECRET --card-id $CARD_ID" ;;
        bankezy-token)
            # A fresh referenceId per request: bodies sealed beforehand (jwcrypto), per run.
            local bodies="$TMP/bankezy-bodies-$RANDOM$RANDOM.txt"
            python3 "$BENCH/bankezy_prep.py" bodies "$bodies" "${BENCH_BANKEZY_BODIES:-20000}" \
                "$EZ_PAYLOAD" "$EZ_SDK_KEY" 1234567890 "bench-$(date +%s%N)" >&2 || return 1
            echo "--api-key $EZ_KEY --bodies $bodies" ;;
        bankezy-reveal)
            local token
            token="$(python3 "$BENCH/bankezy_prep.py" token "$BASE_URL" "$EZ_KEY" "$EZ_SDK_KEY" "$EZ_PAYLOAD" 1234567890)" || return 1
            echo "--sdk-api-key $EZ_SDK_KEY --sdk-token $token --card-id $CARD_ID" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

REPEAT="${BENCH_REPEAT:-1}"
HZ_DURATION="${BENCH_HEALTHZ_DURATION:-5}"
ordered=""
for _ in $(seq 1 "$REPEAT"); do
    for s in $SCENARIOS; do [[ "$s" == healthz ]] || ordered="$ordered healthz $s"; done
done

{
    echo "cardgate benchmark $STAMP  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "database: ${DB_DESC%% (*}  connections: $CONNECTIONS  duration: ${DURATION}s (+${WARMUP}s warm-up), healthz ${HZ_DURATION}s before each  repeats: $REPEAT  loadgen threads: $THREADS  cores: $(nproc)"
} | tee "$SUMMARY" >&2

failed=()
limit=$(( ${DURATION%.*} + ${WARMUP%.*} + 90 ))
for s in $ordered; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "!!! server process is gone before scenario $s" >&2; server_log_tail; failed+=("$s"); break
    fi
    log "scenario $s"
    # shellcheck disable=SC2046  # creds_for output is deliberately word-split
    # Run in the background and `wait`, so a signal to this script is handled at once.
    dur="$DURATION"; wu="$WARMUP"
    if [[ "$s" == healthz ]]; then dur="$HZ_DURATION"; wu=1; fi
    timeout "$limit" "$LOADGEN" --url "$BASE_URL" --scenario "$s" \
        --connections "$CONNECTIONS" --duration "$dur" --warmup "$wu" \
        --threads "$THREADS" --server-pid "$SERVER_PID" --json-out "$RESULTS" \
        $(creds_for "$s") &
    LOADGEN_PID=$!
    rc=0
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    if [[ $rc -ne 0 ]]; then
        echo "!!! scenario $s FAILED (loadgen exit $rc)" >&2
        failed+=("$s")
    fi
done

# One ES256 verification, measured by the loadgen on this machine in the same run (the unit
# of DPoP's cost in the summary).
"$LOADGEN" es256-verify | sed 's/^{/{"scenario":"es256-verify",/' >>"$RESULTS" || failed+=("es256-verify")

# ---------------------------------------------------------------- summary
echo >&2
log "summary (ratios are to the healthz req/s of this run)"
"$LOADGEN" summarize "$RESULTS" | tee -a "$SUMMARY" || true
# BankEzy's primitives, timed in this run with the server's own code: one P-256 agreement
# (a reveal's ECDH-ES) and one public-key validation (a token call's sdkPublicKey check).
P256_COST="$ROOT/target/release/examples/p256_cost"
if [[ -x "$P256_COST" ]]; then
    echo "p256 primitives: $("$P256_COST" 3000)" | tee -a "$SUMMARY"
fi
echo
echo "results: $RESULTS"
echo "summary: $SUMMARY"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "!!! FAILED SCENARIOS: ${failed[*]}" >&2
    server_log_tail
    exit 2
fi

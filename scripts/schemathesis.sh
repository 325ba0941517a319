#!/usr/bin/env bash
# Checks that the served OpenAPI document and the server agree: starts `cardgate serve --demo`
# on a free port with a fresh data folder, then runs schemathesis (PyPI, pinned below) against
# GET /openapi.json with a fixed seed and a bounded number of examples per operation
# (scripts/schemathesis.toml). Fails on any 5xx, any status not documented for its operation,
# any body that does not match its documented schema, any undocumented content type, and any
# documented response header whose value does not match its schema.
#
# Four passes, because schemathesis authenticates an operation with the first security scheme
# it has credentials for, and a card token covers one card: every operation, with HTTP Basic
# (the demo backend's id and secret), the ApiKey header, and a card token minted just before
# (for the redemption routes); the two client-authenticated card routes again with `ApiKey`
# only, and with a `Bearer` access token (of the demo's opaque-token client) only; and
# activation with a token for the inactive demo card. Each pass also sends requests with the
# credential left out or garbled. A fifth pass checks the Treasury Prime route against the
# seed's own OpenAPI document (scripts/openapi/).
#
# Usage: [CARDGATE_BIN=path] [SCHEMATHESIS_HAR=dir] scripts/schemathesis.sh [N | --install-only]
# N is the number of examples per operation and pass (default 500: about 9,000 requests, a
# minute and a half here). CARDGATE_BIN checks that binary instead of building this tree's;
# SCHEMATHESIS_HAR keeps every request and answer of each pass as a HAR file in that folder
# (they hold the demo tenant's credentials).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.32.5
EXAMPLES=500

if [ "$(python3 -c 'import schemathesis; print(schemathesis.__version__)' 2>/dev/null)" != "$VERSION" ]; then
  echo "installing schemathesis $VERSION (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" </dev/null
fi
case "${1:-}" in
  --install-only) exit 0 ;;
  "") ;;
  *) EXAMPLES=$1 ;;
esac

# CARDGATE_BIN: a cardgate binary to check instead of building this tree's.
bin="${CARDGATE_BIN:-target/debug/cardgate}"
[ -n "${CARDGATE_BIN:-}" ] || cargo build --quiet --locked -p cardgate --bin cardgate
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Requests wait up to 10 s for the store, as in the test suite: on a busy 2-core machine an
# fsync can pass production's 1 s, and a 503 then says nothing about the document.
"$bin" serve --demo --listen 127.0.0.1:0 --log-format json --store-wait-ms 10000 \
  --database-url "sqlite://$work/cardgate.db" >"$work/stdout" 2>"$work/log" &
server=$!
# The server logs its address once it listens (it binds before anything else).
port=""
for _ in $(seq 1 600); do
  port=$(sed -n 's/.*"message":"cardgate is listening","addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$work/log")
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; echo "cardgate did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/log" >&2; echo "cardgate did not listen within 60 s" >&2; exit 1; }
base="http://127.0.0.1:$port"

# The demo tenant (crates/cardgate/src/demo.json).
export CG_CLIENT_ID=demo-backend
export CG_CLIENT_SECRET=demo-backend-secret-change-me-0123456789
export CG_API_KEY=demo-backend-api-key-change-me-0123456789
card=e9293471-5eb3-4dbc-916c-dbaf9e2deefd
# One field of the JSON answer to a setup request; a failed request prints its answer.
field() {
  local name=$1 out
  shift
  out=$(curl -sS --fail-with-body "$@") || { echo "setup request failed: $out" >&2; return 1; }
  python3 -c 'import sys,json; print(json.loads(sys.argv[2])[sys.argv[1]])' "$name" "$out"
}
# An opaque access token of the demo's second client (only cards:read:any, its own rate budget).
CG_ACCESS_TOKEN=$(field access_token -u demo-opaque:demo-opaque-secret-change-me-01234567890 \
  -d grant_type=client_credentials "$base/oauth2/token")
# A card token for every operation the active demo card allows, unlimited for an hour, so the
# redemption routes are exercised past authentication.
CG_CARD_TOKEN=$(field token -u "$CG_CLIENT_ID:$CG_CLIENT_SECRET" -H 'Content-Type: application/json' \
  -d '{"operations":["VIEW_CARD","ADD_CARD_TO_WALLET","GET_PIN","SET_PIN"],"single_use":false,"ttl_seconds":3600}' \
  "$base/v1/cards/$card/tokens")
# And one allowing ACTIVATE on the inactive demo card: the first activation succeeds, the
# rest find the card active.
CG_ACTIVATION_TOKEN=$(field token -u "$CG_CLIENT_ID:$CG_CLIENT_SECRET" -H 'Content-Type: application/json' \
  -d '{"operations":["ACTIVATE"],"single_use":false,"ttl_seconds":3600}' \
  "$base/v1/cards/0b3f1c9e-55c4-4a8e-9d3e-8c1f2a7b6d10/tokens")
export CG_ACCESS_TOKEN CG_CARD_TOKEN CG_ACTIVATION_TOKEN

basic='[auth.openapi.basic]
username = "${CG_CLIENT_ID}"
password = "${CG_CLIENT_SECRET}"'
apikey='[auth.openapi.apiKey]
api_key = "ApiKey ${CG_API_KEY}"'
equals='[auth.openapi.equalsApiKey]
api_key = "ApiKey ${CG_API_KEY}"'
bearer='[auth.openapi.bearer]
bearer = "${CG_ACCESS_TOKEN}"'
synctera='[auth.openapi.syncteraApiKey]
bearer = "${CG_API_KEY}"'
seedsynctera='[auth.openapi.bearerAuth]
bearer = "${CG_API_KEY}"'
cardtoken='[auth.openapi.cardToken]
bearer = "${CG_CARD_TOKEN}"'
activation='[auth.openapi.cardToken]
bearer = "${CG_ACTIVATION_TOKEN}"'

status=0
run_pass() {
  local name=$1 auth=$2
  shift 2
  printf '%s\n\n%s\n' "$(cat scripts/schemathesis.toml)" "$auth" >"$work/$name.toml"
  echo "==> schemathesis: $name"
  local start=$SECONDS
  if [ -n "${SCHEMATHESIS_HAR:-}" ]; then
    set -- "$@" --report har --report-har-path "$SCHEMATHESIS_HAR/$name.har" --output-sanitize false
  fi
  # A hung server cannot hold the step: each pass gets at most ten minutes.
  if ! timeout 600 schemathesis --config-file "$work/$name.toml" run "$base/openapi.json" \
      --max-examples "$EXAMPLES" --no-color "$@"; then
    status=1
  fi
  echo "==> schemathesis: $name took $((SECONDS - start)) s"
}

card_client_routes='^/v1/(cards/\{card_id\}/tokens|persons/\{person_id\}/mfa/sessions)$'
run_pass "every-operation" "$basic
$apikey
$equals
$bearer
$synctera
$cardtoken"
run_pass "card-routes-with-an-api-key" "$apikey" --include-path-regex "$card_client_routes"
run_pass "card-routes-with-an-access-token" "$bearer" --include-path-regex "$card_client_routes"
run_pass "activation" "$activation" --include-path '/v1/cards/{card_id}/activate'

# The Synctera dialect's answers against the seed's own OpenAPI document (scripts/openapi/).
run_seed_pass() {
  local name=$1 doc=$2 url=$3 auth=$4
  printf '%s\n\n%s\n' "$(cat scripts/schemathesis.toml)" "$auth" >"$work/$name.toml"
  echo "==> schemathesis: $name (seed document $doc)"
  if ! timeout 600 schemathesis --config-file "$work/$name.toml" run "$doc" --url "$url" \
      --max-examples "$EXAMPLES" --no-color; then
    status=1
  fi
}
run_seed_pass "synctera-seed" scripts/openapi/synctera-widget-token.yaml "$base/synctera/v1" "$seedsynctera"
# The Treasury Prime route against the seed's own document (scripts/openapi/), with the base
# URL a Treasury Prime client would set. That document describes only the 200 answer, so only
# server errors and schema disagreements of documented answers count in this pass.
cat >"$work/treasury-prime-seed.toml" <<TOML
seed = 20261201
workers = 1
continue-on-failure = true
request-timeout = 30

[checks]
enabled = false
not_a_server_error = { enabled = true }
response_schema_conformance = { enabled = true }

[cache]
enabled = false

[generation]
database = "none"

[dictionaries.persons]
values = ["775596ae-2624-40af-a9dc-9756110a4a04"]

[parameters]
"path.id" = { dictionary = "persons", probability = 0.7 }

[auth.openapi.basicAuth]
username = "\${CG_CLIENT_ID}"
password = "\${CG_CLIENT_SECRET}"

[auth.openapi.apiKey]
bearer = "\${CG_API_KEY}"
TOML
echo "==> schemathesis: treasury-prime-seed"
if ! timeout 600 schemathesis --config-file "$work/treasury-prime-seed.toml" run \
    scripts/openapi/treasury-prime-uxt-access-token.yaml --url "$base/treasuryprime" \
    --max-examples "$EXAMPLES" --no-color; then
  status=1
fi

if [ "$status" -ne 0 ]; then
  echo "schemathesis found disagreements between /openapi.json and the server (see above)" >&2
fi
exit "$status"

#!/usr/bin/env bash
# The test command (README): every crate's unit tests and the one integration-test binary,
# SQLite always and PostgreSQL when CARDGATE_TEST_POSTGRES_URL is set (CI sets it and then
# requires it). Needs python3 with jwcrypto for the JWE client-side checks, and for the widget
# test Debian's chromium and tests/browser/node_modules (`npm ci` there; .ci/run does both).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARDGATE_TEST_POSTGRES_URL="${CARDGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# The JWE checks decrypt with a real JOSE library on the client side.
if ! python3 -c 'import jwcrypto' 2>/dev/null; then
  echo "installing the python3 module jwcrypto (client-side JOSE checks)" >&2
  python3 -m pip install --quiet --disable-pip-version-check jwcrypto </dev/null || {
    echo "python3 -m pip install jwcrypto failed; the JWE tests need it" >&2
    exit 1
  }
fi
# Unit and integration tests (there are no doc tests), then one total line.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"

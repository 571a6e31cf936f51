#!/usr/bin/env bash
# The whole test suite: lint, types, tests on SQLite and on a local PostgreSQL server.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export GX_ANALYTICS_ENABLED=false
export PYTHONHASHSEED=0
export MPLBACKEND=Agg

# PostgreSQL on loopback for the records tests (skipped with a notice when not available).
if [ -z "${WORKBENCH_TEST_PG_URL:-}" ] && url=$(bash scripts/pg_test_server.sh 2>/dev/null | tail -n 1); then
  case "$url" in
    postgresql+psycopg://*) export WORKBENCH_TEST_PG_URL="$url" ;;
    *) echo "PostgreSQL test server gave no usable URL: '$url'" >&2 ;;
  esac
fi
echo "PostgreSQL for tests: ${WORKBENCH_TEST_PG_URL:-none (PostgreSQL tests will be skipped)}"

"$VENV/bin/ruff" check workbench tests benchmarks
"$VENV/bin/ruff" format --check workbench tests benchmarks
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=25 "$@"

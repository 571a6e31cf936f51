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

# A local Ray cluster (head, two CPU slots) for the Ray executor tests, stopped on exit;
# the stop is chained in front of any EXIT trap set above.
if [ -z "${WORKBENCH_TEST_RAY_ADDRESS:-}" ] && [ -x "$VENV/bin/ray" ]; then
  if ray_out=$(VENV="$VENV" bash scripts/ray_test_cluster.sh start 2>/dev/null); then
    export WORKBENCH_TEST_RAY_ADDRESS=$(echo "$ray_out" | sed -n 1p)
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    ray_dir=$(echo "$ray_out" | sed -n 2p)
    ray_prev_trap=""
    if [ -n "$(trap -p EXIT)" ]; then eval "set -- $(trap -p EXIT)"; ray_prev_trap=$3; set --; fi
    trap "VENV='$VENV' bash scripts/ray_test_cluster.sh stop '$ray_dir' >/dev/null 2>&1 || true; ${ray_prev_trap}" EXIT
  else
    echo "Ray test cluster did not start" >&2
  fi
fi
echo "Ray cluster for tests: ${WORKBENCH_TEST_RAY_ADDRESS:-none (Ray executor tests will be skipped)}"

# Orthanc with its DICOMweb plugin on loopback for the PACS tests, stopped on exit (chained
# in front of any EXIT trap set above); without it tests/dicomweb start their own or skip.
if [ -z "${WORKBENCH_TEST_ORTHANC_URL:-}" ] && orthanc_env=$(bash scripts/orthanc_test_server.sh start 2>/dev/null); then
  eval "$orthanc_env"
  export WORKBENCH_TEST_ORTHANC_URL WORKBENCH_TEST_ORTHANC_USER WORKBENCH_TEST_ORTHANC_PASSWORD WORKBENCH_TEST_ORTHANC_DIR
  export WORKBENCH_TEST_ORTHANC_DIMSE
  orthanc_prev_trap=""
  if [ -n "$(trap -p EXIT)" ]; then eval "set -- $(trap -p EXIT)"; orthanc_prev_trap=$3; set --; fi
  trap "bash scripts/orthanc_test_server.sh stop '$WORKBENCH_TEST_ORTHANC_DIR' --purge >/dev/null 2>&1 || true; ${orthanc_prev_trap}" EXIT
fi
echo "Orthanc for tests: ${WORKBENCH_TEST_ORTHANC_URL:-none (DICOMweb tests start their own or are skipped)}"

"$VENV/bin/ruff" check workbench tests benchmarks
"$VENV/bin/ruff" format --check workbench tests benchmarks
"$VENV/bin/mypy"
# Two workers; every test file stays on one worker (its module fixtures, servers and scratch
# folders are its own), and files are handed out in collection order, which starts the
# longest modules first (tests/conftest.py). WORKBENCH_TEST_WORKERS=0 runs the suite in one
# process.
workers=${WORKBENCH_TEST_WORKERS:-2}
if [ "$workers" -gt 0 ]; then
  set -- -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=25 "$@"

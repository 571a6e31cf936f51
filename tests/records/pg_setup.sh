#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster (loopback only) and create the test role.
# Idempotent: safe to run again. Prints the URL to export as WORKBENCH_TEST_PG_URL.
set -euo pipefail
VERSION="${PG_VERSION:-15}"
CLUSTER="${PG_CLUSTER:-main}"
ROLE="${WORKBENCH_PG_ROLE:-wb}"
PASSWORD="${WORKBENCH_PG_PASSWORD:-wb}"
PORT="${PG_PORT:-5432}"
as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else su postgres -c "$(printf '%q ' "$@")"; fi
}
CONF="/etc/postgresql/${VERSION}/${CLUSTER}/postgresql.conf"
if [ -w "$CONF" ] && ! grep -q "^listen_addresses = '127.0.0.1'" "$CONF"; then
  echo "listen_addresses = '127.0.0.1'" >> "$CONF"
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
  pg_ctlcluster "$VERSION" "$CLUSTER" start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
if ! as_postgres psql -p "$PORT" -tAc "SELECT 1 FROM pg_roles WHERE rolname='${ROLE}'" | grep -q 1; then
  as_postgres psql -p "$PORT" -c "CREATE ROLE ${ROLE} LOGIN SUPERUSER PASSWORD '${PASSWORD}'"
fi
echo "postgresql+psycopg://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/postgres"

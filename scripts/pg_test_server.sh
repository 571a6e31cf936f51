#!/usr/bin/env bash
# Start the Debian PostgreSQL cluster on loopback and print a SQLAlchemy URL for a test role.
# Only the URL goes to stdout; everything the PostgreSQL tools say goes to stderr.
set -euo pipefail
exec 3>&1 1>&2
command -v pg_lsclusters >/dev/null || exit 1
ver=$(pg_lsclusters -h | awk 'NR==1{print $1}')
[ -n "$ver" ] || exit 1
# fd 3 (the real stdout) is closed for these so that no daemon keeps the caller's pipe open.
run_as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1" 3>&-; else sudo -u postgres sh -c "$1" 3>&-; fi; }
if ! pg_lsclusters -h | awk 'NR==1{print $4}' | grep -q online; then
  if [ "$(id -u)" -eq 0 ]; then pg_ctlcluster "$ver" main start 3>&-; else sudo pg_ctlcluster "$ver" main start 3>&-; fi
fi
port=$(pg_lsclusters -h | awk 'NR==1{print $3}')
run_as_pg "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='wb_test'\"" | grep -q 1 ||
  run_as_pg "psql -p $port -qc \"CREATE ROLE wb_test LOGIN SUPERUSER PASSWORD 'wb_test'\"" >/dev/null
echo "postgresql+psycopg://wb_test:wb_test@127.0.0.1:${port}/postgres" >&3

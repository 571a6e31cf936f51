#!/usr/bin/env bash
# Restore a backup written by scripts/backup.sh.
#
#   scripts/restore.sh BACKUP_DIR --workdir DIR [--db URL]
#
# Checks every file of the backup against SHA256SUMS, then unpacks the workdir into DIR
# (which must be empty or absent) and restores the database: SQLite into DIR/workbench.db
# (or the file of a sqlite:/// --db URL), PostgreSQL with pg_restore into the (empty)
# database of --db / $WORKBENCH_DB_URL. The database records hold absolute paths into the
# workdir: restore to the same path (mount the replacement storage where the old one was).
# Afterwards run `workbench audit verify`, `workbench testset verify NAME` and
# `workbench report verify FILE.pdf` to prove the restored installation intact.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: restore.sh BACKUP_DIR --workdir DIR [--db URL]"
backup=${1:-}
[ -n "$backup" ] && [ "${backup#--}" = "$backup" ] || { echo "$usage" >&2; exit 2; }
shift
workdir="" db="${WORKBENCH_DB_URL:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) workdir=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ -n "$workdir" ] || { echo "$usage" >&2; exit 2; }
[ -f "$backup/SHA256SUMS" ] || { echo "error: expected a backup (with SHA256SUMS) in $backup; found none" >&2; exit 1; }
(cd "$backup" && sha256sum --check --quiet SHA256SUMS) ||
  { echo "error: the backup in $backup is damaged (checksum mismatch); nothing was restored" >&2; exit 1; }
if [ -e "$workdir" ] && [ -n "$(ls -A "$workdir")" ]; then
  echo "error: expected an empty or absent workdir at $workdir; found files there" >&2
  exit 1
fi
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$(dirname "$workdir")"
workdir=$(cd "$(dirname "$workdir")" && pwd)/$(basename "$workdir")
[ -n "$db" ] || db="sqlite:///$workdir/workbench.db"

# Every check of the target database comes before anything is written.
if [ -f "$backup/database.sqlite" ]; then
  case "$db" in
    sqlite*) ;;
    *) echo "error: the backup holds a SQLite database; expected a sqlite URL, found '${db%%:*}:...'" >&2; exit 1 ;;
  esac
  target=$("$PYTHON" -c 'import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).database)' "$db")
  [ ! -e "$target" ] || { echo "error: $target already exists; not overwritten" >&2; exit 1; }
elif [ -f "$backup/database.dump" ]; then
  case "$db" in
    postgresql*) ;;
    *) echo "error: the backup holds a PostgreSQL dump; expected a postgresql URL, found '${db%%:*}:...'" >&2; exit 1 ;;
  esac
  command -v pg_restore >/dev/null || { echo "error: pg_restore is needed for a PostgreSQL backup" >&2; exit 1; }
  # Restoring into a database that holds tables would mix two installations' records.
  "$PYTHON" - "$db" <<'EOF'
import sys

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

url = make_url(sys.argv[1])
engine = create_engine(url)
try:
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
finally:
    engine.dispose()
if tables:
    raise SystemExit(
        f"error: expected an empty database at {url.render_as_string(hide_password=True)}; "
        f"found {len(tables)} table(s) ({', '.join(tables[:5])}, ...). Restore into a newly "
        "created database."
    )
EOF
else
  echo "error: expected database.sqlite or database.dump in $backup; found neither" >&2
  exit 1
fi

umask 077
mkdir -p "$workdir"
tar -C "$workdir" -xzf "$backup/workdir.tar.gz"
if [ -f "$backup/database.sqlite" ]; then
  cp "$backup/database.sqlite" "$target"
else
  pg_restore --no-owner --exit-on-error --dbname="${db/+psycopg/}" "$backup/database.dump"
fi
echo "restored $backup into $workdir"

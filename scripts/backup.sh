#!/usr/bin/env bash
# Back up a Validation Workbench installation: its database and its workdir.
#
#   scripts/backup.sh --workdir DIR [--db URL] --out BACKUP_DIR
#
# Writes into BACKUP_DIR (created; must not exist yet):
#   database.sqlite   SQLite: a consistent online copy (Python's sqlite3 backup API)
#   database.dump     PostgreSQL: pg_dump in custom format (restore with pg_restore)
#   workdir.tar.gz    the workdir (models, reports, runs, keys, ...) without the SQLite files
#   backup.json       what was backed up, when, and from where
#   SHA256SUMS        SHA-256 of each file above (checked by restore.sh)
#
# The database is copied first, then the files: every file a database record points to
# was written before its record was committed, so the copy never names a missing file.
# The database URL defaults to $WORKBENCH_DB_URL, else SQLite DIR/workbench.db. Test sets
# imported from folders outside the workdir are referenced by path, not copied: back up
# the storage they live on as well (testset verify proves them unchanged after a restore).
# The files include the signing keys (DIR/keys): keep backups as protected as the server.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
workdir="" db="${WORKBENCH_DB_URL:-}" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) workdir=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: backup.sh --workdir DIR [--db URL] --out BACKUP_DIR" >&2; exit 2 ;;
  esac
done
[ -n "$workdir" ] && [ -n "$out" ] || { echo "usage: backup.sh --workdir DIR [--db URL] --out BACKUP_DIR" >&2; exit 2; }
[ -d "$workdir" ] || { echo "error: expected a workdir at $workdir; found none" >&2; exit 1; }
[ ! -e "$out" ] || { echo "error: $out already exists; choose a new backup folder" >&2; exit 1; }
workdir=$(cd "$workdir" && pwd)
[ -n "$db" ] || db="sqlite:///$workdir/workbench.db"
umask 077
mkdir -p "$out"

case "$db" in
  sqlite*)
    kind=sqlite
    "$PYTHON" - "$db" "$out/database.sqlite" <<'EOF'
import sqlite3
import sys

from sqlalchemy.engine import make_url

source_path = make_url(sys.argv[1]).database
source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
target = sqlite3.connect(sys.argv[2])
try:
    source.backup(target)  # a consistent snapshot, even while the app is writing
    (status,) = target.execute("PRAGMA integrity_check").fetchone()
    if status != "ok":
        raise SystemExit(f"error: the copied database fails its integrity check: {status}")
finally:
    source.close()
    target.close()
EOF
    ;;
  postgresql*)
    kind=postgresql
    command -v pg_dump >/dev/null || { echo "error: pg_dump is needed for a PostgreSQL database" >&2; exit 1; }
    pg_dump --format=custom --no-owner --file="$out/database.dump" "${db/+psycopg/}"
    ;;
  *) echo "error: expected a sqlite or postgresql database URL; found '${db%%:*}:...'" >&2; exit 1 ;;
esac

tar -C "$workdir" --exclude='./workbench.db' --exclude='./workbench.db-wal' \
  --exclude='./workbench.db-shm' --exclude='./workbench.db-journal' -czf "$out/workdir.tar.gz" .

"$PYTHON" - "$out/backup.json" "$kind" "$workdir" <<'EOF'
import datetime
import json
import sys

from workbench import __version__

path, kind, workdir = sys.argv[1:4]
info = {
    "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "database": kind,
    "workdir": workdir,
    "workbench_version": __version__,
}
with open(path, "w", encoding="utf-8") as handle:
    json.dump(info, handle, indent=2, sort_keys=True)
EOF
(cd "$out" && sha256sum -- * >SHA256SUMS)
echo "backup of $workdir ($kind database) written to $out"

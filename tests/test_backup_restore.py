"""scripts/backup.sh and scripts/restore.sh: a restored installation verifies end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_MALFORMED = str(Path(__file__).resolve().parent / "malformed")
if _MALFORMED not in sys.path:
    sys.path.insert(0, _MALFORMED)

import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**harness.env(), "PYTHON": sys.executable},
    )


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    """A workbench with a completed run and a signed, sealed report."""
    from workbench.services import reports

    pipe = harness.build(tmp_path_factory.mktemp("backup") / "wb", stage="signed")
    wb = harness.open_wb(pipe.workdir)
    try:
        info = reports.seal_report(wb, harness.login(wb, "qa1"), pipe.report_uid)
    finally:
        wb.close()
    pipe.extra["sealed_pdf"] = info.sealed_path
    return pipe


@pytest.mark.slow
def test_restored_installation_passes_every_verification(
    sealed: harness.Pipeline, tmp_path: Path
) -> None:
    pipe = harness.copy_workdir(sealed, tmp_path / "wb")
    pdf = Path(str(sealed.extra["sealed_pdf"]).replace(str(sealed.workdir), str(pipe.workdir)))
    counts = harness.table_counts(pipe.workdir)
    backup = tmp_path / "backup"
    made = _script("backup.sh", "--workdir", str(pipe.workdir), "--out", str(backup))
    assert made.returncode == 0, made.stderr
    info = json.loads((backup / "backup.json").read_text())
    assert info["database"] == "sqlite" and info["workdir"] == str(pipe.workdir)

    # The machine is lost: the workdir goes away and is restored at the same place.
    shutil.move(pipe.workdir, tmp_path / "lost")
    restored = _script("restore.sh", str(backup), "--workdir", str(pipe.workdir))
    assert restored.returncode == 0, restored.stderr
    assert harness.table_counts(pipe.workdir) == counts
    assert pdf.is_file()

    checks = [
        harness.cli(pipe.workdir, "audit", "verify"),
        harness.cli(pipe.workdir, "testset", "verify", harness.TEST_SET, user="qa1"),
        harness.cli(pipe.workdir, "report", "verify", str(pdf)),
        harness.cli(pipe.workdir, "model", "verify", pipe.model_ref),
    ]
    for check in checks:
        assert check.returncode == 0, (check.args, check.stdout, check.stderr)


@pytest.mark.slow
def test_damaged_backup_and_occupied_target_are_refused(
    sealed: harness.Pipeline, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    assert (
        _script("backup.sh", "--workdir", str(sealed.workdir), "--out", str(backup)).returncode == 0
    )
    again = _script("backup.sh", "--workdir", str(sealed.workdir), "--out", str(backup))
    assert again.returncode == 1 and "already exists" in again.stderr

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    refused = _script("restore.sh", str(backup), "--workdir", str(occupied))
    assert refused.returncode == 1 and "expected an empty or absent workdir" in refused.stderr

    archive = backup / "workdir.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    damaged = _script("restore.sh", str(backup), "--workdir", str(tmp_path / "new"))
    assert damaged.returncode == 1 and "damaged" in damaged.stderr
    assert not (tmp_path / "new").exists()


PG_URL = os.environ.get("WORKBENCH_TEST_PG_URL")


def _pg_counts(url: str) -> dict[str, int]:
    """Row count of every table of a PostgreSQL database."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {
                n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names
            }
    finally:
        engine.dispose()


@pytest.fixture
def pg_database() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL database of its own on the test server, and a function that drops
    and re-creates it empty (the database server lost, a new one provisioned)."""
    if not PG_URL:
        pytest.skip("WORKBENCH_TEST_PG_URL is not set (see scripts/pg_test_server.sh)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"wb_backup_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")

    def recreate() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))

    recreate()
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False), recreate
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
def test_postgresql_backup_restores_an_installation_that_verifies(
    pg_database: tuple[str, Callable[[], None]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pg_dump / pg_restore on the real PostgreSQL test server: the database and the
    workdir are lost and restored; every verification passes and no row is missing."""
    from workbench.services import reports

    url, recreate = pg_database
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    pipe = harness.build(tmp_path / "wb", stage="signed")
    wb = harness.open_wb(pipe.workdir)
    try:
        pdf = reports.seal_report(wb, harness.login(wb, "qa1"), pipe.report_uid).sealed_path
    finally:
        wb.close()
    assert pdf is not None
    counts = _pg_counts(url)
    assert counts["audit_log"] > 0

    backup = tmp_path / "backup"
    made = _script("backup.sh", "--workdir", str(pipe.workdir), "--db", url, "--out", str(backup))
    assert made.returncode == 0, made.stderr
    assert json.loads((backup / "backup.json").read_text())["database"] == "postgresql"
    assert (backup / "database.dump").is_file() and not (backup / "database.sqlite").exists()

    # The database server and the workdir are lost; a new, empty database is provisioned.
    recreate()
    assert _pg_counts(url) == {}
    shutil.move(pipe.workdir, tmp_path / "lost")
    restored = _script("restore.sh", str(backup), "--workdir", str(pipe.workdir), "--db", url)
    assert restored.returncode == 0, restored.stderr
    assert _pg_counts(url) == counts
    assert Path(pdf).is_file()

    db = {"WORKBENCH_DB_URL": url}
    checks = [
        harness.cli(pipe.workdir, "audit", "verify", env=db),
        harness.cli(pipe.workdir, "testset", "verify", harness.TEST_SET, user="qa1", env=db),
        harness.cli(pipe.workdir, "report", "verify", str(pdf), env=db),
        harness.cli(pipe.workdir, "model", "verify", pipe.model_ref, env=db),
    ]
    for check in checks:
        assert check.returncode == 0, (check.args, check.stdout, check.stderr)

    # A restore never lands on a database that already holds records.
    again = _script("restore.sh", str(backup), "--workdir", str(tmp_path / "second"), "--db", url)
    assert again.returncode == 1 and "expected an empty database" in again.stderr, again.stderr
    assert not (tmp_path / "second").exists()  # refused before anything was unpacked

"""A database written by release 0.1 opens, upgrades and reads with the current release."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from workbench.protocols import RunResults
from workbench.services import accounts, runs
from workbench.services.context import Workbench
from workbench.vocabulary import Verdict

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
QA = ("qa1", "Quill-Maple-2026!")
AUDITOR = ("aud", "Ledger-Mint-2026!")


@pytest.fixture()
def legacy_workdir(tmp_path: Path) -> Path:
    workdir = tmp_path / "wb"
    workdir.mkdir()
    with gzip.open(LEGACY / "workbench-0.1-classification.db.gz") as source:
        with open(workdir / "workbench.db", "wb") as target:
            shutil.copyfileobj(source, target)
    return workdir


def test_release_0_1_database_upgrades_and_its_run_reads_as_typed_results(
    legacy_workdir: Path,
) -> None:
    stored = json.loads((LEGACY / "run-results-v1-classification.json").read_text())
    with sqlite3.connect(legacy_workdir / "workbench.db") as con:
        (before,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
        (raw,) = con.execute("SELECT results FROM runs").fetchone()
    assert before == "0001"
    assert json.loads(raw) == stored

    wb = Workbench.open(legacy_workdir)
    try:
        for username, password in (QA, AUDITOR):
            actor = accounts.login(wb, username, password)
            (summary,) = runs.list_runs(wb, actor)
            assert summary.status == "completed"
            assert summary.results is not None and summary.results.schema_version == 1
            # Release 0.1 stored a not-passing run as 'fail'; it still reads as FAIL.
            assert summary.verdict is Verdict.FAIL
            assert summary.results == RunResults.from_dict(stored)
            assert summary.n_cases == stored["accounting"]["n_cases"]
            assert [e.endpoint_id for e in summary.endpoints] == [
                e["endpoint_id"] for e in stored["evaluation"]["endpoints"]
            ]
    finally:
        wb.close()
    with sqlite3.connect(legacy_workdir / "workbench.db") as con:
        (after,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
        (raw_after, sha) = con.execute("SELECT results, results_sha256 FROM runs").fetchone()
    assert after != "0001"
    # The stored record is never rewritten: its bytes and signed hash are those of release 0.1.
    assert raw_after == raw
    assert sha

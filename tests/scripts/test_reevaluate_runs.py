"""``scripts/reevaluate_runs.py``: stored runs re-derived by this release, and compared with 0.1."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "legacy"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reevaluate_runs", ROOT / "scripts" / "reevaluate_runs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def legacy_workdir(tmp_path: Path) -> Path:
    """The release-0.1 installation, its test set's labels where its record now points.

    The database names the test set's folder on the machine that built it; the copy
    points it at a folder of this test holding the locked labels file (checked against
    the SHA-256 the 0.1 lock recorded). The 0.1 database has no trigger on
    ``test_sets``; the audit trail is not touched.
    """
    workdir = tmp_path / "wb"
    workdir.mkdir()
    with gzip.open(LEGACY / "workbench-0.1-classification.db.gz") as source:
        with open(workdir / "workbench.db", "wb") as target:
            shutil.copyfileobj(source, target)
    root = tmp_path / "wb-set"
    (root / "reference").mkdir(parents=True)
    shutil.copyfile(LEGACY / "rel-set-labels.csv", root / "reference" / "labels.csv")
    with contextlib.closing(sqlite3.connect(workdir / "workbench.db")) as db, db:
        [(manifest,)] = db.execute("SELECT manifest_json FROM test_sets").fetchall()
        db.execute("UPDATE test_sets SET root_path = ?", (str(root),))
    locked = json.loads(manifest)["entries"]["reference/labels.csv"]
    assert hashlib.sha256((root / "reference" / "labels.csv").read_bytes()).hexdigest() == locked
    return workdir


def test_release_0_1_run_is_re_derived_identically(
    legacy_workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _script().reevaluate(legacy_workdir) == 0
    assert "identical" in capsys.readouterr().out


def test_comparison_with_results_of_an_earlier_release(
    legacy_workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    stored = json.loads((LEGACY / "run-results-v1-classification.json").read_text())
    (earlier / "run-results-v1-classification.json").write_text(json.dumps(stored))
    assert script.compare_with_earlier(legacy_workdir, earlier) == 0
    out = capsys.readouterr().out
    assert "run-results-v1-classification.json" in out and "identical" in out

    # A changed figure in the earlier results is reported as a difference.
    first = next(e for e in stored["evaluation"]["endpoints"] if e["estimate"])
    first["estimate"]["value"] = float(first["estimate"]["value"]) + 0.01
    (earlier / "run-results-v1-classification.json").write_text(json.dumps(stored))
    assert script.compare_with_earlier(legacy_workdir, earlier) == 1
    assert f"{first['endpoint_id']}:" in capsys.readouterr().out

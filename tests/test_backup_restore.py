"""scripts/backup.sh and scripts/restore.sh: a restored installation verifies end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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

"""Malformed DICOM inputs: each is caught with a specific, clear error and no side effects.

The corpus comes from ``tests/malformed/generate_corpus.py``. Every case is fed to
``index_folder`` and ``testsets.import_test_set`` (the files are recorded as
unreadable with a reason, one audit entry, nothing else); ``load`` cases are also
fed to ``load_series``, which must raise the workbench's own error naming the file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import generate_corpus as corpus
import harness
import pytest

from workbench import errors
from workbench.dicom.index import index_folder
from workbench.dicom.volume import load_series
from workbench.quality import run_quality_checks
from workbench.services import testsets

CASES = {c.name: c for c in corpus.DICOM_CASES}

#: Cases whose current behaviour is a product defect (see the xfail reasons).
DEFECTS: dict[str, str] = {}


def _mark(name: str) -> object:
    if name in DEFECTS:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=DEFECTS[name]))
    return name


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dicom-corpus")
    corpus.write_dicom_corpus(out)
    return out


@pytest.fixture(scope="module")
def workbench_with_team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    wb = harness.open_wb(tmp_path_factory.mktemp("malformed-wb") / "wb")
    harness.make_accounts(wb)
    yield wb
    wb.close()


def test_corpus_has_at_least_thirty_cases() -> None:
    protocols = corpus.protocol_cases(harness.protocol_text())
    assert len(corpus.DICOM_CASES) + len(protocols) + len(corpus.MODEL_CASE_NAMES) >= 30


def _reasons(index: object) -> list[str]:
    return [str(r) for r in index.unreadable["reason"]]  # type: ignore[attr-defined]


INDEX_CASES = [n for n, c in CASES.items() if c.stage == "index"]


@pytest.mark.parametrize("name", [_mark(n) for n in INDEX_CASES])
def test_unreadable_file_is_listed_with_its_reason(name: str, corpus_dir: Path) -> None:
    case = CASES[name]
    index = index_folder(corpus_dir / name, workers=1)
    assert len(index.files) == 0, f"{name}: accepted as DICOM: {index.files['path'].tolist()}"
    reasons = _reasons(index)
    assert len(reasons) == 1 and re.search(case.expect, reasons[0]), reasons


@pytest.mark.parametrize("name", [_mark(n) for n in INDEX_CASES])
def test_import_records_unreadable_file_without_side_effects(
    name: str, corpus_dir: Path, workbench_with_team: object
) -> None:
    wb = workbench_with_team
    qa = harness.login(wb, "qa1")
    before = _audit_count(wb)
    info = testsets.import_test_set(wb, qa, corpus_dir / name, name=f"imp-{name}", workers=1)
    assert (info.n_dicom, info.n_unreadable, info.status) == (0, 1, "draft")
    assert _audit_count(wb) == before + 1  # exactly one import entry
    with pytest.raises(errors.QualityGateError):
        testsets.lock_test_set(wb, qa, f"imp-{name}", password=harness.ACCOUNTS["qa1"][2])


def _audit_count(wb: object) -> int:
    from sqlalchemy import func, select

    from workbench.records.models import AuditEntry

    with wb.transaction(readonly=True) as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(AuditEntry)))


LOAD_CASES = [n for n, c in CASES.items() if c.stage == "load"]


@pytest.mark.parametrize("name", [_mark(n) for n in LOAD_CASES])
def test_load_series_raises_a_clear_error(name: str, corpus_dir: Path) -> None:
    case = CASES[name]
    folder = corpus_dir / name
    paths = sorted(folder.rglob("*.dcm"))
    with pytest.raises(errors.WorkbenchError) as caught:
        load_series(paths)
    assert re.fullmatch(case.error, type(caught.value).__name__), repr(caught.value)
    message = str(caught.value)
    assert re.search(case.expect, message, re.IGNORECASE), message
    assert str(folder) in message, f"the error should name the file: {message}"


def test_enormous_dimensions_do_not_allocate(corpus_dir: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(errors.DicomReadError):
        load_series(sorted((corpus_dir / "enormous_declared_dimensions").glob("*.dcm")))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500, f"reading an 8 GiB declared matrix grew memory by {grown_mib:.0f} MiB"


def test_duplicate_sop_instance_uid_blocks_the_lock(corpus_dir: Path) -> None:
    folder = corpus_dir / "duplicate_sop_uid"
    index = index_folder(folder, workers=1)
    report = run_quality_checks(folder, index)
    text = " ".join(f"{f.check} {f.message}" for f in report.findings)
    assert re.search(CASES["duplicate_sop_uid"].expect, text, re.IGNORECASE), text
    assert report.blocking


@pytest.mark.parametrize(
    "name",
    [
        _mark(n)
        for n in (
            "deep_folders",
            "odd_characters_in_names",
            "non_utf8_file_name",
            "non_utf8_header_strings",
        )
    ],
)
def test_odd_layouts_and_names_are_indexed_and_imported(
    name: str, corpus_dir: Path, workbench_with_team: object
) -> None:
    case = CASES[name]
    index = index_folder(corpus_dir / name, workers=1)
    every = [*index.files["path"], *index.unreadable["path"]]
    assert any(re.search(case.expect, p) for p in every), every
    qa = harness.login(workbench_with_team, "qa1")
    info = testsets.import_test_set(
        workbench_with_team, qa, corpus_dir / name, name=f"odd-{name}", workers=1
    )
    assert info.n_files == len(every)
    # Whatever the header holds, what is stored is valid text.
    stored = testsets.get_test_set(workbench_with_team, f"odd-{name}")
    assert stored.n_files == info.n_files


def test_link_loops_are_skipped_not_followed(corpus_dir: Path) -> None:
    index = index_folder(corpus_dir / "link_loop", workers=1)
    assert sorted(index.files["path"]) == ["series/0000.dcm", "series/0001.dcm"]
    reasons = " ".join(index.skipped["reason"])
    assert re.search(CASES["link_loop"].expect, reasons)


def test_import_of_a_missing_folder_writes_nothing(
    tmp_path: Path, workbench_with_team: object
) -> None:
    qa = harness.login(workbench_with_team, "qa1")
    before = _audit_count(workbench_with_team)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        testsets.import_test_set(workbench_with_team, qa, tmp_path / "nope", name="nope", workers=1)
    assert _audit_count(workbench_with_team) == before
    assert "nope" not in {t.name for t in testsets.list_test_sets(workbench_with_team)}


def test_cli_import_of_corrupt_folder_reports_unreadable_files(
    tmp_path: Path, corpus_dir: Path
) -> None:
    folder = tmp_path / "mixed"
    for name in ("empty", "not_dicom", "truncated_pixel_data", "random_bytes"):
        shutil.copytree(corpus_dir / name, folder, dirs_exist_ok=True)
    workdir = tmp_path / "wb"
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    wb.close()
    done = harness.cli(workdir, "testset", "import", str(folder), "--name", "mixed", user="qa1")
    assert done.returncode == 0, done.stderr
    assert "0 DICOM, 4 unreadable" in done.stdout
    assert "Traceback" not in done.stderr

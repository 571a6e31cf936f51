"""Finding identity: one finding per problem, one identifier per finding.

A waiver names a finding by its identifier, so two findings must never share one.
The real-world folder (pydicom's test files and ``pydicom-data``, gathered as in
``tests/dicom/test_real_files.py``) holds files without Pixel Spacing and several
series in one folder: both once gave duplicate identifiers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom.data
import pytest

from workbench.dicom.index import DicomIndex, index_folder
from workbench.quality import Finding, QualityReport, Severity, finding_id, run_quality_checks
from workbench.quality.expectations import PIXEL_SPACING_RANGE, pixel_spacing_pair

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
PIXEL_SPACING = "PixelSpacing (0028,0030)"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DicomIndex]:
    data_store = pytest.importorskip("data_store", reason="pydicom-data (dev extra) not installed")
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(PYDICOM_FILES, root / "pydicom")
    shutil.copytree(Path(data_store.__file__).parent / "data", root / "pydicom-data")
    return root, index_folder(root, workers=1)


@pytest.fixture(scope="module")
def mixed(real: tuple[Path, DicomIndex]) -> QualityReport:
    return run_quality_checks(real[0], real[1], suite="mixed-test-set-v1")


def _duplicates(report: QualityReport) -> dict[str, int]:
    return {k: n for k, n in Counter(f.id for f in report.findings).items() if n > 1}


def test_every_finding_id_of_the_real_folder_is_unique(mixed: QualityReport) -> None:
    assert len(mixed.findings) > 2000
    assert _duplicates(mixed) == {}
    # the stored form gives the same identifiers (waivers read the stored findings)
    stored = [finding_id(f) for f in mixed.to_dict()["findings"]]
    assert stored == [f.id for f in mixed.findings]
    assert [f["id"] for f in mixed.to_dict()["findings"]] == stored
    assert QualityReport.from_dict(mixed.to_dict()).findings == mixed.findings


def test_ids_stay_unique_with_modality_findings_and_tasks(real: tuple[Path, DicomIndex]) -> None:
    # the CT suite gives one modality finding per foreign series, some sharing a folder
    report = run_quality_checks(real[0], real[1], suite="ct-test-set-v1", task="classification")
    modality = report.by_check("modality")
    assert len(modality) > 20
    assert all(f.series_instance_uid for f in modality)
    assert _duplicates(report) == {}


def test_a_missing_pixel_spacing_is_one_finding_per_file(
    real: tuple[Path, DicomIndex], mixed: QualityReport
) -> None:
    missing = [
        f
        for f in mixed.by_check("required_tags")
        if f.attribute == PIXEL_SPACING and "missing" in f.message
    ]
    per_file = Counter(f.path for f in missing)
    assert len(per_file) > 10
    assert set(per_file.values()) == {1}
    # exactly the cross-sectional single-frame images without both values
    files = real[1].files.set_index("path").loc[list(per_file)]
    incomplete = files["pixel_spacing_row"].isna() | files["pixel_spacing_col"].isna()
    assert bool(incomplete.all())


def test_case_and_series_findings_of_one_folder_name_their_series(
    real: tuple[Path, DicomIndex], mixed: QualityReport
) -> None:
    about_series = [
        f
        for f in mixed.findings
        if f.check in ("reference_standard", "series_completeness", "orientation_consistency")
    ]
    files = real[1].files
    without_uid = set(files.loc[files["series_instance_uid"].isna(), "path"])
    unnamed = {f.path for f in about_series if not f.series_instance_uid}
    # only a file whose header has no SeriesInstanceUID names none
    assert about_series and unnamed <= without_uid, unnamed - without_uid
    shared: dict[tuple[str, str, str], set[str]] = {}
    for f in about_series:
        shared.setdefault((f.check, f.path, f.message), set()).add(f.series_instance_uid)
    # pydicom's DICOMDIR tree keeps several series in one folder: same path and message
    assert any(len(uids) > 1 for uids in shared.values())
    # the UIDs are those of the index
    known = set(files["series_instance_uid"].dropna().astype(str))
    assert {f.series_instance_uid for f in about_series} - {""} <= known


def test_finding_id_is_the_hash_of_its_content_and_keeps_earlier_ids() -> None:
    plain = Finding("phi", Severity.CRITICAL, "a/b.dcm", "PatientName (0010,0010)", "a name")
    content = {
        "attribute": "PatientName (0010,0010)",
        "check": "phi",
        "message": "a name",
        "path": "a/b.dcm",
        "severity": "critical",
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    # a finding that names no series keeps the identifier earlier releases stored
    assert plain.id == hashlib.sha256(text.encode()).hexdigest()[:16]
    stored_earlier = {k: v for k, v in plain.to_dict().items() if k != "series_instance_uid"}
    assert finding_id(stored_earlier) == plain.id
    one = Finding(
        "reference_standard", Severity.CRITICAL, "cases/x", "file", "no SEG", "", "", "1.2.3"
    )
    two = Finding(
        "reference_standard", Severity.CRITICAL, "cases/x", "file", "no SEG", "", "", "1.2.4"
    )
    assert one.id != two.id
    assert Finding.from_dict(one.to_dict()) == one
    assert finding_id(one.to_dict()) == one.id


def test_pixel_spacing_pair_is_one_value_per_image() -> None:
    lo, hi = PIXEL_SPACING_RANGE
    frame = pd.DataFrame(
        {
            "pixel_spacing_row": [0.7, None, 0.7, 0.05, 0.7, "0.6"],
            "pixel_spacing_col": [0.7, 0.7, None, 0.7, 9.0, "0.6"],
        }
    )
    pair = pixel_spacing_pair(frame)
    assert np.isnan(pair[1]) and np.isnan(pair[2])  # either value missing: the pair is
    assert pair[0] == 0.7 and pair[5] == pytest.approx(0.6)
    assert pair[3] == 0.05 and not lo <= pair[3] <= hi  # the row spacing is out of range
    assert pair[4] == 9.0 and not lo <= pair[4] <= hi  # the column spacing is

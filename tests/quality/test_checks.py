"""Each data-quality check against the generator's injected defects; a clean set passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest

from workbench.dicom.index import index_folder
from workbench.dicom.synth import Defect
from workbench.errors import QualityGateError
from workbench.quality import (
    Finding,
    QualityReport,
    Severity,
    build_training_manifest,
    check_phi,
    looks_like_person_name,
    run_quality_checks,
    series_table,
)

# the session fixtures of conftest.py: summary, index, report, root
CheckedSet = Any


def _critical(report: QualityReport, check: str) -> list[Finding]:
    return [f for f in report.by_check(check) if f.severity is Severity.CRITICAL]


def test_clean_set_has_no_findings(clean_set: CheckedSet) -> None:
    report = clean_set.report
    assert report.blocking == ()
    assert report.findings == (), report.to_frame().to_string()
    report.raise_if_blocking()
    assert report.n_files == len(clean_set.index.files)
    assert {"phi", "series_completeness", "reference_standard", "uid_uniqueness"} <= set(
        report.checks_run
    )


def test_missing_slice(defect_set: CheckedSet) -> None:
    (path,) = defect_set.summary.files_with(Defect.MISSING_SLICE)
    folder = str(Path(path).parent.as_posix())
    found = [f for f in _critical(defect_set.report, "series_completeness") if f.path == folder]
    assert found and "1 slice(s) missing" in found[0].message


def test_truncated_file(defect_set: CheckedSet) -> None:
    (path,) = defect_set.summary.files_with(Defect.TRUNCATED_FILE)
    found = [f for f in _critical(defect_set.report, "readability") if f.path == path]
    assert found and "truncated" in found[0].message


def test_non_dicom_file(defect_set: CheckedSet) -> None:
    (path,) = defect_set.summary.files_with(Defect.NON_DICOM_FILE)
    assert [f for f in _critical(defect_set.report, "readability") if f.path == path]


def test_wrong_modality(defect_set: CheckedSet) -> None:
    (path,) = defect_set.summary.files_with(Defect.WRONG_MODALITY)
    found = _critical(defect_set.report, "modality")
    assert [f.path for f in found] == [path]
    assert found[0].message == "expected Modality CT, found 'MR'"


def test_duplicate_sop_uid(defect_set: CheckedSet) -> None:
    (path,) = defect_set.summary.files_with(Defect.DUPLICATE_SOP_UID)
    paths = {f.path for f in _critical(defect_set.report, "uid_uniqueness")}
    assert path in paths and len(paths) == 2


def test_phi_in_header(defect_set: CheckedSet) -> None:
    paths = set(defect_set.summary.files_with(Defect.PHI_IN_HEADER))
    found = [f for f in _critical(defect_set.report, "phi") if f.path in paths]
    by_attr = {f.attribute for f in found}
    assert {
        "PatientName (0010,0010)",
        "OtherPatientIDs (0010,1000)",
        "PatientBirthDate (0010,0030)",
    } <= by_attr
    assert {f.path for f in found} == paths
    name = next(f for f in found if f.attribute.startswith("PatientName"))
    assert name.message == "contains a value that looks like a person name"


def test_phi_in_sequence(defect_set: CheckedSet) -> None:
    paths = set(defect_set.summary.files_with(Defect.PHI_IN_SEQUENCE))
    found = [f for f in _critical(defect_set.report, "phi") if f.path in paths]
    attrs = {f.attribute for f in found}
    assert "ReferringPhysicianIdentificationSequence (0008,0096)" in attrs
    assert any(
        a.startswith("ReferringPhysicianIdentificationSequence[0].PersonAddress") for a in attrs
    )
    assert any(a.endswith("CodeMeaning (0008,0104)") for a in attrs)
    assert any("RequestAttributesSequence[0].RequestedProcedureID" in a for a in attrs)


def test_messages_never_echo_phi(defect_set: CheckedSet) -> None:
    text = json.dumps(defect_set.report.to_dict())
    for value in ("Novak", "MARIA", "MRN00482913", "19610314", "Berger", "Elm Street", "555-0142"):
        assert value.lower() not in text.lower()


def test_only_injected_cases_have_critical_findings(defect_set: CheckedSet) -> None:
    cases = {d.case_id for d in defect_set.summary.defects}
    for f in defect_set.report.blocking:
        assert any(f"cases/{c}/" in f.path + "/" for c in cases), f


def test_raise_if_blocking_lists_what_to_fix(defect_set: CheckedSet) -> None:
    with pytest.raises(QualityGateError) as info:
        defect_set.report.raise_if_blocking()
    msg = str(info.value)
    assert "critical data-quality finding(s) block the lock and the run" in msg
    assert "[modality]" in msg


def test_report_serialisation(defect_set: CheckedSet) -> None:
    data = defect_set.report.to_dict()
    json.dumps(data)
    assert data["blocking"] == len(defect_set.report.blocking) > 0
    frame = defect_set.report.to_frame()
    assert list(frame.columns) == [
        "id",
        "check",
        "severity",
        "path",
        "series_instance_uid",
        "attribute",
        "expected",
        "found",
        "message",
    ]
    severities = frame["severity"].tolist()
    order = [s.value for s in Severity]
    assert severities == sorted(severities, key=order.index)


def _copy(clean_set: CheckedSet, tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(clean_set.root, root)
    return root


def _first_ct(root: Path) -> Path:
    return sorted((root / "cases").glob("*/CT/*.dcm"))[0]


def test_burned_in_annotation_private_tags_and_missing_reference(
    clean_set: CheckedSet, tmp_path: Path
) -> None:
    root = _copy(clean_set, tmp_path)
    path = _first_ct(root)
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    block = ds.private_block(0x0011, "ACME SCANNER", create=True)
    block.add_new(0x01, "LO", "internal")
    ds.PatientIdentityRemoved = "NO"
    ds.save_as(path, enforce_file_format=True)
    case = path.parents[1]
    for seg in (case / "SEG").glob("*.dcm"):
        seg.unlink()
    labels = pd.read_csv(root / "reference" / "labels.csv", dtype=str)
    labels = labels[labels["case_id"] != case.name]
    report = run_quality_checks(root, index_folder(root, workers=1), labels=labels)
    rel = path.relative_to(root).as_posix()
    assert [f.path for f in _critical(report, "burned_in_annotation")] == [rel]
    private = [f for f in report.by_check("phi") if f.attribute.startswith("private attributes")]
    assert [(f.attribute, f.severity) for f in private] == [
        ("private attributes (0011,xxxx)", Severity.MAJOR)
    ]
    removed = [
        f for f in report.by_check("phi") if f.attribute.startswith("PatientIdentityRemoved")
    ]
    assert removed and "found NO" in removed[0].message
    ref = _critical(report, "reference_standard")
    assert {f.attribute for f in ref} == {
        "ReferencedSeriesSequence (0008,1115)",
        "reference/labels.csv",
    }
    assert {f.path for f in ref} == {f"cases/{case.name}/CT"}


def test_pixel_geometry_and_hu_range(clean_set: CheckedSet, tmp_path: Path) -> None:
    root = _copy(clean_set, tmp_path)
    path = _first_ct(root)
    ds = pydicom.dcmread(path)
    ds.RescaleIntercept = "-9000"
    ds.save_as(path, enforce_file_format=True)
    other = sorted(path.parent.glob("*.dcm"))[-1]
    ds = pydicom.dcmread(other)
    ds.Rows = ds.Rows - 8  # header no longer matches the pixel data
    ds.save_as(other, enforce_file_format=True)
    report = run_quality_checks(root, index_folder(root, workers=1))
    hu = report.by_check("hu_range")
    assert [f.path for f in hu] == [path.relative_to(root).as_posix()]
    assert hu[0].severity is Severity.MAJOR and "HU range" in hu[0].message
    geo = [f for f in report.by_check("pixel_geometry")]
    assert geo and geo[0].path == other.relative_to(root).as_posix()


def test_leakage(clean_set: CheckedSet, tmp_path: Path) -> None:
    train = tmp_path / "train"
    case = sorted((clean_set.root / "cases").iterdir())[0]
    shutil.copytree(case / "CT", train)
    manifest = build_training_manifest(train)
    assert len(manifest["sop_instance_uids"]) == len(list(train.glob("*.dcm")))
    report = run_quality_checks(clean_set.root, clean_set.index, training_manifest=manifest)
    leaks = _critical(report, "leakage")
    assert {f.path for f in leaks} == {
        p.relative_to(clean_set.root).as_posix() for p in (case / "CT").glob("*.dcm")
    }
    assert {f.attribute for f in leaks} == {"SOPInstanceUID (0008,0018)", "PixelData (7FE0,0010)"}
    none = run_quality_checks(
        clean_set.root,
        clean_set.index,
        training_manifest={"sop_instance_uids": [], "pixel_sha256": []},
    )
    assert none.by_check("leakage") == () and "leakage" in none.checks_run


def test_series_table_orientation_and_spacing() -> None:
    rows = []
    for i, z in enumerate([0.0, 2.0, 4.0, 6.5, 8.5]):
        rows.append(
            {
                "path": f"cases/x/CT/{i:04d}.dcm",
                "series_instance_uid": "1.2",
                "study_instance_uid": "1.1",
                "image_orientation": "1,0,0,0,1,0" if i < 4 else "0,1,0,0,0,-1",
                "image_position_x": 0.0,
                "image_position_y": 0.0,
                "image_position_z": z,
            }
        )
    table = series_table(pd.DataFrame(rows))
    row = table.loc["1.2"]
    assert row["n_orientations"] == 2
    assert row["missing_slices"] == 0
    assert row["spacing_deviation"] == pytest.approx(0.25)


def test_person_name_heuristic() -> None:
    assert looks_like_person_name("Novak^Maria^Elena")
    assert looks_like_person_name("SMITH^JOHN")
    for pseudonym in ("", "PSN0000012345^SYNTHETIC", "ANONYMOUS", "SYNTHETIC^PHANTOM"):
        assert not looks_like_person_name(pseudonym)
    assert not looks_like_person_name("CASE^ALPHA", pseudonyms={"CASE^ALPHA"})


def test_dates_without_retention_option() -> None:
    ds = pydicom.Dataset()
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDate = "20210301"
    found = check_phi(ds, "x.dcm")
    assert [(f.attribute, f.severity) for f in found] == [("StudyDate (0008,0020)", Severity.MAJOR)]
    assert not check_phi(ds, "x.dcm", inherited_options={"113107"})


def test_unknown_suite(clean_set: CheckedSet) -> None:
    with pytest.raises(QualityGateError, match="Unknown data-quality suite"):
        run_quality_checks(clean_set.root, clean_set.index, suite="mr-v9")

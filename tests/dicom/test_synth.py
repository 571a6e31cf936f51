"""Synthetic test sets: layout, determinism, conformance, reference standard, defects."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from workbench.dicom.synth import (
    LABEL_COLUMNS,
    SCANNERS,
    Defect,
    SynthSummary,
    generate_test_set,
)
from workbench.dicom.volume import load_series
from workbench.errors import DicomReadError, GeometryError, WorkbenchError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_labels(synthetic_test_set: SynthSummary) -> None:
    root = synthetic_test_set.root
    assert synthetic_test_set.case_ids == ("case0001", "case0002", "case0003", "case0004")
    for case_id in synthetic_test_set.case_ids:
        assert len(list((root / "cases" / case_id / "CT").glob("*.dcm"))) == 40
        assert (root / "cases" / case_id / "SEG" / "reader1.dcm").is_file()
        assert (root / "cases" / case_id / "SEG" / "reader2.dcm").is_file()
    with open(synthetic_test_set.labels_path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        rows = list(reader)
    assert [r["case_id"] for r in rows] == list(synthetic_test_set.case_ids)
    assert [r["scanner_id"] for r in rows] == ["scanner-a", "scanner-b", "scanner-c", "scanner-a"]
    for row in rows:
        votes = [int(row[f"reader{k}_malignant"]) for k in (1, 2, 3)]
        assert int(row["consensus_malignant"]) == int(sum(votes) >= 2)
        assert float(row["lesion_volume_ml"]) > 0
        ds = pydicom.dcmread(
            root / "cases" / row["case_id"] / "CT" / "0001.dcm", stop_before_pixels=True
        )
        assert ds.StudyInstanceUID == row["study_instance_uid"]
        assert ds.SeriesInstanceUID == row["series_instance_uid"]
        assert ds.PatientID == row["patient_id"]
        assert ds.PatientAge == f"{int(row['patient_age_years']):03d}Y"
        assert ds.Manufacturer == row["manufacturer"]
    description = json.loads(synthetic_test_set.dataset_json_path.read_text())
    assert description["seed"] == 0 and description["defects"] == []
    assert {s["scanner_id"] for s in description["scanners"]} == {s.scanner_id for s in SCANNERS}


def test_ct_headers_are_deidentified_and_complete(synthetic_test_set: SynthSummary) -> None:
    path = synthetic_test_set.root / "cases" / "case0003" / "CT" / "0010.dcm"
    ds = pydicom.dcmread(path)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    assert ds.PatientBirthDate == ""
    assert ds.Modality == "CT" and ds.RescaleType == "HU"
    assert len(ds.WindowCenter) == len(ds.WindowWidth) == 3
    assert 0.6 <= float(ds.PixelSpacing[0]) <= 0.9
    assert 1.25 <= float(ds.SliceThickness) <= 5.0
    assert ds.Manufacturer == "Solace Healthcare"


def test_scanner_c_is_miscalibrated_and_noisier(synthetic_test_set: SynthSummary) -> None:
    """Soft tissue at the body centre as scanners report it (scanner-c: offset, heavy noise)."""
    stats = {}
    for case_id in ("case0001", "case0003"):
        vol = load_series((synthetic_test_set.root / "cases" / case_id / "CT").glob("*.dcm"))
        patch = vol.array[:, 64:74, 60:70]
        noise = np.median(np.abs(np.diff(patch, axis=2))) / 0.954  # robust sd of a difference
        stats[case_id] = (float(np.median(patch)), float(noise))
    assert stats["case0003"][0] < stats["case0001"][0] - 30  # 35 HU * 1.07 - 45
    assert stats["case0003"][1] > 1.5 * stats["case0001"][1]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    options = {"n_cases": 2, "matrix": 64, "slices": (12, 14), "workers": 1}
    a = _files(generate_test_set(tmp_path / "a", seed=5, **options).root)  # type: ignore[arg-type]
    b = _files(generate_test_set(tmp_path / "b", seed=5, **options).root)  # type: ignore[arg-type]
    c = _files(generate_test_set(tmp_path / "c", seed=6, **options).root)  # type: ignore[arg-type]
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    shared = a.keys() & c.keys()
    assert all(a[k] != c[k] for k in shared if k.endswith(".dcm"))


def test_parallel_and_serial_runs_are_identical(tmp_path: Path) -> None:
    options = {"n_cases": 3, "seed": 9, "matrix": 64, "slices": (10, 12)}
    serial = _files(generate_test_set(tmp_path / "s", workers=1, **options).root)  # type: ignore[arg-type]
    parallel = _files(generate_test_set(tmp_path / "p", workers=2, **options).root)  # type: ignore[arg-type]
    assert serial == parallel


def test_invalid_options_are_rejected(tmp_path: Path, synthetic_test_set: SynthSummary) -> None:
    with pytest.raises(WorkbenchError, match="Valid defects"):
        generate_test_set(tmp_path / "x", n_cases=1, defects=["missing_file"])
    with pytest.raises(WorkbenchError, match="n_cases"):
        generate_test_set(tmp_path / "x", n_cases=0)
    with pytest.raises(WorkbenchError, match="already contains"):
        generate_test_set(synthetic_test_set.root, n_cases=1)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(synthetic_test_set: SynthSummary) -> None:
    root = synthetic_test_set.root
    targets = [
        root / "cases" / c / "CT" / f"{n:04d}.dcm"
        for c in ("case0001", "case0003")
        for n in (1, 20, 40)
    ]
    targets += [
        root / "cases" / c / "SEG" / f"reader{k}.dcm"
        for c in ("case0001", "case0002")
        for k in (1, 2)
    ]
    for path in targets:
        result = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        lines = (result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], f"{path.relative_to(root)}: {errors}"


# --------------------------------------------------------------------------- defects


def test_every_defect_is_declared_in_summary_and_dataset_json(
    defective_test_set: SynthSummary,
) -> None:
    declared = {d.defect for d in defective_test_set.defects}
    assert declared == set(Defect)
    cases = {d.defect: d.case_id for d in defective_test_set.defects}
    assert len(set(cases.values())) == len(Defect)  # one case per defect
    description = json.loads(defective_test_set.dataset_json_path.read_text())
    assert {d["defect"] for d in description["defects"]} == {d.value for d in Defect}
    assert len(description["defects"]) == len(defective_test_set.defects)


def test_defects_are_present_as_declared(defective_test_set: SynthSummary) -> None:
    root = defective_test_set.root

    (missing,) = defective_test_set.files_with(Defect.MISSING_SLICE)
    assert not (root / missing).exists()
    with pytest.raises(GeometryError, match="a slice is missing"):
        load_series((root / missing).parent.glob("*.dcm"))

    phi = defective_test_set.files_with(Defect.PHI_IN_HEADER)
    assert len(phi) >= 16
    ds = pydicom.dcmread(root / phi[0], stop_before_pixels=True)
    assert str(ds.PatientName) == "Novak^Maria^Elena" and ds.OtherPatientIDs == "MRN00482913"
    assert ds.PatientIdentityRemoved == "YES"  # the header claims otherwise: that is the defect

    seq = pydicom.dcmread(root / defective_test_set.files_with(Defect.PHI_IN_SEQUENCE)[0])
    person = seq.ReferringPhysicianIdentificationSequence[0]
    assert person.PersonIdentificationCodeSequence[0].CodeMeaning == "Dr. Hans Berger"
    assert "NOVAK" in seq.RequestAttributesSequence[0].RequestedProcedureDescription
    assert str(seq.PatientName).endswith("^SYNTHETIC")  # top level looks clean

    (wrong,) = defective_test_set.files_with(Defect.WRONG_MODALITY)
    assert pydicom.dcmread(root / wrong, stop_before_pixels=True).Modality == "MR"

    (dup,) = defective_test_set.files_with(Defect.DUPLICATE_SOP_UID)
    uid = pydicom.dcmread(root / dup, stop_before_pixels=True).SOPInstanceUID
    series = (root / dup).parent.glob("*.dcm")
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series]
    assert uids.count(uid) == 2

    (truncated,) = defective_test_set.files_with(Defect.TRUNCATED_FILE)
    siblings = [
        p for p in (root / truncated).parent.glob("*.dcm") if p.name != Path(truncated).name
    ]
    assert (root / truncated).stat().st_size < 0.7 * siblings[0].stat().st_size
    with pytest.raises(Exception):  # noqa: B017 - pydicom raises several types
        pydicom.dcmread(root / truncated).pixel_array  # noqa: B018

    (stray,) = defective_test_set.files_with(Defect.NON_DICOM_FILE)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(root / stray)
    with pytest.raises(DicomReadError, match=Path(stray).name):
        load_series((root / stray).parent.glob("*.dcm"))


@pytest.mark.slow
def test_lesion_properties_relate_to_truth(tmp_path: Path) -> None:
    summary = generate_test_set(
        tmp_path / "t", n_cases=24, seed=11, matrix=64, slices=(10, 12), workers=2
    )
    truth = {
        c["case_id"]: c["true_malignant"]
        for c in json.loads(summary.dataset_json_path.read_text())["cases"]
    }
    with open(summary.labels_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    volume = np.array([float(r["lesion_volume_ml"]) for r in rows])
    contrast = np.array([float(r["lesion_contrast_hu"]) for r in rows])
    malignant = np.array([truth[r["case_id"]] for r in rows])
    assert 0 < malignant.sum() < len(rows)
    assert volume[malignant].mean() > volume[~malignant].mean()
    assert contrast[malignant].mean() > contrast[~malignant].mean()
    consensus = np.array([int(r["consensus_malignant"]) for r in rows], bool)
    assert (consensus == malignant).mean() >= 0.75

"""Per-modality suites, task-aware reference checks, non-image objects, grouped findings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from workbench.dicom.index import index_folder
from workbench.errors import QualityGateError
from workbench.quality import QualityReport, Severity, run_quality_checks
from workbench.quality.checks import SUITES, suite_definition

CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def _write(
    path: Path,
    sop_class: str,
    modality: str,
    *,
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    **attrs: object,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", None) or generate_uid()
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", None) or generate_uid()
    ds.Modality = modality
    ds.PatientIdentityRemoved = "YES"
    ds.PatientID = "WB0001"
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.Manufacturer = "ACME"
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
        if pixels.ndim == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _image(seed: int, shape: tuple[int, ...] = (256, 256), dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000 if dtype == "uint16" else 255, shape).astype(dtype)


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    _write(
        root / "cr/1.dcm",
        CR,
        "CR",
        pixels=_image(1),
        photometric="MONOCHROME1",
        ImagerPixelSpacing=[0.15, 0.15],
        WindowCenter=2000,
        WindowWidth=4000,
    )
    _write(root / "dx/1.dcm", DX, "DX", pixels=_image(2), PixelSpacing=[0.1, 0.1])
    rgb = _image(3, (240, 320, 3), "uint8")
    _write(root / "us/1.dcm", US, "US", pixels=rgb, photometric="RGB", BurnedInAnnotation="NO")
    _write(root / "sr/report.dcm", SR, "SR")
    _write(root / "kos/key.dcm", KOS, "KO")
    (root / "README.txt").write_text("export notes\n", encoding="utf-8")
    (root / "bundle.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    labels = root / "reference" / "labels.csv"
    labels.parent.mkdir()
    index = index_folder(root, workers=1)
    images = index.files[index.files["kind"] == "image"]
    pd.DataFrame(
        {"case_id": ["a", "b", "c"], "sop_instance_uid": images["sop_instance_uid"], "label": 1}
    ).to_csv(labels, index=False)
    return root


@pytest.fixture(scope="module")
def mixed_report(mixed_root: Path) -> QualityReport:
    index = index_folder(mixed_root, workers=1)
    return run_quality_checks(mixed_root, index, suite="mixed-test-set-v1", task="classification")


def test_projection_and_us_images_are_cases_of_their_own(mixed_report: QualityReport) -> None:
    assert mixed_report.blocking == (), mixed_report.to_frame().to_string()
    assert mixed_report.by_check("series_completeness") == ()
    assert mixed_report.by_check("reference_standard") == ()
    assert mixed_report.by_check("hu_range") == ()


def test_projection_checks(mixed_report: QualityReport) -> None:
    photometric = mixed_report.by_check("photometric")
    assert [(f.path, f.severity, f.found) for f in photometric] == [
        ("cr/1.dcm", Severity.INFO, "'MONOCHROME1'")
    ]
    (voi,) = mixed_report.by_check("voi_lut")
    assert (voi.path, voi.severity) == ("dx/1.dcm", Severity.MINOR)
    assert voi.attribute == "WindowCenter (0028,1050) or VOILUTSequence (0028,3010)"
    spacing = [f for f in mixed_report.by_check("required_tags") if "Spacing" in f.attribute]
    assert spacing == []


def test_non_image_objects_and_stray_files_are_named_and_do_not_block(
    mixed_report: QualityReport,
) -> None:
    objects = {f.path: f for f in mixed_report.by_check("non_image_object")}
    assert set(objects) == {"sr/report.dcm", "kos/key.dcm"}
    assert objects["sr/report.dcm"].message.startswith("structured report (SR)")
    assert objects["kos/key.dcm"].message.startswith("key object selection (KOS)")
    stray = {f.path: f for f in mixed_report.by_check("non_dicom_file")}
    assert set(stray) == {"README.txt", "bundle.zip"}
    assert stray["bundle.zip"].found == "empty ZIP archive"
    assert all(f.severity is Severity.MINOR for f in stray.values())


def test_suite_for_one_modality_gives_one_finding_per_series(mixed_root: Path) -> None:
    series = mixed_root / "dx"
    for i in range(2, 5):
        _write(
            series / f"{i}.dcm",
            DX,
            "DX",
            pixels=_image(i),
            PixelSpacing=[0.1, 0.1],
            SeriesInstanceUID="1.2.3.4",
            StudyInstanceUID="1.2.3",
        )
    try:
        index = index_folder(mixed_root, workers=1)
        report = run_quality_checks(
            mixed_root, index, suite="us-test-set-v1", task="classification"
        )
    finally:
        for i in range(2, 5):
            (series / f"{i}.dcm").unlink()
    modality = report.by_check("modality")
    assert sorted((f.path, f.found) for f in modality) == [
        ("cr/1.dcm", "CR"),
        ("dx", "DX"),
        ("dx/1.dcm", "DX"),
    ]
    assert all(f.severity is Severity.CRITICAL and f.expected == "US" for f in modality)


def test_reference_standard_follows_the_task(mixed_root: Path) -> None:
    index = index_folder(mixed_root, workers=1)
    segmentation = run_quality_checks(
        mixed_root, index, suite="mixed-test-set-v1", task="segmentation"
    )
    ref = segmentation.by_check("reference_standard")
    assert {f.attribute for f in ref} == {"ReferencedSeriesSequence (0008,1115)"}
    assert {f.path for f in ref} == {"cr/1.dcm", "dx/1.dcm", "us/1.dcm"}


def test_grouped_summary_and_export(mixed_report: QualityReport, tmp_path: Path) -> None:
    groups = mixed_report.grouped()
    assert sum(g.count for g in groups) == len(mixed_report.findings)
    severities = [g.severity for g in groups]
    order = list(Severity)
    assert severities == sorted(severities, key=order.index)
    assert mixed_report.counts == {
        s.value: sum(1 for f in mixed_report.findings if f.severity is s) for s in Severity
    }
    rows = list(csv.DictReader(mixed_report.export(tmp_path / "f.csv").open()))
    assert len(rows) == len(mixed_report.findings)
    assert rows[0]["id"] == mixed_report.findings[0].id
    assert set(rows[0]) == {
        "id",
        "check",
        "severity",
        "path",
        "series_instance_uid",
        "attribute",
        "expected",
        "found",
        "message",
    }
    data = json.loads(mixed_report.export(tmp_path / "f.json").read_text())
    assert data["counts"] == mixed_report.counts
    assert QualityReport.from_dict(data).findings == mixed_report.findings


def test_unknown_suite_names_the_choices() -> None:
    with pytest.raises(QualityGateError, match="Did you mean 'us-test-set-v1'"):
        suite_definition("us-testset-v1")
    assert {"ct-test-set-v1", "mr-test-set-v1", "projection-test-set-v1"} <= set(SUITES)


def test_phi_findings_name_the_attribute_and_group_private_tags(tmp_path: Path) -> None:
    ds = _write(
        tmp_path / "cr.dcm",
        CR,
        "CR",
        pixels=_image(9),
        ImagerPixelSpacing=[0.15, 0.15],
        WindowCenter=1,
        WindowWidth=2,
        PatientName="Berger^Anna",
    )
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    for k in range(12):
        block.add_new(k, "LO", f"value {k}")
    ds.save_as(tmp_path / "cr.dcm", enforce_file_format=True)
    report = run_quality_checks(
        tmp_path, index_folder(tmp_path, workers=1), suite="projection-test-set-v1"
    )
    phi = report.by_check("phi")
    name = [f for f in phi if f.attribute == "PatientName (0010,0010)"]
    assert name and name[0].found == "a value that looks like a person name"
    private = [f for f in phi if f.attribute.startswith("private")]
    assert [(f.attribute, f.found) for f in private] == [
        ("private attributes (0019,xxxx)", "12 with values")
    ]
    assert "Berger" not in json.dumps(report.to_dict())


def test_missing_values_of_extension_dtypes_are_shown_not_compared() -> None:
    from workbench.quality import expectations as gxs

    frame = pd.DataFrame(
        {"rows": pd.array([512, pd.NA, 16], dtype="Int64"), "path": ["a", "b", "c"]}
    )
    spec = (
        "ExpectColumnValuesToBeBetween",
        {"column": "rows", "min_value": 32, "max_value": 4096},
        {
            "check": "geometry_range",
            "severity": "major",
            "attribute": "Rows (0028,0010)",
            "message": "Rows {value} outside 32 to 4096",
            "expected": "32 to 4096",
        },
    )
    findings = gxs.run_suite(frame, [spec], name="na", path_of=lambda i: str(frame.at[i, "path"]))
    assert [(f.path, f.found) for f in findings] == [("c", "16")]
    assert gxs._show(pd.NA) == "no value" and gxs._show(float("nan")) == "no value"

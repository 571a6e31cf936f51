"""A detection model's marks exported as a TID 1500 Measurement Report and read back."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from workbench.dicom.index import index_folder
from workbench.dicom.lesions import lesions_from_mask, lesions_from_sr
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.sr import build_detection_report
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import Volume, load_series
from workbench.errors import DicomReadError, GeometryError
from workbench.inference.detection import Mark, marks_from_probability
from workbench.stats import froc_figure_of_merit, match_lesions

WHEN = dt.datetime(2026, 3, 4, 5, 6, 7)


class Case:
    def __init__(self, root: Path) -> None:
        generate_test_set(root, n_cases=1, seed=7, matrix=64, slices=(12, 14), workers=1)
        paths = sorted((root / "cases" / "case0001" / "CT").glob("*.dcm"))
        self.headers: list[Dataset] = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        self.volume: Volume = load_series(paths)
        self.mask = read_seg_mask(root / "cases" / "case0001" / "SEG" / "reader1.dcm", self.volume)
        files = index_folder(root, workers=1).files
        self.images: pd.DataFrame = files[files["modality"] == "CT"]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return Case(tmp_path_factory.mktemp("detection_case"))


def _marks(case: Case) -> list[Mark]:
    """The documented segmentation-to-detection rule on a map with the lesion and a false blob."""
    probability = np.where(case.mask, 0.8, 0.0)
    z = probability.shape[0] // 2
    probability[z - 1 : z + 1, 2:6, 2:6] = 0.6
    marks = marks_from_probability(probability, case.volume.affine, threshold=0.5)
    assert len(marks) == 2
    # and a point mark with a label
    return [*marks, Mark(score=0.3, x=marks[0].x, y=marks[0].y + 5.0, z=marks[0].z, label="nodule")]


def _build(case: Case, marks: list[Mark], **kw: object) -> hd.sr.Comprehensive3DSR:
    args: dict[str, object] = {
        "model_name": "detector",
        "model_version": "2.1",
        "run_uid": "RUN-0042",
        "device_uid": "2.25.1234",
        "series_instance_uid": "2.25.55",
        "sop_instance_uid": "2.25.56",
        "content_datetime": WHEN,
        "label_codes": {"nodule": codes.SCT.Nodule},
    }
    args.update(kw)
    return build_detection_report(case.headers, marks, **args)  # type: ignore[arg-type]


def dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_report_passes_dciodvfy(case: Case, tmp_path: Path) -> None:
    marks = _marks(case)
    for name, subset in (("all", marks), ("one point", marks[2:])):
        path = tmp_path / f"{name}.dcm"
        _build(case, subset).save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dsrdump (dcmtk) not installed")
def test_dcmtk_reads_the_report_without_complaint(case: Case, tmp_path: Path) -> None:
    """dcmtk's SR reader checks the content tree against the Comprehensive 3D SR IOD."""
    path = tmp_path / "sr.dcm"
    _build(case, _marks(case)).save_as(path, enforce_file_format=True)
    done = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert 'NUM:(,,"Certainty of Finding")="0.8"' in done.stdout
    assert done.stdout.count('SCOORD3D:(,,"Volume Surface")=(ELLIPSOID') == 2


def test_marks_read_back_to_the_same_positions(case: Case, tmp_path: Path) -> None:
    marks = _marks(case)
    path = tmp_path / "sr.dcm"
    _build(case, marks).save_as(path, enforce_file_format=True)
    lesions = lesions_from_sr([path], case.images, default_diameter_mm=4.0)
    assert lesions["lesion_id"].tolist() == ["M1", "M2", "M3"]
    for mark, row in zip(marks[:2], lesions.to_dict(orient="records"), strict=False):
        box = [mark.x_min, mark.y_min, mark.z_min, mark.x_max, mark.y_max, mark.z_max]
        got = [row[k] for k in ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")]
        assert got == pytest.approx(box, abs=1e-3)  # Graphic Data is FL (32-bit)
        assert row["graphic_type"] == "ELLIPSOID"
        assert row["certainty_of_finding"] == pytest.approx(mark.score)
        assert row["finding_type"] == "Lesion"
    point = lesions.iloc[2]
    assert [point["x"], point["y"], point["z"]] == pytest.approx(
        [marks[2].x, marks[2].y, marks[2].z], abs=1e-3
    )
    assert point["graphic_type"] == "POINT"
    assert point["finding_type"] == "Nodule"
    assert point["certainty_of_finding"] == pytest.approx(0.3)
    assert set(lesions["series_instance_uid"]) == {str(case.headers[0].SeriesInstanceUID)}


def test_the_report_names_the_model_and_its_sources(case: Case) -> None:
    sr = _build(case, _marks(case))
    report = hd.sr.MeasurementReport.from_sequence([sr])
    groups = report.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["M1", "M2", "M3"]
    for group in groups:
        (measurement,) = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
        assert measurement.unit.value == "1"
        identification = {
            item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
            for item in group[0].ContentSequence
            if item.ValueType == "TEXT"
        }
        assert identification["Algorithm Name"] == "detector"
        assert identification["Algorithm Version"] == "2.1"
        surface = group.roi
        assert isinstance(surface, hd.sr.VolumeSurface)
        assert surface.frame_of_reference_uid == case.headers[0].FrameOfReferenceUID
        sources = {
            str(s.referenced_sop_instance_uid) for s in surface.source_images_for_segmentation
        }
        assert sources <= {str(h.SOPInstanceUID) for h in case.headers}
        assert sources
    # The box mark of the lesion spans the slices the lesion is on.
    lesion_slices = np.nonzero(case.mask.any(axis=(1, 2)))[0]
    first = groups[0].roi
    assert isinstance(first, hd.sr.VolumeSurface)
    spanned = {str(s.referenced_sop_instance_uid) for s in first.source_images_for_segmentation}
    assert {case.volume.sop_instance_uids[k] for k in lesion_slices} <= spanned
    observer = report.get_observer_contexts()[0]
    assert observer.observer_type == codes.DCM.Device
    assert sr.SeriesDescription.startswith("detector 2.1")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == len(case.headers)


def test_the_round_trip_keeps_the_match(case: Case) -> None:
    """Marks read back from the SR match the reference exactly as the marks themselves do."""
    truth = lesions_from_mask(case.mask, case.volume.affine).assign(case_id="c1")
    marks = _marks(case)[:2]
    lesions = lesions_from_sr([_build(case, marks)], case.images)
    read_back = lesions.assign(case_id="c1", mark_id=lesions["lesion_id"])
    read_back = read_back.rename(columns={"certainty_of_finding": "score"}).drop(
        columns=["lesion_id", "diameter", "lesion_weight"]
    )
    result = match_lesions(truth, read_back, rule="iou", threshold=0.5)
    matched = result.marks.set_index("mark_id")["lesion_id"]
    assert matched.notna().tolist() == [True, False]
    assert froc_figure_of_merit(result.marks, result.truth, fom="wafroc1") == 1.0


def test_building_twice_writes_the_same_object(case: Case, tmp_path: Path) -> None:
    marks = _marks(case)
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    _build(case, marks).save_as(a, enforce_file_format=True)
    _build(case, marks).save_as(b, enforce_file_format=True)
    assert a.read_bytes() == b.read_bytes()


def test_bad_marks_are_named(case: Case) -> None:
    marks = _marks(case)
    far = replace(marks[1], x_min=marks[1].x_min - 500.0)  # type: ignore[operator]
    with pytest.raises(GeometryError, match=r"mark 2: point \(.*\) mm lies outside the images"):
        _build(case, [marks[0], far])
    with pytest.raises(GeometryError, match="mark 1: expected all six box corners"):
        _build(case, [replace(marks[0], z_max=None)])
    with pytest.raises(GeometryError, match="mark 1: expected a finite box"):
        _build(case, [replace(marks[0], x_min=marks[0].x_max + 1)])  # type: ignore[operator]
    with pytest.raises(
        DicomReadError, match=r"mark 3: label 'nodule' has no code; expected one of \[\]"
    ):
        _build(case, marks, label_codes=None)
    with pytest.raises(DicomReadError, match="Expected at least one mark, found none"):
        _build(case, [])
    other = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")), stop_before_pixels=True)
    with pytest.raises(DicomReadError, match="Expected source images of one series"):
        build_detection_report(
            [*case.headers, other],
            marks,
            model_name="m",
            model_version="1",
            run_uid="r",
            device_uid="2.25.1",
            series_instance_uid="2.25.2",
            sop_instance_uid="2.25.3",
            content_datetime=WHEN,
        )


def test_multi_frame_sources_are_refused() -> None:
    image = pydicom.dcmread(str(get_testdata_file("eCT_Supplemental.dcm")), stop_before_pixels=True)
    with pytest.raises(DicomReadError, match=r"Source image .* has 2 frames"):
        build_detection_report(
            [image],
            [Mark(score=0.5, x=0.0, y=0.0, z=-159.0)],
            model_name="m",
            model_version="1",
            run_uid="r",
            device_uid="2.25.1",
            series_instance_uid="2.25.2",
            sop_instance_uid="2.25.3",
            content_datetime=WHEN,
        )

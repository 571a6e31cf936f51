"""A hospital's own data end to end: real radiographs and 2D models; NIfTI references.

1. Chest radiographs: the real CR files of the ``pydicom-data`` package (two images in
   four transfer syntaxes each, JPEG 2000 included), de-identified with fresh UIDs, one
   case per image, labels keyed by accession number as a PACS exports them, strata from
   the DICOM header (Manufacturer), classified by a 2D TorchScript model and by the same
   network as ONNX.
2. CT segmentation whose reference standard is NIfTI masks listed in
   ``reference/masks.csv`` instead of DICOM SEG.

Each goes import -> check -> lock -> protocol check -> validate -> report -> sign -> seal
-> verify through the services.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import yaml
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import load_series
from workbench.inference.registry import ModelSpec
from workbench.services import models, preflight, protocols, reports, runs, testsets
from workbench.vocabulary import Verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import harness  # noqa: E402
from inference_fixtures import ThresholdNet, save_scripted, tiny_spec  # noqa: E402

CR_FILES = (
    "RG1_UNCI.dcm",
    "RG3_UNCR.dcm",
    "RG1_J2KR.dcm",
    "RG3_J2KR.dcm",
    "RG3_UNCI.dcm",
    "RG1_UNCR.dcm",
    "RG3_J2KI.dcm",
    "RG1_J2KI.dcm",
)
_REMOVE = {
    "OtherPatientIDs",
    "DeviceSerialNumber",
    "ImageComments",
    "InstitutionalDepartmentName",
    "StudyDescription",
    "SeriesDescription",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "OperatorsName",
    "PerformingPhysicianName",
    "RequestingPhysician",
    "PatientBirthDate",
    "RequestAttributesSequence",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "PatientComments",
    "AdmittingDiagnosesDescription",
    "AcquisitionDeviceProcessingDescription",
}


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _deidentify(ds: Dataset) -> None:
    """PS3.15 Basic Profile with Retain Patient Characteristics and Device Identity."""
    for elem in list(ds):
        if elem.VR in ("DA", "DT", "TM") or elem.keyword in _REMOVE or elem.tag.is_private:
            del ds[elem.tag]
    for keyword in ("PatientName", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
        setattr(ds, keyword, "")
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic Profile; Retain Patient Chars; Retain Device Id"
    ds.DeidentificationMethodCodeSequence = Sequence(
        [
            _code("113100", "Basic Application Confidentiality Profile"),
            _code("113108", "Retain Patient Characteristics Option"),
            _code("113109", "Retain Device Identity Option"),
        ]
    )


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real CR images, one case each, labels keyed by accession number."""
    root = tmp_path_factory.mktemp("cr") / "set"
    (root / "images").mkdir(parents=True)
    (root / "reference").mkdir()
    lines = ["case_id,accession_number,abnormal"]
    for i, name in enumerate(CR_FILES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(get_testdata_file(name))
        _deidentify(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber, ds.PatientID = f"ACC{i:04d}", f"CASE{i:03d}"
        ds.save_as(root / "images" / f"image{i:03d}.dcm")
        lines.append(f"cr{i:03d},ACC{i:04d},{i % 2}")
    (root / "reference" / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


class _Radiograph(torch.nn.Module):
    """A 2D classifier: a score from the image's mean and spread."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)
        return {"abnormal": torch.sigmoid(self.linear(features))}


class _RadiographTensor(_Radiograph):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)["abnormal"]


def _spec(name: str, fmt: str, score_output: str) -> dict[str, object]:
    return {
        "name": name,
        "version": "1.0",
        "task": "classification",
        "format": fmt,
        "intended_use": "Test fixture on real radiographs; not a clinical model.",
        "input": {
            "spatial_dims": 2,
            "in_channels": 1,
            "roi_size": [64, 64],
            "normalization": "min_max",
            "segmentation_output": None,
            "score_output": score_output,
        },
    }


def _protocol_text(test_set: str) -> str:
    data = yaml.safe_load((harness.PROTOCOL_DIR / "malignancy-classification-v1.yaml").read_text())
    data.update(
        id="cr-abnormality",
        title="Abnormality on chest radiographs",
        test_set={"name": test_set},
        modalities=["CR", "DX"],
        data_quality_suite="projection-test-set-v1",
        discrepancy_rules=[],
        endpoints=[
            {
                "id": "auc",
                "metric": "auc",
                "primary": True,
                "ci": {"method": "delong", "level": 0.95},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.0},
            }
        ],
        strata=[{"factor": "manufacturer", "min_n": 2}],
        limitations=["Eight real radiographs with synthetic labels: a pipeline test."],
    )
    data["reference_standard"] = {
        "description": "Synthetic labels keyed by accession number.",
        "labels_column": "abnormal",
        "labels_key": "accession_number",
    }
    data.pop("subgroup_acceptance", None)
    data["adjudication"]["required_before_approval"] = False
    return yaml.safe_dump(data, sort_keys=False)


def _import_check_lock(wb: object, qa: object, root: Path, name: str, protocol_text: Path) -> str:
    """Import, add the protocol (draft), check the set as the protocol says, lock."""
    info = testsets.import_test_set(wb, qa, root, name=name, workers=1)
    assert info.n_unreadable == 0, info.unreadable
    ref = protocols.add_protocol_version(wb, qa, protocol_text).ref
    result = testsets.check_quality(wb, qa, name, protocol=ref)
    assert not result.blocking, [f for f in result.findings if f.severity == "critical"][:5]
    testsets.lock_test_set(wb, qa, name, password=harness.ACCOUNTS["qa1"][2])
    return ref


def _report_and_verify(wb: object, run_uid: str) -> None:
    qa1, qa2, rev1 = (harness.login(wb, u) for u in ("qa1", "qa2", "rev1"))
    report = reports.build_report(wb, qa1, run_uid)
    for actor, user, meaning in (
        (qa1, "qa1", "authored"),
        (rev1, "rev1", "reviewed"),
        (qa2, "qa2", "approved"),
    ):
        reports.sign_report(
            wb, actor, report.report_uid, meaning=meaning, password=harness.ACCOUNTS[user][2]
        )
    sealed = reports.seal_report(wb, qa1, report.report_uid)
    check = reports.verify_report_file(wb, sealed.sealed_path or "")
    assert check.valid, check.lines()


def test_real_radiographs_with_torchscript_and_onnx_2d_models(
    radiographs: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "protocol.yaml"
        text.write_text(_protocol_text("cr-set"))
        ref = _import_check_lock(wb, qa1, radiographs, "cr-set", text)
        report = preflight.check_protocol(wb, qa1, protocol=ref, test_set="cr-set")
        assert report.ok and report.n_analysable == len(CR_FILES), report.lines()
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])

        scripted = tmp_path / "cr.ts"
        torch.jit.script(_Radiograph()).save(str(scripted))
        onnx_path = tmp_path / "cr.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _RadiographTensor().eval(),
                (torch.rand(1, 1, 64, 64),),
                str(onnx_path),
                input_names=["image"],
                output_names=["abnormal"],
                dynamic_axes={"image": {0: "batch"}, "abnormal": {0: "batch"}},
                dynamo=False,
            )
        scores = {}
        for path, fmt in ((scripted, "torchscript"), (onnx_path, "onnx")):
            # The spec as a user writes it: JSON, validated field by field.
            spec = ModelSpec.from_json(
                json.dumps(_spec(f"cr-{fmt}", fmt, "abnormal")), source=f"{fmt}.json"
            )
            model = models.register_model(wb, qa1, path, spec)
            summary = runs.validate(
                wb, qa1, protocol=ref, model=model.ref, test_set="cr-set", device="cpu"
            )
            assert summary.status == "completed", summary.error
            assert summary.n_completed == len(CR_FILES) and summary.n_excluded == 0
            assert summary.verdict in (Verdict.PASS, Verdict.FAIL)
            results, frame = runs.run_results(wb, qa1, summary.run_uid)
            # Strata from the header's Manufacturer, no labels column needed.
            assert {s.stratum for s in results.endpoints[0].strata} == {
                "FUJI PHOTO FILM CO. LTD.",
                "Philips Medical Systems",
            }
            scores[fmt] = frame.set_index("case_id")["score"].astype(float).sort_index()
            _report_and_verify(wb, summary.run_uid)
        np.testing.assert_allclose(scores["torchscript"], scores["onnx"], atol=1e-5)
    finally:
        wb.close()


def test_ct_segmentation_with_nifti_reference_masks(tmp_path: Path) -> None:
    root = tmp_path / "set"
    harness.synth(root, n_cases=3)
    # Replace the readers' DICOM SEGs by NIfTI masks (RAS affine) listed in masks.csv.
    rows = ["series_instance_uid,reader,path"]
    (root / "reference" / "masks").mkdir(parents=True)
    for seg in sorted(root.rglob("reader*.dcm")):
        ds = pydicom.dcmread(seg, stop_before_pixels=True)
        series_uid = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
        ct_files = sorted(
            p
            for p in root.rglob("*.dcm")
            if "reader" not in p.name
            and str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == series_uid
        )
        volume = load_series(ct_files)
        mask = read_seg_mask(seg, volume)
        lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
        image = nib.Nifti1Image(
            np.transpose(mask.astype(np.uint8), (2, 1, 0)), lps_to_ras @ volume.affine
        )
        rel = f"reference/masks/{seg.parent.parent.name}-{seg.stem}.nii.gz"
        nib.save(image, str(root / rel))
        rows.append(f"{series_uid},{seg.stem},{rel}")
        seg.unlink()
    (root / "reference" / "masks.csv").write_text("\n".join(rows) + "\n")

    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        data = yaml.safe_load((harness.PROTOCOL_DIR / "lesion-segmentation-v1.yaml").read_text())
        data.update(id="nifti-seg", test_set={"name": "nifti-set"}, discrepancy_rules=[])
        data["reference_standard"]["segmentation"]["source"] = "nifti"
        data["adjudication"]["required_before_approval"] = False
        data.pop("subgroup_acceptance", None)
        for factor in data.get("strata", []):
            factor["min_n"] = 1
        text = tmp_path / "seg.yaml"
        text.write_text(yaml.safe_dump(data, sort_keys=False))
        ref = _import_check_lock(wb, qa1, root, "nifti-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        model_path = save_scripted(ThresholdNet(), tmp_path / "seg.ts")
        model = models.register_model(wb, qa1, model_path, tiny_spec())
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="nifti-set", device="cpu"
        )
        assert summary.status == "completed" and summary.n_excluded == 0, summary
        _, frame = runs.run_results(wb, qa1, summary.run_uid)
        assert frame["reference_voxels"].astype(int).gt(0).all()
        _report_and_verify(wb, summary.run_uid)
    finally:
        wb.close()
    shutil.rmtree(root)


def _rtstruct(seg: Path, ct_files: list[Path], reader: str, out: Path) -> None:
    """An RTSTRUCT of the reader's SEG mask: one closed planar contour per slice (its hull)."""
    from pydicom.dataset import FileMetaDataset
    from scipy.spatial import ConvexHull

    volume = load_series(ct_files)
    mask = read_seg_mask(seg, volume)
    first = volume.headers[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "StudyID", "StudyDate"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.PatientIdentityRemoved = "YES"
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.OperatorsName = f"{reader.capitalize()}^Test"
    ds.StructureSetLabel = "lesion"
    contour_images = []
    for uid in volume.sop_instance_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = first.SOPClassUID
        item.ReferencedSOPInstanceUID = uid
        contour_images.append(item)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = volume.series_instance_uid
    series_ref.ContourImageSequence = Sequence(contour_images)
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "lesion"
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contours = []
    for z in range(mask.shape[0]):
        rows, cols = np.nonzero(mask[z])
        if len(rows) < 3:
            continue
        # Pixel corners around the mask, so every masked pixel centre lies inside the hull.
        corners = np.concatenate(
            [np.stack([cols + dc, rows + dr], axis=1) for dc in (-0.5, 0.5) for dr in (-0.5, 0.5)]
        )
        hull = corners[ConvexHull(corners).vertices]
        xyz = [volume.voxel_to_patient([z, r, c]) for c, r in hull]
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(xyz)
        contour.ContourData = [f"{v:.4f}" for point in xyz for v in point]
        image = Dataset()
        image.ReferencedSOPClassUID = first.SOPClassUID
        image.ReferencedSOPInstanceUID = volume.sop_instance_uids[z]
        contour.ContourImageSequence = Sequence([image])
        contours.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = 1, 1
    observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
    ds.RTROIObservationsSequence = Sequence([observation])
    ds.save_as(out, enforce_file_format=True)


def test_ct_segmentation_with_rtstruct_references(tmp_path: Path) -> None:
    root = tmp_path / "set"
    harness.synth(root, n_cases=3)
    for seg in sorted(root.rglob("reader*.dcm")):
        ds = pydicom.dcmread(seg, stop_before_pixels=True)
        series_uid = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
        ct_files = sorted(
            p
            for p in seg.parent.parent.rglob("*.dcm")
            if "reader" not in p.name
            and str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == series_uid
        )
        # Named by UID, as tools name them: the reader comes from Operators' Name.
        _rtstruct(seg, ct_files, seg.stem, seg.parent / f"{generate_uid()}.dcm")
        seg.unlink()
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        data = yaml.safe_load((harness.PROTOCOL_DIR / "lesion-segmentation-v1.yaml").read_text())
        data.update(id="rtstruct-seg", test_set={"name": "rt-set"}, discrepancy_rules=[])
        data["reference_standard"]["segmentation"]["source"] = "rtstruct"
        data["adjudication"]["required_before_approval"] = False
        data.pop("subgroup_acceptance", None)
        text = tmp_path / "rt.yaml"
        text.write_text(yaml.safe_dump(data, sort_keys=False))
        ref = _import_check_lock(wb, qa1, root, "rt-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        model_path = save_scripted(ThresholdNet(), tmp_path / "seg.ts")
        model = models.register_model(wb, qa1, model_path, tiny_spec())
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="rt-set", device="cpu"
        )
        assert summary.status == "completed" and summary.n_excluded == 0, summary
        _, frame = runs.run_results(wb, qa1, summary.run_uid)
        assert frame["reference_voxels"].astype(int).gt(0).all()
        _report_and_verify(wb, summary.run_uid)
    finally:
        wb.close()

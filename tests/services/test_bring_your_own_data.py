"""A hospital's own data end to end: real radiographs and 2D models; NIfTI references.

1. Chest radiographs: the real CR files of the ``pydicom-data`` package (two images in
   four transfer syntaxes each, JPEG 2000 included), de-identified with fresh UIDs, one
   case per image, labels keyed by accession number as a PACS exports them, strata from
   the DICOM header (Manufacturer), classified by a 2D TorchScript model and by the same
   network as ONNX.
2. CT segmentation on real CT (series built from pydicom's ``CT_small.dcm``, as in
   ``test_multiclass.py``) whose reference standard is one reader's NIfTI (RAS) and
   another's NRRD (LPS) masks listed in ``reference/masks.csv`` instead of DICOM SEG;
   per-case Dice is checked against Dice computed here from the HU thresholds.
3. The same real CT with two readers' RTSTRUCT outlines named by UID (readers from
   Operators' Name); per-case Dice is checked against masks computed by matplotlib's
   point-in-polygon test.

Each goes import -> check -> lock (with the protocol's pre-flight) -> protocol check ->
validate -> report -> sign -> seal -> verify through the services.
"""

from __future__ import annotations

import json
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

from workbench.dicom.volume import Volume, load_series
from workbench.inference.registry import ModelSpec
from workbench.services import models, preflight, protocols, reports, runs, testsets
from workbench.vocabulary import Verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_multiclass, imported late
import harness  # noqa: E402

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
    # the lock runs the protocol's pre-flight and refuses on a blocking problem
    info = testsets.lock_test_set(wb, qa, name, password=harness.ACCOUNTS["qa1"][2], protocol=ref)
    assert info.preflight is not None and info.preflight.ok, info.preflight
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


def _validate_cr_model(
    wb: object, qa: object, path: Path, fmt: str, protocol: str, test_set: str
) -> runs.RunSummary:
    """Register a radiograph model from the spec a user writes (JSON) and validate it."""
    spec = ModelSpec.from_json(
        json.dumps(_spec(f"cr-{fmt}", fmt, "abnormal")), source=f"{fmt}.json"
    )
    model = models.register_model(wb, qa, path, spec)
    summary = runs.validate(
        wb, qa, protocol=protocol, model=model.ref, test_set=test_set, device="cpu"
    )
    assert summary.status == "completed", summary.error
    return summary


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
            summary = _validate_cr_model(wb, qa1, path, fmt, ref, "cr-set")
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


#: HU thresholds of the real-CT segmentation: each reader's mask and the model's.
READER_HU = {"reader1": 150.0, "reader2": 250.0}
MODEL_HU = 200.0


class _BoneNet(torch.nn.Module):
    """Background and one class, HU >= MODEL_HU, from HU windowed to -1000..1000."""

    def __init__(self) -> None:
        super().__init__()
        self.level = (MODEL_HU + 999.5) / 2000.0  # half a HU below the edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 400.0 * (x - self.level)], dim=1)


def _bone_spec(spacing: float) -> ModelSpec:
    return ModelSpec.from_json(
        json.dumps(
            {
                "name": "bone-threshold",
                "version": "1.0",
                "task": "segmentation",
                "format": "torchscript",
                "intended_use": "Test fixture on real CT; not a clinical model.",
                "input": {
                    "target_spacing": [5.0, spacing, spacing],
                    "orientation": "LPS",
                    "hu_window": [-1000, 1000],
                    "roi_size": [64, 64, 4],
                    "output_classes": ["background", "bone"],
                    "segmentation_output": None,
                    "score_output": None,
                },
            }
        ),
        source="bone-threshold.json",
    )


def _real_ct_protocol(test_set: str) -> str:
    data = yaml.safe_load((harness.PROTOCOL_DIR / "lesion-segmentation-v1.yaml").read_text())
    data.update(
        id="real-ct-nifti",
        title="Bone on real CT against NIfTI and NRRD reference masks",
        intended_use="Pipeline test of file-based reference masks on real CT; not clinical.",
        test_set={"name": test_set},
        endpoints=[
            {
                "id": "dice-mean",
                "metric": "dice_mean",
                "primary": True,
                "ci": {"method": "bootstrap", "level": 0.95, "n_boot": 500, "seed": 0},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.7},
            }
        ],
        strata=[{"factor": "manufacturer", "min_n": 1, "assess": False}],
        discrepancy_rules=[],
        limitations=["Real CT slices replicated into series with threshold masks."],
    )
    data["reference_standard"] = {
        "description": "Two readers' masks (NIfTI, RAS; NRRD, LPS); voxels both marked.",
        "segmentation": {
            "source": "nifti",
            "readers": ["reader1", "reader2"],
            "rule": "intersection",
        },
        "readers": [
            {"id": r, "role": "segmentation reader", "qualification": "threshold fixture"}
            for r in ("reader1", "reader2")
        ],
    }
    data.pop("subgroup_acceptance", None)
    data["adjudication"]["required_before_approval"] = False
    return yaml.safe_dump(data, sort_keys=False)


def test_real_ct_segmentation_with_nifti_and_nrrd_reference_masks(tmp_path: Path) -> None:
    """Real CT (CT_small-based series), reader1's masks as NIfTI in RAS, reader2's as NRRD
    in LPS, both listed in masks.csv; per-case Dice checked against the HU thresholds."""
    import nrrd
    from test_multiclass import _ct_case

    root = tmp_path / "set"
    (root / "reference" / "masks").mkdir(parents=True)
    rows, labels = ["series_instance_uid,reader,path"], ["case_id,series_instance_uid"]
    expected = {}
    for i in range(4):
        case_id = f"ct{i}"
        paths = _ct_case(root, case_id, shift=7 * i, manufacturer=("GE", "Siemens")[i % 2])
        volume = load_series(paths)
        hu = volume.array.astype(np.float64)
        masks = {reader: hu >= level for reader, level in READER_HU.items()}
        xyz = masks["reader1"].astype(np.uint8).transpose(2, 1, 0)
        lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
        nifti = f"reference/masks/{case_id}-reader1.nii.gz"
        nib.save(nib.Nifti1Image(xyz, lps_to_ras @ volume.affine), str(root / nifti))
        nrrd_path = f"reference/masks/{case_id}-reader2.nrrd"
        nrrd.write(
            str(root / nrrd_path),
            masks["reader2"].astype(np.uint8).transpose(2, 1, 0),
            {
                "space": "left-posterior-superior",
                "space directions": volume.affine[:3, :3].T,
                "space origin": volume.affine[:3, 3],
            },
            index_order="F",
        )
        rows += [f"{volume.series_instance_uid},reader1,{nifti}"]
        rows += [f"{volume.series_instance_uid},reader2,{nrrd_path}"]
        labels.append(f"{case_id},{volume.series_instance_uid}")
        # both readers' masks count: a mask read misaligned changes the intersection
        reference = masks["reader1"] & masks["reader2"]
        model = hu >= MODEL_HU
        assert 0 < reference.sum() < model.sum()
        expected[case_id] = 2 * (model & reference).sum() / (model.sum() + reference.sum())
    (root / "reference" / "masks.csv").write_text("\n".join(rows) + "\n")
    (root / "reference" / "labels.csv").write_text("\n".join(labels) + "\n")
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "seg.yaml"
        text.write_text(_real_ct_protocol("nifti-set"))
        ref = _import_check_lock(wb, qa1, root, "nifti-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = tmp_path / "bone.ts"
        torch.jit.script(_BoneNet()).save(str(scripted))
        spacing = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PixelSpacing[0])
        model = models.register_model(wb, qa1, scripted, _bone_spec(spacing))
        report = preflight.check_protocol(
            wb, qa1, protocol=ref, test_set="nifti-set", model=model.ref
        )
        assert report.ok and report.n_analysable == 4, report.lines()
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="nifti-set", device="cpu"
        )
        assert summary.status == "completed" and summary.n_excluded == 0, summary
        results, frame = runs.run_results(wb, qa1, summary.run_uid)
        by_case = frame.set_index("case_id")
        for case_id, dice in expected.items():
            assert by_case.loc[case_id, "dice"] == pytest.approx(dice, abs=0.02), case_id
        endpoint = results.evaluation.endpoint("dice-mean")
        assert endpoint.estimate is not None
        mean = float(np.mean(list(expected.values())))
        assert endpoint.estimate.value == pytest.approx(mean, abs=0.02)
        assert endpoint.verdict is (Verdict.PASS if mean >= 0.7 else Verdict.FAIL)
        assert {s.stratum: s.n for s in endpoint.strata} == {"GE": 2, "Siemens": 2}
        _report_and_verify(wb, summary.run_uid)
    finally:
        wb.close()


def _rtstruct(volume: Volume, outlines: dict[int, np.ndarray], reader: str, out: Path) -> None:
    """A reader's RTSTRUCT: one closed planar contour per slice, ``outlines[k]`` the
    ``(column, row)`` vertices drawn on slice ``k``; the reader in Operators' Name."""
    from pydicom.dataset import FileMetaDataset

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
    for z, outline in sorted(outlines.items()):
        xyz = [volume.voxel_to_patient([z, r, c]) for c, r in outline]
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


def _outlines(hu: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """Each reader outlines the largest bone component (HU >= 200) of every slice:
    reader1 an octagon, reader2 a rectangle, around its extent. Vertices sit off the
    pixel centres so that no centre lies on an edge."""
    from scipy import ndimage

    out: dict[str, dict[int, np.ndarray]] = {"reader1": {}, "reader2": {}}
    for z in range(hu.shape[0]):
        labels, n = ndimage.label(hu[z] >= MODEL_HU)
        sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n + 1))
        rows, cols = np.nonzero(labels == int(np.argmax(sizes)) + 1)
        r0, r1, c0, c1 = rows.min() - 2.3, rows.max() + 2.3, cols.min() - 2.3, cols.max() + 2.3
        cr, cc, hr, hc = (r0 + r1) / 2, (c0 + c1) / 2, (r1 - r0) / 2, (c1 - c0) / 2
        angles = np.deg2rad(np.arange(8) * 45.0 + 22.5)
        out["reader1"][z] = np.stack([cc + hc * np.cos(angles), cr + hr * np.sin(angles)], 1)
        out["reader2"][z] = np.array(
            [[c0 + 1, r0 + 1], [c1 - 1, r0 + 1], [c1 - 1, r1 - 1], [c0 + 1, r1 - 1]]
        )
    return out


def _inside(outlines: dict[int, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """Pixel centres inside each slice's outline (matplotlib's point-in-polygon test)."""
    from matplotlib.path import Path as Polygon

    rows, cols = np.mgrid[: shape[1], : shape[2]]
    centres = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(float)
    mask = np.zeros(shape, dtype=bool)
    for z, outline in outlines.items():
        mask[z] = Polygon(outline).contains_points(centres).reshape(shape[1:])
    return mask


def test_real_ct_segmentation_with_rtstruct_references(tmp_path: Path) -> None:
    """Real CT (CT_small-based series), two readers' RTSTRUCTs named by UID (reader from
    Operators' Name); per-case Dice checked against masks computed here by matplotlib's
    point-in-polygon test on the pixel centres."""
    from test_multiclass import _ct_case

    root = tmp_path / "set"
    (root / "reference").mkdir(parents=True)
    labels, expected = ["case_id,series_instance_uid"], {}
    for i in range(4):
        case_id = f"ct{i}"
        paths = _ct_case(root, case_id, shift=7 * i, manufacturer=("GE", "Siemens")[i % 2])
        volume = load_series(paths)
        hu = volume.array.astype(np.float64)
        outlines = _outlines(hu)
        for reader, drawn in outlines.items():
            # Named by UID, as planning systems name them.
            _rtstruct(volume, drawn, reader, paths[0].parent.parent / f"{generate_uid()}.dcm")
        labels.append(f"{case_id},{volume.series_instance_uid}")
        reference = _inside(outlines["reader1"], hu.shape) | _inside(outlines["reader2"], hu.shape)
        model = hu >= MODEL_HU
        assert 0 < (model & ~reference).sum() and 0 < (reference & ~model).sum()
        expected[case_id] = 2 * (model & reference).sum() / (model.sum() + reference.sum())
    (root / "reference" / "labels.csv").write_text("\n".join(labels) + "\n")
    data = yaml.safe_load(_real_ct_protocol("rt-set"))
    data["id"] = "real-ct-rtstruct"
    data["reference_standard"]["segmentation"] = {
        "source": "rtstruct",
        "readers": ["reader1", "reader2"],
        "rule": "majority",  # two readers: their union
    }
    data["reference_standard"]["description"] = "Two readers' RTSTRUCT outlines, by majority."
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "rt.yaml"
        text.write_text(yaml.safe_dump(data, sort_keys=False))
        ref = _import_check_lock(wb, qa1, root, "rt-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = tmp_path / "bone.ts"
        torch.jit.script(_BoneNet()).save(str(scripted))
        spacing = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PixelSpacing[0])
        model = models.register_model(wb, qa1, scripted, _bone_spec(spacing))
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="rt-set", device="cpu"
        )
        assert summary.status == "completed" and summary.n_excluded == 0, summary
        results, frame = runs.run_results(wb, qa1, summary.run_uid)
        by_case = frame.set_index("case_id")
        for case_id, dice in expected.items():
            assert by_case.loc[case_id, "dice"] == pytest.approx(dice, abs=0.02), case_id
        endpoint = results.evaluation.endpoint("dice-mean")
        assert endpoint.estimate is not None
        assert endpoint.estimate.value == pytest.approx(np.mean(list(expected.values())), abs=0.02)
        _report_and_verify(wb, summary.run_uid)
    finally:
        wb.close()


def test_real_ct_label_map_seg_references_two_structures(tmp_path: Path) -> None:
    """Real CT with each reader's Label Map SEG (SOP Class ...66.7, written by highdicom,
    named by UID): two structures through check, lock, validate; per-case Dice of each
    structure checked against Dice computed here from the HU thresholds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))
    from test_multiclass import (
        BONE_HU,
        MODEL_SOFT_HIGH_HU,
        SOFT_HU,
        TwoStructureNet,
        _ct_case,
        _dice,
        _seg_protocol,
        _seg_spec,
    )
    from test_seg_labelmap import _label_map_seg

    from workbench.dicom.index import index_folder

    root = tmp_path / "set"
    (root / "reference").mkdir(parents=True)
    rows, expected = ["case_id,series_instance_uid"], {}
    for i in range(3):
        case_id = f"ct{i}"
        paths = _ct_case(root, case_id, shift=7 * i, manufacturer=("GE", "Siemens")[i % 2])
        _label_map_seg(paths, root / "cases" / case_id / "SEG")
        volume = load_series(paths)
        hu = volume.array.astype(np.float64)
        rows.append(f"{case_id},{volume.series_instance_uid}")
        expected[case_id] = {
            "bone": _dice(hu >= BONE_HU, hu >= BONE_HU),
            "soft": _dice(
                (hu >= SOFT_HU[0]) & (hu < MODEL_SOFT_HIGH_HU),
                (hu >= SOFT_HU[0]) & (hu < SOFT_HU[1]),
            ),
        }
    (root / "reference" / "labels.csv").write_text("\n".join(rows) + "\n")
    kinds = set(index_folder(root, workers=1).files.query("modality == 'SEG'")["kind"])
    if kinds != {"segmentation"}:
        pytest.skip(f"the DICOM index files Label Map SEGs as {sorted(kinds)}, not segmentation")
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "protocol.yaml"
        text.write_text(_seg_protocol("labelmap-set"))
        ref = _import_check_lock(wb, qa1, root, "labelmap-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = tmp_path / "two.ts"
        torch.jit.script(TwoStructureNet()).save(str(scripted))
        model = models.register_model(wb, qa1, scripted, _seg_spec())
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="labelmap-set", device="cpu"
        )
        assert summary.status == "completed" and summary.n_excluded == 0, summary
        results, frame = runs.run_results(wb, qa1, summary.run_uid)
        by_case = frame.set_index("case_id")
        for case_id, dice in expected.items():
            for structure in ("bone", "soft"):
                assert by_case.loc[case_id, f"{structure}/dice"] == pytest.approx(
                    dice[structure], abs=0.02
                ), (case_id, structure)
        bone = results.evaluation.endpoint("bone-dice")
        soft = results.evaluation.endpoint("soft-dice")
        assert (bone.verdict, soft.verdict) == (Verdict.PASS, Verdict.FAIL)
    finally:
        wb.close()


def test_real_radiographs_of_two_images_per_patient_cluster_by_patient_id(
    radiographs: Path, tmp_path: Path
) -> None:
    """Pairs of the real CR images share a PatientID; with ``cluster_by: patient_id`` the
    run's intervals treat the four patients as the units, and the report says so."""
    import shutil
    import subprocess

    from workbench.stats import auc, binary_metrics

    root = tmp_path / "paired"
    shutil.copytree(radiographs, root)
    for i, path in enumerate(sorted((root / "images").glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.PatientID = f"PAT{i // 2:02d}"
        ds.save_as(path)
    data = yaml.safe_load(_protocol_text("paired"))
    data["cluster_by"] = "patient_id"
    data["operating_point"] = {"threshold": 0.5}
    data["endpoints"][0]["ci"] = {"method": "delong", "level": 0.95}
    data["endpoints"].append(
        {
            "id": "accuracy",
            "metric": "accuracy",
            "primary": False,
            "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.0},
        }
    )
    text = tmp_path / "protocol.yaml"
    text.write_text(yaml.safe_dump(data, sort_keys=False))
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        ref = _import_check_lock(wb, qa1, root, "paired", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = tmp_path / "cr.ts"
        torch.jit.script(_Radiograph()).save(str(scripted))
        summary = _validate_cr_model(wb, qa1, scripted, "torchscript", ref, "paired")
        results, frame = runs.run_results(wb, qa1, summary.run_uid)
        assert sorted(frame["patient_id"]) == sorted(f"PAT{i // 2:02d}" for i in range(8))
        y = frame["abnormal"].astype(int).to_numpy()
        s = frame["score"].astype(float).to_numpy()
        patients = frame["patient_id"].to_numpy()
        by_id = {e.endpoint_id: e for e in results.endpoints}
        assert by_id["auc"].estimate == auc(y, s, ci="delong", clusters=patients)
        expected = binary_metrics(y, s, threshold=0.5, clusters=patients).accuracy
        assert by_id["accuracy"].estimate == expected
        assert expected is not None and "4 clusters, 8 cases" in expected.method
        report = reports.build_report(wb, qa1, summary.run_uid)
        pdf = subprocess.run(
            ["pdftotext", report.pdf_path or "", "-"], capture_output=True, check=True
        ).stdout.decode()
        assert "clustered by patient_id" in " ".join(pdf.split())
    finally:
        wb.close()

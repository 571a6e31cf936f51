"""Multi-structure segmentation and multi-class labels end to end, on real images.

1. Two structures on real CT: series built from pydicom's ``CT_small.dcm`` (a real GE
   abdominal CT slice) with fresh UIDs, a reference DICOM SEG per case made by highdicom
   with two segments ("Bone", "Soft tissue"; one case lacks the second), named by UID
   as tools name them, its reader in Content Creator's Name; a 3-class TorchScript
   model. Two per-structure endpoints go through check -> lock -> validate -> report ->
   seal -> verify and pass and fail independently; the per-case Dice of each structure
   is checked against Dice computed here from the HU thresholds that define the
   reference and the model.
2. Multi-class labels on real radiographs (``pydicom-data`` CR files): a labels column
   ``finding: normal|nodule|mass``, a 3-class softmax model; a one-vs-rest AUC endpoint
   and a Cohen's kappa endpoint (model's arg-max class vs the reference class), both
   checked against scikit-learn on the stored per-case outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
import yaml
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from workbench.inference.registry import ModelSpec
from workbench.services import models, preflight, protocols, runs
from workbench.vocabulary import CaseStatus, Verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from test_bring_your_own_data import (  # noqa: E402
    CR_FILES,
    _deidentify,
    _import_check_lock,
    _report_and_verify,
)

#: The real CT slice every series is built from (GE, 128 x 128, 0.66 mm pixels).
CT_SMALL = str(get_testdata_file("CT_small.dcm"))

#: HU thresholds that define the reference structures (readers) and the model's classes.
BONE_HU = 200.0
SOFT_HU = (-100.0, 150.0)  # reference soft tissue: [-100, 150) HU
MODEL_SOFT_HIGH_HU = 60.0  # the model calls soft tissue only up to 60 HU
N_SLICES = 6


#: Identifying attributes of CT_small.dcm beyond those the radiographs carry.
_ALSO_REMOVE = ("OtherPatientIDsSequence", "PatientAddress", "AdditionalPatientHistory")


def _hu(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _ct_case(root: Path, case_id: str, shift: int, manufacturer: str) -> list[Path]:
    """A six-slice CT series of the real CT_small image, shifted per slice, fresh UIDs."""
    template = pydicom.dcmread(CT_SMALL)
    _deidentify(template)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    base = template.pixel_array
    out = []
    folder = root / "cases" / case_id / "CT"
    folder.mkdir(parents=True)
    for k in range(N_SLICES):
        ds = pydicom.dcmread(CT_SMALL)
        _deidentify(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.AccessionNumber = case_id.upper(), f"ACC-{case_id}"
        ds.PatientBirthDate = ""  # type 2, emptied by de-identification
        for keyword in _ALSO_REMOVE:
            if keyword in ds:
                delattr(ds, keyword)
        ds.Manufacturer = manufacturer
        ds.InstanceNumber = k + 1
        x, y, z = (float(v) for v in template.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.SliceLocation = z + 5.0 * k
        ds.PixelData = np.ascontiguousarray(np.roll(base, shift + 3 * k, axis=1)).tobytes()
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def _reference_labels(hu: np.ndarray, *, with_soft: bool) -> np.ndarray:
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[hu >= BONE_HU] = 1
    if with_soft:
        labels[(hu >= SOFT_HU[0]) & (hu < SOFT_HU[1])] = 2
    return labels


def _write_reference_seg(ct_paths: list[Path], out_dir: Path, *, with_soft: bool) -> None:
    """The reader's SEG made by highdicom: segments Bone and (optionally) Soft tissue."""
    sources = sorted(
        (pydicom.dcmread(p) for p in ct_paths), key=lambda d: float(d.ImagePositionPatient[2])
    )
    hu = np.stack([_hu(d, d.pixel_array) for d in sources])
    labels = _reference_labels(hu, with_soft=with_soft)
    names = ["Bone", "Soft tissue"] if with_soft else ["Bone"]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.AnatomicalStructure,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, name in enumerate(names, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack([labels == i for i in range(1, len(names) + 1)], axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Hospital PACS",
        manufacturer_model_name="Segmentation editor",
        software_versions="1.0",
        device_serial_number="1",
        content_creator_name="Reader1^Test",
        omit_empty_frames=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_dir / f"{seg.SOPInstanceUID}.dcm")


class TwoStructureNet(torch.nn.Module):
    """Background, bone (HU >= 200) and soft tissue (-100 <= HU < 60) from windowed HU."""

    def __init__(self) -> None:
        super().__init__()
        # x = (HU + 1000) / 2000 (hu_window -1000..1000); half a HU below each edge
        self.bone = (BONE_HU + 999.5) / 2000.0
        self.low = (SOFT_HU[0] + 999.5) / 2000.0
        self.high = (MODEL_SOFT_HIGH_HU + 999.5) / 2000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bone = 400.0 * (x - self.bone)
        soft = 400.0 * torch.minimum(x - self.low, self.high - x)
        return torch.cat([torch.zeros_like(x), bone, soft], dim=1)


def _seg_spec() -> ModelSpec:
    spacing = float(pydicom.dcmread(CT_SMALL).PixelSpacing[0])
    return ModelSpec.from_json(
        json.dumps(
            {
                "name": "two-structures",
                "version": "1.0",
                "task": "segmentation",
                "format": "torchscript",
                "intended_use": "Test fixture on real CT; not a clinical model.",
                "input": {
                    "target_spacing": [5.0, spacing, spacing],
                    "orientation": "LPS",
                    "hu_window": [-1000, 1000],
                    "roi_size": [64, 64, 4],
                    "output_classes": ["background", "bone", "soft"],
                    "segmentation_output": None,
                    "score_output": None,
                },
            }
        ),
        source="two-structures.json",
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, float]]]:
    """Four real-CT cases; case ct3's reference lacks the soft-tissue segment.

    Returns the folder and the expected Dice per case and structure, computed from the
    HU thresholds (the model is exact on its own grid: the target spacing is the
    source spacing).
    """
    root = tmp_path_factory.mktemp("ct") / "set"
    (root / "reference").mkdir(parents=True)
    rows = ["case_id,series_instance_uid,site"]
    expected: dict[str, dict[str, float]] = {}
    for i in range(4):
        case_id = f"ct{i}"
        paths = _ct_case(root, case_id, shift=7 * i, manufacturer=("GE", "Siemens")[i % 2])
        with_soft = i != 3
        _write_reference_seg(paths, root / "cases" / case_id / "SEG", with_soft=with_soft)
        ds = pydicom.dcmread(paths[0])
        rows.append(f"{case_id},{ds.SeriesInstanceUID},site{i % 2}")
        hu = np.stack([_hu(d, d.pixel_array) for d in map(pydicom.dcmread, paths)])
        model_soft = (hu >= SOFT_HU[0]) & (hu < MODEL_SOFT_HIGH_HU)
        expected[case_id] = {"bone": _dice(hu >= BONE_HU, hu >= BONE_HU)}
        if with_soft:
            reference_soft = (hu >= SOFT_HU[0]) & (hu < SOFT_HU[1])
            expected[case_id]["soft"] = _dice(model_soft, reference_soft)
    (root / "reference" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, expected


def test_label_map_seg_round_trip_and_conformance(tmp_path: Path) -> None:
    """A model's 3-class label map as a two-segment SEG: each class reads back by number
    and by label, their union is the foreground, and dciodvfy reports no error."""
    from workbench.dicom.reference import read_structure_mask, reference_structures
    from workbench.dicom.seg import read_seg_mask, write_seg
    from workbench.dicom.volume import load_series
    from workbench.errors import SegmentationError

    paths = _ct_case(tmp_path, "ct9", shift=5, manufacturer="GE")
    volume = load_series(paths)
    hu = volume.array.astype(np.float64)
    labels = _reference_labels(hu, with_soft=True)
    out = write_seg(
        labels,
        paths,
        tmp_path / "pred.dcm",
        algorithm_name="two-structures",
        algorithm_version="1.0",
        segment_labels=["bone", "soft"],
    )
    assert reference_structures(out, "seg") == ("bone", "soft")
    for k, name in ((1, "bone"), (2, "soft")):
        expected = labels == k
        assert expected.any()
        np.testing.assert_array_equal(read_seg_mask(out, volume, segment_number=k), expected)
        np.testing.assert_array_equal(read_structure_mask(out, volume, "seg", name), expected)
    np.testing.assert_array_equal(read_seg_mask(out, volume), labels > 0)
    with pytest.raises(SegmentationError, match="expected one segment labelled 'liver'"):
        read_seg_mask(out, volume, segment_label="liver")
    with pytest.raises(SegmentationError, match="values 0 to 2"):
        write_seg(labels + 1, paths, tmp_path / "bad.dcm", segment_labels=["bone", "soft"])
    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, check=False)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        assert not errors, errors


def test_nifti_label_map_structures_by_value(tmp_path: Path) -> None:
    """A multi-label NIfTI (RAS affine): each structure is a label value; an absent value
    is a missing structure, named with the values found."""
    import nibabel as nib

    from workbench.dicom.reference import read_structure_mask, reference_structures
    from workbench.dicom.volume import load_series
    from workbench.errors import SegmentationError

    paths = _ct_case(tmp_path, "ct8", shift=2, manufacturer="GE")
    volume = load_series(paths)
    labels = _reference_labels(volume.array.astype(np.float64), with_soft=True)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = tmp_path / "labels.nii.gz"
    image = nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), lps_to_ras @ volume.affine)
    nib.save(image, str(path))
    assert reference_structures(path, "nifti") == (1, 2)
    for value in (1, 2):
        mask = read_structure_mask(path, volume, "nifti", value)
        np.testing.assert_array_equal(mask, labels == value)
    with pytest.raises(SegmentationError, match=r"expected the label\(s\) \[3\]"):
        read_structure_mask(path, volume, "nifti", 3)
    with pytest.raises(SegmentationError, match="label value"):
        read_structure_mask(path, volume, "nifti", "Bone")


def _seg_protocol(test_set: str) -> str:
    data = yaml.safe_load((harness.PROTOCOL_DIR / "lesion-segmentation-v1.yaml").read_text())
    data.update(
        id="two-structures",
        title="Bone and soft tissue on real CT",
        intended_use="Pipeline test of a multi-structure protocol; not clinical.",
        test_set={"name": test_set},
        endpoints=[
            {
                "id": "bone-dice",
                "metric": "dice_mean",
                "structure": "bone",
                "ci": {"method": "bootstrap", "level": 0.95, "n_boot": 500},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.9},
            },
            {
                "id": "soft-dice",
                "metric": "dice_mean",
                "structure": "soft",
                "ci": {"method": "bootstrap", "level": 0.95, "n_boot": 500},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.9},
            },
            {
                "id": "soft-hd95",
                "metric": "hd95_median",
                "structure": "soft",
                "primary": False,
                "ci": {"method": "bootstrap", "level": 0.95, "n_boot": 500},
                "criterion": {"statistic": "value", "operator": "<=", "threshold": 50.0},
            },
        ],
        strata=[{"factor": "manufacturer", "min_n": 1, "assess": False}],
        discrepancy_rules=[
            {
                "id": "low-soft-dice",
                "kind": "metric_threshold",
                "column": "dice",
                "structure": "soft",
                "operator": "<",
                "threshold": 0.99,
            }
        ],
        limitations=["Four real CT slices replicated into series: a pipeline test."],
    )
    data["reference_standard"] = {
        "description": "One reader's DICOM SEG with two segments.",
        "segmentation": {
            "readers": ["reader1"],
            "rule": "reader1",
            "structures": [
                {"name": "bone", "reference": "Bone", "model_class": "bone"},
                {"name": "soft", "reference": "Soft tissue", "model_class": "soft"},
            ],
        },
        "readers": [
            {"id": "reader1", "role": "segmentation reader", "qualification": "test reader"}
        ],
    }
    data.pop("subgroup_acceptance", None)
    data["adjudication"]["required_before_approval"] = False
    return yaml.safe_dump(data, sort_keys=False)


def _pdf_text(path: str) -> str:
    out = subprocess.run(["pdftotext", "-layout", path, "-"], capture_output=True, check=True)
    return out.stdout.decode("utf-8", "replace")


def test_two_structures_on_real_ct_pass_and_fail_independently(
    ct_set: tuple[Path, dict[str, dict[str, float]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, expected = ct_set
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "protocol.yaml"
        text.write_text(_seg_protocol("ct-set"))
        ref = _import_check_lock(wb, qa1, root, "ct-set", text)

        wrong = _seg_spec().model_copy(
            update={
                "name": "wrong-classes",
                "input": _seg_spec().input.model_copy(
                    update={"output_classes": ["background", "bone", "liver"]}
                ),
            }
        )
        scripted = tmp_path / "two.ts"
        torch.jit.script(TwoStructureNet()).save(str(scripted))
        wrong_model = models.register_model(wb, qa1, scripted, wrong)
        report = preflight.check_protocol(
            wb, qa1, protocol=ref, test_set="ct-set", model=wrong_model.ref
        )
        lines = "\n".join(report.lines())
        assert not report.ok, lines
        assert "structures[1].model_class" in lines and "'soft'" in lines, lines
        assert "structures[1] (soft)" in lines and "missing for 1 of 4" in lines, lines

        model = models.register_model(wb, qa1, scripted, _seg_spec())
        report = preflight.check_protocol(wb, qa1, protocol=ref, test_set="ct-set", model=model.ref)
        assert report.ok and report.n_analysable == 4, report.lines()
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="ct-set", device="cpu"
        )
        assert summary.status == "completed", summary.error
        assert summary.n_completed == 4 and summary.n_excluded == 0
        results, frame = runs.run_results(wb, qa1, summary.run_uid)

        bone, soft = (
            results.evaluation.endpoint("bone-dice"),
            results.evaluation.endpoint("soft-dice"),
        )
        assert (bone.structure, soft.structure) == ("bone", "soft")
        assert bone.verdict is Verdict.PASS and soft.verdict is Verdict.FAIL, (bone, soft)
        assert summary.verdict is Verdict.FAIL
        assert (bone.n_cases, soft.n_cases) == (4, 3)
        # strata per structure: ct3 (Siemens) has no soft-tissue reference
        assert {s.stratum: s.n for s in bone.strata} == {"GE": 2, "Siemens": 2}
        assert {s.stratum: s.n for s in soft.strata} == {"GE": 2, "Siemens": 1}
        accounting = {s.structure: s for s in results.accounting.structures}
        assert accounting["bone"].excluded == ()
        assert [n.case_id for n in accounting["soft"].excluded] == ["ct3"]
        assert "Soft tissue" in accounting["soft"].excluded[0].reason

        by_case = frame.set_index("case_id")
        for case_id, dice in expected.items():
            assert by_case.loc[case_id, "bone/dice"] == pytest.approx(dice["bone"], abs=0.02)
            if "soft" in dice:
                assert by_case.loc[case_id, "soft/dice"] == pytest.approx(dice["soft"], abs=0.02)
        assert pd_isna(by_case.loc["ct3", "soft/dice"])
        soft_mean = np.mean([d["soft"] for d in expected.values() if "soft" in d])
        assert soft.estimate is not None
        assert soft.estimate.value == pytest.approx(soft_mean, abs=0.02)
        assert soft_mean < 0.9 <= min(d["bone"] for d in expected.values())

        run = runs.get_run(wb, qa1, summary.run_uid)
        assert run.n_discrepancies == 3  # the soft-tissue rule skips ct3

        pdf = _report_and_verify_path(wb, summary.run_uid)
        text_pdf = _pdf_text(pdf)
        assert "(bone)" in text_pdf and "(soft)" in text_pdf
        assert "structure soft only" in text_pdf  # ct3's exclusion from soft, with reason

        page = _results_page(wb, workdir, summary.run_uid, monkeypatch)
        table = page.dataframe[0].value
        assert table["structure"].tolist() == ["bone", "soft", "soft"]
        shown = [m.value for m in page.markdown]
        assert any("Structure soft" in text and "1 case(s)" in text for text in shown), shown
    finally:
        wb.close()


def _results_page(wb: object, workdir: Path, run_uid: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The results page of a run, rendered by Streamlit's AppTest as qa1."""
    from streamlit.testing.v1 import AppTest

    from workbench.app import _session
    from workbench.services import accounts

    monkeypatch.setenv("WORKBENCH_HOME", str(workdir))
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    main = Path(__file__).resolve().parents[2] / "workbench" / "app" / "main.py"
    at = AppTest.from_file(str(main), default_timeout=120)
    _actor, token = accounts.open_session(wb, "qa1", harness.ACCOUNTS["qa1"][2])  # type: ignore[arg-type]
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = "qa1"
    at.run()
    at.query_params["run"] = run_uid
    at.switch_page("pages/results.py").run()
    assert not at.exception, at.exception
    return at


def pd_isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _report_and_verify_path(wb: object, run_uid: str) -> str:
    """Build, sign, seal and verify the run's report; the sealed PDF's path."""
    from workbench.services import reports

    _report_and_verify(wb, run_uid)
    info = reports.latest_report(wb, run_uid)  # type: ignore[arg-type]
    assert info is not None and info.sealed_path, info
    return str(info.sealed_path)


# -- multi-class labels ---------------------------------------------------------------------

CLASSES = ["normal", "nodule", "mass"]
#: The reference class of each CR image (in CR_FILES order): six agree with the model's
#: class, two (RG3_J2KR, RG1_J2KI) do not.
FINDINGS = ["nodule", "normal", "mass", "nodule", "normal", "mass", "normal", "normal"]


class ThreeClassRadiograph(torch.nn.Module):
    """Three logits from the image's mean intensity (after min-max normalisation).

    The two radiographs of pydicom-data have means near 0.675 (RG3) and 0.743 / 0.745
    (RG1, lossy and lossless); the class centres put them in normal, nodule and mass.
    """

    def __init__(self) -> None:
        super().__init__()
        self.centres = torch.nn.Parameter(torch.tensor([0.70, 0.7434, 0.7460]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3)).unsqueeze(1)
        return -1.0e6 * (mean - self.centres) ** 2


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real CR images, one case each, a three-class finding per case."""
    root = tmp_path_factory.mktemp("cr") / "set"
    (root / "images").mkdir(parents=True)
    (root / "reference").mkdir()
    lines = ["case_id,accession_number,finding"]
    for i, name in enumerate(CR_FILES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(get_testdata_file(name)))
        _deidentify(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber, ds.PatientID = f"ACC{i:04d}", f"CASE{i:03d}"
        ds.save_as(root / "images" / f"image{i:03d}.dcm")
        lines.append(f"cr{i:03d},ACC{i:04d},{FINDINGS[i]}")
    (root / "reference" / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _cls_protocol(test_set: str) -> str:
    data = yaml.safe_load((harness.PROTOCOL_DIR / "malignancy-classification-v1.yaml").read_text())
    data.update(
        id="cr-finding",
        title="Finding class on chest radiographs",
        test_set={"name": test_set},
        modalities=["CR", "DX"],
        data_quality_suite="projection-test-set-v1",
        discrepancy_rules=[],
        endpoints=[
            {
                "id": "abnormal-auc",
                "metric": "auc",
                "ci": {"method": "delong", "level": 0.95},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.0},
            },
            {
                "id": "finding-kappa",
                "metric": "kappa_multiclass",
                "primary": False,
                "ci": {"level": 0.95},
                "criterion": {"statistic": "value", "operator": ">=", "threshold": -1.0},
            },
        ],
        strata=[{"factor": "manufacturer", "min_n": 2, "assess": False}],
        limitations=["Eight real radiographs with assigned findings: a pipeline test."],
    )
    data["reference_standard"] = {
        "description": "Assigned finding per radiograph, keyed by accession number.",
        "labels_column": "finding",
        "labels_key": "accession_number",
        "classes": CLASSES,
        "positive_classes": ["nodule", "mass"],
    }
    for key in ("subgroup_acceptance", "operating_point", "decision_curve", "calibration"):
        data.pop(key, None)
    data["adjudication"]["required_before_approval"] = False
    return yaml.safe_dump(data, sort_keys=False)


def test_multiclass_labels_one_vs_rest_and_kappa(radiographs: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = tmp_path / "protocol.yaml"
        text.write_text(_cls_protocol("cr-set"))
        ref = _import_check_lock(wb, qa1, radiographs, "cr-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = tmp_path / "three.ts"
        torch.jit.script(ThreeClassRadiograph()).save(str(scripted))
        spec = {
            "name": "cr-three-class",
            "version": "1.0",
            "task": "classification",
            "format": "torchscript",
            "intended_use": "Test fixture on real radiographs; not a clinical model.",
            "input": {
                "spatial_dims": 2,
                "roi_size": [64, 64],
                "normalization": "min_max",
                "segmentation_output": None,
                "score_output": "finding",
                "score_activation": "softmax",
                "score_classes": CLASSES,
                "positive_class": "mass",
            },
        }
        model = models.register_model(
            wb, qa1, scripted, ModelSpec.from_json(json.dumps(spec), source="spec.json")
        )
        report = preflight.check_protocol(wb, qa1, protocol=ref, test_set="cr-set", model=model.ref)
        assert report.ok, report.lines()
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="cr-set", device="cpu"
        )
        assert summary.status == "completed", summary.error
        assert summary.n_completed == len(CR_FILES)
        results, frame = runs.run_results(wb, qa1, summary.run_uid)
        frame = frame.set_index("case_id").sort_index()
        assert (frame["status"] == CaseStatus.COMPLETED.value).all()
        probabilities = frame[[f"probability:{c}" for c in CLASSES]].astype(float)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        argmax = [CLASSES[i] for i in probabilities.to_numpy().argmax(axis=1)]
        assert frame["predicted_class"].tolist() == argmax
        assert len(set(argmax)) >= 2, argmax  # a model that separates the images
        # one-vs-rest: the score is P(nodule) + P(mass), the truth finding != normal
        score = frame["score"].astype(float)
        np.testing.assert_allclose(
            score,
            probabilities["probability:nodule"] + probabilities["probability:mass"],
            atol=1e-6,
        )
        truth = (frame["finding"] != "normal").astype(int)
        assert frame["y_true"].astype(int).tolist() == truth.tolist()
        auc = results.evaluation.endpoint("abnormal-auc").estimate
        assert auc is not None
        assert auc.value == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
        kappa = results.evaluation.endpoint("finding-kappa")
        assert kappa.estimate is not None
        expected = cohen_kappa_score(frame["finding"].tolist(), argmax, labels=CLASSES)
        assert 0.0 < expected < 1.0  # two of eight disagree
        assert kappa.estimate.value == pytest.approx(expected, abs=1e-12)
        assert kappa.estimate.ci_low <= kappa.estimate.value <= kappa.estimate.ci_high
        assert kappa.estimate.n == len(CR_FILES)
        _report_and_verify(wb, summary.run_uid)
    finally:
        wb.close()


def test_preflight_names_class_mismatches() -> None:
    """Pure pre-flight: labels outside the classes, a model without class outputs for the
    kappa endpoint, and score_classes that do not name every reference class."""
    import pandas as pd

    from workbench.protocols import load_protocol
    from workbench.protocols.cases import CaseSpec

    protocol = load_protocol(_cls_protocol("cr-set"))
    labels = pd.DataFrame(
        {
            "case_id": ["a", "b"],
            "accession_number": ["A1", "A2"],
            "finding": ["nodule", "effusion"],
        }
    )
    cases = [
        CaseSpec(
            case_id=c,
            series_uid=f"1.2.{i}",
            image_paths=(Path(f"{c}.dcm"),),
            attributes={"accession_number": a, "finding": f},
        )
        for i, (c, a, f) in enumerate(
            zip(labels["case_id"], labels["accession_number"], labels["finding"], strict=True)
        )
    ]
    single = {
        "name": "single",
        "version": "1",
        "task": "classification",
        "format": "torchscript",
        "intended_use": "Tests only.",
        "input": {"spatial_dims": 2, "roi_size": [8, 8], "segmentation_output": None},
    }
    problems = preflight.preflight_cases(
        protocol, cases, labels, test_set_name="cr-set", spec=ModelSpec.model_validate(single)
    )
    lines = [p.line() for p in problems if p.blocking]
    assert any("labels values" in x and "'effusion'" in x and "finding" in x for x in lines), lines
    assert any("input.score_classes" in x and "finding-kappa" in x for x in lines), lines
    two = {
        **single,
        "input": {
            **single["input"],  # type: ignore[dict-item]
            "score_activation": "softmax",
            "score_classes": ["normal", "nodule"],
            "positive_class": "nodule",
        },
    }
    problems = preflight.preflight_cases(
        protocol, cases, labels, test_set_name="cr-set", spec=ModelSpec.model_validate(two)
    )
    lines = [p.line() for p in problems if p.blocking]
    assert any("reference_standard.classes" in x and "['mass']" in x for x in lines), lines

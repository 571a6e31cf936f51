from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from inference_fixtures import tiny_spec

from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import load_series
from workbench.errors import InferenceError
from workbench.inference.executor import SerialExecutor
from workbench.inference.loading import load_model
from workbench.inference.runner import (
    CaseInput,
    CaseOutput,
    CaseStatus,
    cases_from_test_set,
    mask_sha256,
    run_inference,
    seg_uids,
)


def _run(model_path: Path, test_set: Path, out: Path, **kwargs):
    spec = tiny_spec()
    model = load_model(model_path, spec, "cpu")
    return run_inference(cases_from_test_set(test_set), model, spec, out_dir=out, **kwargs)


def test_end_to_end(tiny_test_set: Path, model_dir: Path, tmp_path: Path) -> None:
    seen: list[CaseOutput] = []
    progress: list[tuple[int, int, str]] = []
    summary = _run(
        model_dir / "threshold.ts",
        tiny_test_set,
        tmp_path / "run",
        on_case=seen.append,
        progress=lambda d, t, m: progress.append((d, t, m)),
    )
    ids = [c.case_id for c in cases_from_test_set(tiny_test_set)]
    assert [o.case_id for o in seen] == ids == [o.case_id for o in summary.outputs]
    assert (summary.total, summary.completed, summary.failed, summary.skipped) == (4, 4, 0, 0)
    assert progress[-1][:2] == (4, 4)
    env = json.loads(summary.environment_path.read_text())
    assert env["packages"]["torch"] and env["device"]["type"] == "cpu"
    assert env["deterministic"]["use_deterministic_algorithms"] is True
    assert env["model"]["digest"] == summary.model_digest
    for output in summary.outputs:
        assert output.status is CaseStatus.COMPLETED and output.reason is None
        assert 0.0 <= output.score <= 1.0
        ct = sorted((tiny_test_set / "cases" / output.case_id / "CT").glob("*.dcm"))
        volume = load_series(ct)
        mask = read_seg_mask(output.mask_path, volume)
        assert mask.shape == volume.shape
        assert mask_sha256(mask) == output.mask_sha256
        assert int(mask.sum()) == output.mask_voxels
        # the mask is the model's threshold applied on the source grid (up to resampling)
        expected = volume.array > -160 + 0.58 * 400
        agree = (mask == expected).mean()
        assert agree > 0.9
        for axis in range(3):
            assert agree > (mask == np.flip(expected, axis=axis)).mean()
        seg = pydicom.dcmread(output.mask_path)
        assert seg.Modality == "SEG"
        item = seg.SegmentSequence[0]
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("tiny-threshold", "0.1")
        assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == seg_uids(
            summary.model_digest, output.case_id
        )
        assert CaseOutput.from_dict(json.loads(json.dumps(output.to_dict()))) == output


def test_seg_is_dciodvfy_clean(tiny_test_set: Path, model_dir: Path, tmp_path: Path) -> None:
    dciodvfy = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
    if not Path(dciodvfy).exists():
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    summary = _run(model_dir / "threshold.ts", tiny_test_set, tmp_path / "run")
    for output in summary.outputs:
        result = subprocess.run(
            [dciodvfy, str(output.mask_path)], capture_output=True, text=True, check=False
        )
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
        assert errors == [], errors


def test_reruns_are_byte_identical(tiny_test_set: Path, model_dir: Path, tmp_path: Path) -> None:
    first = _run(model_dir / "threshold.ts", tiny_test_set, tmp_path / "a")
    second = _run(
        model_dir / "threshold.ts", tiny_test_set, tmp_path / "b", executor=SerialExecutor()
    )
    for a, b in zip(first.outputs, second.outputs, strict=True):
        assert a.mask_path.read_bytes() == b.mask_path.read_bytes()
        assert (a.seg_sha256, a.mask_sha256, a.score) == (b.seg_sha256, b.mask_sha256, b.score)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("nan", "NaN or infinite"),
        ("raising", "simulated model failure"),
        ("out_of_range", "score out of range"),
        ("wrong_shape", "wrong segmentation output shape"),
    ],
)
def test_bad_models_fail_cases_with_reasons(
    tiny_test_set: Path, model_dir: Path, tmp_path: Path, model: str, reason: str
) -> None:
    seen: list[CaseOutput] = []
    summary = _run(model_dir / f"{model}.ts", tiny_test_set, tmp_path / "run", on_case=seen.append)
    assert (summary.completed, summary.failed) == (0, 4)
    assert len(seen) == 4
    for output in summary.outputs:
        assert output.status is CaseStatus.FAILED
        assert reason in output.reason
        assert output.mask_path is None and output.score is None


def test_unreadable_case_and_time_limit(
    tiny_test_set: Path, model_dir: Path, tmp_path: Path
) -> None:
    spec = tiny_spec()
    model = load_model(model_dir / "threshold.ts", spec, "cpu")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    cases = [*cases_from_test_set(tiny_test_set)[:1], CaseInput("broken", (junk,))]
    summary = run_inference(cases, model, spec, out_dir=tmp_path / "run")
    assert [o.status for o in summary.outputs] == [CaseStatus.COMPLETED, CaseStatus.FAILED]
    assert "reading failed: DicomReadError" in summary.outputs[1].reason
    timed = run_inference(cases[:1], model, spec, out_dir=tmp_path / "t", case_timeout_s=0.0)
    assert timed.failed == 1 and "time limit exceeded" in timed.outputs[0].reason


def test_completed_cases_are_skipped(tiny_test_set: Path, model_dir: Path, tmp_path: Path) -> None:
    cases = cases_from_test_set(tiny_test_set)
    summary = _run(
        model_dir / "threshold.ts",
        tiny_test_set,
        tmp_path / "run",
        completed={cases[0].case_id, cases[2].case_id},
    )
    assert (summary.skipped, summary.completed) == (2, 2)
    assert [o.case_id for o in summary.outputs] == [cases[1].case_id, cases[3].case_id]


def test_invalid_inputs(tiny_test_set: Path, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="case_id should be"):
        CaseInput("../escape", ())
    spec = tiny_spec()
    model = load_model(model_dir / "threshold.ts", spec, "cpu")
    case = cases_from_test_set(tiny_test_set)[0]
    with pytest.raises(InferenceError, match="duplicates"):
        run_inference([case, case], model, spec, out_dir=tmp_path)
    other = tiny_spec(name="other")
    with pytest.raises(Exception, match="loaded model is"):
        run_inference([case], model, other, out_dir=tmp_path)


def test_mask_sha256_is_of_the_mask_bytes() -> None:
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 2, 3] = True
    import hashlib

    assert mask_sha256(mask) == hashlib.sha256(mask.astype(np.uint8).tobytes()).hexdigest()

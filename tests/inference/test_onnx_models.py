"""ONNX models: loading through ONNX Runtime, the same runner path as TorchScript, 2D inputs."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from inference_fixtures import ThresholdNet, tiny_spec
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from workbench.errors import ModelError
from workbench.inference.loading import (
    OnnxModule,
    ScoreSelector,
    check_model_runs,
    load_model,
    onnx_providers,
)
from workbench.inference.registry import ModelFormat, ModelSpec
from workbench.inference.runner import CaseInput, CaseStatus, cases_from_test_set, run_inference

CR_FILE = "RG3_UNCI.dcm"  # pydicom-data: a real CR chest radiograph, MONOCHROME1, no spacing


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, outputs: list[str]):
    """Export with a dynamic batch axis (the sliding-window batch may be smaller at the end)."""
    axes = {"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=axes,
            dynamo=False,
        )
    return path


class Classifier2D(torch.nn.Module):
    """Three logits from the mean and spread of each of three input channels."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(6, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return self.linear(features)


def cls2d_spec(**input_update: object) -> ModelSpec:
    values = {
        "spatial_dims": 2,
        "in_channels": 3,
        "roi_size": (64, 64),
        "normalization": "min_max",
        "segmentation_output": None,
        "score_output": "logits",
        "score_classes": ["normal", "pneumonia", "other"],
        "positive_class": "pneumonia",
        "score_activation": "softmax",
        **input_update,
    }
    return ModelSpec.model_validate(
        {
            "name": "cxr-cls",
            "version": "1.0",
            "task": "classification",
            "format": "onnx",
            "input": values,
        }
    )


@pytest.fixture(scope="module")
def threshold_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    return export_onnx(
        ThresholdNet(), torch.rand(1, 1, 16, 16, 8), folder / "t.onnx", ["seg", "malignancy"]
    )


@pytest.fixture(scope="module")
def classifier_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx2d")
    return export_onnx(Classifier2D(), torch.rand(1, 3, 64, 64), folder / "c.onnx", ["logits"])


def onnx_spec() -> ModelSpec:
    return tiny_spec().model_copy(update={"format": ModelFormat.ONNX})


def test_onnx_loads_on_the_cpu_provider(threshold_onnx: Path) -> None:
    loaded = load_model(threshold_onnx, onnx_spec(), "cpu")
    assert isinstance(loaded.module, OnnxModule)
    assert loaded.module.providers == ["CPUExecutionProvider"]
    assert loaded.source == "t.onnx"
    x = torch.rand(2, 1, 16, 16, 8)
    out = loaded.module(x)
    expected = ThresholdNet()(x)
    assert set(out) == {"seg", "malignancy"}
    assert torch.allclose(out["seg"], expected["seg"], atol=1e-5)
    check = check_model_runs(loaded)
    assert check.outputs == {"segmentation": (1, 2, 16, 16, 8), "score": (1, 1)}


def test_cuda_provider_comes_first_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert onnx_providers(torch.device("cuda")) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]


def test_onnx_and_torchscript_give_the_same_masks(
    threshold_onnx: Path, model_dir: Path, tiny_test_set: Path, tmp_path: Path
) -> None:
    cases = cases_from_test_set(tiny_test_set)[:2]
    summaries = {}
    for fmt, path in (("ts", model_dir / "threshold.ts"), ("onnx", threshold_onnx)):
        spec = tiny_spec() if fmt == "ts" else onnx_spec()
        loaded = load_model(path, spec, "cpu")
        summaries[fmt] = run_inference(cases, loaded, spec, out_dir=tmp_path / fmt)
    ts, onnx = summaries["ts"].outputs, summaries["onnx"].outputs
    assert [o.status for o in onnx] == [CaseStatus.COMPLETED] * 2
    assert all(o.mask_voxels for o in onnx)
    assert [o.mask_sha256 for o in onnx] == [o.mask_sha256 for o in ts]
    assert [o.score for o in onnx] == pytest.approx([o.score for o in ts], abs=1e-5)


def test_random_bytes_and_pickles_are_not_onnx(tmp_path: Path, model_dir: Path) -> None:
    random_file = tmp_path / "random.onnx"
    random_file.write_bytes(np.random.default_rng(0).bytes(100))
    with pytest.raises(ModelError, match="Expected an ONNX model"):
        load_model(random_file, onnx_spec(), "cpu")
    marker = tmp_path / "pwned"
    pickled = tmp_path / "pickled.onnx"
    pickled.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelError, match="Expected an ONNX model"):
        load_model(pickled, onnx_spec(), "cpu")
    with pytest.raises(ModelError, match="Expected an ONNX model"):
        load_model(model_dir / "threshold.ts", onnx_spec(), "cpu")
    assert not marker.exists()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _expected_cr_probability(path: Path, net: Classifier2D) -> float:
    """The positive-class probability computed here, step by step, without the workbench."""
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    values = values.max() + values.min() - values  # brighter = denser, as MONOCHROME2
    values = (values - values.min()) / (values.max() - values.min())
    image = torch.from_numpy(values.astype(np.float32))[None, None]
    small = torch.nn.functional.interpolate(
        image, size=(64, 64), mode="bilinear", align_corners=False, antialias=True
    )
    logits = net(small.repeat(1, 3, 1, 1)).detach().double()
    return float(torch.softmax(logits, dim=1)[0, 1])


def test_2d_radiograph_multiclass_onnx(classifier_onnx: Path, tmp_path: Path) -> None:
    spec = cls2d_spec()
    loaded = load_model(classifier_onnx, spec, "cpu")
    assert isinstance(loaded.module, ScoreSelector)
    assert check_model_runs(loaded).input_shape == (1, 3, 64, 64)
    cr = Path(get_testdata_file(CR_FILE))
    summary = run_inference([CaseInput("cr1", (cr,))], loaded, spec, out_dir=tmp_path / "run")
    (output,) = summary.outputs
    assert output.status == CaseStatus.COMPLETED, output.reason
    assert output.mask_path is None
    assert output.score == pytest.approx(_expected_cr_probability(cr, Classifier2D()), abs=1e-5)


def test_2d_target_spacing_needs_pixel_spacing(classifier_onnx: Path, tmp_path: Path) -> None:
    spec = cls2d_spec(target_spacing=(0.5, 0.5))
    loaded = load_model(classifier_onnx, spec, "cpu")
    cr = Path(get_testdata_file(CR_FILE))
    summary = run_inference([CaseInput("cr1", (cr,))], loaded, spec, out_dir=tmp_path / "run")
    (output,) = summary.outputs
    assert output.status == CaseStatus.FAILED
    assert "Pixel Spacing or Imager Pixel Spacing" in (output.reason or "")


def test_declared_classes_must_match_the_output(classifier_onnx: Path) -> None:
    spec = cls2d_spec(score_classes=["normal", "pneumonia"], positive_class="pneumonia")
    loaded = load_model(classifier_onnx, spec, "cpu")
    with pytest.raises(ModelError, match=r"expected 2 class channels .* Found shape \(1, 3\)"):
        check_model_runs(loaded)
    wrong_input = cls2d_spec(in_channels=1)
    with pytest.raises(ModelError, match=r"failed on a dummy input of shape \(1, 1, 64, 64\)"):
        check_model_runs(load_model(classifier_onnx, wrong_input, "cpu"))

"""Explanation maps: occlusion, saliency, Grad-CAM, deletion check, caching format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fixtures import tiny_spec
from torch import nn

from workbench.inference import explain
from workbench.inference.explain import ExplanationMethod


class CornerNet(nn.Module):
    """Score = mean intensity of one corner block: only that block matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :4, :4, :4].mean(dim=[1, 2, 3, 4])


class TinyConvNet(nn.Module):
    """A small 3D classifier with a named convolution layer (for Grad-CAM)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 1)
        torch.manual_seed(0)
        nn.init.constant_(self.features[0].weight, 0.1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        weighted = feats * (x > 0.5).float()  # bright voxels drive the score
        return {"malignancy": torch.sigmoid(self.head(weighted.mean(dim=[2, 3, 4])))}


def _image() -> torch.Tensor:
    torch.manual_seed(1)
    image = torch.rand(1, 1, 8, 8, 8) * 0.2
    image[:, :, :4, :4, :4] += 0.7
    return image


def test_occlusion_finds_the_block_that_drives_the_score() -> None:
    model = CornerNet()
    seen: list[tuple[int, int]] = []
    heat = explain.occlusion_sensitivity(
        model, _image(), patch=4, stride=4, progress=lambda d, t, _m: seen.append((d, t))
    )
    assert heat.shape == (8, 8, 8)
    assert heat[:4, :4, :4].min() > heat[4:, 4:, 4:].max()
    assert seen[-1] == (8, 8)
    check = explain.deletion_check(model, _image(), explain.normalise(heat), steps=3)
    assert check.passed and check.salient_area < check.random_area
    assert "more informative than random" in check.describe()


def test_saliency_works_with_torchscript() -> None:
    scripted = torch.jit.script(CornerNet())
    heat = explain.input_saliency(scripted, _image())
    assert heat.shape == (8, 8, 8)
    assert heat[:4, :4, :4].min() > 0 and heat[4:, 4:, 4:].max() == 0


def test_grad_cam_on_a_named_layer_and_refusal_for_torchscript() -> None:
    net = TinyConvNet().eval()
    heat, layer = explain.grad_cam(net, _image(), select=lambda out: out["malignancy"])
    assert layer == "features.0"
    assert heat.shape == (8, 8, 8) and 0.0 <= heat.min() and heat.max() <= 1.0
    with pytest.raises(ValueError, match="no 'nope'"):
        explain.grad_cam(net, _image(), select=lambda out: out["malignancy"], layer="nope")
    with pytest.raises(ValueError, match="TorchScript"):
        explain.grad_cam(
            torch.jit.script(CornerNet()), _image(), select=lambda out: out.reshape(-1, 1)
        )


def test_settings_hash_and_errors() -> None:
    settings = explain.settings_for("occlusion", {"patch": 4})
    assert settings["patch"] == 4 and settings["stride"] == 8
    same = explain.params_hash("occlusion", settings, "abc")
    assert same == explain.params_hash(ExplanationMethod.OCCLUSION, dict(settings), "abc")
    assert same != explain.params_hash("occlusion", {**settings, "patch": 8}, "abc")
    assert same != explain.params_hash("occlusion", settings, "other-model")
    with pytest.raises(ValueError, match="found 'patchsize'"):
        explain.settings_for("occlusion", {"patchsize": 4})
    with pytest.raises(ValueError, match="Expected an explanation method"):
        explain.settings_for("lime")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    check = explain.Faithfulness((0.0, 0.5), (0.9, 0.1), (0.9, 0.6))
    made = explain.Explanation(
        method=ExplanationMethod.SALIENCY,
        label="Input-gradient saliency",
        settings={"seed": 0, "deletion_steps": 1},
        heat=np.linspace(0, 1, 27, dtype=np.float32).reshape(3, 3, 3),
        faithfulness=check,
    )
    path = explain.save_explanation(tmp_path / "x" / "saliency-1.npz", made, model_digest="d")
    back = explain.load_explanation(path)
    assert back.method is ExplanationMethod.SALIENCY and back.label == made.label
    assert back.faithfulness == check and back.note == explain.AID_NOTE
    np.testing.assert_allclose(back.heat, made.heat, atol=1e-3)


def _case_paths(root: Path) -> list[str]:
    case = sorted((root / "cases").iterdir())[0]
    return [str(p) for p in sorted((case / "CT").glob("*.dcm"))]


def test_explain_case_end_to_end(tiny_test_set: Path, model_dir: Path) -> None:
    paths = _case_paths(tiny_test_set)
    spec = tiny_spec()
    prob = explain.explain_case(paths, model_dir / "threshold.ts", spec, "probability")
    assert prob.method is ExplanationMethod.PROBABILITY
    assert prob.heat.ndim == 3 and prob.heat.shape[0] == len(paths)
    assert 0.0 <= prob.heat.min() and prob.heat.max() <= 1.0
    assert prob.faithfulness is not None
    steps: list[str] = []
    cam = explain.explain_case(
        paths,
        model_dir / "threshold.ts",
        spec,
        "gradcam",
        progress=lambda _d, _t, m: steps.append(m),
    )
    # TorchScript: no hooks, so the gradient map is plain input saliency, labelled as such.
    assert cam.method is ExplanationMethod.SALIENCY
    assert "TorchScript" in cam.label and "Grad-CAM not available" in cam.label
    assert cam.heat.shape == prob.heat.shape and steps[-1] == "done"
    occ = explain.explain_case(
        paths, model_dir / "threshold.ts", spec, "occlusion", {"patch": 8, "stride": 8}
    )
    assert occ.method is ExplanationMethod.OCCLUSION and occ.heat.shape == prob.heat.shape

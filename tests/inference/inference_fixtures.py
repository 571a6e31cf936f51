"""Tiny TorchScript models and specs shared by the inference tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workbench.inference.registry import (
    InputSpec,
    ModelFormat,
    ModelSpec,
    ModelTask,
    ScoreActivation,
)


class ThresholdNet(nn.Module):
    """Lesion = windowed intensity above a level; score = mean intensity of the window."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.tensor(0.58))
        self.gain = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.outputs(x)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        foreground = self.gain * (x - self.level)
        seg = torch.cat([torch.zeros_like(foreground), foreground], dim=1)
        score = x.mean(dim=[1, 2, 3, 4]).unsqueeze(1)
        return {"seg": seg, "malignancy": score}


class NaNNet(ThresholdNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.outputs(x)
        return {"seg": out["seg"] * float("nan"), "malignancy": out["malignancy"]}


class RaisingNet(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[0] > 0:
            raise RuntimeError("simulated model failure")
        return {"seg": x, "malignancy": x}


class OutOfRangeNet(ThresholdNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.outputs(x)
        return {"seg": out["seg"], "malignancy": out["malignancy"] + 5.0}


class WrongShapeNet(ThresholdNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.outputs(x)
        return {"seg": out["seg"][:, :, ::2], "malignancy": out["malignancy"]}


def tiny_spec(name: str = "tiny-threshold", version: str = "0.1") -> ModelSpec:
    return ModelSpec(
        name=name,
        version=version,
        task=ModelTask.BOTH,
        format=ModelFormat.TORCHSCRIPT,
        input=InputSpec(
            target_spacing=(5.0, 2.0, 2.0),
            orientation="RAS",
            hu_window=(-160.0, 240.0),
            roi_size=(16, 16, 8),
            sw_overlap=0.25,
            score_activation=ScoreActivation.NONE,
        ),
        intended_use="Tests only.",
    )


def save_scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path

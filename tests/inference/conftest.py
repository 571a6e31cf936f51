"""Fixtures of the inference tests: a tiny synthetic test set and tiny TorchScript models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_fixtures import (
    NaNNet,
    OutOfRangeNet,
    RaisingNet,
    ThresholdNet,
    WrongShapeNet,
    save_scripted,
)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.dicom.synth import generate_test_set

    root = tmp_path_factory.mktemp("tiny_test_set")
    generate_test_set(root, n_cases=4, seed=3, matrix=64, slices=(10, 12), workers=1)
    return root


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for name, cls in [
        ("threshold", ThresholdNet),
        ("nan", NaNNet),
        ("raising", RaisingNet),
        ("out_of_range", OutOfRangeNet),
        ("wrong_shape", WrongShapeNet),
    ]:
        save_scripted(cls(), folder / f"{name}.ts")
    return folder

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inference_fixtures import tiny_spec
from pydantic import ValidationError

from workbench.errors import ModelError, ModelIntegrityError
from workbench.inference.registry import (
    InputSpec,
    ModelSpec,
    hash_model_files,
    model_digest,
    verify_model_files,
)


def _bundle(root: Path) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text("{}")
    (root / "configs" / "inference.json").write_text("{}")
    (root / "models" / "model.pt").write_bytes(b"weights")
    return root


def test_hash_single_file_and_folder(tmp_path: Path) -> None:
    f = tmp_path / "m.ts"
    f.write_bytes(b"abc")
    assert hash_model_files(f) == {
        "m.ts": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    hashes = hash_model_files(_bundle(tmp_path / "b"))
    assert list(hashes) == ["configs/inference.json", "configs/metadata.json", "models/model.pt"]
    assert len(model_digest(hashes)) == 64
    assert model_digest(hashes) == model_digest(dict(reversed(list(hashes.items()))))


def test_hash_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="Found nothing there"):
        hash_model_files(tmp_path / "absent")


@pytest.mark.parametrize(
    ("change", "word", "name"),
    [
        (
            lambda r: (r / "models" / "model.pt").write_bytes(b"tampered"),
            "changed",
            "models/model.pt",
        ),
        (lambda r: (r / "configs" / "metadata.json").unlink(), "missing", "configs/metadata.json"),
        (lambda r: (r / "models" / "extra.bin").write_bytes(b"x"), "added", "models/extra.bin"),
    ],
)
def test_verify_names_the_file(tmp_path: Path, change, word: str, name: str) -> None:
    root = _bundle(tmp_path / "b")
    expected = hash_model_files(root)
    verify_model_files(root, expected)
    change(root)
    with pytest.raises(ModelIntegrityError, match=f"{word}: {name}"):
        verify_model_files(root, expected)


def test_spec_round_trip_and_axes() -> None:
    spec = tiny_spec()
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["task"] == "both"
    assert spec.input.spacing_in_model_axes() == (2.0, 2.0, 5.0)  # RAS -> (x, y, z)
    lps_sip = InputSpec(target_spacing=(5, 2, 1), orientation="SPL", roi_size=(8, 8, 8))
    assert lps_sip.spacing_in_model_axes() == (5.0, 2.0, 1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("orientation", "RAX", "three axis codes"),
        ("orientation", "RRS", "three axis codes"),
        ("hu_window", (100, -100), "min < max"),
        ("output_classes", ["only"], "at least two"),
    ],
)
def test_input_spec_errors_name_expected_and_found(field: str, value, message: str) -> None:
    values = {"target_spacing": (1, 1, 1), "roi_size": (8, 8, 8), field: value}
    with pytest.raises(ValidationError, match=message):
        InputSpec(**values)


def test_classification_spec_needs_score_output() -> None:
    base = tiny_spec().model_dump()
    base["task"] = "classification"
    base["input"]["score_output"] = None
    with pytest.raises(ValidationError, match="score output"):
        ModelSpec.model_validate(base)

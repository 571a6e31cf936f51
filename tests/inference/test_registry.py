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


# ------------------------------------------------ user-facing spec errors and schema


def _spec_data(**input_update: object) -> dict:
    data = tiny_spec().model_dump(mode="json")
    data["input"].update(input_update)
    return data


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"format": "tflite"},
            "field format: expected 'torchscript', 'monai_bundle' or 'onnx', found 'tflite'",
        ),
        (
            {"task": None},
            "field task: expected 'segmentation', 'classification', 'both' or 'detection'",
        ),
        ({"name": "../keys"}, "field name: expected letters, digits"),
        ({"surprise": 1}, "field surprise: expected no such field (unknown), found 1"),
    ],
)
def test_spec_errors_name_the_field(change: dict, line: str) -> None:
    from workbench.inference.registry import ModelSpecError, parse_model_spec

    data = {**_spec_data(), **change}
    with pytest.raises(ModelSpecError) as caught:
        parse_model_spec(data, source="spec.json")
    assert line in str(caught.value)
    assert str(caught.value).startswith("spec.json is not valid")


@pytest.mark.parametrize(
    ("update", "line"),
    [
        ({"roi_size": [16, 16]}, "field input.roi_size: expected 3 values"),
        ({"target_spacing": []}, "field input.target_spacing: expected 3 values (z, y, x)"),
        ({"hu_window": [100, -100]}, "field input.hu_window: expected (min, max) with min < max"),
        ({"orientation": "RAX"}, "field input.orientation: expected three axis codes"),
        ({"sw_overlap": 1.5}, "field input.sw_overlap: expected less than 1, found 1.5"),
        (
            {"score_activation": "softmax"},
            "field input.score_classes: expected the class names of the multi-class output",
        ),
        (
            {"score_classes": ["a", "b"], "positive_class": "c", "score_activation": "sigmoid"},
            "field input.positive_class: expected one of score_classes ['a', 'b'], found 'c'",
        ),
    ],
)
def test_input_errors_name_the_nested_field(update: dict, line: str) -> None:
    from workbench.inference.registry import ModelSpecError

    with pytest.raises(ModelSpecError) as caught:
        ModelSpec.from_json(json.dumps(_spec_data(**update)))
    assert line in str(caught.value), str(caught.value)


def test_2d_specs() -> None:
    from workbench.inference.registry import ModelSpecError, parse_model_spec

    data = _spec_data(spatial_dims=2, roi_size=[224, 224], target_spacing=[])
    with pytest.raises(ModelSpecError, match="field task: expected 'classification'"):
        parse_model_spec(data)
    data["task"] = "classification"
    data["input"]["segmentation_output"] = None
    spec = parse_model_spec(data)
    assert spec.input.spatial_dims == 2 and spec.input.roi_size == (224, 224)
    data["input"]["target_spacing"] = [0.2, 0.2, 0.2]
    with pytest.raises(ModelSpecError, match="field input.target_spacing: expected 2 values"):
        parse_model_spec(data)


def test_invalid_json_is_a_spec_error() -> None:
    from workbench.inference.registry import ModelSpecError

    with pytest.raises(ModelSpecError, match="spec: expected valid JSON"):
        ModelSpec.from_json("{not json")


def test_json_schema_accepts_valid_specs_and_refuses_invalid_ones() -> None:
    import jsonschema

    from workbench.inference.registry import model_spec_schema

    schema = model_spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(json.loads(tiny_spec().to_json()))
    for bad in ({**_spec_data(), "format": "tflite"}, {**_spec_data(), "name": "../keys"}):
        assert list(validator.iter_errors(bad))
    assert set(schema["properties"]) == set(ModelSpec.model_fields)
    assert "onnx" in json.dumps(schema)


def test_docs_examples_validate() -> None:
    """Every JSON example in docs/model-spec.md is a valid spec (pydantic and JSON Schema)."""
    import re

    import jsonschema

    from workbench.inference.registry import model_spec_schema, parse_model_spec

    text = (Path(__file__).parents[2] / "docs" / "model-spec.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    formats = set()
    for block in blocks:
        data = json.loads(block)
        jsonschema.validate(data, model_spec_schema())
        formats.add(parse_model_spec(data).format.value)
    assert formats == {"torchscript", "onnx", "monai_bundle"}


def test_cli_schema_and_spec_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.inference.registry import model_spec_schema

    runner = CliRunner()
    printed = runner.invoke(app, ["model", "schema"])
    assert printed.exit_code == 0
    assert json.loads(printed.output) == model_spec_schema()
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps(_spec_data(roi_size=[16, 16])))
    model = tmp_path / "m.ts"
    model.write_bytes(b"x")
    result = runner.invoke(
        app, ["model", "register", str(model), "--spec", str(bad), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "field input.roi_size: expected 3 values" in result.output
    assert "Traceback" not in result.output and "pydantic" not in result.output

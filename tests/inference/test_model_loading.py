from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from inference_fixtures import tiny_spec
from monai.networks.nets import BasicUNet

from workbench.errors import ModelError, ModelIntegrityError
from workbench.inference.loading import load_model
from workbench.inference.registry import ModelFormat, hash_model_files


class _Exploit:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bundle_spec():
    return tiny_spec().model_copy(update={"format": ModelFormat.MONAI_BUNDLE})


def _write_bundle(root: Path, network_def: dict, weights: object | None) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1"}))
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def}))
    if weights is not None:
        torch.save(weights, root / "models" / "model.pt")
    return root


NET_DEF = {
    "_target_": "BasicUNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "features": [4, 4, 4, 4, 4, 4],
}


def test_torchscript_loads(model_dir: Path) -> None:
    loaded = load_model(model_dir / "threshold.ts", tiny_spec(), "cpu")
    assert loaded.device.type == "cpu"
    assert loaded.digest and loaded.file_hashes == hash_model_files(model_dir / "threshold.ts")
    out = loaded.module(torch.zeros(1, 1, 8, 8, 8))
    assert set(out) == {"seg", "malignancy"}


def test_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.ts"
    bad.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelError, match="not a TorchScript|Found another kind"):
        load_model(bad, tiny_spec(), "cpu")
    torch_saved = tmp_path / "saved.ts"
    torch.save(_Exploit(marker), torch_saved)  # a torch.save zip holding the pickle
    with pytest.raises(ModelError, match="Found another kind"):
        load_model(torch_saved, tiny_spec(), "cpu")
    assert not marker.exists()


def test_bundle_with_malicious_weights_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = _write_bundle(tmp_path / "bundle", NET_DEF, _Exploit(marker))
    with pytest.raises(ModelError, match="Refused to load"):
        load_model(root, _bundle_spec(), "cpu")
    assert not marker.exists()


def test_bundle_state_dict_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 4, 4, 4, 4))
    root = _write_bundle(tmp_path / "bundle", NET_DEF, net.state_dict())
    loaded = load_model(root, _bundle_spec(), "cpu")
    assert loaded.source == "models/model.pt"
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net.eval()(x))


@pytest.mark.parametrize(
    ("network_def", "message"),
    [
        ({"_target_": "os.system", "command": "true"}, "should name a class of monai"),
        ({**NET_DEF, "spatial_dims": "$__import__('os').system('true')"}, "expressions"),
        ({**NET_DEF, "_requires_": "@x"}, "_requires_"),
        ({**NET_DEF, "_mode_": "debug"}, "_mode_"),
    ],
)
def test_bundle_config_that_runs_code_is_refused(tmp_path: Path, network_def, message) -> None:
    root = _write_bundle(tmp_path / "bundle", network_def, {"w": torch.zeros(1)})
    with pytest.raises(ModelError, match=message):
        load_model(root, _bundle_spec(), "cpu")


def test_bundle_with_torchscript(tmp_path: Path, model_dir: Path) -> None:
    root = _write_bundle(tmp_path / "bundle", NET_DEF, None)
    (root / "models" / "model.ts").write_bytes((model_dir / "threshold.ts").read_bytes())
    assert load_model(root, _bundle_spec(), "cpu").source == "models/model.ts"


def test_bundle_missing_files(tmp_path: Path) -> None:
    root = _write_bundle(tmp_path / "bundle", NET_DEF, None)
    with pytest.raises(ModelError, match="Found neither"):
        load_model(root, _bundle_spec(), "cpu")
    (root / "configs" / "metadata.json").unlink()
    with pytest.raises(ModelError, match="metadata.json"):
        load_model(root, _bundle_spec(), "cpu")


def test_tampered_model_is_refused(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "m.ts"
    path.write_bytes((model_dir / "threshold.ts").read_bytes())
    registered = hash_model_files(path)
    load_model(path, tiny_spec(), "cpu", expected_hashes=registered)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="changed: m.ts"):
        load_model(path, tiny_spec(), "cpu", expected_hashes=registered)


# ------------------------------------------------------------ registration test-load


def test_check_model_runs_accepts_a_model_that_fits_its_spec(model_dir: Path) -> None:
    from workbench.inference.loading import check_model_runs

    check = check_model_runs(load_model(model_dir / "threshold.ts", tiny_spec(), "cpu"))
    assert check.input_shape == (1, 1, 16, 16, 8)
    assert check.outputs == {"segmentation": (1, 2, 16, 16, 8), "score": (1, 1)}


def test_check_model_runs_names_expected_and_found_shapes(model_dir: Path) -> None:
    from workbench.inference.loading import check_model_runs

    wrong = load_model(model_dir / "wrong_shape.ts", tiny_spec(), "cpu")
    with pytest.raises(
        ModelError, match=r"expected shape \(1, 2, 16, 16, 8\).* Found \(1, 2, 8, 16, 8\)"
    ):
        check_model_runs(wrong)
    three = tiny_spec().model_copy(
        update={"input": tiny_spec().input.model_copy(update={"output_classes": ["b", "x", "y"]})}
    )
    with pytest.raises(
        ModelError, match=r"3 classes \['b', 'x', 'y'\].* Found \(1, 2, 16, 16, 8\)"
    ):
        check_model_runs(load_model(model_dir / "threshold.ts", three, "cpu"))
    with pytest.raises(ModelError, match="failed on a dummy input.*simulated model failure"):
        check_model_runs(load_model(model_dir / "raising.ts", tiny_spec(), "cpu"))


def test_check_model_runs_refuses_a_model_that_does_not_return(model_dir: Path) -> None:
    import dataclasses
    import time

    from workbench.inference.loading import check_model_runs

    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(2.0)
            return x

    loaded = load_model(model_dir / "threshold.ts", tiny_spec(), "cpu")
    slow = dataclasses.replace(loaded, module=Slow())
    with pytest.raises(ModelError, match="did not return within 0.2 s"):
        check_model_runs(slow, timeout_s=0.2)


def test_multilabel_scores_select_the_positive_logit(model_dir: Path) -> None:
    from workbench.inference.loading import ScoreSelector, check_model_runs
    from workbench.inference.registry import ScoreActivation

    class TwoLabels(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            mean = x.mean(dim=[1, 2, 3, 4]).unsqueeze(1)
            return {"seg": torch.cat([-x, x], dim=1), "malignancy": torch.cat([mean, -mean], 1)}

    path = model_dir.parent / "two_labels.ts"
    torch.jit.script(TwoLabels()).save(str(path))
    spec = tiny_spec().model_copy(
        update={
            "input": tiny_spec().input.model_copy(
                update={
                    "score_classes": ["benign", "malignant"],
                    "positive_class": "malignant",
                    "score_activation": ScoreActivation.SIGMOID,
                }
            )
        }
    )
    loaded = load_model(path, spec, "cpu")
    assert isinstance(loaded.module, ScoreSelector)
    x = torch.rand(1, 1, 16, 16, 8)
    assert torch.equal(loaded.module(x)["malignancy"], -x.mean().reshape(1, 1))
    assert check_model_runs(loaded).outputs["score"] == (1, 1)

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

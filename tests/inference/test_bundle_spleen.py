"""A real MONAI Model Zoo bundle (spleen_ct_segmentation): registered and run.

The bundle's configs are copied unchanged from the model zoo (see
tests/data/bundles/spleen_ct_segmentation/PROVENANCE.md). Its trained weights cannot
be downloaded here, so the network its ``network_def`` defines is initialised with a
fixed seed and its state dict saved as ``models/model.pt``: the test checks that the
workbench builds exactly that network from the bundle, registers it (test-load
included) and runs it on a small CT phantom, not what the network segments.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

from workbench.inference.loading import load_model
from workbench.inference.registry import ModelSpec
from workbench.inference.runner import CaseStatus, cases_from_test_set, run_inference

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")

BUNDLE = Path(__file__).parents[1] / "data" / "bundles" / "spleen_ct_segmentation"


def _config() -> dict:
    return json.loads((BUNDLE / "configs" / "inference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle") / "spleen_ct_segmentation"
    shutil.copytree(BUNDLE, root)
    arguments = {k: v for k, v in _config()["network_def"].items() if k != "_target_"}
    torch.manual_seed(20241011)
    network = UNet(**arguments)
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def _spec() -> ModelSpec:
    """The bundle's own preprocessing and outputs, read from its configs."""
    config = _config()
    steps = {t["_target_"]: t for t in config["preprocessing"]["transforms"]}
    assert steps["Orientationd"]["axcodes"] == "RAS"
    x, y, z = steps["Spacingd"]["pixdim"]  # RAS order
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return ModelSpec.model_validate(
        {
            "name": "spleen-ct-segmentation",
            "version": metadata["version"],
            "task": "segmentation",
            "format": "monai_bundle",
            "input": {
                "target_spacing": [z, y, x],
                "orientation": "RAS",
                "hu_window": [
                    steps["ScaleIntensityRanged"]["a_min"],
                    steps["ScaleIntensityRanged"]["a_max"],
                ],
                "roi_size": [32, 32, 32],  # the bundle's 96^3 is too slow for a unit test
                "sw_batch_size": 1,
                "sw_overlap": config["inferer"]["overlap"],
                "output_classes": [channels[str(i)] for i in range(len(channels))],
                "segmentation_output": None,
                "score_output": None,
            },
            "intended_use": metadata["intended_use"],
        }
    )


def test_the_bundle_network_is_built_from_its_config(bundle: Path) -> None:
    loaded = load_model(bundle, _spec(), "cpu")
    assert loaded.source == "models/model.pt"
    arguments = {k: v for k, v in _config()["network_def"].items() if k != "_target_"}
    reference = UNet(**arguments)
    reference.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference.eval()(x))


def test_the_bundle_registers_and_runs(bundle: Path, tiny_test_set: Path, tmp_path: Path) -> None:
    from workbench.services import accounts, models
    from workbench.services.context import Workbench

    wb = Workbench.open(tmp_path / "wb")
    try:
        accounts.bootstrap_admin(wb, username="admin", full_name="A", password="Harbor-Lamp-2026!")
        admin = accounts.login(wb, "admin", "Harbor-Lamp-2026!")
        accounts.create_user(
            wb,
            admin,
            username="qa1",
            full_name="Q",
            role="qa",
            password="Quill-Maple-2026!",
            must_change_password=False,
        )
        qa = accounts.login(wb, "qa1", "Quill-Maple-2026!")
        info = models.register_model(wb, qa, bundle, _spec())
    finally:
        wb.close()
    assert info.format == "monai_bundle" and info.ref == "spleen-ct-segmentation@0.5.9"
    assert sorted(info.files) == [
        "LICENSE",
        "PROVENANCE.md",
        "configs/inference.json",
        "configs/metadata.json",
        "models/model.pt",
    ]
    spec = ModelSpec.model_validate(info.spec)
    loaded = load_model(info.storage_path, spec, "cpu", expected_hashes=info.files)
    cases = cases_from_test_set(tiny_test_set)[:1]
    summary = run_inference(cases, loaded, spec, out_dir=tmp_path / "run")
    (output,) = summary.outputs
    assert output.status == CaseStatus.COMPLETED, output.reason
    assert output.mask_path is not None and output.mask_path.is_file()
    assert summary.model_digest == info.digest


def test_input_spec_read_from_the_bundle(tmp_path: Path) -> None:
    from workbench.inference.registry import ModelSpecError, input_spec_from_bundle

    read = input_spec_from_bundle(BUNDLE)
    assert read.target_spacing == (2.0, 1.5, 1.5)  # pixdim [1.5, 1.5, 2.0] in RAS order
    assert (read.roi_size, read.sw_batch_size, read.sw_overlap) == ((96, 96, 96), 4, 0.5)
    small = input_spec_from_bundle(BUNDLE, roi_size=(32, 32, 32), sw_batch_size=1)
    assert small == _spec().input
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE, copy)
    config = _config()
    config["inferer"]["roi_size"] = "@roi_size"
    (copy / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelSpecError,
        match=r"field input.roi_size: expected a literal value in the bundle's inferer.roi_size, "
        r"found '@roi_size'",
    ):
        input_spec_from_bundle(copy)
    assert input_spec_from_bundle(copy, roi_size=(64, 64, 64)).roi_size == (64, 64, 64)

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from workbench.inference.demo_models import build_demo_models
from workbench.inference.loading import load_model
from workbench.inference.preprocess import preprocess_volume, restore_original_grid
from workbench.inference.registry import InputSpec, hash_model_files
from workbench.inference.runner import cases_from_test_set, run_inference


def _sphere_volume():
    zz, yy, xx = np.mgrid[:20, :50, :60]
    d = ((zz - 10) * 2.5) ** 2 + ((yy - 25) * 0.8) ** 2 + ((xx - 28) * 0.7) ** 2
    array = np.where(d < 8**2, 50.0, -1000.0).astype(np.float32)
    return SimpleNamespace(
        array=array,
        spacing=(2.5, 0.8, 0.7),
        origin=np.array([-100.0, -120.0, 30.0]),
        direction=np.eye(3),
    )


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "SPL"])
def test_round_trip_to_model_grid_and_back(orientation: str) -> None:
    volume = _sphere_volume()
    spec = InputSpec(
        target_spacing=(3.0, 1.5, 1.5),
        orientation=orientation,
        roi_size=(16, 16, 16),
        hu_window=(-200, 200),
    )
    prepared = preprocess_volume(volume, spec)
    assert float(prepared.image.min()) >= 0.0 and float(prepared.image.max()) <= 1.0
    spacing = np.abs(np.asarray(prepared.image.affine)[:3, :3]).max(axis=0)
    np.testing.assert_allclose(spacing, spec.spacing_in_model_axes(), atol=1e-6)
    back = restore_original_grid((prepared.image > 0.5).float().as_tensor(), prepared)
    mask, ref = back[0].numpy() > 0.5, volume.array > 0
    assert back.shape[1:] == volume.array.shape
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) > 0.85


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "SPL"])
def test_restore_matches_monai_spatial_resample(orientation: str) -> None:
    """The separable restore equals MONAI's bilinear resampling with border padding."""
    volume = _sphere_volume()
    spec = InputSpec(
        target_spacing=(3.0, 1.3, 1.7),
        orientation=orientation,
        roi_size=(16, 16, 16),
        hu_window=(-200, 200),
    )
    prepared = preprocess_volume(volume, spec)
    generator = torch.Generator().manual_seed(0)
    field = torch.rand((2, *prepared.image.shape[1:]), generator=generator)
    ours = restore_original_grid(field, prepared)
    reoriented_shape = [prepared.original_shape[axis] for axis in prepared.permutation]
    reference = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)(
        MetaTensor(field, affine=prepared.image.affine),
        dst_affine=torch.as_tensor(prepared.reoriented_affine, dtype=torch.float64),
        spatial_size=reoriented_shape,
    )
    expected = torch.as_tensor(np.asarray(reference)).float()
    flips = [axis + 1 for axis, flipped in enumerate(prepared.flips) if flipped]
    if flips:
        expected = torch.flip(expected, dims=flips)
    inverse = [prepared.permutation.index(axis) for axis in range(3)]
    expected = expected.permute(0, *(i + 1 for i in inverse))
    assert ours.shape == (2, *volume.array.shape)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=0)


def test_restore_rejects_wrong_shape() -> None:
    volume = _sphere_volume()
    spec = InputSpec(target_spacing=(3.0, 1.5, 1.5), roi_size=(16, 16, 16))
    prepared = preprocess_volume(volume, spec)
    with pytest.raises(Exception, match="spatial shape"):
        restore_original_grid(torch.zeros(1, 4, 4, 4), prepared)


@pytest.mark.slow
def test_build_demo_models_trains_two_candidates(tiny_test_set: Path, tmp_path: Path) -> None:
    messages = []
    built = build_demo_models(
        tiny_test_set,
        tmp_path / "models",
        seed=1,
        n_training_cases=6,
        steps=3,
        progress=lambda d, t, m: messages.append((d, t, m)),
    )
    assert [b.spec.name for b in built] == ["demo-good", "demo-weak"]
    good, weak = built
    assert weak.training["scanner_left_out"] == "scanner-c"
    assert "scanner-c" not in weak.training["scanners_used"]
    manifest = json.loads(Path(good.training["training_manifest"]).read_text())
    test_files = {p.read_bytes() for p in (tiny_test_set / "cases").rglob("*.dcm")}
    train_root = Path(good.training["training_set_root"])
    assert len(manifest["entries"]) > 0
    assert not any(
        (train_root / rel).read_bytes() in test_files for rel in list(manifest["entries"])[:20]
    )
    assert messages[-1][0] == messages[-1][1]
    for model in built:
        assert model.file_hashes == hash_model_files(model.path)
        loaded = load_model(model.path, model.spec, "cpu", expected_hashes=model.file_hashes)
        summary = run_inference(
            cases_from_test_set(tiny_test_set)[:1],
            loaded,
            model.spec,
            out_dir=tmp_path / model.spec.name,
        )
        assert summary.completed == 1, summary.outputs[0].reason
        assert 0.0 <= summary.outputs[0].score <= 1.0


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in torch.jit.load(str(path)).state_dict().items()}


@pytest.mark.slow
def test_demo_models_are_the_same_trained_in_workers_or_in_process(
    tiny_test_set: Path, tmp_path: Path
) -> None:
    options = {"seed": 2, "n_training_cases": 6, "steps": 4}
    messages: list[tuple[int, int, str]] = []
    in_workers = build_demo_models(
        tiny_test_set,
        tmp_path / "workers",
        workers=2,
        progress=lambda d, t, m: messages.append((d, t, m)),
        **options,
    )
    in_process = build_demo_models(tiny_test_set, tmp_path / "in-process", workers=1, **options)
    for a, b in zip(in_workers, in_process, strict=True):
        assert a.spec == b.spec
        assert a.training["cases"] == b.training["cases"]
        assert a.training["segmentation_loss"] == b.training["segmentation_loss"]
        assert a.training["head_loss"] == b.training["head_loss"]
        first, second = _parameters(a.path), _parameters(b.path)
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), name
    done = [d for d, _, _ in messages]
    assert done == sorted(done) and done[-1] == messages[-1][1] == 3 + 2 * options["steps"]
    assert any("demo-weak: step 4/4" in m for _, _, m in messages)


@pytest.mark.slow
def test_training_in_workers_survives_a_page_script_installed_as_main(
    tiny_test_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streamlit runs each page with the page script installed as ``__main__``; a spawned
    # worker must not re-run that script (it would die before training).
    import sys
    import types

    page = tmp_path / "page.py"
    page.write_text("raise SystemExit('a page script must not run in a training worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    built = build_demo_models(
        tiny_test_set, tmp_path / "models", seed=3, n_training_cases=6, steps=2, workers=2
    )
    assert [b.spec.name for b in built] == ["demo-good", "demo-weak"]
    assert sys.modules["__main__"] is fake_main

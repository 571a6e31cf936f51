"""Demo candidate models, trained locally in about a minute on a CPU.

Two candidates for the synthetic CT phantoms (:mod:`workbench.dicom.synth`),
both a small MONAI ``UNet`` that segments the lesion on a downsampled volume
plus a malignancy head computed from the predicted lesion (soft-mask volume,
mean and spread of intensity, contrast to the surrounding shell, compactness)
and trained by logistic regression on the reference labels:

``demo-good``
    trained on every simulated scanner;
``demo-weak``
    trained without the scanner whose calibration is off (largest HU offset)
    and whose noise is heaviest. It never saw those images, so it does worse
    on that scanner's cases: something for stratified analysis to find.

Training uses a separate synthetic training set generated with a seed
different from the test set's (its manifest is written next to the models so
that leakage checks can compare it with the test set). Both models are saved
as TorchScript with their :class:`~workbench.inference.registry.ModelSpec`;
every score and mask they later produce comes from real inference.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from workbench.errors import ModelError
from workbench.inference.environment import deterministic_mode
from workbench.inference.preprocess import preprocess_volume
from workbench.inference.registry import (
    InputSpec,
    ModelFormat,
    ModelSpec,
    ModelTask,
    ScoreActivation,
    hash_model_files,
)

__all__ = ["BuiltModel", "LesionNet", "build_demo_models", "demo_input_spec"]

Progress = Callable[[int, int, str], None]

_N_FEATURES = 5
_TRAIN_SEED_OFFSET = 104_729  # a prime far from any seed a test set is likely to use
# Share of training patches drawn anywhere in the volume (the rest centre on the lesion):
# without enough of them the network marks every bright structure as lesion.
_BACKGROUND_FRACTION = 0.3


@dataclass(frozen=True, slots=True)
class BuiltModel:
    """A demo model on disk with its spec.

    Attributes
    ----------
    path : Path
        The TorchScript archive.
    spec : ModelSpec
    file_hashes : dict of str to str
        :func:`~workbench.inference.registry.hash_model_files` of ``path``.
    training : dict
        How it was trained: training-set root, seed, manifest path, scanners
        used and left out, cases, steps, final losses, seconds.
    """

    path: Path
    spec: ModelSpec
    file_hashes: dict[str, str]
    training: dict[str, Any] = field(repr=False)


def demo_input_spec() -> InputSpec:
    """Input specification shared by the demo models (RAS, 4 mm isotropic, liver window)."""
    return InputSpec(
        target_spacing=(4.0, 4.0, 4.0),
        orientation="RAS",
        hu_window=(-40.0, 160.0),
        roi_size=(64, 64, 48),
        sw_batch_size=1,
        sw_overlap=0.5,
        output_classes=["background", "lesion"],
        segmentation_output="seg",
        score_output="malignancy",
        score_activation=ScoreActivation.NONE,
    )


class LesionNet(nn.Module):
    """UNet lesion segmentation plus a malignancy head on features of the predicted lesion.

    Parameters
    ----------
    voxel_ml : float
        Volume of one model-grid voxel in ml (from the target spacing).

    Notes
    -----
    ``forward(image)`` takes ``(B, 1, X, Y, Z)`` windowed intensities and returns
    ``{"seg": (B, 2, X, Y, Z) logits, "malignancy": (B, 1) probability}``. The
    probability is multiplied by a presence term so a window without a lesion
    scores near 0.
    """

    def __init__(self, voxel_ml: float) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=2,
            channels=(8, 16, 32),
            strides=(2, 2),
            num_res_units=0,
            norm="batch",
        )
        self.head = nn.Linear(_N_FEATURES, 1)
        self.register_buffer("feature_mean", torch.zeros(_N_FEATURES))
        self.register_buffer("feature_std", torch.ones(_N_FEATURES))
        self.voxel_ml = float(voxel_ml)

    def features(self, image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Lesion features from the soft foreground mask: (B, 5)."""
        p = torch.softmax(seg, dim=1)[:, 1:2]
        dims = [2, 3, 4]
        mass = p.sum(dim=dims) + 1e-3
        mean_in = (p * image).sum(dim=dims) / mass
        var_in = (p * (image - mean_in[:, :, None, None, None]) ** 2).sum(dim=dims) / mass
        ring = torch.clamp(nn.functional.max_pool3d(p, 5, 1, 2) - p, min=0.0)
        ring_mass = ring.sum(dim=dims) + 1e-3
        mean_ring = (ring * image).sum(dim=dims) / ring_mass
        return torch.cat(
            [
                torch.log(mass * self.voxel_ml + 1e-2),
                mean_in,
                torch.sqrt(var_in + 1e-6),
                mean_in - mean_ring,
                ring_mass / mass ** (2.0 / 3.0),
            ],
            dim=1,
        )

    def score(self, image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Malignancy probability (B, 1) from the image and segmentation logits."""
        feats = self.features(image, seg)
        logit = self.head((feats - self.feature_mean) / self.feature_std)  # type: ignore[operator]
        mass = torch.softmax(seg, dim=1)[:, 1:2].sum(dim=[2, 3, 4])
        presence = 1.0 - torch.exp(-mass / 8.0)
        return torch.sigmoid(logit) * presence

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        seg = self.unet(image)
        return {"seg": seg, "malignancy": self.score(image, seg)}


@dataclass(frozen=True, slots=True)
class _TrainingCase:
    case_id: str
    scanner_id: str
    malignant: int
    image: torch.Tensor  # (1, X, Y, Z)
    label: torch.Tensor  # (X, Y, Z) long
    centre: tuple[int, int, int]


def _read_labels(root: Path) -> dict[str, dict[str, str]]:
    with (root / "reference" / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def _left_out_scanner(test_set_root: Path) -> str:
    """The scanner with the largest calibration offset (ties: heaviest noise)."""
    dataset = json.loads((test_set_root / "dataset.json").read_text(encoding="utf-8"))
    scanners = dataset.get("scanners") or []
    if len(scanners) < 2:
        raise ModelError(
            f"Expected at least two scanners in {test_set_root / 'dataset.json'}. "
            f"Found {len(scanners)}."
        )

    def badness(s: dict[str, Any]) -> tuple[float, float]:
        offset = abs(float(s.get("hu_offset", 0.0))) + 100 * abs(float(s.get("hu_scale", 1.0)) - 1)
        return offset, float(s.get("noise_hu", 0.0))

    return str(max(scanners, key=badness)["scanner_id"])


def _load_training_cases(root: Path, spec: InputSpec) -> list[_TrainingCase]:
    from workbench.dicom.seg import read_seg_mask
    from workbench.dicom.volume import load_series

    labels = _read_labels(root)
    mask_spec = spec.model_copy(update={"hu_window": (0.0, 1.0)})
    out = []
    for case_id in sorted(labels):
        row = labels[case_id]
        case_dir = root / "cases" / case_id
        volume = load_series(sorted((case_dir / "CT").glob("*.dcm")))
        prepared = preprocess_volume(volume, spec)
        mask = read_seg_mask(case_dir / "SEG" / "reader1.dcm", volume).astype(np.float32)
        mask_volume = SimpleNamespace(
            array=mask, spacing=volume.spacing, origin=volume.origin, direction=volume.direction
        )
        label = (preprocess_volume(mask_volume, mask_spec).image[0] > 0.5).long()
        where = torch.nonzero(label)
        if where.numel():
            centre = tuple(int(v) for v in where.float().mean(dim=0).round().long())
        else:
            centre = tuple(int(s) // 2 for s in label.shape)
        out.append(
            _TrainingCase(
                case_id=case_id,
                scanner_id=row["scanner_id"],
                malignant=int(row["consensus_malignant"]),
                image=prepared.image.as_tensor().float(),
                label=label,
                centre=centre,  # type: ignore[arg-type]
            )
        )
    return out


def _crop(
    tensor: torch.Tensor, centre: Sequence[int], size: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """Crop (..., X, Y, Z) to ``size`` around ``centre``, padding outside the volume."""
    spatial = tensor.shape[-3:]
    pads: list[tuple[int, int]] = []
    slices: list[slice] = []
    for c, s, n in zip(centre, size, spatial, strict=True):
        start = int(c) - s // 2
        before, after = max(0, -start), max(0, start + s - n)
        slices.append(slice(max(0, start), min(n, start + s)))
        pads.append((before, after))
    cropped = tensor[..., slices[0], slices[1], slices[2]]
    flat: list[int] = []
    for before, after in reversed(pads):
        flat.extend([before, after])
    return nn.functional.pad(cropped, flat, value=value)


def _train_segmentation(
    net: LesionNet,
    cases: list[_TrainingCase],
    *,
    steps: int,
    patch: tuple[int, int, int],
    batch: int,
    generator: torch.Generator,
    on_step: Callable[[int], None] | None = None,
) -> float:
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.unet.parameters(), lr=3e-3)
    net.train()
    last = float("nan")
    for step in range(steps):
        images, labels = [], []
        for _ in range(batch):
            case = cases[int(torch.randint(len(cases), (1,), generator=generator))]
            jitter = torch.randint(-12, 13, (3,), generator=generator).tolist()
            if torch.rand(1, generator=generator).item() < _BACKGROUND_FRACTION:
                centre = [
                    int(torch.randint(n, (1,), generator=generator)) for n in case.label.shape
                ]
            else:
                centre = [
                    c + j * s // 48 for c, j, s in zip(case.centre, jitter, patch, strict=True)
                ]
            images.append(_crop(case.image, centre, patch))
            labels.append(_crop(case.label[None].float(), centre, patch))
        x = torch.stack(images)
        y = torch.stack(labels)
        optimizer.zero_grad()
        loss = loss_fn(net.unet(x), y)
        loss.backward()
        optimizer.step()
        last = float(loss.item())
        if on_step is not None:
            on_step(step)
    net.eval()
    return last


def _train_head(net: LesionNet, cases: list[_TrainingCase], roi: tuple[int, int, int]) -> float:
    with torch.no_grad():
        feats = []
        for case in cases:
            window = _crop(case.image, case.centre, roi)[None]
            feats.append(net.features(window, net.unet(window))[0])
        x = torch.stack(feats)
        y = torch.tensor([float(c.malignant) for c in cases])
        mean, std = x.mean(dim=0), x.std(dim=0).clamp(min=1e-3)
    net.get_buffer("feature_mean").copy_(mean)
    net.get_buffer("feature_std").copy_(std)
    z = (x - mean) / std
    head = net.head
    optimizer = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = head(z)[:, 0]
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss = loss + 0.05 * head.weight.pow(2).sum()  # ridge: few cases, correlated features
        loss.backward()
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        return float(nn.functional.binary_cross_entropy_with_logits(head(z)[:, 0], y).item())


def _step_reporter(report: Callable[[str], None], name: str, steps: int) -> Callable[[int], None]:
    def on_step(step: int) -> None:
        report(f"{name}: step {step + 1}/{steps}")

    return on_step


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _training_manifest(root: Path) -> dict[str, Any]:
    entries = {
        p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return {
        "root": str(root),
        "entries": entries,
        "digest": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    }


def build_demo_models(
    test_set_root: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    n_training_cases: int = 24,
    steps: int = 200,
) -> list[BuiltModel]:
    """Train the two demo candidates and save them as TorchScript with their specs.

    Parameters
    ----------
    test_set_root : str or Path
        The synthetic test set the models will be validated on. Only its
        ``dataset.json`` (seed, scanners) is read, to pick a different
        training seed and the scanner to leave out; no test image is used.
    out_dir : str or Path
        Receives ``training_set/`` (with ``manifest.json``),
        ``demo-good.ts``, ``demo-weak.ts`` and a ``<name>.spec.json`` and
        ``<name>.training.json`` per model.
    seed : int
        Seeds the training set and the training; same seed, same models.
    progress : callable, optional
        ``progress(done, total, message)``.
    n_training_cases : int
        Size of the synthetic training set.
    steps : int
        Optimiser steps of each segmentation network.

    Returns
    -------
    list of BuiltModel
        ``[demo-good, demo-weak]``.
    """
    from workbench.dicom.synth import generate_test_set

    started = time.perf_counter()
    test_root = Path(test_set_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = json.loads((test_root / "dataset.json").read_text(encoding="utf-8"))
    test_seed = int(dataset.get("seed", 0))
    train_seed = seed + _TRAIN_SEED_OFFSET
    if train_seed == test_seed:
        train_seed += 1
    left_out = _left_out_scanner(test_root)
    matrix = int((dataset.get("options") or {}).get("matrix", 256))
    total = 3 + 2 * steps
    done = 0

    def report(message: str, advance: int = 1) -> None:
        nonlocal done
        done += advance
        if progress is not None:
            progress(min(done, total), total, message)

    train_root = out / "training_set"
    if not (train_root / "dataset.json").exists():
        generate_test_set(train_root, n_cases=n_training_cases, seed=train_seed, matrix=matrix)
    manifest = _training_manifest(train_root)
    manifest_path = out / "training_manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    report(f"training set of {n_training_cases} cases (seed {train_seed})")

    input_spec = demo_input_spec()
    cases = _load_training_cases(train_root, input_spec)
    report("training volumes prepared")
    voxel_ml = float(np.prod(input_spec.target_spacing)) / 1000.0
    scanners = sorted({c.scanner_id for c in cases})
    plans = [
        ("demo-good", cases, "every scanner"),
        ("demo-weak", [c for c in cases if c.scanner_id != left_out], f"without {left_out}"),
    ]
    built = []
    with deterministic_mode():
        for index, (name, subset, description) in enumerate(plans):
            if len({c.malignant for c in subset}) < 2:
                raise ModelError(
                    f"Expected benign and malignant training cases for {name}. Found only "
                    f"{sorted({c.malignant for c in subset})}; use more training cases."
                )
            torch.manual_seed(seed + index)
            generator = torch.Generator().manual_seed(seed * 1000 + index)
            net = LesionNet(voxel_ml)
            t0 = time.perf_counter()
            seg_loss = _train_segmentation(
                net,
                subset,
                steps=steps,
                patch=(48, 48, 24),
                batch=2,
                generator=generator,
                on_step=_step_reporter(report, name, steps),
            )
            head_loss = _train_head(net, subset, input_spec.roi_size)
            spec = ModelSpec(
                name=name,
                version="1.0.0",
                task=ModelTask.BOTH,
                format=ModelFormat.TORCHSCRIPT,
                input=input_spec,
                intended_use=(
                    "Demonstration only, not for clinical use: segments the liver lesion in "
                    "synthetic abdominal CT phantoms and scores its malignancy "
                    f"(trained on synthetic data from {description})."
                ),
            )
            path = out / f"{name}.ts"
            scripted = torch.jit.script(net)
            torch.jit.save(scripted, str(path))
            (out / f"{name}.spec.json").write_text(spec.to_json(), encoding="utf-8")
            training = {
                "training_set_root": str(train_root),
                "training_seed": train_seed,
                "training_manifest": str(manifest_path),
                "training_manifest_digest": manifest["digest"],
                "seed": seed,
                "scanners_used": sorted({c.scanner_id for c in subset}),
                "scanners_available": scanners,
                "scanner_left_out": left_out if name == "demo-weak" else None,
                "cases": [c.case_id for c in subset],
                "steps": steps,
                "segmentation_loss": seg_loss,
                "head_loss": head_loss,
                "seconds": time.perf_counter() - t0,
            }
            (out / f"{name}.training.json").write_text(
                json.dumps(training, indent=2, sort_keys=True), encoding="utf-8"
            )
            built.append(BuiltModel(path, spec, hash_model_files(path), training))
    report(f"built {len(built)} models in {time.perf_counter() - started:.0f} s")
    return built

"""Explanation maps of a model's output on one case, with a faithfulness check.

Maps are aids to review: they show where the model's output is sensitive, not
whether the output is correct, and the explorer labels them so. Each map comes
with a deletion check (Samek et al. 2017 [1]_; Petsiuk et al. 2018 [2]_): the
most salient voxels are replaced by a baseline in growing fractions and the
score's drop is compared with masking the same fractions at random. A map whose
deletion curve falls no faster than the random one says little about the model.

Methods (:class:`ExplanationMethod`)
------------------------------------
``probability``
    Segmentation: the model's foreground probability (sliding-window, as the run).
``occlusion``
    Classification: the score drop when a patch is replaced by the baseline,
    averaged over the patches covering a voxel (Zeiler & Fergus 2014 [3]_). Works with
    any callable, TorchScript and ONNX included.
``gradcam``
    Classification: Grad-CAM [4]_ through :class:`monai.visualize.GradCAM` on a named
    convolution layer. Needs an ``nn.Module`` with hooks; TorchScript modules have
    none, so for them the method falls back to ``saliency`` and says so in the label.
``saliency``
    Classification: absolute input gradient of the score (Simonyan et al. 2014 [5]_).

The pure functions take a score function ``(B, C, *spatial) -> (B,)`` and an input
tensor; :func:`explain_case` loads the model and the case, applies the model's
preprocessing and brings the map back onto the case's voxel grid ``(z, y, x)``.

References
----------
.. [1] W. Samek et al., "Evaluating the visualization of what a deep neural network
   has learned", IEEE TNNLS 28(11), 2017.
.. [2] V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized input sampling for explanation
   of black-box models", BMVC 2018 (deletion metric).
.. [3] M. Zeiler, R. Fergus, "Visualizing and understanding convolutional networks",
   ECCV 2014.
.. [4] R. Selvaraju et al., "Grad-CAM: Visual explanations from deep networks via
   gradient-based localization", ICCV 2017.
.. [5] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep inside convolutional networks:
   visualising image classification models and saliency maps", ICLR workshop 2014.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "AID_NOTE",
    "ExplanationMethod",
    "DEFAULT_SETTINGS",
    "Faithfulness",
    "Explanation",
    "settings_for",
    "params_hash",
    "normalise",
    "occlusion_sensitivity",
    "input_saliency",
    "grad_cam",
    "deletion_check",
    "explain_case",
    "save_explanation",
    "load_explanation",
]

#: The label every map carries.
AID_NOTE = (
    "Aid to review only: shows where the model's output is sensitive, not that the output "
    "is correct."
)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int, str], None] | None

_FORMAT_VERSION = 1


class ExplanationMethod(StrEnum):
    """How a map is computed (see the module docstring)."""

    PROBABILITY = "probability"
    OCCLUSION = "occlusion"
    GRADCAM = "gradcam"
    SALIENCY = "saliency"


#: Parameters of each method and of its deletion check, with their defaults.
DEFAULT_SETTINGS: dict[ExplanationMethod, dict[str, Any]] = {
    ExplanationMethod.PROBABILITY: {"deletion_steps": 4, "seed": 0},
    ExplanationMethod.OCCLUSION: {
        "patch": 8,
        "stride": 8,
        "baseline": 0.0,
        "deletion_steps": 4,
        "seed": 0,
    },
    ExplanationMethod.GRADCAM: {"layer": "", "deletion_steps": 4, "seed": 0},
    ExplanationMethod.SALIENCY: {"deletion_steps": 4, "seed": 0},
}


def _method(value: ExplanationMethod | str) -> ExplanationMethod:
    try:
        return ExplanationMethod(value)
    except ValueError:
        raise ValueError(
            f"Expected an explanation method of {[m.value for m in ExplanationMethod]}; "
            f"found {value!r}."
        ) from None


def settings_for(
    method: ExplanationMethod | str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The method's defaults updated with ``params``.

    Raises
    ------
    ValueError
        Unknown method or parameter name.
    """
    chosen = _method(method)
    settings = dict(DEFAULT_SETTINGS[chosen])
    for key, value in (params or {}).items():
        if key not in settings:
            raise ValueError(
                f"Expected parameters of {chosen.value} among {sorted(settings)}; found {key!r}."
            )
        settings[key] = value
    return settings


def params_hash(
    method: ExplanationMethod | str, settings: Mapping[str, Any], model_digest: str = ""
) -> str:
    """SHA-256 naming a map: method, settings, model digest and format version."""
    payload = {
        "method": _method(method).value,
        "settings": dict(settings),
        "model": model_digest,
        "format": _FORMAT_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Faithfulness:
    """A deletion check: scores as the most salient vs random voxels are masked.

    Parameters
    ----------
    fractions : tuple of float
        Fractions of the voxels masked (0 first).
    salient_scores, random_scores : tuple of float
        The score at each fraction, masking the most salient / random voxels.
    """

    fractions: tuple[float, ...]
    salient_scores: tuple[float, ...]
    random_scores: tuple[float, ...]

    @property
    def salient_area(self) -> float:
        """Mean score over the salient deletion curve (lower: the map found what matters)."""
        return float(np.mean(self.salient_scores))

    @property
    def random_area(self) -> float:
        """Mean score over the random deletion curve."""
        return float(np.mean(self.random_scores))

    @property
    def passed(self) -> bool:
        """Whether masking the salient voxels lowers the score more than random masking."""
        return self.salient_area < self.random_area

    def describe(self) -> str:
        """One line for display beside the map."""
        last = self.fractions[-1] if self.fractions else 0.0
        drop_s = self.salient_scores[0] - self.salient_scores[-1] if self.salient_scores else 0.0
        drop_r = self.random_scores[0] - self.random_scores[-1] if self.random_scores else 0.0
        verdict = "more" if self.passed else "not more"
        return (
            f"Deletion check: masking the most salient {last:.0%} of voxels drops the score by "
            f"{drop_s:.3f}, random masking by {drop_r:.3f} (mean score {self.salient_area:.3f} "
            f"vs {self.random_area:.3f}): the map is {verdict} informative than random."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "fractions": list(self.fractions),
            "salient_scores": list(self.salient_scores),
            "random_scores": list(self.random_scores),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faithfulness:
        """Inverse of :meth:`to_dict`."""
        return cls(
            fractions=tuple(float(v) for v in data["fractions"]),
            salient_scores=tuple(float(v) for v in data["salient_scores"]),
            random_scores=tuple(float(v) for v in data["random_scores"]),
        )


@dataclass(frozen=True, slots=True)
class Explanation:
    """An explanation map of one case.

    Parameters
    ----------
    method : ExplanationMethod
        The method actually used (``saliency`` when Grad-CAM fell back).
    label : str
        What the map shows, for the legend.
    settings : dict
        The parameters it was computed with.
    heat : numpy.ndarray
        Values in [0, 1] on the case's grid: ``(z, y, x)`` (3D) or ``(rows, cols)``.
    faithfulness : Faithfulness or None
    note : str
        :data:`AID_NOTE`.
    """

    method: ExplanationMethod
    label: str
    settings: Mapping[str, Any]
    heat: np.ndarray = field(repr=False)
    faithfulness: Faithfulness | None
    note: str = AID_NOTE


def normalise(values: np.ndarray) -> np.ndarray:
    """Scale non-negative parts of ``values`` to [0, 1] (all zero when flat)."""
    data = np.nan_to_num(np.asarray(values, dtype=np.float32))
    data = np.clip(data, 0.0, None)
    top = float(data.max()) if data.size else 0.0
    return (data / top).astype(np.float32) if top > 0 else np.zeros_like(data, dtype=np.float32)


def _windows(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def occlusion_sensitivity(
    score_fn: ScoreFn,
    image: torch.Tensor,
    *,
    patch: int = 8,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 8,
    progress: Progress = None,
) -> np.ndarray:
    """Score drop when each patch is replaced by ``baseline``, per voxel.

    Parameters
    ----------
    score_fn : callable
        ``(B, C, *spatial) -> (B,)`` scores; any callable (TorchScript, ONNX wrappers).
    image : torch.Tensor
        ``(1, C, *spatial)`` model input.
    patch, stride : int
        Cubic (square) patch edge and step in voxels; ``stride`` defaults to ``patch``.
    baseline : float
        Value the patch is filled with (0: the bottom of the model's intensity window).
    batch_size : int
        Occluded copies scored per call.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    numpy.ndarray
        ``spatial`` float32: mean drop over the patches covering each voxel (may be negative).
    """
    if image.ndim < 4 or image.shape[0] != 1:
        raise ValueError(
            f"Expected an input of shape (1, C, *spatial); found {tuple(image.shape)}."
        )
    spatial = tuple(int(s) for s in image.shape[2:])
    patch = max(1, min(int(patch), *spatial))
    stride = max(1, int(stride or patch))
    grids = np.meshgrid(*(_windows(s, patch, stride) for s in spatial), indexing="ij")
    corners = np.stack([g.ravel() for g in grids], axis=1)
    with torch.no_grad():
        base = float(score_fn(image).reshape(-1)[0])
    total = np.zeros(spatial, dtype=np.float64)
    count = np.zeros(spatial, dtype=np.float64)
    done = 0
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        batch = image.repeat(len(chunk), *([1] * (image.ndim - 1)))
        for i, corner in enumerate(chunk):
            region: tuple[int | slice, ...] = (
                i,
                slice(None),
                *(slice(int(c), int(c) + patch) for c in corner),
            )
            batch[region] = baseline
        with torch.no_grad():
            scores = score_fn(batch).reshape(-1).detach().cpu().numpy()
        for corner, score in zip(chunk, scores, strict=True):
            where = tuple(slice(int(c), int(c) + patch) for c in corner)
            total[where] += base - float(score)
            count[where] += 1
        done += len(chunk)
        if progress is not None:
            progress(done, len(corners), f"occlusion {done}/{len(corners)} patches")
    return (total / np.maximum(count, 1)).astype(np.float32)


def input_saliency(score_fn: ScoreFn, image: torch.Tensor) -> np.ndarray:
    """Absolute gradient of the score with respect to the input, max over channels.

    Works with TorchScript modules (autograd, no hooks).

    Returns
    -------
    numpy.ndarray
        ``spatial`` float32.
    """
    x = image.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = score_fn(x).reshape(-1).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(dim=1)[0].detach().cpu().numpy().astype(np.float32)


class _ScoreHead(nn.Module):
    """The model with its score as a ``(B, 1)`` output, for :class:`monai.visualize.GradCAM`."""

    def __init__(self, net: nn.Module, select: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.select = select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.net(x)).reshape(x.shape[0], 1)


def _last_conv(module: nn.Module) -> str:
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    if not names:
        raise ValueError("Expected a convolution layer for Grad-CAM; found none in the model.")
    return names[-1]


def grad_cam(
    module: nn.Module,
    image: torch.Tensor,
    *,
    select: Callable[[Any], torch.Tensor],
    layer: str = "",
) -> tuple[np.ndarray, str]:
    """Grad-CAM of the score on a named convolution layer (:class:`monai.visualize.GradCAM`).

    Parameters
    ----------
    module : torch.nn.Module
        A Python module (not TorchScript: those have no hooks).
    image : torch.Tensor
        ``(1, C, *spatial)``.
    select : callable
        Model output -> score tensor ``(B, 1)``.
    layer : str
        Name in ``module.named_modules()``; the last convolution when empty.

    Returns
    -------
    heat : numpy.ndarray
        ``spatial`` float32 in [0, 1] (MONAI's upsampling and normalisation).
    layer : str
        The layer used.

    Raises
    ------
    ValueError
        A TorchScript module, or no such layer.
    """
    from monai.visualize import GradCAM

    if isinstance(module, torch.jit.ScriptModule):
        raise ValueError("TorchScript modules support no hooks; use input saliency instead.")
    chosen = layer or _last_conv(module)
    if chosen not in dict(module.named_modules()):
        raise ValueError(f"Expected a layer of the model for Grad-CAM; found no {chosen!r}.")
    head = _ScoreHead(module, select)
    cam = GradCAM(nn_module=head, target_layers=f"net.{chosen}")
    with torch.enable_grad():
        heat = cam(x=image.detach().clone().requires_grad_(True), class_idx=0)
    return np.asarray(heat[0, 0].detach().cpu().numpy(), dtype=np.float32), chosen


def deletion_check(
    score_fn: ScoreFn,
    image: torch.Tensor,
    heat: np.ndarray,
    *,
    steps: int = 4,
    max_fraction: float = 0.5,
    baseline: float = 0.0,
    seed: int = 0,
) -> Faithfulness:
    """Score as the most salient vs random voxels are replaced by ``baseline``.

    Parameters
    ----------
    score_fn : callable
        ``(B, C, *spatial) -> (B,)``.
    image : torch.Tensor
        ``(1, C, *spatial)``.
    heat : numpy.ndarray
        ``spatial`` saliency on the same grid.
    steps : int
        Masked fractions after 0: ``max_fraction * k / steps`` for k = 1..steps.
    seed : int
        Seed of the random order.

    Returns
    -------
    Faithfulness
    """
    spatial = tuple(image.shape[2:])
    if tuple(heat.shape) != spatial:
        raise ValueError(f"Expected a map of shape {spatial}; found {tuple(heat.shape)}.")
    n = int(np.prod(spatial))
    # Ties (flat regions) are broken at random so that a flat map behaves like random masking.
    rng = np.random.default_rng(seed)
    jitter = rng.random(n) * 1e-6
    salient_order = np.argsort(-(heat.ravel().astype(np.float64) + jitter), kind="stable")
    random_order = rng.permutation(n)
    fractions = [max_fraction * k / max(steps, 1) for k in range(steps + 1)]
    batch = []
    for order in (salient_order, random_order):
        for f in fractions:
            masked = image.clone()
            flat = masked.reshape(1, masked.shape[1], -1)
            flat[:, :, order[: int(round(f * n))]] = baseline
            batch.append(masked)
    with torch.no_grad():
        scores = [float(score_fn(x).reshape(-1)[0]) for x in batch]
    k = len(fractions)
    return Faithfulness(
        fractions=tuple(fractions),
        salient_scores=tuple(scores[:k]),
        random_scores=tuple(scores[k:]),
    )


# -- one case -----------------------------------------------------------------------------------


def _select(raw: Any, key: str | None, index: int) -> torch.Tensor:
    if isinstance(raw, dict):
        if key is None or key not in raw:
            raise ValueError(f"Expected the output {key!r} of the model; found {sorted(raw)}.")
        return torch.as_tensor(raw[key])
    if isinstance(raw, tuple | list):
        return torch.as_tensor(raw[index])
    return torch.as_tensor(raw)


def explain_case(
    image_paths: Sequence[str | Path],
    model_path: str | Path,
    spec: Any,
    method: ExplanationMethod | str,
    settings: Mapping[str, Any] | None = None,
    *,
    device: str | None = "cpu",
    expected_hashes: dict[str, str] | None = None,
    progress: Progress = None,
) -> Explanation:
    """Compute an explanation map of a registered model on one case.

    The case is read and preprocessed as the run does
    (:func:`workbench.inference.preprocess.preprocess_volume`); a classifier sees its
    input resized to ``roi_size`` as in the run; the map is brought back onto the
    case's voxel grid.

    Parameters
    ----------
    image_paths : sequence of path
        The case's image files.
    model_path : path
        The registered model (TorchScript, ONNX or MONAI bundle).
    spec : ModelSpec
    method : ExplanationMethod or str
    settings : mapping, optional
        See :func:`settings_for`.
    device : str, optional
    expected_hashes : dict, optional
        The model files' registered SHA-256s (checked on load).
    progress : callable, optional

    Returns
    -------
    Explanation

    Raises
    ------
    ValueError
        The method does not fit the model's task.
    """
    from monai.inferers import sliding_window_inference

    from workbench.inference.loading import load_model
    from workbench.inference.preprocess import (
        load_case_image,
        preprocess_volume,
        restore_original_grid,
    )

    chosen = _method(method)
    values = settings_for(chosen, settings)
    inp = spec.input
    if chosen is ExplanationMethod.PROBABILITY and not spec.segments:
        raise ValueError("The probability map needs a segmentation model; use occlusion instead.")
    if chosen is not ExplanationMethod.PROBABILITY and not spec.scores:
        raise ValueError(
            f"The {chosen.value} map explains a score; this model has none. Use probability."
        )
    report = progress or (lambda _d, _t, _m: None)
    report(0, 3, "loading the model and the case")
    loaded = load_model(model_path, spec, device, expected_hashes=expected_hashes)
    module = loaded.module
    prepared = preprocess_volume(load_case_image(list(image_paths), inp), inp)
    image = prepared.image.as_tensor()[None].to(loaded.device).float()
    spatial_dims = image.ndim - 2
    mode = "trilinear" if spatial_dims == 3 else "bilinear"
    seg_index = 0
    score_index = 1 if spec.segments else 0

    def score_of(raw: Any) -> torch.Tensor:
        score = (
            _select(raw, inp.score_output, score_index).float().reshape(raw_batch(raw), -1)[:, :1]
        )
        if str(getattr(inp, "score_activation", "none")) == "sigmoid":
            score = torch.sigmoid(score)
        return score

    def raw_batch(raw: Any) -> int:
        first = next(iter(raw.values())) if isinstance(raw, dict) else raw
        if isinstance(first, tuple | list):
            first = first[0]
        return int(torch.as_tensor(first).shape[0])

    def foreground(windows: torch.Tensor) -> torch.Tensor:
        raw = module(windows)
        logits = _select(raw, inp.segmentation_output, seg_index).float()
        return 1.0 - torch.softmax(logits, dim=1)[:, :1]

    def seg_score(x: torch.Tensor) -> torch.Tensor:
        prob = sliding_window_inference(
            x,
            roi_size=inp.roi_size,
            sw_batch_size=inp.sw_batch_size,
            predictor=foreground,
            overlap=inp.sw_overlap,
            mode="constant",
        )
        assert isinstance(prob, torch.Tensor)
        return prob.reshape(x.shape[0], -1).mean(dim=1)

    if chosen is ExplanationMethod.PROBABILITY:
        report(1, 3, "computing the foreground probability")
        with torch.no_grad():
            prob = sliding_window_inference(
                image,
                roi_size=inp.roi_size,
                sw_batch_size=inp.sw_batch_size,
                predictor=foreground,
                overlap=inp.sw_overlap,
                mode="constant",
            )
        assert isinstance(prob, torch.Tensor)
        model_heat = prob[0, 0].detach().cpu().numpy().astype(np.float32)
        label = "Model foreground probability"
        report(2, 3, "deletion check")
        check = deletion_check(
            seg_score,
            image,
            model_heat,
            steps=int(values["deletion_steps"]),
            seed=int(values["seed"]),
        )
        grid_input = model_heat
    else:
        resized = torch.nn.functional.interpolate(
            image, size=tuple(inp.roi_size), mode=mode, align_corners=False
        )

        def cls_score(x: torch.Tensor) -> torch.Tensor:
            return score_of(module(x))[:, 0]

        used = chosen
        if chosen is ExplanationMethod.OCCLUSION:
            report(1, 3, "occluding patches")
            small = occlusion_sensitivity(
                cls_score,
                resized,
                patch=int(values["patch"]),
                stride=int(values["stride"]),
                baseline=float(values["baseline"]),
                progress=progress,
            )
            label = f"Occlusion sensitivity (patch {values['patch']}, stride {values['stride']})"
        elif chosen is ExplanationMethod.GRADCAM and not isinstance(module, torch.jit.ScriptModule):
            report(1, 3, "Grad-CAM")
            small, layer = grad_cam(
                module, resized, select=score_of, layer=str(values["layer"] or "")
            )
            label = f"Grad-CAM on layer {layer} (monai.visualize)"
        else:
            report(1, 3, "input gradients")
            small = input_saliency(cls_score, resized)
            used = ExplanationMethod.SALIENCY
            label = "Input-gradient saliency"
            if chosen is ExplanationMethod.GRADCAM:
                label += " (TorchScript model: no layer hooks, Grad-CAM not available)"
        small = normalise(small)
        report(2, 3, "deletion check")
        check = deletion_check(
            cls_score, resized, small, steps=int(values["deletion_steps"]), seed=int(values["seed"])
        )
        chosen = used
        grid_input = (
            torch.nn.functional.interpolate(
                torch.from_numpy(small)[None, None],
                size=tuple(image.shape[2:]),
                mode=mode,
                align_corners=False,
            )[0, 0]
            .numpy()
            .astype(np.float32)
        )
    if len(prepared.original_shape) == 3:
        heat = restore_original_grid(torch.from_numpy(grid_input)[None], prepared)[0].numpy()
    else:
        heat = torch.nn.functional.interpolate(
            torch.from_numpy(grid_input)[None, None],
            size=tuple(prepared.original_shape),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
    report(3, 3, "done")
    return Explanation(
        method=chosen,
        label=label,
        settings=values,
        heat=normalise(heat)
        if chosen is not ExplanationMethod.PROBABILITY
        else np.clip(heat, 0, 1).astype(np.float32),
        faithfulness=check,
    )


def save_explanation(path: str | Path, explanation: Explanation, *, model_digest: str = "") -> Path:
    """Write a map with its parameters and check to ``path`` (``.npz``, atomically)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": _FORMAT_VERSION,
        "method": explanation.method.value,
        "label": explanation.label,
        "settings": dict(explanation.settings),
        "note": explanation.note,
        "model_digest": model_digest,
        "faithfulness": explanation.faithfulness.to_dict() if explanation.faithfulness else None,
    }
    partial = out.with_suffix(".partial.npz")
    np.savez_compressed(
        partial,
        heat=explanation.heat.astype(np.float16),
        meta=np.array(json.dumps(meta, sort_keys=True, default=str)),
    )
    partial.replace(out)
    return out


def load_explanation(path: str | Path) -> Explanation:
    """Read a map written by :func:`save_explanation`.

    Raises
    ------
    ValueError
        Not a map of this format.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        heat = data["heat"].astype(np.float32)
    if meta.get("format") != _FORMAT_VERSION:
        raise ValueError(f"Expected map format {_FORMAT_VERSION}; found {meta.get('format')!r}.")
    check = meta.get("faithfulness")
    return Explanation(
        method=ExplanationMethod(meta["method"]),
        label=str(meta["label"]),
        settings=dict(meta["settings"]),
        heat=heat,
        faithfulness=Faithfulness.from_dict(check) if check else None,
        note=str(meta.get("note") or AID_NOTE),
    )

"""Segmentation overlap and surface-distance metrics with anisotropic voxel spacing.

Surfaces are the boundary voxels of each mask (the mask minus its erosion by the
face-connected structuring element), as MONAI ``get_mask_edges``, extracted on the
bounding box of both masks padded by one voxel of background (the same result as on
the full volume). Distances are exact Euclidean nearest-surface-voxel distances in
millimetres with anisotropic ``spacing``, from a k-d tree over the surface voxel centres
(the same values as ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, which
the tests check, and faster because only surface voxels are touched).

Conventions for empty masks (never NaN):

==================  ===========  ==========================  ==============
case                Dice / IoU   Hausdorff / HD95 / MSD      surface Dice
==================  ===========  ==========================  ==============
both empty          1.0          0.0                         1.0
one empty           0.0          raise ``NotEstimableError``  0.0
==================  ===========  ==========================  ==============

:func:`segmentation_metrics` never raises for empty masks: it returns a ``status``
(``"ok"``, ``"both_empty"``, ``"pred_empty"``, ``"ref_empty"``) and a reason, with the
undefined distances set to ``None``.

References
----------
.. [1] Dice LR. Measures of the amount of ecologic association between species. Ecology
   26:297-302, 1945.
.. [2] Nikolov S, et al. Clinically applicable segmentation of head and neck anatomy for
   radiotherapy. J Med Internet Res 23:e26151, 2021 (surface Dice at a tolerance).
.. [3] Maier-Hein L, et al. Metrics reloaded. Nat Methods 21:195-212, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from workbench.errors import NotEstimableError, StatisticsError

__all__ = [
    "SegmentationMetrics",
    "dice",
    "hausdorff_distance",
    "iou",
    "mean_surface_distance",
    "segmentation_metrics",
    "surface_dice",
]


def _masks(pred: ArrayLike, ref: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    p, r = np.asarray(pred), np.asarray(ref)
    if p.shape != r.shape:
        raise StatisticsError(
            f"pred and ref must have the same shape, found {p.shape} and {r.shape}."
        )
    if p.ndim not in (2, 3):
        raise StatisticsError(f"Masks must be 2-D or 3-D, found {p.ndim}-D.")
    out = []
    for name, m in (("pred", p), ("ref", r)):
        if m.dtype != bool:
            if m.dtype.kind == "f" and np.isnan(m).any():
                raise StatisticsError(f"{name} contains NaN; masks must be binary.")
            if not np.isin(m, (0, 1)).all():
                raise StatisticsError(
                    f"{name} must be a binary mask (bool or 0/1), found values "
                    f"{np.unique(m)[:5].tolist()}; threshold label maps first."
                )
            m = m.astype(bool)
        out.append(m)
    return out[0], out[1]


def _spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(map(float, spacing))  # type: ignore[arg-type]
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise StatisticsError(
            f"spacing must be {ndim} positive numbers (mm per voxel along each axis), found "
            f"{spacing!r}."
        )
    return sp


def dice(pred: ArrayLike, ref: ArrayLike) -> float:
    """Dice similarity coefficient ``2|P & R| / (|P| + |R|)`` [1]_.

    Parameters
    ----------
    pred, ref : array_like of bool, shape (z, y, x) or (y, x)
        Predicted and reference masks.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty (documented convention: nothing to find
        and nothing found is perfect agreement).

    Examples
    --------
    >>> dice([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    0.6666666666666666
    """
    p, r = _masks(pred, ref)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def iou(pred: ArrayLike, ref: ArrayLike) -> float:
    """Intersection over union (Jaccard) ``|P & R| / |P | R|``; 1.0 when both are empty.

    Parameters
    ----------
    pred, ref : array_like of bool
        Predicted and reference masks of equal shape.

    Returns
    -------
    float
    """
    p, r = _masks(pred, ref)
    union = int(np.logical_or(p, r).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, r).sum()) / union


@dataclass(frozen=True, slots=True)
class _SurfaceDistances:
    pred_to_ref: NDArray[np.float64]  # distance of each pred surface voxel to the ref surface
    ref_to_pred: NDArray[np.float64]


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return mask & ~ndimage.binary_erosion(mask)


def _bounding_box(p: NDArray[np.bool_], r: NDArray[np.bool_]) -> tuple[slice, ...]:
    """Bounding box of the union of both masks (projections are cheaper than np.nonzero)."""
    box = []
    for axis in range(p.ndim):
        others = tuple(a for a in range(p.ndim) if a != axis)
        hit = np.flatnonzero(p.any(axis=others) | r.any(axis=others))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _surface_distances(
    p: NDArray[np.bool_], r: NDArray[np.bool_], spacing: tuple[float, ...]
) -> _SurfaceDistances:
    box = _bounding_box(p, r)
    # pad by one voxel of background so that masks touching the image border erode
    # exactly as in the full volume (scipy's border_value=0)
    pc = np.pad(p[box], 1)
    rc = np.pad(r[box], 1)
    sp_, sr = _surface(pc), _surface(rc)
    # exact nearest-neighbour distances between surface voxel centres in mm; a k-d tree
    # touches only surface voxels and beats a dense distance transform of the box
    scale = np.asarray(spacing, dtype=np.float64)
    pts_p, pts_r = np.argwhere(sp_) * scale, np.argwhere(sr) * scale
    d_pr = cKDTree(pts_r, leafsize=32).query(pts_p, k=1)[0]
    d_rp = cKDTree(pts_p, leafsize=32).query(pts_r, k=1)[0]
    return _SurfaceDistances(
        pred_to_ref=np.asarray(d_pr, dtype=np.float64),
        ref_to_pred=np.asarray(d_rp, dtype=np.float64),
    )


def _emptiness(p: NDArray[np.bool_], r: NDArray[np.bool_]) -> str:
    pe, re_ = not p.any(), not r.any()
    if pe and re_:
        return "both_empty"
    if pe:
        return "pred_empty"
    if re_:
        return "ref_empty"
    return "ok"


_REASONS = {
    "both_empty": "both masks are empty (true negative case)",
    "pred_empty": "the predicted mask is empty but the reference is not",
    "ref_empty": "the reference mask is empty but the prediction is not",
}


def _check_percentile(percentile: float) -> float:
    q = float(percentile)
    if not 0.0 <= q <= 100.0:
        raise StatisticsError(f"percentile must lie in [0, 100], found {percentile!r}.")
    return q


def _hd(d: _SurfaceDistances, q: float) -> float:
    return max(float(np.percentile(d.pred_to_ref, q)), float(np.percentile(d.ref_to_pred, q)))


def _msd(d: _SurfaceDistances) -> float:
    total = float(d.pred_to_ref.sum() + d.ref_to_pred.sum())
    return total / (len(d.pred_to_ref) + len(d.ref_to_pred))


def _nsd(d: _SurfaceDistances, tolerance: float) -> float:
    hits = int((d.pred_to_ref <= tolerance).sum() + (d.ref_to_pred <= tolerance).sum())
    return hits / (len(d.pred_to_ref) + len(d.ref_to_pred))


def hausdorff_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: float | Sequence[float],
    percentile: float = 95.0,
) -> float:
    """Symmetric (percentile) Hausdorff distance between mask surfaces, in mm.

    Parameters
    ----------
    pred, ref : array_like of bool, shape (z, y, x) or (y, x)
        Predicted and reference masks.
    spacing : float or sequence of float
        Voxel size along each axis in mm (e.g. ``Volume.spacing`` (z, y, x)).
    percentile : float
        100 gives the classic (maximum) Hausdorff distance; 95 gives HD95.

    Returns
    -------
    float
        ``max(P_q(d(pred->ref)), P_q(d(ref->pred)))``: the percentile of each directed
        set of surface distances, then the larger one (as MONAI
        ``compute_hausdorff_distance``; some tools instead take the percentile of the
        pooled distances). 0.0 when both masks are empty.

    Raises
    ------
    NotEstimableError
        When exactly one mask is empty (the distance is undefined).
    """
    p, r = _masks(pred, ref)
    q = _check_percentile(percentile)
    sp = _spacing(spacing, p.ndim)
    status = _emptiness(p, r)
    if status == "both_empty":
        return 0.0
    if status != "ok":
        raise NotEstimableError(f"Hausdorff distance is not estimable: {_REASONS[status]}.")
    return _hd(_surface_distances(p, r, sp), q)


def mean_surface_distance(
    pred: ArrayLike, ref: ArrayLike, *, spacing: float | Sequence[float]
) -> float:
    """Average symmetric surface distance (ASSD) in mm.

    Parameters
    ----------
    pred, ref : array_like of bool
        Masks of equal shape.
    spacing : float or sequence of float
        Voxel size in mm along each axis.

    Returns
    -------
    float
        Mean of all surface distances of both directions pooled,
        ``(sum d(p->R) + sum d(r->P)) / (|dP| + |dR|)`` (MONAI
        ``compute_average_surface_distance(symmetric=True)``). 0.0 when both are empty.

    Raises
    ------
    NotEstimableError
        When exactly one mask is empty.
    """
    p, r = _masks(pred, ref)
    sp = _spacing(spacing, p.ndim)
    status = _emptiness(p, r)
    if status == "both_empty":
        return 0.0
    if status != "ok":
        raise NotEstimableError(f"Mean surface distance is not estimable: {_REASONS[status]}.")
    return _msd(_surface_distances(p, r, sp))


def surface_dice(
    pred: ArrayLike, ref: ArrayLike, *, spacing: float | Sequence[float], tolerance: float
) -> float:
    """Normalized surface Dice at a tolerance in mm [2]_.

    Parameters
    ----------
    pred, ref : array_like of bool
        Masks of equal shape.
    spacing : float or sequence of float
        Voxel size in mm along each axis.
    tolerance : float
        Distance in mm within which a surface voxel counts as matched.

    Returns
    -------
    float
        Fraction of surface voxels of both masks lying within ``tolerance`` of the other
        surface, counting voxels (as MONAI ``compute_surface_dice`` with its default
        ``use_subvoxels=False``; Nikolov et al. weight by surface-element areas instead).
        1.0 when both masks are empty, 0.0 when exactly one is.
    """
    p, r = _masks(pred, ref)
    sp = _spacing(spacing, p.ndim)
    tol = float(tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise StatisticsError(
            f"tolerance must be a non-negative number of mm, found {tolerance!r}."
        )
    status = _emptiness(p, r)
    if status == "both_empty":
        return 1.0
    if status != "ok":
        return 0.0
    return _nsd(_surface_distances(p, r, sp), tol)


@dataclass(frozen=True, slots=True)
class SegmentationMetrics:
    """All segmentation metrics of one case, with an explicit status for empty masks.

    Parameters
    ----------
    status : str
        ``"ok"``, ``"both_empty"``, ``"pred_empty"`` or ``"ref_empty"``.
    reason : str
        Why distances are missing (empty when ``status == "ok"``).
    dice, iou : float
        Overlap (see the module's conventions for empty masks).
    hausdorff, hd95, mean_surface_distance : float or None
        In mm; ``None`` when exactly one mask is empty.
    surface_dice : float
        Normalized surface Dice at ``tolerance``.
    tolerance : float
        The NSD tolerance in mm.
    pred_voxels, ref_voxels : int
        Foreground voxels in each mask.
    pred_volume_ml, ref_volume_ml : float
        Foreground volumes in millilitres.
    """

    status: str
    reason: str
    dice: float
    iou: float
    hausdorff: float | None
    hd95: float | None
    mean_surface_distance: float | None
    surface_dice: float
    tolerance: float
    pred_voxels: int
    ref_voxels: int
    pred_volume_ml: float
    ref_volume_ml: float


def segmentation_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: float | Sequence[float],
    tolerance: float,
) -> SegmentationMetrics:
    """Dice, IoU, Hausdorff, HD95, ASSD and surface Dice of one case in one pass.

    Parameters
    ----------
    pred, ref : array_like of bool, shape (z, y, x) or (y, x)
        Predicted and reference masks.
    spacing : float or sequence of float
        Voxel size in mm along each axis.
    tolerance : float
        Surface-Dice tolerance in mm.

    Returns
    -------
    SegmentationMetrics
        Never raises for empty masks and never holds NaN; see ``status`` and ``reason``.
    """
    p, r = _masks(pred, ref)
    sp = _spacing(spacing, p.ndim)
    tol = float(tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise StatisticsError(
            f"tolerance must be a non-negative number of mm, found {tolerance!r}."
        )
    voxel_ml = float(np.prod(sp)) / 1000.0
    np_, nr = int(p.sum()), int(r.sum())
    status = _emptiness(p, r)
    common = dict(
        dice=dice(p, r),
        iou=iou(p, r),
        tolerance=tol,
        pred_voxels=np_,
        ref_voxels=nr,
        pred_volume_ml=np_ * voxel_ml,
        ref_volume_ml=nr * voxel_ml,
    )
    if status == "both_empty":
        return SegmentationMetrics(
            status=status,
            reason=_REASONS[status],
            hausdorff=0.0,
            hd95=0.0,
            mean_surface_distance=0.0,
            surface_dice=1.0,
            **common,  # type: ignore[arg-type]
        )
    if status != "ok":
        return SegmentationMetrics(
            status=status,
            reason=_REASONS[status] + "; surface distances are undefined",
            hausdorff=None,
            hd95=None,
            mean_surface_distance=None,
            surface_dice=0.0,
            **common,  # type: ignore[arg-type]
        )
    d = _surface_distances(p, r, sp)
    return SegmentationMetrics(
        status="ok",
        reason="",
        hausdorff=_hd(d, 100.0),
        hd95=_hd(d, 95.0),
        mean_surface_distance=_msd(d),
        surface_dice=_nsd(d, tol),
        **common,  # type: ignore[arg-type]
    )

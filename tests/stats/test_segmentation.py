"""Segmentation metrics: definitions, empty masks, and agreement with MONAI.

Conventions compared with MONAI 1.6 (``monai.metrics``):

- Surfaces are ``mask & ~binary_erosion(mask)`` as MONAI ``get_mask_edges`` (spacing=None
  path); distances are Euclidean in mm with anisotropic spacing: identical values.
- Hausdorff / HD95: percentile of each directed distance set, then the maximum, as
  ``compute_hausdorff_distance``: identical.
- Mean surface distance: pooled symmetric mean as
  ``compute_average_surface_distance(symmetric=True)``: identical.
- Surface Dice: voxel-counting NSD as ``compute_surface_dice(use_subvoxels=False)``:
  identical. MONAI returns NaN (with a warning) for empty masks; we return the documented
  conventions or raise ``NotEstimableError``.
- Dice: ``DiceMetric(include_background=True)`` equals ours on non-empty masks; for two
  empty masks MONAI gives NaN (``ignore_empty=True``) or 1.0 (``ignore_empty=False``); ours 1.0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy.spatial.distance import cdist

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import (
    dice,
    hausdorff_distance,
    iou,
    mean_surface_distance,
    segmentation_metrics,
    surface_dice,
)
from workbench.stats.segmentation import _surface

SPACING = (2.5, 0.8, 0.7)


def _ellipsoids(shift: tuple[int, int, int] = (1, -2, 1)) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.indices((30, 48, 40))
    ref = ((z - 15) ** 2 / 60 + (y - 24) ** 2 / 200 + (x - 20) ** 2 / 120) < 1
    dz, dy, dx = shift
    pred = ((z - 15 - dz) ** 2 / 50 + (y - 24 - dy) ** 2 / 220 + (x - 20 - dx) ** 2 / 100) < 1
    return pred, ref


def _t(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask[None, None].astype(np.float32))


def test_distances_match_monai() -> None:
    pred, ref = _ellipsoids()
    sp = list(SPACING)
    m = segmentation_metrics(pred, ref, spacing=SPACING, tolerance=1.5)
    assert m.status == "ok"
    assert m.hausdorff == pytest.approx(
        float(compute_hausdorff_distance(_t(pred), _t(ref), spacing=sp)), rel=1e-6
    )
    assert m.hd95 == pytest.approx(
        float(compute_hausdorff_distance(_t(pred), _t(ref), percentile=95, spacing=sp)), rel=1e-6
    )
    assert m.mean_surface_distance == pytest.approx(
        float(compute_average_surface_distance(_t(pred), _t(ref), symmetric=True, spacing=sp)),
        rel=1e-6,
    )
    two = lambda m_: torch.cat([1 - _t(m_), _t(m_)], dim=1)  # noqa: E731
    for tol in (0.5, 1.5, 3.0):
        nsd = float(compute_surface_dice(two(pred), two(ref), class_thresholds=[tol], spacing=sp))
        assert surface_dice(pred, ref, spacing=SPACING, tolerance=tol) == pytest.approx(
            nsd, rel=1e-6
        )
    metric = DiceMetric(include_background=True)
    metric(_t(pred), _t(ref))
    assert m.dice == pytest.approx(float(metric.aggregate()), rel=1e-6)


def test_distances_match_brute_force_point_sets() -> None:
    pred, ref = _ellipsoids((0, 3, -2))
    ps = np.argwhere(_surface(pred)) * np.array(SPACING)
    rs = np.argwhere(_surface(ref)) * np.array(SPACING)
    d = cdist(ps, rs)
    d_pr, d_rp = d.min(axis=1), d.min(axis=0)
    assert hausdorff_distance(pred, ref, spacing=SPACING, percentile=100) == pytest.approx(
        max(d_pr.max(), d_rp.max())
    )
    assert mean_surface_distance(pred, ref, spacing=SPACING) == pytest.approx(
        (d_pr.sum() + d_rp.sum()) / (len(d_pr) + len(d_rp))
    )


def test_mask_touching_the_border_is_handled_like_the_full_volume() -> None:
    ref = np.zeros((10, 20, 20), bool)
    ref[0:5, 0:10, 5:15] = True
    pred = np.zeros_like(ref)
    pred[0:6, 2:12, 4:14] = True
    ours = hausdorff_distance(pred, ref, spacing=(3.0, 1.0, 1.0), percentile=100)
    ref_val = float(compute_hausdorff_distance(_t(pred), _t(ref), spacing=[3.0, 1.0, 1.0]))
    assert ours == pytest.approx(ref_val)


def test_two_dimensional_masks() -> None:
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.zeros_like(a)
    b[5:10, 7:12] = True
    assert dice(a, b) == pytest.approx(2 * 15 / 50)
    assert iou(a, b) == pytest.approx(15 / 35)
    assert hausdorff_distance(a, b, spacing=(1.0, 0.5), percentile=100) == pytest.approx(1.0)


def test_both_empty_follows_documented_convention() -> None:
    e = np.zeros((5, 6, 7), bool)
    m = segmentation_metrics(e, e, spacing=1.0, tolerance=1.0)
    assert (m.status, m.dice, m.iou, m.surface_dice) == ("both_empty", 1.0, 1.0, 1.0)
    assert (m.hausdorff, m.hd95, m.mean_surface_distance) == (0.0, 0.0, 0.0)
    assert dice(e, e) == 1.0 and iou(e, e) == 1.0
    assert hausdorff_distance(e, e, spacing=1.0) == 0.0
    assert surface_dice(e, e, spacing=1.0, tolerance=1.0) == 1.0


@pytest.mark.parametrize("empty", ["pred", "ref"])
def test_one_empty_mask_gives_status_or_raises(empty: str) -> None:
    full = np.zeros((5, 6, 7), bool)
    full[1:3, 1:4, 2:5] = True
    e = np.zeros_like(full)
    pred, ref = (e, full) if empty == "pred" else (full, e)
    m = segmentation_metrics(pred, ref, spacing=1.0, tolerance=1.0)
    assert m.status == f"{empty}_empty"
    assert m.reason
    assert m.dice == 0.0 and m.surface_dice == 0.0
    assert m.hausdorff is None and m.hd95 is None and m.mean_surface_distance is None
    with pytest.raises(NotEstimableError, match="empty"):
        hausdorff_distance(pred, ref, spacing=1.0)
    with pytest.raises(NotEstimableError, match="empty"):
        mean_surface_distance(pred, ref, spacing=1.0)


def test_volumes_in_millilitres() -> None:
    pred, ref = _ellipsoids()
    m = segmentation_metrics(pred, ref, spacing=SPACING, tolerance=1.0)
    assert m.ref_volume_ml == pytest.approx(ref.sum() * 2.5 * 0.8 * 0.7 / 1000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1.0, 1.0)}, "spacing must be 3"),
        ({"spacing": (1.0, -1.0, 1.0)}, "positive"),
        ({"spacing": 1.0, "percentile": 120}, "percentile"),
    ],
)
def test_invalid_options_are_explained(kwargs: dict, match: str) -> None:
    pred, ref = _ellipsoids()
    with pytest.raises(StatisticsError, match=match):
        hausdorff_distance(pred, ref, **kwargs)


def test_label_maps_and_shape_mismatch_are_rejected() -> None:
    a = np.zeros((4, 4, 4), int)
    a[0, 0, 0] = 2
    with pytest.raises(StatisticsError, match="binary"):
        dice(a, a)
    with pytest.raises(StatisticsError, match="same shape"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


@pytest.mark.slow
def test_large_volume_runs() -> None:
    a = np.zeros((512, 512, 300), bool)
    b = np.zeros_like(a)
    a[100:300, 150:350, 50:200] = True
    b[110:310, 140:345, 60:210] = True
    m = segmentation_metrics(a, b, spacing=(0.7, 0.7, 1.5), tolerance=2.0)
    assert m.hausdorff == pytest.approx(
        np.sqrt((10 * 0.7) ** 2 + (10 * 0.7) ** 2 + (10 * 1.5) ** 2)
    )


def test_distances_equal_the_euclidean_distance_transform() -> None:
    from scipy import ndimage

    pred, ref = _ellipsoids((2, 1, -3))
    sp_, sr = _surface(np.pad(pred, 1)), _surface(np.pad(ref, 1))
    edt_pr = ndimage.distance_transform_edt(~sr, sampling=SPACING)[sp_]
    edt_rp = ndimage.distance_transform_edt(~sp_, sampling=SPACING)[sr]
    assert hausdorff_distance(pred, ref, spacing=SPACING, percentile=95) == pytest.approx(
        max(np.percentile(edt_pr, 95), np.percentile(edt_rp, 95))
    )
    assert surface_dice(pred, ref, spacing=SPACING, tolerance=2.0) == pytest.approx(
        ((edt_pr <= 2.0).sum() + (edt_rp <= 2.0).sum()) / (len(edt_pr) + len(edt_rp))
    )

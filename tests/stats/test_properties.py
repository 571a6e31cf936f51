"""Property-based tests driven by a table of metric properties (as scikit-learn's metrics).

Each row names a metric, how to call it on (y_true, y_score) or (pred, ref), and the
properties it must have; shared tests run every property over every metric that claims it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from workbench.stats import (
    auc,
    binary_metrics,
    cohen_kappa,
    dice,
    hausdorff_distance,
    iou,
    mean_surface_distance,
    surface_dice,
)


@dataclass(frozen=True)
class ScoreMetric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    bounds: tuple[float, float]
    order_invariant: bool = True
    monotone_invariant: bool = False  # invariant to strictly increasing transforms of scores


SCORE_METRICS = [
    ScoreMetric("auc", lambda y, s: auc(y, s).value, (0.0, 1.0), monotone_invariant=True),
    ScoreMetric("auc_ci_low", lambda y, s: auc(y, s).ci_low, (0.0, 1.0), monotone_invariant=True),
    ScoreMetric(
        "sensitivity",
        lambda y, s: binary_metrics(y, s, threshold=0.0).sensitivity.value,  # type: ignore[union-attr]
        (0.0, 1.0),
    ),
    ScoreMetric(
        "specificity_ci_high",
        lambda y, s: binary_metrics(y, s, threshold=0.0).specificity.ci_high,  # type: ignore[union-attr]
        (0.0, 1.0),
    ),
]


@dataclass(frozen=True)
class MaskMetric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    bounds: tuple[float, float]
    symmetric: bool
    identity: float  # value when pred == ref


MASK_METRICS = [
    MaskMetric("dice", dice, (0.0, 1.0), True, 1.0),
    MaskMetric("iou", iou, (0.0, 1.0), True, 1.0),
    MaskMetric(
        "hd95",
        lambda p, r: hausdorff_distance(p, r, spacing=(2.0, 1.0, 0.5)),
        (0.0, np.inf),
        True,
        0.0,
    ),
    MaskMetric(
        "hausdorff",
        lambda p, r: hausdorff_distance(p, r, spacing=(2.0, 1.0, 0.5), percentile=100),
        (0.0, np.inf),
        True,
        0.0,
    ),
    MaskMetric(
        "assd",
        lambda p, r: mean_surface_distance(p, r, spacing=(2.0, 1.0, 0.5)),
        (0.0, np.inf),
        True,
        0.0,
    ),
    MaskMetric(
        "nsd",
        lambda p, r: surface_dice(p, r, spacing=(2.0, 1.0, 0.5), tolerance=1.0),
        (0.0, 1.0),
        True,
        1.0,
    ),
]

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def labelled_scores(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(4, 40))
    y = draw(arrays(np.int8, n, elements=st.integers(0, 1)))
    assume(2 <= y.sum() <= n - 2)
    s = draw(arrays(np.float64, n, elements=st.floats(-5, 5).map(lambda v: round(v, 1))))
    return y, s


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = (6, 7, 8)
    p = draw(arrays(np.bool_, shape, elements=st.booleans()))
    r = draw(arrays(np.bool_, shape, elements=st.booleans()))
    assume(p.any() and r.any())
    return p, r


@pytest.mark.parametrize("metric", SCORE_METRICS, ids=lambda m: m.name)
@SETTINGS
@given(data=labelled_scores())
def test_score_metric_bounds(metric: ScoreMetric, data: tuple[np.ndarray, np.ndarray]) -> None:
    value = metric.fn(*data)
    assert metric.bounds[0] <= value <= metric.bounds[1]


@pytest.mark.parametrize(
    "metric", [m for m in SCORE_METRICS if m.order_invariant], ids=lambda m: m.name
)
@SETTINGS
@given(data=labelled_scores(), seed=st.integers(0, 1000))
def test_score_metric_invariant_to_case_order(
    metric: ScoreMetric, data: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    y, s = data
    perm = np.random.default_rng(seed).permutation(len(y))
    assert metric.fn(y[perm], s[perm]) == pytest.approx(metric.fn(y, s), abs=1e-12)


@pytest.mark.parametrize(
    "metric", [m for m in SCORE_METRICS if m.monotone_invariant], ids=lambda m: m.name
)
@SETTINGS
@given(data=labelled_scores())
def test_score_metric_invariant_to_monotone_transforms(
    metric: ScoreMetric, data: tuple[np.ndarray, np.ndarray]
) -> None:
    y, s = data
    assert metric.fn(y, np.exp(s) * 3 + 1) == pytest.approx(metric.fn(y, s), abs=1e-12)
    assert metric.fn(y, s**3) == pytest.approx(metric.fn(y, s), abs=1e-12)


@SETTINGS
@given(data=labelled_scores())
def test_auc_of_negated_scores_is_complement(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = data
    assert auc(y, -s).value == pytest.approx(1 - auc(y, s).value, abs=1e-12)


@pytest.mark.parametrize("metric", MASK_METRICS, ids=lambda m: m.name)
@SETTINGS
@given(masks=mask_pairs())
def test_mask_metric_bounds_symmetry_identity(
    metric: MaskMetric, masks: tuple[np.ndarray, np.ndarray]
) -> None:
    p, r = masks
    value = metric.fn(p, r)
    assert metric.bounds[0] <= value <= metric.bounds[1]
    if metric.symmetric:
        assert metric.fn(r, p) == pytest.approx(value, abs=1e-12)
    assert metric.fn(p, p) == pytest.approx(metric.identity)


@SETTINGS
@given(
    a=arrays(np.int8, 25, elements=st.integers(1, 4)),
    b=arrays(np.int8, 25, elements=st.integers(1, 4)),
    weights=st.sampled_from([None, "linear", "quadratic"]),
)
def test_kappa_symmetric_and_bounded(a: np.ndarray, b: np.ndarray, weights: str | None) -> None:
    cats = [1, 2, 3, 4]
    try:
        k = cohen_kappa(a, b, weights=weights, categories=cats)
    except Exception as exc:  # only the documented not-estimable case may fail
        assert "not estimable" in str(exc)
        return
    assert -1.0 <= k.value <= 1.0
    assert cohen_kappa(b, a, weights=weights, categories=cats).value == pytest.approx(k.value)
    assert k.se is not None and k.se >= 0

"""AUC, DeLong, bootstrap and ROC bands against brute-force definitions and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from workbench.errors import NotEstimableError
from workbench.stats import auc, auc_variance, delong_test, roc_curve_with_band
from workbench.stats._core import as_binary
from workbench.stats.bootstrap import case_weight_batches
from workbench.stats.roc import _jackknife_auc, _placements, _weighted_auc_batch


def _data(n: int = 300, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + y
    return y, (np.round(s, 1) if ties else s)


def _brute_delong_var(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong et al. (1988) structural components from the O(mn) kernel matrix."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)


@pytest.mark.parametrize("ties", [True, False])
def test_auc_and_variance_match_brute_force(ties: bool) -> None:
    y, s = _data(ties=ties)
    est = auc(y, s)
    assert est.value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert est.se**2 == pytest.approx(_brute_delong_var(y, s), rel=1e-10)


def test_clustered_delong_with_singleton_clusters_equals_delong() -> None:
    y, s = _data()
    assert auc_variance(y, s, clusters=np.arange(len(y))) == pytest.approx(
        auc_variance(y, s), rel=1e-10
    )


def test_clustered_delong_grows_with_correlated_clusters() -> None:
    rng = np.random.default_rng(3)
    n_pat = 100
    pat = np.repeat(np.arange(n_pat), 4)
    y = np.repeat(rng.integers(0, 2, n_pat), 4)  # patient-level truth, repeated lesions
    s = np.repeat(rng.normal(size=n_pat), 4) + y + 0.1 * rng.normal(size=len(y))
    assert auc_variance(y, s, clusters=pat) > 2.0 * auc_variance(y, s)


def test_paired_test_of_identical_scores_is_not_estimable() -> None:
    y, s = _data()
    with pytest.raises(NotEstimableError, match="identical"):
        delong_test(y, s, s)


def test_weighted_batch_auc_matches_sklearn_sample_weight() -> None:
    y, s = _data(n=200, ties=True)
    order = np.argsort(s, kind="stable")
    ss, ls = s[order], y[order].astype(np.float32)
    new = np.r_[True, ss[1:] != ss[:-1]]
    w = next(case_weight_batches(len(y), None, 5, seed=1, strata=y[order].astype(np.intp)))
    got = _weighted_auc_batch(w, ls, np.flatnonzero(new))
    for row, value in zip(w, got, strict=True):
        assert value == pytest.approx(roc_auc_score(y[order], ss, sample_weight=row), abs=1e-9)
    y2, s2 = _data(n=200, ties=False)
    order = np.argsort(s2)
    w = next(case_weight_batches(len(y2), None, 5, seed=2))
    got = _weighted_auc_batch(w, y2[order].astype(np.float32), None)
    for row, value in zip(w, got, strict=True):
        assert value == pytest.approx(roc_auc_score(y2[order], s2[order], sample_weight=row))


def test_closed_form_jackknife_equals_refitting() -> None:
    y, s = _data(n=120)
    clusters = np.arange(len(y)) // 3
    yb = as_binary(y)
    jk = _jackknife_auc(yb, s, _placements(yb, s), clusters)
    for c in (0, 7, 39):
        keep = clusters != c
        assert jk[c] == pytest.approx(roc_auc_score(y[keep], s[keep]), abs=1e-12)


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("clustered", [False, True])
def test_bootstrap_ci_is_close_to_delong_and_reproducible(method: str, clustered: bool) -> None:
    y, s = _data(n=400)
    clusters = np.arange(len(y)) // 2 if clustered else None
    a = auc(y, s, ci="bootstrap", clusters=clusters, bootstrap_method=method, n_boot=1000)
    b = auc(y, s, ci="bootstrap", clusters=clusters, bootstrap_method=method, n_boot=1000)
    d = auc(y, s)
    assert a == b
    assert a.ci_low < a.value < a.ci_high
    assert a.ci_low == pytest.approx(d.ci_low, abs=0.02)
    assert a.ci_high == pytest.approx(d.ci_high, abs=0.02)
    assert method in a.method


def test_bootstrap_auc_matches_a_loop_over_materialised_resamples() -> None:
    y, s = _data(n=150, ties=True)
    clusters = np.arange(len(y)) // 3
    fast = auc(y, s, ci="bootstrap", clusters=clusters, n_boot=200, seed=5)
    order = np.argsort(s, kind="stable")
    reps = []
    for w in case_weight_batches(len(y), clusters[order], 200, seed=5):
        for row in w:
            idx = np.repeat(order, row.astype(int))
            if 0 < y[idx].sum() < len(idx):
                reps.append(roc_auc_score(y[idx], s[idx]))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (fast.ci_low, fast.ci_high) == pytest.approx((lo, hi), abs=1e-9)


@pytest.mark.parametrize("band", ["pointwise", "simultaneous"])
def test_roc_band_contains_the_curve(band: str) -> None:
    y, s = _data(n=200)
    curve = roc_curve_with_band(y, s, band=band, n_boot=200)
    assert curve.fpr[0] == 0 and curve.fpr[-1] == 1
    assert np.all(np.diff(curve.tpr) >= -1e-12)
    assert np.all(curve.lower <= curve.tpr + 1e-12) and np.all(curve.tpr <= curve.upper + 1e-12)
    assert curve.tpr[-1] == 1.0
    # the trapezoid area under the fine-grid curve is the AUC
    fine = roc_curve_with_band(y, s, n_boot=2, grid=np.unique(np.r_[np.linspace(0, 1, 2001)]))
    assert np.trapezoid(fine.tpr, fine.fpr) == pytest.approx(curve.auc.value, abs=2e-3)


def test_simultaneous_band_is_wider_than_pointwise() -> None:
    y, s = _data(n=200)
    pw = roc_curve_with_band(y, s, band="pointwise", n_boot=300)
    sim = roc_curve_with_band(y, s, band="simultaneous", n_boot=300)
    inner = slice(10, 90)
    assert np.mean(sim.upper[inner] - sim.lower[inner]) > np.mean(pw.upper[inner] - pw.lower[inner])


def test_delong_needs_two_cases_per_class() -> None:
    with pytest.raises(NotEstimableError, match="at least 2 positive"):
        auc([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(NotEstimableError, match="one positive and one negative"):
        auc([0, 0, 0], [0.1, 0.2, 0.3])

"""Clustered bootstrap CIs of case-level summaries."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import NotEstimableError
from workbench.stats import bootstrap_ci, bootstrap_mean_ci
from workbench.stats.bootstrap import _weighted_median_factory, case_weight_batches


def test_weighted_median_equals_median_of_materialised_resample() -> None:
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=31), 1)
    w = next(case_weight_batches(len(v), None, 50, seed=3))
    med = _weighted_median_factory(v)(w)
    for row, m in zip(w, med, strict=True):
        assert m == pytest.approx(np.median(np.repeat(v, row.astype(int))))


def test_cluster_resampling_keeps_clusters_whole() -> None:
    clusters = np.repeat(np.arange(10), 3)
    for w in case_weight_batches(30, clusters, 20, seed=1):
        assert np.all(w.reshape(len(w), 10, 3).std(axis=2) == 0)
        assert np.all(w.sum(axis=1) == 30)


@pytest.mark.parametrize("statistic", ["mean", "median"])
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_covers_the_estimate_and_is_reproducible(statistic: str, method: str) -> None:
    rng = np.random.default_rng(1)
    v = rng.beta(8, 2, size=80)
    a = bootstrap_ci(v, statistic=statistic, method=method, n_boot=500, seed=4)
    assert a == bootstrap_ci(v, statistic=statistic, method=method, n_boot=500, seed=4)
    assert a.ci_low < a.value < a.ci_high
    assert a.value == pytest.approx(np.mean(v) if statistic == "mean" else np.median(v))


def test_mean_ci_is_close_to_the_t_interval() -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(0.8, 0.1, size=400)
    est = bootstrap_mean_ci(v, n_boot=2000)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v))
    assert est.ci_low == pytest.approx(v.mean() - half, abs=0.004)
    assert est.ci_high == pytest.approx(v.mean() + half, abs=0.004)


def test_clustering_widens_the_interval_for_correlated_cases() -> None:
    rng = np.random.default_rng(5)
    patient_effect = np.repeat(rng.normal(0, 0.1, 50), 6)
    v = 0.8 + patient_effect + rng.normal(0, 0.01, 300)
    clusters = np.repeat(np.arange(50), 6)
    naive = bootstrap_ci(v, n_boot=1000)
    clustered = bootstrap_ci(v, clusters=clusters, n_boot=1000)
    assert (clustered.ci_high - clustered.ci_low) > 2 * (naive.ci_high - naive.ci_low)
    assert "50 clusters" in clustered.method


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_constant_values_give_a_degenerate_interval(method: str) -> None:
    est = bootstrap_ci(np.ones(20), method=method, n_boot=100)
    assert (est.value, est.ci_low, est.ci_high) == (1.0, 1.0, 1.0)


def test_bootstrap_needs_two_cases() -> None:
    with pytest.raises(NotEstimableError, match="at least 2"):
        bootstrap_ci([0.5])

"""Stratified analysis, heterogeneity tests and Holm adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import METRICS, auc, heterogeneity_test, holm, stratified


def _cases(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 600
    scanner = rng.choice(["a", "b", "c"], n, p=[0.45, 0.45, 0.10])
    sex = rng.choice(["F", "M"], n)
    y = rng.integers(0, 2, n)
    shift = np.where(scanner == "b", 0.3, 1.5)  # the model is worse on scanner b
    score = rng.normal(size=n) + shift * y
    dice = np.clip(rng.normal(np.where(scanner == "b", 0.7, 0.85), 0.05), 0, 1)
    return pd.DataFrame(
        {
            "scanner": scanner,
            "sex": sex,
            "label": y,
            "prob": score,
            "dice": dice,
            "patient": np.arange(n) // 2,
        }
    )


def test_auc_per_stratum_and_heterogeneity() -> None:
    f = _cases()
    out = stratified(f, "auc", by="scanner", min_n=20, y_true="label", y_score="prob")
    assert list(out["scanner"]) == ["a", "b", "c"]
    assert (out["status"] == "ok").all()
    sub = f[f.scanner == "b"]
    assert out.loc[1, "value"] == pytest.approx(auc(sub.label, sub.prob).value)
    assert out.loc[1, "ci_low"] == pytest.approx(auc(sub.label, sub.prob).ci_low)
    assert out["n"].tolist() == f.groupby("scanner").size().tolist()
    het = out.attrs["heterogeneity"]
    assert het.df == 2 and het.p_value < 1e-4
    # chi-square of equal AUCs by hand
    w = 1 / out["se"] ** 2
    pooled = (w * out["value"]).sum() / w.sum()
    assert het.statistic == pytest.approx((w * (out["value"] - pooled) ** 2).sum())


def test_small_strata_are_reported_not_hidden() -> None:
    f = _cases()
    out = stratified(f, "dice_mean", by=["scanner", "sex"], min_n=40, n_boot=200)
    assert len(out) == 6
    small = out[out["status"] == "insufficient_n"]
    assert len(small) >= 1
    assert small["value"].isna().all()
    assert small["reason"].str.contains("insufficient n").all()
    assert (out.loc[out.status == "ok", "n"] >= 40).all()
    assert out.attrs["heterogeneity"].method == "Kruskal-Wallis H test"


def test_not_estimable_stratum_has_status_and_reason() -> None:
    f = _cases()
    f.loc[f.scanner == "c", "label"] = 0
    out = stratified(f, "auc", by="scanner", y_true="label", y_score="prob")
    row = out[out.scanner == "c"].iloc[0]
    assert row["status"] == "not_estimable"
    assert "positive" in row["reason"]
    assert out.attrs["heterogeneity"].df == 1  # two estimable strata remain


@pytest.mark.parametrize("metric", ["sensitivity", "specificity", "ppv", "npv", "accuracy"])
def test_threshold_metrics(metric: str) -> None:
    f = _cases()
    out = stratified(
        f, metric, by="sex", threshold=0.5, y_true="label", y_score="prob", method="clopper-pearson"
    )
    assert (out["status"] == "ok").all()
    assert out["method"].eq("clopper-pearson").all()
    assert "chi-square" in out.attrs["heterogeneity"].method


def test_clustered_bootstrap_in_strata() -> None:
    f = _cases()
    out = stratified(f, "dice_median", by="scanner", cluster="patient", n_boot=200)
    assert out["method"].str.contains("clusters").all()


def test_heterogeneity_needs_two_strata() -> None:
    f = _cases()
    with pytest.raises(NotEstimableError, match=">= 2 estimable strata"):
        heterogeneity_test(f, "dice_mean", by="scanner", min_n=250, n_boot=100)


def test_unknown_metric_and_option_get_did_you_mean() -> None:
    f = _cases()
    with pytest.raises(StatisticsError, match="Did you mean 'sensitivity'"):
        stratified(f, "sensitivty", by="scanner")
    with pytest.raises(StatisticsError, match="Did you mean 'threshold'"):
        stratified(f, "sensitivity", by="scanner", treshold=0.5)
    with pytest.raises(StatisticsError, match="needs threshold"):
        stratified(f, "sensitivity", by="scanner", y_true="label", y_score="prob")
    with pytest.raises(StatisticsError, match="Column 'y_true'"):
        stratified(f, "auc", by="scanner")
    assert "auc" in METRICS


def test_holm_properties() -> None:
    p = np.array([0.001, 0.5, 0.02, 0.02])
    adj = holm(p)
    assert np.all(adj >= p) and np.all(adj <= 1)
    assert adj[np.argsort(p)].tolist() == sorted(adj.tolist())
    with pytest.raises(StatisticsError):
        holm([0.1, np.nan])

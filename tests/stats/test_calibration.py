"""Calibration: logistic recalibration, Brier, ECE/MCE, reliability table, curve.

References: statsmodels' GLM for the logistic fits (an independent IRLS implementation),
MetricsReloaded's test expectations for ECE, MCE and the Brier score
(github.com/Project-MONAI/MetricsReloaded, test/test_metrics/test_calibration_metrics.py at
commit cb38dfc0a5ed4fa3bdc559e4960b6e2b93c3b967, "Metrics Reloaded" figure SN 2.24, p. 67),
a worked example whose output was checked against ``rms::val.prob``, and hand computations.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.special import expit, logit

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import auc, calibration, proportion_ci
from workbench.stats.bootstrap import case_weight_batches
from workbench.stats.calibration import _bin_errors, _fit_logistic, _quantile_bins

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"

# MetricsReloaded, test_calibration_metrics.py: positive-class probabilities and labels
MR_PROB = [0.22, 0.48, 0.49, 0.96, 0.55, 0.64, 0.78, 0.82, 0.34, 0.87]
MR_TRUE = [0, 1, 0, 0, 1, 1, 1, 1, 1, 0]


def _glm(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large and slope from statsmodels' GLM."""
    lp = logit(p)
    binomial = sm.families.Binomial()
    citl = sm.GLM(y, np.ones((len(y), 1)), family=binomial, offset=lp).fit(tol=1e-14)
    slope = sm.GLM(y, sm.add_constant(lp), family=binomial).fit(tol=1e-14)
    return float(citl.params[0]), float(slope.params[1])


def _simulate(n: int, seed: int, a: float = 0.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions p and outcomes drawn with logit P(y) = a + b logit(p)."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-0.5, 1.2, n))
    y = (rng.uniform(size=n) < expit(a + b * logit(p))).astype(int)
    return y, p


# --- logistic recalibration ------------------------------------------------------------
@pytest.mark.parametrize(("seed", "a", "b"), [(0, 0.0, 1.0), (1, -0.7, 0.6), (2, 0.4, 1.5)])
def test_intercept_and_slope_match_statsmodels_glm(seed: int, a: float, b: float) -> None:
    y, p = _simulate(600, seed, a, b)
    res = calibration(y, p, ci=None)
    citl, slope = _glm(y, p)
    assert res.intercept.value == pytest.approx(citl, abs=1e-9)
    assert res.slope is not None
    assert res.slope.value == pytest.approx(slope, abs=1e-9)


def test_intercept_and_slope_on_dcurves_df_binary_match_statsmodels() -> None:
    frame = pd.read_csv(REFERENCE / "dcurves_df_binary.csv")
    y, p = frame["cancer"].astype(int).to_numpy(), frame["cancerpredmarker"].to_numpy()
    res = calibration(y, p, ci=None)
    citl, slope = _glm(y, p)
    assert res.intercept.value == pytest.approx(citl, abs=1e-9)
    assert res.slope is not None and res.slope.value == pytest.approx(slope, abs=1e-9)
    assert res.n == 750 and res.events == 105


def test_slope_matches_worked_example_checked_against_rms_val_prob() -> None:
    # github.com/tuur/CalibrationSlopeInterceptPython README ("verified ... to be the same as
    # the val.prob function in the rms R-package"): Calibration slope 0.16386382554885154,
    # from scikit-learn's unpenalised lbfgs fit (default tol 1e-4), hence 1e-6.
    y = [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    p = [0.01, 0.01, 0.24, 0.22, 0.02, 0.1, 0.03, 0.12, 0.04, 0.01]
    res = calibration(y, p, ci=None)
    assert res.slope is not None
    assert res.slope.value == pytest.approx(0.16386382554885154, abs=1e-6)


def test_intercept_is_logit_of_observed_over_predicted_for_constant_predictions() -> None:
    # with p constant the offset model gives a = logit(ybar) - logit(p) exactly
    y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    res = calibration(y, np.full(10, 0.2), ci=None)
    assert res.intercept.value == pytest.approx(logit(0.3) - logit(0.2), abs=1e-10)
    assert res.slope is None and "equal" in res.not_estimable["slope"]
    assert res.curve is None and "curve" in res.not_estimable


# --- Brier ------------------------------------------------------------------------------
def test_brier_and_scaled_brier_by_hand() -> None:
    y = [0, 0, 1, 1, 0, 1]
    p = [0.1, 0.3, 0.6, 0.8, 0.4, 0.7]
    res = calibration(y, p, ci=None)
    brier = (0.01 + 0.09 + 0.16 + 0.04 + 0.16 + 0.09) / 6
    assert res.brier.value == pytest.approx(brier, abs=1e-15)
    assert res.scaled_brier.value == pytest.approx(1 - brier / 0.25, abs=1e-15)


def test_brier_matches_metrics_reloaded() -> None:
    # MetricsReloaded test_brier_score: ref [1, 0], pred [[0.2, 0.8], [0.4, 0.6]] -> 0.4,
    # summed over both classes' columns; the binary Brier score is half of it.
    res = calibration([1, 0], [0.8, 0.6], ci=None)
    assert 2 * res.brier.value == pytest.approx(0.4, abs=1e-15)


# --- ECE and MCE --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bins", "mr_ece", "mr_mce", "ece", "mce"),
    [
        # MetricsReloaded expectations (atol 0.01 there), then the exact values by hand:
        # 2 bins: [0, .5): obs 2/4, mean .3825; [.5, 1]: obs 4/6, mean .77
        (2, 0.11, 0.12, (4 * 0.1175 + 6 * (0.77 - 4 / 6)) / 10, 0.1175),
        # 5 bins: gaps .22 (n 2), .16 (n 3), .29 (n 2), .55 (n 3)
        (5, 0.32, 0.55, (2 * 0.22 + 3 * 0.16 + 2 * 0.29 + 3 * 0.55) / 10, 0.55),
        # 10 bins: every prediction alone in its bin except 0.48 / 0.49 (mean .485, obs .5)
        (10, 0.36, 0.96, 0.359, 0.96),
    ],
)
def test_ece_and_mce_match_metrics_reloaded(
    bins: int, mr_ece: float, mr_mce: float, ece: float, mce: float
) -> None:
    res = calibration(MR_TRUE, MR_PROB, bins=bins, ci=None)
    assert res.ece.value == pytest.approx(mr_ece, abs=0.01)
    assert res.mce.value == pytest.approx(mr_mce, abs=0.01)
    assert res.ece.value == pytest.approx(ece, abs=1e-12)
    assert res.mce.value == pytest.approx(mce, abs=1e-12)


def test_equal_mass_bins_by_hand() -> None:
    # sorted predictions .22 .34 | .48 .49 | .55 .64 | .78 .82 | .87 .96 with outcomes
    # 0 1 | 1 0 | 1 1 | 1 1 | 0 0
    res = calibration(MR_TRUE, MR_PROB, bins=5, strategy="quantile", ci=None)
    gaps = [abs(0.5 - 0.28), abs(0.5 - 0.485), abs(1 - 0.595), abs(1 - 0.80), abs(0 - 0.915)]
    assert res.ece.value == pytest.approx(sum(gaps) / 5, abs=1e-12)
    assert res.mce.value == pytest.approx(max(gaps), abs=1e-12)
    assert res.reliability["n"].tolist() == [2, 2, 2, 2, 2]
    assert res.reliability["bin_low"].tolist() == [0.22, 0.48, 0.55, 0.78, 0.87]


def test_predictions_on_a_bin_edge_fall_in_the_bin_that_starts_there() -> None:
    # [k/bins, (k+1)/bins), last bin closed: 0.3 and 0.29 must not be moved by rounding
    # (np.linspace(0, 1, 11)[3] is 0.30000000000000004); MetricsReloaded uses (l, u]
    y, p = [0, 1, 0, 1, 1], [0.3, 0.3, 0.29, 0.7, 1.0]
    for bins, expected in ((10, [2, 3, 7, 9]), (100, [29, 30, 70, 99])):
        table = calibration(y, p, bins=bins, ci=None).reliability
        assert table["bin"].tolist() == expected
        assert table["n"].tolist() == [1, 2, 1, 1]


def test_reliability_table_uses_wilson_intervals() -> None:
    y, p = _simulate(400, 5)
    res = calibration(y, p, bins=8, ci=None)
    table = res.reliability
    assert table["n"].sum() == 400 and table["events"].sum() == y.sum()
    for row in table.itertuples():
        wilson = proportion_ci(int(row.events), int(row.n))
        assert (row.observed_ci_low, row.observed_ci_high) == (wilson.ci_low, wilson.ci_high)
        members = (p >= row.bin_low) & ((p < row.bin_high) | (row.bin == 7))
        assert row.mean_predicted == pytest.approx(p[members].mean(), abs=1e-12)
    # ECE is the n-weighted mean gap of the table's rows
    gap = (table["observed"] - table["mean_predicted"]).abs()
    assert res.ece.value == pytest.approx(float((table["n"] * gap).sum() / 400), abs=1e-12)
    assert res.mce.value == pytest.approx(float(gap.max()), abs=1e-12)


# --- Spiegelhalter ----------------------------------------------------------------------
def test_spiegelhalter_z_by_hand() -> None:
    y = np.array(MR_TRUE)
    p = np.array(MR_PROB)
    num = float(np.sum((y - p) * (1 - 2 * p)))
    den = math.sqrt(float(np.sum((1 - 2 * p) ** 2 * p * (1 - p))))
    res = calibration(y, p, ci=None)
    assert res.spiegelhalter is not None
    assert res.spiegelhalter.statistic == pytest.approx(num / den, abs=1e-12)
    assert res.spiegelhalter.p_value == pytest.approx(2 * sps.norm.sf(abs(num / den)), abs=1e-12)


def test_spiegelhalter_size_under_perfect_calibration() -> None:
    rejections = 0
    for seed in range(200):
        y, p = _simulate(200, 1000 + seed)
        res = calibration(y, p, ci=None)
        assert res.spiegelhalter is not None
        rejections += res.spiegelhalter.p_value < 0.05
    assert 3 <= rejections <= 20  # binomial(200, 0.05): mean 10, 99.7 % within


# --- bootstrap intervals and the curve ---------------------------------------------------
def test_bootstrap_intervals_contain_the_estimates_and_are_reproducible() -> None:
    y, p = _simulate(300, 7, a=0.3, b=0.8)
    res = calibration(y, p, n_boot=200, seed=4)
    again = calibration(y, p, n_boot=200, seed=4)
    for name in ("intercept", "slope", "brier", "scaled_brier", "ece", "mce"):
        est = getattr(res, name)
        assert est.ci_low <= est.value <= est.ci_high or name in ("ece", "mce")
        assert est.ci_low < est.ci_high
        assert est == getattr(again, name)
        assert est.method.startswith("bootstrap-percentile (200 replicates, 300 cases")
    assert res.curve is not None
    assert (res.curve.lower <= res.curve.upper).all()
    assert len(res.curve.predicted) == 51


def test_weighted_replicates_equal_statistics_of_materialised_resamples() -> None:
    # the bootstrap computes each replicate from resampling weights; the same statistics
    # of the explicitly resampled cases must agree
    y, p = _simulate(120, 13)
    p = p.round(2)  # ties, to exercise the equal-mass tie rule
    order = np.argsort(p, kind="stable")
    ps = p[order]
    new = np.r_[True, ps[1:] != ps[:-1]]
    tie_start = np.flatnonzero(new)[np.cumsum(new) - 1]
    lp = logit(p)
    design = np.column_stack([np.ones(len(p)), lp])
    for w in case_weight_batches(len(p), None, 4, 5):
        w64 = w.astype(np.float64)
        bins_w = _quantile_bins(order, tie_start, w64, 6)
        ece_w, mce_w = _bin_errors(bins_w, w64, p, y.astype(float), 6)
        slope_w, ok = _fit_logistic(design, y.astype(float), None, w64)
        assert ok.all()
        for row in range(len(w64)):
            idx = np.repeat(np.arange(len(p)), w64[row].astype(int))
            direct = calibration(y[idx], p[idx], bins=6, strategy="quantile", ci=None)
            assert ece_w[row] == pytest.approx(direct.ece.value, abs=1e-12)
            assert mce_w[row] == pytest.approx(direct.mce.value, abs=1e-12)
            assert direct.slope is not None
            assert slope_w[row, 1] == pytest.approx(direct.slope.value, abs=1e-9)


def test_intercept_se_agrees_with_the_glm_standard_error() -> None:
    y, p = _simulate(800, 8)
    res = calibration(y, p, n_boot=400, seed=1)
    fit = sm.GLM(y, np.ones((800, 1)), family=sm.families.Binomial(), offset=logit(p)).fit()
    assert res.intercept.se == pytest.approx(float(fit.bse[0]), rel=0.15)


def test_clusters_resample_whole_patients() -> None:
    y, p = _simulate(200, 9)
    y3, p3, patients = np.repeat(y, 3), np.repeat(p, 3), np.repeat(np.arange(200), 3)
    plain = calibration(y3, p3, n_boot=150, seed=2, ci="bootstrap")
    clustered = calibration(y3, p3, n_boot=150, seed=2, clusters=patients)
    assert clustered.intercept.value == plain.intercept.value
    assert clustered.intercept.se is not None and plain.intercept.se is not None
    assert clustered.intercept.se > 1.4 * plain.intercept.se
    assert "200 clusters" in clustered.brier.method
    # one case per cluster draws the same resamples as the case bootstrap
    single = calibration(y3, p3, n_boot=150, seed=2, clusters=np.arange(600))
    assert single.slope is not None and plain.slope is not None
    assert (single.slope.ci_low, single.slope.ci_high) == (plain.slope.ci_low, plain.slope.ci_high)


def test_curve_follows_a_known_miscalibration() -> None:
    # predictions too extreme: true curve P(y | p) = expit(0.5 logit(p))
    coverage = []
    for seed in range(5):
        y, p = _simulate(1500, 20 + seed, a=0.0, b=0.5)
        lo, hi = np.quantile(p, [0.05, 0.95])
        res = calibration(y, p, n_boot=100, seed=seed, grid=np.linspace(lo, hi, 25))
        assert res.curve is not None
        truth = expit(0.5 * logit(res.curve.predicted))
        assert np.abs(res.curve.observed - truth).max() < 0.1
        coverage.append(np.mean((res.curve.lower <= truth) & (truth <= res.curve.upper)))
        assert res.slope is not None and res.slope.ci_high < 0.75
    assert np.mean(coverage) > 0.75  # pointwise 95 % band


def test_perfectly_calibrated_model_has_slope_one_and_intercept_zero_in_most_seeds() -> None:
    covered_a = covered_b = 0
    for seed in range(25):
        y, p = _simulate(300, 200 + seed)
        res = calibration(y, p, n_boot=150, seed=seed)
        assert res.slope is not None
        covered_a += res.intercept.ci_low <= 0.0 <= res.intercept.ci_high
        covered_b += res.slope.ci_low <= 1.0 <= res.slope.ci_high
    assert covered_a >= 20 and covered_b >= 20  # nominal 95 %: about 24 of 25


# --- properties -------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(20, 120),
    power=st.floats(0.3, 3.0).filter(lambda g: abs(g - 1.0) > 0.1),
)
def test_monotone_transform_changes_calibration_not_auc(seed: int, n: int, power: float) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p).astype(int)
    y[:2] = [0, 1]
    q = p**power  # strictly increasing on (0, 1)
    assert auc(y, q).value == pytest.approx(auc(y, p).value, abs=1e-12)
    a, b = calibration(y, p, ci=None), calibration(y, q, ci=None)
    assert b.brier.value != pytest.approx(a.brier.value, abs=1e-12)
    if a.slope is None:
        # perfectly separated classes (possible in small samples): no finite slope for any
        # monotone transform of the scores either
        assert b.slope is None and "separated" in a.not_estimable["slope"]
        return
    assert b.slope is not None
    # logit(p ** g) is not linear in logit(p): the recalibration line moves
    moved = abs(b.slope.value - a.slope.value) + abs(b.intercept.value - a.intercept.value)
    assert moved > 1e-6


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(10, 80), bins=st.integers(2, 15))
def test_bounds_and_order_invariance(seed: int, n: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n).round(2)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    for strategy in ("uniform", "quantile"):
        res = calibration(y, p, bins=bins, strategy=strategy, ci=None)
        assert 0.0 <= res.ece.value <= res.mce.value + 1e-12 <= 1.0 + 1e-12
        assert 0.0 <= res.brier.value <= 1.0
        assert res.reliability["n"].sum() == n
        perm = rng.permutation(n)
        shuffled = calibration(y[perm], p[perm], bins=bins, strategy=strategy, ci=None)
        assert shuffled.ece.value == pytest.approx(res.ece.value, abs=1e-12)
        assert shuffled.intercept.value == pytest.approx(res.intercept.value, abs=1e-8)


# --- degenerate and invalid input -------------------------------------------------------
def test_exact_zero_and_one_predictions_are_clipped_for_the_logit() -> None:
    y, p = _simulate(200, 3)
    p = p.copy()
    p[:3] = [0.0, 1.0, 1.0]
    y[:3] = [0, 1, 0]
    res = calibration(y, p, ci=None)
    assert res.n_clipped == 3
    assert math.isfinite(res.intercept.value)
    assert res.brier.value == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-15)


def test_separated_outcome_leaves_the_slope_not_estimable() -> None:
    res = calibration([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8], ci=None)
    assert res.slope is None
    assert "separated" in res.not_estimable["slope"]
    assert math.isfinite(res.intercept.value)


def test_slope_without_enough_bootstrap_fits_is_reported_not_raised() -> None:
    # nearly separated: most resamples have no finite slope, the other statistics stand
    y = [0, 0, 0, 1, 1, 1, 0, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.5, 0.45]
    res = calibration(y, p, n_boot=200)
    assert res.slope is None
    assert "calibration slope is not estimable" in res.not_estimable["slope"]
    assert res.intercept.ci_low < res.intercept.value < res.intercept.ci_high


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y_prob": [0.2, 1.5, 0.5, 0.1]}, StatisticsError, r"probabilities in \[0, 1\]"),
        ({"y_prob": [0.2, -0.1, 0.5, 0.1]}, StatisticsError, "not logits"),
        ({"y_true": [1, 1, 1, 1]}, NotEstimableError, "one negative"),
        ({"y_true": [0, 1, 2, 1]}, StatisticsError, "only 0 and 1"),
        ({"strategy": "quantil"}, StatisticsError, "Did you mean 'quantile'"),
        ({"ci": "bootstap"}, StatisticsError, "Did you mean 'bootstrap'"),
        ({"bins": 1}, StatisticsError, "bins"),
        ({"knots": 6}, StatisticsError, "knots"),
        ({"y_prob": [0.2, 0.5, 0.1]}, StatisticsError, "equal lengths"),
        ({"grid": [0.5, 0.2]}, StatisticsError, "ascending"),
    ],
)
def test_calibration_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    args: dict = {"y_true": [0, 1, 1, 0], "y_prob": [0.2, 0.7, 0.5, 0.1], "ci": None}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        calibration(args.pop("y_true"), args.pop("y_prob"), **args)

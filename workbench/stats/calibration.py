"""Calibration of predicted probabilities: logistic recalibration, Brier, ECE, curves.

A model is *calibrated* when, among cases given a predicted probability ``p``, a
fraction ``p`` has the outcome. :func:`calibration` reports the levels of the
calibration hierarchy of Van Calster et al. [2]_:

- *mean* calibration: calibration-in-the-large, the intercept ``a`` of
  ``logit P(y = 1) = a + logit(p)`` (slope fixed at 1, ``logit(p)`` an offset);
  0 is ideal, > 0 means the model under-predicts on average [3]_;
- *weak* calibration: the calibration slope ``b`` of
  ``logit P(y = 1) = a' + b logit(p)``; 1 is ideal, < 1 means predictions are
  too extreme (typical of over-fitting) [3]_;
- *moderate* calibration: the reliability diagram (binned observed fractions with
  Wilson intervals) and a flexible calibration curve, a logistic regression of the
  outcome on a restricted cubic spline of ``logit(p)`` [2]_, with a bootstrap band.

Summary scores: the Brier score and the scaled Brier score [3]_, the expected and
maximum calibration errors over equal-width or equal-mass bins [5]_, and
Spiegelhalter's z-test [4]_.

Every interval is a percentile bootstrap over cases (whole clusters when
``clusters`` is given), computed from resampling weights so that thousands of
replicates of the logistic fits run as batched Newton iterations.

References
----------
.. [1] Brier GW. Verification of forecasts expressed in terms of probability. Monthly
   Weather Review 78:1-3, 1950.
.. [2] Van Calster B, Nieboer D, Vergouwe Y, De Cock B, Pencina MJ, Steyerberg EW. A
   calibration hierarchy for risk models was defined: from utopia to empirical data.
   J Clin Epidemiol 74:167-176, 2016; Van Calster B, McLernon DJ, van Smeden M, Wynants L,
   Steyerberg EW. Calibration: the Achilles heel of predictive analytics. BMC Med 17:230,
   2019.
.. [3] Steyerberg EW. Clinical Prediction Models, 2nd ed. Springer, 2019, ch. 15
   (calibration-in-the-large, calibration slope, scaled Brier score).
.. [4] Spiegelhalter DJ. Probabilistic prediction in patient management and clinical
   trials. Stat Med 5:421-433, 1986.
.. [5] Naeini MP, Cooper GF, Hauskrecht M. Obtaining well calibrated probabilities using
   Bayesian binning. AAAI 2015:2901-2907 (ECE, MCE).
.. [6] Harrell FE. Regression Modeling Strategies, 2nd ed. Springer, 2015, sec. 2.4.5
   (restricted cubic splines, knot placement).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from scipy.special import expit, logit

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import (
    Estimate,
    TestResult,
    as_binary,
    as_clusters,
    as_scores,
    check_level,
    check_positive_int,
    choose,
    need_both_classes,
    same_length,
)
from workbench.stats.bootstrap import case_weight_batches, interval_from_replicates
from workbench.stats.proportions import proportion_ci

__all__ = ["CalibrationCurve", "CalibrationResult", "calibration"]

STRATEGIES = ("uniform", "quantile")
CI_METHODS = ("bootstrap",)
LOGIT_EPS = 1e-8  # probabilities of exactly 0 or 1 are moved this far inside before the logit
_KNOT_QUANTILES = {
    3: (0.10, 0.50, 0.90),
    4: (0.05, 0.35, 0.65, 0.95),
    5: (0.05, 0.275, 0.5, 0.725, 0.95),
}


@dataclass(frozen=True, slots=True)
class CalibrationCurve:
    """Flexible calibration curve with a pointwise bootstrap band.

    Parameters
    ----------
    predicted : ndarray of shape (g,)
        Grid of predicted probabilities, ascending.
    observed : ndarray of shape (g,)
        Estimated observed probability ``P(y = 1 | p)`` at each grid point: a logistic
        regression of the outcome on a restricted cubic spline of ``logit(p)``.
    lower, upper : ndarray of shape (g,)
        Pointwise percentile bootstrap band (equal to ``observed`` when ``ci`` is None).
    level : float
        Confidence level of the band.
    knots : ndarray
        Spline knots on the logit scale.
    method : str
        How the curve and its band were computed.
    """

    predicted: NDArray[np.float64]
    observed: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    level: float
    knots: NDArray[np.float64]
    method: str


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """Calibration of predicted probabilities against binary outcomes.

    Parameters
    ----------
    intercept : Estimate
        Calibration-in-the-large: ``a`` in ``logit P(y) = a + logit(p)``; ideal 0.
    slope : Estimate or None
        Calibration slope: ``b`` in ``logit P(y) = a' + b logit(p)``; ideal 1. ``None``
        when all predictions are equal, the outcome is separated by ``logit(p)``, or too
        few bootstrap resamples allow the fit (reason in ``not_estimable``).
    brier : Estimate
        Brier score, the mean of ``(p - y)^2``; 0 is perfect.
    scaled_brier : Estimate
        ``1 - Brier / (ybar (1 - ybar))``: 1 is perfect, 0 is no better than predicting
        the observed prevalence for everyone, negative is worse.
    ece, mce : Estimate
        Expected and maximum calibration error over the bins of ``strategy``.
    spiegelhalter : TestResult or None
        Spiegelhalter's z-test of calibration (two-sided p-value); ``None`` when its
        variance is 0 (every prediction 0, 0.5 or 1).
    reliability : pandas.DataFrame
        One row per non-empty bin: ``bin`` (0-based), ``bin_low``, ``bin_high`` (edges for
        ``"uniform"``, smallest and largest prediction for ``"quantile"``), ``n``,
        ``events``, ``mean_predicted``, ``observed``, ``observed_ci_low``,
        ``observed_ci_high`` (Wilson interval of the observed fraction).
    curve : CalibrationCurve or None
        Flexible calibration curve; ``None`` when it is not estimable.
    bins : int
        Number of bins requested.
    strategy : str
        ``"uniform"`` (equal-width) or ``"quantile"`` (equal-mass) bins.
    n : int
        Number of cases.
    events : int
        Number of cases with the outcome.
    n_clipped : int
        Predictions of exactly 0 or 1, moved by :data:`LOGIT_EPS` inside the unit interval
        for the logistic fits (Brier, ECE and the bins use them unchanged).
    not_estimable : dict of str to str
        Field name -> reason, for every field that is ``None``.
    """

    intercept: Estimate
    slope: Estimate | None
    brier: Estimate
    scaled_brier: Estimate
    ece: Estimate
    mce: Estimate
    spiegelhalter: TestResult | None
    reliability: pd.DataFrame
    curve: CalibrationCurve | None
    bins: int
    strategy: str
    n: int
    events: int
    n_clipped: int
    not_estimable: dict[str, str] = field(default_factory=dict)


# --- batched weighted logistic regression ---------------------------------------------
def _fit_logistic(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    offset: NDArray[np.float64] | None,
    w: NDArray[np.floating],
    *,
    start: NDArray[np.float64] | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Maximum-likelihood logistic fits, one per row of case weights ``w``.

    Newton-Raphson on the design ``x`` (n, k) with an optional ``offset`` (n,) for each
    weight row (B, n). Returns the coefficients (B, k) and a mask of the fits that
    converged; a fit on separated data (no finite maximum) does not converge. ``start``
    (k,) is the starting point of every fit (the full-sample estimate, for resamples).
    """
    w64 = np.asarray(w, dtype=np.float64)
    b, k = w64.shape[0], x.shape[1]
    beta = np.zeros((b, k)) if start is None else np.tile(start, (b, 1))
    ok = np.zeros(b, dtype=bool)
    live = np.ones(b, dtype=bool)
    xx = (x[:, :, None] * x[:, None, :]).reshape(len(x), k * k)  # Hessian as one GEMM
    ridge = 1e-12 * np.eye(k)  # only keeps a singular step solvable; the fixed point is the MLE
    for _ in range(max_iter):
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            break
        wl = w64[idx]
        eta = beta[idx] @ x.T
        if offset is not None:
            eta = eta + offset
        mu = expit(eta)
        grad = (wl * (y - mu)) @ x
        v = wl * mu * (1.0 - mu)
        hess = (v @ xx).reshape(len(idx), k, k)
        hess += ridge * np.maximum(1.0, np.trace(hess, axis1=1, axis2=2))[:, None, None]
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        beta[idx] += step
        done = np.abs(step).max(axis=1) <= tol * (1.0 + np.abs(beta[idx]).max(axis=1))
        bad = ~np.isfinite(beta[idx]).all(axis=1) | (np.abs(beta[idx]).max(axis=1) > 1e6)
        ok[idx[done & ~bad]] = True
        live[idx[done | bad]] = False
    return beta, ok


def _rcs_basis(x: NDArray[np.float64], knots: NDArray[np.float64]) -> NDArray[np.float64]:
    """Restricted cubic spline design ``[1, x, s_1 .. s_{k-2}]`` (Harrell's normalisation)."""
    t = knots
    k = len(t)
    scale = (t[-1] - t[0]) ** 2
    cols = [np.ones_like(x), x]
    for j in range(k - 2):
        s = (
            np.maximum(x - t[j], 0.0) ** 3
            - np.maximum(x - t[-2], 0.0) ** 3 * (t[-1] - t[j]) / (t[-1] - t[-2])
            + np.maximum(x - t[-1], 0.0) ** 3 * (t[-2] - t[j]) / (t[-1] - t[-2])
        )
        cols.append(s / scale)
    return np.column_stack(cols)


def _knots(lp: NDArray[np.float64], knots: int) -> NDArray[np.float64] | None:
    """Knots at Harrell's quantiles of the linear predictor, fewer if there are ties."""
    for k in range(knots, 2, -1):
        t = np.unique(np.quantile(lp, _KNOT_QUANTILES[k]))
        if len(t) == k:
            return t
    return None


# --- binning ------------------------------------------------------------------------------
def _edges(bins: int) -> NDArray[np.float64]:
    # k / bins rounds each edge correctly (0.3, not linspace's 0.30000000000000004), so a
    # prediction written as a bin edge falls in the bin that starts there
    return np.arange(bins + 1) / bins


def _uniform_bins(p: NDArray[np.float64], bins: int) -> NDArray[np.intp]:
    """Equal-width bins ``[k/bins, (k+1)/bins)``, the last one closed at 1."""
    edges = _edges(bins)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1).astype(np.intp)


def _quantile_bins(
    order: NDArray[np.intp],
    tie_start: NDArray[np.intp],
    w: NDArray[np.float64],
    bins: int,
) -> NDArray[np.intp]:
    """Equal-mass bin of every case for each weight row (B, n), in case order.

    Cases sorted by prediction fill the bins in turn: a case whose preceding weight is
    ``C`` of the total ``W`` goes to bin ``floor(bins * C / W)``; tied predictions share
    the bin of the first of them.
    """
    ws = w[:, order]
    before = np.cumsum(ws, axis=1) - ws
    total = ws.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, before / total, 0.0)
    sorted_bin = np.minimum(np.floor(bins * frac[:, tie_start] + 1e-9), bins - 1).astype(np.intp)
    out = np.empty_like(sorted_bin)
    out[:, order] = sorted_bin
    return out


def _bin_errors(
    bin_of: NDArray[np.intp],
    w: NDArray[np.float64],
    p: NDArray[np.float64],
    y: NDArray[np.float64],
    bins: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ECE and MCE for each weight row; ``bin_of`` is (n,) or (B, n)."""
    b, n = w.shape
    codes = np.broadcast_to(bin_of, (b, n)) + bins * np.arange(b)[:, None]
    flat = codes.ravel()
    size = b * bins
    wt = np.bincount(flat, weights=w.ravel(), minlength=size).reshape(b, bins)
    sp = np.bincount(flat, weights=(w * p).ravel(), minlength=size).reshape(b, bins)
    sy = np.bincount(flat, weights=(w * y).ravel(), minlength=size).reshape(b, bins)
    gap = np.abs(sy - sp)
    total = wt.sum(axis=1)
    ece = gap.sum(axis=1) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = np.where(wt > 0, gap / wt, -np.inf)
    return ece, per_bin.max(axis=1)


# --- the public function --------------------------------------------------------------
def calibration(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    *,
    bins: int = 10,
    strategy: str = "uniform",
    ci: str | None = "bootstrap",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
    knots: int = 4,
    grid: ArrayLike | None = None,
) -> CalibrationResult:
    """Calibration of predicted probabilities: intercept, slope, Brier, ECE, curves.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_prob : array_like of shape (n,)
        Predicted probabilities of the positive class, in [0, 1].
    bins : int
        Number of bins of the reliability table, ECE and MCE (>= 2).
    strategy : {"uniform", "quantile"}
        ``"uniform"``: equal-width bins ``[k/bins, (k+1)/bins)`` (the last closed at 1),
        as ``numpy.histogram``. ``"quantile"``: equal-mass bins, cases sorted by
        prediction and split into ``bins`` groups of (nearly) equal size; tied
        predictions stay in one bin. Bootstrap replicates re-form the equal-mass bins.
    ci : {"bootstrap", None}
        ``"bootstrap"``: percentile intervals from ``n_boot`` resamples of cases (of whole
        clusters with ``clusters``); a replicate in which a statistic is undefined (one
        class only, or a logistic fit without a finite maximum) is left out of that
        statistic's interval, and the count is in ``method``. ``None``: point estimates
        only; the intervals are NaN and ``method`` says so.
    level : float
        Confidence level.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the bootstrap generator; equal seeds give equal intervals.
    clusters : array_like of shape (n,), optional
        Patient (cluster) label of each case; the bootstrap resamples whole clusters.
    knots : {3, 4, 5}
        Knots of the restricted cubic spline of the calibration curve, placed at
        Harrell's quantiles of ``logit(p)`` [6]_ (fewer when predictions are tied).
    grid : array_like, optional
        Predicted probabilities at which the curve is evaluated; default 51 points from
        the smallest to the largest prediction.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    StatisticsError
        Probabilities outside [0, 1], NaN, non-binary truth, unequal lengths, unknown
        options.
    NotEstimableError
        Only one class present, or the outcome is perfectly separated by ``logit(p)``
        (no finite calibration intercept).

    Notes
    -----
    Calibration-in-the-large and the slope are maximum-likelihood logistic fits
    (Steyerberg [3]_, ch. 15.3; R ``glm(y ~ offset(qlogis(p)), binomial)`` and
    ``glm(y ~ qlogis(p), binomial)``; the ``Intercept`` of ``rms::val.prob`` is the
    intercept of the second model, not calibration-in-the-large). Predictions of
    exactly 0 or 1 would have an infinite logit; they are moved :data:`LOGIT_EPS`
    inside for these fits and counted in ``n_clipped``.

    ECE is ``sum_b (n_b / n) |obs_b - mean_pred_b|`` and MCE ``max_b |obs_b - mean_pred_b|``
    over the non-empty bins [5]_. The Spiegelhalter statistic is
    ``z = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p))`` [4]_, referred to the
    standard normal. The scaled Brier score divides by the Brier score of predicting
    the observed prevalence for every case [3]_. Binned ECE is biased upwards (each bin's
    gap is an absolute value of noisy differences), more so with many bins and few
    cases; its bootstrap interval inherits the bias and can exclude the point estimate.

    Examples
    --------
    >>> res = calibration([0, 0, 1, 1, 0, 1], [0.1, 0.3, 0.6, 0.8, 0.4, 0.7], ci=None)
    >>> round(res.brier.value, 4)
    0.0917
    """
    strategy = choose("strategy", strategy, STRATEGIES)
    if ci is not None:
        ci = choose("ci", ci, CI_METHODS)
    level = check_level(level)
    bins = check_positive_int("bins", bins, 2)
    n_boot = check_positive_int("n_boot", n_boot, 2)
    if knots not in _KNOT_QUANTILES or isinstance(knots, bool):
        raise StatisticsError(f"knots must be 3, 4 or 5, found {knots!r}.")
    y = as_binary(y_true)
    p = _as_probabilities(y_prob)
    n = same_length(y_true=y, y_prob=p)
    events, _ = need_both_classes(y, "Calibration")
    codes = as_clusters(clusters, n)
    yf = y.astype(np.float64)

    clipped = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    n_clipped = int(np.sum(clipped != p))
    lp = logit(clipped)
    reasons: dict[str, str] = {}
    ones = np.ones((1, n))

    # point estimates
    one_col = np.ones((n, 1))
    a_hat, a_ok = _fit_logistic(one_col, yf, lp, ones)
    if not a_ok[0]:
        raise NotEstimableError(
            "Calibration-in-the-large is not estimable: the logistic fit with offset logit(p) "
            "has no finite maximum."
        )
    distinct = len(np.unique(lp)) >= 2
    slope_design = np.column_stack([np.ones(n), lp])
    slope_hat: float | None = None
    if distinct:
        slope_coef, ok = _fit_logistic(slope_design, yf, None, ones)
        if ok[0]:
            slope_hat = float(slope_coef[0, 1])
        else:
            reasons["slope"] = (
                "the outcome is perfectly separated by logit(p); the calibration slope has no "
                "finite maximum-likelihood estimate"
            )
    else:
        reasons["slope"] = "all predictions are equal; the calibration slope is undefined"

    prev = events / n
    brier = float(np.mean((p - yf) ** 2))
    scaled = 1.0 - brier / (prev * (1.0 - prev))
    if strategy == "uniform":
        point_bins = _uniform_bins(p, bins)
        order = tie_start = np.empty(0, dtype=np.intp)
    else:
        order = np.argsort(p, kind="stable")
        ps = p[order]
        new = np.r_[True, ps[1:] != ps[:-1]]
        tie_start = np.flatnonzero(new)[np.cumsum(new) - 1]
        point_bins = _quantile_bins(order, tie_start, ones, bins)[0]
    ece_hat, mce_hat = (float(v[0]) for v in _bin_errors(point_bins, ones, p, yf, bins))

    var_s = float(np.sum((1.0 - 2.0 * p) ** 2 * p * (1.0 - p)))
    spiegel: TestResult | None = None
    if var_s > 0.0:
        z = float(np.sum((yf - p) * (1.0 - 2.0 * p)) / np.sqrt(var_s))
        spiegel = TestResult(z, float(2.0 * sps.norm.sf(abs(z))), None, "Spiegelhalter z-test")
    else:
        reasons["spiegelhalter"] = "every prediction is 0, 0.5 or 1; the z-test variance is 0"

    t = _knots(lp, knots)
    g = _curve_grid(grid, p)
    curve_hat: NDArray[np.float64] | None = None
    if t is None:
        reasons["curve"] = "fewer than 3 distinct predictions; no spline calibration curve"
    else:
        curve_coef, ok = _fit_logistic(_rcs_basis(lp, t), yf, None, ones)
        if ok[0]:
            gd = _rcs_basis(logit(np.clip(g, LOGIT_EPS, 1.0 - LOGIT_EPS)), t)
            curve_hat = expit(gd @ curve_coef[0])
        else:
            reasons["curve"] = "the spline calibration model has no finite maximum (separation)"

    reliability = _reliability_table(point_bins, p, y, bins, strategy, level)

    point: dict[str, float | None] = {
        "intercept": float(a_hat[0, 0]),
        "slope": slope_hat,
        "brier": brier,
        "scaled_brier": scaled,
        "ece": ece_hat,
        "mce": mce_hat,
    }
    grid_design = None if t is None else _rcs_basis(logit(np.clip(g, LOGIT_EPS, 1 - LOGIT_EPS)), t)
    curve: CalibrationCurve | None = None
    ests: dict[str, Estimate | None]
    if ci is None:
        nan = float("nan")
        ests = {
            k: None if v is None else Estimate(v, nan, nan, level, "no interval (ci=None)", n)
            for k, v in point.items()
        }
        if curve_hat is not None and t is not None:
            curve = CalibrationCurve(
                g,
                curve_hat,
                curve_hat,
                curve_hat,
                level,
                t,
                f"restricted cubic spline logistic, {len(t)} knots; no band (ci=None)",
            )
    else:
        # every statistic is computed on the same resamples
        reps: dict[str, list[NDArray[np.float64]]] = {k: [] for k in point}
        curve_reps: list[NDArray[np.float64]] = []
        spline = None if t is None else _rcs_basis(lp, t)
        for wb in case_weight_batches(n, codes, n_boot, seed):
            w = wb.astype(np.float64)
            wsum = w.sum(axis=1)
            ev = w @ yf
            two = (ev > 0) & (ev < wsum)
            a_b, ok_a = _fit_logistic(one_col, yf, lp, w, start=a_hat[0])
            reps["intercept"].append(np.where(ok_a & two, a_b[:, 0], np.nan))
            if slope_hat is not None:
                s_b, ok_s = _fit_logistic(slope_design, yf, None, w, start=slope_coef[0])
                reps["slope"].append(np.where(ok_s & two, s_b[:, 1], np.nan))
            br = (w @ (p - yf) ** 2) / wsum
            pr = ev / wsum
            reps["brier"].append(br)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps["scaled_brier"].append(np.where(two, 1.0 - br / (pr * (1.0 - pr)), np.nan))
            bin_b = (
                point_bins if strategy == "uniform" else _quantile_bins(order, tie_start, w, bins)
            )
            e_b, m_b = _bin_errors(bin_b, w, p, yf, bins)
            reps["ece"].append(e_b)
            reps["mce"].append(m_b)
            if curve_hat is not None and spline is not None and grid_design is not None:
                c_b, ok_c = _fit_logistic(spline, yf, None, w, start=curve_coef[0])
                cur = expit(c_b @ grid_design.T)
                cur[~(ok_c & two)] = np.nan
                curve_reps.append(cur)
        n_units = n if codes is None else int(codes.max()) + 1
        unit = "clusters" if codes is not None else "cases"
        ests = {}
        for k, v in point.items():
            if v is None:
                ests[k] = None
                continue
            try:
                ests[k] = _bootstrap_estimate(
                    k, v, np.concatenate(reps[k]), level, n_boot, n, n_units, unit
                )
            except NotEstimableError as exc:
                if k != "slope":
                    raise
                # the slope needs both classes and no separation in each resample
                ests[k] = None
                reasons[k] = str(exc)
        if curve_hat is not None and t is not None:
            band = np.vstack(curve_reps)
            band = band[np.isfinite(band).all(axis=1)]
            if len(band) < max(2, n_boot // 2):
                reasons["curve"] = (
                    f"only {len(band)} of {n_boot} bootstrap fits of the calibration curve "
                    "converged; the band is not estimable"
                )
            else:
                alpha = (1.0 - level) / 2.0
                lower, upper = np.quantile(band, [alpha, 1.0 - alpha], axis=0)
                curve = CalibrationCurve(
                    g,
                    curve_hat,
                    lower,
                    upper,
                    level,
                    t,
                    f"restricted cubic spline logistic, {len(t)} knots; pointwise "
                    f"bootstrap-percentile band ({len(band)} of {n_boot} replicates)",
                )

    def required(key: str) -> Estimate:
        est = ests[key]
        if est is None:  # pragma: no cover - these statistics always have a value
            raise NotEstimableError(f"The {_NAMES[key]} is not estimable.")
        return est

    return CalibrationResult(
        intercept=required("intercept"),
        slope=ests["slope"],
        brier=required("brier"),
        scaled_brier=required("scaled_brier"),
        ece=required("ece"),
        mce=required("mce"),
        spiegelhalter=spiegel,
        reliability=reliability,
        curve=curve,
        bins=bins,
        strategy=strategy,
        n=n,
        events=events,
        n_clipped=n_clipped,
        not_estimable=reasons,
    )


_NAMES = {
    "intercept": "calibration-in-the-large",
    "slope": "calibration slope",
    "brier": "Brier score",
    "scaled_brier": "scaled Brier score",
    "ece": "ECE",
    "mce": "MCE",
}


def _bootstrap_estimate(
    key: str,
    theta: float,
    reps: NDArray[np.float64],
    level: float,
    n_boot: int,
    n: int,
    n_units: int,
    unit: str,
) -> Estimate:
    good = reps[np.isfinite(reps)]
    dropped = n_boot - len(good)
    if len(good) < max(2, n_boot // 2):
        raise NotEstimableError(
            f"The bootstrap interval of the {_NAMES[key]} is not estimable: {dropped} of "
            f"{n_boot} resamples had one class only or no finite logistic fit. Use more "
            "cases (or clusters) or ci=None."
        )
    lo, hi = interval_from_replicates(theta, good, level=level, method="percentile")
    extra = f", {dropped} undefined replicates dropped" if dropped else ""
    return Estimate(
        theta,
        lo,
        hi,
        level,
        f"bootstrap-percentile ({n_boot} replicates, {n_units} {unit}{extra})",
        n,
        float(good.std(ddof=1)),
    )


def _as_probabilities(y_prob: ArrayLike) -> NDArray[np.float64]:
    p = as_scores(y_prob, "y_prob")
    outside = (p < 0.0) | (p > 1.0)
    if outside.any():
        found = np.unique(p[outside])[:5].tolist()
        raise StatisticsError(
            f"y_prob must be probabilities in [0, 1], found {int(outside.sum())} value(s) "
            f"outside, e.g. {found}. Pass predicted probabilities, not logits or scores."
        )
    return p


def _curve_grid(grid: ArrayLike | None, p: NDArray[np.float64]) -> NDArray[np.float64]:
    if grid is None:
        return np.linspace(float(p.min()), float(p.max()), 51)
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or len(g) == 0 or (np.diff(g) < 0).any() or g.min() < 0 or g.max() > 1:
        raise StatisticsError(
            f"grid must be an ascending 1-D array of probabilities in [0, 1], found shape "
            f"{g.shape} with range [{g.min() if g.size else None}, "
            f"{g.max() if g.size else None}]."
        )
    return g


def _reliability_table(
    bin_of: NDArray[np.intp],
    p: NDArray[np.float64],
    y: NDArray[np.int8],
    bins: int,
    strategy: str,
    level: float,
) -> pd.DataFrame:
    rows = []
    edges = _edges(bins)
    for k in range(bins):
        members = bin_of == k
        m = int(members.sum())
        if m == 0:
            continue
        ev = int(y[members].sum())
        obs = proportion_ci(ev, m, method="wilson", level=level)
        lo, hi = (
            (float(edges[k]), float(edges[k + 1]))
            if strategy == "uniform"
            else (float(p[members].min()), float(p[members].max()))
        )
        rows.append(
            {
                "bin": k,
                "bin_low": lo,
                "bin_high": hi,
                "n": m,
                "events": ev,
                "mean_predicted": float(p[members].mean()),
                "observed": obs.value,
                "observed_ci_low": obs.ci_low,
                "observed_ci_high": obs.ci_high,
            }
        )
    return pd.DataFrame(rows)

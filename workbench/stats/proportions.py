"""Proportions and threshold metrics: Wilson and Clopper-Pearson intervals.

References
----------
.. [1] Wilson EB. Probable inference, the law of succession, and statistical inference.
   JASA 22:209-212, 1927.
.. [2] Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case
   of the binomial. Biometrika 26:404-413, 1934.
.. [3] Newcombe RG. Two-sided confidence intervals for the single proportion: comparison of
   seven methods. Stat Med 17:857-872, 1998.
.. [4] Korn EL, Graubard BI. Confidence intervals for proportions with small expected
   number of positive counts estimated from survey data. Survey Methodology 24:193-201,
   1998.
.. [5] Parker JD, Talih M, Malec DJ, et al. National Center for Health Statistics data
   presentation standards for proportions. Vital Health Stat 2(175), 2017 (effective
   sample size truncated at the number of observations).
.. [6] Lumley T. survey: analysis of complex survey samples. R package, ``svyciprop``
   (``method = "beta"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import (
    Estimate,
    as_binary,
    as_clusters,
    as_scores,
    check_level,
    choose,
    same_length,
    z_crit,
)

__all__ = ["BinaryMetrics", "binary_metrics", "clustered_proportion_ci", "proportion_ci"]

PROPORTION_METHODS = ("wilson", "clopper-pearson")


def proportion_ci(
    successes: int, n: int, *, method: str = "wilson", level: float = 0.95
) -> Estimate:
    """Confidence interval of a binomial proportion.

    Parameters
    ----------
    successes : int
        Number of successes, ``0 <= successes <= n``.
    n : int
        Number of trials, ``n >= 1``.
    method : {"wilson", "clopper-pearson"}
        ``"wilson"``: score interval without continuity correction [1]_ (R
        ``prop.test(x, n, correct = FALSE)``, ``binom.confint(method = "wilson")``).
        ``"clopper-pearson"``: exact interval from beta quantiles [2]_ (R ``binom.test``).
    level : float
        Confidence level.

    Returns
    -------
    Estimate
        ``value`` is ``successes / n``.

    Raises
    ------
    NotEstimableError
        When ``n`` is 0.

    Examples
    --------
    >>> est = proportion_ci(81, 263)
    >>> round(est.ci_low, 4), round(est.ci_high, 4)
    (0.2553, 0.3662)
    """
    method = choose("method", method, PROPORTION_METHODS)
    level = check_level(level)
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise StatisticsError(f"{name} must be a non-negative integer, found {v!r}.")
    x, n = int(successes), int(n)
    if x > n:
        raise StatisticsError(f"successes ({x}) cannot exceed n ({n}).")
    if n == 0:
        raise NotEstimableError("A proportion with n = 0 is not estimable (no cases).")
    p = x / n
    lo, hi = _interval(float(x), float(n), method, level)
    return Estimate(p, lo, hi, level, method, n, math.sqrt(p * (1.0 - p) / n))


def _interval(x: float, n: float, method: str, level: float) -> tuple[float, float]:
    """Wilson or Clopper-Pearson limits for ``x`` successes in ``n`` (both may be fractional)."""
    if method == "wilson":
        p = x / n
        z = z_crit(level)
        z2 = z * z
        centre = (x + z2 / 2.0) / (n + z2)
        half = z * math.sqrt(n) / (n + z2) * math.sqrt(p * (1.0 - p) + z2 / (4.0 * n))
        return max(0.0, centre - half), min(1.0, centre + half)
    alpha = 1.0 - level
    lo = 0.0 if x <= 0.0 else float(sps.beta.ppf(alpha / 2.0, x, n - x + 1.0))
    hi = 1.0 if x >= n else float(sps.beta.ppf(1.0 - alpha / 2.0, x + 1.0, n - x))
    return lo, hi


def clustered_proportion_ci(
    outcomes: ArrayLike,
    clusters: ArrayLike,
    *,
    method: str = "wilson",
    level: float = 0.95,
    truncate: bool = True,
) -> Estimate:
    """Confidence interval of a proportion whose cases are grouped in clusters (patients).

    Several cases of one patient (two breasts, two eyes, several lesions or series) are
    not independent; the binomial interval then understates the uncertainty. The
    proportion's variance is the cluster-robust (linearisation) variance of the ratio
    estimator, and the interval is the Wilson or Clopper-Pearson interval computed at the
    Korn-Graubard effective sample size [4]_ [5]_.

    Parameters
    ----------
    outcomes : array_like of shape (n,)
        0/1 or bool per case (e.g. "called positive" among the positive cases, for
        sensitivity).
    clusters : array_like of shape (n,)
        Cluster (patient) label of each case.
    method : {"wilson", "clopper-pearson"}
        Interval at the effective sample size. ``"clopper-pearson"`` is the
        Korn-Graubard interval (R ``survey::svyciprop(method = "beta")`` [6]_, when not
        truncated).
    level : float
        Confidence level.
    truncate : bool
        Truncate the effective sample size at ``n`` [5]_, so that the clustered interval is
        never narrower than the binomial one for the same cases (the default). Without
        it, clusters whose cases disagree more than independent cases would (a design
        effect below 1) narrow the interval, as in ``svyciprop``.

    Returns
    -------
    Estimate
        ``value`` is the proportion of cases; ``n`` the number of cases; ``se`` the
        cluster-robust standard error; ``method`` names the clusters and the effective
        sample size.

    Raises
    ------
    NotEstimableError
        With no cases, or fewer than two clusters (no between-cluster variance).

    Notes
    -----
    With :math:`G` clusters, :math:`x_g` successes among :math:`m_g` cases in cluster
    :math:`g`, :math:`n = \\sum m_g` and :math:`\\hat p = \\sum x_g / n`:

    .. math::

        \\widehat{\\operatorname{Var}}(\\hat p) = \\frac{G}{G - 1}
            \\sum_g \\frac{(x_g - \\hat p\\, m_g)^2}{n^2}, \\qquad
        n^* = \\frac{\\hat p (1 - \\hat p)}{\\widehat{\\operatorname{Var}}(\\hat p)}
            \\left(\\frac{t_{n-1,\\,\\alpha/2}}{t_{G-1,\\,\\alpha/2}}\\right)^2,

    the variance of R ``survey::svymean`` with ``ids = ~cluster`` and the
    degrees-of-freedom adjusted effective sample size of Korn and Graubard. The interval
    is then that of :math:`\\hat p n^*` successes in :math:`n^*` trials. When
    :math:`\\hat p` is 0 or 1 the variance is 0 and :math:`n^* = n`.

    Examples
    --------
    >>> est = clustered_proportion_ci([1, 1, 0, 1, 0, 0, 1, 1], [1, 1, 2, 2, 3, 3, 4, 4])
    >>> round(est.value, 3), round(est.ci_low, 3), round(est.ci_high, 3)
    (0.625, 0.154, 0.938)
    """
    method = choose("method", method, PROPORTION_METHODS)
    level = check_level(level)
    y = as_binary(outcomes).astype(np.float64)
    n = len(y)
    if n == 0:
        raise NotEstimableError("A proportion with n = 0 is not estimable (no cases).")
    codes = as_clusters(clusters, n)
    assert codes is not None
    n_clusters = int(codes.max()) + 1
    if n_clusters < 2:
        raise NotEstimableError(
            f"A clustered interval needs at least two clusters (patients); all {n} cases "
            "belong to one."
        )
    p = float(y.sum() / n)
    residual = np.bincount(codes, weights=y - p, minlength=n_clusters)
    variance = n_clusters / (n_clusters - 1) * float(np.sum(residual**2)) / n**2
    if variance > 0.0:
        alpha = 1.0 - level
        df_ratio = float(sps.t.ppf(alpha / 2.0, n - 1) / sps.t.ppf(alpha / 2.0, n_clusters - 1))
        n_eff = p * (1.0 - p) / variance * df_ratio**2
    else:
        n_eff = float(n)
    if truncate:
        n_eff = min(n_eff, float(n))
    lo, hi = _interval(p * n_eff, n_eff, method, level)
    how = (
        f"{method}, clustered ({n_clusters} clusters, {n} cases; "
        f"Korn-Graubard effective n {n_eff:.1f})"
    )
    return Estimate(p, lo, hi, level, how, n, math.sqrt(variance))


@dataclass(frozen=True, slots=True)
class BinaryMetrics:
    """Confusion-matrix metrics at one threshold, each with a CI.

    A metric whose denominator is zero (e.g. PPV when nothing is called positive) is
    ``None`` and its reason is in ``not_estimable``; it is never NaN.

    Parameters
    ----------
    threshold : float
        Scores ``>= threshold`` are called positive.
    tp, fp, tn, fn : int
        Confusion-matrix counts.
    sensitivity, specificity, ppv, npv, accuracy : Estimate or None
        The metrics with their intervals.
    not_estimable : dict of str to str
        Metric name -> reason, for every metric that is ``None``.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Estimate | None
    specificity: Estimate | None
    ppv: Estimate | None
    npv: Estimate | None
    accuracy: Estimate | None
    not_estimable: dict[str, str] = field(default_factory=dict)


def binary_metrics(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    threshold: float,
    method: str = "wilson",
    level: float = 0.95,
    clusters: ArrayLike | None = None,
) -> BinaryMetrics:
    """Sensitivity, specificity, PPV, NPV and accuracy at a threshold, with CIs.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_score : array_like of shape (n,)
        Scores or 0/1 predictions; ``y_score >= threshold`` is a positive call.
    threshold : float
        Decision threshold.
    method : {"wilson", "clopper-pearson"}
        Interval for each proportion (see :func:`proportion_ci`).
    level : float
        Confidence level.
    clusters : array_like of shape (n,), optional
        Cluster (patient) label of each case. Each metric's interval is then the
        clustered interval of its own cases (:func:`clustered_proportion_ci`: the
        positive cases' clusters for sensitivity, the positive calls' for PPV...).

    Returns
    -------
    BinaryMetrics

    Notes
    -----
    PPV and NPV are those of the test set's prevalence; they do not transfer to a
    population with another prevalence.
    """
    method = choose("method", method, PROPORTION_METHODS)
    level = check_level(level)
    y = as_binary(y_true)
    s = as_scores(y_score)
    same_length(y_true=y, y_score=s)
    if not math.isfinite(float(threshold)):
        raise StatisticsError(f"threshold must be a finite number, found {threshold!r}.")
    call = s >= float(threshold)
    truth = y == 1
    tp = int(np.sum(call & truth))
    fp = int(np.sum(call & ~truth))
    tn = int(np.sum(~call & ~truth))
    fn = int(np.sum(~call & truth))
    codes = as_clusters(clusters, len(y))
    reasons: dict[str, str] = {}

    def est(name: str, success: np.ndarray, among: np.ndarray, why: str) -> Estimate | None:
        n = int(among.sum())
        if n == 0:
            reasons[name] = why
            return None
        if codes is None:
            return proportion_ci(int(success[among].sum()), n, method=method, level=level)
        try:
            return clustered_proportion_ci(success[among], codes[among], method=method, level=level)
        except NotEstimableError as exc:
            reasons[name] = str(exc)
            return None

    everyone = np.ones(len(y), dtype=bool)
    correct = call == truth
    return BinaryMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=est("sensitivity", call, truth, "no positive cases (tp + fn = 0)"),
        specificity=est("specificity", ~call, ~truth, "no negative cases (tn + fp = 0)"),
        ppv=est("ppv", truth, call, "no positive calls at this threshold (tp + fp = 0)"),
        npv=est("npv", ~truth, ~call, "no negative calls at this threshold (tn + fn = 0)"),
        accuracy=est("accuracy", correct, everyone, "no cases"),
        not_estimable=reasons,
    )

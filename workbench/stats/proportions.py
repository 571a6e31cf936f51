"""Proportions and threshold metrics: Wilson and Clopper-Pearson intervals.

References
----------
.. [1] Wilson EB. Probable inference, the law of succession, and statistical inference.
   JASA 22:209-212, 1927.
.. [2] Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case
   of the binomial. Biometrika 26:404-413, 1934.
.. [3] Newcombe RG. Two-sided confidence intervals for the single proportion: comparison of
   seven methods. Stat Med 17:857-872, 1998.
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
    as_scores,
    check_level,
    choose,
    same_length,
    z_crit,
)

__all__ = ["BinaryMetrics", "binary_metrics", "proportion_ci"]

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
    if method == "wilson":
        z = z_crit(level)
        z2 = z * z
        centre = (x + z2 / 2.0) / (n + z2)
        half = z * math.sqrt(n) / (n + z2) * math.sqrt(p * (1.0 - p) + z2 / (4.0 * n))
        lo, hi = max(0.0, centre - half), min(1.0, centre + half)
        se = math.sqrt(p * (1.0 - p) / n)
    else:
        alpha = 1.0 - level
        lo = 0.0 if x == 0 else float(sps.beta.ppf(alpha / 2.0, x, n - x + 1))
        hi = 1.0 if x == n else float(sps.beta.ppf(1.0 - alpha / 2.0, x + 1, n - x))
        se = math.sqrt(p * (1.0 - p) / n)
    return Estimate(p, lo, hi, level, method, n, se)


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
    reasons: dict[str, str] = {}

    def est(name: str, x: int, n: int, why: str) -> Estimate | None:
        if n == 0:
            reasons[name] = why
            return None
        return proportion_ci(x, n, method=method, level=level)

    return BinaryMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=est("sensitivity", tp, tp + fn, "no positive cases (tp + fn = 0)"),
        specificity=est("specificity", tn, tn + fp, "no negative cases (tn + fp = 0)"),
        ppv=est("ppv", tp, tp + fp, "no positive calls at this threshold (tp + fp = 0)"),
        npv=est("npv", tn, tn + fn, "no negative calls at this threshold (tn + fn = 0)"),
        accuracy=est("accuracy", tp + tn, len(y), "no cases"),
        not_estimable=reasons,
    )

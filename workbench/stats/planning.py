"""Precision planning: cases needed for a target confidence-interval half-width.

References
----------
.. [1] Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating
   characteristic (ROC) curve. Radiology 143:29-36, 1982.
.. [2] Buderer NM. Statistical methodology: I. Incorporating the prevalence of disease into
   the sample size calculation for sensitivity and specificity. Acad Emerg Med 3:895-900,
   1996.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.errors import StatisticsError
from workbench.stats._core import check_level, z_crit

__all__ = [
    "SampleSize",
    "hanley_mcneil_variance",
    "sample_size_auc",
    "sample_size_sensitivity",
    "sample_size_specificity",
]


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Cases needed for a target CI half-width.

    Parameters
    ----------
    n_total : int
        Total cases.
    n_positive, n_negative : int
        Expected positive and negative cases at the assumed prevalence.
    half_width : float
        The half-width achieved with these numbers (<= the target).
    level : float
        Confidence level.
    method : str
        Variance formula used.
    """

    n_total: int
    n_positive: int
    n_negative: int
    half_width: float
    level: float
    method: str


def _check_unit(name: str, value: float, *, open_low: bool = True) -> float:
    v = float(value)
    if not (0.0 < v < 1.0):
        raise StatisticsError(f"{name} must lie strictly between 0 and 1, found {value!r}.")
    return v


def hanley_mcneil_variance(expected_auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley-McNeil (1982) variance of the empirical AUC [1]_.

    Parameters
    ----------
    expected_auc : float
        Assumed AUC in (0, 1).
    n_positive, n_negative : int
        Numbers of positive and negative cases.

    Returns
    -------
    float
        ``(A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)) / (n1 n0)`` with
        ``Q1 = A/(2-A)``, ``Q2 = 2A^2/(1+A)``.
    """
    a = _check_unit("expected_auc", expected_auc)
    if n_positive < 1 or n_negative < 1:
        raise StatisticsError(
            f"Need >= 1 positive and >= 1 negative case, found {n_positive} and {n_negative}."
        )
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    num = a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)
    return num / (n_positive * n_negative)


def _split(n: int, prevalence: float) -> tuple[int, int]:
    pos = min(n - 1, max(1, round(n * prevalence)))
    return pos, n - pos


def sample_size_auc(
    expected_auc: float, half_width: float, *, prevalence: float, level: float = 0.95
) -> SampleSize:
    """Smallest number of cases whose AUC CI half-width is at most ``half_width``.

    Parameters
    ----------
    expected_auc : float
        Assumed AUC.
    half_width : float
        Target half-width of the Wald CI, ``z * sqrt(Var_HM)``.
    prevalence : float
        Expected fraction of positive cases.
    level : float
        Confidence level.

    Returns
    -------
    SampleSize

    Examples
    --------
    >>> sample_size_auc(0.85, 0.05, prevalence=0.3).n_total
    339
    """
    _check_unit("prevalence", prevalence)
    level = check_level(level)
    d = _check_unit("half_width", half_width)
    z = z_crit(level)

    def width(n: int) -> float:
        p, q = _split(n, prevalence)
        return z * math.sqrt(hanley_mcneil_variance(expected_auc, p, q))

    lo, hi = 2, 4
    while width(hi) > d:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            raise StatisticsError("The target half-width needs more than 10^9 cases.")
    while lo < hi:  # first n with width(n) <= d (width decreases with n)
        mid = (lo + hi) // 2
        if width(mid) <= d:
            hi = mid
        else:
            lo = mid + 1
    p, q = _split(hi, prevalence)
    return SampleSize(hi, p, q, width(hi), level, "hanley-mcneil")


def _buderer(expected: float, d: float, frac: float, level: float, positive: bool) -> SampleSize:
    z = z_crit(level)
    n_class = math.ceil(z * z * expected * (1.0 - expected) / (d * d))
    n_total = math.ceil(n_class / frac)
    achieved = z * math.sqrt(expected * (1 - expected) / n_class)
    pos, neg = (n_class, n_total - n_class) if positive else (n_total - n_class, n_class)
    return SampleSize(n_total, pos, neg, achieved, level, "buderer (wald)")


def sample_size_sensitivity(
    expected_sensitivity: float, half_width: float, *, prevalence: float, level: float = 0.95
) -> SampleSize:
    """Cases needed to estimate sensitivity within ``+-half_width`` (Buderer 1996 [2]_).

    Parameters
    ----------
    expected_sensitivity : float
        Assumed sensitivity.
    half_width : float
        Target half-width of the CI.
    prevalence : float
        Expected fraction of positive cases in the test set.
    level : float
        Confidence level.

    Returns
    -------
    SampleSize
        ``n_positive = ceil(z^2 p (1-p) / d^2)`` and ``n_total = ceil(n_positive / prevalence)``,
        so the expected positives never fall short (Buderer rounds the total instead, e.g.
        692 rather than 695 for 0.9 +- 0.05 at 20 % prevalence).

    Examples
    --------
    >>> sample_size_sensitivity(0.9, 0.05, prevalence=0.2).n_total
    695
    """
    return _buderer(
        _check_unit("expected_sensitivity", expected_sensitivity),
        _check_unit("half_width", half_width),
        _check_unit("prevalence", prevalence),
        check_level(level),
        positive=True,
    )


def sample_size_specificity(
    expected_specificity: float, half_width: float, *, prevalence: float, level: float = 0.95
) -> SampleSize:
    """Cases needed to estimate specificity within ``+-half_width`` (Buderer 1996 [2]_).

    Parameters
    ----------
    expected_specificity : float
        Assumed specificity.
    half_width : float
        Target half-width.
    prevalence : float
        Expected fraction of positive cases (negatives are ``1 - prevalence``).
    level : float
        Confidence level.

    Returns
    -------
    SampleSize
    """
    return _buderer(
        _check_unit("expected_specificity", expected_specificity),
        _check_unit("half_width", half_width),
        1.0 - _check_unit("prevalence", prevalence),
        check_level(level),
        positive=False,
    )

"""Agreement between raters: Cohen's kappa (weighted), Fleiss' kappa, percent agreement.

References
----------
.. [1] Cohen J. A coefficient of agreement for nominal scales. Educ Psychol Meas 20:37-46, 1960.
.. [2] Fleiss JL, Cohen J, Everitt BS. Large sample standard errors of kappa and weighted
   kappa. Psychol Bull 72:323-327, 1969 (the non-null SE used by SAS PROC FREQ as "ASE").
.. [3] Fleiss JL. Measuring nominal scale agreement among many raters. Psychol Bull
   76:378-382, 1971.
.. [4] Fleiss JL, Nee JCM, Landis JR. Large sample variance of kappa in the case of different
   sets of raters. Psychol Bull 86:974-977, 1979 (null SE of Fleiss' kappa, as R irr).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import Estimate, TestResult, check_level, choose, z_crit
from workbench.stats.proportions import proportion_ci

__all__ = [
    "cohen_kappa",
    "fleiss_kappa",
    "fleiss_kappa_test",
    "pairwise_kappas",
    "percent_agreement",
]

WEIGHTS = ("none", "linear", "quadratic")


def _ratings(values: ArrayLike, name: str) -> NDArray[np.object_]:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise StatisticsError(f"{name} must be one-dimensional, found shape {arr.shape}.")
    missing = pd.isna(arr)
    if missing.any():
        raise StatisticsError(
            f"{name} has {int(missing.sum())} missing rating(s); kappa needs a rating from both "
            "raters for every subject."
        )
    return arr


def _agreement_weights(k: int, weights: str) -> NDArray[np.float64]:
    i, j = np.indices((k, k))
    if weights == "none" or k == 1:
        return (i == j).astype(float)
    d = np.abs(i - j) / (k - 1)
    return 1.0 - d if weights == "linear" else 1.0 - d**2


def kappa_from_table(
    table: ArrayLike, *, weights: str | None = None, level: float = 0.95
) -> Estimate:
    """Cohen's (weighted) kappa from a k x k contingency table of counts.

    Parameters
    ----------
    table : array_like of shape (k, k)
        ``table[i, j]`` = subjects put in category i by rater A and j by rater B, with
        categories in their natural (ordinal) order.
    weights : {None, "linear", "quadratic"}
        Agreement weights ``1 - |i-j|/(k-1)`` (Cicchetti-Allison) or ``1 - (i-j)^2/(k-1)^2``
        (Fleiss-Cohen).
    level : float
        Confidence level.

    Returns
    -------
    Estimate
        Wald interval with the Fleiss-Cohen-Everitt (1969) non-null SE [2]_, as SAS PROC FREQ.
    """
    wname = choose("weights", "none" if weights is None else weights, WEIGHTS)
    level = check_level(level)
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise StatisticsError(f"table must be square (k x k), found shape {t.shape}.")
    n = float(t.sum())
    if n <= 0:
        raise NotEstimableError("Kappa needs at least one rated subject, found none.")
    p = t / n
    w = _agreement_weights(t.shape[0], wname)
    row, col = p.sum(axis=1), p.sum(axis=0)
    po = float(np.sum(w * p))
    pe = float(np.sum(w * np.outer(row, col)))
    if pe >= 1.0 - 1e-15:
        raise NotEstimableError(
            "Kappa is not estimable: chance agreement is 1 (both raters used a single category)."
        )
    kappa = (po - pe) / (1.0 - pe)
    wbar_row = w @ col  # wbar_i. = sum_j p_.j w_ij
    wbar_col = row @ w  # wbar_.j = sum_i p_i. w_ij
    inner = w - (wbar_row[:, None] + wbar_col[None, :]) * (1.0 - kappa)
    var = (float(np.sum(p * inner**2)) - (kappa - pe * (1.0 - kappa)) ** 2) / (n * (1.0 - pe) ** 2)
    se = math.sqrt(max(var, 0.0))
    z = z_crit(level)
    method = "cohen" if wname == "none" else f"cohen-{wname}-weighted"
    return Estimate(
        kappa, kappa - z * se, kappa + z * se, level, f"{method} (FCE 1969 ASE)", int(n), se
    )


def cohen_kappa(
    rater_a: ArrayLike,
    rater_b: ArrayLike,
    *,
    weights: str | None = None,
    level: float = 0.95,
    categories: Sequence[object] | None = None,
) -> Estimate:
    """Cohen's kappa between two raters, unweighted or weighted, with an asymptotic CI.

    Parameters
    ----------
    rater_a, rater_b : array_like of shape (n_subjects,)
        Ratings of the same subjects by two raters (any hashable labels).
    weights : {None, "linear", "quadratic"}
        ``None``: unweighted kappa [1]_. ``"linear"``/``"quadratic"``: weighted kappa with
        agreement weights on the category *ranks* (as R ``irr::kappa2(weight="equal" |
        "squared")``; SAS uses the same for consecutive integer scores).
    level : float
        Confidence level.
    categories : sequence, optional
        The ordered categories. Default: the sorted union of observed ratings. Give it
        when a category on an ordinal scale was never used, because weights depend on it.

    Returns
    -------
    Estimate
        Kappa with a Wald CI from the Fleiss-Cohen-Everitt non-null SE [2]_ (SAS "ASE");
        ``n`` is the number of subjects.

    Examples
    --------
    >>> round(cohen_kappa([1, 1, 2, 2], [1, 1, 2, 1]).value, 4)
    0.5
    """
    a = _ratings(rater_a, "rater_a")
    b = _ratings(rater_b, "rater_b")
    if len(a) != len(b):
        raise StatisticsError(
            f"rater_a and rater_b must rate the same subjects, found {len(a)} and {len(b)}."
        )
    if categories is None:
        try:
            cats = sorted(set(a.tolist()) | set(b.tolist()))
        except TypeError as exc:
            raise StatisticsError(
                "Ratings of mixed types cannot be ordered; pass categories= explicitly."
            ) from exc
    else:
        cats = list(categories)
        unknown = (set(a.tolist()) | set(b.tolist())) - set(cats)
        if unknown:
            raise StatisticsError(f"Ratings {sorted(map(str, unknown))} are not in categories.")
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    ia = np.array([index[v] for v in a.tolist()], dtype=np.intp)
    ib = np.array([index[v] for v in b.tolist()], dtype=np.intp)
    table = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k)
    return kappa_from_table(table, weights=weights, level=level)


def _fleiss_parts(counts: NDArray[np.float64]) -> tuple[float, NDArray[np.float64], float]:
    r = counts.sum(axis=1)[0]
    pj = counts.sum(axis=0) / counts.sum()
    pi = (np.sum(counts**2, axis=1) - r) / (r * (r - 1.0))
    pe = float(np.sum(pj**2))
    if pe >= 1.0 - 1e-15:
        raise NotEstimableError(
            "Fleiss' kappa is not estimable: every rating fell into a single category."
        )
    return (float(pi.mean()) - pe) / (1.0 - pe), pj, r


def _as_counts(counts: ArrayLike) -> NDArray[np.float64]:
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2:
        raise StatisticsError(f"counts must be 2-D (subjects x categories), found shape {c.shape}.")
    if np.isnan(c).any() or (c < 0).any() or (c != np.round(c)).any():
        raise StatisticsError("counts must hold non-negative integer rater counts (no NaN).")
    r = c.sum(axis=1)
    if len(np.unique(r)) != 1:
        raise StatisticsError(
            "Every subject must be rated by the same number of raters; found row sums "
            f"{sorted(set(r.astype(int).tolist()))[:5]}."
        )
    if r[0] < 2 or c.shape[0] < 2:
        raise NotEstimableError(
            f"Fleiss' kappa needs >= 2 raters and >= 2 subjects, found {int(r[0])} raters and "
            f"{c.shape[0]} subjects."
        )
    return c


def fleiss_kappa(counts: ArrayLike, *, level: float = 0.95) -> Estimate:
    """Fleiss' kappa for many raters, with a jackknife CI over subjects.

    Parameters
    ----------
    counts : array_like of shape (n_subjects, n_categories)
        ``counts[i, j]`` = raters who put subject i in category j; every row sums to the
        same number of raters.
    level : float
        Confidence level.

    Returns
    -------
    Estimate
        Kappa [3]_ with a Wald CI whose SE is the leave-one-subject-out jackknife SE (valid
        when kappa is not 0). For the test of kappa = 0 with the null SE of Fleiss, Nee and
        Landis [4]_ (R ``irr::kappam.fleiss``) see :func:`fleiss_kappa_test`.

    Examples
    --------
    >>> round(fleiss_kappa([[2, 0], [0, 2], [1, 1], [2, 0]]).value, 4)
    0.4667
    """
    level = check_level(level)
    c = _as_counts(counts)
    kappa, _, _ = _fleiss_parts(c)
    n = c.shape[0]
    r = c[0].sum()
    # leave-one-subject-out kappas in closed form (agreement and category shares update
    # by removing one subject's contribution)
    p_i = (np.sum(c**2, axis=1) - r) / (r * (r - 1.0))
    p_bar = (p_i.sum() - p_i) / (n - 1)
    p_j = (c.sum(axis=0)[None, :] - c) / ((n - 1) * r)
    p_e = np.sum(p_j**2, axis=1)
    if (p_e >= 1.0 - 1e-15).any():
        raise NotEstimableError(
            "The jackknife SE of Fleiss' kappa is not estimable: leaving out one subject "
            "leaves every rating in a single category."
        )
    jk = (p_bar - p_e) / (1.0 - p_e)
    se = math.sqrt((n - 1) / n * float(np.sum((jk - jk.mean()) ** 2)))
    z = z_crit(level)
    return Estimate(kappa, kappa - z * se, kappa + z * se, level, "fleiss (jackknife SE)", n, se)


def fleiss_kappa_test(counts: ArrayLike) -> TestResult:
    """z-test of Fleiss' kappa = 0 with the null SE of Fleiss, Nee and Landis (1979).

    Parameters
    ----------
    counts : array_like of shape (n_subjects, n_categories)
        As in :func:`fleiss_kappa`.

    Returns
    -------
    TestResult
        ``statistic`` is z = kappa / SE0 (as R ``irr::kappam.fleiss``), ``p_value``
        two-sided; ``difference`` is None.
    """
    c = _as_counts(counts)
    kappa, pj, r = _fleiss_parts(c)
    n = c.shape[0]
    pq = pj * (1.0 - pj)
    spq = float(pq.sum())
    var0 = 2.0 / (spq**2 * n * r * (r - 1.0)) * (spq**2 - float(np.sum(pq * (1.0 - 2.0 * pj))))
    z = kappa / math.sqrt(var0)
    return TestResult(z, float(2.0 * sps.norm.sf(abs(z))), None, "fleiss kappa z-test (FNL 1979)")


def percent_agreement(
    rater_a: ArrayLike, rater_b: ArrayLike, *, method: str = "wilson", level: float = 0.95
) -> Estimate:
    """Proportion of subjects on which two raters agree exactly, with a binomial CI.

    Parameters
    ----------
    rater_a, rater_b : array_like of shape (n_subjects,)
        Ratings of the same subjects.
    method : {"wilson", "clopper-pearson"}
        Interval, see :func:`proportion_ci`.
    level : float
        Confidence level.

    Returns
    -------
    Estimate
    """
    a = _ratings(rater_a, "rater_a")
    b = _ratings(rater_b, "rater_b")
    if len(a) != len(b):
        raise StatisticsError(
            f"rater_a and rater_b must rate the same subjects, found {len(a)} and {len(b)}."
        )
    agree = int(sum(x == y for x, y in zip(a.tolist(), b.tolist(), strict=True)))
    return proportion_ci(agree, len(a), method=method, level=level)


def pairwise_kappas(
    ratings: pd.DataFrame,
    *,
    raters: Sequence[str] | None = None,
    reference: str | None = None,
    weights: str | None = None,
    level: float = 0.95,
    categories: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Cohen's kappa for pairs of raters (e.g. the model vs each reader, or among readers).

    Parameters
    ----------
    ratings : pandas.DataFrame
        One row per subject, one column per rater.
    raters : sequence of str, optional
        Columns to use (default: all columns).
    reference : str, optional
        If given (e.g. ``"model"``), pair this column with each other rater only; otherwise
        every pair of raters.
    weights : {None, "linear", "quadratic"}
        As in :func:`cohen_kappa`.
    level : float
        Confidence level.
    categories : sequence, optional
        Ordered categories shared by all raters.

    Returns
    -------
    pandas.DataFrame
        Columns ``rater_a, rater_b, kappa, ci_low, ci_high, se, percent_agreement, n,
        status, reason``; a pair whose kappa is not estimable has ``status`` "not_estimable".
    """
    cols = list(ratings.columns if raters is None else raters)
    missing = [c for c in cols + ([reference] if reference else []) if c not in ratings.columns]
    if missing:
        raise StatisticsError(f"Columns {missing} not in ratings; found {list(ratings.columns)}.")
    if reference is not None:
        pairs = [(reference, c) for c in cols if c != reference]
    else:
        pairs = list(itertools.combinations(cols, 2))
    if not pairs:
        raise StatisticsError("pairwise_kappas needs at least two rater columns.")
    rows = []
    for ca, cb in pairs:
        row: dict[str, object] = {"rater_a": ca, "rater_b": cb, "n": len(ratings)}
        try:
            k = cohen_kappa(
                ratings[ca].to_numpy(),
                ratings[cb].to_numpy(),
                weights=weights,
                level=level,
                categories=categories,
            )
            pa = percent_agreement(ratings[ca].to_numpy(), ratings[cb].to_numpy(), level=level)
            row.update(
                kappa=k.value,
                ci_low=k.ci_low,
                ci_high=k.ci_high,
                se=k.se,
                percent_agreement=pa.value,
                status="ok",
                reason="",
            )
        except NotEstimableError as exc:
            row.update(
                kappa=None,
                ci_low=None,
                ci_high=None,
                se=None,
                percent_agreement=None,
                status="not_estimable",
                reason=str(exc),
            )
        rows.append(row)
    order = ["rater_a", "rater_b", "kappa", "ci_low", "ci_high", "se", "percent_agreement", "n"]
    return pd.DataFrame(rows)[[*order, "status", "reason"]]

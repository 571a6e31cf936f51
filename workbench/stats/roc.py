"""ROC analysis: AUC with DeLong or bootstrap CIs, paired DeLong test, ROC bands.

The DeLong variance uses the O(n log n) algorithm of Sun and Xu [2]_: one sort
of the scores gives every placement value (the structural components of
DeLong et al. [1]_). With clusters (several cases per patient) the variance
is Obuchowski's clustered extension [3]_.

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
   correlated receiver operating characteristic curves: a nonparametric approach.
   Biometrics 44:837-845, 1988.
.. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under
   correlated receiver operating characteristic curves. IEEE Signal Process Lett
   21:1389-1393, 2014.
.. [3] Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics
   53:567-578, 1997.
.. [4] Campbell G. Advances in statistical methodology for the evaluation of diagnostic and
   laboratory tests. Stat Med 13:499-508, 1994 (bootstrap confidence bands).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

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
    clip01,
    need_both_classes,
    same_length,
    z_crit,
)
from workbench.stats.bootstrap import (
    BOOTSTRAP_METHODS,
    case_weight_batches,
    interval_from_replicates,
)

__all__ = [
    "RocCurve",
    "auc",
    "auc_variance",
    "delong_test",
    "roc_curve_with_band",
]

CI_METHODS = ("delong", "bootstrap")
BAND_METHODS = ("pointwise", "simultaneous")


@dataclass(frozen=True, slots=True)
class _Placements:
    """Placement values of one score vector (the DeLong structural components)."""

    auc: float
    v10: NDArray[np.float64]  # per positive: P(negative below) + 0.5 P(tie), case order
    v01: NDArray[np.float64]  # per negative: P(positive above) + 0.5 P(tie), case order


def _placements(y: NDArray[np.int8], s: NDArray[np.float64]) -> _Placements:
    """Placement values from a single sort (Sun and Xu 2014)."""
    m, n = need_both_classes(y)
    order = np.argsort(s, kind="quicksort")
    ss = s[order]
    ls = y[order].astype(np.float64)
    new = np.empty(len(ss), dtype=bool)
    new[0] = True
    np.not_equal(ss[1:], ss[:-1], out=new[1:])
    gid = np.cumsum(new) - 1
    pos_g = np.bincount(gid, weights=ls)
    neg_g = np.bincount(gid, minlength=len(pos_g)) - pos_g
    neg_below = np.cumsum(neg_g) - neg_g
    pos_above = m - np.cumsum(pos_g)
    v10_g = (neg_below + 0.5 * neg_g) / n
    v01_g = (pos_above + 0.5 * pos_g) / m
    comp_sorted = np.where(ls == 1.0, v10_g[gid], v01_g[gid])
    comp = np.empty_like(comp_sorted)
    comp[order] = comp_sorted
    pos = y == 1
    v10 = comp[pos]
    value = float(np.dot(pos_g, v10_g) / m)
    return _Placements(auc=value, v10=v10, v01=comp[~pos])


def _delong_cov(
    pl: list[_Placements],
    y: NDArray[np.int8],
    clusters: NDArray[np.intp] | None,
) -> NDArray[np.float64]:
    """DeLong (or Obuchowski clustered) covariance matrix of k AUCs."""
    v10 = np.vstack([p.v10 for p in pl])
    v01 = np.vstack([p.v01 for p in pl])
    m, n = v10.shape[1], v01.shape[1]
    if min(m, n) < 2:
        raise NotEstimableError(
            "The DeLong variance needs at least 2 positive and 2 negative cases, found "
            f"{m} positive and {n} negative."
        )
    if clusters is None:
        s10 = np.atleast_2d(np.cov(v10, ddof=1))
        s01 = np.atleast_2d(np.cov(v01, ddof=1))
        return s10 / m + s01 / n
    theta = np.array([p.auc for p in pl])[:, None]
    pos = y == 1
    c_pos, c_neg = clusters[pos], clusters[~pos]
    n_cl = int(clusters.max()) + 1
    m_i = np.bincount(c_pos, minlength=n_cl)
    n_i = np.bincount(c_neg, minlength=n_cl)
    sum10 = np.vstack([np.bincount(c_pos, weights=r, minlength=n_cl) for r in v10])
    sum01 = np.vstack([np.bincount(c_neg, weights=r, minlength=n_cl) for r in v01])
    d10 = sum10 - m_i[None, :] * theta
    d01 = sum01 - n_i[None, :] * theta
    i10, i01, i_all = int((m_i > 0).sum()), int((n_i > 0).sum()), n_cl
    if min(i10, i01) < 2:
        raise NotEstimableError(
            "The clustered DeLong variance needs at least two clusters with positive cases and "
            f"two with negative cases, found {i10} and {i01}."
        )
    s10 = i10 / ((i10 - 1) * m) * (d10 @ d10.T)
    s01 = i01 / ((i01 - 1) * n) * (d01 @ d01.T)
    s11 = i_all / (i_all - 1) * (d10 @ d01.T)
    s11 = (s11 + s11.T) / 2.0
    return s10 / m + s01 / n + 2.0 * s11 / (m * n)


def auc_variance(
    y_true: ArrayLike, y_score: ArrayLike, *, clusters: ArrayLike | None = None
) -> float:
    """DeLong variance of the empirical AUC (clustered when ``clusters`` is given).

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_score : array_like of shape (n,)
        Scores; higher means more likely positive.
    clusters : array_like of shape (n,), optional
        Patient (cluster) label of each case.

    Returns
    -------
    float
        The variance of the AUC estimate.
    """
    y = as_binary(y_true)
    s = as_scores(y_score)
    same_length(y_true=y, y_score=s)
    codes = as_clusters(clusters, len(y))
    return float(_delong_cov([_placements(y, s)], y, codes)[0, 0])


def _weighted_auc_batch(
    w: NDArray[np.float32],
    ls: NDArray[np.float32],
    starts: NDArray[np.intp] | None,
) -> NDArray[np.float64]:
    """AUC of each row of case weights ``w`` (cases in ascending score order)."""
    if starts is None:
        # no ties: a positive's own weight never counts, so the cumulative negative
        # weight up to and including it is the weight strictly below it
        below = w * (1.0 - ls)
        pos_total = np.einsum("ij,j->i", w, ls, dtype=np.float64)
        neg_total = below.sum(axis=1, dtype=np.float64)
        np.cumsum(below, axis=1, out=below)
        below *= w
        num = np.einsum("ij,j->i", below, ls, dtype=np.float64)
    else:  # tied scores: pool each tie group, ties count one half
        w64 = w.astype(np.float64)
        wp = np.add.reduceat(w64 * ls, starts, axis=1)
        wn = np.add.reduceat(w64 * (1.0 - ls), starts, axis=1)
        cum = np.cumsum(wn, axis=1) - 0.5 * wn
        num = np.einsum("ij,ij->i", wp, cum)
        pos_total, neg_total = wp.sum(axis=1), wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(num / (pos_total * neg_total), dtype=np.float64)


def _jackknife_auc(
    y: NDArray[np.int8], s: NDArray[np.float64], pl: _Placements, clusters: NDArray[np.intp] | None
) -> NDArray[np.float64]:
    """Leave-one-cluster-out AUCs in closed form from the placement values."""
    m, n = len(pl.v10), len(pl.v01)
    units = np.arange(len(y)) if clusters is None else clusters
    n_u = int(units.max()) + 1
    pos = y == 1
    m_c = np.bincount(units[pos], minlength=n_u)
    n_c = np.bincount(units[~pos], minlength=n_u)
    # pairs lost with the cluster: its positives vs all negatives, its negatives vs all positives
    lost10 = np.bincount(units[pos], weights=pl.v10 * n, minlength=n_u)
    lost01 = np.bincount(units[~pos], weights=pl.v01 * m, minlength=n_u)
    within = np.zeros(n_u)
    if clusters is not None:
        order = np.lexsort((s, units))
        us, ss, ls = units[order], s[order], y[order].astype(float)
        new = np.r_[True, (us[1:] != us[:-1]) | (ss[1:] != ss[:-1])]
        gid = np.cumsum(new) - 1
        pos_g = np.bincount(gid, weights=ls)
        neg_g = np.bincount(gid, weights=1.0 - ls)
        cl_g = us[new]
        cum_before = np.cumsum(neg_g) - neg_g
        first = np.r_[True, cl_g[1:] != cl_g[:-1]]
        offset = np.maximum.accumulate(np.where(first, cum_before, 0.0))
        below = cum_before - offset
        within = np.bincount(cl_g, weights=pos_g * (below + 0.5 * neg_g), minlength=n_u).astype(
            np.float64
        )
    rest_m, rest_n = m - m_c, n - n_c
    if (rest_m == 0).any() or (rest_n == 0).any():
        raise NotEstimableError(
            "BCa interval for the AUC is not estimable: leaving out one cluster removes every "
            "positive or every negative case. Use bootstrap_method='percentile'."
        )
    return (m * n * pl.auc - lost10 - lost01 + within) / (rest_m * rest_n)


def _bootstrap_auc(
    y: NDArray[np.int8],
    s: NDArray[np.float64],
    pl: _Placements,
    clusters: NDArray[np.intp] | None,
    *,
    level: float,
    n_boot: int,
    seed: int,
    method: str,
) -> tuple[float, float, float, int]:
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ls = y[order].astype(np.float32)
    tied = np.r_[True, ss[1:] != ss[:-1]]
    starts = None if tied.all() else np.flatnonzero(tied)
    cl_sorted = None if clusters is None else clusters[order]
    strata = None if clusters is not None else y[order].astype(np.intp)
    reps = np.concatenate(
        [
            _weighted_auc_batch(w, ls, starts)
            for w in case_weight_batches(len(y), cl_sorted, n_boot, seed, strata)
        ]
    )
    ok = np.isfinite(reps)
    dropped = int((~ok).sum())
    reps = reps[ok]
    if len(reps) < max(2, n_boot // 2):
        raise NotEstimableError(
            f"{dropped} of {n_boot} cluster resamples lacked positive or negative cases; the "
            "clustered bootstrap AUC is not estimable with so few clusters of one class."
        )
    jk = _jackknife_auc(y, s, pl, clusters) if method == "bca" else None
    lo, hi = interval_from_replicates(pl.auc, reps, level=level, method=method, jackknife=jk)
    return lo, hi, float(reps.std(ddof=1)), dropped


def auc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    ci: str = "delong",
    level: float = 0.95,
    clusters: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    bootstrap_method: str = "percentile",
) -> Estimate:
    """Empirical ROC AUC (Mann-Whitney) with a DeLong or bootstrap confidence interval.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool (1 = positive / diseased).
    y_score : array_like of shape (n,)
        Model scores; higher means more likely positive. Ties count one half.
    ci : {"delong", "bootstrap"}
        ``"delong"``: Wald interval ``AUC +- z * SE`` with the DeLong SE [1]_ computed
        in O(n log n) [2]_, clipped to [0, 1] (as pROC). With ``clusters`` the SE is
        Obuchowski's clustered SE [3]_.
        ``"bootstrap"``: resamples cases within each class (as pROC's stratified
        bootstrap) or, with ``clusters``, whole clusters.
    level : float
        Confidence level.
    clusters : array_like of shape (n,), optional
        Patient (cluster) label of each case, for several cases per patient.
    n_boot : int
        Bootstrap replicates (``ci="bootstrap"`` only).
    seed : int
        Seed of the bootstrap generator.
    bootstrap_method : {"percentile", "bca"}
        Bootstrap interval type. BCa uses the exact leave-one-cluster-out jackknife.

    Returns
    -------
    Estimate
        ``n`` is the number of cases, ``se`` the DeLong SE or the bootstrap SD.

    Raises
    ------
    StatisticsError
        Non-binary truth, unequal lengths, NaN, unknown options.
    NotEstimableError
        Only one class present.

    Examples
    --------
    >>> round(auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).value, 4)
    0.75
    """
    ci = choose("ci", ci, CI_METHODS)
    bootstrap_method = choose("bootstrap_method", bootstrap_method, BOOTSTRAP_METHODS)
    level = check_level(level)
    y = as_binary(y_true)
    s = as_scores(y_score)
    same_length(y_true=y, y_score=s)
    codes = as_clusters(clusters, len(y))
    pl = _placements(y, s)
    if ci == "delong":
        var = float(_delong_cov([pl], y, codes)[0, 0])
        se = float(np.sqrt(max(var, 0.0)))
        z = z_crit(level)
        name = "delong" if codes is None else "delong-clustered (Obuchowski 1997)"
        return Estimate(
            pl.auc, clip01(pl.auc - z * se), clip01(pl.auc + z * se), level, name, len(y), se
        )
    n_boot = check_positive_int("n_boot", n_boot, 2)
    lo, hi, sd, dropped = _bootstrap_auc(
        y, s, pl, codes, level=level, n_boot=n_boot, seed=seed, method=bootstrap_method
    )
    unit = "stratified by class" if codes is None else f"{int(codes.max()) + 1} clusters"
    extra = f", {dropped} one-class resamples dropped" if dropped else ""
    name = f"bootstrap-{bootstrap_method} ({n_boot} replicates, {unit}{extra})"
    return Estimate(pl.auc, lo, hi, level, name, len(y), sd)


def delong_test(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    *,
    level: float = 0.95,
    clusters: ArrayLike | None = None,
) -> TestResult:
    """Paired DeLong test of two correlated AUCs on the same cases.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    score_a, score_b : array_like of shape (n,)
        Scores of the two models on the same cases.
    level : float
        Confidence level of the CI of ``AUC_a - AUC_b``.
    clusters : array_like of shape (n,), optional
        Patient labels (Obuchowski's clustered covariance).

    Returns
    -------
    TestResult
        ``statistic`` is z, ``p_value`` two-sided, ``difference`` is ``AUC_a - AUC_b``
        with a Wald CI. Matches ``pROC::roc.test(..., method="delong", paired=TRUE)``.
    """
    level = check_level(level)
    y = as_binary(y_true)
    a = as_scores(score_a, "score_a")
    b = as_scores(score_b, "score_b")
    same_length(y_true=y, score_a=a, score_b=b)
    codes = as_clusters(clusters, len(y))
    pa, pb = _placements(y, a), _placements(y, b)
    cov = _delong_cov([pa, pb], y, codes)
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = pa.auc - pb.auc
    if var <= 0.0:
        raise NotEstimableError(
            "The paired DeLong test is not estimable: the two score vectors give identical "
            "placements (variance of the difference is 0)."
        )
    se = float(np.sqrt(var))
    z = diff / se
    p = float(2.0 * sps.norm.sf(abs(z)))
    zc = z_crit(level)
    est = Estimate(diff, diff - zc * se, diff + zc * se, level, "delong", len(y), se)
    return TestResult(float(z), p, est, "paired DeLong z-test")


@dataclass(frozen=True, slots=True)
class RocCurve:
    """Empirical ROC curve on a false-positive-rate grid with a confidence band.

    Parameters
    ----------
    fpr : ndarray
        Grid of false-positive rates (1 - specificity), ascending from 0 to 1.
    tpr : ndarray
        Empirical true-positive rate at each grid point (upper value at vertical steps).
    lower, upper : ndarray
        Confidence band at each grid point.
    level : float
        Confidence level.
    band : str
        ``"pointwise"`` or ``"simultaneous"``.
    auc : Estimate
        AUC with its DeLong CI.
    n_boot : int
        Bootstrap replicates behind the band.
    """

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    level: float
    band: str
    auc: Estimate
    n_boot: int


def _operating_points(
    y: NDArray[np.int8], s: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    order = np.argsort(-s, kind="stable")
    ss, ls = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tps = np.cumsum(ls)[last]
    fps = np.cumsum(1 - ls)[last]
    m, n = tps[-1], fps[-1]
    return np.r_[0.0, fps / n], np.r_[0.0, tps / m]


def _tpr_at(
    grid: NDArray[np.float64], fpr: NDArray[np.float64], tpr: NDArray[np.float64]
) -> NDArray[np.float64]:
    """TPR of the piecewise-linear ROC at each grid FPR (upper value on vertical steps)."""
    idx = np.searchsorted(fpr, grid, side="right")
    lo = np.clip(idx - 1, 0, len(fpr) - 1)
    hi = np.clip(idx, 0, len(fpr) - 1)
    span = fpr[hi] - fpr[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(span > 0, (grid - fpr[lo]) / span, 0.0)
    return tpr[lo] + frac * (tpr[hi] - tpr[lo])


def roc_curve_with_band(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    level: float = 0.95,
    band: str = "pointwise",
    n_boot: int = 1000,
    seed: int = 0,
    grid: ArrayLike | None = None,
) -> RocCurve:
    """ROC curve with a bootstrap confidence band, for plotting.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_score : array_like of shape (n,)
        Scores; higher means more likely positive.
    level : float
        Confidence level.
    band : {"pointwise", "simultaneous"}
        ``"pointwise"``: percentile interval of the bootstrap TPR at each FPR (vertical
        averaging). ``"simultaneous"``: sup-t band [4]_: ``tpr +- c * sd(fpr)`` where ``c``
        is the ``level`` quantile of the largest standardised deviation over the grid,
        so that the whole curve lies inside with the stated probability; clipped to [0, 1].
    n_boot : int
        Bootstrap replicates (resampling cases within each class).
    seed : int
        Seed of the generator.
    grid : array_like, optional
        FPR grid; default 101 points from 0 to 1.

    Returns
    -------
    RocCurve
    """
    band = choose("band", band, BAND_METHODS)
    level = check_level(level)
    n_boot = check_positive_int("n_boot", n_boot, 2)
    y = as_binary(y_true)
    s = as_scores(y_score)
    same_length(y_true=y, y_score=s)
    need_both_classes(y, "An ROC curve")
    g = np.linspace(0.0, 1.0, 101) if grid is None else np.asarray(grid, dtype=float)
    if g.ndim != 1 or (np.diff(g) < 0).any() or g.min() < 0 or g.max() > 1:
        raise StatisticsError("grid must be an ascending 1-D array of FPR values in [0, 1].")
    tpr = _tpr_at(g, *_operating_points(y, s))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    reps = np.empty((n_boot, len(g)))
    for b in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        reps[b] = _tpr_at(g, *_operating_points(y[idx], s[idx]))
    alpha = (1.0 - level) / 2.0
    if band == "pointwise":
        lower, upper = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    else:
        sd = reps.std(axis=0, ddof=1)
        live = sd > 1e-12
        dev = np.abs(reps[:, live] - tpr[live]) / sd[live]
        c = float(np.quantile(dev.max(axis=1), level)) if live.any() else 0.0
        lower, upper = tpr - c * sd, tpr + c * sd
    return RocCurve(
        fpr=g,
        tpr=tpr,
        lower=np.clip(lower, 0.0, 1.0),
        upper=np.clip(upper, 0.0, 1.0),
        level=level,
        band=band,
        auc=auc(y, s, level=level),
        n_boot=n_boot,
    )

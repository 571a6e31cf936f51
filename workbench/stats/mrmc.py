"""Multi-reader multi-case (MRMC) analysis: Obuchowski-Rockette with Hillis df.

Random readers and random cases (RRRC), plus the fixed-readers (FRRC) and
fixed-cases (RRFC) analyses. The OR computation takes, for any figure of merit,
the I x J matrix of figures of merit and the I x J covariance matrix of their
sampling errors over cases. :func:`obuchowski_rockette` feeds it empirical
(Wilcoxon) ROC AUCs with a jackknife (default, as RJafroc and OR-DBM MRMC) or
DeLong covariance; :func:`obuchowski_rockette_from_jackknife` feeds it
leave-one-case-out figures of merit of any kind (e.g. the free-response
figures of merit of :mod:`workbench.stats.froc`).

References
----------
.. [1] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 24:285-308, 1995.
.. [2] Hillis SL. A comparison of denominator degrees of freedom methods for multiple
   observer ROC analysis. Stat Med 26:596-619, 2007.
.. [3] Hillis SL, Berbaum KS, Metz CE. Recent developments in the Dorfman-Berbaum-Metz
   procedure for multireader ROC study analysis. Acad Radiol 15:647-661, 2008.
.. [4] Efron B, Stein C. The jackknife estimate of variance. Ann Stat 9:586-596, 1981
   (the ``(K - 1)^2 / K`` inflation of the covariance of jackknife values).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import Estimate, as_binary, as_scores, check_level, choose
from workbench.stats.roc import _delong_cov, _Placements, _placements

__all__ = [
    "MrmcFixedAnalysis",
    "MrmcResult",
    "obuchowski_rockette",
    "obuchowski_rockette_from_jackknife",
]

COVARIANCE_METHODS = ("jackknife", "delong")


@dataclass(frozen=True, slots=True)
class MrmcFixedAnalysis:
    """An OR analysis that treats readers or cases as fixed.

    Parameters
    ----------
    analysis : str
        ``"FRRC"`` (fixed readers, random cases: chi-square and z tests) or ``"RRFC"``
        (random readers, fixed cases: F and t tests on the reader-by-modality ANOVA).
    statistic : float
        Chi-square (FRRC) or F (RRFC) statistic of the test of equal modalities.
    df_num : float
        ``I - 1``.
    df_den : float or None
        ``(I - 1)(J - 1)`` for RRFC; None for the chi-square test of FRRC.
    p_value : float
        Upper-tail p-value of ``statistic``.
    differences : dict of (str, str) to Estimate
        Every pairwise difference of reader-averaged figures of merit with its CI.
    modality_auc : dict of str to Estimate
        Reader-averaged figure of merit per modality with its CI.
    reader_differences : dict of (str, str, str) to Estimate
        FRRC only: ``(reader, a, b)`` to the single-reader difference ``a - b`` with its
        z interval from that reader's variance and Cov1; empty for RRFC.
    """

    analysis: str
    statistic: float
    df_num: float
    df_den: float | None
    p_value: float
    differences: dict[tuple[str, str], Estimate]
    modality_auc: dict[str, Estimate]
    reader_differences: dict[tuple[str, str, str], Estimate]


@dataclass(frozen=True, slots=True)
class MrmcResult:
    """Obuchowski-Rockette RRRC analysis (with the FRRC and RRFC analyses alongside).

    Parameters
    ----------
    modalities, readers : tuple of str
        Levels in sorted order.
    reader_auc : pandas.DataFrame
        Figure of merit (the AUC for ROC data) per modality (rows) and reader (columns).
    modality_auc : dict of str to Estimate
        Reader-averaged figure of merit per modality with its RRRC CI (Hillis
        single-modality df).
    difference : Estimate
        First minus second modality (reader-averaged) with the RRRC CI, for the
        first pair in ``differences``.
    differences : dict of (str, str) to Estimate
        Every pairwise difference ``a - b`` with its CI.
    statistic : float
        OR F statistic ``MS(T) / (MS(TR) + J max(Cov2 - Cov3, 0))``.
    df_num, df_den : float
        ``I - 1`` and Hillis's denominator degrees of freedom.
    p_value : float
        ``P(F > statistic)``.
    variance_components : dict of str to float
        ``ms_t``, ``ms_tr``, ``ms_r``, ``var``, ``cov1``, ``cov2``, ``cov3``, ``var_r``,
        ``var_tr``.
    covariance : str
        ``"jackknife"`` or ``"delong"``.
    n_cases : int
        Number of cases (jackknife units).
    fixed_readers : MrmcFixedAnalysis or None
        The FRRC analysis.
    fixed_cases : MrmcFixedAnalysis or None
        The RRFC analysis.
    """

    modalities: tuple[str, ...]
    readers: tuple[str, ...]
    reader_auc: pd.DataFrame
    modality_auc: dict[str, Estimate]
    difference: Estimate
    differences: dict[tuple[str, str], Estimate]
    statistic: float
    df_num: float
    df_den: float
    p_value: float
    variance_components: dict[str, float]
    covariance: str
    n_cases: int
    fixed_readers: MrmcFixedAnalysis | None = None
    fixed_cases: MrmcFixedAnalysis | None = None


def _jackknife_cov(pls: list[_Placements], y: NDArray[np.int8]) -> NDArray[np.float64]:
    """Leave-one-case-out covariance of AUCs (closed form from placement values)."""
    k = len(y)
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    jk = np.empty((len(pls), k))
    for r, pl in enumerate(pls):
        jk[r, pos] = (m * pl.auc - pl.v10) / (m - 1)
        jk[r, ~pos] = (n * pl.auc - pl.v01) / (n - 1)
    return jackknife_covariance(jk)


def jackknife_covariance(jk: NDArray[np.float64]) -> NDArray[np.float64]:
    """Covariance of figures of merit from their leave-one-unit-out values [4]_.

    ``jk`` has one row per figure of merit and one column per left-out unit (case);
    the result is ``(K - 1)^2 / K`` times the sample covariance of the rows, as RJafroc.
    """
    k = jk.shape[1]
    if k < 2:
        raise NotEstimableError(f"A jackknife covariance needs at least 2 cases, found {k}.")
    d = jk - jk.mean(axis=1, keepdims=True)
    return np.asarray((k - 1) / k * (d @ d.T), dtype=np.float64)


def _mean_cov_terms(cov: NDArray[np.float64], i_n: int, j_n: int) -> dict[str, float]:
    """Average the IJ x IJ covariance matrix into Var, Cov1, Cov2 and Cov3 [1]_."""
    c = cov.reshape(i_n, j_n, i_n, j_n)
    same_i = np.eye(i_n, dtype=bool)[:, None, :, None]
    same_j = np.eye(j_n, dtype=bool)[None, :, None, :]
    masks = {
        "var": same_i & same_j,
        "cov1": ~same_i & same_j,
        "cov2": same_i & ~same_j,
        "cov3": ~same_i & ~same_j,
    }
    out = {}
    for key, mask in masks.items():
        full = np.broadcast_to(mask, c.shape)
        out[key] = float(c[full].mean()) if full.any() else 0.0
    return out


def _or_analysis(
    theta: NDArray[np.float64],
    cov: NDArray[np.float64],
    *,
    modalities: tuple[str, ...],
    readers: tuple[str, ...],
    level: float,
    covariance: str,
    n_cases: int,
) -> MrmcResult:
    """OR RRRC, FRRC and RRFC analyses from the I x J figures of merit and their covariance."""
    i_n, j_n = theta.shape
    mods, rdrs = modalities, readers
    if i_n < 2 or j_n < 2:
        raise NotEstimableError(
            f"OR analysis needs >= 2 modalities and >= 2 readers, found {i_n} and {j_n}."
        )
    terms = _mean_cov_terms(cov, i_n, j_n)
    var, cov1, cov2, cov3 = terms["var"], terms["cov1"], terms["cov2"], terms["cov3"]
    t_mean, r_mean, grand = theta.mean(axis=1), theta.mean(axis=0), float(theta.mean())
    ms_t = j_n * float(np.sum((t_mean - grand) ** 2)) / (i_n - 1)
    ms_r = i_n * float(np.sum((r_mean - grand) ** 2)) / (j_n - 1)
    resid = theta - t_mean[:, None] - r_mean[None, :] + grand
    ms_tr = float(np.sum(resid**2)) / ((i_n - 1) * (j_n - 1))
    var_tr = ms_tr - var + cov1 + cov2 - cov3
    den = ms_tr + j_n * max(cov2 - cov3, 0.0)
    if den <= 0:
        raise NotEstimableError("The OR denominator is 0 (no reader or case variability).")
    f_stat = ms_t / den
    ddf = den**2 / (ms_tr**2 / ((i_n - 1) * (j_n - 1))) if ms_tr > 0 else float("inf")
    p = float(sps.f.sf(f_stat, i_n - 1, ddf))
    tcrit = float(sps.t.ppf(0.5 + level / 2.0, ddf))
    se_diff = float(np.sqrt(2.0 * den / j_n))
    pairs = list(itertools.combinations(range(i_n), 2))
    diffs: dict[tuple[str, str], Estimate] = {}
    for a, b in pairs:
        d = float(t_mean[a] - t_mean[b])
        diffs[(mods[a], mods[b])] = Estimate(
            d,
            d - tcrit * se_diff,
            d + tcrit * se_diff,
            level,
            f"obuchowski-rockette RRRC ({covariance}, Hillis ddf={ddf:.2f})",
            n_cases,
            se_diff,
        )
    per_mod: dict[str, Estimate] = {}
    var_i, cov2_i, ms_r_i = np.empty(i_n), np.empty(i_n), np.empty(i_n)
    for a in range(i_n):
        ms_r_i[a] = float(np.sum((theta[a] - t_mean[a]) ** 2)) / (j_n - 1)
        block = cov[a * j_n : (a + 1) * j_n, a * j_n : (a + 1) * j_n]
        var_i[a] = float(np.trace(block)) / j_n
        cov2_i[a] = float((block.sum() - np.trace(block)) / (j_n * (j_n - 1)))
        den_i = ms_r_i[a] + j_n * max(cov2_i[a], 0.0)
        df_i = den_i**2 / ms_r_i[a] ** 2 * (j_n - 1) if ms_r_i[a] > 0 else float("inf")
        se_i = float(np.sqrt(den_i / j_n))
        tc = float(sps.t.ppf(0.5 + level / 2.0, df_i))
        per_mod[mods[a]] = Estimate(
            float(t_mean[a]),
            float(t_mean[a]) - tc * se_i,
            float(t_mean[a]) + tc * se_i,
            level,
            f"obuchowski-rockette RRRC ({covariance}, df={df_i:.2f})",
            n_cases,
            se_i,
        )
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    fixed_readers = _frrc(
        theta, cov, t_mean, var_i, cov2_i, terms, mods, rdrs, pairs, level, z, n_cases
    )
    fixed_cases = _rrfc(t_mean, ms_t, ms_tr, ms_r_i, mods, j_n, pairs, level, n_cases)
    return MrmcResult(
        modalities=mods,
        readers=rdrs,
        reader_auc=pd.DataFrame(theta, index=list(mods), columns=list(rdrs)),
        modality_auc=per_mod,
        difference=next(iter(diffs.values())),
        differences=diffs,
        statistic=float(f_stat),
        df_num=float(i_n - 1),
        df_den=float(ddf),
        p_value=p,
        variance_components={
            "ms_t": ms_t,
            "ms_tr": ms_tr,
            "ms_r": ms_r,
            "var": var,
            "cov1": cov1,
            "cov2": cov2,
            "cov3": cov3,
            "var_r": (ms_r - var_tr - var + cov2 - (i_n - 1) * (cov1 - cov3)) / i_n,
            "var_tr": var_tr,
        },
        covariance=covariance,
        n_cases=n_cases,
        fixed_readers=fixed_readers,
        fixed_cases=fixed_cases,
    )


def _frrc(
    theta: NDArray[np.float64],
    cov: NDArray[np.float64],
    t_mean: NDArray[np.float64],
    var_i: NDArray[np.float64],
    cov2_i: NDArray[np.float64],
    terms: dict[str, float],
    mods: tuple[str, ...],
    rdrs: tuple[str, ...],
    pairs: list[tuple[int, int]],
    level: float,
    z: float,
    n_cases: int,
) -> MrmcFixedAnalysis:
    """Fixed readers, random cases: chi-square test and z intervals [1]_ [3]_."""
    i_n, j_n = theta.shape
    ms_t = j_n * float(np.sum((t_mean - t_mean.mean()) ** 2)) / (i_n - 1)
    den = terms["var"] - terms["cov1"] + (j_n - 1) * max(terms["cov2"] - terms["cov3"], 0.0)
    chisq = (i_n - 1) * ms_t / den if den > 0 else float("inf")
    p = float(sps.chi2.sf(chisq, i_n - 1))
    se = float(np.sqrt(2.0 * max(den, 0.0) / j_n))
    name = "obuchowski-rockette FRRC (z)"
    diffs = {
        (mods[a], mods[b]): _z_estimate(float(t_mean[a] - t_mean[b]), se, z, level, name, n_cases)
        for a, b in pairs
    }
    per_mod = {
        mods[a]: _z_estimate(
            float(t_mean[a]),
            float(np.sqrt((var_i[a] + (j_n - 1) * max(cov2_i[a], 0.0)) / j_n)),
            z,
            level,
            name,
            n_cases,
        )
        for a in range(i_n)
    }
    c = cov.reshape(i_n, j_n, i_n, j_n)
    reader_diffs: dict[tuple[str, str, str], Estimate] = {}
    for j in range(j_n):
        block = c[:, j, :, j]
        var_j = float(np.trace(block)) / i_n
        cov1_j = float((block.sum() - np.trace(block)) / (i_n * (i_n - 1)))
        se_j = float(np.sqrt(2.0 * max(var_j - cov1_j, 0.0)))
        for a, b in pairs:
            d = float(theta[a, j] - theta[b, j])
            reader_diffs[(rdrs[j], mods[a], mods[b])] = _z_estimate(
                d, se_j, z, level, name, n_cases
            )
    return MrmcFixedAnalysis(
        "FRRC", float(chisq), float(i_n - 1), None, p, diffs, per_mod, reader_diffs
    )


def _rrfc(
    t_mean: NDArray[np.float64],
    ms_t: float,
    ms_tr: float,
    ms_r_i: NDArray[np.float64],
    mods: tuple[str, ...],
    j_n: int,
    pairs: list[tuple[int, int]],
    level: float,
    n_cases: int,
) -> MrmcFixedAnalysis:
    """Random readers, fixed cases: the reader-by-modality ANOVA of the figures of merit."""
    i_n = len(t_mean)
    df = float((i_n - 1) * (j_n - 1))
    f_stat = ms_t / ms_tr if ms_tr > 0 else float("inf")
    p = float(sps.f.sf(f_stat, i_n - 1, df))
    se = float(np.sqrt(2.0 * ms_tr / j_n))
    tc = float(sps.t.ppf(0.5 + level / 2.0, df))
    name = f"obuchowski-rockette RRFC (t, df={df:.0f})"
    diffs = {}
    for a, b in pairs:
        d = float(t_mean[a] - t_mean[b])
        diffs[(mods[a], mods[b])] = Estimate(d, d - tc * se, d + tc * se, level, name, n_cases, se)
    tc_i = float(sps.t.ppf(0.5 + level / 2.0, j_n - 1))
    per_mod = {}
    for a in range(i_n):
        m, se_i = float(t_mean[a]), float(np.sqrt(ms_r_i[a] / j_n))
        per_mod[mods[a]] = Estimate(
            m,
            m - tc_i * se_i,
            m + tc_i * se_i,
            level,
            f"obuchowski-rockette RRFC (t, df={j_n - 1})",
            n_cases,
            se_i,
        )
    return MrmcFixedAnalysis("RRFC", float(f_stat), float(i_n - 1), df, p, diffs, per_mod, {})


def _z_estimate(value: float, se: float, z: float, level: float, method: str, n: int) -> Estimate:
    return Estimate(value, value - z * se, value + z * se, level, method, n, se)


def obuchowski_rockette_from_jackknife(
    fom: pd.DataFrame,
    jackknife: ArrayLike,
    *,
    level: float = 0.95,
) -> MrmcResult:
    """OR analysis of any figure of merit from its leave-one-case-out values.

    Parameters
    ----------
    fom : pandas.DataFrame
        Figure of merit per modality (rows, index) and reader (columns), shape (I, J).
    jackknife : array_like of shape (I, J, K)
        ``jackknife[i, j, k]``: the figure of merit of modality i and reader j with case
        (or jackknife unit) k left out; the same K units for every cell.
    level : float
        Confidence level of the CIs.

    Returns
    -------
    MrmcResult
        RRRC (Hillis ddf [2]_) with the FRRC and RRFC analyses; the covariance of the
        figures of merit is ``(K - 1)^2 / K`` times the covariance of the jackknife
        values [4]_, as RJafroc's ``UtilORVarComp(..., covEstMethod = "jackknife")``.
    """
    level = check_level(level)
    theta = np.asarray(fom, dtype=np.float64)
    jk = np.asarray(jackknife, dtype=np.float64)
    if theta.ndim != 2 or jk.ndim != 3 or jk.shape[:2] != theta.shape:
        raise StatisticsError(
            "jackknife must have shape (I, J, K) matching fom's (I, J); found "
            f"{jk.shape} and {theta.shape}."
        )
    if not (np.isfinite(theta).all() and np.isfinite(jk).all()):
        raise StatisticsError("fom and jackknife must be finite.")
    i_n, j_n, k_n = jk.shape
    cov = jackknife_covariance(jk.reshape(i_n * j_n, k_n))
    return _or_analysis(
        theta,
        cov,
        modalities=tuple(str(m) for m in fom.index),
        readers=tuple(str(r) for r in fom.columns),
        level=level,
        covariance="jackknife",
        n_cases=k_n,
    )


def obuchowski_rockette(
    frame: pd.DataFrame,
    *,
    reader: str,
    modality: str,
    case: str,
    truth: str,
    rating: str,
    level: float = 0.95,
    covariance: str = "jackknife",
) -> MrmcResult:
    """Compare modalities in a fully crossed reader study (OR method, Hillis df).

    Parameters
    ----------
    frame : pandas.DataFrame
        Long format, one row per (reader, modality, case) with the rating.
    reader, modality, case, truth, rating : str
        Column names. ``truth`` is 0/1 per case (must agree across rows of a case);
        higher ratings mean more suspicious.
    level : float
        Confidence level of the CIs.
    covariance : {"jackknife", "delong"}
        Estimator of the AUC covariances over cases.

    Returns
    -------
    MrmcResult

    Notes
    -----
    With ``MS(T)``, ``MS(TR)`` the treatment and treatment-by-reader mean squares of the
    I x J AUCs and ``Cov2``, ``Cov3`` the mean covariances of AUCs of different readers in
    the same / different modalities, ``F = MS(T) / den`` with
    ``den = MS(TR) + J max(Cov2 - Cov3, 0)`` on ``I - 1`` and
    ``ddf_H = den^2 / (MS(TR)^2 / ((I-1)(J-1)))`` degrees of freedom [2]_, and the CI of a
    difference is ``diff +- t_{ddf_H} sqrt(2 den / J)``.
    """
    level = check_level(level)
    cov_method = choose("covariance", covariance, COVARIANCE_METHODS)
    for col in (reader, modality, case, truth, rating):
        if col not in frame.columns:
            raise StatisticsError(
                f"Column {col!r} is not in the frame; found {list(frame.columns)}."
            )
    if frame.duplicated([reader, modality, case]).any():
        raise StatisticsError("Each (reader, modality, case) must appear once; found duplicates.")
    truth_per_case = frame.groupby(case)[truth].nunique()
    if (truth_per_case > 1).any():
        bad = truth_per_case[truth_per_case > 1].index[:3].tolist()
        raise StatisticsError(f"Cases {bad} have conflicting truth values across rows.")
    mods = tuple(sorted(frame[modality].astype(str).unique()))
    rdrs = tuple(sorted(frame[reader].astype(str).unique()))
    cases = frame.groupby(case)[truth].first()
    y = as_binary(cases.to_numpy(), truth)
    i_n, j_n, k_n = len(mods), len(rdrs), len(cases)
    if i_n < 2 or j_n < 2:
        raise NotEstimableError(
            f"OR analysis needs >= 2 modalities and >= 2 readers, found {i_n} and {j_n}."
        )
    f = frame.assign(_m=frame[modality].astype(str), _r=frame[reader].astype(str))
    wide = f.pivot(index=case, columns=["_m", "_r"], values=rating).reindex(cases.index)
    pls: list[_Placements] = []
    for mo, rd in itertools.product(mods, rdrs):
        if (mo, rd) not in wide.columns or wide[(mo, rd)].isna().any():
            raise StatisticsError(
                f"Reader {rd!r} lacks ratings in modality {mo!r} for some cases; the OR "
                "analysis needs a fully crossed design."
            )
        pls.append(_placements(y, as_scores(wide[(mo, rd)].to_numpy(), rating)))
    theta = np.array([p.auc for p in pls]).reshape(i_n, j_n)
    cov = _jackknife_cov(pls, y) if cov_method == "jackknife" else _delong_cov(pls, y, None)
    return _or_analysis(
        theta,
        cov,
        modalities=mods,
        readers=rdrs,
        level=level,
        covariance=cov_method,
        n_cases=k_n,
    )

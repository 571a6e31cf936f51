"""Multi-reader multi-case (MRMC) ROC analysis: Obuchowski-Rockette with Hillis df.

Random readers and random cases (RRRC). Each reader-modality AUC is the empirical
(Wilcoxon) AUC; their covariance over cases is the jackknife (default, as RJafroc
and OR-DBM MRMC) or DeLong's.

References
----------
.. [1] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 24:285-308, 1995.
.. [2] Hillis SL. A comparison of denominator degrees of freedom methods for multiple
   observer ROC analysis. Stat Med 26:596-619, 2007.
.. [3] Hillis SL, Berbaum KS, Metz CE. Recent developments in the Dorfman-Berbaum-Metz
   procedure for multireader ROC study analysis. Acad Radiol 15:647-661, 2008.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import Estimate, as_binary, as_scores, check_level, choose
from workbench.stats.roc import _delong_cov, _Placements, _placements

__all__ = ["MrmcResult", "obuchowski_rockette"]

COVARIANCE_METHODS = ("jackknife", "delong")


@dataclass(frozen=True, slots=True)
class MrmcResult:
    """Obuchowski-Rockette RRRC analysis.

    Parameters
    ----------
    modalities, readers : tuple of str
        Levels in sorted order.
    reader_auc : pandas.DataFrame
        AUC per modality (rows) and reader (columns).
    modality_auc : dict of str to Estimate
        Reader-averaged AUC per modality with its RRRC CI (Hillis single-modality df).
    difference : Estimate
        First minus second modality (reader-averaged AUC) with the RRRC CI, for the
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
        ``ms_t``, ``ms_tr``, ``var``, ``cov1``, ``cov2``, ``cov3``, ``var_tr``.
    covariance : str
        ``"jackknife"`` or ``"delong"``.
    n_cases : int
        Number of cases.
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


def _jackknife_cov(pls: list[_Placements], y: NDArray[np.int8]) -> NDArray[np.float64]:
    """Leave-one-case-out covariance of AUCs (closed form from placement values)."""
    k = len(y)
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    jk = np.empty((len(pls), k))
    for r, pl in enumerate(pls):
        jk[r, pos] = (m * pl.auc - pl.v10) / (m - 1)
        jk[r, ~pos] = (n * pl.auc - pl.v01) / (n - 1)
    d = jk - jk.mean(axis=1, keepdims=True)
    return (k - 1) / k * (d @ d.T)


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
    idx = list(itertools.product(range(i_n), range(j_n)))
    buckets: dict[str, list[float]] = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for (a, (ia, ja)), (b, (ib, jb)) in itertools.product(enumerate(idx), repeat=2):
        key = "var" if a == b else "cov1" if ja == jb else "cov2" if ia == ib else "cov3"
        buckets[key].append(float(cov[a, b]))
    var, cov1, cov2, cov3 = (float(np.mean(buckets[k])) for k in ("var", "cov1", "cov2", "cov3"))
    t_mean, r_mean, grand = theta.mean(axis=1), theta.mean(axis=0), float(theta.mean())
    ms_t = j_n * float(np.sum((t_mean - grand) ** 2)) / (i_n - 1)
    resid = theta - t_mean[:, None] - r_mean[None, :] + grand
    ms_tr = float(np.sum(resid**2)) / ((i_n - 1) * (j_n - 1))
    den = ms_tr + j_n * max(cov2 - cov3, 0.0)
    if den <= 0:
        raise NotEstimableError("The OR denominator is 0 (no reader or case variability).")
    f_stat = ms_t / den
    ddf = den**2 / (ms_tr**2 / ((i_n - 1) * (j_n - 1))) if ms_tr > 0 else float("inf")
    p = float(sps.f.sf(f_stat, i_n - 1, ddf))
    tcrit = float(sps.t.ppf(0.5 + level / 2.0, ddf))
    se_diff = float(np.sqrt(2.0 * den / j_n))
    diffs: dict[tuple[str, str], Estimate] = {}
    for a, b in itertools.combinations(range(i_n), 2):
        d = float(t_mean[a] - t_mean[b])
        diffs[(mods[a], mods[b])] = Estimate(
            d,
            d - tcrit * se_diff,
            d + tcrit * se_diff,
            level,
            f"obuchowski-rockette RRRC ({cov_method}, Hillis ddf={ddf:.2f})",
            k_n,
            se_diff,
        )
    per_mod: dict[str, Estimate] = {}
    for a in range(i_n):
        ms_r = float(np.sum((theta[a] - t_mean[a]) ** 2)) / (j_n - 1)
        block = cov[a * j_n : (a + 1) * j_n, a * j_n : (a + 1) * j_n]
        cov2_i = float((block.sum() - np.trace(block)) / (j_n * (j_n - 1)))
        den_i = ms_r + j_n * max(cov2_i, 0.0)
        df_i = den_i**2 / ms_r**2 * (j_n - 1) if ms_r > 0 else float("inf")
        se_i = float(np.sqrt(den_i / j_n))
        tc = float(sps.t.ppf(0.5 + level / 2.0, df_i))
        per_mod[mods[a]] = Estimate(
            float(t_mean[a]),
            float(t_mean[a]) - tc * se_i,
            float(t_mean[a]) + tc * se_i,
            level,
            f"obuchowski-rockette RRRC ({cov_method}, df={df_i:.2f})",
            k_n,
            se_i,
        )
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
            "var": var,
            "cov1": cov1,
            "cov2": cov2,
            "cov3": cov3,
            "var_tr": ms_tr - var + cov1 + cov2 - cov3,
        },
        covariance=cov_method,
        n_cases=k_n,
    )

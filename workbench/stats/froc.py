"""Free-response (FROC) statistics: figures of merit, curves, CIs and MRMC analysis.

A free-response reader (or model) marks suspicious locations and rates each mark.
A mark on a lesion is a lesion localisation (LL); any other mark is a non-lesion
localisation (NL). The figures of merit follow RJafroc's definitions exactly [3]_
(``src/MyFOM.cpp``, ``R/UtilFigureOfMerit.R``): an unmarked lesion, and a case
without NL marks, carry the rating negative infinity, and ties count one half.

Every figure of merit here is a ratio of case-weighted sums, so one vectorised
kernel evaluates it for the data (all weights 1), for every leave-one-case-out
jackknife sample (one weight 0) and for blocks of bootstrap resamples (weights =
how often each case is drawn), without materialising a resample.

Input layout (that of the reference data under ``tests/data/reference/froc/``):

* ``marks``: one row per mark with the case id, the lesion id (empty / NaN for an
  NL mark) and the rating (higher = more confident); for :func:`froc_mrmc` also the
  reader and modality.
* ``truth``: one row per lesion with the case id, the lesion id and optionally the
  lesion weight; a case without lesions has one row with an empty lesion id.
  Weights are relative within a case and normalised to sum to 1 (equal if absent).

References
----------
.. [1] Chakraborty DP, Berbaum KS. Observer studies involving detection and localization:
   modeling, analysis, and validation. Med Phys 31:2313-2330, 2004 (JAFROC, AFROC FOM).
.. [2] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging: Foundations,
   Modeling, and Applications with R-Based Examples. CRC Press, 2017 (ch. 13-14: empirical
   FROC, AFROC, wAFROC and highest-rating ROC figures of merit; ch. 18: FROC analysis).
.. [3] Chakraborty DP, Zhai X. RJafroc: Artificial Intelligence Systems and Observer
   Performance. R package 2.1.3, github.com/dpc10ster/RJafroc.
.. [4] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 24:285-308, 1995.
.. [5] Hillis SL. A comparison of denominator degrees of freedom methods for multiple
   observer ROC analysis. Stat Med 26:596-619, 2007.
.. [6] Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import (
    Estimate,
    as_clusters,
    check_level,
    check_positive_int,
    choose,
)
from workbench.stats.bootstrap import (
    BOOTSTRAP_METHODS,
    case_weight_batches,
    interval_from_replicates,
)
from workbench.stats.mrmc import MrmcResult, _or_analysis, jackknife_covariance

__all__ = [
    "FOMS",
    "FrocCurve",
    "froc_curve",
    "froc_estimate",
    "froc_figure_of_merit",
    "froc_mrmc",
    "sensitivity_at_fppi",
]

FOMS = (
    "wafroc",
    "wafroc1",
    "afroc",
    "afroc1",
    "hrauc",
    "hrse",
    "hrsp",
    "max_llf",
    "max_nlf",
    "max_nlf_all_cases",
)
CI_METHODS = ("bootstrap", "jackknife")
# RJafroc's spelling of each figure of merit (its FOM argument), lower-cased
_ALIASES = {"maxllf": "max_llf", "maxnlf": "max_nlf", "maxnlfallcases": "max_nlf_all_cases"}
# figures of merit defined on one class of cases only: RJafroc jackknifes those cases only
_UNITS = {"max_nlf": "normal", "hrsp": "normal", "max_llf": "diseased", "hrse": "diseased"}
_CHUNK_CELLS = 4_000_000


# --------------------------------------------------------------------------- input
def _keys(col: pd.Series) -> pd.Series:
    """Canonical string keys of an id column; missing (NaN, None, blank) stays NaN."""
    if col.dtype.kind in "iub":
        return col.astype(np.int64).astype(str)
    if col.dtype.kind == "f":
        out = pd.Series(np.nan, index=col.index, dtype=object)
        ok = col.notna().to_numpy()
        v = col.to_numpy()[ok]
        integral = np.isfinite(v) & (v == np.round(v))
        text = np.where(integral, np.round(v).astype(np.int64).astype(str), v.astype(str))
        out[ok] = text
        return out

    def canon(v: object) -> object:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, (bool, np.bool_)):
            return str(int(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return str(int(v)) if float(v).is_integer() else str(float(v))
        text = str(v).strip()
        return text if text else np.nan

    return col.map(canon).astype(object)


def _need_columns(frame: pd.DataFrame, what: str, *cols: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise StatisticsError(
            f"{what} lacks column(s) {missing}; found {list(frame.columns)}. Pass the column "
            "names by keyword (case=, lesion=, rating=, weight=)."
        )


@dataclass(frozen=True, slots=True)
class _Truth:
    """Cases and lesions of the reference standard, in first-appearance order."""

    cases: pd.Index  # canonical case keys, length K
    diseased: NDArray[np.bool_]  # (K,)
    lesions: pd.MultiIndex  # (case key, lesion key), length L
    lesion_case: NDArray[np.intp]  # (L,) case position of each lesion
    lesion_weight: NDArray[np.float64]  # (L,) normalised to sum to 1 per case

    @property
    def n_cases(self) -> int:
        return len(self.cases)


def _parse_truth(truth: pd.DataFrame, case: str, lesion: str, weight: str) -> _Truth:
    _need_columns(truth, "truth", case, lesion)
    if len(truth) == 0:
        raise StatisticsError("truth has no rows; expected one row per lesion.")
    ck = _keys(truth[case])
    if ck.isna().any():
        raise StatisticsError(f"truth has {int(ck.isna().sum())} row(s) without a case id.")
    lk = _keys(truth[lesion])
    cases = pd.Index(pd.unique(ck.to_numpy()))
    has_lesion = lk.notna().to_numpy()
    les = pd.MultiIndex.from_arrays([ck.to_numpy()[has_lesion], lk.to_numpy()[has_lesion]])
    if les.has_duplicates:
        dup = les[les.duplicated()][:3].tolist()
        raise StatisticsError(f"truth lists lesion(s) {dup} (case, lesion) more than once.")
    lesion_case = cases.get_indexer(les.get_level_values(0)).astype(np.intp)
    k = len(cases)
    n_les = np.bincount(lesion_case, minlength=k)
    if weight in truth.columns:
        w = pd.to_numeric(truth[weight], errors="coerce").to_numpy(dtype=float)[has_lesion]
        if np.isnan(w).all():
            w = np.ones(len(les))
        elif np.isnan(w).any() or (w <= 0).any() or not np.isfinite(w).all():
            raise StatisticsError(
                f"Column {weight!r} must hold a positive weight for every lesion (or be empty "
                f"for all); found {int(np.isnan(w).sum())} missing and {int((w <= 0).sum())} "
                "non-positive."
            )
    else:
        w = np.ones(len(les))
    per_case = np.bincount(lesion_case, weights=w, minlength=k)
    return _Truth(
        cases=cases,
        diseased=n_les > 0,
        lesions=les,
        lesion_case=lesion_case,
        lesion_weight=w / per_case[lesion_case],
    )


@dataclass(frozen=True, slots=True)
class _Ratings:
    """The marks of one reader (or model) in one modality, arranged per case and lesion."""

    nl_max: NDArray[np.float64]  # (K,) highest NL rating, -inf without NL marks
    nl_count: NDArray[np.float64]  # (K,) number of NL marks
    ll: NDArray[np.float64]  # (L,) LL rating, -inf for an unmarked lesion
    nl_case: NDArray[np.intp]  # (M,) case of each NL mark
    nl_rating: NDArray[np.float64]  # (M,)


def _parse_marks(
    marks: pd.DataFrame, truth: _Truth, case: str, lesion: str, rating: str
) -> _Ratings:
    _need_columns(marks, "marks", case, lesion, rating)
    r = pd.to_numeric(marks[rating], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(r).all():
        raise StatisticsError(
            f"Column {rating!r} must be finite for every mark; found "
            f"{int((~np.isfinite(r)).sum())} missing or infinite. Leave unmarked lesions out "
            "of marks instead of rating them -inf."
        )
    ck = _keys(marks[case])
    ci = truth.cases.get_indexer(ck.to_numpy())
    if (ci < 0).any():
        bad = pd.unique(ck.to_numpy()[ci < 0])[:5].tolist()
        raise StatisticsError(f"marks name case(s) {bad} that are not in truth.")
    lk = _keys(marks[lesion])
    is_ll = lk.notna().to_numpy()
    k = truth.n_cases
    nl_case, nl_rating = ci[~is_ll].astype(np.intp), r[~is_ll]
    nl_max = np.full(k, -np.inf)
    np.maximum.at(nl_max, nl_case, nl_rating)
    nl_count = np.bincount(nl_case, minlength=k).astype(np.float64)
    ll = np.full(len(truth.lesions), -np.inf)
    if is_ll.any():
        keys = pd.MultiIndex.from_arrays([ck.to_numpy()[is_ll], lk.to_numpy()[is_ll]])
        li = truth.lesions.get_indexer(keys)
        if (li < 0).any():
            bad = keys[li < 0][:3].tolist()
            raise StatisticsError(
                f"marks name lesion(s) {bad} (case, lesion) that are not in truth; a mark "
                "that is not on a lesion needs an empty lesion id."
            )
        if len(np.unique(li)) < len(li):
            dup = keys[pd.Index(li).duplicated()][:3].tolist()
            raise StatisticsError(
                f"Lesion(s) {dup} carry more than one mark; a lesion has at most one "
                "lesion localisation (match marks one-to-one first, see "
                "workbench.stats.detection.match_lesions)."
            )
        ll[li] = r[is_ll]
    return _Ratings(nl_max, nl_count, ll, nl_case, nl_rating)


def _fom_name(fom: object) -> str:
    text = str(getattr(fom, "value", fom)).lower()
    return choose("fom", _ALIASES.get(text, text), FOMS)


# --------------------------------------------------------------------------- kernels
class _Kernel:
    """A figure of merit as a function of case weights ``W`` (replicates x cases)."""

    units: NDArray[np.bool_]  # cases whose omission can change the figure of merit

    def __call__(self, w: NDArray[np.floating]) -> NDArray[np.float64]:
        raise NotImplementedError


class _PairKernel(_Kernel):
    """Weighted Wilcoxon statistic of noise items (one per case) below signal items.

    ``FOM(c) = sum_s c[case_s] w_s sum_n c[case_n] phi(noise_n, signal_s) /
    (sum_n c[case_n] * sum_s c[case_s] w_s)`` with ``phi = 1`` (below), ``0.5`` (tie).
    Noise items are pooled by distinct value and signal items by their (below, tied)
    position among those values, so a batch costs two sparse products over the items
    plus work on the few distinct ratings.
    """

    def __init__(
        self,
        noise: NDArray[np.float64],
        noise_case: NDArray[np.intp],
        signal: NDArray[np.float64],
        signal_case: NDArray[np.intp],
        signal_weight: NDArray[np.float64],
        units: NDArray[np.bool_],
    ) -> None:
        k = len(units)
        values, noise_group = np.unique(noise, return_inverse=True)
        # stored transposed: (values x cases) @ (cases x replicates) runs on contiguous rows
        self.noise_map = sparse.csr_matrix(
            (np.ones(len(noise)), (noise_group.reshape(-1), noise_case)), shape=(len(values), k)
        )
        left = np.searchsorted(values, signal, side="left")
        right = np.searchsorted(values, signal, side="right")
        pos, signal_group = np.unique(np.c_[left, right], axis=0, return_inverse=True)
        self.left, self.right = pos[:, 0], pos[:, 1]
        self.signal_map = sparse.csr_matrix(
            (signal_weight, (signal_group.reshape(-1), signal_case)), shape=(len(pos), k)
        )
        self.units = units

    def __call__(self, w: NDArray[np.floating]) -> NDArray[np.float64]:
        wt = np.asarray(w).T.astype(np.float64, order="C")  # (cases, replicates)
        per_value = self.noise_map @ wt  # (distinct noise values, replicates)
        c = np.zeros((per_value.shape[0] + 1, wt.shape[1]))
        np.cumsum(per_value, axis=0, out=c[1:])
        # twice (noise below + half the ties) = cumulative noise up to left + up to right
        below2 = c[self.left] + c[self.right]
        mass = self.signal_map @ wt  # (signal positions, replicates): case weight x w_s
        num = 0.5 * np.einsum("ub,ub->b", mass, below2)
        den = c[-1] * mass.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(num / den, dtype=np.float64)


class _RatioKernel(_Kernel):
    """``sum c[case] numerator / sum c[case] denominator`` (optionally one minus it)."""

    def __init__(
        self,
        item_case: NDArray[np.intp],
        numerator: NDArray[np.float64],
        denominator: NDArray[np.float64],
        units: NDArray[np.bool_],
        complement: bool = False,
    ) -> None:
        k = len(units)
        self.numerator = np.bincount(item_case, weights=numerator, minlength=k)
        self.denominator = np.bincount(item_case, weights=denominator, minlength=k)
        self.units = units
        self.complement = complement

    def __call__(self, w: NDArray[np.floating]) -> NDArray[np.float64]:
        w = np.asarray(w, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (w @ self.numerator) / (w @ self.denominator)
        return np.asarray(1.0 - out if self.complement else out, dtype=np.float64)


def _kernel(fom: str, t: _Truth, r: _Ratings) -> _Kernel:
    """Build the weighted kernel of ``fom`` (RJafroc ``MyFOM.cpp`` definitions)."""
    k = t.n_cases
    dis = t.diseased
    k1, k2 = int((~dis).sum()), int(dis.sum())
    if fom not in ("wafroc1", "afroc1", "hrse", "max_llf", "max_nlf_all_cases") and k1 == 0:
        raise NotEstimableError(
            f"The {fom} figure of merit needs cases without lesions, found none; use "
            "'wafroc1' or 'afroc1' for a data set without non-diseased cases."
        )
    if fom not in ("hrsp", "max_nlf", "max_nlf_all_cases") and k2 == 0:
        raise NotEstimableError(f"The {fom} figure of merit needs cases with lesions, found none.")
    units = {
        "normal": ~dis,
        "diseased": dis,
    }.get(_UNITS.get(fom, ""), np.ones(k, dtype=bool))
    all_cases = np.arange(k, dtype=np.intp)
    normals = np.flatnonzero(~dis).astype(np.intp)
    diseased = np.flatnonzero(dis).astype(np.intp)
    n_les = len(t.lesion_case)
    if fom in ("wafroc", "afroc", "wafroc1", "afroc1"):
        noise_cases = normals if fom in ("wafroc", "afroc") else all_cases
        weights = t.lesion_weight if fom.startswith("w") else np.ones(n_les)
        return _PairKernel(r.nl_max[noise_cases], noise_cases, r.ll, t.lesion_case, weights, units)
    if fom == "hrauc":
        ll_max = np.full(k, -np.inf)
        np.maximum.at(ll_max, t.lesion_case, r.ll)
        tp = np.maximum(ll_max, r.nl_max)[diseased]
        return _PairKernel(r.nl_max[normals], normals, tp, diseased, np.ones(k2), units)
    if fom == "max_llf":
        marked = np.isfinite(r.ll).astype(float)
        return _RatioKernel(t.lesion_case, marked, np.ones(n_les), units)
    if fom == "max_nlf":
        return _RatioKernel(normals, r.nl_count[normals], np.ones(k1), units)
    if fom == "max_nlf_all_cases":
        return _RatioKernel(all_cases, r.nl_count, np.ones(k), units)
    if fom == "hrse":
        ll_max = np.full(k, -np.inf)
        np.maximum.at(ll_max, t.lesion_case, r.ll)
        hit = np.isfinite(np.maximum(ll_max, r.nl_max)[diseased]).astype(float)
        return _RatioKernel(diseased, hit, np.ones(k2), units)
    # hrsp: 1 - fraction of non-diseased cases with at least one mark
    fp = np.isfinite(r.nl_max[normals]).astype(float)
    return _RatioKernel(normals, fp, np.ones(k1), units, complement=True)


def _point(kernel: _Kernel, k: int) -> float:
    return float(kernel(np.ones((1, k)))[0])


def _jackknife_values(
    kernel: _Kernel, k: int, unit_codes: NDArray[np.intp] | None = None
) -> NDArray[np.float64]:
    """Figure of merit with each jackknife unit left out, for the units it depends on.

    Units are cases, or the clusters in ``unit_codes``; a unit none of whose cases can
    change the figure of merit (e.g. a diseased case for ``max_nlf``) is not a unit, as
    in RJafroc's ``UtilPseudoValues``.
    """
    codes = np.arange(k, dtype=np.intp) if unit_codes is None else unit_codes
    kept = np.unique(codes[kernel.units])
    block = max(1, _CHUNK_CELLS // max(k, 1))
    out = []
    for start in range(0, len(kept), block):
        rows = kept[start : start + block]
        w = (codes[None, :] != rows[:, None]).astype(np.float64)
        out.append(kernel(w))
    return np.concatenate(out) if out else np.empty(0)


# --------------------------------------------------------------------------- public API
def froc_figure_of_merit(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    fom: str = "wafroc",
    case: str = "case_id",
    lesion: str = "lesion_id",
    rating: str = "rating",
    weight: str = "lesion_weight",
) -> float:
    """Empirical free-response figure of merit of one reader (or model).

    Parameters
    ----------
    marks : pandas.DataFrame
        One row per mark: ``case``, ``lesion`` (empty / NaN for a non-lesion mark) and
        ``rating`` (higher = more confident). Lesions without a mark and cases without
        non-lesion marks are "unmarked" (rating negative infinity).
    truth : pandas.DataFrame
        One row per lesion: ``case``, ``lesion`` (empty for a case without lesions) and
        optionally ``weight`` (relative within a case; equal if absent).
    fom : str
        One of:

        * ``"wafroc"`` (default): weighted AFROC AUC [2]_; each lesion's rating against the
          highest NL rating of every non-diseased case, lesions weighted within a case.
        * ``"wafroc1"``: as wafroc with the highest NL rating of *every* case as the
          false-positive rating (for data without non-diseased cases).
        * ``"afroc"``, ``"afroc1"``: unweighted (every lesion counts once) [1]_.
        * ``"hrauc"``: highest-rating inferred ROC AUC; a case's rating is its highest
          mark rating (NL or LL).
        * ``"hrse"``, ``"hrsp"``: highest-rating sensitivity and specificity (any mark).
        * ``"max_llf"``: LL marks / lesions (top of the FROC curve).
        * ``"max_nlf"``: NL marks on non-diseased cases / non-diseased cases;
          ``"max_nlf_all_cases"``: NL marks / all cases.

        RJafroc's spellings (``"wAFROC"``, ``"HrAuc"``, ``"MaxLLF"``...) are accepted.
    case, lesion, rating, weight : str
        Column names.

    Returns
    -------
    float

    Raises
    ------
    StatisticsError
        Unknown ``fom`` (with a did-you-mean hint), missing columns, marks on unknown
        cases or lesions, two marks on one lesion, non-finite ratings.
    NotEstimableError
        The figure of merit needs a class of cases the data lack.

    Examples
    --------
    >>> truth = pd.DataFrame({"case_id": [1, 2, 3], "lesion_id": [None, 1, 1]})
    >>> marks = pd.DataFrame({"case_id": [1, 2], "lesion_id": [None, 1], "rating": [2, 3]})
    >>> froc_figure_of_merit(marks, truth)  # case 3's lesion is unmarked: (1 + 0) / 2
    0.5
    """
    name = _fom_name(fom)
    t = _parse_truth(truth, case, lesion, weight)
    r = _parse_marks(marks, t, case, lesion, rating)
    return _point(_kernel(name, t, r), t.n_cases)


def _clusters_of(
    truth: pd.DataFrame, t: _Truth, case: str, column: str | None
) -> NDArray[np.intp] | None:
    if column is None:
        return None
    _need_columns(truth, "truth", column)
    per_case = truth.assign(_k=_keys(truth[case])).groupby("_k", sort=False)[column]
    if (per_case.nunique(dropna=False) > 1).any():
        raise StatisticsError(f"Cases have more than one value of {column!r} in truth.")
    labels = per_case.first().reindex(t.cases).to_numpy()
    return as_clusters(labels, t.n_cases)


def froc_estimate(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    fom: str = "wafroc",
    ci: str = "bootstrap",
    level: float = 0.95,
    clusters: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    bootstrap_method: str = "percentile",
    case: str = "case_id",
    lesion: str = "lesion_id",
    rating: str = "rating",
    weight: str = "lesion_weight",
) -> Estimate:
    """Free-response figure of merit of one reader (or model) with a confidence interval.

    Parameters
    ----------
    marks, truth : pandas.DataFrame
        As :func:`froc_figure_of_merit`.
    fom : str
        Figure of merit, see :func:`froc_figure_of_merit`.
    ci : {"bootstrap", "jackknife"}
        ``"bootstrap"``: resample cases within the diseased and non-diseased classes or,
        with ``clusters``, whole clusters (patients) [6]_. ``"jackknife"``: leave one case
        (or cluster) out; ``value +- t_{n-1} se`` with the jackknife SE.
    level : float
        Confidence level.
    clusters : str, optional
        Column of ``truth`` with the patient (cluster) of each case.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the bootstrap generator.
    bootstrap_method : {"percentile", "bca"}
        Bootstrap interval type; BCa uses the leave-one-unit-out jackknife.
    case, lesion, rating, weight : str
        Column names.

    Returns
    -------
    Estimate
        ``n`` is the number of cases; ``se`` the bootstrap SD or the jackknife SE.
    """
    name = _fom_name(fom)
    ci = choose("ci", ci, CI_METHODS)
    bootstrap_method = choose("bootstrap_method", bootstrap_method, BOOTSTRAP_METHODS)
    level = check_level(level)
    t = _parse_truth(truth, case, lesion, weight)
    r = _parse_marks(marks, t, case, lesion, rating)
    codes = _clusters_of(truth, t, case, clusters)
    kern = _kernel(name, t, r)
    k = t.n_cases
    theta = _point(kern, k)
    unit = "cases" if codes is None else "clusters"
    if ci == "jackknife":
        jk = _jackknife_values(kern, k, codes)
        n_u = len(jk)
        if n_u < 2 or not np.isfinite(jk).all():
            raise NotEstimableError(
                f"The jackknife CI of {name} is not estimable: {n_u} unit(s), or leaving one "
                "out removes every case of a class."
            )
        se = float(np.sqrt((n_u - 1) / n_u * np.sum((jk - jk.mean()) ** 2)))
        tc = float(sps.t.ppf(0.5 + level / 2.0, n_u - 1))
        return Estimate(
            theta, theta - tc * se, theta + tc * se, level, f"jackknife ({n_u} {unit})", k, se
        )
    n_boot = check_positive_int("n_boot", n_boot, 2)
    strata = None if codes is not None else t.diseased.astype(np.intp)
    reps = np.concatenate([kern(w) for w in case_weight_batches(k, codes, n_boot, seed, strata)])
    ok = np.isfinite(reps)
    dropped = int((~ok).sum())
    reps = reps[ok]
    if len(reps) < max(2, n_boot // 2):
        raise NotEstimableError(
            f"{dropped} of {n_boot} resamples lacked a class of cases the {name} figure of "
            "merit needs; the bootstrap CI is not estimable."
        )
    jk_bca = _jackknife_values(kern, k, codes) if bootstrap_method == "bca" else None
    lo, hi = interval_from_replicates(
        theta, reps, level=level, method=bootstrap_method, jackknife=jk_bca
    )
    n_u = k if codes is None else int(codes.max()) + 1
    how = "stratified by class" if codes is None else f"{n_u} clusters"
    extra = f", {dropped} resamples dropped" if dropped else ""
    return Estimate(
        theta,
        lo,
        hi,
        level,
        f"bootstrap-{bootstrap_method} ({n_boot} replicates, {how}{extra})",
        k,
        float(reps.std(ddof=1)),
    )


def froc_mrmc(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    fom: str = "wafroc",
    reader: str = "reader",
    modality: str = "modality",
    case: str = "case_id",
    lesion: str = "lesion_id",
    rating: str = "rating",
    weight: str = "lesion_weight",
    level: float = 0.95,
) -> MrmcResult:
    """Obuchowski-Rockette analysis of a free-response reader study.

    Parameters
    ----------
    marks : pandas.DataFrame
        As :func:`froc_figure_of_merit`, plus ``reader`` and ``modality`` columns. Every
        reader read every case in every modality (fully crossed); a (modality, reader)
        without a row made no mark.
    truth : pandas.DataFrame
        As :func:`froc_figure_of_merit`; the same cases for every reader and modality.
    fom : str
        Figure of merit, see :func:`froc_figure_of_merit`.
    reader, modality, case, lesion, rating, weight : str
        Column names.
    level : float
        Confidence level.

    Returns
    -------
    MrmcResult
        ``reader_auc`` holds the figure of merit per modality and reader; RRRC with
        Hillis's ddf [5]_, FRRC and RRFC [4]_ from the jackknife covariance of the figures
        of merit (leave one case out; only non-diseased cases for ``max_nlf`` and
        ``hrsp``, only diseased for ``max_llf`` and ``hrse``), as RJafroc's
        ``St(dataset, FOM, method = "OR")``.
    """
    name = _fom_name(fom)
    level = check_level(level)
    _need_columns(marks, "marks", reader, modality)
    t = _parse_truth(truth, case, lesion, weight)
    m_raw, r_raw = _keys(marks[modality]), _keys(marks[reader])
    if m_raw.isna().any() or r_raw.isna().any():
        raise StatisticsError(
            f"Every mark needs a {modality!r} and a {reader!r}; found "
            f"{int(m_raw.isna().sum())} and {int(r_raw.isna().sum())} missing."
        )
    m_keys, r_keys = m_raw.astype(str), r_raw.astype(str)
    mods = tuple(sorted(pd.unique(m_keys.to_numpy())))
    rdrs = tuple(sorted(pd.unique(r_keys.to_numpy())))
    groups = marks.groupby([m_keys.to_numpy(), r_keys.to_numpy()], sort=False).indices
    empty = marks.iloc[:0]
    k = t.n_cases
    theta = np.empty((len(mods), len(rdrs)))
    jks: list[NDArray[np.float64]] = []
    for (a, mo), (b, rd) in itertools.product(enumerate(mods), enumerate(rdrs)):
        idx = groups.get((mo, rd))
        sub = marks.iloc[idx] if idx is not None else empty
        kern = _kernel(name, t, _parse_marks(sub, t, case, lesion, rating))
        theta[a, b] = _point(kern, k)
        jks.append(_jackknife_values(kern, k))
    jk = np.vstack(jks)
    if not np.isfinite(jk).all():
        raise NotEstimableError(
            f"Leaving one case out removes every case of a class the {name} figure of merit "
            "needs; the jackknife covariance is not estimable."
        )
    return _or_analysis(
        theta,
        jackknife_covariance(jk),
        modalities=mods,
        readers=rdrs,
        level=level,
        covariance="jackknife",
        n_cases=jk.shape[1],
    )


# --------------------------------------------------------------------------- curves
@dataclass(frozen=True, slots=True)
class FrocCurve:
    """Empirical FROC curve on a grid of non-lesion marks per image, with a band.

    Parameters
    ----------
    nlf : ndarray
        Grid of non-lesion localisation fractions (NL marks per case), ascending.
    llf : ndarray
        Lesion localisation fraction at each grid point: that of the operating point
        with the highest NLF not above the grid value (0 below the first point).
    lower, upper : ndarray
        Pointwise percentile bootstrap band at each grid point.
    threshold : ndarray
        Rating threshold (marks rated at or above it count) of that operating point;
        ``inf`` where no operating point qualifies.
    points : pandas.DataFrame
        Empirical operating points: ``threshold``, ``nlf``, ``llf``.
    level : float
        Confidence level of the band.
    n_boot : int
        Bootstrap replicates behind the band (0 without a band).
    """

    nlf: NDArray[np.float64]
    llf: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    threshold: NDArray[np.float64]
    points: pd.DataFrame
    level: float
    n_boot: int


def _curve_parts(
    t: _Truth, r: _Ratings
) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.float64], NDArray[np.intp]]:
    """Marks sorted by descending rating: tie-group ends, mark case, LL flag, group rating."""
    marked = np.isfinite(r.ll)
    rating = np.r_[r.nl_rating, r.ll[marked]]
    mcase = np.r_[r.nl_case, t.lesion_case[marked]].astype(np.intp)
    is_ll = np.r_[np.zeros(len(r.nl_rating)), np.ones(int(marked.sum()))]
    order = np.argsort(-rating, kind="stable")
    rating, mcase, is_ll = rating[order], mcase[order], is_ll[order]
    ends = np.flatnonzero(np.r_[rating[1:] != rating[:-1], True]).astype(np.intp)
    return rating[ends], mcase, is_ll, ends


def _curve_batch(
    w: NDArray[np.floating],
    mcase: NDArray[np.intp],
    is_ll: NDArray[np.float64],
    ends: NDArray[np.intp],
    t: _Truth,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """NLF and LLF of every operating point for each row of case weights."""
    w = np.asarray(w, dtype=np.float64)
    wm = w[:, mcase]
    ll_cum = np.cumsum(wm * is_ll, axis=1)[:, ends]
    nl_cum = np.cumsum(wm * (1.0 - is_ll), axis=1)[:, ends]
    n_cases = w.sum(axis=1, keepdims=True)
    n_les = w[:, t.lesion_case].sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return nl_cum / n_cases, ll_cum / n_les


def _at_grid(
    nlf: NDArray[np.float64], llf: NDArray[np.float64], grid: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    idx = np.searchsorted(nlf, grid + 1e-12, side="right") - 1
    vals = np.where(idx >= 0, llf[np.clip(idx, 0, None)], 0.0) if len(nlf) else np.zeros(len(grid))
    return vals, idx


def froc_curve(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    grid: ArrayLike | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: str | None = None,
    case: str = "case_id",
    lesion: str = "lesion_id",
    rating: str = "rating",
    weight: str = "lesion_weight",
) -> FrocCurve:
    """Empirical FROC curve (LLF against NL marks per image) with a pointwise band.

    Parameters
    ----------
    marks, truth : pandas.DataFrame
        As :func:`froc_figure_of_merit`.
    grid : array_like, optional
        NLF values (NL marks per case) at which to report the curve; default 101 points
        from 0 to the largest observed NLF.
    level : float
        Confidence level of the band.
    n_boot : int
        Bootstrap replicates (cases resampled within class, or clusters); 0 for no band.
    seed : int
        Seed of the generator.
    clusters : str, optional
        Column of ``truth`` with the patient (cluster) of each case.
    case, lesion, rating, weight : str
        Column names.

    Returns
    -------
    FrocCurve
        NLF = NL marks rated at or above a threshold / cases, LLF = LL marks rated at or
        above it / lesions [2]_ (unweighted, as RJafroc's FROC plot).
    """
    level = check_level(level)
    t = _parse_truth(truth, case, lesion, weight)
    r = _parse_marks(marks, t, case, lesion, rating)
    if len(t.lesion_case) == 0:
        raise NotEstimableError("An FROC curve needs lesions; truth has none.")
    codes = _clusters_of(truth, t, case, clusters)
    thr, mcase, is_ll, ends = _curve_parts(t, r)
    k = t.n_cases
    nlf_pts, llf_pts = (a[0] for a in _curve_batch(np.ones((1, k)), mcase, is_ll, ends, t))
    g = (
        np.linspace(0.0, float(nlf_pts[-1]) if len(nlf_pts) else 0.0, 101)
        if grid is None
        else np.asarray(grid, dtype=float)
    )
    if g.ndim != 1 or (np.diff(g) < 0).any() or (g < 0).any():
        raise StatisticsError("grid must be an ascending 1-D array of NLF values >= 0.")
    llf, idx = _at_grid(nlf_pts, llf_pts, g)
    threshold = (
        np.where(idx >= 0, thr[np.clip(idx, 0, None)], np.inf)
        if len(thr)
        else np.full(len(g), np.inf)
    )
    lower, upper = llf.copy(), llf.copy()
    if n_boot:
        n_boot = check_positive_int("n_boot", n_boot, 2)
        strata = None if codes is not None else t.diseased.astype(np.intp)
        reps = []
        for w in _curve_weight_batches(k, codes, n_boot, seed, strata, len(mcase)):
            nl_b, ll_b = _curve_batch(w, mcase, is_ll, ends, t)
            for row_n, row_l in zip(nl_b, ll_b, strict=True):
                if np.isfinite(row_l).all() and np.isfinite(row_n).all():
                    reps.append(_at_grid(row_n, row_l, g)[0])
        if len(reps) < 2:
            raise NotEstimableError("Too few usable bootstrap resamples for an FROC band.")
        alpha = (1.0 - level) / 2.0
        lower, upper = np.quantile(np.vstack(reps), [alpha, 1.0 - alpha], axis=0)
    return FrocCurve(
        nlf=g,
        llf=llf,
        lower=lower,
        upper=upper,
        threshold=threshold,
        points=pd.DataFrame({"threshold": thr, "nlf": nlf_pts, "llf": llf_pts}),
        level=level,
        n_boot=int(n_boot),
    )


def _curve_weight_batches(
    k: int,
    codes: NDArray[np.intp] | None,
    n_boot: int,
    seed: int,
    strata: NDArray[np.intp] | None,
    n_marks: int,
) -> Iterator[NDArray[np.float32]]:
    """Bootstrap weights in blocks small enough for the (replicates x marks) arrays."""
    rows = max(1, _CHUNK_CELLS // max(n_marks, k, 1))
    for w in case_weight_batches(k, codes, n_boot, seed, strata):
        for start in range(0, w.shape[0], rows):
            yield w[start : start + rows]


def sensitivity_at_fppi(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    fppi: Sequence[float] | ArrayLike = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: str | None = None,
    case: str = "case_id",
    lesion: str = "lesion_id",
    rating: str = "rating",
    weight: str = "lesion_weight",
) -> pd.DataFrame:
    """Lesion sensitivity at stated false positives (NL marks) per image.

    Parameters
    ----------
    marks, truth : pandas.DataFrame
        As :func:`froc_figure_of_merit`.
    fppi : sequence of float
        NL marks per image at which to report the sensitivity (ascending).
    level, n_boot, seed, clusters, case, lesion, rating, weight
        As :func:`froc_curve`; ``n_boot=0`` gives no CI.

    Returns
    -------
    pandas.DataFrame
        One row per ``fppi``: ``fppi``, ``sensitivity`` (LLF of the operating point with
        the most NL marks per image not above ``fppi``), ``threshold`` (its rating
        threshold), ``ci_low``, ``ci_high`` (pointwise bootstrap percentile interval).
    """
    g = np.asarray(fppi, dtype=float)
    curve = froc_curve(
        marks,
        truth,
        grid=g,
        level=level,
        n_boot=n_boot,
        seed=seed,
        clusters=clusters,
        case=case,
        lesion=lesion,
        rating=rating,
        weight=weight,
    )
    return pd.DataFrame(
        {
            "fppi": curve.nlf,
            "sensitivity": curve.llf,
            "threshold": curve.threshold,
            "ci_low": curve.lower,
            "ci_high": curve.upper,
        }
    )

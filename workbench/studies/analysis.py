"""Analysis of a reader study: Obuchowski-Rockette on the readers' ratings, against the design.

Pure: ratings and truth in, a frozen :class:`StudyAnalysis` out. The primary
analysis treats readers and cases as random (RRRC); the fixed-readers (FRRC) and
fixed-cases (RRFC) analyses are reported as sensitivity analyses, as in OR-DBM
MRMC and RJafroc [1]_ [2]_.

References
----------
.. [1] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 24:285-308, 1995.
.. [2] Hillis SL. A comparison of denominator degrees of freedom methods for multiple
   observer ROC analysis. Stat Med 26:596-619, 2007.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ProtocolError
from workbench.protocols.detection import MATCH_COLUMNS, match_marks, wafroc_operating_points
from workbench.stats import (
    Estimate,
    MrmcResult,
    auc,
    froc_estimate,
    froc_mrmc,
    obuchowski_rockette,
)
from workbench.studies.design import ReaderStudyDesign
from workbench.vocabulary import Verdict

__all__ = [
    "ReaderAuc",
    "StudyAnalysis",
    "analyze_marks",
    "analyze_ratings",
    "empirical_roc",
    "free_response_truth",
    "match_reader_marks",
]


@dataclass(frozen=True, slots=True)
class ReaderAuc:
    """One reader's AUC (DeLong CI), or wAFROC (bootstrap CI) of a detection study, in one arm.

    Parameters
    ----------
    reader, arm : str
    auc : Estimate
    curve : tuple of (tuple of float, tuple of float), optional
        A detection study's empirical wAFROC curve (FPF, wLLF), from (0, 0) through
        the reader's operating points to (1, 1): the area under it is ``auc``'s value.
        ``None`` for a ROC study (its curve follows from the ratings).
    """

    reader: str
    arm: str
    auc: Estimate
    curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True, slots=True)
class StudyAnalysis:
    """The outcome of a reader study.

    Parameters
    ----------
    study : str
        ``id@version`` of the design.
    arms : tuple of str
        ``(first, second)``; the difference is second minus first.
    readers : tuple of str
    n_cases, n_positive : int
    arm_auc : dict of str to Estimate
        Reader-averaged AUC per arm (RRRC CIs).
    difference : Estimate
        Reader-averaged AUC difference (second minus first), RRRC CI.
    p_value : float
        RRRC F test of equal arms.
    rrrc : MrmcResult
        The primary analysis (with ``fixed_readers`` and ``fixed_cases``).
    per_reader : tuple of ReaderAuc
    reading_seconds : dict of str to float
        Median reading time per case in each arm.
    verdict : Verdict
    reason : str
    criterion_text : str
    figure_of_merit : str
        What ``arm_auc``, ``per_reader`` and ``difference`` measure: ``"AUC"`` (case
        ratings, ROC) or ``"wAFROC"`` / ``"wAFROC1"`` (lesion marks, free response).
    n_lesions : int or None
        Reference lesions of a detection study (``None`` for a ROC study).
    matches : tuple of dict
        A detection study's match table (:func:`match_reader_marks`: ``reader``, ``arm``
        and :data:`~workbench.protocols.detection.MATCH_COLUMNS`), from which the
        figures of merit follow; empty for a ROC study. Not part of :meth:`to_dict`.
    """

    study: str
    arms: tuple[str, str]
    readers: tuple[str, ...]
    n_cases: int
    n_positive: int
    arm_auc: dict[str, Estimate]
    difference: Estimate
    p_value: float
    rrrc: MrmcResult
    per_reader: tuple[ReaderAuc, ...]
    reading_seconds: dict[str, float]
    verdict: Verdict
    reason: str
    criterion_text: str
    figure_of_merit: str = "AUC"
    n_lesions: int | None = None
    matches: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values of every number of the analysis (the report's analysis JSON)."""
        rrrc = self.rrrc

        def fixed(analysis: Any) -> dict[str, Any] | None:
            if analysis is None:
                return None
            return {
                "analysis": analysis.analysis,
                "statistic": analysis.statistic,
                "df_num": analysis.df_num,
                "df_den": analysis.df_den,
                "p_value": analysis.p_value,
                "differences": {
                    f"{a} - {b}": _estimate(e) for (a, b), e in analysis.differences.items()
                },
                "modality_auc": {k: _estimate(e) for k, e in analysis.modality_auc.items()},
                "reader_differences": {
                    f"{r}: {a} - {b}": _estimate(e)
                    for (r, a, b), e in analysis.reader_differences.items()
                },
            }

        return _json_safe(
            {
                "schema": "workbench.reader-study-analysis/1",
                "study": self.study,
                "arms": list(self.arms),
                "readers": list(self.readers),
                "n_cases": self.n_cases,
                "n_positive": self.n_positive,
                "figure_of_merit": self.figure_of_merit,
                "n_lesions": self.n_lesions,
                "arm_auc": {k: _estimate(e) for k, e in self.arm_auc.items()},
                "difference": _estimate(self.difference),
                "p_value": self.p_value,
                "per_reader": [
                    {"reader": r.reader, "arm": r.arm, "auc": _estimate(r.auc)}
                    for r in self.per_reader
                ],
                "reading_seconds_median": dict(self.reading_seconds),
                "verdict": self.verdict.value,
                "reason": self.reason,
                "criterion": self.criterion_text,
                "random_readers_random_cases": {
                    "statistic": rrrc.statistic,
                    "df_num": rrrc.df_num,
                    "df_den": rrrc.df_den,
                    "p_value": rrrc.p_value,
                    "covariance": rrrc.covariance,
                    "variance_components": dict(rrrc.variance_components),
                },
                "fixed_readers_random_cases": fixed(rrrc.fixed_readers),
                "random_readers_fixed_cases": fixed(rrrc.fixed_cases),
            }
        )


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined quantity) as ``None``."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _estimate(estimate: Estimate) -> dict[str, Any]:
    return {
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "level": estimate.level,
        "method": estimate.method,
        "n": estimate.n,
    }


def empirical_roc(
    truth: pd.Series | np.ndarray, rating: pd.Series | np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The empirical ROC operating points of one reader: a threshold at every distinct rating.

    Parameters
    ----------
    truth : array-like of 0/1, shape (n,)
    rating : array-like of float, shape (n,)
        Higher means more confident of disease.

    Returns
    -------
    (fpr, tpr) : tuple of tuples of float
        From (0, 0) to (1, 1), thresholds in decreasing order.

    Raises
    ------
    ProtocolError
        Lengths differ, or the cases lack positives or negatives.
    """
    y = np.asarray(truth, dtype=int)
    score = np.asarray(rating, dtype=float)
    if y.shape != score.shape:
        raise ProtocolError(f"truth and rating differ in length: {y.shape} and {score.shape}.")
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        raise ProtocolError(
            f"An ROC curve needs positive and negative cases; found {positives} positive and "
            f"{negatives} negative."
        )
    fpr, tpr = [0.0], [0.0]
    for threshold in np.unique(score)[::-1]:
        called = score >= threshold
        fpr.append(float((called & (y == 0)).sum() / negatives))
        tpr.append(float((called & (y == 1)).sum() / positives))
    return tuple(fpr), tuple(tpr)


def analyze_ratings(
    design: ReaderStudyDesign, ratings: pd.DataFrame, truth: pd.Series
) -> StudyAnalysis:
    """Analyse a completed reader study.

    Parameters
    ----------
    design : ReaderStudyDesign
    ratings : DataFrame
        One row per (reader, arm, case): ``reader``, ``arm``, ``case_id``, ``rating``
        and optionally ``seconds`` (reading time).
    truth : Series
        0/1 reference standard indexed by ``case_id``.

    Returns
    -------
    StudyAnalysis

    Raises
    ------
    ProtocolError
        Ratings missing for a reader, arm or case of a fully crossed design, or a case
        without truth.
    """
    missing_truth = sorted(set(ratings["case_id"].astype(str)) - set(truth.index.astype(str)))
    if missing_truth:
        raise ProtocolError(f"Cases without a reference label: {missing_truth[:10]}.")
    frame = ratings.copy()
    frame["case_id"] = frame["case_id"].astype(str)
    frame["truth"] = frame["case_id"].map({str(k): int(v) for k, v in truth.items()})
    cases = _complete(design, frame, "rate")
    result = obuchowski_rockette(
        frame,
        reader="reader",
        modality="arm",
        case="case_id",
        truth="truth",
        rating="rating",
        level=design.level,
        covariance=design.analysis.covariance,
    )
    per_reader = tuple(
        ReaderAuc(
            reader=str(reader),
            arm=str(arm),
            auc=auc(group["truth"].to_numpy(int), group["rating"].to_numpy(float), ci="delong"),
        )
        for (reader, arm), group in frame.groupby(["reader", "arm"], sort=True)
    )
    return _conclude(
        design,
        result,
        per_reader,
        frame,
        n_cases=cases,
        n_positive=int(frame.drop_duplicates("case_id")["truth"].sum()),
    )


def _complete(design: ReaderStudyDesign, frame: pd.DataFrame, what: str) -> int:
    """The number of cases, once every reader read every case in both arms."""
    first, second = (a.id for a in design.arms)
    counts = frame.groupby(["reader", "arm"])["case_id"].nunique()
    cases = int(frame["case_id"].nunique())
    expected = {(r, a) for r in design.readers for a in (first, second)}
    incomplete = sorted(k for k in expected if counts.get(k, 0) != cases)
    if incomplete:
        listed = ", ".join(f"{r}/{a} ({counts.get((r, a), 0)})" for r, a in incomplete)
        raise ProtocolError(
            f"A fully crossed analysis needs every reader to {what} all {cases} cases in both "
            f"arms; incomplete: {listed}."
        )
    return cases


def _conclude(
    design: ReaderStudyDesign,
    result: MrmcResult,
    per_reader: tuple[ReaderAuc, ...],
    frame: pd.DataFrame,
    *,
    n_cases: int,
    n_positive: int,
    n_lesions: int | None = None,
) -> StudyAnalysis:
    """The difference of the arms against the design's bound, and the study's verdict."""
    first, second = (a.id for a in design.arms)
    difference = result.differences.get((second, first))
    if difference is None:
        reverse = result.differences[(first, second)]
        difference = Estimate(
            value=-reverse.value,
            ci_low=-reverse.ci_high,
            ci_high=-reverse.ci_low,
            level=reverse.level,
            method=reverse.method,
            n=reverse.n,
            se=reverse.se,
        )
    seconds = (
        {
            str(k): float(v)
            for k, v in pd.to_numeric(frame["seconds"], errors="coerce")
            .groupby(frame["arm"])
            .median()
            .items()
            if pd.notna(v)
        }
        if "seconds" in frame
        else {}
    )
    holds = difference.ci_low > design.bound
    verdict = Verdict.PASS if holds else Verdict.FAIL
    reason = (
        "" if holds else f"lower CI bound {difference.ci_low:.4f} is not above {design.bound:g}"
    )
    return StudyAnalysis(
        study=f"{design.id}@{design.version}",
        arms=(first, second),
        readers=tuple(design.readers),
        n_cases=n_cases,
        n_positive=n_positive,
        arm_auc=dict(result.modality_auc),
        difference=difference,
        p_value=float(result.p_value),
        rrrc=result,
        per_reader=per_reader,
        reading_seconds=seconds,
        verdict=verdict,
        reason=reason,
        criterion_text=design.criterion_text,
        figure_of_merit=design.primary_endpoint.label,
        n_lesions=n_lesions,
    )


def match_reader_marks(
    design: ReaderStudyDesign, marks: pd.DataFrame, lesions: pd.DataFrame, cases: Sequence[str]
) -> pd.DataFrame:
    """Every reader's marks matched to the reference lesions by the design's locked rule.

    Parameters
    ----------
    design : ReaderStudyDesign
        A detection study (with a ``detection`` section).
    marks : DataFrame
        One row per mark: ``reader``, ``arm``, ``case_id``, ``mark_id`` (unique within a
        reader's case), ``score`` (the confidence) and the centre ``x, y, z`` (LPS mm),
        optionally a box ``x_min``... ``z_max``.
    lesions : DataFrame
        One row per reference lesion: ``case_id``, ``lesion_id``, geometry (LPS mm),
        ``diameter``, ``lesion_weight``.
    cases : sequence of str
        Every case of the study.

    Returns
    -------
    DataFrame
        :data:`workbench.protocols.detection.MATCH_COLUMNS` plus ``reader`` and ``arm``:
        one row per decision (``LL``, ``NL``, ``below_floor``, ``missed``) of each
        reader in each arm.
    """
    if design.detection is None:
        raise ProtocolError(
            f"Reader study {design.id}@{design.version} has no detection section; its readers "
            "rate cases and do not mark lesions."
        )
    first, second = (a.id for a in design.arms)
    case_ids = [str(c) for c in cases]
    out = []
    for reader in design.readers:
        for arm in (first, second):
            mine = marks[(marks["reader"] == reader) & (marks["arm"] == arm)]
            table = match_marks(
                design.detection.matching,
                lesions,
                mine.drop(columns=["reader", "arm"]),
                cases=case_ids,
            )
            out.append(table.assign(reader=reader, arm=arm))
    return pd.concat(out, ignore_index=True)


def free_response_truth(lesions: pd.DataFrame, cases: Sequence[str]) -> pd.DataFrame:
    """The free-response truth: one row per lesion, one empty row per lesion-free case.

    Returns
    -------
    DataFrame
        ``case_id``, ``lesion_id`` (``None`` for a lesion-free case) and ``lesion_weight``
        (equal within a case when the lesions carry none).
    """
    rows: list[dict[str, Any]] = []
    weights = (
        lesions["lesion_weight"]
        if "lesion_weight" in lesions
        else pd.Series(np.nan, index=lesions.index)
    )
    by_case = {str(c): g for c, g in lesions.assign(_w=weights).groupby("case_id")}
    for case_id in (str(c) for c in cases):
        group = by_case.get(case_id)
        if group is None or group.empty:
            rows.append({"case_id": case_id, "lesion_id": None, "lesion_weight": np.nan})
            continue
        for _, lesion in group.iterrows():
            rows.append(
                {
                    "case_id": case_id,
                    "lesion_id": str(lesion["lesion_id"]),
                    "lesion_weight": float(lesion["_w"]),
                }
            )
    truth = pd.DataFrame(rows, columns=["case_id", "lesion_id", "lesion_weight"])
    if truth["lesion_weight"].notna().sum() == 0:
        truth = truth.drop(columns=["lesion_weight"])
    return truth


def analyze_marks(
    design: ReaderStudyDesign,
    readings: pd.DataFrame,
    marks: pd.DataFrame,
    lesions: pd.DataFrame,
) -> StudyAnalysis:
    """Analyse a completed detection reader study by the wAFROC figure of merit.

    Each reader's marks in each arm are matched to the reference lesions by the
    design's rule (one-to-one), and the weighted AFROC figure of merit [3]_ of
    every reader and arm enters the Obuchowski-Rockette analysis with the
    jackknife covariance (:func:`workbench.stats.froc_mrmc`, as RJafroc's
    ``St(dataset, FOM = "wAFROC", method = "OR")``). Per-reader figures of merit
    carry stratified bootstrap CIs (:func:`workbench.stats.froc_estimate`, seeded
    with the design's seed).

    Parameters
    ----------
    design : ReaderStudyDesign
        A detection study.
    readings : DataFrame
        One row per (reader, arm, case) read, marks or not: ``reader``, ``arm``,
        ``case_id`` and optionally ``seconds`` (reading time).
    marks : DataFrame
        One row per mark, see :func:`match_reader_marks`.
    lesions : DataFrame
        One row per reference lesion, see :func:`match_reader_marks`.

    Returns
    -------
    StudyAnalysis
        ``arm_auc``, ``per_reader`` and ``difference`` hold the wAFROC figure of merit
        (``figure_of_merit`` says so); ``n_positive`` counts the cases with lesions.

    Raises
    ------
    ProtocolError
        A reader did not read every case in both arms, a mark lies on a case outside
        the readings, or the marks cannot be matched (the message says why).
    NotEstimableError
        The figure of merit needs a class of cases the test set lacks (``wafroc``
        without lesion-free cases: use ``wafroc1``).

    References
    ----------
    .. [3] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging. CRC Press,
       2017, ch. 13 (wAFROC) and ch. 18 (OR analysis of FROC data).
    """
    frame = readings.copy()
    frame["case_id"] = frame["case_id"].astype(str)
    n_cases = _complete(design, frame, "read")
    cases = sorted(frame["case_id"].unique())
    marks = marks.copy()
    marks["case_id"] = marks["case_id"].astype(str)
    stray = sorted(set(marks["case_id"]) - set(cases))
    if stray:
        raise ProtocolError(f"Marks on cases outside the readings: {stray[:10]}.")
    lesions = lesions.copy()
    lesions["case_id"] = lesions["case_id"].astype(str)
    lesions = lesions[lesions["case_id"].isin(cases)].reset_index(drop=True)
    matches = match_reader_marks(design, marks, lesions, cases)
    kept = matches[matches["status"].isin(["LL", "NL"])]
    free = pd.DataFrame(
        {
            "reader": kept["reader"].astype(str),
            "arm": kept["arm"].astype(str),
            "case_id": kept["case_id"].astype(str),
            "lesion_id": kept["lesion_id"].where(kept["status"] == "LL", None),
            "rating": kept["score"].astype(float),
        }
    ).reset_index(drop=True)
    truth = free_response_truth(lesions, cases)
    fom = design.primary_endpoint.value
    silent = [r for r in design.readers if r not in set(free["reader"])]
    if silent:
        raise ProtocolError(
            f"Reader(s) {silent} made no mark in either arm (or every mark fell below the "
            "score floor); the free-response analysis has no figure of merit for them."
        )
    result = froc_mrmc(free, truth, fom=fom, reader="reader", modality="arm", level=design.level)
    per_reader = []
    for reader in sorted(design.readers):
        for arm in sorted(a.id for a in design.arms):
            mine = free[(free["reader"] == reader) & (free["arm"] == arm)]
            fpf, wllf, _ = wafroc_operating_points(mine, truth, fom=fom)
            per_reader.append(
                ReaderAuc(
                    reader=reader,
                    arm=arm,
                    auc=froc_estimate(mine, truth, fom=fom, level=design.level, seed=design.seed),
                    curve=(fpf, wllf),
                )
            )
    concluded = _conclude(
        design,
        result,
        tuple(per_reader),
        frame,
        n_cases=n_cases,
        n_positive=int(lesions["case_id"].nunique()),
        n_lesions=len(lesions),
    )
    table = matches[["reader", "arm", *MATCH_COLUMNS]].astype(object)
    rows = table.where(table.notna(), None).to_dict(orient="records")
    return dataclasses.replace(concluded, matches=tuple(rows))

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

from dataclasses import dataclass

import pandas as pd

from workbench.errors import ProtocolError
from workbench.stats import Estimate, MrmcResult, auc, obuchowski_rockette
from workbench.studies.design import ReaderStudyDesign
from workbench.vocabulary import Verdict

__all__ = ["ReaderAuc", "StudyAnalysis", "analyze_ratings"]


@dataclass(frozen=True, slots=True)
class ReaderAuc:
    """One reader's AUC in one arm, with its DeLong CI."""

    reader: str
    arm: str
    auc: Estimate


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
    first, second = (a.id for a in design.arms)
    missing_truth = sorted(set(ratings["case_id"].astype(str)) - set(truth.index.astype(str)))
    if missing_truth:
        raise ProtocolError(f"Cases without a reference label: {missing_truth[:10]}.")
    frame = ratings.copy()
    frame["case_id"] = frame["case_id"].astype(str)
    frame["truth"] = frame["case_id"].map({str(k): int(v) for k, v in truth.items()})
    counts = frame.groupby(["reader", "arm"])["case_id"].nunique()
    cases = frame["case_id"].nunique()
    expected = {(r, a) for r in design.readers for a in (first, second)}
    incomplete = sorted(k for k in expected if counts.get(k, 0) != cases)
    if incomplete:
        listed = ", ".join(f"{r}/{a} ({counts.get((r, a), 0)})" for r, a in incomplete)
        raise ProtocolError(
            f"A fully crossed analysis needs every reader to rate all {cases} cases in both "
            f"arms; incomplete: {listed}."
        )
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
    per_reader = tuple(
        ReaderAuc(
            reader=str(reader),
            arm=str(arm),
            auc=auc(group["truth"].to_numpy(int), group["rating"].to_numpy(float), ci="delong"),
        )
        for (reader, arm), group in frame.groupby(["reader", "arm"], sort=True)
    )
    seconds = (
        {str(k): float(v) for k, v in frame.groupby("arm")["seconds"].median().items()}
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
        n_cases=cases,
        n_positive=int(frame.drop_duplicates("case_id")["truth"].sum()),
        arm_auc=dict(result.modality_auc),
        difference=difference,
        p_value=float(result.p_value),
        rrrc=result,
        per_reader=per_reader,
        reading_seconds=seconds,
        verdict=verdict,
        reason=reason,
        criterion_text=design.criterion_text,
    )

"""FROC summaries built from real statistics on RJafroc's data sets, for the figure tests.

:func:`froc_summary` turns :func:`~workbench.stats.froc_curve`,
:func:`~workbench.stats.sensitivity_at_fppi` and :func:`~workbench.stats.froc_estimate`
on one reader and modality of an RJafroc data set (``tests/data/reference/froc/``, see its
README for the provenance) into the :class:`~workbench.protocols.results.FrocSummary` that
a detection run stores. The wAFROC operating points are counted here, independently of
``workbench.stats``, the way RJafroc's ``FROC2wAFROC`` counts them, so that a figure test
can check the drawn curve's area against the figure of merit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workbench.protocols.results import FrocSummary
from workbench.stats import Estimate, froc_curve, froc_estimate, sensitivity_at_fppi

FROC_DATA = Path(__file__).resolve().parents[1] / "data" / "reference" / "froc"


def load_reader(name: str, modality: int, reader: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The marks of one modality and reader of an RJafroc data set, and its truth."""
    marks = pd.read_csv(FROC_DATA / f"{name}_marks.csv")
    truth = pd.read_csv(FROC_DATA / f"{name}_truth.csv")
    one = marks[(marks["modality"] == modality) & (marks["reader"] == reader)]
    return one.reset_index(drop=True), truth


def wafroc_operating_points(
    marks: pd.DataFrame, truth: pd.DataFrame
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """FPF and wLLF at each distinct rating, strictest first (RJafroc's ``FROC2wAFROC``).

    FPF: non-diseased cases whose highest non-lesion mark is rated at or above the
    threshold, over the non-diseased cases; wLLF: the summed (per-case normalised) weights
    of lesions marked at or above it, over the diseased cases.
    """
    lesions = truth[truth["lesion_id"].notna()].copy()
    weight = lesions["lesion_weight"].fillna(1.0)
    lesions["w"] = weight / weight.groupby(lesions["case_id"]).transform("sum")
    normal = set(truth.loc[truth["lesion_id"].isna(), "case_id"])
    n_normal = len(normal)
    n_diseased = lesions["case_id"].nunique()
    nl = marks[marks["lesion_id"].isna()]
    fp = nl[nl["case_id"].isin(normal)].groupby("case_id")["rating"].max().to_numpy(float)
    ll = marks[marks["lesion_id"].notna()].merge(lesions, on=["case_id", "lesion_id"])
    ll_rating, ll_weight = ll["rating"].to_numpy(float), ll["w"].to_numpy(float)
    thresholds = np.unique(np.r_[fp, ll_rating])[::-1]
    fpf = tuple(float((fp >= t).sum() / n_normal) for t in thresholds)
    wllf = tuple(float(ll_weight[ll_rating >= t].sum() / n_diseased) for t in thresholds)
    return fpf, wllf


def froc_summary(
    marks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    fppi: tuple[float, ...] = (0.25, 0.5, 1.0),
    n_boot: int = 200,
    seed: int = 7,
) -> FrocSummary:
    """The summary a detection run would store for these marks (bootstrap band and CIs)."""
    curve = froc_curve(marks, truth, n_boot=n_boot, seed=seed)
    at = sensitivity_at_fppi(marks, truth, fppi=fppi, n_boot=n_boot, seed=seed)
    fpf, wllf = wafroc_operating_points(marks, truth)
    wafroc = froc_estimate(marks, truth, fom="wafroc", ci="jackknife")
    sensitivity: list[tuple[float, Estimate | None]] = [
        (
            float(row.fppi),
            Estimate(
                value=float(row.sensitivity),
                ci_low=float(row.ci_low),
                ci_high=float(row.ci_high),
                level=curve.level,
                method="percentile bootstrap",
                n=int(truth["case_id"].nunique()),
            ),
        )
        for row in at.itertuples()
    ]
    diseased = truth.loc[truth["lesion_id"].notna(), "case_id"].nunique()
    return FrocSummary(
        nlf=tuple(float(v) for v in curve.nlf),
        llf=tuple(float(v) for v in curve.llf),
        lower=tuple(float(v) for v in curve.lower),
        upper=tuple(float(v) for v in curve.upper),
        level=curve.level,
        fpf=fpf,
        wllf=wllf,
        wafroc=wafroc,
        sensitivity_at_fppi=tuple(sensitivity),
        n_cases=int(truth["case_id"].nunique()),
        n_diseased=int(diseased),
        n_lesions=int(truth["lesion_id"].notna().sum()),
        n_marks=len(marks),
    )

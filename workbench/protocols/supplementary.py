"""Supplementary analyses of a run: descriptive figures' data and secondary statistics.

Pure: a function of the protocol and the run's case frame, next to the
protocol evaluation. Nothing here is judged against a criterion; the report
prints it beside the acceptance table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.protocols.evaluation import stratum_labels
from workbench.protocols.metrics import Task
from workbench.protocols.results import (
    AgreementResult,
    HeterogeneityResult,
    RocSummary,
    SupplementaryAnalyses,
)
from workbench.protocols.schema import Protocol
from workbench.stats import (
    Estimate,
    fleiss_kappa,
    heterogeneity_test,
    pairwise_kappas,
    roc_curve_with_band,
)
from workbench.vocabulary import CaseStatus

__all__ = ["supplementary_analysis"]

#: Bootstrap replicates behind the ROC curve's pointwise band.
ROC_BAND_REPLICATES = 500

_SEGMENTATION_COLUMNS = ("dice", "surface_dice", "hd95", "assd")


def _heterogeneity_args(
    metric: str, threshold: float | None
) -> tuple[str, dict[str, object]] | None:
    """The ``workbench.stats.stratified`` metric name and columns behind an endpoint metric."""
    if metric == "auc":
        return "auc", {"y_true": "y_true", "y_score": "score"}
    if metric in ("sensitivity", "specificity", "ppv", "npv", "accuracy") and threshold is not None:
        return metric, {"y_true": "y_true", "y_score": "score", "threshold": threshold}
    for column in _SEGMENTATION_COLUMNS:
        for summary in ("mean", "median"):
            if metric == f"{column}_{summary}":
                return summary, {"value": column}
    return None


def _roc(done: pd.DataFrame, threshold: float) -> tuple[RocSummary | None, str]:
    try:
        y = done["y_true"].astype(int)
        curve = roc_curve_with_band(
            y, done["score"].astype(float), n_boot=ROC_BAND_REPLICATES, seed=0
        )
    except WorkbenchError as error:
        return None, str(error)
    called = done["score"].astype(float) >= threshold
    operating_point = (
        float((called & (y == 0)).sum() / max(int((y == 0).sum()), 1)),
        float((called & (y == 1)).sum() / max(int((y == 1).sum()), 1)),
    )
    return (
        RocSummary(
            fpr=tuple(float(v) for v in curve.fpr),
            tpr=tuple(float(v) for v in curve.tpr),
            lower=tuple(float(v) for v in curve.lower),
            upper=tuple(float(v) for v in curve.upper),
            band=curve.band,
            level=curve.level,
            auc=curve.auc,
            operating_point=operating_point,
            threshold=threshold,
        ),
        "",
    )


def _agreement(
    protocol: Protocol, done: pd.DataFrame, readers: list[str], threshold: float
) -> tuple[tuple[AgreementResult, ...], Estimate | None, str]:
    rows: list[AgreementResult] = []
    if protocol.task is Task.CLASSIFICATION and "score" in done:
        ratings = done[readers].copy()
        ratings.insert(0, "model", (done["score"].astype(float) >= threshold).astype(int))
        for record in pairwise_kappas(ratings, reference="model", categories=[0, 1]).to_dict(
            "records"
        ):
            rows.append(AgreementResult.from_dict({"kind": "model vs reader", **record}))
    if len(readers) >= 2:
        for record in pairwise_kappas(done[readers], categories=[0, 1]).to_dict("records"):
            rows.append(AgreementResult.from_dict({"kind": "reader vs reader", **record}))
    fleiss: Estimate | None = None
    fleiss_reason = ""
    if len(readers) >= 2:
        counts = np.stack(
            [(done[readers] == 0).sum(axis=1), (done[readers] == 1).sum(axis=1)], axis=1
        )
        try:
            fleiss = fleiss_kappa(counts)
        except WorkbenchError as error:
            fleiss_reason = str(error)
    return tuple(rows), fleiss, fleiss_reason


def _heterogeneity(protocol: Protocol, done: pd.DataFrame) -> tuple[HeterogeneityResult, ...]:
    out: list[HeterogeneityResult] = []
    for endpoint in protocol.endpoints:
        args = _heterogeneity_args(endpoint.metric.value, endpoint.operating_threshold)
        if args is None:
            continue
        name, options = args
        for factor in protocol.strata:
            try:
                test = heterogeneity_test(
                    done,
                    name,
                    by=factor.factor,
                    min_n=factor.min_n,
                    **options,  # type: ignore[arg-type]
                )
            except WorkbenchError as error:
                out.append(
                    HeterogeneityResult(
                        endpoint_id=endpoint.id,
                        factor=factor.factor,
                        statistic=None,
                        df=0,
                        p_value=None,
                        reason=str(error),
                    )
                )
                continue
            out.append(
                HeterogeneityResult(
                    endpoint_id=endpoint.id,
                    factor=factor.factor,
                    statistic=float(test.statistic),
                    df=int(getattr(test, "df", 0) or 0),
                    p_value=float(test.p_value),
                    method=str(getattr(test, "method", "")),
                )
            )
    return tuple(out)


def supplementary_analysis(protocol: Protocol, frame: pd.DataFrame) -> SupplementaryAnalyses:
    """Figures' data and secondary statistics stored with a run's results.

    ROC curve with a pointwise bootstrap band (classification), Cohen's kappa of
    the model against each reader named in the protocol's
    ``reference_standard.reader_label_columns`` and among those readers,
    Fleiss' kappa of the readers, heterogeneity tests across the strata of
    every endpoint, and the per-scanner distribution of the per-case Dice.
    Only completed cases enter these descriptive analyses.

    Parameters
    ----------
    protocol : Protocol
    frame : pandas.DataFrame
        The run's case frame: ``case_id``, ``status`` and the columns the
        protocol's endpoints, strata and readers name.

    Returns
    -------
    SupplementaryAnalyses
        A part that cannot be estimated carries its reason instead.
    """
    if not len(frame):
        return SupplementaryAnalyses()
    done = frame[frame["status"] == CaseStatus.COMPLETED.value].copy()
    if not len(done):
        return SupplementaryAnalyses()
    for factor in protocol.strata:
        done[factor.factor] = stratum_labels(done, factor)
    threshold = next(
        (ep.operating_threshold for ep in protocol.endpoints if ep.operating_threshold is not None),
        0.5,
    )
    roc, roc_reason = None, ""
    if protocol.task is Task.CLASSIFICATION and "y_true" in done:
        roc, roc_reason = _roc(done, threshold)
    readers = [c for c in protocol.reference_standard.reader_label_columns if c in done]
    agreement: tuple[AgreementResult, ...] = ()
    fleiss: Estimate | None = None
    fleiss_reason = ""
    if readers:
        agreement, fleiss, fleiss_reason = _agreement(protocol, done, readers, threshold)
    distribution_metric = ""
    distributions: list[tuple[str, tuple[float, ...]]] = []
    if "dice" in done and "manufacturer" in done:
        distribution_metric = "dice"
        for level, group in done.groupby("manufacturer", sort=True):
            values = pd.to_numeric(group["dice"], errors="coerce").dropna()
            distributions.append((str(level), tuple(float(v) for v in values)))
    return SupplementaryAnalyses(
        roc=roc,
        roc_reason=roc_reason,
        agreement=agreement,
        reader_columns=tuple(readers),
        readers_fleiss_kappa=fleiss,
        readers_fleiss_reason=fleiss_reason,
        heterogeneity=_heterogeneity(protocol, done),
        distribution_metric=distribution_metric,
        distributions=tuple(distributions),
    )

"""Supplementary analyses of a run: descriptive figures' data and secondary statistics.

Pure: a function of the protocol and the run's case frame, next to the
protocol evaluation. Nothing here is judged against a criterion; the report
prints it beside the acceptance table (the calibration and net-benefit
endpoints that are judged go through :mod:`workbench.protocols.evaluation`).

References
----------
.. [1] Van Calster B, McLernon DJ, van Smeden M, Wynants L, Steyerberg EW.
   Calibration: the Achilles heel of predictive analytics. BMC Med 17:230, 2019.
.. [2] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
   prediction models. Med Decis Making 26:565-574, 2006.
.. [3] Steyerberg EW. Clinical Prediction Models, 2nd ed. Springer, 2019, ch. 15.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.protocols.evaluation import stratum_labels, structure_cases
from workbench.protocols.metrics import Task, metric_info
from workbench.protocols.results import (
    AgreementResult,
    CalibrationSummary,
    DecisionCurveSummary,
    HeterogeneityResult,
    OperatingPointSummary,
    ReliabilityBin,
    RocSummary,
    SupplementaryAnalyses,
)
from workbench.protocols.schema import Protocol
from workbench.stats import (
    Estimate,
    calibration,
    fleiss_kappa,
    heterogeneity_test,
    net_benefit,
    pairwise_kappas,
    roc_curve_with_band,
)
from workbench.vocabulary import CaseStatus

__all__ = ["supplementary_analysis"]

#: Bootstrap replicates behind the ROC curve's pointwise band.
ROC_BAND_REPLICATES = 500
#: Bootstrap replicates behind the calibration summaries and their curve's band (the
#: endpoints' default, so that a summary of the same cases equals the endpoint's estimate).
CALIBRATION_REPLICATES = 2000
#: Bootstrap replicates behind the decision curve's intervals.
DECISION_CURVE_REPLICATES = 1000

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


def _patients(protocol: Protocol, done: pd.DataFrame) -> np.ndarray | None:
    """The patient (cluster) of each case under ``cluster_by``, else None."""
    column = protocol.cluster_by
    if column is None or column not in done.columns:
        return None
    return done[column].astype(str).to_numpy()


def _calibration_summary(
    protocol: Protocol,
    y: np.ndarray,
    p: np.ndarray,
    factor: str,
    stratum: str,
    clusters: np.ndarray | None = None,
) -> CalibrationSummary:
    """Calibration of one group of cases (raises WorkbenchError when not estimable)."""
    spec = protocol.calibration
    res = calibration(
        y,
        p,
        bins=spec.bins,
        strategy=spec.strategy.value,
        ci="bootstrap",
        n_boot=CALIBRATION_REPLICATES,
        seed=0,
        clusters=clusters,
    )
    bins = tuple(
        ReliabilityBin(
            bin_low=float(r["bin_low"]),
            bin_high=float(r["bin_high"]),
            n=int(r["n"]),
            events=int(r["events"]),
            mean_predicted=float(r["mean_predicted"]),
            observed=float(r["observed"]),
            observed_ci_low=float(r["observed_ci_low"]),
            observed_ci_high=float(r["observed_ci_high"]),
        )
        for r in res.reliability.to_dict("records")
    )
    curve = res.curve

    def floats(values: np.ndarray | None) -> tuple[float, ...]:
        return () if values is None else tuple(float(v) for v in values)

    return CalibrationSummary(
        factor=factor,
        stratum=stratum,
        n=res.n,
        events=res.events,
        intercept=res.intercept,
        slope=res.slope,
        brier=res.brier,
        ece=res.ece,
        bins=res.bins,
        strategy=res.strategy,
        reliability=bins,
        curve_predicted=floats(None if curve is None else curve.predicted),
        curve_observed=floats(None if curve is None else curve.observed),
        curve_lower=floats(None if curve is None else curve.lower),
        curve_upper=floats(None if curve is None else curve.upper),
        curve_level=0.95 if curve is None else float(curve.level),
        reasons=tuple(sorted(res.not_estimable.items())),
    )


def _wants_calibration(protocol: Protocol) -> bool:
    """Calibration is assessed when the protocol asks: a calibration endpoint or block.

    Protocols written before calibration was part of the workbench keep exactly the
    supplementary analyses they had, so re-deriving their runs gives the stored results.
    """
    return "calibration" in protocol.model_fields_set or any(
        metric_info(ep.metric).needs_probability and not metric_info(ep.metric).needs_decision_curve
        for ep in protocol.endpoints
    )


def _calibration(
    protocol: Protocol, done: pd.DataFrame
) -> tuple[tuple[CalibrationSummary, ...], str]:
    if not _wants_calibration(protocol):
        return (), ""
    if not protocol.score_is_probability:
        return (), (
            "the protocol states that the model score is not a probability "
            "(score_is_probability: false); calibration is not assessed"
        )
    y = done["y_true"].astype(int).to_numpy()
    p = done["score"].astype(float).to_numpy()
    try:
        summaries = [_calibration_summary(protocol, y, p, "", "overall", _patients(protocol, done))]
    except WorkbenchError as error:
        return (), str(error)
    by = protocol.calibration.by
    factors = [f.factor for f in protocol.strata if by is None or f.factor in by]
    for factor in factors:
        for level, group in done.groupby(factor, sort=True):
            try:
                summaries.append(
                    _calibration_summary(
                        protocol,
                        group["y_true"].astype(int).to_numpy(),
                        group["score"].astype(float).to_numpy(),
                        factor,
                        str(level),
                        _patients(protocol, group),
                    )
                )
            except WorkbenchError:
                continue  # a stratum with one class only has no calibration; the table says so
    return tuple(summaries), ""


def _optional(values: pd.Series) -> tuple[float | None, ...]:
    return tuple(None if not math.isfinite(float(v)) else float(v) for v in values)


def _decision_curve(
    protocol: Protocol, done: pd.DataFrame
) -> tuple[DecisionCurveSummary | None, str]:
    spec = protocol.decision_curve
    if spec is None:
        return None, ""
    if not protocol.score_is_probability:
        return None, (
            "the protocol states that the model score is not a probability "
            "(score_is_probability: false); net benefit is not defined for it"
        )
    try:
        curve = net_benefit(
            done["y_true"].astype(int).to_numpy(),
            done["score"].astype(float).to_numpy(),
            list(spec.grid()),
            ci="bootstrap",
            n_boot=DECISION_CURVE_REPLICATES,
            seed=0,
            prevalence=protocol.decision_curve_prevalence,
            clusters=_patients(protocol, done),
        )
    except WorkbenchError as error:
        return None, str(error)
    return (
        DecisionCurveSummary(
            thresholds=tuple(float(t) for t in curve["threshold"]),
            net_benefit=_optional(curve["net_benefit"]),
            net_benefit_low=_optional(curve["net_benefit_ci_low"]),
            net_benefit_high=_optional(curve["net_benefit_ci_high"]),
            treat_all=_optional(curve["treat_all"]),
            treat_all_low=_optional(curve["treat_all_ci_low"]),
            treat_all_high=_optional(curve["treat_all_ci_high"]),
            interventions_avoided=_optional(curve["interventions_avoided"]),
            interventions_avoided_low=_optional(curve["interventions_avoided_ci_low"]),
            interventions_avoided_high=_optional(curve["interventions_avoided_ci_high"]),
            prevalence=float(curve["prevalence"].iloc[0]),
            level=float(curve["level"].iloc[0]),
            method=str(curve["method"].iloc[0]),
            n=int(curve["n"].iloc[0]),
            criterion_at=spec.criterion_at,
        ),
        "",
    )


def _operating_point(protocol: Protocol) -> OperatingPointSummary | None:
    op = protocol.operating_point
    if op is None:
        return None
    threshold = op.threshold if op.threshold is not None else protocol.resolved_threshold
    if threshold is None:
        return None
    text = op.describe()
    if op.is_rule:
        text = f"{text}, resolved to score >= {threshold:g}"
    return OperatingPointSummary(
        threshold=float(threshold),
        description=text,
        deployment_prevalence=protocol.deployment_prevalence,
    )


def _heterogeneity(protocol: Protocol, done: pd.DataFrame) -> tuple[HeterogeneityResult, ...]:
    out: list[HeterogeneityResult] = []
    for endpoint in protocol.endpoints:
        args = _heterogeneity_args(endpoint.metric.value, protocol.threshold_of(endpoint))
        if args is None:
            continue
        name, options = args
        data = done
        structure = protocol.structure_of(endpoint.structure)
        if structure is not None and "value" in options:
            data = structure_cases(done, structure)
            data = data[data["status"] == CaseStatus.COMPLETED.value]
        for factor in protocol.strata:
            try:
                test = heterogeneity_test(
                    data,
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
    every endpoint, the per-scanner distribution of the per-case Dice, and for
    classification with probability scores, when the protocol asks for them, the
    calibration (intercept, slope, Brier, ECE, reliability table, smoothed curve;
    overall and per stratum of the protocol's ``calibration.by`` factors [1]_ [3]_;
    asked for by a ``calibration`` block or a calibration endpoint) and the decision
    curve over the protocol's ``decision_curve`` range [2]_, with the locked
    operating point.
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
        (t for ep in protocol.endpoints if (t := protocol.threshold_of(ep)) is not None),
        0.5,
    )
    roc, roc_reason = None, ""
    cal: tuple[CalibrationSummary, ...] = ()
    cal_reason = ""
    curve: DecisionCurveSummary | None = None
    curve_reason = ""
    if protocol.task is Task.CLASSIFICATION and "y_true" in done:
        roc, roc_reason = _roc(done, threshold)
        cal, cal_reason = _calibration(protocol, done)
        curve, curve_reason = _decision_curve(protocol, done)
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
        calibration=cal,
        calibration_reason=cal_reason,
        decision_curve=curve,
        decision_curve_reason=curve_reason,
        operating_point=_operating_point(protocol),
    )

"""Evaluate a protocol's endpoints and acceptance criteria on per-case results.

Pure: takes a :class:`~workbench.protocols.schema.Protocol` and a
``pandas.DataFrame`` with one row per case, returns frozen dataclasses. Every
number comes from :mod:`workbench.stats`; this module only selects cases,
applies the protocol's handling of failed cases, forms strata, adjusts for
multiplicity and compares estimates with criteria.

Handling of cases
-----------------
``status == "excluded"``
    Dropped from every analysis and listed in ``excluded_case_ids``.
``status == "failed"`` with ``failed_cases: count_as_error`` (default)
    Kept with the worst possible result: segmentation: Dice and surface Dice
    0, HD95 and ASSD ``failed_case_distance_mm``; classification: a score below
    every observed score and threshold for a positive case and above them for
    a negative case, so its decision is wrong and it ranks worst for the AUC.
``status == "failed"`` with ``failed_cases: exclude``
    Dropped from the analysis; listed in ``failed_case_ids``.
``status == "completed"`` with a missing per-case value
    A completed segmentation whose distance is undefined (e.g. an empty
    predicted mask) gets the same worst value; a completed classification case
    without a score is handled as a failed case. Each is named in ``notes``.

Several structures
------------------
A protocol with ``reference_standard.segmentation.structures`` evaluates each
endpoint on its own structure: the per-case values come from the frame's
``<structure>/<metric>`` columns (:func:`structure_cases`), and a case whose
reference lacks the structure (``<structure>/excluded``) is left out of that
structure's endpoints and strata only. Failed and excluded cases are those of
the whole case.

Multi-class labels
------------------
With ``reference_standard.classes`` the labels column holds a category. Binary
endpoints compare one-vs-rest: the truth is 1 for ``positive_classes`` (the run
stores the model's probability of those classes as the score); the
``kappa_multiclass`` endpoint is Cohen's kappa of the model's arg-max class
(``predicted_class``) against the reference class, with the asymptotic CI of
:func:`workbench.stats.cohen_kappa`. A failed case counted as an error gets the
category :data:`NO_OUTPUT_CLASS`, which agrees with no reference class.

Classification endpoints a clinician acts on
--------------------------------------------
Threshold metrics are evaluated at the protocol's locked operating point
(:meth:`~workbench.protocols.schema.Protocol.threshold_of`). Calibration
(intercept, slope, Brier, ECE; Van Calster et al. 2019 [1]_, Steyerberg [2]_) and
net benefit (Vickers & Elkin 2006 [3]_) need probabilities: under
``score_is_probability: false`` they are NOT EVALUABLE with that reason, and a
failed case counted as an error gets the worst probability (0 for a positive
case, 1 for a negative one).

References
----------
.. [1] Van Calster B, McLernon DJ, van Smeden M, Wynants L, Steyerberg EW.
   Calibration: the Achilles heel of predictive analytics. BMC Med 17:230, 2019.
.. [2] Steyerberg EW. Clinical Prediction Models, 2nd ed. Springer, 2019, ch. 15.
.. [3] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
   prediction models. Med Decis Making 26:565-574, 2006.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench import stats as wstats
from workbench.errors import NotEstimableError, ProtocolError, StatisticsError
from workbench.protocols.metrics import Metric, Task, metric_info
from workbench.protocols.results import (
    EndpointResult,
    ProtocolEvaluation,
    StratumResult,
    _verdict_reason,
)
from workbench.protocols.schema import (
    Criterion,
    Endpoint,
    FailedCasePolicy,
    Multiplicity,
    MultiplicityFamily,
    NotEvaluablePolicy,
    Protocol,
    StratumFactor,
    SubgroupRule,
    structure_column,
)
from workbench.stats._core import as_clusters
from workbench.stats.bootstrap import case_weight_batches, interval_from_replicates
from workbench.vocabulary import CaseStatus, EstimateStatus, Verdict

__all__ = [
    "NO_OUTPUT_CLASS",
    "STRUCTURE_VALUES",
    "evaluate_endpoints",
    "stratum_labels",
    "structure_cases",
]


# -- preparing the analysis frame ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    frame: pd.DataFrame  # analysed cases; classification: y, s; segmentation: metric columns
    failed: tuple[str, ...]
    excluded: tuple[str, ...]
    notes: tuple[str, ...]


def _require_columns(cases: pd.DataFrame, columns: Iterable[str], why: str) -> None:
    missing = [c for c in columns if c not in cases.columns]
    if missing:
        raise ProtocolError(
            f"The cases frame lacks column(s) {missing} needed for {why}; "
            f"found columns {list(cases.columns)}."
        )


def _labels_column(protocol: Protocol, cases: pd.DataFrame) -> str:
    if "y_true" in cases.columns:
        return "y_true"
    col = protocol.reference_standard.labels_column or "y_true"
    _require_columns(cases, [col], "the reference standard (y_true or the labels column)")
    return col


#: Per-case segmentation values a structure carries (``<structure>/<column>`` in the frame).
STRUCTURE_VALUES = ("dice", "iou", "hd95", "hausdorff", "assd", "surface_dice")

#: The predicted category of a failed case counted as an error: agrees with no reference class.
NO_OUTPUT_CLASS = "(no model output)"


def structure_cases(cases: pd.DataFrame, structure: str) -> pd.DataFrame:
    """The cases frame as one structure's endpoints see it.

    Each per-case value of :data:`STRUCTURE_VALUES` is read from the structure's own
    column (``<structure>/dice``...), and a case whose reference lacks the structure
    (``<structure>/excluded`` holds the reason) is excluded from this structure's
    endpoints, with that reason in ``reason``.

    Parameters
    ----------
    cases : DataFrame
        The run's cases frame.
    structure : str
        A structure name of the protocol.

    Returns
    -------
    DataFrame
        A copy with ``status``, ``reason`` and the per-case value columns replaced.
    """
    frame = cases.copy()
    for column in STRUCTURE_VALUES:
        source = structure_column(structure, column)
        frame[column] = frame[source] if source in frame.columns else np.nan
    excluded_col = structure_column(structure, "excluded")
    if excluded_col in frame.columns:
        why = frame[excluded_col]
        missing = why.notna() & (why.astype(str) != "")
        missing &= frame["status"].astype(str).str.lower() != CaseStatus.EXCLUDED.value
        frame.loc[missing, "status"] = CaseStatus.EXCLUDED.value
        frame["reason"] = frame.get("reason", pd.Series(index=frame.index, dtype=object))
        frame.loc[missing, "reason"] = why[missing]
    return frame


def _class_frame(protocol: Protocol, frame: pd.DataFrame, failed_mask: pd.Series) -> None:
    """Add ``_ref_class`` and ``_pred_class`` (multi-class labels) to ``frame`` in place."""
    ref = protocol.reference_standard
    assert ref.classes is not None and ref.labels_column is not None
    _require_columns(frame, [ref.labels_column], "the reference classes (labels column)")
    classes = [str(c) for c in ref.classes]
    values = frame[ref.labels_column].map(lambda v: None if pd.isna(v) else str(v))
    odd = frame.loc[~values.isin(classes), "case_id"].tolist()
    if odd:
        found = sorted({str(v) for v in values[~values.isin(classes)]})
        raise ProtocolError(
            f"Reference labels in {ref.labels_column!r} must be one of {classes} for every "
            f"analysed case; found {found} for case(s) {odd[:10]}."
        )
    frame["_ref_class"] = values.to_numpy()
    if any(ep.metric is Metric.KAPPA_MULTICLASS for ep in protocol.endpoints):
        _require_columns(frame, ["predicted_class"], "the model's predicted class (kappa)")
        predicted = frame["predicted_class"].map(lambda v: None if pd.isna(v) else str(v))
        predicted = predicted.where(~failed_mask.to_numpy() & predicted.notna(), NO_OUTPUT_CLASS)
        frame["_pred_class"] = predicted.to_numpy()


def _cluster_labels(column: str, frame: pd.DataFrame) -> np.ndarray:
    """The patient (cluster) of every analysed case, read from ``cluster_by``'s column."""
    _require_columns(frame, [column], "cluster_by (the patient of each case)")
    values = frame[column]
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any():
        raise ProtocolError(
            f"cluster_by {column!r}: case(s) {frame.loc[blank, 'case_id'].tolist()[:10]} have "
            "no value; every analysed case needs its patient."
        )
    return values.astype(str).to_numpy()


def case_clusters(frame: pd.DataFrame) -> np.ndarray | None:
    """The cluster (patient) labels of an analysis frame, or None without ``cluster_by``.

    Parameters
    ----------
    frame : DataFrame
        A frame prepared for analysis (a run's analysed cases or one stratum of them).

    Returns
    -------
    ndarray of str or None
    """
    return frame["_cluster"].to_numpy() if "_cluster" in frame.columns else None


def _prepare(protocol: Protocol, cases: pd.DataFrame, structure: str | None = None) -> _Prepared:
    _require_columns(cases, ["case_id", "status"], "every protocol")
    frame = cases.copy()
    frame["case_id"] = frame["case_id"].astype(str)
    dup = frame["case_id"][frame["case_id"].duplicated()].unique().tolist()
    if dup:
        raise ProtocolError(
            f"The cases frame repeats case_id(s) {dup[:10]}; expected one row per case."
        )
    status = frame["status"].astype(str).str.lower()
    bad = sorted(set(status) - {s.value for s in CaseStatus})
    if bad:
        raise ProtocolError(
            f"Unknown case status value(s) {bad}; expected completed, failed or excluded."
        )
    frame["status"] = status
    excluded = tuple(frame.loc[status == "excluded", "case_id"])
    frame = frame[status != "excluded"].copy()
    if protocol.cluster_by is not None:
        frame["_cluster"] = _cluster_labels(protocol.cluster_by, frame)
    notes: list[str] = []
    exclude_failed = protocol.failed_cases is FailedCasePolicy.EXCLUDE

    if protocol.task is Task.CLASSIFICATION:
        ref = protocol.reference_standard
        _require_columns(frame, ["score"], "classification endpoints")
        if ref.is_multiclass and ref.positive_classes is None:
            col = "y_true"  # categories only (kappa): no binary truth
            y_raw = pd.Series(0, index=frame.index)
        elif ref.is_multiclass and "y_true" not in frame.columns:
            assert ref.labels_column is not None
            col = ref.labels_column
            _require_columns(frame, [col], "the reference standard (the labels column)")
            y_raw = frame[col].map(ref.binary_truth).astype(float)
        else:
            col = _labels_column(protocol, frame)
            y_raw = pd.to_numeric(frame[col], errors="coerce")
        if y_raw.isna().any() or not y_raw.isin([0, 1]).all():
            odd = frame.loc[y_raw.isna() | ~y_raw.isin([0, 1]), "case_id"].tolist()
            raise ProtocolError(
                f"Reference labels in {col!r} must be 0 or 1 for every analysed case; "
                f"missing or other values for case(s) {odd[:10]}."
            )
        score = pd.to_numeric(frame["score"], errors="coerce").astype(float)
        no_score = (frame["status"] == "completed") & ~np.isfinite(score)
        for cid in frame.loc[no_score, "case_id"]:
            notes.append(f"case {cid}: completed without a finite score; handled as failed")
        failed_mask = (frame["status"] == "failed") | no_score
        failed = tuple(frame.loc[failed_mask, "case_id"])
        if ref.is_multiclass:
            _class_frame(protocol, frame, failed_mask)
        if exclude_failed:
            frame = frame[~failed_mask].copy()
            y = y_raw[~failed_mask].astype(int)
            s = score[~failed_mask]
        else:
            ok = score[~failed_mask]
            thresholds = [protocol.threshold_of(ep) for ep in protocol.endpoints]
            pool = [*ok.tolist(), *[t for t in thresholds if t is not None]] or [0.0]
            low, high = min(pool) - 1.0, max(pool) + 1.0
            y = y_raw.astype(int)
            s = score.where(~failed_mask, np.where(y == 1, low, high))
        frame["_y"] = y.to_numpy()
        frame["_s"] = s.to_numpy(dtype=float)
        # probability metrics: a failed case counted as an error gets the worst probability
        if exclude_failed:
            frame["_p"] = frame["_s"]
        else:
            worst_p = np.where(frame["_y"].to_numpy() == 1, 0.0, 1.0)
            frame["_p"] = np.where(failed_mask.to_numpy(), worst_p, frame["_s"].to_numpy())
        return _Prepared(frame, failed, excluded, tuple(notes))

    failed_mask = frame["status"] == "failed"
    failed = tuple(frame.loc[failed_mask, "case_id"])
    if exclude_failed:
        frame = frame[~failed_mask].copy()
        failed_mask = frame["status"] == "failed"
    columns = sorted(
        {
            c
            for ep in protocol.endpoints
            if (c := metric_info(ep.metric).column) is not None
            and protocol.structure_of(ep.structure) == structure
        }
    )
    _require_columns(frame, columns, "segmentation endpoints")
    where = f"{structure}: " if structure is not None else ""
    for col in columns:
        distance = math.isinf(metric_info(_metric_for_column(col)).high)
        worst = protocol.failed_case_distance_mm if distance else 0.0
        values = pd.to_numeric(frame[col], errors="coerce").astype(float)
        missing = (frame["status"] == "completed") & ~np.isfinite(values)
        for cid in frame.loc[missing, "case_id"]:
            notes.append(
                f"{where}case {cid}: {col} undefined for a completed case; counted as {worst:g}"
            )
        frame[col] = values.where(~(failed_mask | missing), worst)
    return _Prepared(frame, failed, excluded, tuple(notes))


def _overall(
    protocol: Protocol, cases: pd.DataFrame, by_structure: dict[str | None, _Prepared]
) -> _Prepared:
    """The run-level view of a multi-structure evaluation.

    Failed and excluded cases are those of the whole case (a structure whose reference
    is missing excludes the case from that structure's endpoints only); the analysed
    cases are those analysed for at least one structure; the notes are every structure's.
    """
    status = cases["status"].astype(str).str.lower()
    ids = cases["case_id"].astype(str)
    excluded = tuple(ids[status == CaseStatus.EXCLUDED.value])
    failed = tuple(ids[status == CaseStatus.FAILED.value])
    analysed = sorted({c for p in by_structure.values() for c in p.frame["case_id"]})
    frame = cases[ids.isin(analysed)].copy()
    notes = tuple(n for p in by_structure.values() for n in p.notes)
    return _Prepared(frame, failed, excluded, notes)


def _metric_for_column(column: str) -> Metric:
    for m in Metric:
        if metric_info(m).column == column:
            return m
    raise KeyError(column)


# -- computing one metric --------------------------------------------------------------------


#: An estimator of one endpoint on one analysis frame at a CI level: (estimate, reason).
Estimator = Callable[[Endpoint, pd.DataFrame, float], tuple[wstats.Estimate | None, str]]


@dataclass(slots=True)
class _Context:
    """What the estimators need from the protocol, and the calibration fits already made.

    ``estimator`` replaces the per-case estimators (detection endpoints are estimated
    from the matched marks of the frame's cases or lesions, see
    :mod:`workbench.protocols.detection`).
    """

    protocol: Protocol
    calibrations: dict[tuple[object, ...], wstats.CalibrationResult] = field(default_factory=dict)
    estimator: Estimator | None = None


NOT_PROBABILITY_REASON = (
    "the protocol states that the model score is not a probability "
    "(score_is_probability: false); {what} is not defined for it"
)

_CALIBRATION_FIELDS = {
    Metric.CALIBRATION_INTERCEPT: "intercept",
    Metric.CALIBRATION_SLOPE: "slope",
    Metric.BRIER: "brier",
    Metric.ECE: "ece",
}


def _f1(
    y: np.ndarray,
    called: np.ndarray,
    endpoint: Endpoint,
    level: float,
    clusters: np.ndarray | None = None,
) -> wstats.Estimate:
    """F1 = 2 TP / (2 TP + FP + FN) with a percentile bootstrap over cases (or patients)."""
    tp_i = (called & (y == 1)).astype(np.float64)
    err_i = (called != (y == 1)).astype(np.float64)  # FP + FN per case
    denom = 2 * tp_i.sum() + err_i.sum()
    if denom == 0:
        raise NotEstimableError("F1 is undefined: no positive cases and no positive calls")
    theta = float(2 * tp_i.sum() / denom)
    codes = as_clusters(clusters, len(y))
    reps = []
    for w in case_weight_batches(len(y), codes, endpoint.ci.n_boot, endpoint.ci.seed):
        w64 = w.astype(np.float64)
        tp_b, err_b = w64 @ tp_i, w64 @ err_i
        d = 2 * tp_b + err_b
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(np.where(d > 0, 2 * tp_b / d, np.nan))
    rep = np.concatenate(reps)
    good = rep[np.isfinite(rep)]
    if len(good) < max(2, endpoint.ci.n_boot // 2):
        raise NotEstimableError(
            "The bootstrap interval of F1 is not estimable: more than half of the resamples "
            "hold neither a positive case nor a positive call."
        )
    lo, hi = interval_from_replicates(theta, good, level=level, method="percentile")
    units = f"{len(y)} cases" if codes is None else f"{int(codes.max()) + 1} clusters"
    method = f"bootstrap-percentile ({endpoint.ci.n_boot} replicates, {units})"
    return wstats.Estimate(theta, lo, hi, level, method, len(y), float(good.std(ddof=1)))


def _calibration_fit(
    ctx: _Context, endpoint: Endpoint, frame: pd.DataFrame, level: float
) -> wstats.CalibrationResult:
    spec = ctx.protocol.calibration
    key = (
        tuple(frame["case_id"]),
        level,
        endpoint.ci.n_boot,
        endpoint.ci.seed,
        spec.bins,
        spec.strategy.value,
    )
    if key not in ctx.calibrations:
        ctx.calibrations[key] = wstats.calibration(
            frame["_y"].to_numpy(dtype=int),
            frame["_p"].to_numpy(dtype=float),
            bins=spec.bins,
            strategy=spec.strategy.value,
            ci="bootstrap",
            level=level,
            n_boot=endpoint.ci.n_boot,
            seed=endpoint.ci.seed,
            clusters=case_clusters(frame),
        )
    return ctx.calibrations[key]


def _utility_estimate(
    ctx: _Context, endpoint: Endpoint, frame: pd.DataFrame, level: float
) -> tuple[wstats.Estimate | None, str]:
    """Estimate a calibration, net-benefit, F1 or predictive-value-at-prevalence endpoint."""
    protocol = ctx.protocol
    metric = endpoint.metric
    info = metric_info(metric)
    y = frame["_y"].to_numpy(dtype=int)
    if info.needs_probability and not protocol.score_is_probability:
        what = "net benefit" if metric is Metric.NET_BENEFIT_GAIN else "calibration"
        return None, NOT_PROBABILITY_REASON.format(what=what)
    if metric in _CALIBRATION_FIELDS:
        fit = _calibration_fit(ctx, endpoint, frame, level)
        name = _CALIBRATION_FIELDS[metric]
        est = getattr(fit, name)
        if est is None:
            return None, fit.not_estimable.get(name, "not estimable")
        return est, ""
    if metric is Metric.NET_BENEFIT_GAIN:
        assert protocol.decision_curve is not None
        assert protocol.decision_curve.criterion_at is not None
        cmp = wstats.net_benefit_comparison(
            y,
            frame["_p"].to_numpy(dtype=float),
            protocol.decision_curve.criterion_at,
            level=level,
            n_boot=endpoint.ci.n_boot,
            seed=endpoint.ci.seed,
            prevalence=protocol.decision_curve_prevalence,
            clusters=case_clusters(frame),
        )
        # the binding comparison: its lower limit > 0 iff the model beats both defaults
        if cmp.over_treat_all.ci_low <= cmp.over_treat_none.ci_low:
            est, against = cmp.over_treat_all, "treat-all"
        else:
            est, against = cmp.over_treat_none, "treat-none"
        return (
            wstats.Estimate(
                est.value,
                est.ci_low,
                est.ci_high,
                est.level,
                f"{est.method}; net benefit minus that of {against}",
                est.n,
                est.se,
            ),
            "",
        )
    threshold = protocol.threshold_of(endpoint)
    assert threshold is not None
    s = frame["_s"].to_numpy(dtype=float)
    clusters = case_clusters(frame)
    if metric is Metric.F1:
        return _f1(y, s >= threshold, endpoint, level, clusters), ""
    # PPV / NPV at the deployment prevalence
    assert protocol.deployment_prevalence is not None
    bm = wstats.binary_metrics(
        y, s, threshold=threshold, method="wilson", level=level, clusters=clusters
    )
    if bm.sensitivity is None or bm.specificity is None:
        missing = "sensitivity" if bm.sensitivity is None else "specificity"
        return None, bm.not_estimable.get(missing, f"{missing} not estimable")
    pv = wstats.predictive_values(
        bm.sensitivity,
        bm.specificity,
        protocol.deployment_prevalence,
        level=level,
        method=endpoint.ci_method,
        rate_variance="binomial" if clusters is None else "standard-error",
    )
    return (pv.ppv if metric is Metric.PPV_AT_PREVALENCE else pv.npv), ""


_UTILITY_METRICS = frozenset(
    {
        Metric.F1,
        Metric.PPV_AT_PREVALENCE,
        Metric.NPV_AT_PREVALENCE,
        Metric.NET_BENEFIT_GAIN,
        *_CALIBRATION_FIELDS,
    }
)


def _unclustered(est: wstats.Estimate, frame: pd.DataFrame) -> wstats.Estimate:
    """Say so in the method when an interval treats the cases of one patient as independent."""
    if case_clusters(frame) is None:
        return est
    note = "; cases treated as independent (no clustered variance for kappa)"
    return dataclasses.replace(est, method=est.method + note)


def _estimate(
    endpoint: Endpoint, frame: pd.DataFrame, level: float, ctx: _Context
) -> tuple[wstats.Estimate | None, str]:
    """Estimate ``endpoint`` on ``frame`` at ``level``; (None, reason) when not estimable."""
    if ctx.estimator is not None:
        return ctx.estimator(endpoint, frame, level)
    info = metric_info(endpoint.metric)
    try:
        if info.task is Task.SEGMENTATION:
            assert info.column is not None and info.summary is not None
            return (
                wstats.bootstrap_ci(
                    frame[info.column].to_numpy(dtype=float),
                    statistic=info.summary,
                    level=level,
                    n_boot=endpoint.ci.n_boot,
                    seed=endpoint.ci.seed,
                    clusters=case_clusters(frame),
                ),
                "",
            )
        y = frame["_y"].to_numpy(dtype=int)
        s = frame["_s"].to_numpy(dtype=float)
        if len(y) == 0:
            return None, "no cases"
        if endpoint.metric in _UTILITY_METRICS:
            return _utility_estimate(ctx, endpoint, frame, level)
        if endpoint.metric is Metric.KAPPA_MULTICLASS:
            classes = list(ctx.protocol.reference_standard.classes or [])
            predicted = frame["_pred_class"].tolist()
            extra = sorted({str(p) for p in predicted} - set(classes))
            kappa = wstats.cohen_kappa(
                frame["_ref_class"].tolist(),
                predicted,
                level=level,
                categories=[*classes, *extra],
            )
            return _unclustered(kappa, frame), ""
        if endpoint.metric is Metric.AUC:
            return (
                wstats.auc(
                    y,
                    s,
                    ci=endpoint.ci_method,
                    level=level,
                    n_boot=endpoint.ci.n_boot,
                    seed=endpoint.ci.seed,
                    clusters=case_clusters(frame),
                ),
                "",
            )
        threshold = ctx.protocol.threshold_of(endpoint)
        assert threshold is not None
        if endpoint.metric is Metric.KAPPA_MODEL_VS_CONSENSUS:
            decision = (s >= threshold).astype(int)
            kappa = wstats.cohen_kappa(y, decision, level=level, categories=[0, 1])
            return _unclustered(kappa, frame), ""
        bm = wstats.binary_metrics(
            y,
            s,
            threshold=threshold,
            method=endpoint.ci_method,
            level=level,
            clusters=case_clusters(frame),
        )
        est = getattr(bm, endpoint.metric.value)
        if est is None:
            return None, bm.not_estimable.get(endpoint.metric.value, "not estimable")
        return est, ""
    except NotEstimableError as exc:
        return None, str(exc)
    except StatisticsError as exc:
        return None, f"statistics error: {exc}"


def stratum_labels(cases: pd.DataFrame, factor: StratumFactor) -> pd.Series:
    """Stratum label of every case for one factor.

    Parameters
    ----------
    cases : DataFrame
        The cases frame; must hold ``factor.source_column``.
    factor : StratumFactor
        The factor; with ``edges`` the numeric column is cut into bands
        ``"18 to <50"``, values outside the edges get ``"outside 18 to <120"``.

    Returns
    -------
    Series of str
        Missing values are labelled ``"unknown"``.
    """
    column = factor.source_column
    _require_columns(cases, [column], f"stratum factor {factor.factor!r}")
    raw = cases[column]
    if factor.edges is None:
        return raw.map(lambda v: "unknown" if pd.isna(v) else str(v)).astype(str)
    edges = factor.edges
    values = pd.to_numeric(raw, errors="coerce")

    def band(v: float) -> str:
        if pd.isna(v):
            return "unknown"
        for lo, hi in zip(edges, edges[1:], strict=False):
            if lo <= v < hi:
                return f"{lo:g} to <{hi:g}"
        return f"outside {edges[0]:g} to <{edges[-1]:g}"

    return values.map(band).astype(str)


# -- subgroup judgement ----------------------------------------------------------------------


@dataclass(slots=True)
class _StratumWork:
    factor: StratumFactor
    label: str
    frame: pd.DataFrame
    assessed: bool
    estimate: wstats.Estimate | None = None
    reason: str = ""
    level: float = 0.0
    verdict: Verdict = Verdict.NOT_ASSESSED

    def result(self) -> StratumResult:
        n = len(self.frame)
        if self.estimate is not None:
            status = EstimateStatus.OK
        elif n < self.factor.min_n:
            status = EstimateStatus.INSUFFICIENT_N
        else:
            status = EstimateStatus.NOT_ESTIMABLE
        return StratumResult(
            factor=self.factor.factor,
            stratum=self.label,
            n=n,
            estimate=self.estimate,
            level=self.level,
            verdict=self.verdict,
            reason=self.reason,
            status=status,
        )


def _judge_adjusted(
    endpoint: Endpoint, family: list[_StratumWork], multiplicity: Multiplicity, ctx: _Context
) -> None:
    """Judge a family of strata on the endpoint's criterion with adjusted CI levels.

    Holm's step-down [1]_ by CI inversion: with ``m`` strata of which ``r``
    have passed, every remaining stratum's CI is recomputed at level
    ``1 - alpha / (m - r)``; those meeting the criterion pass; repeat until
    none passes. Rejecting all strata that clear the current step at once is
    equivalent to the one-at-a-time procedure, because a stratum clearing a
    step clears every later (less stringent) step too. Bonferroni uses
    ``1 - alpha / m`` for all.

    .. [1] Holm S. A simple sequentially rejective multiple test procedure.
       Scand J Stat 6:65-70, 1979.
    """
    alpha = 1.0 - endpoint.ci.level
    m = len(family)
    if m == 0:
        return
    remaining = list(family)
    passed = 0
    while remaining:
        if multiplicity is Multiplicity.NONE:
            level = endpoint.ci.level
        elif multiplicity is Multiplicity.BONFERRONI:
            level = 1.0 - alpha / m
        else:
            level = 1.0 - alpha / (m - passed)
        now_passing = []
        for work in remaining:
            work.estimate, work.reason = _estimate(endpoint, work.frame, level, ctx)
            work.level = level
            if work.estimate is None:
                work.verdict = Verdict.NOT_EVALUABLE
            elif endpoint.criterion.holds(
                work.estimate.value, work.estimate.ci_low, work.estimate.ci_high
            ):
                work.verdict = Verdict.PASS
                now_passing.append(work)
            else:
                work.verdict = Verdict.FAIL
        if not now_passing or multiplicity is not Multiplicity.HOLM:
            break
        passed += len(now_passing)
        remaining = [w for w in remaining if w not in now_passing]
    for work in family:
        if work.verdict is Verdict.FAIL:
            work.reason = f"criterion not met at adjusted CI level {work.level:.4g}"


def _judge_fixed(
    endpoint: Endpoint, work: _StratumWork, criteria: list[Criterion], ctx: _Context
) -> None:
    work.level = endpoint.ci.level
    work.estimate, work.reason = _estimate(endpoint, work.frame, work.level, ctx)
    if work.estimate is None:
        work.verdict = Verdict.NOT_EVALUABLE
        return
    est = work.estimate
    failing = [c for c in criteria if not c.holds(est.value, est.ci_low, est.ci_high)]
    work.verdict = Verdict.FAIL if failing else Verdict.PASS
    if failing:
        work.reason = "not met: " + "; ".join(endpoint.criterion_text(c) for c in failing)


def _subgroup_rule_text(protocol: Protocol, endpoint: Endpoint) -> str:
    sub = protocol.subgroup_acceptance
    assert sub is not None
    factors = ", ".join(s.factor for s in protocol.strata if s.assess)
    if sub.rule is SubgroupRule.FIXED_CRITERIA:
        parts = " and ".join(endpoint.criterion_text(c) for c in sub.criteria or [])
        return (
            f"each stratum of {factors} with n >= its min_n: {parts} (unadjusted for multiplicity)"
        )
    adj = {
        Multiplicity.HOLM: "CI levels adjusted by Holm's step-down",
        Multiplicity.BONFERRONI: "CI levels adjusted by Bonferroni",
        Multiplicity.NONE: "no multiplicity adjustment",
    }[sub.multiplicity]
    fam = "per factor" if sub.family is MultiplicityFamily.PER_FACTOR else "over all strata"
    return (
        f"each stratum of {factors} with n >= its min_n meets the endpoint criterion "
        f"({adj}, family {fam})"
    )


# -- the public entry ------------------------------------------------------------------------


def evaluate_endpoints(
    protocol: Protocol,
    cases: pd.DataFrame,
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> ProtocolEvaluation:
    """Compute every endpoint overall and per stratum and apply the acceptance criteria.

    Parameters
    ----------
    protocol : Protocol
        The approved protocol.
    cases : DataFrame
        One row per case: ``case_id``, ``status`` (completed/failed/excluded)
        and the columns the protocol needs: classification ``y_true`` (or the
        protocol's ``labels_column``) and ``score``; segmentation ``dice``,
        ``hd95``, ``surface_dice``, ``assd`` as used by the endpoints; and the
        strata columns (``manufacturer``, ``patient_sex``, ``patient_age_years``...).
    progress : callable, optional
        ``progress(done, total, message)`` after each endpoint.

    Returns
    -------
    ProtocolEvaluation

    Raises
    ------
    ProtocolError
        When the frame lacks a column the protocol needs, repeats a case id,
        has an unknown status or a non-binary reference label.

    Notes
    -----
    See the module docstring for how failed, excluded and incomplete cases
    are handled. Strata with ``n < min_n`` and strata of report-only factors
    are estimated for the report and marked ``NOT_ASSESSED``.
    """
    unresolved = [
        ep.id
        for ep in protocol.endpoints
        if metric_info(ep.metric).needs_threshold and protocol.threshold_of(ep) is None
    ]
    if unresolved:
        op = protocol.operating_point
        rule = op.describe() if op is not None else "none"
        raise ProtocolError(
            f"Endpoint(s) {unresolved} have no threshold: the protocol's operating point "
            f"({rule}) is a rule that was not resolved. Resolve it with "
            "workbench.protocols.operating_points.resolve_operating_point before evaluating."
        )
    if protocol.task is Task.DETECTION:
        raise ProtocolError(
            f"Protocol {protocol.id} is a detection protocol: its endpoints are estimated from "
            "matched marks; use workbench.protocols.evaluate_detection."
        )
    ctx = _Context(protocol)
    seg = protocol.reference_standard.segmentation
    structures = seg.structure_names if seg is not None else ()
    prepared_by: dict[str | None, _Prepared] = {}
    labels_by: dict[str | None, dict[str, pd.Series]] = {}
    names: list[str | None] = [*structures] or [None]
    for name in names:
        if name is None:
            prepared_by[name] = _prepare(protocol, cases)
        else:
            prepared_by[name] = _prepare(protocol, structure_cases(cases, name), name)
        part = prepared_by[name].frame
        labels_by[name] = {f.factor: stratum_labels(part, f) for f in protocol.strata}
    prepared = _overall(protocol, cases, prepared_by) if structures else prepared_by[None]
    results: list[EndpointResult] = []
    total = len(protocol.endpoints)
    for i, ep in enumerate(protocol.endpoints):
        structure = protocol.structure_of(ep.structure)
        frame = prepared_by[structure].frame
        labels = labels_by[structure]
        parts = [
            (factor, value, frame[labels[factor.factor] == value])
            for factor in protocol.strata
            for value in sorted(labels[factor.factor].unique())
        ]
        results.append(judge_endpoint(protocol, ep, frame, parts, ctx, structure=structure))
        if progress is not None:
            progress(i + 1, total, f"endpoint {ep.id}: {results[-1].verdict.value}")
    return conclude_evaluation(protocol, len(cases), prepared, results)


def judge_endpoint(
    protocol: Protocol,
    ep: Endpoint,
    frame: pd.DataFrame,
    parts: list[tuple[StratumFactor, str, pd.DataFrame]],
    ctx: _Context,
    *,
    structure: str | None = None,
    n_units: int | None = None,
) -> EndpointResult:
    """Estimate one endpoint overall and per stratum and apply its criteria.

    ``parts`` are the strata as ``(factor, label, frame of the stratum)``; ``n_units``
    overrides the endpoint's ``n_cases`` (default the frame's rows).
    """
    sub = protocol.subgroup_acceptance
    judged_ids = {e.id for e in protocol.subgroup_endpoints()}
    est, reason = _estimate(ep, frame, ep.ci.level, ctx)
    if est is None:
        overall = Verdict.NOT_EVALUABLE
    elif ep.criterion.holds(est.value, est.ci_low, est.ci_high):
        overall = Verdict.PASS
    else:
        overall = Verdict.FAIL
        reason = "overall criterion not met"
    judged = sub is not None and ep.id in judged_ids
    works: list[_StratumWork] = []
    for factor, value, part in parts:
        assessed = judged and factor.assess and len(part) >= factor.min_n
        works.append(_StratumWork(factor, value, part, assessed))
    families: dict[str, list[_StratumWork]] = {}
    for w in works:
        if not w.assessed:
            w.level = ep.ci.level
            w.estimate, w.reason = _estimate(ep, w.frame, w.level, ctx)
            if not (judged and w.factor.assess):
                w.reason = "report only" + (f"; {w.reason}" if w.reason else "")
            else:
                w.reason = f"n={len(w.frame)} < min_n={w.factor.min_n}" + (
                    f"; {w.reason}" if w.reason else ""
                )
            continue
        assert sub is not None
        key = w.factor.factor if sub.family is MultiplicityFamily.PER_FACTOR else "*"
        families.setdefault(key, []).append(w)
    if sub is not None:
        for fam in families.values():
            if sub.rule is SubgroupRule.FIXED_CRITERIA:
                for w in fam:
                    _judge_fixed(ep, w, list(sub.criteria or []), ctx)
            else:
                _judge_adjusted(ep, fam, sub.multiplicity, ctx)
    verdict = overall
    assessed_works = [w for w in works if w.assessed]
    if overall is Verdict.PASS and assessed_works:
        failing = [w for w in assessed_works if w.verdict is Verdict.FAIL]
        unknown = [w for w in assessed_works if w.verdict is Verdict.NOT_EVALUABLE]
        if failing:
            verdict = Verdict.FAIL
            reason = "subgroup criterion not met for " + ", ".join(
                f"{w.factor.factor}={w.label}" for w in failing
            )
        elif unknown:
            verdict = Verdict.NOT_EVALUABLE
            reason = "subgroup not estimable for " + ", ".join(
                f"{w.factor.factor}={w.label}" for w in unknown
            )
    return EndpointResult(
        endpoint_id=ep.id,
        metric=ep.metric.value,
        primary=ep.primary,
        estimate=est,
        criterion_text=protocol.criterion_text(ep),
        overall_verdict=overall,
        subgroup_rule_text=_subgroup_rule_text(protocol, ep) if judged else None,
        strata=tuple(w.result() for w in works),
        verdict=verdict,
        reason=reason if verdict is not Verdict.PASS else "",
        n_cases=len(frame) if n_units is None else n_units,
        operating_threshold=protocol.threshold_of(ep),
        structure=structure,
    )


def conclude_evaluation(
    protocol: Protocol, n_cases_total: int, prepared: _Prepared, results: list[EndpointResult]
) -> ProtocolEvaluation:
    """The run's verdict from its judged endpoints (primary ones decide)."""
    primary = [r.verdict for r in results if r.primary]
    if Verdict.FAIL in primary:
        overall_verdict = Verdict.FAIL
    elif all(v is Verdict.PASS for v in primary):
        overall_verdict = Verdict.PASS
    else:
        overall_verdict = Verdict.NOT_EVALUABLE
    verdict_reason = _verdict_reason(tuple(results))
    if (
        overall_verdict is Verdict.NOT_EVALUABLE
        and protocol.not_evaluable_counts_as is NotEvaluablePolicy.FAIL
    ):
        overall_verdict = Verdict.FAIL
        verdict_reason += "; counted as FAIL (protocol: not_evaluable_counts_as: fail)"
    return ProtocolEvaluation(
        protocol_id=protocol.id,
        protocol_version=protocol.version,
        protocol_sha256=protocol.sha256,
        task=protocol.task.value,
        verdict=overall_verdict,
        endpoints=tuple(results),
        n_cases_total=n_cases_total,
        n_analysed=len(prepared.frame),
        failed_case_ids=prepared.failed,
        excluded_case_ids=prepared.excluded,
        failed_cases_policy=protocol.failed_cases.value,
        notes=prepared.notes,
        verdict_reason=verdict_reason,
    )

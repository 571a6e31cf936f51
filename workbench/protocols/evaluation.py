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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
)
from workbench.vocabulary import CaseStatus, EstimateStatus, Verdict

__all__ = [
    "evaluate_endpoints",
    "stratum_labels",
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


def _prepare(protocol: Protocol, cases: pd.DataFrame) -> _Prepared:
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
    notes: list[str] = []
    exclude_failed = protocol.failed_cases is FailedCasePolicy.EXCLUDE

    if protocol.task is Task.CLASSIFICATION:
        col = _labels_column(protocol, frame)
        _require_columns(frame, ["score"], "classification endpoints")
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
        if exclude_failed:
            frame = frame[~failed_mask].copy()
            y = y_raw[~failed_mask].astype(int)
            s = score[~failed_mask]
        else:
            ok = score[~failed_mask]
            thresholds = [ep.operating_threshold for ep in protocol.endpoints]
            pool = [*ok.tolist(), *[t for t in thresholds if t is not None]] or [0.0]
            low, high = min(pool) - 1.0, max(pool) + 1.0
            y = y_raw.astype(int)
            s = score.where(~failed_mask, np.where(y == 1, low, high))
        frame["_y"] = y.to_numpy()
        frame["_s"] = s.to_numpy(dtype=float)
        return _Prepared(frame, failed, excluded, tuple(notes))

    failed_mask = frame["status"] == "failed"
    failed = tuple(frame.loc[failed_mask, "case_id"])
    if exclude_failed:
        frame = frame[~failed_mask].copy()
        failed_mask = frame["status"] == "failed"
    columns = sorted(
        {c for ep in protocol.endpoints if (c := metric_info(ep.metric).column) is not None}
    )
    _require_columns(frame, columns, "segmentation endpoints")
    for col in columns:
        distance = math.isinf(metric_info(_metric_for_column(col)).high)
        worst = protocol.failed_case_distance_mm if distance else 0.0
        values = pd.to_numeric(frame[col], errors="coerce").astype(float)
        missing = (frame["status"] == "completed") & ~np.isfinite(values)
        for cid in frame.loc[missing, "case_id"]:
            notes.append(f"case {cid}: {col} undefined for a completed case; counted as {worst:g}")
        frame[col] = values.where(~(failed_mask | missing), worst)
    return _Prepared(frame, failed, excluded, tuple(notes))


def _metric_for_column(column: str) -> Metric:
    for m in Metric:
        if metric_info(m).column == column:
            return m
    raise KeyError(column)


# -- computing one metric --------------------------------------------------------------------


def _estimate(
    endpoint: Endpoint, frame: pd.DataFrame, level: float
) -> tuple[wstats.Estimate | None, str]:
    """Estimate ``endpoint`` on ``frame`` at ``level``; (None, reason) when not estimable."""
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
                ),
                "",
            )
        y = frame["_y"].to_numpy(dtype=int)
        s = frame["_s"].to_numpy(dtype=float)
        if len(y) == 0:
            return None, "no cases"
        if endpoint.metric is Metric.AUC:
            return (
                wstats.auc(
                    y,
                    s,
                    ci=endpoint.ci_method,
                    level=level,
                    n_boot=endpoint.ci.n_boot,
                    seed=endpoint.ci.seed,
                ),
                "",
            )
        assert endpoint.operating_threshold is not None
        if endpoint.metric is Metric.KAPPA_MODEL_VS_CONSENSUS:
            decision = (s >= endpoint.operating_threshold).astype(int)
            return wstats.cohen_kappa(y, decision, level=level, categories=[0, 1]), ""
        bm = wstats.binary_metrics(
            y, s, threshold=endpoint.operating_threshold, method=endpoint.ci_method, level=level
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
    endpoint: Endpoint, family: list[_StratumWork], multiplicity: Multiplicity
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
            work.estimate, work.reason = _estimate(endpoint, work.frame, level)
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


def _judge_fixed(endpoint: Endpoint, work: _StratumWork, criteria: list[Criterion]) -> None:
    work.level = endpoint.ci.level
    work.estimate, work.reason = _estimate(endpoint, work.frame, work.level)
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
    prepared = _prepare(protocol, cases)
    frame = prepared.frame
    labels = {f.factor: stratum_labels(frame, f) for f in protocol.strata}
    sub = protocol.subgroup_acceptance
    judged_ids = {ep.id for ep in protocol.subgroup_endpoints()}
    results: list[EndpointResult] = []
    total = len(protocol.endpoints)
    for i, ep in enumerate(protocol.endpoints):
        est, reason = _estimate(ep, frame, ep.ci.level)
        if est is None:
            overall = Verdict.NOT_EVALUABLE
        elif ep.criterion.holds(est.value, est.ci_low, est.ci_high):
            overall = Verdict.PASS
        else:
            overall = Verdict.FAIL
            reason = "overall criterion not met"
        judged = sub is not None and ep.id in judged_ids
        works: list[_StratumWork] = []
        for factor in protocol.strata:
            lab = labels[factor.factor]
            for value in sorted(lab.unique()):
                part = frame[lab == value]
                assessed = judged and factor.assess and len(part) >= factor.min_n
                works.append(_StratumWork(factor, value, part, assessed))
        families: dict[str, list[_StratumWork]] = {}
        for w in works:
            if not w.assessed:
                w.level = ep.ci.level
                w.estimate, w.reason = _estimate(ep, w.frame, w.level)
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
                        _judge_fixed(ep, w, list(sub.criteria or []))
                else:
                    _judge_adjusted(ep, fam, sub.multiplicity)
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
        results.append(
            EndpointResult(
                endpoint_id=ep.id,
                metric=ep.metric.value,
                primary=ep.primary,
                estimate=est,
                criterion_text=ep.criterion_text(),
                overall_verdict=overall,
                subgroup_rule_text=_subgroup_rule_text(protocol, ep) if judged else None,
                strata=tuple(w.result() for w in works),
                verdict=verdict,
                reason=reason if verdict is not Verdict.PASS else "",
                n_cases=len(frame),
                operating_threshold=ep.operating_threshold,
            )
        )
        if progress is not None:
            progress(i + 1, total, f"endpoint {ep.id}: {verdict.value}")
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
        n_cases_total=len(cases),
        n_analysed=len(frame),
        failed_case_ids=prepared.failed,
        excluded_case_ids=prepared.excluded,
        failed_cases_policy=protocol.failed_cases.value,
        notes=prepared.notes,
        verdict_reason=verdict_reason,
    )

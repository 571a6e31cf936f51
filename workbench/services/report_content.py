"""The report's content, one builder per section, from the run's typed results.

:func:`gather_report_inputs` reads everything a report needs from the records
once, into a frozen :class:`ReportInputs`; each ``*_section`` function turns
those inputs (above all the run's :class:`~workbench.protocols.RunResults`)
into one part of :class:`~workbench.reports.ReportContent`; and
:func:`report_content` assembles them. Only this module and the records it
reads know how a report is put together; the PDF builder knows only the
content model.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench import __version__
from workbench.config import Workdir
from workbench.protocols import (
    EndpointResult,
    FrocSummary,
    NotEvaluablePolicy,
    Protocol,
    RunResults,
    StratumResult,
    Task,
    lesion_table,
    metric_info,
    stratum_labels,
)
from workbench.protocols.results import CalibrationSummary
from workbench.protocols.schema import CriterionStatistic
from workbench.records import audit
from workbench.records.models import (
    AuditEntry,
    ProtocolVersion,
    QualityReport,
    RegisteredModel,
    Report,
    Run,
    Signature,
    TestSet,
    User,
)
from workbench.reports import content as rc
from workbench.services.adjudication import RunAdjudication, adjudication_summary
from workbench.services.protocols import parsed_protocol
from workbench.services.runs import case_frame, detection_frames, stored_results
from workbench.services.testsets import Waiver, current_waivers, quality_gate
from workbench.stats import Estimate
from workbench.vocabulary import EstimateStatus, Verdict

__all__ = [
    "ReportInputs",
    "gather_report_inputs",
    "report_content",
    "dataset_section",
    "methods_section",
    "results_section",
    "calibration_section",
    "detection_section",
    "acceptance_rows",
    "adjudication_section",
    "audit_section",
]

#: Columns of the per-case table attached to the report, where the run has them.
PER_CASE_COLUMNS = (
    "case_id",
    "status",
    "reason",
    "score",
    "y_true",
    "dice",
    "iou",
    "hd95",
    "assd",
    "surface_dice",
    "segmentation_status",
    "manufacturer",
    "manufacturer_model_name",
    "patient_sex",
    "patient_age_years",
    "mask_sha256",
    "n_lesions",
    "n_marks",
    "n_ll",
    "n_nl",
    "n_missed",
    "max_nl_score",
    "marks_sha256",
    "lesions_sha256",
    "matches_sha256",
)

#: Header attributes counted per level in the report's dataset section.
_COUNTED_FACTORS = (
    ("manufacturer", "Scanner manufacturer"),
    ("manufacturer_model_name", "Scanner model"),
    ("patient_sex", "Sex"),
)


@dataclass(frozen=True, slots=True)
class ReportInputs:
    """Everything a report is built from, read once from the records.

    Parameters
    ----------
    report_uid, created_by, author_name : str
    created_at : datetime
    final : bool
        Whether this is the final (sealed) rendering.
    run : Run
        The run record (uid, device, times).
    results : RunResults
        The run's typed results.
    frame : pandas.DataFrame
        The run's case frame.
    protocol : Protocol
    protocol_version : ProtocolVersion
    model : RegisteredModel
    test_set : TestSet
    quality : QualityReport or None
        The latest data-quality report of the test set.
    adjudication : RunAdjudication
    blinding : Mapping of str to Mapping of str to str
        Per discrepant case, which label (A/B) showed the model and the reference.
    signatures : sequence of Signature
    audit_entries : sequence of AuditEntry
        The run's, the report's and the discrepancies' audit entries.
    audit_head : str
        The audit chain's head hash when the report was built.
    """

    report_uid: str
    created_by: str
    author_name: str
    created_at: datetime
    final: bool
    run: Run
    results: RunResults
    frame: pd.DataFrame
    protocol: Protocol
    protocol_version: ProtocolVersion
    model: RegisteredModel
    test_set: TestSet
    quality: QualityReport | None
    adjudication: RunAdjudication
    blinding: Mapping[str, Mapping[str, str]]
    signatures: Sequence[Signature]
    audit_entries: Sequence[AuditEntry]
    audit_head: str
    selected: Sequence[rc.SelectedCase] = ()
    lesions: pd.DataFrame | None = None
    froc_panels: Sequence[tuple[str, FrocSummary]] = ()
    detection_note: str = ""
    quality_gate_open: bool = False
    waivers: Sequence[Waiver] = ()


def _selected_cases(
    session: Session, run: Run, workdir: Path | None
) -> tuple[rc.SelectedCase, ...]:
    """The views a QA author chose from the case explorer (newest choice per case)."""
    if workdir is None:
        return ()
    chosen: dict[str, rc.SelectedCase] = {}
    for entry in session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.action == "explorer.case_select",
            AuditEntry.record_id.like(f"{run.run_uid}/%"),
        )
        .order_by(AuditEntry.seq)
    ):
        new = entry.new_value or {}
        case_id = str(entry.record_id).split("/", 1)[1]
        metrics = new.get("metrics") or {}
        chosen.pop(case_id, None)
        chosen[case_id] = rc.SelectedCase(
            case_id=case_id,
            png_path=str(workdir / str(new.get("png_path", ""))),
            png_sha256=str(new.get("png_sha256", "")),
            note=str(new.get("note") or ""),
            selected_by=entry.actor,
            metrics=tuple(
                (str(k), f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            ),
        )
    return tuple(chosen.values())


def gather_report_inputs(
    session: Session,
    report: Report,
    *,
    final: bool,
    signatures_list: Sequence[Signature],
    workdir: Path | None = None,
) -> ReportInputs:
    """Read the records a report needs, once (``workdir`` locates explorer selections)."""
    run = session.get(Run, report.run_id)
    assert run is not None
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    model = session.get(RegisteredModel, run.model_id)
    test_set = session.get(TestSet, run.test_set_id)
    assert pv is not None and model is not None and test_set is not None
    protocol = parsed_protocol(pv)
    results = stored_results(run)
    assert results is not None, "only a completed run has a report"
    author = session.scalars(select(User).where(User.username == report.created_by)).first()
    quality = session.scalars(
        select(QualityReport)
        .where(QualityReport.test_set_id == test_set.id)
        .order_by(QualityReport.id.desc())
        .limit(1)
    ).first()
    entries = list(
        session.scalars(
            select(AuditEntry)
            .where(
                (AuditEntry.record_id == run.run_uid)
                | (AuditEntry.record_id.like(f"{run.run_uid}/%"))
                | (
                    (AuditEntry.record_type == "report")
                    & (AuditEntry.record_id == report.report_uid)
                )
                | (
                    (AuditEntry.record_type == "discrepancy")
                    & (AuditEntry.record_id.in_([str(d.id) for d in run.discrepancies]))
                )
            )
            .order_by(AuditEntry.seq)
        )
    )
    head = audit.head(session)
    frame = case_frame(session, run.id, protocol)
    lesions, panels, note = _detection_inputs(
        session, run, protocol, frame, workdir, report.created_at
    )
    return ReportInputs(
        report_uid=report.report_uid,
        created_by=report.created_by,
        author_name=author.full_name if author else report.created_by,
        created_at=report.created_at,
        final=final,
        run=run,
        results=results,
        frame=frame,
        protocol=protocol,
        protocol_version=pv,
        model=model,
        test_set=test_set,
        quality=quality,
        quality_gate_open=quality_gate(session, test_set)[0],
        waivers=tuple(current_waivers(session, test_set)),
        adjudication=adjudication_summary(session, run),
        blinding={d.case_id: dict(d.blinding or {}) for d in run.discrepancies},
        signatures=tuple(signatures_list),
        audit_entries=tuple(entries),
        audit_head=head.entry_hash if head else "",
        selected=_selected_cases(session, run, workdir),
        lesions=lesions,
        froc_panels=panels,
        detection_note=note,
    )


def _detection_inputs(
    session: Session,
    run: Run,
    protocol: Protocol,
    frame: pd.DataFrame,
    workdir: Path | None,
    created_at: datetime,
) -> tuple[pd.DataFrame | None, tuple[tuple[str, FrocSummary], ...], str]:
    """A detection run's per-lesion table and the FROC curves of the report's figures.

    The run's curves come first; every other run of the same protocol version on the same
    test set that had completed when the report was created follows, for comparison (they
    are not part of this run's acceptance; a later run does not change a report).
    """
    if protocol.task is not Task.DETECTION:
        return None, (), ""
    note = ""
    lesions: pd.DataFrame | None = None
    if workdir is None:
        note = "the per-lesion table needs the run's records (no workdir given)"
    else:
        found, matches = detection_frames(Workdir(workdir, "").runs_dir, run.run_uid, frame)
        lesions = lesion_table(found, matches)
    panels: list[tuple[str, FrocSummary]] = []
    others = session.scalars(
        select(Run)
        .where(
            Run.protocol_version_id == run.protocol_version_id,
            Run.test_set_id == run.test_set_id,
            Run.status == "completed",
            (Run.id == run.id) | (Run.finished_at <= created_at),
        )
        .order_by(Run.id)
    ).all()
    for other in sorted(others, key=lambda r: r.id != run.id):
        results = stored_results(other)
        model = session.get(RegisteredModel, other.model_id)
        if results is None or results.froc is None or model is None:
            continue
        panels.append((f"{model.name} {model.version}", results.froc))
    return lesions, tuple(panels), note


# -- estimates -------------------------------------------------------------------------------


def _report_estimate(
    estimate: Estimate | None,
    *,
    n: int = 0,
    status: EstimateStatus = EstimateStatus.NOT_ESTIMABLE,
    reason: str = "",
) -> rc.ReportEstimate:
    if estimate is None:
        return rc.ReportEstimate.missing(status.value, reason or status.value, n=n)
    return rc.ReportEstimate(
        value=float(estimate.value),
        ci_low=float(estimate.ci_low),
        ci_high=float(estimate.ci_high),
        level=float(estimate.level),
        method=str(estimate.method),
        n=int(estimate.n or n),
    )


def _stratum_estimate(stratum: StratumResult) -> rc.ReportEstimate:
    return _report_estimate(
        stratum.estimate,
        n=stratum.n,
        status=stratum.status,
        reason=stratum.reason or stratum.status.value,
    )


def _overall_estimate(endpoint: EndpointResult) -> rc.ReportEstimate:
    return _report_estimate(
        endpoint.estimate, n=endpoint.n_cases, reason=endpoint.reason or "not estimable"
    )


# -- sections --------------------------------------------------------------------------------


def _level_counts(values: pd.Series) -> tuple[rc.LevelCount, ...]:
    tally = Counter(str(v) for v in values)
    return tuple(rc.LevelCount(level=k, n_cases=v) for k, v in sorted(tally.items()))


def _readers(inputs: ReportInputs) -> tuple[rc.ReaderInfo, ...]:
    """The readers as the protocol describes them; unnamed ones are listed as not described."""
    reference = inputs.protocol.reference_standard
    if reference.readers:
        return tuple(
            rc.ReaderInfo(
                reader_id=r.id,
                role=r.role,
                qualification=r.qualification or "not stated in the protocol",
            )
            for r in reference.readers
        )
    seg_readers = reference.segmentation.readers if reference.segmentation else []
    return tuple(
        rc.ReaderInfo(
            reader_id=r, role="segmentation reader", qualification="not stated in the protocol"
        )
        for r in seg_readers
    ) + tuple(
        rc.ReaderInfo(reader_id=c, role="reader", qualification="not stated in the protocol")
        for c in inputs.results.supplementary.reader_columns
    )


def _quality_summary(inputs: ReportInputs) -> tuple[rc.DataQualitySummary, rc.PhiCheck]:
    quality = inputs.quality
    payload = (quality.findings if quality else None) or {}
    findings = list(payload.get("findings", []))
    by_check: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in findings:
        by_check.setdefault((str(f.get("check")), str(f.get("severity"))), []).append(f)
    summary = rc.DataQualitySummary(
        passed=inputs.quality_gate_open if quality else False,
        findings=tuple(
            rc.QualityFinding(
                check=c, severity=s, count=len(items), message=str(items[0].get("message", ""))
            )
            for (c, s), items in sorted(by_check.items())
        ),
        suite=str(payload.get("suite") or inputs.protocol.data_quality_suite),
        waived=tuple(
            rc.WaivedFinding(
                finding_id=w.finding_id,
                check=w.check,
                severity=w.severity,
                path=w.path,
                attribute=w.attribute,
                justification=w.justification,
                signed_by=tuple(w.signed_by),
            )
            for w in inputs.waivers
            if w.complete
        ),
        task=str(payload.get("task") or ""),
        ocr=bool(payload.get("ocr", False)),
    )
    phi_findings = [f for f in findings if str(f.get("check", "")).startswith("phi")]
    phi = rc.PhiCheck(
        passed=not any(f.get("severity") == "critical" for f in phi_findings),
        files_checked=int((inputs.test_set.summary or {}).get("n_dicom", 0)),
        findings=len(phi_findings),
        summary=(
            "PS3.15 Basic Application Level Confidentiality Profile attributes, sequences, "
            "private tags, dates and PatientIdentityRemoved checked in every file."
        ),
    )
    return summary, phi


def dataset_section(inputs: ReportInputs) -> rc.DatasetSummary:
    """What the test set holds, which cases entered the analysis and who made the reference."""
    frame, protocol = inputs.frame, inputs.protocol
    accounting = inputs.results.accounting
    counts = [
        rc.FactorCounts(factor=label, levels=_level_counts(frame[column].fillna("unknown")))
        for column, label in _COUNTED_FACTORS
        if column in frame
    ]
    counts.extend(
        rc.FactorCounts(
            factor=f"{factor.factor} (years)",
            levels=_level_counts(stratum_labels(frame, factor)),
        )
        for factor in protocol.strata
        if factor.edges and factor.source_column in frame
    )
    quality, phi = _quality_summary(inputs)
    summary = inputs.test_set.summary or {}
    return rc.DatasetSummary(
        n_cases=accounting.n_cases or len(frame),
        n_series=int(summary.get("n_series", 0)),
        n_files=int(summary.get("n_files", 0)),
        counts=tuple(counts),
        reference_standard=protocol.reference_standard.description
        or f"labels column {protocol.reference_standard.labels_column}",
        readers=_readers(inputs),
        inclusion_criteria=("Every CT series of the locked test set with a reference standard.",),
        exclusion_criteria=(
            "No reference labels row or reference segmentation for the series.",
            "Modality other than CT.",
            *(
                (
                    "A structure missing from a reader's reference: the case is left out of that "
                    "structure's endpoints only.",
                )
                if accounting.structures
                else ()
            ),
        ),
        n_included=accounting.n_included,
        excluded_cases=(
            *(rc.CaseNote(case_id=n.case_id, reason=n.reason) for n in accounting.excluded),
            *(
                rc.CaseNote(
                    case_id=n.case_id,
                    reason=f"structure {s.structure} only: {n.reason}",
                )
                for s in accounting.structures
                for n in s.excluded
            ),
        ),
        failed_cases=tuple(
            rc.CaseNote(case_id=n.case_id, reason=n.reason) for n in accounting.failed
        ),
        quality=quality,
        phi_check=phi,
    )


def methods_section(inputs: ReportInputs) -> rc.MethodsSummary:
    """Metrics and their CI methods, thresholds, strata and the multiplicity rule."""
    protocol, results = inputs.protocol, inputs.results
    metric_methods = []
    thresholds = []
    for ep in protocol.endpoints:
        info = metric_info(ep.metric)
        metric_methods.append(
            rc.MetricMethod(
                metric=f"{ep.id}: "
                + _structure_label(info.label, protocol.structure_of(ep.structure)),
                definition=ep.description or info.label,
                ci_method=f"{ep.ci.method or info.ci_methods[0]} ({ep.ci.level:.0%})"
                + (f", clustered by {protocol.cluster_by}" if protocol.cluster_by else ""),
            )
        )
        threshold = protocol.threshold_of(ep)
        if threshold is not None:
            thresholds.append(
                rc.ThresholdSpec(name=f"{ep.id} operating threshold", value=float(threshold))
            )
    thresholds.append(
        rc.ThresholdSpec(
            name="surface Dice tolerance (mm)", value=float(results.surface_dice_tolerance_mm)
        )
    )
    sub = protocol.subgroup_acceptance
    return rc.MethodsSummary(
        metrics=tuple(metric_methods),
        ci_level=float(protocol.endpoints[0].ci.level),
        thresholds=tuple(thresholds),
        strata=tuple(
            rc.StratumSpec(
                factor=s.factor,
                levels=tuple(
                    sorted(
                        {
                            stratum.stratum
                            for endpoint in results.endpoints
                            for stratum in endpoint.strata_of(s.factor)
                        }
                    )
                ),
                min_n=s.min_n,
            )
            for s in protocol.strata
        ),
        multiplicity=(
            f"{sub.rule.value} with {sub.multiplicity.value} adjustment ({sub.family.value})"
            if sub
            else "none (no subgroup acceptance rule)"
        ),
        primary_analysis=(
            f"Failed cases: {protocol.failed_cases.value}. Excluded cases are listed. "
            "Primary analysis on the reference standard before adjudication."
            + (
                " A primary endpoint that is not evaluable makes the verdict NOT EVALUABLE."
                if protocol.not_evaluable_counts_as is NotEvaluablePolicy.NOT_EVALUABLE
                else ""
            )
            + (
                f" Cases are clustered by {protocol.cluster_by} (a patient may contribute "
                "several cases): every interval treats the patient as the unit (proportions: "
                "Wilson or Clopper-Pearson at the Korn-Graubard effective sample size; AUC: "
                "clustered DeLong variance; bootstrap intervals resample patients). Kappa "
                "intervals treat cases as independent."
                if protocol.cluster_by
                else ""
            )
        ),
        software=f"Validation Workbench {__version__} (workbench.stats: numpy/scipy/statsmodels)",
    )


def _criterion(protocol: Protocol, endpoint_id: str) -> tuple[float | None, str]:
    """The acceptance line of a forest plot: threshold and direction (``>=`` or ``<=``).

    A criterion on the whole interval (``ci contains 1``) or on the absolute value has
    no one-sided line: ``(None, ">=")``.
    """
    for ep in protocol.endpoints:
        if ep.id == endpoint_id:
            crit = ep.criterion
            if crit.statistic in (CriterionStatistic.CI, CriterionStatistic.ABS_VALUE):
                return None, ">="
            return float(crit.threshold), ">=" if crit.operator.is_lower_bound else "<="
    return None, ">="


def _structure_label(label: str, structure: str | None) -> str:
    """A metric's label with the structure a multi-structure endpoint evaluates."""
    return label if structure is None else f"{label} ({structure})"


def _digits(endpoint: EndpointResult) -> int:
    return 1 if metric_info(endpoint.metric).unit == "mm" else 3


def results_section(inputs: ReportInputs) -> rc.ResultsSection:
    """Every endpoint overall and per stratum, heterogeneity, ROC, distributions, agreement."""
    protocol, results = inputs.protocol, inputs.results
    metrics = []
    for endpoint in results.endpoints:
        info = metric_info(endpoint.metric)
        threshold, op = _criterion(protocol, endpoint.endpoint_id)
        metrics.append(
            rc.MetricResult(
                key=endpoint.endpoint_id,
                label=_structure_label(info.label, endpoint.structure),
                overall=_overall_estimate(endpoint),
                per_stratum=tuple(
                    rc.StratumEstimate(
                        factor=s.factor, level=s.stratum, estimate=_stratum_estimate(s)
                    )
                    for s in endpoint.strata
                ),
                threshold=threshold,
                direction=op,
                digits=_digits(endpoint),
                unit=info.unit,
            )
        )
    supplementary = results.supplementary
    heterogeneity = tuple(
        rc.HeterogeneityTest(
            metric=h.endpoint_id,
            factor=h.factor,
            statistic=float(h.statistic),
            df=h.df,
            p_value=float(h.p_value),
            method=h.method,
        )
        for h in supplementary.heterogeneity
        if h.statistic is not None and h.p_value is not None
    )
    roc = None
    if supplementary.roc is not None:
        curve = supplementary.roc
        roc = rc.RocCurve(
            fpr=curve.fpr,
            tpr=curve.tpr,
            tpr_low=curve.lower,
            tpr_high=curve.upper,
            auc=_report_estimate(curve.auc),
            band_method=f"{curve.band} bootstrap band ({curve.level:.0%})",
            operating_point=curve.operating_point,
        )
    agreement = [
        rc.AgreementRow(
            comparison=f"{a.rater_a} vs {a.rater_b}",
            kind=a.kind,
            statistic="Cohen's kappa",
            estimate=_report_estimate(
                None
                if a.kappa is None
                else Estimate(
                    value=a.kappa.value,
                    ci_low=a.kappa.ci_low,
                    ci_high=a.kappa.ci_high,
                    level=a.kappa.level,
                    method="asymptotic (Fleiss-Cohen-Everitt)",
                    n=a.n,
                ),
                n=a.n,
                reason=a.reason or "not estimable",
            ),
        )
        for a in supplementary.agreement
    ]
    if supplementary.readers_fleiss_kappa is not None:
        agreement.append(
            rc.AgreementRow(
                comparison=", ".join(_rater_names(supplementary.reader_columns)),
                kind="among readers",
                statistic="Fleiss' kappa",
                estimate=_report_estimate(supplementary.readers_fleiss_kappa),
            )
        )
    distributions = tuple(
        rc.DistributionGroup(label=label, values=values)
        for label, values in supplementary.distributions
    )
    return rc.ResultsSection(
        metrics=tuple(metrics),
        heterogeneity=heterogeneity,
        roc=roc,
        distribution_metric="Dice" if distributions else "",
        distributions=distributions,
        agreement=tuple(agreement),
        calibration=calibration_section(inputs),
        detection=detection_section(inputs),
    )


_CALIBRATION_METRICS = {
    "intercept": "calibration_intercept",
    "slope": "calibration_slope",
    "brier": "brier",
    "ece": "ece",
}


def _calibration_estimate(
    results: RunResults, summary: CalibrationSummary, name: str, estimate: Estimate | None
) -> rc.ReportEstimate:
    """The calibration endpoint's own estimate where the protocol has one, else the summary's.

    So that the calibration table shows the numbers the acceptance table judged
    (endpoints count failed cases as the protocol says; the summaries use completed cases).
    """
    endpoint = next((e for e in results.endpoints if e.metric == _CALIBRATION_METRICS[name]), None)
    if endpoint is not None:
        if not summary.factor:
            return _overall_estimate(endpoint)
        for stratum in endpoint.strata:
            if (stratum.factor, stratum.stratum) == (summary.factor, summary.stratum):
                return _stratum_estimate(stratum)
    reason = dict(summary.reasons).get(name, "not estimable")
    return _report_estimate(estimate, n=summary.n, reason=reason)


def calibration_section(inputs: ReportInputs) -> rc.CalibrationSection | None:
    """Calibration table and reliability diagrams, decision curve and operating point.

    Reads the run's :class:`~workbench.protocols.results.SupplementaryAnalyses`:
    the calibration summaries (overall first, then per stratum of the protocol's
    ``calibration.by`` factors; Van Calster et al. 2019), the decision curve
    (Vickers & Elkin 2006) and the locked operating point. None for a run that has
    none of them (e.g. segmentation).
    """
    supplementary = inputs.results.supplementary
    summaries = supplementary.calibration
    curve = supplementary.decision_curve
    op = supplementary.operating_point
    notes = [
        r for r in (supplementary.calibration_reason, supplementary.decision_curve_reason) if r
    ]
    if not summaries and curve is None and op is None and not notes:
        return None
    rows = tuple(
        rc.CalibrationRow(
            group=c.label,
            n=c.n,
            intercept=_calibration_estimate(inputs.results, c, "intercept", c.intercept),
            slope=_calibration_estimate(inputs.results, c, "slope", c.slope),
            brier=_calibration_estimate(inputs.results, c, "brier", c.brier),
            ece=_calibration_estimate(inputs.results, c, "ece", c.ece),
        )
        for c in summaries
    )
    panels = tuple(
        rc.CalibrationPanel(
            label="All cases" if not c.factor else c.label,
            n=c.n,
            events=c.events,
            points=tuple(
                rc.ReliabilityPoint(
                    mean_predicted=b.mean_predicted,
                    observed=b.observed,
                    observed_low=b.observed_ci_low,
                    observed_high=b.observed_ci_high,
                    n=b.n,
                )
                for b in c.reliability
            ),
            curve_predicted=c.curve_predicted,
            curve_observed=c.curve_observed,
            curve_low=c.curve_lower,
            curve_high=c.curve_upper,
        )
        for c in summaries
    )
    decision = None
    if curve is not None:
        keep = [
            i
            for i, (m, a) in enumerate(zip(curve.net_benefit, curve.treat_all, strict=True))
            if m is not None and a is not None
        ]
        if len(keep) >= 2:
            decision = rc.DecisionCurve(
                thresholds=tuple(curve.thresholds[i] for i in keep),
                model=tuple(float(curve.net_benefit[i] or 0.0) for i in keep),
                model_low=tuple(curve.net_benefit_low[i] for i in keep),
                model_high=tuple(curve.net_benefit_high[i] for i in keep),
                treat_all=tuple(float(curve.treat_all[i] or 0.0) for i in keep),
                prevalence=curve.prevalence,
                method=curve.method,
                level=curve.level,
                criterion_at=curve.criterion_at,
                table=tuple(
                    rc.DecisionCurveRow(
                        threshold=curve.thresholds[i],
                        model=curve.net_benefit[i],
                        model_low=curve.net_benefit_low[i],
                        model_high=curve.net_benefit_high[i],
                        treat_all=curve.treat_all[i],
                        treat_all_low=curve.treat_all_low[i],
                        treat_all_high=curve.treat_all_high[i],
                        avoided=curve.interventions_avoided[i],
                        avoided_low=curve.interventions_avoided_low[i],
                        avoided_high=curve.interventions_avoided_high[i],
                        judged=curve.judged_at(i),
                    )
                    for i in curve.tabulated()
                ),
            )
    operating_point = ""
    if op is not None:
        operating_point = op.description
        if op.deployment_prevalence is not None:
            operating_point += (
                "; PPV and NPV are also reported at the deployment prevalence "
                f"{op.deployment_prevalence:g}"
            )
    first = summaries[0] if summaries else None
    return rc.CalibrationSection(
        rows=rows,
        panels=panels,
        bins=first.bins if first is not None else 10,
        strategy=first.strategy if first is not None else "uniform",
        decision_curve=decision,
        operating_point=operating_point,
        note=" ".join(f"{n[0].upper()}{n[1:]}." for n in notes),
    )


def _rater_names(columns: Sequence[str]) -> list[str]:
    """Readers' names from their label columns (``reader1_malignant`` -> ``reader1``)."""
    return [c.split("_", 1)[0] if "_" in c else c for c in columns]


def _optional(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def detection_section(inputs: ReportInputs) -> rc.DetectionSection | None:
    """Matching and candidate rules, FROC/wAFROC curves, detection endpoints, lesion table.

    None for a run that is not a detection run.
    """
    protocol, results = inputs.protocol, inputs.results
    if protocol.task is not Task.DETECTION or protocol.matching is None:
        return None
    det = protocol.reference_standard.detection
    reference = ""
    if det is not None:
        reference = {
            "table": f"lesion table {det.table_path}",
            "sr": "DICOM SR measurement reports (TID 1500)",
            "seg_components": (
                f"connected components (26-connected, at least {det.min_voxels} voxels) of the "
                f"readers' SEG combined by {det.rule.value} of {', '.join(det.readers)}"
            ),
        }[det.source.value]
    candidates = protocol.candidates.describe() if protocol.candidates is not None else ""
    if not candidates and inputs.model.task in ("segmentation", "both"):
        candidates = "components (26-connected) of probability >= 0.5; score = maximum probability"
    rows = []
    for _, row in (inputs.lesions if inputs.lesions is not None else pd.DataFrame()).iterrows():
        matched = str(row.get("status")) == "matched"
        rows.append(
            rc.LesionRow(
                case_id=str(row["case_id"]),
                lesion_id=str(row["lesion_id"]),
                size_mm=_optional(row.get("diameter")),
                weight=_optional(row.get("lesion_weight")),
                matched=matched,
                mark_id=str(row.get("mark_id")) if matched else "",
                rating=_optional(row.get("rating")) if matched else None,
                iou=_optional(row.get("iou")) if matched else None,
                distance_mm=_optional(row.get("distance_mm")) if matched else None,
            )
        )
    endpoints = tuple(
        rc.AcceptanceRow(
            endpoint=e.display_name,
            criterion=e.criterion_text,
            estimate=_overall_estimate(e),
            verdict=e.overall_verdict,
            primary=e.primary,
            digits=_digits(e),
        )
        for e in results.endpoints
    )
    froc = results.froc
    note = inputs.detection_note
    if froc is None:
        note = "; ".join(n for n in (results.froc_reason, note) if n)
    return rc.DetectionSection(
        matching=protocol.matching.describe(),
        candidates=candidates,
        reference=reference,
        panels=tuple(inputs.froc_panels),
        endpoints=endpoints,
        lesions=tuple(rows),
        n_cases=froc.n_cases if froc is not None else 0,
        n_lesions=len(rows) if rows else (froc.n_lesions if froc is not None else 0),
        n_matched=sum(r.matched for r in rows),
        n_marks=froc.n_marks if froc is not None else 0,
        note=note,
    )


def acceptance_rows(inputs: ReportInputs) -> tuple[rc.AcceptanceRow, ...]:
    """The acceptance table: each endpoint overall, then each judged stratum."""
    rows = []
    for endpoint in inputs.results.endpoints:
        digits = _digits(endpoint)
        rows.append(
            rc.AcceptanceRow(
                endpoint=endpoint.display_name,
                criterion=endpoint.criterion_text,
                estimate=_overall_estimate(endpoint),
                verdict=endpoint.overall_verdict,
                primary=endpoint.primary,
                digits=digits,
                reason="" if endpoint.overall_verdict is Verdict.PASS else endpoint.reason,
            )
        )
        rows.extend(
            rc.AcceptanceRow(
                endpoint=endpoint.display_name,
                criterion=endpoint.subgroup_rule_text or endpoint.criterion_text,
                estimate=_stratum_estimate(s),
                verdict=s.verdict,
                primary=endpoint.primary,
                stratum=f"{s.factor} = {s.stratum}",
                digits=digits,
                reason="" if s.verdict is Verdict.PASS else s.reason,
            )
            for s in endpoint.strata
            if s.judged
        )
    return tuple(rows)


def adjudication_section(inputs: ReportInputs) -> rc.AdjudicationSummary:
    """Blinded decisions per discrepancy and the SECONDARY post-adjudication analysis."""
    adj = inputs.adjudication
    decisions = []
    for case in adj.cases:
        last = case.last_read
        shown = inputs.blinding.get(case.case_id, {})
        decisions.append(
            rc.AdjudicationDecision(
                case_id=case.case_id,
                kind=case.rule,
                model_output=f"shown as {shown.get('model', '?')}",
                reference=f"shown as {shown.get('reference', '?')}",
                decision=case.interpretation or "pending",
                adjudicator=f"{last.reviewer_name} ({last.reviewer})" if last else "",
                decided_at=last.at if last else None,
                rationale=last.comment if last else "",
            )
        )
    post = []
    if adj.secondary is not None:
        for endpoint in adj.secondary.evaluation.endpoints:
            post.append(
                rc.MetricResult(
                    key=f"{endpoint.endpoint_id} (secondary)",
                    label=_structure_label(metric_info(endpoint.metric).label, endpoint.structure)
                    + ", post-adjudication",
                    overall=_report_estimate(
                        endpoint.estimate, reason=endpoint.reason or "not estimable"
                    ),
                )
            )
    return rc.AdjudicationSummary(
        n_discrepancies=adj.n_discrepancies,
        n_adjudicated=adj.n_adjudicated,
        decisions=tuple(decisions),
        outcome_counts=dict(adj.counts),
        post_adjudication=tuple(post),
        note=(
            "Reviewers saw the model and reference outputs as A and B in a random order per case. "
            "The post-adjudication analysis is SECONDARY; acceptance uses the primary analysis."
        ),
    )


def audit_section(inputs: ReportInputs) -> tuple[rc.AuditEntry, ...]:
    """The audit entries of the run, its cases, its discrepancies and the report."""
    return tuple(
        rc.AuditEntry(
            sequence=e.seq,
            timestamp=e.ts,
            actor=e.actor,
            action=e.action,
            record_type=e.record_type,
            record_id=e.record_id or "",
            entry_hash=e.entry_hash,
            previous_hash=e.prev_hash,
        )
        for e in inputs.audit_entries
    )


def _deviations(inputs: ReportInputs) -> tuple[rc.Deviation, ...]:
    n_failed = inputs.results.accounting.n_failed
    if not n_failed:
        return ()
    return (
        rc.Deviation(
            deviation_id="D1",
            description=f"{n_failed} case(s) failed during inference or analysis.",
            impact=f"Handled per protocol ('failed_cases: {inputs.protocol.failed_cases.value}').",
        ),
    )


def _limitations(inputs: ReportInputs) -> tuple[str, ...]:
    stated = tuple(inputs.protocol.limitations) or (
        "Results apply to the population, scanners and protocol of this test set only.",
    )
    return (
        *stated,
        "Subgroups below the protocol's minimum n are reported as 'insufficient n' and not judged.",
        "Confidence intervals quantify sampling uncertainty only, not bias in the reference "
        "standard.",
    )


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return os.environ.get("WORKBENCH_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _manifest_entries(test_set: TestSet) -> dict[str, str]:
    if not test_set.manifest_json:
        return {}
    from workbench.dicom.manifest import Manifest

    return dict(Manifest.from_json(test_set.manifest_json).entries)


def per_case_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The per-case table attached to the report: JSON-ready values, NaN as None.

    Multi-structure runs add each structure's Dice, HD95, surface Dice and exclusion
    reason (``<structure>/dice``...); multi-class runs the model's predicted class.
    """
    extra = [
        c
        for c in frame.columns
        if str(c).endswith(("/dice", "/hd95", "/surface_dice", "/excluded"))
        or c == "predicted_class"
    ]
    keep = [c for c in PER_CASE_COLUMNS if c in frame] + extra
    rows = []
    for row in frame[keep].to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and v != v):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        rows.append(clean)
    return rows


def report_content(inputs: ReportInputs) -> rc.ReportContent:
    """Assemble the report's content from its sections."""
    run, pv, model, test_set = inputs.run, inputs.protocol_version, inputs.model, inputs.test_set
    env = run.environment or {}
    return rc.ReportContent(
        report_id=inputs.report_uid,
        title=f"Validation report: {model.name} {model.version} - {pv.title}",
        status=rc.ReportStatus.FINAL if inputs.final else rc.ReportStatus.DRAFT,
        created_at=inputs.created_at,
        author=inputs.author_name,
        model=rc.ModelInfo(
            name=model.name,
            version=model.version,
            sha256=model.digest,
            task=model.task,
            description=model.intended_use or "",
        ),
        protocol=rc.ProtocolInfo(
            protocol_id=pv.protocol_id,
            version=pv.version,
            sha256=pv.sha256,
            title=pv.title,
            yaml_text=pv.yaml_text,
            approved_by=pv.approved_by or "",
            approved_at=pv.approved_at,
        ),
        test_set=rc.TestSetInfo(
            name=test_set.name,
            manifest_digest=test_set.manifest_digest or "",
            locked_at=test_set.locked_at,
            locked_by=test_set.locked_by or "",
            manifest_entries=_manifest_entries(test_set),
        ),
        software=rc.SoftwareInfo(workbench_version=__version__, workbench_commit=_git_commit()),
        environment=rc.RunEnvironment(
            run_id=run.run_uid,
            device=run.device or "",
            platform=str(env.get("platform", "")),
            python=str(env.get("python", "")),
            packages={str(k): str(v) for k, v in (env.get("packages") or {}).items()},
            started_at=run.started_at,
            finished_at=run.finished_at,
        ),
        intended_use=inputs.protocol.intended_use,
        dataset=dataset_section(inputs),
        methods=methods_section(inputs),
        results=results_section(inputs),
        acceptance=acceptance_rows(inputs),
        deviations=_deviations(inputs),
        adjudication=adjudication_section(inputs),
        limitations=_limitations(inputs),
        required_signatures=tuple(
            rc.RequiredSignature(role=r.role.value, meaning=r.meaning)
            for r in inputs.protocol.signatures
        ),
        signatures=tuple(
            rc.SignatureEntry(
                printed_name=s.printed_name,
                username=s.username,
                role=s.role,
                meaning=s.meaning,
                signed_at=s.signed_at,
                signature_id=str(s.id),
                content_sha256=s.content_sha256,
            )
            for s in inputs.signatures
        ),
        audit_trail=audit_section(inputs),
        audit_chain_head=inputs.audit_head,
        per_case=tuple(per_case_rows(inputs.frame)),
        selected_cases=tuple(inputs.selected),
        verdict=inputs.results.verdict,
        verdict_reason=inputs.results.verdict_reason,
    )

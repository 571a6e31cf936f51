"""What a validation report says: the :class:`ReportContent` dataclass tree.

The service layer fills a :class:`ReportContent` from stored records; the
builder (:func:`workbench.reports.build_report`) turns it into a PDF without
looking anywhere else. Every field is a plain Python value (``str``, ``int``,
``float``, ``bool``, ``None``, ``datetime``, tuples, dicts of those), so the
whole tree converts to JSON with :meth:`ReportContent.to_dict` and back with
:meth:`ReportContent.from_dict`.

Missing or undefined numbers are never NaN: a :class:`ReportEstimate` carries
an explicit :class:`EstimateStatus` and a reason, and the report prints it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from workbench.errors import ReportError
from workbench.protocols.results import FrocSummary
from workbench.vocabulary import EstimateStatus, Verdict

__all__ = [
    "AcceptanceRow",
    "AdjudicationDecision",
    "AdjudicationSummary",
    "AgreementRow",
    "AuditEntry",
    "CalibrationPanel",
    "CalibrationRow",
    "CalibrationSection",
    "CaseNote",
    "DataQualitySummary",
    "WaivedFinding",
    "DatasetSummary",
    "DecisionCurve",
    "DetectionSection",
    "Deviation",
    "DistributionGroup",
    "EstimateStatus",
    "FactorCounts",
    "HeterogeneityTest",
    "LesionRow",
    "LevelCount",
    "MethodsSummary",
    "MetricMethod",
    "MetricResult",
    "ModelInfo",
    "PhiCheck",
    "ProtocolInfo",
    "QualityFinding",
    "ReaderInfo",
    "ReliabilityPoint",
    "ReportContent",
    "ReportEstimate",
    "ReportStatus",
    "RequiredSignature",
    "ResultsSection",
    "RocCurve",
    "RunEnvironment",
    "SelectedCase",
    "SignatureEntry",
    "SoftwareInfo",
    "StratumEstimate",
    "StratumSpec",
    "TestSetInfo",
    "ThresholdSpec",
    "Verdict",
    "canonical_json",
]

JsonScalar = str | int | float | bool | None
CaseRow = dict[str, JsonScalar]


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON (sorted keys, no whitespace, UTF-8).

    Parameters
    ----------
    value : Any
        A JSON-serialisable value (as returned by :meth:`ReportContent.to_dict`).

    Returns
    -------
    bytes
        The UTF-8 encoded canonical JSON text. NaN and infinities are refused.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class ReportStatus(StrEnum):
    """Whether the report is a draft (signatures may be missing) or final."""

    DRAFT = "draft"
    FINAL = "final"


class _Converting:
    """Mixin: converts ``str`` values of enum-typed fields once, at construction."""

    __slots__ = ()

    def _coerce_enum(self, name: str, enum_type: type[StrEnum]) -> None:
        value = getattr(self, name)
        if not isinstance(value, enum_type):
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                allowed = ", ".join(repr(v.value) for v in enum_type)
                raise ReportError(
                    f"{type(self).__name__}.{name} should be one of {allowed}. Found {value!r}."
                ) from None


def _require_utc(owner: str, name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ReportError(
            f"{owner}.{name} should be a timezone-aware datetime (UTC). "
            f"Found a naive datetime {value.isoformat()}."
        )


@dataclass(frozen=True, slots=True)
class ReportEstimate(_Converting):
    """A point estimate with its confidence interval, as printed in the report.

    Mirrors ``workbench.stats.Estimate`` (``value, ci_low, ci_high, level,
    method, n``) plus an explicit status for strata that could not be estimated.

    Parameters
    ----------
    value, ci_low, ci_high : float or None
        Point estimate and interval bounds; ``None`` unless ``status`` is ``ok``.
    level : float
        Confidence level of the interval (0.95 for a 95% CI).
    method : str
        Interval method, e.g. ``"delong"``, ``"wilson"``, ``"bootstrap"``.
    n : int
        Number of cases the estimate is based on.
    status : EstimateStatus or str
        ``ok``, ``insufficient_n`` or ``not_estimable``.
    reason : str
        Why the estimate is missing (shown in the report), e.g. ``"n=7 < 20"``.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    level: float = 0.95
    method: str = ""
    n: int = 0
    status: EstimateStatus = EstimateStatus.OK
    reason: str = ""

    def __post_init__(self) -> None:
        self._coerce_enum("status", EstimateStatus)
        if self.status is EstimateStatus.OK:
            if self.value is None or self.ci_low is None or self.ci_high is None:
                raise ReportError(
                    "An estimate with status 'ok' needs value, ci_low and ci_high. "
                    f"Found value={self.value!r}, ci_low={self.ci_low!r}, "
                    f"ci_high={self.ci_high!r}; use status 'not_estimable' with a reason."
                )
            for name in ("value", "ci_low", "ci_high"):
                number = getattr(self, name)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ReportError(
                        f"ReportEstimate.{name} should be a finite number. Found {number!r}; "
                        "use status 'not_estimable' with a reason instead."
                    )
        if not 0.0 < self.level < 1.0:
            raise ReportError(f"ReportEstimate.level should be in (0, 1). Found {self.level!r}.")

    @property
    def ok(self) -> bool:
        """True when the estimate has a value and an interval."""
        return self.status is EstimateStatus.OK

    @classmethod
    def from_estimate(cls, estimate: Any) -> ReportEstimate:
        """Copy a ``workbench.stats.Estimate`` (or anything with its attributes).

        Parameters
        ----------
        estimate : workbench.stats.Estimate
            Object with ``value, ci_low, ci_high, level, method, n``.

        Returns
        -------
        ReportEstimate
        """
        return cls(
            value=float(estimate.value),
            ci_low=float(estimate.ci_low),
            ci_high=float(estimate.ci_high),
            level=float(estimate.level),
            method=str(estimate.method),
            n=int(estimate.n),
        )

    @classmethod
    def missing(cls, status: EstimateStatus | str, reason: str, *, n: int = 0) -> ReportEstimate:
        """An estimate that could not be computed, with the reason shown in the report."""
        return cls(
            value=None, ci_low=None, ci_high=None, n=n, status=EstimateStatus(status), reason=reason
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The candidate model under validation."""

    name: str
    version: str
    sha256: str
    task: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """The approved validation protocol; ``yaml_text`` is attached to the PDF verbatim."""

    protocol_id: str
    version: str
    sha256: str
    title: str = ""
    yaml_text: str = ""
    approved_by: str = ""
    approved_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_utc("ProtocolInfo", "approved_at", self.approved_at)


@dataclass(frozen=True, slots=True)
class TestSetInfo:
    """The locked test set; ``manifest_entries`` maps relative path to SHA-256."""

    __test__ = False  # not a pytest test class

    name: str
    manifest_digest: str
    locked_at: datetime | None = None
    locked_by: str = ""
    manifest_entries: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_utc("TestSetInfo", "locked_at", self.locked_at)


@dataclass(frozen=True, slots=True)
class SoftwareInfo:
    """The workbench build that produced the results."""

    workbench_version: str
    workbench_commit: str


@dataclass(frozen=True, slots=True)
class RunEnvironment:
    """Where the run executed: device, platform and package versions."""

    run_id: str
    device: str
    platform: str = ""
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_utc("RunEnvironment", "started_at", self.started_at)
        _require_utc("RunEnvironment", "finished_at", self.finished_at)


@dataclass(frozen=True, slots=True)
class LevelCount:
    """Number of cases at one level of a factor (e.g. scanner ``A``)."""

    level: str
    n_cases: int


@dataclass(frozen=True, slots=True)
class FactorCounts:
    """Case counts per level of one factor (scanner, sex, age band)."""

    factor: str
    levels: tuple[LevelCount, ...]


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    """A reader contributing to the reference standard."""

    reader_id: str
    role: str
    qualification: str = ""


@dataclass(frozen=True, slots=True)
class CaseNote:
    """A case that was excluded or failed, with the reason."""

    case_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """Summary line of one data-quality check."""

    check: str
    severity: str
    count: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class WaivedFinding:
    """A finding the gate let through on an e-signed waiver, and who signed it."""

    finding_id: str
    check: str
    severity: str
    path: str
    attribute: str
    justification: str
    signed_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DataQualitySummary:
    """Data-quality gate outcome for the test set, as the gate decided it (waivers included).

    ``passed`` is the gate: open when no critical finding is left unwaived. ``suite``,
    ``task`` and ``ocr`` are those of the check that ran.
    """

    passed: bool
    findings: tuple[QualityFinding, ...] = ()
    suite: str = ""
    waived: tuple[WaivedFinding, ...] = ()
    task: str = ""
    ocr: bool = False


@dataclass(frozen=True, slots=True)
class PhiCheck:
    """Outcome of the PHI / de-identification check over every header."""

    passed: bool
    files_checked: int
    findings: int
    summary: str = ""


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What the test set contains and which cases entered the analysis."""

    n_cases: int
    n_series: int
    n_files: int
    counts: tuple[FactorCounts, ...]
    reference_standard: str
    readers: tuple[ReaderInfo, ...]
    inclusion_criteria: tuple[str, ...]
    exclusion_criteria: tuple[str, ...]
    n_included: int
    excluded_cases: tuple[CaseNote, ...]
    failed_cases: tuple[CaseNote, ...]
    quality: DataQualitySummary
    phi_check: PhiCheck


@dataclass(frozen=True, slots=True)
class MetricMethod:
    """How one metric and its confidence interval are computed."""

    metric: str
    definition: str
    ci_method: str


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """An operating threshold fixed by the protocol (e.g. score >= 0.5 is positive)."""

    name: str
    value: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class StratumSpec:
    """A stratification factor and the minimum n for a stratum to be estimated."""

    factor: str
    levels: tuple[str, ...]
    min_n: int


@dataclass(frozen=True, slots=True)
class MethodsSummary:
    """Statistical methods prespecified by the protocol."""

    metrics: tuple[MetricMethod, ...]
    ci_level: float
    thresholds: tuple[ThresholdSpec, ...]
    strata: tuple[StratumSpec, ...]
    multiplicity: str
    primary_analysis: str = ""
    software: str = ""


@dataclass(frozen=True, slots=True)
class StratumEstimate:
    """The estimate of one metric in one stratum (e.g. AUC for scanner ``B``)."""

    factor: str
    level: str
    estimate: ReportEstimate


@dataclass(frozen=True, slots=True)
class MetricResult(_Converting):
    """One metric overall and per stratum, with its acceptance line.

    Parameters
    ----------
    key : str
        Machine name, e.g. ``"auc"``.
    label : str
        Printed name, e.g. ``"AUC"``.
    overall : ReportEstimate
        Estimate over all included cases.
    per_stratum : tuple of StratumEstimate
        Estimates per stratum, in print order.
    threshold : float or None
        Acceptance threshold the lower CI bound is compared with (forest-plot line).
    direction : str
        ``">="`` when higher is better, ``"<="`` when lower is better.
    digits : int
        Decimals used everywhere the metric is printed.
    """

    key: str
    label: str
    overall: ReportEstimate
    per_stratum: tuple[StratumEstimate, ...] = ()
    threshold: float | None = None
    direction: str = ">="
    digits: int = 3
    unit: str = ""

    def __post_init__(self) -> None:
        if self.direction not in (">=", "<="):
            raise ReportError(
                f"MetricResult.direction should be '>=' or '<='. Found {self.direction!r}."
            )


@dataclass(frozen=True, slots=True)
class HeterogeneityTest:
    """A test of heterogeneity of one metric across the levels of one factor."""

    metric: str
    factor: str
    statistic: float
    df: int
    p_value: float
    method: str


@dataclass(frozen=True, slots=True)
class RocCurve:
    """An empirical ROC curve with a pointwise confidence band.

    ``fpr``, ``tpr``, ``tpr_low`` and ``tpr_high`` have equal length; ``fpr``
    is non-decreasing from 0 to 1.
    """

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    tpr_low: tuple[float, ...]
    tpr_high: tuple[float, ...]
    auc: ReportEstimate
    band_method: str = ""
    operating_point: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        lengths = {len(self.fpr), len(self.tpr), len(self.tpr_low), len(self.tpr_high)}
        if len(lengths) != 1 or len(self.fpr) < 2:
            raise ReportError(
                "RocCurve needs fpr, tpr, tpr_low and tpr_high of one equal length >= 2. "
                f"Found lengths {len(self.fpr)}, {len(self.tpr)}, {len(self.tpr_low)}, "
                f"{len(self.tpr_high)}."
            )


@dataclass(frozen=True, slots=True)
class DistributionGroup:
    """Per-case values of one metric in one group (e.g. Dice on scanner ``A``)."""

    label: str
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class AgreementRow:
    """One agreement statistic (inter-reader or model-reader kappa)."""

    comparison: str
    kind: str
    statistic: str
    estimate: ReportEstimate


@dataclass(frozen=True, slots=True)
class ReliabilityPoint:
    """One bin of a reliability diagram: mean prediction against the observed fraction."""

    mean_predicted: float
    observed: float
    observed_low: float
    observed_high: float
    n: int


@dataclass(frozen=True, slots=True)
class CalibrationPanel:
    """A reliability diagram of one group of cases (overall or one scanner).

    ``curve_*`` hold the smoothed (spline) calibration curve and its band; empty
    when the curve is not estimable.
    """

    label: str
    n: int
    events: int
    points: tuple[ReliabilityPoint, ...]
    curve_predicted: tuple[float, ...] = ()
    curve_observed: tuple[float, ...] = ()
    curve_low: tuple[float, ...] = ()
    curve_high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        lengths = {
            len(self.curve_predicted),
            len(self.curve_observed),
            len(self.curve_low),
            len(self.curve_high),
        }
        if len(lengths) != 1:
            raise ReportError(
                "CalibrationPanel needs curve_predicted, curve_observed, curve_low and "
                f"curve_high of one equal length. Found lengths {sorted(lengths)}."
            )


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    """Calibration summary of one group: intercept, slope, Brier score and ECE with CIs."""

    group: str
    n: int
    intercept: ReportEstimate
    slope: ReportEstimate
    brier: ReportEstimate
    ece: ReportEstimate


@dataclass(frozen=True, slots=True)
class DecisionCurveRow:
    """One tabulated threshold of a decision curve, each value with its interval.

    Parameters
    ----------
    threshold : float
        Threshold probability p_t.
    model, model_low, model_high : float or None
        Net benefit of acting on the model.
    treat_all, treat_all_low, treat_all_high : float or None
        Net benefit of treating everyone.
    avoided, avoided_low, avoided_high : float or None
        Net interventions avoided per 100 patients against treat-all.
    judged : bool
        Whether the protocol's net-benefit criterion is judged at this threshold.
    """

    threshold: float
    model: float | None
    model_low: float | None
    model_high: float | None
    treat_all: float | None
    treat_all_low: float | None
    treat_all_high: float | None
    avoided: float | None
    avoided_low: float | None
    avoided_high: float | None
    judged: bool = False


@dataclass(frozen=True, slots=True)
class DecisionCurve:
    """Net benefit of the model, treat-all and treat-none over threshold probabilities.

    ``None`` in ``model_low``/``model_high`` marks an interval that is undefined
    at that threshold.
    """

    thresholds: tuple[float, ...]
    model: tuple[float, ...]
    model_low: tuple[float | None, ...]
    model_high: tuple[float | None, ...]
    treat_all: tuple[float, ...]
    prevalence: float
    method: str = ""
    level: float = 0.95
    criterion_at: float | None = None
    table: tuple[DecisionCurveRow, ...] = ()

    def __post_init__(self) -> None:
        lengths = {
            len(self.thresholds),
            len(self.model),
            len(self.model_low),
            len(self.model_high),
            len(self.treat_all),
        }
        if len(lengths) != 1 or len(self.thresholds) < 2:
            raise ReportError(
                "DecisionCurve needs thresholds, model, model_low, model_high and treat_all "
                f"of one equal length >= 2. Found lengths {sorted(lengths)}."
            )


@dataclass(frozen=True, slots=True)
class CalibrationSection:
    """Calibration and clinical utility: reliability diagrams, summary table, decision curve.

    Parameters
    ----------
    rows : tuple of CalibrationRow
        Overall first, then per stratum.
    panels : tuple of CalibrationPanel
        Reliability diagrams, overall first.
    bins : int
    strategy : str
        ``uniform`` (equal-width) or ``quantile`` (equal-mass) bins.
    decision_curve : DecisionCurve or None
    operating_point : str
        The locked operating point in words ('' when none).
    note : str
        Why a part is missing (e.g. the scores are not probabilities).
    """

    rows: tuple[CalibrationRow, ...] = ()
    panels: tuple[CalibrationPanel, ...] = ()
    bins: int = 10
    strategy: str = "uniform"
    decision_curve: DecisionCurve | None = None
    operating_point: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class LesionRow:
    """One reference lesion of a detection run and the mark that localised it.

    Parameters
    ----------
    case_id, lesion_id : str
    size_mm : float or None
        The lesion's diameter.
    weight : float or None
        Its weight (relative within its case).
    matched : bool
        Whether a kept mark localises it under the locked matching rule.
    mark_id : str
        The matching mark ('' when missed).
    rating : float or None
        The matching mark's score.
    iou, distance_mm : float or None
        IoU of the matched boxes and distance of their centres.
    """

    case_id: str
    lesion_id: str
    size_mm: float | None
    weight: float | None
    matched: bool
    mark_id: str = ""
    rating: float | None = None
    iou: float | None = None
    distance_mm: float | None = None


@dataclass(frozen=True, slots=True)
class DetectionSection:
    """The detection part of the results: rules, FROC/wAFROC curves, endpoints, lesions.

    Parameters
    ----------
    matching : str
        The locked matching rule in words.
    candidates : str
        How a segmentation model's probability map became marks ('' for a model that
        emits marks).
    reference : str
        Where the reference lesions came from.
    panels : tuple of (str, FrocSummary)
        The run's curves first (labelled with its model), then those of other candidates
        validated under the same protocol on the same test set, for comparison.
    endpoints : tuple of AcceptanceRow
        The detection endpoints overall.
    lesions : tuple of LesionRow
        Every reference lesion of the analysed cases.
    n_cases, n_lesions, n_matched, n_marks : int
    note : str
        Why the curves are missing ('' otherwise).
    """

    matching: str
    candidates: str
    reference: str
    panels: tuple[tuple[str, FrocSummary], ...] = ()
    endpoints: tuple[AcceptanceRow, ...] = ()
    lesions: tuple[LesionRow, ...] = ()
    n_cases: int = 0
    n_lesions: int = 0
    n_matched: int = 0
    n_marks: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class ResultsSection:
    """Primary results: metrics, figures' data and agreement.

    ``calibration`` is the calibration and decision-curve section of a
    classification run (None when the run has none); ``detection`` the detection
    section of a detection run.
    """

    metrics: tuple[MetricResult, ...]
    heterogeneity: tuple[HeterogeneityTest, ...] = ()
    roc: RocCurve | None = None
    distribution_metric: str = ""
    distributions: tuple[DistributionGroup, ...] = ()
    agreement: tuple[AgreementRow, ...] = ()
    calibration: CalibrationSection | None = None
    detection: DetectionSection | None = None


@dataclass(frozen=True, slots=True)
class AcceptanceRow(_Converting):
    """One row of the acceptance table."""

    endpoint: str
    criterion: str
    estimate: ReportEstimate
    verdict: Verdict
    primary: bool = True
    stratum: str = "overall"
    digits: int = 3
    reason: str = ""

    def __post_init__(self) -> None:
        self._coerce_enum("verdict", Verdict)


@dataclass(frozen=True, slots=True)
class Deviation:
    """A deviation from the approved protocol."""

    deviation_id: str
    description: str
    impact: str
    approved_by: str = ""


@dataclass(frozen=True, slots=True)
class AdjudicationDecision:
    """One discrepancy between model and reference and its blinded adjudication."""

    case_id: str
    kind: str
    model_output: str
    reference: str
    decision: str
    adjudicator: str
    decided_at: datetime | None
    rationale: str = ""

    def __post_init__(self) -> None:
        _require_utc("AdjudicationDecision", "decided_at", self.decided_at)


@dataclass(frozen=True, slots=True)
class AdjudicationSummary:
    """Discrepancies, decisions and the (secondary) post-adjudication analysis."""

    n_discrepancies: int
    n_adjudicated: int
    decisions: tuple[AdjudicationDecision, ...]
    outcome_counts: dict[str, int] = field(default_factory=dict)
    post_adjudication: tuple[MetricResult, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class RequiredSignature:
    """A signature the protocol requires on the report (role and meaning)."""

    role: str
    meaning: str


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """An applied electronic signature (21 CFR 11.50 manifestation)."""

    printed_name: str
    username: str
    role: str
    meaning: str
    signed_at: datetime
    signature_id: str = ""
    content_sha256: str = ""

    def __post_init__(self) -> None:
        _require_utc("SignatureEntry", "signed_at", self.signed_at)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit-trail entry of this run, with its chained hash."""

    sequence: int
    timestamp: datetime
    actor: str
    action: str
    record_type: str
    record_id: str
    entry_hash: str
    previous_hash: str

    def __post_init__(self) -> None:
        _require_utc("AuditEntry", "timestamp", self.timestamp)


@dataclass(frozen=True, slots=True)
class SelectedCase:
    """A case a QA author chose from the case explorer for the report's appendix.

    Parameters
    ----------
    case_id : str
    png_path : str
        The exported view (overlays and legend) as PNG.
    png_sha256 : str
        SHA-256 recorded in the audit trail when the view was selected; the builder
        refuses a file that no longer has it.
    note : str
        The author's note.
    selected_by : str
    metrics : tuple of (str, str)
        The case's figures as printed.
    """

    case_id: str
    png_path: str
    png_sha256: str
    note: str = ""
    selected_by: str = ""
    metrics: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ReportContent(_Converting):
    """Everything a validation report shows, filled by the service layer.

    The builder reads nothing else: two equal ``ReportContent`` values give
    byte-identical PDFs (``created_at`` is the PDF creation date).

    Parameters
    ----------
    report_id : str
        Identifier printed on every page and stored in the attachments.
    title : str
        Document title (PDF metadata and title page).
    status : ReportStatus or str
        ``draft`` (missing signatures shown as placeholders) or ``final``.
    created_at : datetime
        Timezone-aware creation time; used as the PDF creation date.
    author : str
        Printed name of the report author (PDF metadata).
    per_case : tuple of dict
        One row per case (plain scalars); attached as CSV, not printed in full.
    selected_cases : tuple of SelectedCase
        Views a QA author chose from the case explorer, printed in an appendix.
    verdict : Verdict, optional
        The run's verdict as the protocol concludes it (a not-evaluable primary
        endpoint counted as its ``not_evaluable_counts_as`` says).
    verdict_reason : str
        Why the verdict is not PASS, as the evaluation states it.
    """

    report_id: str
    title: str
    status: ReportStatus
    created_at: datetime
    author: str
    model: ModelInfo
    protocol: ProtocolInfo
    test_set: TestSetInfo
    software: SoftwareInfo
    environment: RunEnvironment
    intended_use: str
    dataset: DatasetSummary
    methods: MethodsSummary
    results: ResultsSection
    acceptance: tuple[AcceptanceRow, ...]
    deviations: tuple[Deviation, ...]
    adjudication: AdjudicationSummary
    limitations: tuple[str, ...]
    required_signatures: tuple[RequiredSignature, ...]
    signatures: tuple[SignatureEntry, ...]
    audit_trail: tuple[AuditEntry, ...]
    audit_chain_head: str
    per_case: tuple[CaseRow, ...] = ()
    selected_cases: tuple[SelectedCase, ...] = ()
    verdict: Verdict | None = None
    verdict_reason: str = ""

    def __post_init__(self) -> None:
        self._coerce_enum("status", ReportStatus)
        if self.verdict is not None:
            self._coerce_enum("verdict", Verdict)
        _require_utc("ReportContent", "created_at", self.created_at)
        if self.created_at is None:
            raise ReportError("ReportContent.created_at is required. Found None.")
        if not self.report_id.strip():
            raise ReportError("ReportContent.report_id should be a non-empty string. Found ''.")

    # -- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the content as JSON-serialisable dicts, lists and scalars.

        Datetimes become ISO-8601 strings in UTC, enums their values, tuples lists.
        """
        result = _to_jsonable(self)
        assert isinstance(result, dict)
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportContent:
        """Rebuild a :class:`ReportContent` from :meth:`to_dict` output.

        Raises
        ------
        ReportError
            When a field is missing or has the wrong type.
        """
        result = _from_jsonable(cls, data, "ReportContent")
        assert isinstance(result, ReportContent)
        return result

    def results_document(self, per_case_csv_sha256: str) -> dict[str, Any]:
        """The ``results.json`` attachment: everything the numbers depend on.

        Signatures and the audit trail are left out on purpose: signatures
        sign the SHA-256 of this document, so it cannot contain them.

        Parameters
        ----------
        per_case_csv_sha256 : str
            SHA-256 of the attached per-case CSV, so that this document's hash
            also covers the per-case data.
        """
        full = self.to_dict()
        for key in ("signatures", "audit_trail", "audit_chain_head", "per_case", "status"):
            full.pop(key)
        full["protocol"].pop("yaml_text")
        full["test_set"].pop("manifest_entries")
        full["schema"] = "workbench.report-results/1"
        full["per_case_csv_sha256"] = per_case_csv_sha256
        return full


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, tuple | list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    return value


def _from_jsonable(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _from_jsonable(non_none[0], data, where)
        return data  # scalar unions (JsonScalar) pass through
    if tp is Any:
        return data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ReportError(f"{where} should be an object. Found {type(data).__name__}.")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _from_jsonable(hints[f.name], data[f.name], f"{where}.{f.name}")
        try:
            return tp(**kwargs)
        except TypeError as error:
            raise ReportError(f"{where} cannot be built: {error}.") from None
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list | tuple):
            raise ReportError(f"{where} should be a list. Found {type(data).__name__}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        return tuple(
            _from_jsonable(a, v, f"{where}[{i}]")
            for i, (a, v) in enumerate(zip(args, data, strict=True))
        )
    if origin is dict:
        if not isinstance(data, dict):
            raise ReportError(f"{where} should be an object. Found {type(data).__name__}.")
        _, value_type = typing.get_args(tp)
        return {k: _from_jsonable(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if tp is datetime:
        if not isinstance(data, str):
            raise ReportError(f"{where} should be an ISO-8601 string. Found {data!r}.")
        return datetime.fromisoformat(data)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return tp(data)
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()

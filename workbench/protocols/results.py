"""The typed result of a validation run, from evaluation to report.

One object travels the whole way: :func:`~workbench.protocols.evaluate_endpoints`
returns a :class:`ProtocolEvaluation`, the run service wraps it with the case
accounting and the supplementary analyses into a :class:`RunResults`, stores
``RunResults.to_dict()`` (and its SHA-256) and reads it back with
:meth:`RunResults.from_dict`. The CLI, the app, the report and the notebooks
render these objects; nothing outside this module reads the stored dict.

Versions
--------
``schema_version`` 2 (this release). Results stored by release 0.1 carry no
``schema_version`` (version 1); :meth:`RunResults.from_dict` migrates them on
read: upper-case verdict spellings (``"PASS"``, ``"NOT_ESTIMABLE"``) become
:class:`~workbench.vocabulary.Verdict` members, strata without an estimate get
an explicit :class:`~workbench.vocabulary.EstimateStatus`. The stored record is
never rewritten: its SHA-256 stays the one that was signed.

Multi-structure segmentation adds two optional parts within version 2: an
endpoint's ``structure`` and the accounting's ``structures``
(:class:`StructureAccounting`). Both are written only when present, so
single-structure results keep the layout they had, and results stored before
them read back with ``structure=None`` and no structure accounting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ProtocolError
from workbench.stats import Estimate
from workbench.vocabulary import CaseStatus, EstimateStatus, Verdict

__all__ = [
    "SCHEMA_VERSION",
    "AgreementResult",
    "CalibrationSummary",
    "CaseAccounting",
    "CaseNote",
    "DecisionCurveSummary",
    "EndpointResult",
    "FrocSummary",
    "HeterogeneityResult",
    "OperatingPointSummary",
    "ProtocolEvaluation",
    "ReliabilityBin",
    "RocSummary",
    "RunContext",
    "RunResults",
    "StratumResult",
    "StructureAccounting",
    "SupplementaryAnalyses",
    "estimate_from_dict",
    "estimate_to_dict",
]

#: Version of the layout written by :meth:`RunResults.to_dict`.
SCHEMA_VERSION = 2


def _finite(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, StrEnum):
        return obj.value
    return _finite(obj)


def _or(data: Mapping[str, Any], key: str, default: Any) -> Any:
    """``data[key]``, or ``default`` when the key is missing or null (zero stays zero)."""
    value = data.get(key)
    return default if value is None else value


def estimate_to_dict(estimate: Estimate | None) -> dict[str, Any] | None:
    """An :class:`~workbench.stats.Estimate` as a JSON-ready dict (``None`` stays ``None``)."""
    return None if estimate is None else _jsonable(estimate.as_dict())


def estimate_from_dict(data: Mapping[str, Any] | None) -> Estimate | None:
    """Inverse of :func:`estimate_to_dict`; ``None`` when a bound or the value is missing."""
    if not data or any(data.get(k) is None for k in ("value", "ci_low", "ci_high")):
        return None
    se = data.get("se")
    return Estimate(
        value=float(data["value"]),
        ci_low=float(data["ci_low"]),
        ci_high=float(data["ci_high"]),
        level=float(_or(data, "level", 0.95)),
        method=str(_or(data, "method", "")),
        n=int(_or(data, "n", 0)),
        se=None if se is None else float(se),
    )


# -- per endpoint -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StratumResult:
    """One endpoint estimated in one stratum.

    Parameters
    ----------
    factor, stratum : str
        The stratum factor (``manufacturer``) and level (``"Acme"``).
    n : int
        Cases in the stratum.
    estimate : Estimate or None
        ``None`` when not estimable (see ``status`` and ``reason``).
    level : float
        CI level used (multiplicity-adjusted for judged strata).
    verdict : Verdict
        PASS/FAIL/NOT_EVALUABLE for judged strata, NOT_ASSESSED for reported-only ones.
    reason : str
        Why the stratum is not assessed, not evaluable or failed ('' when it passed).
    status : EstimateStatus
        ``ok``, ``insufficient_n`` (n below the factor's min_n and no estimate) or
        ``not_estimable``.
    """

    factor: str
    stratum: str
    n: int
    estimate: Estimate | None
    level: float
    verdict: Verdict
    reason: str
    status: EstimateStatus

    @property
    def judged(self) -> bool:
        """Whether the subgroup rule judged this stratum."""
        return self.verdict is not Verdict.NOT_ASSESSED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable(
            {
                "factor": self.factor,
                "stratum": self.stratum,
                "n": self.n,
                "estimate": estimate_to_dict(self.estimate),
                "level": self.level,
                "verdict": self.verdict,
                "reason": self.reason,
                "status": self.status,
            }
        )

    def row(self) -> dict[str, Any]:
        """One flat table row: factor, stratum, n, value, CI, method, level, verdict, reason."""
        est = self.estimate
        return {
            "factor": self.factor,
            "stratum": self.stratum,
            "n": self.n,
            "value": None if est is None else est.value,
            "ci_low": None if est is None else est.ci_low,
            "ci_high": None if est is None else est.ci_high,
            "method": None if est is None else est.method,
            "level": self.level,
            "verdict": self.verdict.label,
            "reason": self.reason,
            "status": self.status.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StratumResult:
        """Read :meth:`to_dict`'s form, or a stratum record of schema version 1."""
        n = int(_or(data, "n", 0))
        level = float(_or(data, "level", 0.95))
        if "estimate" in data:
            estimate = estimate_from_dict(data["estimate"])
        else:  # schema version 1: the estimate's fields flat in the stratum record
            estimate = estimate_from_dict(
                {**data, "n": n, "level": level, "method": _or(data, "method", "")}
            )
        verdict = Verdict.parse(data.get("verdict") or Verdict.NOT_ASSESSED)
        reason = str(_or(data, "reason", ""))
        if "status" in data:
            status = EstimateStatus(data["status"])
        elif estimate is not None:
            status = EstimateStatus.OK
        elif "insufficient" in reason.lower() or "< min_n" in reason:
            # Schema version 1 kept no status; its reason named the min_n rule.
            status = EstimateStatus.INSUFFICIENT_N
        elif verdict is Verdict.NOT_ASSESSED:
            status = EstimateStatus.INSUFFICIENT_N
        else:
            status = EstimateStatus.NOT_ESTIMABLE
        return cls(
            factor=str(data["factor"]),
            stratum=str(data["stratum"]),
            n=n,
            estimate=estimate,
            level=level,
            verdict=verdict,
            reason=reason,
            status=status,
        )


@dataclass(frozen=True, slots=True)
class EndpointResult:
    """One endpoint evaluated overall and per stratum.

    Parameters
    ----------
    endpoint_id, metric : str
        From the protocol.
    primary : bool
        Whether the endpoint decides the protocol's verdict.
    estimate : Estimate or None
        Overall estimate with its CI (None when not estimable).
    criterion_text : str
        The criterion in words.
    overall_verdict : Verdict
        The criterion applied to ``estimate``.
    subgroup_rule_text : str or None
        The subgroup rule in words, when the rule applies to this endpoint.
    strata : tuple of StratumResult
        Every stratum of every factor, in protocol order.
    verdict : Verdict
        Overall and subgroup verdicts combined: FAIL if either fails,
        NOT_EVALUABLE if the overall estimate or a judged stratum is not estimable.
    reason : str
        Why the endpoint is not evaluable or failed ('' when it passed).
    n_cases : int
        Cases in the overall analysis.
    operating_threshold : float or None
        Score threshold of threshold metrics.
    structure : str or None
        The structure a multi-structure segmentation endpoint evaluates (None otherwise).
    """

    endpoint_id: str
    metric: str
    primary: bool
    estimate: Estimate | None
    criterion_text: str
    overall_verdict: Verdict
    subgroup_rule_text: str | None
    strata: tuple[StratumResult, ...]
    verdict: Verdict
    reason: str
    n_cases: int
    operating_threshold: float | None = None
    structure: str | None = None

    @property
    def display_name(self) -> str:
        """The endpoint as tables and figures name it: ``id`` or ``id (structure)``."""
        if self.structure is None:
            return self.endpoint_id
        return f"{self.endpoint_id} ({self.structure})"

    def strata_of(self, factor: str) -> tuple[StratumResult, ...]:
        """The strata of one factor."""
        return tuple(s for s in self.strata if s.factor == factor)

    def stratum(self, factor: str, level: str) -> StratumResult:
        """One stratum by factor and level."""
        for s in self.strata:
            if s.factor == factor and s.stratum == level:
                return s
        known = [f"{s.factor}={s.stratum}" for s in self.strata]
        raise KeyError(f"no stratum {factor}={level}; expected one of {known}")

    def strata_frame(self) -> pd.DataFrame:
        """The strata as a DataFrame: one :meth:`StratumResult.row` per stratum."""
        columns = list(_STRATUM_COLUMNS)
        return pd.DataFrame.from_records([s.row() for s in self.strata], columns=columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN and infinities become None)."""
        data: dict[str, Any] = _jsonable(
            {
                "endpoint_id": self.endpoint_id,
                "metric": self.metric,
                "primary": self.primary,
                "estimate": estimate_to_dict(self.estimate),
                "criterion_text": self.criterion_text,
                "overall_verdict": self.overall_verdict,
                "subgroup_rule_text": self.subgroup_rule_text,
                "strata": [s.to_dict() for s in self.strata],
                "verdict": self.verdict,
                "reason": self.reason,
                "n_cases": self.n_cases,
                "operating_threshold": self.operating_threshold,
            }
        )
        if self.structure is not None:  # single-structure results keep their stored form
            data["structure"] = self.structure
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndpointResult:
        """Read :meth:`to_dict`'s form (schema version 1 or 2)."""
        threshold = data.get("operating_threshold")
        return cls(
            endpoint_id=str(data["endpoint_id"]),
            metric=str(data["metric"]),
            primary=bool(data.get("primary", True)),
            estimate=estimate_from_dict(data.get("estimate")),
            criterion_text=str(_or(data, "criterion_text", "")),
            overall_verdict=Verdict.parse(data["overall_verdict"]),
            subgroup_rule_text=data.get("subgroup_rule_text"),
            strata=tuple(StratumResult.from_dict(s) for s in data.get("strata") or ()),
            verdict=Verdict.parse(data["verdict"]),
            reason=str(_or(data, "reason", "")),
            n_cases=int(_or(data, "n_cases", 0)),
            operating_threshold=None if threshold is None else float(threshold),
            structure=None if data.get("structure") is None else str(data["structure"]),
        )


_STRATUM_COLUMNS = (
    "factor",
    "stratum",
    "n",
    "value",
    "ci_low",
    "ci_high",
    "method",
    "level",
    "verdict",
    "reason",
    "status",
)


@dataclass(frozen=True, slots=True)
class ProtocolEvaluation:
    """Every endpoint of a protocol evaluated on one run's cases.

    Parameters
    ----------
    protocol_id, protocol_version, protocol_sha256 : str, int, str
        Which protocol was applied.
    task : str
        ``segmentation`` or ``classification``.
    verdict : Verdict
        PASS when every primary endpoint passes; FAIL when one fails;
        NOT_EVALUABLE otherwise, unless the protocol counts a not-evaluable
        primary endpoint as FAIL (``not_evaluable_counts_as``).
    verdict_reason : str
        Why the verdict is not PASS ('' when it is).
    endpoints : tuple of EndpointResult
        In protocol order.
    n_cases_total, n_analysed : int
        Rows in the cases frame; cases in the overall analysis.
    failed_case_ids, excluded_case_ids : tuple of str
        Cases the model failed on; cases excluded from the analysis.
    failed_cases_policy : str
        The protocol's ``failed_cases`` setting.
    notes : tuple of str
        How individual cases were handled (missing values counted as worst...).
    """

    protocol_id: str
    protocol_version: int
    protocol_sha256: str
    task: str
    verdict: Verdict
    endpoints: tuple[EndpointResult, ...]
    n_cases_total: int
    n_analysed: int
    failed_case_ids: tuple[str, ...]
    excluded_case_ids: tuple[str, ...]
    failed_cases_policy: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    verdict_reason: str = ""

    def __iter__(self) -> Iterator[EndpointResult]:
        return iter(self.endpoints)

    def endpoint(self, endpoint_id: str) -> EndpointResult:
        """Return the result of one endpoint by id."""
        for res in self.endpoints:
            if res.endpoint_id == endpoint_id:
                return res
        known = [r.endpoint_id for r in self.endpoints]
        raise KeyError(f"no endpoint {endpoint_id!r}; expected one of {known}")

    @property
    def primary(self) -> tuple[EndpointResult, ...]:
        """The primary endpoints."""
        return tuple(e for e in self.endpoints if e.primary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for storage and the report."""
        return _jsonable(
            {
                "protocol_id": self.protocol_id,
                "protocol_version": self.protocol_version,
                "protocol_sha256": self.protocol_sha256,
                "task": self.task,
                "verdict": self.verdict,
                "verdict_reason": self.verdict_reason,
                "endpoints": [e.to_dict() for e in self.endpoints],
                "n_cases_total": self.n_cases_total,
                "n_analysed": self.n_analysed,
                "failed_case_ids": list(self.failed_case_ids),
                "excluded_case_ids": list(self.excluded_case_ids),
                "failed_cases_policy": self.failed_cases_policy,
                "notes": list(self.notes),
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtocolEvaluation:
        """Read :meth:`to_dict`'s form (schema version 1 or 2)."""
        endpoints = tuple(EndpointResult.from_dict(e) for e in data.get("endpoints") or ())
        verdict = Verdict.parse(data["verdict"])
        if "verdict_reason" in data:
            reason = str(data["verdict_reason"] or "")
        else:  # schema version 1 kept no reason: name the primary endpoints that did not pass
            reason = _verdict_reason(endpoints) if verdict is not Verdict.PASS else ""
        return cls(
            protocol_id=str(data["protocol_id"]),
            protocol_version=int(data["protocol_version"]),
            protocol_sha256=str(data["protocol_sha256"]),
            task=str(data["task"]),
            verdict=verdict,
            verdict_reason=reason,
            endpoints=endpoints,
            n_cases_total=int(_or(data, "n_cases_total", 0)),
            n_analysed=int(_or(data, "n_analysed", 0)),
            failed_case_ids=tuple(str(c) for c in data.get("failed_case_ids") or ()),
            excluded_case_ids=tuple(str(c) for c in data.get("excluded_case_ids") or ()),
            failed_cases_policy=str(_or(data, "failed_cases_policy", "")),
            notes=tuple(str(n) for n in data.get("notes") or ()),
        )


def _verdict_reason(endpoints: tuple[EndpointResult, ...]) -> str:
    """The primary endpoints that did not pass, with their reasons, in one line."""
    parts = [
        f"{e.endpoint_id} {e.verdict.label}" + (f" ({e.reason})" if e.reason else "")
        for e in endpoints
        if e.primary and e.verdict is not Verdict.PASS
    ]
    return "; ".join(parts)


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseNote:
    """A case and why it was excluded or failed."""

    case_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StructureAccounting:
    """Which cases one structure of a multi-structure protocol lost, and why.

    Parameters
    ----------
    structure : str
    n_cases : int
        Cases not excluded as a whole (the cases the structure could have).
    excluded : tuple of CaseNote
        Cases whose reference lacks the structure, with the reason; they are left out
        of the structure's endpoints only.
    """

    structure: str
    n_cases: int
    excluded: tuple[CaseNote, ...] = ()

    @property
    def n_analysed(self) -> int:
        """Cases the structure's endpoints analyse (before the failed-case policy)."""
        return self.n_cases - len(self.excluded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "structure": self.structure,
            "n_cases": self.n_cases,
            "excluded": [{"case_id": n.case_id, "reason": n.reason} for n in self.excluded],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StructureAccounting:
        """Read :meth:`to_dict`'s form."""
        return cls(
            structure=str(data["structure"]),
            n_cases=int(_or(data, "n_cases", 0)),
            excluded=tuple(
                CaseNote(case_id=str(n["case_id"]), reason=str(n.get("reason") or ""))
                for n in data.get("excluded") or ()
            ),
        )


@dataclass(frozen=True, slots=True)
class CaseAccounting:
    """Where every case of the test set went.

    Parameters
    ----------
    n_cases, n_completed, n_failed, n_excluded : int
        Cases of the test set; completed, failed and excluded ones.
    failed, excluded : tuple of CaseNote
        Each failed or excluded case with its reason.
    structures : tuple of StructureAccounting
        Multi-structure protocols: the cases each structure lost because its reference
        lacks the structure (empty otherwise).
    """

    n_cases: int
    n_completed: int
    n_failed: int
    n_excluded: int
    failed: tuple[CaseNote, ...] = ()
    excluded: tuple[CaseNote, ...] = ()
    structures: tuple[StructureAccounting, ...] = ()

    @property
    def n_included(self) -> int:
        """Cases not excluded."""
        return self.n_cases - self.n_excluded

    def reasons(self, status: CaseStatus | str) -> list[tuple[str, int]]:
        """``(reason, count)`` for failed or excluded cases, most frequent first."""
        notes = self.failed if CaseStatus(status) is CaseStatus.FAILED else self.excluded
        counts = Counter(n.reason or "no reason recorded" for n in notes)
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, n_cases: int, *, structures: Sequence[str] = ()
    ) -> CaseAccounting:
        """Count a run's case frame (``case_id``, ``status``, ``reason`` columns).

        With ``structures``, each structure's exclusions are read from its
        ``<structure>/excluded`` column (see :func:`workbench.protocols.structure_column`).
        """
        if not len(frame):
            return cls(
                n_cases=n_cases,
                n_completed=0,
                n_failed=0,
                n_excluded=0,
                structures=tuple(StructureAccounting(s, 0) for s in structures),
            )
        counts = frame["status"].value_counts().to_dict()

        def notes(status: CaseStatus) -> tuple[CaseNote, ...]:
            part = frame[frame["status"] == status.value]
            return tuple(
                CaseNote(case_id=str(c), reason="" if pd.isna(r) else str(r))
                for c, r in zip(part["case_id"], part["reason"], strict=True)
            )

        return cls(
            n_cases=n_cases,
            n_completed=int(counts.get(CaseStatus.COMPLETED.value, 0)),
            n_failed=int(counts.get(CaseStatus.FAILED.value, 0)),
            n_excluded=int(counts.get(CaseStatus.EXCLUDED.value, 0)),
            failed=notes(CaseStatus.FAILED),
            excluded=notes(CaseStatus.EXCLUDED),
            structures=tuple(_structure_accounting(frame, s) for s in structures),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data: dict[str, Any] = {
            "n_cases": self.n_cases,
            "n_completed": self.n_completed,
            "n_failed": self.n_failed,
            "n_excluded": self.n_excluded,
            "failed": [{"case_id": n.case_id, "reason": n.reason} for n in self.failed],
            "excluded": [{"case_id": n.case_id, "reason": n.reason} for n in self.excluded],
        }
        if self.structures:
            data["structures"] = [s.to_dict() for s in self.structures]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseAccounting:
        """Read :meth:`to_dict`'s form."""

        def notes(key: str) -> tuple[CaseNote, ...]:
            return tuple(
                CaseNote(case_id=str(n["case_id"]), reason=str(n.get("reason") or ""))
                for n in data.get(key) or ()
            )

        return cls(
            n_cases=int(_or(data, "n_cases", 0)),
            n_completed=int(_or(data, "n_completed", 0)),
            n_failed=int(_or(data, "n_failed", 0)),
            n_excluded=int(_or(data, "n_excluded", 0)),
            failed=notes("failed"),
            excluded=notes("excluded"),
            structures=tuple(
                StructureAccounting.from_dict(item) for item in data.get("structures") or ()
            ),
        )


def _structure_accounting(frame: pd.DataFrame, structure: str) -> StructureAccounting:
    kept = frame[frame["status"] != CaseStatus.EXCLUDED.value]
    column = f"{structure}/excluded"
    notes: list[CaseNote] = []
    if column in kept.columns:
        for case_id, why in zip(kept["case_id"], kept[column], strict=True):
            if why is not None and not (isinstance(why, float) and pd.isna(why)) and str(why):
                notes.append(CaseNote(case_id=str(case_id), reason=str(why)))
    return StructureAccounting(structure=structure, n_cases=len(kept), excluded=tuple(notes))


@dataclass(frozen=True, slots=True)
class RocSummary:
    """The empirical ROC curve with its confidence band, for figures.

    Parameters
    ----------
    fpr, tpr, lower, upper : tuple of float
        Grid of false-positive rates, the curve and its band.
    band : str
        ``pointwise`` or ``simultaneous``.
    level : float
    auc : Estimate
    operating_point : tuple of float or None
        ``(fpr, tpr)`` at ``threshold``.
    threshold : float
    """

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    band: str
    level: float
    auc: Estimate
    operating_point: tuple[float, float] | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable(
            {
                "fpr": self.fpr,
                "tpr": self.tpr,
                "lower": self.lower,
                "upper": self.upper,
                "band": self.band,
                "level": self.level,
                "auc": estimate_to_dict(self.auc),
                "operating_point": self.operating_point,
                "threshold": self.threshold,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RocSummary:
        """Read :meth:`to_dict`'s form."""
        auc = estimate_from_dict(data.get("auc"))
        if auc is None:
            raise ProtocolError("Stored ROC summary has no AUC estimate.")
        op = data.get("operating_point")
        return cls(
            fpr=tuple(float(v) for v in data["fpr"]),
            tpr=tuple(float(v) for v in data["tpr"]),
            lower=tuple(float(v) for v in data["lower"]),
            upper=tuple(float(v) for v in data["upper"]),
            band=str(data.get("band") or "pointwise"),
            level=float(_or(data, "level", 0.95)),
            auc=auc,
            operating_point=None if not op else (float(op[0]), float(op[1])),
            threshold=float(_or(data, "threshold", 0.5)),
        )


@dataclass(frozen=True, slots=True)
class AgreementResult:
    """Cohen's kappa between two raters (the model or a reader).

    Parameters
    ----------
    kind : str
        ``"model vs reader"`` or ``"reader vs reader"``.
    rater_a, rater_b : str
    n : int
    kappa : Estimate or None
        ``None`` when not estimable (``reason`` says why).
    percent_agreement : float or None
    reason : str
    """

    kind: str
    rater_a: str
    rater_b: str
    n: int
    kappa: Estimate | None
    percent_agreement: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        k = self.kappa
        return _jsonable(
            {
                "kind": self.kind,
                "rater_a": self.rater_a,
                "rater_b": self.rater_b,
                "n": self.n,
                "kappa": None if k is None else k.value,
                "ci_low": None if k is None else k.ci_low,
                "ci_high": None if k is None else k.ci_high,
                "se": None if k is None else k.se,
                "level": None if k is None else k.level,
                "method": None if k is None else k.method,
                "percent_agreement": self.percent_agreement,
                "status": "ok" if k is not None else "not_estimable",
                "reason": self.reason,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgreementResult:
        """Read :meth:`to_dict`'s form (or a ``pairwise_kappas`` record)."""
        n = int(_or(data, "n", 0))
        kappa = None
        if data.get("status", "ok") == "ok" and data.get("kappa") is not None:
            kappa = estimate_from_dict(
                {
                    "value": data["kappa"],
                    "ci_low": data.get("ci_low"),
                    "ci_high": data.get("ci_high"),
                    "se": data.get("se"),
                    "level": data.get("level") or 0.95,
                    "method": data.get("method") or "asymptotic (Fleiss-Cohen-Everitt)",
                    "n": n,
                }
            )
        pa = data.get("percent_agreement")
        return cls(
            kind=str(data["kind"]),
            rater_a=str(data["rater_a"]),
            rater_b=str(data["rater_b"]),
            n=n,
            kappa=kappa,
            percent_agreement=None if pa is None else float(pa),
            reason=str(data.get("reason") or ("" if kappa is not None else "not estimable")),
        )


@dataclass(frozen=True, slots=True)
class HeterogeneityResult:
    """A test of heterogeneity of one endpoint across the strata of one factor.

    ``test`` is ``None`` when the test could not be computed (``reason`` says why).
    """

    endpoint_id: str
    factor: str
    statistic: float | None
    df: int
    p_value: float | None
    method: str = ""
    reason: str = ""

    @property
    def estimable(self) -> bool:
        """Whether the test has a statistic and a p-value."""
        return self.statistic is not None and self.p_value is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a test that could not be computed keeps only its reason)."""
        if not self.estimable:
            return {
                "endpoint_id": self.endpoint_id,
                "factor": self.factor,
                "not_estimable": self.reason,
            }
        return _jsonable(
            {
                "endpoint_id": self.endpoint_id,
                "factor": self.factor,
                "statistic": self.statistic,
                "df": self.df,
                "p_value": self.p_value,
                "method": self.method,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeterogeneityResult:
        """Read :meth:`to_dict`'s form."""
        if data.get("statistic") is None or data.get("p_value") is None:
            return cls(
                endpoint_id=str(data["endpoint_id"]),
                factor=str(data["factor"]),
                statistic=None,
                df=0,
                p_value=None,
                reason=str(data.get("not_estimable") or "not estimable"),
            )
        return cls(
            endpoint_id=str(data["endpoint_id"]),
            factor=str(data["factor"]),
            statistic=float(data["statistic"]),
            df=int(_or(data, "df", 0)),
            p_value=float(data["p_value"]),
            method=str(_or(data, "method", "")),
        )


def _optional_floats(values: Any) -> tuple[float | None, ...]:
    """A stored list of numbers with nulls (undefined values) as a tuple."""
    return tuple(None if v is None else float(v) for v in values or ())


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability diagram.

    Parameters
    ----------
    bin_low, bin_high : float
        Bin edges (equal-width bins) or the smallest and largest prediction (equal-mass).
    n, events : int
        Cases in the bin and cases with the outcome.
    mean_predicted, observed : float
        Mean predicted probability and observed fraction with the outcome.
    observed_ci_low, observed_ci_high : float
        Wilson interval of the observed fraction.
    """

    bin_low: float
    bin_high: float
    n: int
    events: int
    mean_predicted: float
    observed: float
    observed_ci_low: float
    observed_ci_high: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable({k: getattr(self, k) for k in _BIN_FIELDS})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReliabilityBin:
        """Read :meth:`to_dict`'s form."""
        return cls(
            bin_low=float(data["bin_low"]),
            bin_high=float(data["bin_high"]),
            n=int(data["n"]),
            events=int(data["events"]),
            mean_predicted=float(data["mean_predicted"]),
            observed=float(data["observed"]),
            observed_ci_low=float(data["observed_ci_low"]),
            observed_ci_high=float(data["observed_ci_high"]),
        )


_BIN_FIELDS = (
    "bin_low",
    "bin_high",
    "n",
    "events",
    "mean_predicted",
    "observed",
    "observed_ci_low",
    "observed_ci_high",
)


@dataclass(frozen=True, slots=True)
class CalibrationSummary:
    """Calibration of the model's probabilities overall or in one stratum, for figures and tables.

    The levels of the calibration hierarchy of Van Calster et al. (2016, 2019):
    calibration-in-the-large (``intercept``, ideal 0), the calibration slope
    (ideal 1), the Brier score and the expected calibration error, the reliability
    table and a flexible (spline) calibration curve with its bootstrap band.

    Parameters
    ----------
    factor, stratum : str
        ``("", "overall")`` for all cases, else the stratum factor and level.
    n, events : int
        Cases and cases with the outcome.
    intercept, slope, brier, ece : Estimate or None
        ``None`` when not estimable (reason in ``reasons``).
    bins : int
    strategy : str
        ``uniform`` or ``quantile`` bins.
    reliability : tuple of ReliabilityBin
        Non-empty bins.
    curve_predicted, curve_observed, curve_lower, curve_upper : tuple of float
        The smoothed calibration curve and its pointwise band (empty when not estimable).
    curve_level : float
    reasons : tuple of (str, str)
        ``(field, reason)`` for every part that is not estimable.
    """

    factor: str
    stratum: str
    n: int
    events: int
    intercept: Estimate | None
    slope: Estimate | None
    brier: Estimate | None
    ece: Estimate | None
    bins: int
    strategy: str
    reliability: tuple[ReliabilityBin, ...] = ()
    curve_predicted: tuple[float, ...] = ()
    curve_observed: tuple[float, ...] = ()
    curve_lower: tuple[float, ...] = ()
    curve_upper: tuple[float, ...] = ()
    curve_level: float = 0.95
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """``overall`` or ``factor = level``."""
        return self.stratum if not self.factor else f"{self.factor} = {self.stratum}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable(
            {
                "factor": self.factor,
                "stratum": self.stratum,
                "n": self.n,
                "events": self.events,
                "intercept": estimate_to_dict(self.intercept),
                "slope": estimate_to_dict(self.slope),
                "brier": estimate_to_dict(self.brier),
                "ece": estimate_to_dict(self.ece),
                "bins": self.bins,
                "strategy": self.strategy,
                "reliability": [b.to_dict() for b in self.reliability],
                "curve": {
                    "predicted": self.curve_predicted,
                    "observed": self.curve_observed,
                    "lower": self.curve_lower,
                    "upper": self.curve_upper,
                    "level": self.curve_level,
                },
                "reasons": {k: v for k, v in self.reasons},
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationSummary:
        """Read :meth:`to_dict`'s form."""
        curve = data.get("curve") or {}
        return cls(
            factor=str(_or(data, "factor", "")),
            stratum=str(_or(data, "stratum", "overall")),
            n=int(_or(data, "n", 0)),
            events=int(_or(data, "events", 0)),
            intercept=estimate_from_dict(data.get("intercept")),
            slope=estimate_from_dict(data.get("slope")),
            brier=estimate_from_dict(data.get("brier")),
            ece=estimate_from_dict(data.get("ece")),
            bins=int(_or(data, "bins", 10)),
            strategy=str(_or(data, "strategy", "uniform")),
            reliability=tuple(ReliabilityBin.from_dict(b) for b in data.get("reliability") or ()),
            curve_predicted=tuple(float(v) for v in curve.get("predicted") or ()),
            curve_observed=tuple(float(v) for v in curve.get("observed") or ()),
            curve_lower=tuple(float(v) for v in curve.get("lower") or ()),
            curve_upper=tuple(float(v) for v in curve.get("upper") or ()),
            curve_level=float(_or(curve, "level", 0.95)),
            reasons=tuple((str(k), str(v)) for k, v in (data.get("reasons") or {}).items()),
        )


def _on_grid(value: float, every: float) -> bool:
    return abs(value / every - round(value / every)) < 1e-9


@dataclass(frozen=True, slots=True)
class DecisionCurveSummary:
    """The decision curve: net benefit of the model, treat-all and treat-none per threshold.

    Net benefit ``TP/n - FP/n * p_t / (1 - p_t)`` (Vickers & Elkin 2006) over the
    protocol's range of threshold probabilities, with percentile bootstrap
    intervals; treat-none is 0 everywhere. ``None`` in a tuple marks a value that is
    undefined at that threshold (e.g. interventions avoided at ``p_t = 0``).

    Parameters
    ----------
    thresholds : tuple of float
    net_benefit, net_benefit_low, net_benefit_high : tuple of float or None
        The model.
    treat_all, treat_all_low, treat_all_high : tuple of float or None
    interventions_avoided, interventions_avoided_low, interventions_avoided_high :
        tuple of float or None
        Net interventions avoided per 100 patients against treat-all.
    prevalence : float
        Prevalence behind the curves.
    level : float
    method : str
    n : int
    criterion_at : float or None
        Threshold probability at which net-benefit endpoints are judged.
    """

    thresholds: tuple[float, ...]
    net_benefit: tuple[float | None, ...]
    net_benefit_low: tuple[float | None, ...]
    net_benefit_high: tuple[float | None, ...]
    treat_all: tuple[float | None, ...]
    treat_all_low: tuple[float | None, ...]
    treat_all_high: tuple[float | None, ...]
    interventions_avoided: tuple[float | None, ...]
    interventions_avoided_low: tuple[float | None, ...]
    interventions_avoided_high: tuple[float | None, ...]
    prevalence: float
    level: float
    method: str
    n: int
    criterion_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionCurveSummary:
        """Read :meth:`to_dict`'s form."""
        at = data.get("criterion_at")
        return cls(
            thresholds=tuple(float(v) for v in data["thresholds"]),
            **{
                k: _optional_floats(data.get(k))
                for k in (
                    "net_benefit",
                    "net_benefit_low",
                    "net_benefit_high",
                    "treat_all",
                    "treat_all_low",
                    "treat_all_high",
                    "interventions_avoided",
                    "interventions_avoided_low",
                    "interventions_avoided_high",
                )
            },
            prevalence=float(_or(data, "prevalence", 0.0)),
            level=float(_or(data, "level", 0.95)),
            method=str(_or(data, "method", "")),
            n=int(_or(data, "n", 0)),
            criterion_at=None if at is None else float(at),
        )

    def tabulated(self, every: float = 0.05) -> tuple[int, ...]:
        """Indices of the thresholds a table of the curve shows.

        Parameters
        ----------
        every : float, default 0.05
            Spacing of the thresholds shown (the curve's own grid may be finer).

        Returns
        -------
        tuple of int
            The thresholds on multiples of ``every``, and always the one at which the
            protocol judges net benefit (``criterion_at``).
        """
        return tuple(
            i for i, t in enumerate(self.thresholds) if _on_grid(t, every) or self.judged_at(i)
        )

    def judged_at(self, index: int) -> bool:
        """Whether the protocol judges net benefit at the ``index``-th threshold."""
        at = self.criterion_at
        return at is not None and abs(self.thresholds[index] - at) < 1e-9


@dataclass(frozen=True, slots=True)
class FrocSummary:
    """The FROC and wAFROC curves of one detection run, with the band, for figures.

    Parameters
    ----------
    nlf, llf, lower, upper : tuple of float
        FROC curve: grid of non-lesion localisations per case (ascending), the
        lesion localisation fraction at each grid point and its pointwise band.
    level : float
        Confidence level of the band.
    fpf, wllf : tuple of float
        wAFROC operating points, from the strictest threshold to the most lenient:
        false-positive fraction (non-diseased cases with a non-lesion mark rated at
        or above the threshold) and weighted lesion localisation fraction.
    wafroc : Estimate or None
        Area under the wAFROC curve (``None`` when not estimable).
    sensitivity_at_fppi : tuple of (float, Estimate or None)
        Lesion sensitivity at each stated number of false positives per image.
    n_cases, n_diseased, n_lesions, n_marks : int
        Cases, cases with at least one lesion, reference lesions and kept marks.
    wafroc_fom : str
        ``"wafroc"``, or ``"wafroc1"`` when the cases hold no case without lesions: then
        ``fpf`` counts every case's highest non-lesion mark and ``wafroc`` is the wAFROC1
        figure of merit.
    """

    nlf: tuple[float, ...]
    llf: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    level: float
    fpf: tuple[float, ...]
    wllf: tuple[float, ...]
    wafroc: Estimate | None
    sensitivity_at_fppi: tuple[tuple[float, Estimate | None], ...]
    n_cases: int
    n_diseased: int
    n_lesions: int
    n_marks: int
    wafroc_fom: str = "wafroc"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable(
            {
                "wafroc_fom": self.wafroc_fom,
                "nlf": self.nlf,
                "llf": self.llf,
                "lower": self.lower,
                "upper": self.upper,
                "level": self.level,
                "fpf": self.fpf,
                "wllf": self.wllf,
                "wafroc": estimate_to_dict(self.wafroc),
                "sensitivity_at_fppi": [
                    {"fppi": fppi, "estimate": estimate_to_dict(est)}
                    for fppi, est in self.sensitivity_at_fppi
                ],
                "n_cases": self.n_cases,
                "n_diseased": self.n_diseased,
                "n_lesions": self.n_lesions,
                "n_marks": self.n_marks,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrocSummary:
        """Read :meth:`to_dict`'s form."""
        return cls(
            nlf=tuple(float(v) for v in data["nlf"]),
            llf=tuple(float(v) for v in data["llf"]),
            lower=tuple(float(v) for v in data["lower"]),
            upper=tuple(float(v) for v in data["upper"]),
            level=float(_or(data, "level", 0.95)),
            fpf=tuple(float(v) for v in data.get("fpf") or ()),
            wllf=tuple(float(v) for v in data.get("wllf") or ()),
            wafroc=estimate_from_dict(data.get("wafroc")),
            sensitivity_at_fppi=tuple(
                (float(item["fppi"]), estimate_from_dict(item.get("estimate")))
                for item in data.get("sensitivity_at_fppi") or ()
            ),
            n_cases=int(_or(data, "n_cases", 0)),
            n_diseased=int(_or(data, "n_diseased", 0)),
            n_lesions=int(_or(data, "n_lesions", 0)),
            n_marks=int(_or(data, "n_marks", 0)),
            wafroc_fom=str(_or(data, "wafroc_fom", "wafroc")),
        )


@dataclass(frozen=True, slots=True)
class OperatingPointSummary:
    """The locked operating point the threshold endpoints were evaluated at.

    Parameters
    ----------
    threshold : float
        Scores ``>= threshold`` are called positive.
    description : str
        How it was locked (a number in the protocol, or a rule on a tuning set).
    deployment_prevalence : float or None
        The protocol's intended-use prevalence, for PPV/NPV at prevalence.
    """

    threshold: float
    description: str
    deployment_prevalence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _jsonable(
            {
                "threshold": self.threshold,
                "description": self.description,
                "deployment_prevalence": self.deployment_prevalence,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPointSummary:
        """Read :meth:`to_dict`'s form."""
        prevalence = data.get("deployment_prevalence")
        return cls(
            threshold=float(data["threshold"]),
            description=str(_or(data, "description", "")),
            deployment_prevalence=None if prevalence is None else float(prevalence),
        )


@dataclass(frozen=True, slots=True)
class SupplementaryAnalyses:
    """Descriptive and secondary analyses stored with the results (not judged).

    Parameters
    ----------
    roc : RocSummary or None
        Classification: the ROC curve with its band; ``roc_reason`` when not estimable.
    agreement : tuple of AgreementResult
        Model vs each reader and reader vs reader.
    reader_columns : tuple of str
        The readers' label columns behind the agreement analyses.
    readers_fleiss_kappa : Estimate or None
        Fleiss' kappa among the readers; ``readers_fleiss_reason`` when not estimable.
    heterogeneity : tuple of HeterogeneityResult
        Per endpoint and stratum factor.
    distribution_metric : str
        Per-case metric whose distribution per scanner is kept ('' when none).
    distributions : tuple of (str, tuple of float)
        Per scanner: the per-case values of ``distribution_metric``.
    calibration : tuple of CalibrationSummary
        Classification with probability scores: overall first, then per stratum of
        the protocol's ``calibration.by`` factors; ``calibration_reason`` when not
        assessed (e.g. ``score_is_probability: false``).
    decision_curve : DecisionCurveSummary or None
        Over the protocol's ``decision_curve`` range; ``decision_curve_reason`` when
        not estimable or not requested.
    operating_point : OperatingPointSummary or None
        The locked threshold of the threshold endpoints.
    """

    roc: RocSummary | None = None
    roc_reason: str = ""
    agreement: tuple[AgreementResult, ...] = ()
    reader_columns: tuple[str, ...] = ()
    readers_fleiss_kappa: Estimate | None = None
    readers_fleiss_reason: str = ""
    heterogeneity: tuple[HeterogeneityResult, ...] = ()
    distribution_metric: str = ""
    distributions: tuple[tuple[str, tuple[float, ...]], ...] = ()
    calibration: tuple[CalibrationSummary, ...] = ()
    calibration_reason: str = ""
    decision_curve: DecisionCurveSummary | None = None
    decision_curve_reason: str = ""
    operating_point: OperatingPointSummary | None = None

    @property
    def calibration_overall(self) -> CalibrationSummary | None:
        """The calibration of all cases (None when not assessed)."""
        return next((c for c in self.calibration if not c.factor), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "heterogeneity": [h.to_dict() for h in self.heterogeneity],
            "agreement": [a.to_dict() for a in self.agreement],
            "distributions": {label: list(values) for label, values in self.distributions},
        }
        if self.roc is not None:
            out["roc"] = self.roc.to_dict()
        elif self.roc_reason:
            out["roc"] = {"not_estimable": self.roc_reason}
        out["reader_columns"] = list(self.reader_columns)
        if self.readers_fleiss_kappa is not None:
            out["fleiss_kappa_readers"] = estimate_to_dict(self.readers_fleiss_kappa)
        elif self.readers_fleiss_reason:
            out["fleiss_kappa_readers"] = {"not_estimable": self.readers_fleiss_reason}
        if self.distribution_metric:
            out["distribution_metric"] = self.distribution_metric
        if self.calibration or self.calibration_reason:
            out["calibration"] = {
                "summaries": [c.to_dict() for c in self.calibration],
                "not_estimable": self.calibration_reason,
            }
        if self.decision_curve is not None or self.decision_curve_reason:
            out["decision_curve"] = (
                self.decision_curve.to_dict() if self.decision_curve is not None else {}
            ) | {"not_estimable": self.decision_curve_reason}
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_dict()
        return _jsonable(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupplementaryAnalyses:
        """Read :meth:`to_dict`'s form (schema version 1 or 2)."""
        roc_data = data.get("roc") or {}
        fleiss = data.get("fleiss_kappa_readers") or {}
        calibration = data.get("calibration") or {}
        curve = data.get("decision_curve") or {}
        readers = tuple(str(c) for c in data.get("reader_columns") or ())
        if "reader_columns" not in data:
            # Schema version 1 stored no reader columns; its readers were the raters compared.
            readers = tuple(
                dict.fromkeys(
                    r
                    for a in data.get("agreement") or ()
                    if a.get("kind") == "reader vs reader"
                    for r in (str(a["rater_a"]), str(a["rater_b"]))
                )
            )
        return cls(
            roc=RocSummary.from_dict(roc_data) if "fpr" in roc_data else None,
            roc_reason=str(roc_data.get("not_estimable") or ""),
            agreement=tuple(AgreementResult.from_dict(a) for a in data.get("agreement") or ()),
            reader_columns=readers,
            readers_fleiss_kappa=estimate_from_dict(fleiss) if "value" in fleiss else None,
            readers_fleiss_reason=str(fleiss.get("not_estimable") or ""),
            heterogeneity=tuple(
                HeterogeneityResult.from_dict(h) for h in data.get("heterogeneity") or ()
            ),
            distribution_metric=str(_or(data, "distribution_metric", "")),
            distributions=tuple(
                (str(k), tuple(float(v) for v in values))
                for k, values in sorted((data.get("distributions") or {}).items())
            ),
            calibration=tuple(
                CalibrationSummary.from_dict(c) for c in calibration.get("summaries") or ()
            ),
            calibration_reason=str(calibration.get("not_estimable") or ""),
            decision_curve=(
                DecisionCurveSummary.from_dict(curve) if "thresholds" in curve else None
            ),
            decision_curve_reason=str(curve.get("not_estimable") or ""),
            operating_point=(
                OperatingPointSummary.from_dict(data["operating_point"])
                if data.get("operating_point")
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a run applied: protocol, model and test set, each with its hash."""

    protocol: str
    protocol_sha256: str
    model: str
    model_digest: str
    test_set: str
    manifest_digest: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "protocol": self.protocol,
            "protocol_sha256": self.protocol_sha256,
            "model": self.model,
            "model_digest": self.model_digest,
            "test_set": self.test_set,
            "manifest_digest": self.manifest_digest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunContext:
        """Read :meth:`to_dict`'s form."""
        return cls(**{k: str(data.get(k) or "") for k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class RunResults:
    """The complete, typed result of one validation run.

    Parameters
    ----------
    run_uid : str
    context : RunContext
        Protocol, model and test set with their hashes.
    workbench_version : str
    surface_dice_tolerance_mm : float
    accounting : CaseAccounting
    evaluation : ProtocolEvaluation
        Endpoints, strata, criteria and the verdict.
    supplementary : SupplementaryAnalyses
    schema_version : int
        Layout version of the stored form this object was read from.
    froc : FrocSummary or None
        Detection runs: the FROC and wAFROC curves with the band (``None`` for other
        tasks, and for a detection run whose curves were not estimable).
    froc_reason : str
        Why a detection run has no ``froc`` ('' otherwise).
    """

    run_uid: str
    context: RunContext
    workbench_version: str
    surface_dice_tolerance_mm: float
    accounting: CaseAccounting
    evaluation: ProtocolEvaluation
    supplementary: SupplementaryAnalyses = field(default_factory=SupplementaryAnalyses)
    schema_version: int = SCHEMA_VERSION
    froc: FrocSummary | None = None
    froc_reason: str = ""

    @property
    def verdict(self) -> Verdict:
        """The run's verdict (from the protocol evaluation)."""
        return self.evaluation.verdict

    @property
    def verdict_reason(self) -> str:
        """Why the verdict is not PASS ('' when it is)."""
        return self.evaluation.verdict_reason

    @property
    def endpoints(self) -> tuple[EndpointResult, ...]:
        """The evaluated endpoints, in protocol order."""
        return self.evaluation.endpoints

    def to_dict(self) -> dict[str, Any]:
        """The stored form (always the current :data:`SCHEMA_VERSION`)."""
        return _jsonable(
            {
                "schema_version": SCHEMA_VERSION,
                "run_uid": self.run_uid,
                **self.context.to_dict(),
                "workbench_version": self.workbench_version,
                "surface_dice_tolerance_mm": self.surface_dice_tolerance_mm,
                "accounting": self.accounting.to_dict(),
                "evaluation": self.evaluation.to_dict(),
                "supplementary": self.supplementary.to_dict(),
                # detection only: other runs keep the layout (and hashes) they always had
                **({"froc": self.froc.to_dict()} if self.froc is not None else {}),
                **({"froc_reason": self.froc_reason} if self.froc_reason else {}),
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResults:
        """Read a stored result of any known schema version.

        Raises
        ------
        ProtocolError
            When the stored form is of a newer schema version than this release
            knows, or lacks its evaluation.
        """
        version = int(_or(data, "schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ProtocolError(
                f"Stored run results have schema version {version}; this release reads up to "
                f"{SCHEMA_VERSION}. Upgrade the workbench to read them."
            )
        if "evaluation" not in data:
            raise ProtocolError(
                "Stored run results lack their 'evaluation'; expected the output of "
                "RunResults.to_dict()."
            )
        return cls(
            run_uid=str(_or(data, "run_uid", "")),
            context=RunContext.from_dict(data),
            workbench_version=str(_or(data, "workbench_version", "")),
            surface_dice_tolerance_mm=float(_or(data, "surface_dice_tolerance_mm", 2.0)),
            accounting=CaseAccounting.from_dict(data.get("accounting") or {}),
            evaluation=ProtocolEvaluation.from_dict(data["evaluation"]),
            supplementary=SupplementaryAnalyses.from_dict(data.get("supplementary") or {}),
            schema_version=version,
            froc=FrocSummary.from_dict(data["froc"]) if data.get("froc") else None,
            froc_reason=str(data.get("froc_reason") or ""),
        )

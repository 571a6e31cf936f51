"""Case explorer: every case of a run, unblinded, for QA staff and auditors.

The explorer shows the model's output next to the reference standard, the case's
metrics, its strata and its DICOM header, and it computes explanation maps on
demand. All of that would unblind a clinical reviewer, so every function here
refuses the role ``reviewer`` outright, whatever the protocol says about
aggregate results; reviewers reach cases only through the blinded
:func:`workbench.services.adjudication.open_case`.

Functions
---------
:func:`explorer_cases`
    The run's case table with metrics, status, strata and discrepancies.
:func:`query_cases`
    Sorting and filtering of that table (worst first, false negatives, failures, one stratum).
:func:`explorer_case`
    One case: image paths, overlays, metrics, a header summary, discrepancies with their
    adjudication outcome (decisions, adjudicators, times, comments).
:func:`case_explanation`
    An explanation map of one case, computed once and cached under the workdir.
:func:`select_case_for_report` / :func:`selected_cases`
    A PNG of the current view chosen for the report's appendix, recorded in the audit trail.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import NotFoundError, PermissionDeniedError, WorkbenchError
from workbench.protocols import Protocol
from workbench.records import audit
from workbench.records.db import run_durably
from workbench.records.models import (
    AuditEntry,
    CaseResult,
    Discrepancy,
    ProtocolVersion,
    RegisteredModel,
    Run,
    User,
)
from workbench.services import protocols as protocol_service
from workbench.services import runs, views
from workbench.services.adjudication import final_decision, model_verdict
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.vocabulary import CaseStatus

__all__ = [
    "EXPLORER_ROLES",
    "LOWER_IS_BETTER",
    "HEADER_KEYWORDS",
    "may_explore",
    "AdjudicationOutcome",
    "DiscrepancyLink",
    "ExplorerCases",
    "CaseQuery",
    "ExplorerCase",
    "SelectedCase",
    "explorer_cases",
    "query_cases",
    "explorer_case",
    "case_explanation",
    "select_case_for_report",
    "selected_cases",
]

#: Roles that may open the explorer (it is unblinded: never clinical reviewers).
EXPLORER_ROLES: frozenset[str] = frozenset({"qa", "auditor"})

#: Metrics where a larger value is worse (sorted descending for "worst first").
LOWER_IS_BETTER: frozenset[str] = frozenset({"hd95", "hausdorff", "assd"})

#: Header attributes shown in the case's summary: acquisition and geometry only,
#: plus the demographics the test set already holds as strata (no names, ids or dates).
HEADER_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "BodyPartExamined",
    "PatientSex",
    "PatientAge",
    "PatientIdentityRemoved",
    "KVP",
    "ConvolutionKernel",
    "SliceThickness",
    "PixelSpacing",
    "Rows",
    "Columns",
    "ImageOrientationPatient",
    "SeriesDescription",
)

_METRIC_KEYS = ("dice", "iou", "hd95", "hausdorff", "assd", "surface_dice", "score")
_VIEW = "run.view"
_ACTION_SELECT = "explorer.case_select"


def may_explore(role: str) -> bool:
    """Whether ``role`` may open the case explorer (QA and auditors)."""
    return str(role) in EXPLORER_ROLES


def _explorer_user(session: Session, actor: Actor) -> User:
    """The actor's account after checking ``run.view`` and an unblinded role.

    A refused attempt is kept in the audit trail as ``security.permission_denied``.
    """
    user = current_user(session, actor, _VIEW)
    if may_explore(user.role):
        return user
    username, user_id, role = user.username, user.id, user.role

    def record(s: Session) -> None:
        audit.append_security_event(
            s,
            actor=username,
            action="permission_denied",
            record_id=user_id,
            details={"action": "explorer.view", "role": role},
        )

    run_durably(session, record)
    raise PermissionDeniedError(
        f"The case explorer shows unblinded model outputs and reference standards; the role "
        f"{role!r} may not open it (user {username!r}); roles allowed: "
        f"{', '.join(sorted(EXPLORER_ROLES))}. Clinical reviewers see cases in Adjudication."
    )


def _protocol(session: Session, run: Run) -> Protocol:
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    return protocol_service.parsed_protocol(pv)


def _operating_threshold(protocol: Protocol) -> float | None:
    for endpoint in protocol.endpoints:
        threshold = protocol.threshold_of(endpoint)
        if threshold is not None:
            return float(threshold)
    op = protocol.operating_point
    return float(op.threshold) if op is not None and op.threshold is not None else None


# -- the case table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdjudicationOutcome:
    """One signed adjudication read of a discrepancy, unblinded for QA and auditors.

    Parameters
    ----------
    reviewer : str
        The adjudicator's username.
    reviewer_name : str
        The adjudicator's full name.
    kind : str
        ``primary``, ``secondary`` or ``consensus``.
    decision : str
        The blinded decision as signed (``a_correct``, ``b_correct``, ``both_acceptable``,
        ``neither``, ``indeterminate``).
    meaning : str
        What it says about the model once unblinded (``model correct``,
        ``reference correct``, ``both acceptable``, ``neither acceptable``, ``indeterminate``).
    comment : str
        The adjudicator's reasoning.
    decided_at : datetime
        When the decision was signed (UTC).
    """

    reviewer: str
    reviewer_name: str
    kind: str
    decision: str
    meaning: str
    comment: str
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class DiscrepancyLink:
    """A discrepancy queued for a case, with its adjudication outcome (what the explorer shows).

    Parameters
    ----------
    discrepancy_id : int
    rule : str
        The protocol's discrepancy rule that queued it.
    status : str
        ``open``, ``adjudicated`` or ``needs_consensus``.
    reads : tuple of AdjudicationOutcome
        The signed reads in the order they were made (empty while open).
    outcome : str or None
        The final decision's meaning for the model (the consensus read where there is
        one, else the last read); ``None`` until the discrepancy is adjudicated.
    """

    discrepancy_id: int
    rule: str
    status: str
    reads: tuple[AdjudicationOutcome, ...] = ()
    outcome: str | None = None


def _discrepancy_links(session: Session, run: Run, case_id: str) -> tuple[DiscrepancyLink, ...]:
    """The case's discrepancies with their reads, unblinded (callers checked the role)."""
    found = session.scalars(
        select(Discrepancy)
        .where(Discrepancy.run_id == run.id, Discrepancy.case_id == case_id)
        .order_by(Discrepancy.id)
    ).all()
    if not found:
        return ()
    names = {row[0]: row[1] for row in session.execute(select(User.username, User.full_name))}
    links = []
    for d in found:
        reads = tuple(
            AdjudicationOutcome(
                reviewer=a.reviewer,
                reviewer_name=names.get(a.reviewer, a.reviewer),
                kind=a.kind,
                decision=a.decision,
                meaning=model_verdict(d, a.decision) or a.decision,
                comment=a.comment or "",
                decided_at=a.created_at,
            )
            for a in sorted(d.adjudications, key=lambda a: (a.created_at, a.id))
        )
        links.append(
            DiscrepancyLink(
                discrepancy_id=d.id,
                rule=d.rule,
                status=d.status,
                reads=reads,
                outcome=model_verdict(d, final_decision(d)),
            )
        )
    return tuple(links)


@dataclass(frozen=True, slots=True)
class ExplorerCases:
    """Every case of a run as the explorer lists them.

    Parameters
    ----------
    run_uid : str
    task : str
        ``segmentation`` or ``classification``.
    operating_threshold : float or None
        The score threshold of the protocol's threshold endpoints (classification).
    frame : pandas.DataFrame
        One row per case: ``case_id``, ``status``, ``reason``, the metrics, the stored
        attributes (strata, labels, ``series_instance_uid``), ``false_negative``
        (bool; a lesion or positive case the model missed at the operating point)
        and ``discrepancy`` (status of its discrepancy, '' when none).
    metric_columns : tuple of str
        Numeric metric columns present, in a fixed order.
    strata_columns : tuple of str
        The protocol's stratum factors present in ``frame``.
    """

    run_uid: str
    task: str
    operating_threshold: float | None
    frame: pd.DataFrame = field(repr=False)
    metric_columns: tuple[str, ...]
    strata_columns: tuple[str, ...]

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Case ids in table order."""
        return tuple(str(c) for c in self.frame["case_id"])


def _false_negatives(frame: pd.DataFrame, task: str, threshold: float | None) -> pd.Series:
    """Positive cases the model missed: no predicted lesion, or a score below the threshold."""
    missed = pd.Series(False, index=frame.index)
    completed = frame["status"] == CaseStatus.COMPLETED.value
    if task == "segmentation" and "reference_voxels" in frame:

        def column(name: str, default: float) -> pd.Series:
            if name not in frame:
                return pd.Series(default, index=frame.index, dtype=float)
            return pd.to_numeric(frame[name], errors="coerce")

        reference = column("reference_voxels", 0.0).fillna(0)
        predicted = column("predicted_voxels", np.nan)
        dice = column("dice", np.nan)
        missed = (reference > 0) & ((predicted == 0) | (dice.fillna(1.0) == 0.0))
    elif threshold is not None and "y_true" in frame and "score" in frame:
        truth = pd.to_numeric(frame["y_true"], errors="coerce")
        score = pd.to_numeric(frame["score"], errors="coerce")
        missed = (truth == 1) & (score < threshold)
    return (missed & completed).astype(bool)


def explorer_cases(wb: Workbench, actor: Actor, run_uid: str) -> ExplorerCases:
    """Every case of a completed run with metrics, status, strata and discrepancies.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.view`` and the role ``qa`` or ``auditor``.
    run_uid : str

    Returns
    -------
    ExplorerCases

    Raises
    ------
    PermissionDeniedError
        The role may not view runs, or is ``reviewer`` (always refused, see module docstring).
    NotFoundError
        No run with this uid.
    WorkflowError
        The run has no results yet.
    """
    with wb.transaction(readonly=True) as session:
        _explorer_user(session, actor)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        protocol = _protocol(session, run)
        states = {d.case_id: d.status for d in run.discrepancies}
    _results, frame = runs.run_results(wb, actor, run_uid)
    frame = frame.copy()
    if not len(frame):
        frame = pd.DataFrame({"case_id": [], "status": [], "reason": []})
    task = protocol.task.value
    threshold = _operating_threshold(protocol)
    frame["false_negative"] = _false_negatives(frame, task, threshold)
    frame["discrepancy"] = [states.get(str(c), "") for c in frame["case_id"]]
    metrics = tuple(
        c
        for c in _METRIC_KEYS
        if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()
    )
    strata = tuple(
        dict.fromkeys(
            c for c in (*(f.source_column for f in protocol.strata), "scanner_id") if c in frame
        )
    )
    return ExplorerCases(
        run_uid=run_uid,
        task=task,
        operating_threshold=threshold,
        frame=frame.reset_index(drop=True),
        metric_columns=metrics,
        strata_columns=strata,
    )


@dataclass(frozen=True, slots=True)
class CaseQuery:
    """How the explorer's table is sorted and filtered.

    Parameters
    ----------
    sort_by : str or None
        A metric column; ``None`` keeps case order.
    worst_first : bool
        Worst values first (ascending, or descending for :data:`LOWER_IS_BETTER`).
    false_negatives_only, failed_only, discrepancies_only : bool
    stratum : tuple of (str, str) or None
        ``(factor, value)``: only cases of one stratum (e.g. one scanner).
    """

    sort_by: str | None = None
    worst_first: bool = True
    false_negatives_only: bool = False
    failed_only: bool = False
    discrepancies_only: bool = False
    stratum: tuple[str, str] | None = None


def query_cases(cases: ExplorerCases, query: CaseQuery) -> pd.DataFrame:
    """The rows of ``cases`` that ``query`` keeps, in its order.

    Cases without a value of the sort metric (failed cases) come last.

    Raises
    ------
    ValueError
        ``sort_by`` or the stratum factor is not a column of the table.
    """
    frame = cases.frame
    keep = pd.Series(True, index=frame.index)
    if query.false_negatives_only:
        keep &= frame["false_negative"].astype(bool)
    if query.failed_only:
        keep &= frame["status"] != CaseStatus.COMPLETED.value
    if query.discrepancies_only:
        keep &= frame["discrepancy"] != ""
    if query.stratum is not None:
        factor, value = query.stratum
        if factor not in frame:
            raise ValueError(
                f"Expected a stratum factor of {list(frame.columns)}; found {factor!r}."
            )
        keep &= frame[factor].astype(str) == str(value)
    out = frame[keep]
    if query.sort_by is not None:
        if query.sort_by not in frame:
            raise ValueError(
                f"Expected a metric of {list(cases.metric_columns)} to sort by; "
                f"found {query.sort_by!r}."
            )
        ascending = query.worst_first != (query.sort_by in LOWER_IS_BETTER)
        values = pd.to_numeric(out[query.sort_by], errors="coerce")
        order = values.sort_values(ascending=ascending, na_position="last", kind="stable").index
        out = out.loc[order]
    return out.reset_index(drop=True)


# -- one case -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExplorerCase:
    """One case of a run, unblinded.

    Parameters
    ----------
    run_uid, case_id, task : str
    status : CaseStatus
    reason : str
    score : float or None
        The model's score (classification), ``None`` otherwise.
    metrics : dict
        The stored per-case metrics.
    strata : dict
        The stored attributes of the case (labels columns and ``series_instance_uid``).
    ct_paths : tuple of str
        The case's image files.
    model_mask : str or None
        The model's DICOM SEG (segmentation runs).
    reference_segs : tuple of str
    reference_rule : str
    header : tuple of (str, str)
        :data:`HEADER_KEYWORDS` present in the first image's header.
    discrepancies : tuple of DiscrepancyLink
    model_ref : str
        ``name@version`` of the run's model.
    false_negative : bool
    """

    run_uid: str
    case_id: str
    task: str
    status: CaseStatus
    reason: str
    score: float | None
    metrics: Mapping[str, Any]
    strata: Mapping[str, Any]
    ct_paths: tuple[str, ...]
    model_mask: str | None
    reference_segs: tuple[str, ...]
    reference_rule: str
    header: tuple[tuple[str, str], ...]
    discrepancies: tuple[DiscrepancyLink, ...]
    model_ref: str
    false_negative: bool = False


def _header_summary(path: str | None) -> tuple[tuple[str, str], ...]:
    if not path:
        return ()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError):
        return ()
    out = []
    for keyword in HEADER_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            text = "\\".join(f"{float(v):g}" if _is_number(v) else str(v) for v in value)
        else:
            text = str(value)
        out.append((keyword, text))
    return tuple(out)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def explorer_case(wb: Workbench, actor: Actor, run_uid: str, case_id: str) -> ExplorerCase:
    """One case of a run with images, overlays, metrics, header summary and discrepancies.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.view`` and the role ``qa`` or ``auditor``.
    run_uid, case_id : str

    Returns
    -------
    ExplorerCase

    Raises
    ------
    PermissionDeniedError
        The role is not allowed (reviewers always refused).
    NotFoundError
        No such run or case.
    """
    with wb.transaction(readonly=True) as session:
        _explorer_user(session, actor)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        protocol = _protocol(session, run)
        result: CaseResult = get_one(
            session, CaseResult, "case result", run_id=run.id, case_id=case_id
        )
        model = session.get(RegisteredModel, run.model_id)
        links = _discrepancy_links(session, run, case_id)
        metrics = dict(result.metrics or {})
        strata = {k: v for k, v in (result.strata or {}).items() if k != "case_id"}
        score = result.score
    images = views.case_images(wb, actor, run_uid, case_id)
    task = protocol.task.value
    row = pd.DataFrame(
        [
            {
                "status": images.status.value,
                "score": score,
                **metrics,
                "y_true": strata.get(protocol.reference_standard.labels_column or "", None),
            }
        ]
    )
    missed = bool(_false_negatives(row, task, _operating_threshold(protocol)).iloc[0])
    return ExplorerCase(
        run_uid=run_uid,
        case_id=case_id,
        task=task,
        status=images.status,
        reason=images.reason,
        score=score,
        metrics=metrics,
        strata=strata,
        ct_paths=images.ct_paths,
        model_mask=images.model_mask,
        reference_segs=images.reference_segs,
        reference_rule=images.reference_rule,
        header=_header_summary(images.ct_paths[0] if images.ct_paths else None),
        discrepancies=links,
        model_ref=f"{model.name}@{model.version}" if model is not None else "",
        false_negative=missed,
    )


# -- explanation maps ---------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120] or "_"


def case_explanation(
    wb: Workbench,
    actor: Actor,
    run_uid: str,
    case_id: str,
    *,
    method: str,
    params: Mapping[str, Any] | None = None,
    device: str | None = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """An explanation map of one case, computed on demand and cached under the workdir.

    The map is stored as ``runs/<run>/explanations/<case>/<method>-<params-hash>.npz``
    with its parameters, the model's digest and the faithfulness check; a later call
    with the same method and parameters reads it back.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.view`` and the role ``qa`` or ``auditor``.
    run_uid, case_id : str
    method : str
        See :class:`workbench.inference.explain.ExplanationMethod`.
    params : mapping, optional
        Method parameters (e.g. ``patch``, ``stride`` for occlusion).
    device : str, optional
        Torch device for the model.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    workbench.inference.explain.Explanation
        The map on the case's image grid ``(z, y, x)``, its label and faithfulness check.

    Raises
    ------
    PermissionDeniedError
        The role is not allowed (reviewers always refused).
    WorkbenchError
        The case has no images, or the method does not fit the run's task or model.
    """
    import workbench.inference.explain as explain
    from workbench.inference.registry import ModelSpec

    chosen = explain.ExplanationMethod(method)
    with wb.transaction(readonly=True) as session:
        _explorer_user(session, actor)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        get_one(session, CaseResult, "case result", run_id=run.id, case_id=case_id)
        model = session.get(RegisteredModel, run.model_id)
        assert model is not None
        spec = ModelSpec.model_validate(model.spec or {})
        model_path, model_files, model_digest = (
            model.storage_path,
            dict(model.files or {}),
            model.digest,
        )
    settings = explain.settings_for(chosen, params)
    key = explain.params_hash(chosen, settings, model_digest)
    out = (
        wb.workdir.runs_dir
        / _safe_name(run_uid)
        / "explanations"
        / _safe_name(case_id)
        / f"{chosen.value}-{key[:16]}.npz"
    )
    if out.is_file():
        try:
            return explain.load_explanation(out)
        except (OSError, ValueError, KeyError):
            out.unlink(missing_ok=True)
    images = views.case_images(wb, actor, run_uid, case_id)
    if not images.ct_paths:
        raise NotFoundError(f"Case {case_id} of run {run_uid} has no images to explain.")
    try:
        result = explain.explain_case(
            images.ct_paths,
            model_path,
            spec,
            chosen,
            settings,
            device=device,
            expected_hashes=model_files or None,
            progress=progress,
        )
    except (RuntimeError, ValueError) as error:
        raise WorkbenchError(f"The {chosen.value} map of case {case_id} failed: {error}") from error
    explain.save_explanation(out, result, model_digest=model_digest)
    return result


# -- cases selected for the report --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectedCase:
    """A case view chosen by QA for the report's appendix of selected cases.

    Parameters
    ----------
    run_uid, case_id : str
    png_path : Path
        The exported view (overlays and legend) under the workdir.
    sha256 : str
        SHA-256 of the PNG, as recorded in the audit trail.
    metrics : dict
        The case's stored metrics at selection time.
    note : str
        Why the author chose the case.
    selected_by : str
    selected_at : str
        ISO 8601 (UTC).
    audit_seq : int
        The audit entry that records the selection.
    """

    run_uid: str
    case_id: str
    png_path: Path
    sha256: str
    metrics: Mapping[str, Any]
    note: str
    selected_by: str
    selected_at: str
    audit_seq: int


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def select_case_for_report(
    wb: Workbench, actor: Actor, run_uid: str, case_id: str, png_bytes: bytes, note: str
) -> SelectedCase:
    """Record a view of a case for the report's appendix of selected cases.

    The PNG is written to ``runs/<run>/selected/<case>-<sha256[:12]>.png`` and the
    audit entry ``explorer.case_select`` (record ``<run>/<case>``) holds its path,
    SHA-256, the case's metrics and the note.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``report.build`` (QA authors) besides explorer access.
    run_uid, case_id : str
    png_bytes : bytes
        The exported view.
    note : str
        Why the case is shown (required).

    Returns
    -------
    SelectedCase

    Raises
    ------
    PermissionDeniedError
        The role may not author reports or open the explorer.
    ValueError
        Not a PNG, or an empty note.
    """
    if not png_bytes.startswith(_PNG_MAGIC):
        raise ValueError("Expected PNG bytes (the explorer's exported view); found another format.")
    if not note.strip():
        raise ValueError("Say why this case is selected for the report (the note is empty).")
    digest = hashlib.sha256(png_bytes).hexdigest()
    folder = wb.workdir.runs_dir / _safe_name(run_uid) / "selected"
    path = folder / f"{_safe_name(case_id)}-{digest[:12]}.png"
    with wb.transaction() as session:
        user = _explorer_user(session, actor)
        current_user(session, actor, "report.build")
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        result: CaseResult = get_one(
            session, CaseResult, "case result", run_id=run.id, case_id=case_id
        )
        metrics = {
            k: v
            for k, v in (result.metrics or {}).items()
            if isinstance(v, int | float) and not (isinstance(v, float) and not math.isfinite(v))
        }
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes)
        entry = audit.append(
            session,
            actor=user.username,
            action=_ACTION_SELECT,
            record_type="case_result",
            record_id=f"{run_uid}/{case_id}",
            new={
                "png_path": str(path.relative_to(wb.workdir.root)),
                "png_sha256": digest,
                "metrics": metrics,
                "note": note.strip(),
                "status": result.status,
            },
        )
        return SelectedCase(
            run_uid=run_uid,
            case_id=case_id,
            png_path=path,
            sha256=digest,
            metrics=metrics,
            note=note.strip(),
            selected_by=user.username,
            selected_at=entry.ts.isoformat(),
            audit_seq=int(entry.seq),
        )


def selected_cases(wb: Workbench, actor: Actor, run_uid: str) -> tuple[SelectedCase, ...]:
    """The case views chosen for a run's report, in selection order (``run.view``, not reviewers).

    The latest selection of a case replaces earlier ones. Each PNG is re-hashed;
    a file that is missing or no longer has its recorded SHA-256 is refused.

    Raises
    ------
    PermissionDeniedError
        The role is not allowed (reviewers always refused).
    IntegrityError
        A selected PNG is missing or changed since it was recorded.
    """
    from workbench.errors import IntegrityError

    with wb.transaction(readonly=True) as session:
        _explorer_user(session, actor)
        get_one(session, Run, "run", run_uid=run_uid)
        entries = session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.action == _ACTION_SELECT,
                AuditEntry.record_type == "case_result",
                AuditEntry.record_id.like(f"{run_uid}/%"),
            )
            .order_by(AuditEntry.seq)
        ).all()
        latest: dict[str, SelectedCase] = {}
        for e in entries:
            new = dict(e.new_value or {})
            case_id = str(e.record_id).split("/", 1)[1]
            path = wb.workdir.root / str(new["png_path"])
            latest.pop(case_id, None)
            latest[case_id] = SelectedCase(
                run_uid=run_uid,
                case_id=case_id,
                png_path=path,
                sha256=str(new["png_sha256"]),
                metrics=dict(new.get("metrics") or {}),
                note=str(new.get("note") or ""),
                selected_by=e.actor,
                selected_at=e.ts.isoformat(),
                audit_seq=int(e.seq),
            )
    for chosen in latest.values():
        found = (
            hashlib.sha256(chosen.png_path.read_bytes()).hexdigest()
            if chosen.png_path.is_file()
            else "missing"
        )
        if found != chosen.sha256:
            raise IntegrityError(
                f"The selected view of case {chosen.case_id} ({chosen.png_path}) should have "
                f"SHA-256 {chosen.sha256[:12]}...; found {found[:12]}. Select the case again."
            )
    return tuple(latest.values())

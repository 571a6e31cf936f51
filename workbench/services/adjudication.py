"""Blinded adjudication of discrepancies by clinical reviewers.

Each discrepancy shows the reviewer two outputs labelled **A** and **B** in an
order drawn at random per case when the run was analysed (stored in
``Discrepancy.blinding``); unless the protocol allows it, the reviewer is not
told which one is the model's. For a detection protocol the two outputs are sets
of regions (the model's kept marks and the reference lesions, boxes or points in
patient coordinates) without scores, in position order, so that nothing but the
regions themselves tells them apart. A decision (A correct, B correct, both
acceptable, neither, indeterminate) is recorded with a comment and an
e-signature (meaning ``adjudicated``). When the protocol asks for two readers
per case and they disagree, the case needs a consensus decision.

The decisions feed a secondary, post-adjudication analysis that is always
labelled as such; the primary analysis is never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import PermissionDeniedError, WorkflowError
from workbench.protocols import Protocol, ProtocolEvaluation, evaluate_endpoints
from workbench.records import audit, signatures
from workbench.records.anchors import unresolved_discrepancies
from workbench.records.models import (
    Adjudication,
    AdjudicationDecision,
    AdjudicationKind,
    Discrepancy,
    DiscrepancyStatus,
    ProtocolVersion,
    Run,
    SignatureMeaning,
    TestSet,
    User,
)
from workbench.services.context import Actor, Workbench, current_user, get_one, sha256_json
from workbench.services.protocols import parsed_protocol
from workbench.services.runs import case_frame

__all__ = [
    "QueueItem",
    "AdjudicationCase",
    "queue",
    "open_case",
    "adjudicate",
    "adjudication_summary",
    "pending_count",
    "AdjudicationRead",
    "CaseAdjudication",
    "RunAdjudication",
    "SecondaryAnalysis",
    "final_decision",
    "model_verdict",
]


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One discrepancy in a run's queue, as a reviewer sees it (blinded)."""

    discrepancy_id: int
    run_uid: str
    case_id: str
    rule: str
    status: str
    n_reads: int
    read_by_me: bool


@dataclass(frozen=True, slots=True)
class AdjudicationCase:
    """What the viewer needs to show one blinded discrepancy.

    Parameters
    ----------
    discrepancy_id : int
    case_id : str
    task : str
        ``segmentation``, ``classification`` or ``detection``.
    ct_paths : list of str
        The CT slices of the case.
    overlays : dict
        For segmentation: ``{"A": [seg paths], "B": [seg paths]}`` (a reference
        made of several readers' SEG objects lists them all, with ``rule``).
    calls : dict
        For classification: ``{"A": "malignant", "B": "benign"}``.
    reference_rule : str
    unblinded : dict or None
        ``{"model": "A"|"B"}`` only when the protocol does not blind reviewers.
    details : dict
        The rule that queued the case and its figures (e.g. the Dice).
    regions : dict
        For detection: ``{"A": [...], "B": [...]}``, each region a dict with ``kind``
        (``"box"`` or ``"point"``), its centre ``x, y, z`` and its box ``x_min, y_min,
        z_min, x_max, y_max, z_max`` (LPS mm; ``None`` for a point). No score, no id:
        nothing tells the model's marks from the reference lesions.
    """

    discrepancy_id: int
    case_id: str
    task: str
    ct_paths: list[str]
    overlays: dict[str, list[str]] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    reference_rule: str = "majority"
    unblinded: dict[str, str] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    regions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_REGION_BOX = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _regions(rows: Any) -> list[dict[str, Any]]:
    """Blinded region dicts of mark or lesion rows, in position order (z, y, x)."""
    out = []
    for row in rows:
        box = {k: _number(row.get(k)) for k in _REGION_BOX}
        has_box = all(v is not None for v in box.values())
        centre = {k: _number(row.get(k)) for k in ("x", "y", "z")}
        if any(v is None for v in centre.values()) and has_box:
            centre = {
                a: ((box[f"{a}_min"] or 0.0) + (box[f"{a}_max"] or 0.0)) / 2.0
                for a in ("x", "y", "z")
            }
        out.append(
            {
                "kind": "box" if has_box else "point",
                **centre,
                **(box if has_box else dict.fromkeys(_REGION_BOX)),
            }
        )
    return sorted(out, key=lambda r: (r["z"] or 0.0, r["y"] or 0.0, r["x"] or 0.0))


def _detection_regions(
    wb: Workbench, run: Run, case_id: str, metrics: dict[str, Any], protocol: Protocol
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(model marks, reference lesions) of a case as regions, read from the run's records.

    The marks are those the matching kept (at or above the score floor); each file is
    checked against the SHA-256 recorded with the case.
    """
    from workbench.services.runs import LESIONS_FILENAME, _case_dir, _read_record_file

    case_dir = _case_dir(wb.workdir.runs_dir, run.run_uid, case_id)
    lesions: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    if metrics.get("lesions_sha256"):
        frame = _read_record_file(case_dir / LESIONS_FILENAME, str(metrics["lesions_sha256"]))
        lesions = frame.to_dict(orient="records")
    if metrics.get("marks_sha256"):
        frame = _read_record_file(case_dir / "marks.json", str(metrics["marks_sha256"]))
        floor = protocol.matching.score_floor if protocol.matching is not None else None
        if floor is not None and len(frame):
            frame = frame[frame["score"].astype(float) >= floor]
        marks = frame.to_dict(orient="records")
    return _regions(marks), _regions(lesions)


def _run(session: Session, run_uid: str) -> Run:
    run: Run = get_one(session, Run, "run", run_uid=run_uid)
    return run


def _protocol(session: Session, run: Run) -> Protocol:
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    return parsed_protocol(pv)


def queue(wb: Workbench, actor: Actor, run_uid: str) -> list[QueueItem]:
    """The discrepancies of a run, open ones first (``run.view``)."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.view")
        run = _run(session, run_uid)
        protocol = _protocol(session, run)
        items = []
        for d in sorted(run.discrepancies, key=lambda d: (d.status != "open", d.case_id)):
            items.append(
                QueueItem(
                    discrepancy_id=d.id,
                    run_uid=run_uid,
                    case_id=d.case_id,
                    rule=_shown_rule(d.rule, protocol),
                    status=d.status,
                    n_reads=len(d.adjudications),
                    read_by_me=any(a.reviewer == actor.username for a in d.adjudications),
                )
            )
        return items


def pending_count(wb: Workbench, run_uid: str) -> int:
    """Number of discrepancies of a run still open or waiting for consensus.

    A discrepancy counts as settled only when its row and its audited decision both say
    so (:func:`workbench.records.anchors.unresolved_discrepancies`).
    """
    with wb.transaction(readonly=True) as session:
        run = _run(session, run_uid)
        return len(unresolved_discrepancies(session, run))


def open_case(wb: Workbench, actor: Actor, discrepancy_id: int) -> AdjudicationCase:
    """Everything the viewer shows for one discrepancy, blinded per the protocol."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "discrepancy.adjudicate")
        d = get_one(session, Discrepancy, "discrepancy", id=discrepancy_id)
        run = d.run
        protocol = _protocol(session, run)
        test_set = session.get(TestSet, run.test_set_id)
        assert test_set is not None
        root = Path(test_set.root_path)
        from workbench.records.models import CaseResult, TestSetFile

        result = session.scalars(
            select(CaseResult).where(CaseResult.run_id == run.id, CaseResult.case_id == d.case_id)
        ).first()
        stored = d.details if isinstance(d.details, dict) else {"finding": str(d.details or "")}
        series_uid = stored.get("series_instance_uid")
        files = session.scalars(
            select(TestSetFile).where(TestSetFile.test_set_id == test_set.id)
        ).all()
        # The case's series: from the discrepancy, else from the attributes stored with the case.
        if series_uid is None and result is not None:
            series_uid = (result.strata or {}).get("series_instance_uid")
        ct = sorted(
            str(root / f.path)
            for f in files
            if f.series_instance_uid == series_uid and f.modality != "SEG"
        )
        reference_segs = sorted(
            str(root / f.path)
            for f in files
            if f.modality == "SEG" and (f.header or {}).get("referenced_series_uid") == series_uid
        )
        seg_ref = protocol.reference_standard.segmentation
        if seg_ref is not None:
            reference_segs = [p for p in reference_segs if Path(p).stem in seg_ref.readers]
        blinding = d.blinding or {"model": "A", "reference": "B"}
        model_label, reference_label = blinding["model"], blinding["reference"]
        overlays: dict[str, list[str]] = {}
        calls: dict[str, str] = {}
        regions: dict[str, list[dict[str, Any]]] = {}
        reference_rule = str(seg_ref.rule) if seg_ref else "labels"
        if protocol.task.value == "detection":
            det = protocol.reference_standard.detection
            model_regions, reference_regions = _detection_regions(
                wb, run, d.case_id, dict(result.metrics or {}) if result else {}, protocol
            )
            regions = {model_label: model_regions, reference_label: reference_regions}
            if det is not None:
                reference_rule = det.source.value + (
                    f" ({det.rule.value} of {', '.join(det.readers)})"
                    if det.source.value == "seg_components"
                    else ""
                )
        elif protocol.task.value == "segmentation":
            overlays[model_label] = [result.mask_path] if result and result.mask_path else []
            overlays[reference_label] = reference_segs
        else:
            threshold = next(
                (t for ep in protocol.endpoints if (t := protocol.threshold_of(ep)) is not None),
                0.5,
            )
            score = result.score if result else None
            calls[model_label] = (
                "no output" if score is None else ("malignant" if score >= threshold else "benign")
            )
            truth = stored.get("y_true")
            calls[reference_label] = (
                "unknown" if truth is None else ("malignant" if int(truth) == 1 else "benign")
            )
        details = _reviewer_details(stored, d.rule, protocol)
        return AdjudicationCase(
            discrepancy_id=d.id,
            case_id=d.case_id,
            task=protocol.task.value,
            ct_paths=ct,
            overlays=overlays,
            calls=calls,
            reference_rule=reference_rule,
            unblinded=None if protocol.adjudication.reviewers_blinded else {"model": model_label},
            details=details,
            regions=regions,
        )


#: What a blinded reviewer is told of a detection rule ("missed lesion" would name the reference).
BLINDED_DETECTION_RULE = "regions of A and B disagree"


def _shown_rule(rule: str, protocol: Protocol) -> str:
    """The rule id as a reviewer may see it (detection rules are masked when blinded)."""
    kinds = {r.id: r.kind for r in protocol.discrepancy_rules}
    directional = kinds.get(rule) in ("missed_lesion", "false_mark")
    if protocol.adjudication.reviewers_blinded and directional:
        return BLINDED_DETECTION_RULE
    return rule


def _reviewer_details(stored: dict[str, Any], rule: str, protocol: Protocol) -> dict[str, Any]:
    """What a reviewer is told about why a case was queued.

    Blinded reviewers never see anything that tells A from B: for classification
    the finding names the model's call and score, so only the rule is shown; for
    segmentation the overlap figures are symmetric in A and B and are shown.
    """
    if not protocol.adjudication.reviewers_blinded:
        return dict(stored)
    shown: dict[str, Any] = {"rule": _shown_rule(rule, protocol)}
    if protocol.task.value == "detection":
        # "missed lesion" or "false mark" would say which set is the reference
        shown["finding"] = "the regions of A and B disagree"
    elif protocol.task.value == "segmentation":
        for key in ("finding", "dice", "hd95", "surface_dice"):
            if key in stored:
                shown[key] = stored[key]
    else:
        shown["finding"] = "the two calls (A and B) disagree"
    return shown


def adjudicate(
    wb: Workbench,
    actor: Actor,
    discrepancy_id: int,
    *,
    decision: str,
    comment: str,
    password: str,
    consensus: bool = False,
) -> str:
    """Record a reviewer's signed decision; returns the discrepancy's new status.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``discrepancy.adjudicate``.
    discrepancy_id : int
    decision : str
        ``a_correct``, ``b_correct``, ``both_acceptable``, ``neither`` or ``indeterminate``.
    comment : str
        The reviewer's reasoning.
    password : str
        Re-authentication for the e-signature (meaning ``adjudicated``).
    consensus : bool, default False
        A consensus decision on a case whose two reads disagree.

    Raises
    ------
    WorkflowError
        Already decided, read twice by the same reviewer, or consensus not needed.
    """
    choice = AdjudicationDecision(decision)
    with wb.transaction() as session:
        user = current_user(session, actor, "discrepancy.adjudicate")
        d = get_one(session, Discrepancy, "discrepancy", id=discrepancy_id)
        protocol = _protocol(session, d.run)
        needed = protocol.adjudication.readers_per_case
        if d.status == DiscrepancyStatus.ADJUDICATED.value:
            raise WorkflowError(
                f"Discrepancy {discrepancy_id} ({d.case_id}) is already adjudicated."
            )
        if consensus != (d.status == DiscrepancyStatus.NEEDS_CONSENSUS.value):
            raise WorkflowError(
                f"Discrepancy {discrepancy_id} is {d.status}; "
                + (
                    "a consensus decision is only for reads that disagree."
                    if consensus
                    else "its reads disagree and it needs a consensus decision."
                )
            )
        if not consensus and any(a.reviewer == user.username for a in d.adjudications):
            raise WorkflowError(
                f"{user.username} has already read discrepancy {discrepancy_id}; a second read "
                "must come from another reviewer."
            )
        if d.run.started_by == user.username:
            raise PermissionDeniedError("The user who ran the validation cannot adjudicate it.")
        content = {
            "discrepancy_id": d.id,
            "run_uid": d.run.run_uid,
            "case_id": d.case_id,
            "decision": choice.value,
            "comment": comment,
        }
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.ADJUDICATED,
            record_type="discrepancy",
            record_id=d.id,
            content_sha256=sha256_json(content),
        )
        kind = (
            AdjudicationKind.CONSENSUS
            if consensus
            else (AdjudicationKind.PRIMARY if not d.adjudications else AdjudicationKind.SECONDARY)
        )
        record = Adjudication(
            discrepancy_id=d.id,
            reviewer=user.username,
            decision=choice.value,
            comment=comment,
            signature_id=signature.id,
            kind=kind.value,
        )
        session.add(record)
        session.flush()
        session.refresh(d)
        reads = [a for a in d.adjudications if a.kind != AdjudicationKind.CONSENSUS.value]
        old_status = d.status
        if consensus or len(reads) >= needed:
            if not consensus and len({a.decision for a in reads}) > 1:
                d.status = DiscrepancyStatus.NEEDS_CONSENSUS.value
            else:
                d.status = DiscrepancyStatus.ADJUDICATED.value
        audit.append(
            session,
            actor=user.username,
            action="discrepancy.adjudicate",
            record_type="discrepancy",
            record_id=d.id,
            old={"status": old_status},
            new={**content, "kind": kind.value, "status": d.status, "signature_id": signature.id},
        )
        return d.status


def final_decision(d: Discrepancy) -> str | None:
    """The decision that settles an adjudicated discrepancy, or None while it is open.

    Parameters
    ----------
    d : Discrepancy

    Returns
    -------
    str or None
        The last consensus decision when there is one, else the last adjudication's;
        ``None`` for a discrepancy that is not adjudicated.
    """
    if d.status != DiscrepancyStatus.ADJUDICATED.value or not d.adjudications:
        return None
    consensus = [a for a in d.adjudications if a.kind == AdjudicationKind.CONSENSUS.value]
    return (consensus or d.adjudications)[-1].decision


def model_verdict(d: Discrepancy, decision: str | None) -> str | None:
    """Translate a blinded A/B decision into what it says about the model.

    Parameters
    ----------
    d : Discrepancy
        The discrepancy, whose blinding says which of A and B showed the model.
    decision : str or None
        ``a_correct``, ``b_correct``, ``both_acceptable``, ``neither`` or
        ``indeterminate``.

    Returns
    -------
    str or None
        ``"model correct"``, ``"reference correct"``, ``"both acceptable"``,
        ``"neither acceptable"`` or ``"indeterminate"``; None without a decision.
    """
    if decision is None:
        return None
    model = (d.blinding or {}).get("model", "A")
    if decision in ("a_correct", "b_correct"):
        winner = "A" if decision == "a_correct" else "B"
        return "model correct" if winner == model else "reference correct"
    return {
        "both_acceptable": "both acceptable",
        "neither": "neither acceptable",
        "indeterminate": "indeterminate",
    }[decision]


@dataclass(frozen=True, slots=True)
class AdjudicationRead:
    """One reviewer's read of a discrepancy."""

    reviewer: str
    reviewer_name: str
    decision: str
    kind: str
    comment: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CaseAdjudication:
    """A discrepancy with its reads and what they mean for the model.

    ``interpretation`` is ``"model correct"``, ``"reference correct"``... or ``None``
    while pending.
    """

    case_id: str
    rule: str
    status: str
    reads: tuple[AdjudicationRead, ...]
    final_decision: str | None
    interpretation: str | None

    @property
    def last_read(self) -> AdjudicationRead | None:
        """The latest read, if any."""
        return self.reads[-1] if self.reads else None


@dataclass(frozen=True, slots=True)
class SecondaryAnalysis:
    """The endpoints re-evaluated with the adjudicated labels (SECONDARY, never judged)."""

    label: str
    relabelled_cases: tuple[str, ...]
    evaluation: ProtocolEvaluation


@dataclass(frozen=True, slots=True)
class RunAdjudication:
    """Decisions per discrepancy of a run and the secondary (post-adjudication) analysis."""

    n_discrepancies: int
    n_adjudicated: int
    counts: dict[str, int]
    cases: tuple[CaseAdjudication, ...]
    secondary: SecondaryAnalysis | None = None


def adjudication_summary(session: Session, run: Run) -> RunAdjudication:
    """Decisions per discrepancy and the secondary (post-adjudication) analysis.

    For classification the secondary analysis re-evaluates the endpoints with
    the reference label replaced by the model's call where the reviewers found
    the model correct. For segmentation it reports, per decision, how many
    discrepant cases the reviewers found acceptable.
    """
    names = {row[0]: row[1] for row in session.execute(select(User.username, User.full_name))}
    cases = []
    for d in sorted(run.discrepancies, key=lambda d: d.case_id):
        decision = final_decision(d)
        cases.append(
            CaseAdjudication(
                case_id=d.case_id,
                rule=d.rule,
                status=d.status,
                reads=tuple(
                    AdjudicationRead(
                        reviewer=a.reviewer,
                        reviewer_name=names.get(a.reviewer, a.reviewer),
                        decision=a.decision,
                        kind=a.kind,
                        comment=a.comment or "",
                        at=a.created_at,
                    )
                    for a in d.adjudications
                ),
                final_decision=decision,
                interpretation=model_verdict(d, decision),
            )
        )
    counts: dict[str, int] = {}
    for case in cases:
        key = str(case.interpretation or "pending")
        counts[key] = counts.get(key, 0) + 1
    secondary = None
    protocol = _protocol(session, run)
    if protocol.task.value == "classification" and cases:
        frame = case_frame(session, run.id, protocol)
        flipped = [c.case_id for c in cases if c.interpretation == "model correct"]
        if flipped and "y_true" in frame:
            mask = frame["case_id"].isin(flipped)
            frame.loc[mask, "y_true"] = 1 - frame.loc[mask, "y_true"].astype(int)
            secondary = SecondaryAnalysis(
                label="SECONDARY (post-adjudication) analysis",
                relabelled_cases=tuple(flipped),
                evaluation=evaluate_endpoints(protocol, frame),
            )
    return RunAdjudication(
        n_discrepancies=len(cases),
        n_adjudicated=sum(c.status == "adjudicated" for c in cases),
        counts=counts,
        cases=tuple(cases),
        secondary=secondary,
    )

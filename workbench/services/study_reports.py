"""Reader-study reports: build the draft PDF, e-sign it, seal it, verify a PDF.

A study report follows the life cycle of a validation report: ``draft`` (built;
e-signatures are collected on the SHA-256 of its ``results.json``) -> ``signed``
(authored and approved, by two different QA users; the author of the report
cannot approve it) -> ``sealed`` (the final PDF, with the signature
manifestations printed, PAdES-sealed with the workbench's certificate).

The report's record is its audit entries: ``study_report.build`` (when, by whom,
the draft's SHA-256 and results SHA-256), the e-signatures on record type
``study_report``, and ``study_report.seal`` (the sealed file's SHA-256). The
audit trail is append-only and hash-chained, so nothing overwrites an earlier
report; a rebuilt report gets a new id. :func:`verify_study_report_file` checks a
sealed PDF against those entries and signatures, like ``report verify`` does for
a validation report.

Every number comes from the stored study: the approved design, the readers'
signed sessions and their ratings, the locked test set's reference labels, and
the audit trail; nothing is typed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench import __version__
from workbench.errors import (
    NotFoundError,
    PermissionDeniedError,
    RecordLockedError,
    ReportError,
    SignatureError,
    WorkflowError,
)
from workbench.records import audit, signatures
from workbench.records.models import AuditEntry, Signature, TestSet, User, utcnow
from workbench.records.studies import (
    ReaderRating,
    ReaderStudy,
    ReadingSession,
    ReadingSessionStatus,
)
from workbench.reports import content as rc
from workbench.reports import seal_pdf
from workbench.reports.sealing import PdfVerification
from workbench.reports.study_report import (
    FixedEffectsRow,
    ReaderCurve,
    ReadingTime,
    StudyDesignSummary,
    StudyReader,
    StudyReadingSession,
    StudyReportContent,
    build_study_report,
    study_report_attachments,
)
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.sealing import (
    Check,
    ReportCheck,
    conclude_check,
    missing_file,
    seal_checks,
    signing_identity,
)
from workbench.services.studies import (
    _cases,
    _design,
    _latest_ratings,
    _lookup,
    _reading,
    _study_analysis,
)
from workbench.services.testsets import frozen_manifest
from workbench.stats import Estimate
from workbench.studies import ReaderStudyDesign, StudyAnalysis, empirical_roc

__all__ = [
    "REQUIRED_SIGNATURES",
    "StudyReportInfo",
    "build_study_report_pdf",
    "list_study_reports",
    "seal_study_report",
    "sign_study_report",
    "verify_study_report_file",
]

RECORD_TYPE = "study_report"

#: Signatures a study report needs: (role, meaning, meanings whose signer must differ).
REQUIRED_SIGNATURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("qa", "authored", ()),
    ("qa", "approved", ("authored",)),
)

_MEANING_PERMISSION = {"authored": "report.sign.author", "approved": "report.sign.approve"}


@dataclass(frozen=True, slots=True)
class StudyReportInfo:
    """A study report as its audit entries and signatures record it.

    Parameters
    ----------
    report_uid, study, status : str
        ``status`` is ``draft``, ``signed`` or ``sealed``.
    pdf_path, pdf_sha256 : str
        The draft PDF.
    sealed_path, sealed_sha256 : str or None
        The sealed final PDF.
    content_sha256 : str
        SHA-256 of ``results.json``: what every e-signature signs.
    signatures : list of dict
        Printed name, role, meaning, UTC time of each e-signature.
    missing_signatures : list of str
        ``role (meaning)`` still required.
    """

    report_uid: str
    study: str
    status: str
    pdf_path: str
    pdf_sha256: str
    content_sha256: str
    created_by: str
    created_at: str
    sealed_path: str | None = None
    sealed_sha256: str | None = None
    signatures: list[dict[str, Any]] = field(default_factory=list)
    missing_signatures: list[str] = field(default_factory=list)


def _entry(session: Session, uid: str, action: str) -> AuditEntry | None:
    found: AuditEntry | None = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.record_type == RECORD_TYPE,
            AuditEntry.record_id == uid,
            AuditEntry.action == action,
        )
        .order_by(AuditEntry.seq)
        .limit(1)
    ).first()
    return found


def _built(session: Session, uid: str) -> dict[str, Any]:
    entry = _entry(session, uid, "study_report.build")
    if entry is None or not isinstance(entry.new_value, dict):
        raise NotFoundError(f"No reader-study report '{uid}'.")
    return {**entry.new_value, "created_by": entry.actor}


def _signature_rows(session: Session, uid: str) -> list[Signature]:
    return list(signatures.signatures_for(session, RECORD_TYPE, uid))


def _missing(sigs: list[Signature]) -> list[str]:
    have = {(s.role, s.meaning) for s in sigs}
    return [f"{r} ({m})" for r, m, _ in REQUIRED_SIGNATURES if (r, m) not in have]


def _info(session: Session, uid: str) -> StudyReportInfo:
    built = _built(session, uid)
    sealed = _entry(session, uid, "study_report.seal")
    sigs = _signature_rows(session, uid)
    missing = _missing(sigs)
    sealed_value = (
        sealed.new_value if sealed is not None and isinstance(sealed.new_value, dict) else {}
    )
    status = "sealed" if sealed is not None else ("signed" if not missing else "draft")
    return StudyReportInfo(
        report_uid=uid,
        study=str(built["study"]),
        status=status,
        pdf_path=str(built["pdf_path"]),
        pdf_sha256=str(built["pdf_sha256"]),
        content_sha256=str(built["results_sha256"]),
        created_by=str(built["created_by"]),
        created_at=str(built["created_at"]),
        sealed_path=sealed_value.get("sealed_path"),
        sealed_sha256=sealed_value.get("sealed_sha256"),
        signatures=[
            {
                "printed_name": s.printed_name,
                "username": s.username,
                "role": s.role,
                "meaning": s.meaning,
                "signed_at": s.signed_at.isoformat(),
                "signature_id": s.id,
            }
            for s in sigs
        ],
        missing_signatures=missing,
    )


def _report_estimate(e: Estimate) -> rc.ReportEstimate:
    return rc.ReportEstimate(
        value=float(e.value),
        ci_low=float(e.ci_low),
        ci_high=float(e.ci_high),
        level=float(e.level),
        method=str(e.method),
        n=int(e.n),
    )


@dataclass(frozen=True, slots=True)
class _StudyData:
    study: ReaderStudy
    design: ReaderStudyDesign
    analysis: StudyAnalysis
    ratings: list[dict[str, Any]]
    sessions: list[ReadingSession]
    truth: dict[str, int]
    manifest_digest: str


def _study_data(session: Session, ref: str) -> _StudyData:
    """The signed readings of every reader and arm, their ratings and the analysis."""
    study = _lookup(session, ref)
    design = _design(study)
    cases = _cases(session, design)
    truth = {c.case_id: c.truth for c in cases}
    manifest = frozen_manifest(get_one(session, TestSet, "test set", name=design.test_set.name))
    rows: list[dict[str, Any]] = []
    latest_rows: list[dict[str, Any]] = []
    sessions: list[ReadingSession] = []
    for reader in design.readers:
        for arm in (a.id for a in design.arms):
            reading = _reading(session, study.id, reader, arm)
            if reading is None or reading.status != ReadingSessionStatus.SIGNED.value:
                raise WorkflowError(
                    f"{reader} has not signed arm '{arm}' of {ref} yet; a study report is built "
                    "once every reading is signed."
                )
            sessions.append(reading)
            latest = _latest_ratings(session, reading)
            counted = {r.id for r in latest.values()}
            for r in session.scalars(
                select(ReaderRating)
                .where(ReaderRating.session_id == reading.id)
                .order_by(ReaderRating.id)
            ):
                rows.append(
                    {
                        "reader": reader,
                        "arm": arm,
                        "case_id": r.case_id,
                        "rating": r.rating,
                        "truth": truth.get(r.case_id),
                        "seconds": r.seconds,
                        "shown_at": None if r.shown_at is None else r.shown_at.isoformat(),
                        "rated_at": r.rated_at.isoformat(),
                        "counts": "yes" if r.id in counted else "no (superseded)",
                    }
                )
            latest_rows += [
                {
                    "reader": reader,
                    "arm": arm,
                    "case_id": case_id,
                    "rating": r.rating,
                    "seconds": r.seconds,
                }
                for case_id, r in latest.items()
            ]
    analysis = _study_analysis(session, study, design)
    return _StudyData(
        study=study,
        design=design,
        analysis=analysis,
        ratings=rows,
        sessions=sessions,
        truth=truth,
        manifest_digest=manifest.digest,
    )


def _display_name(session: Session, username: str) -> tuple[str, str]:
    user = session.scalars(select(User).where(User.username == username)).first()
    return (user.full_name, user.role) if user is not None else (username, "unknown")


def _simulation_text(design: ReaderStudyDesign) -> str:
    spec = design.simulation
    if spec is None:
        return ""
    separations = ", ".join(
        f"{r} {d:g}" for r, d in zip(design.readers, spec.separation, strict=True)
    )
    return (
        f"Simulated readers ({spec.method} model, equal variances): latent = (d + shift x aided) "
        f"x truth + N(0, 1); separation d per reader: {separations}; aided shift "
        f"{spec.aided_shift:g}; seed {design.seed} (workbench.studies.simulate_ratings)."
    )


def _content(
    session: Session,
    data: _StudyData,
    *,
    report_uid: str,
    created_by: str,
    created_at: datetime,
    final: bool,
    sigs: list[Signature],
) -> StudyReportContent:
    design, analysis, study = data.design, data.analysis, data.study
    ref = f"{study.study_id}@{study.version}"
    readers = []
    for username in design.readers:
        name, role = _display_name(session, username)
        readers.append(StudyReader(username, name, role, simulated=design.simulated))
    frame = pd.DataFrame(
        [r for r in data.ratings if r["counts"] == "yes"],
        columns=["reader", "arm", "case_id", "rating", "truth", "seconds"],
    )
    curves = []
    for reader_auc in analysis.per_reader:
        if reader_auc.curve is not None:  # a detection study: the reader's wAFROC curve
            fpr, tpr = reader_auc.curve
        else:
            group = frame[(frame["reader"] == reader_auc.reader) & (frame["arm"] == reader_auc.arm)]
            fpr, tpr = empirical_roc(group["truth"].to_numpy(int), group["rating"].to_numpy(float))
        curves.append(
            ReaderCurve(
                reader_auc.reader, reader_auc.arm, fpr, tpr, _report_estimate(reader_auc.auc)
            )
        )
    order = {r: i for i, r in enumerate(design.readers)}
    curves.sort(key=lambda c: (order.get(c.reader, 0), c.arm))
    times = []
    for reader in design.readers:
        for arm in analysis.arms:
            seconds = frame[(frame["reader"] == reader) & (frame["arm"] == arm)]["seconds"].dropna()
            values = seconds.to_numpy(float)
            has = values.size > 0
            times.append(
                ReadingTime(
                    reader=reader,
                    arm=arm,
                    n=int(values.size),
                    median=float(np.median(values)) if has else None,
                    q1=float(np.quantile(values, 0.25)) if has else None,
                    q3=float(np.quantile(values, 0.75)) if has else None,
                )
            )
    first, second = analysis.arms
    rrrc = analysis.rrrc
    sensitivity = [
        FixedEffectsRow(
            analysis="Random readers, random cases (primary)",
            statistic_name="F",
            statistic=float(rrrc.statistic),
            df=f"{rrrc.df_num:g}, {rrrc.df_den:.2f}",
            p_value=float(rrrc.p_value),
            difference=_report_estimate(analysis.difference),
        )
    ]
    reader_differences: list[tuple[str, rc.ReportEstimate]] = []
    for label, fixed, name in (
        ("Fixed readers, random cases", rrrc.fixed_readers, "\u03c7\u00b2"),
        ("Random readers, fixed cases", rrrc.fixed_cases, "F"),
    ):
        if fixed is None:
            continue
        diff = fixed.differences.get((second, first))
        if diff is None:
            reverse = fixed.differences[(first, second)]
            diff = Estimate(
                value=-reverse.value,
                ci_low=-reverse.ci_high,
                ci_high=-reverse.ci_low,
                level=reverse.level,
                method=reverse.method,
                n=reverse.n,
            )
        sensitivity.append(
            FixedEffectsRow(
                analysis=label,
                statistic_name=name,
                statistic=float(fixed.statistic),
                df=f"{fixed.df_num:g}" + ("" if fixed.df_den is None else f", {fixed.df_den:g}"),
                p_value=float(fixed.p_value),
                difference=_report_estimate(diff),
            )
        )
        for (reader, a, b), e in fixed.reader_differences.items():
            if (a, b) == (second, first):
                reader_differences.append((reader, _report_estimate(e)))
            elif (a, b) == (first, second):
                reader_differences.append(
                    (
                        reader,
                        rc.ReportEstimate(
                            value=-e.value,
                            ci_low=-e.ci_high,
                            ci_high=-e.ci_low,
                            level=e.level,
                            method=e.method,
                            n=e.n,
                        ),
                    )
                )
    reader_differences.sort(key=lambda item: order.get(item[0], 0))
    approver = study.approved_by or ""
    summary = StudyDesignSummary(
        study_id=study.study_id,
        version=study.version,
        title=study.title,
        sha256=study.sha256,
        yaml_text=study.yaml_text,
        created_by=_display_name(session, study.created_by)[0],
        approved_by=_display_name(session, approver)[0] if approver else "",
        approved_at=study.approved_at,
        test_set=design.test_set.name,
        manifest_digest=data.manifest_digest,
        design_kind=design.design.value,
        arms=tuple((a.id, a.model or "") for a in design.arms),
        rating_scale=design.rating_scale.value,
        washout_days=design.washout_days,
        hypothesis=design.hypothesis.value,
        margin=design.margin,
        level=design.level,
        analysis=design.analysis.method,
        covariance=design.analysis.covariance,
        criterion=design.criterion_text,
        seed=design.seed,
        n_cases=analysis.n_cases,
        n_positive=analysis.n_positive,
        simulation=_simulation_text(design),
    )
    reading_ids = [f"{ref}/{s.reader}/{s.arm}" for s in data.sessions]
    entries = session.scalars(
        select(AuditEntry)
        .where(
            ((AuditEntry.record_type == "reader_study") & (AuditEntry.record_id == ref))
            | (
                (AuditEntry.record_type == "reading_session")
                & (AuditEntry.record_id.in_(reading_ids))
            )
            | (
                (AuditEntry.record_type == "reader_rating")
                & (AuditEntry.record_id.like(f"{ref}/%"))
            )
            | ((AuditEntry.record_type == RECORD_TYPE) & (AuditEntry.record_id == report_uid))
        )
        .order_by(AuditEntry.seq)
    ).all()
    head = audit.head(session)
    return StudyReportContent(
        report_id=report_uid,
        status=rc.ReportStatus.FINAL if final else rc.ReportStatus.DRAFT,
        created_at=created_at,
        author=_display_name(session, created_by)[0],
        workbench_version=__version__,
        design=summary,
        readers=tuple(readers),
        sessions=tuple(
            StudyReadingSession(
                reader=s.reader,
                arm=s.arm,
                seed=s.seed,
                case_order=tuple(str(c) for c in s.case_order),
                started_at=s.started_at,
                signed_at=s.signed_at,
                signature_id="" if s.signature_id is None else str(s.signature_id),
            )
            for s in data.sessions
        ),
        ratings=tuple(data.ratings),
        analysis=analysis.to_dict(),
        arm_auc=tuple((arm, _report_estimate(analysis.arm_auc[arm])) for arm in analysis.arms),
        difference=_report_estimate(analysis.difference),
        p_value=analysis.p_value,
        bound=design.bound,
        verdict=analysis.verdict,
        verdict_reason=analysis.reason,
        variance_components=tuple(
            (k, float(v)) for k, v in sorted(rrrc.variance_components.items())
        ),
        sensitivity=tuple(sensitivity),
        curves=tuple(curves),
        marks=analysis.matches,
        figure_of_merit=analysis.figure_of_merit,
        reader_differences=tuple(reader_differences),
        reading_times=tuple(times),
        required_signatures=tuple(rc.RequiredSignature(r, m) for r, m, _ in REQUIRED_SIGNATURES),
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
            for s in sigs
        ),
        audit_trail=tuple(
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
            for e in entries
        ),
        audit_chain_head=head.entry_hash if head else "",
    )


def build_study_report_pdf(wb: Workbench, actor: Actor, ref: str) -> StudyReportInfo:
    """Build the draft PDF report of a reader study whose readings are all signed.

    Needs ``report.build`` (QA). The report gets a new id (``SR-<study>-v<version>-<n>``);
    earlier reports stay as they are.

    Returns
    -------
    StudyReportInfo
        Status ``draft``; its ``content_sha256`` is what signers sign.

    Raises
    ------
    WorkflowError
        A reading is not signed yet.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.build")
        data = _study_data(session, ref)
        study = data.study
        prefix = f"SR-{study.study_id}-v{study.version}-"
        earlier = session.scalars(
            select(AuditEntry.record_id).where(
                AuditEntry.record_type == RECORD_TYPE,
                AuditEntry.action == "study_report.build",
                AuditEntry.record_id.like(f"{prefix}%"),
            )
        ).all()
        uid = f"{prefix}{len(earlier) + 1}"
        created_at = utcnow().replace(microsecond=0)
        content = _content(
            session,
            data,
            report_uid=uid,
            created_by=user.username,
            created_at=created_at,
            final=False,
            sigs=[],
        )
        wb.workdir.reports_dir.mkdir(parents=True, exist_ok=True)
        path = wb.workdir.reports_dir / f"{uid}-draft.pdf"
        built = build_study_report(content, path)
        audit.append(
            session,
            actor=user.username,
            action="study_report.build",
            record_type=RECORD_TYPE,
            record_id=uid,
            new={
                "study": f"{study.study_id}@{study.version}",
                "design_sha256": study.sha256,
                "created_at": created_at.isoformat(),
                "pdf_path": str(path),
                "pdf_sha256": built.sha256,
                "results_sha256": built.results_sha256,
                "pages": built.pages,
                "attachments": built.attachments,
                "verdict": data.analysis.verdict.value,
            },
        )
        session.flush()
        return _info(session, uid)


def _current_results_sha256(session: Session, uid: str, built: dict[str, Any]) -> str:
    data = _study_data(session, str(built["study"]))
    content = _content(
        session,
        data,
        report_uid=uid,
        created_by=str(built["created_by"]),
        created_at=datetime.fromisoformat(str(built["created_at"])),
        final=False,
        sigs=[],
    )
    return next(a.sha256 for a in study_report_attachments(content) if a.name == "results.json")


def sign_study_report(
    wb: Workbench, actor: Actor, report_uid: str, *, meaning: str, password: str
) -> StudyReportInfo:
    """E-sign a study report's results with ``authored`` or ``approved`` (QA).

    Raises
    ------
    SignatureError
        Unknown meaning.
    RecordLockedError
        The report is sealed.
    WorkflowError
        Already signed with this meaning, or the study's data changed since the build.
    PermissionDeniedError
        The role may not sign so, or the author of the report tries to approve it.
    """
    permission = _MEANING_PERMISSION.get(meaning)
    if permission is None:
        raise SignatureError(
            f"Expected a study-report signature meaning of {sorted(_MEANING_PERMISSION)}; "
            f"found {meaning!r}."
        )
    with wb.transaction() as session:
        user = current_user(session, actor, permission)
        built = _built(session, report_uid)
        if _entry(session, report_uid, "study_report.seal") is not None:
            raise RecordLockedError(f"Report {report_uid} is sealed; it can no longer be signed.")
        existing = _signature_rows(session, report_uid)
        if any(s.meaning == meaning for s in existing):
            raise WorkflowError(f"Report {report_uid} already carries a '{meaning}' signature.")
        if meaning == "approved" and (
            built["created_by"] == user.username
            or any(s.meaning == "authored" and s.username == user.username for s in existing)
        ):
            raise PermissionDeniedError(
                f"{user.username} authored report {report_uid} and cannot also approve it "
                "(separation of duties)."
            )
        if _current_results_sha256(session, report_uid, built) != built["results_sha256"]:
            raise WorkflowError(
                f"Report {report_uid} is out of date: the study's records changed after it was "
                f"built. Build a new report ('workbench study report build {built['study']}')."
            )
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=meaning,
            record_type=RECORD_TYPE,
            record_id=report_uid,
            content_sha256=str(built["results_sha256"]),
        )
        audit.append(
            session,
            actor=user.username,
            action="study_report.sign",
            record_type=RECORD_TYPE,
            record_id=report_uid,
            new={"meaning": meaning, "signature_id": signature.id},
        )
        session.flush()
        return _info(session, report_uid)


def seal_study_report(wb: Workbench, actor: Actor, report_uid: str) -> StudyReportInfo:
    """Render the final PDF with its signatures and apply the PAdES seal (``report.seal``).

    Raises
    ------
    WorkflowError
        A required signature is missing, or the study's data changed since the build.
    RecordLockedError
        Already sealed.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.seal")
        built = _built(session, report_uid)
        if _entry(session, report_uid, "study_report.seal") is not None:
            raise RecordLockedError(f"Report {report_uid} is already sealed.")
        sigs = _signature_rows(session, report_uid)
        missing = _missing(sigs)
        if missing:
            raise WorkflowError(
                f"Report {report_uid} cannot be sealed before its required signatures: "
                + ", ".join(missing)
                + "."
            )
        for s in sigs:
            check = signatures.verify(session, s.id, str(built["results_sha256"]))
            if not check.valid:
                raise SignatureError(
                    f"Signature {s.id} on {report_uid} does not verify: {check.status}"
                )
        data = _study_data(session, str(built["study"]))
        content = _content(
            session,
            data,
            report_uid=report_uid,
            created_by=str(built["created_by"]),
            created_at=datetime.fromisoformat(str(built["created_at"])),
            final=True,
            sigs=sigs,
        )
        final_path = wb.workdir.reports_dir / f"{report_uid}-final.pdf"
        sealed_path = wb.workdir.reports_dir / f"{report_uid}.pdf"
        final = build_study_report(content, final_path)
        if final.results_sha256 != built["results_sha256"]:
            raise ReportError(
                f"The final report's results SHA-256 {final.results_sha256[:12]} differs from the "
                f"signed one {str(built['results_sha256'])[:12]}; the study's records changed."
            )
        sealed_sha = seal_pdf(
            final_path,
            sealed_path,
            signing_identity(wb),
            reason=f"Reader study report {report_uid}, sealed by {user.full_name}",
            location="Validation Workbench",
        )
        final_path.unlink(missing_ok=True)
        audit.append(
            session,
            actor=user.username,
            action="study_report.seal",
            record_type=RECORD_TYPE,
            record_id=report_uid,
            new={
                "sealed_path": str(sealed_path),
                "sealed_sha256": sealed_sha,
                "pages": final.pages,
            },
        )
        session.flush()
        return _info(session, report_uid)


def verify_study_report_file(wb: Workbench, path: str | Path) -> ReportCheck:
    """Check a study-report PDF: seal valid, whole-file and trusted; matches its audit record.

    Needs no account, so that an inspector can run it; the outcome is audited.
    Checks, besides the PAdES seal: the sealed file's SHA-256 is the one the
    ``study_report.seal`` entry recorded, the embedded ``results.json`` is the one
    built and signed, and the report carries exactly its required e-signatures,
    each intact and as printed in the document.
    """
    pdf = Path(path)
    if not pdf.is_file():
        return missing_file(pdf)
    outcome, checks = seal_checks(wb, pdf, keys_required=True)
    return check_study_report(wb, pdf, outcome, checks)


def check_study_report(
    wb: Workbench, pdf: Path, outcome: PdfVerification, checks: list[Check]
) -> ReportCheck:
    """Check a verified study-report PDF against its audit record; the outcome is audited.

    Parameters
    ----------
    wb : Workbench
    pdf : Path
    outcome : PdfVerification
        The PDF's seal verification (:func:`workbench.services.sealing.seal_checks`).
    checks : list of Check
        The seal checks, extended here with those against the records.

    Returns
    -------
    ReportCheck
    """
    uid = outcome.report_id
    with wb.transaction() as session:
        build = _entry(session, uid, "study_report.build") if uid else None
        seal = _entry(session, uid, "study_report.seal") if uid else None
        if build is None or not isinstance(build.new_value, dict):
            shown = audit.bounded_text(uid, limit=80)
            checks.append(("audit record", False, f"no reader-study report '{shown}'"))
        else:
            sealed = seal.new_value if seal is not None and isinstance(seal.new_value, dict) else {}
            checks.append(
                (
                    "audit record",
                    sealed.get("sealed_sha256") == outcome.file_sha256,
                    (
                        f"sealed SHA-256 matches audit entry #{seal.seq}"
                        if seal is not None and sealed.get("sealed_sha256") == outcome.file_sha256
                        else "sealed SHA-256 differs from the audited seal"
                        if seal is not None
                        else "the report was never sealed"
                    ),
                )
            )
            checks.append(
                (
                    "results hash",
                    build.new_value.get("results_sha256") == outcome.results_sha256,
                    f"results.json {str(outcome.results_sha256)[:16]}",
                )
            )
            from workbench.records import anchors

            checks += anchors.check_signature_set(
                session,
                RECORD_TYPE,
                str(uid),
                required=[(r, m, d) for r, m, d in REQUIRED_SIGNATURES],
                content_sha256=outcome.results_sha256 or "",
                embedded=None
                if outcome.embedded_signatures is None
                else list(outcome.embedded_signatures),
                excluded_from={"approved": build.actor},
            )
        return conclude_check(
            session, pdf, outcome, checks, action="study_report.verify", record_type=RECORD_TYPE
        )


def list_study_reports(
    wb: Workbench, actor: Actor, ref: str | None = None
) -> list[StudyReportInfo]:
    """Study reports, newest first, optionally of one study (``study.view``)."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "study.view")
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.record_type == RECORD_TYPE, AuditEntry.action == "study_report.build")
            .order_by(AuditEntry.seq.desc())
        ).all()
        out = []
        for e in entries:
            value = e.new_value if isinstance(e.new_value, dict) else {}
            if (
                ref is not None
                and value.get("study") != ref
                and value.get("study", "").split("@")[0] != ref
            ):
                continue
            out.append(_info(session, str(e.record_id)))
        return out

"""Report use cases: build the draft PDF, e-sign it, seal it, verify a PDF.

The report's numbers all come from the stored run (``Run.results``, the case
results, the adjudications and the audit trail); this module only arranges
them into :class:`~workbench.reports.ReportContent`.

Life cycle: ``draft`` (built; e-signatures are collected on the SHA-256 of
its ``results.json``) -> ``signed`` (every signature the protocol requires is
present) -> ``sealed`` (the final PDF, with the signature manifestations
printed, is PAdES-sealed with the workbench's certificate and its SHA-256
written to the audit trail). Approval is refused while discrepancies are
unadjudicated when the protocol requires adjudication; the author of a report
cannot approve it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    PermissionDeniedError,
    RecordLockedError,
    ReportError,
    SignatureError,
    WorkflowError,
)
from workbench.protocols import Protocol
from workbench.records import audit, signatures
from workbench.records.anchors import unresolved_discrepancies
from workbench.records.models import (
    ProtocolVersion,
    RegisteredModel,
    Report,
    ReportStatus,
    Run,
    RunStatus,
    Signature,
    utcnow,
)
from workbench.reports import (
    build_report as build_pdf,
)
from workbench.reports import content as rc
from workbench.reports import (
    seal_pdf,
)
from workbench.reports.attachments import RESULTS_JSON, report_attachments
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.protocols import parsed_protocol
from workbench.services.report_content import gather_report_inputs, report_content
from workbench.services.sealing import (
    ReportCheck,
    conclude_check,
    missing_file,
    seal_checks,
    signing_identity,
)
from workbench.services.study_reports import check_study_report

__all__ = [
    "ReportInfo",
    "ReportCheck",
    "build_report",
    "sign_report",
    "ensure_signed",
    "seal_report",
    "verify_report_file",
    "list_reports",
    "latest_report",
    "is_current",
    "signing_identity",
]

_MEANING_PERMISSION = {
    "authored": "report.sign.author",
    "reviewed": "report.sign.review",
    "approved": "report.sign.approve",
}


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """A stored report.

    Parameters
    ----------
    report_uid, run_uid, status : str
    pdf_path, pdf_sha256 : str or None
        The draft PDF.
    sealed_path, sealed_sha256 : str or None
        The sealed final PDF.
    content_sha256 : str or None
        SHA-256 of ``results.json``: what every e-signature signs.
    signatures : list of dict
        Printed name, role, meaning, UTC time of each e-signature.
    missing_signatures : list of str
        ``role (meaning)`` still required.
    """

    report_uid: str
    run_uid: str
    status: str
    pdf_path: str | None
    pdf_sha256: str | None
    sealed_path: str | None
    sealed_sha256: str | None
    content_sha256: str | None
    created_by: str
    created_at: str
    signatures: list[dict[str, Any]] = field(default_factory=list)
    missing_signatures: list[str] = field(default_factory=list)


def _protocol(session: Session, run: Run) -> Protocol:
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    return parsed_protocol(pv)


def _signature_rows(session: Session, report: Report) -> list[Signature]:
    return list(
        session.scalars(
            select(Signature)
            .where(Signature.record_type == "report", Signature.record_id == report.report_uid)
            .order_by(Signature.id)
        )
    )


def _missing(protocol: Protocol, sigs: list[Signature]) -> list[str]:
    have = {(s.role, s.meaning) for s in sigs}
    return [
        f"{r.role.value} ({r.meaning})"
        for r in protocol.signatures
        if (r.role.value, r.meaning) not in have
    ]


def _info(session: Session, report: Report) -> ReportInfo:
    run = session.get(Run, report.run_id)
    assert run is not None
    sigs = _signature_rows(session, report)
    return ReportInfo(
        report_uid=report.report_uid,
        run_uid=run.run_uid,
        status=report.status,
        pdf_path=report.pdf_path,
        pdf_sha256=report.pdf_sha256,
        sealed_path=report.sealed_path,
        sealed_sha256=report.sealed_sha256,
        content_sha256=report.content_sha256,
        created_by=report.created_by,
        created_at=report.created_at.isoformat(),
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
        missing_signatures=_missing(_protocol(session, run), sigs),
    )


def _content(
    session: Session,
    report: Report,
    *,
    final: bool,
    signatures_list: list[Signature],
    workdir: Path | None = None,
) -> rc.ReportContent:
    return report_content(
        gather_report_inputs(
            session, report, final=final, signatures_list=signatures_list, workdir=workdir
        )
    )


def build_report(wb: Workbench, actor: Actor, run_uid: str) -> ReportInfo:
    """Build the draft PDF of a completed run (``report.build``).

    Returns
    -------
    ReportInfo
        Status ``draft``; its ``content_sha256`` is what signers sign.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.build")
        run = get_one(session, Run, "run", run_uid=run_uid)
        if run.status != RunStatus.COMPLETED.value:
            raise WorkflowError(
                f"Run {run_uid} is {run.status}; only a completed run has a report."
            )
        number = len(list(session.scalars(select(Report).where(Report.run_id == run.id)))) + 1
        report = Report(
            report_uid=f"VR-{run_uid.removeprefix('RUN-')}-{number}",
            run_id=run.id,
            status=ReportStatus.DRAFT.value,
            created_by=user.username,
            created_at=utcnow().replace(microsecond=0),
        )
        session.add(report)
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.create",
            record_type="report",
            record_id=report.report_uid,
            new={"run": run_uid, "status": report.status},
        )
        content = _content(
            session, report, final=False, signatures_list=[], workdir=wb.workdir.root
        )
        wb.workdir.reports_dir.mkdir(parents=True, exist_ok=True)
        path = wb.workdir.reports_dir / f"{report.report_uid}-draft.pdf"
        built = build_pdf(content, path)
        report.pdf_path = str(path)
        report.pdf_sha256 = built.sha256
        report.content_sha256 = built.results_sha256
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.build",
            record_type="report",
            record_id=report.report_uid,
            new={
                "pdf_sha256": built.sha256,
                "results_sha256": built.results_sha256,
                "pages": built.pages,
                "attachments": built.attachments,
            },
        )
        return _info(session, report)


def sign_report(
    wb: Workbench, actor: Actor, report_uid: str, *, meaning: str, password: str
) -> ReportInfo:
    """E-sign a report's content with a meaning the protocol requires.

    Raises
    ------
    RecordLockedError
        The report is sealed.
    WorkflowError
        Meaning not required, already signed with it, or approval while
        discrepancies are unadjudicated (when the protocol requires adjudication).
    PermissionDeniedError
        Role may not sign with this meaning, or the author tries to approve.
    """
    permission = _MEANING_PERMISSION.get(meaning)
    if permission is None:
        raise SignatureError(
            f"Expected a report signature meaning of {sorted(_MEANING_PERMISSION)}; "
            f"found {meaning!r}."
        )
    with wb.transaction() as session:
        user = current_user(session, actor, permission)
        report = get_one(session, Report, "report", report_uid=report_uid)
        if report.status == ReportStatus.SEALED.value:
            raise RecordLockedError(f"Report {report_uid} is sealed; it can no longer be signed.")
        run = session.get(Run, report.run_id)
        assert run is not None
        protocol = _protocol(session, run)
        required = [
            r for r in protocol.signatures if r.meaning == meaning and r.role.value == user.role
        ]
        if not required:
            raise WorkflowError(
                f"The protocol does not ask for a '{meaning}' signature by role '{user.role}'."
            )
        existing = _signature_rows(session, report)
        if any(s.meaning == meaning for s in existing):
            raise WorkflowError(f"Report {report_uid} already carries a '{meaning}' signature.")
        for other in required[0].distinct_from:
            if any(s.meaning == other and s.username == user.username for s in existing):
                raise PermissionDeniedError(
                    f"{user.username} signed this report as '{other}' and cannot also sign it as "
                    f"'{meaning}' (separation of duties)."
                )
        if meaning == "approved" and report.created_by == user.username:
            raise PermissionDeniedError("The author of a report cannot approve it.")
        if meaning == "approved" and protocol.adjudication.required_before_approval:
            # a row marked adjudicated without the reviewers' audited decision stays open
            open_items = [d.case_id for d in unresolved_discrepancies(session, run)]
            if open_items:
                raise WorkflowError(
                    f"Report {report_uid} cannot be approved: {len(open_items)} discrepanc"
                    f"{'y is' if len(open_items) == 1 else 'ies are'} not adjudicated "
                    f"(e.g. {', '.join(open_items[:5])})."
                )
        assert report.content_sha256 is not None
        _require_current(session, report, wb.workdir.root)
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=meaning,
            record_type="report",
            record_id=report.report_uid,
            content_sha256=report.content_sha256,
        )
        old_status = report.status
        missing = _missing(protocol, [*existing, signature])
        if not missing:
            report.status = ReportStatus.SIGNED.value
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.sign",
            record_type="report",
            record_id=report.report_uid,
            old={"status": old_status},
            new={"status": report.status, "meaning": meaning, "signature_id": signature.id},
        )
        return _info(session, report)


def _current_results_sha256(session: Session, report: Report, workdir: Path) -> str:
    """SHA-256 of the ``results.json`` the report would have if built now."""
    content = _content(session, report, final=False, signatures_list=[], workdir=workdir)
    return next(a.sha256 for a in report_attachments(content) if a.name == RESULTS_JSON)


def _require_current(session: Session, report: Report, workdir: Path) -> None:
    """Refuse to sign or seal a draft whose results changed since it was built.

    Adjudication decisions recorded after the draft was built change what the
    report says, so a signature on the old draft would not cover them.
    """
    if _current_results_sha256(session, report, workdir) != report.content_sha256:
        run = session.get(Run, report.run_id)
        raise WorkflowError(
            f"Report {report.report_uid} is out of date: the run's results or adjudications "
            "changed after it was built. Build a new report "
            f"('workbench report build {run.run_uid if run else ''}') and sign that one."
        )


def is_current(wb: Workbench, report_uid: str) -> bool:
    """Whether a draft still shows the run's current results and adjudications."""
    with wb.transaction(readonly=True) as session:
        report = get_one(session, Report, "report", report_uid=report_uid)
        return _current_results_sha256(session, report, wb.workdir.root) == report.content_sha256


def ensure_signed(
    wb: Workbench, actor: Actor, report_uid: str, meaning: str, password: str
) -> ReportInfo:
    """Sign with ``meaning`` unless the report already carries that signature."""
    with wb.transaction(readonly=True) as session:
        report = get_one(session, Report, "report", report_uid=report_uid)
        if any(s.meaning == meaning for s in _signature_rows(session, report)):
            return _info(session, report)
    return sign_report(wb, actor, report_uid, meaning=meaning, password=password)


def seal_report(wb: Workbench, actor: Actor, report_uid: str) -> ReportInfo:
    """Render the final PDF with its signatures and apply the PAdES seal (``report.seal``).

    Raises
    ------
    WorkflowError
        A required signature is missing, or discrepancies are unadjudicated.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.seal")
        report = get_one(session, Report, "report", report_uid=report_uid)
        if report.status == ReportStatus.SEALED.value:
            raise RecordLockedError(f"Report {report_uid} is already sealed.")
        run = session.get(Run, report.run_id)
        assert run is not None
        protocol = _protocol(session, run)
        sigs = _signature_rows(session, report)
        missing = _missing(protocol, sigs)
        if missing:
            raise WorkflowError(
                f"Report {report_uid} cannot be sealed before its required signatures: "
                + ", ".join(missing)
                + "."
            )
        if protocol.adjudication.required_before_approval and unresolved_discrepancies(
            session, run
        ):
            raise WorkflowError(f"Report {report_uid} has unadjudicated discrepancies.")
        _require_current(session, report, wb.workdir.root)
        for s in sigs:
            check = signatures.verify(session, s.id, report.content_sha256 or "")
            if not check.valid:
                raise SignatureError(
                    f"Signature {s.id} on {report_uid} does not verify: {check.status}"
                )
        content = _content(
            session, report, final=True, signatures_list=sigs, workdir=wb.workdir.root
        )
        final_path = wb.workdir.reports_dir / f"{report.report_uid}-final.pdf"
        sealed_path = wb.workdir.reports_dir / f"{report.report_uid}.pdf"
        built = build_pdf(content, final_path)
        if built.results_sha256 != report.content_sha256:
            raise ReportError(
                f"The final report's results SHA-256 {built.results_sha256[:12]} differs from the "
                f"signed one {str(report.content_sha256)[:12]}; the stored results changed."
            )
        sealed_sha = seal_pdf(
            final_path,
            sealed_path,
            signing_identity(wb),
            reason=f"Validation report {report.report_uid}, sealed by {user.full_name}",
            location="Validation Workbench",
        )
        final_path.unlink(missing_ok=True)
        old_status = report.status
        report.sealed_path = str(sealed_path)
        report.sealed_sha256 = sealed_sha
        report.status = ReportStatus.SEALED.value
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.seal",
            record_type="report",
            record_id=report.report_uid,
            old={"status": old_status},
            new={"status": report.status, "sealed_sha256": sealed_sha, "pages": built.pages},
        )
        return _info(session, report)


def verify_report_file(wb: Workbench, path: str | Path) -> ReportCheck:
    """Check a PDF: seal valid and whole-file, trusted, matches its record and signatures.

    Needs no account, so that an inspector can run it; the outcome is audited.
    """
    pdf = Path(path)
    if not pdf.is_file():
        return missing_file(pdf)
    with wb.transaction(readonly=True) as session:
        sealed = session.scalars(
            select(Report.id).where(Report.sealed_sha256.is_not(None)).limit(1)
        ).first()
    outcome, checks = seal_checks(wb, pdf, keys_required=sealed is not None)
    uid = outcome.report_id
    if uid and uid.startswith("SR-"):  # a reader-study report: checked against its own record
        return check_study_report(wb, pdf, outcome, checks)
    with wb.transaction() as session:
        report = (
            session.scalars(select(Report).where(Report.report_uid == uid)).first() if uid else None
        )
        if report is None:
            shown = audit.bounded_text(uid, limit=80)  # the id comes from the PDF: untrusted
            checks.append(("database record", False, f"no report record '{shown}'"))
        else:
            checks.append(
                (
                    "database record",
                    report.sealed_sha256 == outcome.file_sha256,
                    (
                        "sealed SHA-256 matches record "
                        if report.sealed_sha256 == outcome.file_sha256
                        else "sealed SHA-256 differs from record "
                    )
                    + report.report_uid,
                )
            )
            checks.append(
                (
                    "results hash",
                    report.content_sha256 == outcome.results_sha256,
                    f"results.json {str(outcome.results_sha256)[:16]}",
                )
            )
            from workbench.records import anchors

            differs = anchors.check_report(session, report, outcome.file_sha256)
            checks.append(
                (
                    "audited hashes",
                    not differs,
                    "; ".join(d.describe() for d in differs)
                    or "file and results match the audited build and seal",
                )
            )
            run = session.get(Run, report.run_id)
            assert run is not None
            checks += anchors.check_signature_set(
                session,
                "report",
                report.report_uid,
                required=[
                    (r.role.value, r.meaning, r.distinct_from)
                    for r in _protocol(session, run).signatures
                ],
                content_sha256=outcome.results_sha256 or "",
                embedded=None
                if outcome.embedded_signatures is None
                else list(outcome.embedded_signatures),
                excluded_from={"approved": report.created_by},
            )
        return conclude_check(
            session, pdf, outcome, checks, action="report.verify", record_type="report"
        )


def list_reports(wb: Workbench) -> list[ReportInfo]:
    """Every report, newest first."""
    with wb.transaction(readonly=True) as session:
        return [
            _info(session, r) for r in session.scalars(select(Report).order_by(Report.id.desc()))
        ]


def latest_report(wb: Workbench, run_uid: str) -> ReportInfo | None:
    """The newest report of a run, if any."""
    with wb.transaction(readonly=True) as session:
        run = get_one(session, Run, "run", run_uid=run_uid)
        report = session.scalars(
            select(Report).where(Report.run_id == run.id).order_by(Report.id.desc())
        ).first()
        return _info(session, report) if report else None


_ = (RegisteredModel, ProtocolVersion)

"""The sealing identity and the outcome of checking a sealed PDF, shared by every report kind.

Validation reports (:mod:`workbench.services.reports`) and reader-study reports
(:mod:`workbench.services.study_reports`) are sealed with the same identity and
checked into the same :class:`ReportCheck`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from workbench.records import audit
from workbench.reports import ensure_signing_identity, verify_pdf
from workbench.reports.keys import SigningIdentity, existing_trust_roots
from workbench.reports.sealing import PdfVerification
from workbench.services.context import Workbench

__all__ = [
    "Check",
    "ReportCheck",
    "conclude_check",
    "missing_file",
    "seal_checks",
    "signing_identity",
]

#: One line of a report check: (name, passed, detail).
Check = tuple[str, bool, str]


def signing_identity(wb: Workbench) -> SigningIdentity:
    """The sealing identity: a configured certificate, else the local workbench CA.

    ``WORKBENCH_SIGNING_KEY``, ``WORKBENCH_SIGNING_CERT`` and optionally
    ``WORKBENCH_SIGNING_CHAIN`` / ``WORKBENCH_SIGNING_PASSPHRASE`` name a
    deployment's own key and certificate (PEM or DER).
    """
    key, cert = os.environ.get("WORKBENCH_SIGNING_KEY"), os.environ.get("WORKBENCH_SIGNING_CERT")
    if key and cert:
        return SigningIdentity.from_files(
            key,
            cert,
            os.environ.get("WORKBENCH_SIGNING_CHAIN"),
            os.environ.get("WORKBENCH_SIGNING_PASSPHRASE"),
        )
    return ensure_signing_identity(wb.workdir.keys_dir)


@dataclass(frozen=True, slots=True)
class ReportCheck:
    """Outcome of checking a sealed report PDF (``reports.verify_report_file``)."""

    path: str
    valid: bool
    reason: str
    report_uid: str | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per check: OK/FAIL, name, detail."""
        return [
            f"  {'OK  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.checks
        ]


def seal_checks(
    wb: Workbench, pdf: Path, *, keys_required: bool
) -> tuple[PdfVerification, list[Check]]:
    """Verify a PDF's PAdES seal against the workbench's trust roots.

    Parameters
    ----------
    wb : Workbench
    pdf : Path
        An existing file.
    keys_required : bool
        Whether the local signing keys must exist (once any report was sealed with
        them); a configured certificate (``WORKBENCH_SIGNING_CERT``) is used when set.
        No new keys are ever made to verify with.

    Returns
    -------
    (PdfVerification, list of Check)
        The verification and its three checks: seal intact, covering the whole file,
        signed by a trusted certificate.
    """
    if os.environ.get("WORKBENCH_SIGNING_KEY") and os.environ.get("WORKBENCH_SIGNING_CERT"):
        roots = signing_identity(wb).trust_roots
    else:
        roots = existing_trust_roots(wb.workdir.keys_dir, required=keys_required)
    outcome = verify_pdf(pdf, trust_roots=roots)
    whole = outcome.covers_whole_file
    return outcome, [
        ("PAdES seal", outcome.signed and outcome.intact, outcome.signer_subject or "no signature"),
        (
            "covers whole file",
            whole,
            "no bytes added after sealing" if whole else "modified after sealing",
        ),
        (
            "trusted certificate",
            outcome.trusted,
            "chains to the workbench CA" if outcome.trusted else "not trusted",
        ),
    ]


def conclude_check(
    session: Session,
    pdf: Path,
    outcome: PdfVerification,
    checks: list[Check],
    *,
    action: str,
    record_type: str,
) -> ReportCheck:
    """The check's verdict, written to the audit trail as ``action`` by the system.

    Parameters
    ----------
    session : Session
    pdf : Path
    outcome : PdfVerification
    checks : list of Check
        The seal checks and those against the report's records.
    action : str
        ``report.verify`` or ``study_report.verify``.
    record_type : str

    Returns
    -------
    ReportCheck
        Valid when the PDF verifies and every check passed; the reason names each
        problem.
    """
    valid = all(ok for _, ok, _ in checks) and outcome.valid
    reason = "; ".join([*outcome.problems, *(f"{n}: {d}" for n, ok, d in checks if not ok)])
    uid = outcome.report_id
    audit.append(
        session,
        actor="system",
        action=action,
        record_type=record_type,
        record_id=uid or pdf.name,
        new={
            "file_sha256": outcome.file_sha256,
            "valid": valid,
            "reason": audit.bounded_text(reason, limit=500),
        },
    )
    return ReportCheck(str(pdf), valid, reason or "valid", uid, checks)


def missing_file(pdf: Path) -> ReportCheck:
    """The check of a path that is not a file."""
    return ReportCheck(
        str(pdf), False, f"{pdf} does not exist", checks=[("file", False, "missing")]
    )

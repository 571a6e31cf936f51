"""The sealing identity and the outcome of checking a sealed PDF, shared by every report kind.

Validation reports (:mod:`workbench.services.reports`) and reader-study reports
(:mod:`workbench.services.study_reports`) are sealed with the same identity and
checked into the same :class:`ReportCheck`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from workbench.reports import ensure_signing_identity
from workbench.reports.keys import SigningIdentity
from workbench.services.context import Workbench

__all__ = ["ReportCheck", "signing_identity"]


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

"""Findings of the data-quality checks and the report that gathers them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd

from workbench.errors import QualityGateError

__all__ = ["Finding", "QualityReport", "Severity"]


class Severity(StrEnum):
    """How serious a finding is.

    ``critical`` findings block the lock of a test set and every run on it;
    ``major`` must be reviewed and justified in the report; ``minor`` and
    ``info`` are listed.
    """

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


_ORDER = {s: i for i, s in enumerate(Severity)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One data-quality problem.

    Parameters
    ----------
    check : str
        Name of the check, e.g. ``"phi"``, ``"series_completeness"``.
    severity : Severity
        See :class:`Severity`.
    path : str
        File (relative POSIX path under the test-set root) or folder the finding is
        about; ``""`` for the whole set.
    attribute : str
        DICOM keyword with tag (``"PatientName (0010,0010)"``), index column or
        ``""``. Inside sequences the path of keywords, e.g.
        ``"RequestAttributesSequence[0].RequestedProcedureDescription (0032,1060)"``.
    message : str
        What was expected and what was found. Never contains the value of an
        identifying attribute.
    """

    check: str
    severity: Severity
    path: str
    attribute: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_dict(self) -> dict[str, str]:
        """The finding as a JSON-serialisable dict."""
        return {
            "check": self.check,
            "severity": self.severity.value,
            "path": self.path,
            "attribute": self.attribute,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class QualityReport:
    """All findings of one run of :func:`~workbench.quality.run_quality_checks`.

    Parameters
    ----------
    findings : tuple of Finding
        Sorted by severity, check, path and attribute.
    checks_run : tuple of str
        Names of the checks that ran (a check with no findings passed).
    n_files : int
        Readable DICOM files checked.
    suite : str
        Name of the data-quality suite (what protocols name in ``data_quality_suite``).
    """

    findings: tuple[Finding, ...]
    checks_run: tuple[str, ...] = ()
    n_files: int = 0
    suite: str = ""
    summary: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def build(
        findings: list[Finding], *, checks_run: list[str], n_files: int, suite: str
    ) -> QualityReport:
        """Sort findings and count them by severity."""
        ordered = tuple(
            sorted(findings, key=lambda f: (_ORDER[f.severity], f.check, f.path, f.attribute))
        )
        counts = Counter(f.severity.value for f in ordered)
        summary = {s.value: counts.get(s.value, 0) for s in Severity}
        return QualityReport(ordered, tuple(checks_run), n_files, suite, summary)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        """The critical findings: they block the lock and the run."""
        return tuple(f for f in self.findings if f.severity is Severity.CRITICAL)

    @property
    def ok(self) -> bool:
        """True when nothing blocks."""
        return not self.blocking

    def by_check(self, check: str) -> tuple[Finding, ...]:
        """Findings of one check."""
        return tuple(f for f in self.findings if f.check == check)

    def raise_if_blocking(self) -> None:
        """Raise :class:`~workbench.errors.QualityGateError` listing what to fix.

        Raises
        ------
        QualityGateError
            When there is at least one critical finding; the message lists up to
            20 of them (check, file, attribute, message) and the total.
        """
        blocking = self.blocking
        if not blocking:
            return
        lines = [
            f"  - [{f.check}] {f.path or '(test set)'}"
            + (f" {f.attribute}" if f.attribute else "")
            + f": {f.message}"
            for f in blocking[:20]
        ]
        if len(blocking) > 20:
            lines.append(f"  ... and {len(blocking) - 20} more critical finding(s)")
        raise QualityGateError(
            f"{len(blocking)} critical data-quality finding(s) block the lock and the run. "
            "Fix these files (or remove them from the test set) and check again:\n"
            + "\n".join(lines)
        )

    def to_frame(self) -> pd.DataFrame:
        """Findings as a DataFrame with columns check, severity, path, attribute, message."""
        return pd.DataFrame.from_records(
            [f.to_dict() for f in self.findings],
            columns=["check", "severity", "path", "attribute", "message"],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for storage and the report."""
        return {
            "suite": self.suite,
            "n_files": self.n_files,
            "checks_run": list(self.checks_run),
            "summary": dict(self.summary),
            "blocking": len(self.blocking),
            "findings": [f.to_dict() for f in self.findings],
        }

"""Findings of the data-quality checks and the report that gathers them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
from pydicom.datadict import tag_for_keyword

from workbench.errors import QualityGateError

__all__ = [
    "FINDING_COLUMNS",
    "Finding",
    "FindingGroup",
    "QualityReport",
    "Severity",
    "attribute",
    "finding_id",
]

FINDING_COLUMNS = (
    "id",
    "check",
    "severity",
    "path",
    "series_instance_uid",
    "attribute",
    "expected",
    "found",
    "message",
)
"""Columns of :meth:`QualityReport.to_frame` and of the CSV export."""


def finding_id(data: Mapping[str, Any]) -> str:
    """Stable identifier of a finding: SHA-256 (16 hex digits) of its canonical content.

    The same finding found again by a later check has the same identifier; waivers
    refer to it. The content is the check, severity, path, attribute and message,
    plus the series instance UID of findings about one series (several series may
    share a folder); findings about a file or the whole set carry none, so that
    their identifiers are those of earlier releases.

    Parameters
    ----------
    data : mapping
        A finding as :meth:`Finding.to_dict` writes it (stored findings of earlier
        releases, without ``series_instance_uid``, are accepted).

    Returns
    -------
    str
        16 lower-case hexadecimal digits.
    """
    key = {
        k: str(data.get(k, "") or "") for k in ("check", "severity", "path", "attribute", "message")
    }
    series = str(data.get("series_instance_uid", "") or "")
    if series:
        key["series_instance_uid"] = series
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def attribute(keyword: str) -> str:
    """A DICOM keyword with its tag as findings name it: ``"PatientName (0010,0010)"``.

    Parameters
    ----------
    keyword : str
        DICOM keyword from the data dictionary (PS3.6); anything else is returned
        unchanged.
    """
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


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
_ITEM = re.compile(r"\[\d+\]")


def _group_attribute(finding: Finding) -> str:
    """The attribute as groups name it: items of a sequence (``Seq[3].X``) are one."""
    return _ITEM.sub("[*]", finding.attribute)


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
    expected : str
        What the check expected, short (``"absent or empty"``, ``"CT"``).
    found : str
        What it found, short; for identifying attributes a description of the
        value (``"a value that looks like a person name"``), never the value.
    series_instance_uid : str
        Series Instance UID of a finding about one series or case (series checks,
        reference standard, modality); ``""`` otherwise. Several series may share a
        folder, so it is part of :attr:`id`.
    """

    check: str
    severity: Severity
    path: str
    attribute: str
    message: str
    expected: str = ""
    found: str = ""
    series_instance_uid: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def id(self) -> str:
        """See :func:`finding_id`."""
        return finding_id(
            {
                "check": self.check,
                "severity": self.severity.value,
                "path": self.path,
                "attribute": self.attribute,
                "message": self.message,
                "series_instance_uid": self.series_instance_uid,
            }
        )

    def to_dict(self) -> dict[str, str]:
        """The finding as a JSON-serialisable dict."""
        return {
            "id": self.id,
            "check": self.check,
            "severity": self.severity.value,
            "path": self.path,
            "series_instance_uid": self.series_instance_uid,
            "attribute": self.attribute,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict` (stored findings of earlier releases load too)."""
        return Finding(
            str(data.get("check", "")),
            Severity(str(data.get("severity", "info"))),
            str(data.get("path", "")),
            str(data.get("attribute", "")),
            str(data.get("message", "")),
            str(data.get("expected", "") or ""),
            str(data.get("found", "") or ""),
            str(data.get("series_instance_uid", "") or ""),
        )


@dataclass(frozen=True, slots=True)
class FindingGroup:
    """Findings of one check, severity and attribute, counted.

    Parameters
    ----------
    check, severity, attribute : str
        What the findings share.
    count : int
        How many findings.
    n_paths : int
        How many distinct files or folders they are about.
    example : str
        The message of the first finding of the group.
    """

    check: str
    severity: Severity
    attribute: str
    count: int
    n_paths: int
    example: str


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
            sorted(
                findings,
                key=lambda f: (
                    _ORDER[f.severity],
                    f.check,
                    f.path,
                    f.series_instance_uid,
                    f.attribute,
                ),
            )
        )
        counts = Counter(f.severity.value for f in ordered)
        summary = {s.value: counts.get(s.value, 0) for s in Severity}
        return QualityReport(ordered, tuple(checks_run), n_files, suite, summary)

    @property
    def counts(self) -> dict[str, int]:
        """Findings by severity, every severity present (zero when none)."""
        counts = Counter(f.severity.value for f in self.findings)
        return {s.value: counts.get(s.value, 0) for s in Severity}

    def grouped(self) -> tuple[FindingGroup, ...]:
        """Findings grouped by check, severity and attribute, most severe first.

        Returns
        -------
        tuple of FindingGroup
            Sorted by severity, then count (largest first), check and attribute.
        """
        groups: dict[tuple[str, Severity, str], list[Finding]] = {}
        for f in self.findings:
            groups.setdefault((f.check, f.severity, _group_attribute(f)), []).append(f)
        out = [
            FindingGroup(c, s, a, len(items), len({f.path for f in items}), items[0].message)
            for (c, s, a), items in groups.items()
        ]
        out.sort(key=lambda g: (_ORDER[g.severity], -g.count, g.check, g.attribute))
        return tuple(out)

    def filtered(
        self,
        *,
        severities: Iterable[Severity | str] = (),
        checks: Iterable[str] = (),
        attributes: Iterable[str] = (),
    ) -> QualityReport:
        """The report restricted to some severities, checks and attributes.

        Parameters
        ----------
        severities, checks : iterable of str
            Keep the findings of these severities and checks; empty keeps all.
        attributes : iterable of str
            Keep the findings of these attributes, spelled as :meth:`grouped` spells
            them (items of a sequence as ``Seq[*].X``); empty keeps all.

        Returns
        -------
        QualityReport
            Same suite, checks run and file count; only the findings kept.

        Raises
        ------
        ValueError
            A severity that is not one of :class:`Severity`.
        """
        wanted_severities = set()
        for s in severities:
            if s not in set(Severity):
                choices = ", ".join(v.value for v in Severity)
                raise ValueError(f"Unknown severity {s!r}; expected one of {choices}.")
            wanted_severities.add(Severity(s))
        wanted_checks, wanted_attributes = set(checks), set(attributes)
        kept = [
            f
            for f in self.findings
            if (not wanted_severities or f.severity in wanted_severities)
            and (not wanted_checks or f.check in wanted_checks)
            and (not wanted_attributes or _group_attribute(f) in wanted_attributes)
        ]
        return QualityReport.build(
            kept, checks_run=list(self.checks_run), n_files=self.n_files, suite=self.suite
        )

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
        """Findings as a DataFrame with the columns :data:`FINDING_COLUMNS`."""
        return pd.DataFrame.from_records(
            [f.to_dict() for f in self.findings], columns=list(FINDING_COLUMNS)
        )

    def export(self, path: str | Path) -> Path:
        """Write the findings to ``path``: CSV for ``.csv``, else JSON (:meth:`to_dict`).

        Parameters
        ----------
        path : str or Path
            Target file; its suffix chooses the format.

        Returns
        -------
        Path
            The file written.
        """
        target = Path(path)
        if target.suffix.lower() == ".csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(FINDING_COLUMNS), lineterminator="\n")
            writer.writeheader()
            for f in self.findings:
                writer.writerow(f.to_dict())
            target.write_text(buffer.getvalue(), encoding="utf-8")
        else:
            target.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return target

    @staticmethod
    def from_dict(data: dict[str, Any]) -> QualityReport:
        """Rebuild a report stored with :meth:`to_dict`."""
        findings = [Finding.from_dict(f) for f in data.get("findings", [])]
        return QualityReport.build(
            findings,
            checks_run=list(data.get("checks_run", [])),
            n_files=int(data.get("n_files", 0)),
            suite=str(data.get("suite", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for storage and the report."""
        return {
            "suite": self.suite,
            "n_files": self.n_files,
            "checks_run": list(self.checks_run),
            "summary": dict(self.summary),
            "counts": self.counts,
            "blocking": len(self.blocking),
            "findings": [f.to_dict() for f in self.findings],
        }

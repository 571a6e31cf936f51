"""The PDF report of a reader study: content model, figures, attachments and layout.

A study report is built, e-signed and sealed like a validation report: the same
page furniture (results SHA-256 on every page, "page x of y", a draft banner),
the same fonts and table style (the helpers of :mod:`workbench.reports.builder`),
e-signatures printed with their 21 CFR 11.50 manifestation, the audit appendix,
and the same embedded-file layout, so that :func:`~workbench.reports.verify_pdf`
reads its ``results.json`` (report id and results SHA-256) and its
``report-content.json`` (embedded signature records).

Embedded files: ``results.json`` (what signatures sign), ``analysis.json`` (every
number of the Obuchowski-Rockette analysis), ``ratings.csv`` (every rating row a
reader ever gave, with the reference label and whether it counts),
``case-order.csv`` (the randomisation seed and the case order each reader saw in
each arm), ``study-design.yaml`` (the approved design, verbatim) and
``report-content.json`` (the whole content, signatures and audit trail included).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reportlab.graphics.shapes import Drawing, Group, Line, Polygon, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    PageBreak,
    Spacer,
    Table,
)

from workbench.errors import ReportError
from workbench.reports._document import (
    CONTENT_WIDTH,
    DocumentInfo,
    clip,
    embed_attachments,
    render,
    require_folder,
    write_atomically,
)
from workbench.reports._style import (
    ACCENT,
    FAIL_FILL,
    FAIL_INK,
    MUTED,
    PASS_FILL,
    PASS_INK,
    RULE,
    SANS,
    SANS_BOLD,
    SERIES_COLOURS,
    register_fonts,
    text,
)
from workbench.reports.attachments import (
    REPORT_CONTENT_JSON,
    RESULTS_JSON,
    Attachment,
    _csv_cell,
)
from workbench.reports.builder import (
    DASH,
    BuiltReport,
    _h1,
    _h2,
    _key_values,
    _markup,
    _matching,
    _p,
    _signature_box,
    _signature_rows,
    _table,
)
from workbench.reports.content import (
    AuditEntry,
    ReportEstimate,
    ReportStatus,
    RequiredSignature,
    SignatureEntry,
    Verdict,
    canonical_json,
)
from workbench.reports.formatting import (
    format_ci,
    format_level,
    format_number,
    format_p_value,
    format_utc,
    format_verdict,
)

__all__ = [
    "ANALYSIS_JSON",
    "CASE_ORDER_CSV",
    "MARKS_CSV",
    "RATINGS_CSV",
    "STUDY_DESIGN_YAML",
    "FixedEffectsRow",
    "ReaderCurve",
    "ReadingTime",
    "StudyDesignSummary",
    "StudyReader",
    "StudyReadingSession",
    "StudyReportContent",
    "build_study_report",
    "difference_plot",
    "roc_panel",
    "study_report_attachments",
]

ANALYSIS_JSON = "analysis.json"
RATINGS_CSV = "ratings.csv"
CASE_ORDER_CSV = "case-order.csv"
MARKS_CSV = "marks.csv"
STUDY_DESIGN_YAML = "study-design.yaml"

_DESCRIPTIONS = {
    RESULTS_JSON: "Results of the study (canonical JSON); its SHA-256 is the results SHA-256",
    ANALYSIS_JSON: "Obuchowski-Rockette analysis: every estimate, test and variance component",
    RATINGS_CSV: "Every rating row of every reader (superseded ones too) with the reference label",
    CASE_ORDER_CSV: "Randomisation seed and the case order each reader saw in each arm",
    MARKS_CSV: "Every lesion mark of every reader, matched to the reference lesions (detection)",
    STUDY_DESIGN_YAML: "Approved reader-study design, verbatim",
    REPORT_CONTENT_JSON: "Full report content incl. signatures and audit trail (canonical JSON)",
}
_MIME = {
    RESULTS_JSON: "application/json",
    ANALYSIS_JSON: "application/json",
    RATINGS_CSV: "text/csv",
    CASE_ORDER_CSV: "text/csv",
    MARKS_CSV: "text/csv",
    STUDY_DESIGN_YAML: "application/yaml",
    REPORT_CONTENT_JSON: "application/json",
}


@dataclass(frozen=True, slots=True)
class StudyReader:
    """A reader as the report names them: account, printed name, role, simulated or not."""

    username: str
    name: str
    role: str
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class StudyReadingSession:
    """One reader's reading of one arm: the seed and case order they saw, and its signature."""

    reader: str
    arm: str
    seed: int
    case_order: tuple[str, ...]
    started_at: datetime
    signed_at: datetime | None
    signature_id: str = ""


@dataclass(frozen=True, slots=True)
class ReaderCurve:
    """One reader's empirical curve in one arm, with the figure of merit and its CI.

    ``fpr``/``tpr`` are the ROC curve's points (1 - specificity, sensitivity), or in a
    detection study the wAFROC curve's (FPF, wLLF) from (0, 0) to (1, 1).
    """

    reader: str
    arm: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: ReportEstimate


@dataclass(frozen=True, slots=True)
class ReadingTime:
    """Reading time per case of one reader in one arm (seconds)."""

    reader: str
    arm: str
    n: int
    median: float | None
    q1: float | None
    q3: float | None


@dataclass(frozen=True, slots=True)
class FixedEffectsRow:
    """One generalisation of the OR analysis: its test and the reader-averaged difference."""

    analysis: str
    statistic_name: str
    statistic: float
    df: str
    p_value: float
    difference: ReportEstimate


@dataclass(frozen=True, slots=True)
class StudyDesignSummary:
    """The approved design as the report shows it.

    Parameters
    ----------
    arms : tuple of (str, str)
        ``(arm id, model ref or "")``, first arm first; the difference is second minus first.
    simulation : str
        How simulated readers' ratings were drawn; empty when the readers are people.
    """

    study_id: str
    version: int
    title: str
    sha256: str
    yaml_text: str
    created_by: str
    approved_by: str
    approved_at: datetime | None
    test_set: str
    manifest_digest: str
    design_kind: str
    arms: tuple[tuple[str, str], ...]
    rating_scale: str
    washout_days: float
    hypothesis: str
    margin: float
    level: float
    analysis: str
    covariance: str
    criterion: str
    seed: int
    n_cases: int
    n_positive: int
    simulation: str = ""

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.study_id}@{self.version}"


@dataclass(frozen=True, slots=True)
class StudyReportContent:
    """Everything a study report shows; nothing else is read when it is built.

    Parameters
    ----------
    analysis : dict
        The analysis as plain values (``StudyAnalysis.to_dict()``), embedded as
        ``analysis.json`` and part of ``results.json``.
    ratings : tuple of dict
        Every rating row (``reader, arm, case_id, rating, truth, seconds, shown_at,
        rated_at, counts``).
    bound : float
        The value the lower CI limit of the difference must exceed.
    marks : tuple of dict
        A detection study's marks matched to the reference lesions (``reader``, ``arm``
        and the match table's columns, as :attr:`StudyAnalysis.matches
        <workbench.studies.StudyAnalysis>` holds them), embedded as ``marks.csv`` in that
        column order; empty for a ROC study.
    figure_of_merit : str
        What the per-reader and reader-averaged values are: ``"AUC"``, or ``"wAFROC"`` /
        ``"wAFROC1"`` in a detection study (``StudyAnalysis.figure_of_merit``).
    """

    report_id: str
    status: ReportStatus
    created_at: datetime
    author: str
    workbench_version: str
    design: StudyDesignSummary
    readers: tuple[StudyReader, ...]
    sessions: tuple[StudyReadingSession, ...]
    ratings: tuple[dict[str, Any], ...]
    analysis: dict[str, Any]
    arm_auc: tuple[tuple[str, ReportEstimate], ...]
    difference: ReportEstimate
    p_value: float
    bound: float
    verdict: Verdict
    verdict_reason: str
    variance_components: tuple[tuple[str, float], ...]
    sensitivity: tuple[FixedEffectsRow, ...]
    curves: tuple[ReaderCurve, ...]
    reader_differences: tuple[tuple[str, ReportEstimate], ...]
    reading_times: tuple[ReadingTime, ...]
    required_signatures: tuple[RequiredSignature, ...] = ()
    signatures: tuple[SignatureEntry, ...] = ()
    audit_trail: tuple[AuditEntry, ...] = ()
    audit_chain_head: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    marks: tuple[dict[str, Any], ...] = ()
    figure_of_merit: str = "AUC"

    @property
    def title(self) -> str:
        """The report's title."""
        return f"Reader study report: {self.design.title}"

    def results_document(
        self, ratings_sha256: str, case_order_sha256: str, marks_sha256: str | None = None
    ) -> dict[str, Any]:
        """What ``results.json`` holds: the report id, the design hash and the analysis.

        A detection study's also holds the SHA-256 of ``marks.csv``.
        """
        document = {
            "schema": "workbench.reader-study-report/1",
            "report_id": self.report_id,
            "study": self.design.ref,
            "design_sha256": self.design.sha256,
            "test_set": self.design.test_set,
            "manifest_digest": self.design.manifest_digest,
            "seed": self.design.seed,
            "analysis": self.analysis,
            "ratings_csv_sha256": ratings_sha256,
            "case_order_csv_sha256": case_order_sha256,
        }
        if marks_sha256 is not None:
            document["marks_csv_sha256"] = marks_sha256
        return document

    def to_dict(self) -> dict[str, Any]:
        """Plain values of the whole content (the ``report-content.json`` attachment)."""

        def estimate(e: ReportEstimate) -> dict[str, Any]:
            return {
                "value": e.value,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "level": e.level,
                "method": e.method,
                "n": e.n,
            }

        design = {k: getattr(self.design, k) for k in StudyDesignSummary.__dataclass_fields__}
        design["approved_at"] = _iso(self.design.approved_at)
        design["arms"] = [list(a) for a in self.design.arms]
        return {
            "report_id": self.report_id,
            "status": self.status.value,
            "created_at": _iso(self.created_at),
            "author": self.author,
            "workbench_version": self.workbench_version,
            "design": design,
            "readers": [
                {"username": r.username, "name": r.name, "role": r.role, "simulated": r.simulated}
                for r in self.readers
            ],
            "sessions": [
                {
                    "reader": s.reader,
                    "arm": s.arm,
                    "seed": s.seed,
                    "case_order": list(s.case_order),
                    "started_at": _iso(s.started_at),
                    "signed_at": _iso(s.signed_at),
                    "signature_id": s.signature_id,
                }
                for s in self.sessions
            ],
            "analysis": self.analysis,
            "verdict": self.verdict.value,
            "verdict_reason": self.verdict_reason,
            "reading_times": [
                {"reader": t.reader, "arm": t.arm, "n": t.n, "median": t.median}
                for t in self.reading_times
            ],
            "curves": [
                {"reader": c.reader, "arm": c.arm, "auc": estimate(c.auc)} for c in self.curves
            ],
            "required_signatures": [
                {"role": r.role, "meaning": r.meaning} for r in self.required_signatures
            ],
            "signatures": [
                {
                    "signature_id": s.signature_id,
                    "username": s.username,
                    "printed_name": s.printed_name,
                    "role": s.role,
                    "meaning": s.meaning,
                    "signed_at": _iso(s.signed_at),
                    "content_sha256": s.content_sha256,
                }
                for s in self.signatures
            ],
            "audit_trail": [
                {
                    "sequence": e.sequence,
                    "timestamp": _iso(e.timestamp),
                    "actor": e.actor,
                    "action": e.action,
                    "record_type": e.record_type,
                    "record_id": e.record_id,
                    "entry_hash": e.entry_hash,
                    "previous_hash": e.previous_hash,
                }
                for e in self.audit_trail
            ],
            "audit_chain_head": self.audit_chain_head,
            "notes": list(self.notes),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    return buffer.getvalue().encode("utf-8")


def study_report_attachments(content: StudyReportContent) -> list[Attachment]:
    """The embedded files of a study report, sorted by name (the PDF name tree's order).

    Parameters
    ----------
    content : StudyReportContent

    Returns
    -------
    list of Attachment
    """
    ratings = _csv(
        content.ratings,
        [
            "reader",
            "arm",
            "case_id",
            "rating",
            "truth",
            "seconds",
            "shown_at",
            "rated_at",
            "counts",
        ],
    )
    order_rows = [
        {
            "study_seed": content.design.seed,
            "reader": s.reader,
            "arm": s.arm,
            "session_seed": s.seed,
            "position": position,
            "case_id": case_id,
        }
        for s in content.sessions
        for position, case_id in enumerate(s.case_order, start=1)
    ]
    order = _csv(order_rows, ["study_seed", "reader", "arm", "session_seed", "position", "case_id"])
    marks = _csv(content.marks, list(content.marks[0])) if content.marks else None
    results = canonical_json(
        content.results_document(
            hashlib.sha256(ratings).hexdigest(),
            hashlib.sha256(order).hexdigest(),
            None if marks is None else hashlib.sha256(marks).hexdigest(),
        )
    )
    data = {
        RESULTS_JSON: results,
        ANALYSIS_JSON: canonical_json(content.analysis),
        RATINGS_CSV: ratings,
        CASE_ORDER_CSV: order,
        STUDY_DESIGN_YAML: content.design.yaml_text.encode("utf-8"),
        REPORT_CONTENT_JSON: canonical_json(content.to_dict()),
    }
    if marks is not None:
        data[MARKS_CSV] = marks
    return [
        Attachment(name, payload, _MIME[name], _DESCRIPTIONS[name])
        for name, payload in sorted(data.items())
    ]


def build_study_report(content: StudyReportContent, out_path: str | Path) -> BuiltReport:
    """Write the reader-study report PDF for ``content`` to ``out_path``.

    Parameters
    ----------
    content : StudyReportContent
    out_path : str or Path
        Destination; its folder must exist. Written atomically.

    Returns
    -------
    BuiltReport
        ``results_sha256`` is what the report's e-signatures sign.

    Raises
    ------
    ReportError
        A final report lacks a required signature, or the file cannot be written.
    """
    out = Path(out_path)
    require_folder(out)
    if content.status is ReportStatus.FINAL:
        missing = [
            f"{r.role} ({r.meaning})"
            for r in content.required_signatures
            if not _matching(content.signatures, r.role, r.meaning)
        ]
        if missing:
            raise ReportError(
                "A final report needs every required signature. Missing: "
                + "; ".join(missing)
                + ". Build it as a draft or collect the signatures first."
            )
    attachments = study_report_attachments(content)
    results_sha256 = next(a.sha256 for a in attachments if a.name == RESULTS_JSON)
    info = DocumentInfo(
        report_id=content.report_id,
        title=content.title,
        author=content.author,
        subject=(
            f"Multi-reader multi-case study {content.design.ref} on test set "
            f"{content.design.test_set}"
        ),
        keywords=[content.report_id, "reader study report", content.design.ref],
        creator=f"Validation Workbench {content.workbench_version}",
        created_at=content.created_at,
        header_right=f"Reader study {content.design.ref}",
        draft=content.status is ReportStatus.DRAFT,
    )
    story: list[Flowable] = [
        *_title_page(content, results_sha256),
        *_design_section(content),
        *_results_section(content),
        *_figures_section(content),
        *_signatures_section(content),
        *_audit_appendix(content),
        *_attachments_appendix(attachments),
    ]
    pdf, pages = render(info, results_sha256, story)
    pdf = embed_attachments(pdf, attachments, info)
    sha256 = write_atomically(pdf, out)
    return BuiltReport(
        path=out,
        sha256=sha256,
        results_sha256=results_sha256,
        pages=pages,
        attachments={a.name: a.sha256 for a in attachments},
    )


# -- layout ---------------------------------------------------------------------------


def _reader_label(reader: StudyReader) -> str:
    """The reader's printed name; a simulated reader says so (once)."""
    if reader.simulated and "simulated" not in reader.name.casefold():
        return f"{reader.name} (simulated reader)"
    return reader.name


def _verdict_table(verdict: Verdict, detail: str) -> Table:
    fill, ink = (PASS_FILL, PASS_INK) if verdict is Verdict.PASS else (FAIL_FILL, FAIL_INK)
    table = _table(
        [[format_verdict(verdict), detail]],
        [28 * mm, CONTENT_WIDTH - 28 * mm],
        header=False,
        styles_extra=[
            ("BACKGROUND", (0, 0), (0, 0), fill),
            ("TEXTCOLOR", (0, 0), (0, 0), ink),
            ("BOX", (0, 0), (-1, -1), 0.8, ink),
        ],
    )
    return table


def _title_page(content: StudyReportContent, results_sha256: str) -> list[Flowable]:
    d = content.design
    out: list[Flowable] = [Spacer(1, 6 * mm), _p(content.title, "Title")]
    out.append(
        _p(
            f"Reader study {d.ref} \u00b7 {len(content.readers)} readers \u00b7 {d.n_cases} "
            f"cases \u00b7 test set {d.test_set}",
            "Subtitle",
        )
    )
    if content.status is ReportStatus.DRAFT:
        out.append(
            _p(
                "DRAFT \u2014 this report is not final; required signatures may be missing.",
                "Banner",
            )
        )
    if any(r.simulated for r in content.readers):
        out.append(
            _p(
                "SIMULATED READERS \u2014 the ratings of this study were generated by a seeded "
                "simulation, not given by people; it demonstrates the workflow only.",
                "Banner",
            )
        )
    first, second = (a for a, _ in d.arms)
    diff = content.difference
    out.append(
        _key_values(
            [
                ("Report ID", content.report_id),
                ("Status", content.status.value.upper()),
                ("Created", format_utc(content.created_at)),
                ("Author", content.author),
                (
                    "Verdict",
                    f"{format_verdict(content.verdict)}: {second} minus {first} "
                    f"{format_number(diff.value or 0.0, 4)} ({format_level(diff.level)} CI "
                    f"{format_ci(diff, 4)}); {d.criterion}",
                ),
                ("Results SHA-256", results_sha256),
            ],
            mono_keys=["Results SHA-256"],
        )
    )
    out += [
        _h2("Study"),
        _key_values(
            [
                ("Study ID", d.study_id),
                ("Version", d.version),
                ("Title", d.title),
                ("Design SHA-256", d.sha256),
                ("Created by", d.created_by),
                ("Approved", f"{d.approved_by or DASH}, {format_utc(d.approved_at)}"),
            ],
            mono_keys=["Design SHA-256"],
        ),
        _h2("Test set"),
        _key_values(
            [("Name", d.test_set), ("Manifest digest", d.manifest_digest)],
            mono_keys=["Manifest digest"],
        ),
        _h2("Software"),
        _key_values([("Workbench", content.workbench_version)]),
    ]
    out.append(PageBreak())
    return out


def _design_section(content: StudyReportContent) -> list[Flowable]:
    d = content.design
    out: list[Flowable] = [*_h1("1  Study design")]
    arms = "; ".join(
        f"{arm} ({'shows model ' + model if model else 'no model output shown'})"
        for arm, model in d.arms
    )
    pairs: list[tuple[str, object]] = [
        ("Design", d.design_kind.replace("_", " ")),
        ("Arms", arms),
        ("Readers", f"{len(content.readers)} (listed below)"),
        ("Cases", f"{d.n_cases} ({d.n_positive} positive, {d.n_cases - d.n_positive} negative)"),
        ("Rating scale", d.rating_scale.replace("_", " ")),
        ("Washout between arms", f"{d.washout_days:g} days"),
        ("Hypothesis", d.hypothesis.replace("_", "-")),
        ("Margin", format_number(d.margin, 3)),
        (
            "Analysis",
            f"{d.analysis.replace('_', '-')} ({d.covariance} covariance), random readers and "
            "random cases; fixed readers and fixed cases as sensitivity analyses",
        ),
        ("Acceptance criterion", d.criterion),
        ("Randomisation seed", d.seed),
    ]
    if d.simulation:
        pairs.append(("Simulation", d.simulation))
    out.append(_key_values(pairs))
    out.append(_h2("Readers"))
    rows: list[list[object]] = [["User", "Name", "Role", "Reader kind", "First arm"]]
    first_arm = {s.reader: s.arm for s in sorted(content.sessions, key=lambda s: s.started_at)}
    for r in content.readers:
        rows.append(
            [
                r.username,
                r.name,
                r.role,
                "simulated reader" if r.simulated else "person",
                first_arm.get(r.username, DASH),
            ]
        )
    out.append(_table(rows, [32 * mm, 60 * mm, 22 * mm, 30 * mm, CONTENT_WIDTH - 144 * mm]))
    out.append(Spacer(1, 3))
    out.append(
        _p(
            "Each reader read each arm in a session of their own; the case order was drawn "
            "from the study seed, the reader and the arm, and the first arm of each reader "
            "was drawn too. case-order.csv (embedded) lists the order each reader saw.",
            "Small",
        )
    )
    return out


def _estimate_cell(e: ReportEstimate, digits: int = 3) -> str:
    if e.value is None:
        return DASH
    return f"{format_number(e.value, digits)} ({format_ci(e, digits)})"


def _results_section(content: StudyReportContent) -> list[Flowable]:
    d = content.design
    arms = [a for a, _ in d.arms]
    names = {r.username: _reader_label(r) for r in content.readers}
    level = format_level(d.level)
    measure = content.figure_of_merit
    method = "DeLong" if measure == "AUC" else "case-stratified bootstrap"
    out: list[Flowable] = [*_h1("2  Results")]
    out.append(_h2(f"2.1  {measure} per reader and arm (empirical, {method} {level} CI)"))
    by_key = {(c.reader, c.arm): c.auc for c in content.curves}
    rows: list[list[object]] = [["Reader", *arms]]
    for r in content.readers:
        rows.append([names[r.username], *(_estimate_cell(by_key[(r.username, a)]) for a in arms)])
    width = (CONTENT_WIDTH - 62 * mm) / len(arms)
    out.append(_table(rows, [62 * mm, *([width] * len(arms))]))
    out.append(
        _h2(f"2.2  Reader-averaged {measure} per arm (random readers and cases, {level} CI)")
    )
    out.append(
        _table(
            [["Arm", measure, f"{level} CI"]]
            + [
                [arm, format_number(e.value or 0.0, 4), format_ci(e, 4)]
                for arm, e in content.arm_auc
            ],
            [62 * mm, 30 * mm, CONTENT_WIDTH - 92 * mm],
        )
    )
    diff = content.difference
    out.append(_h2("2.3  Difference and verdict"))
    out.append(
        _key_values(
            [
                ("Difference", f"{arms[1]} minus {arms[0]}, reader-averaged"),
                ("Estimate", format_number(diff.value or 0.0, 4)),
                (f"{level} CI", format_ci(diff, 4)),
                ("p-value (F test, equal arms)", format_p_value(content.p_value)),
                (
                    "Against the margin",
                    f"lower CI limit {format_number(diff.ci_low or 0.0, 4)} must exceed "
                    f"{content.bound:g}",
                ),
            ]
        )
    )
    out.append(Spacer(1, 4))
    out.append(
        _verdict_table(content.verdict, content.verdict_reason or f"{d.criterion}: criterion met")
    )
    out.append(_h2("2.4  Variance components (Obuchowski-Rockette)"))
    labels = {
        "var_r": "reader variance \u03c3\u00b2_R",
        "var_tr": "arm-by-reader variance \u03c3\u00b2_TR",
        "var": "error variance Var",
        "cov1": "Cov1 (same reader, different arms)",
        "cov2": "Cov2 (different readers, same arm)",
        "cov3": "Cov3 (different readers, different arms)",
        "ms_t": "MS(T)",
        "ms_r": "MS(R)",
        "ms_tr": "MS(TR)",
    }
    out.append(
        _table(
            [["Component", "Value"]]
            + [
                [labels.get(k, k), f"{v:.6g}"]
                for k, v in sorted(
                    content.variance_components,
                    key=lambda kv: (list(labels).index(kv[0]) if kv[0] in labels else 99, kv[0]),
                )
            ],
            [90 * mm, CONTENT_WIDTH - 90 * mm],
        )
    )
    out.append(_h2("2.5  Sensitivity analyses"))
    out.append(
        _table(
            [["Analysis", "Statistic", "df", "p", f"Difference ({level} CI)"]]
            + [
                [
                    row.analysis,
                    f"{row.statistic_name} = {row.statistic:.4f}",
                    row.df,
                    format_p_value(row.p_value),
                    _estimate_cell(row.difference, 4),
                ]
                for row in content.sensitivity
            ],
            [52 * mm, 32 * mm, 28 * mm, 18 * mm, CONTENT_WIDTH - 130 * mm],
        )
    )
    out.append(_h2("2.6  Reading time per case (seconds; a secondary endpoint)"))
    rows = [["Reader", "Arm", "Timed cases", "Median", "Quartiles"]]
    for t in content.reading_times:
        rows.append(
            [
                names.get(t.reader, t.reader),
                t.arm,
                t.n,
                DASH if t.median is None else f"{t.median:.1f}",
                DASH if t.q1 is None or t.q3 is None else f"{t.q1:.1f} to {t.q3:.1f}",
            ]
        )
    out.append(_table(rows, [62 * mm, 28 * mm, 18 * mm, 22 * mm, CONTENT_WIDTH - 130 * mm]))
    return out


def _figures_section(content: StudyReportContent) -> list[Flowable]:
    arms = [a for a, _ in content.design.arms]
    readers = [r.username for r in content.readers]
    names = {r.username: _reader_label(r) for r in content.readers}
    measure = content.figure_of_merit
    panels = [
        roc_panel(arm, [c for c in content.curves if c.arm == arm], readers, names, measure=measure)
        for arm in arms
    ]
    if measure == "AUC":
        caption = (
            "Figure 1. Empirical ROC curve of each reader in each arm (one colour per reader); "
            "the dashed diagonal is chance."
        )
    else:
        caption = (
            f"Figure 1. Empirical wAFROC curve of each reader in each arm (one colour per "
            f"reader): the fraction of {'all' if measure == 'wAFROC1' else 'lesion-free'} "
            "cases with a non-lesion mark (FPF) against the weighted fraction of lesions "
            "localised (wLLF), at each confidence threshold, from (0, 0) to (1, 1) as RJafroc "
            f"draws it; the area under each curve is the reader's {measure} (legend)."
        )
    row = Table([panels], colWidths=[CONTENT_WIDTH / 2] * 2, hAlign="LEFT")
    out: list[Flowable] = [CondPageBreak(110 * mm), *_h1("3  Figures")]
    out.append(
        KeepTogether(
            [
                row,
                _p(caption, "Caption"),
            ]
        )
    )
    out.append(Spacer(1, 6))
    out.append(
        KeepTogether(
            [
                difference_plot(
                    [(names.get(r, r), e) for r, e in content.reader_differences],
                    content.difference,
                    bound=content.bound,
                    label=f"{arms[1]} minus {arms[0]}",
                    measure=measure,
                ),
                _p(
                    f"Figure 2. {measure} difference per reader (fixed-readers CI) and "
                    "reader-averaged "
                    "(random readers and cases), with zero and the bound the lower CI limit must "
                    "exceed.",
                    "Caption",
                ),
            ]
        )
    )
    return out


def roc_panel(
    arm: str,
    curves: Sequence[ReaderCurve],
    readers: Sequence[str],
    names: dict[str, str],
    *,
    width: float = 250,
    height: float = 250,
    measure: str = "AUC",
) -> Drawing:
    """Per-reader empirical ROC (or wAFROC) curves of one arm, one colour per reader.

    Parameters
    ----------
    arm : str
    curves : sequence of ReaderCurve
        The arm's curves.
    readers : sequence of str
        Every reader in report order (fixes each reader's colour across panels).
    names : dict of str to str
        Reader to the label shown in the legend.
    width, height : float
        Size in points.
    measure : str, default "AUC"
        ``"AUC"``: ROC curves with the chance diagonal; ``"wAFROC"``/``"wAFROC1"``:
        wAFROC curves (FPF, wLLF), without a diagonal (a reader who marks nothing has
        area 0.5 by the tie rule, not by chance).

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = Drawing(width, height)
    left, bottom, right, top = 38.0, 34.0, 8.0, 20.0
    plot_w, plot_h = width - left - right, height - bottom - top

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + x * plot_w, bottom + y * plot_h

    grid = colors.HexColor("#eeeeee")
    drawing.add(
        Rect(left, bottom, plot_w, plot_h, strokeColor=RULE, fillColor=None, strokeWidth=0.6)
    )
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x, _ = xy(t, 0)
        _, y = xy(0, t)
        drawing.add(Line(x, bottom, x, bottom + plot_h, strokeColor=grid, strokeWidth=0.4))
        drawing.add(Line(left, y, left + plot_w, y, strokeColor=grid, strokeWidth=0.4))
        drawing.add(
            String(x, bottom - 10, f"{t:.1f}", fontName=SANS, fontSize=7, textAnchor="middle")
        )
        drawing.add(
            String(left - 4, y - 2.5, f"{t:.1f}", fontName=SANS, fontSize=7, textAnchor="end")
        )
    if measure == "AUC":
        drawing.add(
            Line(*xy(0, 0), *xy(1, 1), strokeColor=MUTED, strokeWidth=0.6, strokeDashArray=[3, 3])
        )
        x_label, y_label = "1 \u2212 specificity", "Sensitivity"
    else:
        x_label, y_label = "FPF (cases with a non-lesion mark)", "wLLF (weighted lesions found)"
    legend_y = bottom + 8 + 9 * (len(curves) - 1)
    for curve in curves:
        index = readers.index(curve.reader) if curve.reader in readers else 0
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        points: list[float] = []
        for x, y in zip(curve.fpr, curve.tpr, strict=True):
            points.extend(xy(x, y))
        drawing.add(PolyLine(points, strokeColor=colour, strokeWidth=1.2))
        lx = left + plot_w * 0.28
        drawing.add(
            Line(lx, legend_y + 2.5, lx + 12, legend_y + 2.5, strokeColor=colour, strokeWidth=1.4)
        )
        auc = "" if curve.auc.value is None else f" {format_number(curve.auc.value, 3)}"
        label = clip(names.get(curve.reader, curve.reader), 32) + auc
        drawing.add(String(lx + 15, legend_y, label, fontName=SANS, fontSize=6.5))
        legend_y -= 9
    drawing.add(String(left, height - 12, f"Arm: {arm}", fontName=SANS_BOLD, fontSize=8))
    drawing.add(
        String(
            left + plot_w / 2,
            6,
            x_label,
            fontName=SANS,
            fontSize=8,
            textAnchor="middle",
        )
    )
    label = String(0, 0, y_label, fontName=SANS, fontSize=8, textAnchor="middle")
    rotated = Group(label)
    rotated.transform = (0, 1, -1, 0, 10, bottom + plot_h / 2)
    drawing.add(rotated)
    return drawing


def difference_plot(
    rows: Sequence[tuple[str, ReportEstimate]],
    overall: ReportEstimate,
    *,
    bound: float,
    label: str,
    width: float = CONTENT_WIDTH,
    row_height: float = 16,
    measure: str = "AUC",
) -> Drawing:
    """Differences of the figure of merit with CIs per reader and reader-averaged, with zero
    and the margin line.

    Parameters
    ----------
    rows : sequence of (str, ReportEstimate)
        Reader label and that reader's difference.
    overall : ReportEstimate
        The reader-averaged difference (drawn last, as a diamond).
    bound : float
        The value the lower CI limit must exceed (``-margin`` for non-inferiority, else 0).
    label : str
        What the difference is, e.g. ``"aided minus unaided"``.
    width, row_height : float
        Size in points.
    measure : str, default "AUC"
        The figure of merit, named on the axis.

    Returns
    -------
    Drawing
    """
    register_fonts()
    entries = [*rows, ("Reader-averaged", overall)]
    label_w, right = 150.0, 14.0
    top, bottom = 20.0, 34.0
    height = top + bottom + row_height * len(entries)
    drawing = Drawing(width, height)
    plot_w = width - label_w - right
    values = [bound, 0.0]
    for _, e in entries:
        values += [v for v in (e.value, e.ci_low, e.ci_high) if v is not None]
    low, high = min(values), max(values)
    span = max(high - low, 0.02)
    low, high = low - 0.08 * span, high + 0.08 * span

    def x_of(v: float) -> float:
        return label_w + (v - low) / (high - low) * plot_w

    plot_h = row_height * len(entries)
    drawing.add(
        Rect(label_w, bottom, plot_w, plot_h, strokeColor=RULE, fillColor=None, strokeWidth=0.6)
    )
    step = _tick_step(high - low)
    tick = step * int(low / step)
    while tick <= high + 1e-12:
        if tick >= low:
            x = x_of(tick)
            drawing.add(Line(x, bottom, x, bottom - 3, strokeColor=MUTED, strokeWidth=0.5))
            drawing.add(
                String(
                    x, bottom - 11, f"{tick:.2f}", fontName=SANS, fontSize=7, textAnchor="middle"
                )
            )
        tick += step
    drawing.add(
        Line(x_of(0.0), bottom, x_of(0.0), bottom + plot_h, strokeColor=MUTED, strokeWidth=0.7)
    )
    if bound != 0.0:
        drawing.add(
            Line(
                x_of(bound),
                bottom,
                x_of(bound),
                bottom + plot_h,
                strokeColor=FAIL_INK,
                strokeWidth=0.9,
                strokeDashArray=[4, 2],
            )
        )
    drawing.add(
        String(
            x_of(bound) + 3,
            bottom + plot_h + 4,
            f"bound {bound:g}" if bound != 0.0 else "bound 0 (superiority)",
            fontName=SANS,
            fontSize=6.5,
            fillColor=FAIL_INK,
        )
    )
    for i, (name, e) in enumerate(entries):
        y = bottom + plot_h - row_height * (i + 0.5)
        last = i == len(entries) - 1
        drawing.add(
            String(
                label_w - 6,
                y - 2.5,
                clip(name, 34),
                fontName=SANS_BOLD if last else SANS,
                fontSize=7,
                textAnchor="end",
            )
        )
        if e.value is None:
            continue
        if e.ci_low is not None and e.ci_high is not None:
            drawing.add(
                Line(x_of(e.ci_low), y, x_of(e.ci_high), y, strokeColor=ACCENT, strokeWidth=1.1)
            )
        x = x_of(e.value)
        if last:
            drawing.add(
                Polygon(
                    [x - 5, y, x, y + 5, x + 5, y, x, y - 5], fillColor=ACCENT, strokeColor=None
                )
            )
        else:
            drawing.add(Rect(x - 2.5, y - 2.5, 5, 5, fillColor=ACCENT, strokeColor=None))
    drawing.add(
        String(
            label_w + plot_w / 2,
            6,
            f"{measure} difference ({label})",
            fontName=SANS,
            fontSize=8,
            textAnchor="middle",
        )
    )
    return drawing


def _tick_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        if span / step <= 8:
            return step
    return 1.0


def _signatures_section(content: StudyReportContent) -> list[Flowable]:
    out: list[Flowable] = [*_h1("4  Electronic signatures")]
    out.append(
        _p(
            "Each signature shows the signer's printed name, role, the date and time of "
            "signing (UTC) and its meaning (21 CFR 11.50). Signatures are linked to the "
            "results SHA-256 of this report. Each reader's reading of each arm was closed "
            "with an e-signature of meaning 'read' (section 1, case-order.csv)."
        )
    )
    out.append(Spacer(1, 4))
    used: set[int] = set()
    for required in content.required_signatures:
        matches = _matching(content.signatures, required.role, required.meaning)
        if not matches:
            out.append(
                KeepTogether(
                    [
                        _signature_box(
                            [
                                ("Status", "UNSIGNED \u2014 required signature not yet applied"),
                                ("Role", required.role),
                                ("Meaning", required.meaning),
                                ("Printed name", DASH),
                                ("Signed (UTC)", DASH),
                            ],
                            unsigned=True,
                        ),
                        Spacer(1, 5),
                    ]
                )
            )
            continue
        for signature in matches:
            used.add(id(signature))
            out.append(
                KeepTogether(
                    [_signature_box(_signature_rows(signature), unsigned=False), Spacer(1, 5)]
                )
            )
    for signature in content.signatures:
        if id(signature) not in used:
            out.append(
                KeepTogether(
                    [_signature_box(_signature_rows(signature), unsigned=False), Spacer(1, 5)]
                )
            )
    out.append(_h2("Readings closed by the readers"))
    names = {r.username: _reader_label(r) for r in content.readers}
    rows: list[list[object]] = [["Reader", "Arm", "Cases", "Opened (UTC)", "Signed 'read' (UTC)"]]
    for s in content.sessions:
        rows.append(
            [
                names.get(s.reader, s.reader),
                s.arm,
                len(s.case_order),
                format_utc(s.started_at),
                format_utc(s.signed_at) + (f" (#{s.signature_id})" if s.signature_id else ""),
            ]
        )
    out.append(_table(rows, [56 * mm, 22 * mm, 14 * mm, 38 * mm, CONTENT_WIDTH - 130 * mm]))
    return out


def _audit_appendix(content: StudyReportContent) -> list[Flowable]:
    out: list[Flowable] = [PageBreak(), _markup("Appendix A  Audit trail of this study", "H1")]
    out.append(
        _p(
            "Entries of the workbench's append-only, hash-chained audit trail that concern this "
            "study, its reading sessions and this report (ratings appear as 'study.rate' entries "
            "that hold the SHA-256 of the rating record, never the value)."
        )
    )
    out.append(Spacer(1, 3))
    rows: list[list[object]] = [
        ["#", "Time (UTC)", "Actor", "Action / record", "Entry hash / previous hash"]
    ]
    for e in content.audit_trail:
        rows.append(
            [
                e.sequence,
                format_utc(e.timestamp).removesuffix(" UTC"),
                e.actor,
                _markup(f"{text(e.action)}<br/>{text(e.record_type)} {text(e.record_id)}", "Cell"),
                _markup(
                    f'{e.entry_hash}<br/><font color="{MUTED.hexval()}">{e.previous_hash}</font>',
                    "CellMono",
                ),
            ]
        )
    fixed = 9 * mm + 24 * mm + 20 * mm + 92 * mm
    out.append(_table(rows, [9 * mm, 24 * mm, 20 * mm, CONTENT_WIDTH - fixed, 92 * mm]))
    out.append(Spacer(1, 6))
    out.append(_key_values([("Chain head", content.audit_chain_head)], mono_keys=["Chain head"]))
    return out


def _attachments_appendix(attachments: Sequence[Attachment]) -> list[Flowable]:
    out: list[Flowable] = [_markup("Appendix B  Embedded files", "H1")]
    if any(a.name == MARKS_CSV for a in attachments):
        sources = (
            "marks.csv gives every reader's marks with their match to the reference lesions "
            "(LL: the lesion it localises; NL: no lesion; below_floor: under the score floor; "
            "missed: a lesion no mark localised), from which each reader's wAFROC follows; "
            "ratings.csv lists each case read (its rating is the case's highest mark)"
        )
    else:
        sources = "ratings.csv and the reference labels give each reader's AUC"
    out.append(
        _p(
            "These files are embedded in this PDF. With them an inspector can recompute every "
            f"number of this report: {sources}; analysis.json holds the analysis; "
            "case-order.csv the randomisation."
        )
    )
    out.append(Spacer(1, 3))
    out.append(
        _table(
            [["File", "Bytes", "SHA-256", "Content"]]
            + [[a.name, len(a.data), a.sha256, a.description] for a in attachments],
            [28 * mm, 14 * mm, 92 * mm, CONTENT_WIDTH - 134 * mm],
            mono_columns=[2],
        )
    )
    return out

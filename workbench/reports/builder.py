"""Build the PDF validation report from a :class:`ReportContent`.

The PDF is made in two steps: reportlab lays out the pages (fonts embedded,
vector figures, "page x of y" footers drawn after the last page is known),
then pyHanko appends the attachments in an incremental update. The PDF
creation date comes from ``ReportContent.created_at`` and the document ID
from the report id and results SHA-256, so building the same content twice
gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from workbench.errors import ReportError
from workbench.reports import figures
from workbench.reports._document import (
    CONTENT_WIDTH,
    DocumentInfo,
    embed_attachments,
    render,
    require_folder,
    write_atomically,
)
from workbench.reports._style import (
    FAIL_FILL,
    FAIL_INK,
    HEADER_FILL,
    MUTED,
    NEUTRAL_FILL,
    PASS_FILL,
    PASS_INK,
    RULE,
    SANS,
    SANS_BOLD,
    ZEBRA,
    styles,
    text,
)
from workbench.reports.attachments import RESULTS_JSON, Attachment, report_attachments
from workbench.reports.content import (
    CalibrationSection,
    DecisionCurve,
    DetectionSection,
    EstimateStatus,
    MetricResult,
    ReportContent,
    ReportEstimate,
    ReportStatus,
    SignatureEntry,
    Verdict,
)
from workbench.reports.formatting import (
    format_ci,
    format_estimate,
    format_level,
    format_number,
    format_p_value,
    format_utc,
    format_verdict,
    format_with_interval,
)

__all__ = ["BuiltReport", "build_report"]

DASH = "\u2014"


@dataclass(frozen=True, slots=True)
class BuiltReport:
    """A report PDF written by :func:`build_report`.

    Attributes
    ----------
    path : Path
        Where the PDF was written.
    sha256 : str
        SHA-256 of the PDF file (before sealing).
    results_sha256 : str
        SHA-256 of the ``results.json`` attachment, printed on every page.
    pages : int
        Number of pages.
    attachments : dict of str to str
        Attachment name -> SHA-256 of its bytes.
    """

    path: Path
    sha256: str
    results_sha256: str
    pages: int
    attachments: dict[str, str]


def build_report(content: ReportContent, out_path: str | Path) -> BuiltReport:
    """Write the validation report PDF for ``content`` to ``out_path``.

    Parameters
    ----------
    content : ReportContent
        Everything the report shows; nothing else is read.
    out_path : str or Path
        Destination; its folder must exist. Written atomically.

    Returns
    -------
    BuiltReport

    Raises
    ------
    ReportError
        When the content is inconsistent (e.g. a final report lacking a
        required signature) or the file cannot be written.
    """
    out = Path(out_path)
    require_folder(out)
    _check_signatures(content)
    attachments = report_attachments(content)
    results_sha256 = next(a.sha256 for a in attachments if a.name == RESULTS_JSON)
    info = _document_info(content)
    pdf, pages = render(info, results_sha256, _story(content, results_sha256, attachments))
    pdf = embed_attachments(pdf, attachments, info)
    sha256 = write_atomically(pdf, out)
    return BuiltReport(
        path=out,
        sha256=sha256,
        results_sha256=results_sha256,
        pages=pages,
        attachments={a.name: a.sha256 for a in attachments},
    )


# -- document ------------------------------------------------------------------------


def _document_info(content: ReportContent) -> DocumentInfo:
    return DocumentInfo(
        report_id=content.report_id,
        title=content.title,
        author=content.author,
        subject=_subject(content),
        keywords=[content.report_id, "validation report", content.protocol.protocol_id],
        creator=f"Validation Workbench {content.software.workbench_version}",
        created_at=content.created_at,
        header_right=f"{content.model.name} {content.model.version}",
        draft=content.status is ReportStatus.DRAFT,
    )


def _subject(content: ReportContent) -> str:
    return (
        f"Validation of {content.model.name} {content.model.version} against protocol "
        f"{content.protocol.protocol_id} {content.protocol.version} on test set "
        f"{content.test_set.name}"
    )


# -- flowable helpers -----------------------------------------------------------------


def _p(value: object, style: str = "Body") -> Paragraph:
    """A paragraph of data text: always escaped."""
    return Paragraph(text(value), styles()[style])


def _markup(markup: str, style: str = "Body") -> Paragraph:
    """A paragraph of trusted markup written in this module (data inside is escaped)."""
    return Paragraph(markup, styles()[style])


def _h1(title: str) -> list[Flowable]:
    return [CondPageBreak(60 * mm), _markup(text(title), "H1")]


def _h2(title: str) -> Flowable:
    return _markup(text(title), "H2")


def _paragraphs(value: str) -> list[Flowable]:
    blocks = [b.strip() for b in value.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [_markup(text(b).replace("\n", "<br/>"), "Para") for b in blocks] or [_p(DASH)]


def _bullets(items: Iterable[str]) -> list[Flowable]:
    out = [Paragraph(text(item), styles()["Bullet"], bulletText="\u2022") for item in items]
    return out or [_p("None.")]


def _table(
    rows: Sequence[Sequence[object]],
    widths: Sequence[float],
    *,
    header: bool = True,
    styles_extra: Sequence[tuple[Any, ...]] = (),
    cell_style: str = "Cell",
    mono_columns: Sequence[int] = (),
) -> Table:
    """A table whose string cells become escaped, wrapping paragraphs."""
    total = sum(widths)
    scaled = [w * CONTENT_WIDTH / total for w in widths] if total > CONTENT_WIDTH else list(widths)
    data: list[list[Any]] = []
    for r, row in enumerate(rows):
        cells: list[Any] = []
        for c, cell in enumerate(row):
            if isinstance(cell, Flowable | list):
                cells.append(cell)
            else:
                style = (
                    "CellBold"
                    if header and r == 0
                    else ("CellMono" if c in mono_columns else cell_style)
                )
                cells.append(_p(cell, style))
        data.append(cells)
    table = Table(data, colWidths=scaled, repeatRows=1 if header else 0, hAlign="LEFT")
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("FONTNAME", (0, 0), (-1, -1), SANS),  # else reportlab selects Helvetica per cell
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ("LINEBELOW", (0, -1), (-1, -1), 0.5, RULE),
    ]
    if header:
        commands += [
            ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
            ("LINEBELOW", (0, 0), (-1, 0), 0.7, RULE),
            ("LINEABOVE", (0, 0), (-1, 0), 0.7, RULE),
        ]
        if len(rows) > 2:
            commands.append(("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, ZEBRA]))
    commands += list(styles_extra)
    table.setStyle(TableStyle(commands))
    return table


def _key_values(pairs: Sequence[tuple[str, object]], *, mono_keys: Iterable[str] = ()) -> Table:
    mono = set(mono_keys)
    rows = [[_p(k, "CellBold"), _p(v, "Mono" if k in mono else "Cell")] for k, v in pairs]
    return _table(
        rows,
        [44 * mm, CONTENT_WIDTH - 44 * mm],
        header=False,
        styles_extra=[("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE)],
    )


# -- sections -------------------------------------------------------------------------


def _story(
    content: ReportContent, results_sha256: str, attachments: Sequence[Attachment]
) -> list[Flowable]:
    story: list[Flowable] = []
    story += _title_page(content, results_sha256)
    story += _intended_use(content)
    story += _dataset(content)
    story += _methods(content)
    story += _results(content)
    story += _acceptance(content)
    story += _adjudication(content)
    story += _limitations(content)
    story += _signatures(content)
    story += _selected_cases(content)
    story += _appendix_audit(content)
    story += _appendix_attachments(content, attachments)
    return story


def _title_page(content: ReportContent, results_sha256: str) -> list[Flowable]:
    out: list[Flowable] = [Spacer(1, 6 * mm), _p(content.title, "Title")]
    out.append(
        _p(
            f"{content.model.name} {content.model.version} \u00b7 protocol "
            f"{content.protocol.protocol_id} {content.protocol.version} \u00b7 test set "
            f"{content.test_set.name}",
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
    passed = sum(1 for row in content.acceptance if row.verdict is Verdict.PASS)
    primary = [row for row in content.acceptance if row.primary]
    primary_pass = all(row.verdict is Verdict.PASS for row in primary) and bool(primary)
    conclusion = "MET" if primary_pass else "NOT MET"
    out.append(
        _key_values(
            [
                ("Report ID", content.report_id),
                ("Status", content.status.value.upper()),
                ("Created", format_utc(content.created_at)),
                ("Author", content.author),
                (
                    "Acceptance",
                    f"{passed} of {len(content.acceptance)} criteria PASS; "
                    f"primary endpoints {conclusion}",
                ),
                *(
                    [("Run verdict", format_verdict(content.verdict))]
                    if content.verdict is not None
                    else []
                ),
                *([("Because", content.verdict_reason)] if content.verdict_reason else []),
                ("Results SHA-256", results_sha256),
            ],
            mono_keys=["Results SHA-256"],
        )
    )
    m, pr, ts, sw, env = (
        content.model,
        content.protocol,
        content.test_set,
        content.software,
        content.environment,
    )
    out += [
        _h2("Model"),
        _key_values(
            [
                ("Name", m.name),
                ("Version", m.version),
                ("SHA-256", m.sha256),
                ("Task", m.task or "\u2014"),
            ],
            mono_keys=["SHA-256"],
        ),
    ]
    out += [
        _h2("Protocol"),
        _key_values(
            [
                ("Protocol ID", pr.protocol_id),
                ("Version", pr.version),
                ("Title", pr.title or "\u2014"),
                ("SHA-256", pr.sha256),
                ("Approved", f"{pr.approved_by or DASH}, {format_utc(pr.approved_at)}"),
            ],
            mono_keys=["SHA-256"],
        ),
    ]
    out += [
        _h2("Test set"),
        _key_values(
            [
                ("Name", ts.name),
                ("Manifest digest", ts.manifest_digest),
                ("Locked", f"{ts.locked_by or DASH}, {format_utc(ts.locked_at)}"),
            ],
            mono_keys=["Manifest digest"],
        ),
    ]
    out += [
        _h2("Software and run environment"),
        _key_values(
            [
                ("Workbench", f"{sw.workbench_version} (commit {sw.workbench_commit})"),
                ("Run ID", env.run_id),
                ("Device", env.device),
                ("Platform", env.platform or "\u2014"),
                ("Python", env.python or "\u2014"),
                (
                    "Run started / finished",
                    f"{format_utc(env.started_at)} / {format_utc(env.finished_at)}",
                ),
                (
                    "Packages",
                    ", ".join(f"{k} {v}" for k, v in sorted(env.packages.items())) or "\u2014",
                ),
            ]
        ),
    ]
    out.append(PageBreak())
    return out


def _intended_use(content: ReportContent) -> list[Flowable]:
    return [*_h1("1  Intended use"), *_paragraphs(content.intended_use)]


def _dataset(content: ReportContent) -> list[Flowable]:
    d = content.dataset
    out: list[Flowable] = [*_h1("2  Dataset")]
    out.append(
        _table(
            [
                ["Cases", "Series", "Files", "Included", "Excluded", "Failed"],
                [
                    d.n_cases,
                    d.n_series,
                    d.n_files,
                    d.n_included,
                    len(d.excluded_cases),
                    len(d.failed_cases),
                ],
            ],
            [28 * mm] * 6,
        )
    )
    out.append(_h2("Cases per scanner, sex and age band"))
    rows: list[list[object]] = [["Factor", "Level", "Cases", "% of cases"]]
    for factor in d.counts:
        for level in factor.levels:
            share = f"{100 * level.n_cases / d.n_cases:.1f}%" if d.n_cases else "\u2014"
            rows.append([factor.factor, level.level, level.n_cases, share])
    out.append(_table(rows, [40 * mm, 60 * mm, 25 * mm, 25 * mm]))
    out.append(_h2("Reference standard"))
    out += _paragraphs(d.reference_standard)
    out.append(Spacer(1, 3))
    out.append(
        _table(
            [["Reader", "Role", "Qualification"]]
            + [[r.reader_id, r.role, r.qualification or "\u2014"] for r in d.readers],
            [30 * mm, 45 * mm, CONTENT_WIDTH - 75 * mm],
        )
    )
    out.append(_h2("Inclusion and exclusion criteria"))
    out.append(_markup("<b>Inclusion</b>"))
    out += _bullets(d.inclusion_criteria)
    out.append(_markup("<b>Exclusion</b>"))
    out += _bullets(d.exclusion_criteria)
    out.append(_h2(f"Excluded cases ({len(d.excluded_cases)})"))
    out.append(_case_notes(d.excluded_cases))
    out.append(_h2(f"Failed cases ({len(d.failed_cases)})"))
    out.append(_case_notes(d.failed_cases))
    out.append(_h2("Data quality"))
    q = d.quality
    verdict = "PASSED" if q.passed else "FAILED"
    if q.passed and q.waived:
        verdict += f" with {len(q.waived)} finding(s) waived"
    how = ", ".join(
        part
        for part in (
            f"suite {text(q.suite)}" if q.suite else "",
            f"task {text(q.task)}" if q.task else "",
            "burned-in text read by OCR" if q.ocr else "no OCR of burned-in text",
        )
        if part
    )
    out.append(_markup(f"Data-quality gate: <b>{verdict}</b> ({how})."))
    if q.findings:
        out.append(Spacer(1, 3))
        out.append(
            _table(
                [["Check", "Severity", "Count", "Message"]]
                + [[f.check, f.severity, f.count, f.message or "\u2014"] for f in q.findings],
                [45 * mm, 20 * mm, 15 * mm, CONTENT_WIDTH - 80 * mm],
            )
        )
    if q.waived:
        out.append(Spacer(1, 3))
        out.append(_markup("<b>Waived findings</b> (e-signed; a critical one by two QA users)"))
        out.append(
            _table(
                [["Finding", "Severity", "File / attribute", "Justification", "Signed by"]]
                + [
                    [
                        f"{w.check} ({w.finding_id[:10]})",
                        w.severity,
                        f"{w.path} {w.attribute}".strip() or "\u2014",
                        w.justification,
                        ", ".join(w.signed_by),
                    ]
                    for w in q.waived
                ],
                [35 * mm, 17 * mm, 40 * mm, CONTENT_WIDTH - 122 * mm, 30 * mm],
            )
        )
    phi = d.phi_check
    out.append(_h2("PHI check"))
    out.append(
        _markup(
            f"De-identification check: <b>{'PASSED' if phi.passed else 'FAILED'}</b> \u2014 "
            f"{phi.files_checked} files checked, {phi.findings} findings."
            + (f" {text(phi.summary)}" if phi.summary else "")
        )
    )
    return out


def _case_notes(notes: Sequence[Any]) -> Flowable:
    if not notes:
        return _p("None.")
    return _table(
        [["Case", "Reason"]] + [[n.case_id, n.reason] for n in notes],
        [40 * mm, CONTENT_WIDTH - 40 * mm],
    )


def _methods(content: ReportContent) -> list[Flowable]:
    me = content.methods
    out: list[Flowable] = [*_h1("3  Methods")]
    if me.primary_analysis:
        out += _paragraphs(me.primary_analysis)
    out.append(_h2("Metrics and confidence intervals"))
    out.append(_markup(f"Confidence level: <b>{format_level(me.ci_level)}</b> (two-sided)."))
    out.append(Spacer(1, 3))
    out.append(
        _table(
            [["Metric", "Definition", "CI method"]]
            + [[x.metric, x.definition, x.ci_method] for x in me.metrics],
            [32 * mm, CONTENT_WIDTH - 82 * mm, 50 * mm],
        )
    )
    out.append(_h2("Thresholds"))
    out.append(
        _table(
            [["Threshold", "Value", "Description"]]
            + [
                [t.name, format_number(t.value, 3), t.description or "\u2014"]
                for t in me.thresholds
            ],
            [45 * mm, 20 * mm, CONTENT_WIDTH - 65 * mm],
        )
    )
    out.append(_h2("Strata"))
    out.append(
        _table(
            [["Factor", "Levels", "Minimum n"]]
            + [[s.factor, ", ".join(s.levels), s.min_n] for s in me.strata],
            [35 * mm, CONTENT_WIDTH - 60 * mm, 25 * mm],
        )
    )
    out.append(_h2("Multiplicity"))
    out += _paragraphs(me.multiplicity)
    if me.software:
        out.append(_h2("Software"))
        out += _paragraphs(me.software)
    return out


def _metric_tables(metrics: Sequence[MetricResult]) -> list[Flowable]:
    out: list[Flowable] = []
    rows: list[list[object]] = [["Metric", "Estimate", "95% CI", "CI method", "n"]]
    for metric in metrics:
        e = metric.overall
        rows.append(
            [
                metric.label,
                format_estimate(e, metric.digits),
                format_ci(e, metric.digits),
                e.method or "\u2014",
                e.n,
            ]
        )
    if metrics:
        level = format_level(metrics[0].overall.level)
        rows[0][2] = f"{level} CI"
    out.append(_table(rows, [40 * mm, 30 * mm, 40 * mm, 45 * mm, 15 * mm]))
    return out


def _stratum_table(metric: MetricResult) -> Flowable:
    level = format_level(metric.overall.level)
    rows: list[list[object]] = [["Factor", "Level", "n", "Estimate", f"{level} CI", "Note"]]
    extra: list[tuple[Any, ...]] = []
    for index, s in enumerate(metric.per_stratum, start=1):
        e = s.estimate
        note = ""
        if e.status is EstimateStatus.INSUFFICIENT_N:
            note = e.reason or "below the protocol's minimum n"
            extra.append(("TEXTCOLOR", (0, index), (-1, index), MUTED))
        elif e.status is EstimateStatus.NOT_ESTIMABLE:
            note = e.reason or "not estimable"
        elif metric.threshold is not None and figures._fails(metric, e):
            side = "lower bound below" if metric.direction == ">=" else "upper bound above"
            note = f"CI {side} acceptance {format_number(metric.threshold, metric.digits)}"
        rows.append(
            [
                s.factor,
                s.level,
                e.n,
                format_estimate(e, metric.digits),
                format_ci(e, metric.digits),
                note,
            ]
        )
    return _table(
        rows,
        [24 * mm, 30 * mm, 12 * mm, 34 * mm, 36 * mm, CONTENT_WIDTH - 136 * mm],
        styles_extra=extra,
    )


def _results(content: ReportContent) -> list[Flowable]:
    r = content.results
    out: list[Flowable] = [*_h1("4  Results")]
    out.append(_h2("Overall estimates"))
    out += _metric_tables(r.metrics)
    if r.roc is not None:
        drawing = figures.roc_figure(r.roc, width=300, height=270)
        out.append(
            KeepTogether(
                [
                    _h2("ROC curve"),
                    drawing,
                    _p(
                        f"Figure 1. Empirical ROC curve with pointwise "
                        f"{format_level(r.roc.auc.level)} confidence band"
                        + (f" ({r.roc.band_method})" if r.roc.band_method else "")
                        + "; the square marks the protocol's operating point; dashed: chance.",
                        "Caption",
                    ),
                ]
            )
        )
    figure_number = 2 if r.roc is not None else 1
    if r.detection is not None:
        detection_flowables, figure_number = _detection(r.detection, figure_number)
        out += detection_flowables
    for metric in r.metrics:
        if not metric.per_stratum:
            continue
        block: list[Flowable] = [
            _h2(f"{metric.label} per stratum"),
            figures.forest_plot(metric, width=CONTENT_WIDTH),
            _p(
                f"Figure {figure_number}. {metric.label} per stratum with "
                f"{format_level(metric.overall.level)} CIs; dashed line: "
                "acceptance threshold; red: CI crosses the threshold; "
                "strata below the minimum n are not estimated.",
                "Caption",
            ),
        ]
        figure_number += 1
        out.append(KeepTogether(block))
        out.append(_stratum_table(metric))
    if r.heterogeneity:
        out.append(_h2("Heterogeneity across strata"))
        out.append(
            _table(
                [["Metric", "Factor", "Statistic", "df", "p", "Method"]]
                + [
                    [
                        h.metric,
                        h.factor,
                        format_number(h.statistic, 2),
                        h.df,
                        format_p_value(h.p_value),
                        h.method,
                    ]
                    for h in r.heterogeneity
                ],
                [28 * mm, 28 * mm, 22 * mm, 12 * mm, 18 * mm, CONTENT_WIDTH - 108 * mm],
            )
        )
    if r.distributions:
        wanted = r.distribution_metric.casefold()
        threshold = next(
            (m.threshold for m in r.metrics if wanted in (m.label.casefold(), m.key.casefold())),
            None,
        )
        out.append(
            KeepTogether(
                [
                    _h2(f"{r.distribution_metric or 'Metric'} distribution by scanner"),
                    figures.dice_distribution_figure(
                        r.distributions,
                        metric_label=r.distribution_metric or "value",
                        threshold=threshold,
                        width=CONTENT_WIDTH,
                    ),
                    _p(
                        f"Figure {figure_number}. Per-case {r.distribution_metric} by scanner: "
                        "box = quartiles, thick line = median, whiskers = 1.5 IQR, dots = cases.",
                        "Caption",
                    ),
                ]
            )
        )
    if r.agreement:
        level = format_level(r.agreement[0].estimate.level)
        out.append(_h2("Agreement"))
        out.append(
            _table(
                [["Comparison", "Kind", "Statistic", "Estimate", f"{level} CI", "n"]]
                + [
                    [
                        a.comparison,
                        a.kind,
                        a.statistic,
                        format_estimate(a.estimate),
                        format_ci(a.estimate),
                        a.estimate.n,
                    ]
                    for a in r.agreement
                ],
                [45 * mm, 28 * mm, 35 * mm, 25 * mm, 35 * mm, 12 * mm],
            )
        )
    if r.calibration is not None:
        out += _calibration(r.calibration, figure_number + (1 if r.distributions else 0))
    return out


def _optional_number(value: float | None, digits: int) -> str:
    return DASH if value is None else format_number(value, digits)


def _detection(section: DetectionSection, figure_number: int) -> tuple[list[Flowable], int]:
    """The detection results: rules, FROC and wAFROC figures, endpoints, per-lesion table.

    Returns the flowables and the next figure number.
    """
    out: list[Flowable] = [_h2("Detection: lesion localisation")]
    facts: list[tuple[str, object]] = [
        ("Reference lesions", section.reference or DASH),
        ("Matching rule (locked)", section.matching),
    ]
    if section.candidates:
        facts.append(("Marks from the segmentation", section.candidates))
    facts.append(
        (
            "Counts",
            f"{section.n_cases} cases, {section.n_lesions} reference lesions "
            f"({section.n_matched} localised), {section.n_marks} kept marks",
        )
    )
    out.append(_key_values(facts))
    if section.panels:
        others = len(section.panels) > 1
        comparison = (
            " Further curves: other candidates validated under the same protocol on the same "
            "test set, for comparison only (not part of this run's acceptance)."
            if others
            else ""
        )
        level = format_level(section.panels[0][1].level)
        out.append(
            KeepTogether(
                [
                    _h2("FROC curve"),
                    figures.froc_figure(section.panels, width=300, height=280),
                    _p(
                        f"Figure {figure_number}. Empirical FROC curve: lesion localisation "
                        "fraction against non-lesion marks per image, with pointwise "
                        f"{level} bootstrap band (cases resampled); markers: sensitivity at "
                        f"stated false positives per image.{comparison}",
                        "Caption",
                    ),
                ]
            )
        )
        fom = section.panels[0][1].wafroc_fom
        curve = "wAFROC1" if fom == "wafroc1" else "wAFROC"
        out.append(
            KeepTogether(
                [
                    _h2("wAFROC curve"),
                    figures.wafroc_figure(section.panels, width=300, height=280),
                    _p(
                        f"Figure {figure_number + 1}. Empirical {curve}"
                        " curve: weighted lesion localisation fraction against the false-"
                        "positive fraction ("
                        + (
                            "highest non-lesion mark of every case"
                            if fom == "wafroc1"
                            else "cases without lesions with a non-lesion mark"
                        )
                        + "); the area under it is the figure of merit.",
                        "Caption",
                    ),
                ]
            )
        )
        figure_number += 2
    elif section.note:
        out.append(_p(f"FROC and wAFROC curves not shown: {section.note}."))
    if section.endpoints:
        out.append(_h2("Detection endpoints"))
        out.append(
            _table(
                [["Endpoint", "Criterion", "Estimate", "CI", "Result"]]
                + [
                    [
                        row.endpoint + ("" if row.primary else " (secondary)"),
                        row.criterion,
                        format_estimate(row.estimate, row.digits),
                        format_ci(row.estimate, row.digits),
                        format_verdict(row.verdict),
                    ]
                    for row in section.endpoints
                ],
                [34 * mm, 66 * mm, 22 * mm, 30 * mm, 18 * mm],
            )
        )
    out.append(_h2("Per-lesion results"))
    if section.lesions:
        out.append(
            _table(
                [
                    [
                        "Lesion",
                        "Case",
                        "Size (mm)",
                        "Weight",
                        "Result",
                        "Mark",
                        "Rating",
                        "IoU",
                        "Distance (mm)",
                    ]
                ]
                + [
                    [
                        row.lesion_id,
                        row.case_id,
                        _optional_number(row.size_mm, 1),
                        _optional_number(row.weight, 2),
                        "matched" if row.matched else "missed",
                        row.mark_id or DASH,
                        _optional_number(row.rating, 3),
                        _optional_number(row.iou, 2),
                        _optional_number(row.distance_mm, 1),
                    ]
                    for row in section.lesions
                ],
                [18 * mm, 24 * mm, 18 * mm, 16 * mm, 18 * mm, 14 * mm, 18 * mm, 14 * mm, 22 * mm],
            )
        )
        out.append(
            _p(
                "Each reference lesion of the analysed cases; a lesion is matched when a kept "
                "mark localises it under the locked matching rule (one mark per lesion). "
                "Rating, IoU and distance are those of the matching mark.",
                "Caption",
            )
        )
    else:
        out.append(_p(section.note or "No reference lesions in the analysed cases."))
    return out, figure_number


def _estimate_cell(estimate: ReportEstimate, digits: int = 3) -> str:
    """``0.812 (0.701 to 0.905)``, or the reason the estimate is missing."""
    if not estimate.ok:
        return format_estimate(estimate, digits)
    return f"{format_estimate(estimate, digits)} ({format_ci(estimate, digits)})"


def _calibration(section: CalibrationSection, figure_number: int) -> list[Flowable]:
    """Calibration (Van Calster et al. 2019) and decision curve (Vickers & Elkin 2006)."""
    out: list[Flowable] = [_h2("Calibration and clinical utility")]
    intro = []
    if section.operating_point:
        intro.append(f"Locked operating point: {section.operating_point}.")
    if section.rows:
        strategy = "equal-mass" if section.strategy == "quantile" else "equal-width"
        intro.append(
            "Calibration-in-the-large (intercept, ideal 0) and calibration slope (ideal 1) "
            "are logistic recalibration fits on logit(p); Brier score and expected "
            f"calibration error (ECE, {section.bins} {strategy} bins) are lower for better "
            "calibration. Intervals are percentile bootstrap intervals over "
            + (
                "patients (whole patients resampled)."
                if "clusters" in section.rows[0].brier.method
                else "cases."
            )
            + " ECE is biased upwards in finite samples (the noise within each bin adds to "
            "it), so even a perfectly calibrated model has ECE above 0 and an interval that "
            "excludes 0; it is judged against the protocol's threshold, not against 0."
        )
    if section.note:
        intro.append(section.note)
    if intro:
        out.append(_p(" ".join(intro)))
    if section.rows:
        level = format_level(section.rows[0].brier.level)
        out.append(
            _table(
                [["Group", "n", "Intercept", "Slope", "Brier", "ECE"]]
                + [
                    [
                        row.group,
                        row.n,
                        _estimate_cell(row.intercept, 2),
                        _estimate_cell(row.slope, 2),
                        _estimate_cell(row.brier, 3),
                        _estimate_cell(row.ece, 3),
                    ]
                    for row in section.rows
                ],
                [40 * mm, 10 * mm, 33 * mm, 33 * mm, 31 * mm, 31 * mm],
            )
        )
        out.append(_p(f"Estimates with {level} CIs.", "Caption"))
    if section.panels:
        half = CONTENT_WIDTH / 2
        drawings = [
            figures.reliability_diagram(panel, width=half - 4, height=half - 24)
            for panel in section.panels
        ]
        grid = [
            drawings[i : i + 2] + [""] * (2 - len(drawings[i : i + 2]))
            for i in range(0, len(drawings), 2)
        ]
        table = Table(grid, colWidths=[half, half], hAlign="LEFT")
        table.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ]
            )
        )
        out.append(table)
        out.append(
            _p(
                f"Figure {figure_number}. Reliability diagrams: dots are bins (area by number of "
                "cases) at their mean predicted probability against the observed fraction with "
                "Wilson 95% intervals; line and band: smoothed calibration curve (restricted "
                "cubic spline of logit(p)) with its pointwise bootstrap band, absent where the "
                "spline is not estimable (e.g. a perfectly separated stratum); dashed: perfect "
                "calibration.",
                "Caption",
            )
        )
        figure_number += 1
    curve = section.decision_curve
    if curve is not None:
        caption = (
            f"Figure {figure_number}. Decision curve: net benefit (true positives per patient "
            "net of false positives weighted by p_t / (1 - p_t)) of acting on the model, of "
            f"treating all and of treating none, with the model's {format_level(curve.level)} "
            f"pointwise bootstrap band; prevalence {curve.prevalence:.3g}."
        )
        if curve.criterion_at is not None:
            caption += (
                f" The dotted line marks p_t = {curve.criterion_at:g}, where the net-benefit "
                "endpoint is judged (see the acceptance table)."
            )
        out.append(
            KeepTogether(
                [
                    _h2("Decision curve"),
                    figures.decision_curve_figure(curve, width=CONTENT_WIDTH),
                    _p(caption, "Caption"),
                ]
            )
        )
        if curve.table:
            out += _decision_table(curve)
    return out


def _decision_table(curve: DecisionCurve) -> list[Flowable]:
    """Net benefit and net interventions avoided per 100 patients at tabulated thresholds."""
    cell = format_with_interval
    level = format_level(curve.level)
    rows: list[list[object]] = [
        ["p_t", f"Model ({level} CI)", f"Treat all ({level} CI)", "Avoided per 100 (CI)"]
    ]
    for row in curve.table:
        cells = [
            f"{row.threshold:g}" + (" *" if row.judged else ""),
            cell(row.model, row.model_low, row.model_high, 3),
            cell(row.treat_all, row.treat_all_low, row.treat_all_high, 3),
            cell(row.avoided, row.avoided_low, row.avoided_high, 1),
        ]
        rows.append([_p(c, "CellBold") for c in cells] if row.judged else list(cells))
    note = (
        "Net benefit of the model and of treating all, and the net number of interventions "
        "avoided per 100 patients by acting on the model instead of treating all: "
        "(net benefit of the model - net benefit of treat-all) x 100 x (1 - p_t) / p_t."
    )
    if any(row.judged for row in curve.table):
        note += " *: the threshold at which the net-benefit endpoint is judged."
    return [
        KeepTogether(
            [
                _h2("Net benefit and interventions avoided"),
                _table(rows, [18 * mm, 52 * mm, 52 * mm, CONTENT_WIDTH - 122 * mm]),
                _p(note, "Caption"),
            ]
        )
    ]


def _acceptance(content: ReportContent) -> list[Flowable]:
    out: list[Flowable] = [*_h1("5  Acceptance")]
    header: list[object] = ["Endpoint", "Stratum", "Criterion", "Estimate", "CI", "Result"]
    rows: list[list[object]] = [header]
    extra: list[tuple[Any, ...]] = []
    for index, row in enumerate(content.acceptance, start=1):
        label = row.endpoint + ("" if row.primary else " (secondary)")
        verdict = format_verdict(row.verdict)
        fill, ink = {Verdict.PASS: (PASS_FILL, PASS_INK), Verdict.FAIL: (FAIL_FILL, FAIL_INK)}.get(
            row.verdict, (NEUTRAL_FILL, MUTED)
        )
        extra += [("BACKGROUND", (5, index), (5, index), fill)]
        rows.append(
            [
                label,
                row.stratum,
                row.criterion,
                format_estimate(row.estimate, row.digits),
                format_ci(row.estimate, row.digits),
                _markup(
                    f'<font name="{SANS_BOLD}" color="{ink.hexval()}">{verdict}</font>', "Cell"
                ),
            ]
        )
    out.append(
        _table(rows, [36 * mm, 20 * mm, 48 * mm, 24 * mm, 32 * mm, 18 * mm], styles_extra=extra)
    )
    out.append(
        _p(
            "Result is PASS when the criterion holds for the confidence bound named in the "
            "criterion; colour repeats the text.",
            "Caption",
        )
    )
    reasons = [row for row in content.acceptance if row.reason]
    if reasons:
        out.append(_markup("<b>Why a result is not PASS</b>"))
        out += _bullets(
            [
                f"{row.endpoint}"
                + ("" if row.stratum == "overall" else f" ({row.stratum})")
                + f": {format_verdict(row.verdict)} \u2014 {row.reason}"
                for row in reasons
            ]
        )
    if content.verdict is not None:
        out.append(
            _markup(
                f"Run verdict: <b>{text(format_verdict(content.verdict))}</b>"
                + (f" \u2014 {text(content.verdict_reason)}" if content.verdict_reason else "")
            )
        )
    out.append(_h2("Deviations from the protocol"))
    if content.deviations:
        out.append(
            _table(
                [["ID", "Description", "Impact", "Approved by"]]
                + [
                    [d.deviation_id, d.description, d.impact, d.approved_by or "\u2014"]
                    for d in content.deviations
                ],
                [18 * mm, CONTENT_WIDTH - 108 * mm, 60 * mm, 30 * mm],
            )
        )
    else:
        out.append(_p("No deviations from the approved protocol."))
    return out


def _adjudication(content: ReportContent) -> list[Flowable]:
    a = content.adjudication
    out: list[Flowable] = [*_h1("6  Adjudication")]
    out.append(
        _p(
            f"{a.n_discrepancies} discrepancies between model and reference were queued; "
            f"{a.n_adjudicated} were adjudicated by blinded clinical reviewers."
        )
    )
    if a.note:
        out += _paragraphs(a.note)
    if a.outcome_counts:
        out.append(_h2("Decisions"))
        out.append(
            _table(
                [["Decision", "Cases"]] + [[k, v] for k, v in sorted(a.outcome_counts.items())],
                [60 * mm, 20 * mm],
            )
        )
    out.append(_h2("Discrepancies"))
    if a.decisions:
        out.append(
            _table(
                [
                    [
                        "Case",
                        "Kind",
                        "Model",
                        "Reference",
                        "Decision",
                        "Adjudicator",
                        "Decided (UTC)",
                        "Rationale",
                    ]
                ]
                + [
                    [
                        d.case_id,
                        d.kind,
                        d.model_output,
                        d.reference,
                        d.decision,
                        d.adjudicator,
                        format_utc(d.decided_at).removesuffix(" UTC"),
                        d.rationale or "\u2014",
                    ]
                    for d in a.decisions
                ],
                [
                    20 * mm,
                    22 * mm,
                    18 * mm,
                    18 * mm,
                    22 * mm,
                    22 * mm,
                    25 * mm,
                    CONTENT_WIDTH - 147 * mm,
                ],
            )
        )
    else:
        out.append(_p("None."))
    if a.post_adjudication:
        out.append(_h2("Post-adjudication analysis (secondary)"))
        out.append(
            _p(
                "SECONDARY ANALYSIS \u2014 the reference standard was revised by "
                "adjudication after the model's outputs were known. These estimates do not "
                "replace the primary results in sections 4 and 5.",
                "Secondary",
            )
        )
        out += _metric_tables(a.post_adjudication)
    return out


def _limitations(content: ReportContent) -> list[Flowable]:
    return [*_h1("7  Limitations"), *_bullets(content.limitations)]


def _check_signatures(content: ReportContent) -> None:
    if content.status is not ReportStatus.FINAL:
        return
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


def _matching(
    signatures: Sequence[SignatureEntry], role: str, meaning: str
) -> list[SignatureEntry]:
    return [
        s
        for s in signatures
        if s.role.casefold() == role.casefold() and s.meaning.casefold() == meaning.casefold()
    ]


def _signature_box(rows: list[tuple[str, str]], *, unsigned: bool) -> Table:
    data = [
        [_p(k, "CellBold"), _p(v, "CellMono" if k == "Signed content SHA-256" else "Cell")]
        for k, v in rows
    ]
    table = Table(data, colWidths=[45 * mm, CONTENT_WIDTH - 45 * mm], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 0.8, FAIL_INK if unsigned else RULE),
                ("BACKGROUND", (0, 0), (-1, -1), FAIL_FILL if unsigned else colors.white),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("FONTNAME", (0, 0), (-1, -1), SANS),  # else reportlab selects Helvetica per cell
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _signatures(content: ReportContent) -> list[Flowable]:
    out: list[Flowable] = [*_h1("8  Electronic signatures")]
    out.append(
        _p(
            "Each signature shows the signer's printed name, role, the date and time of "
            "signing (UTC) and its meaning (21 CFR 11.50). Signatures are linked to the "
            "results SHA-256 of this report."
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
                                ("Printed name", "\u2014"),
                                ("Signed (UTC)", "\u2014"),
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
    if not content.required_signatures and not content.signatures:
        out.append(_p("No signatures are required or applied."))
    return out


def _signature_rows(s: SignatureEntry) -> list[tuple[str, str]]:
    return [
        ("Printed name", s.printed_name),
        ("User", s.username),
        ("Role", s.role),
        ("Meaning", s.meaning),
        ("Signed (UTC)", format_utc(s.signed_at)),
        ("Signature ID", s.signature_id or "\u2014"),
        ("Signed content SHA-256", s.content_sha256 or "\u2014"),
    ]


def _selected_cases(content: ReportContent) -> list[Flowable]:
    """Views chosen from the case explorer: the image, the case's figures and the note."""
    if not content.selected_cases:
        return []
    from reportlab.platypus import Image

    out: list[Flowable] = [
        PageBreak(),
        _markup("Selected cases", "H1"),
        _p(
            "Views chosen by the QA author from the case explorer (model output and reference "
            "overlaid, with their legend). Each image is the file whose SHA-256 the audit trail "
            "recorded when it was chosen. Explanation maps, where shown, are aids to review, not "
            "evidence of correctness."
        ),
    ]
    for case in content.selected_cases:
        data = Path(case.png_path).read_bytes() if Path(case.png_path).is_file() else b""
        if hashlib.sha256(data).hexdigest() != case.png_sha256:
            raise ReportError(
                f"The selected view of case {case.case_id} ({case.png_path}) no longer has the "
                f"SHA-256 recorded when it was selected ({case.png_sha256[:12]}...)."
            )
        image = Image(io.BytesIO(data))
        scale = min(CONTENT_WIDTH / image.drawWidth, 150 * mm / image.drawHeight, 1.0)
        image.drawWidth *= scale
        image.drawHeight *= scale
        block: list[Flowable] = [_h2(f"Case {case.case_id}"), image, Spacer(1, 3)]
        pairs: list[tuple[str, object]] = [(k, v) for k, v in case.metrics]
        pairs += [("Selected by", case.selected_by), ("Note", case.note or "-")]
        pairs.append(("Image SHA-256", case.png_sha256))
        block.append(_key_values(pairs, mono_keys=["Image SHA-256"]))
        out.append(KeepTogether(block))
        out.append(Spacer(1, 6))
    return out


def _appendix_audit(content: ReportContent) -> list[Flowable]:
    out: list[Flowable] = [PageBreak(), _markup("Appendix A  Audit trail of this run", "H1")]
    out.append(
        _p(
            "Entries of the workbench's append-only, hash-chained audit trail that concern "
            "this run. Each entry's hash covers its content and the previous entry's hash."
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


def _appendix_attachments(
    content: ReportContent, attachments: Sequence[Attachment]
) -> list[Flowable]:
    out: list[Flowable] = [_markup("Appendix B  Embedded files", "H1")]
    out.append(
        _p(
            "These files are embedded in this PDF (PDF attachments). With them an inspector "
            "can recompute every table of this report. The full per-case table "
            f"({len(content.per_case)} rows) is in per-case.csv; the body lists only "
            "excluded, failed and discrepant cases."
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

"""Vector figures of the report (``reportlab.graphics`` drawings).

Vector drawings are archival: they are stored in the PDF as paths and text
in the embedded fonts, need no renderer such as Chrome, and stay sharp at any
zoom. Each function returns a :class:`reportlab.graphics.shapes.Drawing` that
the builder places as a flowable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reportlab.graphics.shapes import (
    Circle,
    Drawing,
    Group,
    Line,
    Polygon,
    PolyLine,
    Rect,
    String,
)
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

from workbench.reports._style import (
    ACCENT,
    BAND,
    FAIL_INK,
    MONO,
    MUTED,
    RULE,
    SANS,
    SANS_BOLD,
    SERIES_COLOURS,
    register_fonts,
)
from workbench.reports.content import (
    CalibrationPanel,
    DecisionCurve,
    DistributionGroup,
    EstimateStatus,
    MetricResult,
    ReportEstimate,
    RocCurve,
)
from workbench.reports.formatting import format_ci, format_estimate, format_level, format_number

if TYPE_CHECKING:  # the figures only read the summary's fields; no import at run time
    from workbench.protocols.results import FrocSummary
    from workbench.stats import Estimate

__all__ = [
    "decision_curve_figure",
    "dice_distribution_figure",
    "forest_plot",
    "froc_figure",
    "reliability_diagram",
    "roc_figure",
    "wafroc_figure",
]

_TICK_FONT = 7
_LABEL_FONT = 8
INK_DOT = colors.HexColor("#1a1a1a")


def _drawing(width: float, height: float) -> Drawing:
    drawing = Drawing(width, height)
    # the renderer starts every drawing in this font; the default would be a
    # non-embedded Helvetica, which an archival PDF must not reference
    drawing.initialFontName = SANS
    return drawing


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = max(high - low, 1e-12)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and abs(step * 10**digits - round(step * 10**digits)) > 1e-6:
        digits += 1
    return format_number(value, digits)


def roc_figure(roc: RocCurve, *, width: float = 300, height: float = 280) -> Drawing:
    """ROC curve with its pointwise confidence band, chance diagonal and operating point.

    Parameters
    ----------
    roc : RocCurve
        Curve, band and AUC.
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = _drawing(width, height)
    left, bottom, right, top = 46.0, 40.0, 12.0, 26.0
    plot_w, plot_h = width - left - right, height - bottom - top

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + x * plot_w, bottom + y * plot_h

    drawing.add(
        Rect(left, bottom, plot_w, plot_h, strokeColor=RULE, fillColor=None, strokeWidth=0.6)
    )
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    for t in ticks:
        x, _ = xy(t, 0)
        _, y = xy(0, t)
        drawing.add(Line(x, bottom, x, bottom - 3, strokeColor=MUTED, strokeWidth=0.5))
        drawing.add(Line(left, y, left - 3, y, strokeColor=MUTED, strokeWidth=0.5))
        drawing.add(
            Line(
                x,
                bottom,
                x,
                bottom + plot_h,
                strokeColor=colors.HexColor("#eeeeee"),
                strokeWidth=0.4,
            )
        )
        drawing.add(
            Line(left, y, left + plot_w, y, strokeColor=colors.HexColor("#eeeeee"), strokeWidth=0.4)
        )
        drawing.add(
            String(
                x, bottom - 12, f"{t:.1f}", fontName=SANS, fontSize=_TICK_FONT, textAnchor="middle"
            )
        )
        drawing.add(
            String(
                left - 5, y - 2.5, f"{t:.1f}", fontName=SANS, fontSize=_TICK_FONT, textAnchor="end"
            )
        )

    band: list[float] = []
    for x, y in zip(roc.fpr, roc.tpr_high, strict=True):
        band.extend(xy(x, min(max(y, 0.0), 1.0)))
    for x, y in zip(reversed(roc.fpr), reversed(roc.tpr_low), strict=True):
        band.extend(xy(x, min(max(y, 0.0), 1.0)))
    drawing.add(Polygon(band, fillColor=BAND, strokeColor=None, strokeWidth=0))
    drawing.add(
        Line(*xy(0, 0), *xy(1, 1), strokeColor=MUTED, strokeWidth=0.6, strokeDashArray=[3, 3])
    )
    curve: list[float] = []
    for x, y in zip(roc.fpr, roc.tpr, strict=True):
        curve.extend(xy(x, y))
    drawing.add(PolyLine(curve, strokeColor=ACCENT, strokeWidth=1.4))
    if roc.operating_point is not None:
        ox, oy = xy(*roc.operating_point)
        drawing.add(
            Rect(
                ox - 3, oy - 3, 6, 6, fillColor=FAIL_INK, strokeColor=colors.white, strokeWidth=0.5
            )
        )

    _axis_labels(
        drawing,
        "1 \u2212 specificity (false-positive rate)",
        "Sensitivity (true-positive rate)",
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_label_at=8,
        y_label_at=12,
    )
    auc = roc.auc
    title = f"AUC {format_estimate(auc)}"
    if auc.ok:
        title += f" ({format_level(auc.level)} CI {format_ci(auc)})"
    drawing.add(String(left, height - 14, title, fontName=SANS_BOLD, fontSize=_LABEL_FONT))
    # legend inside the plot, lower right
    lx, ly = left + plot_w - 118, bottom + 30
    drawing.add(Line(lx, ly, lx + 14, ly, strokeColor=ACCENT, strokeWidth=1.4))
    drawing.add(String(lx + 18, ly - 2.5, "empirical ROC", fontName=SANS, fontSize=_TICK_FONT))
    drawing.add(Rect(lx, ly - 14, 14, 7, fillColor=BAND, strokeColor=None))
    band_label = f"{format_level(auc.level)} band" + (
        f" ({roc.band_method})" if roc.band_method else ""
    )
    drawing.add(String(lx + 18, ly - 13, band_label[:28], fontName=SANS, fontSize=_TICK_FONT))
    if roc.operating_point is not None:
        drawing.add(Rect(lx + 4, ly - 26, 6, 6, fillColor=FAIL_INK, strokeColor=None))
        drawing.add(String(lx + 18, ly - 25, "operating point", fontName=SANS, fontSize=_TICK_FONT))
    return drawing


def forest_plot(metric: MetricResult, *, width: float = 480, row_height: float = 15) -> Drawing:
    """Forest plot of a metric per stratum with CIs against the acceptance line.

    The overall estimate is the first row (a diamond); strata without an
    estimate are listed with the reason (e.g. ``insufficient n (n=7)``) and
    no marker.

    Parameters
    ----------
    metric : MetricResult
        Overall and per-stratum estimates and the acceptance threshold.
    width : float
        Width of the drawing in points.
    row_height : float
        Vertical space per row in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    rows: list[tuple[str, ReportEstimate, bool]] = [("Overall", metric.overall, True)]
    for stratum in metric.per_stratum:
        rows.append((f"{stratum.factor}: {stratum.level}", stratum.estimate, False))
    label_w, value_w = 185.0, 125.0
    top, bottom = 22.0, 30.0
    height = top + bottom + row_height * len(rows)
    drawing = _drawing(width, height)
    plot_left = label_w
    plot_w = width - label_w - value_w
    bounds = [e.ci_low for _, e, _ in rows if e.ok and e.ci_low is not None]
    bounds += [e.ci_high for _, e, _ in rows if e.ok and e.ci_high is not None]
    if metric.threshold is not None:
        bounds.append(metric.threshold)
    low = min(bounds, default=0.0)
    high = max(bounds, default=1.0)
    pad = max((high - low) * 0.08, 0.01)
    low, high = low - pad, high + pad
    if metric.key in ("auc", "dice", "sensitivity", "specificity") or (0 <= low and high <= 1.05):
        low, high = max(low, 0.0), min(high, 1.0)
    ticks = _nice_ticks(low, high)

    def x_of(value: float) -> float:
        return plot_left + (value - low) / (high - low) * plot_w

    axis_y = bottom
    drawing.add(
        Line(plot_left, axis_y, plot_left + plot_w, axis_y, strokeColor=MUTED, strokeWidth=0.6)
    )
    for t in ticks:
        x = x_of(t)
        drawing.add(Line(x, axis_y, x, axis_y - 3, strokeColor=MUTED, strokeWidth=0.5))
        drawing.add(
            String(
                x,
                axis_y - 11,
                _tick_label(t, ticks),
                fontName=SANS,
                fontSize=_TICK_FONT,
                textAnchor="middle",
            )
        )
    unit = f" ({metric.unit})" if metric.unit else ""
    drawing.add(
        String(
            plot_left + plot_w / 2,
            4,
            f"{metric.label}{unit}",
            fontName=SANS,
            fontSize=_LABEL_FONT,
            textAnchor="middle",
        )
    )
    drawing.add(String(0, height - 12, "Stratum", fontName=SANS_BOLD, fontSize=_LABEL_FONT))
    level = format_level(metric.overall.level)
    drawing.add(
        String(
            width,
            height - 12,
            f"{metric.label} ({level} CI)",
            fontName=SANS_BOLD,
            fontSize=_LABEL_FONT,
            textAnchor="end",
        )
    )
    if metric.threshold is not None:
        x = x_of(metric.threshold)
        drawing.add(
            Line(
                x,
                axis_y,
                x,
                height - top + 4,
                strokeColor=FAIL_INK,
                strokeWidth=0.9,
                strokeDashArray=[4, 2],
            )
        )
        sign = "\u2265" if metric.direction == ">=" else "\u2264"
        drawing.add(
            String(
                x,
                height - top + 6,
                f"acceptance {sign} {format_number(metric.threshold, metric.digits)}",
                fontName=SANS,
                fontSize=6.5,
                fillColor=FAIL_INK,
                textAnchor="middle",
            )
        )

    for index, (label, estimate, overall) in enumerate(rows):
        y = height - top - row_height * (index + 0.5) - 2
        font = SANS_BOLD if overall else SANS
        suffix = f" (n={estimate.n})" if estimate.n else ""
        text = _fit_width(label, suffix, label_w - 6, font, _TICK_FONT)
        drawing.add(String(2, y - 2.5, text, fontName=font, fontSize=_TICK_FONT))
        value_text = format_estimate(estimate, metric.digits)
        if estimate.ok:
            value_text += f"  [{format_ci(estimate, metric.digits)}]"
        colour = MUTED if not estimate.ok else colors.black
        drawing.add(
            String(
                width,
                y - 2.5,
                value_text,
                fontName=font,
                fontSize=_TICK_FONT,
                textAnchor="end",
                fillColor=colour,
            )
        )
        if not estimate.ok or estimate.value is None:
            note = (
                "insufficient n \u2014 not estimated"
                if estimate.status is EstimateStatus.INSUFFICIENT_N
                else "not estimated"
            )
            note_w = stringWidth(note, SANS, 6.5)
            # a white backing keeps the note readable where it crosses the acceptance line
            drawing.add(
                Rect(
                    plot_left + 2, y - 4.5, note_w + 4, 9, fillColor=colors.white, strokeColor=None
                )
            )
            drawing.add(
                String(plot_left + 4, y - 2.5, note, fontName=SANS, fontSize=6.5, fillColor=MUTED)
            )
            continue
        assert estimate.ci_low is not None and estimate.ci_high is not None
        x0, x1, xv = x_of(estimate.ci_low), x_of(estimate.ci_high), x_of(estimate.value)
        below = _fails(metric, estimate)
        ink = FAIL_INK if below else ACCENT
        drawing.add(Line(x0, y, x1, y, strokeColor=ink, strokeWidth=1.1))
        drawing.add(Line(x0, y - 3, x0, y + 3, strokeColor=ink, strokeWidth=0.8))
        drawing.add(Line(x1, y - 3, x1, y + 3, strokeColor=ink, strokeWidth=0.8))
        if overall:
            drawing.add(
                Polygon(
                    [xv - 5, y, xv, y + 4.5, xv + 5, y, xv, y - 4.5],
                    fillColor=ink,
                    strokeColor=None,
                )
            )
        else:
            drawing.add(Rect(xv - 2.5, y - 2.5, 5, 5, fillColor=ink, strokeColor=None))
    return drawing


def _fails(metric: MetricResult, estimate: ReportEstimate) -> bool:
    if metric.threshold is None or estimate.ci_low is None or estimate.ci_high is None:
        return False
    if metric.direction == ">=":
        return estimate.ci_low < metric.threshold
    return estimate.ci_high > metric.threshold


def _fit_width(label: str, suffix: str, max_width: float, font: str, size: float) -> str:
    """``label + suffix`` shortened in ``label`` only, so the suffix (the n) is always shown."""
    if stringWidth(label + suffix, font, size) <= max_width:
        return label + suffix
    while label and stringWidth(label + "\u2026" + suffix, font, size) > max_width:
        label = label[:-1]
    return label.rstrip() + "\u2026" + suffix


def _clip(value: str, length: int) -> str:
    return value if len(value) <= length else value[: length - 1] + "\u2026"


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    position = (len(sorted_values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def _jitter(label: str, index: int) -> float:
    """Deterministic jitter in [-1, 1] so that a rebuild draws the same points."""
    digest = hashlib.sha256(f"{label}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 0xFFFFFFFF * 2 - 1


def dice_distribution_figure(
    groups: Sequence[DistributionGroup],
    *,
    metric_label: str = "Dice",
    threshold: float | None = None,
    width: float = 480,
    height: float = 230,
) -> Drawing:
    """Box plot with the individual cases overlaid (strip plot), one column per group.

    Boxes span the quartiles with the median marked; whiskers reach the most
    extreme value within 1.5 IQR; every case is drawn as a jittered dot.

    Parameters
    ----------
    groups : sequence of DistributionGroup
        One group per scanner (or other factor level).
    metric_label : str
        Axis label.
    threshold : float or None
        Drawn as a dashed reference line when given.
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = _drawing(width, height)
    left, bottom, right, top = 46.0, 34.0, 10.0, 14.0
    plot_w, plot_h = width - left - right, height - bottom - top
    values = [v for g in groups for v in g.values]
    low = min(values + ([threshold] if threshold is not None else []), default=0.0)
    high = max(values + ([threshold] if threshold is not None else []), default=1.0)
    pad = max((high - low) * 0.05, 0.01)
    low, high = max(low - pad, 0.0) if low >= 0 else low - pad, high + pad
    if high <= 1.0 + pad and low >= 0:
        high = min(high, 1.0)
    ticks = _nice_ticks(low, high, count=6)

    def y_of(value: float) -> float:
        return bottom + (value - low) / (high - low) * plot_h

    drawing.add(
        Rect(left, bottom, plot_w, plot_h, strokeColor=RULE, fillColor=None, strokeWidth=0.6)
    )
    for t in ticks:
        y = y_of(t)
        drawing.add(
            Line(left, y, left + plot_w, y, strokeColor=colors.HexColor("#eeeeee"), strokeWidth=0.4)
        )
        drawing.add(
            String(
                left - 5,
                y - 2.5,
                _tick_label(t, ticks),
                fontName=SANS,
                fontSize=_TICK_FONT,
                textAnchor="end",
            )
        )
    label = String(0, 0, metric_label, fontName=SANS, fontSize=_LABEL_FONT, textAnchor="middle")
    rotated = Group(label)
    rotated.transform = (0, 1, -1, 0, 12, bottom + plot_h / 2)
    drawing.add(rotated)
    if threshold is not None:
        y = y_of(threshold)
        drawing.add(
            Line(
                left,
                y,
                left + plot_w,
                y,
                strokeColor=FAIL_INK,
                strokeWidth=0.8,
                strokeDashArray=[4, 2],
            )
        )
        drawing.add(
            String(
                left + 3,
                y + 2,
                f"acceptance {format_number(threshold, 2)}",
                fontName=SANS,
                fontSize=6.5,
                fillColor=FAIL_INK,
            )
        )

    slot = plot_w / max(len(groups), 1)
    for index, group in enumerate(groups):
        centre = left + slot * (index + 0.5)
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        data = sorted(group.values)
        drawing.add(
            String(
                centre,
                bottom - 12,
                _clip(group.label, 24),
                fontName=SANS,
                fontSize=_TICK_FONT,
                textAnchor="middle",
            )
        )
        drawing.add(
            String(
                centre,
                bottom - 22,
                f"n={len(data)}",
                fontName=SANS,
                fontSize=6.5,
                textAnchor="middle",
                fillColor=MUTED,
            )
        )
        if not data:
            continue
        q1, median, q3 = (_quantile(data, q) for q in (0.25, 0.5, 0.75))
        iqr = q3 - q1
        lo_whisker = min(v for v in data if v >= q1 - 1.5 * iqr)
        hi_whisker = max(v for v in data if v <= q3 + 1.5 * iqr)
        box_w = min(slot * 0.45, 60)
        drawing.add(
            Line(centre, y_of(lo_whisker), centre, y_of(q1), strokeColor=colour, strokeWidth=0.8)
        )
        drawing.add(
            Line(centre, y_of(q3), centre, y_of(hi_whisker), strokeColor=colour, strokeWidth=0.8)
        )
        for w in (lo_whisker, hi_whisker):
            drawing.add(
                Line(
                    centre - box_w / 4,
                    y_of(w),
                    centre + box_w / 4,
                    y_of(w),
                    strokeColor=colour,
                    strokeWidth=0.8,
                )
            )
        drawing.add(
            Rect(
                centre - box_w / 2,
                y_of(q1),
                box_w,
                max(y_of(q3) - y_of(q1), 0.5),
                fillColor=colors.Color(colour.red, colour.green, colour.blue, 0.12),
                strokeColor=colour,
                strokeWidth=0.9,
            )
        )
        drawing.add(
            Line(
                centre - box_w / 2,
                y_of(median),
                centre + box_w / 2,
                y_of(median),
                strokeColor=colour,
                strokeWidth=1.8,
            )
        )
        for i, value in enumerate(group.values):
            x = centre + box_w * 0.75 + 4 + _jitter(group.label, i) * min(slot * 0.12, 14)
            dot = Rect(
                x - 1.1,
                y_of(value) - 1.1,
                2.2,
                2.2,
                fillColor=colors.Color(colour.red, colour.green, colour.blue, 0.55),
                strokeColor=None,
            )
            drawing.add(dot)
        drawing.add(
            String(
                centre - box_w / 2 - 3,
                y_of(median) - 2.5,
                format_number(median, 3),
                fontName=MONO,
                fontSize=6,
                textAnchor="end",
                fillColor=colour,
            )
        )
    return drawing


def _frame_axes(
    drawing: Drawing,
    *,
    left: float,
    bottom: float,
    plot_w: float,
    plot_h: float,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    x_of: object,
    y_of: object,
) -> None:
    """Plot frame, light grid lines and tick labels (shared by the utility figures)."""
    assert callable(x_of) and callable(y_of)
    grid = colors.HexColor("#eeeeee")
    drawing.add(
        Rect(left, bottom, plot_w, plot_h, strokeColor=RULE, fillColor=None, strokeWidth=0.6)
    )
    for t in x_ticks:
        x = x_of(t)
        drawing.add(Line(x, bottom, x, bottom + plot_h, strokeColor=grid, strokeWidth=0.4))
        drawing.add(Line(x, bottom, x, bottom - 3, strokeColor=MUTED, strokeWidth=0.5))
        drawing.add(
            String(
                x,
                bottom - 11,
                _tick_label(t, x_ticks),
                fontName=SANS,
                fontSize=_TICK_FONT,
                textAnchor="middle",
            )
        )
    for t in y_ticks:
        y = y_of(t)
        drawing.add(Line(left, y, left + plot_w, y, strokeColor=grid, strokeWidth=0.4))
        drawing.add(Line(left, y, left - 3, y, strokeColor=MUTED, strokeWidth=0.5))
        drawing.add(
            String(
                left - 5,
                y - 2.5,
                _tick_label(t, y_ticks),
                fontName=SANS,
                fontSize=_TICK_FONT,
                textAnchor="end",
            )
        )


def _axis_labels(
    drawing: Drawing,
    x_label: str,
    y_label: str,
    *,
    left: float,
    bottom: float,
    plot_w: float,
    plot_h: float,
    x_label_at: float = 6,
    y_label_at: float = 10,
) -> None:
    """The x label centred under the plot at height ``x_label_at``; the y label rotated,
    centred beside it at ``y_label_at`` from the left edge."""
    drawing.add(
        String(
            left + plot_w / 2,
            x_label_at,
            x_label,
            fontName=SANS,
            fontSize=_LABEL_FONT,
            textAnchor="middle",
        )
    )
    label = String(0, 0, y_label, fontName=SANS, fontSize=_LABEL_FONT, textAnchor="middle")
    rotated = Group(label)
    rotated.transform = (0, 1, -1, 0, y_label_at, bottom + plot_h / 2)
    drawing.add(rotated)


def reliability_diagram(
    panel: CalibrationPanel, *, width: float = 235, height: float = 235
) -> Drawing:
    """Reliability diagram: observed fraction per bin against the mean prediction.

    Each bin is a dot (area by its number of cases) with its Wilson interval; the
    smoothed calibration curve (a logistic regression on a restricted cubic spline of
    ``logit(p)``) is drawn with its pointwise bootstrap band, and the diagonal marks
    perfect calibration (Van Calster et al. 2019; Steyerberg, Clinical Prediction
    Models, ch. 15).

    Parameters
    ----------
    panel : CalibrationPanel
        Bins and curve of one group of cases.
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = _drawing(width, height)
    left, bottom, right, top = 40.0, 34.0, 8.0, 20.0
    plot_w, plot_h = width - left - right, height - bottom - top

    def x_of(v: float) -> float:
        return left + min(max(v, 0.0), 1.0) * plot_w

    def y_of(v: float) -> float:
        return bottom + min(max(v, 0.0), 1.0) * plot_h

    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    _frame_axes(
        drawing,
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_ticks=ticks,
        y_ticks=ticks,
        x_of=x_of,
        y_of=y_of,
    )
    drawing.add(
        Line(
            x_of(0),
            y_of(0),
            x_of(1),
            y_of(1),
            strokeColor=MUTED,
            strokeWidth=0.6,
            strokeDashArray=[3, 3],
        )
    )
    if panel.curve_predicted:
        band: list[float] = []
        for x, y in zip(panel.curve_predicted, panel.curve_high, strict=True):
            band.extend((x_of(x), y_of(y)))
        for x, y in zip(reversed(panel.curve_predicted), reversed(panel.curve_low), strict=True):
            band.extend((x_of(x), y_of(y)))
        drawing.add(Polygon(band, fillColor=BAND, strokeColor=None, strokeWidth=0))
        line: list[float] = []
        for x, y in zip(panel.curve_predicted, panel.curve_observed, strict=True):
            line.extend((x_of(x), y_of(y)))
        drawing.add(PolyLine(line, strokeColor=ACCENT, strokeWidth=1.2))
    largest = max((pt.n for pt in panel.points), default=1)
    for pt in panel.points:
        x = x_of(pt.mean_predicted)
        drawing.add(
            Line(
                x,
                y_of(pt.observed_low),
                x,
                y_of(pt.observed_high),
                strokeColor=INK_DOT,
                strokeWidth=0.7,
            )
        )
        radius = 1.8 + 2.2 * math.sqrt(pt.n / largest)
        drawing.add(
            Circle(
                x,
                y_of(pt.observed),
                radius,
                fillColor=INK_DOT,
                strokeColor=colors.white,
                strokeWidth=0.5,
            )
        )
    title = _fit_width(
        panel.label, f" (n={panel.n}, {panel.events} events)", width - 8, SANS_BOLD, _LABEL_FONT
    )
    drawing.add(String(4, height - 13, title, fontName=SANS_BOLD, fontSize=_LABEL_FONT))
    _axis_labels(
        drawing,
        "Predicted probability",
        "Observed fraction",
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
    )
    return drawing


def decision_curve_figure(
    curve: DecisionCurve, *, width: float = 480, height: float = 250
) -> Drawing:
    """Decision curve: net benefit of the model, treat-all and treat-none per threshold.

    Net benefit ``TP/n - FP/n * p_t / (1 - p_t)`` against the threshold probability
    ``p_t`` (Vickers & Elkin 2006), with the model's pointwise bootstrap band; the
    threshold at which the protocol judges the net-benefit endpoint is marked.

    Parameters
    ----------
    curve : DecisionCurve
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = _drawing(width, height)
    left, bottom, right, top = 48.0, 34.0, 120.0, 14.0
    plot_w, plot_h = width - left - right, height - bottom - top
    t = curve.thresholds
    highs = [v for v in (*curve.model_high, *curve.model) if v is not None]
    y_high = max([*highs, curve.prevalence, 0.05])
    # treat-all plunges below zero at high thresholds; clip the axis a little below zero
    y_low = min([*(v for v in curve.model_low if v is not None), 0.0])
    y_low = max(y_low, -0.25 * y_high) - 0.02 * y_high
    y_high += 0.05 * y_high
    x_low, x_high = t[0], t[-1]

    def x_of(v: float) -> float:
        return left + (v - x_low) / (x_high - x_low) * plot_w

    def y_of(v: float) -> float:
        return bottom + (min(max(v, y_low), y_high) - y_low) / (y_high - y_low) * plot_h

    _frame_axes(
        drawing,
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_ticks=_nice_ticks(x_low, x_high, count=6),
        y_ticks=_nice_ticks(y_low, y_high, count=5),
        x_of=x_of,
        y_of=y_of,
    )
    pairs = [
        (x, lo, hi)
        for x, lo, hi in zip(t, curve.model_low, curve.model_high, strict=True)
        if lo is not None and hi is not None
    ]
    if len(pairs) >= 2:
        band: list[float] = []
        for x, _, hi in pairs:
            band.extend((x_of(x), y_of(hi)))
        for x, lo, _ in reversed(pairs):
            band.extend((x_of(x), y_of(lo)))
        drawing.add(Polygon(band, fillColor=BAND, strokeColor=None, strokeWidth=0))
    drawing.add(
        Line(x_of(x_low), y_of(0), x_of(x_high), y_of(0), strokeColor=MUTED, strokeWidth=1.0)
    )
    visible = [(x, v) for x, v in zip(t, curve.treat_all, strict=True) if v >= y_low]
    if len(visible) >= 2:
        drawing.add(
            PolyLine(
                [c for x, v in visible for c in (x_of(x), y_of(v))],
                strokeColor=SERIES_COLOURS[1],
                strokeWidth=1.0,
                strokeDashArray=[4, 2],
            )
        )
    drawing.add(
        PolyLine(
            [c for x, v in zip(t, curve.model, strict=True) for c in (x_of(x), y_of(v))],
            strokeColor=ACCENT,
            strokeWidth=1.4,
        )
    )
    if curve.criterion_at is not None:
        x = x_of(curve.criterion_at)
        drawing.add(
            Line(
                x,
                bottom,
                x,
                bottom + plot_h,
                strokeColor=FAIL_INK,
                strokeWidth=0.7,
                strokeDashArray=[2, 2],
            )
        )
    _axis_labels(
        drawing,
        "Threshold probability",
        "Net benefit",
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
    )
    lx, ly = left + plot_w + 10, bottom + plot_h - 8
    legend = [
        ("model", ACCENT, None),
        ("treat all", SERIES_COLOURS[1], [4, 2]),
        ("treat none", MUTED, None),
    ]
    for i, (name, colour, dash) in enumerate(legend):
        y = ly - 13 * i
        drawing.add(
            Line(lx, y, lx + 16, y, strokeColor=colour, strokeWidth=1.2, strokeDashArray=dash)
        )
        drawing.add(String(lx + 20, y - 2.5, name, fontName=SANS, fontSize=_TICK_FONT))
    y = ly - 13 * len(legend)
    drawing.add(Rect(lx, y - 3, 16, 7, fillColor=BAND, strokeColor=None))
    drawing.add(
        String(
            lx + 20,
            y - 2.5,
            f"{format_level(curve.level)} band (model)",
            fontName=SANS,
            fontSize=_TICK_FONT,
        )
    )
    if curve.criterion_at is not None:
        y -= 13
        drawing.add(
            Line(lx, y, lx + 16, y, strokeColor=FAIL_INK, strokeWidth=0.7, strokeDashArray=[2, 2])
        )
        drawing.add(
            String(
                lx + 20,
                y - 2.5,
                f"criterion at {curve.criterion_at:g}",
                fontName=SANS,
                fontSize=_TICK_FONT,
            )
        )
    y -= 16
    drawing.add(
        String(
            lx,
            y,
            f"prevalence {curve.prevalence:.3g}",
            fontName=SANS,
            fontSize=_TICK_FONT,
            fillColor=MUTED,
        )
    )
    return drawing


# -- free-response (detection) figures ---------------------------------------------------------

_LEGEND_ROW = 11.0


def _tinted(colour: colors.Color, alpha: float) -> colors.Color:
    return colors.Color(colour.red, colour.green, colour.blue, alpha)


def _nice_top(high: float) -> tuple[float, list[float]]:
    """An axis end at or above ``high`` on a tick, and the ticks from zero to it."""
    high = high if high > 0 and math.isfinite(high) else 1.0
    ticks = _nice_ticks(0.0, high, count=5)
    if ticks[-1] < high - 1e-9:
        step = ticks[1] - ticks[0] if len(ticks) > 1 else high
        ticks.append(round(ticks[-1] + step, 10))
    return ticks[-1], ticks


def _estimate_text(estimate: Estimate | None, digits: int = 3) -> str:
    """``0.812 (95% CI 0.750 to 0.871)``, or ``not estimable``."""
    if estimate is None:
        return "not estimable"
    return (
        f"{format_number(estimate.value, digits)} ({format_level(estimate.level)} CI "
        f"{format_number(estimate.ci_low, digits)} to {format_number(estimate.ci_high, digits)})"
    )


def _legend_line(
    drawing: Drawing,
    x: float,
    y: float,
    colour: colors.Color,
    name: str,
    suffix: str,
    *,
    max_width: float,
    marker: bool = False,
) -> None:
    """One legend row: a line swatch (with a marker), the name and its figures.

    A long name is shortened, never the figures after it.
    """
    drawing.add(Line(x, y, x + 16, y, strokeColor=colour, strokeWidth=1.4))
    if marker:
        drawing.add(Rect(x + 5.5, y - 2.5, 5, 5, fillColor=colour, strokeColor=colors.white))
    drawing.add(
        String(
            x + 20,
            y - 2.5,
            _fit_width(name, suffix, max_width - 20, SANS, _TICK_FONT),
            fontName=SANS,
            fontSize=_TICK_FONT,
        )
    )


def froc_figure(
    panels: Sequence[tuple[str, FrocSummary]], *, width: float = 300, height: float = 280
) -> Drawing:
    """FROC curves: lesion localisation fraction against non-lesion marks per image.

    One line per candidate with its pointwise bootstrap band shaded, and a marker with
    its CI at each stated number of false positives per image (the sensitivity the
    protocol judges). The curve is the empirical one of Chakraborty (Observer
    Performance Methods for Diagnostic Imaging, 2017, ch. 13): from (0, 0) through the
    LLF and NLF of the marks rated at or above each threshold, ending at the most lenient
    one, so curves end at different abscissae. Where a stated number of false positives
    per image lies beyond that end, the sensitivity there is the end's LLF, and a dotted
    line carries the curve's level out to the marker.

    Parameters
    ----------
    panels : sequence of (str, FrocSummary)
        The candidate's name (legend label) and its summary, in drawing order.
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
        The legend sits below the plot, one row per candidate, so it never covers a curve.
    """
    register_fonts()
    drawing = _drawing(width, height)
    legend_rows = len(panels) + 1
    left, right, top = 46.0, 12.0, 10.0
    bottom = 40.0 + _LEGEND_ROW * legend_rows
    plot_w, plot_h = width - left - right, height - bottom - top
    stated = [
        fppi
        for _, summary in panels
        for fppi, est in summary.sensitivity_at_fppi
        if est is not None
    ]
    x_high, x_ticks = _nice_top(
        max([*(s.nlf[-1] for _, s in panels if s.nlf), *stated], default=1.0)
    )

    def x_of(v: float) -> float:
        return left + min(max(v, 0.0), x_high) / x_high * plot_w

    def y_of(v: float) -> float:
        return bottom + min(max(v, 0.0), 1.0) * plot_h

    _frame_axes(
        drawing,
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_ticks=x_ticks,
        y_ticks=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        x_of=x_of,
        y_of=y_of,
    )
    colours = [SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(len(panels))]
    # every band first, so that no band hides another candidate's line
    for colour, (_, summary) in zip(colours, panels, strict=True):
        if len(summary.nlf) < 2:
            continue
        band: list[float] = []
        for x, y in zip(summary.nlf, summary.upper, strict=True):
            band.extend((x_of(x), y_of(y)))
        for x, y in zip(reversed(summary.nlf), reversed(summary.lower), strict=True):
            band.extend((x_of(x), y_of(y)))
        drawing.add(Polygon(band, fillColor=_tinted(colour, 0.2), strokeColor=None, strokeWidth=0))
    for colour, (_, summary) in zip(colours, panels, strict=True):
        points = list(zip(summary.nlf, summary.llf, strict=True))
        if points and points[0] != (0.0, 0.0):
            points.insert(0, (0.0, 0.0))  # as RJafroc's FROCPoints: the curve starts at (0, 0)
        if len(points) >= 2:
            line = [c for x, y in points for c in (x_of(x), y_of(y))]
            drawing.add(PolyLine(line, strokeColor=colour, strokeWidth=1.4))
        beyond = [f for f, est in summary.sensitivity_at_fppi if est is not None]
        if points and beyond and max(beyond) > points[-1][0]:
            # a stated FP/image past the most lenient threshold keeps that threshold's LLF
            end_x, end_y = points[-1]
            drawing.add(
                Line(
                    x_of(end_x),
                    y_of(end_y),
                    x_of(max(beyond)),
                    y_of(end_y),
                    strokeColor=colour,
                    strokeWidth=0.8,
                    strokeDashArray=[1.5, 2],
                )
            )
    for index, (colour, (_, summary)) in enumerate(zip(colours, panels, strict=True)):
        # candidates' markers at the same FP/image are set side by side, not on each other
        dodge = (index - (len(panels) - 1) / 2) * 4.0
        for fppi, est in summary.sensitivity_at_fppi:
            if est is None:
                continue
            x, y = x_of(fppi) + dodge, y_of(est.value)
            low, high = y_of(est.ci_low), y_of(est.ci_high)
            drawing.add(Line(x, low, x, high, strokeColor=colour, strokeWidth=0.8))
            drawing.add(Line(x - 2.5, low, x + 2.5, low, strokeColor=colour, strokeWidth=0.8))
            drawing.add(Line(x - 2.5, high, x + 2.5, high, strokeColor=colour, strokeWidth=0.8))
            drawing.add(
                Rect(
                    x - 2.5,
                    y - 2.5,
                    5,
                    5,
                    fillColor=colour,
                    strokeColor=colors.white,
                    strokeWidth=0.5,
                )
            )
    _axis_labels(
        drawing,
        "Non-lesion marks per image",
        "Lesion localisation fraction",
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_label_at=bottom - 25,
        y_label_at=12,
    )
    lx, ly = 8.0, bottom - 39
    for index, (colour, (name, summary)) in enumerate(zip(colours, panels, strict=True)):
        _legend_line(
            drawing,
            lx,
            ly - _LEGEND_ROW * index,
            colour,
            name,
            f" ({summary.n_lesions} lesions, {summary.n_cases} cases)",
            max_width=width - lx - 4,
            marker=bool(summary.sensitivity_at_fppi),
        )
    y = ly - _LEGEND_ROW * len(panels)
    level = format_level(panels[0][1].level) if panels else "95%"
    drawing.add(
        Rect(lx, y - 3.5, 16, 7, fillColor=_tinted(SERIES_COLOURS[0], 0.2), strokeColor=None)
    )
    drawing.add(
        String(lx + 20, y - 2.5, f"{level} pointwise band", fontName=SANS, fontSize=_TICK_FONT)
    )
    mx = lx + 20 + stringWidth(f"{level} pointwise band", SANS, _TICK_FONT) + 14
    drawing.add(Line(mx + 2.5, y - 4.5, mx + 2.5, y + 4.5, strokeColor=MUTED, strokeWidth=0.8))
    drawing.add(Rect(mx, y - 2.5, 5, 5, fillColor=MUTED, strokeColor=colors.white, strokeWidth=0.5))
    drawing.add(
        String(
            mx + 9,
            y - 2.5,
            _fit_width("sensitivity at stated FP/image, CI", "", width - mx - 13, SANS, _TICK_FONT),
            fontName=SANS,
            fontSize=_TICK_FONT,
        )
    )
    return drawing


def _wafroc_points(summary: FrocSummary) -> list[tuple[float, float]]:
    """The empirical wAFROC curve: (0, 0), the operating points, then (1, 1).

    RJafroc draws the segment from the most lenient operating point to (1, 1) as part of
    the curve (``wAFROCPoints`` in ``R/PlotEmpiricalOperatingCharacteristics.R``: ``FPF <-
    c(0, FPF, 1); wLLF <- c(0, wLLF, 1)``); the area under this polyline is the wAFROC
    figure of merit, because unmarked lesions and normal cases without marks tie at the
    lowest rating.
    """
    points = list(zip(summary.fpf, summary.wllf, strict=True))
    if not points or points[0] != (0.0, 0.0):
        points.insert(0, (0.0, 0.0))
    if points[-1] != (1.0, 1.0):
        points.append((1.0, 1.0))
    return points


def wafroc_figure(
    panels: Sequence[tuple[str, FrocSummary]], *, width: float = 300, height: float = 280
) -> Drawing:
    """Empirical wAFROC curves: weighted lesion localisation fraction against FPF.

    The operating points (false-positive fraction on non-diseased cases, weighted LLF
    on diseased cases) are joined by straight lines from (0, 0) and continued to (1, 1),
    as RJafroc draws them; the area under each curve is the wAFROC figure of merit
    (Chakraborty 2017, ch. 13), printed with its CI in the legend. There is no chance
    diagonal: a reader who marks nothing has area 0.5 only by the tie rule, not by chance.

    Parameters
    ----------
    panels : sequence of (str, FrocSummary)
        The candidate's name (legend label) and its summary, in drawing order.
    width, height : float
        Size of the drawing in points.

    Returns
    -------
    Drawing
    """
    register_fonts()
    drawing = _drawing(width, height)
    left, right, top = 46.0, 12.0, 10.0
    bottom = 40.0 + _LEGEND_ROW * len(panels)
    plot_w, plot_h = width - left - right, height - bottom - top

    def x_of(v: float) -> float:
        return left + min(max(v, 0.0), 1.0) * plot_w

    def y_of(v: float) -> float:
        return bottom + min(max(v, 0.0), 1.0) * plot_h

    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    _frame_axes(
        drawing,
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_ticks=ticks,
        y_ticks=ticks,
        x_of=x_of,
        y_of=y_of,
    )
    colours = [SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(len(panels))]
    for colour, (_, summary) in zip(colours, panels, strict=True):
        points = _wafroc_points(summary)
        drawing.add(
            PolyLine(
                [c for x, y in points for c in (x_of(x), y_of(y))],
                strokeColor=colour,
                strokeWidth=1.4,
            )
        )
        # operating points are shown while few enough to read (RJafroc's maxDiscrete idea)
        if len(summary.fpf) <= 20:
            for x, y in zip(summary.fpf, summary.wllf, strict=True):
                drawing.add(
                    Circle(
                        x_of(x),
                        y_of(y),
                        1.8,
                        fillColor=colour,
                        strokeColor=colors.white,
                        strokeWidth=0.4,
                    )
                )
    _axis_labels(
        drawing,
        "False-positive fraction (non-diseased cases)",
        "Weighted lesion localisation fraction",
        left=left,
        bottom=bottom,
        plot_w=plot_w,
        plot_h=plot_h,
        x_label_at=bottom - 25,
        y_label_at=12,
    )
    lx, ly = 8.0, bottom - 39
    for index, (colour, (name, summary)) in enumerate(zip(colours, panels, strict=True)):
        _legend_line(
            drawing,
            lx,
            ly - _LEGEND_ROW * index,
            colour,
            name,
            f": wAFROC AUC {_estimate_text(summary.wafroc)}",
            max_width=width - lx - 4,
        )
    return drawing

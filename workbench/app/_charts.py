"""Plotly figures of stored results. They draw the typed results; they compute nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from workbench.protocols.results import (
    CalibrationSummary,
    DecisionCurveSummary,
    EndpointResult,
    FrocSummary,
    RocSummary,
    StratumResult,
)
from workbench.reports.formatting import format_with_interval
from workbench.stats import Estimate
from workbench.vocabulary import Verdict

__all__ = [
    "decision_curve_figure",
    "decision_curve_table",
    "distribution_figure",
    "forest_figure",
    "froc_figure",
    "reliability_figure",
    "roc_figure",
    "wafroc_figure",
]

_VERDICT_COLOURS = {
    Verdict.PASS: "#1a7f37",
    Verdict.FAIL: "#cf222e",
    Verdict.NOT_EVALUABLE: "#bf8700",
    Verdict.NOT_ASSESSED: "#8c959f",
}


def roc_figure(roc: RocSummary) -> go.Figure:
    """ROC curve with its stored confidence band, AUC and operating point.

    Parameters
    ----------
    roc : RocSummary
        From ``RunResults.supplementary.roc``.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fpr, tpr = list(roc.fpr), list(roc.tpr)
    level = roc.level
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=fpr,
            y=list(roc.upper),
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=fpr,
            y=list(roc.lower),
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31, 119, 180, 0.2)",
            name=f"{level:.0%} {roc.band} band",
        )
    )
    auc = roc.auc
    label = f"ROC (AUC {auc.value:.3f}, {auc.level:.0%} CI {auc.ci_low:.3f}-{auc.ci_high:.3f})"
    figure.add_trace(
        go.Scatter(x=fpr, y=tpr, mode="lines", name=label, line={"color": "#1f77b4", "width": 2})
    )
    figure.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line={"dash": "dot", "color": "#8c959f"},
        )
    )
    point = roc.operating_point
    if point is not None:
        figure.add_trace(
            go.Scatter(
                x=[point[0]],
                y=[point[1]],
                mode="markers",
                marker={"size": 12, "color": "#cf222e", "symbol": "x"},
                name=f"operating point (threshold {roc.threshold:g})",
            )
        )
    figure.update_layout(
        xaxis_title="1 - specificity (false-positive rate)",
        yaxis_title="sensitivity (true-positive rate)",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02], "scaleanchor": "x"},
        legend={"orientation": "h", "y": -0.25},
        height=520,
        margin={"t": 30},
    )
    return figure


def _row(
    label: str, estimate: Estimate | None, verdict: Verdict, reason: str
) -> tuple[str, float | None, float | None, float | None, Verdict, str]:
    if estimate is None:
        return label, None, None, None, verdict, reason
    return label, estimate.value, estimate.ci_low, estimate.ci_high, verdict, reason


def forest_figure(
    endpoint: EndpointResult,
    strata: Sequence[StratumResult],
    *,
    threshold: float | None,
    title: str,
) -> go.Figure:
    """Forest plot: the overall estimate and each stratum with its CI and the acceptance line.

    Parameters
    ----------
    endpoint : EndpointResult
        Its overall estimate is the first row.
    strata : sequence of StratumResult
        The strata to draw (usually those of one factor).
    threshold : float or None
        The acceptance criterion's threshold, drawn as a dashed line.
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
        Markers coloured by verdict; a stratum without an estimate is listed with
        its status and reason in the hover text.
    """
    rows = [
        _row(
            f"overall: all cases (n={endpoint.n_cases})",
            endpoint.estimate,
            endpoint.overall_verdict,
            endpoint.reason,
        ),
        *(
            _row(
                f"{s.factor}: {s.stratum} (n={s.n})",
                s.estimate,
                s.verdict,
                s.reason or ("" if s.estimate is not None else s.status.value.replace("_", " ")),
            )
            for s in strata
        ),
    ]
    labels = [r[0] for r in rows]
    values = [r[1] for r in rows]
    lows = [None if v is None or lo is None else v - lo for _, v, lo, _, _, _ in rows]
    highs = [None if v is None or hi is None else hi - v for _, v, _, hi, _, _ in rows]
    colours = [_VERDICT_COLOURS[r[4]] for r in rows]
    texts = [r[4].label + (f" - {r[5]}" if r[5] else "") for r in rows]
    figure = go.Figure(
        go.Scatter(
            x=values,
            y=labels,
            mode="markers",
            marker={"size": 11, "color": colours, "symbol": "square"},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": highs,
                "arrayminus": lows,
                "color": "#57606a",
            },
            text=texts,
            hovertemplate="%{y}<br>%{x:.3f}<br>%{text}<extra></extra>",
            showlegend=False,
        )
    )
    if threshold is not None:
        figure.add_vline(
            x=threshold,
            line={"color": "#cf222e", "dash": "dash"},
            annotation_text=f"acceptance {threshold:g}",
            annotation_position="top",
        )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(
        title=title,
        height=140 + 36 * len(rows),
        xaxis_title=endpoint.metric,
        margin={"l": 10, "t": 60},
    )
    return figure


def distribution_figure(
    distributions: Sequence[tuple[str, Sequence[float]]], *, metric: str
) -> go.Figure:
    """Box plots of the per-case metric by scanner (points shown for small groups).

    Parameters
    ----------
    distributions : sequence of (str, sequence of float)
        ``RunResults.supplementary.distributions``: per scanner, the per-case values.
    metric : str
        The metric's name, for the axis.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    figure = go.Figure()
    for level, values in distributions:
        figure.add_trace(
            go.Box(
                y=list(values),
                name=f"{level} (n={len(values)})",
                boxpoints="all" if len(values) <= 200 else "outliers",
                jitter=0.4,
                pointpos=0,
            )
        )
    figure.update_layout(yaxis_title=metric, showlegend=False, height=460, margin={"t": 30})
    return figure


def reliability_figure(panels: Sequence[CalibrationSummary]) -> go.Figure:
    """Reliability diagram: observed fraction per bin (Wilson CI) and the smoothed curve.

    One colour per panel (overall, then each stratum); the diagonal is perfect calibration.
    """
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dot", "color": "#8c959f"},
            name="perfect calibration",
        )
    )
    for panel in panels:
        label = "overall" if panel.factor in ("", "overall") else f"{panel.factor}: {panel.stratum}"
        bins = [b for b in panel.reliability if b.n > 0]
        fig.add_trace(
            go.Scatter(
                x=[b.mean_predicted for b in bins],
                y=[b.observed for b in bins],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [b.observed_ci_high - b.observed for b in bins],
                    "arrayminus": [b.observed - b.observed_ci_low for b in bins],
                },
                mode="markers",
                name=f"{label} (n={panel.n}, bins)",
                text=[f"n={b.n}" for b in bins],
            )
        )
        if panel.curve_predicted:
            fig.add_trace(
                go.Scatter(
                    x=list(panel.curve_predicted),
                    y=list(panel.curve_observed),
                    mode="lines",
                    name=f"{label}, smoothed",
                )
            )
    fig.update_layout(
        xaxis_title="predicted probability",
        yaxis_title="observed fraction",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        height=460,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig


def decision_curve_figure(curve: DecisionCurveSummary) -> go.Figure:
    """Net benefit of the model, treat-all and treat-none over the threshold probabilities."""
    x = list(curve.thresholds)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=[v if v is not None else None for v in curve.net_benefit_high]
            + [v if v is not None else None for v in curve.net_benefit_low][::-1],
            fill="toself",
            line={"width": 0},
            fillcolor="rgba(31, 119, 180, 0.18)",
            name=f"model, {curve.level:.0%} band",
            hoverinfo="skip",
        )
    )
    fig.add_trace(go.Scatter(x=x, y=list(curve.net_benefit), mode="lines", name="model"))
    fig.add_trace(go.Scatter(x=x, y=list(curve.treat_all), mode="lines", name="treat all"))
    fig.add_trace(
        go.Scatter(x=x, y=[0.0] * len(x), mode="lines", name="treat none", line={"dash": "dot"})
    )
    if curve.criterion_at is not None:
        fig.add_vline(x=curve.criterion_at, line_dash="dash", line_color="#8c959f")
    low = min((v for v in curve.net_benefit if v is not None), default=0.0)
    fig.update_layout(
        xaxis_title="threshold probability",
        yaxis_title="net benefit",
        yaxis_range=[min(low, 0.0) - 0.05, max(curve.prevalence, 0.05) + 0.05],
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig


#: Line colours of the candidates in the detection charts (plotly's first series colours).
_SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def _rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _ci_text(estimate: Estimate | None) -> str:
    if estimate is None:
        return "not estimable"
    return (
        f"{estimate.value:.3f} ({estimate.level:.0%} CI {estimate.ci_low:.3f}-"
        f"{estimate.ci_high:.3f})"
    )


def froc_figure(panels: Sequence[tuple[str, FrocSummary]]) -> go.Figure:
    """FROC curves: lesion localisation fraction against non-lesion marks per image.

    Parameters
    ----------
    panels : sequence of (str, FrocSummary)
        The candidate's name and its stored summary (``RunResults.froc``).

    Returns
    -------
    plotly.graph_objects.Figure
        Per candidate: its pointwise band (shaded), the curve from (0, 0) with the
        thresholds' NLF and LLF in the hover text, and the sensitivity at each stated
        number of false positives per image with its CI.
    """
    fig = go.Figure()
    for index, (name, summary) in enumerate(panels):
        colour = _SERIES[index % len(_SERIES)]
        nlf, llf = list(summary.nlf), list(summary.llf)
        fig.add_trace(
            go.Scatter(
                x=nlf + nlf[::-1],
                y=list(summary.upper) + list(summary.lower)[::-1],
                fill="toself",
                line={"width": 0},
                fillcolor=_rgba(colour, 0.18),
                name=f"{name}, {summary.level:.0%} band",
                hoverinfo="skip",
                legendgroup=name,
            )
        )
        if nlf and (nlf[0], llf[0]) != (0.0, 0.0):
            nlf, llf = [0.0, *nlf], [0.0, *llf]
        fig.add_trace(
            go.Scatter(
                x=nlf,
                y=llf,
                mode="lines",
                line={"color": colour, "width": 2, "shape": "hv"},
                name=f"{name} ({summary.n_lesions} lesions, {summary.n_cases} cases)",
                hovertemplate="NL marks per image %{x:.3f}<br>LLF %{y:.3f}<extra>"
                + name
                + "</extra>",
                legendgroup=name,
            )
        )
        stated = [(f, e) for f, e in summary.sensitivity_at_fppi if e is not None]
        if stated:
            fig.add_trace(
                go.Scatter(
                    x=[f for f, _ in stated],
                    y=[e.value for _, e in stated],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [e.ci_high - e.value for _, e in stated],
                        "arrayminus": [e.value - e.ci_low for _, e in stated],
                        "color": colour,
                    },
                    mode="markers",
                    marker={"size": 10, "color": colour, "symbol": "square"},
                    name=f"{name}, sensitivity at stated FP/image",
                    text=[f"sensitivity at {f:g} FP/image: {_ci_text(e)}" for f, e in stated],
                    hovertemplate="%{text}<extra>" + name + "</extra>",
                    legendgroup=name,
                )
            )
    fig.update_layout(
        xaxis_title="non-lesion marks per image",
        yaxis_title="lesion localisation fraction",
        xaxis={"rangemode": "tozero"},
        yaxis={"range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.25},
        height=520,
        margin={"t": 30},
    )
    return fig


def wafroc_figure(panels: Sequence[tuple[str, FrocSummary]]) -> go.Figure:
    """Empirical wAFROC curves with the wAFROC figure of merit and its CI in the legend.

    Parameters
    ----------
    panels : sequence of (str, FrocSummary)
        The candidate's name and its stored summary (``RunResults.froc``).

    Returns
    -------
    plotly.graph_objects.Figure
        Per candidate, the operating points (FPF, wLLF) joined from (0, 0) and continued
        to (1, 1), as RJafroc draws the curve whose area is the figure of merit; no chance
        line.
    """
    fig = go.Figure()
    for index, (name, summary) in enumerate(panels):
        colour = _SERIES[index % len(_SERIES)]
        x, y = list(summary.fpf), list(summary.wllf)
        if not x or (x[0], y[0]) != (0.0, 0.0):
            x, y = [0.0, *x], [0.0, *y]
        if (x[-1], y[-1]) != (1.0, 1.0):
            x, y = [*x, 1.0], [*y, 1.0]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers" if len(summary.fpf) <= 20 else "lines",
                line={"color": colour, "width": 2},
                marker={"size": 6},
                name=f"{name}: wAFROC {_ci_text(summary.wafroc)}",
                hovertemplate="FPF %{x:.3f}<br>wLLF %{y:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        xaxis_title="false-positive fraction (non-diseased cases)",
        yaxis_title="weighted lesion localisation fraction",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02], "scaleanchor": "x"},
        legend={"orientation": "h", "y": -0.25},
        height=520,
        margin={"t": 30},
    )
    return fig


def decision_curve_table(curve: DecisionCurveSummary, *, every: float = 0.05) -> pd.DataFrame:
    """The decision curve as a table: net benefit and interventions avoided per threshold.

    Parameters
    ----------
    curve : DecisionCurveSummary
    every : float, default 0.05
        Spacing of the thresholds shown (the curve's own grid is finer); the
        threshold at which the protocol judges net benefit is always shown.

    Returns
    -------
    pandas.DataFrame
        One row per threshold probability: the model's net benefit, treat-all's, and
        the net interventions avoided per 100 patients, each with its interval.
    """
    cell = format_with_interval

    rows = []
    for i in curve.tabulated(every):
        rows.append(
            {
                "threshold": round(curve.thresholds[i], 4),
                "model net benefit": cell(
                    curve.net_benefit[i], curve.net_benefit_low[i], curve.net_benefit_high[i]
                ),
                "treat all": cell(
                    curve.treat_all[i], curve.treat_all_low[i], curve.treat_all_high[i]
                ),
                "interventions avoided per 100": cell(
                    curve.interventions_avoided[i],
                    curve.interventions_avoided_low[i],
                    curve.interventions_avoided_high[i],
                ),
                "judged here": "yes" if curve.judged_at(i) else "",
            }
        )
    return pd.DataFrame(rows)

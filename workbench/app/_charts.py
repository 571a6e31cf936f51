"""Plotly figures of stored results. They draw numbers; they compute none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

__all__ = ["roc_figure", "forest_figure", "distribution_figure"]

_VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "NOT_ASSESSED": "#8c959f"}


def roc_figure(roc: Mapping[str, Any]) -> go.Figure:
    """ROC curve with its stored confidence band and operating point."""
    fpr, tpr = list(roc["fpr"]), list(roc["tpr"])
    level = float(roc.get("level", 0.95))
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=fpr,
            y=list(roc["upper"]),
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=fpr,
            y=list(roc["lower"]),
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31, 119, 180, 0.2)",
            name=f"{level:.0%} {roc.get('band', 'confidence')} band",
        )
    )
    auc = roc.get("auc", {})
    label = "ROC"
    if auc.get("value") is not None:
        low, high = auc.get("ci_low", float("nan")), auc.get("ci_high", float("nan"))
        label = f"ROC (AUC {auc['value']:.3f}, {level:.0%} CI {low:.3f}-{high:.3f})"
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
    point = roc.get("operating_point")
    if point:
        figure.add_trace(
            go.Scatter(
                x=[point[0]],
                y=[point[1]],
                mode="markers",
                marker={"size": 12, "color": "#cf222e", "symbol": "x"},
                name=f"operating point (threshold {roc.get('threshold', '')})",
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


def forest_figure(
    endpoint: Mapping[str, Any],
    strata: Sequence[Mapping[str, Any]],
    *,
    threshold: float | None,
    title: str,
) -> go.Figure:
    """Forest plot: overall estimate and each stratum with its CI and the acceptance line."""
    labels, values, lows, highs, colours, texts = [], [], [], [], [], []
    estimate = endpoint.get("estimate") or {}
    rows = [
        {
            "factor": "overall",
            "stratum": "all cases",
            "n": estimate.get("n"),
            "value": estimate.get("value"),
            "ci_low": estimate.get("ci_low"),
            "ci_high": estimate.get("ci_high"),
            "verdict": endpoint.get("overall_verdict") or endpoint.get("verdict"),
            "reason": endpoint.get("reason", ""),
        },
        *strata,
    ]
    for row in rows:
        labels.append(f"{row['factor']}: {row['stratum']} (n={row.get('n')})")
        value = row.get("value")
        values.append(value)
        lows.append(None if value is None or row.get("ci_low") is None else value - row["ci_low"])
        highs.append(
            None if value is None or row.get("ci_high") is None else row["ci_high"] - value
        )
        verdict = str(row.get("verdict") or "NOT_ASSESSED")
        colours.append(_VERDICT_COLOURS.get(verdict, "#8c959f"))
        texts.append(f"{verdict}" + (f" - {row['reason']}" if row.get("reason") else ""))
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
        xaxis_title=str(endpoint.get("metric", "")),
        margin={"l": 10, "t": 60},
    )
    return figure


def distribution_figure(distributions: Mapping[str, Sequence[float]], *, metric: str) -> go.Figure:
    """Box plots of the per-case metric by scanner (points shown for small groups)."""
    figure = go.Figure()
    for level, values in distributions.items():
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

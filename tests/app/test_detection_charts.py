"""Plotly FROC and wAFROC charts of the results page, from statistics on RJafroc's data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.reports.froc_summaries import froc_summary, load_reader
from workbench.app._charts import froc_figure, wafroc_figure
from workbench.protocols.results import FrocSummary


@pytest.fixture(scope="module")
def panels() -> list[tuple[str, FrocSummary]]:
    return [
        ("M4 R1", froc_summary(*load_reader("dataset04", 4, 1))),
        ("M1 R1 (ds05)", froc_summary(*load_reader("dataset05", 1, 1), fppi=(0.5, 1.0))),
    ]


def test_froc_chart_has_band_curve_and_stated_points(
    panels: list[tuple[str, FrocSummary]],
) -> None:
    fig = froc_figure(panels)
    assert len(fig.data) == 6  # band, curve, stated points per candidate
    for i, (name, summary) in enumerate(panels):
        band, curve, stated = fig.data[3 * i : 3 * i + 3]
        assert band.fill == "toself" and band.hoverinfo == "skip"
        assert list(band.y) == [*summary.upper, *summary.lower[::-1]]
        assert curve.name == f"{name} ({summary.n_lesions} lesions, {summary.n_cases} cases)"
        assert (curve.x[0], curve.y[0]) == (0.0, 0.0)
        np.testing.assert_allclose(curve.y[-len(summary.llf) :], summary.llf)
        assert "LLF %{y:.3f}" in curve.hovertemplate
        assert list(stated.x) == [f for f, _ in summary.sensitivity_at_fppi]
        for (fppi, est), y, up, down, text in zip(
            summary.sensitivity_at_fppi,
            stated.y,
            stated.error_y.array,
            stated.error_y.arrayminus,
            stated.text,
            strict=True,
        ):
            assert est is not None
            assert y == est.value
            assert y + up == pytest.approx(est.ci_high) and y - down == pytest.approx(est.ci_low)
            assert text == (
                f"sensitivity at {fppi:g} FP/image: {est.value:.3f} (95% CI "
                f"{est.ci_low:.3f}-{est.ci_high:.3f})"
            )
    assert fig.layout.xaxis.title.text == "non-lesion marks per image"
    assert fig.layout.yaxis.title.text == "lesion localisation fraction"


def test_wafroc_chart_runs_from_origin_to_one_one_with_the_fom_in_the_legend(
    panels: list[tuple[str, FrocSummary]],
) -> None:
    fig = wafroc_figure(panels)
    assert len(fig.data) == 2
    for trace, (name, summary) in zip(fig.data, panels, strict=True):
        assert summary.wafroc is not None
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        assert (x[0], y[0]) == (0, 0) and (x[-1], y[-1]) == (1, 1)
        np.testing.assert_allclose(x[1:-1], summary.fpf)
        np.testing.assert_allclose(y[1:-1], summary.wllf)
        # the drawn curve's area is the stored figure of merit
        assert float(np.trapezoid(y, x)) == pytest.approx(summary.wafroc.value)
        assert trace.name.startswith(f"{name}: wAFROC {summary.wafroc.value:.3f} (95% CI ")
        assert "wLLF %{y:.3f}" in trace.hovertemplate
    assert not any("chance" in str(t.name) for t in fig.data)


def test_charts_without_estimates(panels: list[tuple[str, FrocSummary]]) -> None:
    _, summary = panels[0]
    bare = dataclasses.replace(summary, wafroc=None, sensitivity_at_fppi=((1.0, None),))
    assert len(froc_figure([("AI", bare)]).data) == 2  # no stated points to draw
    assert wafroc_figure([("AI", bare)]).data[0].name == "AI: wAFROC not estimable"
    assert not froc_figure([]).data and not wafroc_figure([]).data

"""FROC and wAFROC figures of the report, drawn from statistics on RJafroc's data sets."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reportlab.graphics import renderPDF
from reportlab.graphics.shapes import Drawing, Group, Polygon, PolyLine, Rect, String
from reportlab.pdfbase.pdfmetrics import stringWidth

from tests.reports.froc_summaries import froc_summary, load_reader
from workbench.protocols.results import FrocSummary
from workbench.reports._style import RULE, SERIES_COLOURS
from workbench.reports.figures import froc_figure, wafroc_figure
from workbench.stats import froc_figure_of_merit

# RJafroc's wAFROC of dataset04, modality 4 and 5, reader 1: Chakraborty (2017) ch. 18
# supplement, onlinebookk21778@6f75f48 Ch18/software/FEDwAfroc.xlsx, sheet FOMs (as in
# tests/stats/test_froc.py)
PUBLISHED_WAFROC = {4: 0.8101333333333114, 5: 0.7487999999999896}


@pytest.fixture(scope="module")
def panels() -> list[tuple[str, FrocSummary]]:
    return [
        (f"Modality {m}, reader 1", froc_summary(*load_reader("dataset04", m, 1))) for m in (4, 5)
    ]


def _walk(node: object) -> list[object]:
    if isinstance(node, Group) or hasattr(node, "contents"):
        return [n for child in node.contents for n in _walk(child)]  # type: ignore[attr-defined]
    return [node]


def _strings(drawing: Drawing) -> list[String]:
    return [n for n in _walk(drawing) if isinstance(n, String)]


def _frame(drawing: Drawing) -> Rect:
    """The plot frame: the one unfilled rectangle in the rule colour."""
    (frame,) = [
        n
        for n in _walk(drawing)
        if isinstance(n, Rect) and n.strokeColor == RULE and n.fillColor is None
    ]
    return frame


def _rasterise(drawing: Drawing, out: Path) -> np.ndarray:
    """The drawing in a one-page PDF, rasterised by poppler (what a reader sees)."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    pdf = out.with_suffix(".pdf")
    renderPDF.drawToFile(drawing, str(pdf))
    subprocess.run(
        ["pdftoppm", "-png", "-r", "150", "-singlefile", str(pdf), str(out.with_suffix(""))],
        check=True,
    )
    return np.asarray(Image.open(out.with_suffix(".png")).convert("RGB"))


def _has_colour(image: np.ndarray, colour: object, tolerance: int = 12) -> bool:
    rgb = np.array([colour.red, colour.green, colour.blue]) * 255  # type: ignore[attr-defined]
    return bool((np.abs(image.astype(int) - rgb).max(axis=-1) <= tolerance).any())


def test_froc_figure_has_axes_bands_markers_and_a_legend_below_the_plot(
    panels: list[tuple[str, FrocSummary]], tmp_path: Path
) -> None:
    drawing = froc_figure(panels)
    texts = [s.text for s in _strings(drawing)]
    assert "Non-lesion marks per image" in texts
    assert "Lesion localisation fraction" in texts
    assert "Modality 4, reader 1 (142 lesions, 200 cases)" in texts
    assert "95% pointwise band" in texts
    bands = [n for n in _walk(drawing) if isinstance(n, Polygon)]
    assert len(bands) == 2
    frame = _frame(drawing)
    # curves start at (0, 0) and reach each panel's last LLF
    lines = [n for n in _walk(drawing) if isinstance(n, PolyLine) and n.strokeWidth == 1.4]
    assert len(lines) == 2
    for line, (_, summary) in zip(lines, panels, strict=True):
        assert line.points[:2] == [frame.x, frame.y]
        top = (line.points[-1] - frame.y) / frame.height
        assert top == pytest.approx(summary.llf[-1])
    # the x axis reaches the largest stated FP/image (1.0), beyond both curves' ends
    ticks = [s for s in _strings(drawing) if s.textAnchor == "middle" and s.y < frame.y]
    assert "1.0" in {s.text for s in ticks}
    # one marker per stated FP/image and panel, at the sensitivity
    markers = [
        n
        for n in _walk(drawing)
        if isinstance(n, Rect) and n.width == 5 and n.fillColor in SERIES_COLOURS[:2]
    ]
    n_stated = sum(len(s.sensitivity_at_fppi) for _, s in panels)
    assert len(markers) == n_stated + 2  # + the legend's two swatch markers
    # the legend and the axis label sit below the tick labels: nothing covers the plot
    legend = [s for s in _strings(drawing) if s.text.startswith(("Modality", "95%"))]
    assert all(s.y < frame.y - 20 for s in legend)
    for s in _strings(drawing):
        assert s.x + stringWidth(s.text, s.fontName, s.fontSize) <= drawing.width + 1e-6 or (
            s.textAnchor != "start"
        )
    image = _rasterise(drawing, tmp_path / "froc.png")
    assert image.shape[1] > 500 and image.shape[0] > 500
    assert _has_colour(image, SERIES_COLOURS[0]) and _has_colour(image, SERIES_COLOURS[1])


def test_wafroc_curve_area_is_rjafrocs_figure_of_merit(
    panels: list[tuple[str, FrocSummary]], tmp_path: Path
) -> None:
    drawing = wafroc_figure(panels)
    frame = _frame(drawing)
    lines = [n for n in _walk(drawing) if isinstance(n, PolyLine)]
    assert len(lines) == 2
    for modality, line, (_, summary) in zip((4, 5), lines, panels, strict=True):
        xy = np.asarray(line.points).reshape(-1, 2)
        x = (xy[:, 0] - frame.x) / frame.width
        y = (xy[:, 1] - frame.y) / frame.height
        # from (0, 0) to (1, 1), as RJafroc's wAFROCPoints: the area is the FOM
        assert (x[0], y[0]) == pytest.approx((0, 0)) and (x[-1], y[-1]) == pytest.approx((1, 1))
        area = float(np.trapezoid(y, x))
        assert area == pytest.approx(PUBLISHED_WAFROC[modality], abs=1e-9)
        marks, truth = load_reader("dataset04", modality, 1)
        assert area == pytest.approx(froc_figure_of_merit(marks, truth, fom="wafroc"))
        assert summary.wafroc is not None
        assert area == pytest.approx(summary.wafroc.value)
    texts = [s.text for s in _strings(drawing)]
    assert "False-positive fraction (non-diseased cases)" in texts
    assert "Weighted lesion localisation fraction" in texts
    wafroc4 = panels[0][1].wafroc
    assert wafroc4 is not None
    assert (
        f"Modality 4, reader 1: wAFROC AUC 0.810 (95% CI {wafroc4.ci_low:.3f} to "
        f"{wafroc4.ci_high:.3f})"
    ) in texts
    assert not any("chance" in t for t in texts)
    image = _rasterise(drawing, tmp_path / "wafroc.png")
    assert _has_colour(image, SERIES_COLOURS[0]) and _has_colour(image, SERIES_COLOURS[1])


def test_figures_draw_what_is_not_estimable(panels: list[tuple[str, FrocSummary]]) -> None:
    _, summary = panels[0]
    bare = dataclasses.replace(summary, wafroc=None, sensitivity_at_fppi=((1.0, None),))
    long_name = "A candidate with a very long name that would run off the page " * 2
    texts = [s.text for s in _strings(wafroc_figure([(long_name, bare)]))]
    legend = next(t for t in texts if t.startswith("A candidate"))
    # the name is shortened, never the figure of merit after it
    assert legend.endswith("\u2026: wAFROC AUC not estimable")
    assert stringWidth(legend, "WorkbenchSans", 7) < 300 - 8 - 20
    short = [s.text for s in _strings(wafroc_figure([("AI", bare)]))]
    assert "AI: wAFROC AUC not estimable" in short
    drawing = froc_figure([("AI", bare)])
    markers = [n for n in _walk(drawing) if isinstance(n, Rect) and n.width == 5]
    assert len(markers) == 2  # the legend's swatches only: no sensitivity to mark
    assert froc_figure([]).width == 300 and wafroc_figure([]).width == 300

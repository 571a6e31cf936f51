"""Figures drawn into the validation report."""

from __future__ import annotations

from reportlab.graphics.shapes import Group, String
from reportlab.pdfbase.pdfmetrics import stringWidth

from workbench.reports.content import MetricResult, ReportEstimate, StratumEstimate
from workbench.reports.figures import forest_plot


def _strings(node: object) -> list[String]:
    if isinstance(node, String):
        return [node]
    if isinstance(node, Group) or hasattr(node, "contents"):
        return [s for child in node.contents for s in _strings(child)]  # type: ignore[attr-defined]
    return []


def test_forest_plot_keeps_stratum_n_when_the_level_name_is_long() -> None:
    long_level = "Meridian Medical Systems International Imaging Division"
    metric = MetricResult(
        "dice",
        "mean Dice",
        ReportEstimate(0.744, 0.666, 0.814, 0.95, "bootstrap", 60),
        (
            StratumEstimate(
                "manufacturer",
                long_level,
                ReportEstimate(0.227, 0.063, 0.421, 0.95, "bootstrap", 12),
            ),
            StratumEstimate("sex", "F", ReportEstimate(0.72, 0.61, 0.82, 0.95, "bootstrap", 29)),
        ),
        0.7,
        ">=",
        3,
    )
    drawing = forest_plot(metric)
    texts = [s.text for s in _strings(drawing)]
    long_label = next(t for t in texts if t.startswith("manufacturer: Meridian"))
    assert long_label.endswith("\u2026 (n=12)")
    assert "sex: F (n=29)" in texts
    # every label stays inside the label column, left of the plot
    label = next(s for s in _strings(drawing) if s.text == long_label)
    assert stringWidth(label.text, label.fontName, label.fontSize) < 185

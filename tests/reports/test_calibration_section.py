"""The calibration and decision-curve section: from a classification run's results to the PDF."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_report_content, pdf_text

from workbench.protocols import evaluate_endpoints, load_protocol
from workbench.protocols.results import (
    CaseAccounting,
    RunContext,
    RunResults,
    SupplementaryAnalyses,
)
from workbench.protocols.supplementary import supplementary_analysis
from workbench.reports import build_report
from workbench.reports.content import CalibrationPanel, DecisionCurve, ReportContent
from workbench.reports.figures import decision_curve_figure, reliability_diagram
from workbench.services.report_content import (
    acceptance_rows,
    calibration_section,
    results_section,
)

ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = ROOT / "validation_protocols" / "malignancy-classification-v1.yaml"


def demo_like_frame(n: int = 60, seed: int = 1) -> pd.DataFrame:
    """Cases like the demo's: three scanners, the model weaker on one, three readers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        scanner = ("Acme", "Borealis", "Cygnus")[i % 3]
        y = int(rng.uniform() < 0.4)
        shift = 1.2 if scanner == "Cygnus" else 2.2
        score = 1.0 / (1.0 + np.exp(-rng.normal(shift if y else -shift, 1.2)))
        readers = {
            f"reader{k}_malignant": int(y if rng.uniform() < 0.9 else 1 - y) for k in (1, 2, 3)
        }
        rows.append(
            {
                "case_id": f"c{i:03d}",
                "status": "completed",
                "y_true": y,
                "score": float(score),
                "manufacturer": scanner,
                "patient_sex": "MF"[i % 2],
                "patient_age_years": 20 + (i * 7) % 70,
                **readers,
            }
        )
    return pd.DataFrame(rows)


def _run_results(protocol_text: str | Path = CLASSIFICATION) -> RunResults:
    protocol = load_protocol(protocol_text)
    frame = demo_like_frame()
    return RunResults(
        run_uid="run-cal",
        context=RunContext("p", "0" * 64, "m@1", "d", "demo-phantoms", "e"),
        workbench_version="test",
        surface_dice_tolerance_mm=2.0,
        accounting=CaseAccounting(60, 60, 0, 0),
        evaluation=evaluate_endpoints(protocol, frame),
        supplementary=supplementary_analysis(protocol, frame),
    )


@pytest.fixture(scope="module")
def results() -> RunResults:
    return _run_results()


@pytest.fixture(scope="module")
def calibration_content(results: RunResults) -> ReportContent:
    """The fixture report with the results and acceptance sections of a demo-like run."""
    inputs = SimpleNamespace(protocol=load_protocol(CLASSIFICATION), results=results)
    base = make_report_content()
    return dataclasses.replace(
        base,
        results=results_section(inputs),  # type: ignore[arg-type]
        acceptance=acceptance_rows(inputs),  # type: ignore[arg-type]
    )


def test_section_holds_overall_and_per_scanner_calibration(results: RunResults) -> None:
    section = calibration_section(SimpleNamespace(results=results))  # type: ignore[arg-type]
    assert section is not None
    assert [r.group for r in section.rows] == [
        "overall",
        "manufacturer = Acme",
        "manufacturer = Borealis",
        "manufacturer = Cygnus",
    ]
    overall = section.rows[0]
    assert overall.brier.ok and overall.ece.ok and overall.intercept.ok
    assert overall.n == 60
    assert section.panels[0].label == "All cases" and section.panels[0].points
    assert section.decision_curve is not None
    assert section.decision_curve.criterion_at == pytest.approx(0.2)
    assert "score >= 0.5" in section.operating_point


def test_decision_table_holds_interventions_avoided_at_the_judged_threshold(
    results: RunResults,
) -> None:
    section = calibration_section(SimpleNamespace(results=results))  # type: ignore[arg-type]
    assert section is not None and section.decision_curve is not None
    table = section.decision_curve.table
    curve = results.supplementary.decision_curve
    assert curve is not None
    assert [row.threshold for row in table] == [curve.thresholds[i] for i in curve.tabulated()]
    judged = [row for row in table if row.judged]
    assert [row.threshold for row in judged] == [pytest.approx(0.2)]
    at = curve.thresholds.index(judged[0].threshold)
    assert judged[0].avoided == curve.interventions_avoided[at]
    assert (judged[0].avoided_low, judged[0].avoided_high) == (
        curve.interventions_avoided_low[at],
        curve.interventions_avoided_high[at],
    )
    # net interventions avoided per 100: (NB model - NB treat all) x 100 x (1 - p_t) / p_t
    expected = (judged[0].model - judged[0].treat_all) * 100 * (1 - 0.2) / 0.2  # type: ignore[operator]
    assert judged[0].avoided == pytest.approx(expected)


def test_section_round_trips_in_the_content(calibration_content: ReportContent) -> None:
    again = ReportContent.from_dict(calibration_content.to_dict())
    assert again == calibration_content


def test_no_section_without_classification_analyses(results: RunResults) -> None:
    bare = dataclasses.replace(results, supplementary=SupplementaryAnalyses())
    assert calibration_section(SimpleNamespace(results=bare)) is None  # type: ignore[arg-type]


def test_uncalibrated_scores_are_explained(tmp_path: Path) -> None:
    text = CLASSIFICATION.read_text().replace(
        "score_is_probability: true", "score_is_probability: false"
    )
    section = calibration_section(SimpleNamespace(results=_run_results(text)))  # type: ignore[arg-type]
    assert section is not None and not section.rows and section.decision_curve is None
    assert "score_is_probability: false" in section.note


def test_figures_draw_degenerate_inputs() -> None:
    panel = CalibrationPanel(label="empty", n=0, events=0, points=())
    assert reliability_diagram(panel).width > 0
    curve = DecisionCurve(
        thresholds=(0.1, 0.2),
        model=(0.1, 0.05),
        model_low=(None, None),
        model_high=(None, None),
        treat_all=(0.2, -0.5),
        prevalence=0.3,
    )
    assert decision_curve_figure(curve).width > 0


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs pdftotext (poppler-utils)")
def test_report_prints_the_section_and_its_criteria(
    tmp_path: Path, calibration_content: ReportContent
) -> None:
    built = build_report(calibration_content, tmp_path / "report.pdf")
    text = " ".join(pdf_text(built.path).split())
    assert "Calibration and clinical utility" in text
    assert "Decision curve" in text
    assert "Reliability diagrams" in text
    assert "manufacturer = Cygnus" in text
    assert "calibration slope contains 1" in text
    assert "at threshold probability 0.2" in text
    assert "calibration slope per stratum" in text  # forest plot of a two-sided metric
    assert "Net benefit and interventions avoided" in text
    assert "Avoided per 100" in text and "0.2 *" in text

"""The results page of a detection run: FROC and wAFROC tab (AppTest with the services faked).

The seeded workdir of ``test_pages.py`` has no detection run, so the page is run on its
own with the services it calls replaced: the run list and detail, and the cached results,
which carry an FROC summary computed on RJafroc's dataset04 (modality 4, reader 1).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.reports.froc_summaries import froc_summary, load_reader
from workbench.app import _cached, _session
from workbench.protocols import evaluate_endpoints, load_protocol
from workbench.protocols.results import (
    CaseAccounting,
    FrocSummary,
    RunContext,
    RunResults,
)
from workbench.services import views

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "workbench" / "app" / "pages" / "results.py"
PROTOCOL = ROOT / "validation_protocols" / "malignancy-classification-v1.yaml"


class _WithFroc:
    """Stored results plus what a detection run adds (``froc``, ``froc_reason``), for
    :class:`RunResults` of a release that does not have these fields yet."""

    def __init__(self, results: RunResults, froc: FrocSummary | None, reason: str) -> None:
        self._results = results
        self.froc = froc
        self.froc_reason = reason

    def __getattr__(self, name: str) -> Any:
        return getattr(self._results, name)


def _detection(results: RunResults, froc: FrocSummary | None, reason: str = "") -> Any:
    """``results`` as a detection run stores them: with its FROC summary, or the reason."""
    if {"froc", "froc_reason"} <= {f.name for f in dataclasses.fields(RunResults)}:
        return dataclasses.replace(results, froc=froc, froc_reason=reason)  # type: ignore[call-arg]
    return _WithFroc(results, froc, reason)


@pytest.fixture(scope="module")
def results() -> RunResults:
    rng = np.random.default_rng(5)
    n = 40
    y = (np.arange(n) % 3 == 0).astype(int)
    frame = pd.DataFrame(
        {
            "case_id": [f"c{i:02d}" for i in range(n)],
            "status": "completed",
            "y_true": y,
            "score": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1),
            "manufacturer": [("Acme", "Borealis")[i % 2] for i in range(n)],
            "patient_sex": ["MF"[i % 2] for i in range(n)],
            "patient_age_years": [30 + i for i in range(n)],
            **{f"reader{k}_malignant": y for k in (1, 2, 3)},
        }
    )
    return RunResults(
        run_uid="run-det",
        context=RunContext("p", "0" * 64, "det-model@1", "d", "demo-phantoms", "e"),
        workbench_version="test",
        surface_dice_tolerance_mm=2.0,
        accounting=CaseAccounting(n, n, 0, 0),
        evaluation=evaluate_endpoints(load_protocol(PROTOCOL), frame),
    )


@pytest.fixture(scope="module")
def froc() -> FrocSummary:
    return froc_summary(*load_reader("dataset04", 4, 1))


def _page(monkeypatch: pytest.MonkeyPatch, results: Any) -> AppTest:
    summary = SimpleNamespace(
        run_uid="run-det",
        status="completed",
        protocol="lesion-detection@1",
        model="det-model@1",
        test_set="demo-phantoms",
        results_sha256="0" * 64,
        n_discrepancies=0,
    )
    detail = SimpleNamespace(
        summary=summary,
        hidden_reason=None,
        device="cpu",
        finished_at="2026-01-01T00:00:00Z",
        strata_order=[],
        acceptance_thresholds={},
    )
    cases = pd.DataFrame({"case_id": ["c00"], "status": ["completed"]})
    monkeypatch.setattr(_session, "require_page", lambda key: SimpleNamespace(role="qa"))
    monkeypatch.setattr(_session, "workbench", lambda: None)
    monkeypatch.setattr(views, "list_runs", lambda wb, me: [SimpleNamespace(summary=summary)])
    monkeypatch.setattr(views, "run_detail", lambda wb, me, uid: detail)
    monkeypatch.setattr(_cached, "run_results", lambda wb, me, uid, sha: (results, cases))
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_detection_run_shows_froc_and_wafroc(
    monkeypatch: pytest.MonkeyPatch, results: RunResults, froc: FrocSummary
) -> None:
    at = _page(monkeypatch, _detection(results, froc))
    assert "FROC and wAFROC" in [t.label for t in at.tabs]
    titles = [
        json.loads(c.proto.spec)["layout"]["xaxis"]["title"]["text"] for c in at.get("plotly_chart")
    ]
    assert "non-lesion marks per image" in titles
    assert "false-positive fraction (non-diseased cases)" in titles
    (table,) = [d.value for d in at.dataframe if "false positives per image" in d.value.columns]
    assert table["false positives per image"].tolist() == [0.25, 0.5, 1.0]
    expected = [est.value for _, est in froc.sensitivity_at_fppi if est is not None]
    np.testing.assert_allclose(table["estimate"], expected)
    assert [m.value for m in at.metric][-4:] == ["200", "100", "142", str(froc.n_marks)]


def test_runs_without_froc_have_no_detection_tab(
    monkeypatch: pytest.MonkeyPatch, results: RunResults
) -> None:
    at = _page(monkeypatch, results)
    assert "FROC and wAFROC" not in [t.label for t in at.tabs]
    at_none = _page(monkeypatch, _detection(results, None))
    assert "FROC and wAFROC" not in [t.label for t in at_none.tabs]


def test_a_detection_run_without_curves_says_why(
    monkeypatch: pytest.MonkeyPatch, results: RunResults
) -> None:
    at = _page(
        monkeypatch, _detection(results, None, "An FROC curve needs lesions; truth has none.")
    )
    assert "FROC and wAFROC" in [t.label for t in at.tabs]
    assert any("needs lesions" in str(w.value) for w in at.warning)

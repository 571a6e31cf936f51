"""Detection reader studies: the design's detection section and the wAFROC analysis of marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ProtocolError
from workbench.stats import froc_figure_of_merit
from workbench.studies import (
    PrimaryEndpoint,
    RatingScale,
    analyze_marks,
    free_response_truth,
    load_study_design,
    match_reader_marks,
)

BASE = """\
kind: reader_study
id: detection-study
version: 1
title: Lesion marks with and without the model
test_set: {name: phantoms}
truth: {labels_column: has_lesion}
arms:
  - {id: unaided}
  - {id: aided}
readers: [reader.a, reader.b]
washout_days: 0
seed: 3
"""
DETECTION = """\
detection:
  reference: {source: table, table: reference/lesions.csv}
  matching: {rule: center_distance, threshold: 10}
primary_endpoint: wafroc
"""


def _design(extra: str = DETECTION):
    return load_study_design((BASE + extra).encode())[0]


def test_a_detection_design_validates_and_says_what_it_measures() -> None:
    design = _design()
    assert design.reads_marks
    assert design.primary_endpoint is PrimaryEndpoint.WAFROC
    assert design.detection is not None and design.detection.matching.threshold == 10
    assert "reader-averaged wAFROC difference (aided minus unaided)" in design.criterion_text
    assert not _design("").reads_marks
    assert "reader-averaged AUC difference" in _design("").criterion_text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("primary_endpoint: wafroc\n", "add a detection section"),
        (
            DETECTION.replace("primary_endpoint: wafroc", "primary_endpoint: auc_difference"),
            "endpoint is 'wafroc' or 'wafroc1'; found 'auc_difference'",
        ),
        (DETECTION.replace("threshold: 10", "threshold: -2"), "needs threshold a distance > 0"),
        (DETECTION.replace("rule: center_distance", "rule: centre"), "detection.matching.rule"),
        (DETECTION.replace("source: table", "source: lesion_list"), "detection.reference.source"),
        (DETECTION + "analysis: {covariance: delong}\n", "uses the jackknife covariance"),
        (
            DETECTION + "simulation: {separation: [1, 2]}\n",
            "simulated readers give case ratings, not lesion marks",
        ),
        (DETECTION.replace("primary_endpoint: wafroc", "primary_endpoint: froc"), "wafroc1"),
    ],
)
def test_malformed_detection_designs_are_refused_naming_the_field(extra: str, message: str) -> None:
    with pytest.raises(ProtocolError, match="invalid reader-study design") as caught:
        _design(extra)
    assert message in str(caught.value)


def test_a_split_plot_detection_design_validates_like_any_other() -> None:
    design = _design(DETECTION + "design: split_plot\nreader_groups: [[reader.a], [reader.b]]\n")
    assert design.design.value == "split_plot"  # the services refuse to approve it


def test_mark_confidences_are_checked_on_the_scale() -> None:
    assert RatingScale.FIVE_POINT.check_mark(5) == 5.0
    assert RatingScale.PROBABILITY_0_100.check_mark(1) == 1.0
    with pytest.raises(ProtocolError, match="five-point confidence must be 1, 2, 3, 4 or 5"):
        RatingScale.FIVE_POINT.check_mark(0)
    with pytest.raises(ProtocolError, match="a 0 % mark is no mark"):
        RatingScale.PROBABILITY_0_100.check_mark(0)


# --- the analysis -------------------------------------------------------------------------
# Eight cases: c1..c4 lesion-free, c5..c8 with one lesion each at (10 k, 0, 0) mm.
CASES = [f"c{k}" for k in range(1, 9)]
LESIONS = pd.DataFrame(
    {
        "case_id": [f"c{k}" for k in range(5, 9)],
        "lesion_id": ["L1"] * 4,
        "x": [50.0, 60.0, 70.0, 80.0],
        "y": [0.0] * 4,
        "z": [0.0] * 4,
        "diameter": [8.0] * 4,
        "lesion_weight": [1.0] * 4,
    }
)


def _mark(reader: str, arm: str, case: str, number: int, score: float, dx: float = 0.0) -> dict:
    k = int(case[1:])
    return {
        "reader": reader,
        "arm": arm,
        "case_id": case,
        "mark_id": str(number),
        "score": score,
        "x": 10.0 * k + dx,
        "y": 0.0,
        "z": 0.0,
    }


def _readings() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"reader": r, "arm": a, "case_id": c, "seconds": 10.0}
            for r in ("reader.a", "reader.b")
            for a in ("unaided", "aided")
            for c in CASES
        ]
    )


def _marks() -> pd.DataFrame:
    rows = [
        # reader.a unaided: hits c5 (4) and c6 (2); NL on c1 (3) and on c6 far from its lesion (1)
        _mark("reader.a", "unaided", "c5", 1, 4),
        _mark("reader.a", "unaided", "c6", 1, 2, dx=3.0),
        _mark("reader.a", "unaided", "c6", 2, 1, dx=40.0),
        _mark("reader.a", "unaided", "c1", 1, 3),
        # reader.a aided: hits c5..c7 (5, 4, 3); NL on c2 (2)
        _mark("reader.a", "aided", "c5", 1, 5),
        _mark("reader.a", "aided", "c6", 1, 4),
        _mark("reader.a", "aided", "c7", 1, 3),
        _mark("reader.a", "aided", "c2", 1, 2),
        # reader.b unaided: hits c7 (3); NL on c3 (4) and c4 (1)
        _mark("reader.b", "unaided", "c7", 1, 3),
        _mark("reader.b", "unaided", "c3", 1, 4),
        _mark("reader.b", "unaided", "c4", 1, 1),
        # reader.b aided: hits c5, c7, c8 (5, 4, 2); NL on c3 (3)
        _mark("reader.b", "aided", "c5", 1, 5, dx=-9.0),
        _mark("reader.b", "aided", "c7", 1, 4),
        _mark("reader.b", "aided", "c8", 1, 2),
        _mark("reader.b", "aided", "c3", 1, 3),
    ]
    return pd.DataFrame(rows)


def _wafroc_by_hand(lesion_ratings: list[float], nl_max: list[float]) -> float:
    """Mean over (lesion-free case, lesion) of psi(highest NL rating, lesion rating)."""
    total = 0.0
    for fp in nl_max:
        for ll in lesion_ratings:
            total += 1.0 if ll > fp else 0.5 if ll == fp else 0.0
    return total / (len(nl_max) * len(lesion_ratings))


def test_marks_are_matched_by_the_design_rule() -> None:
    matches = match_reader_marks(_design(), _marks(), LESIONS, CASES)
    a = matches[(matches["reader"] == "reader.a") & (matches["arm"] == "unaided")]
    status = {(r.case_id, r.mark_id): r.status for r in a.itertuples() if r.mark_id is not None}
    # 3 mm off the lesion is a localisation; 40 mm off is not (threshold 10 mm)
    assert status == {("c5", "1"): "LL", ("c6", "1"): "LL", ("c6", "2"): "NL", ("c1", "1"): "NL"}
    assert set(a.loc[a["status"] == "missed", "case_id"]) == {"c7", "c8"}
    b = matches[(matches["reader"] == "reader.b") & (matches["arm"] == "aided")]
    assert b.loc[b["case_id"] == "c5", "status"].tolist() == ["LL"]  # 9 mm off: still inside


def test_wafroc_analysis_matches_the_figure_of_merit_by_hand() -> None:
    inf = -np.inf
    expected = {
        ("reader.a", "unaided"): _wafroc_by_hand([4, 2, inf, inf], [3, inf, inf, inf]),
        ("reader.a", "aided"): _wafroc_by_hand([5, 4, 3, inf], [inf, 2, inf, inf]),
        ("reader.b", "unaided"): _wafroc_by_hand([inf, inf, 3, inf], [inf, inf, 4, 1]),
        ("reader.b", "aided"): _wafroc_by_hand([5, inf, 4, 2], [inf, inf, 3, inf]),
    }
    # by hand for one reader, 16 (lesion-free case, lesion) pairs: against the NL 3 of c1 only
    # the lesion rated 4 wins; against the three unmarked cases both rated lesions win (1 each)
    # and both missed ones tie (0.5 each): (1 + 3 * (1 + 1 + 0.5 + 0.5)) / 16
    assert expected[("reader.a", "unaided")] == pytest.approx(10 / 16)

    design = _design()
    result = analyze_marks(design, _readings(), _marks(), LESIONS)
    assert result.figure_of_merit == "wAFROC"
    assert result.n_cases == 8 and result.n_positive == 4 and result.n_lesions == 4
    got = {(r.reader, r.arm): r.auc.value for r in result.per_reader}
    assert got == pytest.approx(expected)
    for (reader, arm), value in expected.items():
        assert result.rrrc.reader_auc.loc[arm, reader] == pytest.approx(value)
    for r in result.per_reader:
        assert r.auc.ci_low <= r.auc.value <= r.auc.ci_high and "bootstrap" in r.auc.method
    for arm in ("unaided", "aided"):
        assert result.arm_auc[arm].value == pytest.approx(
            np.mean([expected[("reader.a", arm)], expected[("reader.b", arm)]])
        )
    assert result.difference.value == pytest.approx(
        result.arm_auc["aided"].value - result.arm_auc["unaided"].value
    )
    assert result.verdict.value in {"pass", "fail"}
    assert result.reading_seconds == {"aided": 10.0, "unaided": 10.0}
    assert result.to_dict()["figure_of_merit"] == "wAFROC"

    # the same numbers straight from froc_figure_of_merit on the matched marks
    matches = match_reader_marks(design, _marks(), LESIONS, CASES)
    truth = free_response_truth(LESIONS, CASES)
    kept = matches[(matches["reader"] == "reader.b") & (matches["arm"] == "aided")]
    kept = kept[kept["status"].isin(["LL", "NL"])]
    marks = pd.DataFrame(
        {
            "case_id": kept["case_id"],
            "lesion_id": kept["lesion_id"].where(kept["status"] == "LL", None),
            "rating": kept["score"],
        }
    )
    assert froc_figure_of_merit(marks, truth) == pytest.approx(got[("reader.b", "aided")])


def test_a_reader_who_skipped_a_case_is_named() -> None:
    readings = _readings()
    readings = readings[~((readings["reader"] == "reader.b") & (readings["case_id"] == "c8"))]
    with pytest.raises(ProtocolError, match="incomplete: reader.b/aided \\(7\\), reader.b/unaided"):
        analyze_marks(_design(), readings, _marks(), LESIONS)


def test_a_reader_without_any_mark_is_named() -> None:
    marks = _marks()
    with pytest.raises(ProtocolError, match=r"\['reader.b'\] made no mark in either arm"):
        analyze_marks(_design(), _readings(), marks[marks["reader"] != "reader.b"], LESIONS)

"""Lesion matching (locked rules, one-to-one) and average precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from workbench.errors import StatisticsError
from workbench.stats import average_precision, froc_figure_of_merit, match_lesions


def _boxes(rows: list[tuple[object, ...]], cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=cols)


REF2D = _boxes(
    [(1, "a", 0, 0, 10, 10), (1, "b", 10, 0, 20, 10), (2, "a", 0, 0, 10, 10)],
    ["case_id", "lesion_id", "x_min", "y_min", "x_max", "y_max"],
)
PRED2D = _boxes(
    [(1, 0.9, 1, 0, 11, 10), (1, 0.8, 5, 0, 15, 10), (2, 0.3, 50, 0, 60, 10), (3, 0.5, 0, 0, 1, 1)],
    ["case_id", "score", "x_min", "y_min", "x_max", "y_max"],
)


def test_conflict_is_resolved_to_the_most_matches() -> None:
    # mark 0 overlaps lesion a (IoU 9/11) and b (1/19); mark 1 overlaps a and b (5/15 each).
    # At IoU >= 0.3 greedy-by-score would give mark 0 -> a and leave mark 1 with b only
    # if it re-checks; the assignment must take both lesions.
    res = match_lesions(REF2D, PRED2D, threshold=0.3, cases=[1, 2, 3, 4])
    m = res.marks.set_index("mark_id")
    assert m.loc[0, "lesion_id"] == "a" and m.loc[1, "lesion_id"] == "b"
    assert m.loc[[2, 3], "lesion_id"].isna().all()
    status = res.matches.set_index(["case_id", "lesion_id"])["status"]
    assert status.loc[(2, "a")] == "missed"
    assert (res.matches["status"] == "LL").sum() == 2
    assert res.matches.loc[res.matches["mark_id"] == 0, "similarity"].item() == pytest.approx(
        9 / 11
    )
    # cases 3 and 4 have no lesions: one truth row each with an empty lesion id
    t = res.truth.set_index("case_id")
    assert t.loc[[3, 4], "lesion_id"].isna().all() and len(res.truth) == 5
    # the output feeds the FROC functions: normals 3 (NL 0.5) and 4 (unmarked)
    assert froc_figure_of_merit(res.marks, res.truth) == pytest.approx(2.5 / 4)


def test_higher_threshold_and_score_floor() -> None:
    res = match_lesions(REF2D, PRED2D, threshold=0.5, score_floor=0.4)
    assert res.marks["mark_id"].tolist() == [0, 1, 3]
    assert res.marks.set_index("mark_id")["lesion_id"].notna().tolist() == [True, False, False]
    dropped = res.matches[res.matches["status"] == "below_floor"]
    assert dropped["mark_id"].tolist() == [2]


def test_iou_in_three_dimensions() -> None:
    cols = ["case_id", "lesion_id", "x_min", "y_min", "z_min", "x_max", "y_max", "z_max"]
    ref = _boxes([(1, 1, 0, 0, 0, 10, 10, 10)], cols)
    pred = _boxes(
        [(1, 0.7, 0, 0, 0, 10, 10, 5), (1, 0.6, 0, 0, 0, 10, 10, 4)],
        ["case_id", "score", *cols[2:]],
    )
    res = match_lesions(ref, pred, threshold=0.45)
    sim = res.matches.set_index("mark_id")["similarity"]
    assert sim.loc[0] == pytest.approx(0.5)  # half the cube
    assert res.marks.set_index("mark_id")["lesion_id"].notna().tolist() == [True, False]


def test_distance_rules_absolute_relative_and_inside() -> None:
    ref = pd.DataFrame(
        {"case_id": [1, 1], "lesion_id": ["a", "b"], "x": [0.0, 30.0], "y": [0.0, 0.0],
         "diameter": [10.0, 4.0]}
    )  # fmt: skip
    pred = pd.DataFrame({"case_id": [1, 1], "score": [0.9, 0.4], "x": [4.0, 33.0], "y": [3.0, 0]})
    # distances: mark 0 -> a: 5 mm; mark 1 -> b: 3 mm
    absolute = match_lesions(ref, pred, rule="center_distance", threshold=5.0)
    assert absolute.marks["lesion_id"].tolist() == ["a", "b"]
    tight = match_lesions(ref, pred, rule="center_distance", threshold=4.0)
    assert tight.marks["lesion_id"].tolist()[1] == "b" and pd.isna(tight.marks["lesion_id"][0])
    # relative: within 0.5 x diameter -> a allows 5 mm, b allows 2 mm
    rel = match_lesions(ref, pred, rule="center_distance", threshold=0.5, relative=True)
    assert rel.marks["lesion_id"].tolist()[0] == "a" and pd.isna(rel.marks["lesion_id"][1])
    inside = match_lesions(ref, pred, rule="center_in_region")
    assert inside.marks["lesion_id"].tolist()[0] == "a" and pd.isna(inside.marks["lesion_id"][1])
    # a point inside a reference box
    box_ref = REF2D.iloc[:1]
    pts = pd.DataFrame({"case_id": [1, 1], "score": [0.2, 0.1], "x": [9.5, 10.5], "y": [1.0, 1]})
    r = match_lesions(box_ref, pts, rule="center_in_region")
    assert r.marks["lesion_id"].tolist()[0] == "a" and pd.isna(r.marks["lesion_id"][1])


def test_matching_per_model_with_by() -> None:
    pred = pd.concat([PRED2D.assign(model="m1"), PRED2D.iloc[[1]].assign(model="m2")])
    res = match_lesions(REF2D, pred, threshold=0.3, by=["model"])
    m2 = res.marks[res.marks["model"] == "m2"]
    assert m2["lesion_id"].notna().all()  # alone, mark 1 takes a lesion
    missed = res.matches[(res.matches["status"] == "missed") & (res.matches["model"] == "m2")]
    assert len(missed) == 2  # m2 misses two of the three lesions


def test_invalid_input_raises() -> None:
    with pytest.raises(StatisticsError, match="Did you mean 'iou'"):
        match_lesions(REF2D, PRED2D, rule="iuo")
    with pytest.raises(StatisticsError, match=r"\(0, 1\]"):
        match_lesions(REF2D, PRED2D, threshold=1.5)
    with pytest.raises(StatisticsError, match="more than once"):
        match_lesions(pd.concat([REF2D, REF2D.iloc[:1]]), PRED2D)
    with pytest.raises(StatisticsError, match="x_min <= x_max"):
        match_lesions(REF2D.assign(x_max=-1), PRED2D)
    pts = PRED2D[["case_id", "score"]].assign(x=1.0, y=1.0)
    with pytest.raises(StatisticsError, match="needs boxes"):
        match_lesions(REF2D, pts, rule="iou")
    with pytest.raises(StatisticsError, match="lacks column"):
        match_lesions(REF2D, PRED2D.drop(columns="score"))


@st.composite
def scenes(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref_rows, pred_rows = [], []
    coord = st.integers(0, 12)
    for c in range(draw(st.integers(1, 4))):
        for les in range(draw(st.integers(0, 4))):
            x, y = draw(coord), draw(coord)
            ref_rows.append(
                (c, les, x, y, x + draw(st.integers(2, 6)), y + draw(st.integers(2, 6)))
            )
        for _ in range(draw(st.integers(0, 5))):
            x, y = draw(coord), draw(coord)
            score = draw(st.integers(0, 3)) / 3
            pred_rows.append(
                (c, score, x, y, x + draw(st.integers(2, 6)), y + draw(st.integers(2, 6)))
            )
    ref = pd.DataFrame(
        ref_rows, columns=["case_id", "lesion_id", "x_min", "y_min", "x_max", "y_max"]
    )
    pred = pd.DataFrame(pred_rows, columns=["case_id", "score", "x_min", "y_min", "x_max", "y_max"])
    return ref, pred


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scene=scenes(), threshold=st.sampled_from([0.1, 0.3, 0.5]))
def test_matching_is_one_to_one_and_maximal(
    scene: tuple[pd.DataFrame, pd.DataFrame], threshold: float
) -> None:
    ref, pred = scene
    res = match_lesions(ref, pred, threshold=threshold)
    ll = res.marks.dropna(subset=["lesion_id"])
    # one mark never claims two lesions, one lesion never has two marks
    assert not ll["mark_id"].duplicated().any()
    assert not ll.duplicated(["case_id", "lesion_id"]).any()
    box = ["x_min", "y_min", "x_max", "y_max"]
    for c in pred["case_id"].unique():
        r = ref[ref["case_id"] == c]
        p = pred[pred["case_id"] == c]
        elig = np.array(
            [[_iou(a, b) >= threshold and _iou(a, b) > 0 for b in p[box].to_numpy(float)]
             for a in r[box].to_numpy(float)]
        ).reshape(len(r), len(p))  # fmt: skip
        # every matched pair satisfies the rule
        got = ll[ll["case_id"] == c]
        for _, row in got.iterrows():
            li = int(np.flatnonzero(r["lesion_id"].to_numpy() == row["lesion_id"])[0])
            mi = int(np.flatnonzero(p.index.to_numpy() == row["mark_id"])[0])
            assert elig[li, mi]
        # as many matches as a maximum bipartite matching of the eligibility graph
        best = (
            (maximum_bipartite_matching(csr_matrix(elig.astype(int))) >= 0).sum()
            if elig.size
            else 0
        )
        assert len(got) == best
    # and every lesion appears once in the decision table as matched or missed
    decided = res.matches[res.matches["status"].isin(["LL", "missed"])]
    assert len(decided) == len(ref)


@SETTINGS
@given(scene=scenes(), seed=st.integers(0, 1000))
def test_average_precision_bounds_and_row_order(
    scene: tuple[pd.DataFrame, pd.DataFrame], seed: int
) -> None:
    ref, pred = scene
    if len(ref) == 0:
        return
    ap = average_precision(ref, pred, iou_thresholds=[0.3, 0.5])
    assert ((ap["average_precision"] >= 0) & (ap["average_precision"] <= 1)).all()
    shuffled = pred.sample(frac=1.0, random_state=seed)
    ap2 = average_precision(ref, shuffled, iou_thresholds=[0.3, 0.5])
    np.testing.assert_allclose(ap["average_precision"], ap2["average_precision"], atol=1e-12)
    # a perfect detector (the reference itself) has AP 1
    perfect = ref.drop(columns="lesion_id").assign(score=1.0)
    assert average_precision(ref, perfect)["average_precision"].item() == pytest.approx(1.0)


def test_average_precision_by_hand() -> None:
    ap = average_precision(REF2D, PRED2D, iou_thresholds=[0.3, 0.5, 0.9])
    # IoU >= 0.3: ranks .9 TP, .8 TP, .5 FP, .3 FP -> recall 1/3, 2/3; precision 1 -> AP 2/3
    np.testing.assert_allclose(ap["average_precision"], [2 / 3, 1 / 3, 0.0])
    assert ap["n_lesions"].tolist() == [3, 3, 3] and ap["n_marks"].tolist() == [4, 4, 4]

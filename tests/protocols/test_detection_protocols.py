"""Detection protocols: schema (good and malformed YAML), matching, evaluation, discrepancies."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workbench import stats as wstats
from workbench.errors import ProtocolError
from workbench.protocols import (
    DetectionSource,
    MatchingRule,
    StratumUnit,
    Task,
    Verdict,
    evaluate_detection,
    evaluate_endpoints,
    find_discrepancies,
    load_protocol,
    match_marks,
    match_summary,
)

ROOT = Path(__file__).resolve().parents[2]
DETECTION = ROOT / "validation_protocols" / "lesion-detection-v1.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return DETECTION.read_text(encoding="utf-8")


def _changed(text: str, **changes: object) -> str:
    data = yaml.safe_load(text)
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        slot: int | str = int(last) if isinstance(node, list) else last
        if value is None:
            del node[slot]  # type: ignore[arg-type]
        else:
            node[slot] = value  # type: ignore[index]
    return yaml.safe_dump(data, sort_keys=False)


def _error(text: str) -> str:
    with pytest.raises(ProtocolError) as info:
        load_protocol(text)
    message = str(info.value)
    return message


# -- schema -----------------------------------------------------------------------------------


def test_shipped_detection_protocol(text: str) -> None:
    p = load_protocol(text)
    assert p.task is Task.DETECTION
    det = p.reference_standard.detection
    assert det is not None and det.source is DetectionSource.SEG_COMPONENTS
    assert det.readers == ["reader1", "reader2"] and det.min_voxels == 10
    assert p.matching is not None and p.matching.rule is MatchingRule.CENTER_DISTANCE
    assert p.matching.describe().startswith("3D centre distance <= 10 mm; one-to-one")
    assert p.candidates is not None and p.candidates.threshold == 0.5
    fppi = p.endpoint("sensitivity-1fppi")
    assert fppi.fppi == 1.0
    assert "at 1 false positive(s) per image" in p.criterion_text(fppi)
    assert p.strata[1].unit is StratumUnit.LESION and p.strata[1].source_column == "diameter"
    kinds = [r.kind for r in p.discrepancy_rules]
    assert kinds == ["missed_lesion", "false_mark", "case_failed"]


def test_table_source_with_columns_weight_and_attributes(text: str) -> None:
    p = load_protocol(
        _changed(
            text,
            reference_standard__detection={
                "source": "table",
                "table": "reference/nodules.csv",
                "columns": {"lesion_id": "nodule"},
                "weight_column": "importance",
                "attributes": ["size_mm", "type"],
            },
            strata__1__column="size_mm",
            matching={"rule": "iou", "threshold": 0.3, "dimensions": 2},
        )
    )
    det = p.reference_standard.detection
    assert det is not None and det.table_path == "reference/nodules.csv"
    assert det.lesion_attributes == ("diameter", "lesion_weight", "size_mm", "type")
    assert p.matching is not None and p.matching.describe().startswith("2D IoU")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"reference_standard__detection": None},
            "a detection protocol needs reference_standard.detection",
        ),
        ({"matching": None}, "a detection protocol needs a locked matching rule"),
        ({"reference_standard__detection__source": "csv"}, "reference_standard.detection.source"),
        (
            {"reference_standard__detection__table": "lesions.csv"},
            "'table' describes a lesion table; source 'seg_components' takes none",
        ),
        (
            {
                "reference_standard__detection__rule": "reader2",
                "reference_standard__detection__readers": ["reader1"],
            },
            "rule 'reader2' names a reader that is not listed",
        ),
        ({"reference_standard__detection__rule": "reader3"}, "reference_standard.detection.rule"),
        (
            {"matching__threshold": None},
            "rule 'center_distance' needs threshold a distance > 0",
        ),
        (
            {"matching__rule": "iou", "matching__threshold": 1.5},
            "an IoU threshold lies in (0, 1], found 1.5",
        ),
        (
            {"matching__rule": "center_in_region"},
            "rule 'center_in_region' takes no threshold",
        ),
        (
            {"matching__relative": True, "matching__rule": "iou", "matching__threshold": 0.3},
            "relative distances belong to rule 'center_distance'",
        ),
        ({"matching__dimensions": 4}, "matching.dimensions"),
        ({"candidates__threshold": 0}, "candidates.threshold"),
        ({"candidates__min_voxels": 0}, "candidates.min_voxels"),
        ({"endpoints__1__fppi": None}, "expected fppi (e.g. fppi: 1.0), found none"),
        ({"endpoints__0__fppi": 1.0}, "metric wafroc1 takes no fppi"),
        (
            {"endpoints__0__metric": "dice_mean"},
            "is a segmentation metric but the protocol's task is detection",
        ),
        ({"endpoints__0__ci__method": "delong"}, "expected one of ['bootstrap', 'jackknife']"),
        (
            {"strata__1__column": "volume"},
            "lesion factor 'lesion_size' reads column 'volume'; expected a lesion column",
        ),
        (
            {
                "discrepancy_rules__0": {
                    "id": "low-dice",
                    "kind": "metric_threshold",
                    "column": "dice",
                    "operator": "<",
                    "threshold": 0.5,
                }
            },
            "a detection protocol queues cases by 'missed_lesion', 'false_mark' or 'case_failed'",
        ),
        ({"discrepancy_rules__1__min_score": None}, "min_score"),
    ],
)
def test_malformed_detection_yaml_names_the_field(
    text: str, changes: dict[str, object], expected: str
) -> None:
    message = _error(_changed(text, **changes))
    assert expected in message, message
    assert "\n" not in message.strip() or message.count("\n") <= 2
    assert "line" in message  # the loader points at the YAML line


def test_detection_fields_are_refused_in_other_tasks() -> None:
    segmentation = (ROOT / "validation_protocols" / "lesion-segmentation-v1.yaml").read_text()
    assert "belongs to a detection protocol" in _error(
        _changed(segmentation, matching={"rule": "iou", "threshold": 0.5})
    )
    message = _error(
        _changed(
            segmentation,
            strata__0={"factor": "size", "unit": "lesion", "column": "diameter"},
        )
    )
    assert "unit 'lesion' classifies reference lesions" in message
    assert "needs a detection protocol" in _error(
        _changed(segmentation, discrepancy_rules__0={"id": "m", "kind": "missed_lesion"})
    )


# -- matching and evaluation ------------------------------------------------------------------


def _lesion(case: str, lesion: str, x: float, size: float = 10.0, **extra: object) -> dict:
    h = size / 2
    return {
        "case_id": case,
        "lesion_id": lesion,
        "x": x,
        "y": 0.0,
        "z": 0.0,
        "x_min": x - h,
        "x_max": x + h,
        "y_min": -h,
        "y_max": h,
        "z_min": -h,
        "z_max": h,
        "diameter": size,
        "lesion_weight": 1.0,
        **extra,
    }


def _mark(case: str, mark: str, x: float, score: float, size: float = 10.0) -> dict:
    row = _lesion(case, "", x, size)
    row.pop("lesion_id"), row.pop("diameter"), row.pop("lesion_weight")
    return {**row, "mark_id": mark, "score": score}


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """20 cases: 12 with one or two lesions, 8 without; marks near most lesions, some FPs."""
    rng = np.random.default_rng(3)
    cases, lesions, marks = [], [], []
    for i in range(20):
        cid = f"c{i:02d}"
        cases.append(
            {"case_id": cid, "status": "completed", "manufacturer": "AB"[i % 2], "reason": None}
        )
        if i < 12:
            for j in range(1 + i % 2):
                size = 8.0 if j == 0 else 30.0
                lesions.append(_lesion(cid, f"L{j + 1}", 100.0 * j, size))
                if (i + j) % 4:
                    marks.append(_mark(cid, f"M{j + 1}", 100.0 * j + 2.0, rng.uniform(0.5, 1)))
        if i % 3 == 0:
            marks.append(_mark(cid, "M9", 500.0, rng.uniform(0.1, 0.95)))
    return pd.DataFrame(cases), pd.DataFrame(lesions), pd.DataFrame(marks)


def _matches(protocol, lesions, marks, cases) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    assert protocol.matching is not None
    parts = [
        match_marks(
            protocol.matching,
            lesions[lesions["case_id"] == c],
            marks[marks["case_id"] == c],
            cases=[c],
        )
        for c in cases["case_id"]
    ]
    return pd.concat(parts, ignore_index=True)


def test_matching_per_case_equals_matching_all_at_once(text: str, world) -> None:  # type: ignore[no-untyped-def]
    cases, lesions, marks = world
    p = load_protocol(text)
    assert p.matching is not None
    together = match_marks(p.matching, lesions, marks, cases=list(cases["case_id"]))
    apart = _matches(p, lesions, marks, cases)
    key = ["case_id", "status", "lesion_id", "mark_id"]
    left = together.sort_values(key, na_position="first").reset_index(drop=True)
    right = apart.sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    ll = together[together["status"] == "LL"]
    assert np.allclose(ll["distance_mm"], 2.0) and ((ll["iou"] > 0) & (ll["iou"] <= 1)).all()
    summary = match_summary(together)
    assert summary["n_lesions"] == len(lesions)
    assert summary["n_ll"] + summary["n_missed"] == len(lesions)


def test_evaluation_matches_the_statistics_directly(world) -> None:  # type: ignore[no-untyped-def]
    cases, lesions, marks = world
    p = load_protocol(
        _changed(
            DETECTION.read_text(encoding="utf-8"),
            endpoints__0__metric="wafroc",
            endpoints__0__ci={"method": "jackknife"},
            **{"subgroup_acceptance": None},
        )
    )
    matches = _matches(p, lesions, marks, cases)
    analysis = evaluate_detection(p, cases, lesions, matches)
    by_id = {e.endpoint_id: e for e in analysis.evaluation.endpoints}
    fm = matches[matches["status"].isin(["LL", "NL"])].rename(columns={"score": "rating"})
    fm = fm.assign(lesion_id=fm["lesion_id"].where(fm["status"] == "LL", None))
    truth = pd.concat(
        [
            lesions[["case_id", "lesion_id", "lesion_weight"]],
            pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(12, 20)], "lesion_id": None}),
        ]
    )
    expected = wstats.froc_estimate(fm, truth, fom="wafroc", ci="jackknife")
    assert by_id["wafroc1"].estimate is not None
    assert by_id["wafroc1"].estimate.value == pytest.approx(expected.value)
    assert by_id["wafroc1"].estimate.ci_low == pytest.approx(expected.ci_low)
    sens = wstats.froc_figure_of_merit(fm, truth, fom="max_llf")
    assert by_id["lesion-sensitivity"].estimate.value == pytest.approx(sens)  # type: ignore[union-attr]
    # lesion strata count lesions and split them by size
    size = [s for s in by_id["lesion-sensitivity"].strata if s.factor == "lesion_size"]
    assert {s.stratum: s.n for s in size} == {"0 to <15": 12, "25 to <1000": 6}
    assert all(s.estimate is None or s.estimate.n == s.n for s in size)
    # the wAFROC polyline's area is the figure of merit (RJafroc's trapezoid rule)
    froc = analysis.froc
    assert froc is not None and froc.wafroc_fom == "wafroc"
    area = float(np.trapezoid(froc.wllf, froc.fpf))
    assert area == pytest.approx(expected.value)
    assert froc.n_lesions == len(lesions) and froc.n_diseased == 12 and froc.n_cases == 20
    # the per-lesion table holds every lesion once
    assert len(analysis.lesions) == len(lesions)
    assert set(analysis.lesions["status"]) <= {"matched", "missed"}


def test_failed_cases_count_as_errors_or_are_excluded(text: str, world) -> None:  # type: ignore[no-untyped-def]
    cases, lesions, marks = world
    p = load_protocol(text)
    matches = _matches(p, lesions, marks, cases)
    failed = cases.copy()
    failed.loc[failed["case_id"] == "c01", "status"] = "failed"
    counted = evaluate_detection(p, failed, lesions, matches)
    base = evaluate_detection(p, cases, lesions, matches)
    sens = {e.endpoint_id: e.estimate.value for e in counted.evaluation.endpoints if e.estimate}
    sens0 = {e.endpoint_id: e.estimate.value for e in base.evaluation.endpoints if e.estimate}
    assert sens["lesion-sensitivity"] < sens0["lesion-sensitivity"]  # its lesions are missed
    assert counted.evaluation.failed_case_ids == ("c01",)
    p_excl = load_protocol(_changed(text, failed_cases="exclude"))
    excluded = evaluate_detection(p_excl, failed, lesions, matches)
    assert excluded.evaluation.n_analysed == 19
    assert excluded.froc is not None and excluded.froc.n_lesions == len(lesions) - 2


def test_not_evaluable_without_normal_cases_says_why(world) -> None:  # type: ignore[no-untyped-def]
    cases, lesions, marks = world
    p = load_protocol(_changed(DETECTION.read_text(), endpoints__0__metric="hrauc"))
    diseased = cases[cases["case_id"].isin(lesions["case_id"])]
    analysis = evaluate_detection(p, diseased, lesions, _matches(p, lesions, marks, diseased))
    hrauc = analysis.evaluation.endpoints[0]
    assert hrauc.estimate is None and hrauc.verdict is Verdict.NOT_EVALUABLE
    assert "without lesions" in hrauc.reason or "non-diseased" in hrauc.reason
    assert analysis.evaluation.verdict is Verdict.FAIL  # not_evaluable_counts_as: fail


def test_detection_protocol_refuses_the_per_case_evaluator(text: str, world) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match="evaluate_detection"):
        evaluate_endpoints(load_protocol(text), world[0])


def test_discrepancy_rules_on_match_counts(text: str) -> None:
    p = load_protocol(text)
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d"],
            "status": ["completed", "completed", "failed", "completed"],
            "n_lesions": [2, 1, 1, 0],
            "n_missed": [1, 0, 1, 0],
            "max_nl_score": [0.2, 0.95, None, math.nan],
            "reason": [None, None, "boom", None],
        }
    )
    found = [(c.case_id, c.rule, c.details) for c in find_discrepancies(p, frame)]
    assert found == [
        ("a", "missed-lesion", "1 of 2 reference lesion(s) not localised"),
        ("b", "confident-false-mark", "non-lesion mark scored 0.95 >= 0.9"),
        ("c", "inference-failed", "inference failed: boom"),
    ]
    with pytest.raises(ProtocolError, match="n_missed"):
        find_discrepancies(p, frame.drop(columns=["n_missed"]))


def test_cluster_by_resamples_patients_for_detection_intervals(world) -> None:  # type: ignore[no-untyped-def]
    """Two cases per patient: the bootstrap of every detection endpoint resamples patients."""
    cases, lesions, marks = world
    cases = cases.assign(patient=[f"p{i // 2:02d}" for i in range(len(cases))])
    text = _changed(
        DETECTION.read_text(encoding="utf-8"),
        endpoints__0__metric="wafroc",
        endpoints__0__ci={"n_boot": 300},
        **{"subgroup_acceptance": None, "cluster_by": "patient"},
    )
    p = load_protocol(text)
    matches = _matches(p, lesions, marks, cases)
    analysis = evaluate_detection(p, cases, lesions, matches)
    primary = analysis.evaluation.endpoints[0]
    fm = matches[matches["status"].isin(["LL", "NL"])].rename(columns={"score": "rating"})
    fm = fm.assign(lesion_id=fm["lesion_id"].where(fm["status"] == "LL", None))
    truth = pd.concat(
        [
            lesions[["case_id", "lesion_id", "lesion_weight"]],
            pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(12, 20)], "lesion_id": None}),
        ]
    )
    truth["patient"] = truth["case_id"].map(dict(zip(cases["case_id"], cases["patient"])))
    expected = wstats.froc_estimate(
        fm, truth, fom="wafroc", n_boot=300, seed=p.endpoints[0].ci.seed, clusters="patient"
    )
    assert primary.endpoint_id == p.endpoints[0].id and primary.estimate is not None
    assert "10 clusters" in primary.estimate.method
    assert (primary.estimate.value, primary.estimate.ci_low, primary.estimate.ci_high) == (
        pytest.approx(expected.value),
        pytest.approx(expected.ci_low),
        pytest.approx(expected.ci_high),
    )

"""Endpoint evaluation and discrepancy rules on small frames with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import stats
from workbench.errors import ProtocolError
from workbench.protocols import (
    Verdict,
    evaluate_endpoints,
    find_discrepancies,
    load_protocol,
    stratum_labels,
)
from workbench.protocols.schema import StratumFactor

ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = ROOT / "validation_protocols" / "malignancy-classification-v1.yaml"
SEGMENTATION = ROOT / "validation_protocols" / "lesion-segmentation-v1.yaml"

SEG_HEADER = """
id: seg-test
version: 1
title: t
intended_use: t
task: segmentation
test_set: {name: t}
reference_standard: {segmentation: {readers: [reader1, reader2], rule: majority}}
failed_cases: FAILED
data_quality_suite: ct-test-set-v1
signatures: [{meaning: authored, role: qa}]
"""


def _seg_protocol(body: str, failed: str = "count_as_error"):
    return load_protocol(SEG_HEADER.replace("FAILED", failed) + body)


def _frame(n_per: int, means: dict[str, float], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for man, mu in means.items():
        for i in range(n_per):
            d = float(np.clip(mu + rng.normal(0, 0.03), 0, 1))
            rows.append(
                {
                    "case_id": f"{man}-{i:02d}",
                    "status": "completed",
                    "dice": d,
                    "hd95": 2.0 + (1 - d) * 10,
                    "surface_dice": d,
                    "assd": 1.0,
                    "manufacturer": man,
                    "patient_sex": "MF"[i % 2],
                    "patient_age_years": 30 + 3 * i,
                }
            )
    return pd.DataFrame(rows)


def test_classification_known_auc_and_sensitivity() -> None:
    p = load_protocol(CLASSIFICATION)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1] * 2)
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9, 0.45, 0.95] * 2)
    frame = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(20)],
            "status": "completed",
            "y_true": y,
            "score": s,
            "manufacturer": ["A"] * 10 + ["B"] * 10,
            "patient_sex": "F",
            "patient_age_years": 60,
        }
    )
    ev = evaluate_endpoints(p, frame)
    auc = ev.endpoint("auc")
    expected = stats.auc(y, s, ci="delong", level=0.95)
    assert auc.estimate == expected
    assert auc.estimate is not None and auc.estimate.value == pytest.approx(0.96)
    sens = ev.endpoint("sensitivity").estimate
    assert sens is not None and sens.value == pytest.approx(0.8) and sens.n == 10
    spec = ev.endpoint("specificity").estimate
    assert spec is not None and spec.value == pytest.approx(0.8)
    kappa = ev.endpoint("kappa").estimate
    assert kappa is not None and kappa.value == pytest.approx(0.6)
    assert ev.n_analysed == 20 and ev.failed_case_ids == ()
    # each scanner has the same cases, so the same AUC
    rows = {r.stratum: r for r in auc.strata if r.factor == "manufacturer"}
    assert rows["A"].estimate.value == pytest.approx(0.96)
    json.dumps(ev.to_dict())


def test_failed_classification_case_counts_as_error() -> None:
    p = load_protocol(CLASSIFICATION)
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "e", "f"],
            "status": ["completed"] * 4 + ["failed", "excluded"],
            "y_true": [0, 0, 1, 1, 1, 0],
            "score": [0.1, 0.2, 0.8, 0.9, np.nan, 0.5],
            "manufacturer": "A",
            "patient_sex": "F",
            "patient_age_years": 50,
        }
    )
    ev = evaluate_endpoints(p, frame)
    assert ev.failed_case_ids == ("e",) and ev.excluded_case_ids == ("f",)
    assert ev.n_analysed == 5
    # the failed positive ranks below every negative: 2 of 3 positives perfect -> AUC 4/6
    assert ev.endpoint("auc").estimate.value == pytest.approx(4 / 6)  # type: ignore[union-attr]
    assert ev.endpoint("sensitivity").estimate.value == pytest.approx(2 / 3)  # type: ignore[union-attr]
    excluded = load_protocol(CLASSIFICATION.read_text().replace("count_as_error", "exclude"))
    ev2 = evaluate_endpoints(excluded, frame)
    assert ev2.n_analysed == 4
    assert ev2.endpoint("auc").estimate.value == pytest.approx(1.0)  # type: ignore[union-attr]


def test_failed_segmentation_case_counts_as_dice_zero() -> None:
    body = """
endpoints:
  - id: dice
    metric: dice_mean
    ci: {level: 0.95, n_boot: 500}
    criterion: {statistic: value, operator: ">=", threshold: 0.5}
  - id: hd
    metric: hd95_median
    primary: false
    criterion: {statistic: value, operator: "<=", threshold: 50}
"""
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d"],
            "status": ["completed", "completed", "completed", "failed"],
            "dice": [0.8, 0.9, 0.7, np.nan],
            "hd95": [2.0, 3.0, np.nan, np.nan],
        }
    )
    ev = evaluate_endpoints(_seg_protocol(body), frame)
    assert ev.endpoint("dice").estimate.value == pytest.approx(0.6)  # type: ignore[union-attr]
    # c (empty prediction, undefined distance) and d (failed) get 100 mm
    assert ev.endpoint("hd").estimate.value == pytest.approx(51.5)  # type: ignore[union-attr]
    assert ev.endpoint("hd").verdict is Verdict.FAIL
    assert any("case c: hd95 undefined" in n for n in ev.notes)
    ev2 = evaluate_endpoints(_seg_protocol(body, "exclude"), frame)
    assert ev2.endpoint("dice").estimate.value == pytest.approx(0.8)  # type: ignore[union-attr]
    assert ev2.failed_case_ids == ("d",) and ev2.n_analysed == 3


def test_segmentation_protocol_passes_good_model_and_fails_weak_scanner() -> None:
    p = load_protocol(SEGMENTATION)
    good = evaluate_endpoints(p, _frame(8, {"Acme": 0.86, "Bolt": 0.85, "Cyan": 0.84}))
    assert good.verdict is Verdict.PASS
    dice = good.endpoint("dice-mean")
    rows = [r for r in dice.strata if r.factor == "manufacturer"]
    assert [r.verdict for r in rows] == [Verdict.PASS] * 3
    # Holm: the first step uses 1 - 0.05/3, all pass at once
    assert rows[0].level == pytest.approx(1 - 0.05 / 3)
    sex = [r for r in dice.strata if r.factor == "patient_sex"]
    assert {r.verdict for r in sex} == {Verdict.NOT_ASSESSED}

    weak = evaluate_endpoints(p, _frame(8, {"Acme": 0.88, "Bolt": 0.87, "Cyan": 0.55}))
    dice = weak.endpoint("dice-mean")
    assert dice.overall_verdict is Verdict.PASS  # overall mean still above 0.70
    assert dice.verdict is Verdict.FAIL and weak.verdict is Verdict.FAIL
    assert "manufacturer=Cyan" in dice.reason
    rows = {r.stratum: r for r in dice.strata if r.factor == "manufacturer"}
    assert rows["Cyan"].verdict is Verdict.FAIL and rows["Acme"].verdict is Verdict.PASS
    # after two strata pass at 1 - 0.05/3, the last is judged at 1 - 0.05/1
    assert rows["Cyan"].level == pytest.approx(0.95)


def test_holm_is_less_strict_than_bonferroni() -> None:
    body = """
endpoints:
  - id: dice
    metric: dice_mean
    ci: {level: 0.95, n_boot: 1000}
    criterion: {statistic: ci_low, operator: ">=", threshold: 0.80}
strata:
  - {factor: manufacturer, min_n: 3}
subgroup_acceptance:
  rule: adjusted_criterion
  multiplicity: MULT
"""
    frame = _frame(10, {"Acme": 0.95, "Bolt": 0.95})
    # Bolt's CI lower bound lies just above 0.80 at 97.5 % and below it at 99.9 %
    rng = np.random.default_rng(3)
    bolt = frame["manufacturer"] == "Bolt"
    frame.loc[bolt, "dice"] = np.clip(0.845 + rng.normal(0, 0.045, bolt.sum()), 0, 1)
    results = {}
    for mult in ("holm", "bonferroni", "none"):
        ev = evaluate_endpoints(_seg_protocol(body.replace("MULT", mult)), frame)
        rows = {r.stratum: r for r in ev.endpoint("dice").strata}
        results[mult] = (rows["Bolt"].verdict, rows["Bolt"].level)
    assert results["bonferroni"][1] == pytest.approx(0.975)
    assert results["none"][1] == pytest.approx(0.95)
    # Holm judges Bolt at 0.95 once Acme has passed at 0.975
    assert results["holm"][1] == pytest.approx(0.95)
    assert results["holm"][0] == results["none"][0]
    order = {Verdict.PASS: 1, Verdict.FAIL: 0}
    assert order[results["holm"][0]] >= order[results["bonferroni"][0]]


def test_stratum_below_min_n_is_not_assessed() -> None:
    p = load_protocol(SEGMENTATION)
    frame = _frame(8, {"Acme": 0.86, "Bolt": 0.85})
    frame = pd.concat([frame, _frame(3, {"Tiny": 0.3})], ignore_index=True)
    ev = evaluate_endpoints(p, frame)
    rows = {r.stratum: r for r in ev.endpoint("dice-mean").strata if r.factor == "manufacturer"}
    assert rows["Tiny"].verdict is Verdict.NOT_ASSESSED
    assert "n=3 < min_n=5" in rows["Tiny"].reason


def test_not_estimable_auc_with_one_class() -> None:
    p = load_protocol(CLASSIFICATION)
    frame = pd.DataFrame(
        {
            "case_id": list("abcd"),
            "status": "completed",
            "y_true": [1, 1, 1, 1],
            "score": [0.2, 0.6, 0.7, 0.9],
            "manufacturer": "A",
            "patient_sex": "F",
            "patient_age_years": 40,
        }
    )
    ev = evaluate_endpoints(p, frame)
    auc = ev.endpoint("auc")
    assert auc.verdict is Verdict.NOT_EVALUABLE and auc.estimate is None and auc.reason
    # The protocol's default counts a not-evaluable primary endpoint as a failure, and says so.
    assert ev.verdict is Verdict.FAIL
    assert ev.verdict_reason.startswith("auc NOT EVALUABLE (")
    assert "counted as FAIL" in ev.verdict_reason
    assert ev.endpoint("specificity").verdict is Verdict.NOT_EVALUABLE
    assert ev.to_dict()["endpoints"][0]["estimate"] is None
    # A protocol may keep the verdict NOT EVALUABLE instead.
    text = CLASSIFICATION.read_text().replace(
        "\nfailed_cases:", "\nnot_evaluable_counts_as: not_evaluable\nfailed_cases:"
    )
    kept = load_protocol(text.encode("utf-8"))
    ev_kept = evaluate_endpoints(kept, frame)
    assert ev_kept.verdict is Verdict.NOT_EVALUABLE
    assert ev_kept.verdict_reason == ev.verdict_reason.split("; counted")[0]


def test_age_bands() -> None:
    factor = StratumFactor(factor="age_band", edges=[18, 50, 65, 120])
    frame = pd.DataFrame({"patient_age_years": [18, 49, 50, 64.5, 65, 130, None]})
    assert stratum_labels(frame, factor).tolist() == [
        "18 to <50",
        "18 to <50",
        "50 to <65",
        "50 to <65",
        "65 to <120",
        "outside 18 to <120",
        "unknown",
    ]


def test_input_errors() -> None:
    p = load_protocol(SEGMENTATION)
    frame = _frame(3, {"A": 0.8})
    with pytest.raises(ProtocolError, match="lacks column"):
        evaluate_endpoints(p, frame.drop(columns=["hd95"]))
    with pytest.raises(ProtocolError, match="Unknown case status"):
        evaluate_endpoints(p, frame.assign(status="done"))
    with pytest.raises(ProtocolError, match="repeats case_id"):
        evaluate_endpoints(p, pd.concat([frame, frame]))
    cp = load_protocol(CLASSIFICATION)
    bad = pd.DataFrame({"case_id": ["a"], "status": ["completed"], "y_true": [2], "score": [0.1]})
    with pytest.raises(ProtocolError, match="must be 0 or 1"):
        evaluate_endpoints(cp, bad)


def test_progress_callback() -> None:
    calls: list[tuple[int, int, str]] = []
    evaluate_endpoints(
        load_protocol(SEGMENTATION),
        _frame(6, {"A": 0.8}),
        progress=lambda d, t, m: calls.append((d, t, m)),
    )
    assert [c[0] for c in calls] == [1, 2, 3, 4] and calls[0][1] == 4


def test_discrepancies_segmentation() -> None:
    p = load_protocol(SEGMENTATION)
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "e"],
            "status": ["completed", "completed", "failed", "excluded", "completed"],
            "dice": [0.9, 0.31, np.nan, 0.1, np.nan],
            "reason": [None, None, "out of memory", None, None],
        }
    )
    found = find_discrepancies(p, frame)
    assert [(d.case_id, d.rule) for d in found] == [
        ("b", "low-dice"),
        ("c", "inference-failed"),
        ("e", "low-dice"),
    ]
    assert found[0].details == "dice = 0.31 < 0.5"
    assert found[1].details == "inference failed: out of memory"
    assert "could not be computed" in found[2].details


def test_discrepancies_classification() -> None:
    p = load_protocol(CLASSIFICATION)
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d"],
            "status": "completed",
            "consensus_malignant": [1, 0, 1, 0],
            "score": [0.9, 0.7, 0.2, 0.1],
        }
    )
    found = find_discrepancies(p, frame)
    assert [(d.case_id, d.rule) for d in found] == [
        ("b", "decision-disagrees"),
        ("c", "decision-disagrees"),
    ]
    assert "model decision positive" in found[0].details
    assert "reference negative" in found[0].details

"""Multi-structure segmentation and multi-class labels: schema errors and evaluation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from workbench.errors import ProtocolError
from workbench.protocols import (
    CaseAccounting,
    Protocol,
    Verdict,
    evaluate_endpoints,
    find_discrepancies,
    load_protocol,
    structure_cases,
)
from workbench.protocols.evaluation import NO_OUTPUT_CLASS

ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = ROOT / "validation_protocols" / "lesion-segmentation-v1.yaml"
CLASSIFICATION = ROOT / "validation_protocols" / "malignancy-classification-v1.yaml"

STRUCTURES = [
    {"name": "liver", "reference": "Liver", "model_class": "liver"},
    {"name": "spleen", "reference": "Spleen", "model_class": "spleen"},
]


def _seg_data() -> dict[str, Any]:
    data = yaml.safe_load(SEGMENTATION.read_text())
    data["reference_standard"]["segmentation"]["structures"] = copy.deepcopy(STRUCTURES)
    data["endpoints"] = [
        {
            "id": "liver-dice",
            "metric": "dice_mean",
            "structure": "liver",
            "ci": {"method": "bootstrap", "n_boot": 500},
            "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.7},
        },
        {
            "id": "spleen-dice",
            "metric": "dice_mean",
            "structure": "spleen",
            "ci": {"method": "bootstrap", "n_boot": 500},
            "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.8},
        },
    ]
    data["subgroup_acceptance"] = None
    data["strata"] = [{"factor": "manufacturer", "min_n": 1, "assess": False}]
    data["discrepancy_rules"] = [
        {
            "id": "low-spleen",
            "kind": "metric_threshold",
            "column": "dice",
            "structure": "spleen",
            "operator": "<",
            "threshold": 0.5,
        }
    ]
    return data


def _load(data: dict[str, Any]) -> Protocol:
    return load_protocol(yaml.safe_dump(data, sort_keys=False))


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as info:
        _load(data)
    return str(info.value)


def test_multi_structure_protocol_loads_and_single_form_is_unchanged() -> None:
    protocol = _load(_seg_data())
    seg = protocol.reference_standard.segmentation
    assert seg is not None and seg.structure_names == ("liver", "spleen")
    assert seg.structure("spleen").reference == "Spleen"
    assert [ep.structure for ep in protocol.endpoints] == ["liver", "spleen"]
    single = load_protocol(SEGMENTATION)
    assert single.reference_standard.segmentation is not None
    assert single.reference_standard.segmentation.structure_names == ()
    assert all(ep.structure is None for ep in single.endpoints)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        (("endpoints", 0, "structure"), "kidney", "endpoints[0].structure", "unknown structure"),
        (("endpoints", 1, "structure"), None, "endpoints[1].structure", "must name its structure"),
        (
            ("reference_standard", "segmentation", "structures", 1, "name"),
            "liver",
            "structures[1].name",
            "duplicate structure name",
        ),
        (
            ("reference_standard", "segmentation", "structures", 1, "model_class"),
            "liver",
            "structures[1].model_class",
            "duplicate structure model_class",
        ),
        (
            ("reference_standard", "segmentation", "structures", 0, "reference"),
            3,
            "structures[0].reference",
            "segment label or ROI name",
        ),
        (("reference_standard", "segmentation", "roi"), "Liver", "segmentation.roi", "roi and"),
        (
            ("discrepancy_rules", 0, "structure"),
            "kidney",
            "discrepancy_rules[0].structure",
            "unknown structure",
        ),
        (
            ("discrepancy_rules", 0, "structure"),
            None,
            "discrepancy_rules[0].structure",
            "must name its structure",
        ),
    ],
)
def test_structure_errors_name_the_field(
    path: tuple[Any, ...], value: Any, field: str, message: str
) -> None:
    text = _error(_set(_seg_data(), path, value))
    assert field in text and message in text, text
    assert "line " in text


def test_nifti_structures_are_label_values() -> None:
    data = _seg_data()
    data["reference_standard"]["segmentation"]["source"] = "nifti"
    text = _error(data)
    assert "structures[0].reference" in text and "label value (integer)" in text
    for i, structure in enumerate(data["reference_standard"]["segmentation"]["structures"]):
        structure["reference"] = i + 1
    assert _load(data).reference_standard.segmentation is not None


def test_structure_on_a_single_structure_protocol_is_refused() -> None:
    data = yaml.safe_load(SEGMENTATION.read_text())
    data["endpoints"][0]["structure"] = "liver"
    text = _error(data)
    assert "endpoints[0].structure" in text and "has no reference_standard" in text


def _frame() -> pd.DataFrame:
    """Six cases: spleen reference missing for c5, c6 failed, c7 excluded as a whole."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(1, 8):
        row: dict[str, Any] = {
            "case_id": f"c{i}",
            "status": "completed",
            "reason": None,
            "manufacturer": "A" if i % 2 else "B",
            "liver/dice": float(rng.uniform(0.85, 0.95)),
            "liver/hd95": float(rng.uniform(1, 3)),
            "spleen/dice": float(rng.uniform(0.3, 0.7)),
        }
        rows.append(row)
    rows[4].pop("spleen/dice")
    rows[4]["spleen/excluded"] = "reference of structure 'spleen' missing for reader1"
    rows[5].update(status="failed", reason="inference failed")
    for key in ("liver/dice", "liver/hd95", "spleen/dice"):
        rows[5].pop(key)
    rows[6].update(status="excluded", reason="no labels row")
    return pd.DataFrame(rows)


def test_per_structure_endpoints_strata_and_exclusions() -> None:
    protocol = _load(_seg_data())
    frame = _frame()
    evaluation = evaluate_endpoints(protocol, frame)
    liver, spleen = evaluation.endpoint("liver-dice"), evaluation.endpoint("spleen-dice")
    assert (liver.structure, spleen.structure) == ("liver", "spleen")
    # count_as_error: the failed case c6 counts with Dice 0 in both structures
    liver_values = [*frame["liver/dice"].iloc[:5], 0.0]
    spleen_values = [*frame["spleen/dice"].iloc[:4], 0.0]
    assert liver.estimate is not None and spleen.estimate is not None
    assert liver.estimate.value == pytest.approx(np.mean(liver_values), abs=1e-12)
    assert spleen.estimate.value == pytest.approx(np.mean(spleen_values), abs=1e-12)
    assert (liver.n_cases, spleen.n_cases) == (6, 5)
    assert liver.verdict is Verdict.PASS and spleen.verdict is Verdict.FAIL
    assert {s.stratum: s.n for s in liver.strata} == {"A": 3, "B": 3}
    assert {s.stratum: s.n for s in spleen.strata} == {"A": 2, "B": 3}  # c5 (A) left out
    assert evaluation.excluded_case_ids == ("c7",)
    assert evaluation.failed_case_ids == ("c6",)
    assert evaluation.n_analysed == 6

    accounting = CaseAccounting.from_frame(frame, n_cases=7, structures=("liver", "spleen"))
    by_name = {s.structure: s for s in accounting.structures}
    assert by_name["liver"].excluded == () and by_name["liver"].n_analysed == 6
    assert [n.case_id for n in by_name["spleen"].excluded] == ["c5"]
    assert by_name["spleen"].n_analysed == 5
    assert CaseAccounting.from_dict(accounting.to_dict()) == accounting

    view = structure_cases(frame, "spleen")
    assert view.loc[4, "status"] == "excluded" and "missing" in view.loc[4, "reason"]

    hits = find_discrepancies(protocol, frame)
    assert {h.case_id for h in hits} == {
        c for c, v in zip(frame["case_id"][:4], spleen_values[:4], strict=True) if v < 0.5
    }
    assert all(h.rule == "low-spleen" for h in hits)


# -- multi-class labels ----------------------------------------------------------------------

#: SAS/STAT PROC FREQ documentation, "Agreement Study" (SkinCondition), tables
#: Derm1*Derm2 / agree: Simple Kappa 0.3449, ASE 0.0724, 95% CL 0.2030 0.4868.
SKIN = np.array([[10, 4, 1, 0], [5, 10, 12, 2], [2, 4, 12, 5], [0, 2, 6, 13]])
SKIN_CLASSES = ["terrible", "poor", "marginal", "clear"]


def _cls_data(**reference: Any) -> dict[str, Any]:
    data = yaml.safe_load(CLASSIFICATION.read_text())
    data["reference_standard"] = {
        "labels_column": "condition",
        "classes": SKIN_CLASSES,
        "positive_classes": ["terrible", "poor"],
        **reference,
    }
    data["endpoints"] = [
        {
            "id": "kappa",
            "metric": "kappa_multiclass",
            "criterion": {"statistic": "ci_low", "operator": ">=", "threshold": 0.2},
        },
        {
            "id": "auc",
            "metric": "auc",
            "primary": False,
            "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.5},
        },
    ]
    for key in ("subgroup_acceptance", "decision_curve", "operating_point"):
        data.pop(key, None)
    data["strata"] = []
    data["calibration"] = {}
    data["discrepancy_rules"] = []
    return data


def _skin_frame() -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for i, reference in enumerate(SKIN_CLASSES):
        for j, predicted in enumerate(SKIN_CLASSES):
            for _ in range(int(SKIN[i, j])):
                rows.append(
                    {
                        "case_id": f"s{len(rows):03d}",
                        "status": "completed",
                        "condition": reference,
                        "predicted_class": predicted,
                        "score": float(rng.uniform()),
                    }
                )
    return pd.DataFrame(rows)


def test_kappa_endpoint_matches_the_published_sas_example() -> None:
    protocol = _load(_cls_data())
    evaluation = evaluate_endpoints(protocol, _skin_frame())
    kappa = evaluation.endpoint("kappa")
    assert kappa.estimate is not None
    assert kappa.estimate.value == pytest.approx(0.3449, abs=5e-5)
    assert kappa.estimate.se == pytest.approx(0.0724, abs=5e-5)
    assert (kappa.estimate.ci_low, kappa.estimate.ci_high) == pytest.approx(
        (0.2030, 0.4868), abs=5e-5
    )
    assert kappa.estimate.n == int(SKIN.sum())
    assert kappa.verdict is Verdict.PASS


def test_one_vs_rest_auc_uses_the_positive_classes() -> None:
    protocol = _load(_cls_data())
    frame = _skin_frame()
    evaluation = evaluate_endpoints(protocol, frame)
    auc = evaluation.endpoint("auc").estimate
    assert auc is not None
    y = frame["condition"].isin(["terrible", "poor"]).to_numpy()
    s = frame["score"].to_numpy()
    # Mann-Whitney: the probability that a positive case outscores a negative one
    pos, neg = s[y], s[~y]
    expected = (np.greater.outer(pos, neg).sum() + 0.5 * np.equal.outer(pos, neg).sum()) / (
        len(pos) * len(neg)
    )
    assert auc.value == pytest.approx(expected, abs=1e-12)


def test_failed_case_counts_as_a_disagreement_in_kappa() -> None:
    protocol = _load(_cls_data())
    frame = _skin_frame()
    frame.loc[0, ["status", "score", "predicted_class"]] = ["failed", np.nan, None]
    evaluation = evaluate_endpoints(protocol, frame)
    kappa = evaluation.endpoint("kappa").estimate
    assert kappa is not None and kappa.n == int(SKIN.sum())
    from workbench import stats

    reference = frame["condition"].tolist()
    predicted = [NO_OUTPUT_CLASS, *frame["predicted_class"].tolist()[1:]]
    expected = stats.cohen_kappa(reference, predicted, categories=[*SKIN_CLASSES, NO_OUTPUT_CLASS])
    assert kappa.value == pytest.approx(expected.value, abs=1e-12)
    assert kappa.value < 0.3449


def test_label_outside_the_classes_is_named() -> None:
    protocol = _load(_cls_data())
    frame = _skin_frame()
    frame.loc[3, "condition"] = "excellent"
    with pytest.raises(ProtocolError) as info:
        evaluate_endpoints(protocol, frame)
    assert "'condition'" in str(info.value) and "excellent" in str(info.value)
    assert "s003" in str(info.value)


@pytest.mark.parametrize(
    ("reference", "field", "message"),
    [
        ({"positive_classes": ["excellent"]}, "positive_classes[0]", "expected one of classes"),
        ({"positive_classes": SKIN_CLASSES}, "positive_classes", "fewer than all"),
        ({"classes": ["only"]}, "classes", "at least two distinct"),
        ({"classes": None, "positive_classes": None}, "endpoints[0].metric", "classes"),
        ({"positive_classes": None}, "endpoints[1].metric", "positive_classes"),
    ],
)
def test_class_errors_name_the_field(reference: dict[str, Any], field: str, message: str) -> None:
    text = _error(_cls_data(**reference))
    assert field in text and message in text, text


def test_kappa_only_protocol_needs_no_positive_classes() -> None:
    data = _cls_data(positive_classes=None)
    data["endpoints"] = data["endpoints"][:1]
    evaluation = evaluate_endpoints(_load(data), _skin_frame())
    kappa = evaluation.endpoint("kappa").estimate
    assert kappa is not None and kappa.value == pytest.approx(0.3449, abs=5e-5)


def test_one_named_structure_needs_no_structure_on_endpoints_or_rules() -> None:
    data = _seg_data()
    data["reference_standard"]["segmentation"]["structures"] = STRUCTURES[1:]
    data["endpoints"] = data["endpoints"][1:]
    data["endpoints"][0].pop("structure")
    data["discrepancy_rules"][0].pop("structure")
    protocol = _load(data)
    assert protocol.structure_of(None) == "spleen"
    frame = _frame()
    evaluation = evaluate_endpoints(protocol, frame)
    spleen = evaluation.endpoint("spleen-dice")
    assert spleen.structure == "spleen" and spleen.n_cases == 5
    assert {h.case_id for h in find_discrepancies(protocol, frame)} == {
        h.case_id for h in find_discrepancies(_load(_seg_data()), frame)
    }

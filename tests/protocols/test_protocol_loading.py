"""Loading protocols: shipped files, every schema error path, hashes and diffs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from workbench.errors import ProtocolError
from workbench.protocols import (
    CriterionStatistic,
    Operator,
    Protocol,
    Task,
    diff_protocols,
    load_protocol,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "validation_protocols").glob("*.yaml"))
CLASSIFICATION = ROOT / "validation_protocols" / "malignancy-classification-v1.yaml"
SEGMENTATION = ROOT / "validation_protocols" / "lesion-segmentation-v1.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return CLASSIFICATION.read_text(encoding="utf-8")


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle``."""
    return text[: text.index(needle)].count("\n") + 1


def _error(text: str) -> str:
    with pytest.raises(ProtocolError) as info:
        load_protocol(text)
    return str(info.value)


def test_two_protocols_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"lesion-segmentation-v1.yaml", "malignancy-classification-v1.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_protocols_load(path: Path) -> None:
    protocol = load_protocol(path)
    assert protocol.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert protocol.source_text == path.read_text(encoding="utf-8")
    assert any(ep.primary for ep in protocol.endpoints)
    assert protocol.subgroup_acceptance is not None
    assert protocol.adjudication.required_before_approval
    approved = next(s for s in protocol.signatures if s.meaning == "approved")
    assert "authored" in approved.distinct_from


def test_shipped_protocols_name_a_known_quality_suite() -> None:
    from workbench.quality import SUITES

    for path in SHIPPED:
        assert load_protocol(path).data_quality_suite in SUITES


def test_segmentation_protocol_content() -> None:
    p = load_protocol(SEGMENTATION)
    assert p.task is Task.SEGMENTATION
    assert p.reference_standard.segmentation is not None
    assert p.reference_standard.segmentation.rule.value == "majority"
    primary = p.endpoint("dice-mean")
    assert primary.criterion.statistic is CriterionStatistic.CI_LOW
    assert primary.criterion.operator is Operator.GE
    assert primary.criterion_text() == ("lower bound of the 95% CI (bootstrap) of mean Dice >= 0.7")
    assert p.endpoint("hd95-median").criterion_text().endswith("<= 10 mm")


def test_classification_protocol_content() -> None:
    p = load_protocol(CLASSIFICATION)
    assert p.task is Task.CLASSIFICATION
    assert p.reference_standard.labels_column == "consensus_malignant"
    assert p.endpoint("auc").criterion_text() == (
        "lower bound of the 95% CI (delong) of AUC >= 0.8"
    )
    assert [ep.id for ep in p.subgroup_endpoints()] == ["auc"]


def test_path_as_str_and_bytes_give_same_hash(text: str) -> None:
    a = load_protocol(str(CLASSIFICATION))
    b = load_protocol(CLASSIFICATION.read_bytes())
    c = load_protocol(text)
    assert a.sha256 == b.sha256 == c.sha256


def test_canonical_text_ignores_comments_and_formatting(text: str) -> None:
    a = load_protocol(text)
    b = load_protocol("# a new comment\n" + text.replace("version: 1", "version:   1"))
    assert a.sha256 != b.sha256
    assert a.canonical_text == b.canonical_text
    assert a.canonical_sha256 == b.canonical_sha256


def test_protocol_is_immutable(text: str) -> None:
    p = load_protocol(text)
    with pytest.raises(Exception):  # pydantic's frozen-instance error
        p.version = 2  # type: ignore[misc]


def test_diff_protocols(text: str) -> None:
    assert diff_protocols(text, text) == ""
    new = text.replace("threshold: 0.80}", "threshold: 0.82}", 1)
    diff = diff_protocols(text, new, old_name="v1", new_name="v2")
    assert diff.startswith("--- v1\n+++ v2\n")
    assert '-    criterion: {statistic: ci_low, operator: ">=", threshold: 0.80}' in diff
    assert '+    criterion: {statistic: ci_low, operator: ">=", threshold: 0.82}' in diff


# -- error paths ---------------------------------------------------------------------------


def test_missing_file() -> None:
    with pytest.raises(ProtocolError, match="Cannot read protocol file"):
        load_protocol("validation_protocols/does-not-exist.yaml")


def test_yaml_syntax_error_names_line(text: str) -> None:
    bad = text.replace("primary: true\n", "primary: [true\n", 1)
    msg = _error(bad)
    assert "YAML syntax error at line" in msg
    line = int(re.search(r"line (\d+)", msg).group(1))  # type: ignore[union-attr]
    assert abs(line - _line_of(bad, "primary: [true")) <= 1


def test_empty_and_non_mapping() -> None:
    assert "empty" in _error("# nothing\n")
    assert "expected a YAML mapping" in _error("- a\n- b\n")


def test_duplicate_key_names_both_lines(text: str) -> None:
    bad = text.replace("task: classification\n", "task: classification\ntask: segmentation\n")
    msg = _error(bad)
    first = _line_of(bad, "task: classification")
    assert f"line {first + 1}: duplicate key 'task' (first defined on line {first})" in msg


def test_unknown_top_level_key(text: str) -> None:
    bad = text.replace("task: classification\n", "task: classification\nowner: qa\n")
    msg = _error(bad)
    assert f"line {_line_of(bad, 'owner:')}: unknown key 'owner' in the top level" in msg


def test_unknown_nested_key(text: str) -> None:
    bad = text.replace("  - id: kappa\n", "  - id: kappa\n    colour: red\n")
    msg = _error(bad)
    assert f"line {_line_of(bad, 'colour:')}: unknown key 'colour' in endpoints[3]" in msg


def test_wrong_type(text: str) -> None:
    bad = text.replace("version: 1", "version: one")
    msg = _error(bad)
    assert f"line {_line_of(bad, 'version: one')}: version:" in msg
    assert "valid integer" in msg and "found 'one'" in msg


def test_unknown_metric_lists_choices(text: str) -> None:
    bad = text.replace("metric: auc", "metric: auroc")
    msg = _error(bad)
    assert f"line {_line_of(bad, 'metric: auroc')}: endpoints[0].metric" in msg
    assert "'auc'" in msg and "auroc" in msg


def test_impossible_auc_threshold(text: str) -> None:
    bad = text.replace("threshold: 0.80}", "threshold: 1.5}", 1)
    msg = _error(bad)
    assert f"line {_line_of(bad, 'threshold: 1.5')}: endpoints[0].criterion.threshold" in msg
    assert "threshold 1.5 is impossible for auc, whose values lie in [0, 1]" in msg


def test_impossible_ci_level(text: str) -> None:
    bad = text.replace("level: 0.95}", "level: 1.2}", 1)
    msg = _error(bad)
    assert f"line {_line_of(bad, 'level: 1.2')}: endpoints[0].ci.level" in msg
    assert "found 1.2" in msg


def test_wrong_operator_direction(text: str) -> None:
    bad = text.replace('operator: ">=", threshold: 0.80}', 'operator: "<=", threshold: 0.80}', 1)
    msg = _error(bad)
    assert "endpoints[0].criterion.operator" in msg and "higher is better" in msg


def test_anti_conservative_bound(text: str) -> None:
    bad = text.replace("statistic: ci_low, operator", "statistic: ci_high, operator", 1)
    assert "anti-conservative" in _error(bad)


def test_ci_method_not_available_for_metric(text: str) -> None:
    bad = text.replace("method: delong", "method: wilson")
    msg = _error(bad)
    assert f"line {_line_of(bad, 'method: wilson')}" in msg
    assert "CI method 'wilson' is not available for auc" in msg


def test_missing_endpoint_fields(text: str) -> None:
    bad = text.replace("    metric: auc\n", "")
    bad = bad.replace('    criterion: {statistic: value, operator: ">=", threshold: 0.60}\n', "")
    msg = _error(bad)
    assert "2 problems" in msg
    assert f"line {_line_of(bad, '- id: auc')}: missing required field 'endpoints[0].metric'" in msg
    assert "missing required field 'endpoints[3].criterion'" in msg


def test_missing_operating_threshold(text: str) -> None:
    bad = text.replace(
        "    operating_threshold: 0.5\n    ci: {method: wilson", "    ci: {method: wilson", 1
    )
    assert "operating_point: {threshold: 0.5}\n" in bad
    bad = bad.replace("operating_point: {threshold: 0.5}\n", "")
    msg = _error(bad)
    assert "metric sensitivity needs an operating_threshold" in msg
    assert f"line {_line_of(bad, 'metric: sensitivity')}" in msg


def test_duplicate_endpoint_ids(text: str) -> None:
    bad = text.replace("id: sensitivity", "id: auc")
    msg = _error(bad)
    lines = [i + 1 for i, ln in enumerate(bad.splitlines()) if ln.strip() == "- id: auc"]
    assert f"line {lines[1]}: endpoints[1].id: duplicate endpoint id 'auc'" in msg


def test_metric_of_other_task(text: str) -> None:
    old = "metric: kappa_model_vs_consensus\n    primary: false\n    operating_threshold: 0.5\n"
    assert old in text
    bad = text.replace(old, "metric: dice_mean\n    primary: false\n")
    assert (
        "metric dice_mean is a segmentation metric but the protocol's task is classification"
        in _error(bad)
    )


def test_subgroup_endpoint_must_exist(text: str) -> None:
    bad = text.replace("endpoints: [auc]", "endpoints: [auc, roc]")
    msg = _error(bad)
    assert "subgroup_acceptance.endpoints[1]" in msg and "'roc' is not an endpoint id" in msg


def test_fixed_criteria_need_criteria(text: str) -> None:
    start = text.index("  criteria:\n")
    end = text.index("discrepancy_rules:")
    bad = text[:start] + "\n" + text[end:]
    assert "rule 'fixed_criteria' needs a non-empty list 'criteria'" in _error(bad)


def test_age_band_needs_increasing_edges(text: str) -> None:
    assert "edges must increase strictly" in _error(
        text.replace("[18, 50, 65, 120]", "[18, 65, 50]")
    )


def test_signature_distinct_from_unknown_meaning(text: str) -> None:
    msg = _error(text.replace("distinct_from: [authored]", "distinct_from: [written]"))
    assert "signatures[2].distinct_from" in msg and "'written'" in msg


def test_admin_cannot_sign(text: str) -> None:
    msg = _error(text.replace("    role: reviewer\n", "    role: admin\n"))
    assert "signatures[1].role" in msg and "found 'admin'" in msg


def test_blinded_reviewers_cannot_see_aggregate(text: str) -> None:
    bad = text.replace(
        "reviewers_see_aggregate_results: false", "reviewers_see_aggregate_results: true"
    )
    assert "blinded reviewers cannot see aggregate results" in _error(bad)


def test_decision_rule_needs_classification() -> None:
    text = SEGMENTATION.read_text(encoding="utf-8")
    bad = text.replace(
        "  - id: inference-failed\n    kind: case_failed\n",
        "  - id: disagree\n    kind: decision_disagrees\n    operating_threshold: 0.5\n",
    )
    assert "'decision_disagrees' needs a classification protocol" in _error(bad)


def test_unknown_discrepancy_kind(text: str) -> None:
    msg = _error(text.replace("kind: case_failed", "kind: case_crashed"))
    assert "discrepancy_rules[1]" in msg and "case_crashed" in msg


def test_many_problems_are_all_listed(text: str) -> None:
    bad = text.replace("version: 1", "version: 0").replace("title: Lesion", "titel: Lesion")
    msg = _error(bad)
    assert "3 problems" in msg  # version >= 1, unknown 'titel', missing 'title'


def test_protocol_built_in_code_has_no_hash() -> None:
    p = Protocol.model_validate(load_protocol(CLASSIFICATION).model_dump())
    assert p.sha256 == "" and p.canonical_text == load_protocol(CLASSIFICATION).canonical_text

"""Endpoints a clinician acts on: locked operating points, calibration, net benefit, PPV/NPV at a
deployment prevalence; evaluated overall and per stratum on small frames with known answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import stats
from workbench.errors import ProtocolError
from workbench.protocols import Verdict, evaluate_endpoints, load_protocol
from workbench.protocols.operating_points import choose_threshold, resolve_operating_point
from workbench.protocols.schema import Criterion, DecisionCurveSpec
from workbench.protocols.supplementary import supplementary_analysis

HEADER = """
id: cls-utility
version: 1
title: t
intended_use: t
task: classification
test_set: {name: t}
reference_standard: {labels_column: y_true}
data_quality_suite: ct-test-set-v1
signatures: [{meaning: authored, role: qa}]
strata: [{factor: manufacturer, min_n: 5}]
"""

AUC = """
  - id: auc
    metric: auc
    criterion: {statistic: value, operator: ">=", threshold: 0.5}
"""


def _protocol(settings: str, endpoints: str = "", *, primary_auc: bool = True):
    body = "endpoints:\n" + (AUC if primary_auc else "") + endpoints
    return load_protocol(HEADER + settings + "\n" + body)


def _frame(n_per: int = 40, seed: int = 2) -> pd.DataFrame:
    """Two scanners; probabilities calibrated on A, too extreme on B."""
    rng = np.random.default_rng(seed)
    rows = []
    for scanner, temperature in (("A", 1.0), ("B", 4.0)):
        for i in range(n_per):
            lp = rng.normal(0.0, 1.5)
            y = int(rng.uniform() < 1.0 / (1.0 + np.exp(-lp)))
            p = 1.0 / (1.0 + np.exp(-temperature * lp))
            rows.append(
                {
                    "case_id": f"{scanner}{i:03d}",
                    "status": "completed",
                    "y_true": y,
                    "score": float(p),
                    "manufacturer": scanner,
                }
            )
    return pd.DataFrame(rows)


CALIBRATION_ENDPOINTS = """
  - id: slope
    metric: calibration_slope
    primary: false
    ci: {n_boot: 400}
    criterion: {statistic: ci, operator: contains, threshold: 1}
  - id: intercept
    metric: calibration_intercept
    primary: false
    ci: {n_boot: 400}
    criterion: {statistic: abs_value, operator: "<=", threshold: 0.5}
  - id: brier
    metric: brier
    primary: false
    ci: {n_boot: 400}
    criterion: {statistic: ci_high, operator: "<=", threshold: 0.3}
  - id: ece
    metric: ece
    primary: false
    ci: {n_boot: 400}
    criterion: {statistic: value, operator: "<=", threshold: 0.1}
"""


# -- criteria ------------------------------------------------------------------------------


def test_interval_and_absolute_criteria_hold_as_written() -> None:
    contains = Criterion(statistic="ci", operator="contains", threshold=1.0)
    assert contains.holds(0.8, 0.6, 1.1) and not contains.holds(0.8, 0.6, 0.95)
    absolute = Criterion(statistic="abs_value", operator="<=", threshold=0.1)
    assert absolute.holds(-0.09, -1, 1) and not absolute.holds(-0.11, -1, 1)


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        ("{statistic: ci, operator: '>=', threshold: 1}", "statistic 'ci' goes with operator"),
        ("{statistic: value, operator: contains, threshold: 1}", "goes with operator 'contains'"),
        ("{statistic: abs_value, operator: '>=', threshold: 1}", "expected operator '<=' or '<'"),
    ],
)
def test_malformed_interval_criteria_are_refused(criterion: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        _protocol(
            "",
            f"  - id: slope\n    metric: calibration_slope\n    primary: false\n"
            f"    criterion: {criterion}\n",
        )


def test_interval_criterion_needs_a_metric_with_an_ideal_value() -> None:
    with pytest.raises(ProtocolError, match="auc is judged by direction"):
        load_protocol(
            HEADER
            + "endpoints:\n  - id: auc\n    metric: auc\n"
            + "    criterion: {statistic: ci, operator: contains, threshold: 0.9}\n"
        )
    with pytest.raises(ProtocolError, match="ideal value 1; use statistic 'ci'"):
        _protocol(
            "",
            "  - id: slope\n    metric: calibration_slope\n    primary: false\n"
            "    criterion: {statistic: abs_value, operator: '<=', threshold: 0.2}\n",
        )


def test_two_sided_metric_refuses_the_anti_conservative_bound() -> None:
    with pytest.raises(ProtocolError, match="anti-conservative"):
        _protocol(
            "",
            "  - id: slope\n    metric: calibration_slope\n    primary: false\n"
            "    criterion: {statistic: ci_high, operator: '>=', threshold: 0.8}\n",
        )


def test_metrics_name_what_they_need() -> None:
    ppv = "  - id: ppv\n    metric: ppv_at_prevalence\n    primary: false\n" + (
        "    criterion: {statistic: value, operator: '>=', threshold: 0.2}\n"
    )
    with pytest.raises(ProtocolError, match="needs an operating_threshold"):
        _protocol("deployment_prevalence: 0.1", ppv)
    with pytest.raises(ProtocolError, match="needs the protocol's deployment_prevalence"):
        _protocol("operating_point: {threshold: 0.5}", ppv)
    gain = "  - id: nb\n    metric: net_benefit_gain\n    primary: false\n" + (
        "    criterion: {statistic: ci_low, operator: '>', threshold: 0}\n"
    )
    with pytest.raises(ProtocolError, match="judged at decision_curve.criterion_at"):
        _protocol("decision_curve: {thresholds: [0.05, 0.5]}", gain)


def test_adjusted_subgroup_rule_refuses_an_interval_criterion() -> None:
    with pytest.raises(ProtocolError, match="easier, not harder"):
        _protocol(
            "subgroup_acceptance: {endpoints: [slope], rule: adjusted_criterion}",
            "  - id: slope\n    metric: calibration_slope\n    primary: false\n"
            "    criterion: {statistic: ci, operator: contains, threshold: 1}\n",
        )


def test_decision_curve_grid_holds_the_criterion_threshold() -> None:
    spec = DecisionCurveSpec(thresholds=(0.05, 0.5), step=0.1, criterion_at=0.2)
    assert spec.grid() == (0.05, 0.15, 0.2, 0.25, 0.35, 0.45, 0.5)
    with pytest.raises(ValueError, match="outside the decision curve's range"):
        DecisionCurveSpec(thresholds=(0.05, 0.5), criterion_at=0.6)


# -- operating points ----------------------------------------------------------------------


def test_rule_chooses_the_most_specific_threshold_reaching_the_sensitivity() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    chosen = choose_threshold(y, s, "sensitivity_at_least", 0.75)
    assert chosen.threshold == 0.6 and chosen.sensitivity == 0.75 and chosen.specificity == 0.75
    assert choose_threshold(y, s, "specificity_at_least", 1.0).threshold == 0.8
    # Youden ties at 0.6 and 0.8 (J = 0.5): the highest threshold wins
    assert choose_threshold(y, s, "youden", None).threshold == 0.8


def _rule_protocol(tmp_path: Path, digest: str | None = None):
    tuning = tmp_path / "tuning.csv"
    tuning.write_text("y_true,score\n1,0.9\n1,0.8\n1,0.6\n1,0.3\n0,0.7\n0,0.4\n0,0.2\n0,0.1\n")
    sha = digest or hashlib.sha256(tuning.read_bytes()).hexdigest()
    return _protocol(
        "operating_point: {rule: sensitivity_at_least, value: 0.75, "
        f"tuning_set: {{path: tuning.csv, sha256: {sha}}}}}",
        "  - id: sens\n    metric: sensitivity\n    primary: false\n"
        "    criterion: {statistic: value, operator: '>=', threshold: 0.5}\n",
    )


def test_rule_on_a_pinned_tuning_set_locks_the_threshold(tmp_path: Path) -> None:
    protocol = _rule_protocol(tmp_path)
    frame = _frame()
    with pytest.raises(ProtocolError, match="not resolved"):
        evaluate_endpoints(protocol, frame)
    resolved, point = resolve_operating_point(protocol, base_dir=tmp_path)
    assert point is not None and point.threshold == 0.6 and point.n == 8
    assert resolved.sha256 == protocol.sha256
    result = evaluate_endpoints(resolved, frame).endpoint("sens")
    assert result.operating_threshold == 0.6
    expected = stats.binary_metrics(frame["y_true"], frame["score"], threshold=0.6).sensitivity
    assert result.estimate == expected
    summary = supplementary_analysis(resolved, frame).operating_point
    assert summary is not None and "resolved to score >= 0.6" in summary.description


def test_tuning_set_with_another_hash_is_refused(tmp_path: Path) -> None:
    protocol = _rule_protocol(tmp_path, digest="'" + "0" * 64 + "'")
    with pytest.raises(ProtocolError, match="the protocol pins 0000"):
        resolve_operating_point(protocol, base_dir=tmp_path)


def test_tuning_set_path_stays_inside_the_protocol_folder() -> None:
    with pytest.raises(ProtocolError, match="without '..'"):
        _protocol(
            "operating_point: {rule: youden, tuning_set: {path: ../x.csv, sha256: '"
            + "0" * 64
            + "'}}",
            "",
        )


# -- threshold endpoints at the locked operating point -------------------------------------


def test_f1_and_predictive_values_at_the_deployment_prevalence() -> None:
    protocol = _protocol(
        "operating_point: {threshold: 0.5}\ndeployment_prevalence: 0.05",
        """
  - id: f1
    metric: f1
    primary: false
    ci: {n_boot: 500}
    criterion: {statistic: value, operator: ">=", threshold: 0.5}
  - id: ppv-dep
    metric: ppv_at_prevalence
    primary: false
    ci: {method: adjusted-logit}
    criterion: {statistic: value, operator: ">=", threshold: 0.1}
  - id: npv-dep
    metric: npv_at_prevalence
    primary: false
    ci: {method: adjusted-logit}
    criterion: {statistic: ci_low, operator: ">=", threshold: 0.9}
""",
    )
    frame = _frame()
    result = evaluate_endpoints(protocol, frame)
    y, s = frame["y_true"].to_numpy(), frame["score"].to_numpy()
    called = s >= 0.5
    tp, fp, fn = (called & (y == 1)).sum(), (called & (y == 0)).sum(), (~called & (y == 1)).sum()
    f1 = result.endpoint("f1")
    assert f1.estimate is not None
    assert f1.estimate.value == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert f1.estimate.ci_low <= f1.estimate.value <= f1.estimate.ci_high
    bm = stats.binary_metrics(y, s, threshold=0.5)
    assert bm.sensitivity is not None and bm.specificity is not None
    pv = stats.predictive_values(bm.sensitivity, bm.specificity, 0.05, method="adjusted-logit")
    assert result.endpoint("ppv-dep").estimate == pv.ppv
    assert result.endpoint("npv-dep").estimate == pv.npv
    assert (
        "at deployment prevalence 0.05, score >= 0.5" in result.endpoint("npv-dep").criterion_text
    )
    # per stratum: the same statistic on the stratum's cases
    part = frame[frame["manufacturer"] == "B"]
    bm_b = stats.binary_metrics(part["y_true"], part["score"], threshold=0.5)
    assert bm_b.sensitivity is not None and bm_b.specificity is not None
    pv_b = stats.predictive_values(
        bm_b.sensitivity, bm_b.specificity, 0.05, method="adjusted-logit"
    )
    assert result.endpoint("ppv-dep").stratum("manufacturer", "B").estimate == pv_b.ppv


# -- calibration ---------------------------------------------------------------------------


def test_calibration_endpoints_overall_and_per_stratum() -> None:
    protocol = _protocol("calibration: {bins: 5, strategy: quantile}", CALIBRATION_ENDPOINTS)
    frame = _frame()
    result = evaluate_endpoints(protocol, frame)
    for where, part in (("overall", frame), ("B", frame[frame["manufacturer"] == "B"])):
        expected = stats.calibration(
            part["y_true"], part["score"], bins=5, strategy="quantile", n_boot=400, seed=0
        )
        for endpoint_id, name in (
            ("slope", "slope"),
            ("intercept", "intercept"),
            ("brier", "brier"),
            ("ece", "ece"),
        ):
            endpoint = result.endpoint(endpoint_id)
            got = (
                endpoint.estimate
                if where == "overall"
                else endpoint.stratum("manufacturer", where).estimate
            )
            assert got == getattr(expected, name), (where, endpoint_id)
    # too extreme predictions on scanner B: slope well below 1
    slope_b = result.endpoint("slope").stratum("manufacturer", "B").estimate
    assert slope_b is not None and slope_b.ci_high < 1.0
    slope = result.endpoint("slope")
    assert slope.criterion_text == "the 95% CI (bootstrap) of calibration slope contains 1"
    assert slope.overall_verdict is (
        Verdict.PASS
        if slope.estimate and slope.estimate.ci_low <= 1 <= slope.estimate.ci_high
        else Verdict.FAIL
    )


def test_fixed_subgroup_criteria_judge_calibration_per_scanner() -> None:
    protocol = _protocol(
        "subgroup_acceptance: {endpoints: [slope], rule: fixed_criteria, criteria: "
        "[{statistic: ci, operator: contains, threshold: 1}]}",
        CALIBRATION_ENDPOINTS,
    )
    slope = evaluate_endpoints(protocol, _frame()).endpoint("slope")
    assert slope.stratum("manufacturer", "B").verdict is Verdict.FAIL
    assert slope.stratum("manufacturer", "A").verdict is Verdict.PASS
    assert slope.verdict is Verdict.FAIL


def test_failed_case_gets_the_worst_probability() -> None:
    protocol = _protocol("", CALIBRATION_ENDPOINTS)
    frame = _frame()
    positive = frame.index[frame["y_true"] == 1][0]
    frame.loc[positive, ["status", "score"]] = ["failed", np.nan]
    brier = evaluate_endpoints(protocol, frame).endpoint("brier").estimate
    worst = frame["score"].fillna(0.0)
    assert brier is not None
    assert brier.value == pytest.approx(float(np.mean((worst - frame["y_true"]) ** 2)))


@pytest.mark.parametrize("policy", ["fail", "not_evaluable"])
def test_uncalibrated_scores_make_calibration_not_evaluable(policy: str) -> None:
    protocol = _protocol(
        f"score_is_probability: false\nnot_evaluable_counts_as: {policy}\n"
        "decision_curve: {thresholds: [0.05, 0.5], criterion_at: 0.2}",
        CALIBRATION_ENDPOINTS.replace("metric: brier\n    primary: false", "metric: brier")
        + "  - id: nb\n    metric: net_benefit_gain\n    primary: false\n"
        "    criterion: {statistic: ci_low, operator: '>', threshold: 0}\n",
    )
    frame = _frame()
    frame["score"] = frame["score"] * 40 - 20  # a logit-like score, not a probability
    result = evaluate_endpoints(protocol, frame)
    for endpoint_id in ("slope", "intercept", "brier", "ece", "nb"):
        endpoint = result.endpoint(endpoint_id)
        assert endpoint.verdict is Verdict.NOT_EVALUABLE
        assert "score_is_probability: false" in endpoint.reason
        assert all(s.estimate is None for s in endpoint.strata)
    assert result.endpoint("auc").verdict is Verdict.PASS
    expected = Verdict.FAIL if policy == "fail" else Verdict.NOT_EVALUABLE
    assert result.verdict is expected
    assert "brier NOT EVALUABLE" in result.verdict_reason
    extra = supplementary_analysis(protocol, frame)
    assert not extra.calibration and "score_is_probability: false" in extra.calibration_reason
    assert extra.decision_curve is None and "not a probability" in extra.decision_curve_reason


# -- net benefit ---------------------------------------------------------------------------


def test_net_benefit_gain_is_judged_against_both_default_strategies() -> None:
    protocol = _protocol(
        "decision_curve: {thresholds: [0.05, 0.5], step: 0.05, criterion_at: 0.2}",
        "  - id: nb\n    metric: net_benefit_gain\n    primary: false\n    ci: {n_boot: 500}\n"
        "    criterion: {statistic: ci_low, operator: '>', threshold: 0}\n",
    )
    frame = _frame()
    result = evaluate_endpoints(protocol, frame).endpoint("nb")
    cmp = stats.net_benefit_comparison(frame["y_true"], frame["score"], 0.2, n_boot=500, seed=0)
    binding = min(cmp.over_treat_all, cmp.over_treat_none, key=lambda e: e.ci_low)
    assert result.estimate is not None
    assert (result.estimate.value, result.estimate.ci_low) == (binding.value, binding.ci_low)
    assert (result.overall_verdict is Verdict.PASS) == cmp.exceeds_defaults()
    assert "at threshold probability 0.2" in result.criterion_text
    curve = supplementary_analysis(protocol, frame).decision_curve
    assert curve is not None and curve.criterion_at == 0.2
    assert curve.thresholds == protocol.decision_curve.grid()  # type: ignore[union-attr]
    at = curve.thresholds.index(0.2)
    assert curve.net_benefit[at] == pytest.approx(cmp.model.value)


def test_net_benefit_at_the_deployment_prevalence() -> None:
    """With decision_curve.prevalence: deployment, curve and endpoint use the protocol's
    deployment prevalence (classes reweighted), not the enriched test set's."""
    endpoint = (
        "  - id: nb\n    metric: net_benefit_gain\n    primary: false\n    ci: {n_boot: 500}\n"
        "    criterion: {statistic: ci_low, operator: '>', threshold: 0}\n"
    )
    settings = "deployment_prevalence: 0.1\ndecision_curve: {thresholds: [0.05, 0.5], step: 0.05, "
    deployed = _protocol(settings + "criterion_at: 0.2, prevalence: deployment}", endpoint)
    enriched = _protocol(settings + "criterion_at: 0.2}", endpoint)
    frame = _frame()
    assert frame["y_true"].mean() > 0.3  # enriched against the deployment prevalence 0.1
    result = evaluate_endpoints(deployed, frame).endpoint("nb")
    cmp = stats.net_benefit_comparison(
        frame["y_true"], frame["score"], 0.2, n_boot=500, seed=0, prevalence=0.1
    )
    binding = min(cmp.over_treat_all, cmp.over_treat_none, key=lambda e: e.ci_low)
    assert result.estimate is not None
    assert (result.estimate.value, result.estimate.ci_low) == (binding.value, binding.ci_low)
    curve = supplementary_analysis(deployed, frame).decision_curve
    test_set_curve = supplementary_analysis(enriched, frame).decision_curve
    assert curve is not None and test_set_curve is not None
    assert curve.prevalence == pytest.approx(0.1)
    assert test_set_curve.prevalence == pytest.approx(frame["y_true"].mean())
    at = curve.thresholds.index(0.2)
    assert curve.net_benefit[at] == pytest.approx(cmp.model.value)
    assert curve.net_benefit[at] != pytest.approx(test_set_curve.net_benefit[at])


def test_deployment_net_benefit_needs_a_deployment_prevalence() -> None:
    with pytest.raises(ProtocolError, match="decision_curve.prevalence: deployment needs"):
        _protocol("decision_curve: {thresholds: [0.05, 0.5], prevalence: deployment}")


def test_calibration_summaries_overall_and_by_factor() -> None:
    protocol = _protocol("calibration: {bins: 4, by: [manufacturer]}", CALIBRATION_ENDPOINTS)
    extra = supplementary_analysis(protocol, _frame())
    assert [c.label for c in extra.calibration] == [
        "overall",
        "manufacturer = A",
        "manufacturer = B",
    ]
    overall = extra.calibration_overall
    assert overall is not None and overall.n == 80 and overall.bins == 4
    assert sum(b.n for b in overall.reliability) == 80
    assert overall.curve_predicted and len(overall.curve_lower) == len(overall.curve_predicted)


def test_protocols_without_calibration_keep_their_supplementary_analyses() -> None:
    extra = supplementary_analysis(_protocol(""), _frame())
    assert extra.calibration == () and extra.calibration_reason == ""
    assert extra.decision_curve is None and extra.operating_point is None
    assert "calibration" not in extra.to_dict() and "decision_curve" not in extra.to_dict()


# -- several cases per patient (cluster_by) --------------------------------------------------


def _bilateral_frame(n_patients: int = 40, seed: int = 5) -> pd.DataFrame:
    """Two cases per patient (left and right) whose truth and score share the patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        diseased = rng.uniform() < 0.4
        level = rng.normal(1.2 if diseased else -1.2, 1.0)
        for side in ("L", "R"):
            y = int(diseased if rng.uniform() < 0.9 else not diseased)
            score = 1.0 / (1.0 + np.exp(-(level + rng.normal(0.0, 0.4))))
            rows.append(
                {
                    "case_id": f"P{i:03d}{side}",
                    "patient": f"P{i:03d}",
                    "status": "completed",
                    "y_true": y,
                    "score": float(score),
                    "manufacturer": "A" if i % 2 else "B",
                }
            )
    return pd.DataFrame(rows)


CLUSTER_ENDPOINTS = """
  - id: sens
    metric: sensitivity
    primary: false
    criterion: {statistic: ci_low, operator: ">=", threshold: 0.5}
  - id: spec
    metric: specificity
    primary: false
    ci: {method: clopper-pearson}
    criterion: {statistic: ci_low, operator: ">=", threshold: 0.5}
  - id: acc
    metric: accuracy
    primary: false
    criterion: {statistic: value, operator: ">=", threshold: 0.5}
  - id: ppv-dep
    metric: ppv_at_prevalence
    primary: false
    ci: {method: adjusted-logit}
    criterion: {statistic: value, operator: ">=", threshold: 0.1}
  - id: f1
    metric: f1
    primary: false
    ci: {n_boot: 300}
    criterion: {statistic: value, operator: ">=", threshold: 0.5}
  - id: kappa
    metric: kappa_model_vs_consensus
    primary: false
    criterion: {statistic: value, operator: ">=", threshold: 0.2}
"""


#: The operating point and prevalence the cluster tests' endpoints need.
CLUSTER_SETTINGS = "operating_point: {threshold: 0.5}\ndeployment_prevalence: 0.1\n"


def test_cluster_by_makes_every_interval_treat_the_patient_as_the_unit() -> None:
    clustered = _protocol(CLUSTER_SETTINGS + "cluster_by: patient", CLUSTER_ENDPOINTS)
    plain = _protocol(CLUSTER_SETTINGS, CLUSTER_ENDPOINTS)
    frame = _bilateral_frame()
    result = evaluate_endpoints(clustered, frame)
    independent = evaluate_endpoints(plain, frame)
    y, s = frame["y_true"].to_numpy(), frame["score"].to_numpy()
    patients = frame["patient"].to_numpy()
    bm = stats.binary_metrics(y, s, threshold=0.5, clusters=patients)
    assert result.endpoint("sens").estimate == bm.sensitivity
    assert result.endpoint("acc").estimate == bm.accuracy
    spec = stats.binary_metrics(
        y, s, threshold=0.5, clusters=patients, method="clopper-pearson"
    ).specificity
    assert result.endpoint("spec").estimate == spec
    for endpoint_id in ("sens", "spec", "acc"):
        got = result.endpoint(endpoint_id).estimate
        naive = independent.endpoint(endpoint_id).estimate
        assert got is not None and naive is not None
        assert got.value == naive.value
        assert "clustered" in got.method and "clustered" not in naive.method
    # two correlated reads per patient: the accuracy interval widens
    acc, acc_naive = result.endpoint("acc").estimate, independent.endpoint("acc").estimate
    assert acc is not None and acc_naive is not None
    assert acc.ci_high - acc.ci_low > acc_naive.ci_high - acc_naive.ci_low
    assert bm.sensitivity is not None and bm.specificity is not None
    pv = stats.predictive_values(
        bm.sensitivity,
        bm.specificity,
        0.1,
        method="adjusted-logit",
        rate_variance="standard-error",
    )
    assert result.endpoint("ppv-dep").estimate == pv.ppv
    f1 = result.endpoint("f1").estimate
    assert f1 is not None and "40 clusters" in f1.method
    kappa = result.endpoint("kappa").estimate
    assert kappa is not None and "cases treated as independent" in kappa.method
    # per stratum: the stratum's cases and patients
    part = frame[frame["manufacturer"] == "A"]
    bm_a = stats.binary_metrics(
        part["y_true"], part["score"], threshold=0.5, clusters=part["patient"]
    )
    assert result.endpoint("sens").stratum("manufacturer", "A").estimate == bm_a.sensitivity


def test_cluster_by_needs_every_case_to_name_its_patient() -> None:
    protocol = _protocol(CLUSTER_SETTINGS + "cluster_by: patient", CLUSTER_ENDPOINTS)
    frame = _bilateral_frame()
    frame.loc[3, "patient"] = None
    with pytest.raises(ProtocolError, match=r"cluster_by 'patient'.*P001R"):
        evaluate_endpoints(protocol, frame)
    with pytest.raises(ProtocolError, match="cluster_by"):
        evaluate_endpoints(protocol, frame.drop(columns="patient"))


def test_cluster_by_resamples_patients_for_calibration_and_net_benefit() -> None:
    protocol = _protocol(
        "cluster_by: patient\ncalibration: {bins: 5}\n"
        "decision_curve: {thresholds: [0.05, 0.5], step: 0.05, criterion_at: 0.2}",
        CALIBRATION_ENDPOINTS
        + "  - id: nb\n    metric: net_benefit_gain\n    primary: false\n    ci: {n_boot: 300}\n"
        "    criterion: {statistic: ci_low, operator: '>', threshold: 0}\n",
    )
    frame = _bilateral_frame()
    result = evaluate_endpoints(protocol, frame)
    expected = stats.calibration(
        frame["y_true"], frame["score"], bins=5, n_boot=400, seed=0, clusters=frame["patient"]
    )
    assert result.endpoint("slope").estimate == expected.slope
    cmp = stats.net_benefit_comparison(
        frame["y_true"], frame["score"], 0.2, n_boot=300, seed=0, clusters=frame["patient"]
    )
    binding = min(cmp.over_treat_all, cmp.over_treat_none, key=lambda e: e.ci_low)
    nb = result.endpoint("nb").estimate
    assert nb is not None and (nb.value, nb.ci_low) == (binding.value, binding.ci_low)
    extra = supplementary_analysis(protocol, frame)
    assert extra.decision_curve is not None and "clusters" in extra.decision_curve.method

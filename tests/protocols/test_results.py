"""The typed run result: exact round trip through its stored form, and reading older layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.errors import ProtocolError
from workbench.protocols import (
    SCHEMA_VERSION,
    AgreementResult,
    CaseAccounting,
    CaseNote,
    EndpointResult,
    HeterogeneityResult,
    ProtocolEvaluation,
    RocSummary,
    RunContext,
    RunResults,
    StratumResult,
    StructureAccounting,
    SupplementaryAnalyses,
)
from workbench.protocols.results import (
    CalibrationSummary,
    DecisionCurveSummary,
    FrocSummary,
    OperatingPointSummary,
    ReliabilityBin,
)
from workbench.stats import Estimate
from workbench.vocabulary import CaseStatus, EstimateStatus, Verdict

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
)
_ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=10)
_number = st.floats(allow_nan=False, allow_infinity=False, width=64)
_level = st.floats(min_value=0.5, max_value=0.999)


@st.composite
def estimates(draw: st.DrawFn) -> Estimate:
    return Estimate(
        value=draw(_number),
        ci_low=draw(_number),
        ci_high=draw(_number),
        level=draw(_level),
        method=draw(_text),
        n=draw(st.integers(0, 10_000)),
        se=draw(st.none() | _number),
    )


@st.composite
def strata(draw: st.DrawFn) -> StratumResult:
    estimate = draw(st.none() | estimates())
    return StratumResult(
        factor=draw(_ident),
        stratum=draw(_text),
        n=draw(st.integers(0, 500)),
        estimate=estimate,
        level=draw(_level),
        verdict=draw(st.sampled_from(Verdict)),
        reason=draw(_text),
        status=EstimateStatus.OK
        if estimate is not None
        else draw(st.sampled_from([EstimateStatus.INSUFFICIENT_N, EstimateStatus.NOT_ESTIMABLE])),
    )


@st.composite
def endpoints(draw: st.DrawFn) -> EndpointResult:
    return EndpointResult(
        endpoint_id=draw(_ident),
        metric=draw(_ident),
        primary=draw(st.booleans()),
        estimate=draw(st.none() | estimates()),
        criterion_text=draw(_text),
        overall_verdict=draw(st.sampled_from(Verdict)),
        subgroup_rule_text=draw(st.none() | _text),
        strata=tuple(draw(st.lists(strata(), max_size=4))),
        verdict=draw(st.sampled_from(Verdict)),
        reason=draw(_text),
        n_cases=draw(st.integers(0, 1000)),
        operating_threshold=draw(st.none() | _number),
        structure=draw(st.none() | _ident),
    )


@st.composite
def calibration_summaries(draw: st.DrawFn) -> CalibrationSummary:
    grid = st.lists(_number, max_size=4).map(tuple)
    bins = st.builds(
        ReliabilityBin,
        bin_low=_number,
        bin_high=_number,
        n=st.integers(0, 500),
        events=st.integers(0, 500),
        mean_predicted=_number,
        observed=_number,
        observed_ci_low=_number,
        observed_ci_high=_number,
    )
    overall = draw(st.booleans())
    return CalibrationSummary(
        factor="" if overall else draw(_ident),
        stratum="overall" if overall else draw(_text),
        n=draw(st.integers(0, 500)),
        events=draw(st.integers(0, 500)),
        intercept=draw(st.none() | estimates()),
        slope=draw(st.none() | estimates()),
        brier=draw(st.none() | estimates()),
        ece=draw(st.none() | estimates()),
        bins=draw(st.integers(2, 50)),
        strategy=draw(st.sampled_from(["uniform", "quantile"])),
        reliability=tuple(draw(st.lists(bins, max_size=3))),
        curve_predicted=draw(grid),
        curve_observed=draw(grid),
        curve_lower=draw(grid),
        curve_upper=draw(grid),
        curve_level=draw(_level),
        reasons=tuple(sorted(draw(st.dictionaries(_ident, _text, max_size=2)).items())),
    )


@st.composite
def decision_curves(draw: st.DrawFn) -> DecisionCurveSummary:
    size = draw(st.integers(1, 4))
    values = st.lists(st.none() | _number, min_size=size, max_size=size).map(tuple)
    return DecisionCurveSummary(
        thresholds=tuple(draw(st.lists(_number, min_size=size, max_size=size))),
        net_benefit=draw(values),
        net_benefit_low=draw(values),
        net_benefit_high=draw(values),
        treat_all=draw(values),
        treat_all_low=draw(values),
        treat_all_high=draw(values),
        interventions_avoided=draw(values),
        interventions_avoided_low=draw(values),
        interventions_avoided_high=draw(values),
        prevalence=draw(_number),
        level=draw(_level),
        method=draw(_text),
        n=draw(st.integers(0, 1000)),
        criterion_at=draw(st.none() | _number),
    )


@st.composite
def supplementary(draw: st.DrawFn) -> SupplementaryAnalyses:
    grid = tuple(draw(st.lists(_number, min_size=1, max_size=5)))
    roc = draw(
        st.none()
        | st.builds(
            RocSummary,
            fpr=st.just(grid),
            tpr=st.just(grid),
            lower=st.just(grid),
            upper=st.just(grid),
            band=st.sampled_from(["pointwise", "simultaneous"]),
            level=_level,
            auc=estimates(),
            operating_point=st.none() | st.tuples(_number, _number),
            threshold=_number,
        )
    )
    kappas = st.builds(
        AgreementResult,
        kind=st.sampled_from(["model vs reader", "reader vs reader"]),
        rater_a=_ident,
        rater_b=_ident,
        n=st.integers(0, 100),
        kappa=st.none(),
        percent_agreement=st.none() | _number,
        reason=_ident,
    )
    hetero = st.builds(
        HeterogeneityResult,
        endpoint_id=_ident,
        factor=_ident,
        statistic=_number,
        df=st.integers(0, 10),
        p_value=_number,
        method=_text,
    )
    fleiss = draw(st.none() | estimates())
    calibration = tuple(draw(st.lists(calibration_summaries(), max_size=3)))
    curve = draw(st.none() | decision_curves())
    return SupplementaryAnalyses(
        roc=roc,
        roc_reason="" if roc is not None else draw(_text),
        agreement=tuple(draw(st.lists(kappas, max_size=3))),
        reader_columns=tuple(draw(st.lists(_ident, max_size=3, unique=True))),
        readers_fleiss_kappa=fleiss,
        readers_fleiss_reason="" if fleiss is not None else draw(_text),
        heterogeneity=tuple(draw(st.lists(hetero, max_size=3))),
        distribution_metric=draw(st.sampled_from(["", "dice"])),
        distributions=tuple(
            sorted(
                draw(
                    st.dictionaries(_ident, st.lists(_number, max_size=4).map(tuple), max_size=3)
                ).items()
            )
        ),
        calibration=calibration,
        calibration_reason="" if calibration else draw(_text),
        decision_curve=curve,
        decision_curve_reason="" if curve is not None else draw(_text),
        operating_point=draw(
            st.none()
            | st.builds(
                OperatingPointSummary,
                threshold=_number,
                description=_text,
                deployment_prevalence=st.none() | _number,
            )
        ),
    )


@st.composite
def froc_summaries(draw: st.DrawFn) -> FrocSummary:
    size = draw(st.integers(1, 5))
    grid = st.lists(_number, min_size=size, max_size=size).map(tuple)
    points = draw(st.integers(0, 4))
    fractions = st.lists(st.floats(0, 1), min_size=points, max_size=points).map(tuple)
    return FrocSummary(
        nlf=draw(grid),
        llf=draw(grid),
        lower=draw(grid),
        upper=draw(grid),
        level=draw(_level),
        fpf=draw(fractions),
        wllf=draw(fractions),
        wafroc=draw(st.none() | estimates()),
        sensitivity_at_fppi=tuple(
            draw(st.lists(st.tuples(st.floats(0.01, 10), st.none() | estimates()), max_size=3))
        ),
        n_cases=draw(st.integers(0, 1000)),
        n_diseased=draw(st.integers(0, 1000)),
        n_lesions=draw(st.integers(0, 5000)),
        n_marks=draw(st.integers(0, 5000)),
        wafroc_fom=draw(st.sampled_from(["wafroc", "wafroc1"])),
    )


@st.composite
def run_results(draw: st.DrawFn) -> RunResults:
    eps = tuple(draw(st.lists(endpoints(), min_size=1, max_size=3)))
    notes = st.builds(CaseNote, case_id=_ident, reason=_text)
    return RunResults(
        run_uid=draw(_ident),
        context=RunContext(*(draw(_ident) for _ in range(6))),
        workbench_version=draw(_ident),
        surface_dice_tolerance_mm=draw(st.floats(0.1, 10)),
        accounting=CaseAccounting(
            n_cases=draw(st.integers(0, 100)),
            n_completed=draw(st.integers(0, 100)),
            n_failed=draw(st.integers(0, 100)),
            n_excluded=draw(st.integers(0, 100)),
            failed=tuple(draw(st.lists(notes, max_size=3))),
            excluded=tuple(draw(st.lists(notes, max_size=3))),
            structures=tuple(
                draw(
                    st.lists(
                        st.builds(
                            StructureAccounting,
                            structure=_ident,
                            n_cases=st.integers(0, 100),
                            excluded=st.lists(notes, max_size=2).map(tuple),
                        ),
                        max_size=3,
                    )
                )
            ),
        ),
        evaluation=ProtocolEvaluation(
            protocol_id=draw(_ident),
            protocol_version=draw(st.integers(1, 99)),
            protocol_sha256=draw(_ident),
            task=draw(st.sampled_from(["segmentation", "classification", "detection"])),
            verdict=draw(st.sampled_from([Verdict.PASS, Verdict.FAIL, Verdict.NOT_EVALUABLE])),
            endpoints=eps,
            n_cases_total=draw(st.integers(0, 100)),
            n_analysed=draw(st.integers(0, 100)),
            failed_case_ids=tuple(draw(st.lists(_ident, max_size=3))),
            excluded_case_ids=tuple(draw(st.lists(_ident, max_size=3))),
            failed_cases_policy=draw(st.sampled_from(["count_as_error", "exclude"])),
            notes=tuple(draw(st.lists(_text, max_size=2))),
            verdict_reason=draw(_text),
        ),
        supplementary=draw(supplementary()),
        froc=draw(st.none() | froc_summaries()),
        froc_reason=draw(st.just("") | _text),
    )


@settings(max_examples=60, deadline=None)
@given(run_results())
def test_round_trip_is_exact(results: RunResults) -> None:
    stored = results.to_dict()
    # The stored form is plain JSON (no NaN, no enums, no tuples) ...
    text = json.dumps(stored, allow_nan=False, sort_keys=True)
    again = RunResults.from_dict(json.loads(text))
    # ... and reads back to an equal object, whose stored form is byte-identical.
    assert again == results
    assert json.dumps(again.to_dict(), allow_nan=False, sort_keys=True) == text
    assert stored["schema_version"] == SCHEMA_VERSION


def test_non_finite_numbers_are_stored_as_null() -> None:
    estimate = Estimate(
        value=0.5, ci_low=0.1, ci_high=0.9, level=0.95, method="x", n=3, se=math.nan
    )
    stored = StratumResult(
        factor="f",
        stratum="a",
        n=3,
        estimate=estimate,
        level=0.95,
        verdict=Verdict.PASS,
        reason="",
        status=EstimateStatus.OK,
    ).to_dict()
    assert stored["estimate"]["se"] is None
    json.dumps(stored, allow_nan=False)  # the stored form never carries NaN


def test_newer_schema_is_refused_with_the_fix() -> None:
    with pytest.raises(ProtocolError, match="schema version 99.*Upgrade the workbench"):
        RunResults.from_dict({"schema_version": 99, "evaluation": {}})
    with pytest.raises(ProtocolError, match="lack their 'evaluation'"):
        RunResults.from_dict({"schema_version": 2})


def test_case_accounting_groups_reasons() -> None:
    accounting = CaseAccounting(
        n_cases=5,
        n_completed=1,
        n_failed=1,
        n_excluded=3,
        failed=(CaseNote("d", "time limit exceeded"),),
        excluded=(
            CaseNote("a", "no row in reference/labels.csv for this series"),
            CaseNote("b", "no row in reference/labels.csv for this series"),
            CaseNote("c", "modality MR is not CT"),
        ),
    )
    assert accounting.reasons(CaseStatus.EXCLUDED) == [
        ("no row in reference/labels.csv for this series", 2),
        ("modality MR is not CT", 1),
    ]
    assert accounting.reasons("failed") == [("time limit exceeded", 1)]
    assert accounting.n_included == 2


@pytest.mark.parametrize("path", sorted(LEGACY.glob("run-results-v1-*.json")), ids=lambda p: p.stem)
def test_results_stored_by_release_0_1_are_read(path: Path) -> None:
    """Results written by release 0.1 (no schema_version) migrate on read, nothing lost."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert "schema_version" not in stored
    results = RunResults.from_dict(stored)
    assert results.schema_version == 1
    legacy_verdict = stored["evaluation"]["verdict"]
    assert results.verdict is Verdict.parse(legacy_verdict)
    assert results.verdict.value == legacy_verdict.lower().replace("not_estimable", "not_evaluable")
    assert results.accounting.n_cases == stored["accounting"]["n_cases"]
    for endpoint, old in zip(results.endpoints, stored["evaluation"]["endpoints"], strict=True):
        assert endpoint.endpoint_id == old["endpoint_id"]
        assert endpoint.verdict is Verdict.parse(old["verdict"])
        if old["estimate"] is None:
            assert endpoint.estimate is None
        else:
            assert endpoint.estimate is not None
            assert endpoint.estimate.value == old["estimate"]["value"]
            assert endpoint.estimate.ci_low == old["estimate"]["ci_low"]
        for stratum, old_row in zip(endpoint.strata, old["strata"], strict=True):
            assert (stratum.factor, stratum.stratum, stratum.n) == (
                old_row["factor"],
                old_row["stratum"],
                old_row["n"],
            )
            assert stratum.verdict is Verdict.parse(old_row["verdict"])
            if old_row["value"] is None:
                assert stratum.estimate is None and stratum.status is not EstimateStatus.OK
            else:
                assert stratum.estimate is not None
                assert stratum.estimate.value == old_row["value"]
    # Re-stored in the current layout, it reads back to the same object.
    assert RunResults.from_dict(results.to_dict()) == results.__class__(
        **{
            **{f: getattr(results, f) for f in results.__dataclass_fields__},
            "schema_version": SCHEMA_VERSION,
        }
    )


def test_single_structure_results_keep_their_stored_form() -> None:
    """Endpoints without a structure store no 'structure' key, so earlier results and new
    single-structure results have one layout; a stored structure reads back."""
    endpoint = EndpointResult(
        endpoint_id="dice-mean",
        metric="dice_mean",
        primary=True,
        estimate=None,
        criterion_text="",
        overall_verdict=Verdict.NOT_EVALUABLE,
        subgroup_rule_text=None,
        strata=(),
        verdict=Verdict.NOT_EVALUABLE,
        reason="no cases",
        n_cases=0,
    )
    assert "structure" not in endpoint.to_dict()
    assert endpoint.display_name == "dice-mean"
    stored = {**endpoint.to_dict(), "structure": "liver"}
    liver = EndpointResult.from_dict(stored)
    assert liver.structure == "liver" and liver.display_name == "dice-mean (liver)"
    assert liver.to_dict() == stored
    accounting = CaseAccounting(n_cases=1, n_completed=1, n_failed=0, n_excluded=0)
    assert "structures" not in accounting.to_dict()


@pytest.mark.parametrize("path", sorted(LEGACY.glob("run-results-v1-*.json")), ids=lambda p: p.stem)
def test_results_stored_before_structures_have_none(path: Path) -> None:
    results = RunResults.from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert all(endpoint.structure is None for endpoint in results.endpoints)
    assert results.accounting.structures == ()


def test_froc_is_stored_only_for_detection_runs() -> None:
    """Runs without FROC curves keep the stored layout (and hashes) of earlier releases."""
    from hypothesis import find

    plain = find(run_results(), lambda r: r.froc is None and not r.froc_reason)
    assert "froc" not in plain.to_dict() and "froc_reason" not in plain.to_dict()
    with_froc = find(run_results(), lambda r: r.froc is not None)
    stored = with_froc.to_dict()
    assert stored["froc"]["wafroc_fom"] in ("wafroc", "wafroc1")
    assert RunResults.from_dict(stored).froc == with_froc.froc
    # a FROC summary stored before wafroc_fom existed reads as wAFROC
    del stored["froc"]["wafroc_fom"]
    assert RunResults.from_dict(stored).froc.wafroc_fom == "wafroc"  # type: ignore[union-attr]

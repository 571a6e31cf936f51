"""Power and sample size of MRMC reader studies against RJafroc's published outputs.

Reference values are the outputs printed in RJafroc's own documentation (Chakraborty,
Phillips & Zhai; github.com/dpc10ster/RJafroc, GPL-3), for the Van Dyke data
(RJafroc ``dataset02``, our ``tests/data/reference/vandyke_long.csv``):

* ``docs/reference/SsPowerGivenJK.html``, ``docs/reference/SsSampleSizeKGivenJ.html`` and
  ``docs/reference/SsPowerGivenJKOrVarCom.html`` at commit ``daf04634`` (2022-07-07,
  pkgdown 2.0.5 render of the examples of RJafroc 2.0.1.9000);
* ``docs/articles/Ch11Vig4SampleSize.html`` ("ROC-OR sample size") at commit ``c2df3d93``
  (2020-12-04, pkgdown 1.6.1 render of the vignette).

RJafroc's functions implement Hillis, Obuchowski & Berbaum, Acad Radiol 18:129-142 (2011),
Eq. 10, as ours do. Each test quotes the R command whose printed output it checks and
compares to the printed precision (half a unit in the last printed digit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import (
    MrmcVarianceComponents,
    mrmc_power,
    mrmc_sample_size,
    obuchowski_rockette,
    variance_components_from_pilot,
    variance_components_from_result,
)

#: RJafroc SsPowerGivenJK.html, EXAMPLE 4A: the OR variance components of dataset02 as
#: printed there (UtilORVarComponentsFactorial(dataset02, FOM = "Wilcoxon")$VarCom).
PRINTED_OR: dict[str, Any] = {
    "var_tr": 0.00020040252,
    "cov1": 0.00034661371,
    "cov2": 0.00034407483,
    "cov3": 0.00023902837,
    "var": 0.00080228827,
    "n_cases": 114,
}
#: RJafroc's observed effect of dataset02, trt0 - trt1, as printed in Ch11Vig5SampleSize.html
#: (commit c2df3d93): StSignificanceTesting(dataset02, FOM = "Wilcoxon", method = "DBM").
OBSERVED_EFFECT = -0.043800322


@pytest.fixture(scope="module")
def pilot(vandyke: pd.DataFrame) -> MrmcVarianceComponents:
    return variance_components_from_pilot(
        vandyke,
        reader="reader",
        modality="treatment",
        case="case",
        truth="truth",
        rating="rating",
        source="Van Dyke (RJafroc dataset02)",
    )


@pytest.fixture(scope="module")
def printed() -> MrmcVarianceComponents:
    return MrmcVarianceComponents(**PRINTED_OR)


# --- Reproduction of RJafroc's printed outputs -------------------------------------------
def test_pilot_components_are_rjafrocs(pilot: MrmcVarianceComponents) -> None:
    # EXAMPLE 4A of SsPowerGivenJK.html prints the components to 8 significant digits.
    for key in ("var_tr", "cov1", "cov2", "cov3", "var"):
        assert getattr(pilot, key) == pytest.approx(PRINTED_OR[key], abs=5e-12), key
    assert (pilot.n_cases, pilot.n_readers) == (114, 5)
    assert pilot.observed_effect == pytest.approx(OBSERVED_EFFECT, abs=5e-10)
    assert pilot.source == "Van Dyke (RJafroc dataset02)"


def test_power_from_the_pilot_matches_SsPowerGivenJK(pilot: MrmcVarianceComponents) -> None:
    # SsPowerGivenJK(dataset = dataset02, FOM = "Wilcoxon", effectSize = 0.05, J = 6, K = 251)
    # #>    powerRRRC   ncpRRRC   df2RRRC     fRRRC
    # #> 1 0.89228199 11.611453 16.127037 4.4882496          (EXAMPLE 3, daf04634)
    res = mrmc_power(pilot, effect_size=0.05, n_readers=6, n_cases=251)
    assert res.power == pytest.approx(0.89228199, abs=5e-9)
    assert res.noncentrality == pytest.approx(11.611453, abs=5e-7)
    assert res.df_den == pytest.approx(16.127037, abs=5e-7)
    assert res.critical_value == pytest.approx(4.4882496, abs=5e-8)
    assert (res.analysis, res.hypothesis) == ("RRRC", "difference")


def test_power_from_printed_components_matches_example_4A(
    printed: MrmcVarianceComponents,
) -> None:
    # SsPowerGivenJK(dataset = NULL, FOM = "Wilcoxon", effectSize = 0.05, J = 6, K = 251,
    #   list(JStar = 5, KStar = 114, VarTR = 0.00020040252, Cov1 = 0.00034661371,
    #   Cov2 = 0.00034407483, Cov3 = 0.00023902837, Var = 0.00080228827))
    # #> 1 0.89228199 11.611453 16.127038 4.4882495          (EXAMPLE 4A, daf04634)
    res = mrmc_power(printed, effect_size=0.05, n_readers=6, n_cases=251)
    assert res.power == pytest.approx(0.89228199, abs=5e-9)
    assert res.noncentrality == pytest.approx(11.611453, abs=5e-7)
    assert res.df_den == pytest.approx(16.127038, abs=5e-7)
    assert res.critical_value == pytest.approx(4.4882495, abs=5e-8)


def test_dbm_components_give_the_same_power_as_example_5A() -> None:
    # SsPowerGivenJK(dataset = NULL, J = 6, K = 251, effectSize = 0.05, method = "DBM",
    #   FOM = "Wilcoxon", list(KStar = 114, VarR = 0.00153499935, VarC = 0.02724923428,
    #   VarTR = 0.00020040252, VarTC = 0.01197529621, VarRC = 0.01226472859,
    #   VarErr = 0.03997160319))
    # #> 1 0.89228199 11.611453 16.127037 4.4882496          (EXAMPLE 5A, daf04634)
    vc = MrmcVarianceComponents.from_dict(
        {
            "n_cases": 114,
            "dbm": {
                "var_tr": 0.00020040252,
                "var_c": 0.02724923428,
                "var_tc": 0.01197529621,
                "var_rc": 0.01226472859,
                "var_err": 0.03997160319,
            },
        }
    )
    assert vc.var == pytest.approx(PRINTED_OR["var"], abs=5e-12)
    assert vc.cov1 == pytest.approx(PRINTED_OR["cov1"], abs=5e-12)
    res = mrmc_power(vc, effect_size=0.05, n_readers=6, n_cases=251)
    assert res.power == pytest.approx(0.89228199, abs=5e-9)
    assert res.noncentrality == pytest.approx(11.611453, abs=5e-7)


def test_power_matches_SsPowerGivenJKOrVarCom_example(pilot: MrmcVarianceComponents) -> None:
    # SsPowerGivenJKOrVarCom(J = 5, K = 100, KStar = 114, effectSize = 0.05, VarTR, Cov1,
    #   Cov2, Cov3, Var, analysisOption = "RRRC")$powerRRRC
    # #> RRRC power =  0.57333598                             (daf04634)
    res = mrmc_power(pilot, effect_size=0.05, n_readers=5, n_cases=100)
    assert res.power == pytest.approx(0.57333598, abs=5e-9)


def test_sample_size_matches_SsSampleSizeKGivenJ(pilot: MrmcVarianceComponents) -> None:
    # SsSampleSizeKGivenJ(dataset02, FOM = "Wilcoxon", effectSize = 0.05, J = 6, method = "OR")
    # #>   KRRRC  powerRRRC
    # #> 1   170 0.80161864                                   (daf04634)
    row = mrmc_sample_size(pilot, effect_size=0.05, power=0.8, readers=[6]).rows[0]
    assert (row.n_readers, row.n_cases) == (6, 170)
    assert row.power == pytest.approx(0.80161864, abs=5e-9)


#: SsPowerTable(dataset02, FOM = "Wilcoxon", analysisOption = "RRRC")$powerTableRRRC with
#: the observed effect size, Ch11Vig4SampleSize.html (c2df3d93); every reader count 3-100
#: (each row is printed twice there). None: ">2000" cases.
POWER_TABLE = {
    3: (None, None), 4: (1089, 0.8), 5: (344, 0.801), 6: (251, 0.801), 7: (211, 0.801),
    8: (188, 0.801), 9: (173, 0.801), 10: (163, 0.802), 11: (155, 0.801), 12: (149, 0.802),
    13: (144, 0.801), 14: (140, 0.802), 15: (137, 0.802), 16: (134, 0.802), 17: (131, 0.801),
    18: (129, 0.801), 19: (127, 0.801), 20: (126, 0.802), 21: (124, 0.801), 22: (123, 0.802),
    23: (122, 0.802), 24: (121, 0.803), 25: (120, 0.802), 26: (119, 0.802), 27: (118, 0.802),
    28: (117, 0.801), 29: (117, 0.803), 30: (116, 0.802), 31: (115, 0.801), 32: (115, 0.803),
    33: (114, 0.801), 34: (114, 0.803), 35: (113, 0.801), 36: (113, 0.802), 37: (112, 0.8),
    38: (112, 0.802), 39: (112, 0.803), 40: (111, 0.801), 41: (111, 0.802), 42: (111, 0.803),
    43: (110, 0.801), 44: (110, 0.802), 45: (110, 0.802), 46: (110, 0.803), 47: (109, 0.801),
    48: (109, 0.802), 49: (109, 0.802), 50: (109, 0.803), 51: (108, 0.8), 52: (108, 0.801),
    53: (108, 0.802), 54: (108, 0.802), 55: (108, 0.803), 56: (107, 0.8), 57: (107, 0.801),
    58: (107, 0.801), 59: (107, 0.802), 60: (107, 0.802), 61: (107, 0.803), 62: (107, 0.803),
    63: (106, 0.8), 64: (106, 0.801), 65: (106, 0.801), 66: (106, 0.802), 67: (106, 0.802),
    68: (106, 0.802), 69: (106, 0.803), 70: (106, 0.803), 71: (106, 0.804), 72: (105, 0.8),
    73: (105, 0.801), 74: (105, 0.801), 75: (105, 0.801), 76: (105, 0.802), 77: (105, 0.802),
    78: (105, 0.802), 79: (105, 0.803), 80: (105, 0.803), 81: (105, 0.803), 82: (105, 0.803),
    83: (104, 0.8), 84: (104, 0.8), 85: (104, 0.801), 86: (104, 0.801), 87: (104, 0.801),
    88: (104, 0.801), 89: (104, 0.802), 90: (104, 0.802), 91: (104, 0.802), 92: (104, 0.802),
    93: (104, 0.802), 94: (104, 0.803), 95: (104, 0.803), 96: (104, 0.803), 97: (104, 0.803),
    98: (104, 0.804), 99: (104, 0.804), 100: (103, 0.8),
}  # fmt: skip


def test_power_table_matches_SsPowerTable(pilot: MrmcVarianceComponents) -> None:
    table = mrmc_sample_size(
        pilot, effect_size=pilot.observed_effect or 0.0, power=0.8, readers=POWER_TABLE
    )
    assert [r.n_readers for r in table.rows] == list(POWER_TABLE)
    for row in table.rows:
        cases, power = POWER_TABLE[row.n_readers]
        assert row.n_cases == cases, row
        if power is None:
            assert row.power is None and row.power_limit < 0.8
            assert "add readers" in row.reason
        else:
            assert row.power is not None
            assert round(row.power, 3) == pytest.approx(power, abs=1e-9), row  # signif(, 3)


def test_observed_effect_power_and_other_generalisations(pilot: MrmcVarianceComponents) -> None:
    d = OBSERVED_EFFECT
    # Ch11Vig4SampleSize.html (c2df3d93):
    # SsPowerGivenJK(dataset02, FOM = "Wilcoxon", J = 6, K = 251, method = "OR",
    #   analysisOption = "RRRC") -> "Expected power is 0.80054026." (ncpRRRC 8.91, df2 16.1)
    res = mrmc_power(pilot, effect_size=d, n_readers=6, n_cases=251)
    assert res.power == pytest.approx(0.80054026, abs=5e-9)
    assert res.noncentrality == pytest.approx(8.91, abs=5e-3)
    assert res.df_den == pytest.approx(16.1, abs=5e-2)
    # SsSampleSizeKGivenJ(dataset02, FOM = "Wilcoxon", J = 10, method = "OR",
    #   analysisOption = X): RRRC "163 ... 0.80156249", FRRC "131 ... 0.80091813",
    #   RRFC "53 ... 0.80496663".
    for analysis, cases, power in (
        ("RRRC", 163, 0.80156249),
        ("FRRC", 131, 0.80091813),
        ("RRFC", 53, 0.80496663),
    ):
        row = mrmc_sample_size(pilot, effect_size=d, readers=[10], analysis=analysis).rows[0]
        assert row.n_cases == cases, analysis
        assert row.power == pytest.approx(power, abs=5e-9), analysis


# --- Properties --------------------------------------------------------------------------
ANALYSES = ("RRRC", "FRRC", "RRFC")


@pytest.mark.parametrize("analysis", ANALYSES)
def test_power_without_effect_is_the_tests_size(
    printed: MrmcVarianceComponents, analysis: str
) -> None:
    for alpha in (0.01, 0.05, 0.1):
        two = mrmc_power(
            printed, effect_size=0.0, n_readers=5, n_cases=80, alpha=alpha, analysis=analysis
        )
        assert two.power == pytest.approx(alpha, abs=1e-10)
        one = mrmc_power(
            printed,
            effect_size=0.0,
            n_readers=5,
            n_cases=80,
            alpha=alpha,
            analysis=analysis,
            hypothesis="superiority",
        )
        assert one.power == pytest.approx(alpha / 2, abs=1e-10)
        ni = mrmc_power(
            printed,
            effect_size=-0.04,
            n_readers=5,
            n_cases=80,
            alpha=alpha,
            analysis=analysis,
            hypothesis="non_inferiority",
            margin=0.04,
        )
        assert ni.power == pytest.approx(alpha / 2, abs=1e-10)


@pytest.mark.parametrize("analysis", ANALYSES)
def test_power_grows_with_readers_cases_and_effect(
    printed: MrmcVarianceComponents, analysis: str
) -> None:
    def power(d: float, j: int, k: int) -> float:
        return mrmc_power(printed, effect_size=d, n_readers=j, n_cases=k, analysis=analysis).power

    by_readers = [power(0.05, j, 100) for j in (2, 3, 5, 8, 13, 21)]
    by_cases = [power(0.05, 6, k) for k in (20, 50, 100, 200, 400, 800)]
    by_effect = [power(d, 6, 100) for d in (0.01, 0.02, 0.04, 0.06, 0.1)]
    for series in (by_readers, by_cases, by_effect):
        assert all(b > a for a, b in zip(series, series[1:], strict=False)), series
    # The two-sided test does not care about the direction of the difference.
    assert power(-0.05, 6, 100) == pytest.approx(power(0.05, 6, 100), abs=1e-12)


@pytest.mark.parametrize("analysis", ANALYSES)
def test_one_sided_power_is_half_of_the_two_sided_test(
    printed: MrmcVarianceComponents, analysis: str
) -> None:
    # F(1, ddf, λ) is the square of a non-central t with δ = ±sqrt(λ): the two-sided
    # power is the sum of the one-sided powers of the two directions.
    for d in (0.01, 0.03, 0.06):
        kw: dict[str, Any] = {"n_readers": 5, "n_cases": 120, "analysis": analysis}
        two = mrmc_power(printed, effect_size=d, **kw).power
        up = mrmc_power(printed, effect_size=d, hypothesis="superiority", **kw).power
        down = mrmc_power(printed, effect_size=-d, hypothesis="superiority", **kw).power
        assert up + down == pytest.approx(two, abs=1e-9)
        # Non-inferiority by m at d is superiority at d + m.
        ni = mrmc_power(
            printed, effect_size=d - 0.02, hypothesis="non_inferiority", margin=0.02, **kw
        )
        assert ni.power == pytest.approx(up, abs=1e-12)


def test_sample_size_rows_are_the_smallest_that_reach_the_target(
    printed: MrmcVarianceComponents,
) -> None:
    table = mrmc_sample_size(
        printed,
        effect_size=0.0,
        power=0.85,
        readers=[4, 6, 10],
        hypothesis="non_inferiority",
        margin=0.05,
    )
    assert table.hypothesis == "non_inferiority" and table.margin == 0.05
    frame = table.to_frame()
    assert list(frame["n_readers"]) == [4, 6, 10]
    for row in table.rows:
        assert row.n_cases is not None and row.power is not None
        kw: dict[str, Any] = {
            "hypothesis": "non_inferiority",
            "margin": 0.05,
            "n_readers": row.n_readers,
        }
        at = mrmc_power(printed, effect_size=0.0, n_cases=row.n_cases, **kw).power
        before = mrmc_power(printed, effect_size=0.0, n_cases=row.n_cases - 1, **kw).power
        assert at == pytest.approx(row.power, abs=1e-12)
        assert before < 0.85 <= at
    needed = [r.n_cases or 0 for r in table.rows]
    assert needed == sorted(needed, reverse=True)
    record = table.to_dict()
    assert record["components"]["var_tr"] == PRINTED_OR["var_tr"]
    assert record["rows"][0]["n_readers"] == 4


def test_components_from_a_result_and_a_dict_round_trip(vandyke: pd.DataFrame) -> None:
    result = obuchowski_rockette(
        vandyke, reader="reader", modality="treatment", case="case", truth="truth", rating="rating"
    )
    vc = variance_components_from_result(result, observed_effect=0.0438, source="study x@1")
    assert vc.observed_effect == 0.0438 and vc.source == "study x@1"
    assert MrmcVarianceComponents.from_dict(vc.to_dict()) == vc
    # Fixed readers: more cases always help, so the ceiling is certainty.
    row = mrmc_sample_size(vc, effect_size=0.05, readers=[3], analysis="FRRC").rows[0]
    assert row.power_limit == 1.0 and row.n_cases is not None


# --- Bad input: one clear error naming what and where ------------------------------------
def test_bad_components_name_the_key_and_the_file() -> None:
    with pytest.raises(StatisticsError, match=r"pilot\.yaml: missing \['cov3'\]"):
        MrmcVarianceComponents.from_dict(
            {k: v for k, v in PRINTED_OR.items() if k != "cov3"}, where="pilot.yaml"
        )
    with pytest.raises(StatisticsError, match=r"p\.json: unknown key\(s\) \['covv2'\]"):
        MrmcVarianceComponents.from_dict({**PRINTED_OR, "covv2": 0.1}, where="p.json")
    with pytest.raises(StatisticsError, match="missing n_cases"):
        MrmcVarianceComponents.from_dict({k: v for k, v in PRINTED_OR.items() if k != "n_cases"})
    missing = r"dbm needs exactly .*missing \['var_tc', 'var_rc', 'var_err'\]"
    with pytest.raises(StatisticsError, match=missing):
        MrmcVarianceComponents.from_dict({"n_cases": 50, "dbm": {"var_tr": 0.1, "var_c": 0.1}})
    with pytest.raises(StatisticsError, match="cov1 must be a number, found 'abc'"):
        MrmcVarianceComponents.from_dict({**PRINTED_OR, "cov1": "abc"})
    with pytest.raises(StatisticsError, match="var must be positive"):
        MrmcVarianceComponents(**{**PRINTED_OR, "var": 0.0})
    with pytest.raises(StatisticsError, match=r"\|cov2\| must not exceed var"):
        MrmcVarianceComponents(**{**PRINTED_OR, "cov2": 0.01})
    with pytest.raises(StatisticsError, match="n_cases must be at least 2"):
        MrmcVarianceComponents(**{**PRINTED_OR, "n_cases": 1})


def test_bad_planning_input_is_refused(printed: MrmcVarianceComponents) -> None:
    kw: dict[str, Any] = {"effect_size": 0.05, "n_readers": 5, "n_cases": 100}
    with pytest.raises(StatisticsError, match="Did you mean 'RRRC'"):
        mrmc_power(printed, analysis="RRCR", **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="Did you mean 'non_inferiority'"):
        mrmc_power(printed, hypothesis="noninferiority", **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="needs a margin > 0"):
        mrmc_power(printed, hypothesis="non_inferiority", **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="margin applies to non_inferiority only"):
        mrmc_power(printed, margin=0.05, **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="n_readers must be at least 2, found 1"):
        mrmc_power(printed, effect_size=0.05, n_readers=1, n_cases=100)
    with pytest.raises(StatisticsError, match="alpha must lie strictly between 0 and 1"):
        mrmc_power(printed, alpha=1.5, **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="components must be MrmcVarianceComponents"):
        mrmc_power(PRINTED_OR, **kw)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="each number of readers must be at least 2"):
        mrmc_sample_size(printed, effect_size=0.05, readers=[4, 1])
    with pytest.raises(StatisticsError, match="readers must be a list"):
        mrmc_sample_size(printed, effect_size=0.05, readers=6)  # type: ignore[arg-type]
    with pytest.raises(StatisticsError, match="Give a non-zero effect_size"):
        mrmc_sample_size(printed, effect_size=0.0)
    with pytest.raises(StatisticsError, match="power must exceed the test's size 0.05"):
        mrmc_sample_size(printed, effect_size=0.05, power=0.04)
    degenerate = MrmcVarianceComponents(
        var_tr=0.0, var=1e-3, cov1=1e-3, cov2=1e-3, cov3=1e-3, n_cases=50
    )
    with pytest.raises(NotEstimableError, match="variance of the difference is 0"):
        mrmc_power(degenerate, **kw)  # type: ignore[arg-type]
    assert np.isfinite(mrmc_power(printed, **kw).power)  # type: ignore[arg-type]

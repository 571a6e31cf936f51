"""Fixed-readers (FRRC) and fixed-cases (RRFC) OR analyses against OR-DBM MRMC.

Reference: OR-DBM MRMC 2.51 (Schartz, Hillis, Pesce, Berbaum; build 20181028), trapezoidal
area, jackknife covariance, on the Van Dyke data: output file "VanDyke trap area jackknife
anova.txt", shipped with RJafroc (github.com/dpc10ster/RJafroc, commit 44b0e39e,
tests/testthat/goodValues361/Iowa/VanDyke.txt), "Analysis 2" and "Analysis 3". Values are
printed to 4-8 decimals; the tolerances are half a unit of the last printed digit.
"""

from __future__ import annotations

import pandas as pd
import pytest

from workbench.stats import MrmcResult, obuchowski_rockette


@pytest.fixture(scope="module")
def result(vandyke: pd.DataFrame) -> MrmcResult:
    return obuchowski_rockette(
        vandyke, reader="reader", modality="treatment", case="case", truth="truth", rating="rating"
    )


def test_fixed_readers_random_cases_matches_or_dbm_mrmc(result: MrmcResult) -> None:
    fr = result.fixed_readers
    assert fr is not None
    assert fr.analysis == "FRRC" and fr.df_num == 1.0 and fr.df_den is None
    # a) X2 value 5.47595, DF 1, Pr > X2 0.0193
    assert fr.statistic == pytest.approx(5.47595, abs=5e-6)
    assert fr.p_value == pytest.approx(0.0193, abs=5e-5)
    # b) 1 - 2: -0.04380, StdErr 0.01872, 95% CI (-0.08049, -0.00711)
    d = fr.differences[("1", "2")]
    assert (d.value, d.se) == pytest.approx((-0.04380, 0.01872), abs=5e-6)
    assert (d.ci_low, d.ci_high) == pytest.approx((-0.08049, -0.00711), abs=5e-6)
    # c) single treatment: AUC, Std Error, 95% CI
    for mod, (auc, se, lo, hi) in {
        "1": (0.89703704, 0.02428971, 0.84943008, 0.94464399),
        "2": (0.94083736, 0.01677632, 0.90795637, 0.97371835),
    }.items():
        m = fr.modality_auc[mod]
        assert (m.value, m.se, m.ci_low, m.ci_high) == pytest.approx((auc, se, lo, hi), abs=5e-9)
    # d) single-reader differences 1 - 2: Difference, StdErr, 95% CI
    for reader, (diff, se, lo, hi) in {
        "1": (-0.02818, 0.02551, -0.07818, 0.02182),
        "2": (-0.04654, 0.02630, -0.09809, 0.00501),
        "3": (-0.01787, 0.03121, -0.07904, 0.04330),
        "4": (-0.02625, 0.01729, -0.06014, 0.00764),
        "5": (-0.10016, 0.04406, -0.18651, -0.01381),
    }.items():
        r = fr.reader_differences[(reader, "1", "2")]
        assert (r.value, r.se, r.ci_low, r.ci_high) == pytest.approx((diff, se, lo, hi), abs=5e-6)


def test_random_readers_fixed_cases_matches_or_dbm_mrmc(result: MrmcResult) -> None:
    fc = result.fixed_cases
    assert fc is not None
    assert fc.analysis == "RRFC" and fc.df_den == 4.0
    # a) Treatment MS 0.00479617, T*R MS 0.00055103, F 8.70, Pr > F 0.0420
    assert fc.statistic == pytest.approx(0.00479617 / 0.00055103, rel=2e-5)
    assert round(fc.statistic, 2) == 8.70
    assert fc.p_value == pytest.approx(0.0420, abs=5e-5)
    # b) 1 - 2: StdErr 0.01485, DF 4, 95% CI (-0.08502, -0.00258)
    d = fc.differences[("1", "2")]
    assert d.se == pytest.approx(0.01485, abs=5e-6)
    assert (d.ci_low, d.ci_high) == pytest.approx((-0.08502, -0.00258), abs=5e-6)
    # c) single treatment: Std Error, DF 4, 95% CI
    m1, m2 = fc.modality_auc["1"], fc.modality_auc["2"]
    assert (m1.se, m1.ci_low, m1.ci_high) == pytest.approx(
        (0.02482994, 0.82809808, 0.96597599), abs=5e-9
    )
    assert (m2.se, m2.ci_low, m2.ci_high) == pytest.approx(
        (0.01615303, 0.89598936, 0.98568536), abs=5e-9
    )

"""Clustered (patient-level) intervals of proportions against R survey and statsmodels.

Reference values: ``Rscript tests/data/reference/survey_clustered_proportions.R``
(R 4.2.2, survey 4.1-1) on ``apiclus1``, 183 schools in 15 districts, districts as
clusters: ``svymean`` standard errors, ``svyciprop(method = "beta")`` (Korn-Graubard)
intervals, and the Wilson score interval at the same effective sample size found by
``uniroot``. The script prints the figures recorded below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from workbench.errors import NotEstimableError
from workbench.stats import binary_metrics, clustered_proportion_ci, proportion_ci

API = Path(__file__).parents[1] / "data" / "reference" / "api_clus1.csv"

# (column, type filter, p, svymean SE, beta 95 %, beta 90 %, effective n, Wilson 95 %)
R_SURVEY = [
    (
        "sch_wide",
        None,
        0.87431693989071,
        0.0205642374474379,
        (0.823118604941657, 0.915076523703784),
        (0.832422093761494, 0.908736236787897),
        219.909196809643,
        (0.82398275165232, 0.911798221786301),
    ),
    (
        "awards",
        None,
        0.710382513661202,
        0.0333503726041141,
        (0.632600481411733, 0.780010595742797),
        (0.646286694437961, 0.768641883323477),
        156.544795822265,
        (0.634965234254319, 0.77572192492879),
    ),
    (
        "awards",
        "E",
        0.770833333333333,
        0.0293379907572698,
        (0.701234120159664, 0.830986157489745),
        (0.713587374227847, 0.821312179170142),
        174.325566402656,
        (0.703003298028768, 0.826984494884835),
    ),
]


def _api(stype: str | None) -> pd.DataFrame:
    frame = pd.read_csv(API)
    return frame if stype is None else frame[frame["stype"] == stype]


@pytest.mark.parametrize(
    ("column", "stype", "p", "se", "beta95", "beta90", "n_eff", "wilson95"), R_SURVEY
)
def test_matches_r_survey_svyciprop_beta_and_svymean(
    column: str,
    stype: str | None,
    p: float,
    se: float,
    beta95: tuple[float, float],
    beta90: tuple[float, float],
    n_eff: float,
    wilson95: tuple[float, float],
) -> None:
    data = _api(stype)
    kg = clustered_proportion_ci(
        data[column], data["district"], method="clopper-pearson", truncate=False
    )
    assert kg.value == pytest.approx(p, abs=1e-12)
    assert kg.se == pytest.approx(se, abs=1e-12)
    assert (kg.ci_low, kg.ci_high) == pytest.approx(beta95, abs=1e-9)
    assert f"effective n {n_eff:.1f}" in kg.method
    kg90 = clustered_proportion_ci(
        data[column], data["district"], method="clopper-pearson", truncate=False, level=0.9
    )
    assert (kg90.ci_low, kg90.ci_high) == pytest.approx(beta90, abs=1e-9)
    wilson = clustered_proportion_ci(data[column], data["district"], truncate=False)
    assert (wilson.ci_low, wilson.ci_high) == pytest.approx(wilson95, abs=1e-9)


def test_standard_error_is_statsmodels_cluster_robust_one() -> None:
    """An intercept-only OLS with cluster-robust covariance has the same standard error."""
    data = _api(None)
    fit = sm.OLS(data["awards"].astype(float), np.ones(len(data))).fit(
        cov_type="cluster", cov_kwds={"groups": data["district"]}
    )
    est = clustered_proportion_ci(data["awards"], data["district"])
    assert est.se == pytest.approx(float(fit.bse.iloc[0]), rel=1e-12)


def test_truncation_keeps_the_interval_at_least_as_wide_as_the_binomial_one() -> None:
    data = _api(None)  # sch_wide: design effect below 1 (effective n 219.9 of 183)
    truncated = clustered_proportion_ci(data["sch_wide"], data["district"])
    binomial = proportion_ci(int(data["sch_wide"].sum()), len(data))
    assert "effective n 183.0" in truncated.method
    assert (truncated.ci_low, truncated.ci_high) == pytest.approx(
        (binomial.ci_low, binomial.ci_high), abs=1e-12
    )
    wider = clustered_proportion_ci(data["awards"], data["district"])  # design effect > 1
    plain = proportion_ci(int(data["awards"].sum()), len(data))
    assert wider.ci_high - wider.ci_low > plain.ci_high - plain.ci_low


def test_correlated_patients_widen_the_interval() -> None:
    """Two reads of each patient that always agree carry the information of one read."""
    rng = np.random.default_rng(7)
    per_patient = rng.random(60) < 0.8
    outcomes = np.repeat(per_patient, 2)
    patients = np.repeat(np.arange(60), 2)
    clustered = clustered_proportion_ci(outcomes, patients)
    naive = proportion_ci(int(outcomes.sum()), len(outcomes))
    one_read = proportion_ci(int(per_patient.sum()), 60)
    assert clustered.ci_high - clustered.ci_low > 1.3 * (naive.ci_high - naive.ci_low)
    # close to the interval of 60 independent patients (the t-ratio and G/(G-1) add a little)
    assert clustered.ci_high - clustered.ci_low == pytest.approx(
        one_read.ci_high - one_read.ci_low, rel=0.05
    )


def test_all_successes_fall_back_to_the_case_count() -> None:
    est = clustered_proportion_ci([1, 1, 1, 1], ["a", "a", "b", "c"])
    plain = proportion_ci(4, 4)
    assert est.value == 1.0 and est.se == 0.0
    assert (est.ci_low, est.ci_high) == pytest.approx((plain.ci_low, plain.ci_high))


def test_one_cluster_is_not_estimable() -> None:
    with pytest.raises(NotEstimableError, match="at least two clusters"):
        clustered_proportion_ci([1, 0, 1], ["p1", "p1", "p1"])


def test_binary_metrics_cluster_each_metric_over_its_own_cases() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.6, 0.3, 0.2, 0.9, 0.4])
    patients = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    bm = binary_metrics(y, s, threshold=0.5, clusters=patients)
    call = s >= 0.5
    positive = y == 1
    expected = clustered_proportion_ci(call[positive], patients[positive])
    assert bm.sensitivity == expected
    assert "3 clusters" in bm.sensitivity.method  # patients a, b and e hold positive cases
    assert bm.ppv == clustered_proportion_ci(positive[call], patients[call])
    assert bm.accuracy == clustered_proportion_ci(call == positive, patients)
    unclustered = binary_metrics(y, s, threshold=0.5)
    assert unclustered.sensitivity is not None and bm.sensitivity is not None
    assert bm.sensitivity.value == unclustered.sensitivity.value
    assert (bm.tp, bm.fp, bm.tn, bm.fn) == (
        unclustered.tp,
        unclustered.fp,
        unclustered.tn,
        unclustered.fn,
    )


def test_binary_metrics_report_a_single_cluster_as_not_estimable() -> None:
    bm = binary_metrics([1, 1, 0, 0], [0.9, 0.2, 0.1, 0.3], threshold=0.5, clusters=[1, 1, 2, 3])
    assert bm.sensitivity is None
    assert "at least two clusters" in bm.not_estimable["sensitivity"]
    assert bm.specificity is not None

"""Decision curves (net benefit) and predictive values at a stated prevalence.

Reference values: R dcurves' published test expectations on its ``df_binary`` and
``df_case_control`` data (tests/data/reference/dcurves_df_binary.md records the file,
commit and command of each), and the full-precision output of the Python ``dcurves``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import (
    Estimate,
    binary_metrics,
    net_benefit,
    net_benefit_comparison,
    predictive_values,
    proportion_ci,
)

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
THRESHOLDS = np.arange(100) / 100


@pytest.fixture(scope="module")
def df_binary() -> pd.DataFrame:
    frame = pd.read_csv(REFERENCE / "dcurves_df_binary.csv")
    frame["y"] = frame["cancer"].astype(int)
    return frame


@pytest.fixture(scope="module")
def df_case_control() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "dcurves_df_case_control.csv")


@pytest.fixture(scope="module")
def python_dca() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "dcurves_df_binary_python_dca.csv")


def _age_risk(frame: pd.DataFrame) -> np.ndarray:
    """dcurves' ``as_probability = "age"``: fitted risks of glm(cancer ~ age, binomial)."""
    fit = sm.GLM(frame["y"], sm.add_constant(frame["age"]), family=sm.families.Binomial()).fit()
    return np.asarray(fit.predict())


# --- R dcurves, tests/testthat/test-dca.R and test-net_intervention_avoided.R ----------
def test_net_benefit_matches_R_dcurves_cancerpredmarker(df_binary: pd.DataFrame) -> None:
    # dca(cancer ~ cancerpredmarker, data = df_binary), threshold 0.25:
    # net_benefit c(-0.1466667, 0.0000000, 0.0640000) for all / none / model
    row = net_benefit(df_binary["y"], df_binary["cancerpredmarker"], [0.25]).iloc[0]
    assert row["net_benefit"] == pytest.approx(0.0640000, abs=1e-9)
    assert row["treat_none"] == 0.0
    assert row["treat_all"] == pytest.approx(-0.1466667, abs=5e-8)
    # ... the printed value is -11/75 rounded: prevalence 105/750 minus (645/750) / 3
    assert row["treat_all"] == pytest.approx(105 / 750 - 645 / 750 / 3, abs=1e-15)
    assert (row["n"], row["tp"], row["fp"], row["prevalence"]) == (750, 72, 72, 0.14)
    # ... %>% net_intervention_avoided(): c(0.0, 0.44, 0.632) per patient, all / none / model
    assert row["interventions_avoided"] == pytest.approx(100 * 0.632, abs=1e-9)
    odds = 0.25 / 0.75
    assert (row["treat_none"] - row["treat_all"]) / odds == pytest.approx(0.44, abs=1e-9)


def test_net_benefit_matches_R_dcurves_age_as_probability(df_binary: pd.DataFrame) -> None:
    # dca(cancer ~ age, data = df_binary, as_probability = "age"), threshold 0.25:
    # net_benefit c(-0.14666667, 0.00000000, 0.02444444)
    row = net_benefit(df_binary["y"], _age_risk(df_binary), [0.25]).iloc[0]
    assert row["net_benefit"] == pytest.approx(0.02444444, abs=5e-9)
    assert row["treat_all"] == pytest.approx(-0.14666667, abs=5e-9)


def test_net_benefit_matches_R_dcurves_at_threshold_zero(df_binary: pd.DataFrame) -> None:
    # dca(cancer ~ famhistory, data = df_binary, thresholds = 0): c(0.140, 0, 0.032).
    # A risk of exactly 0 is not a positive call, so famhistory = 0 is never treated.
    row = net_benefit(df_binary["y"], df_binary["famhistory"], [0.0]).iloc[0]
    assert row["treat_all"] == pytest.approx(0.140, abs=1e-9)
    assert row["treat_none"] == 0.0
    assert row["net_benefit"] == pytest.approx(0.032, abs=1e-9)
    assert math.isnan(row["interventions_avoided"])
    assert "threshold 0" in row["not_estimable"]


def test_net_benefit_matches_R_dcurves_case_control(df_case_control: pd.DataFrame) -> None:
    # dca(casecontrol ~ cancerpredmarker, data = df_case_control, prevalence = 0.15),
    # threshold 0.25: net_benefit c(-0.13333333, 0.00000000, 0.01495671)
    row = net_benefit(
        df_case_control["casecontrol"], df_case_control["cancerpredmarker"], [0.25], prevalence=0.15
    ).iloc[0]
    assert row["net_benefit"] == pytest.approx(0.01495671, abs=5e-9)
    assert row["treat_all"] == pytest.approx(-0.13333333, abs=5e-9)
    assert row["prevalence"] == 0.15


# --- Python dcurves 1.1.7, full precision at 100 thresholds ---------------------------
@pytest.mark.parametrize(
    ("model", "prevalence"),
    [("cancerpredmarker", None), ("famhistory", None), ("age", None), ("cancerpredmarker", 0.3)],
)
def test_net_benefit_matches_python_dcurves_output(
    df_binary: pd.DataFrame, python_dca: pd.DataFrame, model: str, prevalence: float | None
) -> None:
    risk = _age_risk(df_binary) if model == "age" else df_binary[model]
    ours = net_benefit(df_binary["y"], risk, THRESHOLDS, prevalence=prevalence)
    prev = python_dca["prevalence_arg"]
    same_prev = prev.isna() if prevalence is None else np.isclose(prev, prevalence)
    ref = python_dca[same_prev].set_index("model")
    np.testing.assert_allclose(ref.loc[model, "threshold"], THRESHOLDS, atol=0)
    np.testing.assert_allclose(ours["net_benefit"], ref.loc[model, "net_benefit"], atol=1e-12)
    np.testing.assert_allclose(ours["treat_all"], ref.loc["all", "net_benefit"], atol=1e-12)
    np.testing.assert_allclose(ref.loc["none", "net_benefit"], ours["treat_none"], atol=0)
    np.testing.assert_allclose(
        ours["interventions_avoided"].to_numpy()[1:] / 100,
        ref.loc[model, "net_intervention_avoided"].to_numpy()[1:],
        atol=1e-12,
    )


def test_net_benefit_matches_live_python_dcurves_when_installed(df_binary: pd.DataFrame) -> None:
    dcurves = pytest.importorskip("dcurves")
    frame = df_binary.assign(cancer=df_binary["y"])
    out = dcurves.dca(
        data=frame, outcome="cancer", modelnames=["cancerpredmarker"], thresholds=list(THRESHOLDS)
    )
    ours = net_benefit(df_binary["y"], df_binary["cancerpredmarker"], THRESHOLDS)
    ref = out[out["model"] == "cancerpredmarker"]["net_benefit"].to_numpy()
    np.testing.assert_allclose(ours["net_benefit"], ref, atol=1e-12)


# --- intervals ---------------------------------------------------------------------------
def test_bootstrap_se_agrees_with_the_per_case_contribution_variance(
    df_binary: pd.DataFrame,
) -> None:
    # NB is the mean of per-case contributions c_i = y_i T_i - w (1 - y_i) T_i, so
    # Var(NB) = var(c) / n; the bootstrap SD must agree with it.
    y, p, t = df_binary["y"].to_numpy(), df_binary["cancerpredmarker"].to_numpy(), 0.15
    treated = p >= t
    c = y * treated - t / (1 - t) * (1 - y) * treated
    analytic = c.std(ddof=0) / math.sqrt(len(c))
    res = net_benefit_comparison(y, p, t, n_boot=800, seed=3)
    assert res.model.se is not None
    assert res.model.se == pytest.approx(analytic, rel=0.1)
    assert res.model.ci_low < res.model.value < res.model.ci_high


def test_bootstrap_columns_and_reproducibility(df_binary: pd.DataFrame) -> None:
    y, p = df_binary["y"], df_binary["cancerpredmarker"]
    a = net_benefit(y, p, [0.05, 0.2, 0.4], ci="bootstrap", n_boot=300, seed=7)
    b = net_benefit(y, p, [0.05, 0.2, 0.4], ci="bootstrap", n_boot=300, seed=7)
    pd.testing.assert_frame_equal(a, b)
    for name in ("net_benefit", "treat_all", "interventions_avoided"):
        assert (a[f"{name}_ci_low"] <= a[name]).all()
        assert (a[name] <= a[f"{name}_ci_high"]).all()
    assert (a["treat_none_ci_low"] == 0).all() and (a["treat_none_ci_high"] == 0).all()
    assert a["method"].iloc[0] == "bootstrap-percentile (300 replicates, 750 cases)"
    # one case per cluster draws exactly the same resamples as the plain case bootstrap
    c = net_benefit(
        y, p, [0.05, 0.2, 0.4], ci="bootstrap", n_boot=300, seed=7, clusters=np.arange(len(y))
    )
    np.testing.assert_array_equal(a["net_benefit_ci_low"], c["net_benefit_ci_low"])
    assert "750 clusters" in c["method"].iloc[0]
    none = net_benefit(y, p, [0.2])
    assert np.isnan(none["net_benefit_ci_low"]).all()
    assert none["method"].iloc[0] == "no interval (ci=None)"


def test_clustered_bootstrap_is_wider_for_duplicated_patients(df_binary: pd.DataFrame) -> None:
    y = np.repeat(df_binary["y"].to_numpy()[:300], 3)
    p = np.repeat(df_binary["cancerpredmarker"].to_numpy()[:300], 3)
    patients = np.repeat(np.arange(300), 3)
    plain = net_benefit_comparison(y, p, 0.2, n_boot=400, seed=1)
    clustered = net_benefit_comparison(y, p, 0.2, n_boot=400, seed=1, clusters=patients)
    assert clustered.model.value == plain.model.value
    assert clustered.model.se is not None and plain.model.se is not None
    assert clustered.model.se > 1.4 * plain.model.se  # about sqrt(3) wider


def test_stated_prevalence_fixes_treat_all(df_case_control: pd.DataFrame) -> None:
    out = net_benefit(
        df_case_control["casecontrol"],
        df_case_control["cancerpredmarker"],
        [0.1, 0.25],
        ci="bootstrap",
        n_boot=200,
        prevalence=0.15,
    )
    np.testing.assert_allclose(out["treat_all_ci_low"], out["treat_all"], atol=1e-15)
    np.testing.assert_allclose(out["treat_all_ci_high"], out["treat_all"], atol=1e-15)
    assert "stratified by class" in out["method"].iloc[0]


def test_comparison_with_default_strategies(df_binary: pd.DataFrame) -> None:
    y, p = df_binary["y"], df_binary["cancerpredmarker"]
    res = net_benefit_comparison(y, p, 0.1, n_boot=400)
    row = net_benefit(y, p, [0.1]).iloc[0]
    assert res.model.value == pytest.approx(row["net_benefit"], abs=1e-15)
    assert res.treat_all.value == pytest.approx(row["treat_all"], abs=1e-15)
    assert res.over_treat_all.value == pytest.approx(row["net_benefit"] - row["treat_all"])
    assert res.over_treat_none == res.model
    assert res.exceeds_defaults()
    # an uninformative model does not beat treat-all at a low threshold
    noise = np.random.default_rng(0).uniform(0, 1, len(y))
    assert not net_benefit_comparison(y, noise, 0.1, n_boot=400).exceeds_defaults()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y_prob": [0.2, 1.2, 0.5, 0.1]}, StatisticsError, r"\[0, 1\]"),
        ({"thresholds": [0.2, 1.0]}, StatisticsError, "threshold of 1"),
        ({"thresholds": [-0.1]}, StatisticsError, r"\[0, 1\)"),
        ({"prevalence": 0.0}, StatisticsError, "prevalence"),
        ({"y_true": [1, 1, 1, 1]}, NotEstimableError, "one negative"),
        ({"ci": "bootstrp"}, StatisticsError, "Did you mean 'bootstrap'"),
        ({"y_prob": [0.2, np.nan, 0.5, 0.1]}, StatisticsError, "NaN"),
    ],
)
def test_net_benefit_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    args: dict[str, Any] = {
        "y_true": [0, 1, 1, 0],
        "y_prob": [0.2, 0.7, 0.5, 0.1],
        "thresholds": [0.3],
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        net_benefit(args.pop("y_true"), args.pop("y_prob"), args.pop("thresholds"), **args)


# --- predictive values at a stated prevalence -------------------------------------------
def test_predictive_values_at_the_test_set_prevalence_equal_the_observed(
    df_binary: pd.DataFrame,
) -> None:
    y, p = df_binary["y"], df_binary["cancerpredmarker"]
    m = binary_metrics(y, p, threshold=0.2)
    assert m.sensitivity is not None and m.specificity is not None
    assert m.ppv is not None and m.npv is not None
    pv = predictive_values(m.sensitivity, m.specificity, float(y.mean()))
    assert pv.ppv.value == pytest.approx(m.ppv.value, abs=1e-12)
    assert pv.npv.value == pytest.approx(m.npv.value, abs=1e-12)
    assert pv.ppv.n == 750


def test_predictive_value_interval_is_the_delta_method_on_the_logit_scale() -> None:
    # numerical delta method: gradient of logit(PPV) in (Se, Sp) times binomial variances
    se_x, n1, sp_x, n0, pi = 45, 50, 170, 200, 0.02
    pv = predictive_values(proportion_ci(se_x, n1), proportion_ci(sp_x, n0), pi, level=0.9)
    se, sp = se_x / n1, sp_x / n0

    def logit_ppv(a: float, b: float) -> float:
        v = a * pi / (a * pi + (1 - b) * (1 - pi))
        return math.log(v / (1 - v))

    h = 1e-7
    d_se = (logit_ppv(se + h, sp) - logit_ppv(se - h, sp)) / (2 * h)
    d_sp = (logit_ppv(se, sp + h) - logit_ppv(se, sp - h)) / (2 * h)
    sd = math.sqrt(d_se**2 * se * (1 - se) / n1 + d_sp**2 * sp * (1 - sp) / n0)
    assert pv.ppv.se == pytest.approx(sd, rel=1e-6)
    z = 1.6448536269514722
    centre = logit_ppv(se, sp)
    expected = [1 / (1 + math.exp(-(centre + s * z * sd))) for s in (-1, 1)]
    assert [pv.ppv.ci_low, pv.ppv.ci_high] == pytest.approx(expected, rel=1e-6)
    assert pv.ppv.ci_low < pv.ppv.value < pv.ppv.ci_high
    assert pv.npv.ci_low < pv.npv.value < pv.npv.ci_high <= 1.0


def test_predictive_value_intervals_cover_in_simulation() -> None:
    rng = np.random.default_rng(11)
    se, sp, pi, n1, n0 = 0.85, 0.9, 0.1, 120, 300
    true_ppv = se * pi / (se * pi + (1 - sp) * (1 - pi))
    true_npv = sp * (1 - pi) / (sp * (1 - pi) + (1 - se) * pi)
    hits_ppv = hits_npv = 0
    sims = 2000
    for tp, tn in zip(rng.binomial(n1, se, sims), rng.binomial(n0, sp, sims), strict=True):
        pv = predictive_values(proportion_ci(int(tp), n1), proportion_ci(int(tn), n0), pi)
        hits_ppv += pv.ppv.ci_low <= true_ppv <= pv.ppv.ci_high
        hits_npv += pv.npv.ci_low <= true_npv <= pv.npv.ci_high
    assert 0.93 <= hits_ppv / sims <= 0.97
    assert 0.93 <= hits_npv / sims <= 0.97


def test_predictive_values_at_perfect_specificity() -> None:
    sens, spec = proportion_ci(40, 50), proportion_ci(100, 100)
    with pytest.raises(NotEstimableError, match="adjusted-logit"):
        predictive_values(sens, spec, 0.1)
    pv = predictive_values(sens, spec, 0.1, method="adjusted-logit")
    assert pv.ppv.value == 1.0
    assert 0.5 < pv.ppv.ci_low < pv.ppv.ci_high < 1.0
    with pytest.raises(StatisticsError, match="prevalence"):
        predictive_values(sens, spec, 1.0, method="adjusted-logit")
    with pytest.raises(StatisticsError, match="Did you mean 'logit'"):
        predictive_values(sens, spec, 0.1, method="logi")
    with pytest.raises(StatisticsError, match="Estimate"):
        predictive_values(0.8, spec, 0.1)  # type: ignore[arg-type]
    assert isinstance(pv.npv, Estimate)

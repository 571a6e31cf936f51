"""Input validation and option checking shared by the statistics functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import (
    Estimate,
    auc,
    binary_metrics,
    bootstrap_ci,
    cohen_kappa,
    delong_test,
    fleiss_kappa,
    obuchowski_rockette,
    pairwise_kappas,
    percent_agreement,
    proportion_ci,
    roc_curve_with_band,
    sample_size_auc,
    sample_size_sensitivity,
    sample_size_specificity,
)
from workbench.stats.planning import hanley_mcneil_variance

Y = np.array([0, 0, 1, 1, 0, 1])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: auc(Y, S, ci="delon"), "Did you mean 'delong'"),
        (lambda: auc(Y, S, ci="bootstrap", bootstrap_method="bcaa"), "Did you mean 'bca'"),
        (lambda: proportion_ci(3, 10, method="wilsn"), "Did you mean 'wilson'"),
        (lambda: proportion_ci(3, 10, method="clopper_pearson"), "clopper-pearson"),
        (lambda: cohen_kappa([1, 2], [1, 2], weights="quadratc"), "Did you mean 'quadratic'"),
        (lambda: bootstrap_ci([1.0, 2.0], statistic="meen"), "Did you mean 'mean'"),
        (lambda: roc_curve_with_band(Y, S, band="simultanous"), "Did you mean 'simultaneous'"),
    ],
)
def test_misspelled_options_get_did_you_mean(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StatisticsError, match=match):
        call()


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], r"only 0 and 1, found \[2\]"),
        (["neg", "pos"], [0.1, 0.2], "binary"),
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "NaN"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 1, 1], [0.1, 0.2], "equal lengths"),
        ([[0, 1]], [[0.1, 0.2]], "one-dimensional"),
    ],
)
def test_bad_inputs_are_explained(y, s, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StatisticsError, match=match):
        auc(y, s)


def test_bool_truth_is_accepted() -> None:
    assert auc(Y.astype(bool), S).value == auc(Y, S).value


def test_level_is_checked() -> None:
    with pytest.raises(StatisticsError, match="between 0 and 1"):
        auc(Y, S, level=95)


def test_estimate_is_frozen() -> None:
    est = auc(Y, S)
    assert isinstance(est, Estimate)
    with pytest.raises(AttributeError):
        est.value = 0.5  # type: ignore[misc]
    assert est.as_dict()["value"] == est.value


def test_delong_test_lengths() -> None:
    with pytest.raises(StatisticsError, match="score_b"):
        delong_test(Y, S, S[:-1])


def test_binary_metrics_counts_and_undefined_metrics() -> None:
    bm = binary_metrics(Y, S, threshold=0.3)
    assert (bm.tp, bm.fp, bm.tn, bm.fn) == (3, 1, 2, 0)
    assert bm.sensitivity is not None and bm.sensitivity.value == 1.0
    assert bm.ppv is not None and bm.ppv.value == 0.75
    none_called = binary_metrics(Y, S, threshold=5.0)
    assert none_called.ppv is None
    assert "no positive calls" in none_called.not_estimable["ppv"]


def test_proportion_errors() -> None:
    with pytest.raises(NotEstimableError, match="n = 0"):
        proportion_ci(0, 0)
    with pytest.raises(StatisticsError, match="cannot exceed"):
        proportion_ci(5, 3)


def test_kappa_inputs() -> None:
    with pytest.raises(StatisticsError, match="same subjects"):
        cohen_kappa([1, 2, 3], [1, 2])
    with pytest.raises(StatisticsError, match="missing"):
        cohen_kappa([1, None], [1, 2])
    with pytest.raises(NotEstimableError, match="chance agreement is 1"):
        cohen_kappa([1, 1], [1, 1])
    with pytest.raises(StatisticsError, match="same number of raters"):
        fleiss_kappa([[1, 1], [2, 1]])
    assert percent_agreement([1, 2, 3, 4], [1, 2, 3, 1]).value == 0.75


def test_pairwise_kappas_reference_and_all_pairs() -> None:
    ratings = pd.DataFrame(
        {
            "model": [1, 2, 2, 1, 3, 3],
            "r1": [1, 2, 2, 1, 3, 2],
            "r2": [1, 2, 3, 1, 3, 3],
            "r3": [1, 1, 1, 1, 1, 1],
        }
    )
    vs_model = pairwise_kappas(ratings, reference="model", raters=["r1", "r2"])
    assert vs_model[["rater_a", "rater_b"]].values.tolist() == [["model", "r1"], ["model", "r2"]]
    assert vs_model["kappa"].iloc[0] == pytest.approx(cohen_kappa(ratings.model, ratings.r1).value)
    allp = pairwise_kappas(ratings)
    assert len(allp) == 6
    assert set(allp["status"]) == {"ok"}
    with pytest.raises(StatisticsError, match="not in ratings"):
        pairwise_kappas(ratings, raters=["r9"])


def test_sample_sizes() -> None:
    # Buderer (1996) formula: z^2 p (1-p) / d^2 = 138.3 positives for 0.90 +- 0.05
    s = sample_size_sensitivity(0.9, 0.05, prevalence=0.2)
    assert s.n_positive == 139 and s.n_total == 695
    assert s.half_width <= 0.05
    sp = sample_size_specificity(0.8, 0.05, prevalence=0.2)
    assert sp.n_negative >= 246 and sp.n_total == int(np.ceil(sp.n_negative / 0.8))
    a = sample_size_auc(0.85, 0.05, prevalence=0.3)
    assert a.half_width <= 0.05
    smaller = 1.96 * np.sqrt(
        hanley_mcneil_variance(
            0.85, round((a.n_total - 1) * 0.3), a.n_total - 1 - round((a.n_total - 1) * 0.3)
        )
    )
    assert smaller > 0.05  # minimal
    # Hanley-McNeil (1982): A = 0.5 gives the Mann-Whitney null variance (m + n + 1) / (12 m n)
    assert hanley_mcneil_variance(0.5, 30, 40) == pytest.approx((30 + 40 + 1) / (12 * 30 * 40))
    with pytest.raises(StatisticsError, match="between 0 and 1"):
        sample_size_auc(1.2, 0.05, prevalence=0.3)


def test_mrmc_rejects_incomplete_designs(vandyke: pd.DataFrame) -> None:
    with pytest.raises(StatisticsError, match="fully crossed"):
        obuchowski_rockette(
            vandyke.iloc[1:],
            reader="reader",
            modality="treatment",
            case="case",
            truth="truth",
            rating="rating",
        )
    with pytest.raises(StatisticsError, match="not in the frame"):
        obuchowski_rockette(
            vandyke, reader="rdr", modality="treatment", case="case", truth="truth", rating="rating"
        )
    with pytest.raises(StatisticsError, match="Did you mean 'delong'"):
        obuchowski_rockette(
            vandyke,
            reader="reader",
            modality="treatment",
            case="case",
            truth="truth",
            rating="rating",
            covariance="delog",
        )


def test_fleiss_jackknife_closed_form_equals_refitting(diagnoses_counts: pd.DataFrame) -> None:
    c = diagnoses_counts.to_numpy()
    n = len(c)
    jk = np.array([fleiss_kappa(np.delete(c, i, axis=0)).value for i in range(n)])
    se = np.sqrt((n - 1) / n * np.sum((jk - jk.mean()) ** 2))
    assert fleiss_kappa(c).se == pytest.approx(se, rel=1e-12)

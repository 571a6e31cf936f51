"""Comparisons with values published by, or computed with, independent tools.

Each value sits next to the command that produced it. R values come from R 4.2 with
pROC 1.18 and psych (scripts in tests/data/reference/); CI has no R.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.stats import (
    auc,
    auc_variance,
    cohen_kappa,
    delong_test,
    fleiss_kappa,
    fleiss_kappa_test,
    heterogeneity_test,
    holm,
    kappa_from_table,
    obuchowski_rockette,
    proportion_ci,
    stratified,
)

# --- pROC on aSAH --------------------------------------------------------------------
# r <- roc(aSAH$outcome == "Poor", aSAH$<marker>, levels = c(0, 1), direction = "<")
# c(auc(r), var(r), ci.auc(r, method = "delong"))
PROC_AUC = {
    "s100b": (0.731368563685637, 0.00266868245717244, 0.630118211761623, 0.832618915609651),
    "ndka": (0.611957994579946, 0.0031908105493913, 0.501244999271703, 0.722670989888189),
    "wfns": (0.823678861788618, 0.00146991470882363, 0.748534887819453, 0.898822835757783),
}


@pytest.mark.parametrize("marker", sorted(PROC_AUC))
def test_auc_delong_matches_pROC(asah: pd.DataFrame, marker: str) -> None:
    value, var, lo, hi = PROC_AUC[marker]
    est = auc(asah["y"], asah[marker], ci="delong")
    assert est.value == pytest.approx(value, abs=1e-12)
    assert est.se**2 == pytest.approx(var, rel=1e-9)
    assert (est.ci_low, est.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    assert est.n == 113
    assert auc_variance(asah["y"], asah[marker]) == pytest.approx(var, rel=1e-9)


# t <- roc.test(r1, r2, method = "delong", paired = TRUE); c(t$statistic, t$p.value, cov(r1, r2))
PROC_PAIRED = [
    ("s100b", "ndka", 1.39077002573558, 0.164295175223054, -0.000756164938056579),
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.00119615567376754),
]


@pytest.mark.parametrize(("a", "b", "z", "p", "cov"), PROC_PAIRED)
def test_paired_delong_matches_pROC_roc_test(
    asah: pd.DataFrame, a: str, b: str, z: float, p: float, cov: float
) -> None:
    res = delong_test(asah["y"], asah[a], asah[b])
    assert res.statistic == pytest.approx(z, rel=1e-9)
    assert res.p_value == pytest.approx(p, rel=1e-8)
    var_a, var_b = PROC_AUC[a][1], PROC_AUC[b][1]
    assert res.difference.se**2 == pytest.approx(var_a + var_b - 2 * cov, rel=1e-9)
    assert res.difference.value == pytest.approx(PROC_AUC[a][0] - PROC_AUC[b][0], abs=1e-12)


# --- binomial intervals ------------------------------------------------------------
# prop.test(x, n, correct = FALSE, conf.level = L)$conf.int   (Wilson score)
# binom.test(x, n, conf.level = L)$conf.int                   (Clopper-Pearson)
BINOM = [
    (81, 263, 0.95, "wilson", 0.255288519878274, 0.3662095769828),
    (81, 263, 0.95, "clopper-pearson", 0.252736745585271, 0.367621922601351),
    (0, 10, 0.95, "wilson", 0.0, 0.277532799862889),
    (0, 10, 0.95, "clopper-pearson", 0.0, 0.308497107818761),
    (10, 10, 0.95, "wilson", 0.722467200137111, 1.0),
    (10, 10, 0.95, "clopper-pearson", 0.691502892181239, 1.0),
    (7, 20, 0.90, "wilson", 0.202260040056761, 0.533487311151528),
    (7, 20, 0.90, "clopper-pearson", 0.177310917574449, 0.558034511315489),
]


@pytest.mark.parametrize(("x", "n", "level", "method", "lo", "hi"), BINOM)
def test_proportion_ci_matches_R(
    x: int, n: int, level: float, method: str, lo: float, hi: float
) -> None:
    est = proportion_ci(x, n, method=method, level=level)
    assert (est.ci_low, est.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    assert est.value == x / n


# --- Cohen's kappa --------------------------------------------------------------------
SKIN = np.array([[10, 4, 1, 0], [5, 10, 12, 2], [2, 4, 12, 5], [0, 2, 6, 13]])


def test_simple_kappa_matches_SAS_proc_freq_and_psych() -> None:
    # SAS/STAT PROC FREQ documentation, "Agreement Study" (SkinCondition):
    # tables Derm1*Derm2 / agree; -> Simple Kappa 0.3449, ASE 0.0724, 95% CL 0.2030 0.4868
    # psych::cohen.kappa(skin)$var.kappa = 0.00524128034243672 (psych_stats_reference.R)
    est = kappa_from_table(SKIN)
    assert est.value == pytest.approx(0.3449, abs=5e-5)
    assert est.se == pytest.approx(0.0724, abs=5e-5)
    assert (est.ci_low, est.ci_high) == pytest.approx((0.2030, 0.4868), abs=5e-5)
    assert est.value == pytest.approx(0.344875346260388, abs=1e-12)
    assert est.se**2 == pytest.approx(0.00524128034243672, rel=1e-9)


def test_weighted_kappa_matches_SAS_value() -> None:
    # SAS PROC FREQ, same table, Cicchetti-Allison (linear) weights: Weighted Kappa 0.5082
    assert kappa_from_table(SKIN, weights="linear").value == pytest.approx(0.5082, abs=5e-5)


def _delta_method_variance(table: np.ndarray, weights: str | None) -> float:
    """Multinomial delta-method variance of kappa, by numerical differentiation.

    The Fleiss-Cohen-Everitt (1969) formula is this variance in closed form, so the
    finite-difference version is an independent check of the weighted formula.
    """
    p = table / table.sum()
    n = table.sum()

    def kappa(flat: np.ndarray) -> float:
        return kappa_from_table(flat.reshape(p.shape) * 1e6, weights=weights).value

    grad = np.empty(p.size)
    h = 1e-6
    for i in range(p.size):
        up, dn = p.ravel().copy(), p.ravel().copy()
        up[i] += h
        dn[i] -= h
        grad[i] = (kappa(up / up.sum()) - kappa(dn / dn.sum())) / (2 * h)
    cov = (np.diag(p.ravel()) - np.outer(p.ravel(), p.ravel())) / n
    return float(grad @ cov @ grad)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_ase_equals_delta_method_variance(weights: str | None) -> None:
    est = kappa_from_table(SKIN, weights=weights)
    assert est.se**2 == pytest.approx(_delta_method_variance(SKIN, weights), rel=1e-5)


# psych::cohen.kappa(cbind(a[, i], a[, j]))  -> kappa, var.kappa (unweighted)
# Weighted values are kappa2(anxiety[, c(i, j)], "equal" | "squared") of irr; psych gives
# the same weighted kappas (psych's *weighted variance* uses marginal sums in place of the
# FCE weighted means, so it is not a reference for the weighted ASE).
ANXIETY = [
    (
        "rater1",
        "rater2",
        0.119496855345912,
        0.0142256423269795,
        0.189189189189189,
        0.296765119549929,
    ),
    (
        "rater1",
        "rater3",
        -0.165644171779141,
        0.0067650877401942,
        -0.0510510510510511,
        0.0695067264573989,
    ),
]


@pytest.mark.parametrize(("a", "b", "kappa", "var", "linear", "quadratic"), ANXIETY)
def test_cohen_kappa_on_anxiety_matches_psych(
    anxiety: pd.DataFrame, a: str, b: str, kappa: float, var: float, linear: float, quadratic: float
) -> None:
    est = cohen_kappa(anxiety[a], anxiety[b])
    assert est.value == pytest.approx(kappa, abs=1e-12)
    assert est.se**2 == pytest.approx(var, rel=1e-9)
    cats = list(range(1, 7))
    assert cohen_kappa(anxiety[a], anxiety[b], weights="linear", categories=cats).value == (
        pytest.approx(linear, abs=1e-12)
    )
    assert cohen_kappa(anxiety[a], anxiety[b], weights="quadratic", categories=cats).value == (
        pytest.approx(quadratic, abs=1e-12)
    )


# --- Fleiss' kappa --------------------------------------------------------------------
def test_fleiss_kappa_matches_fleiss_1971_and_irr(diagnoses_counts: pd.DataFrame) -> None:
    # Fleiss (1971) Psychol Bull 76:378, Table 1 example: kappa = .430
    # irr::kappam.fleiss(diagnoses): Kappa = 0.43, z = 17.7, p-value = 0
    est = fleiss_kappa(diagnoses_counts.to_numpy())
    assert est.value == pytest.approx(0.430, abs=5e-4)
    assert est.value == pytest.approx(0.4302445200601407, abs=1e-12)
    assert est.n == 30
    assert est.ci_low < est.value < est.ci_high
    test = fleiss_kappa_test(diagnoses_counts.to_numpy())
    assert test.statistic == pytest.approx(17.7, abs=0.05)
    assert test.p_value < 1e-60


# --- Holm, heterogeneity ------------------------------------------------------------------
def test_holm_matches_R_p_adjust() -> None:
    # p.adjust(c(0.01, 0.04, 0.03, 0.005, 0.2), "holm")
    assert holm([0.01, 0.04, 0.03, 0.005, 0.2]) == pytest.approx(
        [0.04, 0.09, 0.09, 0.025, 0.2], abs=1e-12
    )


def _auditc_cases(auditc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for study, r in auditc.iterrows():
        for truth, call, count in ((1, 1, r.TP), (1, 0, r.FN), (0, 1, r.FP), (0, 0, r.TN)):
            rows.append(
                pd.DataFrame({"study": study, "y_true": [truth] * count, "score": [call] * count})
            )
    return pd.concat(rows, ignore_index=True)


def test_sensitivity_heterogeneity_matches_R_chisq_test(auditc: pd.DataFrame) -> None:
    # chisq.test(cbind(AuditC$TP, AuditC$FN), correct = FALSE)
    #   X-squared = 277.318047587425, df = 13, p-value = 1.31853391991997e-51
    cases = _auditc_cases(auditc)
    out = stratified(cases, "sensitivity", by="study", threshold=0.5)
    het = out.attrs["heterogeneity"]
    assert het.statistic == pytest.approx(277.318047587425, rel=1e-9)
    assert het.df == 13
    assert het.p_value == pytest.approx(1.31853391991997e-51, rel=1e-6)
    assert out["value"].to_numpy() == pytest.approx(
        (auditc.TP / (auditc.TP + auditc.FN)).to_numpy()
    )
    # chisq.test(cbind(AuditC$TN, AuditC$FP), correct = FALSE): X-squared = 2208.51212612343
    spec = heterogeneity_test(cases, "specificity", by="study", threshold=0.5)
    assert spec.statistic == pytest.approx(2208.51212612343, rel=1e-9)


def test_kruskal_wallis_matches_R() -> None:
    # kruskal.test(list(c(.81,.9,.77,.85,.88), c(.7,.72,.79,.65), c(.91,.93,.95,.9,.89,.97)))
    #   chi-squared = 11.1536672629696, df = 2, p-value = 0.00378452978311137
    groups = [
        [0.81, 0.9, 0.77, 0.85, 0.88],
        [0.7, 0.72, 0.79, 0.65],
        [0.91, 0.93, 0.95, 0.9, 0.89, 0.97],
    ]
    frame = pd.DataFrame(
        {
            "dice": np.concatenate(groups),
            "site": np.repeat(["a", "b", "c"], [len(g) for g in groups]),
        }
    )
    het = heterogeneity_test(frame, "dice_mean", by="site", n_boot=200)
    assert het.statistic == pytest.approx(11.1536672629696, rel=1e-9)
    assert het.p_value == pytest.approx(0.00378452978311137, rel=1e-9)


# --- Obuchowski-Rockette on Van Dyke --------------------------------------------------
def test_obuchowski_rockette_matches_RJafroc_dataset02(vandyke: pd.DataFrame) -> None:
    # RJafroc: UtilORVarComponentsFactorial(dataset02, FOM = "Wilcoxon",
    #   covEstMethod = "jackknife") and StSignificanceTesting(dataset02, FOM = "Wilcoxon",
    #   method = "OR") as printed in RJafrocBook ch. "Obuchowski Rockette Applications".
    res = obuchowski_rockette(
        vandyke, reader="reader", modality="treatment", case="case", truth="truth", rating="rating"
    )
    vc = res.variance_components
    assert vc["var"] == pytest.approx(8.0228827e-4, abs=5e-12)
    assert vc["cov1"] == pytest.approx(3.4661371e-4, abs=5e-12)
    assert vc["cov2"] == pytest.approx(3.4407483e-4, abs=5e-12)
    assert vc["cov3"] == pytest.approx(2.3902837e-4, abs=5e-12)
    assert vc["ms_t"] == pytest.approx(0.0047962, abs=5e-8)
    assert vc["ms_tr"] == pytest.approx(5.5103062e-4, abs=5e-12)
    assert vc["var_tr"] == pytest.approx(0.0002004, abs=5e-8)
    assert res.statistic == pytest.approx(4.456, abs=5e-4)
    assert res.df_den == pytest.approx(15.26, abs=5e-3)
    assert res.p_value == pytest.approx(0.05167, abs=5e-6)
    assert res.difference.value == pytest.approx(-0.0438, abs=5e-5)
    assert (res.difference.ci_low, res.difference.ci_high) == pytest.approx(
        (-0.0879595, 0.0003589), abs=5e-8
    )
    assert res.reader_auc.loc["1", "2"] == pytest.approx(0.8587762, abs=5e-8)
    m1, m2 = res.modality_auc["1"], res.modality_auc["2"]
    assert (m1.ci_low, m1.ci_high) == pytest.approx((0.8252, 0.9689), abs=5e-5)
    assert (m2.ci_low, m2.ci_high) == pytest.approx((0.8941, 0.9875), abs=5e-5)
    assert m1.se == pytest.approx(0.03317, abs=5e-6)


def test_obuchowski_rockette_with_delong_covariance_is_close(vandyke: pd.DataFrame) -> None:
    jk = obuchowski_rockette(
        vandyke, reader="reader", modality="treatment", case="case", truth="truth", rating="rating"
    )
    dl = obuchowski_rockette(
        vandyke,
        reader="reader",
        modality="treatment",
        case="case",
        truth="truth",
        rating="rating",
        covariance="delong",
    )
    # DeLong and jackknife covariances of the Wilcoxon AUC differ by O(1/n)
    assert dl.variance_components["var"] == pytest.approx(jk.variance_components["var"], rel=0.03)
    assert dl.p_value == pytest.approx(jk.p_value, abs=0.005)

"""Predictive values at a stated deployment prevalence.

The PPV and NPV observed on a test set hold only at the test set's prevalence. For a
deployment population with prevalence ``pi`` they follow from Bayes' theorem,

``PPV = Se pi / (Se pi + (1 - Sp)(1 - pi))``,
``NPV = Sp (1 - pi) / (Sp (1 - pi) + (1 - Se) pi)``,

with ``pi`` treated as known. Intervals use the delta method on the logit scale of
Mercaldo, Lau and Zhou [1]_: ``logit PPV = log(Se / (1 - Sp)) + logit(pi)`` with

``Var = (1 - Se) / (n_1 Se) + Sp / (n_0 (1 - Sp))``

(``n_1`` diseased cases behind Se, ``n_0`` non-diseased behind Sp), and likewise for the
NPV, back-transformed so the limits stay in (0, 1).

References
----------
.. [1] Mercaldo ND, Lau KF, Zhou XH. Confidence intervals for predictive values with an
   emphasis to case-control studies. Stat Med 26:2170-2183, 2007.
.. [2] Altman DG, Bland JM. Diagnostic tests 2: predictive values. BMJ 309:102, 1994.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import Estimate, check_level, choose, z_crit

__all__ = ["PredictiveValues", "predictive_values"]

METHODS = ("logit", "adjusted-logit")
RATE_VARIANCES = ("binomial", "standard-error")


@dataclass(frozen=True, slots=True)
class PredictiveValues:
    """PPV and NPV at a stated prevalence.

    Parameters
    ----------
    ppv, npv : Estimate
        Positive and negative predictive value with their intervals; ``n`` is
        ``n_1 + n_0``; ``se`` is the standard error on the logit scale.
    prevalence : float
        The prevalence they hold for.
    """

    ppv: Estimate
    npv: Estimate
    prevalence: float


def _rate(name: str, est: Estimate) -> tuple[float, int]:
    if not isinstance(est, Estimate):
        raise StatisticsError(
            f"{name} must be an Estimate with its n (e.g. from binary_metrics), found "
            f"{type(est).__name__}."
        )
    value, n = float(est.value), int(est.n)
    if not 0.0 <= value <= 1.0 or n < 1:
        raise StatisticsError(
            f"{name} must be a proportion in [0, 1] from n >= 1 cases, found value {value!r} "
            f"and n {n}."
        )
    return value, n


def _effective_n(name: str, est: Estimate) -> float:
    value, n = float(est.value), int(est.n)
    if est.se is None or not math.isfinite(est.se) or est.se < 0:
        raise StatisticsError(
            f"rate_variance='standard-error' needs the {name}'s standard error, found {est.se!r}."
        )
    if est.se == 0.0:
        return float(n)
    return value * (1.0 - value) / est.se**2


def predictive_values(
    sensitivity: Estimate,
    specificity: Estimate,
    prevalence: float,
    *,
    level: float = 0.95,
    method: str = "logit",
    rate_variance: str = "binomial",
) -> PredictiveValues:
    """PPV and NPV at a deployment prevalence, with delta-method intervals.

    Parameters
    ----------
    sensitivity : Estimate
        Sensitivity and the number of diseased cases behind it (``n``), e.g.
        ``binary_metrics(...).sensitivity``.
    specificity : Estimate
        Specificity and the number of non-diseased cases behind it.
    prevalence : float
        Prevalence of the population the values are for, in (0, 1); treated as known.
    level : float
        Confidence level.
    method : {"logit", "adjusted-logit"}
        ``"logit"``: delta method on the logit scale [1]_ (not estimable when Se or Sp
        is 0 or 1, where the log-likelihood-ratio variance is infinite).
        ``"adjusted-logit"``: the same with ``z^2 / 2`` added to the successes and
        failures of Se and Sp for the variance and the interval's centre [1]_, which is
        defined also at Se or Sp of 0 or 1. Either way the point estimate is the
        unadjusted Bayes value.
    rate_variance : {"binomial", "standard-error"}
        ``"binomial"``: the variance of Se and Sp is that of ``n`` independent cases.
        ``"standard-error"``: it is each estimate's ``se``, so that an interval that
        accounts for several cases per patient
        (:func:`~workbench.stats.clustered_proportion_ci`) carries its clustering into
        the predictive values: the counts in the variance become the effective sample
        size ``p (1 - p) / se**2`` (``n`` where ``se`` is 0).

    Returns
    -------
    PredictiveValues

    Raises
    ------
    StatisticsError
        Prevalence outside (0, 1), invalid inputs, unknown method.
    NotEstimableError
        ``method="logit"`` with Se or Sp equal to 0 or 1.

    Examples
    --------
    >>> from workbench.stats import proportion_ci
    >>> pv = predictive_values(proportion_ci(90, 100), proportion_ci(160, 200), 0.05)
    >>> round(pv.ppv.value, 4), round(pv.npv.value, 4)
    (0.1915, 0.9935)
    """
    method = choose("method", method, METHODS)
    level = check_level(level)
    rate_variance = choose("rate_variance", rate_variance, RATE_VARIANCES)
    se, n1 = _rate("sensitivity", sensitivity)
    sp, n0 = _rate("specificity", specificity)
    m1, m0 = float(n1), float(n0)
    if rate_variance == "standard-error":
        m1 = _effective_n("sensitivity", sensitivity)
        m0 = _effective_n("specificity", specificity)
    pi = float(prevalence)
    if not 0.0 < pi < 1.0:
        raise StatisticsError(f"prevalence must lie strictly between 0 and 1, found {pi!r}.")
    z = z_crit(level)
    called_positive = se * pi + (1.0 - sp) * (1.0 - pi)
    called_negative = sp * (1.0 - pi) + (1.0 - se) * pi
    if called_positive == 0.0 or called_negative == 0.0:
        raise NotEstimableError(
            f"Predictive values are undefined with sensitivity {se:g} and specificity {sp:g}: "
            f"the model calls no case {'positive' if called_positive == 0.0 else 'negative'}."
        )
    ppv = se * pi / called_positive
    npv = sp * (1.0 - pi) / called_negative
    if method == "adjusted-logit":
        half = z * z / 2.0
        se_c, n1_c = (se * m1 + half) / (m1 + 2 * half), m1 + 2 * half
        sp_c, n0_c = (sp * m0 + half) / (m0 + 2 * half), m0 + 2 * half
    else:
        if se in (0.0, 1.0) or sp in (0.0, 1.0):
            raise NotEstimableError(
                f"The logit interval of the predictive values is not estimable with "
                f"sensitivity {se:g} and specificity {sp:g} (a rate of 0 or 1 has infinite "
                "logit variance). Use method='adjusted-logit'."
            )
        se_c, n1_c, sp_c, n0_c = se, m1, sp, m0
    logit_pi = math.log(pi / (1.0 - pi))
    centre_ppv = math.log(se_c / (1.0 - sp_c)) + logit_pi
    var_ppv = (1.0 - se_c) / (n1_c * se_c) + sp_c / (n0_c * (1.0 - sp_c))
    centre_npv = math.log(sp_c / (1.0 - se_c)) - logit_pi
    var_npv = se_c / (n1_c * (1.0 - se_c)) + (1.0 - sp_c) / (n0_c * sp_c)

    def est(value: float, centre: float, var: float) -> Estimate:
        sd = math.sqrt(var)
        lo = 1.0 / (1.0 + math.exp(-(centre - z * sd)))
        hi = 1.0 / (1.0 + math.exp(-(centre + z * sd)))
        name = f"delta method, {method} (Mercaldo 2007), prevalence {pi:g}"
        if rate_variance == "standard-error":
            name += f"; Se, Sp variances from their standard errors (n {m1:.1f}, {m0:.1f})"
        return Estimate(value, lo, hi, level, name, n1 + n0, sd)

    return PredictiveValues(
        ppv=est(ppv, centre_ppv, var_ppv), npv=est(npv, centre_npv, var_npv), prevalence=pi
    )

"""Decision curve analysis: net benefit of a model against treat-all and treat-none.

At a threshold probability ``p_t`` a patient is treated when the predicted risk is at
least ``p_t``; choosing ``p_t`` states that a missed case is ``(1 - p_t) / p_t`` times as
bad as an unnecessary treatment. The net benefit of treating by the model is

``NB(p_t) = TP / n - FP / n * p_t / (1 - p_t)``

(Vickers and Elkin [1]_), in true positives per patient net of the harm of false
positives. "Treat all" has ``NB = pi - (1 - pi) p_t / (1 - p_t)`` with ``pi`` the
prevalence, "treat none" has ``NB = 0``. A model is useful at ``p_t`` when its net
benefit exceeds both [2]_. Net interventions avoided per 100 patients is
``100 (NB_model - NB_all) / (p_t / (1 - p_t))`` [3]_.

With a stated ``prevalence`` (case-control sampling, or a deployment population other
than the test set) the rates are ``TP / n_1 * pi`` and ``FP / n_0 * (1 - pi)`` [4]_.

Positive calls follow R ``dcurves``: ``p >= p_t``, except that a predicted risk of
exactly 0 is never a positive call (so at ``p_t = 0`` a model that rules cases out
with certainty differs from treat-all).

References
----------
.. [1] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
   prediction models. Med Decis Making 26:565-574, 2006.
.. [2] Vickers AJ, Van Calster B, Steyerberg EW. Net benefit approaches to the evaluation
   of prediction models, molecular markers, and diagnostic tests. BMJ 352:i6, 2016;
   Van Calster B, Wynants L, Verbeek JFM, et al. Reporting and interpreting decision
   curve analysis: a guide for investigators. Eur Urol 74:796-804, 2018.
.. [3] Vickers AJ, Cronin AM, Elkin EB, Gonen M. Extensions to decision curve analysis.
   BMC Med Inform Decis Mak 8:53, 2008.
.. [4] Pfeiffer RM, Gail MH. Estimating the decision curve and its precision from three
   study designs. Biom J 62:764-776, 2020.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import (
    Estimate,
    as_binary,
    as_clusters,
    as_scores,
    check_level,
    check_positive_int,
    choose,
    need_both_classes,
    same_length,
)
from workbench.stats.bootstrap import case_weight_batches, interval_from_replicates

__all__ = ["NetBenefitComparison", "net_benefit", "net_benefit_comparison"]

CI_METHODS = ("bootstrap",)
PER = 100.0  # interventions avoided are reported per 100 patients


@dataclass(frozen=True, slots=True)
class _Inputs:
    y: NDArray[np.float64]
    calls: NDArray[np.float64]  # (n, T) 1.0 where the model treats the case
    thresholds: NDArray[np.float64]
    clusters: NDArray[np.intp] | None
    prevalence: float | None


def _prepare(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    thresholds: ArrayLike,
    clusters: ArrayLike | None,
    prevalence: float | None,
) -> _Inputs:
    y = as_binary(y_true)
    p = as_scores(y_prob, "y_prob")
    n = same_length(y_true=y, y_prob=p)
    outside = (p < 0.0) | (p > 1.0)
    if outside.any():
        found = np.unique(p[outside])[:5].tolist()
        raise StatisticsError(
            f"y_prob must be predicted risks in [0, 1], found {int(outside.sum())} value(s) "
            f"outside, e.g. {found}. Convert scores to probabilities first (e.g. by "
            "logistic recalibration)."
        )
    need_both_classes(y, "Net benefit")
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or len(t) == 0 or not np.isfinite(t).all():
        raise StatisticsError(
            f"thresholds must be a non-empty 1-D array of finite numbers, found {t!r}."
        )
    bad = (t < 0.0) | (t >= 1.0)
    if bad.any():
        raise StatisticsError(
            f"thresholds must lie in [0, 1), found {t[bad][:5].tolist()}. At a threshold of 1 "
            "the harm weight p_t / (1 - p_t) is infinite and net benefit is undefined."
        )
    if prevalence is not None:
        prevalence = float(prevalence)
        if not 0.0 < prevalence < 1.0:
            raise StatisticsError(
                f"prevalence must lie strictly between 0 and 1, found {prevalence!r}."
            )
    calls = ((p[:, None] >= t[None, :]) & (p[:, None] > 0.0)).astype(np.float64)
    return _Inputs(y.astype(np.float64), calls, t, as_clusters(clusters, n), prevalence)


def _curves(
    inp: _Inputs, w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Net benefit of the model and of treat-all, (B, T) each, for weight rows ``w``."""
    y = inp.y
    odds = inp.thresholds / (1.0 - inp.thresholds)
    tp = w @ (y[:, None] * inp.calls)
    fp = w @ ((1.0 - y)[:, None] * inp.calls)
    total = w.sum(axis=1)[:, None]
    pos = (w @ y)[:, None]
    neg = total - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        if inp.prevalence is None:
            tp_rate, fp_rate = tp / total, fp / total
            prev = pos / total
        else:
            pi = inp.prevalence
            tp_rate = np.where(pos > 0, tp / pos * pi, np.nan)
            fp_rate = np.where(neg > 0, fp / neg * (1.0 - pi), np.nan)
            prev = np.where((pos > 0) & (neg > 0), pi, np.nan) * np.ones_like(pos)
    model = tp_rate - odds * fp_rate
    treat_all = prev - (1.0 - prev) * odds
    return model, np.broadcast_to(treat_all, model.shape).copy()


def _replicates(
    inp: _Inputs, n_boot: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = len(inp.y)
    # with a stated prevalence the classes are sampled separately (case-control design)
    strata = None if inp.prevalence is None else inp.y.astype(np.intp)
    models, alls = [], []
    for wb in case_weight_batches(n, inp.clusters, n_boot, seed, strata):
        m, a = _curves(inp, wb.astype(np.float64))
        models.append(m)
        alls.append(a)
    return np.vstack(models), np.vstack(alls)


def _interval(
    theta: float,
    reps: NDArray[np.float64],
    level: float,
    n_boot: int,
    what: str,
) -> tuple[float, float, float, int]:
    good = reps[np.isfinite(reps)]
    if len(good) < max(2, n_boot // 2):
        raise NotEstimableError(
            f"The bootstrap interval of {what} is not estimable: {n_boot - len(good)} of "
            f"{n_boot} resamples lacked cases of one class."
        )
    lo, hi = interval_from_replicates(theta, good, level=level, method="percentile")
    sd = float(good.std(ddof=1))
    return lo, hi, sd, n_boot - len(good)


def _method_name(inp: _Inputs, n_boot: int, dropped: int) -> str:
    if inp.clusters is not None:
        unit = f"{int(inp.clusters.max()) + 1} clusters"
    elif inp.prevalence is not None:
        unit = "stratified by class"
    else:
        unit = f"{len(inp.y)} cases"
    extra = f", {dropped} undefined replicates dropped" if dropped else ""
    return f"bootstrap-percentile ({n_boot} replicates, {unit}{extra})"


def net_benefit(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    thresholds: ArrayLike,
    *,
    ci: str | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
    prevalence: float | None = None,
) -> pd.DataFrame:
    """Decision curve: net benefit of the model, treat-all and treat-none per threshold.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_prob : array_like of shape (n,)
        Predicted risks in [0, 1]. A case is treated at ``p_t`` when ``y_prob >= p_t`` and
        ``y_prob > 0`` (R ``dcurves``).
    thresholds : array_like of shape (T,)
        Threshold probabilities in [0, 1).
    ci : {None, "bootstrap"}
        ``None``: point estimates only; the interval columns are NaN and ``method`` says
        so. ``"bootstrap"``: percentile intervals from ``n_boot`` resamples of cases
        (whole clusters with ``clusters``; within each class when ``prevalence`` is
        given), the same resamples for every threshold and strategy.
    level : float
        Confidence level.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the bootstrap generator.
    clusters : array_like of shape (n,), optional
        Patient (cluster) label of each case.
    prevalence : float, optional
        Prevalence of the population the decision is for, when it differs from the test
        set's (case-control sampling [4]_); default: the observed prevalence.

    Returns
    -------
    pandas.DataFrame
        One row per threshold, in the order given: ``threshold``, ``n``, ``prevalence``,
        ``tp``, ``fp`` (counts of treated cases with and without the outcome),
        ``net_benefit`` (the model), ``treat_all``, ``treat_none`` (0), each followed by
        ``_ci_low`` and ``_ci_high`` columns; ``interventions_avoided`` (net, per 100
        patients, against treat-all) with its interval; ``level``, ``method`` and
        ``not_estimable``: empty, or why a value is missing. Interventions avoided are
        undefined at ``p_t = 0`` (division by ``p_t``) and are NaN there with that reason.
        Treat-all has a zero-width interval when ``prevalence`` is stated.

    Raises
    ------
    StatisticsError
        Risks outside [0, 1], thresholds outside [0, 1), invalid prevalence, non-binary
        truth, unknown options.
    NotEstimableError
        Only one class present; too many bootstrap resamples without one class.

    Examples
    --------
    >>> frame = net_benefit([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [0.2, 0.5])
    >>> frame["net_benefit"].round(4).tolist()
    [0.4375, 0.25]
    """
    if ci is not None:
        ci = choose("ci", ci, CI_METHODS)
    level = check_level(level)
    n_boot = check_positive_int("n_boot", n_boot, 2)
    inp = _prepare(y_true, y_prob, thresholds, clusters, prevalence)
    n = len(inp.y)
    ones = np.ones((1, n))
    model, treat_all = (v[0] for v in _curves(inp, ones))
    t = inp.thresholds
    odds = t / (1.0 - t)
    with np.errstate(invalid="ignore", divide="ignore"):
        avoided = np.where(t > 0, PER * (model - treat_all) / odds, np.nan)
    tp = (inp.y[:, None] * inp.calls).sum(axis=0).astype(int)
    fp = ((1.0 - inp.y)[:, None] * inp.calls).sum(axis=0).astype(int)
    prev = float(inp.y.mean()) if inp.prevalence is None else inp.prevalence
    nan_t = np.full(len(t), np.nan)
    cols: dict[str, NDArray[np.float64]] = {}
    if ci is None:
        for name in ("net_benefit", "treat_all", "treat_none", "interventions_avoided"):
            cols[f"{name}_ci_low"] = nan_t
            cols[f"{name}_ci_high"] = nan_t
        method = "no interval (ci=None)"
    else:
        m_b, a_b = _replicates(inp, n_boot, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            ia_b = PER * (m_b - a_b) / odds
        most_dropped = 0
        for name, theta, reps in (
            ("net_benefit", model, m_b),
            ("treat_all", treat_all, a_b),
            ("interventions_avoided", avoided, ia_b),
        ):
            lo, hi = np.full(len(t), np.nan), np.full(len(t), np.nan)
            for j in range(len(t)):
                if not math.isfinite(theta[j]):
                    continue
                lo[j], hi[j], _, dropped = _interval(
                    float(theta[j]), reps[:, j], level, n_boot, f"{name} at {t[j]:g}"
                )
                most_dropped = max(most_dropped, dropped)
            cols[f"{name}_ci_low"], cols[f"{name}_ci_high"] = lo, hi
        cols["treat_none_ci_low"] = cols["treat_none_ci_high"] = np.zeros(len(t))
        method = _method_name(inp, n_boot, most_dropped)
    reason = np.where(
        t > 0, "", "interventions avoided are undefined at threshold 0 (division by p_t)"
    )
    return pd.DataFrame(
        {
            "threshold": t,
            "n": n,
            "prevalence": prev,
            "tp": tp,
            "fp": fp,
            "net_benefit": model,
            "net_benefit_ci_low": cols["net_benefit_ci_low"],
            "net_benefit_ci_high": cols["net_benefit_ci_high"],
            "treat_all": treat_all,
            "treat_all_ci_low": cols["treat_all_ci_low"],
            "treat_all_ci_high": cols["treat_all_ci_high"],
            "treat_none": np.zeros(len(t)),
            "treat_none_ci_low": cols["treat_none_ci_low"],
            "treat_none_ci_high": cols["treat_none_ci_high"],
            "interventions_avoided": avoided,
            "interventions_avoided_ci_low": cols["interventions_avoided_ci_low"],
            "interventions_avoided_ci_high": cols["interventions_avoided_ci_high"],
            "level": level,
            "method": method,
            "not_estimable": reason,
        }
    )


@dataclass(frozen=True, slots=True)
class NetBenefitComparison:
    """Net benefit of a model at one threshold against the default strategies.

    Parameters
    ----------
    threshold : float
        The threshold probability ``p_t``.
    model : Estimate
        Net benefit of treating by the model.
    treat_all : Estimate
        Net benefit of treating everyone.
    over_treat_all : Estimate
        ``NB_model - NB_all``, interval from the same (paired) resamples.
    over_treat_none : Estimate
        ``NB_model - 0``, i.e. ``model``'s net benefit and interval.
    """

    threshold: float
    model: Estimate
    treat_all: Estimate
    over_treat_all: Estimate
    over_treat_none: Estimate

    def exceeds_defaults(self, margin: float = 0.0) -> bool:
        """True when both differences' lower confidence limits exceed ``margin``."""
        return bool(self.over_treat_all.ci_low > margin and self.over_treat_none.ci_low > margin)


def net_benefit_comparison(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    threshold: float,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
    prevalence: float | None = None,
) -> NetBenefitComparison:
    """Does the model's net benefit at ``p_t`` exceed treat-all and treat-none?

    The criterion of decision curve analysis [2]_: a model is worth using at ``p_t`` when
    its net benefit exceeds that of both default strategies. The differences come with
    paired percentile bootstrap intervals (same resamples, see :func:`net_benefit`), so
    an acceptance criterion can require their lower limits to exceed 0
    (:meth:`NetBenefitComparison.exceeds_defaults`).

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Ground truth, 0/1 or bool.
    y_prob : array_like of shape (n,)
        Predicted risks in [0, 1].
    threshold : float
        Threshold probability ``p_t`` in [0, 1).
    level, n_boot, seed, clusters, prevalence
        As in :func:`net_benefit`.

    Returns
    -------
    NetBenefitComparison
    """
    level = check_level(level)
    n_boot = check_positive_int("n_boot", n_boot, 2)
    if np.ndim(threshold) != 0:
        raise StatisticsError(f"threshold must be one number, found {threshold!r}.")
    inp = _prepare(y_true, y_prob, [float(threshold)], clusters, prevalence)
    n = len(inp.y)
    m_hat, a_hat = (float(v[0, 0]) for v in _curves(inp, np.ones((1, n))))
    m_b, a_b = (v[:, 0] for v in _replicates(inp, n_boot, seed))

    def est(theta: float, reps: NDArray[np.float64], what: str) -> Estimate:
        lo, hi, sd, dropped = _interval(theta, reps, level, n_boot, what)
        return Estimate(theta, lo, hi, level, _method_name(inp, n_boot, dropped), n, sd)

    t = float(threshold)
    model = est(m_hat, m_b, f"the net benefit at {t:g}")
    return NetBenefitComparison(
        threshold=t,
        model=model,
        treat_all=est(a_hat, a_b, f"treat-all at {t:g}"),
        over_treat_all=est(m_hat - a_hat, m_b - a_b, f"the advantage over treat-all at {t:g}"),
        over_treat_none=model,
    )

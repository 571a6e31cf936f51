"""Catalogue of the endpoint metrics a protocol may name.

Each metric is described once here: the task it belongs to, the per-case
column it is computed from, its range, whether higher values are better, which
confidence-interval methods ``workbench.stats`` offers for it, and whether it
needs an operating threshold. The schema validates protocols against this
table and the evaluation dispatches on it, so a metric cannot be accepted by
one and unknown to the other.

Classification endpoints a clinician acts on
--------------------------------------------
At the protocol's locked operating point: sensitivity, specificity, PPV, NPV,
accuracy and F1 (``f1``, percentile bootstrap over cases), and the PPV and NPV at
the protocol's ``deployment_prevalence`` (``ppv_at_prevalence``,
``npv_at_prevalence``; Bayes' theorem with delta-method intervals on the logit
scale [3]_). Calibration of probability scores [1]_ [2]_: ``calibration_intercept``
(calibration-in-the-large, ideal 0), ``calibration_slope`` (ideal 1), ``brier`` and
``ece`` (lower is better). Clinical utility [4]_: ``net_benefit_gain``, the net
benefit of the model at the protocol's ``decision_curve.criterion_at`` minus that
of the default strategy (treat-all or treat-none) it beats by the smaller paired
lower confidence limit, so that ``ci_low > 0`` means it beats both.

With the protocol's ``cluster_by`` (several cases per patient) every interval treats the
patient as the unit: proportions get the clustered Wilson or Clopper-Pearson interval at
the Korn-Graubard effective sample size (:func:`workbench.stats.clustered_proportion_ci`),
the predictive values at prevalence carry those variances, AUC uses the clustered DeLong
variance (or resamples patients), and F1, calibration and net benefit resample patients.
Kappa has no clustered variance; its interval says so.

References
----------
.. [1] Van Calster B, McLernon DJ, van Smeden M, Wynants L, Steyerberg EW.
   Calibration: the Achilles heel of predictive analytics. BMC Med 17:230, 2019.
.. [2] Steyerberg EW. Clinical Prediction Models, 2nd ed. Springer, 2019, ch. 15.
.. [3] Mercaldo ND, Lau KF, Zhou XH. Confidence intervals for predictive values with
   an emphasis to case-control studies. Stat Med 26:2170-2183, 2007.
.. [4] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
   prediction models. Med Decis Making 26:565-574, 2006.
.. [5] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging. CRC Press,
   2017, ch. 13-14 (free-response figures of merit: wAFROC, AFROC, highest-rating AUC).

Detection endpoints
-------------------
Free-response figures of merit of the model's marks matched to the reference lesions
by the protocol's locked ``matching`` rule [5]_: ``wafroc`` (weighted AFROC AUC, the
recommended primary endpoint), ``afroc`` (unweighted), ``wafroc1`` and ``afroc1``
(the highest non-lesion rating of *every* case is its false-positive rating: for test
sets in which every case holds a lesion), ``hrauc`` (highest-rating
inferred ROC AUC, needs cases without lesions), ``lesion_sensitivity`` (lesions
localised by any kept mark / lesions) and ``sensitivity_at_fppi`` (lesion
localisation fraction at the endpoint's stated ``fppi`` non-lesion marks per image).
Intervals: case-resampling bootstrap (within diseased and non-diseased cases, or
whole patients with the protocol's ``cluster_by``), or the jackknife.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Metric", "MetricInfo", "Task", "METRICS", "metric_info"]


class Task(StrEnum):
    """What the validated model does."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    DETECTION = "detection"


class Metric(StrEnum):
    """Endpoint metrics known to the workbench."""

    AUC = "auc"
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    PPV = "ppv"
    NPV = "npv"
    ACCURACY = "accuracy"
    F1 = "f1"
    PPV_AT_PREVALENCE = "ppv_at_prevalence"
    NPV_AT_PREVALENCE = "npv_at_prevalence"
    CALIBRATION_INTERCEPT = "calibration_intercept"
    CALIBRATION_SLOPE = "calibration_slope"
    BRIER = "brier"
    ECE = "ece"
    NET_BENEFIT_GAIN = "net_benefit_gain"
    KAPPA_MODEL_VS_CONSENSUS = "kappa_model_vs_consensus"
    KAPPA_MULTICLASS = "kappa_multiclass"
    DICE_MEAN = "dice_mean"
    DICE_MEDIAN = "dice_median"
    SURFACE_DICE_MEAN = "surface_dice_mean"
    SURFACE_DICE_MEDIAN = "surface_dice_median"
    HD95_MEAN = "hd95_mean"
    HD95_MEDIAN = "hd95_median"
    ASSD_MEAN = "assd_mean"
    ASSD_MEDIAN = "assd_median"
    WAFROC = "wafroc"
    WAFROC1 = "wafroc1"
    AFROC = "afroc"
    AFROC1 = "afroc1"
    HRAUC = "hrauc"
    LESION_SENSITIVITY = "lesion_sensitivity"
    SENSITIVITY_AT_FPPI = "sensitivity_at_fppi"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """How one metric is computed and judged.

    Parameters
    ----------
    metric : Metric
        The metric.
    task : Task
        The task whose protocols may use it.
    label : str
        Human-readable name used in criterion texts and reports.
    column : str or None
        Per-case column of the cases frame for segmentation metrics (``dice``,
        ``hd95``...); None for classification metrics, which use ``y_true``
        and ``score``.
    summary : str or None
        ``"mean"`` or ``"median"`` for per-case metrics summarised over cases.
    low, high : float
        Range of the metric; criterion thresholds must lie inside it.
    higher_is_better : bool
        Direction of the metric; fixes which criterion operators make sense.
    ci_methods : tuple of str
        Confidence-interval methods ``workbench.stats`` offers; the first is the default.
    needs_threshold : bool
        Whether the metric needs an operating threshold on the score.
    unit : str
        Unit for rendering (``""`` for unitless).
    target : float or None
        Ideal value of a two-sided metric (calibration slope 1, intercept 0), which is
        judged by closeness to the target rather than by direction; ``None`` for
        one-sided metrics. ``higher_is_better`` is meaningless when it is set.
    needs_probability : bool
        Whether the metric is defined only for scores that are probabilities
        (calibration, decision curves); not evaluable under ``score_is_probability: false``.
    needs_prevalence : bool
        Whether the metric needs the protocol's ``deployment_prevalence``.
    needs_decision_curve : bool
        Whether the metric is judged at the protocol's ``decision_curve.criterion_at``.
    needs_fppi : bool
        Whether the endpoint must state ``fppi`` (non-lesion marks per image).
    fom : str or None
        Detection metrics: the figure of merit of :func:`workbench.stats.froc_estimate`
        it is computed as (``None`` for ``sensitivity_at_fppi``, read off the FROC curve).
    """

    metric: Metric
    task: Task
    label: str
    column: str | None
    summary: str | None
    low: float
    high: float
    higher_is_better: bool
    ci_methods: tuple[str, ...]
    needs_threshold: bool
    unit: str = ""
    target: float | None = None
    needs_probability: bool = False
    needs_prevalence: bool = False
    needs_decision_curve: bool = False
    needs_fppi: bool = False
    fom: str | None = None


_PROPORTION_CI = ("wilson", "clopper-pearson")


def _proportion(metric: Metric, label: str) -> MetricInfo:
    return MetricInfo(
        metric, Task.CLASSIFICATION, label, None, None, 0.0, 1.0, True, _PROPORTION_CI, True
    )


def _calibration(
    metric: Metric, label: str, low: float, high: float, *, target: float | None
) -> MetricInfo:
    return MetricInfo(
        metric=metric,
        task=Task.CLASSIFICATION,
        label=label,
        column=None,
        summary=None,
        low=low,
        high=high,
        higher_is_better=False,
        ci_methods=("bootstrap",),
        needs_threshold=False,
        target=target,
        needs_probability=True,
    )


def _per_case(
    metric: Metric, label: str, column: str, summary: str, *, distance: bool
) -> MetricInfo:
    return MetricInfo(
        metric=metric,
        task=Task.SEGMENTATION,
        label=label,
        column=column,
        summary=summary,
        low=0.0,
        high=math.inf if distance else 1.0,
        higher_is_better=not distance,
        ci_methods=("bootstrap",),
        needs_threshold=False,
        unit="mm" if distance else "",
    )


_FROC_CI = ("bootstrap", "jackknife")


def _detection(metric: Metric, label: str, fom: str | None) -> MetricInfo:
    return MetricInfo(
        metric=metric,
        task=Task.DETECTION,
        label=label,
        column=None,
        summary=None,
        low=0.0,
        high=1.0,
        higher_is_better=True,
        ci_methods=_FROC_CI if fom is not None else ("bootstrap",),
        needs_threshold=False,
        needs_fppi=fom is None,
        fom=fom,
    )


METRICS: dict[Metric, MetricInfo] = {
    Metric.AUC: MetricInfo(
        Metric.AUC,
        Task.CLASSIFICATION,
        "AUC",
        None,
        None,
        0.0,
        1.0,
        True,
        ("delong", "bootstrap"),
        False,
    ),
    Metric.SENSITIVITY: _proportion(Metric.SENSITIVITY, "sensitivity"),
    Metric.SPECIFICITY: _proportion(Metric.SPECIFICITY, "specificity"),
    Metric.PPV: _proportion(Metric.PPV, "positive predictive value"),
    Metric.NPV: _proportion(Metric.NPV, "negative predictive value"),
    Metric.ACCURACY: _proportion(Metric.ACCURACY, "accuracy"),
    Metric.F1: MetricInfo(
        Metric.F1,
        Task.CLASSIFICATION,
        "F1 score",
        None,
        None,
        0.0,
        1.0,
        True,
        ("bootstrap",),
        True,
    ),
    Metric.PPV_AT_PREVALENCE: MetricInfo(
        Metric.PPV_AT_PREVALENCE,
        Task.CLASSIFICATION,
        "PPV at the deployment prevalence",
        None,
        None,
        0.0,
        1.0,
        True,
        ("logit", "adjusted-logit"),
        True,
        needs_prevalence=True,
    ),
    Metric.NPV_AT_PREVALENCE: MetricInfo(
        Metric.NPV_AT_PREVALENCE,
        Task.CLASSIFICATION,
        "NPV at the deployment prevalence",
        None,
        None,
        0.0,
        1.0,
        True,
        ("logit", "adjusted-logit"),
        True,
        needs_prevalence=True,
    ),
    Metric.CALIBRATION_INTERCEPT: _calibration(
        Metric.CALIBRATION_INTERCEPT,
        "calibration intercept (calibration-in-the-large)",
        -math.inf,
        math.inf,
        target=0.0,
    ),
    Metric.CALIBRATION_SLOPE: _calibration(
        Metric.CALIBRATION_SLOPE, "calibration slope", -math.inf, math.inf, target=1.0
    ),
    Metric.BRIER: _calibration(Metric.BRIER, "Brier score", 0.0, 1.0, target=None),
    Metric.ECE: _calibration(Metric.ECE, "expected calibration error", 0.0, 1.0, target=None),
    Metric.NET_BENEFIT_GAIN: MetricInfo(
        Metric.NET_BENEFIT_GAIN,
        Task.CLASSIFICATION,
        "net benefit gain over treat-all and treat-none",
        None,
        None,
        -math.inf,
        1.0,
        True,
        ("bootstrap",),
        False,
        needs_probability=True,
        needs_decision_curve=True,
    ),
    Metric.KAPPA_MODEL_VS_CONSENSUS: MetricInfo(
        Metric.KAPPA_MODEL_VS_CONSENSUS,
        Task.CLASSIFICATION,
        "Cohen's kappa (model vs consensus)",
        None,
        None,
        -1.0,
        1.0,
        True,
        ("asymptotic",),
        True,
    ),
    Metric.KAPPA_MULTICLASS: MetricInfo(
        Metric.KAPPA_MULTICLASS,
        Task.CLASSIFICATION,
        "Cohen's kappa (model's class vs reference class)",
        None,
        None,
        -1.0,
        1.0,
        True,
        ("asymptotic",),
        False,
    ),
    Metric.DICE_MEAN: _per_case(Metric.DICE_MEAN, "mean Dice", "dice", "mean", distance=False),
    Metric.DICE_MEDIAN: _per_case(
        Metric.DICE_MEDIAN, "median Dice", "dice", "median", distance=False
    ),
    Metric.SURFACE_DICE_MEAN: _per_case(
        Metric.SURFACE_DICE_MEAN, "mean surface Dice", "surface_dice", "mean", distance=False
    ),
    Metric.SURFACE_DICE_MEDIAN: _per_case(
        Metric.SURFACE_DICE_MEDIAN, "median surface Dice", "surface_dice", "median", distance=False
    ),
    Metric.HD95_MEAN: _per_case(Metric.HD95_MEAN, "mean HD95", "hd95", "mean", distance=True),
    Metric.HD95_MEDIAN: _per_case(
        Metric.HD95_MEDIAN, "median HD95", "hd95", "median", distance=True
    ),
    Metric.ASSD_MEAN: _per_case(Metric.ASSD_MEAN, "mean ASSD", "assd", "mean", distance=True),
    Metric.ASSD_MEDIAN: _per_case(
        Metric.ASSD_MEDIAN, "median ASSD", "assd", "median", distance=True
    ),
    Metric.WAFROC: _detection(Metric.WAFROC, "wAFROC figure of merit", "wafroc"),
    Metric.WAFROC1: _detection(
        Metric.WAFROC1, "wAFROC1 figure of merit (false positives of all cases)", "wafroc1"
    ),
    Metric.AFROC: _detection(Metric.AFROC, "AFROC figure of merit", "afroc"),
    Metric.AFROC1: _detection(
        Metric.AFROC1, "AFROC1 figure of merit (false positives of all cases)", "afroc1"
    ),
    Metric.HRAUC: _detection(Metric.HRAUC, "highest-rating inferred ROC AUC", "hrauc"),
    Metric.LESION_SENSITIVITY: _detection(
        Metric.LESION_SENSITIVITY, "lesion-level sensitivity", "max_llf"
    ),
    Metric.SENSITIVITY_AT_FPPI: _detection(
        Metric.SENSITIVITY_AT_FPPI, "lesion sensitivity at stated false positives per image", None
    ),
}


def metric_info(metric: Metric | str) -> MetricInfo:
    """Return the catalogue entry of ``metric``.

    Parameters
    ----------
    metric : Metric or str
        Metric name, e.g. ``"auc"``.

    Returns
    -------
    MetricInfo

    Raises
    ------
    ValueError
        If the metric is unknown (the message lists the known ones).
    """
    try:
        return METRICS[Metric(metric)]
    except ValueError:
        known = ", ".join(m.value for m in Metric)
        raise ValueError(f"unknown metric {metric!r}; expected one of: {known}") from None

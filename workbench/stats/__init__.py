"""Statistics engine: metrics, confidence intervals, tests and stratification.

Pure functions on numpy arrays (numpy, scipy, statsmodels only; pandas frames where a
table is the natural input or output). Ground truth comes first and options are
keyword-only. Every estimate is an :class:`Estimate`; every test a :class:`TestResult`.
Undefined statistics raise :class:`~workbench.errors.NotEstimableError` or carry an
explicit status, never a silent NaN; invalid input raises
:class:`~workbench.errors.StatisticsError` saying what was expected and found.

Modules: ``roc`` (AUC, DeLong, ROC bands), ``proportions`` (Wilson, Clopper-Pearson,
threshold metrics), ``agreement`` (kappas), ``segmentation`` (Dice, HD95, NSD),
``bootstrap`` (clustered bootstrap CIs), ``strata`` (stratified analysis,
heterogeneity, Holm), ``planning`` (sample size), ``mrmc`` (Obuchowski-Rockette),
``mrmc_power`` (readers and cases for a reader study from pilot variance components).
Detection: ``detection`` (one-to-one lesion matching, average precision) and ``froc``
(free-response figures of merit, FROC curves, CIs and MRMC analysis).
Classification utility: ``calibration``, ``decision_curve`` (net benefit) and ``utility``
(predictive values at a deployment prevalence).
"""

from workbench.stats._core import Estimate, TestResult
from workbench.stats.agreement import (
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_test,
    kappa_from_table,
    pairwise_kappas,
    percent_agreement,
)
from workbench.stats.bootstrap import bootstrap_ci, bootstrap_mean_ci
from workbench.stats.calibration import CalibrationCurve, CalibrationResult, calibration
from workbench.stats.decision_curve import (
    NetBenefitComparison,
    net_benefit,
    net_benefit_comparison,
)
from workbench.stats.detection import MatchResult, average_precision, match_lesions
from workbench.stats.froc import (
    FrocCurve,
    froc_curve,
    froc_estimate,
    froc_figure_of_merit,
    froc_mrmc,
    sensitivity_at_fppi,
)
from workbench.stats.mrmc import (
    MrmcFixedAnalysis,
    MrmcResult,
    obuchowski_rockette,
    obuchowski_rockette_from_jackknife,
)
from workbench.stats.mrmc_power import (
    MrmcPower,
    MrmcSampleSize,
    MrmcVarianceComponents,
    SampleSizeRow,
    mrmc_power,
    mrmc_sample_size,
    variance_components_from_pilot,
    variance_components_from_result,
)
from workbench.stats.planning import (
    SampleSize,
    hanley_mcneil_variance,
    sample_size_auc,
    sample_size_sensitivity,
    sample_size_specificity,
)
from workbench.stats.proportions import (
    BinaryMetrics,
    binary_metrics,
    clustered_proportion_ci,
    proportion_ci,
)
from workbench.stats.roc import RocCurve, auc, auc_variance, delong_test, roc_curve_with_band
from workbench.stats.segmentation import (
    SegmentationMetrics,
    dice,
    hausdorff_distance,
    iou,
    mean_surface_distance,
    segmentation_metrics,
    surface_dice,
)
from workbench.stats.strata import METRICS, heterogeneity_test, holm, stratified
from workbench.stats.utility import PredictiveValues, predictive_values

__all__ = [
    "METRICS",
    "BinaryMetrics",
    "CalibrationCurve",
    "CalibrationResult",
    "Estimate",
    "FrocCurve",
    "MatchResult",
    "average_precision",
    "match_lesions",
    "MrmcFixedAnalysis",
    "MrmcPower",
    "MrmcResult",
    "MrmcSampleSize",
    "MrmcVarianceComponents",
    "NetBenefitComparison",
    "PredictiveValues",
    "RocCurve",
    "SampleSize",
    "SampleSizeRow",
    "SegmentationMetrics",
    "TestResult",
    "auc",
    "auc_variance",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "calibration",
    "cohen_kappa",
    "delong_test",
    "dice",
    "fleiss_kappa",
    "fleiss_kappa_test",
    "hanley_mcneil_variance",
    "hausdorff_distance",
    "heterogeneity_test",
    "holm",
    "iou",
    "kappa_from_table",
    "mean_surface_distance",
    "mrmc_power",
    "mrmc_sample_size",
    "obuchowski_rockette",
    "obuchowski_rockette_from_jackknife",
    "froc_curve",
    "froc_estimate",
    "froc_figure_of_merit",
    "froc_mrmc",
    "sensitivity_at_fppi",
    "pairwise_kappas",
    "net_benefit",
    "net_benefit_comparison",
    "percent_agreement",
    "predictive_values",
    "clustered_proportion_ci",
    "proportion_ci",
    "roc_curve_with_band",
    "sample_size_auc",
    "sample_size_sensitivity",
    "sample_size_specificity",
    "segmentation_metrics",
    "stratified",
    "surface_dice",
    "variance_components_from_pilot",
    "variance_components_from_result",
]

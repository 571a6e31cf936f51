"""Data-quality checks of DICOM test sets.

:func:`run_quality_checks` runs great-expectations suites over the DICOM index
plus pixel, burned-in annotation, PS3.15 confidentiality-profile and leakage
checks, and returns a :class:`QualityReport` whose critical findings block the
lock and the run (:meth:`QualityReport.raise_if_blocking`).
"""

from workbench.quality.checks import (
    DEFAULT_SUITE,
    SUITES,
    build_training_manifest,
    case_table,
    run_quality_checks,
    series_table,
)
from workbench.quality.findings import Finding, QualityReport, Severity
from workbench.quality.phi import (
    PROFILE,
    ProfileEntry,
    check_phi,
    declared_options,
    looks_like_person_name,
)

__all__ = [
    "DEFAULT_SUITE",
    "PROFILE",
    "SUITES",
    "Finding",
    "ProfileEntry",
    "QualityReport",
    "Severity",
    "build_training_manifest",
    "case_table",
    "check_phi",
    "declared_options",
    "looks_like_person_name",
    "run_quality_checks",
    "series_table",
]

"""Data-quality checks of DICOM test sets.

:func:`run_quality_checks` runs the great-expectations suites of a data-quality
suite (:data:`SUITES`: one per modality family, or ``mixed-test-set-v1``) over the
DICOM index, plus pixel, per-frame geometry, burned-in annotation (header, and
OCR of the pixels with ``ocr=True``), PS3.15 confidentiality-profile and leakage
checks, and returns a :class:`QualityReport` whose critical findings block the
lock and the run (:meth:`QualityReport.raise_if_blocking`). Every finding names
the file, the check, the attribute (keyword and tag), what was expected and what
was found, never an identifying value.
"""

from workbench.quality.checks import (
    DEFAULT_SUITE,
    MODALITY_CATEGORIES,
    SUITE_DEFINITIONS,
    SUITES,
    Suite,
    build_training_manifest,
    case_frame,
    case_table,
    run_quality_checks,
    series_table,
    suite_definition,
)
from workbench.quality.findings import (
    FINDING_COLUMNS,
    Finding,
    FindingGroup,
    QualityReport,
    Severity,
    attribute,
    finding_id,
)
from workbench.quality.phi import (
    PROFILE,
    ProfileEntry,
    check_phi,
    declared_options,
    looks_like_person_name,
)

__all__ = [
    "DEFAULT_SUITE",
    "FINDING_COLUMNS",
    "MODALITY_CATEGORIES",
    "PROFILE",
    "SUITES",
    "SUITE_DEFINITIONS",
    "Finding",
    "FindingGroup",
    "ProfileEntry",
    "QualityReport",
    "Severity",
    "Suite",
    "attribute",
    "build_training_manifest",
    "case_frame",
    "case_table",
    "check_phi",
    "declared_options",
    "finding_id",
    "looks_like_person_name",
    "run_quality_checks",
    "series_table",
    "suite_definition",
]

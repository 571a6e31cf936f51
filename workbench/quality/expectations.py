"""great-expectations suites over the DICOM index and the per-series table.

The suites are declared as data (:func:`file_suite`, :func:`series_suite`,
:func:`case_suite`): each expectation carries in ``meta`` the check name,
severity and a message template, so that a failed expectation becomes one
:class:`~workbench.quality.findings.Finding` per offending row, naming the
file. They run in an ephemeral data context with progress bars and analytics
off, so nothing is written to disk and nothing is sent anywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from workbench.quality.findings import Finding, Severity

__all__ = ["ExpectationSpec", "case_suite", "file_suite", "run_suite", "series_suite"]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

ExpectationSpec = tuple[str, dict[str, Any], dict[str, str]]
"""(expectation class name, kwargs, meta with check / severity / attribute / message)."""

_CONTEXT: Any = None

REQUIRED_FILE_COLUMNS = (
    "path",
    "sop_instance_uid",
    "sop_class_uid",
    "series_instance_uid",
    "study_instance_uid",
    "modality",
)
IMAGE_COLUMNS = (
    "rows",
    "columns",
    "pixel_spacing_row",
    "pixel_spacing_col",
    "slice_thickness",
    "image_position_z",
    "image_orientation",
)


def _context() -> Any:
    """One ephemeral context per process, with progress bars and analytics off."""
    global _CONTEXT
    if _CONTEXT is None:
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            analytics_enabled=False,
        )
        _CONTEXT = gx.get_context(project_config=config, mode="ephemeral")
    return _CONTEXT


def _meta(check: str, severity: Severity, attribute: str, message: str) -> dict[str, str]:
    return {"check": check, "severity": severity.value, "attribute": attribute, "message": message}


def file_suite(expected_modality: str) -> list[ExpectationSpec]:
    """Expectations on every readable DICOM file (one row of ``DicomIndex.files``).

    Parameters
    ----------
    expected_modality : str
        Modality the image files must have (``"CT"``); SEG files are checked by
        :func:`case_suite` instead.
    """
    crit = Severity.CRITICAL
    specs: list[ExpectationSpec] = []
    for col in REQUIRED_FILE_COLUMNS:
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": col},
                _meta("required_tags", crit, col, f"required attribute {col} is missing or empty"),
            )
        )
    specs.append(
        (
            "ExpectColumnValuesToBeUnique",
            {"column": "sop_instance_uid"},
            _meta(
                "uid_uniqueness",
                crit,
                "sop_instance_uid",
                "SOPInstanceUID is shared with another file of the test set; expected unique",
            ),
        )
    )
    return specs


def image_suite(expected_modality: str) -> list[ExpectationSpec]:
    """Expectations on image files (every file that is not a SEG)."""
    crit, major = Severity.CRITICAL, Severity.MAJOR
    specs: list[ExpectationSpec] = [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "modality", "value_set": [expected_modality]},
            _meta(
                "modality",
                crit,
                "modality",
                f"expected Modality {expected_modality}, found {{value}}",
            ),
        )
    ]
    for col in IMAGE_COLUMNS:
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": col},
                _meta("required_tags", crit, col, f"required image attribute {col} is missing"),
            )
        )
    for col in ("pixel_spacing_row", "pixel_spacing_col"):
        specs.append(
            (
                "ExpectColumnValuesToBeBetween",
                {"column": col, "min_value": 0.1, "max_value": 5.0},
                _meta("geometry_range", major, col, "pixel spacing {value} mm outside 0.1 to 5 mm"),
            )
        )
    specs.append(
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "slice_thickness", "min_value": 0.3, "max_value": 10.0},
            _meta(
                "geometry_range",
                major,
                "slice_thickness",
                "slice thickness {value} mm outside 0.3 to 10 mm",
            ),
        )
    )
    specs.append(
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "rows", "min_value": 32, "max_value": 4096},
            _meta("geometry_range", major, "rows", "Rows {value} outside 32 to 4096"),
        )
    )
    for col, attr in (("patient_sex", "PatientSex"), ("patient_age", "PatientAge")):
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": col},
                _meta("demographics", major, attr, f"{attr} is missing; strata need it"),
            )
        )
    specs.append(
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "patient_sex", "value_set": ["M", "F", "O"]},
            _meta(
                "demographics", major, "PatientSex", "expected PatientSex M, F or O, found {value}"
            ),
        )
    )
    specs.append(
        (
            "ExpectColumnValuesToMatchRegex",
            {"column": "patient_age", "regex": r"^\d{3}[DWMY]$"},
            _meta(
                "demographics",
                major,
                "PatientAge",
                "expected PatientAge like 063Y (PS3.5 AS), found {value}",
            ),
        )
    )
    specs.append(
        (
            "ExpectColumnValuesToNotBeNull",
            {"column": "manufacturer"},
            _meta("demographics", major, "Manufacturer", "Manufacturer is missing; strata need it"),
        )
    )
    return specs


def series_suite() -> list[ExpectationSpec]:
    """Expectations on the per-series table (see ``checks.series_table``)."""
    crit = Severity.CRITICAL
    return [
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "n_orientations", "min_value": 1, "max_value": 1},
            _meta(
                "orientation_consistency",
                crit,
                "ImageOrientationPatient",
                "slices of the series have {value} different orientations; expected 1",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "missing_slices", "min_value": 0, "max_value": 0},
            _meta(
                "series_completeness",
                crit,
                "ImagePositionPatient",
                "{value} slice(s) missing: gaps in slice positions; expected none",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "duplicate_positions", "min_value": 0, "max_value": 0},
            _meta(
                "series_completeness",
                crit,
                "ImagePositionPatient",
                "{value} slice position(s) occur more than once; expected one slice per position",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "spacing_deviation", "min_value": 0.0, "max_value": 0.01},
            _meta(
                "series_completeness",
                crit,
                "ImagePositionPatient",
                "slice spacing not uniform: largest relative deviation {value}; expected <= 0.01",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "n_slices", "min_value": 3, "max_value": None},
            _meta("series_completeness", crit, "", "series has {value} slice(s); expected >= 3"),
        ),
    ]


def case_suite() -> list[ExpectationSpec]:
    """Expectations on the per-case table: every CT series has its reference standard."""
    crit = Severity.CRITICAL
    return [
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "n_seg", "min_value": 1, "max_value": None},
            _meta(
                "reference_standard",
                crit,
                "ReferencedSeriesSequence",
                "no DICOM SEG references this series; expected at least one reader SEG",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "n_label_rows", "min_value": 1, "max_value": 1},
            _meta(
                "reference_standard",
                crit,
                "reference/labels.csv",
                "{value} row(s) in reference/labels.csv for this series; expected exactly 1",
            ),
        ),
    ]


def _show(value: Any) -> str:
    if value is None or value != value:  # None or NaN
        return "no value"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return f"{value:g}"
    return repr(str(value))


def _build(spec: ExpectationSpec) -> Any:
    import great_expectations as gx

    name, kwargs, meta = spec
    cls = getattr(gx.expectations, name)
    return cls(**kwargs, meta=meta)


def run_suite(
    frame: pd.DataFrame,
    specs: Sequence[ExpectationSpec],
    *,
    name: str,
    path_of: Callable[[Any], str],
) -> list[Finding]:
    """Validate ``frame`` with the expectations and translate failures into findings.

    Parameters
    ----------
    frame : DataFrame
        Table to validate; its index labels are handed to ``path_of``.
    specs : sequence of ExpectationSpec
        Expectations with their finding metadata.
    name : str
        Suite name (unique within the process run).
    path_of : callable
        Maps a row's index label to the path the finding names.

    Returns
    -------
    list of Finding
        One per offending row and expectation; a column missing from ``frame``
        gives one critical finding for the whole table.
    """
    import great_expectations as gx

    findings: list[Finding] = []
    present = [s for s in specs if s[1].get("column") in frame.columns]
    for spec in specs:
        if spec[1].get("column") not in frame.columns:
            col = spec[1].get("column")
            findings.append(
                Finding(
                    spec[2]["check"],
                    Severity.CRITICAL,
                    "",
                    str(col),
                    f"the index has no column {col!r}; expected it for this check",
                )
            )
    if frame.empty or not present:
        return findings
    rows = list(frame.index)
    data = frame.reset_index(drop=True)
    # GX 1.x rejects some pandas extension dtypes; plain objects/floats are enough here.
    data = data.astype({c: object for c in data.columns if data[c].dtype.kind not in "biuf"})
    context = _context()
    unique = f"{name}-{id(frame)}-{len(findings)}"
    source = context.data_sources.add_or_update_pandas(name=f"src-{unique}")
    asset = source.add_dataframe_asset(name="table")
    batch_def = asset.add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=f"suite-{unique}")
    for spec in present:
        suite.add_expectation(_build(spec))
    batch = batch_def.get_batch(batch_parameters={"dataframe": data})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    context.data_sources.delete(name=f"src-{unique}")
    for res in result.results:
        if res.success:
            continue
        meta = res.expectation_config.meta or {}
        severity = Severity(meta.get("severity", "major"))
        if res.exception_info and res.exception_info.get("raised_exception"):
            findings.append(
                Finding(
                    meta.get("check", "expectations"),
                    Severity.CRITICAL,
                    "",
                    meta.get("attribute", ""),
                    "the expectation could not be evaluated: "
                    + str(res.exception_info.get("exception_message", ""))[:200],
                )
            )
            continue
        idx = res.result.get("unexpected_index_list") or []
        values = res.result.get("unexpected_list") or [None] * len(idx)
        for i, value in zip(idx, values, strict=False):
            shown = _show(value)
            findings.append(
                Finding(
                    meta.get("check", "expectations"),
                    severity,
                    path_of(rows[int(i)]),
                    meta.get("attribute", ""),
                    meta.get("message", "expectation failed").replace("{value}", shown),
                )
            )
    return findings

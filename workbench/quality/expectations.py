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
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from workbench.quality.findings import Finding, Severity, attribute

__all__ = [
    "CATEGORIES",
    "COLUMN_ATTRIBUTES",
    "ExpectationSpec",
    "PIXEL_SPACING_RANGE",
    "case_suite",
    "file_suite",
    "image_suite",
    "pixel_spacing_pair",
    "run_suite",
    "series_suite",
]

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


COLUMN_ATTRIBUTES: dict[str, str] = {
    "path": "file",
    "sop_instance_uid": attribute("SOPInstanceUID"),
    "sop_class_uid": attribute("SOPClassUID"),
    "series_instance_uid": attribute("SeriesInstanceUID"),
    "study_instance_uid": attribute("StudyInstanceUID"),
    "modality": attribute("Modality"),
    "rows": attribute("Rows"),
    "columns": attribute("Columns"),
    "pixel_spacing_row": attribute("PixelSpacing"),
    "pixel_spacing_col": attribute("PixelSpacing"),
    "pixel_spacing": attribute("PixelSpacing"),
    "any_pixel_spacing": f"{attribute('PixelSpacing')} or {attribute('ImagerPixelSpacing')}",
    "slice_thickness": attribute("SliceThickness"),
    "image_position_z": attribute("ImagePositionPatient"),
    "image_orientation": attribute("ImageOrientationPatient"),
    "patient_sex": attribute("PatientSex"),
    "patient_age": attribute("PatientAge"),
    "manufacturer": attribute("Manufacturer"),
    "photometric_interpretation": attribute("PhotometricInterpretation"),
    "voi": f"{attribute('WindowCenter')} or {attribute('VOILUTSequence')}",
    "us_regions": attribute("SequenceOfUltrasoundRegions"),
}
"""How findings name the DICOM attribute behind each index column."""

PIXEL_SPACING_RANGE = (0.1, 5.0)
"""Plausible PixelSpacing (0028,0030) of a cross-sectional image in mm, both values."""


def pixel_spacing_pair(frame: pd.DataFrame) -> pd.Series:
    """The ``pixel_spacing`` column that :func:`image_suite` checks, from row and column.

    PixelSpacing (0028,0030) holds the row and the column spacing; the index keeps
    them in ``pixel_spacing_row`` and ``pixel_spacing_col``. Checking each would
    report one missing attribute twice. The pair becomes one value: missing when
    either is, else the row spacing when it lies outside :data:`PIXEL_SPACING_RANGE`,
    else the column spacing (inside the range only when both are).

    Parameters
    ----------
    frame : DataFrame
        Rows of ``DicomIndex.files`` with ``pixel_spacing_row`` and
        ``pixel_spacing_col``.

    Returns
    -------
    Series of float
        Indexed like ``frame``; NaN where the pair is incomplete.
    """
    row = pd.to_numeric(frame["pixel_spacing_row"], errors="coerce").astype(float)
    col = pd.to_numeric(frame["pixel_spacing_col"], errors="coerce").astype(float)
    lo, hi = PIXEL_SPACING_RANGE
    row_outside = (row < lo) | (row > hi)
    return row.where(row_outside, col).where(row.notna() & col.notna())


CATEGORIES = ("cross_sectional", "projection", "ultrasound", "other")
"""Image categories with their own expectations (see :func:`image_suite`)."""


def _attr(column: str) -> str:
    return COLUMN_ATTRIBUTES.get(column, column)


def _meta(
    check: str, severity: Severity, attribute: str, message: str, expected: str = ""
) -> dict[str, str]:
    return {
        "check": check,
        "severity": severity.value,
        "attribute": attribute,
        "message": message,
        "expected": expected,
    }


def file_suite() -> list[ExpectationSpec]:
    """Expectations on every image and SEG file (rows of ``DicomIndex.files``).

    Objects that are not images (DICOMDIR, SR, RT...) are reported by
    :func:`workbench.quality.checks.run_quality_checks` as what they are instead.
    """
    crit = Severity.CRITICAL
    specs: list[ExpectationSpec] = []
    for col in REQUIRED_FILE_COLUMNS:
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": col},
                _meta(
                    "required_tags",
                    crit,
                    _attr(col),
                    f"required attribute {_attr(col)} is missing or empty",
                    "present",
                ),
            )
        )
    specs.append(
        (
            "ExpectColumnValuesToBeUnique",
            {"column": "sop_instance_uid"},
            _meta(
                "uid_uniqueness",
                crit,
                _attr("sop_instance_uid"),
                "SOPInstanceUID is shared with another file of the test set; expected unique",
                "unique",
            ),
        )
    )
    return specs


def _not_null(col: str, severity: Severity, why: str = "") -> ExpectationSpec:
    return (
        "ExpectColumnValuesToNotBeNull",
        {"column": col},
        _meta(
            "required_tags",
            severity,
            _attr(col),
            f"required image attribute {_attr(col)} is missing{why}",
            "present",
        ),
    )


def _between(
    col: str, lo: float, hi: float | None, check: str, severity: Severity, message: str
) -> ExpectationSpec:
    expected = f"{lo:g} to {hi:g}" if hi is not None else f">= {lo:g}"
    return (
        "ExpectColumnValuesToBeBetween",
        {"column": col, "min_value": lo, "max_value": hi},
        _meta(check, severity, _attr(col), message, expected),
    )


def image_suite(category: str) -> list[ExpectationSpec]:
    """Expectations on image files of one category.

    Parameters
    ----------
    category : str
        ``cross_sectional`` (CT, MR, PT: Image Plane module, slice thickness),
        ``projection`` (CR, DX, MG: Pixel Spacing or Imager Pixel Spacing,
        MONOCHROME1/2, a VOI window or LUT), ``ultrasound`` (US: colour or grey,
        calibrated regions) or ``other`` (NM, secondary capture: matrix only).
    """
    crit, major, minor = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR
    specs: list[ExpectationSpec] = [_not_null("rows", crit), _not_null("columns", crit)]
    specs.append(
        _between("rows", 32, 8192, "geometry_range", major, "Rows {value} outside 32 to 8192")
    )
    if category == "cross_sectional":
        # PixelSpacing holds two values but is one attribute: its presence and range
        # are checked once, on the column pixel_spacing_pair derives from both
        for col in (
            "pixel_spacing",
            "slice_thickness",
            "image_position_z",
            "image_orientation",
        ):
            specs.append(_not_null(col, crit))
        lo, hi = PIXEL_SPACING_RANGE
        specs.append(
            _between(
                "pixel_spacing",
                lo,
                hi,
                "geometry_range",
                major,
                f"pixel spacing {{value}} mm (row or column) outside {lo:g} to {hi:g} mm",
            )
        )
        specs.append(
            _between(
                "slice_thickness",
                0.3,
                10.0,
                "geometry_range",
                major,
                "slice thickness {value} mm outside 0.3 to 10 mm",
            )
        )
    elif category == "projection":
        specs.append(_not_null("any_pixel_spacing", major, "; measurements in mm are not possible"))
        specs.append(
            (
                "ExpectColumnValuesToBeInSet",
                {
                    "column": "photometric_interpretation",
                    "value_set": ["MONOCHROME1", "MONOCHROME2"],
                },
                _meta(
                    "photometric",
                    major,
                    _attr("photometric_interpretation"),
                    "expected MONOCHROME1 or MONOCHROME2 for a projection image, found {value}",
                    "MONOCHROME1 or MONOCHROME2",
                ),
            )
        )
        specs.append(
            (
                "ExpectColumnValuesToNotBeInSet",
                {"column": "photometric_interpretation", "value_set": ["MONOCHROME1"]},
                _meta(
                    "photometric",
                    Severity.INFO,
                    _attr("photometric_interpretation"),
                    "MONOCHROME1: low values are bright; model preprocessing must invert",
                    "MONOCHROME2",
                ),
            )
        )
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": "voi"},
                _meta(
                    "voi_lut",
                    minor,
                    _attr("voi"),
                    "no VOI window or LUT: the display window is not defined by the modality",
                    "present",
                ),
            )
        )
    elif category == "ultrasound":
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": "us_regions"},
                _meta(
                    "geometry_range",
                    minor,
                    _attr("us_regions"),
                    "no calibrated ultrasound regions: distances in mm cannot be measured",
                    "present",
                ),
            )
        )
    for col, attr in (("patient_sex", "PatientSex"), ("patient_age", "PatientAge")):
        specs.append(
            (
                "ExpectColumnValuesToNotBeNull",
                {"column": col},
                _meta(
                    "demographics",
                    major,
                    _attr(col),
                    f"{attr} is missing; strata need it",
                    "present",
                ),
            )
        )
    specs.append(
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "patient_sex", "value_set": ["M", "F", "O"]},
            _meta(
                "demographics",
                major,
                _attr("patient_sex"),
                "expected PatientSex M, F or O, found {value}",
                "M, F or O",
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
                _attr("patient_age"),
                "expected PatientAge like 063Y (PS3.5 AS), found {value}",
                "nnnD/W/M/Y",
            ),
        )
    )
    specs.append(
        (
            "ExpectColumnValuesToNotBeNull",
            {"column": "manufacturer"},
            _meta(
                "demographics",
                major,
                _attr("manufacturer"),
                "Manufacturer is missing; strata need it",
                "present",
            ),
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
                attribute("ImageOrientationPatient"),
                "slices of the series have {value} different orientations; expected 1",
                "1",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "missing_slices", "min_value": 0, "max_value": 0},
            _meta(
                "series_completeness",
                crit,
                attribute("ImagePositionPatient"),
                "{value} slice(s) missing: gaps in slice positions; expected none",
                "0",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "duplicate_positions", "min_value": 0, "max_value": 0},
            _meta(
                "series_completeness",
                crit,
                attribute("ImagePositionPatient"),
                "{value} slice position(s) occur more than once; expected one slice per position",
                "0",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "spacing_deviation", "min_value": 0.0, "max_value": 0.01},
            _meta(
                "series_completeness",
                crit,
                attribute("ImagePositionPatient"),
                "slice spacing not uniform: largest relative deviation {value}; expected <= 0.01",
                "<= 0.01",
            ),
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "n_slices", "min_value": 3, "max_value": None},
            _meta(
                "series_completeness",
                crit,
                attribute("SeriesInstanceUID"),
                "series has {value} slice(s); expected >= 3",
                ">= 3",
            ),
        ),
    ]


def case_suite(task: str | None = None) -> list[ExpectationSpec]:
    """Expectations on the per-case table: every case has the reference its task needs.

    Parameters
    ----------
    task : str or None
        ``segmentation`` needs a DICOM SEG per case, ``classification`` and
        ``detection`` one row of ``reference/labels.csv``; None (no protocol
        named) needs both.
    """
    crit = Severity.CRITICAL
    specs: list[ExpectationSpec] = []
    if task in (None, "segmentation"):
        specs.append(
            (
                "ExpectColumnValuesToBeBetween",
                {"column": "n_seg", "min_value": 1, "max_value": None},
                _meta(
                    "reference_standard",
                    crit,
                    attribute("ReferencedSeriesSequence"),
                    "no DICOM SEG references this series; expected at least one reader SEG",
                    ">= 1 SEG",
                ),
            )
        )
    if task in (None, "classification", "detection"):
        specs.append(
            (
                "ExpectColumnValuesToBeBetween",
                {"column": "n_label_rows", "min_value": 1, "max_value": 1},
                _meta(
                    "reference_standard",
                    crit,
                    "reference/labels.csv",
                    "{value} row(s) in reference/labels.csv for this case; expected exactly 1",
                    "1 row",
                ),
            )
        )
    return specs


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _show(value: Any) -> str:
    try:
        missing = bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like values
        missing = False
    if value is None or missing:
        return "no value"
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalars
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)  # numbers GX hands back as text
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
    series_of: Callable[[Any], str] | None = None,
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
    series_of : callable, optional
        Maps a row's index label to the Series Instance UID the finding is about,
        for tables of series or cases (several may share a folder); by default
        findings name no series.

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
                    meta.get("expected", ""),
                    shown,
                    series_of(rows[int(i)]) if series_of is not None else "",
                )
            )
    return findings

"""Schema of a validation protocol (pydantic v2, unknown keys forbidden).

A protocol is the pre-registered plan of one validation: what is measured
(endpoints), how uncertain it may be (confidence intervals), what counts as
success (acceptance criteria, overall and per subgroup), which cases go to
clinical adjudication and who must sign. It is written as YAML under
``validation_protocols/`` and loaded with :func:`workbench.protocols.load_protocol`,
which maps every schema error back to its YAML line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from workbench.protocols.metrics import Metric, Task, metric_info

__all__ = [
    "LocatedValueError",
    "Adjudication",
    "CalibrationSpec",
    "CIMethodSpec",
    "CandidateRule",
    "Criterion",
    "CriterionStatistic",
    "DecisionCurveSpec",
    "DetectionReference",
    "DetectionSource",
    "DiscrepancyRule",
    "Endpoint",
    "FailedCasePolicy",
    "Matching",
    "MatchingRule",
    "Multiplicity",
    "MultiplicityFamily",
    "OperatingPoint",
    "OperatingPointRule",
    "Operator",
    "Protocol",
    "ReferenceStandard",
    "SegmentationReference",
    "SegmentationReferenceRule",
    "SegmentationStructure",
    "SignatureRequirement",
    "structure_column",
    "SignerRole",
    "StratumFactor",
    "StratumUnit",
    "SubgroupAcceptance",
    "SubgroupRule",
    "TestSetRef",
    "TuningSet",
]


class LocatedValueError(ValueError):
    """A validation error that knows where below the validated object it lies.

    ``loc`` is appended to pydantic's location so that the loader can point at
    the exact YAML line (e.g. the second endpoint's ``id``).
    """

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class CriterionStatistic(StrEnum):
    """Which number of an estimate a criterion compares.

    ``ci`` is the whole interval, compared with operator ``contains`` (e.g. the
    calibration slope's CI contains 1); ``abs_value`` is the absolute point
    estimate (e.g. ``|calibration intercept| <= 0.1``).
    """

    VALUE = "value"
    CI_LOW = "ci_low"
    CI_HIGH = "ci_high"
    CI = "ci"
    ABS_VALUE = "abs_value"


class Operator(StrEnum):
    """Comparison operator of a criterion."""

    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"
    CONTAINS = "contains"

    def holds(self, left: float, right: float) -> bool:
        """Return whether ``left <op> right`` (``contains`` is judged by :class:`Criterion`)."""
        if self is Operator.CONTAINS:
            raise ValueError("operator 'contains' compares an interval; use Criterion.holds")
        if self is Operator.GE:
            return left >= right
        if self is Operator.GT:
            return left > right
        if self is Operator.LE:
            return left <= right
        return left < right

    @property
    def is_lower_bound(self) -> bool:
        """True for ``>=`` and ``>``: the criterion sets a floor."""
        return self in (Operator.GE, Operator.GT)


class Criterion(_Strict):
    """Structured acceptance criterion, e.g. ``ci_low >= 0.85``.

    Besides a bound on the point estimate or a CI limit, two forms serve
    two-sided metrics such as calibration: ``{statistic: ci, operator: contains,
    threshold: 1}`` (the CI contains 1) and ``{statistic: abs_value, operator: "<=",
    threshold: 0.1}`` (``|value| <= 0.1``). The metric and the CI level come from
    the endpoint; see :meth:`Endpoint.criterion_text` for the human-readable form.
    """

    statistic: CriterionStatistic
    operator: Operator
    threshold: float

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number, found {value!r}")
        return value

    @model_validator(mode="after")
    def _interval_form(self) -> Criterion:
        interval = self.statistic is CriterionStatistic.CI
        if interval != (self.operator is Operator.CONTAINS):
            raise LocatedValueError(
                ("operator",) if interval else ("statistic",),
                "statistic 'ci' goes with operator 'contains' (the CI contains the threshold), "
                f"found statistic {self.statistic.value!r} with operator "
                f"{self.operator.value!r}",
            )
        if self.statistic is CriterionStatistic.ABS_VALUE and self.operator.is_lower_bound:
            raise LocatedValueError(
                ("operator",),
                "statistic 'abs_value' bounds a distance from 0; expected operator '<=' or '<', "
                f"found {self.operator.value!r}",
            )
        return self

    def holds(self, value: float, ci_low: float, ci_high: float) -> bool:
        """Return whether the criterion holds for an estimate's numbers."""
        if self.statistic is CriterionStatistic.CI:
            return ci_low <= self.threshold <= ci_high
        number = {
            "value": value,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "abs_value": abs(value),
        }[self.statistic.value]
        return self.operator.holds(number, self.threshold)


class CIMethodSpec(_Strict):
    """How the confidence interval of an endpoint is computed."""

    method: str | None = Field(
        default=None, description="CI method; default: the metric's first method."
    )
    level: float = 0.95
    n_boot: int = Field(default=2000, ge=200, le=100_000)
    seed: int = 0

    @field_validator("level")
    @classmethod
    def _level(cls, value: float) -> float:
        if not 0.5 <= value < 1.0:
            raise ValueError(f"CI level must lie in [0.5, 1), e.g. 0.95; found {value!r}")
        return value


class TestSetRef(_Strict):
    """Which locked test set the protocol is written for."""

    __test__ = False  # not a pytest test class

    name: str = Field(min_length=1)
    manifest_digest: str | None = None

    @field_validator("manifest_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(
                f"manifest_digest must be 64 lowercase hex digits (SHA-256), found {value!r}"
            )
        return value


class SegmentationReferenceRule(StrEnum):
    """How the reference mask is derived from the readers' DICOM SEG objects.

    ``majority``: a voxel is lesion where at least half of the listed readers
    marked it (with two readers this is their union); ``readerK``: reader K's
    mask alone; ``union`` / ``intersection``: any / all readers.
    """

    MAJORITY = "majority"
    READER1 = "reader1"
    READER2 = "reader2"
    UNION = "union"
    INTERSECTION = "intersection"


class ReferenceSource(StrEnum):
    """The format of the readers' reference segmentations.

    ``seg``: DICOM SEG objects, each identified by content: the series it references
    and its reader (Content Creator's Name, family name, matched case-insensitively;
    else the file name without extension). ``rtstruct``: DICOM RTSTRUCT objects (same
    identification; the reader from Operators' Name), contours rasterised onto the
    referenced series by the centre rule (a voxel is inside when its centre is inside
    the contour, even-odd rule). ``nifti``: NIfTI or NRRD masks listed in
    ``reference/masks.csv`` (columns ``series_instance_uid``, ``reader``, ``path``
    relative to the test-set folder), aligned through their affine.
    """

    SEG = "seg"
    RTSTRUCT = "rtstruct"
    NIFTI = "nifti"


def structure_column(structure: str, column: str) -> str:
    """The cases-frame column of one structure's per-case value, e.g. ``liver/dice``.

    A multi-structure run stores each structure's per-case metrics under these
    names, and ``<structure>/excluded`` with the reason when the structure's
    reference is missing for the case.
    """
    return f"{structure}/{column}"


class SegmentationStructure(_Strict):
    """One structure of a multi-structure segmentation protocol.

    ``reference`` names the structure in the readers' references: a DICOM SEG
    segment label, an RTSTRUCT ROI name or a NIfTI/NRRD label value (an integer);
    ``model_class`` names the model's output channel (one of the model's
    ``output_classes``, not the background) whose voxels of the arg-max label map
    are compared with it.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$", max_length=64)
    reference: str | int
    model_class: str = Field(min_length=1, max_length=64)

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a NIfTI/NRRD label value must be >= 1, found {value}")
        if isinstance(value, str) and not value.strip():
            raise ValueError("reference must name a SEG segment label or RTSTRUCT ROI, found ''")
        return value


class SegmentationReference(_Strict):
    """Reference segmentation: readers' masks combined by a rule.

    One structure (``roi`` / ``label`` pick it, or the only one) or several
    (``structures``), each compared with one class of the model's arg-max label
    map and evaluated by the endpoints that name it.
    """

    readers: list[str] = Field(default_factory=lambda: ["reader1", "reader2"], min_length=1)
    rule: SegmentationReferenceRule = SegmentationReferenceRule.MAJORITY
    source: ReferenceSource = ReferenceSource.SEG
    roi: str | None = Field(
        default=None,
        description="RTSTRUCT ROI name (default: the only ROI) or SEG segment label to use.",
    )
    label: int | None = Field(
        default=None, ge=1, description="NIfTI/NRRD label value of the structure (default: > 0)."
    )
    structures: list[SegmentationStructure] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Several structures, each with its name, its reference (SEG segment label, "
            "RTSTRUCT ROI or NIfTI label value) and the model class it is compared with."
        ),
    )

    @model_validator(mode="after")
    def _rule_names_reader(self) -> SegmentationReference:
        if self.rule.value.startswith("reader") and self.rule.value not in self.readers:
            raise ValueError(
                f"rule {self.rule.value!r} names a reader that is not listed in readers "
                f"{self.readers}"
            )
        if self.structures is not None:
            if self.roi is not None or self.label is not None:
                raise LocatedValueError(
                    ("roi" if self.roi is not None else "label",),
                    "roi and label pick the one structure of a single-structure protocol; with "
                    "structures, name each structure's reference there",
                )
            for kind in ("name", "model_class"):
                values = [getattr(s, kind) for s in self.structures]
                for i, value in enumerate(values):
                    if values.index(value) != i:
                        raise LocatedValueError(
                            ("structures", i, kind),
                            f"duplicate structure {kind} {value!r}; each structure needs its own",
                        )
            for i, structure in enumerate(self.structures):
                is_label = isinstance(structure.reference, int)
                if is_label != (self.source is ReferenceSource.NIFTI):
                    expected = (
                        "a label value (integer)"
                        if self.source is ReferenceSource.NIFTI
                        else "a segment label or ROI name (text)"
                    )
                    raise LocatedValueError(
                        ("structures", i, "reference"),
                        f"source {self.source.value!r} names a structure by {expected}, found "
                        f"{structure.reference!r}",
                    )
        return self

    @property
    def structure_names(self) -> tuple[str, ...]:
        """Names of the structures (empty for the single-structure form)."""
        return tuple(s.name for s in self.structures or ())

    def structure(self, name: str) -> SegmentationStructure:
        """The structure called ``name`` (KeyError names the known ones)."""
        for s in self.structures or ():
            if s.name == name:
                return s
        raise KeyError(f"no structure {name!r}; expected one of {list(self.structure_names)}")


class DetectionSource(StrEnum):
    """Where the reference lesions of a detection protocol come from.

    ``table``: a CSV in the test set (default ``reference/lesions.csv``) of 2D pixel
    boxes or points per SOP Instance (and frame), or of 3D boxes / centres with a
    diameter in patient coordinates (LPS mm), read by
    :func:`workbench.dicom.lesions.lesions_from_table`. ``sr``: DICOM SR Measurement
    Reports (TID 1500) of the test set with planar or 3D spatial coordinates
    (:func:`workbench.dicom.lesions.lesions_from_sr`). ``seg_components``: every
    connected component (26-connected) of the readers' reference SEG, combined by
    ``rule``, is one lesion (:func:`workbench.dicom.lesions.lesions_from_mask`).
    """

    TABLE = "table"
    SR = "sr"
    SEG_COMPONENTS = "seg_components"


#: Lesion columns every source provides (beside ``lesion_id`` and the geometry).
LESION_BASE_ATTRIBUTES = ("diameter", "lesion_weight")


class DetectionReference(_Strict):
    """The reference lesions of a detection protocol.

    ``table`` and ``columns`` (``{workbench column: CSV column}``, e.g.
    ``{lesion_id: nodule_id, diameter_mm: size}``) describe a ``table`` source;
    ``weight_column`` names the table's column with each lesion's clinical weight
    (relative within a case; equal weights by default, and for the other sources);
    ``attributes`` lists lesion columns kept for lesion-level strata and the per-lesion
    table (e.g. ``size_mm``, ``type``).
    ``readers``, ``rule`` and ``min_voxels`` describe a ``seg_components`` source.
    """

    source: DetectionSource
    table: str | None = Field(
        default=None,
        max_length=500,
        description="CSV of lesions relative to the test-set folder (source 'table').",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Renames {workbench column: CSV column} (source 'table').",
    )
    weight_column: str | None = Field(default=None, min_length=1, max_length=64)
    attributes: list[str] = Field(default_factory=list)
    default_diameter_mm: float | None = Field(default=None, gt=0)
    readers: list[str] = Field(default_factory=lambda: ["reader1", "reader2"], min_length=1)
    rule: SegmentationReferenceRule = SegmentationReferenceRule.MAJORITY
    min_voxels: int = Field(default=1, ge=1)

    @field_validator("table")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"table must be a path relative to the test-set folder without '..', found "
                f"{value!r}"
            )
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> DetectionReference:
        tabular = self.source is DetectionSource.TABLE
        if not tabular:
            for name in ("table", "columns", "weight_column"):
                if name in self.model_fields_set:
                    raise LocatedValueError(
                        (name,),
                        f"{name!r} describes a lesion table; source {self.source.value!r} "
                        "takes none (remove it or use source 'table')",
                    )
        seg_only = ("readers", "rule", "min_voxels")
        if self.source is not DetectionSource.SEG_COMPONENTS:
            for name in seg_only:
                if name in self.model_fields_set:
                    raise LocatedValueError(
                        (name,),
                        f"{name!r} describes reference SEG components; source "
                        f"{self.source.value!r} takes none",
                    )
        elif self.rule.value.startswith("reader") and self.rule.value not in self.readers:
            raise LocatedValueError(
                ("rule",),
                f"rule {self.rule.value!r} names a reader that is not listed in readers "
                f"{self.readers}",
            )
        for j, name in enumerate(self.attributes):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise LocatedValueError(
                    ("attributes", j),
                    f"expected a column name (letters, digits, '_'), found {name!r}",
                )
        return self

    @property
    def table_path(self) -> str:
        """The lesion table's path (``reference/lesions.csv`` unless ``table`` names one)."""
        return self.table or "reference/lesions.csv"

    @property
    def lesion_attributes(self) -> tuple[str, ...]:
        """Lesion columns available to lesion-level strata and the per-lesion table."""
        return (
            *LESION_BASE_ATTRIBUTES,
            *(a for a in self.attributes if a not in LESION_BASE_ATTRIBUTES),
        )


class MatchingRule(StrEnum):
    """The locked rule that declares a mark a localisation of a reference lesion.

    See :func:`workbench.stats.match_lesions`: ``iou`` (intersection over union of the
    boxes >= ``threshold``), ``center_in_region`` (the mark's centre inside the lesion's
    box), ``center_distance`` (centres at most ``threshold`` mm apart, or ``threshold``
    times the lesion's diameter with ``relative: true``).
    """

    IOU = "iou"
    CENTER_IN_REGION = "center_in_region"
    CENTER_DISTANCE = "center_distance"


class Matching(_Strict):
    """How marks are matched to reference lesions, fixed before the data are seen.

    Pairs satisfying the rule are assigned one-to-one (Hungarian algorithm), so one
    mark never localises two lesions. ``dimensions: 2`` compares boxes and centres
    in the axial (x, y) plane only, for references drawn on one image; ``3`` (default)
    in patient space. Marks scored below ``score_floor`` are dropped before matching
    (and listed as such).
    """

    rule: MatchingRule
    threshold: float | None = None
    relative: bool = False
    dimensions: Literal[2, 3] = 3
    score_floor: float | None = None

    @model_validator(mode="after")
    def _rule_fields(self) -> Matching:
        if self.rule is MatchingRule.CENTER_IN_REGION:
            if self.threshold is not None:
                raise LocatedValueError(
                    ("threshold",),
                    "rule 'center_in_region' takes no threshold (the lesion's box is the region)",
                )
        elif self.threshold is None or not math.isfinite(self.threshold) or self.threshold <= 0:
            what = "an IoU in (0, 1]" if self.rule is MatchingRule.IOU else "a distance > 0"
            raise LocatedValueError(
                ("threshold",),
                f"rule {self.rule.value!r} needs threshold {what}, found {self.threshold!r}",
            )
        elif self.rule is MatchingRule.IOU and self.threshold > 1:
            raise LocatedValueError(
                ("threshold",), f"an IoU threshold lies in (0, 1], found {self.threshold:g}"
            )
        if self.relative and self.rule is not MatchingRule.CENTER_DISTANCE:
            raise LocatedValueError(
                ("relative",),
                f"relative distances belong to rule 'center_distance', not {self.rule.value!r}",
            )
        if self.score_floor is not None and not math.isfinite(self.score_floor):
            raise LocatedValueError(
                ("score_floor",), f"score_floor must be a finite number, found {self.score_floor}"
            )
        return self

    def describe(self) -> str:
        """The rule in words, e.g. ``3D IoU >= 0.3, one-to-one (Hungarian)``."""
        dims = f"{self.dimensions}D "
        if self.rule is MatchingRule.IOU:
            text = f"{dims}IoU of mark and lesion boxes >= {self.threshold:g}"
        elif self.rule is MatchingRule.CENTER_IN_REGION:
            text = f"mark centre inside the lesion's {dims}box"
        elif self.relative:
            text = f"{dims}centre distance <= {self.threshold:g} x lesion diameter"
        else:
            text = f"{dims}centre distance <= {self.threshold:g} mm"
        floor = (
            f"; marks scored below {self.score_floor:g} dropped"
            if self.score_floor is not None
            else ""
        )
        return f"{text}; one-to-one assignment (Hungarian){floor}"


class CandidateRule(_Strict):
    """How a segmentation model's probability map becomes marks (detection protocols).

    Voxels with probability >= ``threshold`` form 26-connected components; each of at
    least ``min_voxels`` voxels is one mark: its bounding box in patient coordinates,
    its centroid, and score = the maximum probability inside it
    (:func:`workbench.inference.detection.marks_from_probability`).
    """

    threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    min_voxels: int = Field(default=1, ge=1)

    def describe(self) -> str:
        """The rule in words."""
        return (
            f"components (26-connected) of probability >= {self.threshold:g} with at least "
            f"{self.min_voxels} voxel(s); score = maximum probability in the component"
        )


class LabelsKey(StrEnum):
    """The column of ``reference/labels.csv`` that names a case's image series.

    See :mod:`workbench.protocols.cases` for the join each one makes.
    """

    SERIES_INSTANCE_UID = "series_instance_uid"
    STUDY_INSTANCE_UID = "study_instance_uid"
    ACCESSION_NUMBER = "accession_number"
    CASE_ID = "case_id"


class ReaderDescription(_Strict):
    """Who produced part of the reference standard, as the report names them."""

    id: str = Field(min_length=1, max_length=64)
    role: str = Field(default="reader", max_length=200)
    qualification: str = Field(
        default="",
        max_length=500,
        description="e.g. 'board-certified radiologist, 12 years of chest CT'.",
    )


class ReferenceStandard(_Strict):
    """The reference standard the model is compared with."""

    description: str = ""
    labels_column: str | None = Field(
        default=None,
        description=(
            "Column of reference/labels.csv with the truth: 0/1, or a category out of 'classes'."
        ),
    )
    classes: list[str] | None = Field(
        default=None,
        description=(
            "The categories of a multi-class labels column (e.g. [normal, nodule, mass]); the "
            "model's score_classes map to them by name."
        ),
    )
    positive_classes: list[str] | None = Field(
        default=None,
        description=(
            "Of 'classes', those that are positive for the binary endpoints (one-vs-rest); "
            "the case's score is the model's probability of these classes."
        ),
    )
    segmentation: SegmentationReference | None = None
    detection: DetectionReference | None = None
    labels_key: LabelsKey = Field(
        default=LabelsKey.SERIES_INSTANCE_UID,
        description="How labels.csv rows join image series (one rule for check, lock and run).",
    )
    reader_label_columns: list[str] = Field(
        default_factory=list,
        description=(
            "Columns of reference/labels.csv with each reader's own binary call, for the "
            "agreement analyses (model vs each reader, among readers)."
        ),
    )
    readers: list[ReaderDescription] = Field(
        default_factory=list,
        description="The readers behind the reference standard, with role and qualification.",
    )

    @model_validator(mode="after")
    def _classes(self) -> ReferenceStandard:
        classes = self.classes
        if classes is not None:
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise LocatedValueError(
                    ("classes",), f"expected at least two distinct categories, found {classes}"
                )
            if not self.labels_column:
                raise LocatedValueError(
                    ("labels_column",),
                    "classes name the categories of labels_column; expected a labels_column, "
                    "found none",
                )
        if self.positive_classes is not None:
            if classes is None:
                raise LocatedValueError(
                    ("positive_classes",),
                    "positive_classes are taken out of classes; expected classes (e.g. "
                    "[normal, nodule, mass]), found none",
                )
            for j, name in enumerate(self.positive_classes):
                if name not in classes:
                    raise LocatedValueError(
                        ("positive_classes", j),
                        f"expected one of classes {classes}, found {name!r}",
                    )
            if not self.positive_classes or len(self.positive_classes) == len(classes):
                raise LocatedValueError(
                    ("positive_classes",),
                    f"expected at least one and fewer than all of {classes}, found "
                    f"{self.positive_classes}",
                )
        return self

    @property
    def is_multiclass(self) -> bool:
        """Whether the labels column holds categories (``classes``) rather than 0/1."""
        return self.classes is not None

    def binary_truth(self, value: object) -> int | None:
        """The 0/1 truth of one labels-column value (one-vs-rest for categories).

        Returns
        -------
        int or None
            With ``positive_classes``: 1 when the category is one of them, else 0. Without
            ``classes``: the value when it is 0 or 1. ``None`` for a missing value, for any
            other value (which the evaluation rejects, naming the case) and for categories
            without ``positive_classes``.
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.classes is not None:
            if self.positive_classes is None:
                return None
            return int(str(value) in self.positive_classes)
        try:
            number = float(str(value))
        except ValueError:
            return None
        return int(number) if number in (0.0, 1.0) else None


class FailedCasePolicy(StrEnum):
    """What happens to cases the model failed on.

    ``count_as_error`` (default, conservative): a failed case stays in the
    analysis with the worst possible result: Dice and surface Dice 0, distances
    the protocol's ``failed_case_distance_mm``; for classification the case
    gets the worst score for its reference label (below every other score when
    positive, above every other when negative), so its decision is wrong.
    ``exclude`` drops failed cases from the analysis; they are still listed.
    """

    COUNT_AS_ERROR = "count_as_error"
    EXCLUDE = "exclude"


class NotEvaluablePolicy(StrEnum):
    """How a primary endpoint that cannot be evaluated counts towards the run's verdict.

    ``fail`` (default, conservative): the run FAILS, and its stored verdict
    reason names the endpoint and why it was not evaluable. ``not_evaluable``:
    the run's verdict is NOT EVALUABLE, with the same reason.
    """

    FAIL = "fail"
    NOT_EVALUABLE = "not_evaluable"


class OperatingPointRule(StrEnum):
    """How a locked operating threshold is chosen on a tuning set.

    ``sensitivity_at_least``: the highest threshold whose sensitivity on the tuning
    set is at least ``value`` (the most specific such threshold);
    ``specificity_at_least``: the lowest threshold whose specificity is at least
    ``value``; ``youden``: the threshold maximising sensitivity + specificity - 1
    (the highest among ties). Candidate thresholds are the tuning scores.
    """

    SENSITIVITY_AT_LEAST = "sensitivity_at_least"
    SPECIFICITY_AT_LEAST = "specificity_at_least"
    YOUDEN = "youden"


class TuningSet(_Strict):
    """A CSV of ``y_true, score`` stored with the protocol, pinned by its SHA-256.

    ``path`` is relative to the folder of the protocol file; the CSV must not be
    the test set (its cases are never the validation cases).
    """

    path: str = Field(min_length=1, max_length=500)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, found {value!r}")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"path must be relative to the protocol's folder without '..', found {value!r}"
            )
        return value


class OperatingPoint(_Strict):
    """The locked operating threshold on the model score.

    Either a number (``{threshold: 0.5}``) or a rule applied to a tuning set that
    is not the test set (``{rule: sensitivity_at_least, value: 0.90, tuning_set:
    {path: tuning.csv, sha256: ...}}``). A rule is resolved to a number when the
    protocol is added (:func:`workbench.protocols.operating_points.resolve_operating_point`).
    """

    threshold: float | None = None
    rule: OperatingPointRule | None = None
    value: float | None = Field(default=None, gt=0.0, le=1.0)
    tuning_set: TuningSet | None = None

    @model_validator(mode="after")
    def _one_form(self) -> OperatingPoint:
        if self.threshold is not None:
            if not math.isfinite(self.threshold):
                raise ValueError(f"threshold must be a finite number, found {self.threshold!r}")
            if self.rule is not None or self.value is not None or self.tuning_set is not None:
                raise ValueError(
                    "an operating point is either a threshold or a rule on a tuning set; found both"
                )
            return self
        if self.rule is None or self.tuning_set is None:
            raise ValueError(
                "an operating point needs 'threshold' (a number) or 'rule' with 'tuning_set', "
                "e.g. {rule: sensitivity_at_least, value: 0.9, tuning_set: {path: ..., sha256: "
                "...}}"
            )
        if (self.rule is OperatingPointRule.YOUDEN) != (self.value is None):
            raise ValueError(
                f"rule {self.rule.value!r} "
                + ("takes no 'value'" if self.value is not None else "needs a 'value' in (0, 1]")
            )
        return self

    @property
    def is_rule(self) -> bool:
        """Whether the threshold is chosen by a rule on a tuning set."""
        return self.threshold is None

    def describe(self) -> str:
        """The operating point in words."""
        if self.threshold is not None:
            return f"score >= {self.threshold:g} (locked threshold)"
        assert self.rule is not None and self.tuning_set is not None
        what = self.rule.value.replace("_", " ")
        value = f" {self.value:g}" if self.value is not None else ""
        return f"{what}{value} on tuning set {self.tuning_set.path}"


class CalibrationStrategy(StrEnum):
    """Binning of the reliability table and the ECE."""

    UNIFORM = "uniform"
    QUANTILE = "quantile"


class CalibrationSpec(_Strict):
    """How calibration is assessed: bins of the reliability table and ECE, breakdowns.

    ``by``: stratum factors whose levels get their own reliability diagram
    (default: every factor of ``strata``).
    """

    bins: int = Field(default=10, ge=2, le=50)
    strategy: CalibrationStrategy = CalibrationStrategy.UNIFORM
    by: list[str] | None = None


class DecisionCurveSpec(_Strict):
    """The range of threshold probabilities of the decision curve.

    ``thresholds: [low, high]`` with ``step`` spans the clinically reasonable
    threshold probabilities [Vickers & Elkin 2006]; ``criterion_at`` is the
    threshold probability at which ``net_benefit_gain`` endpoints are judged.
    ``prevalence`` says at which prevalence net benefit is computed: the test
    set's (``test_set``, the default) or the protocol's ``deployment_prevalence``
    (``deployment``: each class is reweighted to it, as for a case-control sample
    [Pfeiffer & Gail 2020; dcurves' ``prevalence`` argument]). An enriched test set
    overstates the net benefit a low-prevalence population would see.
    """

    thresholds: tuple[float, float]
    step: float = Field(default=0.01, gt=0.0, le=0.5)
    criterion_at: float | None = None
    prevalence: Literal["test_set", "deployment"] = "test_set"

    @model_validator(mode="after")
    def _range(self) -> DecisionCurveSpec:
        low, high = self.thresholds
        if not 0.0 <= low < high < 1.0:
            raise LocatedValueError(
                ("thresholds",),
                f"thresholds must be [low, high] with 0 <= low < high < 1, found [{low:g}, "
                f"{high:g}]",
            )
        if self.criterion_at is not None and not low <= self.criterion_at <= high:
            raise LocatedValueError(
                ("criterion_at",),
                f"criterion_at {self.criterion_at:g} lies outside the decision curve's range "
                f"[{low:g}, {high:g}]",
            )
        if (high - low) / self.step > 1000:
            raise LocatedValueError(
                ("step",), f"step {self.step:g} gives more than 1000 thresholds; use a larger one"
            )
        return self

    def grid(self) -> tuple[float, ...]:
        """The threshold probabilities from ``low`` to ``high`` in steps of ``step``."""
        low, high = self.thresholds
        count = int(math.floor((high - low) / self.step + 1e-9))
        points = [round(low + k * self.step, 10) for k in range(count + 1)]
        if high - points[-1] > 1e-9:
            points.append(high)
        if self.criterion_at is not None and all(
            abs(p - self.criterion_at) > 1e-12 for p in points
        ):
            points = sorted([*points, self.criterion_at])
        return tuple(points)


class Endpoint(_Strict):
    """One pre-registered endpoint with its acceptance criterion.

    A threshold metric (sensitivity, PPV, F1, PPV at prevalence...) is evaluated at
    its own ``operating_threshold`` when it names one, else at the protocol's
    ``operating_point`` (:meth:`Protocol.threshold_of`).
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=64)
    metric: Metric
    description: str = ""
    primary: bool = True
    ci: CIMethodSpec = Field(default_factory=CIMethodSpec)
    operating_threshold: float | None = None
    structure: str | None = Field(
        default=None,
        description="The structure of a multi-structure segmentation protocol it evaluates.",
    )
    fppi: float | None = Field(
        default=None,
        gt=0.0,
        description="Non-lesion marks per image at which sensitivity_at_fppi is read.",
    )
    criterion: Criterion

    @model_validator(mode="after")
    def _consistent(self) -> Endpoint:
        info = metric_info(self.metric)
        if info.needs_fppi and self.fppi is None:
            raise LocatedValueError(
                ("fppi",),
                f"metric {self.metric.value} is read at a stated number of false positives "
                "per image; expected fppi (e.g. fppi: 1.0), found none",
            )
        if not info.needs_fppi and self.fppi is not None:
            raise LocatedValueError(
                ("fppi",), f"metric {self.metric.value} takes no fppi; remove it"
            )
        method = self.ci.method
        if method is not None and method not in info.ci_methods:
            raise LocatedValueError(
                ("ci", "method"),
                f"CI method {method!r} is not available for {self.metric.value}; "
                f"expected one of {list(info.ci_methods)}",
            )
        if not info.needs_threshold and self.operating_threshold is not None:
            raise LocatedValueError(
                ("operating_threshold",),
                f"metric {self.metric.value} does not use an operating_threshold; remove it",
            )
        if self.operating_threshold is not None and not math.isfinite(self.operating_threshold):
            raise ValueError("operating_threshold must be a finite number")
        try:
            _check_criterion_against_metric(self.criterion, self.metric)
        except LocatedValueError as exc:
            raise LocatedValueError(("criterion", *exc.loc), str(exc)) from None
        return self

    @property
    def ci_method(self) -> str:
        """The CI method in effect (the protocol's or the metric's default)."""
        return self.ci.method or metric_info(self.metric).ci_methods[0]

    def criterion_text(
        self, criterion: Criterion | None = None, *, level: float | None = None
    ) -> str:
        """Render a criterion of this endpoint in words.

        Parameters
        ----------
        criterion : Criterion, optional
            Criterion to render; default the endpoint's own.
        level : float, optional
            CI level to name; default the endpoint's.

        Returns
        -------
        str
            E.g. ``"lower bound of the 95% CI (delong) of AUC >= 0.85"``.
        """
        crit = criterion or self.criterion
        return render_criterion(crit, self.metric, level or self.ci.level, self.ci_method)


def render_criterion(criterion: Criterion, metric: Metric, level: float, method: str) -> str:
    """Render a structured criterion, e.g. ``lower bound of the 95% CI of AUC >= 0.85``."""
    info = metric_info(metric)
    pct = f"{level * 100:g}%"
    unit = f" {info.unit}" if info.unit else ""
    if criterion.statistic is CriterionStatistic.CI:
        return f"the {pct} CI ({method}) of {info.label} contains {criterion.threshold:g}{unit}"
    if criterion.statistic is CriterionStatistic.ABS_VALUE:
        return (
            f"absolute point estimate of {info.label} {criterion.operator.value} "
            f"{criterion.threshold:g}{unit}"
        )
    subject = {
        CriterionStatistic.VALUE: f"point estimate of {info.label}",
        CriterionStatistic.CI_LOW: f"lower bound of the {pct} CI ({method}) of {info.label}",
        CriterionStatistic.CI_HIGH: f"upper bound of the {pct} CI ({method}) of {info.label}",
    }[criterion.statistic]
    return f"{subject} {criterion.operator.value} {criterion.threshold:g}{unit}"


def _check_criterion_against_metric(criterion: Criterion, metric: Metric) -> None:
    info = metric_info(metric)
    if criterion.statistic in (CriterionStatistic.CI, CriterionStatistic.ABS_VALUE):
        if info.target is None or (
            criterion.statistic is CriterionStatistic.ABS_VALUE and info.target != 0.0
        ):
            raise LocatedValueError(
                ("statistic",),
                f"statistic {criterion.statistic.value!r} judges closeness to an ideal value; "
                f"{metric.value} "
                + (
                    "is judged by direction; use 'value', 'ci_low' or 'ci_high'"
                    if info.target is None
                    else f"has ideal value {info.target:g}; use statistic 'ci' with 'contains'"
                ),
            )
        return
    if info.target is not None:
        # two-sided metric: a floor is shown by the lower CI limit, a ceiling by the upper
        anti_two = (
            CriterionStatistic.CI_HIGH
            if criterion.operator.is_lower_bound
            else CriterionStatistic.CI_LOW
        )
        if criterion.statistic is anti_two:
            raise LocatedValueError(
                ("statistic",),
                f"a criterion on {criterion.statistic.value} with operator "
                f"{criterion.operator.value!r} is anti-conservative; use "
                f"{'ci_low' if criterion.operator.is_lower_bound else 'ci_high'!r} (or 'value')",
            )
        return
    if not info.low <= criterion.threshold <= info.high:
        high = "infinity" if math.isinf(info.high) else f"{info.high:g}"
        raise LocatedValueError(
            ("threshold",),
            f"threshold {criterion.threshold:g} is impossible for {metric.value}, "
            f"whose values lie in [{info.low:g}, {high}]",
        )
    if criterion.operator.is_lower_bound != info.higher_is_better:
        expected = "'>=' or '>'" if info.higher_is_better else "'<=' or '<'"
        better = "higher" if info.higher_is_better else "lower"
        raise LocatedValueError(
            ("operator",),
            f"operator {criterion.operator.value!r} cannot demonstrate performance on "
            f"{metric.value} ({better} is better); expected {expected}",
        )
    anti = CriterionStatistic.CI_HIGH if info.higher_is_better else CriterionStatistic.CI_LOW
    if criterion.statistic is anti:
        good = "ci_low" if info.higher_is_better else "ci_high"
        raise LocatedValueError(
            ("statistic",),
            f"a criterion on {criterion.statistic.value} of {metric.value} is anti-conservative; "
            f"use statistic {good!r} (or 'value')",
        )


class StratumUnit(StrEnum):
    """What a stratum factor classifies.

    ``case`` (default): a case attribute (scanner, demographics); the stratum holds
    whole cases. ``lesion`` (detection protocols): a reference-lesion attribute (e.g.
    ``diameter`` cut into size bins); the stratum holds the lesions of that bin, the
    cases without lesions and the non-lesion marks of those cases, and its ``n`` is
    the number of lesions.
    """

    CASE = "case"
    LESION = "lesion"


class StratumFactor(_Strict):
    """A factor the endpoints are broken down by (e.g. scanner manufacturer).

    ``column`` defaults to ``factor``. With ``edges`` the numeric column is cut
    into bands ``[e0, e1), [e1, e2), ...`` labelled ``"e0-(e1-1)"`` style, e.g.
    ages 18/50/65/120 give ``18-49``, ``50-64``, ``65-119``. ``unit: lesion``
    classifies reference lesions instead of cases (see :class:`StratumUnit`).
    """

    factor: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    unit: StratumUnit = StratumUnit.CASE
    column: str | None = None
    edges: list[float] | None = None
    min_n: int = Field(default=5, ge=1)
    assess: bool = Field(
        default=True,
        description="Apply the subgroup acceptance rule to this factor (else report only).",
    )

    @model_validator(mode="after")
    def _edges(self) -> StratumFactor:
        if self.edges is not None:
            if len(self.edges) < 2:
                raise ValueError(f"edges need at least two numbers, found {len(self.edges)}")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"edges must increase strictly, found {self.edges}")
        if self.factor.endswith("_band") and self.edges is None:
            raise ValueError(
                f"factor {self.factor!r} is a band and needs edges, e.g. [18, 50, 65, 120]"
            )
        return self

    @property
    def source_column(self) -> str:
        """Column of the cases frame the factor is read from."""
        if self.column:
            return self.column
        if self.factor == "age_band":
            return "patient_age_years"
        return self.factor


class SubgroupRule(StrEnum):
    """How strata are judged.

    ``adjusted_criterion``: every assessed stratum with ``n >= min_n`` must meet
    the endpoint's own criterion, with CIs widened for multiplicity (Holm
    step-down or Bonferroni over the strata of one factor, or all strata).
    ``fixed_criteria``: every assessed stratum with ``n >= min_n`` must meet
    all of ``criteria`` at the endpoint's CI level (e.g. point estimate >= X
    and CI lower bound >= Y), documented as unadjusted.
    """

    ADJUSTED_CRITERION = "adjusted_criterion"
    FIXED_CRITERIA = "fixed_criteria"


class Multiplicity(StrEnum):
    """Multiplicity adjustment for ``adjusted_criterion``."""

    HOLM = "holm"
    BONFERRONI = "bonferroni"
    NONE = "none"


class MultiplicityFamily(StrEnum):
    """Which strata form one family for the multiplicity adjustment."""

    PER_FACTOR = "per_factor"
    ALL_STRATA = "all_strata"


class SubgroupAcceptance(_Strict):
    """Subgroup acceptance rule with its multiplicity handling."""

    endpoints: list[str] | None = Field(
        default=None, description="Endpoint ids the rule applies to; default the primary ones."
    )
    rule: SubgroupRule = SubgroupRule.ADJUSTED_CRITERION
    multiplicity: Multiplicity = Multiplicity.HOLM
    family: MultiplicityFamily = MultiplicityFamily.PER_FACTOR
    criteria: list[Criterion] | None = None

    @model_validator(mode="after")
    def _rule_fields(self) -> SubgroupAcceptance:
        if self.rule is SubgroupRule.FIXED_CRITERIA:
            if not self.criteria:
                raise ValueError("rule 'fixed_criteria' needs a non-empty list 'criteria'")
            if (
                self.multiplicity is not Multiplicity.HOLM
                and "multiplicity" in self.model_fields_set
            ):
                raise ValueError(
                    "rule 'fixed_criteria' is unadjusted; remove 'multiplicity' or use rule "
                    "'adjusted_criterion'"
                )
        elif self.criteria is not None:
            raise ValueError(
                "'criteria' belongs to rule 'fixed_criteria'; rule 'adjusted_criterion' uses "
                "each endpoint's own criterion"
            )
        return self


class _MetricRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    kind: Literal["metric_threshold"]
    column: Literal["dice", "surface_dice", "hd95", "assd", "score"]
    operator: Operator
    threshold: float
    structure: str | None = None


class _DecisionRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    kind: Literal["decision_disagrees"]
    operating_threshold: float


class _FailedRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    kind: Literal["case_failed"]


class _MissedLesionRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    kind: Literal["missed_lesion"]


class _FalseMarkRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    kind: Literal["false_mark"]
    min_score: float

    @field_validator("min_score")
    @classmethod
    def _finite_score(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"min_score must be a finite number, found {value!r}")
        return value


DiscrepancyRule = Annotated[
    _MetricRule | _DecisionRule | _FailedRule | _MissedLesionRule | _FalseMarkRule,
    Field(discriminator="kind"),
]
"""A rule that sends a case to clinical adjudication.

``metric_threshold``: a per-case column compared with a threshold (e.g.
``dice < 0.5``; a missing value counts as a hit). ``decision_disagrees``
(classification): the model decision ``score >= operating_threshold``
disagrees with the reference label. ``case_failed``: inference failed.
``missed_lesion`` (detection): a reference lesion no kept mark localises.
``false_mark`` (detection): a non-lesion mark scored at least ``min_score``
(a confident false positive).
"""


class Adjudication(_Strict):
    """Clinical adjudication of discrepant cases."""

    required_before_approval: bool = True
    reviewers_blinded: bool = True
    reviewers_see_aggregate_results: bool = False
    readers_per_case: int = Field(default=1, ge=1, le=5)

    @model_validator(mode="after")
    def _blinding(self) -> Adjudication:
        if self.reviewers_blinded and self.reviewers_see_aggregate_results:
            raise ValueError(
                "blinded reviewers cannot see aggregate results; set "
                "reviewers_see_aggregate_results to false or reviewers_blinded to false"
            )
        return self


class SignerRole(StrEnum):
    """Roles that may sign (admins and auditors never sign)."""

    QA = "qa"
    REVIEWER = "reviewer"


class SignatureRequirement(_Strict):
    """One signature the report needs, e.g. ``approved`` by ``qa``."""

    meaning: str = Field(pattern=r"^[a-z][a-z_]*$")
    role: SignerRole
    distinct_from: list[str] = Field(
        default_factory=list, description="Meanings whose signers must be other people."
    )


class Protocol(_Strict):
    """A validation protocol.

    Attributes beyond the YAML fields
    ---------------------------------
    sha256 : str
        SHA-256 of the exact YAML bytes the protocol was loaded from.
    source_text : str
        The exact YAML text.
    canonical_text : str
        Canonical JSON (sorted keys, no whitespace, UTF-8) of the validated
        protocol with defaults filled in: equal for texts that differ only in
        comments, key order or formatting.
    """

    schema_version: Literal[1] = 1
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=64)
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    intended_use: str = Field(min_length=1)
    task: Task
    test_set: TestSetRef
    modalities: list[str] = Field(
        default_factory=lambda: ["CT"],
        min_length=1,
        description="Modalities of the image series that are cases (e.g. [CT], [CR, DX]).",
    )
    reference_standard: ReferenceStandard
    failed_cases: FailedCasePolicy = FailedCasePolicy.COUNT_AS_ERROR
    failed_case_distance_mm: float = Field(default=100.0, gt=0)
    not_evaluable_counts_as: NotEvaluablePolicy = NotEvaluablePolicy.FAIL
    operating_point: OperatingPoint | None = Field(
        default=None,
        description=(
            "The locked operating threshold of threshold endpoints that name none of their own."
        ),
    )
    deployment_prevalence: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Prevalence of the intended-use population, for PPV/NPV at prevalence.",
    )
    score_is_probability: bool = Field(
        default=True,
        description=(
            "Whether the model score is a probability; if false, calibration and net-benefit "
            "endpoints are not evaluable."
        ),
    )
    cluster_by: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=64,
        description=(
            "The case attribute naming the patient when a patient contributes several "
            "cases (two breasts, both eyes, several series): patient_id (the DICOM "
            "PatientID), study_instance_uid or a labels.csv column. Every interval then "
            "treats the patient as the unit: clustered Wilson/Clopper-Pearson intervals "
            "for proportions, clustered DeLong variance, bootstrap over patients."
        ),
    )
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    decision_curve: DecisionCurveSpec | None = None
    matching: Matching | None = Field(
        default=None, description="Detection: the locked rule matching marks to lesions."
    )
    candidates: CandidateRule | None = Field(
        default=None,
        description=(
            "Detection with a segmentation model: how its probability map becomes marks "
            "(default threshold 0.5, min_voxels 1)."
        ),
    )
    endpoints: list[Endpoint] = Field(min_length=1)
    strata: list[StratumFactor] = Field(default_factory=list)
    subgroup_acceptance: SubgroupAcceptance | None = None
    discrepancy_rules: list[DiscrepancyRule] = Field(default_factory=list)
    adjudication: Adjudication = Field(default_factory=Adjudication)
    data_quality_suite: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    signatures: list[SignatureRequirement] = Field(min_length=1)
    limitations: list[str] = Field(
        default_factory=list,
        description="Known limitations of this validation, printed in the report.",
    )

    _sha256: str = PrivateAttr(default="")
    _source_text: str = PrivateAttr(default="")
    _resolved_threshold: float | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        seen: set[str] = set()
        for i, ep in enumerate(self.endpoints):
            if ep.id in seen:
                raise LocatedValueError(
                    ("endpoints", i, "id"), f"duplicate endpoint id {ep.id!r}; ids must be unique"
                )
            seen.add(ep.id)
            task = metric_info(ep.metric).task
            if task is not self.task:
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} is a {task.value} metric but the protocol's "
                    f"task is {self.task.value}",
                )
        if not any(ep.primary for ep in self.endpoints):
            raise LocatedValueError(("endpoints",), "at least one endpoint must be primary")
        for i, ep in enumerate(self.endpoints):
            info = metric_info(ep.metric)
            if (
                info.needs_threshold
                and ep.operating_threshold is None
                and self.operating_point is None
            ):
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} needs an operating_threshold on the model score "
                    "(on the endpoint, or the protocol's operating_point)",
                )
            if info.needs_prevalence and self.deployment_prevalence is None:
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} needs the protocol's deployment_prevalence "
                    "(e.g. deployment_prevalence: 0.05)",
                )
            if info.needs_decision_curve and (
                self.decision_curve is None or self.decision_curve.criterion_at is None
            ):
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} is judged at decision_curve.criterion_at; add "
                    "decision_curve: {thresholds: [low, high], criterion_at: p}",
                )
        if (
            self.decision_curve is not None
            and self.decision_curve.prevalence == "deployment"
            and self.deployment_prevalence is None
        ):
            raise LocatedValueError(
                ("decision_curve", "prevalence"),
                "decision_curve.prevalence: deployment needs the protocol's "
                "deployment_prevalence (e.g. deployment_prevalence: 0.05)",
            )
        factor_names = {s.factor for s in self.strata}
        for j, name in enumerate(self.calibration.by or []):
            if name not in factor_names:
                raise LocatedValueError(
                    ("calibration", "by", j),
                    f"{name!r} is not a stratum factor; expected one of {sorted(factor_names)}",
                )
        ref = self.reference_standard
        if self.task is Task.CLASSIFICATION and not ref.labels_column:
            raise LocatedValueError(
                ("reference_standard",),
                "a classification protocol needs reference_standard.labels_column "
                "(e.g. consensus_malignant)",
            )
        if self.task is Task.SEGMENTATION and ref.segmentation is None:
            raise LocatedValueError(
                ("reference_standard",),
                "a segmentation protocol needs reference_standard.segmentation (readers and rule)",
            )
        self._check_detection()
        self._check_structures()
        self._check_classes()
        factors = [s.factor for s in self.strata]
        dup = sorted({f for f in factors if factors.count(f) > 1})
        if dup:
            raise LocatedValueError(("strata",), f"duplicate factor(s) {dup}")
        sub = self.subgroup_acceptance
        if sub is not None:
            if not self.strata:
                raise LocatedValueError(
                    ("subgroup_acceptance",), "subgroup_acceptance needs at least one stratum"
                )
            for j, name in enumerate(sub.endpoints or []):
                if name not in seen:
                    raise LocatedValueError(
                        ("subgroup_acceptance", "endpoints", j),
                        f"{name!r} is not an endpoint id; expected one of {sorted(seen)}",
                    )
            for ep in self.subgroup_endpoints():
                if sub.rule is SubgroupRule.ADJUSTED_CRITERION and (
                    ep.criterion.statistic is CriterionStatistic.VALUE
                    and sub.multiplicity is not Multiplicity.NONE
                ):
                    raise LocatedValueError(
                        ("subgroup_acceptance",),
                        f"endpoint {ep.id!r} judges a point estimate, which a multiplicity "
                        "adjustment cannot widen; use a CI bound or rule 'fixed_criteria'",
                    )
                if sub.rule is SubgroupRule.ADJUSTED_CRITERION and ep.criterion.statistic in (
                    CriterionStatistic.CI,
                    CriterionStatistic.ABS_VALUE,
                ):
                    raise LocatedValueError(
                        ("subgroup_acceptance",),
                        f"endpoint {ep.id!r} has a {ep.criterion.statistic.value!r} criterion, "
                        "which a widened CI makes easier, not harder, to meet; use rule "
                        "'fixed_criteria'",
                    )
                for j, crit in enumerate(sub.criteria or []):
                    try:
                        _check_criterion_against_metric(crit, ep.metric)
                    except LocatedValueError as exc:
                        raise LocatedValueError(
                            ("subgroup_acceptance", "criteria", j, *exc.loc),
                            f"for endpoint {ep.id!r}: {exc}",
                        ) from None
        rule_ids = [r.id for r in self.discrepancy_rules]
        dup = sorted({r for r in rule_ids if rule_ids.count(r) > 1})
        if dup:
            raise LocatedValueError(("discrepancy_rules",), f"duplicate rule id(s) {dup}")
        for j, rule in enumerate(self.discrepancy_rules):
            if self.task is Task.SEGMENTATION and rule.kind == "decision_disagrees":
                raise LocatedValueError(
                    ("discrepancy_rules", j, "kind"),
                    f"rule {rule.id!r}: 'decision_disagrees' needs a classification protocol",
                )
        meanings = [s.meaning for s in self.signatures]
        dup = sorted({m for m in meanings if meanings.count(m) > 1})
        if dup:
            raise LocatedValueError(("signatures",), f"duplicate meaning(s) {dup}")
        for j, sig in enumerate(self.signatures):
            for other in sig.distinct_from:
                if other not in meanings or other == sig.meaning:
                    raise LocatedValueError(
                        ("signatures", j, "distinct_from"),
                        f"signature {sig.meaning!r} names {other!r}; expected another listed "
                        f"meaning out of {meanings}",
                    )
        return self

    def _check_detection(self) -> None:
        ref = self.reference_standard
        detection = self.task is Task.DETECTION
        if detection and ref.detection is None:
            raise LocatedValueError(
                ("reference_standard",),
                "a detection protocol needs reference_standard.detection (e.g. {source: "
                "seg_components, readers: [reader1, reader2], rule: majority})",
            )
        if detection and self.matching is None:
            raise LocatedValueError(
                ("task",),
                "a detection protocol needs a locked matching rule, e.g. matching: {rule: iou, "
                "threshold: 0.3}",
            )
        if not detection:
            for name in ("matching", "candidates"):
                if getattr(self, name) is not None:
                    raise LocatedValueError(
                        (name,),
                        f"{name!r} belongs to a detection protocol; the task is {self.task.value}",
                    )
            if ref.detection is not None:
                raise LocatedValueError(
                    ("reference_standard", "detection"),
                    f"reference lesions belong to a detection protocol; the task is "
                    f"{self.task.value}",
                )
        lesion_columns = ref.detection.lesion_attributes if ref.detection is not None else ()
        for j, factor in enumerate(self.strata):
            if factor.unit is not StratumUnit.LESION:
                continue
            if not detection:
                raise LocatedValueError(
                    ("strata", j, "unit"),
                    f"unit 'lesion' classifies reference lesions; the task is {self.task.value}",
                )
            if factor.source_column not in lesion_columns:
                raise LocatedValueError(
                    ("strata", j, "column"),
                    f"lesion factor {factor.factor!r} reads column {factor.source_column!r}; "
                    f"expected a lesion column out of {list(lesion_columns)} (list others under "
                    "reference_standard.detection.attributes)",
                )
        for j, rule in enumerate(self.discrepancy_rules):
            if rule.kind in ("missed_lesion", "false_mark") and not detection:
                raise LocatedValueError(
                    ("discrepancy_rules", j, "kind"),
                    f"rule {rule.id!r}: {rule.kind!r} needs a detection protocol",
                )
            if detection and rule.kind in ("metric_threshold", "decision_disagrees"):
                raise LocatedValueError(
                    ("discrepancy_rules", j, "kind"),
                    f"rule {rule.id!r}: a detection protocol queues cases by 'missed_lesion', "
                    f"'false_mark' or 'case_failed', found {rule.kind!r}",
                )

    def _check_structures(self) -> None:
        seg = self.reference_standard.segmentation
        names = list(seg.structure_names) if seg is not None else []
        for i, ep in enumerate(self.endpoints):
            if ep.structure is None:
                if len(names) > 1:
                    raise LocatedValueError(
                        ("endpoints", i, "structure"),
                        f"endpoint {ep.id!r} must name its structure; expected one of {names}",
                    )
            elif ep.structure not in names:
                raise LocatedValueError(
                    ("endpoints", i, "structure"),
                    f"unknown structure {ep.structure!r}; expected one of {names}"
                    if names
                    else f"endpoint {ep.id!r} names structure {ep.structure!r} but the protocol "
                    "has no reference_standard.segmentation.structures",
                )
        for j, rule in enumerate(self.discrepancy_rules):
            structure = getattr(rule, "structure", None)
            if rule.kind != "metric_threshold":
                continue
            if structure is None and len(names) > 1 and rule.column != "score":
                raise LocatedValueError(
                    ("discrepancy_rules", j, "structure"),
                    f"rule {rule.id!r} must name its structure; expected one of {names}",
                )
            if structure is not None and structure not in names:
                raise LocatedValueError(
                    ("discrepancy_rules", j, "structure"),
                    f"unknown structure {structure!r}; expected one of {names}",
                )

    def _check_classes(self) -> None:
        ref = self.reference_standard
        for i, ep in enumerate(self.endpoints):
            if ep.metric is Metric.KAPPA_MULTICLASS and not ref.is_multiclass:
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} compares categories; expected "
                    "reference_standard.classes (e.g. [normal, nodule, mass]), found none",
                )
            if (
                self.task is Task.CLASSIFICATION
                and ref.is_multiclass
                and ep.metric is not Metric.KAPPA_MULTICLASS
                and ref.positive_classes is None
            ):
                raise LocatedValueError(
                    ("endpoints", i, "metric"),
                    f"metric {ep.metric.value} is binary; with multi-class labels expected "
                    "reference_standard.positive_classes (one-vs-rest), found none",
                )

    # -- derived views ---------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        """SHA-256 of the exact YAML bytes (empty if built in code)."""
        return self._sha256

    @property
    def source_text(self) -> str:
        """The exact YAML text the protocol was loaded from."""
        return self._source_text

    @property
    def canonical_text(self) -> str:
        """Canonical JSON of the validated protocol (sorted keys, no whitespace)."""
        data: Any = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def canonical_sha256(self) -> str:
        """SHA-256 of :attr:`canonical_text` (UTF-8)."""
        return hashlib.sha256(self.canonical_text.encode("utf-8")).hexdigest()

    def structure_of(self, named: str | None) -> str | None:
        """The structure an endpoint or discrepancy rule evaluates.

        ``named`` is its own ``structure``; without one, the protocol's only structure
        when ``reference_standard.segmentation.structures`` lists exactly one, else
        ``None`` (a single-structure protocol).
        """
        if named is not None:
            return named
        seg = self.reference_standard.segmentation
        names = seg.structure_names if seg is not None else ()
        return names[0] if len(names) == 1 else None

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """Return the endpoint with id ``endpoint_id`` (KeyError names the known ids)."""
        for ep in self.endpoints:
            if ep.id == endpoint_id:
                return ep
        raise KeyError(
            f"no endpoint {endpoint_id!r}; expected one of {[e.id for e in self.endpoints]}"
        )

    @property
    def decision_curve_prevalence(self) -> float | None:
        """Prevalence at which net benefit is computed; ``None``: the test set's own."""
        if self.decision_curve is not None and self.decision_curve.prevalence == "deployment":
            return self.deployment_prevalence
        return None

    def threshold_of(self, endpoint: Endpoint) -> float | None:
        """The score threshold a threshold endpoint is evaluated at.

        The endpoint's own ``operating_threshold``, else the protocol's
        ``operating_point``: its number, or the threshold its rule was resolved to
        (:func:`workbench.protocols.operating_points.resolve_operating_point`).
        ``None`` for metrics without a threshold and for an unresolved rule.
        """
        if not metric_info(endpoint.metric).needs_threshold:
            return None
        if endpoint.operating_threshold is not None:
            return endpoint.operating_threshold
        op = self.operating_point
        if op is None:
            return None
        if op.threshold is not None:
            return op.threshold
        return self._resolved_threshold

    @property
    def resolved_threshold(self) -> float | None:
        """The threshold an operating-point rule was resolved to (None when not resolved)."""
        return self._resolved_threshold

    def endpoint_condition(self, endpoint: Endpoint) -> str:
        """Where an endpoint is evaluated, in words ('' for threshold-free metrics).

        E.g. ``"at deployment prevalence 0.05, score >= 0.5"`` or
        ``"at threshold probability 0.2"``.
        """
        info = metric_info(endpoint.metric)
        parts = []
        if info.needs_prevalence and self.deployment_prevalence is not None:
            parts.append(f"at deployment prevalence {self.deployment_prevalence:g}")
        if info.needs_threshold and info.needs_prevalence:
            threshold = self.threshold_of(endpoint)
            if threshold is not None:
                parts.append(f"score >= {threshold:g}")
        if info.needs_decision_curve and self.decision_curve is not None:
            parts.append(f"at threshold probability {self.decision_curve.criterion_at:g}")
        if info.needs_fppi and endpoint.fppi is not None:
            parts.append(f"at {endpoint.fppi:g} false positive(s) per image")
        if info.task is Task.DETECTION and self.matching is not None:
            parts.append(f"marks matched by {self.matching.describe().split(';')[0]}")
        return ", ".join(parts)

    def criterion_text(self, endpoint: Endpoint) -> str:
        """The endpoint's criterion in words, with where it is evaluated."""
        text = endpoint.criterion_text()
        condition = self.endpoint_condition(endpoint)
        return f"{text} ({condition})" if condition else text

    def subgroup_endpoints(self) -> list[Endpoint]:
        """Endpoints the subgroup acceptance rule applies to (none without a rule)."""
        sub = self.subgroup_acceptance
        if sub is None:
            return []
        if sub.endpoints is None:
            return [ep for ep in self.endpoints if ep.primary]
        return [ep for ep in self.endpoints if ep.id in sub.endpoints]

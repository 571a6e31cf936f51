"""Reader-study designs: pre-registered like a protocol, immutable once approved.

A design is a YAML file with ``kind: reader_study``::

    kind: reader_study
    id: malignancy-reader-study
    version: 1
    title: Malignancy calls with and without the AI score
    test_set: {name: demo-phantoms}
    truth: {labels_column: consensus_malignant}
    arms:
      - {id: unaided}
      - {id: aided, model: demo-good@1.0.0}
    readers: [reader.a, reader.b]
    design: fully_crossed            # split_plot (reader_groups) validates, but is not approved
    rating_scale: five_point         # or probability_0_100
    washout_days: 28
    seed: 20261202
    primary_endpoint: auc_difference # aided minus unaided, reader-averaged
    analysis: {method: obuchowski_rockette, covariance: jackknife}
    hypothesis: non_inferiority      # or superiority
    margin: 0.05
    level: 0.95

A detection study has readers mark lesions instead of rating cases: each mark is
a location (and optionally a box) with a confidence on ``rating_scale`` (1-5, or
1-100 since a 0 % mark is no mark), a case read without a mark is recorded as
such, and the primary endpoint is the reader-averaged wAFROC figure of merit
(``wafroc``; ``wafroc1`` for test sets without lesion-free cases). The
``detection`` section names the reference lesions of the test set and the rule
that matches a mark to a lesion, both as in a detection protocol
(:class:`workbench.protocols.schema.DetectionReference`,
:class:`workbench.protocols.schema.Matching`)::

    truth: {labels_column: has_lesion}  # 1 exactly for the cases with reference lesions
    rating_scale: five_point            # the confidence of each mark
    detection:
      reference: {source: table, table: reference/lesions.csv}
      matching: {rule: center_distance, threshold: 10}
    primary_endpoint: wafroc

A study whose readers are simulated (the demonstration) says so in its own
data, with the pre-specified simulation::

    simulation:
      method: binormal
      separation: [1.0, 1.2, 1.4, 1.6]   # one per reader, in reader order
      aided_shift: 0.5                   # added to each separation in an arm with a model

A split-plot design (each reader group reads its own cases) validates here, but
the services refuse to approve it: reading would give every reader every case and
the analysis is the fully crossed Obuchowski-Rockette one, so its numbers would be
wrong. The split-plot OR analysis (Obuchowski 2012; Hillis 2014) is not implemented.

The acceptance criterion follows from hypothesis and margin: for superiority the
lower confidence limit of the reader-averaged AUC (or wAFROC) difference (second
arm minus first) must exceed 0; for non-inferiority it must exceed ``-margin``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.errors import ProtocolError
from workbench.protocols.schema import DetectionReference, Matching

__all__ = [
    "Arm",
    "DetectionReading",
    "Hypothesis",
    "PrimaryEndpoint",
    "RatingScale",
    "ReaderStudyDesign",
    "SimulatedReading",
    "StudyDesignKind",
    "load_study_design",
]

#: Largest design file accepted.
MAX_DESIGN_BYTES = 256 * 1024


class RatingScale(StrEnum):
    """How readers rate a case: 1-5 confidence of disease, or a 0-100 probability."""

    FIVE_POINT = "five_point"
    PROBABILITY_0_100 = "probability_0_100"

    def check(self, value: float) -> float:
        """Return ``value`` when it is on the scale, else raise naming the scale."""
        if self is RatingScale.FIVE_POINT:
            if value not in (1, 2, 3, 4, 5):
                raise ProtocolError(
                    f"A five-point rating must be 1, 2, 3, 4 or 5; found {value!r}."
                )
        elif not 0 <= value <= 100:
            raise ProtocolError(f"A probability rating must lie in 0..100; found {value!r}.")
        return float(value)

    def check_mark(self, value: float) -> float:
        """Return a mark's confidence when it is on the scale, else raise naming the scale.

        A mark says "here is a lesion", so a 0 % mark is no mark: on the probability
        scale a mark's confidence lies in 1..100.
        """
        if self is RatingScale.FIVE_POINT:
            if value not in (1, 2, 3, 4, 5):
                raise ProtocolError(
                    f"A mark's five-point confidence must be 1, 2, 3, 4 or 5; found {value!r}."
                )
        elif not 1 <= value <= 100:
            raise ProtocolError(
                f"A mark's probability must lie in 1..100 (a 0 % mark is no mark); found {value!r}."
            )
        return float(value)


class PrimaryEndpoint(StrEnum):
    """The study's primary endpoint, reader-averaged, second arm minus first.

    ``auc_difference``: the ROC AUC of case ratings. ``wafroc``: the weighted AFROC
    figure of merit of lesion marks (needs lesion-free cases); ``wafroc1``: its
    variant for test sets in which every case has a lesion.
    """

    AUC_DIFFERENCE = "auc_difference"
    WAFROC = "wafroc"
    WAFROC1 = "wafroc1"

    @property
    def label(self) -> str:
        """The figure of merit in words (``AUC`` or ``wAFROC``)."""
        return {"auc_difference": "AUC", "wafroc": "wAFROC", "wafroc1": "wAFROC1"}[self.value]


class Hypothesis(StrEnum):
    """What the study sets out to show about the difference of the arms."""

    SUPERIORITY = "superiority"
    NON_INFERIORITY = "non_inferiority"


class StudyDesignKind(StrEnum):
    """Which cases each reader reads in each arm."""

    FULLY_CROSSED = "fully_crossed"
    SPLIT_PLOT = "split_plot"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(_Strict):
    """One reading condition; ``model`` (``name@version``) shows that model's output."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,31}$")
    model: str | None = None


class TestSetRef(_Strict):
    """The locked test set the readers read."""

    __test__ = False

    name: str = Field(min_length=1)


class Truth(_Strict):
    """Where the reference standard comes from (never shown to readers)."""

    labels_column: str = Field(min_length=1)


class Analysis(_Strict):
    """The pre-specified analysis."""

    method: Literal["obuchowski_rockette"] = "obuchowski_rockette"
    covariance: Literal["jackknife", "delong"] = "jackknife"


class DetectionReading(_Strict):
    """What readers of a detection study mark, and how their marks meet the reference.

    ``reference`` names the test set's reference lesions (a lesion table, DICOM SR
    or the components of the readers' SEG); ``matching`` the locked rule that
    declares a mark a localisation of a lesion (IoU, centre inside the lesion,
    centre distance), both as in a detection protocol.
    """

    reference: DetectionReference
    matching: Matching


class SimulatedReading(_Strict):
    """The pre-specified simulation of a study whose readers are simulated, not people.

    A reader's latent value of a case is ``separation * truth + N(0, 1)`` (the
    binormal model with equal variances), plus ``aided_shift * truth`` in an arm
    that shows a model; see :func:`workbench.studies.simulate_ratings`.
    """

    method: Literal["binormal"] = "binormal"
    separation: list[float] = Field(min_length=1)
    aided_shift: float = 0.0


class ReaderStudyDesign(_Strict):
    """A validated reader-study design (see the module docstring)."""

    kind: Literal["reader_study"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    test_set: TestSetRef
    truth: Truth
    arms: list[Arm] = Field(min_length=2, max_length=2)
    readers: list[str] = Field(min_length=2)
    design: StudyDesignKind = StudyDesignKind.FULLY_CROSSED
    reader_groups: list[list[str]] | None = None
    rating_scale: RatingScale = RatingScale.FIVE_POINT
    washout_days: float = Field(default=28.0, ge=0)
    seed: int = 0
    primary_endpoint: PrimaryEndpoint = PrimaryEndpoint.AUC_DIFFERENCE
    detection: DetectionReading | None = None
    analysis: Analysis = Field(default_factory=Analysis)
    hypothesis: Hypothesis = Hypothesis.SUPERIORITY
    margin: float = Field(default=0.0, ge=0.0, lt=1.0)
    level: float = Field(default=0.95, gt=0.5, lt=1.0)
    cases_per_arm: int | None = Field(default=None, ge=2)
    simulation: SimulatedReading | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReaderStudyDesign:
        ids = [a.id for a in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"arms: ids must differ; found {ids}")
        if len(set(self.readers)) != len(self.readers):
            raise ValueError(f"readers: each reader once; found {self.readers}")
        if self.design is StudyDesignKind.SPLIT_PLOT:
            groups = self.reader_groups or []
            flat = [r for g in groups for r in g]
            if sorted(flat) != sorted(self.readers):
                raise ValueError(
                    "reader_groups: a split-plot design needs every reader in exactly one group; "
                    f"found groups {groups} for readers {self.readers}"
                )
        if self.simulation is not None and len(self.simulation.separation) != len(self.readers):
            raise ValueError(
                "simulation.separation: one value per reader; found "
                f"{len(self.simulation.separation)} for {len(self.readers)} readers"
            )
        if self.hypothesis is Hypothesis.NON_INFERIORITY and self.margin <= 0:
            raise ValueError("margin: a non-inferiority study needs a margin > 0")
        free_response = self.primary_endpoint is not PrimaryEndpoint.AUC_DIFFERENCE
        if free_response and self.detection is None:
            raise ValueError(
                f"primary_endpoint: '{self.primary_endpoint.value}' is a free-response endpoint "
                "of lesion marks; add a detection section (reference lesions and matching rule)"
            )
        if self.detection is not None and not free_response:
            raise ValueError(
                "primary_endpoint: readers of a detection study mark lesions, so the endpoint "
                f"is 'wafroc' or 'wafroc1'; found '{self.primary_endpoint.value}'"
            )
        if self.detection is not None and self.analysis.covariance != "jackknife":
            raise ValueError(
                "analysis.covariance: the wAFROC analysis uses the jackknife covariance of the "
                f"figures of merit; found '{self.analysis.covariance}'"
            )
        if self.detection is not None and self.simulation is not None:
            raise ValueError(
                "simulation: simulated readers give case ratings, not lesion marks; remove "
                "simulation or the detection section"
            )
        return self

    @property
    def reads_marks(self) -> bool:
        """Whether readers mark lesions (a detection study) rather than rate cases."""
        return self.detection is not None

    @property
    def criterion_text(self) -> str:
        """The acceptance criterion in words."""
        first, second = (a.id for a in self.arms)
        bound = -self.margin if self.hypothesis is Hypothesis.NON_INFERIORITY else 0.0
        return (
            f"lower bound of the {self.level:.0%} CI of the reader-averaged "
            f"{self.primary_endpoint.label} difference "
            f"({second} minus {first}) > {bound:g} ({self.hypothesis.value.replace('_', '-')})"
        )

    @property
    def simulated(self) -> bool:
        """Whether the readers are simulated (the design carries a ``simulation``)."""
        return self.simulation is not None

    @property
    def bound(self) -> float:
        """The value the CI's lower limit must exceed."""
        return -self.margin if self.hypothesis is Hypothesis.NON_INFERIORITY else 0.0


def load_study_design(source: str | Path | bytes) -> tuple[ReaderStudyDesign, str, str]:
    """Read and validate a design; return it with its exact text and that text's SHA-256.

    Raises
    ------
    ProtocolError
        Oversized or malformed YAML, or a design that does not validate; the message
        names every field that is wrong with what was expected.
    """
    if isinstance(source, bytes):
        raw, name = source, "<reader study>"
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if path.stat().st_size > MAX_DESIGN_BYTES:
            raise ProtocolError(
                f"{path}: {path.stat().st_size} bytes; a design may have {MAX_DESIGN_BYTES}."
            )
        raw, name = path.read_bytes(), str(path)
    else:
        raw, name = str(source).encode("utf-8"), "<reader study>"
    if len(raw) > MAX_DESIGN_BYTES:
        raise ProtocolError(f"{name}: {len(raw)} bytes; a design may have {MAX_DESIGN_BYTES}.")
    text = raw.decode("utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProtocolError(f"{name}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{name}: expected a mapping with kind: reader_study.")
    try:
        design = ReaderStudyDesign.model_validate(data)
    except ValidationError as error:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        ]
        raise ProtocolError(
            f"{name}: invalid reader-study design:\n  " + "\n  ".join(lines)
        ) from None
    return design, text, hashlib.sha256(raw).hexdigest()

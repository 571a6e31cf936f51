"""Model specifications and file fingerprints for the model registry.

The database part of the registry belongs to :mod:`workbench.services`; this
module holds what it stores about a model: a :class:`ModelSpec` (what the model
is for and what input it expects) and the SHA-256 of every file the model is
made of, so that a validation run can prove it used exactly the registered
model (:func:`verify_model_files`).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.errors import ModelError, ModelIntegrityError

__all__ = [
    "ModelFormat",
    "ModelTask",
    "ScoreActivation",
    "InputSpec",
    "ModelSpec",
    "hash_model_files",
    "verify_model_files",
    "model_digest",
]

_CHUNK = 1 << 20
_AXIS_OF_CODE = {"L": "x", "R": "x", "P": "y", "A": "y", "I": "z", "S": "z"}

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ModelTask(StrEnum):
    """What a model predicts."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    BOTH = "both"


class ModelFormat(StrEnum):
    """How a model is stored on disk."""

    TORCHSCRIPT = "torchscript"
    MONAI_BUNDLE = "monai_bundle"


class ScoreActivation(StrEnum):
    """How the raw score output of a model becomes a probability.

    ``sigmoid``: the output is a logit. ``none``: the output already is a
    probability and must lie in [0, 1]; a value outside fails the case.
    """

    SIGMOID = "sigmoid"
    NONE = "none"


class InputSpec(BaseModel):
    """The input a model expects and the outputs it produces.

    Parameters
    ----------
    target_spacing : tuple of 3 float
        Voxel spacing (z, y, x) in mm the volume is resampled to.
    orientation : str
        Axis codes of the array the model sees, e.g. ``"RAS"`` or ``"LPS"``
        (MONAI convention: array axis *i* runs towards letter *i*). With
        ``"RAS"`` the model sees arrays ordered (x, y, z).
    hu_window : tuple of 2 float
        (min, max) HU mapped linearly to [0, 1]; values outside are clipped.
    roi_size : tuple of 3 int
        Patch size of sliding-window inference, in the axis order of
        ``orientation``. For classification-only models the volume is resized
        to this size and the model is called once.
    sw_batch_size : int
        Windows per forward call.
    sw_overlap : float
        Overlap of neighbouring windows, in [0, 1).
    output_classes : list of str
        Names of the channels of the segmentation output, background first.
        The predicted mask is every voxel whose arg-max is not channel 0.
    segmentation_output : str or None
        Key of the segmentation logits when the model returns a dictionary.
    score_output : str or None
        Key of the score output when the model returns a dictionary, or the
        name of the score when a classification model returns a tensor.
    score_activation : ScoreActivation
        See :class:`ScoreActivation`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_spacing: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    orientation: str = "RAS"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    roi_size: tuple[PositiveInt, PositiveInt, PositiveInt]
    sw_batch_size: PositiveInt = 1
    sw_overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    output_classes: list[str] = Field(default_factory=lambda: ["background", "lesion"])
    segmentation_output: str | None = "seg"
    score_output: str | None = "malignancy"
    score_activation: ScoreActivation = ScoreActivation.SIGMOID

    @field_validator("orientation")
    @classmethod
    def _check_orientation(cls, value: str) -> str:
        code = value.upper()
        axes = sorted(_AXIS_OF_CODE.get(c, "?") for c in code)
        if len(code) != 3 or axes != ["x", "y", "z"]:
            raise ValueError(
                "orientation should be three axis codes naming x (L/R), y (P/A) and "
                f"z (I/S) once each, e.g. 'RAS'. Found {value!r}."
            )
        return code

    @field_validator("hu_window")
    @classmethod
    def _check_window(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"hu_window should be (min, max) with min < max. Found {value}.")
        return value

    @field_validator("output_classes")
    @classmethod
    def _check_classes(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(
                "output_classes should name at least two channels (background first). "
                f"Found {value}."
            )
        return value

    def spacing_in_model_axes(self) -> tuple[float, float, float]:
        """Target spacing in the axis order of :attr:`orientation`.

        Returns
        -------
        tuple of 3 float
            e.g. (x, y, z) spacing for ``"RAS"``.
        """
        z, y, x = self.target_spacing
        by_axis = {"x": x, "y": y, "z": z}
        return tuple(by_axis[_AXIS_OF_CODE[c]] for c in self.orientation)  # type: ignore[return-value]


class ModelSpec(BaseModel):
    """What a registered model is, what it is for and what it expects.

    Parameters
    ----------
    name, version : str
        Identify the model; both appear in the DICOM SEG objects it produces
        (AlgorithmIdentificationSequence).
    task : ModelTask
        ``segmentation``, ``classification`` or ``both``.
    format : ModelFormat
        ``torchscript`` (one ``.ts``/``.pt`` TorchScript archive) or
        ``monai_bundle`` (a bundle folder).
    input : InputSpec
        Preprocessing and output conventions.
    intended_use : str
        Intended-use statement shown on the model card and in reports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    task: ModelTask
    format: ModelFormat
    input: InputSpec
    intended_use: str = ""

    @model_validator(mode="after")
    def _check_outputs(self) -> ModelSpec:
        if self.task in (ModelTask.CLASSIFICATION, ModelTask.BOTH) and not self.input.score_output:
            raise ValueError(
                f"A model with task {self.task.value!r} should name its score output "
                "(input.score_output). Found none."
            )
        return self

    @property
    def segments(self) -> bool:
        """Whether the model produces a segmentation."""
        return self.task in (ModelTask.SEGMENTATION, ModelTask.BOTH)

    @property
    def scores(self) -> bool:
        """Whether the model produces a score."""
        return self.task in (ModelTask.CLASSIFICATION, ModelTask.BOTH)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace) of the spec."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        """Parse a spec written by :meth:`to_json` (or any equivalent JSON)."""
        return cls.model_validate_json(text)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_model_files(path: str | Path) -> dict[str, str]:
    """SHA-256 of every file a model is made of.

    Parameters
    ----------
    path : str or Path
        A model file (TorchScript archive) or a folder (MONAI bundle).

    Returns
    -------
    dict of str to str
        ``{relative POSIX path: hex SHA-256}`` sorted by path. For a single
        file the key is its file name.

    Raises
    ------
    ModelError
        When ``path`` does not exist or a folder holds no files.
    """
    root = Path(path)
    if root.is_file():
        return {root.name: _sha256_file(root)}
    if not root.is_dir():
        raise ModelError(f"Expected a model file or bundle folder at {root}. Found nothing there.")
    hashes = {
        p.relative_to(root).as_posix(): _sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    if not hashes:
        raise ModelError(f"Expected model files in the folder {root}. Found an empty folder.")
    return dict(sorted(hashes.items()))


def model_digest(hashes: dict[str, str]) -> str:
    """One SHA-256 over all of a model's file hashes.

    Parameters
    ----------
    hashes : dict of str to str
        As returned by :func:`hash_model_files`.

    Returns
    -------
    str
        SHA-256 of the canonical JSON of the sorted mapping.
    """
    canonical = json.dumps(dict(sorted(hashes.items())), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_model_files(path: str | Path, expected: dict[str, str]) -> None:
    """Check that a model's files are exactly the registered ones.

    Parameters
    ----------
    path : str or Path
        The model file or bundle folder.
    expected : dict of str to str
        The hashes recorded at registration (:func:`hash_model_files`).

    Raises
    ------
    ModelIntegrityError
        Naming every changed, missing and added file.
    """
    try:
        found = hash_model_files(path)
    except ModelError as error:
        raise ModelIntegrityError(
            f"The registered model at {path} can no longer be read: {error}"
        ) from error
    changed = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    missing = sorted(expected.keys() - found.keys())
    added = sorted(found.keys() - expected.keys())
    if changed or missing or added:
        parts = []
        for label, names in (("changed", changed), ("missing", missing), ("added", added)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        raise ModelIntegrityError(
            f"The model files at {path} do not match the registered SHA-256 hashes "
            f"({'; '.join(parts)}). Register the model again if the change is intended."
        )

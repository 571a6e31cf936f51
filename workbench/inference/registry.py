"""Model specifications and file fingerprints for the model registry.

The database part of the registry belongs to :mod:`workbench.services`; this
module holds what it stores about a model: a :class:`ModelSpec` (what the model
is for and what input it expects) and the SHA-256 of every file the model is
made of, so that a validation run can prove it used exactly the registered
model (:func:`verify_model_files`).

Specs written by users are read with :meth:`ModelSpec.from_json` (or
:func:`parse_model_spec`), which turns pydantic's validation errors into one
:class:`ModelSpecError` with a ``field X: expected ..., found ...`` line per
problem. :func:`model_spec_schema` is the JSON Schema of the spec, printed by
``workbench model schema`` and described in ``docs/model-spec.md``.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from workbench.errors import ModelError, ModelIntegrityError
from workbench.naming import NAME_PATTERN

__all__ = [
    "ModelFormat",
    "ModelTask",
    "MarkFormat",
    "ScoreActivation",
    "IntensityNormalization",
    "InputSpec",
    "ModelSpec",
    "ModelSpecError",
    "parse_model_spec",
    "model_spec_schema",
    "input_spec_from_bundle",
    "hash_model_files",
    "verify_model_files",
    "model_digest",
]

_CHUNK = 1 << 20
_AXIS_OF_CODE = {"L": "x", "R": "x", "P": "y", "A": "y", "I": "z", "S": "z"}

_NAME_PATTERN = NAME_PATTERN.pattern
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ModelTask(StrEnum):
    """What a model predicts."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    BOTH = "both"
    DETECTION = "detection"


class MarkFormat(StrEnum):
    """What each row of a detection model's marks output holds (model-input voxel indices).

    ``points``: ``(score, i, j, k)``, the centre of a finding. ``boxes``: ``(score,
    i_min, j_min, k_min, i_max, j_max, k_max)``. Indices run along the axes of the array
    the model sees (``input.orientation``), on the ``input.roi_size`` grid.
    """

    POINTS = "points"
    BOXES = "boxes"

    @property
    def width(self) -> int:
        """Values per row: 4 for points, 7 for boxes."""
        return 4 if self is MarkFormat.POINTS else 7


class ModelFormat(StrEnum):
    """How a model is stored on disk.

    ``torchscript``: one archive written by ``torch.jit.save``. ``onnx``: one
    ``.onnx`` file (weights inside, no external data), run with ONNX Runtime.
    ``monai_bundle``: a MONAI bundle folder.
    """

    TORCHSCRIPT = "torchscript"
    MONAI_BUNDLE = "monai_bundle"
    ONNX = "onnx"


class ScoreActivation(StrEnum):
    """How the raw score output of a model becomes a probability.

    ``sigmoid``: the output is a logit (one per class for a multi-label
    model). ``softmax``: the output holds one logit per class of a multi-class
    model (``score_classes``), the classes exclude each other. ``none``: the
    output already is a probability and must lie in [0, 1]; a value outside
    fails the case.
    """

    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    NONE = "none"


class IntensityNormalization(StrEnum):
    """How image values become the [0, 1] range a model sees.

    ``window``: ``hu_window`` (min, max) maps linearly to [0, 1], values
    outside are clipped (CT in Hounsfield units). ``min_max``: each image's
    own minimum and maximum map to 0 and 1 (radiographs, whose stored values
    have no physical unit).
    """

    WINDOW = "window"
    MIN_MAX = "min_max"


class _FieldError(ValueError):
    """A validation error that names the field it is about (for :class:`ModelSpecError`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelSpecError(ModelError, ValueError):
    """A model spec does not validate; one ``field X: expected ..., found ...`` line per problem.

    Attributes
    ----------
    problems : tuple of str
        The lines of the message, one per invalid field.
    """

    def __init__(self, problems: list[str], *, source: str = "the model spec") -> None:
        self.problems = tuple(problems)
        super().__init__(
            f"{source} is not valid ({len(problems)} problem(s)); see docs/model-spec.md "
            "or `workbench model schema`:\n" + "\n".join(f"  {line}" for line in problems)
        )


class InputSpec(BaseModel):
    """The input a model expects and the outputs it produces.

    Parameters
    ----------
    spatial_dims : {2, 3}
        3 for a series read as one volume; 2 for a single radiograph (CR/DX),
        classification only.
    in_channels : int
        Channels of the model input; the grey image is repeated on each.
    target_spacing : tuple of float
        Voxel spacing in mm the image is resampled to: (z, y, x) for 3D
        (required), (row, column) for 2D (optional: empty keeps the pixel grid).
    orientation : str
        Axis codes of the array the model sees, e.g. ``"RAS"`` or ``"LPS"``
        (MONAI convention: array axis *i* runs towards letter *i*). With
        ``"RAS"`` the model sees arrays ordered (x, y, z). Ignored for 2D.
    normalization : IntensityNormalization
        ``window`` (``hu_window``) or ``min_max`` (each image's own range).
    hu_window : tuple of 2 float
        (min, max) mapped linearly to [0, 1]; values outside are clipped.
    roi_size : tuple of int
        One value per spatial dimension. Patch size of sliding-window
        inference, in the axis order of ``orientation`` (3D) or (rows,
        columns) (2D). For classification-only models the image is resized to
        this size and the model is called once.
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
    score_classes : list of str or None
        Names of the score output's channels when there is more than one
        (multi-class with ``softmax``, multi-label with ``sigmoid``).
    positive_class : str or None
        The class of ``score_classes`` whose probability is the case's score.
    marks_output : str or None
        Detection models: key (or ONNX output name) of the marks when the model
        returns more than one output.
    mark_format : MarkFormat
        Detection models: ``points`` or ``boxes`` (see :class:`MarkFormat`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spatial_dims: Literal[2, 3] = Field(
        default=3,
        description="3: a CT/MR series as one volume; 2: one radiograph (CR/DX) as an image "
        "(classification only).",
    )
    in_channels: PositiveInt = Field(
        default=1,
        description="Input channels the model expects; the grey image is repeated on each "
        "channel (e.g. 3 for a network pretrained on RGB images).",
    )
    target_spacing: tuple[PositiveFloat, ...] = Field(
        default=(),
        description="Voxel spacing in mm the image is resampled to: (z, y, x) for 3D, "
        "(row, column) for 2D. Required for 3D; for 2D an empty list keeps the pixel grid.",
    )
    orientation: str = Field(
        default="RAS",
        description="3D: axis codes of the array the model sees (MONAI convention: array "
        "axis i runs towards letter i), e.g. 'RAS' or 'LPS'. Ignored for 2D.",
    )
    normalization: IntensityNormalization = Field(
        default=IntensityNormalization.WINDOW,
        description="'window': hu_window maps to [0, 1] (clipped); 'min_max': each image's "
        "own range maps to [0, 1].",
    )
    hu_window: tuple[float, float] = Field(
        default=(-1000.0, 1000.0),
        description="(min, max) mapped to [0, 1] when normalization is 'window'.",
    )
    roi_size: tuple[PositiveInt, ...] = Field(
        description="Spatial size of the model input, one value per spatial dimension, in the "
        "axis order of orientation (3D) or (rows, columns) (2D). Segmentation models run "
        "sliding windows of this size; classification models see the image resized to it.",
    )
    sw_batch_size: PositiveInt = Field(default=1, description="Windows per forward call.")
    sw_overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.25, description="Overlap of neighbouring sliding windows, in [0, 1)."
    )
    output_classes: list[str] = Field(
        default_factory=lambda: ["background", "lesion"],
        description="Names of the channels of the segmentation output, background first; "
        "the predicted mask is every voxel whose arg-max is not the background.",
    )
    segmentation_output: str | None = Field(
        default="seg",
        description="Key (TorchScript/bundle dict) or output name (ONNX) of the segmentation "
        "logits when the model has more than one output.",
    )
    score_output: str | None = Field(
        default="malignancy",
        description="Key or output name of the score output when the model has more than one "
        "output; otherwise the name of the score.",
    )
    score_activation: ScoreActivation = Field(
        default=ScoreActivation.SIGMOID,
        description="'sigmoid' (logits; multi-label with score_classes), 'softmax' "
        "(multi-class logits, needs score_classes) or 'none' (already probabilities).",
    )
    score_classes: list[str] | None = Field(
        default=None,
        description="Names of the score output's channels when it has more than one "
        "(multi-class or multi-label); null for a single score.",
    )
    positive_class: str | None = Field(
        default=None,
        description="Which of score_classes is the case's score (its probability is what the "
        "protocol evaluates). Required with score_classes.",
    )
    marks_output: str | None = Field(
        default="marks",
        description="Detection models: key (TorchScript dict) or output name (ONNX) of the "
        "marks when the model has more than one output.",
    )
    mark_format: MarkFormat = Field(
        default=MarkFormat.POINTS,
        description="Detection models: each row of the marks output is 'points' (score, i, "
        "j, k) or 'boxes' (score, i_min, j_min, k_min, i_max, j_max, k_max), in voxel indices "
        "of the model input (roi_size grid, orientation's axis order).",
    )

    @field_validator("orientation")
    @classmethod
    def _check_orientation(cls, value: str) -> str:
        code = value.upper()
        axes = sorted(_AXIS_OF_CODE.get(c, "?") for c in code)
        if len(code) != 3 or axes != ["x", "y", "z"]:
            raise ValueError(
                "expected three axis codes naming x (L/R), y (P/A) and z (I/S) once each, "
                f"e.g. 'RAS', found {value!r}"
            )
        return code

    @field_validator("hu_window")
    @classmethod
    def _check_window(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"expected (min, max) with min < max, found {list(value)}")
        return value

    @field_validator("output_classes")
    @classmethod
    def _check_classes(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(
                f"expected at least two channel names (background first), found {value}"
            )
        return value

    @model_validator(mode="after")
    def _check_dimensions(self) -> InputSpec:
        dims = self.spatial_dims
        if len(self.roi_size) != dims:
            raise _FieldError(
                "roi_size",
                f"expected {dims} values (one per spatial dimension, spatial_dims={dims}), "
                f"found {list(self.roi_size)}",
            )
        if dims == 3 and len(self.target_spacing) != 3:
            raise _FieldError(
                "target_spacing",
                f"expected 3 values (z, y, x) in mm for spatial_dims=3, "
                f"found {list(self.target_spacing)}",
            )
        if dims == 2 and len(self.target_spacing) not in (0, 2):
            raise _FieldError(
                "target_spacing",
                "expected 2 values (row, column) in mm, or an empty list to keep the pixel "
                f"grid, for spatial_dims=2, found {list(self.target_spacing)}",
            )
        return self

    @model_validator(mode="after")
    def _check_score_classes(self) -> InputSpec:
        classes = self.score_classes
        if classes is not None and (len(classes) < 2 or len(set(classes)) != len(classes)):
            raise _FieldError(
                "score_classes",
                f"expected at least two distinct class names (or null), found {classes}",
            )
        if self.score_activation == ScoreActivation.SOFTMAX and classes is None:
            raise _FieldError(
                "score_classes",
                "expected the class names of the multi-class output for score_activation "
                "'softmax', found null",
            )
        if classes is not None and self.score_activation == ScoreActivation.NONE:
            raise _FieldError(
                "score_activation",
                "expected 'softmax' (multi-class) or 'sigmoid' (multi-label) with "
                "score_classes, found 'none'",
            )
        if classes is not None and self.positive_class not in classes:
            raise _FieldError(
                "positive_class",
                f"expected one of score_classes {classes}, found {self.positive_class!r}",
            )
        if classes is None and self.positive_class is not None:
            raise _FieldError(
                "positive_class",
                f"expected null without score_classes, found {self.positive_class!r}",
            )
        return self

    @property
    def score_channels(self) -> int:
        """Channels of the raw score output: ``len(score_classes)``, else 1."""
        return len(self.score_classes) if self.score_classes else 1

    def spacing_in_model_axes(self) -> tuple[float, float, float]:
        """Target spacing in the axis order of :attr:`orientation` (3D specs).

        Returns
        -------
        tuple of 3 float
            e.g. (x, y, z) spacing for ``"RAS"``.
        """
        if len(self.target_spacing) != 3:
            raise ModelError(
                f"Expected a 3D target_spacing (z, y, x). Found {list(self.target_spacing)}."
            )
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
        ``segmentation``, ``classification``, ``both`` or ``detection`` (marks: points
        or boxes with a score, see :class:`MarkFormat`).
    format : ModelFormat
        ``torchscript`` (one ``.ts``/``.pt`` TorchScript archive), ``onnx``
        (one ``.onnx`` file) or ``monai_bundle`` (a bundle folder).
    input : InputSpec
        Preprocessing and output conventions.
    intended_use : str
        Intended-use statement shown on the model card and in reports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)] = Field(
        description="Model name: letters, digits, '.', '_', '+', '-', starting with a letter "
        "or digit (it names a folder)."
    )
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)] = Field(
        description="Model version, same characters as name; name@version is registered once."
    )
    task: ModelTask = Field(
        description="'segmentation', 'classification', 'both' (a mask and a score) or "
        "'detection' (marks: points or boxes with a score)."
    )
    format: ModelFormat = Field(
        description="'torchscript' (one archive), 'onnx' (one .onnx file) or 'monai_bundle' "
        "(a bundle folder)."
    )
    input: InputSpec = Field(description="Preprocessing and output conventions.")
    intended_use: str = Field(default="", description="Intended-use statement for the model card.")

    @model_validator(mode="after")
    def _check_outputs(self) -> ModelSpec:
        if self.task in (ModelTask.CLASSIFICATION, ModelTask.BOTH) and not self.input.score_output:
            raise _FieldError(
                "input.score_output",
                f"expected the name of the score output for a model with task "
                f"{self.task.value!r}, found none",
            )
        if self.task == ModelTask.DETECTION and self.input.spatial_dims != 3:
            raise _FieldError(
                "input.spatial_dims",
                "expected 3 for a detection model (marks are placed in a volume), found "
                f"{self.input.spatial_dims}",
            )
        if self.input.spatial_dims == 2 and self.task != ModelTask.CLASSIFICATION:
            raise _FieldError(
                "task",
                "expected 'classification' for a 2D model (input.spatial_dims=2), "
                f"found {self.task.value!r}",
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

    @property
    def detects(self) -> bool:
        """Whether the model produces marks (points or boxes with a score)."""
        return self.task == ModelTask.DETECTION

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace) of the spec."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "the model spec") -> ModelSpec:
        """Parse a spec written by :meth:`to_json` (or any equivalent JSON).

        Parameters
        ----------
        text : str or bytes
            The JSON text.
        source : str
            What the text is (a file name), for the error message.

        Raises
        ------
        ModelSpecError
            One ``field X: expected ..., found ...`` line per problem.
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ModelSpecError(_problems(error), source=source) from None


def parse_model_spec(
    data: dict[str, Any] | str | bytes, *, source: str = "the model spec"
) -> ModelSpec:
    """Validate a model spec from JSON text or parsed JSON data.

    Parameters
    ----------
    data : dict or str or bytes
        The spec (see ``docs/model-spec.md``).
    source : str
        What the spec is (a file name), for the error message.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelSpecError
        One ``field X: expected ..., found ...`` line per problem, e.g.
        ``field input.roi_size: expected 3 values ..., found [96, 96]``.
    """
    if isinstance(data, (str, bytes)):
        return ModelSpec.from_json(data, source=source)
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        raise ModelSpecError(_problems(error), source=source) from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(error: ValidationError) -> list[str]:
    """``field X: expected ..., found ...`` for each pydantic error."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            field = f"{loc}.{cause.field}" if loc else cause.field
            lines.append(f"field {field}: {cause.message}")
            continue
        where = f"field {loc}" if loc else "spec"
        message = str(item["msg"])
        if kind == "missing":
            lines.append(f"{where}: expected a value (required), found nothing")
        elif kind == "extra_forbidden":
            lines.append(
                f"{where}: expected no such field (unknown), found {_shown(item['input'])}"
            )
        elif kind == "json_invalid":
            lines.append(f"spec: expected valid JSON, found {message}")
        elif message.startswith("Value error, "):
            lines.append(f"{where}: {message.removeprefix('Value error, ')}")
        elif kind == "string_pattern_mismatch":
            lines.append(
                f"{where}: expected letters, digits, '.', '_', '+' or '-', starting with a "
                f"letter or digit, found {_shown(item.get('input'))}"
            )
        elif message.startswith("Input should be "):
            expected = message.removeprefix("Input should be ").rstrip(".")
            lines.append(f"{where}: expected {expected}, found {_shown(item.get('input'))}")
        else:
            expected = message[:1].lower() + message[1:].rstrip(".")
            lines.append(f"{where}: expected: {expected}; found {_shown(item.get('input'))}")
    return lines


def _bundle_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"Expected the bundle file {path}. Found nothing there.") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"Expected JSON in {path}. Found unreadable content: {error}") from error
    if not isinstance(data, dict):
        raise ModelError(f"Expected a JSON object in {path}. Found {type(data).__name__}.")
    return data


def _transforms(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The bundle's preprocessing transforms by class name (``Spacingd`` -> ``Spacing``)."""
    found: dict[str, dict[str, Any]] = {}
    steps = config.get("preprocessing", {})
    for step in steps.get("transforms", []) if isinstance(steps, dict) else []:
        if isinstance(step, dict) and isinstance(step.get("_target_"), str):
            name = step["_target_"].rsplit(".", 1)[-1]
            found.setdefault(name.removesuffix("d"), step)
    return found


def input_spec_from_bundle(root: str | Path, **overrides: Any) -> InputSpec:
    """Read a MONAI bundle's own preprocessing and outputs into an :class:`InputSpec`.

    Only literal JSON values are read, nothing of the bundle is executed:
    ``Orientation(d)`` ``axcodes`` -> ``orientation``; ``Spacing(d)``
    ``pixdim`` (in the order of ``axcodes``) -> ``target_spacing`` (z, y, x);
    ``ScaleIntensityRange(d)`` ``a_min``/``a_max`` -> ``hu_window``; the
    ``inferer``'s ``roi_size``, ``sw_batch_size`` and ``overlap``; and from
    ``configs/metadata.json`` the first input's ``num_channels`` and the first
    output's ``channel_def`` -> ``in_channels`` and ``output_classes``.

    Parameters
    ----------
    root : str or Path
        The bundle folder.
    **overrides
        InputSpec fields that replace what was read (e.g. a smaller
        ``roi_size``), or supply what the bundle does not state.

    Returns
    -------
    InputSpec
        A segmentation input spec (``score_output`` null); check it against
        the bundle's documentation before registering.

    Raises
    ------
    ModelSpecError
        A value is missing, is an expression or reference (``$...``,
        ``@...``) rather than a literal, or does not validate; each line names
        the spec field and where in the bundle it came from.
    """
    folder = Path(root)
    config = _bundle_json(folder / "configs" / "inference.json")
    metadata = _bundle_json(folder / "configs" / "metadata.json")
    steps = _transforms(config)
    values: dict[str, Any] = {"segmentation_output": None, "score_output": None}
    where: dict[str, str] = {}

    def take(field: str, value: Any, origin: str) -> None:
        where[field] = origin
        values[field] = value

    if "Orientation" in steps:
        take("orientation", steps["Orientation"].get("axcodes"), "Orientationd.axcodes")
    if "Spacing" in steps:
        pixdim = steps["Spacing"].get("pixdim")
        codes = str(values.get("orientation", "RAS")).upper()
        if isinstance(pixdim, list) and len(pixdim) == 3 and len(codes) == 3:
            by_axis = {_AXIS_OF_CODE.get(c, "?"): v for c, v in zip(codes, pixdim, strict=True)}
            pixdim = [by_axis.get(axis) for axis in ("z", "y", "x")]
        take("target_spacing", pixdim, "Spacingd.pixdim")
    if "ScaleIntensityRange" in steps:
        step = steps["ScaleIntensityRange"]
        take(
            "hu_window", [step.get("a_min"), step.get("a_max")], "ScaleIntensityRanged.a_min/a_max"
        )
    inferer = config.get("inferer")
    if isinstance(inferer, dict):
        for field, key in (
            ("roi_size", "roi_size"),
            ("sw_batch_size", "sw_batch_size"),
            ("sw_overlap", "overlap"),
        ):
            if key in inferer:
                take(field, inferer[key], f"inferer.{key}")
    formats = metadata.get("network_data_format", {})
    inputs = list(formats.get("inputs", {}).values()) if isinstance(formats, dict) else []
    outputs = list(formats.get("outputs", {}).values()) if isinstance(formats, dict) else []
    if inputs and isinstance(inputs[0], dict) and "num_channels" in inputs[0]:
        take("in_channels", inputs[0]["num_channels"], "metadata inputs.num_channels")
    if outputs and isinstance(outputs[0], dict) and isinstance(outputs[0].get("channel_def"), dict):
        channels = outputs[0]["channel_def"]
        take(
            "output_classes",
            [str(channels[key]) for key in sorted(channels, key=lambda k: int(k))],
            "metadata outputs.channel_def",
        )
    values.update(overrides)
    problems = [
        f"field input.{field}: expected a literal value in the bundle's {where[field]}, "
        f"found {_shown(value)} (set it with an override)"
        for field, value in values.items()
        if field not in overrides
        and field in where
        and (
            (isinstance(value, str) and value[:1] in ("$", "@", "%"))
            or (
                isinstance(value, list)
                and any(v is None or isinstance(v, str) for v in value)
                and field != "output_classes"
            )
        )
    ]
    if problems:
        raise ModelSpecError(problems, source=f"the bundle {folder}")
    try:
        return InputSpec.model_validate(values)
    except ValidationError as error:
        lines = [
            line.replace("field ", "field input.", 1) if line.startswith("field ") else line
            for line in _problems(error)
        ]
        raise ModelSpecError(
            lines, source=f"the input spec read from the bundle {folder}"
        ) from None


def model_spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`ModelSpec`.

    Returns
    -------
    dict
        Printed by ``workbench model schema``; documented in ``docs/model-spec.md``.
    """
    schema = ModelSpec.model_json_schema()
    # Class docstrings are numpydoc for developers; the schema keeps their summary line.
    for node in [schema, *schema.get("$defs", {}).values()]:
        if isinstance(node.get("description"), str):
            node["description"] = node["description"].split("\n\n")[0].strip()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Validation Workbench model spec",
        **{key: value for key, value in schema.items() if key != "title"},
    }


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

"""Detection outputs: a model's marks per case, and the rule that turns a segmentation into marks.

Output contract
---------------
A detection model returns, per case, a list of marks; each mark is a box or a
point in patient coordinates (LPS, mm) with a score and an optional label:
:class:`Mark`. Marks are stored per case as a JSON list (``marks.json`` beside
the case's other outputs) with their SHA-256, like masks.

From a detection model
----------------------
A model registered with task ``detection`` returns its marks as rows of a tensor
(``input.mark_format``: ``points`` ``(score, i, j, k)`` or ``boxes`` ``(score, i_min,
j_min, k_min, i_max, j_max, k_max)``) in continuous voxel indices of the array it was
given: the volume reoriented and resampled as ``input`` says, then resized to
``input.roi_size`` (as a classification model sees it). :func:`marks_from_model_output`
checks them and places them in patient coordinates through the model grid's affine.

From a segmentation model
-------------------------
A segmentation model can feed a detection protocol through one documented rule
(:func:`marks_from_probability`): the probability map is thresholded at
``threshold``; each connected component (26-connected) of at least
``min_voxels`` voxels is one mark whose box is the component's bounding box in
patient coordinates, whose centre is the component's centroid and whose score is
the **maximum** probability inside the component.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage

from workbench.dicom.lesions import component_geometry
from workbench.errors import InferenceError

if TYPE_CHECKING:
    from workbench.inference.registry import InputSpec

__all__ = [
    "Mark",
    "marks_from_model_output",
    "marks_from_probability",
    "marks_output_rows",
    "marks_sha256",
    "marks_to_frame",
    "marks_to_json",
]


@dataclass(frozen=True, slots=True)
class Mark:
    """One mark of a detection model.

    Parameters
    ----------
    score : float
        Confidence; higher means more likely a lesion.
    x, y, z : float
        Centre in LPS mm.
    x_min, y_min, z_min, x_max, y_max, z_max : float or None
        Box in LPS mm (``None`` for a point mark).
    label : str
        Optional finding type.
    """

    score: float
    x: float
    y: float
    z: float
    x_min: float | None = None
    y_min: float | None = None
    z_min: float | None = None
    x_max: float | None = None
    y_max: float | None = None
    z_max: float | None = None
    label: str = ""

    @classmethod
    def box(cls, score: float, centre: Any, low: Any, high: Any) -> Mark:
        """A box mark: ``centre``, ``low`` and ``high`` corners as (x, y, z) in LPS mm."""
        return cls(
            score=float(score),
            x=float(centre[0]),
            y=float(centre[1]),
            z=float(centre[2]),
            x_min=float(low[0]),
            y_min=float(low[1]),
            z_min=float(low[2]),
            x_max=float(high[0]),
            y_max=float(high[1]),
            z_max=float(high[2]),
        )


def marks_from_probability(
    probability: np.ndarray,
    affine: np.ndarray,
    *,
    threshold: float = 0.5,
    min_voxels: int = 1,
) -> list[Mark]:
    """Marks from a probability map by the documented rule (see the module docstring).

    Parameters
    ----------
    probability : ndarray, shape (z, y, x)
        Lesion probability per voxel, in [0, 1].
    affine : ndarray, shape (4, 4)
        Voxel ``(x, y, z, 1)`` to LPS mm.
    threshold : float
        Voxels with probability >= threshold form the components.
    min_voxels : int
        Smaller components are dropped.

    Returns
    -------
    list of Mark
        Highest score first.
    """
    prob = np.asarray(probability, dtype=float)
    labels, _ = ndimage.label(prob >= threshold, structure=np.ones((3, 3, 3), dtype=bool))
    marks = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        if int(component.sum()) < min_voxels:
            continue
        centre, box_lo, box_hi = component_geometry(component, slices, affine)
        marks.append(Mark.box(float(prob[slices][component].max()), centre, box_lo, box_hi))
    return sorted(marks, key=lambda m: -m.score)


def marks_output_rows(raw: Any, spec: InputSpec) -> np.ndarray:
    """The rows of a detection model's marks output, checked: shape (N, 4) or (N, 7).

    Parameters
    ----------
    raw : torch.Tensor or dict
        What the model returned: the marks tensor, or a dict holding it under
        ``spec.marks_output``. A leading batch axis of 1 is dropped.
    spec : InputSpec

    Returns
    -------
    ndarray of float64

    Raises
    ------
    InferenceError
        No marks output, another shape than ``spec.mark_format`` declares, or values
        that are not finite; the message says what was expected and found.
    """
    if isinstance(raw, dict):
        if spec.marks_output is None or spec.marks_output not in raw:
            raise InferenceError(
                f"Expected the marks output {spec.marks_output!r} (input.marks_output) in the "
                f"model's outputs. Found keys {sorted(raw)}."
            )
        raw = raw[spec.marks_output]
    if not hasattr(raw, "detach"):
        raise InferenceError(
            f"Expected the model to return its marks as a tensor. Found {type(raw).__name__}."
        )
    rows = np.asarray(raw.detach().float().cpu().numpy(), dtype=np.float64)
    if rows.ndim == 3 and rows.shape[0] == 1:
        rows = rows[0]
    width = spec.mark_format.width
    columns = "score, i, j, k" if width == 4 else "score, i_min, j_min, k_min, i_max, j_max, k_max"
    if rows.ndim != 2 or rows.shape[1] != width:
        raise InferenceError(
            f"wrong marks output shape: expected (N, {width}) rows of ({columns}) for "
            f"input.mark_format {spec.mark_format.value!r}, found {tuple(rows.shape)}"
        )
    if not np.isfinite(rows).all():
        raise InferenceError("the marks output contains NaN or infinite values")
    if width == 7 and (rows[:, 4:7] < rows[:, 1:4]).any():
        bad = int(np.flatnonzero((rows[:, 4:7] < rows[:, 1:4]).any(axis=1))[0])
        raise InferenceError(
            f"mark row {bad} of the marks output is a box whose maximum lies below its "
            f"minimum: {rows[bad].tolist()}"
        )
    return rows


def marks_from_model_output(
    rows: np.ndarray,
    spec: InputSpec,
    model_affine_ras: np.ndarray,
    model_shape: Sequence[int],
) -> list[Mark]:
    """Place a detection model's marks in patient coordinates (LPS mm).

    A row's indices ``m`` on the ``roi_size`` grid the model saw become indices on the
    model grid (the resampled volume of shape ``model_shape``) by ``g = (m + 0.5) *
    size / roi_size - 0.5`` per axis (the inverse of the resizing, ``align_corners``
    off), then RAS mm by the model grid's affine, then LPS. A box becomes the
    axis-aligned box (in LPS) around its eight corners, its centre the mapped centre.

    Parameters
    ----------
    rows : ndarray
        From :func:`marks_output_rows`.
    spec : InputSpec
    model_affine_ras : ndarray, shape (4, 4)
        Model-grid index to RAS mm (the preprocessed image's affine).
    model_shape : sequence of 3 int
        Spatial shape of the model grid.

    Returns
    -------
    list of Mark
        Highest score first.
    """
    affine = np.asarray(model_affine_ras, dtype=np.float64)
    scale = np.asarray(model_shape, dtype=np.float64) / np.asarray(spec.roi_size, dtype=float)

    def to_lps(indices: np.ndarray) -> np.ndarray:
        grid = (np.asarray(indices, dtype=np.float64) + 0.5) * scale - 0.5
        ras = grid @ affine[:3, :3].T + affine[:3, 3]
        return ras * np.array([-1.0, -1.0, 1.0])

    marks = []
    for row in np.asarray(rows, dtype=np.float64):
        if row.size == 4:
            x, y, z = to_lps(row[1:4][None])[0]
            marks.append(Mark(score=float(row[0]), x=float(x), y=float(y), z=float(z)))
            continue
        low, high = row[1:4], row[4:7]
        corners = np.array(
            [[(low, high)[bit >> axis & 1][axis] for axis in range(3)] for bit in range(8)]
        )
        placed = to_lps(corners)
        centre = to_lps(((low + high) / 2)[None])[0]
        marks.append(Mark.box(row[0], centre, placed.min(axis=0), placed.max(axis=0)))
    return sorted(marks, key=lambda m: -m.score)


def marks_to_json(marks: Sequence[Mark]) -> bytes:
    """Canonical JSON of a case's marks (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(
        [asdict(m) for m in marks], sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def marks_sha256(marks: Sequence[Mark]) -> str:
    """SHA-256 of :func:`marks_to_json`: what the run records for a case's output."""
    return hashlib.sha256(marks_to_json(marks)).hexdigest()


def marks_to_frame(case_id: str, marks: Sequence[Mark]) -> pd.DataFrame:
    """One row per mark with ``case_id``, ``mark_id`` and the :class:`Mark` fields."""
    rows = [{"case_id": case_id, "mark_id": f"M{i + 1}", **asdict(m)} for i, m in enumerate(marks)]
    columns = ["case_id", "mark_id", *Mark.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)

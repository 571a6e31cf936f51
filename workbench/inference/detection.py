"""Detection outputs: a model's marks per case, and the rule that turns a segmentation into marks.

Output contract
---------------
A detection model returns, per case, a list of marks; each mark is a box or a
point in patient coordinates (LPS, mm) with a score and an optional label:
:class:`Mark`. Marks are stored per case as a JSON list (``marks.json`` beside
the case's other outputs) with their SHA-256, like masks.

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

import numpy as np
import pandas as pd
from scipy import ndimage

from workbench.dicom.lesions import component_geometry

__all__ = ["Mark", "marks_from_probability", "marks_sha256", "marks_to_frame", "marks_to_json"]


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
        marks.append(
            Mark(
                score=float(prob[slices][component].max()),
                x=float(centre[0]),
                y=float(centre[1]),
                z=float(centre[2]),
                x_min=float(box_lo[0]),
                y_min=float(box_lo[1]),
                z_min=float(box_lo[2]),
                x_max=float(box_hi[0]),
                y_max=float(box_hi[1]),
                z_max=float(box_hi[2]),
            )
        )
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

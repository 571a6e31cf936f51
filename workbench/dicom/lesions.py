"""Reference lesions for detection tasks, in patient coordinates (LPS, mm).

A detection reference standard lists lesions; the matching rule of
:func:`workbench.stats.match_lesions` compares them with a model's marks in
millimetres. This module turns the ways a hospital records lesions into one
table, one row per lesion:

``case_id`` (or ``series_instance_uid``), ``lesion_id``, ``x_min, y_min, z_min,
x_max, y_max, z_max`` (axis-aligned box in LPS mm), ``x, y, z`` (centre),
``diameter`` (mm), ``lesion_weight`` (clinical importance, equal by default)
and any attribute columns (``size_mm``, ``type``) for strata.

Sources
-------
* a CSV (``reference/lesions.csv``) of 2D boxes or points per SOP Instance
  (and frame) in pixel coordinates, or of 3D boxes / centres with a diameter in
  patient coordinates: :func:`lesions_from_table`;
* connected components of a reference segmentation: :func:`lesions_from_mask`.

Every row is checked against the DICOM geometry of its series: an unknown UID or
a box outside the image is an error that names the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from workbench.errors import GeometryError

__all__ = [
    "LESION_COLUMNS",
    "component_geometry",
    "ImageGeometry",
    "lesions_from_mask",
    "lesions_from_table",
    "voxel_box_to_patient",
]

LESION_COLUMNS = (
    "lesion_id",
    "x_min",
    "y_min",
    "z_min",
    "x_max",
    "y_max",
    "z_max",
    "x",
    "y",
    "z",
    "diameter",
    "lesion_weight",
)


@dataclass(frozen=True, slots=True)
class ImageGeometry:
    """Where one image (SOP Instance) lies in patient space.

    Parameters
    ----------
    rows, columns : int
    position : ndarray, shape (3,)
        ImagePositionPatient: LPS mm of the centre of pixel (0, 0); zeros for a
        projection image without one.
    row_direction, column_direction : ndarray, shape (3,)
        Unit vectors along a row (increasing column index) and along a column
        (increasing row index), from ImageOrientationPatient.
    spacing : tuple of float
        (row spacing, column spacing) in mm: PixelSpacing, else ImagerPixelSpacing.
    frames : int
        NumberOfFrames (1 for single-frame images).
    """

    rows: int
    columns: int
    position: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    spacing: tuple[float, float]
    frames: int = 1

    def pixel_to_patient(self, column: np.ndarray, row: np.ndarray) -> np.ndarray:
        """LPS mm of (fractional) pixel positions; shape ``(..., 3)``."""
        col = np.asarray(column, dtype=float)[..., None]
        r = np.asarray(row, dtype=float)[..., None]
        return (
            self.position
            + col * self.spacing[1] * self.row_direction
            + r * self.spacing[0] * self.column_direction
        )

    @classmethod
    def from_index_row(cls, row: Mapping[str, object]) -> ImageGeometry:
        """From one row of the DICOM index (``workbench.dicom.index`` FILE_COLUMNS)."""

        def number(key: str, default: float) -> float:
            value = row.get(key)
            try:
                out = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return default
            return default if np.isnan(out) else out

        orientation = str(row.get("image_orientation") or "")
        try:
            cosines = [float(v) for v in orientation.replace("\\", " ").replace(",", " ").split()]
        except ValueError:
            cosines = []
        if len(cosines) != 6:
            cosines = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        row_spacing = number("pixel_spacing_row", number("imager_pixel_spacing_row", 1.0))
        col_spacing = number("pixel_spacing_col", number("imager_pixel_spacing_col", 1.0))
        return cls(
            rows=int(number("rows", 0)),
            columns=int(number("columns", 0)),
            position=np.array(
                [
                    number("image_position_x", 0.0),
                    number("image_position_y", 0.0),
                    number("image_position_z", 0.0),
                ]
            ),
            row_direction=np.array(cosines[:3]),
            column_direction=np.array(cosines[3:]),
            spacing=(row_spacing, col_spacing),
            frames=max(1, int(number("number_of_frames", 1))),
        )


def voxel_box_to_patient(
    affine: np.ndarray, lo_xyz: np.ndarray, hi_xyz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned LPS box (mm) around a voxel-index box.

    ``lo_xyz``/``hi_xyz`` are the outer voxel *edges* in index units (e.g.
    ``i_min - 0.5`` and ``i_max + 0.5``); for an oblique volume the box is the
    bounding box of the eight rotated corners.
    """
    corners = np.array(
        [
            [x, y, z, 1.0]
            for x in (lo_xyz[0], hi_xyz[0])
            for y in (lo_xyz[1], hi_xyz[1])
            for z in (lo_xyz[2], hi_xyz[2])
        ]
    )
    mm = (affine @ corners.T).T[:, :3]
    return mm.min(axis=0), mm.max(axis=0)


def component_geometry(
    component: np.ndarray, slices: tuple[slice, ...], affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid and axis-aligned LPS box (mm) of one connected component.

    Parameters
    ----------
    component : ndarray of bool
        The component inside its bounding slices (``labels[slices] == index``).
    slices : tuple of slice
        Its bounding box in ``(z, y, x)`` index space (``scipy.ndimage.find_objects``).
    affine : ndarray, shape (4, 4)
        Voxel ``(x, y, z, 1)`` to LPS mm.

    Returns
    -------
    (centre, box_low, box_high) : ndarrays of shape (3,)
    """
    zz, yy, xx = np.nonzero(component)
    offset = np.array([s.start for s in slices])  # z, y, x
    centre_zyx = np.array([zz.mean(), yy.mean(), xx.mean()]) + offset
    lo = np.array([slices[2].start, slices[1].start, slices[0].start]) - 0.5
    hi = np.array([slices[2].stop - 1, slices[1].stop - 1, slices[0].stop - 1]) + 0.5
    box_lo, box_hi = voxel_box_to_patient(affine, lo, hi)
    centre = (affine @ np.array([*centre_zyx[::-1], 1.0]))[:3]
    return centre, box_lo, box_hi


def lesions_from_mask(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    min_voxels: int = 1,
    connectivity: int = 3,
) -> pd.DataFrame:
    """One lesion per connected component of a reference mask.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
    affine : ndarray, shape (4, 4)
        Voxel ``(x, y, z, 1)`` to LPS mm (:attr:`workbench.dicom.volume.Volume.affine`).
    min_voxels : int
        Components smaller than this are ignored.
    connectivity : {1, 2, 3}
        Neighbourhood of the labelling (3 = 26-connected).

    Returns
    -------
    DataFrame
        :data:`LESION_COLUMNS` plus ``n_voxels`` and ``volume_ml``; ``diameter`` is
        the diameter of the sphere of the component's volume.
    """
    labels, n = ndimage.label(
        np.asarray(mask, dtype=bool), structure=ndimage.generate_binary_structure(3, connectivity)
    )
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    rows: list[dict[str, float | int | str]] = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        n_voxels = int(component.sum())
        if n_voxels < min_voxels:
            continue
        centre, box_lo, box_hi = component_geometry(component, slices, affine)
        volume_ml = n_voxels * voxel_ml
        rows.append(
            {
                "lesion_id": f"L{len(rows) + 1}",
                "x_min": box_lo[0],
                "y_min": box_lo[1],
                "z_min": box_lo[2],
                "x_max": box_hi[0],
                "y_max": box_hi[1],
                "z_max": box_hi[2],
                "x": centre[0],
                "y": centre[1],
                "z": centre[2],
                "diameter": float((6.0 * volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0)),
                "lesion_weight": np.nan,
                "n_voxels": n_voxels,
                "volume_ml": volume_ml,
            }
        )
    frame = pd.DataFrame(rows, columns=[*LESION_COLUMNS, "n_voxels", "volume_ml"])
    if len(frame):
        frame["lesion_weight"] = 1.0 / len(frame)
    return frame


_PIXEL_BOX = ("col_min", "row_min", "col_max", "row_max")
_PIXEL_POINT = ("col", "row")
_MM_BOX = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")
_MM_POINT = ("x", "y", "z")


def _row_error(number: int, message: str) -> GeometryError:
    return GeometryError(f"reference/lesions.csv row {number}: {message}")


def lesions_from_table(
    table: pd.DataFrame,
    images: pd.DataFrame,
    *,
    default_diameter_mm: float | None = None,
) -> pd.DataFrame:
    """Reference lesions from a CSV of 2D pixel boxes/points or 3D patient boxes/centres.

    Parameters
    ----------
    table : DataFrame
        One row per lesion. Required: ``lesion_id`` and either
        ``sop_instance_uid`` (optional ``frame``, 1-based) with a pixel box
        ``col_min, row_min, col_max, row_max`` or a pixel point ``col, row``
        (optional ``diameter_mm``), or ``series_instance_uid`` with a patient box
        ``x_min, y_min, z_min, x_max, y_max, z_max`` or a centre ``x, y, z`` and
        ``diameter_mm`` (all LPS mm). Optional ``lesion_weight`` and any
        attribute columns, kept as they are.
    images : DataFrame
        The DICOM index rows of the test set's images (``sop_instance_uid``,
        ``series_instance_uid``, geometry columns).
    default_diameter_mm : float, optional
        Diameter of a point lesion without ``diameter_mm``.

    Returns
    -------
    DataFrame
        ``series_instance_uid`` and :data:`LESION_COLUMNS` plus the attribute
        columns; ``lesion_weight`` defaults to equal weights per series.

    Raises
    ------
    GeometryError
        A row names an unknown UID, a frame the image does not have, a box
        outside the image or inverted, or has no usable geometry; the message
        names the row (1-based, after the header) and what was expected.
    """
    by_sop = {str(r["sop_instance_uid"]): r for r in images.to_dict(orient="records")}
    series_known = set(images["series_instance_uid"].astype(str))
    out = []
    for number, row in enumerate(table.to_dict(orient="records"), start=2):
        lesion_id = row.get("lesion_id")
        if lesion_id is None or (isinstance(lesion_id, float) and np.isnan(lesion_id)):
            raise _row_error(number, "expected a lesion_id; found none")
        present = {k for k, v in row.items() if v is not None and not pd.isna(v)}
        record: dict[str, object] = {"lesion_id": str(lesion_id)}
        diameter = row.get("diameter_mm") if "diameter_mm" in present else default_diameter_mm
        if "sop_instance_uid" in present:
            uid = str(row["sop_instance_uid"])
            if uid not in by_sop:
                raise _row_error(number, f"SOP Instance UID {uid} is not in the test set")
            image = by_sop[uid]
            geometry = ImageGeometry.from_index_row(image)
            frame = int(row["frame"]) if "frame" in present else 1
            if not 1 <= frame <= geometry.frames:
                raise _row_error(number, f"expected a frame in 1..{geometry.frames}; found {frame}")
            if set(_PIXEL_BOX) <= present:
                c0, r0, c1, r1 = (float(row[k]) for k in _PIXEL_BOX)
                if c1 < c0 or r1 < r0:
                    raise _row_error(number, f"box corners inverted: ({c0}, {r0})-({c1}, {r1})")
            elif set(_PIXEL_POINT) <= present:
                c0 = c1 = float(row["col"])
                r0 = r1 = float(row["row"])
                if diameter is None:
                    raise _row_error(number, "a point lesion needs diameter_mm")
            else:
                raise _row_error(
                    number, f"expected a pixel box {_PIXEL_BOX} or a point {_PIXEL_POINT}"
                )
            if min(c0, r0) < -0.5 or c1 > geometry.columns - 0.5 or r1 > geometry.rows - 0.5:
                raise _row_error(
                    number,
                    f"box ({c0}, {r0})-({c1}, {r1}) lies outside the image of "
                    f"{geometry.columns} columns x {geometry.rows} rows",
                )
            corners = geometry.pixel_to_patient(
                np.array([c0, c1, c0, c1]), np.array([r0, r0, r1, r1])
            )
            lo, hi = corners.min(axis=0), corners.max(axis=0)
            centre = geometry.pixel_to_patient(np.array((c0 + c1) / 2), np.array((r0 + r1) / 2))
            size = float(diameter) if diameter is not None else float(np.max(hi - lo))
            if diameter is not None and c0 == c1:
                lo, hi = centre - size / 2, centre + size / 2
            record["series_instance_uid"] = str(image["series_instance_uid"])
            record["sop_instance_uid"] = uid
            record["frame"] = frame
        elif "series_instance_uid" in present:
            series = str(row["series_instance_uid"])
            if series not in series_known:
                raise _row_error(number, f"Series Instance UID {series} is not in the test set")
            if set(_MM_BOX) <= present:
                lo = np.array([float(row[k]) for k in _MM_BOX[:3]])
                hi = np.array([float(row[k]) for k in _MM_BOX[3:]])
                if np.any(hi < lo):
                    raise _row_error(number, "box corners inverted (x/y/z_min above x/y/z_max)")
                centre = (lo + hi) / 2
                size = float(diameter) if diameter is not None else float(np.max(hi - lo))
            elif set(_MM_POINT) <= present:
                if diameter is None:
                    raise _row_error(number, "a centre lesion needs diameter_mm")
                centre = np.array([float(row[k]) for k in _MM_POINT])
                size = float(diameter)
                lo, hi = centre - size / 2, centre + size / 2
            else:
                raise _row_error(
                    number,
                    f"expected a patient box {_MM_BOX} or a centre {_MM_POINT} with diameter_mm",
                )
            record["series_instance_uid"] = series
        else:
            raise _row_error(number, "expected sop_instance_uid or series_instance_uid")
        record.update(
            x_min=float(lo[0]),
            y_min=float(lo[1]),
            z_min=float(lo[2]),
            x_max=float(hi[0]),
            y_max=float(hi[1]),
            z_max=float(hi[2]),
            x=float(centre[0]),
            y=float(centre[1]),
            z=float(centre[2]),
            diameter=size,
            lesion_weight=float(row["lesion_weight"]) if "lesion_weight" in present else np.nan,
        )
        for key, value in row.items():
            if key not in record and key not in (
                *_PIXEL_BOX,
                *_PIXEL_POINT,
                *_MM_BOX,
                "diameter_mm",
            ):
                record[key] = value
        out.append(record)
    frame = pd.DataFrame(out)
    if not len(frame):
        return pd.DataFrame(columns=["series_instance_uid", *LESION_COLUMNS])
    missing = frame["lesion_weight"].isna()
    if missing.any():
        counts = frame.groupby("series_instance_uid")["lesion_id"].transform("count")
        frame.loc[missing, "lesion_weight"] = 1.0 / counts[missing]
    return frame

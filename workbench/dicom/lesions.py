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
* connected components of a reference segmentation: :func:`lesions_from_mask`;
* DICOM SR Measurement Reports (PS3.16 TID 1500) with planar regions on images
  (TID 1410, SCOORD) or regions in patient coordinates (TID 1410 SCOORD3D image
  regions, TID 1411 volume surfaces): :func:`lesions_from_sr`.

Every row is checked against the DICOM geometry of its series: an unknown UID or
a box outside the image is an error that names the row (or the SR content item).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from workbench.errors import DicomReadError, GeometryError

__all__ = [
    "LESION_COLUMNS",
    "component_geometry",
    "frame_geometry",
    "ImageGeometry",
    "SeriesExtent",
    "lesions_from_mask",
    "lesions_from_sr",
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


def _functional_value(ds: Dataset, frame: int, macro: str, keyword: str) -> object:
    """A functional group value of one frame: its own group first, then the shared one."""
    for name, index in (
        ("PerFrameFunctionalGroupsSequence", frame - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(name) or []
        if len(groups) > index:
            items = groups[index].get(macro) or []
            if items and items[0].get(keyword) not in (None, ""):
                return items[0].get(keyword)
    return None


def frame_geometry(
    geometry: ImageGeometry,
    image: Mapping[str, object],
    frame: int,
    root: str | Path | None,
) -> ImageGeometry:
    """The geometry of one frame of an image (1-based).

    The DICOM index keeps the geometry of an image's first frame; the frames of
    an enhanced multi-frame image (PS3.3 C.7.6.16) lie elsewhere, so for frame 2
    and later the file's Plane Position, Plane Orientation and Pixel Measures
    of that frame are read (``root`` / the index row's ``path``).

    Parameters
    ----------
    geometry : ImageGeometry
        The image's geometry from its index row (its first frame).
    image : mapping
        The image's index row (``sop_instance_uid``, ``path``).
    frame : int
        1-based frame number, within ``1..geometry.frames``.
    root : str or Path, optional
        The test set's folder, that the index's ``path`` is relative to.

    Returns
    -------
    ImageGeometry
        ``geometry`` itself for frame 1 or a single-frame image.

    Raises
    ------
    GeometryError
        A later frame without ``root``, or the file lacks that frame's position.
    """
    if frame == 1 or geometry.frames == 1:
        return geometry
    uid = image.get("sop_instance_uid")
    if root is None or not image.get("path"):
        raise GeometryError(
            f"frame {frame} of the multi-frame SOP Instance {uid}: the index holds the "
            "position of its first frame only; pass root (the test set's folder) so that "
            "the frame's position is read from the file"
        )
    ds = pydicom.dcmread(Path(root) / str(image["path"]), stop_before_pixels=True)
    position = _functional_value(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    if position is None:
        raise GeometryError(
            f"frame {frame} of SOP Instance {uid}: expected Image Position (Patient) in its "
            "Plane Position functional group; found none"
        )
    orientation = _numbers(
        _functional_value(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    )
    spacing = _numbers(_functional_value(ds, frame, "PixelMeasuresSequence", "PixelSpacing"))
    return ImageGeometry(
        rows=geometry.rows,
        columns=geometry.columns,
        position=np.array(_numbers(position)),
        row_direction=np.array(orientation[:3])
        if len(orientation) == 6
        else geometry.row_direction,
        column_direction=(
            np.array(orientation[3:]) if len(orientation) == 6 else geometry.column_direction
        ),
        spacing=(spacing[0], spacing[1]) if len(spacing) == 2 else geometry.spacing,
        frames=geometry.frames,
    )


def _numbers(value: object) -> list[float]:
    """The numbers of a multi-valued DS attribute (empty for None)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    out = []
    for item in items:
        try:
            out.append(float(str(item)))
        except ValueError:  # pandas' <NA>
            out.append(float("nan"))
    return out


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
    root: str | Path | None = None,
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
    root : str or Path, optional
        The test set's folder: needed for rows on frame 2 or later of a
        multi-frame image, whose position is read from the file
        (:func:`frame_geometry`).

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
            try:
                geometry = frame_geometry(geometry, image, frame, root)
            except GeometryError as exc:
                raise _row_error(number, str(exc)) from exc
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


# --- Series extent: where the images of one series lie in patient space ---------------------

#: Slack (mm) for coordinates stored as 32-bit floats (Graphic Data is FL).
_FLOAT32_SLACK_MM = 1e-3


def _text(value: object) -> str:
    """A text cell of the index, empty for None/NaN."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _index_row(ds: Dataset) -> dict[str, object]:
    """The geometry columns of the DICOM index for one image header."""
    position = [float(v) for v in ds.get("ImagePositionPatient") or (np.nan,) * 3]
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (np.nan, np.nan)
    orientation = ds.get("ImageOrientationPatient")
    return {
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "rows": ds.get("Rows"),
        "columns": ds.get("Columns"),
        "number_of_frames": ds.get("NumberOfFrames"),
        "pixel_spacing_row": float(spacing[0]),
        "pixel_spacing_col": float(spacing[1]),
        "slice_thickness": ds.get("SliceThickness"),
        "image_position_x": position[0],
        "image_position_y": position[1],
        "image_position_z": position[2],
        "image_orientation": ",".join(str(v) for v in orientation) if orientation else "",
    }


@dataclass(frozen=True, slots=True)
class SeriesExtent:
    """The slab of patient space (LPS mm) that the images of one series cover.

    A point lies inside when its in-plane position falls on the pixel matrix and
    its position along the slice normal lies between the first and the last
    image, widened by half the slice spacing (half the slice thickness for a
    single image).

    Parameters
    ----------
    series_instance_uid, frame_of_reference_uid : str
    geometry : ImageGeometry
        Of the first image along the normal.
    depths : ndarray, shape (n,)
        Position of each image along the normal (mm), ascending.
    sop_instance_uids : tuple of str
        The images in the order of ``depths`` (a multi-frame image once per frame).
    half_depth : float
        Half the slab of one image (mm).
    """

    series_instance_uid: str
    frame_of_reference_uid: str
    geometry: ImageGeometry
    depths: np.ndarray
    sop_instance_uids: tuple[str, ...]
    half_depth: float
    normal: np.ndarray = field(repr=False)

    @classmethod
    def from_images(cls, images: pd.DataFrame, *, root: str | Path | None = None) -> SeriesExtent:
        """From the DICOM index rows of the images of one series.

        Every frame of a multi-frame image counts as one image; the positions
        of its later frames are read from the file under ``root``
        (:func:`frame_geometry`, which raises without it).
        """
        rows = images.to_dict(orient="records")
        if not rows:
            raise GeometryError("Expected the images of a series; found none.")
        geometries: list[ImageGeometry] = []
        uids: list[str] = []
        for row in rows:
            first = ImageGeometry.from_index_row(row)
            for frame in range(1, first.frames + 1):
                geometries.append(frame_geometry(first, row, frame, root))
                uids.append(str(row["sop_instance_uid"]))
        normal = np.cross(geometries[0].row_direction, geometries[0].column_direction)
        depths = np.array([float(g.position @ normal) for g in geometries])
        order = np.argsort(depths, kind="stable")
        depths = depths[order]
        if len(depths) > 1:
            half = float(np.median(np.diff(depths))) / 2.0
        else:
            thickness = _numbers(rows[0].get("slice_thickness"))
            half = thickness[0] / 2.0 if thickness else 0.5
            if not np.isfinite(half) or half <= 0:
                half = 0.5
        return cls(
            series_instance_uid=str(rows[0].get("series_instance_uid", "")),
            frame_of_reference_uid=_text(rows[0].get("frame_of_reference_uid")),
            geometry=geometries[int(order[0])],
            depths=depths,
            sop_instance_uids=tuple(uids[int(i)] for i in order),
            half_depth=half,
            normal=normal,
        )

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> SeriesExtent:
        """From the headers of the images of one series."""
        return cls.from_images(pd.DataFrame([_index_row(ds) for ds in datasets]))

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Position of LPS points (shape ``(n, 3)``) along the slice normal (mm)."""
        return np.asarray(points, dtype=float) @ self.normal

    def outside(self, points: np.ndarray) -> np.ndarray:
        """Which of the LPS points (shape ``(n, 3)``) lie outside the series (bool, ``(n,)``)."""
        g = self.geometry
        offset = np.asarray(points, dtype=float) - g.position
        column = offset @ g.row_direction / g.spacing[1]
        row = offset @ g.column_direction / g.spacing[0]
        depth = self.depth(points)
        slack = _FLOAT32_SLACK_MM
        return (
            (column < -0.5 - slack / g.spacing[1])
            | (column > g.columns - 0.5 + slack / g.spacing[1])
            | (row < -0.5 - slack / g.spacing[0])
            | (row > g.rows - 0.5 + slack / g.spacing[0])
            | (depth < self.depths[0] - self.half_depth - slack)
            | (depth > self.depths[-1] + self.half_depth + slack)
        )

    def images_between(self, low: float, high: float) -> list[str]:
        """SOP Instance UIDs of the images whose slab meets the depths ``[low, high]`` (mm).

        At least the image nearest to the middle of the range.
        """
        hit = (self.depths + self.half_depth >= low) & (self.depths - self.half_depth <= high)
        if not hit.any():
            hit[int(np.argmin(np.abs(self.depths - (low + high) / 2.0)))] = True
        return [uid for uid, keep in zip(self.sop_instance_uids, hit, strict=True) if keep]

    def describe(self) -> str:
        """The extent in words, for error messages."""
        g = self.geometry
        return (
            f"series {self.series_instance_uid} ({g.columns} columns x {g.rows} rows x "
            f"{len(self.depths)} images, {self.depths[0] - self.half_depth:.1f} to "
            f"{self.depths[-1] + self.half_depth:.1f} mm along the slice normal)"
        )


# --- Reference lesions from TID 1500 Measurement Reports --------------------------------------

_IMAGE_REGION = codes.DCM.ImageRegion
_VOLUME_SURFACE = codes.DCM.VolumeSurface
_SEGMENT_REFERENCES = (
    codes.DCM.ReferencedSegment,
    codes.DCM.ReferencedSegmentationFrame,
    Code("130488", "DCM", "Region in Space"),
)
#: Measurements that give the size of a point lesion (mm).
_SIZE_CONCEPTS = (codes.SCT.Diameter, codes.SCT.LongAxis)
_UNIT_TO_MM = {"mm": 1.0, "cm": 10.0, "um": 1e-3}


def _same_code(a: object, b: Code) -> bool:
    return (
        str(getattr(a, "value", "")) == b.value
        and str(getattr(a, "scheme_designator", "")) == b.scheme_designator
    )


def _item_name(item: Dataset) -> Code | None:
    concept = item.get("ConceptNameCodeSequence")
    if not concept:
        return None
    return Code(
        str(concept[0].get("CodeValue", "")),
        str(concept[0].get("CodingSchemeDesignator", "")),
        str(concept[0].get("CodeMeaning", "")),
    )


def _snake(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


@dataclass(slots=True)
class _Region:
    """One lesion region read from a measurement group, before merging."""

    lo: np.ndarray
    hi: np.ndarray
    diameter: float
    series_instance_uid: str
    sop_instance_uid: str | None
    frame: int | None
    frame_of_reference_uid: str
    graphic_type: str


class _GroupContext:
    """Names one measurement group in error messages."""

    def __init__(self, sr_uid: str, number: int, tracking: str | None) -> None:
        self.sr_uid = sr_uid
        self.number = number
        self.tracking = tracking

    def error(self, message: str, kind: type[Exception] = GeometryError) -> Exception:
        tracking = f" (tracking id {self.tracking!r})" if self.tracking else ""
        return kind(f"SR {self.sr_uid}, measurement group {self.number}{tracking}: {message}")


_ROIGroup = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def _mm_size(group: _ROIGroup) -> float | None:
    """A Diameter or Long axis measurement of the group in mm, if it has one."""
    for concept in _SIZE_CONCEPTS:
        for measurement in group.get_measurements(name=concept):
            unit = str(measurement.unit.value)
            if unit in _UNIT_TO_MM:
                return float(measurement.value) * _UNIT_TO_MM[unit]
    return None


def _max_distance(points: np.ndarray) -> float:
    """Longest distance between two of the points (Feret diameter), mm."""
    if len(points) < 2:
        return 0.0
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=-1)).max())


def _axes_extent(centre: np.ndarray, semi_axes: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Axis-aligned box of an ellipse/ellipsoid with orthogonal semi-axis vectors."""
    half = np.sqrt(sum(np.asarray(a, dtype=float) ** 2 for a in semi_axes))
    return centre - half, centre + half


def _planar_region(
    region: hd.sr.ImageRegion,
    ctx: _GroupContext,
    by_sop: Mapping[str, Mapping[str, object]],
    point_size: float | None,
    root: str | Path | None,
) -> _Region:
    """A SCOORD image region (image coordinates, origin at the top left corner of the image)."""
    try:
        reference = region.ContentSequence[0].ReferencedSOPSequence[0]
        uid = str(reference.ReferencedSOPInstanceUID)
    except (AttributeError, IndexError) as exc:
        raise ctx.error("the image region names no source image (Referenced SOP Sequence)") from exc
    if uid not in by_sop:
        raise ctx.error(f"references SOP Instance {uid} which is not in the test set")
    row = by_sop[uid]
    geometry = ImageGeometry.from_index_row(row)
    numbers = reference.get("ReferencedFrameNumber")
    if numbers is None or numbers == "":
        numbers = [1]
    elif not isinstance(numbers, (list, MultiValue)):
        numbers = [numbers]
    frames = [int(f) for f in numbers]
    if len(frames) != 1:
        raise ctx.error(f"expected the region on one frame; found frames {frames}")
    frame = frames[0]
    if not 1 <= frame <= geometry.frames:
        raise ctx.error(
            f"references frame {frame} of SOP Instance {uid}, which has frames 1..{geometry.frames}"
        )
    try:
        geometry = frame_geometry(geometry, row, frame, root)
    except GeometryError as exc:
        raise ctx.error(str(exc)) from exc
    graphic_type = str(region.graphic_type.value)
    points = np.asarray(region.value, dtype=float).reshape(-1, 2)
    expected = {"POINT": 1, "CIRCLE": 2, "ELLIPSE": 4}
    if graphic_type in expected and len(points) != expected[graphic_type]:
        raise ctx.error(
            f"a {graphic_type} has {expected[graphic_type]} (column, row) pairs; "
            f"found {len(points)}"
        )
    # Pixel centres lie at +0.5 in image coordinates (PS3.3 C.18.6.1.2).
    patient = geometry.pixel_to_patient(points[:, 0] - 0.5, points[:, 1] - 0.5)
    if graphic_type == "CIRCLE":
        radius = float(np.hypot(*(points[1] - points[0])))
        low, high = points[0] - radius, points[0] + radius
        diameter = 2.0 * float(np.linalg.norm(patient[1] - patient[0]))
    elif graphic_type == "ELLIPSE":
        centre = (points[0] + points[1]) / 2.0
        low, high = _axes_extent(
            centre, [(points[1] - points[0]) / 2.0, (points[3] - points[2]) / 2.0]
        )
        diameter = max(
            float(np.linalg.norm(patient[1] - patient[0])),
            float(np.linalg.norm(patient[3] - patient[2])),
        )
    else:
        low, high = points.min(axis=0), points.max(axis=0)
        diameter = _max_distance(patient)
    if np.any(low < 0) or high[0] > geometry.columns or high[1] > geometry.rows:
        raise ctx.error(
            f"{graphic_type} from ({low[0]:g}, {low[1]:g}) to ({high[0]:g}, {high[1]:g}) "
            f"lies outside the image of {geometry.columns} columns x {geometry.rows} rows "
            f"(SOP Instance {uid})"
        )
    corners = geometry.pixel_to_patient(
        np.array([low[0], high[0], low[0], high[0]]) - 0.5,
        np.array([low[1], low[1], high[1], high[1]]) - 0.5,
    )
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if graphic_type == "POINT":
        if point_size is None:
            raise ctx.error(
                "a POINT needs its size: a Diameter or Long axis measurement in mm, "
                "or default_diameter_mm"
            )
        diameter = point_size
        lo, hi = patient[0] - diameter / 2.0, patient[0] + diameter / 2.0
    return _Region(
        lo=lo,
        hi=hi,
        diameter=diameter,
        series_instance_uid=str(row["series_instance_uid"]),
        sop_instance_uid=uid,
        frame=frame,
        frame_of_reference_uid=_text(row.get("frame_of_reference_uid")),
        graphic_type=graphic_type,
    )


def _region_3d(
    graphic_type: str,
    items: Sequence[np.ndarray],
    frame_of_reference_uid: str,
    ctx: _GroupContext,
    extent: SeriesExtent,
    point_size: float | None,
) -> _Region:
    """A SCOORD3D region or volume surface (LPS mm) checked against its series."""
    lows, highs, diameters = [], [], []
    points_all = []
    expected = {"POINT": 1, "ELLIPSE": 4, "ELLIPSOID": 6}
    for data in items:
        points = np.asarray(data, dtype=float).reshape(-1, 3)
        if graphic_type in expected and len(points) != expected[graphic_type]:
            raise ctx.error(
                f"a 3D {graphic_type} has {expected[graphic_type]} (x, y, z) points; "
                f"found {len(points)}"
            )
        if graphic_type in ("ELLIPSE", "ELLIPSOID"):
            axes = [(points[i + 1] - points[i]) / 2.0 for i in range(0, len(points), 2)]
            low, high = _axes_extent((points[0] + points[1]) / 2.0, axes)
            diameters.append(max(2.0 * float(np.linalg.norm(a)) for a in axes))
        else:
            low, high = points.min(axis=0), points.max(axis=0)
            diameters.append(_max_distance(points))
        lows.append(low)
        highs.append(high)
        points_all.append(points)
    lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    diameter = max(diameters) if len(items) == 1 else _max_distance(np.vstack(points_all))
    outside = extent.outside(np.vstack(points_all))
    if outside.any():
        point = np.vstack(points_all)[int(np.argmax(outside))]
        raise ctx.error(
            f"point ({point[0]:.2f}, {point[1]:.2f}, {point[2]:.2f}) mm lies outside "
            f"the images of {extent.describe()}"
        )
    if graphic_type == "POINT":
        if point_size is None:
            raise ctx.error(
                "a POINT needs its size: a Diameter or Long axis measurement in mm, "
                "or default_diameter_mm"
            )
        diameter = point_size
        lo, hi = lo - diameter / 2.0, hi + diameter / 2.0
    return _Region(
        lo=lo,
        hi=hi,
        diameter=diameter,
        series_instance_uid=extent.series_instance_uid,
        sop_instance_uid=None,
        frame=None,
        frame_of_reference_uid=frame_of_reference_uid,
        graphic_type=graphic_type,
    )


def _evidence_series(sr: Dataset) -> set[str]:
    out: set[str] = set()
    for key in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in sr.get(key) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                out.add(str(series.get("SeriesInstanceUID", "")))
    return out


class _Geometry:
    """Look-ups into the test set's images shared by all groups of all SRs."""

    def __init__(self, images: pd.DataFrame, root: str | Path | None) -> None:
        if "kind" in images.columns:  # a whole index: SEG, SR and other non-images share FoRs
            images = images[images["kind"].astype(str) == "image"]
        self.images = images
        self.by_sop = {str(r["sop_instance_uid"]): r for r in images.to_dict(orient="records")}
        self._extents: dict[str, SeriesExtent] = {}
        self.root = root

    def extent(self, series: str, ctx: _GroupContext) -> SeriesExtent:
        if series not in self._extents:
            rows = self.images[self.images["series_instance_uid"].astype(str) == series]
            try:
                self._extents[series] = SeriesExtent.from_images(rows, root=self.root)
            except GeometryError as exc:
                raise ctx.error(str(exc)) from exc
        return self._extents[series]

    def series_for(
        self,
        frame_of_reference_uid: str,
        sources: Sequence[str],
        source_series: str | None,
        evidence: set[str],
        ctx: _GroupContext,
    ) -> SeriesExtent:
        """The series a 3D region lies in: named by its source images/series, else by its FoR."""
        if sources or source_series:
            named = set()
            for uid in sources:
                if uid not in self.by_sop:
                    raise ctx.error(f"references SOP Instance {uid} which is not in the test set")
                named.add(str(self.by_sop[uid]["series_instance_uid"]))
            if source_series:
                named.add(source_series)
            unknown = named - set(self.images["series_instance_uid"].astype(str))
            if unknown:
                raise ctx.error(
                    f"references series {sorted(unknown)[0]} which is not in the test set"
                )
            if len(named) > 1:
                raise ctx.error(f"expected source images of one series; found {sorted(named)}")
            extent = self.extent(named.pop(), ctx)
            if extent.frame_of_reference_uid and (
                extent.frame_of_reference_uid != frame_of_reference_uid
            ):
                raise ctx.error(
                    f"coordinates are in frame of reference {frame_of_reference_uid} but "
                    f"the source series {extent.series_instance_uid} is in "
                    f"{extent.frame_of_reference_uid}"
                )
            return extent
        if "frame_of_reference_uid" not in self.images:
            raise ctx.error("the test set's index has no frame_of_reference_uid column")
        same = self.images["frame_of_reference_uid"].astype(str) == frame_of_reference_uid
        candidates = sorted(set(self.images.loc[same, "series_instance_uid"].astype(str)))
        if not candidates:
            raise ctx.error(
                f"frame of reference {frame_of_reference_uid} is not that of any series "
                "in the test set"
            )
        if len(candidates) > 1:
            cited = [c for c in candidates if c in evidence]
            if len(cited) != 1:
                raise ctx.error(
                    f"frame of reference {frame_of_reference_uid} is shared by series "
                    f"{', '.join(candidates)}; expected the group (source images) or the "
                    "SR's evidence to name one"
                )
            candidates = cited
        return self.extent(candidates[0], ctx)


def _group_kind(item: Dataset) -> str:
    """``planar``, ``volumetric``, ``segment`` or ``none`` (no spatial coordinates)."""
    template = ""
    for t in item.get("ContentTemplateSequence") or []:
        template = str(t.get("TemplateIdentifier", ""))
    names = [_item_name(child) for child in item.get("ContentSequence") or []]
    if any(n is not None and _same_code(n, c) for n in names for c in _SEGMENT_REFERENCES):
        return "segment"
    regions = sum(1 for n in names if n is not None and _same_code(n, _IMAGE_REGION))
    surfaces = sum(1 for n in names if n is not None and _same_code(n, _VOLUME_SURFACE))
    if surfaces or template == "1411" or regions > 1:
        return "volumetric"
    if regions:
        return "planar"
    return "none"


#: Columns of :func:`lesions_from_sr` that an attribute named after a concept must not replace.
_SR_COLUMNS = (
    "series_instance_uid",
    *LESION_COLUMNS,
    "sop_instance_uid",
    "frame",
    "frame_of_reference_uid",
    "graphic_type",
    "tracking_uid",
    "sr_sop_instance_uid",
    "measurement_group",
)


def _attributes(group: _ROIGroup) -> dict[str, object]:
    """Finding, measurements and qualitative evaluations as columns named after their concepts.

    A concept whose name is that of a lesion column (e.g. *Diameter*) gets the
    suffix ``_measurement`` (``diameter_measurement``).
    """
    out: dict[str, object] = {}

    def column(meaning: object) -> str:
        name = _snake(str(meaning))
        return f"{name}_measurement" if name in _SR_COLUMNS else name

    if group.finding_type is not None:
        out["finding_type"] = str(group.finding_type.meaning)
    if group.finding_category is not None:
        out["finding_category"] = str(group.finding_category.meaning)
    sites = [str(s.value.meaning) for s in group.finding_sites]
    if sites:
        out["finding_site"] = "; ".join(sites)
    for measurement in group.get_measurements():
        out[column(measurement.name.meaning)] = float(measurement.value)
    for evaluation in group.get_qualitative_evaluations():
        value = evaluation.value  # a CodedConcept (highdicom annotates it as a number)
        out[column(evaluation.name.meaning)] = str(getattr(value, "meaning", value))
    return out


def _read_group(
    item: Dataset,
    kind: str,
    ctx: _GroupContext,
    geometry: _Geometry,
    evidence: set[str],
    default_diameter_mm: float | None,
    weight_concept: Code | None,
    root: str | Path | None,
) -> tuple[str, str, _Region, dict[str, object], float | None]:
    """(tracking uid, lesion id, region, attributes, weight) of one ROI measurement group."""
    template = (
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        if kind == "planar"
        else hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    )
    try:
        group = template.from_sequence([item])
        identifier, tracking_uid = group.tracking_identifier, group.tracking_uid
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ctx.error(
            f"not a readable TID {1410 if kind == 'planar' else 1411} group: {exc}", DicomReadError
        ) from exc
    ctx.tracking = identifier or (str(tracking_uid) if tracking_uid else None)
    if not ctx.tracking:
        raise ctx.error(
            "expected a Tracking Identifier or Tracking Unique Identifier; found neither",
            DicomReadError,
        )
    size = _mm_size(group)
    point_size = size if size is not None else default_diameter_mm
    try:
        roi = group.roi
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ctx.error(f"unreadable spatial coordinates: {exc}", DicomReadError) from exc
    if isinstance(roi, hd.sr.ImageRegion):
        region = _planar_region(roi, ctx, geometry.by_sop, point_size, root)
    elif isinstance(roi, hd.sr.ImageRegion3D):
        frame_of_reference = str(roi.frame_of_reference_uid)
        extent = geometry.series_for(frame_of_reference, (), None, evidence, ctx)
        region = _region_3d(
            str(roi.graphic_type.value), [roi.value], frame_of_reference, ctx, extent, point_size
        )
    elif isinstance(roi, hd.sr.VolumeSurface):
        frame_of_reference = str(roi.frame_of_reference_uid)
        sources = [
            str(s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for s in roi.source_images_for_segmentation
        ]
        series = roi.source_series_for_segmentation
        extent = geometry.series_for(
            frame_of_reference, sources, str(series.value) if series else None, evidence, ctx
        )
        data = roi.graphic_data
        items = [data] if isinstance(data, np.ndarray) else list(data)
        region = _region_3d(
            str(roi.graphic_type.value), items, frame_of_reference, ctx, extent, point_size
        )
    elif isinstance(roi, list) and roi:
        parts = [_planar_region(r, ctx, geometry.by_sop, point_size, root) for r in roi]
        series_uids = {p.series_instance_uid for p in parts}
        if len(series_uids) > 1:
            raise ctx.error(f"expected image regions in one series; found {sorted(series_uids)}")
        region = parts[0]
        region.lo = np.min([p.lo for p in parts], axis=0)
        region.hi = np.max([p.hi for p in parts], axis=0)
        region.diameter = max(p.diameter for p in parts)
        region.sop_instance_uid = None if len(parts) > 1 else region.sop_instance_uid
        region.frame = None if len(parts) > 1 else region.frame
    else:
        raise ctx.error(
            "expected spatial coordinates (SCOORD or SCOORD3D); found none", DicomReadError
        )
    weight = None
    if weight_concept is not None:
        found = group.get_measurements(name=weight_concept)
        if not found:
            raise ctx.error(
                f"expected a {weight_concept.meaning!r} measurement as the lesion weight; "
                "found none",
                DicomReadError,
            )
        weight = float(found[0].value)
    lesion_id = identifier or str(tracking_uid)
    return str(tracking_uid or identifier), str(lesion_id), region, _attributes(group), weight


def _measurement_groups(sr: Dataset, sr_uid: str) -> list[Dataset]:
    """The Measurement Group containers of a TID 1500 report, in document order."""
    title = _item_name(sr)
    if title is None or not _same_code(title, codes.DCM.ImagingMeasurementReport):
        found = f"{title.meaning!r} ({title.value}, {title.scheme_designator})" if title else "none"
        raise DicomReadError(
            f"SR {sr_uid}: expected a Measurement Report (TID 1500, document title "
            f"'Imaging Measurement Report' (126000, DCM)); found document title {found}. "
            "Reference lesions are read from TID 1500 reports only."
        )
    try:
        # highdicom insists on the template identification (Content Template
        # Sequence, type 1C) that some writers leave out; the title suffices then.
        if "ContentTemplateSequence" in sr:
            hd.sr.MeasurementReport.from_sequence([sr])
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise DicomReadError(
            f"SR {sr_uid}: not a readable TID 1500 Measurement Report: {exc}"
        ) from exc
    groups: list[Dataset] = []
    for container in sr.get("ContentSequence") or []:
        name = _item_name(container)
        if name is not None and _same_code(name, codes.DCM.ImagingMeasurements):
            groups.extend(
                child
                for child in container.get("ContentSequence") or []
                if (n := _item_name(child)) is not None
                and _same_code(n, codes.DCM.MeasurementGroup)
            )
    return groups


def lesions_from_sr(
    sr_datasets: Iterable[Dataset | str | Path],
    images: pd.DataFrame,
    *,
    default_diameter_mm: float | None = None,
    weight_concept: Code | None = None,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """Reference lesions from DICOM SR Measurement Reports (PS3.16 TID 1500).

    Each ROI measurement group is one lesion region:

    * TID 1410 with a SCOORD *Image Region* on an image of the test set
      (``POINT``, ``POLYLINE``/``MULTIPOINT`` outline, ``CIRCLE``, ``ELLIPSE``;
      image coordinates with (0, 0) at the top left corner of the top left
      pixel, PS3.3 C.18.6.1.2);
    * TID 1410 with a SCOORD3D *Image Region*, or TID 1411 with a *Volume
      Surface* (``POINT``, ``POLYGON``, ``ELLIPSE``, ``ELLIPSOID``; LPS mm in the
      Frame of Reference of a series of the test set), or with several SCOORD
      image regions (one per slice).

    Groups with the same tracking UID in one SR are one lesion (e.g. outlines on
    adjacent slices): its box is the union of theirs. Measurement groups
    without spatial coordinates (TID 1501, e.g. a case-level score) are not
    lesions and are passed over.

    Parameters
    ----------
    sr_datasets : iterable of pydicom.Dataset or path
        Measurement Reports (Comprehensive, Comprehensive 3D or Enhanced SR).
    images : DataFrame
        The DICOM index rows of the test set's images (``sop_instance_uid``,
        ``series_instance_uid``, ``frame_of_reference_uid`` and the geometry
        columns), as for :func:`lesions_from_table`.
    default_diameter_mm : float, optional
        Size of a POINT region whose group has no *Diameter* (SCT 81827009) or
        *Long axis* (SCT 103339001) measurement in mm.
    weight_concept : pydicom.sr.coding.Code, optional
        Concept name of the numeric measurement that holds each lesion's weight;
        without it the weights are equal per series.
    root : str or Path, optional
        The test set's folder: needed for regions on frame 2 or later of a
        multi-frame image, whose position is read from the file
        (:func:`frame_geometry`).

    Returns
    -------
    DataFrame
        One row per lesion: ``series_instance_uid`` and :data:`LESION_COLUMNS`
        (``lesion_id`` is the Tracking Identifier, else the Tracking Unique
        Identifier; the box is axis-aligned in LPS mm, the centre is its
        centre, ``diameter`` the longest extent of the region: Feret diameter of
        an outline, longest axis of an ellipse/ellipsoid, twice the radius of a
        circle), then ``sop_instance_uid`` and ``frame`` (planar regions on one
        image, else empty), ``frame_of_reference_uid``, ``graphic_type``,
        ``tracking_uid``, ``sr_sop_instance_uid``, ``measurement_group``
        (1-based, document order) and attribute columns: ``finding_type``,
        ``finding_category``, ``finding_site``, one column per measurement
        (value, named after its concept in snake case, e.g.
        ``certainty_of_finding``; ``diameter_measurement`` where the name is
        taken) and per qualitative evaluation (the coded value's meaning).

    Raises
    ------
    DicomReadError
        Not a TID 1500 Measurement Report, or a group that highdicom cannot
        read, lacks a tracking identifier or spatial coordinates, or refers to a
        segmentation instead (read that SEG with :func:`lesions_from_mask`).
    GeometryError
        A region names an image, frame, series or frame of reference that is
        not in the test set, lies (partly) outside the images, or a point has no
        size. Messages name the SR, the measurement group and its tracking id,
        e.g. ``SR 1.2.3, measurement group 3 (tracking id 'nodule-2'):
        references SOP Instance 1.2.4 which is not in the test set``.
    """
    geometry = _Geometry(images, root)
    lesions: dict[tuple[str, str], dict[str, object]] = {}
    regions: dict[tuple[str, str], _Region] = {}
    owners: dict[tuple[str, str], tuple[str, str, int]] = {}
    for source in sr_datasets:
        sr = source if isinstance(source, Dataset) else pydicom.dcmread(source)
        sr_uid = str(sr.get("SOPInstanceUID", "?"))
        evidence = _evidence_series(sr)
        for number, item in enumerate(_measurement_groups(sr, sr_uid), start=1):
            ctx = _GroupContext(sr_uid, number, None)
            kind = _group_kind(item)
            if kind == "none":
                continue
            if kind == "segment":
                raise ctx.error(
                    "the region is a referenced segmentation, not spatial coordinates; "
                    "read that SEG's components with lesions_from_mask",
                    DicomReadError,
                )
            tracking_uid, lesion_id, region, attributes, weight = _read_group(
                item, kind, ctx, geometry, evidence, default_diameter_mm, weight_concept, root
            )
            key = (region.series_instance_uid, lesion_id)
            owner = (sr_uid, tracking_uid, number)
            if key in lesions:
                if owners[key][:2] != owner[:2]:
                    raise ctx.error(
                        f"lesion id {lesion_id!r} is already used in series "
                        f"{region.series_instance_uid} by SR {owners[key][0]}, measurement "
                        f"group {owners[key][2]}; expected one tracking identifier per lesion",
                        DicomReadError,
                    )
                merged = regions[key]
                merged.lo = np.minimum(merged.lo, region.lo)
                merged.hi = np.maximum(merged.hi, region.hi)
                merged.diameter = max(merged.diameter, region.diameter)
                lesions[key].update(sop_instance_uid=None, frame=None)
                continue
            owners[key] = owner
            regions[key] = region
            lesions[key] = {
                "lesion_weight": np.nan if weight is None else weight,
                "sop_instance_uid": region.sop_instance_uid,
                "frame": region.frame,
                "frame_of_reference_uid": region.frame_of_reference_uid,
                "graphic_type": region.graphic_type,
                "tracking_uid": tracking_uid,
                "sr_sop_instance_uid": sr_uid,
                "measurement_group": number,
                **attributes,
            }
    rows = []
    for (series, lesion_id), record in lesions.items():
        region = regions[(series, lesion_id)]
        centre = (region.lo + region.hi) / 2.0
        rows.append(
            {
                "series_instance_uid": series,
                "lesion_id": lesion_id,
                **dict(zip(_MM_BOX, (*region.lo.tolist(), *region.hi.tolist()), strict=True)),
                **dict(zip(_MM_POINT, centre.tolist(), strict=True)),
                "diameter": float(region.diameter),
                **record,
            }
        )
    columns = list(_SR_COLUMNS)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[columns + [c for c in frame.columns if c not in columns]]
    frame["frame"] = frame["frame"].astype("Int64")
    missing = frame["lesion_weight"].isna()
    if missing.any():
        counts = frame.groupby("series_instance_uid")["lesion_id"].transform("count")
        frame.loc[missing, "lesion_weight"] = 1.0 / counts[missing]
    return frame

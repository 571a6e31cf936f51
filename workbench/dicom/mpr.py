"""Multiplanar reformatting: axial, coronal and sagittal planes in patient coordinates.

A CT series is stored on its own voxel grid, which may be oblique (gantry tilt,
Image Orientation (Patient) not aligned with the patient axes) and anisotropic
(slice spacing larger than the pixel spacing). The planes here are cut in the
patient coordinate system (LPS, DICOM PS3.3 C.7.6.2.1.1), not along the array's
axes: every output pixel is a point in patient millimetres, mapped back to
continuous voxel indices through the volume's affine and interpolated
(:func:`scipy.ndimage.map_coordinates`). Output pixels are square, with the
volume's finest spacing, so distances measured on a plane are true millimetres.

Display conventions (radiological): axial planes show anterior at the top and
the patient's right on the image's left; coronal planes superior at the top and
the patient's right on the left; sagittal planes superior at the top and
anterior on the left.

Only one plane is computed per call (a few hundred thousand points), never the
whole resampled volume, so a 512 x 512 x 600 series re-slices interactively.
Pure numpy/scipy: no DICOM reading, no display.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import ndimage

from workbench.dicom.volume import Volume

__all__ = [
    "Plane",
    "MprGeometry",
    "PlaneImage",
    "geometry_of",
    "reslice",
    "crosshair_in",
    "step_point",
    "distance_mm",
    "plane_position",
    "plane_shape",
    "point_at",
]


class Plane(StrEnum):
    """A standard anatomical plane."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


def _plane(value: Plane | str) -> Plane:
    try:
        return Plane(value)
    except ValueError:
        raise ValueError(
            f"Expected a plane of {[p.value for p in Plane]}; found {value!r}."
        ) from None


#: Per plane: (row direction, column direction, normal axis) as LPS unit vectors / axis index.
_PLANE_AXES: dict[Plane, tuple[np.ndarray, np.ndarray, int]] = {
    Plane.AXIAL: (np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]), 2),
    Plane.CORONAL: (np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]), 1),
    Plane.SAGITTAL: (np.array([0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0]), 0),
}


@dataclass(frozen=True, slots=True)
class MprGeometry:
    """Where a volume lies in patient space and the grid its planes are cut on.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` of the volume's array.
    index_to_patient : numpy.ndarray
        4x4 affine from array indices ``(z, y, x, 1)`` to LPS mm.
    patient_to_index : numpy.ndarray
        Its inverse.
    low, high : numpy.ndarray
        Corners (LPS mm) of the patient-aligned box that holds every voxel centre.
    spacing : float
        Edge of an output pixel in mm (the volume's finest spacing, or coarser when
        a plane would exceed ``max_pixels`` along an edge).
    """

    shape: tuple[int, int, int]
    index_to_patient: np.ndarray
    patient_to_index: np.ndarray
    low: np.ndarray
    high: np.ndarray
    spacing: float

    @property
    def centre(self) -> np.ndarray:
        """Centre of the volume's box (LPS mm), the default crosshair."""
        return np.asarray((self.low + self.high) / 2.0)

    def to_index(self, point: np.ndarray) -> np.ndarray:
        """Continuous array indices ``(z, y, x)`` of LPS points ``(..., 3)``."""
        p = np.asarray(point, dtype=np.float64)
        return np.asarray(p @ self.patient_to_index[:3, :3].T + self.patient_to_index[:3, 3])

    def to_patient(self, index_zyx: np.ndarray) -> np.ndarray:
        """LPS points of continuous array indices ``(..., 3)`` in ``(z, y, x)`` order."""
        i = np.asarray(index_zyx, dtype=np.float64)
        return np.asarray(i @ self.index_to_patient[:3, :3].T + self.index_to_patient[:3, 3])

    def clamp(self, point: np.ndarray) -> np.ndarray:
        """``point`` moved inside the volume's box."""
        return np.asarray(np.clip(np.asarray(point, dtype=np.float64), self.low, self.high))


def geometry_of(volume: Volume, *, max_pixels: int = 1024) -> MprGeometry:
    """The reformatting geometry of a loaded series.

    Parameters
    ----------
    volume : Volume
        From :func:`workbench.dicom.volume.load_series`; its ``direction`` and
        ``spacing`` place the voxels in patient space.
    max_pixels : int
        Largest edge of a plane in pixels; the output spacing grows beyond the
        finest voxel spacing when the box would be larger.

    Returns
    -------
    MprGeometry

    Raises
    ------
    ValueError
        The direction matrix is singular or a spacing is not positive.
    """
    spacing = np.asarray(volume.spacing, dtype=np.float64)  # (z, y, x)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"Expected positive voxel spacings (z, y, x); found {tuple(spacing)}.")
    direction = np.asarray(volume.direction, dtype=np.float64)  # columns: x, y, z axes
    # Columns of the index->patient matrix in array order (z, y, x).
    linear = direction[:, ::-1] * spacing
    if abs(np.linalg.det(linear)) < 1e-9:
        raise ValueError("Expected a non-singular direction matrix; found a singular one.")
    forward = np.eye(4)
    forward[:3, :3] = linear
    forward[:3, 3] = np.asarray(volume.origin, dtype=np.float64)
    shape = tuple(int(n) for n in volume.array.shape[:3])
    corners = np.array(
        [
            [z, y, x]
            for z in (0, shape[0] - 1)
            for y in (0, shape[1] - 1)
            for x in (0, shape[2] - 1)
        ],
        dtype=np.float64,
    )
    points = corners @ linear.T + forward[:3, 3]
    low, high = points.min(axis=0), points.max(axis=0)
    step = float(spacing.min())
    extent = float((high - low).max())
    if extent / step + 1 > max_pixels:
        step = extent / (max_pixels - 1)
    return MprGeometry(
        shape=(shape[0], shape[1], shape[2]),
        index_to_patient=forward,
        patient_to_index=np.linalg.inv(forward),
        low=low,
        high=high,
        spacing=step,
    )


@dataclass(frozen=True, slots=True)
class PlaneImage:
    """One reformatted plane and how its pixels map to patient space.

    Parameters
    ----------
    plane : Plane
    pixels : numpy.ndarray
        ``(rows, columns)`` interpolated values.
    origin : numpy.ndarray
        LPS mm of pixel ``(0, 0)``.
    row_direction, col_direction : numpy.ndarray
        LPS unit vectors along increasing row and column index.
    spacing : float
        Pixel edge in mm (square pixels).
    """

    plane: Plane
    pixels: np.ndarray
    origin: np.ndarray
    row_direction: np.ndarray
    col_direction: np.ndarray
    spacing: float

    def to_patient(self, row: float, col: float) -> np.ndarray:
        """LPS mm of the (continuous) pixel position ``(row, col)``."""
        return np.asarray(
            self.origin
            + row * self.spacing * self.row_direction
            + col * self.spacing * self.col_direction
        )

    def to_pixel(self, point: np.ndarray) -> tuple[float, float]:
        """``(row, col)`` of the projection of an LPS point onto the plane."""
        offset = np.asarray(point, dtype=np.float64) - self.origin
        return (
            float(offset @ self.row_direction / self.spacing),
            float(offset @ self.col_direction / self.spacing),
        )


def plane_shape(geometry: MprGeometry, plane: Plane | str) -> tuple[int, int]:
    """``(rows, columns)`` of the planes of ``plane``'s orientation."""
    row_dir, col_dir, _axis = _PLANE_AXES[_plane(plane)]
    span = geometry.high - geometry.low
    return (
        int(np.floor(abs(row_dir) @ span / geometry.spacing)) + 1,
        int(np.floor(abs(col_dir) @ span / geometry.spacing)) + 1,
    )


def _plane_grid(
    geometry: MprGeometry, plane: Plane, point: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    row_dir, col_dir, normal_axis = _PLANE_AXES[_plane(plane)]
    rows, cols = plane_shape(geometry, plane)
    # Start at the box corner the directions point away from.
    origin = np.where(row_dir + col_dir < 0, geometry.high, geometry.low).astype(np.float64)
    origin[normal_axis] = float(
        np.clip(point[normal_axis], geometry.low[normal_axis], geometry.high[normal_axis])
    )
    return origin, row_dir, col_dir, (rows, cols)


def reslice(
    array: np.ndarray,
    geometry: MprGeometry,
    plane: Plane | str,
    point: np.ndarray,
    *,
    order: int = 1,
    cval: float = -1024.0,
) -> PlaneImage:
    """Cut one plane through ``point`` (LPS mm), interpolating ``array``.

    Parameters
    ----------
    array : numpy.ndarray
        ``(z, y, x)`` values on the volume's grid: HU (``order=1``) or a mask
        (``order=0``, nearest neighbour, ``cval=0``).
    geometry : MprGeometry
        From :func:`geometry_of` for the same volume.
    plane : Plane or str
        ``axial``, ``coronal`` or ``sagittal``.
    point : array_like, shape (3,)
        A point of the plane (the crosshair), LPS mm; clamped to the volume's box.
    order : int
        Spline order: 1 (linear) for images, 0 for masks.
    cval : float
        Value outside the volume (air for CT).

    Returns
    -------
    PlaneImage
        ``pixels`` have the dtype of ``array`` for ``order=0``, float32 otherwise.
    """
    chosen = _plane(plane)
    if tuple(array.shape[:3]) != geometry.shape:
        raise ValueError(f"Expected an array of shape {geometry.shape}; found {array.shape}.")
    origin, row_dir, col_dir, (rows, cols) = _plane_grid(
        geometry, chosen, np.asarray(point, dtype=np.float64)
    )
    # Index of the plane origin and the index steps per output row and column.
    start = geometry.to_index(origin)
    linear = geometry.patient_to_index[:3, :3]
    d_row = linear @ row_dir * geometry.spacing
    d_col = linear @ col_dir * geometry.spacing
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    coords = np.empty((3, rows, cols), dtype=np.float32)
    for axis in range(3):
        coords[axis] = (
            np.float32(start[axis]) + r * np.float32(d_row[axis]) + c * np.float32(d_col[axis])
        )
    out_dtype = array.dtype if order == 0 else np.float32
    pixels = ndimage.map_coordinates(
        array, coords, order=order, mode="constant", cval=cval, prefilter=False, output=out_dtype
    )
    return PlaneImage(
        plane=chosen,
        pixels=pixels,
        origin=origin,
        row_direction=row_dir,
        col_direction=col_dir,
        spacing=geometry.spacing,
    )


def crosshair_in(image: PlaneImage, point: np.ndarray) -> tuple[float, float]:
    """Where the crosshair ``point`` (LPS mm) falls on ``image``: ``(row, col)``."""
    return image.to_pixel(point)


def step_point(
    geometry: MprGeometry, point: np.ndarray, plane: Plane | str, steps: int
) -> np.ndarray:
    """Scroll: move ``point`` by ``steps`` output pixels along ``plane``'s normal (clamped)."""
    _row, _col, normal_axis = _PLANE_AXES[_plane(plane)]
    moved = np.asarray(point, dtype=np.float64).copy()
    moved[normal_axis] += steps * geometry.spacing
    return geometry.clamp(moved)


def distance_mm(image: PlaneImage, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance in mm between two pixel positions ``(row, col)`` of one plane."""
    return float(np.linalg.norm(image.to_patient(*a) - image.to_patient(*b)))


def plane_position(geometry: MprGeometry, plane: Plane | str, point: np.ndarray) -> tuple[int, int]:
    """The slice number (0-based) of ``point`` along ``plane``'s normal and the slice count."""
    _row, _col, axis = _PLANE_AXES[_plane(plane)]
    n = int(np.floor((geometry.high[axis] - geometry.low[axis]) / geometry.spacing)) + 1
    p = float(np.asarray(point, dtype=np.float64)[axis])
    index = int(round((p - geometry.low[axis]) / geometry.spacing))
    # Axial slices are numbered from inferior to superior, as scanners number them.
    return min(max(index, 0), n - 1), n


def point_at(
    geometry: MprGeometry, plane: Plane | str, index: int, point: np.ndarray
) -> np.ndarray:
    """``point`` moved to slice ``index`` (0-based) along ``plane``'s normal."""
    _row, _col, axis = _PLANE_AXES[_plane(plane)]
    moved = np.asarray(point, dtype=np.float64).copy()
    moved[axis] = geometry.low[axis] + index * geometry.spacing
    return geometry.clamp(moved)

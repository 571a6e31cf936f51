"""Read image series into volumes with their geometry, and 2D images as frames.

:func:`load_series` reads a single-frame series (CT, MR, PT); :func:`load_multiframe`
an enhanced or classic multi-frame object; :func:`load_image` a projection image,
ultrasound or secondary capture (:class:`Image2D`).

The volume is built the way the DICOM standard defines a stack of slices
(PS3.3 C.7.6.2 Image Plane Module): slices are ordered by the projection of
Image Position (Patient) onto the slice normal, the cross product of the two
direction cosines in Image Orientation (Patient). Slices that do not form one
regular grid (different orientation, pixel spacing or matrix, gaps, duplicate
positions) raise :class:`~workbench.errors.GeometryError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from workbench.errors import DicomReadError, GeometryError

__all__ = [
    "Image2D",
    "SliceGeometry",
    "Volume",
    "load_image",
    "load_multiframe",
    "load_series",
    "sort_slices",
]

# Relative tolerance on the spacing between consecutive slices before a
# difference counts as a gap (scanners round positions to 0.01 mm or so).
_SPACING_RTOL = 0.05
_ORIENTATION_ATOL = 1e-4
_PIXEL_SPACING_ATOL = 1e-4
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True, slots=True, eq=False)
class Volume:
    """A CT series as one array with its patient-coordinate geometry.

    Parameters
    ----------
    array : numpy.ndarray
        ``float32`` values in Hounsfield units (Rescale Slope/Intercept applied),
        shape ``(z, y, x)``: slices in increasing position along the slice normal,
        rows, columns.
    spacing : tuple of float
        Voxel spacing ``(z, y, x)`` in mm: spacing between slice centres, then
        Pixel Spacing (row spacing, column spacing).
    origin : numpy.ndarray
        Patient coordinates (LPS, mm) of the centre of voxel ``[0, 0, 0]``.
    direction : numpy.ndarray
        ``(3, 3)``; columns are the unit vectors (LPS) of the x (column index),
        y (row index) and z (slice index) axes, as in ITK.
    sop_instance_uids : tuple of str
        SOP Instance UID of each slice, in z order.
    series_instance_uid : str
        Series Instance UID shared by every slice.
    paths : tuple of Path
        The file of each slice, in z order.
    headers : tuple of pydicom.Dataset
        The data elements of each slice that precede Pixel Data (what
        ``dcmread(..., stop_before_pixels=True)`` reads), in z order: what a
        DICOM SEG over the series needs without reading the files again.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    paths: tuple[Path, ...] = ()
    headers: tuple[Dataset, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(z, y, x)`` of :attr:`array`."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices ``(x, y, z, 1)`` to LPS patient mm.

        Note the index order ``(x, y, z)`` (ITK/NIfTI convention), the reverse of
        :attr:`array`'s axes.
        """
        out = np.eye(4)
        out[:3, :3] = self.direction * np.asarray(self.spacing[::-1])
        out[:3, 3] = self.origin
        return out

    def voxel_to_patient(self, indices_zyx: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map voxel indices ``(z, y, x)`` to patient coordinates (LPS, mm).

        Parameters
        ----------
        indices_zyx : array_like, shape (..., 3)
            Voxel indices in array order.

        Returns
        -------
        numpy.ndarray, shape (..., 3)
            Patient coordinates of the voxel centres.
        """
        idx = np.asarray(indices_zyx, dtype=np.float64)[..., ::-1]  # -> (x, y, z)
        scaled = idx * np.asarray(self.spacing[::-1])
        return np.asarray(self.origin + scaled @ self.direction.T)


@dataclass(frozen=True, slots=True)
class SliceGeometry:
    """Orientation, pixel spacing and matrix shared by the slices of a series."""

    row_cosine: np.ndarray
    col_cosine: np.ndarray
    normal: np.ndarray
    pixel_spacing: tuple[float, float]
    matrix: tuple[int, int]


def _read(path: Path, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise DicomReadError(f"Cannot read {path} as DICOM: {exc}") from exc


def _geometry(ds: Dataset, name: str) -> SliceGeometry:
    missing = [
        kw
        for kw in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows")
        if kw not in ds
    ]
    if missing:
        raise DicomReadError(
            f"{name}: expected the Image Plane attributes, missing {', '.join(missing)}."
        )
    iop = _numbers(ds, "ImageOrientationPatient", "Image Orientation (Patient)", name)
    if iop.shape != (6,):
        raise GeometryError(
            f"{name}: Image Orientation (Patient) should have 6 values, found {iop.size}."
        )
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        raise GeometryError(f"{name}: Image Orientation (Patient) {list(iop)} is degenerate.")
    pixel_spacing = _numbers(ds, "PixelSpacing", "Pixel Spacing", name)
    if pixel_spacing.shape != (2,) or not np.all(pixel_spacing > 0):
        raise GeometryError(
            f"{name}: Pixel Spacing should be two positive numbers, found {list(pixel_spacing)}."
        )
    _numbers(ds, "ImagePositionPatient", "Image Position (Patient)", name)
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    return SliceGeometry(row, col, normal / norm, spacing, (int(ds.Rows), int(ds.Columns)))


def _numbers(ds: Dataset, keyword: str, label: str, name: str) -> np.ndarray:
    """A multi-valued numeric attribute as floats, or :class:`GeometryError` naming it."""
    try:
        values = np.asarray([float(v) for v in ds[keyword].value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(
            f"{name}: {label} ({keyword}) should be numbers, found {ds[keyword].value!r} ({exc})."
        ) from None
    if not np.all(np.isfinite(values)):
        raise GeometryError(f"{name}: {label} ({keyword}) has non-finite values {list(values)}.")
    return values


def sort_slices(
    datasets: Sequence[Dataset], names: Sequence[str] | None = None
) -> tuple[list[int], float, SliceGeometry]:
    """Order the slices of one series along the slice normal and check the grid.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        Single-frame images of one series (pixel data not needed).
    names : sequence of str, optional
        A name (file path) per dataset for error messages.

    Returns
    -------
    order : list of int
        Indices into ``datasets`` in increasing position along the normal.
    spacing : float
        Spacing between slice centres in mm (``SliceThickness`` for one slice).
    geometry : SliceGeometry
        Shared orientation, pixel spacing and matrix.

    Raises
    ------
    GeometryError
        Different orientation, pixel spacing or matrix, duplicate positions,
        or non-uniform spacing (a missing slice), naming the offending file.
    DicomReadError
        Slices from more than one series, or lacking Image Plane attributes.
    """
    if not datasets:
        raise DicomReadError("Expected at least one image file, found none.")
    labels = list(names) if names is not None else [f"slice {i}" for i in range(len(datasets))]
    first = _geometry(datasets[0], labels[0])
    series_uid = datasets[0].get("SeriesInstanceUID")
    positions = np.empty(len(datasets), dtype=np.float64)
    for i, (ds, name) in enumerate(zip(datasets, labels, strict=True)):
        geo = first if i == 0 else _geometry(ds, name)
        if ds.get("SeriesInstanceUID") != series_uid:
            raise DicomReadError(
                f"{name}: expected Series Instance UID {series_uid}, "
                f"found {ds.get('SeriesInstanceUID')}; pass the files of one series."
            )
        if not (
            np.allclose(geo.row_cosine, first.row_cosine, atol=_ORIENTATION_ATOL)
            and np.allclose(geo.col_cosine, first.col_cosine, atol=_ORIENTATION_ATOL)
        ):
            raise GeometryError(
                f"{name}: Image Orientation (Patient) differs from the series' first slice "
                f"(expected {[*first.row_cosine, *first.col_cosine]}, "
                f"found {[*geo.row_cosine, *geo.col_cosine]})."
            )
        if not np.allclose(geo.pixel_spacing, first.pixel_spacing, atol=_PIXEL_SPACING_ATOL):
            raise GeometryError(
                f"{name}: Pixel Spacing {list(geo.pixel_spacing)} differs from the series' "
                f"{list(first.pixel_spacing)}."
            )
        if geo.matrix != first.matrix:
            raise GeometryError(
                f"{name}: Rows x Columns {geo.matrix} differ from the series' {first.matrix}."
            )
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        positions[i] = float(ipp @ first.normal)

    order = [int(i) for i in np.argsort(positions, kind="stable")]
    if len(order) == 1:
        thickness = datasets[0].get("SliceThickness")
        return order, float(thickness) if thickness else 1.0, first

    steps = np.diff(positions[order])
    for k, step in enumerate(steps):
        if step < 1e-3:
            a, b = labels[order[k]], labels[order[k + 1]]
            raise GeometryError(
                f"{b}: same slice position ({positions[order[k + 1]]:.3f} mm along the "
                f"normal) as {a}; expected one slice per position."
            )
    spacing = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - spacing) > _SPACING_RTOL * spacing)
    if bad.size:
        k = int(bad[0])
        a, b = labels[order[k]], labels[order[k + 1]]
        hint = " (a slice is missing)" if steps[k] > 1.5 * spacing else ""
        raise GeometryError(
            f"{b}: expected {spacing:.3f} mm between slices, found {steps[k]:.3f} mm "
            f"after {a}{hint}."
        )
    return order, spacing, first


def _header(ds: Dataset) -> Dataset:
    """The elements of ``ds`` before Pixel Data, with its file meta, without decoding any."""
    header = ds[:_PIXEL_DATA]  # keeps the dataset's encoding and character set
    header.file_meta = ds.file_meta
    return header


def _rescaled(ds: Dataset, name: str) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for bad pixel data
        raise DicomReadError(f"{name}: cannot decode the pixel data: {exc}") from exc
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    out = pixels.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def load_series(paths: Iterable[str | Path]) -> Volume:
    """Load the single-frame image files of one series into a :class:`Volume`.

    Parameters
    ----------
    paths : iterable of str or Path
        The files of one series, in any order.

    Returns
    -------
    Volume
        HU array ``(z, y, x)`` ordered along the slice normal, with spacing,
        origin and direction.

    Raises
    ------
    DicomReadError
        A file is not readable DICOM, lacks geometry, or belongs to another series.
    GeometryError
        The slices do not form one regular grid (see :func:`sort_slices`).

    Examples
    --------
    >>> vol = load_series(sorted(Path("cases/case0001/CT").glob("*.dcm")))  # doctest: +SKIP
    >>> vol.array.shape, vol.spacing  # doctest: +SKIP
    ((48, 128, 128), (2.5, 0.7, 0.7))
    """
    files = [Path(p) for p in paths]
    if not files:
        raise DicomReadError("Expected the files of one series, found an empty list.")
    datasets = [_read(p, stop_before_pixels=False) for p in files]
    names = [str(p) for p in files]
    order, z_spacing, geo = sort_slices(datasets, names)
    array = np.stack([_rescaled(datasets[i], names[i]) for i in order])
    first = datasets[order[0]]
    origin = np.asarray([float(v) for v in first.ImagePositionPatient], dtype=np.float64)
    direction = np.column_stack([geo.row_cosine, geo.col_cosine, geo.normal])
    return Volume(
        array=array,
        spacing=(z_spacing, geo.pixel_spacing[0], geo.pixel_spacing[1]),
        origin=origin,
        direction=direction,
        sop_instance_uids=tuple(str(datasets[i].SOPInstanceUID) for i in order),
        series_instance_uid=str(first.SeriesInstanceUID),
        paths=tuple(files[i] for i in order),
        headers=tuple(_header(datasets[i]) for i in order),
    )


def load_multiframe(path: str | Path) -> Volume:
    """Load one multi-frame cross-sectional object (enhanced CT/MR, classic multi-frame).

    Frame positions come from the Plane Position functional group of each frame
    (PS3.3 C.7.6.16.2.3), orientation and pixel spacing from the Plane
    Orientation and Pixel Measures groups (shared or per frame); rescale from
    the Pixel Value Transformation group when the top level has none. Frames
    are ordered along the slice normal.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    Volume
        ``(frames, rows, columns)``; :attr:`Volume.sop_instance_uids` repeats the
        object's UID once per frame and :attr:`Volume.paths` the file.

    Raises
    ------
    DicomReadError
        Not readable, not single-sample, or without per-frame geometry.
    GeometryError
        Frames with different orientations, repeated positions or uneven spacing.
    """
    from workbench.dicom.pixels import decode_frames, frame_geometry, read_dicom

    name = str(path)
    try:
        ds = read_dicom(path)
    except DicomReadError as exc:
        raise DicomReadError(f"{name}: {exc}") from exc
    geometry = frame_geometry(ds)
    if geometry.positions is None or geometry.orientations is None:
        raise DicomReadError(
            f"{name}: expected a position and orientation for every frame "
            "(Plane Position and Plane Orientation functional groups), found none."
        )
    if geometry.pixel_spacing is None:
        raise DicomReadError(f"{name}: expected Pixel Spacing (Pixel Measures), found none.")
    if geometry.n_orientations != 1:
        raise GeometryError(
            f"{name}: expected one orientation for all frames, found {geometry.n_orientations}."
        )
    iop = geometry.orientations[0]
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    along = geometry.positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    if len(steps) and (
        steps.min() <= 1e-3 or (steps.max() - steps.min()) > _SPACING_RTOL * steps.mean()
    ):
        raise GeometryError(
            f"{name}: expected evenly spaced frame positions, found steps from "
            f"{steps.min():.3f} to {steps.max():.3f} mm."
        )
    pixels = decode_frames(ds)
    if pixels.shape[-1] != 1:
        raise DicomReadError(f"{name}: expected one sample per pixel, found {pixels.shape[-1]}.")
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    shared = ds.get("SharedFunctionalGroupsSequence")
    pvt = shared[0].get("PixelValueTransformationSequence") if shared else None
    if (slope is None or intercept is None) and pvt:
        slope, intercept = pvt[0].get("RescaleSlope"), pvt[0].get("RescaleIntercept")
    array = pixels[order, ..., 0].astype(np.float32)
    array = array * np.float32(float(slope or 1.0)) + np.float32(float(intercept or 0.0))
    z = float(steps.mean()) if len(steps) else float(geometry.slice_thickness or 1.0)
    uid = str(ds.SOPInstanceUID)
    return Volume(
        array=array,
        spacing=(z, geometry.pixel_spacing[0], geometry.pixel_spacing[1]),
        origin=geometry.positions[order[0]],
        direction=np.column_stack([row, col, normal]),
        sop_instance_uids=(uid,) * len(order),
        series_instance_uid=str(ds.SeriesInstanceUID),
        paths=(Path(path),),
        headers=(_header(ds),),
    )


@dataclass(frozen=True, slots=True, eq=False)
class Image2D:
    """A projection image, ultrasound or secondary capture: frames without a volume.

    Parameters
    ----------
    array : numpy.ndarray
        ``(frames, rows, columns, samples)``: stored values (grey) or RGB (YBR and
        palette colour converted); no rescale, no VOI.
    pixel_spacing : tuple of float or None
        Row and column spacing in mm (Pixel Spacing, else Imager Pixel Spacing).
    photometric_interpretation : str
        As stored (``MONOCHROME1`` means low values are bright).
    modality, sop_instance_uid, series_instance_uid : str
    path : Path
    header : pydicom.Dataset
        The elements before Pixel Data.
    """

    array: np.ndarray
    pixel_spacing: tuple[float, float] | None
    photometric_interpretation: str
    modality: str
    sop_instance_uid: str
    series_instance_uid: str
    path: Path
    header: Dataset


def load_image(path: str | Path, *, frames: list[int] | None = None) -> Image2D:
    """Load a 2D image object (CR, DX, MG, US, SC...), all frames or some.

    Parameters
    ----------
    path : str or Path
    frames : list of int, optional
        0-based frames to decode (all when None).

    Returns
    -------
    Image2D

    Raises
    ------
    DicomReadError
        Not readable or the pixel data cannot be decoded; the message names the
        file and the transfer syntax.
    """
    from workbench.dicom.pixels import decode_frames, frame_geometry, read_dicom

    try:
        ds = read_dicom(path)
        array = decode_frames(ds, frames=frames)
    except DicomReadError as exc:
        raise DicomReadError(f"{path}: {exc}") from exc
    return Image2D(
        array=array,
        pixel_spacing=frame_geometry(ds).pixel_spacing,
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
        modality=str(ds.get("Modality", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        path=Path(path),
        header=_header(ds),
    )

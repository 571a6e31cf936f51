"""Reference contours from DICOM RT Structure Sets, rasterised onto their series' grid.

An RT Structure Set (RTSTRUCT, PS3.3 A.19) stores each region of interest (ROI) as
planar polygons in patient coordinates (LPS, mm): Contour Data of the ROI Contour
Module (PS3.3 C.8.8.6), one polygon per contour, usually one or more per slice.
:func:`rasterize_rtstruct` turns each ROI into a boolean mask on the grid of the
image series it was drawn on (:class:`~workbench.dicom.volume.Volume`), so that it
can be compared with a model's mask like a DICOM SEG reference.

Partial-volume rule
-------------------
A voxel belongs to an ROI when its **centre** lies inside the ROI's closed contours
on the voxel's slice. Several contours of one ROI on the same slice combine by the
**even-odd rule**: a contour inside another cuts a hole, disjoint contours add
islands. A centre exactly on an edge counts as inside on the left and lower edges
(smaller column/row index) and outside on the right and upper ones, so two contours
that share an edge never both claim a voxel. No fractional coverage is computed.

A contour must lie on a slice of the series: its points' position along the slice
normal must be within ``slice_tolerance`` (a fraction of the slice spacing) of a
slice centre, otherwise :class:`~workbench.errors.GeometryError` names the contour
and its position. Parts of a contour outside the image's rows and columns are
clipped. ROIs of other geometric types (``POINT``, ``OPEN_PLANAR``...) hold no area
and are skipped unless asked for by name, which is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from workbench.errors import GeometryError, SegmentationError

__all__ = ["RoiInfo", "RtStructIdentity", "identify_rtstruct", "rasterize_rtstruct"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_CLOSED = "CLOSED_PLANAR"


@dataclass(frozen=True, slots=True)
class RoiInfo:
    """One ROI of a structure set.

    Attributes
    ----------
    number : int
        ROI Number.
    name : str
        ROI Name (the key of :func:`rasterize_rtstruct`'s result).
    frame_of_reference_uid : str or None
        Referenced Frame of Reference UID of the ROI.
    interpreted_type : str or None
        RT ROI Interpreted Type (``ORGAN``, ``GTV``, ``EXTERNAL``...).
    geometric_types : tuple of str
        Contour Geometric Types present (``CLOSED_PLANAR``, ``POINT``...).
    n_contours : int
    """

    number: int
    name: str
    frame_of_reference_uid: str | None
    interpreted_type: str | None
    geometric_types: tuple[str, ...]
    n_contours: int


@dataclass(frozen=True, slots=True)
class RtStructIdentity:
    """What an RTSTRUCT says about itself.

    Attributes
    ----------
    sop_instance_uid, series_instance_uid : str
    referenced_series_uids : tuple of str
        Series whose images the contours were drawn on (RT Referenced Series
        Sequence), sorted.
    frame_of_reference_uids : tuple of str
        Referenced Frames of Reference, sorted.
    structure_set_label : str
    operators : str or None
        Operators' Name, the person who drew the contours, when recorded.
    rois : tuple of RoiInfo
        In ROI Number order.
    """

    sop_instance_uid: str
    series_instance_uid: str
    referenced_series_uids: tuple[str, ...]
    frame_of_reference_uids: tuple[str, ...]
    structure_set_label: str
    operators: str | None
    rois: tuple[RoiInfo, ...]


def _read(source: Dataset | str | Path) -> Dataset:
    if isinstance(source, Dataset):
        ds = source
    else:
        try:
            ds = pydicom.dcmread(source)
        except InvalidDicomError:
            # Older RT files often lack the File Meta header; the SOP Class check below
            # refuses whatever is not an RTSTRUCT.
            try:
                ds = pydicom.dcmread(source, force=True)
            except Exception as exc:  # pydicom raises several types for bad files
                raise SegmentationError(f"Cannot read {source} as DICOM: {exc}") from exc
        except Exception as exc:  # pydicom raises several types for bad files
            raise SegmentationError(f"Cannot read {source} as DICOM: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != RTSTRUCT_SOP_CLASS:
        raise SegmentationError(
            f"Expected SOP Class RT Structure Set Storage ({RTSTRUCT_SOP_CLASS}). Found "
            f"{sop_class or 'none'} (Modality {ds.get('Modality', 'none')})."
        )
    return ds


def identify_rtstruct(source: Dataset | str | Path) -> RtStructIdentity:
    """Identify an RTSTRUCT by its content: referenced series, frames of reference, ROIs.

    Parameters
    ----------
    source : pydicom.Dataset or str or Path

    Returns
    -------
    RtStructIdentity

    Raises
    ------
    SegmentationError
        Unreadable, or not RT Structure Set Storage.
    """
    ds = _read(source)
    series: set[str] = set()
    frames: set[str] = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in frame:
            frames.add(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.SeriesInstanceUID))
    interpreted = {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "") or None
        for o in ds.get("RTROIObservationsSequence", [])
    }
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
    rois = []
    for roi in ds.get("StructureSetROISequence", []):
        number = int(roi.ROINumber)
        items = list(contours[number].get("ContourSequence", [])) if number in contours else []
        frame_uid = roi.get("ReferencedFrameOfReferenceUID")
        rois.append(
            RoiInfo(
                number=number,
                name=str(roi.get("ROIName", "")),
                frame_of_reference_uid=str(frame_uid) if frame_uid else None,
                interpreted_type=interpreted.get(number),
                geometric_types=tuple(sorted({str(c.ContourGeometricType) for c in items})),
                n_contours=len(items),
            )
        )
    operators = ds.get("OperatorsName")
    return RtStructIdentity(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        referenced_series_uids=tuple(sorted(series)),
        frame_of_reference_uids=tuple(sorted(frames)),
        structure_set_label=str(ds.get("StructureSetLabel", "")),
        operators=str(operators) if operators else None,
        rois=tuple(sorted(rois, key=lambda r: r.number)),
    )


def _fill_polygon(columns: np.ndarray, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Even-odd scanline fill of one polygon given in (fractional) pixel indices.

    A pixel centre ``(i, j)`` is inside when a ray from it towards +column crosses
    the polygon's edges an odd number of times; edges are half-open in the row
    direction, so a centre on the left/lower edge is inside, on the right/upper one
    outside.
    """
    n_rows, n_columns = shape
    mask = np.zeros(shape, dtype=bool)
    x0, y0 = columns, rows
    x1, y1 = np.roll(columns, -1), np.roll(rows, -1)
    low = max(int(np.ceil(rows.min())), 0)
    high = min(int(np.floor(rows.max())), n_rows - 1)
    for j in range(low, high + 1):
        crosses = (y0 > j) != (y1 > j)
        if not crosses.any():
            continue
        xa, ya, xb, yb = x0[crosses], y0[crosses], x1[crosses], y1[crosses]
        xs = np.sort(xa + (j - ya) * (xb - xa) / (yb - ya))
        for start, stop in zip(xs[0::2], xs[1::2], strict=False):
            first = max(int(np.ceil(start)), 0)
            last = min(int(np.ceil(stop)) - 1, n_columns - 1)
            if first <= last:
                mask[j, first : last + 1] = True
    return mask


def _frame_of_reference(volume: Any) -> str | None:
    headers = getattr(volume, "headers", ()) or ()
    if headers and "FrameOfReferenceUID" in headers[0]:
        return str(headers[0].FrameOfReferenceUID)
    return None


def rasterize_rtstruct(
    source: Dataset | str | Path,
    volume: Any,
    *,
    roi_names: Sequence[str] | None = None,
    slice_tolerance: float = 0.1,
) -> dict[str, np.ndarray]:
    """Rasterise the closed contours of an RTSTRUCT onto its series' voxel grid.

    Parameters
    ----------
    source : pydicom.Dataset or str or Path
        The RT Structure Set.
    volume : Volume
        The image series the contours were drawn on
        (:func:`workbench.dicom.volume.load_series`).
    roi_names : sequence of str, optional
        Only these ROIs (by ROI Name); by default every ROI with closed planar
        contours.
    slice_tolerance : float
        Largest distance of a contour from a slice centre, as a fraction of
        the slice spacing.

    Returns
    -------
    dict of str to numpy.ndarray
        ROI Name -> boolean mask of shape ``volume.shape`` (z, y, x), voxel
        centres inside the contours (see the module's partial-volume rule).

    Raises
    ------
    SegmentationError
        Not an RTSTRUCT; it references another series or frame of reference
        than the volume's; a requested ROI is absent, has no contours or no
        closed planar ones; duplicate ROI names.
    GeometryError
        A contour is not planar in the series' slice plane or lies off the
        series' slices (naming the ROI, the contour and its position).
    """
    ds = _read(source)
    identity = identify_rtstruct(ds)
    where = f"RTSTRUCT {identity.sop_instance_uid}"
    if (
        identity.referenced_series_uids
        and volume.series_instance_uid not in identity.referenced_series_uids
    ):
        raise SegmentationError(
            f"{where}: expected contours drawn on the series {volume.series_instance_uid}. "
            f"Found references to {list(identity.referenced_series_uids)}."
        )
    names = [roi.name for roi in identity.rois]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SegmentationError(f"{where}: expected unique ROI names. Found {duplicates} twice.")
    by_name = {roi.name: roi for roi in identity.rois}
    if roi_names is None:
        wanted = [roi for roi in identity.rois if _CLOSED in roi.geometric_types]
    else:
        missing = [n for n in roi_names if n not in by_name]
        if missing:
            raise SegmentationError(f"{where}: expected the ROI(s) {missing}. Found ROIs {names}.")
        wanted = [by_name[n] for n in roi_names]
        for roi in wanted:
            if _CLOSED not in roi.geometric_types:
                raise SegmentationError(
                    f"{where}: ROI {roi.name!r}: expected {_CLOSED} contours to rasterise. "
                    f"Found {list(roi.geometric_types) or 'no contours'}."
                )
    volume_frame = _frame_of_reference(volume)
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
    to_index = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64))
    n_slices, n_rows, n_columns = volume.shape
    uid_slice = {uid: k for k, uid in enumerate(volume.sop_instance_uids)}
    masks: dict[str, np.ndarray] = {}
    for roi in wanted:
        if volume_frame and roi.frame_of_reference_uid not in (None, volume_frame):
            raise SegmentationError(
                f"{where}: ROI {roi.name!r}: expected the series' Frame of Reference "
                f"{volume_frame}. Found {roi.frame_of_reference_uid}."
            )
        mask = np.zeros(volume.shape, dtype=bool)
        for c_index, contour in enumerate(contours[roi.number].get("ContourSequence", [])):
            if str(contour.ContourGeometricType) != _CLOSED:
                continue
            label = f"{where}: ROI {roi.name!r} contour {c_index + 1}"
            points = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
            if points.size < 9 or points.size % 3:
                raise GeometryError(
                    f"{label}: expected at least 3 points (x, y, z triplets). Found "
                    f"{points.size} values."
                )
            lps = points.reshape(-1, 3)
            index = (to_index @ np.column_stack([lps, np.ones(len(lps))]).T)[:3].T
            depth = index[:, 2]
            if np.ptp(depth) > slice_tolerance:
                raise GeometryError(
                    f"{label}: expected a contour in the series' slice plane. Found points "
                    f"spread over {np.ptp(depth):.3f} slices."
                )
            k = int(round(float(depth.mean())))
            if abs(depth.mean() - k) > slice_tolerance or not 0 <= k < n_slices:
                raise GeometryError(
                    f"{label}: expected a contour on one of the series' {n_slices} slices "
                    f"(index 0..{n_slices - 1}). Found it at slice index {depth.mean():.3f} "
                    f"(z = {lps[0, 2]:.2f} mm)."
                )
            for image in contour.get("ContourImageSequence", []):
                referenced = uid_slice.get(str(image.ReferencedSOPInstanceUID))
                if referenced is not None and referenced != k:
                    raise GeometryError(
                        f"{label}: references the image of slice {referenced} but lies on "
                        f"slice {k}."
                    )
            mask[k] ^= _fill_polygon(index[:, 0], index[:, 1], (n_rows, n_columns))
        masks[roi.name] = mask
    return masks

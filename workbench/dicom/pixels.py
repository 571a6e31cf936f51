"""Pixel data of any image object: decoded frames, colour and per-frame geometry.

Decoding goes through pydicom's pixel-data backends; the compressed transfer
syntaxes are decoded by the pinned ``pylibjpeg`` plugins (``pylibjpeg-libjpeg``:
JPEG baseline, extended, lossless and JPEG-LS; ``pylibjpeg-openjpeg``: JPEG 2000;
``pylibjpeg-rle``: RLE Lossless) with ``python-gdcm`` as the fallback that pydicom
tries when a plugin refuses a stream. Deflated and big-endian files are handled
by pydicom itself.

Colour follows the Photometric Interpretation (PS3.3 C.7.6.3.1.2): ``YBR_FULL``
and ``YBR_FULL_422`` are converted to RGB, ``PALETTE COLOR`` is mapped through its
lookup table, ``RGB`` is left as is; ``MONOCHROME1`` is reported so that a
consumer can invert it (:func:`to_display`).

Enhanced multi-frame objects (PS3.3 C.7.6.16) keep their geometry in functional
groups; :func:`frame_geometry` returns one position per frame with the shared
orientation and pixel spacing, whether the object is enhanced, classic
multi-frame or single-frame.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from workbench.errors import DicomReadError

__all__ = [
    "FrameGeometry",
    "frame_table",
    "read_dicom",
    "decode_frames",
    "frame_geometry",
    "frame_shape",
    "to_display",
]


def read_dicom(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Read a file the index accepted, including data sets without File Meta Information.

    A file without the ``DICM`` preamble is read with ``force=True`` and given the
    transfer syntax its encoding implies, so that its pixel data can be decoded.

    Raises
    ------
    DicomReadError
        The file cannot be read; the message names it and the reason.
    """
    try:
        try:
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomReadError(f"cannot be read as DICOM: {type(exc).__name__}: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        if little is False:
            syntax = ExplicitVRBigEndian
        elif implicit is False:
            syntax = ExplicitVRLittleEndian
        else:
            syntax = ImplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def frame_shape(ds: Dataset) -> tuple[int, int, int, int]:
    """``(frames, rows, columns, samples)`` the header declares."""
    return (
        int(ds.get("NumberOfFrames", 1) or 1),
        int(ds.get("Rows", 0) or 0),
        int(ds.get("Columns", 0) or 0),
        int(ds.get("SamplesPerPixel", 1) or 1),
    )


def decode_frames(ds: Dataset, *, frames: list[int] | None = None) -> np.ndarray:
    """Decode pixel data to ``(frames, rows, columns, samples)``, colour as RGB.

    Parameters
    ----------
    ds : pydicom.Dataset
        A data set read with its pixel data.
    frames : list of int, optional
        0-based frame numbers to decode (all when None); only those frames are
        decompressed.

    Returns
    -------
    numpy.ndarray
        Stored values (no rescale, no VOI), 4-D. YBR is converted to RGB and
        PALETTE COLOR is expanded to RGB.

    Raises
    ------
    DicomReadError
        No pixel data, or it cannot be decoded; the message names the transfer
        syntax and the decoder's reason.
    """
    from pydicom.pixels import apply_color_lut

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomReadError("expected Pixel Data (7FE0,0010), found none")
    n_frames, rows, cols, samples = frame_shape(ds)
    wanted = list(range(n_frames)) if frames is None else [f for f in frames if 0 <= f < n_frames]
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    out: list[np.ndarray] = []
    logger = logging.getLogger("pydicom")
    level = logger.level
    # each plugin's failure is logged by pydicom before the combined error is raised;
    # the error (with every plugin's reason) is what the caller reports
    logger.setLevel(logging.CRITICAL)
    try:
        arrays = _decode(ds, frames, wanted)
    finally:
        logger.setLevel(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arr in arrays:
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
            out.append(arr)
    stacked: np.ndarray
    if frames is None:
        stacked = out[0]
        if n_frames == 1:
            stacked = stacked[np.newaxis]
    else:
        stacked = np.stack(out) if out else np.empty((0, rows, cols), dtype=np.uint16)
    if stacked.ndim == 3:
        stacked = stacked[..., np.newaxis]
    return stacked


def _decode(ds: Dataset, frames: list[int] | None, wanted: list[int]) -> list[np.ndarray]:
    from pydicom.pixels import pixel_array

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if frames is None:
                return [pixel_array(ds)]
            return [pixel_array(ds, index=f) for f in wanted]
        except Exception as exc:  # noqa: BLE001 - every decoder failure has one meaning here
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = syntax.name if syntax is not None else "unknown transfer syntax"
            reasons = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise DicomReadError(
                f"pixel data ({name}) cannot be decoded: {type(exc).__name__}: {reasons[:400]}"
            ) from exc


def to_display(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """One frame as 8-bit grey or RGB for looking at (OCR, thumbnails).

    Parameters
    ----------
    frame : numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, samples)`` stored values.
    ds : pydicom.Dataset
        Its header (Photometric Interpretation).

    Returns
    -------
    numpy.ndarray
        ``uint8``; ``MONOCHROME1`` inverted so that high values are bright;
        grey scaled between the 0.5 and 99.5 percentiles.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.dtype == np.uint8:
            return arr
        hi = float(arr.max()) or 1.0
        return np.clip(arr.astype(np.float64) / hi * 255.0, 0, 255).astype(np.uint8)
    values = arr.astype(np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    grey = np.clip(scaled * 255.0, 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        grey = 255 - grey
    return grey


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """Where each frame of an image object lies in patient coordinates.

    Parameters
    ----------
    positions : numpy.ndarray or None
        ``(frames, 3)`` Image Position (Patient) of each frame (LPS, mm), None
        when the object has no patient geometry (projection images, US).
    orientations : numpy.ndarray or None
        ``(frames, 6)`` Image Orientation (Patient) of each frame.
    pixel_spacing : tuple of float or None
        Row and column spacing in mm (Pixel Spacing; else Imager Pixel Spacing).
    slice_thickness : float or None
    source : str
        ``"functional-groups"``, ``"top-level"`` or ``"none"``.
    """

    positions: np.ndarray | None
    orientations: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    source: str

    @property
    def n_orientations(self) -> int:
        """Distinct orientations among the frames (rounded to 1e-4)."""
        if self.orientations is None:
            return 0
        return len({tuple(np.round(o, 4)) for o in self.orientations})

    def steps(self) -> np.ndarray:
        """Distances between consecutive frame positions along the slice normal, sorted."""
        if self.positions is None or self.orientations is None or len(self.positions) < 2:
            return np.empty(0)
        o = self.orientations[0]
        normal = np.cross(o[:3], o[3:])
        return np.asarray(np.diff(np.sort(self.positions @ normal)))


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


def _macro(item: Dataset | None, macro: str, keyword: str) -> Any:
    if item is None:
        return None
    seq = item.get(macro)
    if not seq:
        return None
    return seq[0].get(keyword)


def frame_geometry(ds: Dataset) -> FrameGeometry:
    """Per-frame geometry of an image object (enhanced, classic multi-frame or single).

    Parameters
    ----------
    ds : pydicom.Dataset
        The header (pixel data not needed).

    Returns
    -------
    FrameGeometry
        For enhanced objects the Plane Position, Plane Orientation and Pixel
        Measures functional groups of each frame, falling back on the shared
        groups; otherwise the top-level attributes repeated per frame.
    """
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        positions: list[np.ndarray] = []
        orientations: list[np.ndarray] = []
        spacing: np.ndarray | None = None
        thickness: Any = None
        for item in per_frame:
            pos = _floats(_macro(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
            if pos is None:
                pos = _floats(
                    _macro(shared_item, "PlanePositionSequence", "ImagePositionPatient"), 3
                )
            ori = _floats(_macro(item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            if ori is None:
                ori = _floats(
                    _macro(shared_item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                )
            if pos is not None:
                positions.append(pos)
            if ori is not None:
                orientations.append(ori)
            if spacing is None:
                spacing = _floats(_macro(item, "PixelMeasuresSequence", "PixelSpacing"), 2)
                thickness = _macro(item, "PixelMeasuresSequence", "SliceThickness")
        if spacing is None:
            spacing = _floats(_macro(shared_item, "PixelMeasuresSequence", "PixelSpacing"), 2)
            thickness = _macro(shared_item, "PixelMeasuresSequence", "SliceThickness")
        return FrameGeometry(
            positions=np.stack(positions) if len(positions) == len(per_frame) else None,
            orientations=np.stack(orientations) if len(orientations) == len(per_frame) else None,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
            slice_thickness=float(thickness) if thickness not in (None, "") else None,
            source="functional-groups",
        )
    pos = _floats(ds.get("ImagePositionPatient"), 3)
    ori = _floats(ds.get("ImageOrientationPatient"), 6)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    if spacing is None:
        spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
    thickness = ds.get("SliceThickness")
    positions_arr: np.ndarray | None = None
    if pos is not None:
        offsets = ds.get("GridFrameOffsetVector")
        if n_frames > 1 and offsets is not None and ori is not None and len(offsets) == n_frames:
            normal = np.cross(ori[:3], ori[3:])
            positions_arr = pos + np.outer([float(v) for v in offsets], normal)
        else:
            positions_arr = np.repeat(pos[np.newaxis], n_frames, axis=0)
    return FrameGeometry(
        positions=positions_arr,
        orientations=np.repeat(ori[np.newaxis], n_frames, axis=0) if ori is not None else None,
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        source="top-level" if pos is not None or spacing is not None else "none",
    )


FRAME_COLUMNS = (
    "path",
    "frame",
    "image_position_x",
    "image_position_y",
    "image_position_z",
    "image_orientation",
    "pixel_spacing_row",
    "pixel_spacing_col",
)


def frame_table(root: str | Path, paths: list[str]) -> pd.DataFrame:
    """One row per frame of the given image files, with its geometry.

    Parameters
    ----------
    root : str or Path
        Test-set root.
    paths : list of str
        Relative paths (for example the multi-frame rows of ``DicomIndex.files``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FRAME_COLUMNS`; ``frame`` is 0-based; positions are None for
        objects without patient geometry. Unreadable files are left out.
    """
    records: list[dict[str, Any]] = []
    for rel in paths:
        try:
            ds = read_dicom(Path(root) / rel, stop_before_pixels=True)
        except DicomReadError:
            continue
        geometry = frame_geometry(ds)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        spacing = geometry.pixel_spacing or (None, None)
        for k in range(n_frames):
            pos = geometry.positions[k] if geometry.positions is not None else None
            ori = geometry.orientations[k] if geometry.orientations is not None else None
            records.append(
                {
                    "path": rel,
                    "frame": k,
                    "image_position_x": float(pos[0]) if pos is not None else None,
                    "image_position_y": float(pos[1]) if pos is not None else None,
                    "image_position_z": float(pos[2]) if pos is not None else None,
                    "image_orientation": (
                        ",".join(f"{v:g}" for v in ori) if ori is not None else None
                    ),
                    "pixel_spacing_row": spacing[0],
                    "pixel_spacing_col": spacing[1],
                }
            )
    return pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS))

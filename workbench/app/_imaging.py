"""Slice rendering for the viewer: window/level and overlay blending in numpy.

Volumes and masks are loaded once and cached under a key made of the files'
SHA-256s (recorded in the test-set index and the case results), so scrolling,
windowing and zooming never re-read DICOM. A slice becomes a PNG in a few
milliseconds.

They are kept with ``st.cache_resource``, as one shared, read-only object per
content key, rather than with ``st.cache_data``, which would copy a whole volume
on every slider move. Sharing is safe: the key names the pixels exactly (the same
files hash the same for everyone), the arrays are made read-only, and the paths
reach the viewer only through the services that check who may see them
(:func:`workbench.services.views.case_images`,
:func:`workbench.services.adjudication.open_case`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from workbench.dicom.reference import combine_reader_masks
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import Volume, load_series
from workbench.errors import GeometryError

__all__ = [
    "WINDOW_PRESETS",
    "OVERLAY_COLOURS",
    "SliceMark",
    "content_key",
    "draw_marks",
    "load_volume",
    "load_overlay",
    "patient_to_voxel",
    "region_slice",
    "slice_marks",
    "window_level",
    "render_slice",
]

#: CT window presets: name -> (level/centre, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "Soft tissue": (40.0, 400.0),
    "Lung": (-600.0, 1500.0),
    "Bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
}

#: Overlay colours (RGB) of the blinded outputs A and B and of other overlays.
OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "A": (255, 140, 0),
    "B": (0, 200, 255),
    "Model": (255, 140, 0),
    "Reference": (0, 200, 255),
}


def content_key(sha256s: Sequence[str]) -> str:
    """One SHA-256 naming a set of files by their contents (order-independent)."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode("ascii")).hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hashes_for(paths: Sequence[str], recorded: dict[str, str]) -> list[str]:
    """Recorded SHA-256s of ``paths``; files without a record are hashed here."""
    return [recorded.get(p) or _file_sha256(p) for p in paths]


@st.cache_resource(max_entries=4, show_spinner="Loading the series ...")
def load_volume(key: str, _paths: tuple[str, ...]) -> Volume:
    """The series as a read-only volume, cached under ``key`` (:func:`content_key` of its files)."""
    volume = load_series(list(_paths))
    volume.array.setflags(write=False)
    return volume


@st.cache_resource(max_entries=16, show_spinner="Loading the segmentation ...")
def load_overlay(
    key: str, volume_key: str, rule: str, _seg_paths: tuple[str, ...], _volume: Volume
) -> np.ndarray:
    """A boolean mask (z, y, x) aligned with the volume, cached by content keys.

    Several SEG objects (one per reader) are combined with the reference rule
    (``majority``, ``union``, ``intersection`` or ``readerN``) so that the
    overlay shows one mask, as the reference standard does.
    """
    masks = [read_seg_mask(p, _volume) for p in _seg_paths]
    if not masks:
        combined = np.zeros(_volume.array.shape, dtype=bool)
    else:
        stems = [p.rsplit("/", 1)[-1].removesuffix(".dcm") for p in _seg_paths]
        if rule.startswith("reader") and rule not in stems:
            rule = "majority"
        combined = np.array(combine_reader_masks(masks, stems, rule), dtype=bool)
    combined.setflags(write=False)
    return combined


def window_level(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU to 0..255 with a linear window (DICOM PS3.3 C.11.2.1.2, simplified)."""
    width = max(float(width), 1.0)
    low = level - width / 2.0
    scaled = (image.astype(np.float32) - low) * (255.0 / width)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    result: np.ndarray = mask & ~inner
    return result


def render_slice(
    image: np.ndarray,
    *,
    level: float,
    width: float,
    overlays: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
    alpha: float = 0.3,
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.5, 0.5),
    size: int = 512,
    marks: Sequence[SliceMark] = (),
) -> bytes:
    """One axial slice as PNG bytes.

    Parameters
    ----------
    image : ndarray (y, x)
        HU values.
    level, width : float
        Window centre and width in HU.
    overlays : sequence of (mask (y, x) bool, RGB colour)
        Filled with ``alpha`` and outlined at full opacity.
    zoom : float
        Magnification (>= 1); ``pan`` is the view centre as fractions of (y, x).
    size : int
        Output edge in pixels (nearest-neighbour resampling).
    marks : sequence of SliceMark
        Boxes and points (:func:`slice_marks`) drawn over the resampled image, so their
        lines stay thin at any zoom.

    Returns
    -------
    bytes
        PNG image.
    """
    grey = window_level(image, level, width)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    for mask, colour in overlays:
        if not mask.any():
            continue
        tint = np.asarray(colour, dtype=np.float32)
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * tint
        rgb[_outline(mask)] = tint
    rows, cols = grey.shape
    zoom = max(float(zoom), 1.0)
    crop_r, crop_c = max(int(rows / zoom), 1), max(int(cols / zoom), 1)
    top = int(np.clip(pan[0] * rows - crop_r / 2, 0, rows - crop_r))
    left = int(np.clip(pan[1] * cols - crop_c / 2, 0, cols - crop_c))
    scale = size / max(crop_r, crop_c)
    out_r, out_c = max(int(crop_r * scale), 1), max(int(crop_c * scale), 1)
    r_index = top + (np.arange(out_r) * crop_r / out_r).astype(np.intp)
    c_index = left + (np.arange(out_c) * crop_c / out_c).astype(np.intp)
    view = rgb[np.ix_(r_index, c_index)].astype(np.uint8)
    if marks:
        view = draw_marks(view, marks, top=top, left=left, scale=(out_r / crop_r, out_c / crop_c))
    buffer = io.BytesIO()
    Image.fromarray(view, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# -- detection regions (boxes and points in patient coordinates) ------------------------------


@dataclass(frozen=True, slots=True)
class SliceMark:
    """A region as drawn on one slice, in continuous voxel indices of that slice.

    Parameters
    ----------
    label : str
        The blinded output it belongs to (``"A"`` or ``"B"``).
    kind : str
        ``"box"`` or ``"point"``.
    row_min, row_max, col_min, col_max : float
        Extent in (row, column) voxel indices, voxel centres at integers; a point has
        ``row_min == row_max`` and ``col_min == col_max``.
    colour : tuple of int
        RGB.
    """

    label: str
    kind: str
    row_min: float
    row_max: float
    col_min: float
    col_max: float
    colour: tuple[int, int, int]


def patient_to_voxel(volume: Volume, points_lps: np.ndarray | Sequence[float]) -> np.ndarray:
    """Continuous voxel indices ``(z, y, x)`` of patient coordinates (LPS, mm).

    The inverse of :meth:`~workbench.dicom.volume.Volume.voxel_to_patient`: indices are
    voxel centres at integers, whatever the orientation (a flipped axis gives decreasing
    indices for increasing mm).

    Parameters
    ----------
    volume : Volume
        Its ``origin``, ``spacing`` and ``direction`` define the mapping.
    points_lps : array_like, shape (..., 3)

    Returns
    -------
    numpy.ndarray, shape (..., 3)
    """
    matrix = np.asarray(volume.direction, dtype=float) * np.asarray(volume.spacing[::-1])
    offset = np.asarray(points_lps, dtype=float) - np.asarray(volume.origin, dtype=float)
    xyz = np.linalg.solve(matrix, offset.reshape(-1, 3).T).T
    return np.asarray(xyz[:, ::-1].reshape(offset.shape))


def _number(region: Mapping[str, Any], key: str) -> float | None:
    value = region.get(key)
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _region_extent(region: Mapping[str, Any], volume: Volume) -> np.ndarray:
    """(2, 3): lowest and highest continuous ``(z, y, x)`` index the region covers.

    A box's eight corners are mapped and bounded (exact for axis-aligned volumes, the
    enclosing box for oblique ones); a point, or a box with a missing bound, maps its
    centre on that axis.
    """
    centre = [_number(region, axis) for axis in ("x", "y", "z")]
    if any(c is None for c in centre):
        raise GeometryError(
            f"A region needs its centre x, y, z in patient coordinates (mm); found "
            f"{ {k: region.get(k) for k in ('kind', 'x', 'y', 'z')} }."
        )
    lows, highs = [], []
    for axis, c in zip(("x", "y", "z"), centre, strict=True):
        low = _number(region, f"{axis}_min") if region.get("kind") == "box" else None
        high = _number(region, f"{axis}_max") if region.get("kind") == "box" else None
        lows.append(c if low is None else low)
        highs.append(c if high is None else high)
    corners = np.array(list(itertools.product(*zip(lows, highs, strict=True))))
    indices = patient_to_voxel(volume, corners)
    return np.vstack([indices.min(axis=0), indices.max(axis=0)])


def region_slice(region: Mapping[str, Any], volume: Volume) -> int:
    """The slice index (0-based, clamped to the volume) nearest to the region's centre.

    Parameters
    ----------
    region : mapping
        ``{"kind", "x", "y", "z", ...}`` in patient coordinates (LPS, mm).
    volume : Volume

    Returns
    -------
    int

    Raises
    ------
    GeometryError
        The region lacks its centre.
    """
    centre = [_number(region, axis) for axis in ("x", "y", "z")]
    if any(c is None for c in centre):
        raise GeometryError(
            f"A region needs its centre x, y, z in patient coordinates (mm); found "
            f"{ {k: region.get(k) for k in ('kind', 'x', 'y', 'z')} }."
        )
    z = float(patient_to_voxel(volume, np.asarray(centre, dtype=float))[0])
    return int(min(max(math.floor(z + 0.5), 0), volume.array.shape[0] - 1))


def slice_marks(
    regions: Mapping[str, Sequence[Mapping[str, Any]]],
    volume: Volume,
    index: int,
    *,
    colours: Mapping[str, tuple[int, int, int]] = OVERLAY_COLOURS,
) -> list[SliceMark]:
    """The regions to draw on slice ``index``.

    A box is drawn on every slice its z-range crosses (slice ``k`` spans indices
    ``k - 0.5`` to ``k + 0.5``); a point only on its nearest slice.

    Parameters
    ----------
    regions : mapping
        Label (``"A"``, ``"B"``) -> regions ``{"kind": "box"|"point", "x", "y", "z",
        "x_min", ..., "z_max"}`` in patient coordinates (LPS, mm); the bounds are ``None``
        for a point.
    volume : Volume
        Geometry of the displayed series.
    index : int
        0-based slice index.
    colours : mapping
        Label -> RGB; labels without a colour are drawn yellow.

    Returns
    -------
    list of SliceMark

    Raises
    ------
    GeometryError
        A region lacks its centre.
    """
    marks = []
    for label, items in regions.items():
        colour = colours.get(label, (255, 255, 0))
        for region in items:
            kind = str(region.get("kind", "point"))
            (z_low, row_low, col_low), (z_high, row_high, col_high) = _region_extent(region, volume)
            if kind == "box":
                if not (z_low < index + 0.5 and z_high >= index - 0.5):
                    continue
            elif region_slice(region, volume) != index or not (
                -0.5 <= z_low < volume.array.shape[0] - 0.5
            ):
                continue
            marks.append(
                SliceMark(
                    label,
                    kind,
                    float(row_low),
                    float(row_high),
                    float(col_low),
                    float(col_high),
                    colour,
                )
            )
    return marks


def draw_marks(
    rgb: np.ndarray,
    marks: Sequence[SliceMark],
    *,
    top: float = 0.0,
    left: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    thickness: int = 2,
) -> np.ndarray:
    """Draw boxes (outlines) and points (a cross in a circle) onto an RGB image.

    Parameters
    ----------
    rgb : ndarray (rows, cols, 3) uint8
        The rendered slice (or its zoomed crop); not modified.
    marks : sequence of SliceMark
        In voxel indices of the full slice.
    top, left : float
        Voxel row and column of the image's first pixel (the crop's corner).
    scale : (float, float)
        Output pixels per voxel along rows and columns.
    thickness : int
        Line width in output pixels.

    Returns
    -------
    ndarray
        A copy with the marks drawn; a box covers its voxels' full extent (voxel edges,
        half a voxel beyond the centres), clipped to the image.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    rows, cols = out.shape[:2]
    sr, sc = scale

    def to_row(r: float) -> float:
        return (r - top + 0.5) * sr

    def to_col(c: float) -> float:
        return (c - left + 0.5) * sc

    def paint(r0: float, r1: float, c0: float, c1: float, colour: tuple[int, int, int]) -> None:
        lo_r, hi_r = max(int(math.floor(r0)), 0), min(int(math.ceil(r1)), rows)
        lo_c, hi_c = max(int(math.floor(c0)), 0), min(int(math.ceil(c1)), cols)
        if lo_r < hi_r and lo_c < hi_c:
            out[lo_r:hi_r, lo_c:hi_c] = colour

    t = max(int(thickness), 1)
    for mark in marks:
        if mark.kind == "box":
            r0, r1 = to_row(mark.row_min - 0.5), to_row(mark.row_max + 0.5)
            c0, c1 = to_col(mark.col_min - 0.5), to_col(mark.col_max + 0.5)
            paint(r0, r0 + t, c0, c1, mark.colour)
            paint(r1 - t, r1, c0, c1, mark.colour)
            paint(r0, r1, c0, c0 + t, mark.colour)
            paint(r0, r1, c1 - t, c1, mark.colour)
            continue
        r, c = to_row(mark.row_min), to_col(mark.col_min)
        arm = max(5.0 * t, 0.8 * min(sr, sc))
        paint(r - t / 2, r + t / 2, c - arm, c + arm, mark.colour)
        paint(r - arm, r + arm, c - t / 2, c + t / 2, mark.colour)
        radius = arm * 1.6
        yy, xx = np.ogrid[:rows, :cols]
        distance = np.hypot(yy + 0.5 - r, xx + 0.5 - c)
        out[np.abs(distance - radius) <= t / 2] = mark.colour
    return out

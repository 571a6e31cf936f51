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
from collections.abc import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from workbench.dicom.reference import combine_reader_masks
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import Volume, load_series

__all__ = [
    "WINDOW_PRESETS",
    "OVERLAY_COLOURS",
    "content_key",
    "load_volume",
    "load_overlay",
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
    buffer = io.BytesIO()
    Image.fromarray(view, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()

"""The DICOM slice viewer: scrolling, window/level presets and manual W/L, zoom, overlays.

Runs as a fragment, so that moving a slider re-renders only the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import streamlit as st

from workbench.app import _imaging, _session
from workbench.errors import WorkbenchError
from workbench.services import views

__all__ = ["show_viewer"]


@st.fragment
def show_viewer(
    key: str,
    ct_paths: Sequence[str],
    overlays: Mapping[str, Sequence[str]],
    *,
    rule: str = "majority",
) -> None:
    """Render the viewer for one CT series with labelled segmentation overlays.

    Parameters
    ----------
    key : str
        Widget key prefix (one per case).
    ct_paths : sequence of str
        The CT slice files.
    overlays : mapping
        Label (e.g. ``"A"``, ``"B"``) -> SEG files; several files are combined
        with ``rule`` into one mask.
    rule : str
        Reference rule for multi-file overlays.
    """
    if not ct_paths:
        st.warning("No CT images were found for this case.")
        return
    wb = _session.workbench()
    every_path = [*ct_paths, *(p for paths in overlays.values() for p in paths)]
    recorded = views.file_sha256s(wb, _session.actor(), every_path)
    volume_key = _imaging.content_key(_imaging.hashes_for(list(ct_paths), recorded))
    try:
        volume = _imaging.load_volume(volume_key, tuple(ct_paths))
    except WorkbenchError as error:
        st.error(f"The series cannot be loaded: {_session.esc(error)}")
        return
    masks: dict[str, np.ndarray] = {}
    for label, paths in overlays.items():
        if not paths:
            continue
        seg_key = _imaging.content_key(_imaging.hashes_for(list(paths), recorded))
        try:
            masks[label] = _imaging.load_overlay(seg_key, volume_key, rule, tuple(paths), volume)
        except WorkbenchError as error:
            st.warning(f"Overlay {label} cannot be shown: {_session.esc(error)}")

    n_slices = int(volume.array.shape[0])
    default_slice = n_slices // 2
    if masks:
        any_mask = np.logical_or.reduce(list(masks.values()))
        with_lesion = np.flatnonzero(any_mask.any(axis=(1, 2)))
        if len(with_lesion):
            default_slice = int(with_lesion[len(with_lesion) // 2])

    controls, picture = st.columns([1, 2])
    with controls:
        index = st.slider("Slice", 1, n_slices, default_slice + 1, key=f"{key}-slice") - 1
        preset = st.radio(
            "Window preset",
            [*_imaging.WINDOW_PRESETS, "Manual"],
            horizontal=True,
            key=f"{key}-preset",
        )
        if preset == "Manual":
            level = st.number_input(
                "Level (HU)", -2000.0, 4000.0, 40.0, step=10.0, key=f"{key}-level"
            )
            width = st.number_input("Width (HU)", 1.0, 6000.0, 400.0, step=10.0, key=f"{key}-width")
        else:
            level, width = _imaging.WINDOW_PRESETS[preset]
        zoom = st.select_slider("Zoom", [1.0, 1.5, 2.0, 3.0, 4.0], value=1.0, key=f"{key}-zoom")
        pan = (0.5, 0.5)
        if zoom > 1.0:
            pan = (
                st.slider("Pan vertical", 0.0, 1.0, 0.5, key=f"{key}-pan-y"),
                st.slider("Pan horizontal", 0.0, 1.0, 0.5, key=f"{key}-pan-x"),
            )
        shown = {
            label: st.checkbox(f"Show {label}", value=True, key=f"{key}-show-{label}")
            for label in masks
        }
        st.caption(
            f"{n_slices} slices; spacing {volume.spacing[0]:.2f} x {volume.spacing[1]:.2f} x "
            f"{volume.spacing[2]:.2f} mm; W/L {width:g}/{level:g}"
        )
    layers = [
        (mask[index], _imaging.OVERLAY_COLOURS.get(label, (255, 255, 0)))
        for label, mask in masks.items()
        if shown.get(label)
    ]
    png = _imaging.render_slice(
        volume.array[index],
        level=float(level),
        width=float(width),
        overlays=layers,
        zoom=float(zoom),
        pan=pan,
    )
    with picture:
        legend = "   ".join(
            f"{label}: "
            f"{'orange' if _imaging.OVERLAY_COLOURS.get(label) == (255, 140, 0) else 'blue'}"
            for label in masks
        )
        st.image(
            png,
            caption=f"Slice {index + 1}/{n_slices}" + (f" - {legend}" if legend else ""),
            output_format="PNG",
        )

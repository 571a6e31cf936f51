"""The DICOM slice viewer: scrolling, window/level presets and manual W/L, zoom, overlays.

Runs as a fragment, so that moving a slider re-renders only the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import streamlit as st

from workbench.app import _imaging, _session
from workbench.dicom.volume import Volume
from workbench.errors import WorkbenchError
from workbench.services import views

__all__ = ["region_rows", "show_viewer"]

_COLOUR_NAMES = {(255, 140, 0): "orange", (0, 200, 255): "blue"}


def _colour_name(label: str) -> str:
    return _COLOUR_NAMES.get(_imaging.OVERLAY_COLOURS.get(label, (255, 255, 0)), "yellow")


def region_rows(
    regions: Mapping[str, Sequence[Mapping[str, Any]]], volume: Volume
) -> list[dict[str, Any]]:
    """One row per region for the viewer's list: label, kind, centre, size and slice.

    Only geometry is listed: a mark's score or rating would tell the reviewer which of
    A and B is the model, so it is never read here.

    Parameters
    ----------
    regions : mapping
        Label (``"A"``, ``"B"``) -> regions in patient coordinates (LPS, mm).
    volume : Volume
        Geometry of the displayed series.

    Returns
    -------
    list of dict
        ``region`` (``"A1"``, ...), ``label``, ``kind``, ``centre (mm)``, ``size (mm)``
        (a box's extent, blank for a point) and ``slice`` (1-based, as the slider counts).

    Raises
    ------
    GeometryError
        A region without its centre.
    """
    rows = []
    for label in sorted(regions):
        for number, region in enumerate(regions[label], start=1):
            kind = str(region.get("kind", "point"))
            slice_index = _imaging.region_slice(region, volume)  # checks the centre first
            centre = ", ".join(f"{float(region[a]):.1f}" for a in ("x", "y", "z"))
            size = ""
            if kind == "box":
                extents = [
                    float(region[f"{a}_max"]) - float(region[f"{a}_min"])
                    for a in ("x", "y", "z")
                    if region.get(f"{a}_min") is not None and region.get(f"{a}_max") is not None
                ]
                size = " x ".join(f"{e:.1f}" for e in extents)
            rows.append(
                {
                    "region": f"{label}{number}",
                    "label": label,
                    "kind": kind,
                    "centre (mm)": centre,
                    "size (mm)": size,
                    "slice": slice_index + 1,
                }
            )
    return rows


def _jump(slider_key: str, slice_number: int) -> None:
    st.session_state[slider_key] = slice_number


@st.fragment
def show_viewer(
    key: str,
    ct_paths: Sequence[str],
    overlays: Mapping[str, Sequence[str]],
    *,
    rule: str = "majority",
    regions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> None:
    """Render the viewer for one CT series with labelled segmentation overlays and regions.

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
    regions : mapping, optional
        Label (``"A"``, ``"B"``) -> detection regions (boxes, points) in patient
        coordinates (LPS, mm), drawn in the label's colour on the slices they cross,
        with a list that jumps to each region's slice. Scores are never shown.
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

    regions = {label: list(items) for label, items in (regions or {}).items() if items}
    try:
        listed = region_rows(regions, volume) if regions else []
    except WorkbenchError as error:
        st.warning(f"The regions cannot be shown: {_session.esc(error)}")
        regions, listed = {}, []

    n_slices = int(volume.array.shape[0])
    default_slice = n_slices // 2
    if listed:
        default_slice = min(max(int(listed[0]["slice"]) - 1, 0), n_slices - 1)
    elif masks:
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
        labels = list(dict.fromkeys([*masks, *sorted(regions)]))
        shown = {
            label: st.checkbox(f"Show {label}", value=True, key=f"{key}-show-{label}")
            for label in labels
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
    marks = _imaging.slice_marks(
        {label: items for label, items in regions.items() if shown.get(label)}, volume, index
    )
    png = _imaging.render_slice(
        volume.array[index],
        level=float(level),
        width=float(width),
        overlays=layers,
        zoom=float(zoom),
        pan=pan,
        marks=marks,
    )
    with picture:
        legend = "   ".join(f"{label}: {_colour_name(label)}" for label in labels)
        st.image(
            png,
            caption=f"Slice {index + 1}/{n_slices}" + (f" - {legend}" if legend else ""),
            output_format="PNG",
        )
        if listed:
            _region_list(key, listed, index)


def _region_list(key: str, listed: Sequence[Mapping[str, Any]], index: int) -> None:
    """The regions with their slices; a button per region moves the slider to it."""
    st.markdown(
        "**Regions** - "
        + ", ".join(
            f"{label} in {_colour_name(label)} (boxes, points)"
            for label in dict.fromkeys(str(r["label"]) for r in listed)
        )
    )
    for row in listed:
        here = int(row["slice"]) == index + 1
        size = f", {row['size (mm)']} mm" if row["size (mm)"] else ""
        st.button(
            f"{row['region']}: {row['kind']} at ({row['centre (mm)']}) mm{size} - "
            f"slice {row['slice']}" + (" (shown)" if here else ""),
            key=f"{key}-region-{row['region']}",
            on_click=_jump,
            args=(f"{key}-slice", int(row["slice"])),
            disabled=here,
        )

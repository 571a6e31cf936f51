"""The explorer's multiplanar viewer: three linked planes, overlays, heat maps, measurement.

The planes come from :mod:`workbench.dicom.mpr` (patient-space reslicing); this
module only draws them: window/level, coloured mask overlays with a legend, an
optional heat map (explanation), the linked crosshair and a distance line. The
three views and the legend are composed into one PNG, which is also what the
explorer exports for the report.

The volume, the masks and the reslicing geometry are shared read-only objects
cached by content key (see :mod:`workbench.app._imaging`); the paths reach this
module only through :func:`workbench.services.explorer.explorer_case`, which
refuses blinded reviewers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from workbench.app import _imaging, _session
from workbench.dicom import mpr
from workbench.dicom.volume import Image2D, Volume, load_image
from workbench.errors import WorkbenchError

__all__ = [
    "Layer",
    "LegendMark",
    "HEAT",
    "HEAT_LEGEND",
    "AID_LEGEND",
    "DISPLAY_PIXELS",
    "heat_colours",
    "heat_legend",
    "view_legend",
    "render_plane",
    "compose_views",
    "png_text",
    "mpr_views",
    "show_mpr",
    "show_image2d",
]

#: Colour of the crosshair lines and of the measurement line (RGB).
_CROSSHAIR = (255, 255, 0)
_MEASURE = (80, 255, 80)
_PLANE_ORDER = (mpr.Plane.AXIAL, mpr.Plane.CORONAL, mpr.Plane.SAGITTAL)
HEAT_LEGEND = "heat map (low to high): dark red to yellow"
#: Printed with every heat map, in the app and in the exported PNG (drawn and in its metadata).
AID_LEGEND = "aid to review, not evidence of correctness"
#: Legend mark of the heat map: a swatch of the colour ramp instead of a solid colour.
HEAT: Literal["heat"] = "heat"
#: What a legend line is marked with: a solid colour, the heat ramp or nothing (text only).
LegendMark = tuple[int, int, int] | Literal["heat"] | None
#: Streamlit colour names of the overlay colours, for the legend under the image.
_COLOUR_NAMES = {(255, 140, 0): "orange", (0, 200, 255): "blue"}
#: Largest plane edge resliced for display: planes are drawn about 320 px wide, so
#: reslicing finer would only be thrown away (and costs ~10x per interaction at 512^2 x 600).
DISPLAY_PIXELS = 512


@dataclass(frozen=True, slots=True)
class Layer:
    """A mask overlay: its label in the legend, its colour and the voxels (z, y, x)."""

    label: str
    colour: tuple[int, int, int]
    mask: np.ndarray


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to a dark-red-to-yellow ramp (RGB float32, ``(..., 3)``)."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)[..., None]
    low = np.array([120.0, 0.0, 0.0], dtype=np.float32)
    mid = np.array([255.0, 60.0, 0.0], dtype=np.float32)
    high = np.array([255.0, 255.0, 60.0], dtype=np.float32)
    first = low + (mid - low) * np.clip(v * 2.0, 0.0, 1.0)
    return np.where(v < 0.5, first, mid + (high - mid) * np.clip(v * 2.0 - 1.0, 0.0, 1.0))


def heat_legend(label: str) -> str:
    """The legend line of a heat map: its method, the colour ramp and :data:`AID_LEGEND`.

    Parameters
    ----------
    label : str
        What the map shows (e.g. ``"Occlusion sensitivity (patch 8, stride 8)"``).

    Returns
    -------
    str
    """
    return f"{label}: {HEAT_LEGEND}; {AID_LEGEND}"


def view_legend(
    layers: Sequence[Layer],
    *,
    heat_label: str | None = None,
    distance_mm: float | None = None,
    crosshair: bool = False,
) -> list[tuple[str, LegendMark]]:
    """The legend lines of a view: overlays, heat map, distance and crosshair.

    Parameters
    ----------
    layers : sequence of Layer
        The overlays shown.
    heat_label : str, optional
        Label of the heat map shown (:func:`heat_legend` adds the ramp and the aid note).
    distance_mm : float, optional
        A measured distance.
    crosshair : bool
        Whether the view draws the linked crosshair.

    Returns
    -------
    list of (str, LegendMark)
        Input of :func:`compose_views`.
    """
    legend: list[tuple[str, LegendMark]] = [(layer.label, layer.colour) for layer in layers]
    if heat_label is not None:
        legend.append((heat_legend(heat_label), HEAT))
    if distance_mm is not None:
        legend.append((f"distance: {distance_mm:.1f} mm", _MEASURE))
    if crosshair:
        legend.append(("crosshair: linked position of the three planes", _CROSSHAIR))
    return legend


def _line(
    draw: ImageDraw.ImageDraw,
    a: tuple[float, float],
    b: tuple[float, float],
    colour: tuple[int, int, int],
) -> None:
    draw.line([(a[1], a[0]), (b[1], b[0])], fill=colour, width=1)


def render_plane(
    pixels: np.ndarray,
    *,
    level: float,
    width: float,
    overlays: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
    heat: np.ndarray | None = None,
    heat_alpha: float = 0.45,
    alpha: float = 0.3,
    crosshair: tuple[float, float] | None = None,
    measurement: tuple[tuple[float, float], tuple[float, float]] | None = None,
    size: int = 320,
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.5, 0.5),
) -> Image.Image:
    """One plane as an RGB image.

    Parameters
    ----------
    pixels : ndarray (rows, cols)
        HU values of the plane (square pixels).
    level, width : float
        Window centre and width in HU.
    overlays : sequence of (mask (rows, cols), RGB)
        Filled with ``alpha`` and outlined at full opacity.
    heat : ndarray (rows, cols), optional
        Values in [0, 1] blended where above 0.05 (explanation maps).
    crosshair : (row, col), optional
        Where the other two planes cross this one.
    measurement : ((row, col), (row, col)), optional
        A distance line.
    size : int
        Largest edge of the output in pixels (nearest-neighbour scaling).
    zoom, pan : float, (float, float)
        Magnification and view centre (fractions of rows, cols).

    Returns
    -------
    PIL.Image.Image
    """
    # Crop and scale first: the overlays' outlines are drawn at display resolution, so
    # they stay visible on a large image shown small (a radiograph of 1760 px in 640).
    rows, cols = pixels.shape
    zoom = max(float(zoom), 1.0)
    crop_r, crop_c = max(int(rows / zoom), 1), max(int(cols / zoom), 1)
    top = int(np.clip(pan[0] * rows - crop_r / 2, 0, rows - crop_r))
    left = int(np.clip(pan[1] * cols - crop_c / 2, 0, cols - crop_c))
    scale = size / max(crop_r, crop_c)
    out_r, out_c = max(int(crop_r * scale), 1), max(int(crop_c * scale), 1)
    r_index = top + (np.arange(out_r) * crop_r / out_r).astype(np.intp)
    c_index = left + (np.arange(out_c) * crop_c / out_c).astype(np.intp)
    shown_area = np.ix_(r_index, c_index)
    grey = _imaging.window_level(pixels[shown_area], level, width)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    if heat is not None:
        heat = heat[shown_area]
        shown = heat > 0.05
        if shown.any():
            rgb[shown] = (1 - heat_alpha) * rgb[shown] + heat_alpha * heat_colours(heat[shown])
    for mask, colour in overlays:
        mask = mask[shown_area].astype(bool, copy=False)
        if not mask.any():
            continue
        tint = np.asarray(colour, dtype=np.float32)
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * tint
        rgb[_imaging._outline(mask)] = tint
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)

    def place(point: tuple[float, float]) -> tuple[float, float]:
        return ((point[0] - top) * scale, (point[1] - left) * scale)

    if crosshair is not None:
        r, c = place(crosshair)
        _line(draw, (r, 0), (r, out_c), _CROSSHAIR)
        _line(draw, (0, c), (out_r, c), _CROSSHAIR)
    if measurement is not None:
        a, b = place(measurement[0]), place(measurement[1])
        _line(draw, a, b, _MEASURE)
        for p in (a, b):
            draw.ellipse([p[1] - 2, p[0] - 2, p[1] + 2, p[0] + 2], outline=_MEASURE)
    return image


def png_text(png: bytes) -> dict[str, str]:
    """The text chunks of a PNG written by :func:`compose_views` (``Title``, ``Description``...).

    Parameters
    ----------
    png : bytes

    Returns
    -------
    dict of str to str
    """
    with Image.open(io.BytesIO(png)) as image:
        return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}


def compose_views(
    views: Sequence[tuple[str, Image.Image]],
    legend: Sequence[tuple[str, LegendMark]],
    caption: str = "",
) -> bytes:
    """Views side by side with titles, a colour legend and a caption, as PNG bytes.

    The canvas is widened so that no legend line is cut. The legend and the caption
    are also written into the PNG's text chunks (``Title``: caption, ``Description``:
    legend lines, ``Disclaimer``: :data:`AID_LEGEND` when a heat map is shown), so a
    downloaded file still says what it shows.

    Parameters
    ----------
    views : sequence of (title, image)
    legend : sequence of (label, LegendMark)
        An RGB colour: a filled swatch; :data:`HEAT`: a swatch of the heat ramp;
        ``None``: a text-only line.
    caption : str
        A last line (e.g. run, case and window).

    Returns
    -------
    bytes
        PNG image.
    """
    gap, title_h, line_h, ramp_w = 6, 20, 20, 42
    font = ImageFont.load_default(size=14)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def indent(mark: LegendMark) -> int:
        return 20 if isinstance(mark, tuple) else ramp_w + 6 if mark == HEAT else 0

    text_w = max(
        [indent(mark) + measure.textlength(label, font=font) for label, mark in legend]
        + [measure.textlength(caption, font=font)]
    )
    width = sum(img.width for _t, img in views) + gap * (len(views) + 1)
    height = max((img.height for _t, img in views), default=0) + title_h + gap * 2
    lines = len(legend) + (1 if caption else 0)
    canvas_w = max(width, 320, int(np.ceil(text_w)) + 2 * gap)
    canvas = Image.new("RGB", (canvas_w, height + lines * line_h + gap), (16, 16, 16))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for title, img in views:
        draw.text((x, gap), title, fill=(230, 230, 230), font=font)
        canvas.paste(img, (x, gap + title_h))
        x += img.width + gap
    y = height
    for label, mark in legend:
        if mark == HEAT:
            ramp = heat_colours(np.linspace(0.0, 1.0, ramp_w, dtype=np.float32))
            strip = np.repeat(ramp[None].astype(np.uint8), 14, axis=0)
            canvas.paste(Image.fromarray(strip, mode="RGB"), (gap, y + 3))
        elif isinstance(mark, tuple):
            draw.rectangle([gap, y + 3, gap + 14, y + 17], fill=mark)
        draw.text((gap + indent(mark), y + 2), label, fill=(230, 230, 230), font=font)
        y += line_h
    if caption:
        draw.text((gap, y + 2), caption, fill=(170, 170, 170), font=font)
    info = PngImagePlugin.PngInfo()
    if caption:
        info.add_itxt("Title", caption)
    info.add_itxt("Description", "\n".join(label for label, _mark in legend))
    if any(mark == HEAT for _label, mark in legend):
        info.add_itxt("Disclaimer", f"Explanation map: {AID_LEGEND}.")
    info.add_itxt("Software", "Validation Workbench case explorer")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1, pnginfo=info)
    return buffer.getvalue()


def mpr_views(
    volume: Volume,
    geometry: mpr.MprGeometry,
    point: np.ndarray,
    *,
    level: float,
    width: float,
    layers: Sequence[Layer] = (),
    heat: np.ndarray | None = None,
    measure: tuple[mpr.Plane, tuple[float, float], tuple[float, float]] | None = None,
    size: int = 320,
) -> tuple[list[tuple[str, Image.Image]], float | None]:
    """The three planes through ``point`` with overlays and crosshair (one interaction).

    Parameters
    ----------
    volume : Volume
    geometry : MprGeometry
        :func:`workbench.dicom.mpr.geometry_of` of ``volume``.
    point : ndarray (3,)
        The crosshair, LPS mm.
    level, width : float
    layers : sequence of Layer
    heat : ndarray (z, y, x), optional
        Values in [0, 1] on the volume's grid.
    measure : (plane, (row, col), (row, col)), optional
        A distance line on one plane, in that plane's pixels.
    size : int

    Returns
    -------
    views : list of (title, image)
    distance_mm : float or None
        Length of the measurement.
    """
    out = []
    distance = None
    for plane in _PLANE_ORDER:
        cut = mpr.reslice(volume.array, geometry, plane, point)
        overlays = [
            (
                mpr.reslice(
                    layer.mask.view(np.uint8), geometry, plane, point, order=0, cval=0
                ).pixels
                > 0,
                layer.colour,
            )
            for layer in layers
        ]
        heat_cut = (
            None
            if heat is None
            else mpr.reslice(heat, geometry, plane, point, order=1, cval=0.0).pixels
        )
        line = None
        if measure is not None and measure[0] == plane:
            line = (measure[1], measure[2])
            distance = mpr.distance_mm(cut, measure[1], measure[2])
        index, n = mpr.plane_position(geometry, plane, point)
        image = render_plane(
            cut.pixels,
            level=level,
            width=width,
            overlays=overlays,
            heat=heat_cut,
            crosshair=cut.to_pixel(point),
            measurement=line,
            size=size,
        )
        out.append((f"{plane.value} {index + 1}/{n}", image))
    return out, distance


def _legend_below(layers: Sequence[Layer], heat_label: str | None) -> None:
    """The legend again as text under the image (colours named, heat map with its aid note)."""
    lines = [
        f":{_COLOUR_NAMES.get(layer.colour, 'gray')}[■] {_session.esc(layer.label)}"
        for layer in layers
    ]
    if heat_label is not None:
        lines.append(f":red[■] {_session.esc(heat_legend(heat_label))}")
    if lines:
        st.markdown("  \n".join(lines))


@st.cache_resource(max_entries=4, show_spinner=False)
def _geometry(volume_key: str, _volume: Volume) -> mpr.MprGeometry:
    return mpr.geometry_of(_volume, max_pixels=DISPLAY_PIXELS)


def _window(key: str) -> tuple[float, float]:
    preset = st.radio(
        "Window preset", [*_imaging.WINDOW_PRESETS, "Manual"], horizontal=True, key=f"{key}-preset"
    )
    if preset == "Manual":
        level = st.number_input("Level (HU)", -2000.0, 4000.0, 40.0, step=10.0, key=f"{key}-level")
        width = st.number_input("Width (HU)", 1.0, 6000.0, 400.0, step=10.0, key=f"{key}-width")
        return float(level), float(width)
    return _imaging.WINDOW_PRESETS[str(preset)]


@st.fragment
def show_mpr(
    key: str,
    ct_paths: Sequence[str],
    overlays: Mapping[str, tuple[Sequence[str], tuple[int, int, int]]],
    *,
    rule: str = "majority",
    recorded: Mapping[str, str] | None = None,
    heat: Callable[[tuple[int, ...]], tuple[np.ndarray, str] | None] | None = None,
    caption: str = "",
    on_export: Callable[[bytes], None] | None = None,
    focus: str | None = None,
) -> None:
    """Render the three linked planes of a series with overlays, heat map and measurement.

    Parameters
    ----------
    key : str
        Widget key prefix (one per case).
    ct_paths : sequence of str
        The series' files (from a service that checked the actor).
    overlays : mapping
        Legend label -> (SEG files, RGB colour); several files are combined with ``rule``.
    rule : str
        Reference rule for multi-reader overlays.
    recorded : mapping, optional
        Recorded SHA-256 of the files (content keys of the caches).
    heat : callable, optional
        ``heat(shape) -> (map (z, y, x) in [0, 1], legend label)`` or None, called with
        the volume's shape ``(z, y, x)``.
    caption : str
        Printed under the legend of the exported image.
    on_export : callable, optional
        Called with the composed PNG of the current view; the caller offers the
        download and the selection for the report.
    focus : str, optional
        Label of the overlay the crosshair starts on (e.g. the reference lesion);
        by default the centre of all overlays.
    """
    recorded = dict(recorded or {})
    volume_key = _imaging.content_key(_imaging.hashes_for(list(ct_paths), recorded))
    try:
        volume = _imaging.load_volume(volume_key, tuple(ct_paths))
    except WorkbenchError as error:
        st.error(f"The series cannot be loaded: {_session.esc(error)}")
        return
    geometry = _geometry(volume_key, volume)
    layers: list[Layer] = []
    for label, (paths, colour) in overlays.items():
        if not paths:
            continue
        seg_key = _imaging.content_key(_imaging.hashes_for(list(paths), recorded))
        try:
            mask = _imaging.load_overlay(seg_key, volume_key, rule, tuple(paths), volume)
        except WorkbenchError as error:
            st.warning(f"Overlay {label} cannot be shown: {_session.esc(error)}")
            continue
        layers.append(Layer(label=label, colour=colour, mask=mask))

    # Default crosshair: the centre of the overlays, else of the volume.
    start = geometry.centre
    every = [layer.mask for layer in layers if layer.label == focus and layer.mask.any()]
    every = every or [layer.mask for layer in layers if layer.mask.any()]
    if every:
        voxels = np.argwhere(np.logical_or.reduce(every))
        start = geometry.to_patient(voxels.mean(axis=0))
    positions = {p: mpr.plane_position(geometry, p, start) for p in _PLANE_ORDER}

    controls, picture = st.columns([1, 3])
    with controls:
        point = start.copy()
        for plane in _PLANE_ORDER:
            index, n = positions[plane]
            chosen = st.slider(
                f"{plane.value.capitalize()} slice", 1, n, index + 1, key=f"{key}-{plane.value}"
            )
            point = mpr.point_at(geometry, plane, chosen - 1, point)
        level, width = _window(key)
        shown = [
            layer
            for layer in layers
            if st.checkbox(f"Show {layer.label}", value=True, key=f"{key}-show-{layer.label}")
        ]
        heat_map, heat_label = None, ""
        if heat is not None:
            found = heat(tuple(volume.array.shape))
            if found is not None:
                heat_map, heat_label = found
        measure = None
        if st.toggle("Measure a distance", key=f"{key}-measure"):
            plane = mpr.Plane(
                st.selectbox("On plane", [p.value for p in _PLANE_ORDER], key=f"{key}-m-plane")
            )
            rows, cols = mpr.plane_shape(geometry, plane)
            a = (
                st.slider("From row", 0, rows - 1, rows // 3, key=f"{key}-m-r1"),
                st.slider("From column", 0, cols - 1, cols // 3, key=f"{key}-m-c1"),
            )
            b = (
                st.slider("To row", 0, rows - 1, 2 * rows // 3, key=f"{key}-m-r2"),
                st.slider("To column", 0, cols - 1, 2 * cols // 3, key=f"{key}-m-c2"),
            )
            measure = (plane, (float(a[0]), float(a[1])), (float(b[0]), float(b[1])))
    views, distance = mpr_views(
        volume,
        geometry,
        point,
        level=level,
        width=width,
        layers=shown,
        heat=heat_map,
        measure=measure,
    )
    legend = view_legend(
        shown,
        heat_label=heat_label if heat_map is not None else None,
        distance_mm=distance,
        crosshair=True,
    )
    window_text = f"W/L {width:g}/{level:g} HU; pixel {geometry.spacing:.2f} mm"
    png = compose_views(views, legend, f"{caption}  {window_text}".strip())
    with picture:
        st.image(png, output_format="PNG")
        _legend_below(shown, heat_label if heat_map is not None else None)
        if distance is not None:
            st.metric("Distance", f"{distance:.1f} mm")
        st.caption(
            f"{volume.shape[0]} x {volume.shape[1]} x {volume.shape[2]} voxels, spacing "
            f"{volume.spacing[0]:.2f} x {volume.spacing[1]:.2f} x {volume.spacing[2]:.2f} mm "
            "(z, y, x), resliced in patient coordinates."
        )
        if on_export is not None:
            on_export(png)


def _image_volume(image: Image2D, grey: np.ndarray) -> Volume:
    """A one-slice volume of a projection image, to place a DICOM SEG of it on its pixels."""
    spacing = image.pixel_spacing or (1.0, 1.0)
    return Volume(
        array=grey[None],
        spacing=(1.0, float(spacing[0]), float(spacing[1])),
        origin=np.zeros(3),
        direction=np.eye(3),
        sop_instance_uids=(image.sop_instance_uid,),
        series_instance_uid=image.series_instance_uid,
    )


@st.fragment
def show_image2d(
    key: str,
    path: str,
    *,
    caption: str = "",
    overlays: Mapping[str, tuple[Sequence[str], tuple[int, int, int]]] | None = None,
    rule: str = "majority",
    recorded: Mapping[str, str] | None = None,
    heat: Callable[[tuple[int, ...]], tuple[np.ndarray, str] | None] | None = None,
    on_export: Callable[[bytes], None] | None = None,
) -> None:
    """One projection image (radiograph) in a single view with window, zoom and pan.

    Overlays and a heat map are drawn as in :func:`show_mpr`, and the view (image,
    legend and caption) is composed into one PNG by :func:`compose_views`.

    Parameters
    ----------
    key : str
        Widget key prefix.
    path : str
        The image file (from a service that checked the actor).
    caption : str
        Printed under the legend of the exported image.
    overlays : mapping, optional
        Legend label -> (SEG files of the image, RGB colour); several files are
        combined with ``rule``.
    rule : str
        Reference rule for multi-reader overlays.
    recorded : mapping, optional
        Recorded SHA-256 of the files (content keys of the caches).
    heat : callable, optional
        ``heat(shape) -> (map (rows, cols) in [0, 1], legend label)`` or None, called
        with the image's shape ``(rows, cols)``.
    on_export : callable, optional
        Called with the composed PNG of the current view (download, selection for the report).
    """
    recorded = dict(recorded or {})
    try:
        image = load_image(path, frames=[0])
    except WorkbenchError as error:
        st.error(f"The image cannot be loaded: {_session.esc(error)}")
        return
    pixels = image.array[0]
    grey = pixels[..., 0].astype(np.float32) if pixels.ndim == 3 else pixels.astype(np.float32)
    if image.photometric_interpretation == "MONOCHROME1":
        grey = grey.max() - grey
    layers: list[Layer] = []
    if overlays:
        image_key = _imaging.content_key(_imaging.hashes_for([path], recorded))
        volume = _image_volume(image, grey)
        for label, (paths, colour) in overlays.items():
            if not paths:
                continue
            seg_key = _imaging.content_key(_imaging.hashes_for(list(paths), recorded))
            try:
                mask = _imaging.load_overlay(seg_key, image_key, rule, tuple(paths), volume)
            except WorkbenchError as error:
                st.warning(f"Overlay {label} cannot be shown: {_session.esc(error)}")
                continue
            layers.append(Layer(label=label, colour=colour, mask=mask[0]))
    low, high = np.percentile(grey, [1, 99])
    controls, picture = st.columns([1, 3])
    with controls:
        width = st.slider(
            "Window width",
            1.0,
            float(max(high - low, 1.0) * 2),
            float(max(high - low, 1.0)),
            key=f"{key}-w",
        )
        level = st.slider(
            "Window level",
            float(grey.min()),
            float(grey.max()) + 1.0,
            float((low + high) / 2),
            key=f"{key}-l",
        )
        zoom = st.select_slider("Zoom", [1.0, 1.5, 2.0, 3.0, 4.0], value=1.0, key=f"{key}-zoom")
        pan = (
            st.slider("Pan vertical", 0.0, 1.0, 0.5, key=f"{key}-pan-y"),
            st.slider("Pan horizontal", 0.0, 1.0, 0.5, key=f"{key}-pan-x"),
        )
        shown = [
            layer
            for layer in layers
            if st.checkbox(f"Show {layer.label}", value=True, key=f"{key}-show-{layer.label}")
        ]
        heat_map, heat_label = None, None
        found = heat(tuple(grey.shape)) if heat is not None else None
        if found is not None:
            if tuple(found[0].shape) == tuple(grey.shape):
                heat_map, heat_label = found
            else:
                st.warning(
                    f"The explanation map has shape {tuple(found[0].shape)}; expected the "
                    f"image's {tuple(grey.shape)}. It is not drawn."
                )
    view = render_plane(
        grey,
        level=level,
        width=width,
        overlays=[(layer.mask, layer.colour) for layer in shown],
        heat=heat_map,
        size=640,
        zoom=zoom,
        pan=pan,
    )
    rows, cols = grey.shape
    spacing = image.pixel_spacing
    window_text = f"W/L {width:g}/{level:g}; zoom {zoom:g}x" + (
        f"; pixel {spacing[0]:.3g} x {spacing[1]:.3g} mm" if spacing else ""
    )
    png = compose_views(
        [(f"{image.modality or 'image'} {rows} x {cols}", view)],
        view_legend(shown, heat_label=heat_label),
        f"{caption}  {window_text}".strip(),
    )
    with picture:
        st.image(png, output_format="PNG")
        _legend_below(shown, heat_label)
        if on_export is not None:
            on_export(png)

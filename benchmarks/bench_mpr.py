#!/usr/bin/env python3
"""Speed of the case explorer's three-plane viewer on a 512 x 512 x 600 series.

One interaction (a crosshair move or a window change) reslices the axial,
coronal and sagittal planes in patient coordinates, reslices two masks per plane,
draws the overlays, crosshair and legend and encodes one PNG. The volume is
oblique (15 degree gantry tilt) and anisotropic (0.7 x 0.7 x 1.0 mm), so every
plane goes through the general interpolation path.

Baseline in the same run: the existing single-plane viewer's interaction, a
plain axial slice extraction rendered to PNG with the same two overlays
(:func:`workbench.app._imaging.render_slice`). Budget: about one second per
interaction. Prints the median of several interactions and the one-off
geometry set-up.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from workbench.app._imaging import render_slice
from workbench.app._mpr import DISPLAY_PIXELS, Layer, compose_views, mpr_views
from workbench.dicom import mpr
from workbench.dicom.volume import Volume

SHAPE = (600, 512, 512)


def _timed(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 20.0, size=SHAPE).astype(np.float32)
    mask_a = np.zeros(SHAPE, dtype=bool)
    mask_b = np.zeros(SHAPE, dtype=bool)
    mask_a[280:330, 200:260, 220:290] = True
    mask_b[285:335, 205:265, 215:285] = True
    tilt = np.deg2rad(15.0)
    direction = np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(tilt), -np.sin(tilt)], [0.0, np.sin(tilt), np.cos(tilt)]]
    )
    volume = Volume(
        array=array,
        spacing=(1.0, 0.7, 0.7),
        origin=np.array([-180.0, -180.0, -300.0]),
        direction=direction,
        sop_instance_uids=tuple(str(i) for i in range(SHAPE[0])),
        series_instance_uid="1.2.3",
    )
    presets = [(40, 400), (-600, 1500), (400, 1800), (40, 80)]
    colours = [(255, 140, 0), (0, 200, 255)]

    def baseline(i: int) -> None:
        z = (i * 7) % SHAPE[0]
        level, width = presets[i % 4]
        render_slice(
            array[z],
            level=level,
            width=width,
            overlays=[(mask_a[z], colours[0]), (mask_b[z], colours[1])],
        )

    started = time.perf_counter()
    geometry = mpr.geometry_of(volume, max_pixels=DISPLAY_PIXELS)
    setup = time.perf_counter() - started
    layers = [Layer("Model", colours[0], mask_a), Layer("Reference", colours[1], mask_b)]

    def interaction(i: int) -> None:
        point = mpr.step_point(
            geometry, geometry.centre, ("axial", "coronal", "sagittal")[i % 3], 5 * i
        )
        level, width = presets[i % 4]
        views, _ = mpr_views(volume, geometry, point, level=level, width=width, layers=layers)
        compose_views(views, [(layer.label, layer.colour) for layer in layers], "bench")

    repeats = 7
    base = _timed(baseline, repeats)
    three = _timed(interaction, repeats)
    print(f"volume {SHAPE[2]} x {SHAPE[1]} x {SHAPE[0]} (x, y, z), oblique 15 deg, 0.7/0.7/1.0 mm")
    print(f"planes resliced at {geometry.spacing:.2f} mm (largest edge {DISPLAY_PIXELS} px)")
    print(f"MPR geometry set-up (once per series): {setup * 1000:8.1f} ms")
    print(f"baseline: axial slice + 2 overlays -> PNG: {base * 1000:8.1f} ms per interaction")
    print(f"MPR: 3 planes + 2 masks each -> PNG:       {three * 1000:8.1f} ms per interaction")
    print(
        f"ratio MPR / baseline: {three / base:5.1f}x; "
        f"budget 1000 ms: {'met' if three < 1.0 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

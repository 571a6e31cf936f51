#!/usr/bin/env python3
"""Speed of the adjudication viewer at real size (300 slices of 512 x 512).

After the first load (``load_series``, cached under the files' SHA-256s) every
interaction (new slice, window/level preset, zoom) renders from the cached volume.
Baseline in the same run: the same slice read again from its DICOM file per
interaction, which is what the cache avoids. Also prints the one-off cold load of
the 300-slice series. Budget: about one second per interaction.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from workbench.app._imaging import render_slice
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import load_series


def _timed(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def viewer() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(40.0, 20.0, size=(300, 512, 512)).astype(np.float32)
    mask_a = np.zeros(volume.shape, dtype=bool)
    mask_b = np.zeros(volume.shape, dtype=bool)
    mask_a[120:180, 200:260, 220:290] = True
    mask_b[125:185, 205:265, 215:285] = True
    presets = [(40, 400), (-600, 1500), (400, 1800), (40, 80)]

    def cached(i: int) -> None:
        z = (i * 7) % 300
        level, width = presets[i % 4]
        render_slice(
            volume[z],
            level=level,
            width=width,
            overlays=[(mask_a[z], (255, 140, 0)), (mask_b[z], (30, 144, 255))],
            zoom=1.0 + (i % 3),
        )

    with tempfile.TemporaryDirectory() as folder:
        summary = generate_test_set(
            Path(folder), n_cases=1, seed=3, matrix=512, slices=(60, 60), workers=1
        )
        files = sorted((summary.root / "cases").rglob("CT/*.dcm"))

        def reread(i: int) -> None:
            ds = pydicom.dcmread(files[i % len(files)])
            image = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
                ds.RescaleIntercept
            )
            level, width = presets[i % 4]
            render_slice(image, level=level, width=width)

        fast = _timed(cached, 60)
        slow = _timed(reread, 60)
        big = generate_test_set(
            Path(folder) / "big", n_cases=1, seed=4, matrix=512, slices=(300, 300), workers=1
        )
        series = sorted((big.root / "cases").rglob("CT/*.dcm"))
        started = time.perf_counter()
        loaded = load_series(series)
        cold = time.perf_counter() - started
    print(f"viewer, {loaded.shape[0]} x {loaded.shape[1]} x {loaded.shape[2]} series, two overlays")
    print(f"    first load (cold)  : {cold:7.2f} s (once per series, then cached)")
    print(f"    cached interaction : {fast * 1000:7.1f} ms")
    print(f"    re-read per click  : {slow * 1000:7.1f} ms")
    print(f"    ratio cached/re-read: {fast / slow:.2f}   budget: <= 1000 ms per interaction")


if __name__ == "__main__":
    viewer()

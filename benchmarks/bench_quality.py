#!/usr/bin/env python3
"""Throughput of the data-quality check on a 2,000-file mixed test set, and of OCR.

The set: synthetic CT series with their SEGs (``generate_test_set``) plus copies of
every decodable image of pydicom's test files and ``pydicom-data`` (CR, MR, US, NM,
secondary capture, enhanced multi-frame; JPEG, JPEG-LS, JPEG 2000, RLE, big endian),
each copy with new UIDs, up to 2,000 DICOM files.

Baseline in the same run, on the same files: ``pydicom.dcmread`` + ``.pixel_array``
of every file, what any tool that looks at the pixels costs at least. Target: the
check without OCR within 1.5 x the baseline. Then OCR (Tesseract) in frames per
second on 1024 x 768 frames, half of them with burned-in text.

Run: ``.venv/bin/python benchmarks/bench_quality.py [--files 2000]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.uid import generate_uid

from workbench.dicom.index import index_folder
from workbench.dicom.pixels import decode_frames, read_dicom
from workbench.dicom.synth import generate_test_set
from workbench.quality import run_quality_checks


def _real_images() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    out: list[Path] = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                ds = read_dicom(path)
                if "PixelData" not in ds or ds.get("Modality") in ("SEG", "RTDOSE"):
                    continue
                decode_frames(ds, frames=[0])
            except Exception:  # noqa: BLE001 - only decodable images go into the set
                continue
            out.append(path)
    return out


def build_set(root: Path, n_files: int) -> None:
    generate_test_set(root, n_cases=16, seed=3, matrix=256, slices=(60, 80), workers=2)
    n_dicom = sum(1 for p in root.rglob("*.dcm"))
    sources = _real_images()
    k = 0
    while n_dicom < n_files:
        src = sources[k % len(sources)]
        ds = read_dicom(src)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = generate_uid()
        target = root / "real" / f"{k:04d}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        k += 1
        try:
            ds.save_as(target)
        except (TypeError, ValueError):  # a few test files cannot be written back
            target.unlink(missing_ok=True)
            sources.remove(src)
            continue
        n_dicom += 1


def baseline(root: Path, paths: list[str]) -> float:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rel in paths:
            ds = pydicom.dcmread(root / rel, force=True)
            if "PixelData" in ds:
                _ = ds.pixel_array
    return time.perf_counter() - started


def ocr_rate(n_frames: int = 10) -> float:
    from PIL import Image, ImageDraw, ImageFont

    from workbench.quality.burned_in import find_text

    rng = np.random.default_rng(0)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 18)
    frames = []
    for i in range(n_frames):
        picture = Image.fromarray(np.clip(rng.rayleigh(40, (768, 1024)), 0, 255).astype(np.uint8))
        if i % 2 == 0:
            draw = ImageDraw.Draw(picture)
            draw.text((10, 10), "DOE^JANE  ID 12345678", fill=255, font=font)
            draw.text((10, 740), "03.02.2024 GENERAL HOSPITAL", fill=255, font=font)
        frames.append(np.asarray(picture))
    started = time.perf_counter()
    for frame in frames:
        find_text(frame)
    return n_frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mixed"
        started = time.perf_counter()
        build_set(root, args.files)
        print(f"built {args.files}-file mixed set in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index = index_folder(root, workers=2)
        t_index = time.perf_counter() - started
        paths = index.files["path"].astype(str).tolist()
        modalities = index.files["modality"].value_counts().to_dict()
        print(f"index: {len(paths)} DICOM files in {t_index:.1f} s; modalities {modalities}")
        t_base = baseline(root, paths)
        print(f"baseline dcmread + pixel_array: {t_base:.1f} s ({len(paths) / t_base:.0f} files/s)")
        started = time.perf_counter()
        report = run_quality_checks(root, index, suite="mixed-test-set-v1")
        t_check = time.perf_counter() - started
        print(
            f"quality check (no OCR): {t_check:.1f} s ({len(paths) / t_check:.0f} files/s), "
            f"{len(report.findings)} findings; ratio to baseline {t_check / t_base:.2f} "
            "(target <= 1.5)"
        )
        shutil.rmtree(root)
    print(f"OCR: {ocr_rate():.2f} frames/s on 1024 x 768 frames")


if __name__ == "__main__":
    main()

"""Benchmark: importing a test set (index + manifest) against a plain baseline.

Baseline = ``sha256sum`` over every file (in batches, as ``xargs`` would run it)
plus a single-process ``pydicom.dcmread(..., stop_before_pixels=True)`` loop:
the least any import must do (hash every byte, read every header).
Import = ``index_folder`` + ``build_manifest``. Target: import / baseline <= 1.0.

Usage::

    python benchmarks/bench_import.py                 # 40 cases x 50 slices in a temp dir
    python benchmarks/bench_import.py --dir DIR       # reuse (or create) a test set in DIR
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from workbench.dicom._walk import walk_files
from workbench.dicom.index import index_folder
from workbench.dicom.manifest import build_manifest
from workbench.dicom.synth import generate_test_set

BATCH = 500


def baseline(root: Path, files: list[str]) -> tuple[float, float]:
    """Seconds for sha256sum over all files and for the dcmread loop."""
    paths = [str(root / f) for f in files]
    start = time.perf_counter()
    for i in range(0, len(paths), BATCH):
        subprocess.run(["sha256sum", *paths[i : i + BATCH]], check=True, capture_output=True)
    hashing = time.perf_counter() - start
    start = time.perf_counter()
    for path in paths:
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            pass
    return hashing, time.perf_counter() - start


def run_import(root: Path, workers: int) -> float:
    start = time.perf_counter()
    index = index_folder(root, workers=workers)
    build_manifest(root, index)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="test-set folder (created when empty)")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
        root = args.dir or Path(tmp) / "testset"
        if not (root / "cases").exists():
            start = time.perf_counter()
            generate_test_set(
                root,
                n_cases=args.cases,
                seed=0,
                matrix=args.matrix,
                slices=(args.slices, args.slices),
                workers=args.workers,
            )
            print(f"generated {args.cases} cases in {time.perf_counter() - start:.1f} s")
        files, _ = walk_files(root)
        size_mb = sum((root / f).stat().st_size for f in files) / 1e6
        print(f"test set: {len(files)} files, {size_mb:.0f} MB, workers={args.workers}")
        run_import(root, args.workers)  # warm the page cache and imports equally
        hashes, reads, imports = [], [], []
        for _ in range(args.repeat):
            h, r = baseline(root, files)
            hashes.append(h)
            reads.append(r)
            imports.append(run_import(root, args.workers))
        h, r, i = statistics.median(hashes), statistics.median(reads), statistics.median(imports)
        print(f"baseline sha256sum     : {h:7.2f} s")
        print(f"baseline dcmread loop  : {r:7.2f} s")
        print(f"baseline sum           : {h + r:7.2f} s")
        print(f"import (index+manifest): {i:7.2f} s")
        print(f"ratio import/baseline  : {i / (h + r):7.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    main()

"""Data-quality checks of a test set: the entry :func:`run_quality_checks`.

Table checks run as great-expectations suites (:mod:`workbench.quality.expectations`)
over the DICOM index and two derived tables (one row per series, one per
case). What GX cannot express is checked here on the files themselves:
pixel geometry and HU sanity on sampled slices, burned-in annotation, the
PS3.15 confidentiality profile (:mod:`workbench.quality.phi`) and leakage
against a registered training-set manifest.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from workbench.errors import QualityGateError
from workbench.quality import expectations as gxs
from workbench.quality.findings import Finding, QualityReport, Severity
from workbench.quality.phi import check_phi, declared_options

__all__ = [
    "DEFAULT_SUITE",
    "SUITES",
    "build_training_manifest",
    "case_table",
    "run_quality_checks",
    "series_table",
]

DEFAULT_SUITE = "ct-test-set-v1"
SUITES = (DEFAULT_SUITE,)
"""Suite names a protocol's ``data_quality_suite`` may name."""

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
HU_MIN, HU_MAX = -2048.0, 4095.0

Progress = Callable[[int, int, str], None]


class _IndexLike(Protocol):
    files: pd.DataFrame


def _is_seg(files: pd.DataFrame) -> pd.Series:
    if "kind" in files.columns:
        return files["kind"].astype(str) == "segmentation"
    by_class = (
        files.get("sop_class_uid", pd.Series("", index=files.index)).astype(str) == SEG_STORAGE
    )
    by_mod = files.get("modality", pd.Series("", index=files.index)).astype(str) == "SEG"
    return by_class | by_mod


def _normal(orientation: str) -> np.ndarray | None:
    try:
        values = [float(v) for v in str(orientation).replace("\\", ",").split(",")]
    except ValueError:
        return None
    if len(values) != 6:
        return None
    n = np.cross(np.array(values[:3]), np.array(values[3:]))
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else None


def series_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per image series with the numbers the series suite checks.

    Positions are projected on the slice normal (from ImageOrientationPatient);
    with sorted positions ``d`` and the median step ``s``, a step near ``k * s``
    (k >= 2) counts ``k - 1`` missing slices, a step near 0 a duplicate
    position, and ``spacing_deviation`` is the largest ``|step - s| / s`` over
    the remaining steps.

    Parameters
    ----------
    images : DataFrame
        Image rows of ``DicomIndex.files``.

    Returns
    -------
    DataFrame
        Indexed by ``series_instance_uid``; columns ``folder, n_slices,
        n_orientations, missing_slices, duplicate_positions, spacing_deviation``.
    """
    records: list[dict[str, Any]] = []
    for uid, group in images.groupby("series_instance_uid", sort=True, dropna=True):
        orientations = group["image_orientation"].dropna().astype(str)
        # orientations differing only by float formatting are one orientation
        rounded = {
            tuple(np.round([float(v) for v in o.replace("\\", ",").split(",")], 4))
            for o in orientations
            if _normal(o) is not None
        }
        n_orient = max(len(rounded), 1 if len(orientations) else 0)
        common = orientations.mode() if len(orientations) else orientations
        normal = _normal(common.iloc[0]) if len(common) else None
        if normal is None:
            normal = np.array([0.0, 0.0, 1.0])
        xyz = group[["image_position_x", "image_position_y", "image_position_z"]].apply(
            pd.to_numeric, errors="coerce"
        )
        xyz = xyz.fillna(0.0) if "image_position_z" in group else xyz
        pos = np.sort(xyz.to_numpy(dtype=float) @ normal)
        missing = duplicates = 0
        deviation = 0.0
        if len(pos) >= 2:
            steps = np.diff(pos)
            positive = steps[steps > 1e-3]
            s = float(np.median(positive)) if len(positive) else 0.0
            duplicates = int(np.sum(steps <= 1e-3))
            if s > 0:
                ratio = positive / s
                k = np.rint(ratio)
                gap = (k >= 2) & (np.abs(ratio - k) < 0.1)
                missing = int(np.sum(k[gap] - 1))
                rest = ratio[~gap]
                deviation = float(np.max(np.abs(rest - 1.0))) if len(rest) else 0.0
        folder = str(Path(str(group["path"].iloc[0])).parent.as_posix())
        records.append(
            {
                "series_instance_uid": uid,
                "folder": folder,
                "study_instance_uid": group["study_instance_uid"].iloc[0],
                "n_slices": len(group),
                "n_orientations": n_orient,
                "missing_slices": missing,
                "duplicate_positions": duplicates,
                "spacing_deviation": round(deviation, 6),
            }
        )
    cols = [
        "series_instance_uid",
        "folder",
        "study_instance_uid",
        "n_slices",
        "n_orientations",
        "missing_slices",
        "duplicate_positions",
        "spacing_deviation",
    ]
    return pd.DataFrame.from_records(records, columns=cols).set_index("series_instance_uid")


def case_table(
    series: pd.DataFrame, segs: pd.DataFrame, labels: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per image series with how much reference standard it has.

    Parameters
    ----------
    series : DataFrame
        From :func:`series_table`.
    segs : DataFrame
        SEG rows of the index (``referenced_series_uid``).
    labels : DataFrame or None
        ``reference/labels.csv``; rows join on ``series_instance_uid`` when the
        column exists, else on ``study_instance_uid``.

    Returns
    -------
    DataFrame
        Columns ``folder, n_seg, n_label_rows``, indexed like ``series``.
    """
    out = series[["folder", "study_instance_uid"]].copy()
    ref = segs.get("referenced_series_uid", pd.Series(dtype=object)).dropna().astype(str)
    # one SEG may reference several series ("uid1\\uid2")
    counts = ref.str.split("\\").explode().value_counts()
    out["n_seg"] = [int(counts.get(str(uid), 0)) for uid in out.index]
    if labels is None:
        out["n_label_rows"] = 0
    elif "series_instance_uid" in labels.columns:
        lc = labels["series_instance_uid"].astype(str).value_counts()
        out["n_label_rows"] = [int(lc.get(str(uid), 0)) for uid in out.index]
    elif "study_instance_uid" in labels.columns:
        lc = labels["study_instance_uid"].astype(str).value_counts()
        out["n_label_rows"] = [int(lc.get(str(s), 0)) for s in out["study_instance_uid"]]
    else:
        out["n_label_rows"] = 0
    return out


def _pixel_findings(ds: pydicom.Dataset, rel: str) -> list[Finding]:
    """Geometry from the pixel data and HU sanity of one sampled slice."""
    out: list[Finding] = []
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed and "PixelData" in ds:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = rows * cols * frames * samples * bits // 8
        found = len(ds["PixelData"].value or b"")
        if found not in (expected, expected + 1):  # one pad byte for odd lengths
            return [
                Finding(
                    "pixel_geometry",
                    Severity.CRITICAL,
                    rel,
                    "Rows/Columns (0028,0010)/(0028,0011)",
                    f"Rows {rows} x Columns {cols} x {frames} frame(s) at {bits} bits need "
                    f"{expected} bytes of pixel data, found {found}",
                )
            ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder error is a finding
        return [
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                "PixelData (7FE0,0010)",
                f"pixel data cannot be decoded: {type(exc).__name__}",
            )
        ]
    if arr.ndim != 2 or arr.shape != (rows, cols):
        out.append(
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                "Rows/Columns (0028,0010)/(0028,0011)",
                f"expected a pixel array of {rows} x {cols} from Rows/Columns, "
                f"found shape {tuple(arr.shape)}",
            )
        )
        return out
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        out.append(
            Finding(
                "hu_range",
                Severity.MAJOR,
                rel,
                "RescaleSlope/RescaleIntercept (0028,1053)/(0028,1052)",
                "missing; stored values cannot be mapped to Hounsfield units",
            )
        )
        return out
    hu = arr.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lo, hi = float(hu.min()), float(hu.max())
    if lo < HU_MIN or hi > HU_MAX:
        out.append(
            Finding(
                "hu_range",
                Severity.MAJOR,
                rel,
                "PixelData (7FE0,0010)",
                f"HU range {lo:.0f} to {hi:.0f} exceeds the plausible CT range "
                f"{HU_MIN:.0f} to {HU_MAX:.0f}; check RescaleSlope/RescaleIntercept",
            )
        )
    if hi - lo == 0:
        out.append(
            Finding(
                "hu_range",
                Severity.MAJOR,
                rel,
                "PixelData (7FE0,0010)",
                f"every pixel has the same value ({lo:.0f} HU); expected an image",
            )
        )
    return out


def _sample_paths(images: pd.DataFrame) -> set[str]:
    """First, middle and last slice (by position) of each series."""
    chosen: set[str] = set()
    for _, group in images.groupby("series_instance_uid", sort=False, dropna=True):
        z = pd.to_numeric(group.get("image_position_z"), errors="coerce")
        ordered = group.assign(_z=z).sort_values("_z")["path"].tolist()
        if ordered:
            chosen.update({ordered[0], ordered[len(ordered) // 2], ordered[-1]})
    return chosen


def _pixel_sha256(ds: pydicom.Dataset) -> str | None:
    if "PixelData" not in ds:
        return None
    value = ds["PixelData"].value
    if value is None:
        return None
    return hashlib.sha256(bytes(value)).hexdigest()


def build_training_manifest(
    root: str | Path, *, progress: Progress | None = None
) -> dict[str, list[str]]:
    """Fingerprints of a training set for the leakage check.

    Parameters
    ----------
    root : str or Path
        Folder with the training DICOM files (searched recursively; files
        that are not DICOM are skipped).
    progress : callable, optional
        ``progress(done, total, path)``.

    Returns
    -------
    dict
        ``{"sop_instance_uids": [...], "pixel_sha256": [...]}``, sorted and
        de-duplicated; the pixel hash is the SHA-256 of the raw Pixel Data
        element value.
    """
    base = Path(root)
    paths = sorted(p for p in base.rglob("*") if p.is_file())
    uids: set[str] = set()
    hashes: set[str] = set()
    for i, path in enumerate(paths):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid:
            uids.add(uid)
        digest = _pixel_sha256(ds)
        if digest:
            hashes.add(digest)
        if progress is not None:
            progress(i + 1, len(paths), path.relative_to(base).as_posix())
    return {"sop_instance_uids": sorted(uids), "pixel_sha256": sorted(hashes)}


def _read_labels(root: Path, labels: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    if isinstance(labels, pd.DataFrame):
        return labels
    path = Path(labels) if labels is not None else root / "reference" / "labels.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str)


def run_quality_checks(
    root: str | Path,
    index: _IndexLike,
    *,
    labels: pd.DataFrame | str | Path | None = None,
    expected_modality: str = "CT",
    training_manifest: Mapping[str, Iterable[str]] | None = None,
    suite: str = DEFAULT_SUITE,
    progress: Progress | None = None,
) -> QualityReport:
    """Run every data-quality check of a test set.

    Parameters
    ----------
    root : str or Path
        Test-set root (paths in the index are relative to it).
    index : DicomIndex
        From :func:`workbench.dicom.index.index_folder`: ``files`` (and, when
        present, ``unreadable``).
    labels : DataFrame, path or None
        Reference labels; default ``ROOT/reference/labels.csv``.
    expected_modality : str
        Modality every image file must have.
    training_manifest : mapping, optional
        ``{"sop_instance_uids": [...], "pixel_sha256": [...]}`` of the model's
        training data (:func:`build_training_manifest`); enables the leakage check.
    suite : str
        Suite name; one of :data:`SUITES`.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    QualityReport
        ``report.blocking`` lists critical findings; ``report.raise_if_blocking()``
        raises :class:`~workbench.errors.QualityGateError` listing what to fix.

    Notes
    -----
    Checks: ``readability``, ``required_tags``, ``modality``, ``geometry_range``,
    ``uid_uniqueness``, ``orientation_consistency``, ``series_completeness``,
    ``demographics``, ``reference_standard`` (great-expectations suites);
    ``pixel_geometry``, ``hu_range`` (first, middle and last slice of each
    series), ``burned_in_annotation``, ``phi`` (every file) and ``leakage``.
    """
    if suite not in SUITES:
        raise QualityGateError(f"Unknown data-quality suite {suite!r}; expected one of {SUITES}.")
    base = Path(root)
    files: pd.DataFrame = index.files.copy()
    findings: list[Finding] = []
    checks: list[str] = []
    total_steps = 5

    def step(done: int, message: str) -> None:
        if progress is not None:
            progress(done, total_steps, message)

    # 1 unreadable files
    checks.append("readability")
    unreadable = getattr(index, "unreadable", None)
    if isinstance(unreadable, pd.DataFrame):
        for _, row in unreadable.iterrows():
            findings.append(
                Finding(
                    "readability",
                    Severity.CRITICAL,
                    str(row.get("path", "")),
                    "",
                    f"not a readable DICOM file: {row.get('reason', 'unknown reason')}; "
                    "remove it or replace it with the complete file",
                )
            )
    step(1, "index read")

    # 2 great-expectations suites
    path_of_row: Callable[[Any], str] = lambda i: str(files.at[i, "path"])  # noqa: E731
    findings += gxs.run_suite(
        files, gxs.file_suite(expected_modality), name="files", path_of=path_of_row
    )
    is_seg = _is_seg(files) if not files.empty else pd.Series(dtype=bool)
    images = files[~is_seg] if not files.empty else files
    segs = files[is_seg] if not files.empty else files
    findings += gxs.run_suite(
        images, gxs.image_suite(expected_modality), name="images", path_of=path_of_row
    )
    needed = {"series_instance_uid", "image_orientation", "image_position_z", "path"}
    if not images.empty and needed <= set(images.columns):
        for col in ("image_position_x", "image_position_y"):
            if col not in images.columns:
                images = images.assign(**{col: 0.0})
        series = series_table(images)
        folder_of: Callable[[Any], str] = lambda uid: str(series.at[uid, "folder"])  # noqa: E731
        findings += gxs.run_suite(series, gxs.series_suite(), name="series", path_of=folder_of)
        cases = case_table(series, segs, _read_labels(base, labels))
        findings += gxs.run_suite(cases, gxs.case_suite(), name="cases", path_of=folder_of)
    checks += [
        "required_tags",
        "modality",
        "geometry_range",
        "uid_uniqueness",
        "orientation_consistency",
        "series_completeness",
        "demographics",
        "reference_standard",
    ]
    step(2, "great-expectations suites")

    # 3 per-file header and pixel checks
    sampled = _sample_paths(images) if not images.empty and "path" in images else set()
    train_uids = set(training_manifest.get("sop_instance_uids", ())) if training_manifest else set()
    train_pix = set(training_manifest.get("pixel_sha256", ())) if training_manifest else set()
    paths = files["path"].astype(str).tolist() if "path" in files else []
    # images first, so that a SEG inherits the de-identification options of its study
    seg_paths = set(segs["path"].astype(str)) if "path" in segs else set()
    paths.sort(key=lambda p: (p in seg_paths, p))
    study_options: dict[str, set[str]] = {}
    for k, rel in enumerate(paths):
        need_pixels = rel in sampled or training_manifest is not None
        try:
            ds = pydicom.dcmread(base / rel, stop_before_pixels=not need_pixels)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            findings.append(
                Finding("readability", Severity.CRITICAL, rel, "", f"cannot be read: {exc}")
            )
            continue
        study = str(ds.get("StudyInstanceUID", "") or "")
        own = declared_options(ds)
        if own:
            study_options.setdefault(study, set()).update(own)
        findings += check_phi(ds, rel, inherited_options=study_options.get(study, ()))
        if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
            findings.append(
                Finding(
                    "burned_in_annotation",
                    Severity.CRITICAL,
                    rel,
                    "BurnedInAnnotation (0028,0301)",
                    "expected NO: the image has annotations burned into the pixels, which "
                    "may identify the patient",
                )
            )
        if rel in sampled:
            findings += _pixel_findings(ds, rel)
        if training_manifest is not None:
            if str(ds.get("SOPInstanceUID", "")) in train_uids:
                findings.append(
                    Finding(
                        "leakage",
                        Severity.CRITICAL,
                        rel,
                        "SOPInstanceUID (0008,0018)",
                        "the same SOP Instance UID is in the training-set manifest; a test "
                        "image must not have been used for training",
                    )
                )
            digest = _pixel_sha256(ds)
            if digest is not None and digest in train_pix:
                findings.append(
                    Finding(
                        "leakage",
                        Severity.CRITICAL,
                        rel,
                        "PixelData (7FE0,0010)",
                        "pixel data identical to an image of the training-set manifest",
                    )
                )
        if progress is not None and (k + 1) % 50 == 0:
            progress(3, total_steps, f"checked {k + 1} of {len(paths)} files")
    checks += ["pixel_geometry", "hu_range", "burned_in_annotation", "phi"]
    if training_manifest is not None:
        checks.append("leakage")
    step(5, "done")
    return QualityReport.build(findings, checks_run=checks, n_files=len(paths), suite=suite)

"""Data-quality checks of a test set: the entry :func:`run_quality_checks`.

A suite (:data:`SUITE_DEFINITIONS`) fixes the modalities a test set may hold; the
checks each image gets follow its modality family (:data:`MODALITY_CATEGORIES`):
cross-sectional series (CT, MR, PT) get the Image Plane and slice-spacing checks,
and CT the HU range; projection images (CR, DX, MG) Pixel Spacing or Imager Pixel
Spacing, MONOCHROME1 and VOI checks; ultrasound its calibrated regions. A
single-frame cross-sectional series is one case; every other image file is a case
of its own. The reference standard each case needs follows the protocol's task.

Table checks run as great-expectations suites (:mod:`workbench.quality.expectations`)
over the DICOM index and two derived tables (one row per series, one per case).
What GX cannot express is checked here on the files themselves: pixel geometry
(frames and samples per pixel), decodability and value sanity on sampled frames,
per-frame geometry of enhanced multi-frame objects, burned-in annotation (header,
and OCR with :mod:`workbench.quality.burned_in`), the PS3.15 confidentiality
profile (:mod:`workbench.quality.phi`) and leakage against a registered
training-set manifest. Objects that are not images (DICOMDIR, SR, KOS, PR, RT) and
files that are not DICOM are reported as what they are and do not block.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from workbench.dicom.index import FILE_COLUMNS, KINDS
from workbench.dicom.pixels import (
    decode_frames,
    frame_geometry,
    frame_shape,
    read_dicom,
)
from workbench.errors import DicomReadError, QualityGateError
from workbench.quality import expectations as gxs
from workbench.quality.findings import Finding, QualityReport, Severity, attribute
from workbench.quality.phi import check_phi, declared_options

__all__ = [
    "DEFAULT_SUITE",
    "MODALITY_CATEGORIES",
    "SUITES",
    "SUITE_DEFINITIONS",
    "Suite",
    "case_frame",
    "suite_definition",
    "build_training_manifest",
    "case_table",
    "run_quality_checks",
    "series_table",
]

MODALITY_CATEGORIES: dict[str, frozenset[str]] = {
    "cross_sectional": frozenset({"CT", "MR", "PT"}),
    "projection": frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA", "RG"}),
    "ultrasound": frozenset({"US", "IVUS"}),
}
"""Modalities whose images share expectations; anything else (NM, OT, SC...) is ``other``."""


@dataclass(frozen=True, slots=True)
class Suite:
    """A data-quality suite: the modalities a test set checked with it may hold.

    Parameters
    ----------
    name : str
        What a protocol's ``data_quality_suite`` names.
    modalities : frozenset of str
        Modality (0008,0060) values the image series may have; a series with
        another modality gets one critical ``modality`` finding.
    title : str
        One line for listings.
    """

    name: str
    modalities: frozenset[str]
    title: str


_PROJECTION = frozenset({"CR", "DX", "MG"})
_ALL_IMAGES = frozenset({"CT", "MR", "PT", "NM", "US", "OT", "SC", "XC", "ES"}) | _PROJECTION
SUITE_DEFINITIONS: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("ct-test-set-v1", frozenset({"CT"}), "CT volumes (HU, slice geometry)"),
        Suite("mr-test-set-v1", frozenset({"MR"}), "MR volumes (slice geometry)"),
        Suite(
            "projection-test-set-v1",
            _PROJECTION,
            "CR/DX/MG projection images (pixel spacing, MONOCHROME1, VOI)",
        ),
        Suite("us-test-set-v1", frozenset({"US"}), "ultrasound (colour, regions, burned-in text)"),
        Suite("nm-pt-test-set-v1", frozenset({"NM", "PT"}), "nuclear medicine and PET"),
        Suite("mixed-test-set-v1", _ALL_IMAGES, "any image modality, each with its own checks"),
    )
}
"""Every suite by name."""

DEFAULT_SUITE = "ct-test-set-v1"
SUITES = tuple(SUITE_DEFINITIONS)
"""Suite names a protocol's ``data_quality_suite`` may name."""

_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dic"}


def suite_definition(name: str) -> Suite:
    """The suite called ``name``.

    Raises
    ------
    QualityGateError
        Unknown name; the message lists the suites and the closest match.
    """
    if name in SUITE_DEFINITIONS:
        return SUITE_DEFINITIONS[name]
    close = difflib.get_close_matches(name, SUITES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise QualityGateError(
        f"Unknown data-quality suite {name!r}; expected one of {', '.join(SUITES)}.{hint}"
    )


SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
HU_MIN, HU_MAX = -2048.0, 4095.0

Progress = Callable[[int, int, str], None]


class _IndexLike(Protocol):
    @property
    def files(self) -> pd.DataFrame: ...


def _is_seg(files: pd.DataFrame) -> pd.Series:
    if "kind" in files.columns:
        return files["kind"].astype(str) == "segmentation"
    by_class = (
        files.get("sop_class_uid", pd.Series("", index=files.index))
        .astype(str)
        .isin([SEG_STORAGE, LABEL_MAP_SEG_STORAGE])
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


_MAX_DECODE_BYTES = 1 << 31  # never decode an object that declares more than 2 GiB


def _pixel_findings(
    ds: pydicom.Dataset, rel: str, *, category: str, modality: str
) -> tuple[list[Finding], np.ndarray | None]:
    """Pixel geometry (frames and samples included), decodability and value sanity.

    Returns the findings and the decoded sample frames ``(n, rows, columns, samples)``
    (first, middle and last frame), or None when nothing could be decoded.
    """
    out: list[Finding] = []
    pixel_attr = attribute("PixelData")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return [
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                pixel_attr,
                "an image object without pixel data; expected Pixel Data",
                "present",
                "absent",
            )
        ], None
    n_frames, rows, cols, samples = frame_shape(ds)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = rows * cols * n_frames * samples * max(bits, 1) // 8
    if bits == 1:
        expected = -(-rows * cols * n_frames * samples // 8)
    shape_attr = f"{attribute('Rows')}/{attribute('Columns')}"
    if expected > _MAX_DECODE_BYTES or rows <= 0 or cols <= 0:
        return [
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                shape_attr,
                f"declared matrix {rows} x {cols} x {n_frames} frame(s) x {samples} sample(s) "
                "is empty or larger than 2 GiB; not decoded",
                "1 to 2 GiB of pixel data",
                f"{expected} bytes",
            )
        ], None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed and "PixelData" in ds:
        found = len(ds["PixelData"].value or b"")
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            expected = rows * cols * n_frames * 2 * bits // 8
        if found > expected + 1:
            # trailing padding after the last frame: decodable, worth a note
            out.append(
                Finding(
                    "pixel_geometry",
                    Severity.MINOR,
                    rel,
                    pixel_attr,
                    f"pixel data holds {found - expected} bytes after the last frame "
                    f"({expected} needed); they are ignored",
                    f"{expected} bytes",
                    f"{found} bytes",
                )
            )
        elif found < expected:  # (one pad byte for odd lengths is allowed above)
            return [
                Finding(
                    "pixel_geometry",
                    Severity.CRITICAL,
                    rel,
                    shape_attr,
                    f"Rows {rows} x Columns {cols} x {n_frames} frame(s) x {samples} sample(s) "
                    f"at {bits} bits need {expected} bytes of pixel data, found {found}",
                    f"{expected} bytes",
                    f"{found} bytes",
                )
            ], None
    wanted = sorted({0, n_frames // 2, n_frames - 1})
    try:
        arr = decode_frames(ds, frames=wanted if n_frames > 1 else None)
    except DicomReadError as exc:
        return [
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                pixel_attr,
                str(exc),
                "decodable pixel data",
                "not decodable",
            )
        ], None
    want_samples = 3 if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR" else samples
    if arr.shape[1:] != (rows, cols, want_samples):
        out.append(
            Finding(
                "pixel_geometry",
                Severity.CRITICAL,
                rel,
                shape_attr,
                f"expected frames of {rows} x {cols} x {want_samples} from Rows, Columns and "
                f"SamplesPerPixel, found {tuple(arr.shape[1:])}",
                f"{rows} x {cols} x {want_samples}",
                "x".join(str(v) for v in arr.shape[1:]),
            )
        )
        return out, None
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo == 0:
        out.append(
            Finding(
                "pixel_values",
                Severity.MAJOR,
                rel,
                pixel_attr,
                f"every pixel of the sampled frame(s) has the same value ({lo:g}); "
                "expected an image",
                "varying values",
                "constant",
            )
        )
    if modality == "CT" and category == "cross_sectional":
        out += _hu_findings(ds, rel, lo, hi)
    return out, arr


def _hu_findings(ds: pydicom.Dataset, rel: str, lo: float, hi: float) -> list[Finding]:
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is None or intercept is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        item = shared[0] if shared else None
        pvt = item.get("PixelValueTransformationSequence") if item is not None else None
        if pvt:
            slope, intercept = pvt[0].get("RescaleSlope"), pvt[0].get("RescaleIntercept")
    if slope is None or intercept is None:
        return [
            Finding(
                "hu_range",
                Severity.MAJOR,
                rel,
                f"{attribute('RescaleSlope')}/{attribute('RescaleIntercept')}",
                "missing; stored values cannot be mapped to Hounsfield units",
                "present",
                "absent",
            )
        ]
    a, b = float(slope), float(intercept)
    hu_lo, hu_hi = sorted((lo * a + b, hi * a + b))
    if hu_lo < HU_MIN or hu_hi > HU_MAX:
        return [
            Finding(
                "hu_range",
                Severity.MAJOR,
                rel,
                attribute("PixelData"),
                f"HU range {hu_lo:.0f} to {hu_hi:.0f} exceeds the plausible CT range "
                f"{HU_MIN:.0f} to {HU_MAX:.0f}; check RescaleSlope/RescaleIntercept",
                f"{HU_MIN:.0f} to {HU_MAX:.0f} HU",
                f"{hu_lo:.0f} to {hu_hi:.0f} HU",
            )
        ]
    return []


def _frame_geometry_findings(ds: pydicom.Dataset, rel: str) -> list[Finding]:
    """Per-frame geometry of an enhanced (functional groups) cross-sectional object."""
    geometry = frame_geometry(ds)
    attr = "PerFrameFunctionalGroupsSequence > " + attribute("PlanePositionSequence")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if geometry.source != "functional-groups" or n_frames < 2:
        return []
    if geometry.positions is None or geometry.orientations is None:
        return [
            Finding(
                "frame_geometry",
                Severity.CRITICAL,
                rel,
                attr,
                "expected a Plane Position and Plane Orientation for every frame, found them "
                "missing for some frames",
                "every frame",
                "missing",
            )
        ]
    if geometry.pixel_spacing is None:
        return [
            Finding(
                "frame_geometry",
                Severity.CRITICAL,
                rel,
                "SharedFunctionalGroupsSequence > " + attribute("PixelMeasuresSequence"),
                "expected Pixel Spacing in the Pixel Measures functional group, found none",
                "present",
                "absent",
            )
        ]
    out: list[Finding] = []
    if geometry.n_orientations > 1:
        out.append(
            Finding(
                "frame_geometry",
                Severity.CRITICAL,
                rel,
                attribute("PlaneOrientationSequence"),
                f"frames have {geometry.n_orientations} different orientations; expected 1",
                "1",
                str(geometry.n_orientations),
            )
        )
        return out
    steps = geometry.steps()
    duplicates = int(np.sum(np.abs(steps) <= 1e-3))
    positive = steps[steps > 1e-3]
    stacked = len(positive) > 0
    if stacked and duplicates:
        # several frames per position (e.g. temporal or stacked dimensions)
        return out
    if len(positive) >= 2:
        s = float(np.median(positive))
        deviation = float(np.max(np.abs(positive / s - 1.0)))
        if deviation > 0.05:
            out.append(
                Finding(
                    "frame_geometry",
                    Severity.MAJOR,
                    rel,
                    attr,
                    f"frame spacing not uniform: largest relative deviation {deviation:.3f}; "
                    "expected <= 0.05",
                    "<= 0.05",
                    f"{deviation:.3f}",
                )
            )
    return out


def _sample_paths(images: pd.DataFrame) -> set[str]:
    """First, middle and last slice (by position) of each cross-sectional series; every
    other image (projection, US, multi-frame, secondary capture) is a case of its own."""
    chosen: set[str] = set()
    for _, group in images.groupby("series_instance_uid", sort=False, dropna=False):
        volume = group[group["_category"] == "cross_sectional"]
        volume = volume[volume["_frames"] <= 1]
        rest = group.drop(volume.index)
        chosen.update(rest["path"].astype(str))
        if not volume.empty:
            z = pd.to_numeric(volume.get("image_position_z"), errors="coerce")
            ordered = volume.assign(_z=z).sort_values("_z")["path"].tolist()
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


def _category(modality: Any, image_type: Any, frames: Any) -> str:
    mod = str(modality or "").upper()
    if "LOCALIZER" in str(image_type or "").upper():
        return "projection"
    for name, members in MODALITY_CATEGORIES.items():
        if mod in members:
            return name
    return "other"


def _non_image_findings(files: pd.DataFrame) -> list[Finding]:
    out: list[Finding] = []
    for row in files.itertuples(index=False):
        kind = str(row.kind)
        out.append(
            Finding(
                "non_image_object",
                Severity.INFO,
                str(row.path),
                attribute("SOPClassUID"),
                f"{KINDS.get(kind, kind)}: not an image; listed, PHI-checked, not "
                "checked as an image and not needed by the protocol's task",
                "image or SEG",
                str(row.sop_class_name or kind),
            )
        )
    return out


def _unreadable_findings(unreadable: pd.DataFrame) -> list[Finding]:
    out: list[Finding] = []
    for _, row in unreadable.iterrows():
        rel = str(row.get("path", ""))
        reason = str(row.get("reason", "unknown reason"))
        suffix = Path(rel).suffix.lower()
        stray = reason.startswith("not DICOM (") and (
            suffix not in _DICOM_SUFFIXES or reason.startswith("not DICOM (ZIP")
        )
        if stray and not (suffix == "" and "text" not in reason):
            what = reason[len("not DICOM (") : -1]
            out.append(
                Finding(
                    "non_dicom_file",
                    Severity.MINOR,
                    rel,
                    "file",
                    f"{what}, not DICOM: listed and hashed, not part of the images",
                    "DICOM file",
                    what,
                )
            )
            continue
        out.append(
            Finding(
                "readability",
                Severity.CRITICAL,
                rel,
                "file",
                f"not a readable DICOM file: {reason}; remove it or replace it with the "
                "complete file",
                "readable DICOM",
                reason.split(":")[0],
            )
        )
    return out


def _text(value: Any) -> str:
    """A table cell as text, ``""`` for a missing value."""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):  # array-like values are present
        pass
    return str(value)


def _modality_findings(images: pd.DataFrame, suite: Suite) -> list[Finding]:
    """One finding per series (and unexpected modality) outside the suite's modalities."""
    out: list[Finding] = []
    expected = ", ".join(sorted(suite.modalities))
    keys = images[["series_instance_uid", "modality"]].astype(object).fillna("")
    for (series, modality), group in images.groupby(
        [keys["series_instance_uid"], keys["modality"]], sort=True
    ):
        if not modality or modality in suite.modalities:
            continue
        paths = group["path"].astype(str).tolist()
        where = paths[0] if len(paths) == 1 else str(Path(paths[0]).parent.as_posix())
        extra = f" in {len(paths)} files of the series" if len(paths) > 1 else ""
        out.append(
            Finding(
                "modality",
                Severity.CRITICAL,
                where,
                attribute("Modality"),
                f"expected Modality {expected}, found {modality!r}{extra}",
                expected,
                str(modality),
                str(series),
            )
        )
    return out


def case_frame(
    images: pd.DataFrame,
    series: pd.DataFrame,
    segs: pd.DataFrame,
    labels: pd.DataFrame | None,
    references: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One row per case with how much reference standard it has.

    ``references`` (reference segmentations per series UID, found by content in the
    protocol's format: SEG, RTSTRUCT or NIfTI) replaces the count of DICOM SEGs that
    reference each series.

    A single-frame cross-sectional series is one case (a volume); every other
    image file (projection image, ultrasound, multi-frame object, secondary
    capture) is a case of its own.

    Returns
    -------
    DataFrame
        Columns ``path, series_instance_uid, sop_instance_uid, study_instance_uid,
        n_seg, n_label_rows``; ``path`` is the series folder or the file.
    """
    volume_series = set(series.index.astype(str))
    records: list[dict[str, Any]] = []
    for uid, row in series.iterrows():
        records.append(
            {
                "path": row["folder"],
                "series_instance_uid": str(uid),
                "sop_instance_uid": None,
                "study_instance_uid": row["study_instance_uid"],
            }
        )
    single = images[~images["series_instance_uid"].astype(str).isin(volume_series)]
    for row in single.itertuples(index=False):
        records.append(
            {
                "path": str(row.path),
                "series_instance_uid": row.series_instance_uid,
                "sop_instance_uid": row.sop_instance_uid,
                "study_instance_uid": row.study_instance_uid,
            }
        )
    out = pd.DataFrame.from_records(
        records,
        columns=["path", "series_instance_uid", "sop_instance_uid", "study_instance_uid"],
    )
    ref = segs.get("referenced_series_uid", pd.Series(dtype=object)).dropna().astype(str)
    counts = ref.str.split("\\").explode().value_counts()
    if references is not None:
        counts = pd.Series(references, dtype="int64")
    out["n_seg"] = [int(counts.get(str(uid), 0)) for uid in out["series_instance_uid"]]
    n_label = [0] * len(out)
    if labels is not None:
        by: dict[str, pd.Series] = {
            col: labels[col].astype(str).value_counts()
            for col in ("sop_instance_uid", "series_instance_uid", "study_instance_uid")
            if col in labels.columns
        }
        for i, row in enumerate(out.itertuples(index=False)):
            for col, lc in by.items():
                key = getattr(row, col)
                if key is not None and int(lc.get(str(key), 0)):
                    n_label[i] = int(lc.get(str(key), 0))
                    break
    out["n_label_rows"] = n_label
    return out


def run_quality_checks(
    root: str | Path,
    index: _IndexLike,
    *,
    labels: pd.DataFrame | str | Path | None = None,
    expected_modality: str | None = None,
    training_manifest: Mapping[str, Iterable[str]] | None = None,
    suite: str = DEFAULT_SUITE,
    task: str | None = None,
    ocr: bool = False,
    progress: Progress | None = None,
    references: Mapping[str, int] | None = None,
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
    expected_modality : str, optional
        Restrict the suite's modalities to this one (kept for callers that name it).
    training_manifest : mapping, optional
        ``{"sop_instance_uids": [...], "pixel_sha256": [...]}`` of the model's
        training data (:func:`build_training_manifest`); enables the leakage check.
    suite : str
        Suite name; one of :data:`SUITES` (what a protocol's ``data_quality_suite``
        names). The suite fixes the modalities the set may hold.
    task : str, optional
        The protocol's task (``segmentation``, ``classification``, ``detection``):
        which reference standard every case needs. None requires SEG and labels.
    ocr : bool
        Also look for burned-in text in the pixels with OCR
        (:mod:`workbench.quality.burned_in`); slower, off by default.
    progress : callable, optional
        ``progress(done, total, message)``.
    references : mapping of str to int, optional
        Reference segmentations per image series, found by content in the protocol's
        format (SEG, RTSTRUCT, NIfTI); default: the DICOM SEGs that reference each series.

    Returns
    -------
    QualityReport
        ``report.blocking`` lists critical findings; ``report.raise_if_blocking()``
        raises :class:`~workbench.errors.QualityGateError` listing what to fix.

    Notes
    -----
    Checks: ``readability``, ``non_dicom_file``, ``non_image_object``,
    ``required_tags``, ``modality`` (one finding per series), ``geometry_range``,
    ``photometric``, ``voi_lut``, ``uid_uniqueness``, ``orientation_consistency``,
    ``series_completeness`` (single-frame cross-sectional series only),
    ``demographics``, ``reference_standard`` (great-expectations suites);
    ``pixel_geometry``, ``pixel_values``, ``hu_range`` (CT only),
    ``frame_geometry`` (enhanced multi-frame), ``burned_in_annotation``
    (header, and pixels with ``ocr=True``), ``phi`` and ``leakage``.
    """
    definition = suite_definition(suite)
    if expected_modality is not None:
        definition = Suite(definition.name, frozenset({expected_modality}), definition.title)
    base = Path(root)
    files: pd.DataFrame = index.files.copy()
    findings: list[Finding] = []
    checks: list[str] = []
    total_steps = 5

    def step(done: int, message: str) -> None:
        if progress is not None:
            progress(done, total_steps, message)

    # 1 unreadable and non-DICOM files
    checks += ["readability", "non_dicom_file", "non_image_object"]
    unreadable = getattr(index, "unreadable", None)
    if isinstance(unreadable, pd.DataFrame):
        findings += _unreadable_findings(unreadable)
    step(1, "index read")

    # 2 great-expectations suites
    if "kind" not in files.columns:
        files["kind"] = np.where(_is_seg(files), "segmentation", "image") if len(files) else []
    files["kind"] = files["kind"].fillna("image").astype(str)
    for col in FILE_COLUMNS:
        if col not in files.columns:
            files[col] = None
    is_seg = files["kind"] == "segmentation"
    is_image = files["kind"] == "image"
    objects = files[~is_seg & ~is_image]
    findings += _non_image_findings(objects)
    path_of_row: Callable[[Any], str] = lambda i: str(files.at[i, "path"])  # noqa: E731
    findings += gxs.run_suite(
        files[is_seg | is_image], gxs.file_suite(), name="files", path_of=path_of_row
    )
    images = files[is_image].copy()
    segs = files[is_seg]
    frames = pd.to_numeric(images["number_of_frames"], errors="coerce").fillna(1).astype(int)
    images["_frames"] = frames
    images["_category"] = [
        _category(m, t, f)
        for m, t, f in zip(images["modality"], images["image_type"], frames, strict=True)
    ]
    images["pixel_spacing"] = gxs.pixel_spacing_pair(images)
    images["any_pixel_spacing"] = images["pixel_spacing_row"].where(
        images["pixel_spacing_row"].notna(), images["imager_pixel_spacing_row"]
    )
    findings += _modality_findings(images, definition)
    for group_name in gxs.CATEGORIES:
        subset = images[images["_category"] == group_name]
        if not subset.empty:
            findings += gxs.run_suite(
                subset.drop(columns=["_frames", "_category"]),
                gxs.image_suite(group_name),
                name=f"images-{group_name}",
                path_of=path_of_row,
            )
    volumes = images[(images["_category"] == "cross_sectional") & (images["_frames"] <= 1)]
    series = series_table(volumes) if not volumes.empty else series_table(images.iloc[0:0])
    folder_of: Callable[[Any], str] = lambda uid: str(series.at[uid, "folder"])  # noqa: E731
    if not series.empty:
        # several series may share a folder: their findings name the series too
        findings += gxs.run_suite(
            series, gxs.series_suite(), name="series", path_of=folder_of, series_of=str
        )
    if not images.empty:
        cases = case_frame(images, series, segs, _read_labels(base, labels), references)
        case_path: Callable[[Any], str] = lambda i: str(cases.at[i, "path"])  # noqa: E731
        case_series: Callable[[Any], str] = lambda i: _text(  # noqa: E731
            cases.at[i, "series_instance_uid"]
        )
        findings += gxs.run_suite(
            cases, gxs.case_suite(task), name="cases", path_of=case_path, series_of=case_series
        )
    checks += [
        "required_tags",
        "modality",
        "geometry_range",
        "photometric",
        "voi_lut",
        "uid_uniqueness",
        "orientation_consistency",
        "series_completeness",
        "demographics",
        "reference_standard",
    ]
    step(2, "great-expectations suites")

    # 3 per-file header and pixel checks
    sampled = _sample_paths(images) if not images.empty else set()
    category_of = dict(zip(images["path"].astype(str), images["_category"], strict=True))
    train_uids = set(training_manifest.get("sop_instance_uids", ())) if training_manifest else set()
    train_pix = set(training_manifest.get("pixel_sha256", ())) if training_manifest else set()
    paths = files["path"].astype(str).tolist()
    # images first, so that a SEG inherits the de-identification options of its study
    seg_paths = set(segs["path"].astype(str))
    paths.sort(key=lambda p: (p in seg_paths, p))
    study_options: dict[str, set[str]] = {}
    ocr_reader = None
    if ocr:
        from workbench.quality import burned_in

        ocr_reader = burned_in
    for k, rel in enumerate(paths):
        need_pixels = rel in sampled or training_manifest is not None
        try:
            ds = read_dicom(base / rel, stop_before_pixels=not need_pixels)
        except DicomReadError as exc:
            findings.append(
                Finding("readability", Severity.CRITICAL, rel, "file", f"{exc}", "readable", "")
            )
            continue
        study = str(ds.get("StudyInstanceUID", "") or "")
        own = declared_options(ds)
        if own:
            study_options.setdefault(study, set()).update(own)
        findings += check_phi(ds, rel, inherited_options=study_options.get(study, ()))
        burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
        if burned == "YES":
            findings.append(
                Finding(
                    "burned_in_annotation",
                    Severity.CRITICAL,
                    rel,
                    attribute("BurnedInAnnotation"),
                    "expected NO: the image has annotations burned into the pixels, which "
                    "may identify the patient",
                    "NO",
                    "YES",
                )
            )
        category: str | None = category_of.get(rel)
        if category is not None:
            if category == "cross_sectional":
                findings += _frame_geometry_findings(ds, rel)
            if rel in sampled:
                found, decoded = _pixel_findings(
                    ds, rel, category=category, modality=str(ds.get("Modality", ""))
                )
                findings += found
                if ocr_reader is not None and decoded is not None and burned != "YES":
                    if ocr_reader.wants_ocr(ds, category=category):
                        findings += ocr_reader.burned_in_findings(ds, decoded, rel)
        if training_manifest is not None:
            if str(ds.get("SOPInstanceUID", "")) in train_uids:
                findings.append(
                    Finding(
                        "leakage",
                        Severity.CRITICAL,
                        rel,
                        attribute("SOPInstanceUID"),
                        "the same SOP Instance UID is in the training-set manifest; a test "
                        "image must not have been used for training",
                        "not in the training set",
                        "in the training set",
                    )
                )
            digest = _pixel_sha256(ds)
            if digest is not None and digest in train_pix:
                findings.append(
                    Finding(
                        "leakage",
                        Severity.CRITICAL,
                        rel,
                        attribute("PixelData"),
                        "pixel data identical to an image of the training-set manifest",
                        "not in the training set",
                        "in the training set",
                    )
                )
        if progress is not None and (k + 1) % 50 == 0:
            progress(3, total_steps, f"checked {k + 1} of {len(paths)} files")
    checks += [
        "pixel_geometry",
        "pixel_values",
        "hu_range",
        "frame_geometry",
        "burned_in_annotation",
        "phi",
    ]
    if ocr:
        checks.append("burned_in_text")
    if training_manifest is not None:
        checks.append("leakage")
    step(5, "done")
    return QualityReport.build(
        findings, checks_run=checks, n_files=len(paths), suite=definition.name
    )

"""Reference masks from NIfTI and NRRD files, aligned with a DICOM series through the affine.

Research datasets often hand in their reference standard as NIfTI (``.nii``,
``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) label maps instead of DICOM SEG. Such a
file carries its own voxel grid: an affine from voxel indices to millimetres in
**RAS** (NIfTI, and NRRD with ``space: right-anterior-superior``) or **LPS** (NRRD
with ``space: left-posterior-superior``, the DICOM patient system, PS3.3
C.7.6.2.1.1). :func:`read_reference_mask` maps that grid onto the grid of the DICOM
series the mask belongs to (:class:`~workbench.dicom.volume.Volume`) and returns the
mask in the series' ``(z, y, x)`` array order.

The two grids must coincide voxel for voxel: the file's axes may be any permutation
and flip of the series' axes (a file written in RAS order from an LPS series is the
same grid), but nothing is resampled. A different orientation, spacing, a shift that
is not a whole number of voxels, or an extent that does not cover exactly the series
raises :class:`~workbench.errors.GeometryError` naming the expected and the found
value, because a reference that is silently resampled is a different reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import GeometryError, SegmentationError

__all__ = ["LabelImage", "read_label_image", "align_to_volume", "read_reference_mask"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENTATION_ATOL = 1e-3  # direction cosines
_SPACING_RTOL = 1e-3
_OFFSET_ATOL = 1e-2  # voxels
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_NRRD_SUFFIXES = (".nrrd", ".nhdr")


@dataclass(frozen=True, slots=True, eq=False)
class LabelImage:
    """A label map as stored in a NIfTI or NRRD file.

    Attributes
    ----------
    data : numpy.ndarray
        3-D array in the file's own axis order (index ``(i, j, k)``).
    affine_lps : numpy.ndarray
        4x4 map from ``(i, j, k, 1)`` to DICOM patient coordinates (LPS, mm).
    path : Path
    space : str
        The coordinate system the file declared (``"RAS"`` or ``"LPS"``).
    """

    data: np.ndarray
    affine_lps: np.ndarray
    path: Path
    space: str


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*_NIFTI_SUFFIXES, *_NRRD_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _squeeze_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise GeometryError(f"{path}: expected a 3-D label map. Found shape {data.shape}.")
    return data


def _read_nifti(path: Path) -> LabelImage:
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises several types for bad files
        raise SegmentationError(f"Cannot read {path} as NIfTI: {exc}") from exc
    affine = np.asarray(image.affine, dtype=np.float64)  # sform, else qform (RAS+)
    return LabelImage(_squeeze_3d(np.asarray(data), path), _RAS_TO_LPS @ affine, path, "RAS")


def _read_nrrd(path: Path) -> LabelImage:
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises several types for bad files
        raise SegmentationError(f"Cannot read {path} as NRRD: {exc}") from exc
    space = str(header.get("space", "")).lower()
    if space in ("right-anterior-superior", "ras"):
        to_lps, declared = _RAS_TO_LPS, "RAS"
    elif space in ("left-posterior-superior", "lps"):
        to_lps, declared = np.eye(4), "LPS"
    else:
        raise GeometryError(
            f"{path}: expected the NRRD field 'space' to be right-anterior-superior or "
            f"left-posterior-superior. Found {header.get('space')!r}."
        )
    directions = np.asarray(header.get("space directions"), dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if directions.shape != (3, 3) or origin.shape != (3,):
        raise GeometryError(
            f"{path}: expected 3 'space directions' of 3 values and a 3-value 'space origin'. "
            f"Found {directions.shape} and {origin.shape}."
        )
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # row a of 'space directions' is the step along axis a
    affine[:3, 3] = origin
    return LabelImage(_squeeze_3d(np.asarray(data), path), to_lps @ affine, path, declared)


def read_label_image(path: str | Path) -> LabelImage:
    """Read a NIfTI or NRRD label map with its affine in LPS.

    Parameters
    ----------
    path : str or Path
        ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.nhdr``.

    Returns
    -------
    LabelImage

    Raises
    ------
    SegmentationError
        Unknown suffix or unreadable file.
    GeometryError
        Not 3-D, or an NRRD without a usable space definition.
    """
    file = Path(path)
    suffix = _suffix(file)
    if suffix in _NIFTI_SUFFIXES:
        return _read_nifti(file)
    if suffix in _NRRD_SUFFIXES:
        return _read_nrrd(file)
    raise SegmentationError(
        f"{file}: expected a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file. "
        f"Found the suffix {suffix!r}."
    )


def _fmt(values: Sequence[float] | np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def align_to_volume(image: LabelImage, volume: Any) -> np.ndarray:
    """Put a label map's voxels on a DICOM series' ``(z, y, x)`` grid, without resampling.

    Parameters
    ----------
    image : LabelImage
        From :func:`read_label_image`.
    volume : Volume
        The series (:func:`workbench.dicom.volume.load_series`): ``affine``
        maps ``(x, y, z)`` indices to LPS, ``shape`` is ``(z, y, x)``.

    Returns
    -------
    numpy.ndarray
        The label values, shape ``volume.shape``, same dtype as the file.

    Raises
    ------
    GeometryError
        Orientation, spacing, voxel offset or extent differ; the message
        names the series' (expected) and the file's (found) values.
    """
    name = image.path
    vol_affine = np.asarray(volume.affine, dtype=np.float64)
    vol_dirs = vol_affine[:3, :3] / np.linalg.norm(vol_affine[:3, :3], axis=0)
    vol_spacing = np.linalg.norm(vol_affine[:3, :3], axis=0)  # (x, y, z)
    file_spacing = np.linalg.norm(image.affine_lps[:3, :3], axis=0)
    if np.any(file_spacing <= 0):
        raise GeometryError(f"{name}: the affine has a zero-length axis {image.affine_lps}.")
    file_dirs = image.affine_lps[:3, :3] / file_spacing
    overlap = vol_dirs.T @ file_dirs  # [series axis, file axis] cosines
    signed = np.round(overlap)
    is_permutation = (
        np.allclose(overlap, signed, atol=_ORIENTATION_ATOL)
        and np.all(np.abs(signed).sum(axis=0) == 1)
        and np.all(np.abs(signed).sum(axis=1) == 1)
    )
    if not is_permutation:
        raise GeometryError(
            f"{name}: expected the mask's axes along the series' axes (LPS direction "
            f"cosines of x, y, z: {np.round(vol_dirs.T, 4).tolist()}). Found "
            f"{np.round(file_dirs.T, 4).tolist()} ({image.space} file)."
        )
    axis_of = [int(np.argmax(np.abs(signed[:, a]))) for a in range(3)]  # series axis per file axis
    sign_of = [int(signed[axis_of[a], a]) for a in range(3)]
    expected_spacing = vol_spacing[axis_of]
    if not np.allclose(file_spacing, expected_spacing, rtol=_SPACING_RTOL, atol=1e-4):
        names = "".join("xyz"[p] for p in axis_of)
        raise GeometryError(
            f"{name}: expected voxel spacing {_fmt(expected_spacing)} mm along the series' "
            f"{names} axes. Found {_fmt(file_spacing)} mm."
        )
    start = np.linalg.solve(vol_affine, image.affine_lps[:, 3])[:3]  # file voxel 0 in series idx
    if not np.allclose(start, np.round(start), atol=_OFFSET_ATOL):
        raise GeometryError(
            f"{name}: expected the mask's voxel centres on the series' voxel centres. Found "
            f"its first voxel at series index (x, y, z) {_fmt(np.round(start, 3) + 0.0)}, not a "
            "whole number of voxels."
        )
    start_index = np.round(start).astype(int)
    vol_xyz = volume.shape[::-1]
    covered_low, covered_high = [0, 0, 0], [0, 0, 0]
    for a in range(3):
        p, n = axis_of[a], image.data.shape[a]
        ends = (start_index[p], start_index[p] + sign_of[a] * (n - 1))
        covered_low[p], covered_high[p] = min(ends), max(ends)
    if covered_low != [0, 0, 0] or covered_high != [n - 1 for n in vol_xyz]:
        raise GeometryError(
            f"{name}: expected a mask covering the series' grid, (x, y, z) indices "
            f"0..{vol_xyz[0] - 1}, 0..{vol_xyz[1] - 1}, 0..{vol_xyz[2] - 1}. Found it covering "
            + ", ".join(f"{lo}..{hi}" for lo, hi in zip(covered_low, covered_high, strict=True))
            + f" (file shape {tuple(image.data.shape)})."
        )
    data = np.asarray(image.data)
    for a in range(3):
        if sign_of[a] < 0:
            data = np.flip(data, axis=a)
    # Reorder the file axes to series (x, y, z), then to array order (z, y, x).
    order = [axis_of.index(p) for p in range(3)]
    xyz = np.transpose(data, order)
    return np.ascontiguousarray(np.transpose(xyz, (2, 1, 0)))


def read_reference_mask(
    path: str | Path, volume: Any, *, label: int | Sequence[int] | None = None
) -> np.ndarray:
    """Read a NIfTI/NRRD reference mask aligned with its DICOM series.

    Parameters
    ----------
    path : str or Path
        The label map (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``).
    volume : Volume
        The series it annotates (:func:`workbench.dicom.volume.load_series`).
    label : int or sequence of int, optional
        Only voxels with this label (or these labels); by default every
        non-zero voxel.

    Returns
    -------
    numpy.ndarray of bool, shape ``volume.shape`` (z, y, x)

    Raises
    ------
    GeometryError
        The file's grid is not the series' grid (see :func:`align_to_volume`).
    SegmentationError
        Unreadable file, non-integer label values, or an absent ``label``.

    Examples
    --------
    >>> mask = read_reference_mask("case0001_lesion.nii.gz", volume)  # doctest: +SKIP
    >>> mask.shape == volume.shape  # doctest: +SKIP
    True
    """
    image = read_label_image(path)
    values = align_to_volume(image, volume)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise SegmentationError(
                f"{image.path}: expected integer labels. Found non-integer values (a "
                "probability map?); threshold it into a label map first."
            )
    if label is None:
        return values != 0
    wanted = [label] if isinstance(label, int) else list(label)
    present = set(np.unique(values).tolist())
    missing = [v for v in wanted if v not in present]
    if missing:
        raise SegmentationError(
            f"{image.path}: expected the label(s) {missing}. Found labels "
            f"{sorted(int(v) for v in present)}."
        )
    return np.isin(values, wanted)

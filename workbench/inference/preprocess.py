"""From a DICOM volume to the tensor a model sees, and from its output back.

The steps follow the model's :class:`~workbench.inference.registry.InputSpec`:

1. the (z, y, x) volume in DICOM patient coordinates (LPS) becomes a MONAI
   ``MetaTensor`` whose affine maps array indices to RAS millimetres;
2. the array is reoriented to ``spec.orientation`` (an exact permutation and
   flip of axes, so that it can be undone without interpolation);
3. ``monai.transforms.Spacing`` resamples it to ``spec.target_spacing``;
4. ``monai.transforms.ScaleIntensityRange`` maps the HU window to [0, 1]
   (or, with ``normalization='min_max'``, the volume's own range);
5. the grey channel is repeated ``in_channels`` times.

A 2D model (``spatial_dims=2``) takes one projection radiograph (CR, DX, ...)
instead: :func:`load_projection_image` reads it (Modality LUT applied,
MONOCHROME1 inverted so that brighter is denser), and
:func:`preprocess_volume` normalises it, resamples it to ``target_spacing``
when given, resizes it to ``roi_size`` and repeats the channel.
:func:`load_case_image` reads a case's files as the spec asks (a series or
one image).

:func:`restore_original_grid` undoes 3 (linear interpolation at the source
voxel centres, the same values as MONAI's ``SpatialResample`` with border
padding) and 2 (exactly) for a model output, so that a predicted mask lies on
the original slices and can be written as DICOM SEG over the source images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRange, Spacing, SpatialResample
from pydicom.dataset import Dataset

from workbench.errors import DicomReadError, GeometryError
from workbench.inference.registry import InputSpec, IntensityNormalization

__all__ = [
    "VolumeLike",
    "ProjectionImage",
    "Preprocessed",
    "volume_affine_ras",
    "load_projection_image",
    "load_case_image",
    "preprocess_volume",
    "restore_original_grid",
]

# RAS world axis (0 = x towards R, 1 = y towards A, 2 = z towards S) and sign of each code.
_CODE_AXIS_SIGN = {
    "R": (0, 1.0),
    "L": (0, -1.0),
    "A": (1, 1.0),
    "P": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeLike(Protocol):
    """What preprocessing needs of :class:`workbench.dicom.volume.Volume`."""

    @property
    def array(self) -> np.ndarray: ...  # (z, y, x) HU

    @property
    def spacing(self) -> Any: ...  # (z, y, x) mm

    @property
    def origin(self) -> Any: ...  # (x, y, z) LPS mm of voxel (0, 0, 0)

    @property
    def direction(self) -> Any: ...  # 3x3, columns: x (row), y (column), z (slice) directions


@dataclass(frozen=True, slots=True)
class Preprocessed:
    """A volume prepared for a model.

    Attributes
    ----------
    image : MetaTensor
        (in_channels, *spatial) float32 in the model's orientation and spacing,
        values in [0, 1].
    original_shape : tuple of int
        (z, y, x) shape of the source volume; (rows, columns) of a 2D image.
    permutation : tuple of int
        Source array axis placed at each model axis (identity for 2D).
    flips : tuple of bool
        Whether each model axis was flipped after the permutation.
    reoriented_affine : numpy.ndarray
        4x4 affine (RAS) of the source volume after reorientation, before
        resampling (identity for 2D: a projection image has no patient grid).
    """

    image: MetaTensor
    original_shape: tuple[int, ...]
    permutation: tuple[int, ...]
    flips: tuple[bool, ...]
    reoriented_affine: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class ProjectionImage:
    """One projection radiograph (CR, DX, MG, ...) for a 2D model.

    Attributes
    ----------
    array : numpy.ndarray
        float32 (rows, columns), Modality LUT applied; MONOCHROME1 images are
        inverted so that, as in MONOCHROME2, higher values are brighter.
    spacing : tuple of 2 float or None
        (row, column) spacing in mm: Pixel Spacing, else Imager Pixel Spacing
        (PS3.3 10.7.1.3); ``None`` when neither holds two positive numbers.
    paths : tuple of Path
        The one file.
    headers : tuple of pydicom.Dataset
        Its data elements before Pixel Data.
    """

    array: np.ndarray
    spacing: tuple[float, float] | None
    paths: tuple[Path, ...]
    headers: tuple[Dataset, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        rows, columns = self.array.shape
        return int(rows), int(columns)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            values = [float(v) for v in ds.get(keyword) or []]
        except (TypeError, ValueError):
            continue
        if len(values) == 2 and all(v > 0 and np.isfinite(v) for v in values):
            return values[0], values[1]
    return None


def load_projection_image(paths: Iterable[str | Path]) -> ProjectionImage:
    """Read the one single-frame grey image of a 2D case.

    Parameters
    ----------
    paths : iterable of str or Path
        Exactly one DICOM file.

    Returns
    -------
    ProjectionImage

    Raises
    ------
    DicomReadError
        Not exactly one file, unreadable, multi-frame or colour pixel data.
    """
    from pydicom.pixels import apply_modality_lut

    files = [Path(p) for p in paths]
    if len(files) != 1:
        raise DicomReadError(f"Expected one image file for a 2D case. Found {len(files)} file(s).")
    path = files[0]
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for bad files and pixel data
        raise DicomReadError(f"Cannot read {path} as a DICOM image: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if frames != 1 or pixels.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(
            f"{path}: expected one grey frame (MONOCHROME1/2) for a 2D model. Found "
            f"{frames} frame(s), {photometric or 'no photometric interpretation'}, "
            f"pixel array shape {pixels.shape}."
        )
    array = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    if photometric == "MONOCHROME1":
        array = np.float32(array.max() + array.min()) - array
    header = ds[:0x7FE00010]
    header.file_meta = ds.file_meta
    return ProjectionImage(array, _pixel_spacing(ds), (path,), (header,))


def load_case_image(paths: Iterable[str | Path], spec: InputSpec) -> Any:
    """Read a case's files the way ``spec`` asks.

    Parameters
    ----------
    paths : iterable of str or Path
        The case's image files.
    spec : InputSpec
        ``spatial_dims`` 3: the files form one series
        (:func:`workbench.dicom.volume.load_series`); 2: one projection image
        (:func:`load_projection_image`).

    Returns
    -------
    Volume or ProjectionImage
        Either has ``paths`` and ``headers``; :func:`preprocess_volume` takes both.
    """
    if spec.spatial_dims == 2:
        return load_projection_image(paths)
    from workbench.dicom.volume import load_series

    return load_series(paths)


def volume_affine_ras(volume: VolumeLike) -> np.ndarray:
    """Affine from (z, y, x) array indices to RAS millimetres.

    Parameters
    ----------
    volume : VolumeLike
        ``spacing`` (z, y, x), ``origin`` (x, y, z) in DICOM LPS, ``direction``
        3x3 whose columns are the directions of increasing x (column index),
        y (row index) and z (slice index), as in DICOM Image Orientation
        (Patient) (PS3.3 C.7.6.2.1.1).

    Returns
    -------
    numpy.ndarray
        4x4 float64.
    """
    direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    sz, sy, sx = (float(s) for s in volume.spacing)
    affine = np.eye(4)
    affine[:3, 0] = direction[:, 2] * sz
    affine[:3, 1] = direction[:, 1] * sy
    affine[:3, 2] = direction[:, 0] * sx
    affine[:3, 3] = np.asarray(volume.origin, dtype=np.float64)
    return _LPS_TO_RAS @ affine


def _orientation_transform(
    affine: np.ndarray, axcodes: str
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Axis permutation and flips that bring an array to ``axcodes``."""
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0, keepdims=True)
    permutation: list[int] = []
    flips: list[bool] = []
    for code in axcodes:
        world_axis, sign = _CODE_AXIS_SIGN[code]
        weights = np.abs(columns[world_axis]).copy()
        weights[permutation] = -1.0
        source = int(np.argmax(weights))
        if weights[source] < 1e-3:
            raise GeometryError(
                f"Expected a volume whose axes can be aligned with {axcodes!r}. "
                f"Found direction columns {columns.round(3).tolist()}."
            )
        permutation.append(source)
        flips.append(bool(np.sign(columns[world_axis, source]) != sign))
    return tuple(permutation), tuple(flips)  # type: ignore[return-value]


def _normalise(data: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Map intensities to [0, 1] as ``spec.normalization`` says."""
    if spec.normalization == IntensityNormalization.MIN_MAX:
        low, high = data.min(), data.max()
        if float(high - low) <= 0.0:
            return torch.zeros_like(data)
        return (data - low) / (high - low)
    low_hu, high_hu = spec.hu_window
    return ((data - low_hu) / (high_hu - low_hu)).clamp(0.0, 1.0)


def _preprocess_projection(image: ProjectionImage, spec: InputSpec) -> Preprocessed:
    array = np.asarray(image.array, dtype=np.float32)
    if array.ndim != 2:
        raise GeometryError(f"Expected a 2-D (rows, columns) image. Found shape {array.shape}.")
    data = _normalise(torch.from_numpy(np.ascontiguousarray(array))[None, None], spec)
    if spec.target_spacing:
        if image.spacing is None:
            raise GeometryError(
                "Expected Pixel Spacing or Imager Pixel Spacing to resample the image to "
                f"target_spacing {list(spec.target_spacing)} mm. Found neither; set "
                "input.target_spacing to [] to keep the pixel grid."
            )
        size = [
            max(1, round(n * s / t))
            for n, s, t in zip(array.shape, image.spacing, spec.target_spacing, strict=True)
        ]
        data = torch.nn.functional.interpolate(
            data, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    data = torch.nn.functional.interpolate(
        data, size=tuple(spec.roi_size), mode="bilinear", align_corners=False, antialias=True
    )
    channels = data[0].repeat(spec.in_channels, 1, 1).float().contiguous()
    return Preprocessed(
        image=MetaTensor(channels),
        original_shape=(int(array.shape[0]), int(array.shape[1])),
        permutation=(0, 1),
        flips=(False, False),
        reoriented_affine=np.eye(4),
    )


def preprocess_volume(volume: Any, spec: InputSpec) -> Preprocessed:
    """Reorient, resample and normalise a volume (or a 2D image) as the model expects.

    Parameters
    ----------
    volume : VolumeLike or ProjectionImage
        A loaded CT series (:func:`workbench.dicom.volume.load_series`), or
        for a 2D spec a projection image (:func:`load_projection_image`).
    spec : InputSpec
        The model's input specification.

    Returns
    -------
    Preprocessed
        ``image`` has ``spec.in_channels`` channels.
    """
    if spec.spatial_dims == 2:
        if not isinstance(volume, ProjectionImage):
            raise GeometryError(
                "Expected a projection image (load_projection_image) for a 2D model. "
                f"Found {type(volume).__name__}."
            )
        return _preprocess_projection(volume, spec)
    array = np.asarray(volume.array, dtype=np.float32)
    if array.ndim != 3:
        raise GeometryError(f"Expected a 3-D (z, y, x) volume. Found shape {array.shape}.")
    affine = volume_affine_ras(volume)
    permutation, flips = _orientation_transform(affine, spec.orientation)
    data = torch.from_numpy(np.ascontiguousarray(array)).permute(*permutation)
    flip_dims = [axis for axis, flipped in enumerate(flips) if flipped]
    if flip_dims:
        data = torch.flip(data, dims=flip_dims)
    # index transform: new index -> old index, so that new_affine = affine @ to_old
    to_old = np.zeros((4, 4))
    to_old[3, 3] = 1.0
    for new_axis, old_axis in enumerate(permutation):
        size = array.shape[old_axis]
        if flips[new_axis]:
            to_old[old_axis, new_axis] = -1.0
            to_old[old_axis, 3] = size - 1
        else:
            to_old[old_axis, new_axis] = 1.0
    reoriented_affine = affine @ to_old
    image = MetaTensor(
        data.contiguous()[None], affine=torch.as_tensor(reoriented_affine, dtype=torch.float64)
    )
    spacing = Spacing(pixdim=spec.spacing_in_model_axes(), mode="bilinear", dtype=np.float32)
    resampled = spacing(image)
    model_affine = resampled.affine if isinstance(resampled, MetaTensor) else image.affine
    if spec.normalization == IntensityNormalization.WINDOW:
        window = ScaleIntensityRange(
            a_min=spec.hu_window[0], a_max=spec.hu_window[1], b_min=0.0, b_max=1.0, clip=True
        )
        windowed = window(resampled)
        plain = (
            windowed.as_tensor() if isinstance(windowed, MetaTensor) else torch.as_tensor(windowed)
        )
    else:
        raw = (
            resampled.as_tensor()
            if isinstance(resampled, MetaTensor)
            else torch.as_tensor(resampled)
        )
        plain = _normalise(raw.float(), spec)
    if spec.in_channels > 1:
        plain = plain.repeat(spec.in_channels, 1, 1, 1)
    result = MetaTensor(plain.float().contiguous(), affine=model_affine)
    return Preprocessed(
        image=result,
        original_shape=tuple(int(s) for s in array.shape),  # type: ignore[arg-type]
        permutation=permutation,
        flips=flips,
        reoriented_affine=reoriented_affine,
    )


def _interpolation_matrix(positions: np.ndarray, size: int) -> torch.Tensor:
    """(len(positions), size) weights of linear interpolation at fractional ``positions``.

    Row ``i`` holds ``1 - w`` at ``floor(p_i)`` and ``w`` at the next index, with
    positions clamped to ``[0, size - 1]`` (values beyond the border repeat it).
    """
    pos = np.clip(np.asarray(positions, dtype=np.float64), 0.0, size - 1)
    lower = np.floor(pos).astype(np.int64)
    upper = np.minimum(lower + 1, size - 1)
    weight = pos - lower
    rows = np.arange(pos.size)
    matrix = np.zeros((pos.size, size), dtype=np.float64)
    np.add.at(matrix, (rows, lower), 1.0 - weight)
    np.add.at(matrix, (rows, upper), weight)
    return torch.from_numpy(matrix.astype(np.float32))


def _is_identity(scale: float, shift: float, size: int, out_size: int) -> bool:
    return out_size == size and abs(scale - 1.0) < 1e-9 and abs(shift) < 1e-6


def restore_original_grid(output: torch.Tensor, prepared: Preprocessed) -> torch.Tensor:
    """Bring a model output from the model grid back to the source volume grid.

    Parameters
    ----------
    output : torch.Tensor
        (C, *spatial) on the grid of ``prepared.image`` (e.g. class probabilities).
    prepared : Preprocessed
        The preprocessing result the output was computed from.

    Returns
    -------
    torch.Tensor
        (C, z, y, x) float32 on the source grid: linear interpolation at the
        source voxel centres (separable, since resampling only scaled the
        axes), values beyond the model grid taken from its border.
    """
    spatial = tuple(prepared.image.shape[1:])
    if len(prepared.original_shape) != 3:
        raise GeometryError(
            "Expected a 3D preprocessing result to restore a model output onto. Found a "
            f"{len(prepared.original_shape)}D image of shape {prepared.original_shape}."
        )
    if tuple(output.shape[1:]) != spatial:
        raise GeometryError(
            f"Expected a model output of spatial shape {spatial}. Found {tuple(output.shape[1:])}."
        )
    reoriented_shape = [prepared.original_shape[axis] for axis in prepared.permutation]
    model_affine = np.asarray(prepared.image.affine, dtype=np.float64)
    # Spacing only rescales the axes, so model-grid index = scale * source index + shift.
    index_map = np.linalg.solve(model_affine, prepared.reoriented_affine)
    off_diagonal = index_map[:3, :3] - np.diag(np.diag(index_map[:3, :3]))
    if np.abs(off_diagonal).max() < 1e-6:
        data = output.detach().float().cpu()
        # Separable: one small matrix product per axis. Axes that shrink or keep
        # their size go first, so the products on the full-size grid are as few as
        # possible; an axis the resampling left unchanged is skipped.
        sizes = [int(s) for s in data.shape[1:]]
        growth = [reoriented_shape[axis] / sizes[axis] for axis in range(3)]
        for axis in sorted(range(3), key=lambda a: growth[a]):
            scale, shift = index_map[axis, axis], index_map[axis, 3]
            if _is_identity(scale, shift, sizes[axis], reoriented_shape[axis]):
                continue
            weights = _interpolation_matrix(
                scale * np.arange(reoriented_shape[axis]) + shift, sizes[axis]
            )
            moved = data.movedim(axis + 1, -1)
            data = torch.matmul(moved, weights.T).movedim(-1, axis + 1)
    else:  # pragma: no cover - not produced by preprocess_volume
        resample = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)
        restored = resample(
            MetaTensor(output.detach().float().cpu(), affine=prepared.image.affine),
            dst_affine=torch.as_tensor(prepared.reoriented_affine, dtype=torch.float64),
            spatial_size=reoriented_shape,
        )
        data = (
            restored.as_tensor() if isinstance(restored, MetaTensor) else torch.as_tensor(restored)
        )
    flip_dims = [axis + 1 for axis, flipped in enumerate(prepared.flips) if flipped]
    if flip_dims:
        data = torch.flip(data, dims=flip_dims)
    inverse = [prepared.permutation.index(axis) for axis in range(3)]
    data = data.permute(0, *(i + 1 for i in inverse)).contiguous()
    if tuple(data.shape[1:]) != prepared.original_shape:
        raise GeometryError(
            f"Expected the restored output to have the source shape {prepared.original_shape}. "
            f"Found {tuple(data.shape[1:])}."
        )
    return data.float()

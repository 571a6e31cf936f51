"""Multiplanar reformatting: planes in patient space for oblique, anisotropic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.dicom.mpr import (
    Plane,
    distance_mm,
    geometry_of,
    plane_position,
    point_at,
    reslice,
    step_point,
)
from workbench.dicom.volume import Volume


def _rotation(degrees: float) -> np.ndarray:
    """Gantry-tilt-like rotation about the patient's left-right axis."""
    a = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def _sphere_volume(
    *, direction: np.ndarray, spacing: tuple[float, float, float], centre: np.ndarray, radius: float
) -> Volume:
    """A volume whose voxels inside a patient-space sphere are 1000 HU, else -1000."""
    shape = (24, 40, 40)
    middle = (np.asarray(shape[::-1], dtype=float) - 1) / 2 * np.asarray(spacing[::-1])
    origin = -(direction @ middle)  # the volume's centre at the patient origin
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    index = np.stack([xx, yy, zz], axis=-1) * np.asarray(spacing[::-1])
    points = origin + index @ direction.T
    inside = np.linalg.norm(points - centre, axis=-1) <= radius
    array = np.where(inside, 1000.0, -1000.0).astype(np.float32)
    return Volume(
        array=array,
        spacing=spacing,
        origin=origin,
        direction=direction,
        sop_instance_uids=tuple(str(i) for i in range(shape[0])),
        series_instance_uid="1.2.3",
    )


@pytest.mark.parametrize("tilt", [0.0, 20.0])
@pytest.mark.parametrize("plane", list(Plane))
def test_sphere_is_round_and_in_place(plane: Plane, tilt: float) -> None:
    centre = np.array([2.0, 5.0, 3.0])
    volume = _sphere_volume(
        direction=_rotation(tilt), spacing=(3.0, 1.5, 1.5), centre=centre, radius=12.0
    )
    geometry = geometry_of(volume)
    assert geometry.spacing == pytest.approx(1.5)
    image = reslice(volume.array, geometry, plane, centre)
    inside = image.pixels > 0
    rows, cols = np.nonzero(inside)
    # The sphere's cut through its centre is a disc of radius 12 mm, centred on the crosshair.
    row_c, col_c = image.to_pixel(centre)
    assert rows.mean() == pytest.approx(row_c, abs=1.0)
    assert cols.mean() == pytest.approx(col_c, abs=1.0)
    area_mm2 = inside.sum() * image.spacing**2
    assert area_mm2 == pytest.approx(np.pi * 12.0**2, rel=0.15)
    height = (rows.max() - rows.min() + 1) * image.spacing
    width = (cols.max() - cols.min() + 1) * image.spacing
    assert height == pytest.approx(width, rel=0.2)  # round, not stretched by 3 mm slices


def test_orientation_conventions() -> None:
    """Anterior at the top of axial planes; superior at the top of coronal/sagittal."""
    centre = np.array([0.0, 0.0, 0.0])
    volume = _sphere_volume(direction=np.eye(3), spacing=(2.0, 2.0, 2.0), centre=centre, radius=5)
    geometry = geometry_of(volume)
    axial = reslice(volume.array, geometry, "axial", centre)
    assert axial.to_pixel(np.array([0.0, -10.0, 0.0]))[0] < axial.to_pixel(centre)[0]  # A up
    assert axial.to_pixel(np.array([-10.0, 0.0, 0.0]))[1] < axial.to_pixel(centre)[1]  # R left
    coronal = reslice(volume.array, geometry, "coronal", centre)
    assert coronal.to_pixel(np.array([0.0, 0.0, 10.0]))[0] < coronal.to_pixel(centre)[0]  # S up
    sagittal = reslice(volume.array, geometry, "sagittal", centre)
    assert sagittal.to_pixel(np.array([0.0, -10.0, 0.0]))[1] < sagittal.to_pixel(centre)[1]


def test_mask_nearest_neighbour_keeps_dtype_and_labels() -> None:
    centre = np.array([0.0, 0.0, 0.0])
    volume = _sphere_volume(
        direction=_rotation(15.0), spacing=(2.5, 1.0, 1.0), centre=centre, radius=8
    )
    geometry = geometry_of(volume)
    mask = (volume.array > 0).astype(np.uint8)
    cut = reslice(mask, geometry, "coronal", centre, order=0, cval=0)
    assert cut.pixels.dtype == np.uint8
    assert set(np.unique(cut.pixels)) == {0, 1}


def test_distance_scroll_and_positions() -> None:
    volume = _sphere_volume(
        direction=np.eye(3), spacing=(3.0, 0.8, 0.8), centre=np.zeros(3), radius=5
    )
    geometry = geometry_of(volume)
    image = reslice(volume.array, geometry, "axial", geometry.centre)
    assert distance_mm(image, (0, 0), (30, 40)) == pytest.approx(50 * 0.8)
    moved = step_point(geometry, geometry.centre, "axial", 5)
    assert moved[2] - geometry.centre[2] == pytest.approx(5 * 0.8)
    top = step_point(geometry, geometry.centre, "axial", 10_000)
    assert top[2] == pytest.approx(geometry.high[2])
    index, n = plane_position(geometry, "sagittal", geometry.centre)
    assert 0 <= index < n
    assert plane_position(geometry, "sagittal", point_at(geometry, "sagittal", 3, moved))[0] == 3


def test_large_planes_are_capped() -> None:
    volume = _sphere_volume(
        direction=np.eye(3), spacing=(3.0, 1.0, 1.0), centre=np.zeros(3), radius=5
    )
    geometry = geometry_of(volume, max_pixels=20)
    image = reslice(volume.array, geometry, "sagittal", geometry.centre)
    assert max(image.pixels.shape) <= 20


def test_errors_name_expected_and_found() -> None:
    volume = _sphere_volume(
        direction=np.eye(3), spacing=(1.0, 1.0, 1.0), centre=np.zeros(3), radius=3
    )
    geometry = geometry_of(volume)
    with pytest.raises(ValueError, match="Expected an array of shape"):
        reslice(np.zeros((2, 2, 2), np.float32), geometry, "axial", geometry.centre)
    with pytest.raises(ValueError, match="axial"):
        reslice(volume.array, geometry, "oblique", geometry.centre)

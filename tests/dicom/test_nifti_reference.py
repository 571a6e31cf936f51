"""NIfTI/NRRD reference masks aligned with a DICOM series (RAS vs LPS, axis order, errors)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from workbench.dicom.nifti_reference import read_label_image, read_reference_mask
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import Volume, load_series
from workbench.errors import GeometryError, SegmentationError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, np.ndarray]:
    """A synthetic CT series and its reader-1 lesion mask (from the DICOM SEG)."""
    root = tmp_path_factory.mktemp("nifti_phantom")
    generate_test_set(root, n_cases=1, seed=3, matrix=64, slices=(10, 10), workers=1)
    case = next((root / "cases").iterdir())
    volume = load_series(sorted((case / "CT").glob("*.dcm")))
    mask = read_seg_mask(case / "SEG" / "reader1.dcm", volume)
    assert 0 < mask.sum() < mask.size
    return volume, mask


def _lps_nifti(volume: Volume, values: np.ndarray, path: Path) -> Path:
    """The mask in the series' own (x, y, z) index order; NIfTI stores RAS, so flip x and y."""
    nib.save(nib.Nifti1Image(values.transpose(2, 1, 0), LPS_TO_RAS @ volume.affine), path)
    return path


def test_lps_and_ras_niftis_round_trip(phantom, tmp_path: Path) -> None:
    volume, mask = phantom
    values = mask.astype(np.uint8)
    lps = _lps_nifti(volume, values, tmp_path / "lps.nii.gz")
    assert nib.aff2axcodes(nib.load(lps).affine) == ("L", "P", "S")
    # nibabel reorients to RAS (flips x and y) and to SAR (axes permuted): same grid.
    for codes in ("RAS", "SAR", "PIL"):
        original = nib.load(lps)
        target = nib.orientations.axcodes2ornt(codes)
        transform = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(original.affine), target
        )
        reoriented = original.as_reoriented(transform)
        assert "".join(nib.aff2axcodes(reoriented.affine)) == codes
        assert not np.array_equal(np.asarray(reoriented.dataobj), values.transpose(2, 1, 0))
        path = tmp_path / f"{codes}.nii"
        nib.save(reoriented, path)
        assert np.array_equal(read_reference_mask(path, volume), mask), codes
    assert np.array_equal(read_reference_mask(lps, volume), mask)


def test_nrrd_in_lps_and_ras(phantom, tmp_path: Path) -> None:
    volume, mask = phantom
    xyz = mask.astype(np.uint8).transpose(2, 1, 0)
    affine = volume.affine
    lps = tmp_path / "mask_lps.nrrd"
    nrrd.write(
        str(lps),
        xyz,
        {
            "space": "left-posterior-superior",
            "space directions": affine[:3, :3].T,
            "space origin": affine[:3, 3],
        },
        index_order="F",
    )
    ras_affine = LPS_TO_RAS @ affine
    ras = tmp_path / "mask_ras.nrrd"
    nrrd.write(
        str(ras),
        xyz[::-1, ::-1, :].copy(),
        {
            "space": "right-anterior-superior",
            # x and y are flipped in the data: step the other way, start at the far end.
            "space directions": (ras_affine[:3, :3] @ np.diag([-1.0, -1.0, 1.0])).T,
            "space origin": (ras_affine @ [xyz.shape[0] - 1, xyz.shape[1] - 1, 0, 1])[:3],
        },
        index_order="F",
    )
    assert read_label_image(lps).space == "LPS" and read_label_image(ras).space == "RAS"
    assert np.array_equal(read_reference_mask(lps, volume), mask)
    assert np.array_equal(read_reference_mask(ras, volume), mask)


def test_labels_are_selected(phantom, tmp_path: Path) -> None:
    volume, mask = phantom
    values = mask.astype(np.int16)
    values[0, :4, :4] = 2
    path = _lps_nifti(volume, values, tmp_path / "labels.nii.gz")
    assert np.array_equal(read_reference_mask(path, volume, label=1), values == 1)
    assert np.array_equal(read_reference_mask(path, volume, label=[1, 2]), values > 0)
    with pytest.raises(
        SegmentationError, match=r"expected the label\(s\) \[3\]. Found labels \[0, 1, 2\]"
    ):
        read_reference_mask(path, volume, label=3)


def _write(volume: Volume, values: np.ndarray, affine_lps: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(values, LPS_TO_RAS @ affine_lps), path)
    return path


def test_mismatches_name_expected_and_found(phantom, tmp_path: Path) -> None:
    volume, mask = phantom
    xyz = mask.astype(np.uint8).transpose(2, 1, 0)
    spacing = volume.affine.copy()
    spacing[:3, 0] *= 1.2
    with pytest.raises(GeometryError, match=r"expected voxel spacing \(0.8345, 0.8345, 5\) mm"):
        read_reference_mask(_write(volume, xyz, spacing, tmp_path / "sp.nii"), volume)
    shifted = volume.affine.copy()
    shifted[:3, 3] += 0.5 * volume.affine[:3, 2]  # half a slice
    with pytest.raises(GeometryError, match=r"first voxel at series index .*\(0, 0, 0.5\)"):
        read_reference_mask(_write(volume, xyz, shifted, tmp_path / "half.nii"), volume)
    with pytest.raises(
        GeometryError, match=r"indices 0..63, 0..63, 0..9. Found it covering 0..63, 0..63, 0..8"
    ):
        read_reference_mask(
            _write(volume, xyz[:, :, :9], volume.affine, tmp_path / "crop.nii"), volume
        )
    angle = np.deg2rad(30)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    with pytest.raises(GeometryError, match="expected the mask's axes along the series' axes"):
        read_reference_mask(
            _write(volume, xyz, rotation @ volume.affine, tmp_path / "rot.nii"), volume
        )
    soft = xyz.astype(np.float32) * 0.7
    with pytest.raises(SegmentationError, match="expected integer labels"):
        read_reference_mask(_write(volume, soft, volume.affine, tmp_path / "soft.nii"), volume)
    with pytest.raises(SegmentationError, match="expected a NIfTI"):
        read_reference_mask(tmp_path / "mask.mha", volume)

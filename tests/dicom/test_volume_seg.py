"""Geometry round trips (pydicom, MONAI) and DICOM SEG reading/writing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from workbench.dicom.seg import read_seg_mask, write_seg
from workbench.dicom.synth import SynthSummary
from workbench.dicom.volume import load_series
from workbench.errors import DicomReadError, GeometryError, SegmentationError


def _ct(summary: SynthSummary, case_id: str) -> list[Path]:
    return sorted((summary.root / "cases" / case_id / "CT").glob("*.dcm"))


def test_load_series_geometry_matches_headers(synthetic_test_set: SynthSummary) -> None:
    paths = _ct(synthetic_test_set, "case0001")
    vol = load_series(reversed(paths))  # input order must not matter
    assert vol.shape == (40, 128, 128)
    assert vol.array.dtype == np.float32
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    z = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    assert vol.spacing[0] == pytest.approx(float(headers[0].SliceThickness))
    assert vol.spacing[0] == pytest.approx(z[1] - z[0])
    assert vol.spacing[1:] == pytest.approx([float(v) for v in headers[0].PixelSpacing])
    assert vol.origin[2] == pytest.approx(z[0])
    np.testing.assert_allclose(vol.direction, np.eye(3))
    # Slice k holds the file at the k-th position and its HU values.
    k = 7
    ds = pydicom.dcmread(vol.paths[k])
    assert float(ds.ImagePositionPatient[2]) == pytest.approx(z[k])
    assert vol.sop_instance_uids[k] == ds.SOPInstanceUID
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[k], hu)
    np.testing.assert_allclose(vol.voxel_to_patient([k, 0, 0]), ds.ImagePositionPatient)
    np.testing.assert_allclose((vol.affine @ [0, 0, k, 1])[:3], ds.ImagePositionPatient)


def _reindex_monai(monai_array: np.ndarray, monai_affine_ras: np.ndarray, ours) -> np.ndarray:
    """Bring MONAI's (i, j, k) array onto our (z, y, x) grid using both affines."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ monai_affine_ras
    mapping = np.linalg.inv(ours.affine) @ lps  # MONAI index -> our (x, y, z) index
    perm = np.abs(mapping[:3, :3]).argmax(axis=0)
    assert sorted(perm) == [0, 1, 2]
    signed = mapping[:3, :3][perm, [0, 1, 2]]
    np.testing.assert_allclose(np.abs(signed), 1.0, atol=1e-4)  # same spacing
    np.testing.assert_allclose(mapping[:3, 3], np.round(mapping[:3, 3]), atol=1e-3)
    out = monai_array
    for axis, sign in enumerate(signed):
        if sign < 0:
            out = np.flip(out, axis=axis)
    # Now axis a of `out` runs along our x/y/z axis perm[a]; order as (z, y, x).
    order = [int(np.flatnonzero(perm == b)[0]) for b in (2, 1, 0)]
    return np.transpose(out, order)


@pytest.mark.parametrize("case_id", ["case0001", "case0003"])
def test_geometry_round_trip_through_monai(synthetic_test_set: SynthSummary, case_id: str) -> None:
    monai_transforms = pytest.importorskip("monai.transforms")
    ours = load_series(_ct(synthetic_test_set, case_id))
    loader = monai_transforms.LoadImage(reader="PydicomReader", image_only=True)
    image = loader(str(synthetic_test_set.root / "cases" / case_id / "CT"))
    monai_spacing = sorted(float(s) for s in np.asarray(image.meta["spacing"]))
    assert monai_spacing == pytest.approx(sorted(ours.spacing))
    aligned = _reindex_monai(np.asarray(image), np.asarray(image.affine), ours)
    assert aligned.shape == ours.array.shape
    np.testing.assert_allclose(aligned, ours.array, atol=1e-3)


def test_missing_slice_raises_geometry_error_naming_file(
    synthetic_test_set: SynthSummary,
) -> None:
    paths = _ct(synthetic_test_set, "case0002")
    del paths[20]
    with pytest.raises(GeometryError, match=r"a slice is missing") as info:
        load_series(paths)
    assert ".dcm" in str(info.value)


def test_inconsistent_pixel_spacing_raises(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    paths = _ct(synthetic_test_set, "case0002")[:5]
    copies = [Path(shutil.copy(p, tmp_path)) for p in paths]
    ds = pydicom.dcmread(copies[2])
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(copies[2])
    with pytest.raises(GeometryError, match=rf"{copies[2].name}.*Pixel Spacing"):
        load_series(copies)


def test_duplicate_position_and_non_dicom_raise(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    paths = _ct(synthetic_test_set, "case0002")[:4]
    with pytest.raises(GeometryError, match="same slice position"):
        load_series([*paths, paths[1]])
    junk = tmp_path / "0001.dcm"
    junk.write_text("not dicom")
    with pytest.raises(DicomReadError, match="0001.dcm"):
        load_series([junk])
    with pytest.raises(DicomReadError, match="empty"):
        load_series([])


def test_reader_segs_align_with_volume(synthetic_test_set: SynthSummary) -> None:
    root = synthetic_test_set.root
    vol = load_series(_ct(synthetic_test_set, "case0001"))
    m1 = read_seg_mask(root / "cases/case0001/SEG/reader1.dcm", vol)
    m2 = read_seg_mask(root / "cases/case0001/SEG/reader2.dcm", vol)
    assert m1.shape == vol.shape and m1.dtype == bool
    assert m1.sum() > 20 and m2.sum() > 20
    dice = 2 * (m1 & m2).sum() / (m1.sum() + m2.sum())
    assert 0.6 < dice < 0.99  # readers disagree at the boundary, not about the lesion
    # The lesion is brighter than its surroundings (positive contrast).
    ring = np.zeros_like(m1)
    zs = np.flatnonzero(m1.any(axis=(1, 2)))
    ring[zs] = True
    assert vol.array[m1 & m2].mean() > vol.array[ring & ~m1 & (vol.array > 0)].mean() - 50


def test_write_seg_round_trip_automatic(synthetic_test_set: SynthSummary, tmp_path: Path) -> None:
    paths = _ct(synthetic_test_set, "case0002")
    vol = load_series(paths)
    mask = np.zeros(vol.shape, dtype=bool)
    mask[10:14, 40:60, 50:70] = True
    mask[30, 5, 5] = True
    out = write_seg(
        mask,
        list(reversed(paths)),
        tmp_path / "pred" / "seg.dcm",
        algorithm_name="demo-unet",
        algorithm_version="1.2.0",
    )
    back = read_seg_mask(out, vol)
    np.testing.assert_array_equal(back, mask)
    ds = pydicom.dcmread(out)
    desc = ds.SegmentSequence[0]
    assert desc.SegmentAlgorithmType == "AUTOMATIC"
    algo = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "demo-unet" and algo.AlgorithmVersion == "1.2.0"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.series_instance_uid
    assert ds.StudyInstanceUID == pydicom.dcmread(paths[0]).StudyInstanceUID


def test_volume_headers_are_the_files_headers_in_z_order(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    paths = _ct(synthetic_test_set, "case0002")
    vol = load_series(reversed(paths))
    assert len(vol.headers) == vol.shape[0]
    for header, path in zip(vol.headers, vol.paths, strict=True):
        assert "PixelData" not in header
        assert header == pydicom.dcmread(path, stop_before_pixels=True)
        syntax = pydicom.dcmread(path).file_meta.TransferSyntaxUID
        assert header.file_meta.TransferSyntaxUID == syntax
    # A SEG built from the kept headers is the file built by reading them again.
    mask = np.zeros(vol.shape, dtype=bool)
    mask[10:14, 40:60, 50:70] = True
    options = {
        "algorithm_name": "demo-unet",
        "algorithm_version": "1",
        "series_instance_uid": "1.2.826.0.1.3680043.10.1",
        "sop_instance_uid": "1.2.826.0.1.3680043.10.2",
        "content_datetime": dt.datetime(2026, 1, 2, 3, 4, 5),
    }
    reread = write_seg(mask, paths, tmp_path / "reread.dcm", **options)
    kept = write_seg(mask, vol.paths, tmp_path / "kept.dcm", source_headers=vol.headers, **options)
    assert kept.read_bytes() == reread.read_bytes()
    with pytest.raises(SegmentationError, match="one header per source file"):
        write_seg(mask, paths, tmp_path / "bad.dcm", source_headers=vol.headers[:-1])


def test_write_seg_empty_mask_and_errors(
    synthetic_test_set: SynthSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _ct(synthetic_test_set, "case0002")
    vol = load_series(paths)
    with caplog.at_level("WARNING"):
        out = write_seg(np.zeros(vol.shape, bool), paths, tmp_path / "empty.dcm")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert int(pydicom.dcmread(out).NumberOfFrames) == vol.shape[0]
    assert not read_seg_mask(out, vol).any()
    assert pydicom.dcmread(out).SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    with pytest.raises(SegmentationError, match=r"Mask shape \(3, 3, 3\)"):
        write_seg(np.zeros((3, 3, 3), bool), paths, tmp_path / "bad.dcm")
    other = load_series(_ct(synthetic_test_set, "case0001"))
    with pytest.raises(SegmentationError, match="references series"):
        read_seg_mask(out, other)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_automatic_seg_passes_dciodvfy(synthetic_test_set: SynthSummary, tmp_path: Path) -> None:
    import subprocess

    paths = _ct(synthetic_test_set, "case0003")
    mask = np.zeros((40, 128, 128), dtype=bool)
    mask[18:22, 30:50, 60:90] = True
    out = write_seg(
        mask, paths, tmp_path / "auto.dcm", algorithm_name="demo", algorithm_version="1"
    )
    result = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, check=False)
    errors = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []

"""RTSTRUCT contours rasterised onto a series grid: a real file, and a phantom series.

The expected masks come from matplotlib's point-in-polygon test
(``matplotlib.path.Path.contains_points``) on the voxel centres, an implementation
independent of the workbench's scanline fill.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from workbench.dicom.rtstruct import RTSTRUCT_SOP_CLASS, identify_rtstruct, rasterize_rtstruct
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import Volume, load_series
from workbench.errors import GeometryError, SegmentationError

mpath = pytest.importorskip("matplotlib.path")

PYDICOM_FILE = "rtstruct.dcm"  # pydicom's test RTSTRUCT: ROI 'patient' + two POINT isocentres
FILE_SERIES = "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"
FILE_FRAME = "1.2.826.0.1.3680043.8.498.2010020400001.2"


def _grid(frame: str = FILE_FRAME, series: str = FILE_SERIES, z0: float = -200.0) -> Volume:
    """An axial 3-slice grid, 5 mm pixels, covering the file's contours (z -200..-180)."""
    header = Dataset()
    header.FrameOfReferenceUID = frame
    return Volume(
        array=np.zeros((3, 70, 90), dtype=np.float32),
        spacing=(10.0, 5.0, 5.0),
        origin=np.array([-222.5, -172.5, z0]),
        direction=np.eye(3),
        sop_instance_uids=tuple(generate_uid() for _ in range(3)),
        series_instance_uid=series,
        headers=(header,) * 3,
    )


def _expected(volume: Volume, polygons_by_slice: dict[int, list[np.ndarray]]) -> np.ndarray:
    """Even-odd combination of matplotlib's inside test at each voxel centre."""
    expected = np.zeros(volume.shape, dtype=bool)
    rows, columns = np.mgrid[0 : volume.shape[1], 0 : volume.shape[2]]
    for k, polygons in polygons_by_slice.items():
        centres = volume.voxel_to_patient(
            np.stack([np.full(rows.shape, k), rows, columns], axis=-1).reshape(-1, 3)
        )
        for polygon in polygons:
            inside = mpath.Path(polygon[:, :2]).contains_points(centres[:, :2])
            expected[k] ^= inside.reshape(rows.shape)
    return expected


def test_real_rtstruct_is_identified_by_content() -> None:
    identity = identify_rtstruct(get_testdata_file(PYDICOM_FILE))
    assert identity.referenced_series_uids == (FILE_SERIES,)
    assert identity.frame_of_reference_uids == (FILE_FRAME,)
    assert [(r.name, r.geometric_types, r.n_contours) for r in identity.rois] == [
        ("patient", ("CLOSED_PLANAR",), 3),
        ("Isocenter 1", ("POINT",), 1),
        ("Isocenter 2", ("POINT",), 1),
    ]
    assert identity.rois[0].interpreted_type == "EXTERNAL"


def test_real_rtstruct_rasterises_onto_a_grid() -> None:
    path = get_testdata_file(PYDICOM_FILE)
    volume = _grid()
    masks = rasterize_rtstruct(path, volume)
    assert list(masks) == ["patient"]  # POINT ROIs hold no area
    ds = pydicom.dcmread(path, force=True)
    polygons = {
        k: [np.asarray(c.ContourData, dtype=float).reshape(-1, 3)]
        for k, c in enumerate(ds.ROIContourSequence[0].ContourSequence)
    }
    expected = _expected(volume, polygons)
    assert np.array_equal(masks["patient"], expected)
    # x in (-200, 200) -> 80 columns, y in (-150, 150) -> 60 rows, on each of 3 slices
    assert masks["patient"].sum() == 3 * 80 * 60


def test_real_rtstruct_errors_name_expected_and_found() -> None:
    path = get_testdata_file(PYDICOM_FILE)
    with pytest.raises(SegmentationError, match=r"expected CLOSED_PLANAR contours .* \['POINT'\]"):
        rasterize_rtstruct(path, _grid(), roi_names=["Isocenter 1"])
    with pytest.raises(SegmentationError, match=r"expected the ROI\(s\) \['Liver'\]"):
        rasterize_rtstruct(path, _grid(), roi_names=["Liver"])
    with pytest.raises(SegmentationError, match="expected the series' Frame of Reference 1.2.3"):
        rasterize_rtstruct(path, _grid(frame="1.2.3"))
    with pytest.raises(SegmentationError, match="expected contours drawn on the series 1.2.4"):
        rasterize_rtstruct(path, _grid(series="1.2.4"))
    with pytest.raises(GeometryError, match="Found it at slice index -0.500"):
        rasterize_rtstruct(path, _grid(z0=-195.0))
    with pytest.raises(SegmentationError, match="Expected SOP Class RT Structure Set Storage"):
        identify_rtstruct(get_testdata_file("CT_small.dcm"))


def _polygon(centre: np.ndarray, radius: float, z: float, n: int = 48) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False) + 0.1
    return np.column_stack(
        [centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles), np.full(n, z)]
    )


def _rtstruct(volume: Volume, roi_contours: dict[str, dict[int, list[np.ndarray]]]) -> Dataset:
    """A minimal RT Structure Set over ``volume`` (as a planning system would write it)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "phantom"
    ds.OperatorsName = "Reader^One"
    frame_uid = volume.headers[0].FrameOfReferenceUID
    series_item = Dataset()
    series_item.SeriesInstanceUID = volume.series_instance_uid
    study_item = Dataset()
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, contours = [], []
    for number, (name, by_slice) in enumerate(roi_contours.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = frame_uid
        rois.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        for k, polygons in by_slice.items():
            for polygon in polygons:
                contour = Dataset()
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(polygon)
                contour.ContourData = [f"{v:.4f}" for v in polygon.ravel()]
                image = Dataset()
                image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
                image.ReferencedSOPInstanceUID = volume.sop_instance_uids[k]
                contour.ContourImageSequence = Sequence([image])
                item.ContourSequence.append(contour)
        contours.append(item)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    return ds


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, np.ndarray]:
    root = tmp_path_factory.mktemp("rtstruct_phantom")
    generate_test_set(root, n_cases=1, seed=5, matrix=64, slices=(10, 10), workers=1)
    case = next((root / "cases").iterdir())
    volume = load_series(sorted((case / "CT").glob("*.dcm")))
    return volume, read_seg_mask(case / "SEG" / "reader1.dcm", volume)


def test_contours_on_a_phantom_series(phantom, tmp_path: Path) -> None:
    volume, reference = phantom
    slices = sorted({int(k) for k in np.nonzero(reference)[0]})
    k_mid = slices[len(slices) // 2]
    zyx = np.argwhere(reference[k_mid]).mean(axis=0)
    centre = volume.voxel_to_patient([k_mid, zyx[0], zyx[1]])
    lesion = {k: [_polygon(centre, 6.0, volume.voxel_to_patient([k, 0, 0])[2])] for k in slices}
    z_mid = volume.voxel_to_patient([k_mid, 0, 0])[2]
    ring = {k_mid: [_polygon(centre, 10.0, z_mid), _polygon(centre, 4.0, z_mid, n=31)]}
    ds = _rtstruct(volume, {"Lesion": lesion, "Ring": ring})
    path = tmp_path / "rtstruct.dcm"
    ds.save_as(path, enforce_file_format=True)
    identity = identify_rtstruct(path)
    assert identity.referenced_series_uids == (volume.series_instance_uid,)
    assert identity.operators == "Reader^One"
    masks = rasterize_rtstruct(path, volume)
    assert set(masks) == {"Lesion", "Ring"}
    assert np.array_equal(masks["Lesion"], _expected(volume, lesion))
    assert np.array_equal(masks["Ring"], _expected(volume, ring))
    assert masks["Lesion"].sum() > 0
    ring_slice = masks["Ring"][k_mid]
    centre_index = np.round(zyx).astype(int)
    assert not ring_slice[tuple(centre_index)]  # the inner contour is a hole
    assert masks["Ring"].sum() == masks["Ring"][k_mid].sum() > 0
    only = rasterize_rtstruct(ds, volume, roi_names=["Ring"])
    assert list(only) == ["Ring"]

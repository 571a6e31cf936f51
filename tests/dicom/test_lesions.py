"""Reference lesions in patient coordinates: from tables of real DICOM images and from masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from workbench.dicom.index import index_folder
from workbench.dicom.lesions import lesions_from_mask, lesions_from_table
from workbench.errors import GeometryError
from workbench.inference.detection import marks_from_probability, marks_sha256, marks_to_frame
from workbench.stats import froc_figure_of_merit, match_lesions


@pytest.fixture(scope="module")
def real_images(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The index of two real images nobody here wrote: pydicom's CT_small and MR_small."""
    root = tmp_path_factory.mktemp("real")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), root / name)
    return index_folder(root, workers=1).files


def _uid(name: str) -> str:
    return str(pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).SOPInstanceUID)


def test_pixel_box_on_a_real_ct_maps_to_patient_mm(real_images: pd.DataFrame) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    table = pd.DataFrame(
        [
            {
                "lesion_id": "n1",
                "sop_instance_uid": _uid("CT_small.dcm"),
                "col_min": 10,
                "row_min": 20,
                "col_max": 30,
                "row_max": 40,
                "type": "nodule",
            }
        ]
    )
    lesions = lesions_from_table(table, real_images)
    (row,) = lesions.to_dict(orient="records")
    ipp = [float(v) for v in ds.ImagePositionPatient]
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    # Orientation is axial (1,0,0 / 0,1,0): x follows the column, y the row.
    assert row["x_min"] == pytest.approx(ipp[0] + 10 * col_spacing)
    assert row["x_max"] == pytest.approx(ipp[0] + 30 * col_spacing)
    assert row["y_min"] == pytest.approx(ipp[1] + 20 * row_spacing)
    assert row["y_max"] == pytest.approx(ipp[1] + 40 * row_spacing)
    assert row["z_min"] == row["z_max"] == pytest.approx(ipp[2])
    assert row["x"] == pytest.approx(ipp[0] + 20 * col_spacing)
    assert row["series_instance_uid"] == str(ds.SeriesInstanceUID)
    assert row["type"] == "nodule"  # attributes kept for strata
    assert row["lesion_weight"] == 1.0


def test_rows_with_bad_geometry_are_named(real_images: pd.DataFrame) -> None:
    good = {"lesion_id": "a", "sop_instance_uid": _uid("MR_small.dcm"), "col": 5, "row": 6}
    with pytest.raises(GeometryError, match="row 3: .*not in the test set"):
        lesions_from_table(
            pd.DataFrame([good, {**good, "sop_instance_uid": "1.2.3.999"}]),
            real_images,
            default_diameter_mm=5.0,
        )
    with pytest.raises(GeometryError, match=r"row 2: box .* outside the image of 64 columns x 64"):
        lesions_from_table(
            pd.DataFrame(
                [{**good, "col_min": 50, "row_min": 50, "col_max": 80, "row_max": 60}]
            ).drop(columns=["col", "row"]),
            real_images,
        )
    with pytest.raises(GeometryError, match="row 2: a point lesion needs diameter_mm"):
        lesions_from_table(pd.DataFrame([good]), real_images)
    with pytest.raises(GeometryError, match="row 2: expected a frame in 1..1; found 2"):
        lesions_from_table(pd.DataFrame([{**good, "frame": 2}]), real_images, default_diameter_mm=4)


def test_patient_centres_need_a_known_series(real_images: pd.DataFrame) -> None:
    series = str(real_images["series_instance_uid"].iloc[0])
    table = pd.DataFrame(
        [
            {
                "lesion_id": "a",
                "series_instance_uid": series,
                "x": 1,
                "y": 2,
                "z": 3,
                "diameter_mm": 8,
                "lesion_weight": 0.75,
            },
            {
                "lesion_id": "b",
                "series_instance_uid": series,
                "x": 9,
                "y": 9,
                "z": 9,
                "diameter_mm": 4,
                "lesion_weight": 0.25,
            },
        ]
    )
    lesions = lesions_from_table(table, real_images)
    assert list(lesions["x_min"]) == [-3.0, 7.0]
    assert list(lesions["lesion_weight"]) == [0.75, 0.25]
    with pytest.raises(GeometryError, match="row 2: Series Instance UID 9.9 is not"):
        lesions_from_table(table.assign(series_instance_uid="9.9"), real_images)


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    prob = np.zeros((20, 40, 40))
    prob[4:8, 5:12, 5:12] = 0.6
    prob[6, 8, 8] = 0.9
    prob[12:16, 25:35, 20:30] = 0.7
    prob[0, 39, 39] = 0.55  # one voxel: below min_voxels
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-100.0, -50.0, 10.0]
    return prob, affine


def test_segmentation_feeds_detection_by_the_documented_rule() -> None:
    prob, affine = _blobs()
    marks = marks_from_probability(prob, affine, threshold=0.5, min_voxels=2)
    assert [m.score for m in marks] == [0.9, 0.7]  # score = maximum probability, highest first
    first = marks[0]
    assert first.x_min == pytest.approx(-100.0 + 4.5 * 0.8)
    assert first.x_max == pytest.approx(-100.0 + 11.5 * 0.8)
    assert first.z_min == pytest.approx(10.0 + 3.5 * 2.5)
    assert len(marks_sha256(marks)) == 64
    # The reference from the same components is found exactly: every lesion localised.
    truth = lesions_from_mask(prob >= 0.5, affine, min_voxels=2).assign(case_id="c1")
    predictions = marks_to_frame("c1", marks)
    result = match_lesions(truth, predictions, rule="iou", threshold=0.5)
    assert result.marks["lesion_id"].notna().all()
    assert froc_figure_of_merit(result.marks, result.truth, fom="wafroc1") == 1.0


def test_mask_components_have_sphere_equivalent_diameters() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:4, 2:4, 2:4] = True
    lesions = lesions_from_mask(mask, np.eye(4))
    (row,) = lesions.to_dict(orient="records")
    assert row["n_voxels"] == 8
    assert row["diameter"] == pytest.approx((6 * 8 / np.pi) ** (1 / 3))
    assert (row["x_min"], row["x_max"]) == (1.5, 3.5)


def test_empty_inputs() -> None:
    assert lesions_from_mask(np.zeros((3, 3, 3), bool), np.eye(4)).empty
    assert marks_from_probability(np.zeros((3, 3, 3)), np.eye(4)) == []
    assert lesions_from_table(
        pd.DataFrame(), pd.DataFrame(columns=["sop_instance_uid", "series_instance_uid"])
    ).empty


def test_index_paths_are_relative(real_images: pd.DataFrame) -> None:
    assert all(not Path(p).is_absolute() for p in real_images["path"])


def test_a_row_on_a_later_frame_of_an_enhanced_ct(tmp_path: Path) -> None:
    """pydicom-data's eCT_Supplemental: frame 2 lies 10 mm from frame 1 (per-frame positions)."""
    shutil.copy(str(get_testdata_file("eCT_Supplemental.dcm")), tmp_path / "ect.dcm")
    images = index_folder(tmp_path, workers=1).files
    ds = pydicom.dcmread(tmp_path / "ect.dcm", stop_before_pixels=True)
    row = {
        "lesion_id": "e1",
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "frame": 2,
        "col_min": 10,
        "row_min": 20,
        "col_max": 30,
        "row_max": 40,
    }
    (lesion,) = lesions_from_table(pd.DataFrame([row]), images, root=tmp_path).to_dict(
        orient="records"
    )
    plane = ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    assert lesion["z"] == pytest.approx(float(plane.ImagePositionPatient[2]))
    assert lesion["z"] == pytest.approx(-149.0)
    with pytest.raises(GeometryError, match="row 2: frame 2 of the multi-frame SOP Instance"):
        lesions_from_table(pd.DataFrame([row]), images)

"""Detection regions (boxes, points in patient mm) drawn on the viewer's slices."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from workbench.app._imaging import (
    OVERLAY_COLOURS,
    SliceMark,
    draw_marks,
    patient_to_voxel,
    region_slice,
    render_slice,
    slice_marks,
)
from workbench.dicom.volume import Volume
from workbench.errors import GeometryError

ORANGE, BLUE = OVERLAY_COLOURS["A"], OVERLAY_COLOURS["B"]


def _volume(direction: np.ndarray, origin: tuple[float, float, float]) -> Volume:
    """5 slices of 20 rows x 30 columns; spacing 2 mm between slices, 1 mm rows, 0.5 mm columns."""
    return Volume(
        array=np.zeros((5, 20, 30), dtype=np.float32),
        spacing=(2.0, 1.0, 0.5),
        origin=np.asarray(origin, dtype=float),
        direction=np.asarray(direction, dtype=float),
        sop_instance_uids=tuple(f"1.2.3.{i}" for i in range(5)),
        series_instance_uid="1.2.3",
    )


AXIAL = _volume(np.eye(3), (10.0, 20.0, 30.0))
# columns run towards patient right (-x), rows towards anterior (-y), slices head first (-z)
FLIPPED = _volume(np.diag([-1.0, -1.0, -1.0]), (10.0, 20.0, 30.0))


def _box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> dict:
    return {
        "kind": "box",
        "x": sum(x) / 2,
        "y": sum(y) / 2,
        "z": sum(z) / 2,
        "x_min": x[0],
        "x_max": x[1],
        "y_min": y[0],
        "y_max": y[1],
        "z_min": z[0],
        "z_max": z[1],
    }


def _point(x: float, y: float, z: float) -> dict:
    return {
        "kind": "point",
        "x": x,
        "y": y,
        "z": z,
        **dict.fromkeys(("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")),
    }


def test_patient_to_voxel_inverts_the_volume_geometry() -> None:
    rng = np.random.default_rng(3)
    for volume in (AXIAL, FLIPPED):
        idx = rng.uniform(0, 5, size=(10, 3))
        back = patient_to_voxel(volume, volume.voxel_to_patient(idx))
        np.testing.assert_allclose(back, idx, atol=1e-9)
    # origin is the centre of voxel (0, 0, 0); +0.5 mm in x is one column on AXIAL, -1 on FLIPPED
    np.testing.assert_allclose(patient_to_voxel(AXIAL, [10.5, 20.0, 30.0]), [0, 0, 1])
    np.testing.assert_allclose(patient_to_voxel(FLIPPED, [9.5, 20.0, 30.0]), [0, 0, 1])


def _lit(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.asarray(colour, dtype=np.uint8), axis=-1)


@pytest.mark.parametrize(
    ("volume", "box"),
    [
        # columns 4-8 (x 12-14 mm), rows 2-5 (y 22-25 mm), slices 1-2 (z 32-34 mm)
        (AXIAL, _box((12.0, 14.0), (22.0, 25.0), (32.0, 34.0))),
        # the same voxels on the flipped volume: x = 10 - 0.5 col, y = 20 - row, z = 30 - 2 slice
        (FLIPPED, _box((6.0, 8.0), (15.0, 18.0), (26.0, 28.0))),
    ],
    ids=["axial", "flipped"],
)
def test_a_box_lands_on_its_voxels_on_every_slice_it_crosses(volume: Volume, box: dict) -> None:
    regions = {"A": [box]}
    drawn = {k: slice_marks(regions, volume, k) for k in range(5)}
    assert [k for k, marks in drawn.items() if marks] == [1, 2]
    (mark,) = drawn[1]
    assert (mark.row_min, mark.row_max, mark.col_min, mark.col_max) == pytest.approx((2, 5, 4, 8))
    assert mark.colour == ORANGE and mark.kind == "box"
    rgb = draw_marks(np.zeros((20, 30, 3), np.uint8), drawn[1], thickness=1)
    lit = _lit(rgb, ORANGE)
    expected = np.zeros((20, 30), bool)
    expected[2:6, 4:9] = True
    expected[3:5, 5:8] = False  # an outline, not a fill
    np.testing.assert_array_equal(lit, expected)
    assert region_slice(box, volume) == 2  # centre z index 1.5 rounds up


def test_a_point_is_drawn_on_its_nearest_slice_only() -> None:
    # z 33.4 mm is index 1.7: nearest slice 2; column 10 (x 15 mm), row 7 (y 27 mm)
    point = _point(15.0, 27.0, 33.4)
    regions = {"B": [point]}
    assert [k for k in range(5) if slice_marks(regions, AXIAL, k)] == [2]
    assert region_slice(point, AXIAL) == 2
    (mark,) = slice_marks(regions, AXIAL, 2)
    rgb = draw_marks(np.zeros((200, 300, 3), np.uint8), [mark], scale=(10.0, 10.0))
    lit = _lit(rgb, BLUE)
    rows, cols = np.nonzero(lit)
    # the cross and circle are centred on the voxel's centre in the 10x upscaled image
    assert rows.mean() == pytest.approx(75, abs=1) and cols.mean() == pytest.approx(105, abs=1)
    assert lit[75, 105]
    # a point off the volume is not drawn on the slice it is clamped to
    assert not slice_marks({"B": [_point(15.0, 27.0, 45.0)]}, AXIAL, 4)


def test_rendered_png_carries_both_colours_and_zoom_keeps_marks_in_place() -> None:
    box = _box((12.0, 14.0), (22.0, 25.0), (32.0, 34.0))
    point = _point(15.0, 27.0, 32.0)
    marks = slice_marks({"A": [box], "B": [point]}, AXIAL, 1)
    assert {m.label for m in marks} == {"A", "B"}
    png = render_slice(AXIAL.array[1], level=40, width=400, size=300, marks=marks)
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert _lit(rgb, ORANGE).any() and _lit(rgb, BLUE).any()
    # 300 px for 30 columns: 10 px per voxel; the box's left edge is column 4's left edge
    orange_cols = np.nonzero(_lit(rgb, ORANGE).any(axis=0))[0]
    assert orange_cols.min() == 40 and orange_cols.max() == 89
    zoomed = render_slice(
        AXIAL.array[1], level=40, width=400, size=300, marks=marks, zoom=2.0, pan=(0.5, 0.5)
    )
    rgb2 = np.asarray(Image.open(io.BytesIO(zoomed)).convert("RGB"))
    # crop of 10 x 15 voxels from row 5, column 7: the box (columns 4-8) starts off-image
    cols2 = np.nonzero(_lit(rgb2, ORANGE).any(axis=0))[0]
    assert cols2.min() == 0 and cols2.max() == (8 + 0.5 - 7 + 0.5) * 20 - 1


def test_a_region_without_a_centre_is_refused() -> None:
    with pytest.raises(GeometryError, match="centre x, y, z"):
        slice_marks({"A": [{"kind": "point", "x": 1.0, "y": None, "z": 0.0}]}, AXIAL, 0)


def test_marks_leave_the_input_untouched() -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    mark = SliceMark("A", "box", 2, 5, 4, 8, ORANGE)
    assert draw_marks(rgb, [mark]).any() and not rgb.any()


def _viewer_script() -> None:
    import streamlit as st

    from workbench.app import _viewer

    _viewer.show_viewer("t", ["slice.dcm"], {}, regions=st.session_state["regions"])


def _viewer_app(monkeypatch: pytest.MonkeyPatch, regions: dict) -> AppTest:
    from workbench.app import _imaging, _session
    from workbench.services import views

    volume = _volume(np.eye(3), (10.0, 20.0, 30.0))
    monkeypatch.setattr(_session, "workbench", lambda: None)
    monkeypatch.setattr(_session, "actor", lambda: None)
    monkeypatch.setattr(views, "file_sha256s", lambda wb, actor, paths: {})
    monkeypatch.setattr(_imaging, "hashes_for", lambda paths, recorded: ["0" * 64])
    monkeypatch.setattr(_imaging, "load_volume", lambda key, paths: volume)
    at = AppTest.from_function(_viewer_script, default_timeout=30)
    at.session_state["regions"] = regions
    at.run()
    assert not at.exception, at.exception
    return at


def test_viewer_lists_regions_and_jumps_to_their_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    box = {**_box((12.0, 14.0), (22.0, 25.0), (32.0, 34.0)), "score": 0.97}
    point = {**_point(15.0, 27.0, 38.0), "rating": 4}
    at = _viewer_app(monkeypatch, {"A": [box], "B": [point]})
    assert at.get("image")
    assert {c.label for c in at.checkbox} == {"Show A", "Show B"}
    # opens on the first region's slice (the box's centre, index 2 = slice 3)
    assert at.slider(key="t-slice").value == 3
    labels = [str(b.label) for b in at.button]
    assert labels == [
        "A1: box at (13.0, 23.5, 33.0) mm, 2.0 x 3.0 x 2.0 mm - slice 3 (shown)",
        "B1: point at (15.0, 27.0, 38.0) mm - slice 5",
    ]
    page_text = " ".join(
        [*labels, *(str(m.value) for m in at.markdown), *(str(c.value) for c in at.caption)]
    )
    assert "orange" in page_text and "blue" in page_text
    assert "0.97" not in page_text and "score" not in page_text and "rating" not in page_text
    at.button(key="t-region-B1").click().run()
    assert not at.exception, at.exception
    assert at.slider(key="t-slice").value == 5


def test_viewer_warns_about_a_region_without_a_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _viewer_app(monkeypatch, {"A": [{"kind": "point", "x": 1.0, "y": None, "z": 0.0}]})
    assert any("regions cannot be shown" in str(w.value) for w in at.warning)
    assert at.get("image")

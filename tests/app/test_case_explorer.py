"""Case explorer page: QA and auditors explore; blinded reviewers never reach it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.app._seed import Seeded
from workbench.app._nav import page_by_key, pages_for

PAGE = "pages/case_explorer.py"


def _text(at: AppTest) -> str:
    parts = [
        str(e.value)
        for kind in ("error", "warning", "success", "info", "markdown", "caption", "title")
        for e in getattr(at, kind)
    ]
    return "\n".join(parts)


def _open(app: Callable[..., AppTest], user: str, **query: str) -> AppTest:
    at = app(user)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(PAGE).run(timeout=120)
    assert not at.exception, at.exception
    return at


def test_navigation_lists_the_explorer_for_qa_and_auditors_only() -> None:
    page = page_by_key("case_explorer")
    assert page.path == PAGE
    assert [r for r in ("qa", "auditor", "reviewer", "admin") if page.visible_to(r)] == [
        "qa",
        "auditor",
    ]
    assert "case_explorer" not in {p.key for p in pages_for("reviewer")}


def test_qa_explores_worst_cases_in_three_planes(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    at = _open(app, "qa.author", run=seeded.run_uids["lesion-segmentation"])
    table = at.dataframe[0].value
    assert {"case_id", "dice", "false_negative", "manufacturer"} <= set(table.columns)
    dice = table["dice"].dropna().tolist()
    assert dice == sorted(dice)  # worst Dice first by default
    assert at.get("image"), "the three-plane view is shown"
    text = _text(at)
    assert "Unblinded view" in text
    # Filter to one scanner.
    at.selectbox(key="explorer-factor").select("manufacturer").run(timeout=120)
    assert not at.exception, at.exception
    level = at.selectbox(key="explorer-level").value
    assert set(at.dataframe[0].value["manufacturer"]) == {level}
    # Move the crosshair and change the window: the view re-renders.
    at.slider(key=next(s.key for s in at.slider if str(s.key).endswith("-axial"))).set_value(1).run(
        timeout=120
    )
    assert not at.exception, at.exception


def test_explanation_map_is_labelled_as_an_aid(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = _open(app, "inspector", run=seeded.run_uids["lesion-segmentation"])
    go = next(b for b in at.button if str(b.key).endswith("-go"))
    go.click().run(timeout=300)
    assert not at.exception, at.exception
    text = _text(at)
    assert "Aid to review only" in text and "Deletion check" in text
    assert at.get("image")


def test_classification_run_opens(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = _open(app, "inspector", run=seeded.run_uids["malignancy-classification"])
    assert "operating threshold 0.5" in _text(at)


@pytest.mark.parametrize("user", ["dr.reviewer", "dr.second"])
def test_blinded_reviewers_cannot_reach_the_explorer(
    app: Callable[..., AppTest], seeded: Seeded, user: str
) -> None:
    at = app(user)
    try:
        at.switch_page(PAGE)
    except ValueError:
        return  # not registered for the role at all
    at.query_params["run"] = seeded.run_uids["malignancy-classification"]
    at.run(timeout=120)
    assert not at.exception
    assert any("not available to the role" in str(e.value) for e in at.error)
    assert not at.dataframe and not at.get("image")


def test_blinded_adjudication_shows_no_explanation(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    at = app("dr.second")
    at.query_params["run"] = seeded.run_uids["lesion-segmentation"]
    at.switch_page("pages/adjudication.py").run(timeout=120)
    assert not at.exception, at.exception
    text = _text(at).lower()
    assert "explanation" not in text and "saliency" not in text and "grad-cam" not in text
    assert not any("explain" in str(b.key) for b in at.button)


def test_three_plane_rendering_with_overlays_heat_and_measurement() -> None:
    import numpy as np

    from workbench.app import _mpr
    from workbench.dicom import mpr
    from workbench.dicom.volume import Volume

    array = np.full((12, 20, 24), -1000.0, dtype=np.float32)
    array[4:8, 6:14, 8:16] = 60.0
    volume = Volume(
        array=array,
        spacing=(2.5, 0.8, 0.8),
        origin=np.zeros(3),
        direction=np.eye(3),
        sop_instance_uids=tuple(str(i) for i in range(12)),
        series_instance_uid="1.2.3",
    )
    geometry = mpr.geometry_of(volume)
    layers = [_mpr.Layer("Model", (255, 140, 0), array > 0)]
    heat = (array > 0).astype(np.float32)
    views, distance = _mpr.mpr_views(
        volume,
        geometry,
        geometry.centre,
        level=40,
        width=400,
        layers=layers,
        heat=heat,
        measure=(mpr.Plane.AXIAL, (0.0, 0.0), (3.0, 4.0)),
        size=96,
    )
    assert [title.split()[0] for title, _img in views] == ["axial", "coronal", "sagittal"]
    assert distance == pytest.approx(5 * 0.8)
    png = _mpr.compose_views(views, [("Model", (255, 140, 0)), (_mpr.HEAT_LEGEND, None)], "c")
    assert png.startswith(b"\x89PNG")
    rgb = np.asarray(views[0][1])
    assert (np.abs(rgb.astype(int) - (255, 140, 0)).sum(axis=2) < 60).any()  # overlay drawn


def test_a_radiograph_opens_in_one_view_with_window_zoom_and_pan() -> None:
    """A real CR (pydicom-data, MONOCHROME1, 1760 x 1760) renders in the single 2D view."""
    from pydicom.data import get_testdata_file
    from streamlit.testing.v1 import AppTest

    def page(path: str) -> None:
        from workbench.app import _mpr

        _mpr.show_image2d("cr", path, caption="radiograph")

    at = AppTest.from_function(page, args=(get_testdata_file("RG3_UNCI.dcm"),), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.get("image"), "the radiograph is shown"
    at.select_slider(key="cr-zoom").set_value(2.0).run()
    at.slider(key="cr-pan-x").set_value(0.2).run()
    assert not at.exception, at.exception
    assert at.get("image") and not at.error

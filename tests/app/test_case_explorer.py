"""Case explorer page: QA and auditors explore; blinded reviewers never reach it."""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, Seeded
from workbench.app import _mpr
from workbench.app._nav import page_by_key, pages_for
from workbench.records.models import AuditEntry
from workbench.reports import extract_attachments
from workbench.services import accounts, reports
from workbench.services.context import Workbench

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
    axial = next(str(s.key) for s in at.slider if str(s.key).endswith("-axial"))
    at.slider(key=axial).set_value(1).run(timeout=120)
    assert not at.exception, at.exception


def test_explanation_map_is_labelled_as_an_aid(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = _open(app, "inspector", run=seeded.run_uids["lesion-segmentation"])
    go = next(b for b in at.button if str(b.key).endswith("-go"))
    go.click().run(timeout=300)
    assert not at.exception, at.exception
    text = _text(at)
    assert "Aid to review only" in text and "Deletion check" in text
    assert at.get("image")


def test_another_run_opens_at_its_own_first_case(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    """A case chosen in one run is not carried to the next run chosen."""
    segmentation = seeded.run_uids["lesion-segmentation"]
    classification = seeded.run_uids["malignancy-classification"]
    at = _open(app, "inspector", run=classification)
    ids = [str(c) for c in at.dataframe[0].value["case_id"]]
    at.selectbox(key="explorer-case").set_value(ids[-1]).run(timeout=120)
    at.selectbox(key="explorer-run").set_value(segmentation).run(timeout=120)
    assert not at.exception, at.exception
    first = str(at.dataframe[0].value["case_id"].iloc[0])
    assert at.selectbox(key="explorer-case").value == first


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


def test_worst_case_view_with_its_map_goes_into_the_built_report(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench, tmp_path: Path
) -> None:
    """The Done-when flow: worst case -> map -> "Add this view" -> built report with that PNG."""
    run = seeded.run_uids["lesion-segmentation@2"]
    at = _open(app, "qa.author", run=run)
    table = at.dataframe[0].value
    worst = str(at.selectbox(key="explorer-case").value)
    assert worst == str(table["case_id"].iloc[0])
    assert float(table["dice"].iloc[0]) == float(table["dice"].min())  # the worst Dice
    next(b for b in at.button if str(b.key).endswith("-go")).click().run(timeout=300)
    assert not at.exception, at.exception
    assert "Aid to review only" in _text(at)
    note = "Worst Dice of the run; the probability map covers the missed region"
    at.text_input(key="select-note").input(note)
    submit = next(b for b in at.button if b.label.startswith("Add this view to the report"))
    submit.click().run(timeout=300)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "Added to the report's selected cases." in [s.value for s in at.success]

    # The audit entry records the composed view: path and SHA-256 of the real PNG.
    with wb.transaction(readonly=True) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.action == "explorer.case_select",
                AuditEntry.record_id == f"{run}/{worst}",
            )
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert entry is not None and entry.actor == "qa.author"
    new = dict(entry.new_value or {})
    assert new["note"] == note
    png = (seeded.workdir / str(new["png_path"])).read_bytes()
    sha = hashlib.sha256(png).hexdigest()
    assert new["png_sha256"] == sha
    view = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    ramp = (_mpr.heat_colours(np.array([1.0])) + 0.5).astype(np.uint8)[0]
    assert (view == ramp).all(axis=2).any(), "the heat ramp of the map's legend is drawn"
    text = _mpr.png_text(png)
    assert "aid to review" in text["Description"] and "Reference" in text["Description"]
    assert f"case {worst}" in text["Title"]

    # The report built through the service prints that image in its Selected cases section.
    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    report = reports.build_report(wb, qa, run)
    pdf = report.pdf_path or ""
    pdf_text = subprocess.run(
        ["pdftotext", "-layout", pdf, "-"], capture_output=True, text=True, check=True
    ).stdout
    start = pdf_text.rindex("Selected cases")
    section = pdf_text[start : pdf_text.index("Appendix A", start)]  # up to the audit appendix
    assert f"Case {worst}" in section and note.split(";")[0] in section
    assert sha in "".join(section.split())  # the audited SHA-256 printed beside the image
    subprocess.run(["pdfimages", "-png", pdf, str(tmp_path / "img")], check=True)
    embedded = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(tmp_path.glob("img-*"))]
    assert any(e.shape == view.shape and (e == view).all() for e in embedded), (
        "the selected PNG's pixels are embedded in the report"
    )
    assert sha.encode() in extract_attachments(pdf)["results.json"]


def test_adjudication_outcome_is_shown_beside_the_case(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    """A signed read of the case's discrepancy: decision, adjudicator, time and comment."""
    from workbench.services import adjudication

    run = seeded.run_uids["lesion-segmentation@2"]
    second = accounts.login(wb, "dr.second", ACCOUNTS["dr.second"][2])
    open_items = [i for i in adjudication.queue(wb, second, run) if i.status == "open"]
    if len(open_items) < 2:  # the first open item belongs to the two-reader page test
        pytest.skip("the seeded two-reader run has fewer than two open discrepancies")
    item = open_items[-1]
    comment = "B stops at the pleura; A leaks into the chest wall."
    adjudication.adjudicate(
        wb,
        second,
        item.discrepancy_id,
        decision="b_correct",
        comment=comment,
        password=ACCOUNTS["dr.second"][2],
    )
    at = _open(app, "inspector", run=run, case=item.case_id)
    assert at.selectbox(key="explorer-case").value == item.case_id
    columns = ["decided (UTC)", "adjudicator", "read", "decision", "comment"]
    (reads,) = [d.value for d in at.dataframe if list(d.value.columns) == columns]
    (row,) = reads.to_dict("records")
    assert row["adjudicator"] == "Dr. Sam Rivera (dr.second)"
    assert row["read"] == "primary" and row["comment"] == comment
    assert row["decision"] in {"model correct (b_correct)", "reference correct (b_correct)"}
    assert f"#{item.discrepancy_id}" in _text(at)
    (link,) = [e.proto for e in at.get("page_link") if f"#{item.discrepancy_id}" in e.proto.label]
    assert "audit" in link.page
    assert f"record={item.discrepancy_id}" in link.query_string
    assert "record_type=discrepancy" in link.query_string


def test_exported_view_says_the_map_is_an_aid_to_review() -> None:
    """The heat map's legend line, drawn and in the PNG's metadata, carries the aid note."""
    from PIL import ImageFont

    layers = [_mpr.Layer("Model output (tiny-seg@1.0)", (255, 140, 0), np.zeros((2, 2), bool))]
    legend = _mpr.view_legend(
        layers, heat_label="Model foreground probability", distance_mm=4.0, crosshair=True
    )
    labels = [label for label, _mark in legend]
    assert labels[0] == "Model output (tiny-seg@1.0)" and legend[1][1] == _mpr.HEAT
    assert labels[1] == (
        "Model foreground probability: heat map (low to high): dark red to yellow; "
        "aid to review, not evidence of correctness"
    )
    assert labels[2] == "distance: 4.0 mm" and labels[3].startswith("crosshair")
    png = _mpr.compose_views([("axial", Image.new("RGB", (96, 96)))], legend, "Run R, case c")
    font = ImageFont.load_default(size=14)
    needed = 6 + 48 + font.getlength(labels[1])  # gap + ramp swatch + text
    assert Image.open(io.BytesIO(png)).width >= needed  # the line is not cut off
    text = _mpr.png_text(png)
    assert text["Title"] == "Run R, case c"
    assert text["Description"].splitlines() == labels
    assert "aid to review" in text["Disclaimer"]
    plain = _mpr.compose_views(
        [("axial", Image.new("RGB", (96, 96)))], _mpr.view_legend(layers), "Run R, case c"
    )
    assert "Disclaimer" not in _mpr.png_text(plain)
    assert Image.open(io.BytesIO(plain)).width == 320  # no map: the narrow canvas

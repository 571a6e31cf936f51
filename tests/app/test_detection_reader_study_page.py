"""A reader of a detection study marks lesions on the reading page: add, delete, save."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, TEST_SET, Seeded
from workbench.dicom.volume import load_series
from workbench.records.models import ReaderMark
from workbench.records.studies import ReaderRating, ReaderStudy, ReadingSession
from workbench.services import accounts, studies
from workbench.services.context import Workbench

READER = "dr.reviewer"
DESIGN = f"""\
kind: reader_study
id: app-detection-study
version: 1
title: Lesion marks on the reading page
test_set: {{name: {TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: first-read}}
  - {{id: second-read}}
readers: [dr.reviewer, dr.second]
washout_days: 0
seed: 13
detection:
  reference: {{source: seg_components}}
  matching: {{rule: center_in_region}}
primary_endpoint: wafroc1
""".encode()


def _texts(at: AppTest) -> str:
    return "\n".join(
        str(e.value)
        for kind in ("markdown", "info", "success", "error", "warning", "caption")
        for e in getattr(at, kind)
    )


def _button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def _rating(session, case_id: str) -> ReaderRating:  # type: ignore[no-untyped-def]
    """The reader's one rating row of ``case_id`` in this study (other tests share the workdir)."""
    return (
        session.query(ReaderRating)
        .join(ReadingSession, ReadingSession.id == ReaderRating.session_id)
        .join(ReaderStudy, ReaderStudy.id == ReadingSession.study_pk)
        .filter(
            ReaderStudy.study_id == "app-detection-study",
            ReadingSession.reader == READER,
            ReaderRating.case_id == case_id,
        )
        .one()
    )


def test_a_reader_adds_deletes_and_saves_marks_on_the_page(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    approver = accounts.login(wb, "qa.approver", ACCOUNTS["qa.approver"][2])
    ref = studies.add_study(wb, qa, DESIGN).ref
    studies.approve_study(wb, approver, ref, password=ACCOUNTS["qa.approver"][2])
    arm = studies.arm_order(studies.study_design(wb, qa, ref), READER)[0]

    at = app(READER)
    at.switch_page("pages/reader_studies.py").run()
    at.selectbox(key="study-ref").set_value(ref).run()
    at.radio(key="study-arm").set_value(arm).run()
    assert not at.exception, at.exception
    assert "Case **1 of" in _texts(at) and "Add a mark on slice" in _texts(at)
    assert "Save case: no lesion seen" in [b.label for b in at.button]
    me = accounts.login(wb, READER, ACCOUNTS[READER][2])
    case = studies.next_case(wb, me, ref, arm)
    assert case is not None

    # two marks on the slice shown, then the first one deleted
    for x, y, confidence in ((40, 50, 2), (64, 70, 4)):
        at.number_input(key="mark-x").set_value(x)
        at.number_input(key="mark-y").set_value(y)
        at.radio(key="mark-confidence").set_value(confidence)
        _button(at, "Add mark").click().run()
        assert not at.exception, at.exception
    listed = at.dataframe[-1].value
    assert list(listed["x (column)"]) == [40, 64] and list(listed["confidence"]) == [2, 4]
    slice_shown = int(listed["slice"].iloc[1])
    _button(at, "Delete mark 1").click().run()
    assert list(at.dataframe[-1].value["x (column)"]) == [64]
    _button(at, "Save case (1 mark(s))").click().run()
    assert not at.exception, at.exception
    assert "Case **2 of" in _texts(at)

    with wb.transaction(readonly=True) as session:
        rating = _rating(session, case.case_id)
        marks = session.query(ReaderMark).filter(ReaderMark.rating_id == rating.id).all()
        assert rating.rating == 4.0 and rating.seconds is not None
        assert [(m.column, m.row, m.confidence) for m in marks] == [(64.0, 70.0, 4.0)]
        stored = marks[0]
    # placed on the image of the slice shown; its patient position is that pixel's
    volume = load_series(case.image_paths)
    assert stored.sop_instance_uid == volume.sop_instance_uids[slice_shown - 1]
    expected = volume.voxel_to_patient([slice_shown - 1, 70, 64])
    assert [stored.x, stored.y, stored.z] == pytest.approx(list(expected), abs=1e-3)

    # the next case read without a mark
    second = studies.next_case(wb, me, ref, arm)
    assert second is not None
    _button(at, "Save case: no lesion seen").click().run()
    assert not at.exception, at.exception
    with wb.transaction(readonly=True) as session:
        rating = _rating(session, second.case_id)
        assert rating.rating == 0.0
        assert session.query(ReaderMark).filter(ReaderMark.rating_id == rating.id).count() == 0
    assert studies.open_reading(wb, me, ref, arm).n_rated == 2

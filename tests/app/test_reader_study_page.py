"""Two reader accounts read a crossed two-arm study in the app; QA analyses it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, TEST_SET, Seeded
from workbench.services import accounts, studies
from workbench.services.context import Workbench

READERS = ("dr.reviewer", "dr.second")


def _design(model_ref: str) -> bytes:
    return f"""\
kind: reader_study
id: app-reader-study
version: 1
title: App reading sessions
test_set: {{name: {TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: unaided}}
  - {{id: aided, model: {model_ref}}}
readers: [{", ".join(READERS)}]
washout_days: 0
seed: 11
""".encode()


def _open(app: Callable[..., AppTest], user: str) -> AppTest:
    at = app(user)
    at.switch_page("pages/reader_studies.py").run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(
        str(e.value)
        for kind in ("markdown", "info", "success", "error", "warning", "caption")
        for e in getattr(at, kind)
    )


def test_two_readers_read_both_arms_in_the_app(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    approver = accounts.login(wb, "qa.approver", ACCOUNTS["qa.approver"][2])
    ref = studies.add_study(wb, qa, _design(seeded.model_ref)).ref
    studies.approve_study(wb, approver, ref, password=ACCOUNTS["qa.approver"][2])
    design = studies.study_design(wb, qa, ref)
    labels = pd.read_csv(seeded.test_set_root / "reference" / "labels.csv", dtype={"case_id": str})
    truth = dict(zip(labels["case_id"], labels["consensus_malignant"].astype(int), strict=True))
    rng = np.random.default_rng(0)

    for reader in READERS:
        me = accounts.login(wb, reader, ACCOUNTS[reader][2])
        for arm in studies.arm_order(design, reader):
            at = _open(app, reader)
            at.radio(key="study-arm").set_value(arm).run()
            assert not at.exception, at.exception
            # Blinded: the case's images and (aided) the model's score, never the reference.
            assert "Case **1 of" in _texts(at)
            assert not at.dataframe  # no other reader's progress, no truth
            case_id = studies.next_case(wb, me, ref, arm)
            assert case_id is not None
            shows_model = case_id.model_score is not None or case_id.model_mask is not None
            assert shows_model == (arm == "aided")
            assert ("Model score" in _texts(at)) == (case_id.model_score is not None)
            at.radio(key=f"rating-{case_id.case_id}").set_value(4).run()
            at.button[0].click().run()  # the form's "Save rating"
            assert not at.exception, at.exception
            # The rest of the arm through the services, then the signature in the app.
            while (case := studies.next_case(wb, me, ref, arm)) is not None:
                signal = truth[case.case_id] * (1.6 if arm == "aided" else 0.7)
                rating = int(np.clip(round(2.5 + signal + rng.normal(0, 0.8)), 1, 5))
                studies.rate_case(wb, me, ref, arm, case.case_id, rating)
            at = _open(app, reader)
            at.radio(key="study-arm").set_value(arm).run()
            assert "Sign the reading" in _texts(at)
            at.text_input(key="study-sign-password").set_value(ACCOUNTS[reader][2])
            at.button[0].click().run()
            assert not at.exception, at.exception
            at = _open(app, reader)
            at.radio(key="study-arm").set_value(arm).run()
            assert "You signed the reading" in _texts(at)

    progress = studies.reading_progress(wb, qa, ref)
    assert {(p.reader, p.status) for p in progress} == {(r, "signed") for r in READERS}
    at = _open(app, "qa.author")
    assert at.dataframe  # every reader's progress
    at.button(key="study-analyse").click().run()
    assert not at.exception, at.exception
    assert "Verdict" in _texts(at) and "AUC difference (aided minus unaided)" in _texts(at)
    # An auditor may look; a reader may not analyse.
    assert "study-analyse" in [b.key for b in _open(app, "inspector").button]
    assert "study-analyse" not in [b.key for b in _open(app, "dr.reviewer").button]

"""Two reader accounts read a crossed two-arm study in the app; QA analyses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, TEST_SET, Seeded
from workbench.services import accounts, demo, studies, study_reports
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


def _open(app: Callable[..., AppTest], user: str, ref: str | None = None) -> AppTest:
    """The page as ``user``, on study ``ref`` (other tests add studies to the same workdir)."""
    at = app(user)
    at.switch_page("pages/reader_studies.py").run()
    assert not at.exception, at.exception
    if ref is not None and at.selectbox(key="study-ref").value != ref:
        at.selectbox(key="study-ref").set_value(ref).run()
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
            at = _open(app, reader, ref)
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
            at = _open(app, reader, ref)
            at.radio(key="study-arm").set_value(arm).run()
            assert "Sign the reading" in _texts(at)
            at.text_input(key="study-sign-password").set_value(ACCOUNTS[reader][2])
            at.button[0].click().run()
            assert not at.exception, at.exception
            at = _open(app, reader, ref)
            at.radio(key="study-arm").set_value(arm).run()
            assert "You signed the reading" in _texts(at)

    progress = studies.reading_progress(wb, qa, ref)
    assert {(p.reader, p.status) for p in progress} == {(r, "signed") for r in READERS}
    at = _open(app, "qa.author", ref)
    assert at.dataframe  # every reader's progress
    at.button(key="study-analyse").click().run()
    assert not at.exception, at.exception
    assert "Verdict" in _texts(at) and "AUC difference (aided minus unaided)" in _texts(at)
    # People read this study: no simulation notice; every reader row says "person".
    assert "Simulated readers" not in _texts(at)
    assert set(at.dataframe[0].value["reader kind"]) == {"person"}
    # QA builds the study report's draft from the page.
    at.button(key="study-report").click().run()
    assert not at.exception, at.exception
    assert "(draft)" in _texts(at)
    made = study_reports.list_study_reports(wb, qa, ref)
    assert len(made) == 1 and made[0].status == "draft" and Path(made[0].pdf_path).is_file()
    at = _open(app, "qa.author", ref)
    assert made[0].report_uid in set(at.dataframe[-1].value["report"])
    # An auditor may look; a reader may not analyse.
    assert "study-analyse" in [b.key for b in _open(app, "inspector").button]
    assert "study-analyse" not in [b.key for b in _open(app, "dr.reviewer").button]


def test_a_simulated_study_says_so_on_the_page(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    """The demo's simulated reader study: labelled simulated for QA and for its readers."""

    def credentials(user: str) -> tuple[object, str]:
        table = ACCOUNTS if user in ACCOUNTS else demo.DEMO_ACCOUNTS
        return accounts.login(wb, user, table[user][2]), table[user][2]

    sealed = demo.ensure_simulated_reader_study(
        wb,
        test_set=TEST_SET,
        model_ref=seeded.model_ref,
        credentials=credentials,
        admin="sysadmin",
        author="qa.author",
        approver="qa.approver",
        echo=lambda _line: None,
    )
    assert sealed.status == "sealed"
    ref = f"{demo.DEMO_STUDY_ID}@1"
    at = _open(app, "qa.author", ref)
    assert "Simulated readers" in "\n".join(str(w.value) for w in at.warning)
    assert set(at.dataframe[0].value["reader kind"]) == {"simulated reader"}
    assert "sealed" in set(at.dataframe[-1].value["status"])
    # A simulated reader's own view carries the notice too.
    at = AppTest.from_file(str(_app_main()), default_timeout=60)
    _sign_in_simulated(at, wb, "sim.reader1")
    at.run()
    at.switch_page("pages/reader_studies.py").run()
    at.selectbox(key="study-ref").set_value(ref).run()
    assert not at.exception, at.exception
    assert "Simulated readers" in "\n".join(str(w.value) for w in at.warning)
    assert "You signed the reading" in _texts(at)


def _app_main() -> Path:
    return Path(__file__).resolve().parents[2] / "workbench" / "app" / "main.py"


def _sign_in_simulated(at: AppTest, wb: Workbench, username: str) -> None:
    from workbench.app import _session

    _actor, token = accounts.open_session(wb, username, demo.DEMO_ACCOUNTS[username][2])
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = username

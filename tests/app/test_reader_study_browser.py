"""Real browser: a reader opens a study, rates three cases of an arm and pauses.

The app runs under ``streamlit run`` (the server of :mod:`tests.app.test_browser`);
Chromium is driven through Playwright. The ratings, their reading times and the
pause are then read back from the records. Saves ``reader-study.png`` next to the
walkthrough screenshots (``WORKBENCH_SCREENSHOT_DIR``).
"""

from __future__ import annotations

import pytest

from tests.app._seed import ACCOUNTS, TEST_SET, Seeded
from tests.app.test_browser import CHROMIUM, SHOTS, _idle, _nav, _sign_in, server  # noqa: F401
from workbench.records.models import AuditEntry
from workbench.records.studies import ReaderRating, ReaderStudy, ReadingSession
from workbench.services import accounts, studies
from workbench.services.context import Workbench

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]

#: Sorts first among the studies a reader sees, so the page opens on it.
STUDY_ID = "a-browser-reader-study"
READER = "dr.reviewer"
N_RATED = 3


def _design(model_ref: str) -> bytes:
    return f"""\
kind: reader_study
id: {STUDY_ID}
version: 1
title: Browser reading session
test_set: {{name: {TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: unaided}}
  - {{id: aided, model: {model_ref}}}
readers: [{READER}, dr.second]
washout_days: 0
seed: 5
""".encode()


def test_a_reader_rates_cases_and_pauses_in_the_browser(
    server: str,  # noqa: F811
    seeded: Seeded,
    wb: Workbench,
) -> None:
    from playwright.sync_api import sync_playwright

    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    approver = accounts.login(wb, "qa.approver", ACCOUNTS["qa.approver"][2])
    ref = studies.add_study(wb, qa, _design(seeded.model_ref)).ref
    studies.approve_study(wb, approver, ref, password=ACCOUNTS["qa.approver"][2])
    design = studies.study_design(wb, qa, ref)
    first_arm = studies.arm_order(design, READER)[0]

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            _sign_in(page, server, READER)
            _nav(page, "Reader studies")
            for position in range(1, N_RATED + 1):
                page.get_by_text(f"Case {position} of").first.wait_for(timeout=90_000)
                # The rating is the radio inside the form (the viewer has radios of its own).
                rating = page.locator('[data-testid="stForm"] [data-testid="stRadio"]').first
                rating.get_by_text("Confidence that the case is abnormal").wait_for(timeout=90_000)
                _idle(page)
                rating.get_by_text("4", exact=True).click()
                page.get_by_role("button", name="Save rating").click()
                _idle(page)
            page.get_by_text(f"Case {N_RATED + 1} of").first.wait_for(timeout=90_000)
            # Blinded: nothing of the reference standard on the reader's page.
            body = page.locator("body").inner_text()
            assert "consensus" not in body and "malignant" not in body.lower()
            paused = page.get_by_text("Paused; open the arm again to resume.")
            pause = page.get_by_role("button", name="Pause")
            for _ in range(3):  # a click on a page still rerunning can be lost
                _idle(page)
                if paused.is_visible():
                    break
                if pause.is_visible():
                    pause.click()
                    _idle(page)
            paused.wait_for(timeout=60_000)
            page.screenshot(path=str(SHOTS / "reader-study.png"), full_page=True)
        finally:
            browser.close()

    with wb.transaction(readonly=True) as session:
        study = session.query(ReaderStudy).filter(ReaderStudy.study_id == STUDY_ID).one()
        reading = (
            session.query(ReadingSession)
            .filter(ReadingSession.study_pk == study.id, ReadingSession.reader == READER)
            .one()
        )
        assert reading.arm == first_arm and reading.status == "paused"
        rows = (
            session.query(ReaderRating)
            .filter(ReaderRating.session_id == reading.id)
            .order_by(ReaderRating.id)
            .all()
        )
        assert [r.case_id for r in rows] == list(reading.case_order[:N_RATED])
        assert all(r.rating == 4.0 for r in rows)
        assert all(r.seconds is not None and r.seconds > 0 for r in rows)
        actions = [
            e.action
            for e in session.query(AuditEntry).filter(
                AuditEntry.record_id.like(f"{ref}/{READER}/%")
            )
        ]
    assert actions.count("study.rate") == N_RATED
    assert actions[0] == "study.session.open" and actions[-1] == "study.session.pause"
    assert (SHOTS / "reader-study.png").stat().st_size > 10_000

"""Real browser: the case explorer's three-plane view for QA; nothing for a blinded reviewer.

Saves ``explorer.png`` next to the walkthrough screenshots (``WORKBENCH_SCREENSHOT_DIR``).
"""

from __future__ import annotations

import time

import pytest

from tests.app._seed import Seeded
from tests.app.test_browser import CHROMIUM, SHOTS, _idle, _nav, _sign_in, server  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


def test_explorer_in_the_browser(server: str, seeded: Seeded) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            _sign_in(page, server, "qa.author")
            _nav(page, "Case explorer")
            page.get_by_text("Unblinded view").first.wait_for(timeout=60_000)
            image = page.locator('[data-testid="stImage"] img').first
            image.wait_for(timeout=90_000)
            _idle(page)
            before = image.get_attribute("src")
            started = time.monotonic()
            page.get_by_text("Lung", exact=True).first.click()
            _idle(page)
            elapsed = time.monotonic() - started
            assert page.locator('[data-testid="stImage"] img').first.get_attribute("src") != before
            page.screenshot(path=str(SHOTS / "explorer.png"), full_page=True)
            # Speed is measured by benchmarks/bench_mpr.py, not asserted here.
            print(f"window change in the three-plane view: {elapsed:.1f} s")

            reviewer = browser.new_page(viewport={"width": 1400, "height": 900})
            _sign_in(reviewer, server, "dr.reviewer")
            nav = reviewer.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Case explorer" not in nav
            reviewer.goto(f"{server}/case_explorer")
            _idle(reviewer)
            assert not reviewer.get_by_text("Unblinded view").count()
            assert not reviewer.locator('[data-testid="stImage"] img').count()
        finally:
            browser.close()
    assert (SHOTS / "explorer.png").stat().st_size > 10_000

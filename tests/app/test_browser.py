"""Real browser: ``streamlit run`` on a free port, Chromium through Playwright, screenshots.

Saves ``docs/screenshots/{login,results,viewer,reports,audit}.png``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app._seed import ACCOUNTS, Seeded
from tests.app.conftest import APP_MAIN

CHROMIUM = Path("/usr/bin/chromium")
#: Where the walkthrough screenshots go (the README's come from
#: ``scripts/make_app_screenshots.py`` on the demo workdir instead).
SHOTS = Path(os.environ.get("WORKBENCH_SCREENSHOT_DIR", "/tmp/workbench-screenshots"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(seeded: Seeded) -> Iterator[str]:
    """The app served by ``streamlit run`` against the seeded workdir."""
    port = _free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(seeded.workdir)}
    env.pop("WORKBENCH_DB_URL", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP_MAIN),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
            "--client.toolbarMode",
            "minimal",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _idle(page, timeout_s: float = 90.0) -> None:  # noqa: ANN001
    """Wait until the app has finished running its script."""
    page.wait_for_timeout(600)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not page.locator('[data-testid="stStatusWidget"]').is_visible():
            page.wait_for_timeout(400)
            if not page.locator('[data-testid="stStatusWidget"]').is_visible():
                return
        page.wait_for_timeout(300)


def _sign_in(page, url: str, username: str) -> None:  # noqa: ANN001
    page.goto(url)
    page.get_by_label("Username").wait_for(timeout=60_000)
    page.get_by_label("Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(ACCOUNTS[username][2])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=60_000)
    _idle(page)


def _nav(page, title: str) -> None:  # noqa: ANN001
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    _idle(page)


def test_browser_walkthrough(server: str, seeded: Seeded) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(server)
            page.get_by_label("Username").wait_for(timeout=60_000)
            _idle(page)
            page.screenshot(path=str(SHOTS / "login.png"))

            _sign_in(page, server, "qa.author")
            _nav(page, "Results")
            page.get_by_text("Verdict").first.wait_for(timeout=60_000)
            page.set_viewport_size({"width": 1500, "height": 1700})
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            _idle(page)
            page.screenshot(path=str(SHOTS / "results.png"))

            _nav(page, "Reports")
            page.get_by_text("Verify a report PDF").wait_for(timeout=60_000)
            page.screenshot(path=str(SHOTS / "reports.png"))

            _nav(page, "Audit trail")
            page.get_by_text("entries").first.wait_for(timeout=60_000)
            page.screenshot(path=str(SHOTS / "audit.png"))

            reviewer = browser.new_page(viewport={"width": 1500, "height": 1100})
            _sign_in(reviewer, server, "dr.second")
            _nav(reviewer, "Adjudication")
            reviewer.locator('[data-testid="stImage"] img').first.wait_for(timeout=90_000)
            _idle(reviewer)
            started = time.monotonic()
            reviewer.get_by_text("Lung").first.click()
            _idle(reviewer)
            elapsed = time.monotonic() - started
            reviewer.locator('[data-testid="stImage"] img').first.scroll_into_view_if_needed()
            reviewer.wait_for_timeout(500)
            reviewer.screenshot(path=str(SHOTS / "viewer.png"))
            # Speed is measured by benchmarks/bench_app.py, not asserted here.
            print(f"window preset change in the browser: {elapsed:.1f} s")
        finally:
            browser.close()
    for name in ("login", "results", "viewer", "reports", "audit"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000

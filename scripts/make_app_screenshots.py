#!/usr/bin/env python3
"""Screenshots of the app on a demo workdir, for the README and the role guides.

Usage (after ``workbench demo --workdir DIR``)::

    .venv/bin/python scripts/make_app_screenshots.py --workdir DIR

Starts ``workbench app`` on a free port, signs in with the demo accounts in Debian's
chromium (``/usr/bin/chromium``, driven by Playwright) and writes
``docs/screenshots/{login,results,viewer,reports,audit,explorer}.png``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SHOTS = REPOSITORY / "docs" / "screenshots"
#: The run shown on the Results screenshot (matched against the run selector's labels).
RESULTS_RUN = r"lesion-segmentation@1 - demo-weak"
#: The run shown on the adjudication viewer's screenshot (its selector names the protocol).
ADJUDICATION_RUN = r"lesion-segmentation@1"
sys.path.insert(0, str(REPOSITORY))

from workbench.services.demo import DEMO_ACCOUNTS  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _idle(page, timeout_s: float = 90.0) -> None:  # noqa: ANN001
    page.wait_for_timeout(800)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not page.locator('[data-testid="stStatusWidget"]').is_visible():
            page.wait_for_timeout(500)
            if not page.locator('[data-testid="stStatusWidget"]').is_visible():
                return
        page.wait_for_timeout(300)


def _sign_in(page, url: str, username: str) -> None:  # noqa: ANN001
    page.goto(url)
    page.get_by_label("Username").wait_for(timeout=60_000)
    page.get_by_label("Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(DEMO_ACCOUNTS[username][2])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=60_000)
    _idle(page)


def _nav(page, title: str) -> None:  # noqa: ANN001
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    _idle(page)


def main() -> None:
    """Serve the app on ``--workdir`` and save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(args.workdir.resolve())}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "app",
            "--workdir",
            str(args.workdir),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url)
            page.get_by_label("Username").wait_for(timeout=60_000)
            _idle(page)
            page.screenshot(path=str(SHOTS / "login.png"))
            _sign_in(page, url, "qa.author")
            _nav(page, "Results")
            page.get_by_text("Verdict").first.wait_for(timeout=60_000)
            # The run the README describes: the weak candidate under the segmentation protocol.
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name=re.compile(RESULTS_RUN)).first.click()
            _idle(page)
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
            _nav(page, "Case explorer")
            page.get_by_text("Unblinded view").first.wait_for(timeout=60_000)
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name=re.compile(RESULTS_RUN)).first.click()
            _idle(page)
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=90_000)
            _idle(page)
            # the run's worst case is chosen once the page settles (the URL names it)
            page.wait_for_url(re.compile(r"case=case"), timeout=60_000)
            page.wait_for_timeout(2_000)
            _idle(page)
            # the worst case with its explanation map (the model's probability) over it
            page.get_by_text("Explanation map (aid to review)").first.click()
            page.get_by_role("button", name="Compute or load the map").click()
            page.get_by_text("Show the map").first.wait_for(timeout=180_000)
            _idle(page)
            page.screenshot(path=str(SHOTS / "explorer.png"), full_page=True)
            reviewer = browser.new_page(viewport={"width": 1500, "height": 1100})
            _sign_in(reviewer, url, "dr.second")
            _nav(reviewer, "Adjudication")
            _idle(reviewer)
            # A segmentation run's discrepancy, with its decided items shown when the demo's
            # reviewers have read them all.
            reviewer.locator('[data-testid="stSelectbox"]').first.click()
            reviewer.get_by_role("option", name=re.compile(ADJUDICATION_RUN)).first.click()
            _idle(reviewer)
            if reviewer.get_by_text("Nothing left for you to read").count():
                reviewer.get_by_text("Include items already decided or read by me").click()
                _idle(reviewer)
            reviewer.locator('[data-testid="stImage"] img').first.wait_for(timeout=90_000)
            _idle(reviewer)
            reviewer.get_by_text("Soft tissue").first.click()
            _idle(reviewer)
            reviewer.locator('[data-testid="stImage"] img').first.scroll_into_view_if_needed()
            reviewer.wait_for_timeout(500)
            reviewer.screenshot(path=str(SHOTS / "viewer.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    for name in ("login", "results", "viewer", "reports", "audit", "explorer"):
        print(SHOTS / f"{name}.png")


if __name__ == "__main__":
    main()

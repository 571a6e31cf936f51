"""Fixtures of the app tests: a seeded workdir and signed-in AppTests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, Seeded, seed_workdir
from workbench.app import _session
from workbench.services import accounts
from workbench.services.context import Workbench

APP_MAIN = Path(__file__).resolve().parents[2] / "workbench" / "app" / "main.py"


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A workdir with accounts, a locked test set, models, protocols, runs and a report."""
    workdir = tmp_path_factory.mktemp("app-workdir")
    made = seed_workdir(workdir)
    previous = {k: os.environ.get(k) for k in ("WORKBENCH_HOME", "WORKBENCH_DB_URL")}
    os.environ["WORKBENCH_HOME"] = str(workdir)
    os.environ.pop("WORKBENCH_DB_URL", None)
    yield made
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def wb(seeded: Seeded) -> Iterator[Workbench]:
    """A handle on the seeded workdir for the tests' own service calls."""
    handle = Workbench.open(seeded.workdir)
    yield handle
    handle.close()


def sign_in(at: AppTest, wb: Workbench, username: str) -> AppTest:
    """Put a live login session of ``username`` into the AppTest's session state."""
    _actor, token = accounts.open_session(wb, username, ACCOUNTS[username][2])
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = username
    return at


@pytest.fixture
def app(seeded: Seeded, wb: Workbench) -> Callable[[str | None], AppTest]:
    """Factory: the entry file AppTest signed in as ``username`` (None: out), run once."""

    def make(username: str | None = None) -> AppTest:
        at = AppTest.from_file(str(APP_MAIN), default_timeout=60)
        if username is not None:
            sign_in(at, wb, username)
        return at.run()

    return make

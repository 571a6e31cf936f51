"""Fixtures for the service layer: a workbench with one account per role."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from workbench.dicom.synth import SynthSummary  # noqa: E402
from workbench.services import accounts  # noqa: E402
from workbench.services.context import Actor, Workbench  # noqa: E402

PASSWORDS = {
    "admin": "Harbor-Lamp-2026!",
    "qa1": "Quill-Maple-2026!",
    "qa2": "Stone-Birch-2026!",
    "rev1": "Cedar-Drift-2026!",
    "rev2": "Orbit-Fern-2026!",
    "aud": "Ledger-Mint-2026!",
}
ROLES = {"qa1": "qa", "qa2": "qa", "rev1": "reviewer", "rev2": "reviewer", "aud": "auditor"}


@dataclass
class Team:
    """A workbench and a logged-in actor per account."""

    wb: Workbench
    actors: dict[str, Actor]

    def __getitem__(self, username: str) -> Actor:
        return self.actors[username]

    @staticmethod
    def password(username: str) -> str:
        return PASSWORDS[username]


def make_team(root: Path) -> Team:
    wb = Workbench.open(root)
    accounts.bootstrap_admin(
        wb, username="admin", full_name="Ada Admin", password=PASSWORDS["admin"]
    )
    admin = accounts.login(wb, "admin", PASSWORDS["admin"])
    for username, role in ROLES.items():
        accounts.create_user(
            wb,
            admin,
            username=username,
            full_name=f"{username.upper()} Person",
            role=role,
            password=PASSWORDS[username],
            must_change_password=False,
        )
    actors = {u: accounts.login(wb, u, p) for u, p in PASSWORDS.items()}
    return Team(wb=wb, actors=actors)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """A fresh workbench in a temporary workdir with admin, qa1, qa2, rev1, rev2, aud."""
    made = make_team(tmp_path / "wb")
    yield made
    made.wb.close()


@pytest.fixture
def test_set_copy(synthetic_test_set: SynthSummary, tmp_path: Path) -> Path:
    """A private, writable copy of the session's synthetic test set."""
    target = tmp_path / "demo-phantoms"
    shutil.copytree(synthetic_test_set.root, target)
    return target

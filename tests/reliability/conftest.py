"""Fixtures of this suite; the shared harness lives in tests/malformed/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

_MALFORMED = str(Path(__file__).resolve().parents[1] / "malformed")
if _MALFORMED not in sys.path:
    sys.path.insert(0, _MALFORMED)

import harness  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def built_pipeline(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    """A workbench with a locked test set, a model, an approved protocol, a completed
    run and a report signed by author, reviewer and approver (not sealed). Read-only:
    copy it with :func:`harness.copy_workdir` before changing it.
    """
    return harness.build(tmp_path_factory.mktemp("pipeline") / "wb", stage="signed")


@pytest.fixture
def wb_copy(built_pipeline: harness.Pipeline, tmp_path: Path) -> harness.Pipeline:
    """A private copy of :func:`built_pipeline`'s workdir (same test-set folder)."""
    return harness.copy_workdir(built_pipeline, tmp_path / "wb")

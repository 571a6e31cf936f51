"""Fixtures of the DICOMweb tests: a real Orthanc PACS on loopback.

``scripts/test.sh`` starts one Orthanc for the whole run and exports
``WORKBENCH_TEST_ORTHANC_URL`` (with ``_USER``, ``_PASSWORD``, ``_DIR`` and ``_DIMSE``);
without it the fixture starts its own through ``scripts/orthanc_test_server.sh``
and stops it at the end. Tests are skipped, with the reason, when Orthanc and its
DICOMweb plugin are not installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _folder in (_HERE, _HERE.parent / "malformed"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from orthanc_server import (  # noqa: E402
    Orthanc,
    start_orthanc,
    stop_orthanc,
    upload_shared_real_files,
)


@pytest.fixture(scope="session")
def orthanc() -> Iterator[Orthanc]:
    """The shared Orthanc of the test run (or one started for this session).

    It holds :data:`orthanc_server.SHARED_REAL_FILES` before any test uses it.
    """
    url = os.environ.get("WORKBENCH_TEST_ORTHANC_URL")
    if url:
        shared = Orthanc(
            url=url,
            user=os.environ.get("WORKBENCH_TEST_ORTHANC_USER", ""),
            password=os.environ.get("WORKBENCH_TEST_ORTHANC_PASSWORD", ""),
            state_dir=Path(os.environ.get("WORKBENCH_TEST_ORTHANC_DIR", "")),
            dimse=os.environ.get("WORKBENCH_TEST_ORTHANC_DIMSE", ""),
        )
        upload_shared_real_files(shared)
        yield shared
        return
    started = start_orthanc()
    try:
        upload_shared_real_files(started)
        yield started
    finally:
        stop_orthanc(started, purge=True, kill=True)


@pytest.fixture
def private_orthanc(tmp_path: Path) -> Iterator[Callable[[], Orthanc]]:
    """Factory of Orthancs on one state folder (start, stop, start again), stopped at the end."""
    state = tmp_path / "orthanc"
    running: list[Orthanc] = []

    def start() -> Orthanc:
        made = start_orthanc(state)
        running.append(made)
        return made

    yield start
    for server in running:
        stop_orthanc(server, kill=True)

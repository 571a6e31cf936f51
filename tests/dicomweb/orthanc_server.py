"""A throwaway Orthanc started by ``scripts/orthanc_test_server.sh``, for the DICOMweb tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "orthanc_test_server.sh"


@dataclass
class Orthanc:
    """A running Orthanc: DICOMweb root URL, test user, state folder and DICOM node.

    ``dimse`` is its DICOM port as ``AE@HOST:PORT``; it knows the calling AE title
    ``WORKBENCH`` (C-FIND and C-GET allowed).
    """

    url: str
    user: str
    password: str
    state_dir: Path
    dimse: str = ""

    @property
    def rest(self) -> str:
        """Orthanc's own REST root (for loading test data and counting instances)."""
        return self.url.rsplit("/dicom-web", 1)[0]


def start_orthanc(state_dir: Path | None = None) -> Orthanc:
    """Start an Orthanc with ``scripts/orthanc_test_server.sh`` (skip when not installed)."""
    args = ["bash", str(SCRIPT), "start"] + ([str(state_dir)] if state_dir else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"Orthanc test server not available: {done.stderr.strip()[-300:]}")
    values = dict(line.split("=", 1) for line in done.stdout.strip().splitlines() if "=" in line)
    return Orthanc(
        url=values["WORKBENCH_TEST_ORTHANC_URL"],
        user=values["WORKBENCH_TEST_ORTHANC_USER"],
        password=values["WORKBENCH_TEST_ORTHANC_PASSWORD"],
        state_dir=Path(values["WORKBENCH_TEST_ORTHANC_DIR"]),
        dimse=values.get("WORKBENCH_TEST_ORTHANC_DIMSE", ""),
    )


def stop_orthanc(server: Orthanc, *, purge: bool = False, kill: bool = False) -> None:
    """Stop an Orthanc started by :func:`start_orthanc` (``kill``: at once, like a crash)."""
    args = ["bash", str(SCRIPT), "stop", str(server.state_dir)]
    args += (["--purge"] if purge else []) + (["--kill"] if kill else [])
    subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)


#: pydicom's real files that several modules store in the run's shared Orthanc. Their UIDs
#: are fixed and JPEG2000.dcm and JPEG-LL.dcm share a study, so every module's fixture
#: stores all of them first: a whole study then holds the same instances whichever modules
#: ran before or run beside it (storing a file again changes nothing).
SHARED_REAL_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "JPEG-LL.dcm",
    "SC_rgb_rle.dcm",
    "rtplan.dcm",
)


def upload_shared_real_files(server: Orthanc) -> None:
    """Store :data:`SHARED_REAL_FILES` (byte for byte, through Orthanc's REST API)."""
    from pydicom.data import get_testdata_file

    upload(server, [Path(str(get_testdata_file(name))) for name in SHARED_REAL_FILES])


def upload(server: Orthanc, paths: list[Path]) -> None:
    """Store files byte for byte through Orthanc's own REST API (not through the workbench)."""
    with requests.Session() as session:
        session.auth = (server.user, server.password)
        for path in paths:
            answer = session.post(f"{server.rest}/instances", data=path.read_bytes(), timeout=30)
            answer.raise_for_status()

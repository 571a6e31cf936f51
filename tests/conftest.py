"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest

from workbench.dicom.synth import SynthSummary, generate_test_set


@pytest.fixture(scope="session")
def synthetic_test_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """A small clean synthetic test set, generated once per session.

    Four cases of 40 slices at 128 x 128, one per scanner plus a repeat of
    scanner-a (``scanner_ids`` fixed so strata are always present), seed 0.
    Treat it as read-only: copy it (``shutil.copytree``) before changing files.
    """
    root = tmp_path_factory.mktemp("synthetic_test_set")
    return generate_test_set(
        root,
        n_cases=4,
        seed=0,
        matrix=128,
        slices=(40, 40),
        workers=1,
        scanner_ids=("scanner-a", "scanner-b", "scanner-c", "scanner-a"),
    )

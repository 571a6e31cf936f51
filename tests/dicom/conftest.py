"""Fixtures of the DICOM tests."""

from __future__ import annotations

import pytest

from workbench.dicom.synth import Defect, SynthSummary, generate_test_set


@pytest.fixture(scope="session")
def defective_test_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """Seven small cases, each with one injected defect."""
    root = tmp_path_factory.mktemp("defective_test_set")
    return generate_test_set(
        root, n_cases=7, seed=3, matrix=96, slices=(16, 20), workers=2, defects=list(Defect)
    )

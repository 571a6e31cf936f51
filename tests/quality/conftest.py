"""Tiny synthetic test sets for the data-quality checks, generated once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.dicom.index import DicomIndex, index_folder
from workbench.dicom.synth import Defect, SynthSummary, generate_test_set
from workbench.quality import QualityReport, run_quality_checks


@dataclass(frozen=True)
class CheckedSet:
    summary: SynthSummary
    index: DicomIndex
    report: QualityReport

    @property
    def root(self) -> Path:
        return Path(self.summary.root)


def _make(root: Path, *, n_cases: int, seed: int, defects: tuple[Defect, ...]) -> CheckedSet:
    summary = generate_test_set(
        root, n_cases=n_cases, seed=seed, matrix=64, slices=(8, 10), workers=1, defects=defects
    )
    index = index_folder(root, workers=1)
    return CheckedSet(summary, index, run_quality_checks(root, index))


@pytest.fixture(scope="session")
def clean_set(tmp_path_factory: pytest.TempPathFactory) -> CheckedSet:
    return _make(tmp_path_factory.mktemp("quality_clean"), n_cases=3, seed=11, defects=())


@pytest.fixture(scope="session")
def defect_set(tmp_path_factory: pytest.TempPathFactory) -> CheckedSet:
    # one defect per case: 7 defects on 8 cases leaves one clean case
    return _make(
        tmp_path_factory.mktemp("quality_defects"), n_cases=8, seed=12, defects=tuple(Defect)
    )

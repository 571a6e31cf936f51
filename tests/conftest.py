"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest

from workbench.dicom.synth import SynthSummary, generate_test_set

#: Test modules that take minutes (the quickstart notebook builds the whole demo; the Ray
#: fault tests start and kill workers). They are collected first and ``scripts/test.sh``
#: keeps that order (``--no-loadscope-reorder``), so that one worker starts on them while
#: the other runs the rest, instead of one of them starting last.
LONG_MODULES = (
    "tests/notebooks/test_notebooks.py",
    "tests/inference/test_ray_faults.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`LONG_MODULES` to the front, each module's order kept."""

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return LONG_MODULES.index(module) if module in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)


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

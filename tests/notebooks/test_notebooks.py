"""Execute every notebook in ``notebooks/`` from top to bottom.

The notebooks are committed without outputs; this test runs each one in a fresh
kernel (the interpreter running the tests) with ``notebooks/`` as the working folder
and fails on the first cell that raises. Notebooks that need a workdir create their
own under a temporary folder given in ``WORKBENCH_NOTEBOOK_TMP``. That folder is shared
by the notebooks of one test session, as ``var/`` is shared when a person runs them one
after another: the quickstart builds the demo workdir and the auditor walkthrough finds it
built (``run_demo`` is idempotent; run alone, each notebook builds it itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT_S = 1200
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_are_present() -> None:
    names = {p.name for p in PATHS}
    assert {
        "01_quickstart.ipynb",
        "02_statistics.ipynb",
        "03_auditor_walkthrough.ipynb",
    } <= names, f"found {sorted(names)}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name} cell {index} has a count"


@pytest.fixture(scope="session")
def notebook_scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scratch folder for all notebooks of the session (see the module docstring)."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_executes(
    path: Path, notebook_scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class ThisInterpreter(KernelSpecManager):  # type: ignore[misc]
        """Always start the kernel with the Python that runs the tests."""

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="Python 3",
                language="python",
            )

    monkeypatch.setenv("WORKBENCH_NOTEBOOK_TMP", str(notebook_scratch))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    notebook = nbformat.read(path, as_version=4)
    kernel = KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())
    client = NotebookClient(
        notebook,
        km=kernel,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert not errors, errors

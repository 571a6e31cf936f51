"""The package's layer rules, checked on the source: no import cycle, imports only downwards.

Every ``import`` counts, also those made inside functions (deferred imports break
a cycle at import time but not in the design).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

#: What each layer may import from the package: lower layers only.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "naming": {"errors"},
    "vocabulary": set(),
    "config": {"errors", "naming"},
    "stats": {"errors", "vocabulary"},
    "dicom": {"errors", "naming", "vocabulary", "stats", "quality"},
    "quality": {"errors", "naming", "vocabulary", "stats", "dicom"},
    "protocols": {"errors", "naming", "vocabulary", "stats", "dicom"},
    "records": {"errors", "naming", "vocabulary", "config", "dicom"},
    "inference": {"errors", "naming", "vocabulary", "config", "dicom", "stats"},
    "reports": {"errors", "naming", "vocabulary", "stats", "protocols", "dicom"},
    "studies": {"errors", "naming", "vocabulary", "stats", "dicom", "protocols"},
    "dicomweb": {"errors", "naming", "vocabulary", "dicom"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {_module_name(p) for p in SOURCES}


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every workbench module ``path`` imports, with the line (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workbench"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if not base.startswith("workbench"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), node.lineno


def _graph() -> dict[str, set[str]]:
    modules = MODULES
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        name = _module_name(path)
        targets = set()
        for target, _ in _imports(path):
            # "from workbench.x import y" depends on workbench.x (and its __init__ chain).
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target != name and target in modules:
                targets.add(target)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among modules (package ``__init__`` re-exports excluded), if any."""
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    edges = {
        m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages
    }
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in colour and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(edges):
        if start not in colour and (found := visit(start)) is not None:
            return found
    return None


def test_no_import_cycle_between_modules() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer: str) -> None:
    wrong = []
    for path in SOURCES:
        name = _module_name(path)
        if name.split(".")[1:2] != [layer] and name != f"workbench.{layer}":
            continue
        for target, line in _imports(path):
            parts = target.split(".")
            other = parts[1] if len(parts) > 1 else ""
            if other and other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_services_never_import_the_cli_or_the_app() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in SOURCES
        if _module_name(path).startswith("workbench.services")
        for target, line in _imports(path)
        if target.startswith(("workbench.cli", "workbench.app"))
    ]
    assert not wrong, "\n".join(wrong)


def test_stored_results_are_read_only_through_the_result_model() -> None:
    """No reader digs through the stored results dictionary by hand."""
    model = PACKAGE / "protocols" / "results.py"
    digging = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in SOURCES
        if path != model
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if 'results["' in line or "results['" in line
    ]
    assert not digging, "\n".join(digging)

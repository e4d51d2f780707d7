"""The folders say what the code is for: checks of the package layout itself."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "parallel_recon"
TOP_LEVEL_MODULES = {"__init__.py", "api.py", "errors.py", "progress.py"}


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def test_top_level_holds_only_the_shared_modules() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules <= TOP_LEVEL_MODULES, f"move into a subpackage: {modules - TOP_LEVEL_MODULES}"


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()),
)
def test_each_subpackage_states_its_job_and_public_names(name: str) -> None:
    module = importlib.import_module(f"parallel_recon.{name}")
    assert module.__doc__ and module.__doc__.strip(), f"{name}/__init__.py has no docstring"
    assert isinstance(module.__all__, list)
    for public in module.__all__:
        assert getattr(module, public) is not None, f"{name}.__all__ names missing {public}"


def test_protocol_modules_import_no_circle() -> None:
    folder = PACKAGE / "protocol"
    graph = {
        f"parallel_recon.protocol.{p.stem}": {
            name
            for name in _imports(p, "parallel_recon.protocol")
            if name.startswith("parallel_recon.protocol.")
        }
        for p in folder.glob("*.py")
        if p.stem != "__init__"
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circular = sorted(m for m in graph if reaches(m, m, set()))
    assert not circular, f"protocol modules in an import circle: {circular}"


def test_kernels_never_import_the_engine() -> None:
    for path in (REPO_ROOT / "workers").glob("*.py"):
        engine = {
            n
            for n in _imports(path, "parallel_recon.workers")
            if n.startswith("parallel_recon.engine")
        }
        assert not engine, f"{path.name} imports the engine: {engine}"

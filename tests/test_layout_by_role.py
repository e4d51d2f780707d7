"""The folders say what the code is for: checks of the package layout itself."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "parallel_recon"
TOP_LEVEL_MODULES = {"__init__.py", "api.py", "errors.py", "progress.py"}

ROOM_ORDER: tuple[tuple[str, ...], ...] = (
    ("parallel_recon",),  # the package itself: the facade that re-exports the API
    ("api", "cli"),  # what users call
    ("batch", "net"),  # many files; the server and its client
    ("export", "phantom"),
    ("inspect",),
    ("engine",),  # the pipeline, its in-process run and its kernel lookup
    ("hdf5", "workers"),  # the HDF5 layout; the kernels (they never see the engine)
    ("files",),  # opening inputs, outputs that appear complete, disk space
    ("protocol",),
    ("errors", "progress"),
)
"""Rooms from the top down.  A module may import from its own room and from rooms further
down, never from a room above it, nor from another room on its own floor (those are
independent of each other: cli and api share the engine's in-process run rather than one
reaching into the other)."""

_FLOOR = {room: floor for floor, rooms in enumerate(ROOM_ORDER) for room in rooms}


def _imports(path: Path, package: str, source: str | None = None) -> set[str]:
    """Absolute names of the modules a file imports, wherever the import statement is (top
    level, inside a function, under ``if TYPE_CHECKING``), relative imports resolved.

    ``from X import Y`` gives ``X.Y`` when Y is a module of the package X, else ``X``."""
    tree = ast.parse(path.read_text() if source is None else source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                module = node.module
            else:
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                names.add(candidate if _is_module(candidate) else module)
    return names


def _is_module(name: str) -> bool:
    """True when ``parallel_recon.a.b`` names a module or package file of this checkout."""
    parts = name.split(".")
    if parts[0] != "parallel_recon" or len(parts) < 2:
        return False
    base = PACKAGE.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _room(name: str) -> str | None:
    """The room of a module name inside the package (None outside it)."""
    parts = name.split(".")
    if parts[0] != "parallel_recon":
        return None
    return parts[1] if len(parts) > 1 else "parallel_recon"


def _modules() -> list[tuple[Path, str, str]]:
    """(file, its package, its room) of every module of the package and of the kernels."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "workers":
            continue  # a link to workers/, listed below
        package = ".".join(["parallel_recon", *relative.parts[:-1]])
        room = relative.parts[0] if len(relative.parts) > 1 else path.stem
        if path.name == "__init__.py" and len(relative.parts) == 1:
            room = "parallel_recon"
        found.append((path, package, room))
    for path in sorted((REPO_ROOT / "workers").glob("*.py")):
        found.append((path, "parallel_recon.workers", "workers"))
    return found


def _stairs_up(path: Path, package: str, room: str, source: str | None = None) -> list[str]:
    """``module -> room`` for every import of a room above ``room`` or beside it."""
    found = []
    for name in sorted(_imports(path, package, source)):
        target = _room(name)
        if target is None or target == room:
            continue
        if target not in _FLOOR or _FLOOR[target] <= _FLOOR[room]:
            found.append(f"{name} ({target})")
    return found


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


def test_every_room_has_its_place_in_the_order() -> None:
    rooms = {room for _, _, room in _modules()}
    assert rooms - set(_FLOOR) == set(), f"add to ROOM_ORDER: {sorted(rooms - set(_FLOOR))}"


def test_no_module_imports_from_a_room_above_or_beside_it() -> None:
    problems = {
        str(path.relative_to(REPO_ROOT)): stairs
        for path, package, room in _modules()
        if (stairs := _stairs_up(path, package, room))
    }
    assert problems == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def f():\n    from ..cli.common import open_input\n",
            ["parallel_recon.cli.common (cli)"],
        ),
        ("import parallel_recon.batch.run\n", ["parallel_recon.batch.run (batch)"]),
        ("from .. import errors, api\n", ["parallel_recon.api (api)"]),
        ("from .. import __version__\n", ["parallel_recon (parallel_recon)"]),
        (
            "if TYPE_CHECKING:\n    from ..inspect import timeline\n",
            ["parallel_recon.inspect.timeline (inspect)"],
        ),
        ("from ..errors import ReconError\nfrom .ring import Shared\n", []),
    ],
)
def test_the_order_check_sees_every_kind_of_import(source: str, expected: list[str]) -> None:
    """The check itself: function-level, absolute and ``from .. import`` forms are caught in
    an engine module (inspect is above the engine, errors below it)."""
    path = PACKAGE / "engine" / "pipeline.py"
    found = _stairs_up(path, "parallel_recon.engine", "engine", source)
    assert found == expected


def test_modules_of_every_room_import_no_circle() -> None:
    """Inside a room too, imports go one way (the phantom's spec, geometry and header)."""
    circles = {}
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        package = f"parallel_recon.{folder.name}"
        graph = {
            f"{package}.{p.stem}": {
                name
                for name in _imports(p, package)
                if name.startswith(f"{package}.") and name.count(".") == 2
            }
            for p in folder.glob("*.py")
            if p.stem != "__init__"
        }

        def reaches(start: str, goal: str, seen: set[str], graph: dict = graph) -> bool:
            for nxt in graph.get(start, ()):
                if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                    return True
            return False

        circular = sorted(m for m in graph if reaches(m, m, set()))
        if circular:
            circles[folder.name] = circular
    assert circles == {}

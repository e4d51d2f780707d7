"""Choosing the reconstruction kernel: a name from the table or a path to the user's module.

The supervisor loads the kernel once, before forking, so every worker inherits the same
function (and a broken user module fails at start, not in N workers at once).  A user's
module is imported with its own folder on the import path, so it can import a helper module
that sits next to it; when it fails, :func:`failure_location` names its file and line.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parallel_recon.workers.options import COMMON_OPTIONS, option_table, parse_options

from ..errors import ConfigurationError, UsageError

__all__ = [
    "KERNELS",
    "KernelFunction",
    "NON_CARTESIAN_KERNELS",
    "NON_CARTESIAN_TRAJECTORIES",
    "calibration_cache_bytes",
    "check_options",
    "check_trajectories",
    "is_non_cartesian",
    "kernel_data",
    "failure_location",
    "full_traceback",
    "kernel_label",
    "kernel_option_defaults",
    "load_kernel",
    "warm_imports",
]

KernelFunction = Callable[..., Any]

KERNELS: dict[str, str] = {
    "auto": "parallel_recon.workers.auto",
    "cartesian": "parallel_recon.workers.cartesian",
    "grappa": "parallel_recon.workers.grappa",
    "nufft": "parallel_recon.workers.noncartesian",
    "sense": "parallel_recon.workers.sense",
}
"""``--recon NAME`` -> module that defines ``reconstruct(kspace, context)``."""


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec


def failure_location(exc: BaseException, kernel_file: str = "") -> str:
    """``my_kernel.py line 12, in reconstruct``: where an exception in a kernel was raised.

    The innermost frame in the kernel's folder (``kernel_file`` itself or a helper module
    next to it) when there is one, else the innermost frame: the line that the kernel's
    author can act on, not one deep inside numpy.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name} line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    chosen = frames[-1]
    if kernel_file:
        folder = Path(kernel_file).resolve().parent
        own = [f for f in frames if Path(f.filename).resolve().parent == folder]
        chosen = own[-1] if own else chosen
    return f"{Path(chosen.filename).name} line {chosen.lineno}, in {chosen.name}"


def full_traceback(exc: BaseException) -> str:
    """The whole traceback of ``exc`` as text (shown with ``--verbose``)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"--recon {str(path)!r}: expected a Python file, found nothing")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"pr_user_kernel_{digest}", path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"--recon {str(path)!r}: cannot load it as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # helper modules beside the kernel, as for a script
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        where = failure_location(exc, str(path))
        raise ConfigurationError(
            f"--recon {str(path)!r}: importing it failed: {type(exc).__name__}: {exc}"
            + (f" ({where})" if where else "")
        ) from None
    return module


def _load_name(name: str) -> Any:
    if name not in KERNELS:
        known = ", ".join(sorted(KERNELS))
        close = difflib.get_close_matches(name, KERNELS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"--recon {name!r}: expected one of {known} or a path to a .py file{hint}")
    try:
        return importlib.import_module(KERNELS[name])
    except ImportError as exc:
        raise ConfigurationError(
            f"--recon {name!r}: cannot import {KERNELS[name]}: {exc}"
        ) from None


@functools.lru_cache(maxsize=8)
def _module(spec: str) -> Any:
    return _load_file(Path(spec)) if _is_path(spec) else _load_name(spec)


def check_options(spec: str, options: dict[str, str]) -> dict[str, Any]:
    """Parse ``--recon-option`` values against the kernel's ``OPTIONS`` table.

    Every kernel declares the options it reads (bundled kernels and user kernels alike, in a
    module-level ``OPTIONS`` table); the engine's own (``prewhiten``) are always known.  An
    unknown key is a ConfigurationError listing the known ones, so a typo is never silently
    ignored; a user kernel without a table accepts only the engine's options.  Returns the
    typed values of every known option.
    """
    declared = getattr(_module(spec), "OPTIONS", None)
    table = option_table(COMMON_OPTIONS, declared or ())
    if declared is None and set(options) - set(table):
        unknown = sorted(set(options) - set(table))[0]
        raise UsageError(
            f"--recon-option {unknown}: the kernel {kernel_label(spec)} declares no options "
            f"of its own (known: {', '.join(table)}); to take {unknown}=..., list it in a "
            "module-level OPTIONS table of parallel_recon.workers.options.KernelOption"
        )
    return parse_options(options, table, kernel_label(spec))


NON_CARTESIAN_TRAJECTORIES = ("radial", "goldenangle", "spiral")
"""ismrmrd.xsd trajectories whose readouts do not lie on a Cartesian grid (``cartesian`` and
``epi`` are placed by their encode steps, EPI lines reversed by their IS_REVERSE flag;
``other`` is non-Cartesian when the acquisitions carry trajectories)."""

NON_CARTESIAN_KERNELS = ("nufft",)
"""Kernels that take only non-Cartesian units: the engine hands them readouts whatever the
header says (a Cartesian scan's stored trajectories are then used as they are)."""


def kernel_data(spec: str) -> tuple[str, ...]:
    """What a kernel takes: its module's ``DATA`` (``cartesian``, ``noncartesian``), else
    Cartesian units only (every kernel written before non-Cartesian units existed)."""
    return tuple(getattr(_module(spec), "DATA", ("cartesian",)))


def is_non_cartesian(spec: str, trajectories: list[str], first_trajectory_dims: int) -> bool:
    """Whether the stream's units are readouts with trajectories rather than grid lines.

    A header trajectory ``radial``, ``goldenangle`` or ``spiral`` always is (a Cartesian-only
    kernel then refuses it); ``other`` with a trajectory in the first acquisition is when the
    kernel takes non-Cartesian units (a Cartesian-only kernel places its lines as before); a
    kernel that takes non-Cartesian units only gets readouts whatever the header says.
    """
    kinds = {t.lower() for t in trajectories}
    takes = kernel_data(spec)
    if kinds & set(NON_CARTESIAN_TRAJECTORIES):
        return True
    if "other" in kinds and first_trajectory_dims > 0 and "noncartesian" in takes:
        return True
    return "cartesian" not in takes


def check_trajectories(spec: str, trajectories: list[str], non_cartesian: bool = False) -> None:
    """Refuse data the kernel cannot take, naming the trajectory and the kernel that can.

    Without this check a spiral or radial scan would fail later, in the reader, with a
    confusing readout-length or encode-step mismatch.  Mixed encodings (one Cartesian, one
    radial) are refused too: a stream's units are either grid lines or readouts.
    """
    kinds = [t.lower() for t in trajectories]
    grid = [t for t in kinds if t in ("cartesian", "epi")]
    if non_cartesian and grid and any(t in NON_CARTESIAN_TRAJECTORIES for t in kinds):
        raise ConfigurationError(
            f"the header mixes Cartesian and non-Cartesian encodings ({', '.join(trajectories)})"
            ": a stream is reconstructed as one or the other"
        )
    if non_cartesian and "noncartesian" not in kernel_data(spec):
        number = next((i for i, t in enumerate(kinds) if t in NON_CARTESIAN_TRAJECTORIES), 0)
        raise ConfigurationError(
            f"encoding {number} has a {trajectories[number]} trajectory: the "
            f"{kernel_label(spec)} kernel reconstructs Cartesian data only (lines placed on a "
            "grid by their encode steps); use --recon nufft (or auto)"
        )


def load_kernel(spec: str) -> KernelFunction:
    """The ``reconstruct`` function named by ``--recon`` (a table name or a .py path)."""
    module = _module(spec)
    function = getattr(module, "reconstruct", None)
    if not callable(function):
        raise ConfigurationError(
            f"--recon {spec!r}: the module must define a function "
            "reconstruct(kspace, context) -> list[Image]"
        )
    return function


def calibration_cache_bytes(spec: str, plan: Any, coils: int) -> int:
    """The most bytes the kernel derives from one calibration and shares between workers
    (its module's ``calibration_cache_bytes(plan, coils)``; 0 when it declares none)."""
    bound = getattr(_module(spec), "calibration_cache_bytes", None)
    if not callable(bound):
        return 0
    return max(0, int(bound(plan, coils)))


def warm_imports(spec: str) -> tuple[str, ...]:
    """Modules the kernel imports only when it first needs them (its module's optional
    ``WARM_IMPORTS``), for a long-lived process to import ahead."""
    return tuple(getattr(_module(spec), "WARM_IMPORTS", ()))


def kernel_option_defaults() -> str:
    """``prewhiten=on (every kernel); cartesian: coils=rss, ...; grappa: lambda=0.0005, ...``
    from the bundled kernels' own OPTIONS tables, so help never shows a default the code
    does not use (imports the kernels: call it only to print help)."""
    parts = [", ".join(f"{o.name}={o.default}" for o in COMMON_OPTIONS) + " (every kernel)"]
    for name in ("cartesian", "grappa"):
        table = getattr(_module(name), "OPTIONS", ())
        common = {o.name for o in COMMON_OPTIONS}
        listed = ", ".join(f"{o.name}={o.default}" for o in table if o.name not in common)
        parts.append(f"{name}: {listed}")
    return "; ".join(parts)


def kernel_label(spec: str) -> str:
    """Short name of a kernel for messages."""
    return Path(spec).name if _is_path(spec) else spec

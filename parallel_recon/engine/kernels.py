"""Choosing the reconstruction kernel: a name from the table or a path to the user's module.

The supervisor loads the kernel once, before forking, so every worker inherits the same
function (and a broken user module fails at start, not in N workers at once).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parallel_recon.workers.options import COMMON_OPTIONS, option_table, parse_options

from ..errors import ConfigurationError

__all__ = ["KERNELS", "KernelFunction", "check_options", "kernel_label", "load_kernel"]

KernelFunction = Callable[..., Any]

KERNELS: dict[str, str] = {
    "auto": "parallel_recon.workers.auto",
    "cartesian": "parallel_recon.workers.cartesian",
    "grappa": "parallel_recon.workers.grappa",
}
"""``--recon NAME`` -> module that defines ``reconstruct(kspace, context)``."""


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigurationError(f"--recon {str(path)!r}: expected a Python file, found nothing")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"pr_user_kernel_{digest}", path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"--recon {str(path)!r}: cannot load it as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigurationError(
            f"--recon {str(path)!r}: importing it failed: {type(exc).__name__}: {exc}"
        ) from None
    return module


def _load_name(name: str) -> Any:
    if name not in KERNELS:
        known = ", ".join(sorted(KERNELS))
        raise ConfigurationError(
            f"--recon {name!r}: expected one of {known} or a path to a .py file"
        )
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

    Bundled kernels declare every option they know; an unknown key is a ConfigurationError
    listing the known ones.  A user kernel without an ``OPTIONS`` table gets its options
    unchecked (only the engine's own, such as ``prewhiten``, are parsed).  Returns the typed
    values of the options the table (or the engine) knows.
    """
    declared = getattr(_module(spec), "OPTIONS", None)
    if declared is None:
        common = option_table(COMMON_OPTIONS)
        known = {k: v for k, v in options.items() if k in common}
        return parse_options(known, common, kernel_label(spec))
    return parse_options(options, option_table(COMMON_OPTIONS, declared), kernel_label(spec))


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


def kernel_label(spec: str) -> str:
    """Short name of a kernel for messages."""
    return Path(spec).name if _is_path(spec) else spec

"""Choosing the reconstruction kernel: a name from the table or a path to the user's module.

The supervisor loads the kernel once, before forking, so every worker inherits the same
function (and a broken user module fails at start, not in N workers at once).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["KERNELS", "KernelFunction", "kernel_label", "load_kernel"]

KernelFunction = Callable[..., Any]

KERNELS: dict[str, str] = {
    "cartesian": "parallel_recon.workers.cartesian",
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


def load_kernel(spec: str) -> KernelFunction:
    """The ``reconstruct`` function named by ``--recon`` (a table name or a .py path)."""
    module = _load_file(Path(spec)) if _is_path(spec) else _load_name(spec)
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

"""Many files: discovery, local scheduling, Dask submission, outputs and reports.

``run_batch(inputs, outdir, settings)`` is what ``parallel-recon batch`` runs.  Names are
imported on first use, so a runner process started with ``python -m
parallel_recon.batch.service`` (and the Dask task that talks to it) pays only for what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatchOutcome",
    "BatchSettings",
    "FileJob",
    "FileResult",
    "discover",
    "run_batch",
]

_HOME = {
    "BatchOutcome": "run",
    "BatchSettings": "model",
    "FileJob": "model",
    "FileResult": "model",
    "discover": "discover",
    "run_batch": "run",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

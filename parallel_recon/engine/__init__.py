"""The shared-memory reconstruction pipeline: reader, worker pool, ordering writer, supervisor.

Public names are imported on first use, so that a command which needs only the plan (or
nothing of the engine) does not pay for multiprocessing start-up imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "KERNELS",
    "PipelineOptions",
    "load_kernel",
    "plan_from_header",
    "run_pipeline",
]

_HOME = {
    "KERNELS": "kernels",
    "load_kernel": "kernels",
    "PipelineOptions": "pipeline",
    "run_pipeline": "pipeline",
    "plan_from_header": "plan",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

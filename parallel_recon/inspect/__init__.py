"""What a file or stream holds: ``info`` summaries and ``view`` PNG montages.

Names are imported on first use, so that a command asking whether a file is HDF5 does not
load the imaging library of the montages.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SectionSummary",
    "ViewOptions",
    "is_hdf5",
    "list_mrd_groups",
    "render_montage",
    "summarize_hdf5_group",
    "summarize_stream",
    "tiles_from_hdf5",
    "tiles_from_stream",
]

_HOME = {
    "SectionSummary": "summary",
    "ViewOptions": "montage_sources",
    "is_hdf5": "summary_hdf5",
    "list_mrd_groups": "summary_hdf5",
    "render_montage": "montage",
    "summarize_hdf5_group": "summary_hdf5",
    "summarize_stream": "summary",
    "tiles_from_hdf5": "montage_sources",
    "tiles_from_stream": "montage_sources",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

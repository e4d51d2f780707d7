"""What a file or stream holds: ``info`` summaries and ``view`` PNG montages."""

from __future__ import annotations

from .montage import render_montage
from .montage_sources import ViewOptions, tiles_from_hdf5, tiles_from_stream
from .summary import SectionSummary, summarize_stream
from .summary_hdf5 import is_hdf5, list_mrd_groups, summarize_hdf5_group

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

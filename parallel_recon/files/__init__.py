"""What happens to the user's files: outputs appear complete or not at all, appends change
nothing that was there, and no command writes over one of its own inputs.

- :class:`PendingFile`: the next version of an output, written under a temporary name beside
  it and renamed into place only when complete (optionally starting from a copy of the
  existing file, so that a failed append leaves the original untouched).
- :func:`pending_folder`: the same for a new folder of files (a DICOM series).
- :func:`refuse_same_file`: the output is not one of the inputs (same device and inode,
  whatever the names, links and standard streams say).
- :class:`SpaceReservation`: disk space claimed before it is written, so that a full disk
  is a clean error instead of a half-written file.
- :mod:`.inputs`: opening an input (a file or stdin) and telling what a file holds.

Names are imported on first use: every command opens files, and none should pay for the
modules of the others before its first byte.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PendingFile",
    "SpaceReservation",
    "disk_full_message",
    "is_disk_full",
    "pending_folder",
    "refuse_same_file",
]

_HOME = {
    "PendingFile": "pending",
    "SpaceReservation": "space",
    "disk_full_message": "pending",
    "is_disk_full": "space",
    "pending_folder": "folder",
    "refuse_same_file": "same_file",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

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
"""

from __future__ import annotations

from .folder import pending_folder
from .pending import PendingFile, disk_full_message
from .same_file import refuse_same_file
from .space import SpaceReservation, is_disk_full

__all__ = [
    "PendingFile",
    "SpaceReservation",
    "disk_full_message",
    "is_disk_full",
    "pending_folder",
    "refuse_same_file",
]

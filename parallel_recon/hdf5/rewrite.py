"""A new HDF5 file holding everything of an old one except one top-level group.

Deleting a group from an HDF5 file does not give its space back (the library has no
compaction), so replacing a group in place makes the file grow on every run.  Copying what
is kept into a fresh file and writing the new group there reclaims the space.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from .layout import open_mrd_file

__all__ = ["copy_all_but"]


def copy_all_but(source: str | Path, target: str | Path, group: str) -> list[str]:
    """Copy every top-level object of ``source`` except ``group`` (and the root attributes)
    into the new file ``target``; returns the names copied.  When nothing else is there,
    ``target`` is left as it is (empty), so the rewritten file is exactly a fresh one."""
    with open_mrd_file(source) as old:
        kept = [name for name in old if name != group]
        if not kept and not old.attrs:
            return []
        with h5py.File(target, "w") as new:
            for key, value in old.attrs.items():
                new.attrs[key] = value
            for name in kept:
                old.copy(old[name], new, name=name)
    return kept

"""Disk space: claim it before writing, and recognise "disk full" errors.

The HDF5 library does not survive a full disk: a write that fails with ENOSPC leaves its
caches in a state where closing the file crashes the process (exit 139, nothing on stderr)
and the file unreadable.  So HDF5 outputs claim their space *before* each block is written:
:class:`SpaceReservation` extends the file with ``posix_fallocate`` (the blocks then belong
to the file, and no other writer can take them), so that running out of space is an
ordinary error raised before the library has written anything.  HDF5 allocates new objects
at its own end-of-allocation address, not at the end of the file, so it writes into the
claimed blocks; :meth:`SpaceReservation.release` hands back what was not used.

Where a filesystem cannot preallocate, the reservation falls back to comparing the request
with the free space that ``statvfs`` reports.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["DISK_FULL_ERRNOS", "SpaceReservation", "free_bytes", "is_disk_full", "no_space"]

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Out of space, out of quota, file too large: for the user, all three mean "disk full"."""

_NOT_SUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    where = Path(path)
    folder = where if where.is_dir() else where.parent
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def no_space(path: str | Path) -> OSError:
    """The ENOSPC error a writer raises when what it is about to write does not fit."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class SpaceReservation:
    """Keeps the blocks of a file claimed ahead of the writes that will fill them.

    Parameters
    ----------
    path:
        The file being written (it must exist).
    release:
        Called by :meth:`release` to give back what was claimed but not written; for HDF5,
        re-opening the file for writing makes the library truncate it to its end address.

    ``claimed`` is the file size the reservation has made sure of, in bytes.
    """

    def __init__(self, path: str | Path, release: Callable[[Path], None] | None = None):
        self.path = Path(path)
        self.claimed = self.path.stat().st_size
        self._release = release
        self._preallocate = True

    def grow(self, nbytes: int) -> None:
        """Claim ``nbytes`` more; raises the ENOSPC OSError when they do not fit."""
        if nbytes <= 0:
            return
        target = self.claimed + nbytes
        if self._preallocate:
            try:
                self._fallocate(target)
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                self._preallocate = False
        if not self._preallocate:
            grown = max(0, target - self.path.stat().st_size)
            if grown > free_bytes(self.path):
                raise no_space(self.path)
        self.claimed = target

    def _fallocate(self, size: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size < size:
                os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give back the claimed blocks that were not written (once the writer is done)."""
        if self._release is not None and self.path.stat().st_size > 0:
            self._release(self.path)

"""The next version of an output file, written beside it under a temporary name.

An output appears only when it is complete: it is written as ``.NAME.XXXXXXXX.partial`` in
the same folder and renamed over ``NAME`` at the end (a rename within one filesystem is
atomic), so an error, a full disk, Ctrl-C or a crash leaves either the previous file or
none.  An append starts from a copy of the existing file, so a failed append leaves the
original untouched, byte for byte; the price is the copy (time and free space for one more
copy of the file while the append runs).  The copy is made by a thread, in the kernel, while
the command goes on with its start-up (the first use of :attr:`PendingFile.path` waits for
it): a reflink where the filesystem shares blocks between files (Btrfs, XFS: no data is
copied until one of them changes), else ``sendfile``.

The replaced file keeps its path (a symbolic link keeps pointing at it: the file the link
names is replaced), its permission bits and, where allowed, its owner; a hard link elsewhere
keeps the old version.  Outputs that are not regular files (``/dev/null``, a FIFO, a
terminal) are written directly: there is nothing to rename.  A writer that must seek in its
file (HDF5) cannot write such an output directly; with ``seekable=True`` it writes a
temporary file in the system's temporary folder instead, whose bytes are copied through the
device or FIFO when complete.  A process killed without its cleanup (``kill -9``) can leave
a ``.NAME.*.partial`` file behind; it is safe to delete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path
from types import TracebackType

from ..errors import OutputFileError
from .space import free_bytes, is_disk_full

__all__ = ["PendingFile", "disk_full_message"]

_SUFFIX = ".partial"
_TRIES = 100
_COPY_CHUNK = 1 << 20


def _human(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def disk_full_message(name: str, folder: Path, outcome: str) -> str:
    """One line for a full disk: which file, how much is free there, what became of it."""
    try:
        free = f"{_human(free_bytes(folder))} free there"
    except OSError:
        free = "free space unknown"
    return f"no space left on device for {name!r} ({free}); {outcome}"


class PendingFile:
    """The next version of ``target``, committed by an atomic rename.

    Parameters
    ----------
    target:
        The output path as the user gave it (symbolic links are followed).
    keep_content:
        Start from a copy of the existing file (appending); otherwise start empty.
    suffix:
        Ending of the temporary name after ``.partial``, for writers that choose their
        format by the name (``.nii.gz``).
    seekable:
        The writer needs a regular file it can seek in (HDF5).  A target that is not a
        regular file (``/dev/null``, a FIFO) is then written through a temporary file in
        the system's temporary folder, copied through the target when complete.

    Write to :attr:`path` (which waits for the copy of an existing file), then
    :meth:`commit`.  As a context manager it commits when the
    block ends normally and discards on any exception; a disk-full OSError then becomes one
    :class:`OutputFileError` line that also says what became of the target.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        keep_content: bool = False,
        suffix: str = "",
        seekable: bool = False,
    ):
        self.name = str(target)
        self._suffix = suffix
        self.target = Path(os.path.realpath(target))
        info = _stat(self.target)
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise OutputFileError(f"cannot write {self.name!r}: it is a directory")
        self.existed = info is not None and stat.S_ISREG(info.st_mode)
        """The target was a regular file before this run."""
        special = info is not None and not self.existed
        self.staged = special and seekable
        """The target is a device or FIFO and the writer must seek: written to a temporary
        file elsewhere, copied through the target at :meth:`commit`."""
        self.direct = special and not seekable
        """The target is a device, FIFO or socket: written in place, nothing to rename."""
        self._old = info
        self._open = not self.direct
        folder = self.target.parent
        if self.staged:
            import tempfile

            folder = Path(tempfile.gettempdir())
        self._path = self.target if self.direct else self._create_temporary(folder)
        self._copying: threading.Thread | None = None
        self._copy_error: OutputFileError | None = None
        if keep_content and self.existed and info is not None and info.st_size > 0:
            self._copying = threading.Thread(
                target=self._copy_existing, args=(info.st_size,), name="copy", daemon=True
            )
            self._copying.start()

    @property
    def path(self) -> Path:
        """Where to write (for an append: once the copy of the existing file is complete;
        a copy that failed raises its error here)."""
        self._wait_for_copy()
        return self._path

    def _wait_for_copy(self) -> None:
        copying, self._copying = self._copying, None
        if copying is not None:
            copying.join()
        if self._copy_error is not None:
            raise self._copy_error

    # ----------------------------------------------------------------- state
    @property
    def outcome(self) -> str:
        """What becomes of the target when this version is discarded, for error messages."""
        if self.direct:
            return f"{self.name!r} may hold part of the output"
        if self.staged:
            return f"nothing was written to {self.name!r}"
        if self.existed:
            return f"{self.name!r} is unchanged"
        return f"{self.name!r} was not created"

    def commit(self) -> None:
        """Rename the new version over the target (keeping the old file's mode and owner)."""
        self._wait_for_copy()
        if not self._open:
            return
        self._open = False
        if self.staged:
            self._copy_through()
            return
        old = self._old
        try:
            if old is not None:
                os.chmod(self._path, stat.S_IMODE(old.st_mode))
                with contextlib.suppress(PermissionError):
                    os.chown(self._path, old.st_uid, old.st_gid)
            os.replace(self._path, self.target)
        except OSError as exc:
            self._remove()
            raise OutputFileError(
                f"cannot put the output in place as {self.name!r}: {exc.strerror}; {self.outcome}"
            ) from None

    def discard(self) -> None:
        """Remove the new version; the target stays as it was (or absent)."""
        with contextlib.suppress(OutputFileError):
            self._wait_for_copy()  # a copy still running would write on after the unlink
        if self._open:
            self._open = False
            self._remove()

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.commit()
            return
        self.discard()
        if is_disk_full(exc):
            raise OutputFileError(
                disk_full_message(self.name, self.target.parent, self.outcome)
            ) from None

    # --------------------------------------------------------------- helpers
    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def _copy_through(self) -> None:
        """Copy the finished temporary file through the device or FIFO, then remove it."""
        import shutil

        try:
            with open(self._path, "rb") as source, open(self.target, "wb") as sink:
                shutil.copyfileobj(source, sink, _COPY_CHUNK)
        except OSError as exc:
            raise OutputFileError(
                f"cannot write {self.name!r}: {exc.strerror}; it may hold part of the output"
            ) from None
        finally:
            self._remove()

    def _create_temporary(self, folder: Path) -> Path:
        if not folder.is_dir():
            raise OutputFileError(
                f"cannot write {self.name!r}: folder {str(folder)!r} does not exist"
            )
        for _ in range(_TRIES):
            path = folder / f".{self.target.name}.{os.urandom(4).hex()}{_SUFFIX}{self._suffix}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                if is_disk_full(exc):
                    raise OutputFileError(
                        disk_full_message(self.name, folder, self.outcome)
                    ) from None
                raise OutputFileError(
                    f"cannot create {self.name!r}: {exc.strerror} (in folder {str(folder)!r})"
                ) from None
            os.close(fd)
            return path
        raise OutputFileError(f"cannot create a temporary file beside {self.name!r}")

    def _copy_existing(self, size: int) -> None:
        """Copy the target to the new version (an append), in a thread; a failure leaves both
        as they were and is raised by the next use of :attr:`path`."""
        import shutil

        try:
            if not _reflink(self.target, self._path):
                if size > free_bytes(self.target.parent):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._path))
                shutil.copyfile(self.target, self._path)
        except OSError as exc:
            self._open = False
            self._remove()
            if is_disk_full(exc):
                self._copy_error = OutputFileError(
                    disk_full_message(
                        self.name,
                        self.target.parent,
                        f"appending needs room for a copy of it ({_human(size)}); {self.outcome}",
                    )
                )
            else:
                self._copy_error = OutputFileError(
                    f"cannot copy {self.name!r} to append to it: {exc.strerror}; {self.outcome}"
                )


_FICLONE = 0x40049409
"""``ioctl(dest, FICLONE, source)`` (linux/fs.h): dest shares source's blocks."""


def _reflink(source: Path, dest: Path) -> bool:
    """Make ``dest`` a copy-on-write clone of ``source``; False where the filesystem (or the
    system) cannot, and nothing was changed."""
    import fcntl

    try:
        with open(source, "rb") as src, open(dest, "r+b") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
    except OSError:
        return False
    return True


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputFileError(f"cannot use output {str(path)!r}: {exc.strerror}") from None

"""A new output folder that appears complete or not at all.

Written as ``.NAME.XXXXXXXX.partial`` beside the target and renamed to ``NAME`` at the end,
like :class:`~parallel_recon.files.PendingFile` does for single files (a DICOM series is a
folder of files).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputFileError

__all__ = ["pending_folder"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _parent(path: Path) -> Path:
    parent = path.parent
    if not parent.is_dir():
        raise OutputFileError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    return parent


@contextlib.contextmanager
def pending_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path``, renamed to ``path`` when the block succeeds.

    ``path`` may be missing or an empty folder; a folder with files is refused, so that an
    export never mixes with an older one.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputFileError(
            f"output {str(path)!r} exists and is not an empty folder; remove it or choose "
            "another -o (DICOM export writes a new folder)"
        )
    parent = _parent(path)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    temporary.chmod(0o777 & ~_umask())
    try:
        yield temporary
        if path.exists():
            path.rmdir()
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

"""Output paths: files and folders appear complete or not at all, and names for many outputs.

Every exporter writes under a temporary name beside the target and renames it when complete,
so an interrupted export leaves either a finished output or nothing (DESIGN: any crash
leaves a finished file or none).  When one command writes several files (one per series, or
per channel), the given file name gets a suffix before its extension.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputFileError

__all__ = ["numbered_paths", "split_extension", "staged_directory", "staged_file"]


def split_extension(path: Path, extensions: Sequence[str]) -> tuple[str, str]:
    """``(stem, extension)`` of ``path`` for the first matching extension (longest first)."""
    name = path.name
    for extension in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)], name[-len(extension) :]
    raise InputFileError(
        f"output {str(path)!r}: expected a name ending in {' or '.join(extensions)}"
    )


def numbered_paths(path: Path, suffixes: Sequence[str], extensions: Sequence[str]) -> list[Path]:
    """``path`` itself for one output, else ``<stem>_<suffix><ext>`` for each suffix."""
    stem, extension = split_extension(path, extensions)
    if len(suffixes) == 1:
        return [path]
    return [path.with_name(f"{stem}_{suffix}{extension}") for suffix in suffixes]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _parent(path: Path) -> Path:
    parent = path.parent
    if not parent.is_dir():
        raise InputFileError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    return parent


@contextlib.contextmanager
def staged_file(path: Path, extension: str = "") -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds.

    The temporary name ends in ``extension`` for writers that choose a format by name.
    """
    parent = _parent(path)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".partial{extension}", dir=parent
    )
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; exports are not
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@contextlib.contextmanager
def staged_directory(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path``, renamed to ``path`` when the block succeeds.

    ``path`` may be missing or an empty folder; a folder with files is refused, so that an
    export never mixes with an older one.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputFileError(
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

"""Output names: when one export writes several files (one per series, or per channel), the
given file name gets a suffix before its extension.

The files themselves appear complete or not at all (:mod:`parallel_recon.files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import InputFileError

__all__ = ["numbered_paths", "split_extension"]


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

"""Refuse an output that is one of the inputs, whatever names lead to it.

``mrd_stream_recon -i scan.bin -o scan.bin`` used to truncate the scan before reading it.
Two names are the same file when they lead to the same device and inode: through a symbolic
or hard link, ``-o`` against a redirected stdin (``-o scan.bin < scan.bin``), or ``-i``
against a redirected stdout (``-i scan.bin >> scan.bin``).  Only regular files count, so
``/dev/null`` as both stdin and output is no conflict.

``CMD < scan.bin > scan.bin`` cannot be saved: the shell empties ``scan.bin`` for the ``>``
before the command starts.  The message then says so, since "writing it would destroy the
input" would suggest that the input is still there.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence

from ..errors import OutputFileError

__all__ = ["refuse_same_file"]


def _is_std(path: str | None) -> bool:
    return path is None or path == "-"


def _stat(path: str | None, std_fd: int) -> os.stat_result | None:
    """The status of the regular file ``path`` names (None or ``-``: the standard stream
    ``std_fd``); None when it does not exist or is not a regular file."""
    try:
        info = os.fstat(std_fd) if _is_std(path) else os.stat(str(path))
    except (OSError, ValueError):
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _identity(info: os.stat_result | None) -> tuple[int, int] | None:
    return None if info is None else (info.st_dev, info.st_ino)


def _name(path: str | None, stream: str) -> str:
    return stream if _is_std(path) else repr(path)


def _fd(stream: object, default: int) -> int:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return default


def refuse_same_file(inputs: Sequence[str | None], outputs: Sequence[str | None]) -> None:
    """Raise :class:`OutputFileError` when an output is the same file as an input.

    Parameters
    ----------
    inputs, outputs:
        Paths as the user gave them; None or ``-`` means stdin (for inputs) or stdout (for
        outputs).  Outputs that do not exist yet cannot clash and are skipped.
    """
    stdin, stdout = _fd(sys.stdin, 0), _fd(sys.stdout, 1)
    sources = [(path, _identity(_stat(path, stdin))) for path in inputs]
    for output in outputs:
        info = _stat(output, stdout)
        target = _identity(info)
        if target is None:
            continue
        for source, identity in sources:
            if identity == target and _is_std(output) and info is not None and not info.st_size:
                raise OutputFileError(
                    f"standard output is the same file as the input "
                    f"{_name(source, 'standard input')}, and it is empty: the shell's '>' "
                    "redirection emptied it before this command started, so its content is "
                    "lost; next time write to another file (> other.bin)"
                )
            if identity == target:
                raise OutputFileError(
                    f"the output {_name(output, 'standard output')} is the same file as the "
                    f"input {_name(source, 'standard input')}: writing it would destroy the "
                    "input; choose another output file"
                )

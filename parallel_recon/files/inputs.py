"""Opening the user's inputs: a file or standard input, and what a raw-data file holds.

Every command and the Python API open their inputs here, so a terminal on stdin, a missing
file and an HDF5 file given where a stream is expected get the same answers everywhere.
What a file holds is decided by its content, never its name.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InputFileError, ProtocolError

if TYPE_CHECKING:
    from ..protocol import MessageId

__all__ = [
    "classify",
    "first_data_message",
    "has_hdf5_signature",
    "is_standard_stream",
    "is_terminal",
    "open_input",
    "raw_groups",
    "refuse_non_hdf5_output",
]

_BUFFER = 1 << 20
_SNIFF_MESSAGES = 8
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_standard_stream(path: str | None) -> bool:
    """True for None or ``-``: the command's standard input or output."""
    return path is None or path == "-"


def is_terminal(fd: int) -> bool:
    """True when ``fd`` is a terminal (False for a closed or invalid descriptor)."""
    try:
        return os.isatty(fd)
    except OSError:
        return False


@contextlib.contextmanager
def open_input(path: str | None, *, file_option: str = "-i FILE") -> Iterator[BinaryIO]:
    """A buffered binary reader for ``path``, or stdin for None / ``-``.

    Stdin that is a terminal is refused at once (one line saying what is expected) instead
    of waiting silently for binary data nobody will type; ``file_option`` names the
    command's way to give a file instead.
    """
    if is_standard_stream(path):
        fd = sys.stdin.fileno()
        if is_terminal(fd):
            raise InputFileError(
                "standard input is a terminal: expected an MRD stream piped or redirected "
                f"into it (... | CMD, or CMD < raw.bin), or a file ({file_option})"
            )
        with os.fdopen(os.dup(fd), "rb", buffering=_BUFFER) as stdin:
            yield stdin
        return
    assert path is not None
    try:
        handle = open(path, "rb", buffering=_BUFFER)  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"cannot open input {path!r}: {exc.strerror}") from None
    with handle:
        yield handle


def raw_groups(path: str | Path) -> list[str]:
    """Top-level groups of an HDF5 file that hold an ``xml`` header and ``data``."""
    import h5py

    with h5py.File(path, "r") as handle:
        return [
            name
            for name, node in handle.items()
            if isinstance(node, h5py.Group)
            and isinstance(node.get("xml"), h5py.Dataset)
            and isinstance(node.get("data"), h5py.Dataset)
        ]


def _is_hdf5(path: str) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def first_data_message(path: str) -> MessageId | None:
    """The first message after a stream's header (config and text messages may come
    first): ACQUISITION, WAVEFORM, CLOSE, IMAGE, ...; None when the file does not start
    like an MRD stream with a header."""
    from ..protocol import MessageId, open_reader

    prelude = {MessageId.HEADER, MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT}
    try:
        with open(path, "rb") as handle:
            reader = open_reader(handle, require_close=False)  # either generation
            seen_header = False
            for _ in range(_SNIFF_MESSAGES):
                mid = reader.peek()
                if mid is None:
                    return None
                if mid not in prelude:
                    return mid if seen_header else None
                seen_header |= mid is MessageId.HEADER
                reader.read_message()
    except (OSError, ProtocolError):
        return None
    return None


def _is_raw_stream(path: str) -> bool:
    """True when the file starts like an MRD raw-data stream: a header (config and text
    messages may come first), then acquisitions or waveforms (or CLOSE)."""
    from ..protocol import MessageId

    first = first_data_message(path)
    return first in (MessageId.ACQUISITION, MessageId.WAVEFORM, MessageId.CLOSE)


def classify(path: str) -> str | None:
    """``"hdf5"``, ``"stream"`` (raw data) or None, from the file's content."""
    if _is_hdf5(path):
        return "hdf5"
    return "stream" if _is_raw_stream(path) else None


def has_hdf5_signature(path: str | Path) -> bool:
    """True when the file carries the HDF5 format signature where the format puts it: at
    byte 0, or after a user block at 512, 1024, 2048, ... (read here, without the HDF5
    library, so that a command can check its output before loading it)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            offset = 0
            while offset + len(_HDF5_SIGNATURE) <= size:
                handle.seek(offset)
                if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def refuse_non_hdf5_output(path: str | Path) -> None:
    """Refuse to write HDF5 into an existing, non-empty file that is not HDF5 (a stream,
    notes): it is someone's data, not an older version of this output."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and not has_hdf5_signature(path):
        raise InputFileError(
            f"output {str(path)!r} exists and is not an HDF5 file; refusing to overwrite it"
        )

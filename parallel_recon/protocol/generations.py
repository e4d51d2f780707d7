"""Both MRD stream generations behind one door: detection, readers and writers by name.

An MRD v1 (ISMRMRD) stream starts with a uint16 message id; an MRD v2 (yardl) stream with
the bytes ``yardl``, whose first two read as id 24953, which v1 never uses.  So two bytes
tell them apart, and they are looked at through the reader's own buffer without being
consumed: detection works on pipes and sockets, and the chosen reader starts at byte 0.

Every program opens its input with :func:`open_reader` and its output with
:func:`open_writer` (the input's generation unless ``--format`` names one), so each gets
both generations from this one module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from .buffer import ReadBuffer
from .decode import DEFAULT_LIMITS, Limits, StreamReader
from .encode import StreamWriter
from .messages import Message
from .mrd2 import MAGIC

if TYPE_CHECKING:
    from .mrd2 import Notes

__all__ = [
    "FORMAT_NAMES",
    "GENERATIONS",
    "MessageWriter",
    "open_reader",
    "open_writer",
]

GENERATIONS = ("ismrmrd", "mrd2")
"""Stream generations by their ``--format`` names: MRD v1 (ISMRMRD) and MRD v2 (yardl)."""

FORMAT_NAMES = {"ismrmrd": "MRD v1 (ISMRMRD)", "mrd2": "MRD v2 (yardl)"}
"""Each generation as users read it in messages."""


class MessageWriter(Protocol):
    """What both writers offer (the v1 ``StreamWriter`` interface)."""

    bytes_written: int
    closed: bool

    def write(self, msg: Message) -> None: ...
    def close(self) -> None: ...
    def flush(self) -> None: ...


def open_reader(
    source: BinaryIO,
    *,
    limits: Limits = DEFAULT_LIMITS,
    require_close: bool = True,
    notes: Notes | None = None,
) -> StreamReader:
    """A reader of whichever generation ``source`` holds (v1 messages either way).

    The first two bytes are read into the reader's buffer (waiting for them, as reading the
    first message would) and left unconsumed.  ``notes`` receives what v2 items cannot
    carry into v1 messages.
    """
    buffer = ReadBuffer(source)
    buffer.fill(2)
    if bytes(buffer.chunk[buffer.pos : buffer.pos + 2]) == MAGIC[:2]:
        from .mrd2.reader import Mrd2StreamReader

        return Mrd2StreamReader(
            source, limits=limits, require_close=require_close, buffer=buffer, notes=notes
        )
    return StreamReader(source, limits=limits, require_close=require_close, buffer=buffer)


def _v1_writer(sink: BinaryIO, notes: Notes | None) -> MessageWriter:
    return StreamWriter(sink)


def _v2_writer(sink: BinaryIO, notes: Notes | None) -> MessageWriter:
    from .mrd2.writer import Mrd2StreamWriter

    return Mrd2StreamWriter(sink, notes)


_WRITERS: dict[str, Callable[[BinaryIO, Notes | None], MessageWriter]] = {
    "ismrmrd": _v1_writer,
    "mrd2": _v2_writer,
}


def open_writer(sink: BinaryIO, generation: str, notes: Notes | None = None) -> MessageWriter:
    """A writer of ``generation`` (``ismrmrd`` or ``mrd2``) taking v1 message objects;
    ``notes`` receives what the v2 writer cannot carry."""
    try:
        make = _WRITERS[generation]
    except KeyError:
        raise ValueError(
            f"unknown stream format {generation!r}: expected one of {', '.join(GENERATIONS)}"
        ) from None
    return make(sink, notes)

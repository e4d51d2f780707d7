"""What the server reads before it gives a connection anything: the stream's opening.

The opening is everything up to the first acquisition's header: config and text messages,
the XML header, and that header of the first acquisition (its channel count sizes the
reconstruction's memory).  Only a complete opening earns a reconstruction slot.  It is held
(it goes to the reconstruction first), so its size is bounded: every message's length is
checked before its bytes are read, and a stream whose opening exceeds
:data:`MAX_OPENING_BYTES` is refused, however it is split into messages.  Nothing after the
opening is read here: the reconstruction reads the rest straight from the socket.

Both stream generations open the same way: an MRD v2 (yardl) stream is read through the v2
reader, which hands out the same messages.  Its first acquisition is made whole before its
header can be read (v2 writes the samples before the trajectory), so a v2 opening may hold
that one acquisition as well, up to :data:`MAX_HELD_BYTES` in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from ..protocol import ACQUISITION_HEADER_DTYPE, MessageId, StreamReader, message_remainder
from ..protocol.decode import decode_text
from ..protocol.generations import open_reader

__all__ = ["MAX_HELD_BYTES", "MAX_OPENING_BYTES", "NoHeader", "Opening", "read_opening"]

MAX_OPENING_BYTES = 1 << 20
"""Bytes a client may send before its first acquisition (config, text, the XML header)."""

MAX_HELD_BYTES = 12 << 20
"""Bytes the opening may hold in all, read-ahead and a v2 stream's first acquisition
included; a stream that needs more before its first acquisition's header is refused."""

_KEPT = {MessageId.CONFIG_FILE, MessageId.HEADER}
"""Messages whose contents the server itself uses (the kernel choice, the memory plan)."""


class NoHeader(Exception):
    """The client's stream ended before its HEADER."""


class _Recorder:
    """``readinto`` from ``source`` that keeps a copy of every byte delivered, at most
    ``cap`` bytes (a ProtocolError beyond: the server holds these bytes)."""

    def __init__(self, source: Any, cap: int = MAX_HELD_BYTES):
        self._source = source
        self._cap = cap
        self.data = bytearray()

    def readinto(self, buffer: memoryview | bytearray) -> int:
        room = self._cap - len(self.data)
        if room <= 0:
            raise ProtocolError(
                f"expected the first acquisition's header within {self._cap} bytes, found more "
                "(the server holds a stream's opening until its reconstruction starts)",
                len(self.data),
                None,
            )
        view = memoryview(buffer)[: min(len(buffer), room)]
        n = int(self._source.readinto(view) or 0)
        self.data += view[:n]
        return n

    def readinto1(self, buffer: memoryview | bytearray) -> int:
        return self.readinto(buffer)


@dataclass
class Opening:
    """A stream's opening, as received."""

    raw: bytes = b""
    """Every byte read (the reconstruction gets them first)."""
    config_name: str | None = None
    """The first CONFIG_FILE name, if any (it may choose the kernel)."""
    header_xml: str = ""
    first_channels: int | None = None
    """The first acquisition's active channels; None when the stream closed without one."""
    first_trajectory_dims: int = 0
    """The first acquisition's ``trajectory_dimensions`` (radial and spiral readouts carry
    their trajectory: the recon then sizes its slots for readouts)."""
    generation: str = "ismrmrd"
    """The stream's generation (``mrd2``: a v2 client, which no TEXT message can reach)."""


def read_opening(source: Any, limit: int = MAX_OPENING_BYTES) -> Opening:
    """Read the opening from ``source`` (anything with ``readinto``), no byte further.

    Raises
    ------
    NoHeader
        The stream ended (cleanly) before a HEADER.
    ProtocolError
        Not an MRD stream, an opening larger than ``limit``, data before the HEADER, or a
        stream that ended inside a message.
    """
    recorder = _Recorder(source, max(MAX_HELD_BYTES, limit))
    reader = open_reader(recorder, require_close=False)  # type: ignore[arg-type]
    opening = Opening(generation=reader.generation)
    while True:
        mid = reader.peek()
        if mid is None:
            if not opening.header_xml:
                raise NoHeader()
            break
        if not opening.header_xml and mid not in _BEFORE_HEADER:
            raise reader.error(f"expected a HEADER message before {mid.name}")
        reader.consume_peeked()
        if mid is MessageId.ACQUISITION:
            head = reader.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
            opening.first_channels = int(head["active_channels"])
            opening.first_trajectory_dims = int(head["trajectory_dimensions"])
            break
        remainder = message_remainder(reader, mid)
        if reader.offset + remainder > limit:
            raise ProtocolError(
                f"expected at most {limit} bytes of messages before the first acquisition, "
                f"found a {mid.name} message of {remainder} bytes",
                reader.message_offset,
                reader.index,
            )
        if mid in _KEPT:
            _keep(opening, mid, reader, remainder)
        else:
            reader.skip(remainder, "payload")
        reader.finish_message()
        if mid is MessageId.CLOSE:
            break
    opening.raw = bytes(recorder.data)
    return opening


_BEFORE_HEADER = {MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT, MessageId.HEADER}


def _keep(opening: Opening, mid: MessageId, reader: StreamReader, nbytes: int) -> None:
    raw = reader.read_bytes(nbytes, "payload")
    where = (reader.message_offset, reader.index)
    if mid is MessageId.HEADER:
        opening.header_xml = opening.header_xml or decode_text(raw, "HEADER", *where)
    elif opening.config_name is None:
        opening.config_name = decode_text(bytes(raw).split(b"\0", 1)[0], "CONFIG_FILE", *where)

"""Writing MRD v2 streams from MRD v1 messages: the ``Mrd2StreamWriter``.

It takes the same messages as the v1 :class:`~parallel_recon.protocol.StreamWriter` (every
program builds v1 message objects) and writes them as the v2 protocol: the ``yardl``
prologue with the MRD 2.1 schema, the header (or its absence), one stream item per message
(each in a block of one, as streaming writers do), and the end-of-stream mark for CLOSE.
What v2 has no place for (TEXT, CONFIG_*, NDArrays other than complex64) is named once in
the writer's :class:`~.notes.Notes`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from ...errors import ProtocolError
from ..encode import StreamWriter
from ..messages import (
    Acquisition,
    Close,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    Message,
    NDArray,
    Text,
    Waveform,
)
from .acquisitions import acquisition_buffers
from .codec import Out, encoder, uvarint_bytes
from .header import as_converted, header_from_xml
from .mapping import MappingError, image_to_v2, ndarray_to_v2, waveform_to_v2
from .notes import Notes
from .schema import FORMAT_VERSION, MAGIC, SCHEMA_TEXT, named, stream_item_cases

__all__ = ["Mrd2StreamWriter", "header_bytes", "item_buffers", "prologue_bytes"]

Buffers = list[bytes | memoryview]

_TAGS = {tag: index for index, (tag, _) in enumerate(stream_item_cases())}
_ITEM_ENCODERS = {tag: encoder(kind) for tag, kind in stream_item_cases()}
_HEADER = encoder(named("Header"))
_END = b"\x00"


def prologue_bytes() -> bytes:
    """``yardl``, the format version and the MRD 2.1 schema: how every v2 stream starts."""
    schema = SCHEMA_TEXT.encode("utf-8")
    return MAGIC + struct.pack("<i", FORMAT_VERSION) + uvarint_bytes(len(schema)) + schema


def header_bytes(xml: str | None, notes: Notes) -> bytes:
    """The optional ``header`` step: absent for None, else the model of the XML, converted
    as the MRD project's converter does (what it leaves out goes to ``notes``)."""
    if xml is None:
        return b"\x00"
    model, unread, filled = header_from_xml(xml)
    model, left_out = as_converted(model)
    for path in unread + left_out:
        notes.field(f"header {path}", f"the MRD v2 mapping leaves header {path} out (not carried)")
    for path in filled:
        notes.field(
            f"header {path} filled",
            f"the MRD v2 header requires {path}, which the XML lacks: written with its default",
        )
    out = Out()
    out.buf.append(1)
    _HEADER(out, model)
    return out.getvalue()


def item_buffers(tag: str, value: Any) -> Buffers:
    """One stream item in a block of its own: count 1, the tag, the value."""
    out = Out()
    out.buf += bytes((1, _TAGS[tag]))
    _ITEM_ENCODERS[tag](out, value)
    return out.buffers()


def _image(msg: Image, notes: Notes) -> Buffers:
    tag, value = image_to_v2(msg, notes)
    return item_buffers(tag, value)


def _waveform(msg: Waveform, notes: Notes) -> Buffers:
    return item_buffers("WaveformUint32", waveform_to_v2(msg, notes))


def _ndarray(msg: NDArray, notes: Notes) -> Buffers:
    array = ndarray_to_v2(msg, notes)
    return [] if array is None else item_buffers("ArrayComplexFloat", array)


def _not_carried(kind: str) -> Callable[[Any, Notes], Buffers]:
    def note(msg: Any, notes: Notes) -> Buffers:
        notes.item(kind, f"MRD v2 streams have no {kind} message: not carried")
        return []

    return note


_ENCODERS: dict[type, Callable[[Any, Notes], Buffers]] = {
    Acquisition: acquisition_buffers,
    Image: _image,
    Waveform: _waveform,
    NDArray: _ndarray,
    Text: _not_carried("TEXT"),
    ConfigFile: _not_carried("CONFIG_FILE"),
    ConfigText: _not_carried("CONFIG_TEXT"),
}


def message_buffers(msg: Message, notes: Notes) -> Buffers:
    """A v1 message as v2 stream-item bytes (empty when v2 has no place for it)."""
    try:
        return _ENCODERS[type(msg)](msg, notes)
    except KeyError:
        raise TypeError(f"cannot encode {type(msg).__name__} as an MRD v2 item") from None


class Mrd2StreamWriter(StreamWriter):
    """Writes v1 message objects to a sink as an MRD v2 stream.

    The interface is the v1 ``StreamWriter``'s (whose sink handling it shares): ``write``,
    ``write_all``, ``close`` (the end-of-stream mark), ``flush``, a context manager that
    closes only on success.

    Parameters
    ----------
    sink:
        Binary output.
    notes:
        Receives what the v2 stream cannot carry.
    """

    generation = "mrd2"

    def __init__(self, sink: BinaryIO, notes: Notes | None = None):
        super().__init__(sink)
        self.notes = notes if notes is not None else Notes()
        self._started = False
        """Prologue and header step written."""

    def _start(self, xml: str | None) -> None:
        self._started = True
        self._write_list([prologue_bytes(), header_bytes(xml, self.notes)])

    def write(self, msg: Message) -> None:
        """Write one message (a HEADER must come before every item)."""
        if isinstance(msg, Close):
            self.close()
            return
        if isinstance(msg, Header):
            if self._started:
                raise ProtocolError("expected one HEADER before the stream items, found another")
            self._start(msg.xml)
            return
        try:
            buffers = message_buffers(msg, self.notes)
        except MappingError as exc:
            raise ProtocolError(f"cannot write this message as MRD v2: {exc}") from None
        if buffers:
            if not self._started:
                self._start(None)
            self._write_list(buffers)

    def write_all(self, messages: Iterable[Message]) -> None:
        """Write every message of an iterable."""
        for msg in messages:
            self.write(msg)

    def write_buffers(self, buffers: Iterable[bytes | memoryview]) -> None:
        """Write pre-encoded v2 item bytes (after the header step)."""
        if not self._started:
            self._start(None)
        self._write_list(list(buffers))

    def close(self) -> None:
        """Write the end-of-stream mark (once) and flush."""
        if not self.closed:
            if not self._started:
                self._start(None)
            self._write_list([_END])
            self.closed = True
        self._sink.flush()

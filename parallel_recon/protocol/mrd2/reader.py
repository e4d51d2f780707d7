"""Reading MRD v2 streams as MRD v1 messages: the ``Mrd2StreamReader``.

Every consumer in this package speaks the v1 message objects through the v1
:class:`~parallel_recon.protocol.StreamReader` interface (``peek``, ``read_message``,
iteration, and the raw ``consume_peeked`` / ``readinto`` / ``skip`` / ``finish_message``
with which the reconstruction lands samples straight in shared memory).  This reader
offers the same interface over a v2 stream: the header becomes the ISMRMRD XML, each item
the v1 message it maps to (:mod:`.mapping`), the end-of-stream mark CLOSE.  Items v1 has
no message for (AcquisitionBucket, ReconData, ImageArray) are read, counted and named once
in the reader's :class:`~.notes.Notes`.

Acquisitions take the fast path of :mod:`.templates`; their samples are read straight
into their arrays.  The raw mode is :mod:`.raw`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from ...errors import MissingCloseError
from ..buffer import DIRECT_BYTES, NEXT_HEAD_BYTES, ReadBuffer
from ..decode import DEFAULT_LIMITS, Limits
from ..layout import ACQUISITION_HEADER_DTYPE, MessageId
from ..messages import Acquisition, Close, Header, Message
from .codec import decoder
from .header import header_to_xml
from .mapping import IMAGE_TAGS, MappingError, array_to_v1, image_to_v1, waveform_to_v1
from .notes import Notes
from .raw import FIRST_PIECE, RawModeReader, read_two
from .scan import ShortRead, varint_at
from .schema import (
    FORMAT_VERSION,
    MAGIC,
    SCHEMA_TEXT,
    SCHEMA_VERSION,
    describe_schema,
    stream_item_cases,
)
from .schema import named as schema_type
from .templates import RunLayout, Template

__all__ = ["Mrd2StreamReader"]

_SCHEMA_LIMIT = 1 << 20
_CASES = stream_item_cases()
_TAGS = [tag for tag, _ in _CASES]
_DECODERS = [decoder(kind, tag) for tag, kind in _CASES]
_HEADER = decoder(schema_type("Header"), "header")
_KNOWN_TAGS = ", ".join(f"{i} ({tag})" for i, tag in enumerate(_TAGS))
_MESSAGE_OF_TAG: dict[str, MessageId] = {
    "Acquisition": MessageId.ACQUISITION,
    "WaveformUint32": MessageId.WAVEFORM,
    "ArrayComplexFloat": MessageId.NDARRAY,
    **{tag: MessageId.IMAGE for tag in IMAGE_TAGS},
}
_RUN_BYTES = DIRECT_BYTES
"""Acquisitions smaller than this are decoded in runs when several sit in the buffer."""
_F4 = np.dtype("<f4")
_C8 = np.dtype("<c8")


class _EmptyTrajectories(dict[int, np.ndarray]):
    """samples -> a shared empty ``[samples, 0]`` trajectory (no allocation per readout)."""

    def __missing__(self, samples: int) -> np.ndarray:
        value = np.empty((samples, 0), np.dtype("<f4"))
        self[samples] = value
        return value


_EMPTY_TRAJECTORY = _EmptyTrajectories()


class Mrd2StreamReader(RawModeReader):
    """Reads an MRD v2 stream as MRD v1 messages (see the module docstring).

    Parameters
    ----------
    source, limits, require_close, buffer:
        As for :class:`~parallel_recon.protocol.StreamReader`.
    notes:
        Receives what v1 messages cannot carry (default: collected, not shown).
    """

    generation = "mrd2"

    def __init__(
        self,
        source: BinaryIO,
        *,
        limits: Limits = DEFAULT_LIMITS,
        require_close: bool = True,
        buffer: ReadBuffer | None = None,
        notes: Notes | None = None,
    ):
        super().__init__(
            source, limits=limits, require_close=require_close, buffer=buffer, notes=notes
        )
        self.schema: str | None = None
        self._stage = "prologue"
        self._block_of_one = True
        """Whether the current item is a block of its own (how streaming writers write)."""
        self._tag = -1
        self._layouts: dict[tuple[int, bytes, bytes], RunLayout] = {}
        self._readers = {
            MessageId.HEADER: self._header_item,
            MessageId.ACQUISITION: self._acquisition_item,
            MessageId.IMAGE: self._image_item,
            MessageId.WAVEFORM: self._waveform_item,
            MessageId.NDARRAY: self._array_item,
            MessageId.CLOSE: Close,
        }

    # ---------------------------------------------------------- prologue
    def _read_prologue(self) -> None:
        start = self._available(len(MAGIC) + 4, "prologue")
        chunk = self._buffer.chunk
        magic = bytes(chunk[start : start + len(MAGIC)])
        if magic != MAGIC:
            raise self.error(f"expected an MRD v2 stream starting with 'yardl', found {magic!r}")
        (version,) = struct.unpack_from("<i", chunk, start + len(MAGIC))
        if version != FORMAT_VERSION:
            raise self.error(
                f"expected yardl binary format version {FORMAT_VERSION} ({SCHEMA_VERSION}), "
                f"found version {version}"
            )
        self.schema = self.text("schema", _SCHEMA_LIMIT)
        if self.schema != SCHEMA_TEXT:
            raise self.error(
                f"this MRD v2 stream uses {describe_schema(self.schema)}; this program reads "
                f"the schema of {SCHEMA_VERSION} (mrd-python 2.1.x): convert the stream with "
                "the MRD tools of its version"
            )
        self._stage = "header"

    # ------------------------------------------------------------- peeking
    def peek(self) -> MessageId | None:
        """The v1 id of the next item (CLOSE for the end mark; None after it)."""
        if self._peeked is not None:
            return self._peeked
        if self._run:  # raw reading from here: the rest of a decoded run is read again
            if not self._block_of_one:
                self._block_left += len(self._run)
            self._run.clear()
        while True:
            self.message_offset = self.offset
            if self._stage == "prologue":
                self._read_prologue()
                continue
            if self._stage == "header":
                flag = self.byte("header presence flag")
                if flag > 1:
                    raise self.error(f"expected 0 or 1 as the header's presence flag, found {flag}")
                self._stage = "items"
                if flag:
                    self._peeked = MessageId.HEADER
                    return self._peeked
                continue
            if self._stage == "end":
                return None
            mid = self._next_item()
            if mid is not None:
                self._peeked = mid
                return mid
            if self._stage == "end":
                return None

    def _next_tag(self) -> int | None:
        """The next item's tag (its block count read when a block starts); -1 for the
        end-of-stream mark, None for a bare end of the stream."""
        if self._block_left == 0:
            buffer = self._buffer
            if buffer.end == buffer.pos and self._fill(1) < 1:
                if self.require_close:
                    self._no_end()
                self._stage = "end"
                return None
            count = self.uvarint("stream block count")
            if count == 0:
                self._stage = "end"
                return -1
            self._block_left = count
            self._block_of_one = count == 1
        tag = self.byte("stream item tag")
        if tag >= len(_TAGS):
            raise self.error(
                f"unknown MRD v2 stream item tag: expected one of {_KNOWN_TAGS}, found {tag}"
            )
        self._tag = tag
        return tag

    def _next_item(self) -> MessageId | None:
        """The v1 id of the next item (None to look further: a v2-only item was read and
        noted, or the stream ended without its end mark)."""
        tag = self._next_tag()
        if tag is None:
            return None
        if tag < 0:
            return MessageId.CLOSE
        name = _TAGS[tag]
        mid = _MESSAGE_OF_TAG.get(name)
        if mid is None:
            _DECODERS[tag](self)
            self._item_done()
            self.notes.item(name, f"MRD v1 has no {name} message: {name} items are not carried")
        return mid

    def read_native(self) -> tuple[str, Any] | None:
        """The next step of the stream as MRD v2 data (see :mod:`.codec`), without mapping:
        ``("header", model)`` (when present), then ``(tag, value)`` per item; None at the end."""
        while self._stage in ("prologue", "header"):
            if self._stage == "prologue":
                self._read_prologue()
                continue
            flag = self.byte("header presence flag")
            if flag > 1:
                raise self.error(f"expected 0 or 1 as the header's presence flag, found {flag}")
            self._stage = "items"
            if flag:
                return ("header", _HEADER(self))
        if self._stage == "end":
            return None
        self.message_offset = self.offset
        tag = self._next_tag()
        if tag is None or tag < 0:
            self.closed = tag is not None
            return None
        value = _DECODERS[tag](self)
        self._item_done()
        return (_TAGS[tag], value)

    def _no_end(self) -> MessageId | None:
        raise MissingCloseError(
            "expected the MRD v2 end-of-stream mark, found the end of the stream after "
            f"{self.index} items (the sender stopped early or the connection dropped)",
            self.offset,
            self.index,
        )

    def _item_done(self) -> None:
        self._block_left -= 1
        self.index += 1

    # ------------------------------------------------------------- reading
    def read_message(self) -> Message | None:
        """The next item as a v1 message; None at the end (after CLOSE, or a bare end of
        stream when ``require_close`` is False)."""
        if self._run and self._peeked is None:
            return self._next_of_run()
        mid = self._peeked or self.peek()
        if mid is None:
            return None
        try:
            msg = self._readers[mid]()
        except MappingError as exc:
            raise self.error(f"cannot read this item as MRD v1: {exc}") from None
        if mid is MessageId.CLOSE:
            self.closed = True
        elif mid is not MessageId.HEADER:
            self._block_left -= 1
        self._peeked = None
        self.index += 1
        return msg

    def _iter_large(self) -> Iterator[Acquisition]:
        """Many-coil readouts one after another, each a block of its own, with as little
        Python per item as possible (as the v1 reader's loop of the same name): anything
        unusual returns to the general path."""
        buffer = self._buffer
        templates = self._templates
        empty = _EMPTY_TRAJECTORY
        while self._peeked is None and templates:
            template = templates[0]
            nbytes = template.payload
            chunk, pos = buffer.chunk, buffer.pos
            size = template.size + 2
            if (
                nbytes < DIRECT_BYTES
                or buffer.end - pos < size
                or chunk[pos] != 1
                or chunk[pos + 1]
            ):
                return
            head = template.head_if_matching(chunk, pos + 2)
            if head is None:
                return
            self.message_offset = self.offset
            buffer.pos = pos + size
            out, got = buffer.array(nbytes, True)
            self.offset += size + got
            if got < nbytes:
                raise self._truncated("acquisition samples", nbytes, got)
            data = out.view(_C8).reshape(template.coils, template.samples)
            pos = buffer.pos
            if buffer.end - pos >= 2 and not buffer.chunk[pos] and not buffer.chunk[pos + 1]:
                buffer.pos = pos + 2
                self.offset += 2
                self.index += 1
                yield Acquisition(head, empty[template.samples], data)
                continue
            basis, points = self.dimensions(2, "acquisition trajectory")
            self.index += 1
            if basis or points:
                yield self._with_trajectory(head, data, basis, points)
            else:
                yield Acquisition(head, empty[template.samples], data)

    def _next_of_run(self) -> Acquisition:
        stride = self._run_stride
        self.message_offset = self.offset
        self.offset += stride
        self._buffer.pos += stride
        self.index += 1
        return self._run.pop()

    def _header_item(self) -> Header:
        return Header(header_to_xml(_HEADER(self)))

    def _value(self) -> Any:
        return _DECODERS[self._tag](self)

    def _image_item(self) -> Message:
        return image_to_v1(_TAGS[self._tag], self._value(), self.notes)

    def _waveform_item(self) -> Message:
        return waveform_to_v1(self._value(), self.notes)

    def _array_item(self) -> Message:
        return array_to_v1(self._value(), self.notes)

    # -------------------------------------------------------- acquisitions
    def _acquisition_item(self) -> Acquisition:
        self._in_acquisitions = True
        template = self._template_at()
        # after a large readout read ahead no further than the next header: its samples
        # are better read straight into their array than copied through the buffer
        self._ahead_most = NEXT_HEAD_BYTES if template.payload >= DIRECT_BYTES else None
        buffer = self._buffer
        start = buffer.pos
        nbytes = 8 * template.coils * template.samples
        whole = template.size + nbytes + 2
        if whole < _RUN_BYTES and buffer.end - start >= 2 * whole:
            first = self._try_run(template, start)
            if first is not None:
                return first
        head = template.head(buffer.chunk, start)
        buffer.pos = start + template.size
        self.offset += template.size
        shape = (template.coils, template.samples)
        if DIRECT_BYTES <= nbytes <= FIRST_PIECE:
            out, got = buffer.array(nbytes, True)
            self.offset += got
            if got < nbytes:
                raise self._truncated("acquisition samples", nbytes, got)
            data = out.view(_C8).reshape(shape)
        else:
            data = self.read_array(_C8, shape, "acquisition samples")
        basis, points = self.dimensions(2, "acquisition trajectory")
        if basis or points:
            return self._with_trajectory(head, data, basis, points)
        return Acquisition(head, _EMPTY_TRAJECTORY[template.samples], data)

    def _with_trajectory(
        self, head: np.void, data: np.ndarray, basis: int, points: int
    ) -> Acquisition:
        trajectory = self.read_array(_F4, (basis, points), "acquisition trajectory")
        if basis and points != data.shape[1]:
            raise self.error(
                f"expected an acquisition trajectory of {data.shape[1]} samples per basis "
                f"vector (one per data sample), found {points}"
            )
        head = np.frombuffer(bytearray(head.tobytes()), ACQUISITION_HEADER_DTYPE, 1)[0]
        head["trajectory_dimensions"] = basis
        traj = np.ascontiguousarray(trajectory.T) if basis else np.empty((data.shape[1], 0), _F4)
        return Acquisition(head, traj, data)

    def _try_run(self, template: Template, start: int) -> Acquisition | None:
        """Decode the acquisitions of this layout that sit whole in the buffer; the first
        is returned (consumed), the others wait in ``_run`` with their bytes unconsumed."""
        buffer = self._buffer
        chunk = buffer.chunk
        at = start + template.size + 8 * template.coils * template.samples
        shape_end = at
        try:
            for _ in range(2):
                _, shape_end = varint_at(chunk, shape_end, buffer.end)
            basis_points = read_two(chunk, at, buffer.end)
        except (ShortRead, ValueError):
            return None
        basis, points = basis_points
        if (basis and points != template.samples) or 4 * basis * points >= _RUN_BYTES:
            return None  # the general path reads (or refuses) it
        body_end = shape_end + 4 * basis * points
        prefix = b"\x01\x00" if self._block_of_one else b"\x00"
        key = (id(template), bytes(chunk[at:shape_end]), prefix)
        layout = self._layouts.get(key)
        if layout is None or layout.template is not template:
            layout = RunLayout(template, bytes(chunk[at:shape_end]), basis, points, prefix)
            if len(self._layouts) > 16:
                self._layouts.clear()
            self._layouts[key] = layout
        limit = 1 << 30 if self._block_of_one else self._block_left
        count = layout.count(chunk, start, buffer.end, limit)
        if count < 2:
            return None
        decoded = layout.decode(chunk, start, count)
        if not self._block_of_one:  # the others' share of the block, handed out or not
            self._block_left -= count - 1
        decoded.reverse()
        first = decoded.pop()
        self._run = decoded
        self._run_stride = layout.itemsize
        consumed = body_end - start
        buffer.pos = start + consumed
        self.offset += consumed
        return first

    # ------------------------------------------------------------- raw mode

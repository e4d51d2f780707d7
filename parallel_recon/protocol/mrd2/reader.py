"""Reading MRD v2 streams as MRD v1 messages: the ``Mrd2StreamReader``.

Every consumer in this package speaks the v1 message objects through the v1
:class:`~parallel_recon.protocol.StreamReader` interface (``peek``, ``read_message``,
iteration, and the raw ``consume_peeked`` / ``readinto`` / ``skip`` / ``finish_message``
with which the reconstruction lands samples straight in shared memory).  This reader
offers the same interface over a v2 stream: the header becomes the ISMRMRD XML, each item
the v1 message it maps to (:mod:`.mapping`), the end-of-stream mark CLOSE.  Items v1 has
no message for (AcquisitionBucket, ReconData, ImageArray) are read, counted and named once
in the reader's :class:`~.notes.Notes`.

Acquisitions take the fast path of :mod:`.acquisitions`; their samples are read straight
into their arrays.  In raw mode an acquisition is first made whole in the read-ahead
buffer, because v2 writes the samples before the trajectory and v1 readers ask for the
trajectory first.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np

from ...errors import MissingCloseError
from ..buffer import DIRECT_BYTES, NEXT_HEAD_BYTES, ReadBuffer
from ..decode import DEFAULT_LIMITS, Limits
from ..encode import encode_buffers
from ..layout import ACQUISITION_HEADER_DTYPE, MessageId
from ..messages import Acquisition, Close, Header, Message
from .acquisitions import V1_STRUCT, RunLayout, ShortRead, Template, learn_template, varint_at
from .codec import decoder
from .header import header_to_xml
from .mapping import IMAGE_TAGS, MappingError, array_to_v1, image_to_v1, waveform_to_v1
from .notes import Notes
from .schema import (
    FORMAT_VERSION,
    MAGIC,
    SCHEMA_TEXT,
    SCHEMA_VERSION,
    describe_schema,
    stream_item_cases,
)
from .schema import named as schema_type
from .wire import WireReader

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
_FIRST_PIECE = 8 << 20
"""Larger payloads are read in growing pieces (a lying size costs what arrives)."""
_TEMPLATES = 16
"""Header layouts remembered (a scan has a handful: varints grow a byte now and then)."""


class Mrd2StreamReader(WireReader):
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
        super().__init__(source, limits=limits, require_close=require_close, buffer=buffer)
        self.notes = notes if notes is not None else Notes()
        self.schema: str | None = None
        self._stage = "prologue"
        self._block_left = 0
        self._block_of_one = True
        """Whether the current item is a block of its own (how streaming writers write)."""
        self._tag = -1
        self._templates: list[Template] = []
        """Header layouts seen, the most recent first."""
        self._layouts: dict[tuple[int, bytes, bytes], RunLayout] = {}
        self._virtual: list[Any] = []
        """Raw mode: the rest of the peeked acquisition as v1 bytes (memoryviews)."""
        self._item_end = 0
        self._raw = False
        """Raw mode: the peeked item is read as its v1 bytes (``_virtual``)."""
        self._no_trajectory = False
        """Whether the last acquisition read in raw mode had no trajectory."""
        self._speculated = False
        """The raw item's samples come straight from the stream (no trajectory expected)."""
        self._readers: dict[MessageId, Callable[[], Message]] = {
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
    def _template_at(self) -> Template:
        """The template of the header at the buffer position (learned when new)."""
        buffer = self._buffer
        templates = self._templates
        for number, template in enumerate(templates):
            if buffer.end - buffer.pos < template.size:
                self._fill(template.size)
            if buffer.end - buffer.pos >= template.size and template.matches(
                buffer.chunk, buffer.pos
            ):
                if number:
                    templates.insert(0, templates.pop(number))
                return template
        need = 64
        while True:
            have = self._fill(need)
            try:
                template = learn_template(buffer.chunk, buffer.pos, buffer.pos + have, self.notes)
            except ShortRead as short:
                if self._fill(short.need) < short.need:
                    raise self._cut("acquisition header") from None
                need = short.need
                continue
            except ValueError as exc:
                raise self.error(f"expected an MRD v2 acquisition header, found {exc}") from None
            templates.insert(0, template)
            del templates[_TEMPLATES:]
            return template

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
        if DIRECT_BYTES <= nbytes <= _FIRST_PIECE:
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
            basis_points = _read_two(chunk, at, buffer.end)
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
    def consume_peeked(self) -> MessageId:
        """Mark the peeked item as being read in raw mode: the rest is then read as its v1
        bytes (an acquisition's 340-byte header, trajectory and samples; an image's header,
        attributes and pixels...) with ``read_record``, ``readinto`` and ``skip``."""
        mid = super().consume_peeked()
        if not self._raw:
            try:
                virtual = self._raw_bytes(mid)
            except MappingError as exc:
                raise self.error(f"cannot read this item as MRD v1: {exc}") from None
            self._virtual, self._raw = virtual, True
        return mid

    def _raw_bytes(self, mid: MessageId) -> list[Any]:
        """The v1 bytes of the peeked item after its message id."""
        if mid is MessageId.ACQUISITION:
            return self._acquisition_as_v1()
        if mid in (MessageId.IMAGE, MessageId.WAVEFORM, MessageId.NDARRAY):
            buffers = encode_buffers(self._readers[mid]())
            return [memoryview(bytes(buffers[0]))[2:], *(memoryview(b) for b in buffers[1:])]
        return []

    def _after_direct_samples(self) -> None:
        """After samples read straight from the stream: what was not read of them, then the
        trajectory shape (and a trajectory, passed over and named, if one came after all)."""
        self._speculated = False
        for segment in self._virtual:
            if isinstance(segment, _Direct) and segment.left:
                WireReader.skip(self, segment.left, "acquisition samples")
        self._virtual = []
        basis, points = self.dimensions(2, "acquisition trajectory")
        if basis * points:
            WireReader.skip(self, 4 * basis * points, "acquisition trajectory")
            self._no_trajectory = False
            self.notes.item(
                "late trajectory",
                "an MRD v2 acquisition carried a trajectory after many-coil readouts without "
                "one: read straight into place, its trajectory was passed over",
            )

    def _whole(self, nbytes: int, what: str) -> None:
        """Make ``nbytes`` available in the buffer, growing it as bytes arrive (a size
        claimed by a damaged header costs only about twice what the stream delivers)."""
        if nbytes > self.limits.max_payload_bytes:
            raise self.error(
                f"expected an item of at most {self.limits.max_payload_bytes} bytes, found "
                f"sizes that make {nbytes} bytes (corrupt stream?)"
            )
        step = max(_FIRST_PIECE, self._buffer.end - self._buffer.pos)
        while True:
            want = min(nbytes, step)
            if self._fill(want) < want:
                raise self._cut(what)
            if want == nbytes:
                return
            step *= 2

    def _acquisition_as_v1(self) -> list[Any]:
        """The v1 bytes of the acquisition at the buffer position.

        v2 writes the samples before the trajectory, v1 readers ask for the trajectory
        first: the acquisition is made whole in the buffer.  Except for many-coil readouts
        after ones without a trajectory: then none is expected (the v1 header says 0
        dimensions) and the samples go from the stream straight to where they are read
        into; a trajectory found after them is passed over and named (see
        :meth:`finish_message`).
        """
        self._in_acquisitions = True
        template = self._template_at()
        buffer = self._buffer
        nbytes = 8 * template.coils * template.samples
        if self._no_trajectory and nbytes >= DIRECT_BYTES:
            values = template.v1_values(buffer.chunk, buffer.pos)
            buffer.pos += template.size
            self.offset += template.size
            self._ahead_most = NEXT_HEAD_BYTES
            self._speculated = True
            return [memoryview(V1_STRUCT.pack(*values)), _Direct(nbytes)]
        at = template.size + nbytes
        self._whole(at + 1, "acquisition samples")
        shape_at = at
        for _ in range(2):
            while True:
                try:
                    _, at_after = varint_at(buffer.chunk, buffer.pos + at, buffer.end)
                    at = at_after - buffer.pos
                    break
                except ShortRead:
                    self._whole(buffer.end - buffer.pos + 1, "acquisition trajectory shape")
                except ValueError:
                    raise self.error(
                        "expected an acquisition trajectory shape, found a varint longer than "
                        "10 bytes"
                    ) from None
        basis, points = _read_two(buffer.chunk, buffer.pos + shape_at, buffer.end)
        if basis and points != template.samples:
            raise self.error(
                f"expected an acquisition trajectory of {template.samples} samples per basis "
                f"vector (one per data sample), found {points}"
            )
        traj_bytes = 4 * basis * points
        self._no_trajectory = not traj_bytes
        self._whole(at + traj_bytes, "acquisition trajectory")
        chunk, pos = buffer.chunk, buffer.pos
        raw = bytearray(V1_STRUCT.pack(*template.v1_values(chunk, pos)))
        head = np.frombuffer(raw, ACQUISITION_HEADER_DTYPE, 1)[0]
        if basis:
            head["trajectory_dimensions"] = basis
        data_at = pos + template.size
        self._item_end = pos + at + traj_bytes
        segments = [memoryview(head.tobytes())]
        if traj_bytes:
            trajectory = np.frombuffer(chunk, _F4, basis * points, pos + at).reshape(basis, points)
            segments.append(memoryview(np.ascontiguousarray(trajectory.T).tobytes()))
        if nbytes:
            segments.append(memoryview(chunk)[data_at : data_at + nbytes])
        return segments

    def _take_virtual(self, nbytes: int, into: memoryview | None, what: str) -> None:
        got = 0
        while got < nbytes:
            if not self._virtual:
                raise self._truncated(what, nbytes, got)
            segment = self._virtual[0]
            step = min(len(segment), nbytes - got)
            whole = step == len(segment)
            if isinstance(segment, _Direct):  # from the stream itself
                if into is not None:
                    WireReader.readinto(self, into[got : got + step], what, True)
                else:
                    WireReader.skip(self, step, what)
                segment.left -= step
            elif into is not None:
                into[got : got + step] = segment[:step]
            got += step
            if whole:
                self._virtual.pop(0)
            elif not isinstance(segment, _Direct):
                self._virtual[0] = segment[step:]

    def read_record(self, dtype: np.dtype, what: str) -> np.void:
        """One record: in raw mode the acquisition's v1 header."""
        if not self._raw:
            return super().read_record(dtype, what)
        raw = bytearray(dtype.itemsize)
        self._take_virtual(dtype.itemsize, memoryview(raw), what)
        return np.frombuffer(raw, dtype, 1)[0]

    def readinto(
        self,
        buffer: memoryview | bytearray | np.ndarray,
        what: str = "payload",
        ahead: bool = False,
    ) -> None:
        """Fill ``buffer``: in raw mode from the acquisition's v1 bytes."""
        if not self._raw:
            super().readinto(buffer, what, ahead)
            return
        view = memoryview(buffer)  # type: ignore[arg-type]
        if view.nbytes:
            self._take_virtual(view.nbytes, view.cast("B"), what)

    def skip(self, nbytes: int, what: str = "payload") -> None:
        """Drop ``nbytes``: in raw mode of the acquisition's v1 bytes."""
        if not self._raw:
            super().skip(nbytes, what)
            return
        self._take_virtual(nbytes, None, what)

    def finish_message(self) -> None:
        """Advance past the item read in raw mode."""
        if self._raw:
            if self._speculated:
                self._after_direct_samples()
            if self._item_end:
                self.offset += self._item_end - self._buffer.pos
                self._buffer.pos = self._item_end
                self._item_end = 0
            if self._peeked not in (MessageId.CLOSE, MessageId.HEADER):
                self._block_left -= 1
            self._virtual, self._raw = [], False
        if self._peeked is MessageId.CLOSE:
            self.closed = True
        self._peeked = None
        self.index += 1


class _Direct:
    """Raw mode: samples still to read straight from the stream (``left`` bytes)."""

    __slots__ = ("left",)

    def __init__(self, left: int):
        self.left = left

    def __len__(self) -> int:
        return self.left


def _read_two(chunk: Any, pos: int, end: int) -> tuple[int, int]:
    """Two varints (an array shape) at ``chunk[pos:end]``."""
    first, pos = varint_at(chunk, pos, end)
    second, _ = varint_at(chunk, pos, end)
    return first, second

"""Raw mode of the MRD v2 reader: an item read as its MRD v1 bytes, piece by piece.

The reconstruction lands samples in shared memory through the v1 reader's raw interface:
``consume_peeked``, the 340-byte header with ``read_record`` or ``readinto``, the
trajectory, the samples straight into a slot, ``finish_message``.  v2 writes an
acquisition's samples before its trajectory, so the item is first made whole in the
read-ahead buffer and handed out as v1 bytes; many-coil readouts after ones without a
trajectory instead go from the stream straight to where they are read into.  Images,
waveforms and arrays are decoded and handed out as their v1 encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from ..buffer import DIRECT_BYTES, NEXT_HEAD_BYTES, ReadBuffer
from ..decode import DEFAULT_LIMITS, Limits
from ..encode import encode_buffers
from ..layout import ACQUISITION_HEADER_DTYPE, MessageId
from ..messages import Message
from .mapping import MappingError
from .notes import Notes
from .scan import V1_STRUCT, ShortRead, varint_at
from .templates import Template, learn_template
from .wire import WireReader

__all__ = ["FIRST_PIECE", "RawModeReader", "read_two"]

_F4 = np.dtype("<f4")
FIRST_PIECE = 8 << 20
"""Larger payloads are read in growing pieces (a lying size costs what arrives)."""
_TEMPLATES = 16
"""Header layouts remembered (a scan has a handful: varints grow a byte now and then)."""


class RawModeReader(WireReader):
    """The acquisition templates of a v2 reader and its raw mode (see the module docstring).

    Parameters
    ----------
    source, limits, require_close, buffer:
        As for :class:`~parallel_recon.protocol.StreamReader`.
    notes:
        Receives what v1 messages cannot carry (default: collected, not shown).
    """

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
        self._block_left = 0
        """Items left in the current stream block."""
        self._templates: list[Template] = []
        """Header layouts seen, the most recent first."""
        self._virtual: list[Any] = []
        """Raw mode: the rest of the peeked item as v1 bytes (memoryviews, ``_Direct``)."""
        self._item_end = 0
        self._raw = False
        """Raw mode: the peeked item is read as its v1 bytes (``_virtual``)."""
        self._no_trajectory = False
        """Whether the last acquisition read in raw mode had no trajectory."""
        self._speculated = False
        """The raw item's samples come straight from the stream (no trajectory expected)."""
        self._readers: dict[MessageId, Callable[[], Message]] = {}
        """Item readers by the v1 id they map to (filled by the stream reader)."""

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

    def consume_peeked(self) -> MessageId:
        """Mark the peeked item as being read in raw mode: the rest is then read as its v1
        bytes (an acquisition's 340-byte header, trajectory and samples; the header's XML;
        an image's header, attributes and pixels...) with ``read_record``, ``readinto`` and
        ``skip``."""
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
        if mid in (MessageId.HEADER, MessageId.IMAGE, MessageId.WAVEFORM, MessageId.NDARRAY):
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
        step = max(FIRST_PIECE, self._buffer.end - self._buffer.pos)
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
        basis, points = read_two(buffer.chunk, buffer.pos + shape_at, buffer.end)
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


def read_two(chunk: Any, pos: int, end: int) -> tuple[int, int]:
    """Two varints (an array shape) at ``chunk[pos:end]``."""
    first, pos = varint_at(chunk, pos, end)
    second, _ = varint_at(chunk, pos, end)
    return first, second

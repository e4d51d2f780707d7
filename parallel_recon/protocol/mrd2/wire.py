"""Reading yardl's binary primitives: varints, fixed-size scalars, strings, arrays.

:class:`WireReader` adds these to the v1 :class:`~parallel_recon.protocol.StreamReader`,
whose read-ahead buffer, offset bookkeeping, size limits and truncation errors they share:
a v2 stream is read by the same machinery, only the grammar differs.

yardl writes every integer wider than a byte as a LEB128 varint (signed ones zig-zag
encoded), floats and complex numbers as little-endian IEEE values, a string as its UTF-8
length then its bytes, and arrays of fixed-size numbers as their raw bytes.  Integer arrays
are varints too, one per element: :func:`decode_varint_run` decodes a whole run with numpy.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ...errors import TruncatedStreamError
from ..decode import StreamReader

__all__ = ["WireReader", "decode_varint_run"]

_MAX_VARINT_BYTES = 10
_VARINT_ROUND = 8 << 20
"""Integer arrays are decoded in rounds of at most this many bytes (a lying element count
costs only what arrives)."""


def decode_varint_run(raw: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """The first ``count`` varints of ``raw`` (uint8) as uint64, and the bytes they take.

    Fewer than ``count`` come back when ``raw`` ends first (the caller reads more and goes
    on from the last complete one).  Raises ValueError for a varint longer than 10 bytes.
    """
    ends = np.flatnonzero(raw < 0x80)[:count]
    if not ends.size:
        if raw.size >= _MAX_VARINT_BYTES:
            raise ValueError("a varint longer than 10 bytes")
        return np.zeros(0, np.uint64), 0
    used = int(ends[-1]) + 1
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > _MAX_VARINT_BYTES:
        raise ValueError("a varint longer than 10 bytes")
    body = raw[:used]
    if int(lengths.max()) == 1:
        return body.astype(np.uint64), used
    group = np.repeat(np.arange(ends.size), lengths)
    shift = (np.arange(used) - starts[group]).astype(np.uint64) * np.uint64(7)
    parts = (body & 0x7F).astype(np.uint64) << shift
    return np.bitwise_or.reduceat(parts, starts), used


class WireReader(StreamReader):
    """A :class:`StreamReader` that also reads yardl's binary primitives.

    ``self._peeked`` is unused here; ``item_name`` names what is being read in errors.
    """

    item_name = "MRD v2 stream"

    # ------------------------------------------------------------- errors
    def _truncated(self, what: str, expected: int, found: int) -> TruncatedStreamError:
        return TruncatedStreamError(
            f"truncated {self.item_name}: expected {expected} bytes of {what}, found {found} "
            "before the end of the stream",
            self.message_offset,
            self.index,
        )

    def _cut(self, what: str) -> TruncatedStreamError:
        return TruncatedStreamError(
            f"truncated {self.item_name}: the stream ended inside its {what}",
            self.message_offset,
            self.index,
        )

    # --------------------------------------------------------- primitives
    def _fill(self, nbytes: int) -> int:
        """Bytes available after making ``nbytes`` available (fewer only at the end)."""
        buffer = self._buffer
        if buffer.end - buffer.pos >= nbytes:
            return buffer.end - buffer.pos
        return buffer.fill(nbytes, self._in_acquisitions, self._ahead_most)

    def byte(self, what: str) -> int:
        """One byte (a union tag, an optional's presence flag)."""
        buffer = self._buffer
        if buffer.end == buffer.pos and self._fill(1) < 1:
            raise self._cut(what)
        value = buffer.chunk[buffer.pos]
        buffer.pos += 1
        self.offset += 1
        return value

    def uvarint(self, what: str) -> int:
        """An unsigned LEB128 varint."""
        buffer = self._buffer
        pos = buffer.pos
        chunk = buffer.chunk
        if pos < buffer.end:
            first = chunk[pos]
            if first < 0x80:
                buffer.pos = pos + 1
                self.offset += 1
                return first
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if buffer.end == buffer.pos and self._fill(1) < 1:
                raise self._cut(what)
            chunk = buffer.chunk
            byte = chunk[buffer.pos]
            buffer.pos += 1
            self.offset += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >> 64:
                    raise self.error(f"expected {what} of at most 64 bits, found {value}")
                return value
            shift += 7
        raise self.error(f"expected {what} as a varint of at most 10 bytes, found a longer one")

    def svarint(self, what: str) -> int:
        """A zig-zag encoded signed varint."""
        value = self.uvarint(what)
        return (value >> 1) ^ -(value & 1)

    def fixed(self, layout: struct.Struct, what: str) -> tuple:
        """Fixed-size little-endian values (floats, complex numbers)."""
        start = self._available(layout.size, what)
        return layout.unpack_from(self._buffer.chunk, start)

    def text(self, what: str, limit: int) -> str:
        """A length-prefixed UTF-8 string of at most ``limit`` bytes."""
        length = self.uvarint(f"{what} length")
        if length > limit:
            raise self.error(
                f"expected {what} of at most {limit} bytes, found a length prefix of "
                f"{length} bytes (corrupt stream?)"
            )
        if length < 256:
            start = self._available(length, what)
            raw: bytes | bytearray = bytes(self._buffer.chunk[start : start + length])
        else:
            raw = self.read_bytes(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(
                f"expected {what} as UTF-8 text, found an undecodable byte at position {exc.start}"
            ) from None

    def dimensions(self, count: int, what: str) -> tuple[int, ...]:
        """``count`` array dimensions (varints)."""
        return tuple(self.uvarint(f"{what} dimension") for _ in range(count))

    def varint_array(
        self, dtype: np.dtype, shape: tuple[int, ...], signed: bool, what: str
    ) -> np.ndarray:
        """An integer array: one varint per element (zig-zag when ``signed``)."""
        count = math.prod(shape)
        if count * dtype.itemsize > self.limits.max_payload_bytes:
            raise self.error(
                f"expected {what} of at most {self.limits.max_payload_bytes} bytes, found "
                f"dimensions {list(shape)} (corrupt stream?)"
            )
        out = np.empty(count, dtype)
        done = 0
        buffer = self._buffer
        while done < count:
            want = min(count - done, _VARINT_ROUND)
            have = self._fill(want)
            if have == 0:
                raise self._cut(what)
            raw = np.frombuffer(buffer.chunk, np.uint8, have, buffer.pos)
            try:
                values, used = decode_varint_run(raw, count - done)
            except ValueError as exc:
                raise self.error(f"expected {what}, found {exc}") from None
            if not used:
                if have < want or have >= _MAX_VARINT_BYTES:
                    raise self._cut(what)
                self._fill(have + 1)
                continue
            if signed:
                values = (values >> np.uint64(1)).astype(np.int64) ^ -(
                    values & np.uint64(1)
                ).astype(np.int64)
            info = np.iinfo(dtype)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise self.error(f"expected {what} in {info.min}..{info.max}, found larger values")
            out[done : done + values.size] = values
            done += values.size
            buffer.pos += used
            self.offset += used
            if done < count and buffer.end - buffer.pos < 1 and self._fill(1) < 1:
                raise self._cut(what)
        return out.reshape(shape)

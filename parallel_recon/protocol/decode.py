"""Reading MRD v1 messages: the ``StreamReader``.

The reader never trusts a length prefix: strings are checked against limits before anything
is allocated, and large payloads are read in bounded chunks so that a lying size field on a
truncated stream fails with "truncated" instead of allocating the claimed size.  Every error
names the message, what was expected, what was found, the byte offset and the message index.

Besides iterating whole messages, the reader offers the pieces the reconstruction reader
process needs to land samples straight in shared memory: :meth:`StreamReader.peek`,
:meth:`StreamReader.read_record` and :meth:`StreamReader.readinto`.

Speed comes from doing per chunk what would otherwise be done per message: small readouts
are parsed out of a read-ahead buffer (:mod:`.buffer`), runs of equal-size readouts are
decoded with one structured-array view, and many-coil readouts go from the pipe straight
into their array (see ``perf/bench_codec.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import MissingCloseError, ProtocolError, TruncatedStreamError
from .buffer import DIRECT_BYTES, NEXT_HEAD_BYTES, ReadBuffer
from .layout import (
    ACQUISITION_HEADER_DTYPE,
    CONFIG_FILE_SIZE,
    DATA_TYPE_TO_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    MessageId,
)
from .messages import (
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
from .runs import ACQ_HEAD_BYTES, ACQ_SIZES, decode_run

__all__ = [
    "DEFAULT_LIMITS",
    "HDF5_SIGNATURE",
    "Limits",
    "StreamReader",
    "after_close_warning",
    "decode_image",
    "decode_text",
]

_FIRST_PIECE = 8 << 20  # payloads above this are read in growing pieces, then assembled
_MAX_PIECE = 256 << 20
_KNOWN_IDS = ", ".join(f"{m.value} ({m.name})" for m in MessageId)
_ID_BY_VALUE = {int(m): m for m in MessageId}
YARDL_MAGIC = b"yardl"
"""The first bytes of an MRD v2 (yardl binary) stream."""
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
"""Printable ASCII and whitespace: no MRD message id is made of two of them (ids are 1-5 and
1008-1030), so a stream that starts with two is a text file given by mistake."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first bytes of every HDF5 file (without a user block): an HDF5 file given where a
stream is expected is recognised by its first two bytes (message id 18569)."""
_TYPE_NAMES = "uint16, int16, uint32, int32, float32, float64, complex64, complex128"


_ACQ_HEAD = ACQ_HEAD_BYTES
_F4 = np.dtype("<f4")
_C8 = np.dtype("<c8")


@dataclass(frozen=True)
class Limits:
    """Largest sizes the reader accepts before it reads a single payload byte."""

    max_string_bytes: int = 64 << 20
    """HEADER, TEXT and CONFIG_TEXT."""
    max_attribute_bytes: int = 64 << 20
    """Image meta attributes."""
    max_payload_bytes: int = 16 << 30
    """Pixel, sample and NDArray payloads."""
    max_ndarray_dims: int = 16


DEFAULT_LIMITS = Limits()

_U64 = np.dtype("<u8")
_NDARRAY_HEAD = np.dtype([("data_type", "<u2"), ("version", "<u2"), ("ndim", "<u2")])
"""An NDARRAY message's fixed part: data type, version, number of dimensions."""


def decode_text(raw: bytes | bytearray, what: str, offset: int, index: int) -> str:
    """A string payload as text (one trailing NUL dropped); ProtocolError if not UTF-8."""
    if raw.endswith(b"\0"):  # some writers count a trailing NUL in the length
        raw = raw[:-1]
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"expected {what} as UTF-8 text, found an undecodable byte at position {exc.start}",
            offset,
            index,
        ) from None


class StreamReader:
    """Reads MRD v1 messages from a binary source.

    Parameters
    ----------
    source:
        Any object with ``readinto`` (a file, ``sys.stdin.buffer``, a socket file).  Until
        the first acquisition the reader takes from the source exactly the bytes of the
        messages it has read (so a caller may pass the source on after, say, the prelude
        and header); from then on it reads ahead whatever the source has ready, if the
        source has ``readinto1``.
    limits:
        Size limits checked before allocation.
    require_close:
        When True, a stream that ends at a message boundary without CLOSE raises
        :class:`MissingCloseError`; when False it simply ends.
    buffer:
        The read-ahead buffer over ``source`` when one exists already (the generation
        detector looked at the first bytes through it without consuming them).

    Small arrays of decoded messages are views into the reader's chunks.  A chunk is reused
    only once nothing refers to it, so such views stay valid while referenced.
    """

    generation = "ismrmrd"
    """The stream generation this reader reads (``mrd2`` for the v2 reader)."""

    def __init__(
        self,
        source: BinaryIO,
        *,
        limits: Limits = DEFAULT_LIMITS,
        require_close: bool = True,
        buffer: ReadBuffer | None = None,
    ):
        self._source = source
        self._buffer = ReadBuffer(source) if buffer is None else buffer
        self.limits = limits
        self.require_close = require_close
        self.offset = 0
        """Bytes consumed so far."""
        self.index = 0
        """Index of the message being read (0-based)."""
        self.message_offset = 0
        """Byte offset where the current message started."""
        self.closed = False
        """True once CLOSE has been read."""
        self._peeked: MessageId | None = None
        self._run: list[Acquisition] = []
        """Acquisitions decoded ahead (last first) whose bytes are still unconsumed."""
        self._run_stride = 0
        self._in_acquisitions = False
        self._ahead_most: int | None = None
        """Set by the first acquisition: from then on message ids are read ahead too."""
        self._readers: dict[MessageId, Callable[[], Message]] = {
            MessageId.CONFIG_FILE: self._read_config_file,
            MessageId.CONFIG_TEXT: lambda: ConfigText(self._read_string("CONFIG_TEXT")),
            MessageId.HEADER: lambda: Header(self._read_string("HEADER")),
            MessageId.CLOSE: Close,
            MessageId.TEXT: lambda: Text(self._read_string("TEXT")),
            MessageId.ACQUISITION: self._read_acquisition,
            MessageId.IMAGE: self._read_image,
            MessageId.WAVEFORM: self._read_waveform,
            MessageId.NDARRAY: self._read_ndarray,
        }

    # ------------------------------------------------------------------ errors
    def error(self, problem: str) -> ProtocolError:
        """A ProtocolError located at the current message."""
        return ProtocolError(problem, self.message_offset, self.index)

    def _truncated(self, what: str, expected: int, found: int) -> TruncatedStreamError:
        name = self._peeked.name if self._peeked is not None else "message"
        return TruncatedStreamError(
            f"truncated {name} message: expected {expected} bytes of {what}, "
            f"found {found} before the end of the stream",
            self.message_offset,
            self.index,
        )

    # ------------------------------------------------------------- raw reading
    def readinto(
        self,
        buffer: memoryview | bytearray | np.ndarray,
        what: str = "payload",
        ahead: bool = False,
    ) -> None:
        """Fill ``buffer`` exactly from the stream, or raise TruncatedStreamError.

        ``ahead`` (after :meth:`expect_acquisitions`): the last read may also bring in what
        follows, the next message's id and header after a large payload (one ``readv``),
        whatever the source has ready after a small one.
        """
        view = memoryview(buffer)  # type: ignore[arg-type]
        if not view.nbytes:
            return  # (an empty view with a zero in its shape cannot be cast)
        view = view.cast("B")
        got = self._buffer.readinto(view, ahead and self._in_acquisitions, self._ahead_most)
        self.offset += got
        if got < view.nbytes:
            raise self._truncated(what, view.nbytes, got)

    def _read_piecewise(self, nbytes: int, what: str) -> np.ndarray:
        """``nbytes`` as a new uint8 array; a lying size costs only what actually arrives."""
        if nbytes <= _FIRST_PIECE:
            out, got = self._buffer.array(nbytes)
            self.offset += got
            if got < nbytes:
                raise self._truncated(what, nbytes, got)
            return out
        pieces = []
        got = 0
        size = _FIRST_PIECE
        while got < nbytes:
            piece, n = self._buffer.array(min(size, nbytes - got))
            got += n
            self.offset += n
            if n < piece.nbytes:
                raise self._truncated(what, nbytes, got)
            pieces.append(piece)
            size = min(2 * size, _MAX_PIECE)
        return np.concatenate(pieces)

    def read_bytes(self, nbytes: int, what: str = "payload") -> bytearray:
        """Read exactly ``nbytes``; large sizes are read in growing pieces first."""
        if nbytes <= _FIRST_PIECE:
            out = bytearray(nbytes)
            self.readinto(out, what)
            return out
        return bytearray(self._read_piecewise(nbytes, what))

    def skip(self, nbytes: int, what: str = "payload") -> None:
        """Consume ``nbytes`` without keeping them."""
        got = self._buffer.skip(nbytes)
        self.offset += got
        if got < nbytes:
            raise self._truncated(what, nbytes, got)

    def _available(self, nbytes: int, what: str) -> int:
        """Make ``nbytes`` available in the read-ahead chunk; returns their start."""
        buffer = self._buffer
        if buffer.end - buffer.pos < nbytes:
            have = buffer.fill(nbytes)
            if have < nbytes:
                buffer.pos += have
                self.offset += have
                raise self._truncated(what, nbytes, have)
        self.offset += nbytes
        return buffer.take(nbytes)

    def read_record(self, dtype: np.dtype, what: str) -> np.void:
        """Read one packed header record of ``dtype`` as a writable numpy record."""
        start = self._available(dtype.itemsize, what)
        return np.frombuffer(self._buffer.chunk, dtype, 1, start)[0]

    def _read_u32(self, what: str) -> int:
        start = self._available(4, what)
        return int.from_bytes(self._buffer.chunk[start : start + 4], "little")

    def _read_string(self, name: str) -> str:
        length = self._read_u32(f"{name} length")
        if length > self.limits.max_string_bytes:
            raise self.error(
                f"expected a {name} of at most {self.limits.max_string_bytes} bytes, found a "
                f"length prefix of {length} bytes (corrupt stream?)"
            )
        raw = self.read_bytes(length, f"{name} text")
        return decode_text(raw, name, self.message_offset, self.index)

    def _check_payload(self, what: str, nbytes: int) -> None:
        if nbytes > self.limits.max_payload_bytes:
            raise self.error(
                f"expected {what} of at most {self.limits.max_payload_bytes} bytes, found a "
                f"header claiming {nbytes} bytes (corrupt header?)"
            )

    def read_array(self, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        """Read a payload array of ``shape`` after checking its size against the limits."""
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if not count and math.prod(max(d, 1) for d in shape) > self.limits.max_payload_bytes:
            raise self.error(  # empty, yet no array can have these dimensions
                f"expected {what} with dimensions an array can have, found {list(shape)} "
                "(corrupt header?)"
            )
        if nbytes < DIRECT_BYTES:
            start = self._available(nbytes, what)
            return np.frombuffer(self._buffer.chunk, dtype, count, start).reshape(shape)
        self._check_payload(what, nbytes)
        return self._read_piecewise(nbytes, what).view(dtype).reshape(shape)

    # ------------------------------------------------------------ message ids
    def peek(self) -> MessageId | None:
        """The id of the next message without consuming its payload; None at a clean end."""
        if self._peeked is not None:
            return self._peeked
        self._run.clear()  # raw reading from here on: decode again from the buffer
        self.message_offset = self.offset
        buffer = self._buffer
        if buffer.end - buffer.pos < 2:
            have = buffer.fill(2, self._in_acquisitions, self._ahead_most)
            if have == 0:
                return None
            if have == 1:
                buffer.pos += 1
                self.offset += 1
                raise TruncatedStreamError(
                    "truncated message id: expected 2 bytes, found 1 before the end of the stream",
                    self.message_offset,
                    self.index,
                )
        chunk, pos = buffer.chunk, buffer.pos
        value = chunk[pos] | (chunk[pos + 1] << 8)
        mid = _ID_BY_VALUE.get(value)
        if mid is None:
            if self.offset == 0 and bytes(chunk[pos : pos + 2]) == HDF5_SIGNATURE[:2]:
                raise self.error(
                    "this is an HDF5 file (it starts with the HDF5 signature), not an MRD "
                    "stream: turn an ISMRMRD HDF5 file into a stream with mrdhdf5_to_stream "
                    "FILE | ..."
                )
            first = bytes(chunk[pos : pos + 2])
            if self.offset == 0 and first == YARDL_MAGIC[:2]:
                have = buffer.fill(len(YARDL_MAGIC))  # 3 more bytes tell v2 from text
                chunk, pos = buffer.chunk, buffer.pos
                if bytes(chunk[pos : pos + have]).startswith(YARDL_MAGIC):
                    raise self.error(
                        "expected an MRD v1 (ISMRMRD) stream, found an MRD v2 (yardl) stream "
                        "(it starts with 'yardl'), which this command does not read"
                    )
            if self.offset == 0 and all(b in _TEXT_BYTES for b in first):
                raise self.error(
                    "expected an MRD stream (whose first two bytes are a message id such as 3, "
                    f"HEADER), found what looks like a text file (it starts with "
                    f"{first.decode()!r}): give the raw-data stream, or an ISMRMRD HDF5 file "
                    "through mrdhdf5_to_stream FILE | ..."
                )
            raise self.error(
                f"unknown message id: expected one of {_KNOWN_IDS}, found {value} "
                f"(bytes 0x{chunk[pos]:02x} 0x{chunk[pos + 1]:02x})"
            )
        buffer.pos = pos + 2
        self.offset += 2
        self._peeked = mid
        return mid

    def unconsumed(self) -> bytes:
        """Bytes read from the source but not consumed yet (a program that copies the rest
        of the stream as it is writes these first)."""
        buffer = self._buffer
        return bytes(buffer.chunk[buffer.pos : buffer.end])

    def data_after_close(self, *, wait: bool = True) -> bool:
        """After CLOSE: whether anything follows it (every command stops reading at CLOSE
        and only warns about the rest).  ``wait=False`` looks only at bytes that have
        already arrived, for peers that keep their connection open after CLOSE."""
        return self._buffer.has_more(wait)

    def expect_acquisitions(self, payload_bytes: int) -> None:
        """Acquisitions of about ``payload_bytes`` each follow, and the caller reads their
        payloads itself (:meth:`readinto`): message ids and headers are then read ahead with
        the bytes before them instead of by reads of their own, never further than the next
        header after a payload large enough to be read straight into its destination."""
        self._in_acquisitions = True
        self._ahead_most = NEXT_HEAD_BYTES if payload_bytes >= DIRECT_BYTES else None

    def consume_peeked(self) -> MessageId:
        """Mark the peeked message as being read; the caller reads its payload."""
        mid = self.peek()
        if mid is None:
            raise self.error("expected a message, found the end of the stream")
        return mid

    def finish_message(self) -> None:
        """Advance to the next message after a payload was read piecewise."""
        if self._peeked is MessageId.CLOSE:
            self.closed = True
        self._peeked = None
        self.index += 1

    # --------------------------------------------------------------- messages
    def read_message(self) -> Message | None:
        """The next whole message, or None at a clean end of stream (without CLOSE)."""
        if self._run and self._peeked is None:
            stride = self._run_stride
            self.message_offset = self.offset
            self.offset += stride
            self._buffer.pos += stride
            self.index += 1
            return self._run.pop()
        mid = self._peeked or self.peek()
        if mid is None:
            return None
        msg = self._readers[mid]()
        if mid is MessageId.CLOSE:
            self.closed = True
        self._peeked = None
        self.index += 1
        return msg

    def __iter__(self) -> Iterator[Message]:
        """Yield messages up to, not including, CLOSE."""
        read_message = self.read_message
        while True:
            msg = read_message()
            if msg is None:
                if self.require_close:
                    raise MissingCloseError(
                        "expected a CLOSE message, found the end of the stream after "
                        f"{self.index} messages (the sender stopped early or the connection "
                        "dropped)",
                        self.offset,
                        self.index,
                    )
                return
            if type(msg) is Close:
                return
            yield msg
            # hand out the rest of a decoded run without a call per message; peek() (the
            # entry to every raw read) empties this same list, so raw reads between yields
            # end the loop
            run = self._run
            if run and self._peeked is None:
                buffer, stride, pop = self._buffer, self._run_stride, run.pop
                while run:
                    self.message_offset = self.offset
                    self.offset += stride
                    buffer.pos += stride
                    self.index += 1
                    yield pop()
            elif self._ahead_most is not None and self._peeked is None:
                yield from self._iter_large()

    def _iter_large(self) -> Iterator[Acquisition]:
        """Many-coil readouts one after another, with as little Python per message as
        possible: each one's 100+ kB pass through the CPU caches in between, so every
        interpreter step here runs cold.  Anything unusual returns to the general path."""
        buffer = self._buffer
        while self._peeked is None:
            chunk, pos = buffer.chunk, buffer.pos
            if buffer.end - pos < NEXT_HEAD_BYTES or chunk[pos] | chunk[pos + 1] << 8 != 1008:
                return
            samples, channels, dims = ACQ_SIZES.unpack_from(chunk, pos + 2)
            nbytes = 8 * channels * samples
            if dims or not DIRECT_BYTES <= nbytes <= _FIRST_PIECE:
                return
            self.message_offset = self.offset
            buffer.pos = pos + NEXT_HEAD_BYTES
            head = np.frombuffer(chunk, ACQUISITION_HEADER_DTYPE, 1, pos + 2)[0]
            out, got = buffer.array(nbytes, True)
            self.offset += NEXT_HEAD_BYTES + got
            if got < nbytes:
                self._peeked = MessageId.ACQUISITION
                raise self._truncated("acquisition samples", nbytes, got)
            self.index += 1
            yield Acquisition(
                head, np.empty((samples, 0), dtype=_F4), out.view(_C8).reshape(channels, samples)
            )

    def _read_config_file(self) -> ConfigFile:
        start = self._available(CONFIG_FILE_SIZE, "CONFIG_FILE name")
        raw = bytes(self._buffer.chunk[start : start + CONFIG_FILE_SIZE])
        name = raw.split(b"\0", 1)[0]
        return ConfigFile(decode_text(name, "CONFIG_FILE", self.message_offset, self.index))

    def _read_acquisition(self) -> Acquisition:
        buffer = self._buffer
        self._in_acquisitions = True
        if (
            buffer.end - buffer.pos < _ACQ_HEAD
            and buffer.fill(_ACQ_HEAD, True, self._ahead_most) < _ACQ_HEAD
        ):
            self._available(_ACQ_HEAD, "AcquisitionHeader")  # raises: the header is cut
        samples, channels, dims = ACQ_SIZES.unpack_from(buffer.chunk, buffer.pos)
        traj_bytes = 4 * samples * dims
        total = _ACQ_HEAD + traj_bytes + 8 * channels * samples
        # after a large readout, read ahead no further than the next header: its samples
        # are better read straight into their array than copied through the chunk
        self._ahead_most = NEXT_HEAD_BYTES if total >= DIRECT_BYTES else None
        if total >= DIRECT_BYTES and not traj_bytes and total <= _FIRST_PIECE:
            return self._read_large_acquisition(samples, channels)
        if total >= DIRECT_BYTES or buffer.fill(total, True) < total:
            # large payload (straight into its own arrays) or a cut one (precise error)
            head = self.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
            traj = self.read_array(_F4, (samples, dims), "trajectory")
            data = self.read_array(_C8, (channels, samples), "acquisition samples")
            return Acquisition(head, traj, data)
        chunk, start = buffer.chunk, buffer.pos
        if buffer.end - start >= 2 * (total + 2):
            return self._decode_run(samples, channels, dims, total)
        buffer.pos = start + total
        self.offset += total
        start += _ACQ_HEAD
        return Acquisition(
            np.frombuffer(chunk, ACQUISITION_HEADER_DTYPE, 1, start - _ACQ_HEAD)[0],
            np.frombuffer(chunk, _F4, samples * dims, start).reshape(samples, dims),
            np.frombuffer(chunk, _C8, channels * samples, start + traj_bytes).reshape(
                channels, samples
            ),
        )

    def _read_large_acquisition(self, samples: int, channels: int) -> Acquisition:
        """A many-coil readout: samples read from the source straight into their array,
        together with the next message's header when it is already there."""
        buffer = self._buffer
        start = buffer.take(_ACQ_HEAD)
        self.offset += _ACQ_HEAD
        head = np.frombuffer(buffer.chunk, ACQUISITION_HEADER_DTYPE, 1, start)[0]
        nbytes = 8 * channels * samples
        out, got = buffer.array(nbytes, True)
        self.offset += got
        if got < nbytes:
            raise self._truncated("acquisition samples", nbytes, got)
        data = out.view(_C8).reshape(channels, samples)
        return Acquisition(head, np.empty((samples, 0), dtype=_F4), data)

    def _decode_run(self, samples: int, channels: int, dims: int, total: int) -> Acquisition:
        """Decode the current acquisition and the following ones of the same size at once
        (see :mod:`.runs`).  Only the current one is consumed; the others wait in ``_run``
        until they are handed out."""
        buffer = self._buffer
        start = buffer.pos
        decoded = decode_run(buffer.chunk, start, buffer.end, samples, channels, dims)
        decoded.reverse()
        first = decoded.pop()
        self._run = decoded
        self._run_stride = total + 2
        buffer.pos = start + total
        self.offset += total
        return first

    def read_image_head(self) -> np.void:
        """Read and validate an ImageHeader (data type checked before any payload is read)."""
        head = self.read_record(IMAGE_HEADER_DTYPE, "ImageHeader")
        data_type = int(head["data_type"])
        if data_type not in DATA_TYPE_TO_DTYPE:
            raise self.error(
                f"invalid image data_type: expected 1..8 ({_TYPE_NAMES}), found {data_type}"
            )
        return head

    def _read_image(self) -> Image:
        head = self.read_image_head()
        start = self._available(8, "attribute length")
        attr_len = int.from_bytes(self._buffer.chunk[start : start + 8], "little")
        if attr_len > self.limits.max_attribute_bytes:
            raise self.error(
                f"expected image attributes of at most {self.limits.max_attribute_bytes} "
                f"bytes, found a length of {attr_len} bytes (corrupt stream?)"
            )
        attributes = decode_text(
            self.read_bytes(attr_len, "image attributes"),
            "image attributes",
            self.message_offset,
            self.index,
        )
        x, y, z = (int(v) for v in head["matrix_size"])
        data = self.read_array(
            DATA_TYPE_TO_DTYPE[int(head["data_type"])],
            (int(head["channels"]), z, y, x),
            "image pixels",
        )
        return Image(head=head, attributes=attributes, data=data)

    def _read_waveform(self) -> Waveform:
        head = self.read_record(WAVEFORM_HEADER_DTYPE, "WaveformHeader")
        data = self.read_array(
            np.dtype("<u4"),
            (int(head["channels"]), int(head["number_of_samples"])),
            "waveform samples",
        )
        return Waveform(head=head, data=data)

    def read_ndarray_head(self) -> tuple[np.dtype, int, tuple[int, ...]]:
        """Read and validate an NDArray's data type, version and dimensions."""
        # through read_record, so a reader that hands out translated bytes (the MRD v2
        # reader's raw mode) serves this part too
        head = self.read_record(_NDARRAY_HEAD, "NDArray header")
        data_type, version, ndim = (int(head[name]) for name in _NDARRAY_HEAD.names or ())
        if data_type not in DATA_TYPE_TO_DTYPE:
            raise self.error(
                f"invalid NDArray data type: expected 1..8 ({_TYPE_NAMES}), found {data_type}"
            )
        if ndim > self.limits.max_ndarray_dims:
            raise self.error(
                f"expected an NDArray of at most {self.limits.max_ndarray_dims} dimensions, "
                f"found {ndim} dimensions"
            )
        dims: tuple[int, ...] = ()
        if ndim:
            record = self.read_record(np.dtype((_U64, (ndim,))), "NDArray dims")
            dims = tuple(int(d) for d in np.asarray(record).reshape(-1))
        return DATA_TYPE_TO_DTYPE[data_type], version, dims

    def _read_ndarray(self) -> NDArray:
        dtype, version, dims = self.read_ndarray_head()
        return NDArray(array=self.read_array(dtype, dims, "NDArray data"), version=version)


def decode_image(buffer: memoryview | bytes | bytearray, start: int = 0) -> Image:
    """The IMAGE message encoded at ``buffer[start:]`` (from its id), pixels as a view.

    For messages this program encoded itself (the engine's image slots): sizes are trusted.
    """
    head = np.frombuffer(buffer, IMAGE_HEADER_DTYPE, 1, start + 2)[0]
    at = start + 2 + IMAGE_HEADER_DTYPE.itemsize
    attr_len = int.from_bytes(bytes(buffer[at : at + 8]), "little")
    attributes = bytes(buffer[at + 8 : at + 8 + attr_len]).decode("utf-8")
    x, y, z = (int(v) for v in head["matrix_size"])
    shape = (int(head["channels"]), z, y, x)
    dtype = DATA_TYPE_TO_DTYPE[int(head["data_type"])]
    data = np.frombuffer(buffer, dtype, math.prod(shape), at + 8 + attr_len).reshape(shape)
    return Image(head=head, attributes=attributes, data=data)


def after_close_warning(reader: StreamReader) -> str:
    """The warning every command prints when data follows the CLOSE message."""
    return (
        f"ignored data after the CLOSE message (at byte offset {reader.offset}, message index "
        f"{reader.index}): reading stops at CLOSE"
    )

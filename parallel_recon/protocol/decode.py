"""Reading MRD v1 messages: the ``StreamReader``.

The reader never trusts a length prefix: strings are checked against limits before anything
is allocated, and large payloads are read in bounded chunks so that a lying size field on a
truncated stream fails with "truncated" instead of allocating the claimed size.  Every error
names the message, what was expected, what was found, the byte offset and the message index.

Besides iterating whole messages, the reader offers the pieces the reconstruction reader
process needs to land samples straight in shared memory: :meth:`StreamReader.peek`,
:meth:`StreamReader.read_record` and :meth:`StreamReader.readinto`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import MissingCloseError, ProtocolError, TruncatedStreamError
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

__all__ = ["DEFAULT_LIMITS", "Limits", "StreamReader"]

_CHUNK = 64 << 20  # payloads above this are read piecewise before being assembled
_KNOWN_IDS = ", ".join(f"{m.value} ({m.name})" for m in MessageId)


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


def _decode_text(raw: bytes | bytearray, what: str, offset: int, index: int) -> str:
    if raw.endswith(b"\0"):  # some writers count a trailing NUL in the length
        raw = raw[:-1]
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"{what} is not valid UTF-8 text: undecodable byte at position {exc.start}",
            offset,
            index,
        ) from None


class StreamReader:
    """Reads MRD v1 messages from a binary source.

    Parameters
    ----------
    source:
        Any object with ``readinto`` (a file, ``sys.stdin.buffer``, a socket file).
    limits:
        Size limits checked before allocation.
    require_close:
        When True, a stream that ends at a message boundary without CLOSE raises
        :class:`MissingCloseError`; when False it simply ends.
    """

    def __init__(
        self,
        source: BinaryIO,
        *,
        limits: Limits = DEFAULT_LIMITS,
        require_close: bool = True,
    ):
        self._source = source
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
    def readinto(self, buffer: memoryview | bytearray | np.ndarray, what: str = "payload") -> None:
        """Fill ``buffer`` exactly from the stream, or raise TruncatedStreamError."""
        view = memoryview(buffer).cast("B")
        total = view.nbytes
        got = 0
        readinto = self._source.readinto
        while got < total:
            n = readinto(view[got:])
            if not n:
                self.offset += got
                raise self._truncated(what, total, got)
            got += n
        self.offset += total

    def read_bytes(self, nbytes: int, what: str = "payload") -> bytearray:
        """Read exactly ``nbytes``; sizes above 64 MiB are read in chunks first."""
        if nbytes <= _CHUNK:
            buffer = bytearray(nbytes)
            self.readinto(buffer, what)
            return buffer
        chunks = []
        remaining = nbytes
        start = self.offset
        try:
            while remaining:
                chunk = bytearray(min(remaining, _CHUNK))
                self.readinto(chunk, what)
                chunks.append(chunk)
                remaining -= len(chunk)
        except TruncatedStreamError:
            raise self._truncated(what, nbytes, self.offset - start) from None
        return bytearray().join(chunks)

    def skip(self, nbytes: int, what: str = "payload") -> None:
        """Consume ``nbytes`` without keeping them."""
        scratch = bytearray(min(nbytes, 1 << 20))
        remaining = nbytes
        start = self.offset
        try:
            while remaining:
                view = memoryview(scratch)[: min(remaining, len(scratch))]
                self.readinto(view, what)
                remaining -= len(view)
        except TruncatedStreamError:
            raise self._truncated(what, nbytes, self.offset - start) from None

    def read_record(self, dtype: np.dtype, what: str) -> np.void:
        """Read one packed header record of ``dtype`` as a writable numpy record."""
        buffer = bytearray(dtype.itemsize)
        self.readinto(buffer, what)
        return np.frombuffer(buffer, dtype=dtype)[0]

    def _read_u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.read_bytes(4, what))[0])

    def _read_string(self, name: str) -> str:
        length = self._read_u32(f"{name} length")
        if length > self.limits.max_string_bytes:
            raise self.error(
                f"{name} length prefix says {length} bytes; expected at most "
                f"{self.limits.max_string_bytes} (corrupt stream?)"
            )
        raw = self.read_bytes(length, f"{name} text")
        return _decode_text(raw, name, self.message_offset, self.index)

    def _check_payload(self, what: str, nbytes: int) -> None:
        if nbytes > self.limits.max_payload_bytes:
            raise self.error(
                f"{what} would be {nbytes} bytes; expected at most "
                f"{self.limits.max_payload_bytes} (corrupt header?)"
            )

    def read_array(self, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        """Read a payload array of ``shape`` after checking its size against the limits."""
        nbytes = math.prod(shape) * dtype.itemsize
        self._check_payload(what, nbytes)
        return np.frombuffer(self.read_bytes(nbytes, what), dtype=dtype).reshape(shape)

    # ------------------------------------------------------------ message ids
    def peek(self) -> MessageId | None:
        """The id of the next message without consuming its payload; None at a clean end."""
        if self._peeked is not None:
            return self._peeked
        self.message_offset = self.offset
        raw = bytearray(2)
        view = memoryview(raw)
        got = 0
        while got < 2:
            n = self._source.readinto(view[got:])
            if not n:
                break
            got += n
        self.offset += got
        if got == 0:
            return None
        if got == 1:
            raise TruncatedStreamError(
                "truncated message id: expected 2 bytes, found 1 before the end of the stream",
                self.message_offset,
                self.index,
            )
        value = raw[0] | (raw[1] << 8)
        try:
            self._peeked = MessageId(value)
        except ValueError:
            raise self.error(
                f"unknown message id {value}: expected one of {_KNOWN_IDS}"
            ) from None
        return self._peeked

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
        mid = self.peek()
        if mid is None:
            return None
        msg = self._readers[mid]()
        self.finish_message()
        return msg

    def __iter__(self) -> Iterator[Message]:
        """Yield messages up to, not including, CLOSE."""
        while True:
            msg = self.read_message()
            if msg is None:
                if self.require_close:
                    raise MissingCloseError(
                        f"stream ended after {self.index} messages without a CLOSE message "
                        "(the sender stopped early or the connection dropped)",
                        self.offset,
                        self.index,
                    )
                return
            if isinstance(msg, Close):
                return
            yield msg

    def _read_config_file(self) -> ConfigFile:
        raw = self.read_bytes(CONFIG_FILE_SIZE, "CONFIG_FILE name")
        name = bytes(raw).split(b"\0", 1)[0]
        return ConfigFile(_decode_text(name, "CONFIG_FILE", self.message_offset, self.index))

    def _read_acquisition(self) -> Acquisition:
        head = self.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
        samples = int(head["number_of_samples"])
        traj = self.read_array(
            np.dtype("<f4"), (samples, int(head["trajectory_dimensions"])), "trajectory"
        )
        data = self.read_array(
            np.dtype("<c8"), (int(head["active_channels"]), samples), "acquisition samples"
        )
        return Acquisition(head=head, traj=traj, data=data)

    def read_image_head(self) -> np.void:
        """Read and validate an ImageHeader (data type checked before any payload is read)."""
        head = self.read_record(IMAGE_HEADER_DTYPE, "ImageHeader")
        data_type = int(head["data_type"])
        if data_type not in DATA_TYPE_TO_DTYPE:
            raise self.error(
                f"image data_type {data_type} is invalid: expected 1..8 "
                "(uint16, int16, uint32, int32, float32, float64, complex64, complex128)"
            )
        return head

    def _read_image(self) -> Image:
        head = self.read_image_head()
        attr_len = int(struct.unpack("<Q", self.read_bytes(8, "attribute length"))[0])
        if attr_len > self.limits.max_attribute_bytes:
            raise self.error(
                f"image attribute length says {attr_len} bytes; expected at most "
                f"{self.limits.max_attribute_bytes} (corrupt stream?)"
            )
        attributes = _decode_text(
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

    def _read_ndarray(self) -> NDArray:
        data_type, version, ndim = struct.unpack("<HHH", self.read_bytes(6, "NDArray header"))
        if data_type not in DATA_TYPE_TO_DTYPE:
            raise self.error(f"NDArray data type {data_type} is invalid: expected 1..8")
        if ndim > self.limits.max_ndarray_dims:
            raise self.error(
                f"NDArray has {ndim} dimensions; expected at most {self.limits.max_ndarray_dims}"
            )
        dims = struct.unpack(f"<{ndim}Q", self.read_bytes(8 * ndim, "NDArray dims"))
        array = self.read_array(DATA_TYPE_TO_DTYPE[data_type], tuple(dims), "NDArray data")
        return NDArray(array=array, version=version)

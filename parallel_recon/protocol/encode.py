"""Writing MRD v1 messages: ``encode_message`` and the ``StreamWriter``.

Each message type has one encoder in a table; an encoder returns the message as a list of
buffers (id and header first, then payload arrays as zero-copy views) so that large payloads
go to the sink without being joined into one bytes object first.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import BinaryIO

import numpy as np

from .layout import (
    ACQUISITION_HEADER_DTYPE,
    CONFIG_FILE_SIZE,
    DTYPE_TO_DATA_TYPE,
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
    copy_record,
)
from .runs import ACQ_SIZES

__all__ = ["StreamWriter", "encode_message", "message_id_bytes"]

Buffers = list[bytes | memoryview]

_ID_BYTES = {mid: struct.pack("<H", mid) for mid in MessageId}
_ACQ_ID = _ID_BYTES[MessageId.ACQUISITION]
_F4 = np.dtype("<f4")
_C8 = np.dtype("<c8")
_VIEW_BYTES = 16 << 10
"""Payloads at least this large are passed on as zero-copy views."""
_JOIN_BYTES = 64 << 10
"""Messages up to this size go to the sink in one write."""


def message_id_bytes(message_id: MessageId) -> bytes:
    """The 2-byte little-endian id that starts a message."""
    return _ID_BYTES[message_id]


def _record_bytes(record: np.void, dtype: np.dtype) -> bytes:
    if record.dtype is not dtype and record.dtype != dtype:
        raise TypeError(f"expected a header record of dtype {dtype}, got {record.dtype}")
    return record.tobytes()


def _payload(array: np.ndarray, dtype: np.dtype) -> bytes | memoryview:
    """The array's bytes as ``dtype`` in C order: small ones copied (cheaper than a view),
    large ones as a zero-copy view when the array already has that layout."""
    if array.dtype != dtype:
        array = np.ascontiguousarray(array, dtype=dtype)
    if array.nbytes < _VIEW_BYTES or not array.flags.c_contiguous:
        return array.tobytes()
    return memoryview(array).cast("B")  # type: ignore[arg-type]


def _length_prefixed(message_id: MessageId, text: str) -> Buffers:
    raw = text.encode("utf-8")
    return [_ID_BYTES[message_id] + struct.pack("<I", len(raw)), raw]


def _encode_config_file(msg: ConfigFile) -> Buffers:
    raw = msg.name.encode("utf-8")
    if len(raw) >= CONFIG_FILE_SIZE:
        raise ValueError(
            f"config name is {len(raw)} bytes; CONFIG_FILE holds at most {CONFIG_FILE_SIZE - 1}"
        )
    return [_ID_BYTES[MessageId.CONFIG_FILE] + raw.ljust(CONFIG_FILE_SIZE, b"\0")]


def _encode_config_text(msg: ConfigText) -> Buffers:
    return _length_prefixed(MessageId.CONFIG_TEXT, msg.text)


def _encode_header(msg: Header) -> Buffers:
    return _length_prefixed(MessageId.HEADER, msg.xml)


def _encode_text(msg: Text) -> Buffers:
    return _length_prefixed(MessageId.TEXT, msg.text)


def _encode_close(msg: Close) -> Buffers:
    return [_ID_BYTES[MessageId.CLOSE]]


def _check_shape(what: str, actual: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(actual) != tuple(expected):
        raise ValueError(f"{what}: header says shape {tuple(expected)}, array has {actual}")


def _encode_acquisition(msg: Acquisition) -> Buffers:
    raw = _record_bytes(msg.head, ACQUISITION_HEADER_DTYPE)
    samples, channels, dims = ACQ_SIZES.unpack_from(raw)
    if msg.data.shape != (channels, samples):
        _check_shape("acquisition data", msg.data.shape, (channels, samples))
    if msg.traj.shape != (samples, dims):
        _check_shape("acquisition trajectory", msg.traj.shape, (samples, dims))
    return [_ACQ_ID + raw, _payload(msg.traj, _F4), _payload(msg.data, _C8)]


def _small_acquisition(msg: Acquisition) -> bytes | None:
    """Fast path for the bulk of a raw-data stream: a small acquisition whose arrays already
    have the wire layout, as one bytes object.  None when the general encoder must decide."""
    head, traj, data = msg.head, msg.traj, msg.data
    if head.dtype is not ACQUISITION_HEADER_DTYPE or traj.dtype is not _F4 or data.dtype is not _C8:
        return None
    raw = head.tobytes()
    samples, channels, dims = ACQ_SIZES.unpack_from(raw)
    if data.shape != (channels, samples) or traj.shape != (samples, dims):
        return None
    if data.nbytes >= _VIEW_BYTES:
        return None
    try:  # arrays join as buffers when C-contiguous, which is almost always
        return b"".join((_ACQ_ID, raw, traj, data))  # type: ignore[arg-type]
    except (BufferError, TypeError, ValueError):
        return None


def _encode_image(msg: Image) -> Buffers:
    head = copy_record(msg.head)
    attributes = msg.attributes.encode("utf-8")
    head["attribute_string_len"] = len(attributes)
    dtype = msg.data.dtype.newbyteorder("<")
    if DTYPE_TO_DATA_TYPE.get(dtype) != int(head["data_type"]):
        raise ValueError(
            f"image header data_type {int(head['data_type'])} does not match array dtype {dtype}"
        )
    x, y, z = (int(v) for v in head["matrix_size"])
    _check_shape("image data", msg.data.shape, (int(head["channels"]), z, y, x))
    return [
        _ID_BYTES[MessageId.IMAGE]
        + _record_bytes(head, IMAGE_HEADER_DTYPE)
        + struct.pack("<Q", len(attributes))
        + attributes,
        _payload(msg.data, dtype),
    ]


def _encode_waveform(msg: Waveform) -> Buffers:
    head = msg.head
    _check_shape(
        "waveform data",
        msg.data.shape,
        (int(head["channels"]), int(head["number_of_samples"])),
    )
    return [
        _ID_BYTES[MessageId.WAVEFORM] + _record_bytes(head, WAVEFORM_HEADER_DTYPE),
        _payload(msg.data, np.dtype("<u4")),
    ]


def _encode_ndarray(msg: NDArray) -> Buffers:
    dtype = msg.array.dtype.newbyteorder("<")
    if dtype not in DTYPE_TO_DATA_TYPE:
        raise ValueError(f"NDArray dtype {dtype} is not one of the 8 ISMRMRD data types")
    dims = msg.array.shape
    prefix = struct.pack(
        f"<HHH{len(dims)}Q", DTYPE_TO_DATA_TYPE[dtype], msg.version, len(dims), *dims
    )
    return [_ID_BYTES[MessageId.NDARRAY] + prefix, _payload(msg.array, dtype)]


_ENCODERS: dict[type, Callable[..., Buffers]] = {
    ConfigFile: _encode_config_file,
    ConfigText: _encode_config_text,
    Header: _encode_header,
    Close: _encode_close,
    Text: _encode_text,
    Acquisition: _encode_acquisition,
    Image: _encode_image,
    Waveform: _encode_waveform,
    NDArray: _encode_ndarray,
}


def encode_buffers(msg: Message) -> Buffers:
    """The message as a list of buffers, in wire order (payloads are zero-copy views)."""
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"cannot encode {type(msg).__name__} as an MRD message") from None
    return encoder(msg)


def encode_message(msg: Message) -> bytes:
    """The message's complete wire bytes."""
    return b"".join(encode_buffers(msg))


class StreamWriter:
    """Writes messages to a binary sink; as a context manager it ends with CLOSE.

    On an exception inside the ``with`` block no CLOSE is written, so a reader downstream
    sees an incomplete stream rather than a falsely complete one.
    """

    generation = "ismrmrd"
    """The stream generation this writer writes (``mrd2`` for the v2 writer)."""

    def __init__(self, sink: BinaryIO):
        self._sink = sink
        self.bytes_written = 0
        self.closed = False

    def write(self, msg: Message) -> None:
        """Write one message."""
        if type(msg) is Acquisition:
            blob = _small_acquisition(msg)
            if blob is not None:
                self._sink.write(blob)
                self.bytes_written += len(blob)
                return
        self._write_list(encode_buffers(msg))

    def write_all(self, messages: Iterable[Message]) -> None:
        """Write every message of an iterable."""
        write = self._write_list
        for msg in messages:
            write(encode_buffers(msg))

    def write_buffers(self, buffers: Iterable[bytes | memoryview]) -> None:
        """Write pre-encoded message bytes (used by bulk converters).

        Buffers must be bytes or 1-D byte views (as :func:`encode_buffers` returns).
        """
        self._write_list(list(buffers))

    def _write_list(self, buffers: Buffers) -> None:
        total = sum(map(len, buffers))
        if total <= _JOIN_BYTES:
            self._sink.write(b"".join(buffers))
        else:
            write = self._sink.write
            for buffer in buffers:
                write(buffer)
        self.bytes_written += total

    def close(self) -> None:
        """Write CLOSE (once) and flush."""
        if not self.closed:
            self.write_buffers([_ID_BYTES[MessageId.CLOSE]])
            self.closed = True
        self._sink.flush()

    def flush(self) -> None:
        """Flush the sink, so a peer sees what was written so far."""
        self._sink.flush()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

"""Passing over whole messages without holding them.

A program that only forwards or ignores a message (the recon server between its client and
the reconstruction, the reconstruction for NDARRAY, IMAGE and WAVEFORM input) needs the
message's length, not its contents.  :func:`skip_message` reads the message id and its
fixed-size part (at most an ImageHeader and an attribute length), computes from the sizes
in it how many bytes follow, and consumes them in bounded pieces: a message that claims
gigabytes costs only the bytes that actually arrive, and a stream that ends inside it is
"truncated" as for any other message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .decode import StreamReader
from .layout import (
    ACQUISITION_HEADER_DTYPE,
    CONFIG_FILE_SIZE,
    DATA_TYPE_TO_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    MessageId,
)

__all__ = ["message_remainder", "skip_message"]

_U32 = np.dtype("<u4")
_U64 = np.dtype("<u8")


def _string(name: str) -> Callable[[StreamReader], int]:
    def remainder(reader: StreamReader) -> int:
        return int(reader.read_record(_U32, f"{name} length"))

    return remainder


def _acquisition(reader: StreamReader) -> int:
    head = reader.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
    samples = int(head["number_of_samples"])
    trajectory = samples * int(head["trajectory_dimensions"]) * 4
    return trajectory + samples * int(head["active_channels"]) * 8


def _image(reader: StreamReader) -> int:
    head = reader.read_image_head()
    attributes = int(reader.read_record(_U64, "attribute length"))
    pixels = math.prod(int(v) for v in head["matrix_size"]) * int(head["channels"])
    return attributes + pixels * DATA_TYPE_TO_DTYPE[int(head["data_type"])].itemsize


def _waveform(reader: StreamReader) -> int:
    head = reader.read_record(WAVEFORM_HEADER_DTYPE, "WaveformHeader")
    return int(head["channels"]) * int(head["number_of_samples"]) * 4


def _ndarray(reader: StreamReader) -> int:
    dtype, _, dims = reader.read_ndarray_head()
    return math.prod(dims) * dtype.itemsize


_REMAINDERS: dict[MessageId, Callable[[StreamReader], int]] = {
    MessageId.CONFIG_FILE: lambda reader: CONFIG_FILE_SIZE,
    MessageId.CONFIG_TEXT: _string("CONFIG_TEXT"),
    MessageId.HEADER: _string("HEADER"),
    MessageId.CLOSE: lambda reader: 0,
    MessageId.TEXT: _string("TEXT"),
    MessageId.ACQUISITION: _acquisition,
    MessageId.IMAGE: _image,
    MessageId.WAVEFORM: _waveform,
    MessageId.NDARRAY: _ndarray,
}
"""Message id -> reads its fixed part and returns the number of bytes that follow."""


def message_remainder(reader: StreamReader, mid: MessageId) -> int:
    """After ``reader.consume_peeked()`` of a ``mid`` message: read its fixed part and
    return how many bytes of the message follow (nothing is allocated for them)."""
    return _REMAINDERS[mid](reader)


def skip_message(reader: StreamReader) -> MessageId | None:
    """Consume the next message without keeping it; its id, or None at a clean end.

    Raises
    ------
    ProtocolError
        For an unknown id or an invalid fixed part; TruncatedStreamError when the stream
        ends inside the message.
    """
    mid = reader.peek()
    if mid is None:
        return None
    reader.consume_peeked()
    reader.skip(message_remainder(reader, mid), "payload")
    reader.finish_message()
    return mid

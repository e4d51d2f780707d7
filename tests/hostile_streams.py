"""Streams that claim more than they deliver, shared by the recon and the server tests.

Each one is a small valid beginning (the phantom's header and a line or two) followed by a
message header that claims gigabytes; :func:`with_zeros` writes it to a file followed by as
many payload bytes as a test wants to send.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import (
    Acquisition,
    AcquisitionFlag,
    Message,
    MessageId,
    StreamWriter,
    encode_message,
)

MiB = 1 << 20
NOISE = 1 << (AcquisitionFlag.IS_NOISE_MEASUREMENT - 1)


def encode(messages: Sequence[Message]) -> bytes:
    """The messages as a stream, CLOSE included."""
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in messages:
            writer.write(msg)
    return sink.getvalue()


def phantom_messages(repetitions: int = 1) -> list[Message]:
    """A 16 x 16, 2-channel phantom scan: HEADER, then 16 lines per repetition."""
    return list(iter_messages(PhantomSpec(matrix=16, coils=2, repetitions=repetitions)))


def noise_claim(messages: Sequence[Message], channels: int, samples: int) -> bytes:
    """HEADER (2 channels), a 2-channel noise line, and the header of a noise line claiming
    ``channels`` x ``samples``; no CLOSE."""
    first = messages[1]
    assert isinstance(first, Acquisition)
    noise = Acquisition(first.head.copy(), first.traj, first.data)
    noise.head["flags"] = NOISE
    claim = first.head.copy()
    claim["flags"] = NOISE
    claim["active_channels"] = channels
    claim["number_of_samples"] = samples
    head = encode_message(messages[0]) + encode_message(noise)
    return head + struct.pack("<H", MessageId.ACQUISITION) + claim.tobytes()


def ndarray_claim(messages: Sequence[Message], values: int) -> bytes:
    """HEADER, the first line, and the header of a complex64 NDARRAY of ``values``; no CLOSE."""
    head = encode_message(messages[0]) + encode_message(messages[1])
    return head + struct.pack("<HHHHQ", MessageId.NDARRAY, 7, 0, 1, values)


def with_zeros(path: Path, head: bytes, nbytes: int) -> Path:
    """``head`` and then ``nbytes`` zero bytes (whole MiB), written to ``path`` in pieces."""
    with path.open("wb") as out:
        out.write(head)
        block = bytes(MiB)
        for _ in range(nbytes // MiB):
            out.write(block)
    return path

"""Shared by the noise, GRAPPA and coil-combination tests: phantom streams in, images out.

Images are read back with ismrmrd-python (the oracle), never with our own reader.
"""

from __future__ import annotations

import io
from pathlib import Path

import ismrmrd
import numpy as np
from conftest import run_cli
from reference_recon import read_stream

from parallel_recon.phantom import PhantomSpec, iter_messages, write_stream
from parallel_recon.protocol import Acquisition, MessageId, encode_message, message_id_bytes

__all__ = [
    "chunks_by_repetition",
    "images",
    "nrmse",
    "phantom_bytes",
    "recon_images",
    "write_phantom",
]


def phantom_bytes(spec: PhantomSpec) -> bytes:
    sink = io.BytesIO()
    write_stream(spec, sink)
    return sink.getvalue()


def write_phantom(path: Path, spec: PhantomSpec) -> Path:
    path.write_bytes(phantom_bytes(spec))
    return path


def images(stream: bytes) -> list[ismrmrd.Image]:
    _, messages = read_stream(stream)
    found = [m for m in messages if isinstance(m, ismrmrd.Image)]
    assert len(found) == len(messages), "only images expected after the header"
    return found


def recon_images(stream: bytes, *args: str, workers: int = 2) -> list[ismrmrd.Image]:
    """Images of ``mrd_stream_recon --workers N ARGS``."""
    proc = run_cli("mrd_stream_recon", "--workers", str(workers), *args, input=stream)
    return images(proc.stdout)


def nrmse(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(found - truth) / np.linalg.norm(truth))


def chunks_by_repetition(spec: PhantomSpec) -> list[bytes]:
    """The phantom stream as [header + noise, repetition 0, repetition 1, ..., CLOSE] bytes:
    what a scanner sends one repetition at a time."""
    chunks: list[bytes] = [b""]
    current = -1
    for msg in iter_messages(spec):
        noise = isinstance(msg, Acquisition) and int(msg.head["flags"]) & (1 << 18)
        if isinstance(msg, Acquisition) and not noise:
            repetition = int(msg.head["idx"]["repetition"])
            if repetition != current:
                chunks.append(b"")
                current = repetition
        chunks[-1] += encode_message(msg)
    chunks.append(message_id_bytes(MessageId.CLOSE))
    return chunks

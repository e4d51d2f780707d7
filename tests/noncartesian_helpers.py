"""Shared pieces of the non-Cartesian tests: phantom streams, running the recon, NRMSE."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import ismrmrd
import numpy as np
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec, write_stream
from parallel_recon.protocol import Image, StreamReader

__all__ = ["history", "nrmse", "phantom_stream", "recon", "rewrite_acquisitions"]

RECON = "mrd_stream_recon"


def phantom_stream(**fields: Any) -> bytes:
    """An MRD stream of a noise-free phantom (``PhantomSpec`` fields; noise 0 by default)."""
    fields.setdefault("noise_level", 0.0)
    sink = io.BytesIO()
    write_stream(PhantomSpec(**fields), sink)
    return sink.getvalue()


def recon(stream: bytes, *args: str, workers: int = 2) -> tuple[list[Image], bytes]:
    """Images of ``mrd_stream_recon`` (exit status 0 and a quiet stderr checked) and the
    output bytes."""
    proc = run_cli(RECON, "--workers", str(workers), *args, input=stream)
    assert proc.stderr == b"", proc.stderr.decode()
    reader = StreamReader(io.BytesIO(proc.stdout))
    return [m for m in reader if isinstance(m, Image)], proc.stdout


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    """``|a x - ref| / |ref|`` with the least-squares scale ``a`` (complex for complex data)."""
    x = np.asarray(image, np.complex128).ravel()
    ref = np.asarray(reference, np.complex128).ravel()
    scale = np.vdot(x, ref) / np.vdot(x, x)
    return float(np.linalg.norm(scale * x - ref) / np.linalg.norm(ref))


def rewrite_acquisitions(stream: bytes, change: Callable[[ismrmrd.Acquisition], Any]) -> bytes:
    """The stream with ``change`` applied to every acquisition, through ismrmrd-python's
    serialisation (not this project's codec); ``change`` may return a replacement."""
    items = list(ismrmrd.ProtocolDeserializer(io.BytesIO(stream)).deserialize())
    sink = io.BytesIO()
    serializer = ismrmrd.ProtocolSerializer(sink)
    for item in items:
        if isinstance(item, ismrmrd.Acquisition):
            item = change(item) or item
        serializer.serialize(item)
    serializer.close()
    return sink.getvalue()


def history(image: Image) -> list[str]:
    """The image's ImageProcessingHistory, read with ismrmrd-python's Meta."""
    return list(ismrmrd.Meta.deserialize(image.attributes)["ImageProcessingHistory"])

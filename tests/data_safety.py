"""Helpers of the data-safety tests: small streams, file fingerprints, one-line errors.

Shared by ``test_data_safety_files.py`` and ``test_data_safety_streams.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from parallel_recon.protocol import StreamWriter
from parallel_recon.protocol.messages import Acquisition, Image, Message

__all__ = [
    "XML_A",
    "XML_B",
    "acquisition",
    "digest",
    "hdf5_content",
    "image",
    "leftovers",
    "one_error_line",
    "small_tmpfs",
    "stream_of",
]

XML_A = "<ismrmrdHeader><studyInformation><studyID>A</studyID></studyInformation></ismrmrdHeader>"
XML_B = "<ismrmrdHeader><studyInformation><studyID>B</studyID></studyInformation></ismrmrdHeader>"


def stream_of(*messages: Message) -> bytes:
    """The MRD stream of ``messages`` followed by CLOSE."""
    out = io.BytesIO()
    with StreamWriter(out) as writer:
        for msg in messages:
            writer.write(msg)
    return out.getvalue()


def acquisition(scan: int, coils: int = 2, samples: int = 16) -> Acquisition:
    """A small acquisition with recognisable samples."""
    data = (np.arange(coils * samples, dtype=np.float32) + scan).reshape(coils, samples)
    acq = Acquisition.from_arrays(data.astype(np.complex64))
    acq.head["scan_counter"] = scan
    return acq


def image(rows: int, columns: int = 4, series: int = 0) -> Image:
    """A float32 magnitude image ``[1, 1, rows, columns]`` of series ``series``."""
    msg = Image.from_array(np.ones((1, 1, rows, columns), np.float32))
    msg.head["image_series_index"] = series
    return msg


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hdf5_content(path: Path) -> dict[str, str]:
    """Every dataset of an HDF5 file as ``name -> SHA-256 of its values`` (read with h5py)."""
    content: dict[str, str] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            values = item[()]
            if values.dtype.hasobject or values.dtype.names:
                text = repr(values.tolist()).encode()
            else:
                text = np.ascontiguousarray(values).tobytes()
            content[name] = hashlib.sha256(text).hexdigest()

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return content


def leftovers(folder: Path, *expected: str) -> list[str]:
    """Names in ``folder`` other than ``expected`` (hidden temporary files included)."""
    return sorted(name for name in (p.name for p in folder.iterdir()) if name not in expected)


def one_error_line(proc: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    """The single stderr line of a command that failed cleanly with ``status``."""
    text = proc.stderr.decode(errors="replace")
    assert proc.returncode == status, f"exit {proc.returncode}, expected {status}:\n{text}"
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax, e.g. ``1m``) mounted at ``where``, unmounted after.

    The tests run as root, so a real small filesystem is mounted: out-of-space errors then
    come from the kernel at the real write calls, not from a fake.
    """
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    assert mounted.returncode == 0, (
        "the disk-full tests mount a small tmpfs and need root: "
        + mounted.stderr.decode(errors="replace")
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)

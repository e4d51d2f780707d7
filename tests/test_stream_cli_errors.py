"""Hostile input through a real command: ``stream_to_mrdhdf5 -o out.h5`` reading stdin.

Whatever is wrong with the stream, the user sees exactly one line on stderr that says what
was expected, what was found and where (byte offset, message index), a non-zero exit code,
no traceback, no hang, and no memory blow-up from a lying length field.
"""

from __future__ import annotations

import resource
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import script
from test_protocol_hostile import SmallStream, small_stream

from parallel_recon.protocol import MessageId, new_image_head

COMMAND = "stream_to_mrdhdf5"
INTERIOR_SAMPLES = 30
ADDRESS_SPACE = 3 << 30
"""Address-space limit for the command: far below the 4 GB a lying header claims."""


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run(stdin: bytes, out: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the command as a user would, under a memory cap, with a hang guard."""
    return subprocess.run(
        [script(COMMAND), "-o", str(out)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=_limit_memory,
    )


def assert_one_clear_line(
    proc: subprocess.CompletedProcess[bytes], offset: int | None = None, index: int | None = None
) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err  # bad input: 1 (2 is for a usage error)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    line = lines[0]
    if offset is not None:
        assert f"byte offset {offset}" in line, line
    if index is not None:
        assert f"message index {index}" in line, line
    assert "expected" in line and "found" in line, line
    return line


@pytest.fixture(scope="module")
def stream() -> SmallStream:
    return small_stream()


def _cuts(stream: SmallStream) -> list[int]:
    """Every message boundary plus evenly spread offsets inside messages."""
    boundaries = sorted(set(stream.starts))
    interior = sorted(set(range(len(stream.raw))) - set(boundaries))
    picks = np.linspace(0, len(interior) - 1, INTERIOR_SAMPLES).round().astype(int)
    return boundaries + [interior[i] for i in picks]


def test_valid_stream_is_accepted(stream: SmallStream, tmp_path: Path) -> None:
    """The contract the error tests rely on: the same command takes the intact stream."""
    proc = run(stream.raw, tmp_path / "out.h5")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert (tmp_path / "out.h5").stat().st_size > 0


def test_truncated_streams_give_one_clear_line(stream: SmallStream, tmp_path: Path) -> None:
    boundaries = set(stream.starts)
    for cut in _cuts(stream):
        proc = run(stream.raw[:cut], tmp_path / f"out_{cut}.h5")
        index = stream.message_at(cut)
        if cut in boundaries:
            line = assert_one_clear_line(proc, cut, index)
            assert "CLOSE" in line, line  # a clean end: reported as a missing CLOSE
        else:
            line = assert_one_clear_line(proc, stream.starts[index], index)
            assert "truncated" in line, line


def _image_head(data_type: int, matrix: tuple[int, int, int], channels: int) -> bytes:
    head = new_image_head()
    head["data_type"] = data_type
    head["matrix_size"] = matrix
    head["channels"] = channels
    return head.tobytes()


def _hostile_cases(stream: SmallStream) -> dict[str, tuple[bytes, int, int, str]]:
    """name -> (stdin, byte offset, message index, a word the line must contain)."""
    at = stream.starts[2]
    prefix = stream.raw[:at]
    image_id = struct.pack("<H", MessageId.IMAGE)
    return {
        "unknown-id": (prefix + struct.pack("<H", 999) + stream.raw[at:], at, 2, "999"),
        "header-4GB": (
            struct.pack("<HI", MessageId.HEADER, 0xFFFFFFFF) + b"<ismrmrdHeader/>",
            0,
            0,
            "4294967295",
        ),
        "image-data-type-9": (
            prefix + image_id + _image_head(9, (4, 4, 1), 1) + bytes(8) + bytes(64),
            at,
            2,
            "9",
        ),
        "image-lying-matrix": (
            prefix + image_id + _image_head(5, (65535, 65535, 1), 1) + bytes(8) + bytes(999),
            at,
            2,
            "image pixels",
        ),
        "ndarray-ndim": (
            prefix + struct.pack("<HHHH", MessageId.NDARRAY, 5, 0, 65535) + bytes(64),
            at,
            2,
            "65535",
        ),
        "one-byte-id": (prefix + b"\x04", at, 2, "message id"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown-id",
        "header-4GB",
        "image-data-type-9",
        "image-lying-matrix",
        "ndarray-ndim",
        "one-byte-id",
    ],
)
def test_hostile_stream_gives_one_clear_line(
    stream: SmallStream, tmp_path: Path, case: str
) -> None:
    stdin, offset, index, word = _hostile_cases(stream)[case]
    line = assert_one_clear_line(run(stdin, tmp_path / "out.h5"), offset, index)
    assert word in line, line

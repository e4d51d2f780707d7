"""Bad MRD v2 input: one clear line, exit 1, nothing left in /dev/shm.

A truncated stream, a wrong or unknown schema, an unknown item tag, a length prefix past the
end of the stream or beyond any memory, through ``mrd_stream_recon`` (which allocates shared
memory once the header is read), ``convert``, ``info`` and ``stream_to_mrdhdf5``.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from parallel_recon.protocol.mrd2 import Mrd2StreamReader
from parallel_recon.protocol.mrd2.codec import uvarint_bytes
from parallel_recon.protocol.mrd2.writer import prologue_bytes
from tests.conftest import script

SHM = Path("/dev/shm")


def _v2(shared_data: Path) -> bytes:
    return (shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes()


def _first_item(raw: bytes) -> int:
    """Offset of the first item's block count (after the prologue and the header step)."""
    reader = Mrd2StreamReader(io.BytesIO(raw))
    step = reader.read_native()
    assert step is not None and step[0] == "header"
    return reader.offset


def _schema_of(text: str) -> bytes:
    raw = text.encode()
    return b"yardl" + (1).to_bytes(4, "little") + uvarint_bytes(len(raw)) + raw


def _cases(shared_data: Path) -> dict[str, tuple[bytes, str]]:
    raw = _v2(shared_data)
    item = _first_item(raw)
    acq_dims = raw.index(bytes([4, 128]), item)  # the first acquisition's data shape
    old_schema = prologue_bytes()[12:].decode().replace('"ImageArray"', '"ImageArrayX"')
    return {
        "truncated": (raw[: len(raw) // 2], "truncated MRD v2 stream: "),
        "no end mark": (raw[:-1], "expected the MRD v2 end-of-stream mark"),
        "unknown schema": (
            _schema_of(old_schema) + raw[len(prologue_bytes()) :],
            "this MRD v2 stream uses an unknown schema of protocol 'Mrd' (sha256 ",
        ),
        "not a schema": (
            _schema_of("{not json") + raw[len(prologue_bytes()) :],
            "uses a schema that is not yardl JSON",
        ),
        "format version": (
            b"yardl" + (2).to_bytes(4, "little") + raw[9:],
            "expected yardl binary format version 1 (MRD 2.1), found version 2",
        ),
        "unknown tag": (
            raw[: item + 1] + b"\x11" + raw[item + 2 :],
            "unknown MRD v2 stream item tag: expected one of 0 (Acquisition)",
        ),
        "samples past the end": (
            raw[:acq_dims] + uvarint_bytes(4) + uvarint_bytes(60000) + raw[acq_dims + 2 :],
            "truncated MRD v2 stream: ",
        ),
        "a 2 GB readout, cut": (  # read in growing pieces: costs what arrives
            raw[:acq_dims] + uvarint_bytes(4096) + uvarint_bytes(65535) + raw[acq_dims + 2 :],
            "truncated MRD v2 stream: ",
        ),
        "a readout beyond the size limit": (
            raw[:acq_dims] + uvarint_bytes(65535) + uvarint_bytes(65535) + raw[acq_dims + 2 :],
            "at most 17179869184 bytes",
        ),
        "samples beyond memory": (
            raw[:acq_dims] + uvarint_bytes(4) + uvarint_bytes(2**40) + raw[acq_dims + 2 :],
            "acquisition has 1099511627776 samples; MRD v1 holds at most 65535",
        ),
        "schema length beyond memory": (
            b"yardl" + (1).to_bytes(4, "little") + uvarint_bytes(2**62),
            "expected schema of at most 1048576 bytes, found a length prefix of",
        ),
    }


COMMANDS = {
    "recon": ["mrd_stream_recon", "--workers", "2"],
    "convert": ["parallel-recon", "convert", "-", "-", "--to", "ismrmrd"],
    "info": ["parallel-recon", "info", "-"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_v2_input_gets_one_line(shared_data: Path, command: str) -> None:
    prog, *args = COMMANDS[command]
    for case, (data, expected) in _cases(shared_data).items():
        proc = subprocess.Popen(
            [script(prog), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = proc.communicate(data, timeout=120)
        text = err.decode()
        lines = [line for line in text.splitlines() if line.strip()]
        if command == "info" and case == "no end mark":  # a warning in its report, as for v1
            assert proc.returncode == 0 and text == "", (case, text)
        elif command == "info":  # info prints what it read, then the error, and exits 1
            assert proc.returncode == 1, (case, text)
            assert any(expected in line for line in lines), (case, text)
        else:
            assert proc.returncode == 1, (case, text)
            assert len(lines) == 1 and "error: " in lines[0], (case, text)
            assert expected in lines[0], (case, text)
        assert "Traceback" not in text
        assert not list(SHM.glob(f"pr_{proc.pid}_*")), case


def test_to_hdf5_refuses_a_truncated_v2_stream(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    raw = _v2(shared_data)
    proc = subprocess.run(
        [script("stream_to_mrdhdf5"), str(out)],
        input=raw[: len(raw) // 2],
        capture_output=True,
        check=False,
    )
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert "truncated MRD v2 stream" in lines[0]

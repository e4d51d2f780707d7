"""Valid data is read correctly and read the same way by every command: short readouts at
every centre position, the phantom's header in a real C++ consumer, data after CLOSE.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli, script
from data_safety import one_error_line, stream_of
from reference_recon import LAST_IN_SLICE, Synthetic, header_message, reference_recon
from reference_recon import synthetic_header as reference_header
from test_cpp_recon import build_cpp
from test_send import ScriptedServer

from parallel_recon.protocol.messages import Header, Text

CONSUMER_SOURCE = REPO_ROOT / "tests" / "consumers" / "ismrmrd_consumer.cpp"
HDF5_INCLUDE = "/usr/include/hdf5/serial"
"""Where Debian's libhdf5-dev (a dependency of libismrmrd-dev) puts hdf5.h."""


# ------------------------------------------------------------------ 5. a real C++ consumer
@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C++ consumer compiled against Debian's libismrmrd-dev (installed by make deps)."""
    binary = tmp_path_factory.mktemp("consumer") / "ismrmrd_consumer"
    proc = subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{HDF5_INCLUDE}",
         str(CONSUMER_SOURCE), "-o", str(binary), "-lismrmrd"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"cannot build the ISMRMRD C++ consumer (make deps):\n{proc.stderr}"
    )
    return binary


def _consume(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _with_old_version(xml: str) -> str:
    """The header as the phantom used to write it: ``<version>1</version>`` first."""
    opening = re.search(r"<ismrmrdHeader[^>]*>", xml)
    assert opening is not None, xml
    return xml[: opening.end()] + "<version>1</version>" + xml[opening.end() :]


def test_phantom_header_reads_in_the_ismrmrd_cpp_library(consumer: Path, tmp_path: Path) -> None:
    """Case 5: the C++ library deserialises and re-serialises the phantom's header (file and
    stream) and reads every acquisition of the file through ISMRMRD::Dataset."""
    h5 = tmp_path / "raw.h5"
    run_cli("mrd_phantom", "-m", "32", "-c", "2", "-s", "2", "-C", "-o", str(h5))
    proc = _consume(consumer, "h5", str(h5), "dataset")
    assert proc.returncode == 0, proc.stderr
    with ismrmrd.Dataset(str(h5), "dataset", False) as dataset:
        count = dataset.number_of_acquisitions()
        acqs = [dataset.read_acquisition(i) for i in range(count)]
    samples = sum(a.data.size for a in acqs)
    energy = sum(float(np.sum(np.abs(a.data.astype(np.complex128)) ** 2)) for a in acqs)
    words = proc.stdout.split()
    assert words[:4] == ["encoded", "64", "32", "1"], proc.stdout
    assert int(words[5]) == count and int(words[7]) == samples, proc.stdout
    assert float(words[9]) == pytest.approx(energy, rel=1e-5)

    stream = tmp_path / "raw.bin"
    stream.write_bytes(run_cli("mrd_phantom", "-m", "32", "-c", "2", "-o", "-").stdout)
    proc = _consume(consumer, "stream", str(stream))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["encoded", "64", "32", "1"]


def test_the_old_phantom_header_fails_in_the_same_consumer(consumer: Path, tmp_path: Path) -> None:
    """The check can fail: the header with ``<version>1</version>`` is refused by the library."""
    xml = run_cli("mrd_phantom", "-m", "16", "-c", "1", "-o", "-").stdout
    current = next(m for m in _messages(xml) if isinstance(m, Header)).xml
    assert "<version>" not in current
    old = tmp_path / "old.bin"
    old.write_bytes(stream_of(Header(_with_old_version(current))))
    proc = _consume(consumer, "stream", str(old))
    assert proc.returncode == 1 and "version" in proc.stderr, proc.stderr
    fine = tmp_path / "new.bin"
    fine.write_bytes(stream_of(Header(current)))
    assert _consume(consumer, "stream", str(fine)).returncode == 0


def _messages(stream: bytes) -> list[object]:
    from parallel_recon.protocol import StreamReader

    return list(StreamReader(io.BytesIO(stream)))


# ------------------------------------------------------------------ 6. data after CLOSE
TRAILING = b"\x04\x00" + b"junk after the end"


@pytest.fixture(scope="module")
def raw_stream() -> bytes:
    return run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", "-").stdout


def _warning(stderr: bytes, offset: int) -> None:
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "warning" in line]
    assert len(lines) == 1, text
    assert "after the CLOSE message" in lines[0] and f"byte offset {offset}" in lines[0], text


def test_data_after_close_recon_and_to_hdf5(raw_stream: bytes, tmp_path: Path) -> None:
    """Case 6: every command stops at CLOSE, warns about what follows, and succeeds."""
    source = tmp_path / "raw.bin"
    source.write_bytes(raw_stream + TRAILING)
    clean = run_cli("mrd_stream_recon", input=raw_stream)
    assert clean.stderr == b""
    from_file = run_cli("mrd_stream_recon", "-i", str(source))
    assert from_file.stdout == clean.stdout
    _warning(from_file.stderr, len(raw_stream))
    with source.open("rb") as stdin:
        redirected = subprocess.run(
            [script("mrd_stream_recon")], stdin=stdin, capture_output=True, timeout=120
        )
    assert redirected.returncode == 0 and redirected.stdout == clean.stdout
    _warning(redirected.stderr, len(raw_stream))

    images = clean.stdout
    stored = tmp_path / "images.h5"
    proc = run_cli("stream_to_mrdhdf5", str(stored), input=images + TRAILING)
    _warning(proc.stderr, len(images))
    reference = tmp_path / "reference.h5"
    run_cli("stream_to_mrdhdf5", str(reference), input=images)
    assert run_cli("mrdhdf5_to_stream", str(stored), "-s", "image_1").stdout == (
        run_cli("mrdhdf5_to_stream", str(reference), "-s", "image_1").stdout
    )


def test_data_after_close_cpp_recon(raw_stream: bytes, tmp_path: Path) -> None:
    """The standalone C++ recon follows the same rule, with the same words."""
    binary = str(build_cpp())
    clean = subprocess.run([binary], input=raw_stream, capture_output=True, timeout=60)
    assert clean.returncode == 0 and clean.stderr == b""
    source = tmp_path / "raw.bin"
    source.write_bytes(raw_stream + TRAILING)
    with source.open("rb") as stdin:
        proc = subprocess.run([binary], stdin=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == clean.stdout
    _warning(proc.stderr, len(raw_stream))
    python = run_cli("mrd_stream_recon", "-i", str(source)).stderr.decode()
    assert proc.stderr.decode().partition(":")[2] == python.partition(":")[2]


def test_data_after_close_info_and_view(raw_stream: bytes, tmp_path: Path) -> None:
    source = tmp_path / "raw.bin"
    source.write_bytes(raw_stream + TRAILING)
    proc = run_cli("parallel-recon", "info", "--json", str(source))
    result = json.loads(proc.stdout)
    assert result["error"] is None
    assert any("after the CLOSE message" in w for w in result["warnings"]), result["warnings"]
    assert result["sections"][0]["stream_bytes"] == len(raw_stream)
    text = run_cli("parallel-recon", "info", "-", input=raw_stream + TRAILING).stdout.decode()
    assert f"after the CLOSE message (at byte offset {len(raw_stream)}" in text
    proc = run_cli("parallel-recon", "view", str(source), "-o", str(tmp_path / "k.png"))
    _warning(proc.stderr, len(raw_stream))


def test_data_after_close_from_a_server_is_not_forwarded() -> None:
    reply = stream_of(Header("<ismrmrdHeader/>"), Text("done"))

    def script_(conn: socket.socket) -> None:
        while conn.recv(1 << 16):
            pass
        conn.sendall(reply + TRAILING)

    server = ScriptedServer(script_)
    try:
        proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=b"request")
    finally:
        server.close()
    assert proc.stdout == reply
    _warning(proc.stderr, len(reply))


# ------------------------------------------------------------------ 7. short readouts
ENCODED_X = 64
LINES = 8
SHORT_LENGTHS = (33, 48, 63)


def _placements() -> list[tuple[int, int]]:
    """(samples, centre_sample) of every readout that fits: all centre positions of each
    short length, and one full readout."""
    half = ENCODED_X // 2
    cases = [(n, c) for n in SHORT_LENGTHS for c in range(n - half, half + 1)]
    return [*cases, (ENCODED_X, half)]


def _short_readout_stream(placements: list[tuple[int, int]], coils: int = 2) -> bytes:
    """One slice per placement, written by ismrmrd-python; random complex samples."""
    rng = np.random.default_rng(7)
    spec = Synthetic(encoded=(ENCODED_X, LINES, 1), recon=(32, LINES, 1), slices=len(placements))
    sink = io.BytesIO()
    sink.write(header_message(reference_header(spec)))
    with ismrmrd.ProtocolSerializer(sink) as writer:
        for slc, (samples, centre) in enumerate(placements):
            for line in range(LINES):
                data = rng.standard_normal((coils, samples)) + 1j * rng.standard_normal(
                    (coils, samples)
                )
                acq = ismrmrd.Acquisition.from_array(data.astype(np.complex64))
                acq.center_sample = centre
                acq.idx.kspace_encode_step_1 = line
                acq.idx.slice = slc
                acq.read_dir[:] = (1.0, 0.0, 0.0)
                acq.phase_dir[:] = (0.0, 1.0, 0.0)
                acq.slice_dir[:] = (0.0, 0.0, 1.0)
                if line == LINES - 1:
                    acq.setFlag(LAST_IN_SLICE)
                writer.serialize(acq)
    return sink.getvalue()


def test_short_readouts_at_every_centre_position(tmp_path: Path) -> None:
    """Case 7: a readout shorter than the grid lands where its centre sample says, also when
    it starts at k0 index 0; images read back from ``stream_to_mrdhdf5``'s file with
    ismrmrd-python equal the numpy reference (which zero-fills: partial Fourier recovery off)."""
    placements = _placements()
    stream = _short_readout_stream(placements)
    zero_filled = ("--recon-option", "partial_fourier=zero")
    images = run_cli("mrd_stream_recon", "--workers", "2", *zero_filled, input=stream).stdout
    stored = tmp_path / "images.h5"
    run_cli("stream_to_mrdhdf5", str(stored), input=images)
    expected = reference_recon(stream)
    with ismrmrd.Dataset(str(stored), "dataset", False) as dataset:
        found = [dataset.read_image("image_1", i) for i in range(len(placements))]
    assert len(expected) == len(found) == len(placements)
    for image in found:
        key = (0, image.slice, image.contrast, image.phase, image.set, image.repetition)
        reference = expected[key][0]
        error = np.linalg.norm(image.data - reference) / np.linalg.norm(reference)
        assert error < 1e-5, (placements[image.slice], error)


@pytest.mark.parametrize(("samples", "centre"), [(48, 33), (48, 15), (65, 32)])
def test_short_readout_that_does_not_fit_is_one_clear_error(samples: int, centre: int) -> None:
    stream = _short_readout_stream([(samples, centre)])
    line = one_error_line(run_cli("mrd_stream_recon", input=stream, check=False))
    assert f"center_sample {centre}" in line or f"readout of {samples} samples" in line, line

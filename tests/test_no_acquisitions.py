"""A stream without acquisitions is one clear error everywhere the engine runs.

An image stream given to the recon (a natural first try: ``mrd_stream_recon < images.bin``)
used to exit 0 with no images and nothing on stderr.  The engine now refuses it with one line,
and the command line, ``serve``, ``batch`` and the Python API all report that line.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli, script

import parallel_recon as pr
from parallel_recon.errors import InputFileError
from parallel_recon.phantom import PhantomSpec
from parallel_recon.phantom.header import header_xml
from parallel_recon.protocol import Header, StreamWriter

IMAGE_STREAM_ERROR = "no acquisitions: this is an image stream; use view/export/to-hdf5"
HEADER_ONLY_ERROR = (
    "no acquisitions: the stream has a header but no raw data (ACQUISITION messages) to reconstruct"
)
SPEC = PhantomSpec(matrix=16, coils=2)


@pytest.fixture(scope="module")
def image_stream() -> bytes:
    return run_cli("mrd_stream_recon", "--workers", "1", input=phantom_bytes(SPEC)).stdout


def _header_only() -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(Header(header_xml(SPEC)))
    return sink.getvalue()


@pytest.mark.parametrize("args", [[], ["-v", "--profile"]])
def test_recon_of_an_image_stream_is_one_line_and_exit_1(
    image_stream: bytes, args: list[str]
) -> None:
    proc = run_cli("mrd_stream_recon", *args, input=image_stream, check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"mrd_stream_recon: error: {IMAGE_STREAM_ERROR}\n"
    assert proc.stdout == b""


def test_recon_of_an_image_stream_creates_no_output_file(
    image_stream: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "again.bin"
    source = tmp_path / "images.bin"
    source.write_bytes(image_stream)
    proc = run_cli("mrd_stream_recon", "-i", str(source), "-o", str(out), check=False)
    assert proc.returncode == 1 and IMAGE_STREAM_ERROR in proc.stderr.decode()
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["images.bin"]


def test_recon_of_a_header_alone_is_an_error_too() -> None:
    proc = run_cli("mrd_stream_recon", input=_header_only(), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"mrd_stream_recon: error: {HEADER_ONLY_ERROR}\n"
    assert proc.stdout == b""


def test_api_raises_the_same_error(image_stream: bytes, tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as raised:
        pr.reconstruct(image_stream, workers=1)
    assert str(raised.value) == IMAGE_STREAM_ERROR
    path = tmp_path / "images.bin"
    path.write_bytes(image_stream)
    with pytest.raises(InputFileError) as raised:
        pr.reconstruct(path, workers=1)
    assert str(raised.value) == IMAGE_STREAM_ERROR


def test_batch_fails_the_image_stream_and_the_header_alone(
    image_stream: bytes, tmp_path: Path
) -> None:
    (tmp_path / "images.bin").write_bytes(image_stream)
    (tmp_path / "header.bin").write_bytes(_header_only())
    proc = run_cli(
        "parallel-recon", "batch", str(tmp_path / "images.bin"), str(tmp_path / "header.bin"),
        "-o", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "0 ok, 2 failed" in err
    assert f"images.bin: {IMAGE_STREAM_ERROR}" in err
    assert f"header.bin: {HEADER_ONLY_ERROR}" in err


class _Server:
    """``parallel-recon serve --port 0`` with its stderr lines collected."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [script("parallel-recon"), "serve", "--port", "0", "--workers", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.logged = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.listening.set()
            if " in=" in line:
                self.logged.set()

    @property
    def address(self) -> str:
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", self.lines[0])
        assert match, self.lines
        return match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    try:
        assert running.listening.wait(30), running.lines
        yield running
    finally:
        running.stop()


def test_serve_reports_the_error_to_the_client_and_in_its_log(
    server: _Server, image_stream: bytes
) -> None:
    proc = run_cli("parallel-recon", "send", server.address, input=image_stream, check=False)
    assert proc.returncode == 1
    assert IMAGE_STREAM_ERROR in proc.stderr.decode()
    assert server.logged.wait(30), server.lines
    (line,) = [line for line in server.lines if " in=" in line]
    assert "images=0" in line and line.endswith(IMAGE_STREAM_ERROR), line
    assert ": ok" not in line

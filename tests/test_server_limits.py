"""``parallel-recon serve``: mistakes caught at start-up, options for the children, idle
clients that cannot starve it, and one consistent log line for every connection.

Servers run as real processes on port 0 with short ``--idle-timeout`` values so that the
idle cases take seconds; the helper class is the one of ``test_server.py``.
"""

from __future__ import annotations

import io
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, script
from test_server import ServerProcess

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Image, StreamReader, StreamWriter

SERVE = ("parallel-recon", "serve", "--port", "0")


@pytest.fixture(scope="module")
def stream() -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in iter_messages(PhantomSpec(matrix=16, coils=2, repetitions=2)):
            writer.write(msg)
    return sink.getvalue()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _header_end(stream: bytes) -> int:
    return 6 + int.from_bytes(stream[2:6], "little")


def images_of(data: bytes) -> list[Image]:
    return [m for m in StreamReader(io.BytesIO(data)) if isinstance(m, Image)]


def lines_by_peer(server: ServerProcess) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in server.connection_lines():
        found.setdefault(line.split()[1], []).append(line)
    return found


# ----------------------------------------------------------------- 2. and 6. start-up
@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--port", "70000"], 2, "expected a port number 0..65535, found 70000"),
        (["--port", "-1"], 2, "expected a port number 0..65535"),
        (["--recon", "nosuch.py"], 2, "--recon 'nosuch.py': expected a Python file"),
        (["--recon-option", "coil=channels"], 2, "known options: prewhiten"),
        (["--config-map", "fast=nosuch"], 2, "(from --config-map fast=nosuch)"),
        (["--idle-timeout", "-3"], 2, "expected a number of seconds >= 0"),
    ],
    ids=["port-too-large", "port-negative", "missing-kernel", "unknown-option", "bad-map",
         "negative-timeout"],
)  # fmt: skip
def test_mistakes_stop_the_server_at_start_up(args: list[str], code: int, words: str) -> None:
    command = [*SERVE[:2], *args] if args[0] == "--port" else [*SERVE, *args]
    proc = run_cli(*command, check=False, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == code and len(err.strip().splitlines()) == 1, err
    assert words in err and "Traceback" not in err and "listening" not in err


# ----------------------------------------------------------------- 13. options, outcomes
def test_image_type_and_recon_options_reach_every_connection(
    servers: list[ServerProcess], stream: bytes
) -> None:
    server = ServerProcess(
        "--workers", "1", "--image-type", "complex", "--recon-option", "coils=channels"
    )
    servers.append(server)
    reply = run_cli("parallel-recon", "send", server.address, input=stream).stdout
    images = images_of(reply)
    assert len(images) == 2
    assert all(i.data.dtype == np.complex64 and i.data.shape[0] == 2 for i in images)


def test_early_hang_up_and_reset_during_shutdown_are_logged(
    servers: list[ServerProcess], stream: bytes
) -> None:
    server = ServerProcess("--workers", "1")
    servers.append(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as early:
        early.sendall(stream[: len(stream) // 2])
        early.shutdown(socket.SHUT_WR)
        while early.recv(65536):
            pass
    (line,) = server.wait_for_connections(1)
    assert line.endswith(f"client disconnected mid-stream: no CLOSE after {len(stream) // 2} bytes")
    reset = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    reset.sendall(stream[: len(stream) // 2])
    deadline = time.monotonic() + 30
    while not server.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()
    assert server.proc.wait(timeout=30) == 0
    lines = server.connection_lines()
    assert len(lines) == 2, server.lines
    assert "client disconnected mid-stream" in lines[1], lines[1]  # reset or end of file
    assert server.lines[-1] == "serve: stopped"


# ----------------------------------------------------------------- 17. idle clients
def test_idle_clients_cannot_starve_the_server(servers: list[ServerProcess], stream: bytes) -> None:
    server = ServerProcess("--workers", "1", "--max-connections", "2", "--idle-timeout", "2")
    servers.append(server)
    address = ("127.0.0.1", server.port)
    silent = [socket.create_connection(address, timeout=30) for _ in range(8)]
    stalled = [socket.create_connection(address, timeout=30) for _ in range(2)]
    for sock in stalled:  # take both slots, then stop sending
        sock.sendall(stream[: _header_end(stream) + 1000])
    time.sleep(0.5)
    client = subprocess.run(
        [script("parallel-recon"), "send", server.address],
        input=stream,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert client.returncode == 0, client.stderr.decode()
    assert len(images_of(client.stdout)) == 2
    lines = server.wait_for_connections(11)
    assert len(lines) == 11, server.lines
    for sock in silent + stalled:
        sock.close()
    by_peer = lines_by_peer(server)
    assert all(len(found) == 1 for found in by_peer.values()), by_peer  # one line each
    idle = [line for line in lines if ": idle: no data from the client for 2 s" in line]
    assert sum("before its header" in line for line in idle) == 8
    assert sum("in the middle of its stream" in line for line in idle) == 2
    (ok,) = [line for line in lines if line.endswith(": ok")]
    queued = re.search(r" queued=([\d.]+) s recon=([\d.]+) s: ok$", ok)
    assert queued, ok
    assert float(queued.group(1)) > 0.5  # it waited for a stalled client's slot
    assert server.proc.poll() is None


SLOW_KERNEL = """
import time
from parallel_recon.workers.cartesian import images_from_coils, to_image_space


def reconstruct(kspace, context):
    time.sleep(2.5)
    return images_from_coils(to_image_space(kspace, context.space), context)
"""


def test_a_client_that_waits_quietly_after_close_gets_its_images(
    servers: list[ServerProcess], stream: bytes, tmp_path: Path
) -> None:
    kernel = tmp_path / "slow.py"
    kernel.write_text(SLOW_KERNEL)
    server = ServerProcess("--workers", "1", "--idle-timeout", "1", "--recon", str(kernel))
    servers.append(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(stream)  # all of it, CLOSE included, and no half-close: like socat
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert len(images_of(reply)) == 2
    (line,) = server.wait_for_connections(1)
    assert line.endswith(": ok"), line

"""``parallel-recon serve``: mistakes caught at start-up, options for the children, idle
clients that cannot starve it, and one consistent log line for every connection.

Servers run as real processes on port 0 with short ``--idle-timeout`` values so that the
idle cases take seconds; the helper class is the one of ``test_server.py``.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, script
from server_helpers import ServerProcess, connect, read_to_end, reset, wait_until

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Image, StreamReader, StreamWriter, Text

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
        (["--memory-limit", "lots"], 2, "--memory-limit 'lots': expected a number with an"),
        (["--max-per-address", "0"], 2, "expected a positive integer, found 0"),
    ],
    ids=["port-too-large", "port-negative", "missing-kernel", "unknown-option", "bad-map",
         "negative-timeout", "bad-memory-limit", "no-connections-per-address"],
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
    half = len(stream) // 2
    with connect(server.port) as early:  # half a stream, then its end: the reason comes back
        early.sendall(stream[:half])
        early.shutdown(socket.SHUT_WR)
        reply = read_to_end(early)
    (line,) = server.wait_for_connections(1)
    (text,) = [
        m for m in StreamReader(io.BytesIO(reply), require_close=False) if isinstance(m, Text)
    ]
    assert text.text.startswith("error: reconstruction exited with status 1: mrd_stream_recon: ")
    assert "truncated ACQUISITION message" in text.text
    assert f" in={half} B " in line and " images=0 " in line, line
    assert line.endswith(f": {text.text}"), line
    reset_client = connect(server.port)
    reset_client.sendall(stream[:half])
    wait_until(lambda: len(server.recons()) == 1, "the second client's recon")
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for(lambda lines: any("stopping:" in x for x in lines), "'stopping:'")
    reset(reset_client)
    assert server.proc.wait(timeout=60) == 0
    lines = server.connection_lines()
    assert len(lines) == 2, server.lines
    assert lines[1].endswith(
        f": client disconnected mid-stream (connection reset): no CLOSE after {half} bytes"
    ), lines[1]
    assert server.lines[-1] == "serve: stopped"


# ----------------------------------------------------------------- 17. idle clients
def test_idle_clients_cannot_starve_the_server(servers: list[ServerProcess], stream: bytes) -> None:
    server = ServerProcess("--workers", "1", "--max-connections", "2", "--idle-timeout", "2")
    servers.append(server)
    silent = [connect(server.port) for _ in range(8)]
    stalled = [connect(server.port) for _ in range(2)]
    for sock in stalled:  # take both slots (header and first acquisition), then stop sending
        sock.sendall(stream[: _header_end(stream) + 1000])
    wait_until(lambda: len(server.recons()) == 2, "both slots taken")
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
    early = [
        x for x in lines if x.endswith(": idle: no complete header within 2 s (--idle-timeout)")
    ]
    assert len(early) == 8 and all(" pid=" not in x for x in early)
    stopped = [
        index
        for index, x in enumerate(lines)
        if x.endswith(": idle: no data from the client for 2 s in the middle of its stream "
                      "(--idle-timeout)")
    ]  # fmt: skip
    assert len(stopped) == 2, lines
    (ok,) = [index for index, x in enumerate(lines) if x.endswith(": ok")]
    assert ok > min(stopped)  # it got a slot only when a stalled client had been closed
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

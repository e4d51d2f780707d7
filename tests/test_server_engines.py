"""serve's ready engines: connections run in processes forked before they arrived, and no
process or shared memory outlives the server, whatever is killed.

The engines are found by their process names (``pr-forkserver``, ``pr-ready`` while they
wait, ``pr-recon`` once they took a connection) and by the pids the server logs; every test
waits for log lines and process states, never for a fixed time.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import run_cli
from server_helpers import (
    FORK_SERVER,
    READY_ENGINE,
    ServerProcess,
    connect,
    exchange,
    read_to_end,
    reset,
    wait_until,
)

from parallel_recon.engine.ring import SEGMENT_PREFIX
from parallel_recon.phantom import PhantomSpec
from tests.accelerated_helpers import phantom_bytes

SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def stream() -> bytes:
    return phantom_bytes(PhantomSpec(matrix=32, coils=4, slices=2))


@pytest.fixture(scope="module")
def local_output(stream: bytes) -> bytes:
    return run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess("--workers", "1", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _ready_pids(server: ServerProcess) -> set[int]:
    line = server.wait_for(
        lambda lines: next((x for x in lines if "ready engines (pids" in x), ""),
        "the ready engines line",
    )
    match = re.search(r"(\d+) ready engines \(pids ([\d, ]+)\)", line)
    assert match, line
    pids = {int(p) for p in match.group(2).split(", ")}
    assert len(pids) == int(match.group(1))
    return pids


def _waiting_engines(server: ServerProcess) -> set[int]:
    try:
        engines = server.fork_server().children()
    except (psutil.NoSuchProcess, ValueError):
        return set()
    found = set()
    for engine in engines:
        try:
            if engine.name() == READY_ENGINE:
                found.add(engine.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _tree(server: ServerProcess) -> list[psutil.Process]:
    return [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(True)]


def _segments_of(pids: set[int]) -> set[str]:
    names = set(os.listdir(SHM)) if SHM.is_dir() else set()
    return {n for n in names for pid in pids if n.startswith(f"{SEGMENT_PREFIX}{pid}_")}


def _gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def test_a_connection_runs_in_an_engine_forked_before_it_arrived(
    serve, stream: bytes, local_output: bytes
) -> None:
    server = serve("--ready-engines", "2")
    ready = _ready_pids(server)
    assert _waiting_engines(server) == ready
    assert exchange(server.port, stream) == local_output
    (line,) = server.wait_for_connections(1)
    assert line.endswith(": ok"), line
    pid = int(re.search(r" pid=(\d+) ", line).group(1))  # type: ignore[union-attr]
    assert pid in ready
    wait_until(lambda: len(_waiting_engines(server)) == 2, "a replacement engine")
    assert pid not in _waiting_engines(server)
    assert exchange(server.port, stream) == local_output  # the replacement serves too


def test_a_killed_ready_engine_is_replaced_and_sigterm_leaves_nothing(
    serve, stream: bytes, local_output: bytes
) -> None:
    server = serve("--ready-engines", "2")
    ready = _ready_pids(server)
    victim = min(ready)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(_waiting_engines(server)) == 2 and victim not in _waiting_engines(server),
        "the killed engine's replacement",
    )
    assert exchange(server.port, stream) == local_output
    (line,) = server.wait_for_connections(1)
    assert line.endswith(": ok"), line
    used = int(re.search(r" pid=(\d+) ", line).group(1))  # type: ignore[union-attr]
    tree = _tree(server)
    assert {p.name() for p in tree[1:]} >= {FORK_SERVER, READY_ENGINE}
    assert server.stop() == 0
    wait_until(lambda: _gone(tree), "every process of the server to end")
    assert not _segments_of({used, *ready})


def test_a_killed_running_engine_fails_only_its_connection(
    serve, stream: bytes, local_output: bytes
) -> None:
    server = serve("--ready-engines", "1")
    _ready_pids(server)
    with connect(server.port) as sock:
        sock.sendall(stream[: len(stream) // 2])
        wait_until(lambda: len(server.recons()) == 1, "the connection's engine")
        (engine,) = server.recons()
        wait_until(lambda: len(engine.children()) >= 3, "the engine's reader, worker and writer")
        family = [engine, *engine.children(recursive=True)]
        engine.kill()
        reply = read_to_end(sock)
    line = server.wait_for_connections(1)[0]
    assert f" pid={engine.pid} " in line
    assert "reconstruction exited with status -9" in line, line
    assert b"reconstruction exited with status -9" in reply
    wait_until(lambda: _gone(family), "the killed engine's reader, workers and writer")
    wait_until(lambda: not _segments_of({engine.pid}), "no shared memory of the engine")
    assert exchange(server.port, stream) == local_output  # the server goes on


def test_a_client_gone_before_its_slot_takes_no_engine(serve, stream: bytes) -> None:
    """With the one slot held, a client that sends its opening and resets while it waits
    never gets an engine: the waiting engines stay the same ones."""
    server = serve("--ready-engines", "2", "--max-connections", "1")
    _ready_pids(server)
    holder = connect(server.port)
    holder.sendall(stream[: len(stream) // 2])
    wait_until(lambda: len(server.recons()) == 1, "the holder's engine")
    wait_until(lambda: len(_waiting_engines(server)) == 2, "the holder's replacement")
    waiting = _waiting_engines(server)
    gone = connect(server.port)
    port = gone.getsockname()[1]
    gone.sendall(stream[: len(stream) // 2])  # its opening earns it a place in the queue
    reset(gone)
    line = server.line_of(port)
    assert _waiting_engines(server) == waiting
    reset(holder)
    assert " pid=" not in line, line
    assert line.endswith(": client disconnected before its reconstruction started"), line


def test_serve_killed_takes_its_fork_server_and_engines(serve) -> None:
    server = serve("--ready-engines", "2")
    ready = _ready_pids(server)
    tree = _tree(server)[1:]
    assert {p.pid for p in tree} >= ready
    server.proc.kill()
    server.proc.wait(timeout=30)
    wait_until(lambda: _gone(tree), "the fork server and its engines to die with serve")


def test_ready_engines_zero_starts_each_recon_cold(
    serve, stream: bytes, local_output: bytes
) -> None:
    server = serve("--ready-engines", "0")
    assert not any("ready engines" in line for line in server.lines)
    assert all(p.name() != FORK_SERVER for p in psutil.Process(server.proc.pid).children())
    assert exchange(server.port, stream) == local_output

"""``parallel-recon serve`` against clients that try to exhaust it.

A few kilobytes must not take the server's memory (messages it only forwards are never held
whole; what precedes the first acquisition is bounded), its shared-memory budget is one for
all connections, clients that do not earn a reconstruction slot (two bytes, a trickle, a
reset, a crowd of silent sockets from one address) do not delay a well-behaved client, and
every refusal reaches the client as one line.

Servers are real processes on 127.0.0.1; other client addresses are other loopback
addresses (127.0.0.2).  Memory is the server's exact high-water mark (``VmHWM``); waits are
on the server's log lines and on its process tree; the only timings are the delay bound the
server promises, measured against a well-behaved client's time on the same server.
"""

from __future__ import annotations

import io
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from hostile_streams import MiB, encode, ndarray_claim, noise_claim, phantom_messages, with_zeros
from server_helpers import (
    ServerProcess,
    connect,
    exchange,
    read_to_end,
    reset,
    wait_until,
)

from parallel_recon.protocol import Image, Message, MessageId, StreamReader

GROWTH = 64 * MiB
"""What the issue allows the server to grow by under each attack."""
DELAY = 1.0
"""How much later than on a quiet server a well-behaved client may get its images."""


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return phantom_messages(repetitions=2)


@pytest.fixture(scope="module")
def small(messages: list[Message]) -> bytes:
    return encode(messages)


@pytest.fixture(scope="module")
def golden_stream(golden: Path) -> bytes:
    return (golden / "phantom_m128_c8_noise.stream").read_bytes()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _serve(servers: list[ServerProcess], *args: str) -> ServerProcess:
    server = ServerProcess("--workers", "1", *args)
    servers.append(server)
    return server


def _send(address: str, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return run_cli("parallel-recon", "send", address, *args, input=data, check=False)


def _one_line(proc: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("parallel-recon send: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def _images(data: bytes) -> list[Image]:
    return [m for m in StreamReader(io.BytesIO(data)) if isinstance(m, Image)]


def _header_end(stream: bytes) -> int:
    return 6 + int.from_bytes(stream[2:6], "little")


def _first_acquisition_end(stream: bytes) -> int:
    """Where the first acquisition's samples start: what the server must have before it
    gives a connection a reconstruction slot."""
    end = _header_end(stream)
    assert int.from_bytes(stream[end : end + 2], "little") == MessageId.ACQUISITION
    return end + 2 + 340


def _quiet_time(server: ServerProcess, stream: bytes) -> float:
    """The longer of two well-behaved exchanges on this server, before any attack."""
    times = []
    for _ in range(2):
        start = time.monotonic()
        proc = _send(server.address, data=stream)
        times.append(time.monotonic() - start)
        assert proc.returncode == 0, proc.stderr.decode()
    return max(times)


# ------------------------------------------------------ memory held per message
def test_texts_before_the_header_are_refused_unread(
    servers: list[ServerProcess], small: bytes, tmp_path: Path
) -> None:
    server = _serve(servers)
    text = struct.pack("<HI", MessageId.TEXT, 32 * MiB) + bytes(32 * MiB)
    attack = tmp_path / "texts.stream"
    with attack.open("wb") as out:
        for _ in range(6):
            out.write(text)
        out.write(small)
    _attack(server, small, attack, "TEXT message of 33554432 bytes", "before the first acquisition")
    line = server.wait_for_connections(2)[1]
    assert " pid=" not in line and ": error: " in line  # refused before any recon started


def _attack(server: ServerProcess, warm_up: bytes, attack: Path, *needles: str) -> None:
    """Send ``attack`` after a normal exchange (so the baseline has every import done): one
    line for the client, and the server grows by less than :data:`GROWTH`."""
    assert _send(server.address, data=warm_up).returncode == 0
    before = server.peak_rss()
    proc = _send(server.address, "-i", str(attack))
    _one_line(proc, *needles)
    assert server.peak_rss() - before < GROWTH


def test_a_noise_line_wider_than_the_header_is_not_held(
    servers: list[ServerProcess], messages: list[Message], small: bytes, tmp_path: Path
) -> None:
    head = noise_claim(messages, 65535, 30000)
    attack = with_zeros(tmp_path / "noise.stream", head, 128 * MiB)
    _attack(_serve(servers), small, attack, "65535 active channels")


def test_an_ndarray_of_a_billion_values_is_not_held(
    servers: list[ServerProcess], messages: list[Message], small: bytes, tmp_path: Path
) -> None:
    attack = with_zeros(tmp_path / "ndarray.stream", ndarray_claim(messages, 10**9), 128 * MiB)
    _attack(_serve(servers), small, attack, "truncated NDARRAY message: expected 8000000000 bytes")


def test_a_stream_that_breaks_mid_message_gets_its_reason(
    servers: list[ServerProcess], small: bytes
) -> None:
    server = _serve(servers)
    cut = _first_acquisition_end(small) + 100  # inside the first acquisition's samples
    proc = _send(server.address, data=small[:cut])
    _one_line(proc, "server said: error: ", "truncated ACQUISITION message")
    (line,) = server.wait_for_connections(1)
    assert "truncated ACQUISITION message" in line and " pid=" in line


# ------------------------------------------------------ one memory budget
def test_one_memory_budget_for_all_connections(
    servers: list[ServerProcess], golden_stream: bytes
) -> None:
    """The golden stream needs about 11 MiB (5 k-space slots of 2 MiB and the image slots):
    with a 16 MiB budget a second connection waits until the first one is over."""
    expected = run_cli("mrd_stream_recon", "--workers", "1", input=golden_stream).stdout
    server = _serve(servers, "--memory-limit", "16M")
    assert server.lines[0].endswith(
        "(--workers 1 per connection, 16.0 MiB of shared memory for all connections)"
    ), server.lines[0]
    holder = connect(server.port)
    holder.sendall(golden_stream[: len(golden_stream) // 2])
    wait_until(lambda: len(server.recons()) == 1, "the first connection's recon")
    second = connect(server.port)
    port = second.getsockname()[1]
    replies: list[bytes] = []

    def exchange_second() -> None:
        second.sendall(golden_stream)
        second.shutdown(socket.SHUT_WR)
        replies.append(read_to_end(second))

    thread = threading.Thread(target=exchange_second)
    thread.start()
    waiting = server.wait_for(
        lambda lines: next(
            (x for x in lines if x.startswith(f"serve: 127.0.0.1:{port} waiting for memory")), ""
        ),
        "the second connection waiting for memory",
    )
    assert "MiB of shared memory" in waiting and "of the 16.0 MiB budget" in waiting, waiting
    assert len(server.recons()) == 1  # the second has no recon while it waits
    reset(holder)
    thread.join(timeout=120)
    second.close()
    assert replies == [expected]
    assert server.line_of(port).endswith(": ok")


def test_a_dataset_larger_than_the_whole_budget_is_refused_in_one_line(
    servers: list[ServerProcess], golden_stream: bytes
) -> None:
    server = _serve(servers, "--memory-limit", "4M")
    proc = _send(server.address, data=golden_stream)
    err = _one_line(proc, "not enough memory for this dataset on this server")
    assert "limit" not in err and "4.0 MiB" not in err  # the server's settings stay private
    (line,) = server.wait_for_connections(1)
    assert " pid=" not in line and "raise serve's --memory-limit" in line, line


REPLY_FILTER = """
import sys
from parallel_recon.protocol import Close, Header, StreamReader, StreamWriter, Text

for message in StreamReader(sys.stdin.buffer):
    pass
with StreamWriter(sys.stdout.buffer) as writer:
    writer.write(Header("<ismrmrdHeader/>"))
    for _ in range(64):
        writer.write(Text("x" * (1 << 20)))
"""


def test_a_client_that_stops_reading_its_reply_is_dropped(
    servers: list[ServerProcess], small: bytes, tmp_path: Path
) -> None:
    """64 MiB of reply, far more than the socket buffers hold, to a client that sent its
    whole stream and then reads nothing."""
    script = tmp_path / "big_reply.py"
    script.write_text(REPLY_FILTER)
    server = ServerProcess(
        "--idle-timeout", "1", "--command", f"{sys.executable} {script}", cwd=tmp_path
    )
    servers.append(server)
    with connect(server.port) as client:
        client.sendall(small)
        line = server.line_of(client.getsockname()[1], timeout=30)
        assert line.endswith(
            ": client stopped taking its reply: nothing taken for 1 s (--idle-timeout)"
        ), line
        wait_until(lambda: server.recons() == [], "the filter to be stopped")


# ------------------------------------------------------ slots are earned
def _feed(sock: socket.socket, data: bytes, pause: float, step: int, stop: threading.Event) -> None:
    """Send ``data`` ``step`` bytes at a time with ``pause`` between, until ``stop``."""
    for start in range(0, len(data), step):
        if stop.wait(pause):
            return
        try:
            sock.sendall(data[start : start + step])
        except OSError:
            return


def _trickle(port: int, data: bytes, stop: threading.Event) -> None:
    """A client from 127.0.0.2 that sends one byte every 50 ms."""
    with connect(port, "127.0.0.2") as sock:
        _feed(sock, data, 0.05, 1, stop)
        stop.wait(60)


def test_two_byte_trickling_and_reset_clients_do_not_delay_a_good_one(
    servers: list[ServerProcess], small: bytes
) -> None:
    server = _serve(servers, "--max-connections", "1", "--idle-timeout", "30")
    quiet = _quiet_time(server, small)
    stop = threading.Event()
    two_bytes = [connect(server.port, "127.0.0.2") for _ in range(2)]
    for sock in two_bytes:
        sock.sendall(b"\x03\x00")
    tricklers = [
        threading.Thread(target=_trickle, args=(server.port, small, stop)) for _ in range(2)
    ]
    for thread in tricklers:
        thread.start()
    for _ in range(20):  # a complete header and more, then a reset
        sock = connect(server.port, "127.0.0.2")
        sock.sendall(small[: _first_acquisition_end(small) + 100])
        reset(sock)
    try:
        start = time.monotonic()
        proc = _send(server.address, data=small)
        took = time.monotonic() - start
    finally:
        stop.set()
        for thread in tricklers:
            thread.join(timeout=60)
        for sock in two_bytes:
            sock.close()
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(_images(proc.stdout)) == 2
    assert took <= quiet + DELAY, (took, quiet)


def test_no_recon_for_a_client_that_is_gone_before_its_slot(
    servers: list[ServerProcess], small: bytes
) -> None:
    server = _serve(servers, "--max-connections", "1")
    holder = connect(server.port)
    holder.sendall(small[: len(small) // 2])
    wait_until(lambda: len(server.recons()) == 1, "the holder's recon")
    gone = connect(server.port)
    port = gone.getsockname()[1]
    gone.sendall(small[: _first_acquisition_end(small) + 100])  # a slot is earned, then
    reset(gone)  # it leaves
    reset(holder)
    line = server.line_of(port)
    assert " pid=" not in line, line
    assert line.endswith(": client disconnected before its reconstruction started"), line


def _fed_slowly(server: ServerProcess, first: bytes, rest: bytes, pause: float, step: int) -> str:
    """Send ``first`` at once and ``rest`` ``step`` bytes per ``pause`` seconds until the
    server ends the connection; its log line (bounded wait: on a server without progress
    limits this is where the test fails)."""
    stop = threading.Event()
    with connect(server.port) as sock:
        sock.sendall(first)
        thread = threading.Thread(target=_feed, args=(sock, rest, pause, step, stop))
        thread.start()
        try:
            return server.line_of(sock.getsockname()[1], timeout=30)
        finally:
            stop.set()
            thread.join(timeout=60)


def test_a_trickle_after_the_header_is_dropped(servers: list[ServerProcess]) -> None:
    long_stream = encode(phantom_messages(repetitions=20))
    server = _serve(servers, "--idle-timeout", "1")
    opening = _first_acquisition_end(long_stream)
    line = _fed_slowly(server, long_stream[:opening], long_stream[opening:], 0.1, 100)
    assert " pid=" in line and re.search(
        r": slow: \d+ bytes from the client in 1 s before its CLOSE, expected at least 16384 "
        r"\(--idle-timeout\)$",
        line,
    ), line


def test_a_trickled_header_meets_the_header_deadline(
    servers: list[ServerProcess], small: bytes
) -> None:
    server = _serve(servers, "--idle-timeout", "1")
    line = _fed_slowly(server, b"", small, 0.05, 1)
    assert line.endswith(": idle: no complete header within 1 s (--idle-timeout)"), line
    assert " pid=" not in line


def test_silent_sockets_from_one_address_do_not_block_another(
    servers: list[ServerProcess], small: bytes
) -> None:
    server = _serve(servers)
    quiet = _quiet_time(server, small)
    silent = [connect(server.port, "127.0.0.2") for _ in range(100)]
    try:
        refused = server.wait_for(
            lambda lines: (
                (found := [x for x in lines if "too many connections" in x])[83:] and found
            ),
            "84 refused connections",
        )
        start = time.monotonic()
        proc = _send(server.address, data=small)
        took = time.monotonic() - start
    finally:
        for sock in silent:
            sock.close()
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(_images(proc.stdout)) == 2
    assert took <= quiet + DELAY, (took, quiet)
    assert len(refused) == 84 and all(x.startswith("serve: 127.0.0.2:") for x in refused)
    assert all(
        x.endswith(": refused: too many connections from 127.0.0.2 (--max-per-address 16)")
        for x in refused
    ), refused[0]
    ok = [x for x in server.connection_lines() if x.endswith(": ok")]
    assert len(ok) == 3 and re.search(r" queued=0\.00 s ", ok[-1]), ok


def test_a_refused_client_reads_why(servers: list[ServerProcess], small: bytes) -> None:
    server = _serve(servers, "--max-per-address", "1")
    with connect(server.port):  # accepted first: the next one from this address is refused
        reply = exchange(server.port, small)
    messages = list(StreamReader(io.BytesIO(reply), require_close=False))
    assert [type(m).__name__ for m in messages] == ["Text"], messages
    assert messages[0].text == "error: too many connections from your address; try again later"


def test_a_refused_client_still_sending_reads_why(
    servers: list[ServerProcess], small: bytes
) -> None:
    """The refusal is sent before the client's data arrives: the server must not close
    with that data unread (a reset then destroys the TEXT), it lingers until the client ends."""
    server = _serve(servers, "--max-per-address", "1")
    with connect(server.port), connect(server.port) as late:
        server.wait_for(
            lambda lines: any("refused: too many connections" in x for x in lines),
            "the second client's refusal",
        )
        late.sendall(small)
        late.shutdown(socket.SHUT_WR)
        reply = read_to_end(late)
    messages = list(StreamReader(io.BytesIO(reply), require_close=False))
    assert [type(m).__name__ for m in messages] == ["Text"], messages
    assert messages[0].text == "error: too many connections from your address; try again later"


def test_header_only_client_reads_why_nothing_came_back(
    servers: list[ServerProcess], small: bytes
) -> None:
    """HEADER then CLOSE: no acquisitions, so no slot question and no images: the client
    reads the engine's one-line reason, as the command line prints it."""
    server = _serve(servers)
    header = small[: _header_end(small)]
    reply = exchange(server.port, header + b"\x04\x00")
    messages = list(StreamReader(io.BytesIO(reply), require_close=False))
    assert [type(m).__name__ for m in messages] == ["Text"], messages
    assert messages[0].text.endswith(
        "no acquisitions: the stream has a header but no raw data (ACQUISITION messages) "
        "to reconstruct"
    ), messages[0].text

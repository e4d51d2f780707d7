"""``parallel-recon send``: the socat replacement, against small scripted servers.

Each scripted server runs in a thread on 127.0.0.1 with a bounded accept timeout and is
always closed; the client runs as the installed console script.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import close_after_reading, run_cli
from conftest import script as script_path

from parallel_recon.protocol import Close, Header, Text, encode_message

REPLY = encode_message(Header("<ismrmrdHeader/>")) + encode_message(Text("hello")) + b"\x04\x00"


def _recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


class ScriptedServer:
    """Accepts one connection and runs ``script(conn)`` on it, in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Callable[[socket.socket], None]) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                script(conn)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=30)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[socket.socket], None]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Callable[[socket.socket], None]) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    for server in servers:  # a script that failed would otherwise pass unnoticed
        assert server.error is None, repr(server.error)


def test_half_close_then_slow_reply_is_received_completely(scripted, golden: Path) -> None:
    """The server answers only after the client's EOF and a pause longer than socat's -t."""
    request = (golden / "phantom_m128_c8_noise.stream").read_bytes()

    def script(conn: socket.socket) -> None:
        server.received = _recv_all(conn)  # returns only once the client half-closed
        time.sleep(1.5)
        conn.sendall(REPLY)

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=request, timeout=60)
    server.close()
    assert server.error is None
    assert server.received == request
    assert proc.stdout == REPLY
    assert proc.stderr.decode() == f"server 127.0.0.1:{server.port}: hello\n"


def test_input_and_output_files(scripted, tmp_path: Path) -> None:
    request = encode_message(Header("<x/>")) + encode_message(Close())

    def script(conn: socket.socket) -> None:
        server.received = _recv_all(conn)
        conn.sendall(REPLY)

    server = scripted(script)
    (tmp_path / "in").write_bytes(request)
    run_cli(
        "parallel-recon", "send", f"127.0.0.1:{server.port}",
        "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert server.received == request
    assert (tmp_path / "out").read_bytes() == REPLY


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_error_line(proc, *needles: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("parallel-recon send: error: "), err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


def test_refused_connection() -> None:
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{_free_port()}", input=b"", check=False)
    _one_error_line(proc, "connection refused")


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", "127.0.0.1:99999", ":80"])
def test_bad_address(address: str) -> None:
    proc = run_cli("parallel-recon", "send", address, input=b"", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err  # a usage error
    assert err.count("\n") == 1 and err.startswith("parallel-recon send: error: "), err
    assert "expected HOST:PORT" in err


def test_reply_without_close_is_an_error(scripted) -> None:
    partial = encode_message(Header("<ismrmrdHeader/>"))

    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(partial)

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=REPLY, check=False)
    _one_error_line(proc, "without sending CLOSE", f"after {len(partial)} bytes")
    assert proc.stdout == partial  # what did arrive is kept


def test_reply_truncated_inside_a_message(scripted) -> None:
    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(REPLY[:10])

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=REPLY, check=False)
    _one_error_line(proc, "truncated", "byte offset 0")


def test_connection_reset_mid_reply(scripted) -> None:
    def script(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(REPLY[:20])
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = scripted(script)
    big = REPLY * 20000  # more than the socket buffers hold, so the client is still sending
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=big, check=False)
    _one_error_line(proc, f"connection to 127.0.0.1:{server.port} dropped (reset by the server)")


def test_an_input_closed_while_the_command_exits_stops_the_sender_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the reply's error the command exits while the sender may still be reading
    stdin; the interpreter's shutdown closes it under the thread (a traceback once showed up
    under CPU load after the one-line error)."""
    from parallel_recon.net.client import SendReport, _Sender

    class ClosedInput:
        def read1(self, size: int) -> bytes:
            raise ValueError("read of closed file")

        read = read1

    escaped: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    left, right = socket.socketpair()
    with left, right:
        sender = _Sender(ClosedInput(), left, SendReport())  # type: ignore[arg-type]
        sender.start()
        sender.join(60)
    assert not sender.is_alive() and escaped == [] and sender.error is None
    assert not sender.done.is_set()


def test_a_reset_after_a_text_keeps_what_the_server_said(scripted) -> None:
    def script(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(encode_message(Text("error: too big")))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = scripted(script)
    big = REPLY * 20000
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=big, check=False)
    _one_error_line(proc, "(reset by the server)", "(server said: error: too big)")


def test_server_texts_are_shown_escaped(scripted) -> None:
    """A TEXT's control characters reach the terminal escaped, each TEXT on one line."""
    hostile = "done\x1b[2J\nfake prompt$ \x07"
    reply = encode_message(Header("<x/>")) + encode_message(Text(hostile)) + b"\x04\x00"

    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(reply)

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=b"")
    assert proc.stdout == reply  # the bytes themselves pass unchanged
    assert proc.stderr.decode() == (
        f"server 127.0.0.1:{server.port}: done\\x1b[2J\\nfake prompt$ \\x07\n"
    )


def test_an_error_text_is_escaped_in_the_error_line(scripted) -> None:
    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(encode_message(Text("error: bad\x1b[31m\ninput")))

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=REPLY, check=False)
    _one_error_line(proc, "server said: error: bad\\x1b[31m\\ninput")


def test_server_error_text_is_folded_into_the_error_line(scripted) -> None:
    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(encode_message(Text("error: bad input")))

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", input=REPLY, check=False)
    _one_error_line(proc, "server said: error: bad input")


def test_progress_only_when_asked(scripted) -> None:
    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        conn.sendall(REPLY)

    server = scripted(script)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{server.port}", "--progress", input=b"")
    assert proc.stdout == REPLY
    assert "send: reply: 3 messages" in proc.stderr.decode()


def test_closed_stdout_exits_quietly(scripted) -> None:
    """`parallel-recon send ... | head -c 100`: exit 141, nothing on stderr."""
    big = encode_message(Header("x" * (4 << 20))) + b"\x04\x00"

    def script(conn: socket.socket) -> None:
        _recv_all(conn)
        with contextlib.suppress(OSError):  # the client is gone, as intended
            conn.sendall(big)

    server = scripted(script)
    proc = subprocess.Popen(
        [script_path("parallel-recon"), "send", f"127.0.0.1:{server.port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    code, err = close_after_reading(proc, 100)
    assert code == 141, err
    assert err == b""

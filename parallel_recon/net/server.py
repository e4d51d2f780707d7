"""TCP reconstruction server: one full reconstruction per connection.

Each accepted connection gets its own child process running the same pipeline as
``mrd_stream_recon`` (or any stdin-to-stdout filter given with ``command``), wired to the
socket by three pumps: socket -> child stdin, child stdout -> socket (parsed on the way so
the server can count images and tell a complete reply from a broken one), child stderr ->
the connection's log line.  A child per connection keeps clients isolated: a malformed or
vanishing client ends only its own child, and the child's own supervisor cleans up its
workers and shared memory.

Messages that may precede the header (CONFIG_FILE, CONFIG_TEXT, TEXT) are read by the
server first, so a CONFIG_FILE name can choose the kernel (see :func:`choose_kernel`), and
are then passed on to the child unchanged in meaning.  When a reconstruction fails, a
still-connected client gets the reason as a TEXT message and no CLOSE, so clients can tell
a failure from a complete reply.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, BinaryIO, TextIO, cast

from ..engine.kernels import KERNELS
from ..errors import ProtocolError, ReconError
from ..protocol import (
    Close,
    ConfigFile,
    Image,
    MessageId,
    StreamReader,
    Text,
    encode_message,
    message_id_bytes,
)
from ..protocol.messages import Message
from .client import TeeReader

__all__ = [
    "ConnectionReport",
    "ReconServer",
    "ServerConfig",
    "choose_kernel",
    "recon_command",
]

PRELUDE_IDS = frozenset({MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT})
"""Messages a client may send before HEADER (python-ismrmrd-server and Gadgetron clients)."""

_CHUNK = 1 << 20
_STDERR_KEEP = 64 << 10
_CHILD_EXIT_WAIT = 10.0
_LINGER = 1.0


@dataclass(frozen=True)
class ServerConfig:
    """What ``parallel-recon serve`` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 9222
    workers: int | None = None
    """``--workers`` of each connection's reconstruction (None: the recon's default)."""
    max_connections: int = 8
    """Connections served at once; more wait in the listen backlog."""
    recon: str = "auto"
    """Kernel used when the client's config name does not choose one."""
    config_map: Mapping[str, str] = field(default_factory=dict)
    """CONFIG_FILE name -> kernel (name or path), checked before the built-in names."""
    command: Sequence[str] | None = None
    """A filter run per connection instead of the built-in recon (no kernel choice then)."""
    drain_timeout: float = 60.0
    """Seconds that SIGTERM waits for running connections before stopping them."""


@dataclass
class ConnectionReport:
    """The facts of one connection, logged as one line when it ends."""

    peer: str
    kernel: str = ""
    pid: int | None = None
    """The reconstruction child's process id (None when none was started)."""
    bytes_in: int = 0
    bytes_out: int = 0
    images: int = 0
    seconds: float = 0.0
    outcome: str = "ok"

    def line(self) -> str:
        kernel = f" kernel={self.kernel}" if self.kernel else ""
        pid = f" pid={self.pid}" if self.pid is not None else ""
        return (
            f"{self.peer}{kernel}{pid} in={self.bytes_in} B out={self.bytes_out} B "
            f"images={self.images} {self.seconds:.2f} s: {self.outcome}"
        )


def choose_kernel(prelude: Sequence[Message], config: ServerConfig) -> str:
    """The kernel for a connection, from the first CONFIG_FILE name the client sent.

    A name listed in ``config.config_map`` maps to its kernel; a name of the recon's kernel
    table (e.g. ``cartesian``) selects that kernel; anything else (``default``, Gadgetron's
    ``default.xml``, no config at all) uses ``config.recon``.
    """
    for msg in prelude:
        if not isinstance(msg, ConfigFile):
            continue
        name = msg.name.strip()
        if name in config.config_map:
            return config.config_map[name]
        if name in KERNELS:
            return name
        break
    return config.recon


def recon_command(config: ServerConfig, kernel: str) -> list[str]:
    """The child command line for one connection."""
    if config.command:
        return list(config.command)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from parallel_recon.cli.recon import main; sys.exit(main())",
        "--recon",
        kernel,
    ]
    if config.workers is not None:
        cmd += ["--workers", str(config.workers)]
    return cmd


def _read_prelude(reader: StreamReader) -> tuple[list[Message], MessageId | None]:
    """Read CONFIG/TEXT messages up to the first other message, whose id is left peeked."""
    prelude: list[Message] = []
    while True:
        mid = reader.peek()
        if mid is None or mid not in PRELUDE_IDS:
            return prelude, mid
        msg = reader.read_message()
        assert msg is not None
        prelude.append(msg)


class _Connection:
    """One client: prelude, child process, three pumps, and the closing log line."""

    def __init__(self, sock: socket.socket, peer: str, config: ServerConfig):
        self.sock = sock
        self.config = config
        self.report = ConnectionReport(peer=peer)
        self.child: subprocess.Popen[bytes] | None = None
        self._stderr = bytearray()
        self._client_gone = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- pumps
    def _pump_in(self, source: BinaryIO, first: bytes) -> None:
        """Socket -> child stdin; once the child stops reading, discard until EOF."""
        child = self.child
        assert child is not None and child.stdin is not None
        stdin: IO[bytes] | None = child.stdin
        try:
            child.stdin.write(first)
            child.stdin.flush()
        except (BrokenPipeError, ValueError):
            stdin = None
        while True:
            try:
                chunk = source.read1(_CHUNK)  # type: ignore[attr-defined]
            except (OSError, ValueError):
                self._client_gone = True
                break
            if not chunk:
                break
            self.report.bytes_in += len(chunk)
            if stdin is not None:
                try:
                    stdin.write(chunk)
                    stdin.flush()
                except (BrokenPipeError, ValueError):
                    stdin = None  # the child stopped reading: it says why on stderr
        with contextlib.suppress(OSError, ValueError):
            child.stdin.close()

    def _pump_stderr(self) -> None:
        child = self.child
        assert child is not None and child.stderr is not None
        for line in iter(child.stderr.readline, b""):
            self._stderr += line
            if len(self._stderr) > _STDERR_KEEP:
                del self._stderr[: len(self._stderr) - _STDERR_KEEP]

    def _pump_out(self) -> bool:
        """Forward the child's reply; True when it ended with CLOSE."""
        child = self.child
        assert child is not None and child.stdout is not None
        tee = TeeReader(child.stdout, self.sock)
        reader = StreamReader(tee, require_close=False)  # type: ignore[arg-type]
        closed = False
        try:
            while True:
                msg = reader.read_message()
                tee.flush()
                if msg is None:
                    break
                if isinstance(msg, Image):
                    self.report.images += 1
                elif isinstance(msg, Close):
                    closed = True
        except ProtocolError as exc:
            with contextlib.suppress(OSError):
                tee.flush()
            self.report.outcome = f"error: reconstruction output is not a valid stream: {exc}"
        except OSError:
            self._client_gone = True
        self.report.bytes_out = tee.forwarded
        return closed

    # ----------------------------------------------------------------- run
    def run(self) -> ConnectionReport:
        start = time.monotonic()
        try:
            self._serve()
        finally:
            self._finish_child()
            self.report.seconds = time.monotonic() - start
            self._close_socket()
        return self.report

    def _close_socket(self) -> None:
        """Half-close, then briefly discard unread input so the client reads our last words.

        Closing with unread input makes the kernel send a reset, which can destroy the
        reply (and the TEXT explaining an error) before the client has read it.
        """
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(_LINGER)
            deadline = time.monotonic() + _LINGER
            while time.monotonic() < deadline and self.sock.recv(_CHUNK):
                pass
        with contextlib.suppress(OSError):
            self.sock.close()

    def _serve(self) -> None:
        source = cast(BinaryIO, self.sock.makefile("rb", buffering=_CHUNK))
        reader = StreamReader(source, require_close=False)
        try:
            prelude, first = _read_prelude(reader)
        except ReconError as exc:
            self.report.bytes_in = reader.offset
            self._fail(f"error: {exc}")
            return
        except OSError as exc:
            self.report.outcome = f"client dropped before the header ({exc.strerror})"
            return
        self.report.bytes_in = reader.offset
        if first is None:
            self.report.outcome = "client sent no header (connection closed)"
            return
        kernel = choose_kernel(prelude, self.config)
        self.report.kernel = "" if self.config.command else kernel
        leading = b"".join(encode_message(m) for m in prelude) + message_id_bytes(first)
        command = recon_command(self.config, kernel)
        try:
            with self._lock:
                self.child = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail(f"error: cannot start {command[0]!r}: {exc.strerror or exc}")
            return
        self.report.pid = self.child.pid
        pumps = [
            threading.Thread(target=self._pump_in, args=(source, leading), daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for pump in pumps:
            pump.start()
        closed = self._pump_out()
        code = self._wait_child()
        pumps[1].join(timeout=_LINGER)  # the child's last stderr line explains a failure
        if self.report.outcome != "ok":
            self._fail(self.report.outcome)
        elif self._client_gone and (code != 0 or not closed):
            self.report.outcome = f"client disconnected mid-stream; {self._child_problem(code)}"
        elif code != 0 or not closed:
            self._fail(f"error: {self._child_problem(code)}")
        # Reply complete: tell the client, give the input pump a moment to see its EOF,
        # then unblock it in case the client keeps the connection open.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        pumps[0].join(timeout=_LINGER)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        for pump in pumps:
            pump.join(timeout=_CHILD_EXIT_WAIT)
        if self.report.outcome == "ok" and self._client_gone:
            self.report.outcome = "client disconnected"

    def _child_problem(self, code: int | None) -> str:
        lines = bytes(self._stderr).decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no message"
        return f"reconstruction exited with status {code}: {last}"

    def _fail(self, outcome: str) -> None:
        """Record the outcome and tell a still-connected client with a TEXT message."""
        self.report.outcome = outcome
        if self._client_gone:
            return
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_message(Text(outcome)))

    def _wait_child(self) -> int | None:
        child = self.child
        assert child is not None
        try:
            return child.wait(timeout=_CHILD_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.stop_child()
            return child.poll()

    def stop_child(self) -> None:
        """SIGTERM the child (its supervisor then cleans up), SIGKILL if it lingers."""
        with self._lock:
            child = self.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            child.wait(timeout=_CHILD_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def _finish_child(self) -> None:
        if self.child is None:
            return
        if self.child.poll() is None:
            self.stop_child()
        for stream in (self.child.stdin, self.child.stdout, self.child.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()


class ReconServer:
    """Listens, serves each connection in a thread, drains on :meth:`request_stop`."""

    def __init__(self, config: ServerConfig, log: TextIO | None = None):
        self.config = config
        self.log = log if log is not None else sys.stderr
        self.listener = socket.create_server((config.host, config.port), backlog=64)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(max(1, config.max_connections))
        self._active: dict[int, tuple[threading.Thread, _Connection]] = {}
        self._active_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._next_id = 0

    def say(self, text: str) -> None:
        """One log line on the server's stderr."""
        print(f"serve: {text}", file=self.log, flush=True)

    def request_stop(self) -> None:
        """Stop accepting and drain; a second request stops running connections now.

        Safe to call from a signal handler.
        """
        if self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _wait_readable(self) -> bool:
        """Block until the listener has a client (True) or a stop was requested (False)."""
        while not self._stopping.is_set():
            listener = self.listener.fileno()
            ready, _, _ = select.select([listener, self._wake_r], [], [])
            if listener in ready and not self._stopping.is_set():
                return True
        return False

    def serve_forever(self) -> None:
        """Accept until :meth:`request_stop`, then drain running connections."""
        try:
            while self._acquire_slot():
                if not self._wait_readable():
                    self._slots.release()
                    break
                try:
                    sock, addr = self.listener.accept()
                except OSError:
                    self._slots.release()
                    continue
                self._start(sock, f"{addr[0]}:{addr[1]}")
        finally:
            self.listener.close()
            self._drain()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _acquire_slot(self) -> bool:
        """Wait for a free connection slot; False once a stop was requested."""
        while not self._stopping.is_set():
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _start(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = _Connection(sock, peer, self.config)
        ident = self._next_id
        self._next_id += 1
        thread = threading.Thread(target=self._handle, args=(ident, conn), daemon=True)
        with self._active_lock:
            self._active[ident] = (thread, conn)
        thread.start()

    def _handle(self, ident: int, conn: _Connection) -> None:
        try:
            report = conn.run()
            self.say(report.line())
        except Exception as exc:  # a bug must not take the other connections down
            self.say(f"{conn.report.peer}: internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._active_lock:
                del self._active[ident]
            self._slots.release()

    def _drain(self) -> None:
        with self._active_lock:
            running = list(self._active.values())
        if not running:
            return
        self.say(
            f"stopping: waiting up to {self.config.drain_timeout:g} s for {len(running)} "
            "running connection(s); signal again to stop them now"
        )
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline and not self._force.is_set():
            if not any(thread.is_alive() for thread, _ in running):
                break
            self._force.wait(0.1)
        stopped = [(thread, conn) for thread, conn in running if thread.is_alive()]
        for _, conn in stopped:
            conn.report.outcome = "stopped by server shutdown"
            conn.stop_child()  # the connection then tells its client and ends by itself
        for thread, conn in stopped:
            thread.join(timeout=_CHILD_EXIT_WAIT)
            if thread.is_alive():  # a client that neither reads nor closes
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
                thread.join(timeout=_CHILD_EXIT_WAIT)

"""One client of the reconstruction server, from its first byte to its log line.

A connection reads the messages that may precede the header (so a CONFIG_FILE name can
choose the kernel), waits for a free reconstruction slot, starts its own child process
(the ``mrd_stream_recon`` pipeline, or any stdin-to-stdout filter) and wires it to the
socket with three pumps: socket -> child stdin (parsed on the way, so the server knows when
the client's stream is complete), child stdout -> socket (parsed, to count images and tell a
complete reply from a broken one), child stderr -> the log line.

A client that sends nothing for ``idle_timeout`` seconds before its stream is complete is
closed (and its reconstruction stopped): idle sockets cannot hold the server's slots.  After
the stream's CLOSE a client may stay silent as long as the reconstruction takes.

Every connection ends with exactly one :class:`ConnectionReport` whose ``outcome`` says what
happened, from one small vocabulary (:data:`OUTCOMES`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from ..errors import ProtocolError, ReconError, TruncatedStreamError
from ..protocol import Close, Image, MessageId, StreamReader, Text, encode_message, open_reader
from ..protocol.messages import Message
from .client import TeeReader

__all__ = ["OUTCOMES", "PRELUDE_IDS", "Connection", "ConnectionReport", "read_prelude"]

PRELUDE_IDS = frozenset({MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT})
"""Messages a client may send before HEADER (python-ismrmrd-server and Gadgetron clients)."""

OUTCOMES = {
    "ok": "the reply was complete and the client took it",
    "error: ...": "the reconstruction failed (bad input, a kernel error); the client got a TEXT",
    "idle: ...": "the client sent nothing for --idle-timeout seconds before its CLOSE",
    "client disconnected ...": "the client went away (closed or reset) before its stream's "
    "CLOSE, or stopped taking the reply",
    "client sent no header ...": "the connection closed before a HEADER",
    "stopped by server shutdown": "the server was stopped while this connection ran or waited",
}
"""The outcomes a connection's log line ends with (the prefix, then the details)."""

_CHUNK = 1 << 20
_STDERR_KEEP = 64 << 10
_CHILD_EXIT_WAIT = 10.0
_LINGER = 1.0


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
    queued_s: float = 0.0
    """Seconds between the client's header and a free reconstruction slot."""
    recon_s: float = 0.0
    """Seconds the reconstruction child ran."""
    outcome: str = "ok"

    def line(self) -> str:
        kernel = f" kernel={self.kernel}" if self.kernel else ""
        pid = f" pid={self.pid}" if self.pid is not None else ""
        return (
            f"{self.peer}{kernel}{pid} in={self.bytes_in} B out={self.bytes_out} B "
            f"images={self.images} queued={self.queued_s:.2f} s recon={self.recon_s:.2f} s: "
            f"{self.outcome}"
        )


def read_prelude(reader: StreamReader) -> tuple[list[Message], MessageId | None]:
    """Read CONFIG/TEXT messages up to the first other message, whose id is left peeked."""
    prelude: list[Message] = []
    while True:
        mid = reader.peek()
        if mid is None or mid not in PRELUDE_IDS:
            return prelude, mid
        msg = reader.read_message()
        assert msg is not None
        prelude.append(msg)


class _Prefixed:
    """``readinto`` from ``first`` and then from ``source`` (the prelude the server already
    read, followed by the rest of the unbuffered socket file)."""

    def __init__(self, first: bytes, source: Any):
        self._first = memoryview(first)
        self._source = source

    def _take(self, buffer: memoryview | bytearray) -> int | None:
        if not self._first:
            return None
        n = min(len(buffer), len(self._first))
        memoryview(buffer)[:n] = self._first[:n]
        self._first = self._first[n:]
        return n

    def readinto(self, buffer: memoryview | bytearray) -> int:
        taken = self._take(buffer)
        return taken if taken is not None else int(self._source.readinto(buffer) or 0)

    def readinto1(self, buffer: memoryview | bytearray) -> int:
        """What is ready (one recv of the unbuffered socket file returns just that)."""
        return self.readinto(buffer)


class _InputTee(TeeReader):
    """A TeeReader that also offers ``readinto1`` (so the parser may take what is ready)
    and counts every byte received."""

    def __init__(self, source: Any, sink: IO[bytes]):
        super().__init__(source, sink)
        self._readinto1 = source.readinto1
        self.received = 0

    def readinto(self, buffer: memoryview | bytearray) -> int:
        n = super().readinto(buffer)
        self.received += n
        return n

    def readinto1(self, buffer: memoryview | bytearray) -> int:
        n = self._readinto1(buffer) or 0
        if n:
            self._pending.append(bytes(memoryview(buffer)[:n]))
            self._pending_bytes += n
            self.received += n
        return n


class Connection:
    """One client: prelude, a reconstruction slot, a child process, pumps, one report.

    Parameters
    ----------
    sock, peer:
        The accepted socket and its ``host:port``.
    command:
        Returns the child's command line for the chosen kernel.
    choose:
        Returns the kernel for the prelude messages (config names), '' for a filter.
    acquire_slot:
        Blocks until a reconstruction slot is free (True) or the server stops (False).
    release_slot:
        Gives the slot back.
    idle_timeout:
        Seconds without a byte from the client before its stream is complete (None: never).
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        *,
        command: Callable[[str], Sequence[str]],
        choose: Callable[[list[Message]], str],
        acquire_slot: Callable[[], bool],
        release_slot: Callable[[], None],
        idle_timeout: float | None,
    ):
        self.sock = sock
        self.report = ConnectionReport(peer=peer)
        self.child: subprocess.Popen[bytes] | None = None
        self._command = command
        self._choose = choose
        self._acquire_slot = acquire_slot
        self._release_slot = release_slot
        self._idle = idle_timeout
        self._stderr = bytearray()
        self._lock = threading.Lock()
        self.input_state = "reading"
        """reading, complete (CLOSE seen), ended (EOF before CLOSE), reset, idle, unparsed."""
        self._reply_gone = False
        self._reply_error = ""
        self.stopping = False
        """Set by the server when it stops this connection (shutdown)."""
        self.generation = "ismrmrd"
        """The client's stream generation (``mrd2``: no TEXT message can tell it a failure)."""

    # ----------------------------------------------------------------- run
    def run(self) -> ConnectionReport:
        try:
            self._serve()
        finally:
            self._finish_child()
            self._close_socket()
        return self.report

    def _serve(self) -> None:
        self.sock.settimeout(self._idle)
        # unbuffered: one recv per read, so a reset is reported as such (a buffered reader
        # would return the data before it and then an end of file)
        source = cast(BinaryIO, self.sock.makefile("rb", buffering=0))
        leading: bytes | None = None
        prelude: list[Message] = []
        first: MessageId | None = MessageId.HEADER
        try:
            reader = open_reader(source, require_close=False)  # either generation
            self.generation = reader.generation
            if self.generation == "mrd2":  # no prelude: the recon reads the whole stream
                leading = reader.unconsumed()
            else:
                prelude, first = read_prelude(reader)
        except ReconError as exc:
            self.report.bytes_in = reader.offset
            self._fail(f"error: {exc}")
            return
        except TimeoutError:
            self.report.outcome = self._idle_outcome("before its header")
            return
        except OSError as exc:
            self.report.outcome = self._stopped_or(
                f"client disconnected before its header ({exc.strerror or exc})"
            )
            return
        self.report.bytes_in = reader.offset
        if first is None:
            self.report.outcome = self._stopped_or("client sent no header (connection closed)")
            return
        waited = time.monotonic()
        if not self._acquire_slot():
            self._fail("stopped by server shutdown (before its reconstruction started)")
            return
        try:
            self.report.queued_s = time.monotonic() - waited
            self._reconstruct(source, prelude, first, leading)
        finally:
            self._release_slot()

    def _reconstruct(
        self,
        source: BinaryIO,
        prelude: list[Message],
        first: MessageId,
        leading: bytes | None = None,
    ) -> None:
        kernel = self._choose(prelude)
        self.report.kernel = kernel
        if leading is None:
            leading = b"".join(encode_message(m) for m in prelude) + int(first).to_bytes(
                2, "little"
            )
        command = list(self._command(kernel))
        started = time.monotonic()
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
        self.report.recon_s = time.monotonic() - started
        pumps[1].join(timeout=_LINGER)  # the child's last stderr line explains a failure
        self._conclude(code, closed)
        # Reply complete: tell the client, give the input pump a moment to see its EOF,
        # then unblock it in case the client keeps the connection open.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        pumps[0].join(timeout=_LINGER)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        for pump in pumps:
            pump.join(timeout=_CHILD_EXIT_WAIT)

    # ----------------------------------------------------------------- outcome
    def _conclude(self, code: int | None, closed: bool) -> None:
        """The one outcome of a connection whose reconstruction ran (first rule that holds)."""
        failed = code != 0 or not closed
        state = self.input_state
        if state == "idle":
            self.report.outcome = self._idle_outcome("in the middle of its stream")
        elif self.stopping:
            self._fail("stopped by server shutdown")
        elif state in ("ended", "reset") and failed:
            how = " (connection reset)" if state == "reset" else ""
            self.report.outcome = (
                f"client disconnected mid-stream{how}: no CLOSE after {self.report.bytes_in} bytes"
            )
        elif self._reply_gone:
            self.report.outcome = "client disconnected before taking the whole reply"
        elif failed:
            self._fail(f"error: {self._child_problem(code)}")
        elif self._reply_error:
            self._fail(f"error: reconstruction output is not a valid stream: {self._reply_error}")

    def _idle_outcome(self, when: str) -> str:
        return (
            f"idle: no data from the client for {self._idle:g} s {when} "
            "(--idle-timeout); connection closed"
        )

    def _stopped_or(self, outcome: str) -> str:
        return "stopped by server shutdown" if self.stopping else outcome

    def _child_problem(self, code: int | None) -> str:
        lines = bytes(self._stderr).decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no message"
        return f"reconstruction exited with status {code}: {last}"

    def _fail(self, outcome: str) -> None:
        """Record the outcome and tell a still-connected client with a TEXT message."""
        self.report.outcome = outcome
        if self.input_state in ("reset", "idle") or self._reply_gone or self.generation == "mrd2":
            return
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_message(Text(outcome)))

    # ----------------------------------------------------------------- pumps
    def _pump_in(self, source: BinaryIO, leading: bytes) -> None:
        """Socket -> child stdin, parsed up to CLOSE (idle timeout until then); the rest is
        passed on raw (the child warns about data after CLOSE), with no time limit."""
        child = self.child
        assert child is not None and child.stdin is not None
        stdin: IO[bytes] = child.stdin
        tee = _InputTee(_Prefixed(leading, source), stdin)
        reader = open_reader(tee, require_close=False)  # type: ignore[arg-type]
        try:
            while self.input_state == "reading":
                msg = reader.read_message()
                tee.flush()
                if msg is None:
                    self.input_state = "ended"
                elif isinstance(msg, Close):
                    self.input_state = "complete"
        except TruncatedStreamError:
            self.input_state = "ended"  # the client's side ended inside a message
        except ProtocolError:
            self.input_state = "unparsed"  # the child reports what is wrong with it
        except TimeoutError:
            self.input_state = "idle"
        except (BrokenPipeError, ValueError):
            self.input_state = "complete"  # the child stopped reading: it says why
        except OSError:
            self.input_state = "reset"
        self.report.bytes_in = tee.received
        if self.input_state == "idle":
            self.stop_child()
        elif self.input_state in ("complete", "unparsed"):
            with contextlib.suppress(OSError, ValueError):
                tee.flush()
                if self.input_state == "complete":
                    self.sock.settimeout(None)  # a quiet client waits for its images
                self._forward_rest(source, stdin)
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _forward_rest(self, source: BinaryIO, stdin: IO[bytes] | None) -> None:
        """Raw copy until EOF; once the child stops reading, discard."""
        while True:
            try:
                chunk = source.read(_CHUNK)  # one recv: what has arrived
            except TimeoutError:
                self.input_state = "idle"
                self.stop_child()
                return
            except (OSError, ValueError):
                return
            if not chunk:
                return
            self.report.bytes_in += len(chunk)
            if stdin is not None:
                try:
                    stdin.write(chunk)
                    stdin.flush()
                except (BrokenPipeError, ValueError):
                    stdin = None

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
        reader = open_reader(tee, require_close=False)  # type: ignore[arg-type]
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
            self._reply_error = str(exc)
        except OSError:
            self._reply_gone = True
            self.stop_child()
        self.report.bytes_out = tee.forwarded
        return closed

    # ----------------------------------------------------------------- child
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

    def interrupt(self) -> None:
        """Unblock a connection that waits for its client (server shutdown)."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)

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

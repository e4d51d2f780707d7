"""One client of the reconstruction server, from its first byte to its log line.

A connection reads the stream's opening (config and text messages, the header, the first
acquisition's header: :mod:`.opening`), works out the shared memory its dataset needs,
waits until a reconstruction slot and that much of the server's budget are free
(:mod:`.admission`), starts its own child process (the ``mrd_stream_recon`` pipeline, or
any stdin-to-stdout filter) and wires it to the socket with three pumps: socket -> child
stdin, child stdout -> socket, child stderr -> the log line.  The two socket pumps parse the
stream only as far as message boundaries (to see CLOSE, count images and tell a complete
reply from a broken one) and pass payloads through in pieces: no message is held whole,
whatever size it claims.

Time limits measure progress (:mod:`.wire`): the opening must arrive within
``idle_timeout`` seconds, and until its CLOSE the client must keep sending, and it must
keep taking its reply.  After the stream's CLOSE a client may stay silent as long as the
reconstruction takes.

Every connection ends with exactly one :class:`ConnectionReport` whose ``outcome`` says what
happened, from one small vocabulary (:data:`OUTCOMES`); what a refused or failed client is
told comes as a TEXT message before the server closes.
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
from typing import IO, Protocol

from ..errors import ProtocolError, ReconError, TruncatedStreamError
from ..protocol import MessageId, Text, encode_message, open_reader, skip_message
from .admission import Admission
from .client import TeeReader
from .linger import close_lingering
from .opening import NoHeader, Opening, read_opening
from .wire import MIN_PROGRESS_BYTES, Stalled, Wire, client_gone

__all__ = ["OUTCOMES", "ChildProcess", "Connection", "ConnectionReport", "MemoryRefusal", "popen"]

OUTCOMES = {
    "ok": "the reply was complete and the client took it",
    "error: ...": "the reconstruction failed or was refused (bad input, a kernel error, not "
    "enough memory); the client got the reason as a TEXT",
    "idle: ...": "the client's header did not arrive within --idle-timeout, or it sent nothing "
    "for that long before its CLOSE",
    "slow: ...": "the client sent less than 16 KiB per --idle-timeout before its CLOSE",
    "client stopped taking its reply ...": "the client took less than 16 KiB of its reply per "
    "--idle-timeout",
    "client disconnected ...": "the client reset the connection before its stream's CLOSE, "
    "went away before its reconstruction started, or stopped taking the reply",
    "client sent no header ...": "the connection closed before a HEADER",
    "refused: ...": "too many connections from the client's address, or in all",
    "stopped by server shutdown": "the server was stopped while this connection ran or waited",
}
"""The outcomes a connection's log line ends with (the prefix, then the details)."""

_STDERR_KEEP = 64 << 10
_CHILD_EXIT_WAIT = 10.0
_LINGER = 1.0
_CHUNK = 1 << 20


class ChildProcess(Protocol):
    """What a connection needs of its recon process: a ``subprocess.Popen``, or an engine of
    the server's ready pool (:class:`~.engines.PooledChild`)."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...


def popen(command: Sequence[str]) -> ChildProcess:
    """Start ``command`` as a fresh process in a session of its own, piped both ways."""
    return subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


class MemoryRefusal(ReconError):
    """A dataset larger than the server's whole budget: one text for the log, one for the
    client (which learns what its data needs, not the server's settings)."""

    def __init__(self, log: str, client: str):
        super().__init__(log)
        self.client = client


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
    """Seconds between the client's complete header and its slot and memory."""
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


class _Prefixed:
    """``readinto`` from ``first`` and then from ``source`` (the opening the server already
    read, followed by the rest of the socket)."""

    def __init__(self, first: bytes, source: Wire):
        self._first = memoryview(first)
        self._source = source

    def readinto(self, buffer: memoryview | bytearray) -> int:
        if self._first:
            n = min(len(buffer), len(self._first))
            memoryview(buffer)[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        return self._source.readinto(buffer)

    readinto1 = readinto


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


class Connection:
    """One client: opening, admission, a child process, pumps, one report.

    Parameters
    ----------
    sock, peer:
        The accepted socket and its ``host:port``.
    command:
        The child's command line for the chosen kernel and its memory (bytes).
    spawn:
        Starts that command line (:func:`popen`, or the server's ready engines).
    choose:
        The kernel for the opening (its config name), '' for a filter.
    memory:
        Shared memory the opening's dataset needs, in bytes; raises :class:`MemoryRefusal`
        (or another ReconError) when it cannot be reconstructed here.
    admission:
        The server's slots and memory budget.
    idle_timeout:
        ``--idle-timeout`` (None: no time limits).
    log:
        Writes one line to the server's log.
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        *,
        command: Callable[[str, int], Sequence[str]],
        spawn: Callable[[Sequence[str]], ChildProcess] = popen,
        choose: Callable[[Opening], str],
        memory: Callable[[Opening, str], int],
        admission: Admission,
        idle_timeout: float | None,
        log: Callable[[str], None],
    ):
        self.sock = sock
        self.report = ConnectionReport(peer=peer)
        self.child: ChildProcess | None = None
        self._command = command
        self._spawn = spawn
        self._choose = choose
        self._memory = memory
        self._admission = admission
        self._idle = idle_timeout
        self._log = log
        self._wire = Wire(sock, idle_timeout)
        self._held: int | None = None
        """Bytes of the budget this connection holds (None: it holds no slot)."""
        self._stderr = bytearray()
        self._lock = threading.Lock()
        self.input_state = "reading"
        """reading, complete (CLOSE seen), ended (EOF before CLOSE), reset, stalled,
        unparsed."""
        self._stall: Stalled | None = None
        self._reply_stall: Stalled | None = None
        self._reply_gone = False
        self._reply_error = ""
        self.stopping = False
        """Set by the server when it stops this connection (shutdown)."""
        self.generation = "ismrmrd"
        """The client's stream generation (``mrd2``: no TEXT message can tell it a failure,
        so its reasons go to the log only)."""

    # ----------------------------------------------------------------- run
    def run(self) -> ConnectionReport:
        """Serve the client; the log line is written before the slot is given back, so a
        connection that waited for it always logs after the one that held it."""
        try:
            self._serve()
        except Exception as exc:  # a bug must not take the other connections down
            self.report.outcome = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self._finish_child()
            self.report.bytes_in = self._wire.received
            self._log(self.report.line())
            if self._held is not None:
                self._admission.release(self._held)
            self._close_socket()
        return self.report

    def _serve(self) -> None:
        try:
            opening = read_opening(self._wire)
        except Stalled:
            self.report.outcome = self._stopped_or(
                f"idle: no complete header within {self._idle:g} s (--idle-timeout)"
            )
            return
        except NoHeader:
            self.report.outcome = self._stopped_or("client sent no header (connection closed)")
            return
        except ReconError as exc:
            if self.stopping:
                self.report.outcome = "stopped by server shutdown"
            else:
                self._fail(f"error: {exc}")
            return
        except OSError as exc:
            self.report.outcome = self._stopped_or(
                f"client disconnected before its header ({exc.strerror or exc})"
            )
            return
        self.generation = opening.generation
        kernel = self._choose(opening)
        self.report.kernel = kernel
        try:
            need = self._memory(opening, kernel)
        except MemoryRefusal as exc:
            self._fail(f"error: {exc}", exc.client)
            return
        except ReconError as exc:
            self._fail(f"error: {exc}")
            return
        waited = time.monotonic()
        refusal = self._admission.acquire(need, self._give_up, self._tell_waiting(need))
        self.report.queued_s = time.monotonic() - waited
        if refusal is not None:
            if self.stopping:
                self._fail("stopped by server shutdown (before its reconstruction started)")
            else:
                self.report.outcome = refusal
            return
        self._held = need
        if client_gone(self.sock):  # the last chance not to start a child for nobody
            self.report.outcome = "client disconnected before its reconstruction started"
            return
        self._wire.streaming(self._idle)
        self._reconstruct(opening, kernel, need)

    def _give_up(self) -> str | None:
        """Why a connection waiting for its slot should stop waiting, if it should."""
        if self.stopping:
            return "stopped by server shutdown"
        if client_gone(self.sock):
            return "client disconnected before its reconstruction started"
        return None

    def _tell_waiting(self, need: int) -> Callable[[int], None]:
        def tell(free: int) -> None:
            self._log(
                f"{self.report.peer} waiting for memory: needs {_mib(need)} of shared memory, "
                f"{_mib(free)} of the {_mib(self._admission.budget)} budget free"
            )

        return tell

    def _reconstruct(self, opening: Opening, kernel: str, need: int) -> None:
        command = list(self._command(kernel, need))
        started = time.monotonic()
        try:
            with self._lock:  # against interrupt_waiting(): a child, or a stop, not both
                if not self.stopping:
                    self.child = self._spawn(command)
        except OSError as exc:
            self._fail(f"error: cannot start {command[0]!r}: {exc.strerror or exc}")
            return
        if self.child is None:
            self._fail("stopped by server shutdown (before its reconstruction started)")
            return
        self.report.pid = self.child.pid
        pumps = [
            threading.Thread(target=self._pump_in, args=(opening.raw,), daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for pump in pumps:
            pump.start()
        closed = self._pump_out()
        code = self._wait_child()
        self.report.recon_s = time.monotonic() - started
        pumps[1].join(timeout=_LINGER)  # the child's last stderr line explains a failure
        if self._reply_gone:  # the socket failed both ways: the input pump's verdict (a reset
            pumps[0].join(timeout=_LINGER)  # before the CLOSE) is the better reason; await it
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
        if self._stall is not None:
            self.report.outcome = self._stalled_input(self._stall)
        elif self.stopping:
            self._fail("stopped by server shutdown")
        elif state == "reset" and failed:
            self.report.outcome = (
                "client disconnected mid-stream (connection reset): no CLOSE after "
                f"{self._wire.received} bytes"
            )
        elif self._reply_stall is not None:
            self.report.outcome = self._stalled_output(self._reply_stall)
        elif self._reply_gone:
            self.report.outcome = "client disconnected before taking the whole reply"
        elif failed:
            self._fail(f"error: {self._child_problem(code)}")
        elif self._reply_error:
            self._fail(f"error: reconstruction output is not a valid stream: {self._reply_error}")

    def _stalled_input(self, stall: Stalled) -> str:
        if not stall.moved:
            return (
                f"idle: no data from the client for {stall.seconds:g} s in the middle of its "
                "stream (--idle-timeout)"
            )
        return (
            f"slow: {stall.moved} bytes from the client in {stall.seconds:g} s before its CLOSE, "
            f"expected at least {MIN_PROGRESS_BYTES} (--idle-timeout)"
        )

    def _stalled_output(self, stall: Stalled) -> str:
        if not stall.moved:
            return (
                f"client stopped taking its reply: nothing taken for {stall.seconds:g} s "
                "(--idle-timeout)"
            )
        return (
            f"client stopped taking its reply: {stall.moved} bytes taken in {stall.seconds:g} s, "
            f"expected at least {MIN_PROGRESS_BYTES} (--idle-timeout)"
        )

    def _stopped_or(self, outcome: str) -> str:
        return "stopped by server shutdown" if self.stopping else outcome

    def _child_problem(self, code: int | None) -> str:
        lines = bytes(self._stderr).decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no message"
        return f"reconstruction exited with status {code}: {last}"

    def _fail(self, outcome: str, client: str | None = None) -> None:
        """Record the outcome and tell a still-connected client (``client``, or the outcome
        itself) with a TEXT message."""
        self.report.outcome = outcome
        if self.input_state == "reset" or self._reply_gone or self._reply_stall is not None:
            return
        if self.generation == "mrd2":
            return
        with contextlib.suppress(OSError, Stalled):
            self._wire.write(encode_message(Text(client or outcome)))

    # ----------------------------------------------------------------- pumps
    def _pump_in(self, opening: bytes) -> None:
        """Socket -> child stdin, message by message up to CLOSE (progress-timed until
        then); the rest is passed on raw (the child warns about data after CLOSE), with no
        time limit."""
        child = self.child
        assert child is not None and child.stdin is not None
        stdin: IO[bytes] = child.stdin
        tee = TeeReader(_Prefixed(opening, self._wire), stdin)  # type: ignore[arg-type]
        reader = open_reader(tee, require_close=False)  # type: ignore[arg-type]
        reader.expect_acquisitions(0)  # read what has arrived, not message by message
        try:
            while self.input_state == "reading":
                mid = skip_message(reader)
                tee.flush()
                if mid is None:
                    self.input_state = "ended"
                elif mid is MessageId.CLOSE:
                    self.input_state = "complete"
        except TruncatedStreamError:
            self.input_state = "ended"  # the client's side ended inside a message
        except ProtocolError:
            self.input_state = "unparsed"  # the child reports what is wrong with it
        except Stalled as exc:
            self.input_state = "stalled"
            self._stall = exc
        except (BrokenPipeError, ValueError):
            self.input_state = "complete"  # the child stopped reading: it says why
        except OSError:
            self.input_state = "reset"
        if self.input_state == "stalled":
            self.stop_child()
        elif self.input_state == "ended":  # the child gets every byte sent, and says why
            with contextlib.suppress(OSError, ValueError):
                tee.flush()
        elif self.input_state in ("complete", "unparsed"):
            with contextlib.suppress(OSError, ValueError):
                tee.flush()
                if self.input_state == "complete":
                    self._wire.streaming(None)  # a quiet client waits for its images
                self._forward_rest(stdin)
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _forward_rest(self, stdin: IO[bytes] | None) -> None:
        """Raw copy until EOF; once the child stops reading, discard."""
        buffer = bytearray(_CHUNK)
        while True:
            try:
                n = self._wire.readinto(buffer)
            except Stalled as exc:
                self.input_state = "stalled"
                self._stall = exc
                self.stop_child()
                return
            except (OSError, ValueError):
                return
            if not n:
                return
            if stdin is not None:
                try:
                    stdin.write(memoryview(buffer)[:n])
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
        tee = TeeReader(child.stdout, self._wire)
        reader = open_reader(tee, require_close=False)  # type: ignore[arg-type]
        reader.expect_acquisitions(0)
        closed = False
        try:
            while (mid := skip_message(reader)) is not None:
                tee.flush()
                if mid is MessageId.IMAGE:
                    self.report.images += 1
                elif mid is MessageId.CLOSE:
                    closed = True
        except ProtocolError as exc:
            with contextlib.suppress(OSError, Stalled):
                tee.flush()
            self._reply_error = str(exc)
        except Stalled as exc:
            self._reply_stall = exc
            self.stop_child()
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

    def interrupt_waiting(self) -> bool:
        """Server shutdown: stop a connection that has not started its reconstruction
        (waiting for its header, a slot or memory); False when it has one to finish."""
        with self._lock:
            if self.child is not None:
                return False
            self.stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        return True

    def _close_socket(self) -> None:
        """The lingering close: the client reads our last words before any reset."""
        close_lingering(self.sock, _LINGER)

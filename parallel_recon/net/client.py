"""Client side of remote reconstruction: send a stream, receive the reply.

The socat replacement.  The request goes out from a thread while the reply is read, so a
server that streams images back while input is still arriving never deadlocks against a
full socket buffer.  After the last input byte the client half-closes (``SHUT_WR``) and
keeps reading until the server closes: no fixed timeout.  The reply is parsed on the way
through, so a reply without CLOSE (a dropped connection or a failed reconstruction) is an
error rather than a silently short file.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Protocol, TextIO, cast

from ..errors import ProtocolError, ReconError, TruncatedStreamError
from ..progress import Progress
from ..protocol import Close, Text, after_close_warning, open_reader
from ..protocol.mrd2 import MAGIC as MRD2_MAGIC
from ..protocol.text import printable

__all__ = ["RemoteError", "SendReport", "TeeReader", "parse_address", "send_stream"]

_CHUNK = 1 << 20
_SENDER_SETTLE_S = 5.0
"""How long a reader that saw the reply end waits for the sender to report a reset."""
_CLOSE_BYTES = b"\x04\x00"


class _Readable(Protocol):
    """What a binary file, pipe or socket file offers."""

    def readinto(self, buffer: Any, /) -> int | None: ...


class _Writable(Protocol):
    """A binary file, pipe, or the server's client socket (:class:`~.wire.Wire`)."""

    def write(self, data: bytes, /) -> Any: ...


class TeeReader:
    """A ``readinto`` source that copies every byte it delivers to ``sink``.

    Lets a :class:`StreamReader` parse a reply while the raw bytes are forwarded unchanged;
    call :meth:`flush` at message boundaries so a peer sees each message as soon as it is
    complete.
    """

    def __init__(self, source: IO[bytes], sink: _Writable | socket.socket):
        self._readinto = cast(_Readable, source).readinto
        self._readinto1 = getattr(source, "readinto1", self._readinto)
        self._send = sink.sendall if isinstance(sink, socket.socket) else sink.write
        self._flush_sink = getattr(sink, "flush", None)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._limit: int | None = None
        self.forwarded = 0

    def end_at(self, offset: int) -> None:
        """Forward nothing past byte ``offset`` of the stream (the end of its CLOSE)."""
        self._limit = offset

    def readinto(self, buffer: memoryview | bytearray) -> int:
        return self._keep(buffer, self._readinto(buffer) or 0)

    def readinto1(self, buffer: memoryview | bytearray) -> int:
        """What the source has ready (so the parser may read ahead), copied the same way."""
        return self._keep(buffer, self._readinto1(buffer) or 0)

    def _keep(self, buffer: memoryview | bytearray, n: int) -> int:
        if n:
            keep = n
            if self._limit is not None:
                keep = max(0, min(n, self._limit - self.forwarded - self._pending_bytes))
            if keep:
                self._pending.append(bytes(memoryview(buffer)[:keep]))
                self._pending_bytes += keep
            if self._pending_bytes >= _CHUNK:
                self.flush()
        return n

    def flush(self) -> None:
        """Forward what was read so far."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._send(data)
            self.forwarded += len(data)
        if self._flush_sink is not None:
            self._flush_sink()


class RemoteError(ReconError):
    """The server could not be reached, or the connection or the reply broke."""


@dataclass
class SendReport:
    """What one exchange moved."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages: int = 0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RemoteError(f"expected HOST:PORT (e.g. 127.0.0.1:9222), found {text!r}")
    return host.strip("[]"), int(port)


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise RemoteError(
            f"cannot connect to {host}:{port}: connection refused (is the server running?)"
        ) from None
    except TimeoutError:
        raise RemoteError(
            f"cannot connect to {host}:{port}: timed out after {timeout:g} s"
        ) from None
    except OSError as exc:
        raise RemoteError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    sock.settimeout(None)
    return sock


class _Sender(threading.Thread):
    """Copies the request to the socket, then half-closes it."""

    def __init__(self, source: BinaryIO, sock: socket.socket, report: SendReport):
        super().__init__(daemon=True)
        self.source = source
        self.sock = sock
        self.report = report
        self.error: OSError | None = None
        self.head = b""
        """The first bytes sent: they tell the stream's generation."""
        self.tail = b""
        """The last bytes sent: a complete v1 stream ends with CLOSE (id 4, two bytes), a v2
        stream with its end-of-stream mark (an empty block: one zero byte)."""
        self.done = threading.Event()
        """Set when the whole input was sent."""

    def run(self) -> None:
        read = getattr(self.source, "read1", self.source.read)
        try:
            while chunk := read(_CHUNK):
                self.sock.sendall(chunk)
                self.report.bytes_sent += len(chunk)
                if len(self.head) < len(_CLOSE_BYTES):
                    self.head = (self.head + chunk)[: len(_CLOSE_BYTES)]
                self.tail = (self.tail + chunk)[-len(_CLOSE_BYTES) :]
            self.sock.shutdown(socket.SHUT_WR)
            self.done.set()
        except OSError as exc:  # the server closed early; the reply says why
            self.error = exc
        except ValueError:  # the input was closed under us: the command is exiting already
            pass

    def sent_whole_stream(self) -> bool:
        """Whether what was sent ends as a complete stream of its generation does."""
        if self.head == MRD2_MAGIC[: len(self.head)] and self.head:
            return self.tail.endswith(b"\x00")
        return self.tail == _CLOSE_BYTES


def send_stream(
    address: str,
    source: BinaryIO,
    sink: BinaryIO,
    *,
    log: TextIO | None = None,
    connect_timeout: float = 30.0,
    progress: Progress | None = None,
) -> SendReport:
    """Send ``source`` to the server at ``address`` and write its reply to ``sink``.

    TEXT messages in the reply are also echoed to ``log`` (stderr by default), since servers
    use them for status and error messages; ``progress`` counts reply messages and bytes.
    Raises :class:`RemoteError` on refusal, a
    dropped connection, or a reply that ends without CLOSE.
    """
    log = log if log is not None else sys.stderr
    host, port = parse_address(address)
    report = SendReport()
    sock = _connect(host, port, connect_timeout)
    where = f"{host}:{port}"
    with contextlib.closing(sock):
        sender = _Sender(source, sock, report)
        sender.start()
        tee = TeeReader(cast(BinaryIO, sock.makefile("rb", buffering=_CHUNK)), sink)
        reader = open_reader(tee, require_close=False)  # type: ignore[arg-type]
        closed = False
        last_text = ""
        after_close = ""
        try:
            while (msg := reader.read_message()) is not None:
                tee.flush()
                report.messages += 1
                if progress is not None:
                    progress.update(1, nbytes=reader.offset - report.bytes_received)
                    report.bytes_received = reader.offset
                if last_text:  # an earlier TEXT was not the server's last word: show it
                    print(f"server {where}: {last_text}", file=log, flush=True)
                    last_text = ""
                if isinstance(msg, Text):
                    last_text = printable(msg.text)  # the sender's text, not terminal codes
                elif isinstance(msg, Close):
                    closed = True
                    tee.end_at(reader.offset)  # the reply ends at CLOSE, whatever follows
                    if reader.data_after_close(wait=True):
                        after_close = after_close_warning(reader)
                    tee.flush()
                    break
        except ProtocolError as exc:
            tee.flush()
            report.bytes_received = tee.forwarded
            if isinstance(exc, TruncatedStreamError) and _was_reset(sock, sender):
                raise RemoteError(_dropped(where, report, last_text)) from None
            raise RemoteError(f"reply from {where} is broken: {exc}") from None
        except (ConnectionResetError, ConnectionAbortedError):
            tee.flush()
            report.bytes_received = tee.forwarded
            raise RemoteError(_dropped(where, report, last_text)) from None
        report.bytes_received = tee.forwarded
        if progress is not None:
            progress.finish()
        if closed and last_text:
            print(f"server {where}: {last_text}", file=log, flush=True)
        if after_close:
            print(f"warning: reply from {where}: {after_close}", file=log, flush=True)
        if not closed:
            if _was_reset(sock, sender):
                raise RemoteError(_dropped(where, report, last_text))
            if sender.done.wait(1.0) and not sender.sent_whole_stream():
                raise RemoteError(
                    f"the input ended after {report.bytes_sent} bytes without a CLOSE message "
                    "(it is incomplete: was it cut short?), so the server could not finish"
                    f"{_said(last_text)}"
                )
            raise RemoteError(
                f"server {where} closed the connection after {report.bytes_received} bytes "
                f"without sending CLOSE{_said(last_text)}"
            )
    return report


def _said(text: str) -> str:
    return f" (server said: {text})" if text else ""


def _dropped(where: str, report: SendReport, last_text: str) -> str:
    return (
        f"connection to {where} dropped (reset by the server) after "
        f"{report.bytes_received} bytes received{_said(last_text)}"
    )


def _was_reset(sock: socket.socket, sender: _Sender) -> bool:
    """Whether the end of the reply was a reset rather than the server's orderly close.

    The kernel reports a reset once, to whichever call asks first: the reply's reader or
    the request's sender.  A reader that saw an end of file asks the socket, then the
    sender (whose failing send returns at once: no wait on the request's source).
    """
    with contextlib.suppress(OSError):
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
            return True
    if sender.error is None and sender.is_alive():
        sender.join(_SENDER_SETTLE_S)
    return isinstance(sender.error, ConnectionResetError)

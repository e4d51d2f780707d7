"""A client's socket with time limits that a slow trickle cannot defeat.

A timeout on silence alone is defeated by one byte every few seconds, so each direction of a
connection has a clock that measures *progress*: until its header is complete a client has
one deadline for all of it (:class:`Deadline`), and after that each direction must move at
least :data:`MIN_PROGRESS_BYTES` for every ``--idle-timeout`` seconds spent waiting on the
client (:class:`ProgressClock`).  Only time spent waiting on the client counts: while the
reconstruction is busy and the server is not reading, the client is not at fault.

:class:`Wire` is the socket in non-blocking mode, shared by the connection's two pumps: its
``readinto`` (for the stream parser) waits on the input clock, its ``write`` (for the reply)
on the output clock.
"""

from __future__ import annotations

import select
import socket
import time

__all__ = ["MIN_PROGRESS_BYTES", "Deadline", "ProgressClock", "Stalled", "Wire", "client_gone"]

MIN_PROGRESS_BYTES = 16 << 10
"""What a client must send (before its CLOSE) or take (of its reply) per --idle-timeout."""


class Stalled(TimeoutError):
    """A direction of a connection made too little progress in time.

    ``moved`` bytes went through in the ``seconds`` spent waiting; ``deadline`` tells a
    header that did not arrive in time from a stream that slowed down.
    """

    def __init__(self, moved: int, seconds: float, deadline: bool = False):
        super().__init__(f"{moved} bytes in {seconds:g} s")
        self.moved = moved
        """Bytes moved in the last ``seconds`` (0: the client was silent all that time)."""
        self.seconds = seconds
        self.deadline = deadline


class Deadline:
    """All of it within ``seconds`` of now (None: no limit)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds
        self._moved = 0

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def moved(self, nbytes: int) -> None:
        self._moved += nbytes

    def waited(self, seconds: float) -> None:
        if self._end is not None and time.monotonic() >= self._end:
            raise Stalled(self._moved, float(self.seconds or 0), deadline=True)


class ProgressClock:
    """At least ``minimum`` bytes per ``window`` seconds of waiting (None: no limit).

    The window restarts whenever ``minimum`` bytes have moved; it runs only while the
    connection waits for the client.
    """

    def __init__(self, window: float | None, minimum: int = MIN_PROGRESS_BYTES):
        self.window = window
        self.minimum = minimum
        self._waited = 0.0
        self._moved = 0
        self._silent = 0.0
        """Seconds waited since the last byte moved."""

    def remaining(self) -> float | None:
        return None if self.window is None else max(0.0, self.window - self._waited)

    def moved(self, nbytes: int) -> None:
        self._moved += nbytes
        if nbytes:
            self._silent = 0.0
        if self._moved >= self.minimum:
            self._moved, self._waited = 0, 0.0

    def waited(self, seconds: float) -> None:
        self._waited += seconds
        self._silent += seconds
        if self.window is not None and self._waited >= self.window:
            raise Stalled(0 if self._silent >= self.window else self._moved, self.window)


def _wait(sock: socket.socket, event: int, timeout: float | None) -> None:
    poller = select.poll()
    poller.register(sock, event)
    poller.poll(None if timeout is None else timeout * 1000)


def client_gone(sock: socket.socket) -> bool:
    """Whether the client reset the connection (or both directions are shut).

    A client that only half-closed after sending its stream is still there, waiting for its
    reply; one that reset it is not, whatever data it left in the receive queue.
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


class Wire:
    """The client's socket, non-blocking, with one progress clock per direction.

    Parameters
    ----------
    sock:
        The accepted socket (switched to non-blocking mode here).
    idle_timeout:
        ``--idle-timeout`` (None: no limit): the deadline for everything before the first
        acquisition (after that :meth:`streaming` starts the input's progress clock), and
        the output's window.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float | None):
        sock.setblocking(False)
        self.sock = sock
        self.input: Deadline | ProgressClock = Deadline(idle_timeout)
        self.output = ProgressClock(idle_timeout)
        self.received = 0
        """Bytes received from the client so far."""

    def streaming(self, window: float | None) -> None:
        """From now on the input must progress (``window``: seconds; None: no limit)."""
        self.input = ProgressClock(window)

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """One ``recv`` of what has arrived (waiting for something); 0 at the end.

        Raises :class:`Stalled` when the input clock runs out, OSError on a reset.
        """
        clock = self.input
        while True:
            try:
                n = self.sock.recv_into(buffer)
            except BlockingIOError:
                started = time.monotonic()
                _wait(self.sock, select.POLLIN, clock.remaining())
                clock.waited(time.monotonic() - started)
                continue
            self.received += n
            clock.moved(n)
            return n

    readinto1 = readinto

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; :class:`Stalled` when the client does not take it in time."""
        view = memoryview(data).cast("B")
        clock = self.output
        while view.nbytes:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                started = time.monotonic()
                _wait(self.sock, select.POLLOUT, clock.remaining())
                clock.waited(time.monotonic() - started)
                continue
            clock.moved(n)
            view = view[n:]

"""Closing a client's socket without destroying the last words sent on it.

Closing a socket whose input has not all been read makes the kernel send a reset, and a
reset can reach the client before it has read our reply (or the TEXT saying why it was
refused): the client then sees "connection reset" instead of the reason.  So every close
lingers: half-close, read and discard what the client still sends until it closes its
side, for a bounded time, then close.

A connection's own thread can afford to wait :data:`LINGER_S` (:func:`close_lingering`).
The accept loop cannot, so refused sockets go to one :class:`LingeringCloser` thread, which
holds at most :data:`MOST_LINGERING` of them for :data:`REFUSED_LINGER_S` each and discards
at most :data:`DISCARD_LIMIT` bytes from each: a flood of refused clients costs a bounded
number of descriptors, never a thread each.  A refused client may only start sending after
the refusal is written (it connected, then prepared its data), so it gets longer than a
connection that has just had its reply.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections import OrderedDict

LINGER_S = 1.0
REFUSED_LINGER_S = 5.0
DISCARD_LIMIT = 1 << 20
MOST_LINGERING = 64
_CHUNK = 64 << 10


def close_lingering(sock: socket.socket, linger_s: float = LINGER_S) -> None:
    """Half-close, discard the client's input until it closes or ``linger_s`` passes, then
    close (a client still streaming a large dataset after an error is not cut short by a
    byte count: the time bounds it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(True)
        deadline = time.monotonic() + linger_s
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        buffer = bytearray(_CHUNK)
        while (left := deadline - time.monotonic()) > 0 and poller.poll(left * 1000):
            if not sock.recv_into(buffer):
                break
    with contextlib.suppress(OSError):
        sock.close()


class LingeringCloser:
    """One thread that closes refused sockets the lingering way, many at a time."""

    def __init__(self, linger_s: float = REFUSED_LINGER_S, most: int = MOST_LINGERING):
        self.linger_s = linger_s
        self.most = most
        # fd -> (socket, deadline, bytes discarded); oldest first
        self._lingering: OrderedDict[int, tuple[socket.socket, float, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._let_go = threading.Condition(self._lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lingering-closer", daemon=True)
        self._thread.start()

    def hand_over(self, sock: socket.socket) -> None:
        """Half-close ``sock`` now and close it once its client has closed (or the time is up).

        When :data:`MOST_LINGERING` sockets already linger, the oldest is closed at once.
        """
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        with self._lock:
            if self._closed:
                _close(sock)
                return
            while len(self._lingering) >= self.most:
                _, (oldest, _, _) = self._lingering.popitem(last=False)
                _close(oldest)
            sock.setblocking(False)
            self._lingering[sock.fileno()] = (sock, time.monotonic() + self.linger_s, 0)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Close every lingering socket now and stop the thread."""
        with self._lock:
            self._closed = True
            lingering, self._lingering = self._lingering, OrderedDict()
        for sock, _, _ in lingering.values():
            _close(sock)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def wait_empty(self, timeout: float) -> bool:
        """Block until no socket lingers (True) or ``timeout`` passes (False)."""
        with self._let_go:
            return self._let_go.wait_for(lambda: not self._lingering, timeout)

    @property
    def lingering(self) -> int:
        """How many sockets wait for their clients to close."""
        with self._lock:
            return len(self._lingering)

    def _run(self) -> None:
        buffer = bytearray(_CHUNK)
        while True:
            with self._lock:
                if self._closed:
                    return
                self._close_expired()
                fds = list(self._lingering)
                wait = min((d for _, d, _ in self._lingering.values()), default=None)
            timeout = None if wait is None else max(0.0, wait - time.monotonic())
            poller = select.poll()  # not select(): descriptors past 1023 are normal here
            for fd in (self._wake_r, *fds):
                poller.register(fd, select.POLLIN)
            ready = [fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)]
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            with self._lock:
                for fd in ready:
                    if fd in self._lingering:
                        self._discard(fd, buffer)

    def _discard(self, fd: int, buffer: bytearray) -> None:
        """(lock held) Read what arrived; close at the client's EOF or past the limit."""
        sock, deadline, taken = self._lingering[fd]
        try:
            count = sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            count = 0
        if not count or taken + count >= DISCARD_LIMIT:
            del self._lingering[fd]
            _close(sock)
            self._let_go.notify_all()
        else:
            self._lingering[fd] = (sock, deadline, taken + count)

    def _close_expired(self) -> None:
        """(lock held)"""
        now = time.monotonic()
        for fd in [fd for fd, (_, deadline, _) in self._lingering.items() if deadline <= now]:
            _close(self._lingering.pop(fd)[0])
            self._let_go.notify_all()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

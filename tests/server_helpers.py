"""A real ``parallel-recon serve`` process for the server tests, and raw socket clients.

Tests synchronise on what the server does, never on sleeps: :meth:`ServerProcess.wait_for`
blocks until a log line (or any condition of the log) appears, and the process tree is
counted with psutil.  Memory is measured exactly, by the kernel's high-water mark of the
server process (``VmHWM``), not by sampling.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
from conftest import script

STARTUP_S = 30
MiB = 1 << 20
FORK_SERVER = "pr-forkserver"
READY_ENGINE = "pr-ready"
"""Process names (``comm``) of serve's fork server and of its engines waiting for a
connection: part of the server itself, not of any connection."""
_T = TypeVar("_T")


class ServerProcess:
    """``parallel-recon serve --port 0 ...`` with its stderr collected line by line."""

    def __init__(
        self,
        *args: str,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.proc = subprocess.Popen(
            argv or [script("parallel-recon"), "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            first = self.wait_for(
                lambda lines: next((x for x in lines if "listening on" in x), None),
                "its 'listening on' line",
                STARTUP_S,
            )
        except AssertionError:
            self.stop()
            raise
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, self.lines
        self.port = int(match.group(1))
        self.address = f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[list[str]], _T], what: str, timeout: float = 60) -> _T:
        """Block until ``condition(lines)`` is true (a log event); its value.

        Raises AssertionError naming ``what`` when the server ends or ``timeout`` passes
        first (a generous bound that only keeps a broken server from hanging the suite).
        """
        with self._changed:
            self._changed.wait_for(lambda: bool(condition(self.lines)) or self._ended, timeout)
            found = condition(list(self.lines))
        if not found:
            raise AssertionError(f"the server's log never showed {what}: {self.lines}")
        return found

    def connection_lines(self) -> list[str]:
        with self._changed:
            return [line for line in self.lines if " in=" in line]

    def wait_for_connections(self, count: int, timeout: float = 60) -> list[str]:
        """The first ``count`` end-of-connection lines, once they are all there."""
        return self.wait_for(
            lambda lines: (found := [x for x in lines if " in=" in x])[count - 1 :] and found,
            f"{count} connection line(s)",
            timeout,
        )

    def line_of(self, port: int, timeout: float = 60) -> str:
        """The end-of-connection line of the client whose local port is ``port``."""
        prefix = f"serve: 127.0.0.1:{port} "
        return self.wait_for(
            lambda lines: next((x for x in lines if x.startswith(prefix) and " in=" in x), ""),
            f"the line of the client on port {port}",
            timeout,
        )

    def children(self) -> list[psutil.Process]:
        """Every process below the server that serves a connection (recons and their
        workers): all but the fork server and its ready engines."""
        try:
            below = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p for p in below if _name(p) not in (FORK_SERVER, READY_ENGINE, None)]

    def recons(self) -> list[psutil.Process]:
        """One process per running connection: a recon (or filter) the server started, or an
        engine of its fork server that took a connection."""
        try:
            direct = psutil.Process(self.proc.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        found = []
        for process in direct:
            if _name(process) != FORK_SERVER:
                found.append(process)
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                found += [e for e in process.children() if _name(e) == "pr-recon"]
        return found

    def fork_server(self) -> psutil.Process:
        """The server's fork server (its only child named so)."""
        (found,) = [p for p in psutil.Process(self.proc.pid).children() if _name(p) == FORK_SERVER]
        return found

    def peak_rss(self) -> int:
        """The server process's resident-memory high-water mark (``VmHWM``), in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        assert match, status
        return int(match.group(1)) * 1024

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    child.kill()
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


def _name(process: psutil.Process) -> str | None:
    """The process's name, None once it is gone."""
    try:
        return str(process.name())
    except psutil.NoSuchProcess:
        return None


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll a condition that no log line announces (a process count); AssertionError naming
    ``what`` after ``timeout`` (a bound against hanging, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A client socket from ``source`` (any 127.x.y.z works on Linux loopback)."""
    return socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its data ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def exchange(port: int, data: bytes, half_close: bool = True, source: str = "127.0.0.1") -> bytes:
    """Send all data, optionally half-close, and read until the server closes.

    python-ismrmrd-server's client does not half-close: it sends CLOSE and waits.
    """
    with connect(port, source) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock)

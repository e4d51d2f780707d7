"""TCP reconstruction server: one full reconstruction per connection.

Each accepted connection gets its own child process running the same pipeline as
``mrd_stream_recon`` (or any stdin-to-stdout filter given with ``command``); see
:mod:`.connection` for what happens on one connection.  A child per connection keeps clients
isolated: a malformed or vanishing client ends only its own child, and the child's own
supervisor cleans up its workers and shared memory.

Connections are accepted as they arrive and take a reconstruction slot (``max_connections``
of them) only once their header has arrived, so clients that connect and send nothing never
hold a slot, and are closed after ``idle_timeout`` seconds.  Each connection logs one line:
its time waiting for a slot (``queued``) apart from its reconstruction time (``recon``),
and its outcome.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from ..engine.kernels import KERNELS
from ..protocol import ConfigFile
from ..protocol.messages import Message
from .connection import PRELUDE_IDS, Connection, ConnectionReport

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "PRELUDE_IDS",
    "ConnectionReport",
    "ReconServer",
    "ServerConfig",
    "choose_kernel",
    "recon_command",
]

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds a client may send nothing before its stream is complete (``--idle-timeout``)."""

WAITING = 64
"""Connections accepted beyond ``max_connections`` (waiting for their header or a slot);
more stay in the kernel's listen backlog until one ends."""

_CHILD_EXIT_WAIT = 10.0


@dataclass(frozen=True)
class ServerConfig:
    """What ``parallel-recon serve`` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 9222
    workers: int | None = None
    """``--workers`` of each connection's reconstruction (None: the recon's default)."""
    max_connections: int = 8
    """Connections reconstructed at once; more wait (accepted) for a free slot."""
    recon: str = "auto"
    """Kernel used when the client's config name does not choose one."""
    config_map: Mapping[str, str] = field(default_factory=dict)
    """CONFIG_FILE name -> kernel (name or path), checked before the built-in names."""
    command: Sequence[str] | None = None
    """A filter run per connection instead of the built-in recon (no kernel choice then)."""
    drain_timeout: float = 60.0
    """Seconds that SIGTERM waits for running connections before stopping them."""
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    """Seconds without a byte from a client before its stream is complete (None: no limit)."""
    recon_args: Sequence[str] = ()
    """More ``mrd_stream_recon`` options for every connection (``--image-type complex``,
    ``--recon-option k=v``)."""


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
        *config.recon_args,
    ]
    if config.workers is not None:
        cmd += ["--workers", str(config.workers)]
    return cmd


class ReconServer:
    """Listens, serves each connection in a thread, drains on :meth:`request_stop`."""

    def __init__(self, config: ServerConfig, log: TextIO | None = None):
        self.config = config
        self.log = log if log is not None else sys.stderr
        self.listener = socket.create_server((config.host, config.port), backlog=64)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self._open = threading.BoundedSemaphore(max(1, config.max_connections) + WAITING)
        self._slots = threading.BoundedSemaphore(max(1, config.max_connections))
        self._active: dict[int, tuple[threading.Thread, Connection]] = {}
        self._active_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._next_id = 0

    def say(self, text: str) -> None:
        """One log line on the server's stderr."""
        with self._log_lock:
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
            while self._wait(self._open):
                if not self._wait_readable():
                    self._open.release()
                    break
                try:
                    sock, addr = self.listener.accept()
                except OSError:
                    self._open.release()
                    continue
                self._start(sock, f"{addr[0]}:{addr[1]}")
        finally:
            self.listener.close()
            self._drain()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wait(self, semaphore: threading.BoundedSemaphore) -> bool:
        """Wait for ``semaphore``; False once a stop was requested."""
        while not self._stopping.is_set():
            if semaphore.acquire(timeout=0.2):
                return True
        return False

    def _start(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        config = self.config
        conn = Connection(
            sock,
            peer,
            command=lambda kernel: recon_command(config, kernel),
            choose=lambda prelude: "" if config.command else choose_kernel(prelude, config),
            acquire_slot=lambda: self._wait(self._slots),
            release_slot=self._slots.release,
            idle_timeout=config.idle_timeout,
        )
        ident = self._next_id
        self._next_id += 1
        thread = threading.Thread(target=self._handle, args=(ident, conn), daemon=True)
        with self._active_lock:
            self._active[ident] = (thread, conn)
        thread.start()

    def _handle(self, ident: int, conn: Connection) -> None:
        try:
            conn.run()
            self.say(conn.report.line())
        except Exception as exc:  # a bug must not take the other connections down
            conn.report.outcome = f"internal error: {type(exc).__name__}: {exc}"
            self.say(conn.report.line())
        finally:
            with self._active_lock:
                del self._active[ident]
            self._open.release()

    def _drain(self) -> None:
        with self._active_lock:
            running = list(self._active.values())
        if not running:
            return
        for _, conn in running:
            if conn.child is None:  # waiting for its header or a slot: nothing to finish
                conn.interrupt()
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
            conn.stopping = True
            conn.stop_child()  # the connection then tells its client and ends by itself
        for thread, conn in stopped:
            thread.join(timeout=_CHILD_EXIT_WAIT)
            if thread.is_alive():  # a client that neither reads nor closes
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
                thread.join(timeout=_CHILD_EXIT_WAIT)

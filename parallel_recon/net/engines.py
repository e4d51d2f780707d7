"""``serve``'s side of the ready engines: start the fork server, hand it connections.

:class:`EnginePool` starts the fork server (:mod:`.forkserver`) from the server's main
thread, so that it dies with the server and not with a connection's thread, and talks to it
over a Unix socket: :meth:`EnginePool.spawn` passes a connection's command-line arguments
and three fresh pipes, and returns a :class:`PooledChild` that a connection drives like the
``subprocess.Popen`` of a cold-started recon (``stdin``, ``stdout``, ``stderr``, ``pid``,
``poll``, ``wait``, ``terminate``).  A thread reads the fork server's reports: which engine
took a connection, and how each one ended.

When the fork server is gone (killed, or it failed to start), :meth:`spawn` raises
:class:`EnginesGone` and the server starts that connection's recon cold, as before.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from ..engine.cores import single_threaded_environment
from .forkserver import receive, send

__all__ = ["EnginePool", "EnginesGone", "PooledChild"]

_START_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 15.0
_FORKSERVER_MAIN = "import sys; from parallel_recon.net.forkserver import main; sys.exit(main())"


class EnginesGone(OSError):
    """The fork server is not there to take a connection."""


class PooledChild:
    """A connection's recon running in an engine of the pool, driven like a ``Popen``."""

    def __init__(
        self,
        argv: Sequence[str],
        pid: int,
        pidfd: int | None,
        pipes: tuple[IO[bytes], IO[bytes], IO[bytes]],
    ):
        self.args = list(argv)
        self.pid = pid
        self.stdin: IO[bytes] | None = pipes[0]
        self.stdout: IO[bytes] | None = pipes[1]
        self.stderr: IO[bytes] | None = pipes[2]
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._ended = threading.Event()

    def _exited(self, status: int) -> None:
        """The fork server reaped it (``status`` as ``waitpid`` gives it)."""
        self.returncode = os.waitstatus_to_exitcode(status)
        self._ended.set()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self._ended.is_set():
            return
        pidfd = self._pidfd
        if pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(pidfd, signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class EnginePool:
    """The fork server and the connections its engines run.

    Parameters
    ----------
    entry:
        ``module:function`` an engine runs with a connection's arguments.
    kernels:
        Kernels to import ahead (names or paths, as ``--recon`` takes them).
    ready:
        Engines kept waiting.
    log:
        One line to the server's log.
    """

    def __init__(self, entry: str, kernels: Sequence[str], ready: int, log: Callable[[str], None]):
        self._log = log
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -I: nothing from the server's working directory, PYTHONPATH or the user's site
        command = [sys.executable, "-I", "-c", _FORKSERVER_MAIN, "--entry", entry]
        command += ["--control-fd", str(theirs.fileno()), "--parent", str(os.getpid())]
        command += ["--ready", str(ready)]
        for kernel in kernels:
            command += ["--kernel", kernel]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                env=single_threaded_environment(),  # its imports load numpy at once
            )
        finally:
            theirs.close()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._children: dict[int, PooledChild] = {}
        self._early_exits: dict[int, int] = {}
        self._gone = False
        self._ready = threading.Event()
        self.ready_pids: list[int] = []
        self._reader = threading.Thread(target=self._read, name="engine pool", daemon=True)
        self._reader.start()

    # ---------------------------------------------------------------- reports
    def _read(self) -> None:
        while True:
            try:
                message, fds = receive(self._control, 1)
            except OSError:
                message, fds = None, []
            if message is None:
                break
            self._dispatch(message, fds)
        self._fork_server_gone()

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == "ready":
            self.ready_pids = list(message["pids"])
            self._ready.set()
        elif op in ("started", "failed"):
            with self._lock:
                waiting = self._waiting.pop(int(message["id"]), None)
            if waiting is None:
                for fd in fds:
                    os.close(fd)
                return
            waiting[1].extend([message, fds])
            waiting[0].set()
        elif op == "exit":
            pid, status = int(message["pid"]), int(message["status"])
            with self._lock:
                child = self._children.pop(pid, None)
                if child is None:
                    self._early_exits[pid] = status  # ended before spawn() saw it start
            if child is not None:
                child._exited(status)

    def _fork_server_gone(self) -> None:
        """Its engines died with it (PR_SET_PDEATHSIG): every running one is over."""
        with self._lock:
            self._gone = True
            children = list(self._children.values())
            self._children.clear()
            waiting = list(self._waiting.values())
            self._waiting.clear()
        for child in children:
            child._exited(signal.SIGKILL)  # a wait status: killed by SIGKILL
        for event, _ in waiting:
            event.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first engines are ready; False when the fork server failed."""
        self._ready.wait(timeout)
        with self._lock:
            return bool(self.ready_pids) and not self._gone

    # ----------------------------------------------------------------- spawn
    def spawn(self, argv: Sequence[str]) -> PooledChild:
        """Run ``argv`` (the recon's arguments) in a ready engine, on three new pipes."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ident = next(self._ids)
        event: threading.Event = threading.Event()
        answer: list[Any] = []
        try:
            with self._lock:
                if self._gone:
                    raise EnginesGone("the fork server is gone")
                self._waiting[ident] = (event, answer)
            try:
                send(
                    self._control,
                    {"op": "start", "id": ident, "argv": list(argv)},
                    [stdin_r, stdout_w, stderr_w],
                )
            except OSError as exc:
                raise EnginesGone(f"the fork server is gone ({exc.strerror or exc})") from None
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        if not event.wait(_START_TIMEOUT_S) or not answer:
            for fd in (stdin_w, stdout_r, stderr_r):
                os.close(fd)
            raise EnginesGone("the fork server did not answer")
        message, fds = answer
        if message["op"] != "started":
            for fd in (stdin_w, stdout_r, stderr_r, *fds):
                os.close(fd)
            raise EnginesGone(f"the fork server could not start an engine: {message['error']}")
        pipes = (
            os.fdopen(stdin_w, "wb"),
            os.fdopen(stdout_r, "rb"),
            os.fdopen(stderr_r, "rb"),
        )
        child = PooledChild(argv, int(message["pid"]), fds[0] if fds else None, pipes)
        with self._lock:
            status = self._early_exits.pop(child.pid, None)
            if status is None:
                self._children[child.pid] = child
        if status is not None:
            child._exited(status)
        return child

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Stop the fork server (it kills its idle engines) and wait for it."""
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        try:
            self.process.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
        self._reader.join(timeout=_CLOSE_TIMEOUT_S)
        self._control.close()

"""The fork server behind ``serve``'s ready engines: one imported process, forked per connection.

A fresh interpreter per connection pays for Python, numpy, the engine and the kernels (a
few hundred milliseconds) before it reads its client's first byte.  This program pays for
them once: ``serve`` starts it (``python -I``, like every child of the server, so nothing is
imported from the working directory), it imports the reconstruction's entry point, the
kernels and what they import, and keeps ``--ready`` *engines* forked from itself, each
waiting for a connection.  ``serve`` hands a connection to it as three pipe ends (the
recon's stdin, stdout and stderr) and its command-line arguments over a Unix socket; an
engine takes them, runs the entry point as ``mrd_stream_recon`` would, and exits.  The fork
server forks a replacement at once.

Lifetimes: the fork server dies with ``serve`` and every engine with the fork server
(``PR_SET_PDEATHSIG``); an engine runs in a session of its own, so signalling its process
group reaches the reader, workers and writer it forks.  The fork server reaps its engines
and reports each one's exit status to ``serve`` (which cannot wait for a process that is
not its child); it opens a pidfd of each engine it hands out and passes it to ``serve``, so
that signals never reach a recycled process id.  When ``serve`` closes the control socket
(shutdown), the fork server kills its idle engines, gives running ones a few seconds, and
exits.

Control messages (one JSON object per ``SOCK_SEQPACKET`` datagram, file descriptors as
``SCM_RIGHTS``): ``serve`` sends ``{"op": "start", "id", "argv"}`` with the three pipe
ends; the fork server answers ``{"op": "started", "id", "pid"}`` (with the engine's pidfd)
or ``{"op": "failed", "id", "error"}``, reports ``{"op": "ready", "pids"}`` once its first
engines wait, and ``{"op": "exit", "pid", "status"}`` (a wait status) for every engine that
ran a connection.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_MESSAGE", "main", "receive", "send"]

MAX_MESSAGE = 1 << 16
"""Bytes of one control message (a recon's command line fits many times over)."""
_STOP_GRACE_S = 5.0
_IDLE_NAME = "ready"
_RUNNING_NAME = "recon"


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """One control message (and file descriptors to pass along)."""
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, max_fds: int = 4) -> tuple[dict[str, Any] | None, list[int]]:
    """The next control message and the descriptors that came with it (None at EOF)."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


def _name(role: str) -> None:
    """Show this process as ``pr-<role>`` in ps and top (and to the tests)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(f"pr-{role}"[:15])


# ------------------------------------------------------------------- engines
def _engine(sock: socket.socket, entry: Callable[[list[str]], int]) -> None:
    """Body of a ready engine: wait for one connection, run the entry point on it, exit."""
    try:
        message, fds = receive(sock, 3)
    except OSError:
        os._exit(0)
    if message is None or len(fds) != 3:
        os._exit(0)  # the fork server is closing its pool
    sock.close()
    _name(_RUNNING_NAME)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    code = 1
    try:
        code = entry(list(message["argv"]))
    except SystemExit as exc:  # a usage error in the arguments: argparse's exit
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # the entry point reports its own errors; not this
        print(f"mrd_stream_recon: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
    os._exit(code)


class _ForkServer:
    """The pool of ready engines and the control loop (single-threaded: fork-safe)."""

    def __init__(self, control: socket.socket, entry: Callable[[list[str]], int], ready: int):
        self.control = control
        self.entry = entry
        self.ready = ready
        self.idle: dict[int, socket.socket] = {}
        """Engines waiting for a connection: pid -> our end of its socket."""
        self.running: set[int] = set()
        self.pid = os.getpid()
        self.announced = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _fork_engine(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the engine
            try:
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                os.setsid()
                from ..engine.lifetime import die_with_parent

                die_with_parent(self.pid, _IDLE_NAME)
                ours.close()
                self.control.close()
                for other in self.idle.values():
                    other.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                _engine(theirs, self.entry)
            finally:
                os._exit(1)
        theirs.close()
        self.idle[pid] = ours

    def _fill(self) -> None:
        while len(self.idle) < self.ready:
            self._fork_engine()
        if not self.announced:
            self.announced = True
            send(self.control, {"op": "ready", "pids": sorted(self.idle)})

    def _start(self, message: dict[str, Any], fds: list[int]) -> None:
        """Hand a connection's pipes to an idle engine (forked now if none is idle)."""
        try:
            if len(fds) != 3:
                raise OSError(f"expected 3 file descriptors, got {len(fds)}")
            if not self.idle:
                self._fork_engine()
            pid, sock = self.idle.popitem()
            pidfd = -1
            with contextlib.suppress(AttributeError, OSError):
                pidfd = os.pidfd_open(pid)  # alive and unreaped: it waits for this message
            send(sock, {"argv": message["argv"]}, fds)
            sock.close()
            self.running.add(pid)
            reply = {"op": "started", "id": message["id"], "pid": pid}
            send(self.control, reply, [pidfd] if pidfd >= 0 else None)
            if pidfd >= 0:
                os.close(pidfd)
        except OSError as exc:
            send(self.control, {"op": "failed", "id": message.get("id"), "error": str(exc)})
        finally:
            for fd in fds:
                os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sock = self.idle.pop(pid, None)
            if sock is not None:
                sock.close()  # an idle engine died (killed): it is replaced
            elif pid in self.running:
                self.running.discard(pid)
                with contextlib.suppress(OSError):
                    send(self.control, {"op": "exit", "pid": pid, "status": status})

    def serve(self) -> None:
        """Until ``serve`` closes the control socket."""
        while True:
            self._reap()
            self._fill()
            control = self.control.fileno()
            readable, _, _ = select.select([control, self._wake_r], [], [])
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if control in readable:
                message, fds = receive(self.control, 3)
                if message is None:
                    return
                if message.get("op") == "start":
                    self._start(message, fds)
                else:
                    for fd in fds:
                        os.close(fd)

    def close(self) -> None:
        """Kill the idle engines; give running ones a grace period, then kill them too."""
        for pid, sock in self.idle.items():
            sock.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + _STOP_GRACE_S
        while self.running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, 0)[0]:
                pass


def _entry(spec: str) -> Callable[[list[str]], int]:
    module, _, name = spec.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function


def _preload(kernels: list[str]) -> None:
    """Import what a connection's recon imports: the engine's modules and each kernel with
    the modules it imports only when it first needs them."""
    v2_codec = ("parallel_recon.protocol.mrd2.reader", "parallel_recon.protocol.mrd2.writer")
    for name in ("numpy", "numpy.fft", *v2_codec):  # v2 clients' first images as fast
        importlib.import_module(name)
    from ..engine import calibration, derived, noise, pipeline, plan, pool, reader, writer  # noqa: F401
    from ..engine.kernels import load_kernel, warm_imports

    for kernel in kernels:
        load_kernel(kernel)
        for module in warm_imports(kernel):
            importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parallel-recon serve (fork server)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--entry", required=True, help="module:function run per connection")
    parser.add_argument("--ready", type=int, default=2)
    parser.add_argument("--kernel", action="append", default=[])
    args = parser.parse_args(argv)
    from ..engine.cores import single_threaded_math
    from ..engine.lifetime import die_with_parent

    die_with_parent(args.parent, "forkserver")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is serve's business
    single_threaded_math()
    control = socket.socket(fileno=args.control_fd)
    entry = _entry(args.entry)
    _preload(args.kernel)
    gc.freeze()  # what is imported now stays untouched in the engines' shared pages
    server = _ForkServer(control, entry, max(1, args.ready))
    try:
        server.serve()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A runner as its own program, for machines the batch process did not start: Dask workers.

The engine forks its reader, workers and writer and installs signal handlers, which a Dask
task cannot do where it runs: in a thread of a worker process that Dask starts as a daemon
(daemonic processes may not have children; only a main thread may set signal handlers).
Forking a runner from the worker would copy a process full of threads, so each worker keeps
a small pool of runner *programs*, ``python -m parallel_recon.batch.service`` (fresh,
non-daemonic main processes), one per worker thread, and a task borrows one to run its file.
The interpreter start is paid once per runner, not per file: the pool is filled when the
worker starts (``--preload parallel_recon.batch.service``) or when a batch connects.

A runner dies with the thread that started it (``PR_SET_PDEATHSIG``; the worker's main
thread for the pool, which lives as long as the worker process), so a Dask worker killed
mid-file takes its runners and their engines with it, and the file's partial output stays a
``.partial``.  A runner that waits ``IDLE_EXIT_S`` without a request exits; the pool
replaces dead runners on demand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

__all__ = [
    "IDLE_EXIT_S",
    "RunnerProcess",
    "borrowed_runner",
    "dask_setup",
    "main",
    "start_runners",
]

_POOL: queue.SimpleQueue[RunnerProcess] | None = None
_POOL_LOCK = threading.Lock()
_STOP_S = 5.0
IDLE_EXIT_S = 600.0
"""A runner that has had no request for this long exits (a Dask worker outlives batches)."""


class RunnerProcess:
    """A runner program started by this thread, answering one request line at a time."""

    def __init__(self) -> None:
        reply_r, reply_w = os.pipe()
        # -I: nothing is imported from the worker's working directory (often the user's
        # data folder), nor from PYTHONPATH or the user's site folder
        command = [sys.executable, "-I", "-m", __name__, "--parent", str(os.getpid())]
        try:
            self.process = subprocess.Popen(
                [*command, "--reply-fd", str(reply_w)],
                stdin=subprocess.PIPE,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
                pass_fds=(reply_w,),
            )
        finally:
            os.close(reply_w)
        self.replies: IO[bytes] = os.fdopen(reply_r, "rb")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def ask(self, request: bytes) -> bytes | None:
        """Send one request line; the reply line, or None when the runner died meanwhile."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(request.rstrip(b"\n") + b"\n")
            stdin.flush()
        except OSError:
            return None
        line = self.replies.readline()
        return line if line.endswith(b"\n") else None

    def death(self) -> str:
        """How the runner ended, for the failed file's error."""
        from ..engine.lifetime import describe_exit

        try:
            code = self.process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            self.close()
            code = self.process.returncode
        return describe_exit(code)

    def close(self) -> None:
        """Stop the runner (it would also stop by itself when this thread ends)."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.replies.close()


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _pool() -> queue.SimpleQueue[RunnerProcess]:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = queue.SimpleQueue()
        return _POOL


def start_runners(dask_worker: Any = None, count: int | None = None) -> int:
    """Start this worker's runners now (one per thread, less those it already has), so
    that their interpreters start while the first tasks are on their way.

    ``Client.run`` and the worker preload hook call it in the worker's main thread, so the
    runners live as long as the worker process."""
    if count is None:
        count = int(dask_worker.state.nthreads) if dask_worker is not None else 1
    pool = _pool()
    missing = max(0, count - pool.qsize())  # runners left from an earlier batch are reused
    for _ in range(missing):
        pool.put(RunnerProcess())
    return missing


def dask_setup(worker: Any) -> None:
    """Dask preload hook (``dask worker --preload parallel_recon.batch.service``): start the
    worker's runners while the worker itself starts, so the first tasks find them ready."""
    start_runners(worker)


@contextlib.contextmanager
def borrowed_runner() -> Iterator[RunnerProcess]:
    """A live runner of this process for the duration of one task (started if none is
    free), given back afterwards unless it died."""
    pool = _pool()
    try:
        runner = pool.get_nowait()
    except queue.Empty:
        runner = RunnerProcess()
    if not runner.alive:
        runner.close()
        runner = RunnerProcess()
    try:
        yield runner
    finally:
        if runner.alive:
            pool.put(runner)
        else:
            runner.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m parallel_recon.batch.service --parent PID --reply-fd FD``."""
    parser = argparse.ArgumentParser(prog="parallel_recon.batch.service")
    parser.add_argument("--parent", type=int, required=True, help="pid to die with")
    parser.add_argument("--reply-fd", type=int, required=True, help="where results go")
    args = parser.parse_args(argv)
    from ..engine.cores import single_threaded_math
    from ..engine.lifetime import die_with_parent

    single_threaded_math()
    die_with_parent(args.parent, "batch-runner")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .model import BatchSettings
    from .runner import import_engine, serve

    import_engine(BatchSettings())  # while the first request is still on its way

    with os.fdopen(args.reply_fd, "wb") as replies, contextlib.suppress(BrokenPipeError):
        serve(sys.stdin.buffer, replies, idle_exit_s=IDLE_EXIT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Running a batch on this machine: ``--jobs N`` runner processes, forked once.

The batch process forks its runners (:mod:`.runner`) when it starts, after every import, so
no runner starts an interpreter; each runner then takes one job at a time over a pipe.  The
runners die with the batch process (SIGKILL included) and ignore Ctrl-C, which the batch
process turns into an orderly stop: SIGTERM to every runner (each stops its engine; the
engine leaves no shared memory and no process behind), then SIGKILL to any that lingers.

A runner that dies while it works (killed by the kernel's memory killer, say) fails its
current job only; a new runner takes its place for the remaining jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..engine.lifetime import describe_exit, die_with_parent
from .model import FAILED, BatchSettings, FileJob, FileResult, from_json
from .runner import import_engine, serve

__all__ = ["run_local"]

_STOP_S = 5.0
ResultHandler = Callable[[FileResult], bool]
"""Called with each finished job's result; returns False to stop the batch (--fail-fast)."""


def _runner_main(number: int, fds: tuple[int, int], close: list[int], parent: int) -> None:
    die_with_parent(parent, f"batch-{number}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in close:  # other runners' pipe ends: they must see EOF when the batch closes them
        with contextlib.suppress(OSError):
            os.close(fd)
    code = 0
    try:
        with os.fdopen(fds[0], "rb") as requests, os.fdopen(fds[1], "wb") as replies:
            serve(requests, replies)
    except BrokenPipeError:
        pass  # the batch process is gone or stopping
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


class _Runner:
    """One forked runner and the parent's ends of its two pipes."""

    def __init__(self, number: int, close: list[int]):
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        context = multiprocessing.get_context("fork")
        self.process: Any = context.Process(
            target=_runner_main,
            args=(number, (request_r, reply_w), [*close, request_w, reply_r], os.getpid()),
            name=f"batch-{number}",
            daemon=False,
        )
        try:
            self.process.start()
        finally:
            os.close(request_r)
            os.close(reply_w)
        self.requests = os.fdopen(request_w, "wb")
        self.replies = os.fdopen(reply_r, "rb")
        self.job: FileJob | None = None

    @property
    def fds(self) -> list[int]:
        return [self.requests.fileno(), self.replies.fileno()]

    def send(self, job: FileJob, request: bytes) -> None:
        self.job = job
        self.requests.write(request)
        self.requests.flush()

    def stop(self, how: signal.Signals | None) -> None:
        """Close the request pipe (the runner ends after its job) or send it ``how``."""
        with contextlib.suppress(OSError):
            self.requests.close()
        if how is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, how)

    def reap(self) -> None:
        self.process.join(_STOP_S)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        with contextlib.suppress(OSError):
            self.replies.close()


def _death(runner: _Runner) -> str:
    how = describe_exit(runner.process.exitcode)
    return f"the runner process (pid {runner.process.pid}) {how} while reconstructing this file"


class _LocalBatch:
    """The jobs still to run and the runners that run them."""

    def __init__(self, jobs: Sequence[FileJob], settings: BatchSettings, runners: int):
        self.queue = deque(jobs)
        self.count = max(1, min(runners, len(jobs)))
        self.settings = dataclasses.asdict(settings)
        self.runners: list[_Runner] = []
        self.started = 0

    def _request(self, job: FileJob) -> bytes:
        request: dict[str, Any] = {"job": dataclasses.asdict(job), "settings": self.settings}
        request["files_at_once"] = self.count
        return json.dumps(request).encode("utf-8") + b"\n"

    def _start_runner(self) -> _Runner:
        self.started += 1
        inherited = [fd for runner in self.runners for fd in runner.fds]
        runner = _Runner(self.started, inherited)
        self.runners.append(runner)
        return runner

    def _dispatch(self, runner: _Runner) -> None:
        if not self.queue:
            return
        job = self.queue.popleft()
        try:
            runner.send(job, self._request(job))
        except OSError:  # the runner died between two jobs: the job goes to a new one
            runner.job = None
            self.queue.appendleft(job)
            self._replace(runner)

    def _replace(self, dead: _Runner) -> None:
        dead.reap()
        self.runners.remove(dead)
        if self.queue:
            self._dispatch(self._start_runner())

    def run(self, on_result: ResultHandler) -> list[FileJob]:
        """Run every job; returns the jobs that were not finished (stopped early)."""
        for _ in range(self.count):
            self._dispatch(self._start_runner())
        keep_going = True
        while keep_going and any(r.job is not None for r in self.runners):
            busy = [r for r in self.runners if r.job is not None]
            waitables = [r.replies for r in busy] + [r.process.sentinel for r in busy]
            ready = multiprocessing.connection.wait(waitables)
            for runner in busy:
                if runner.replies not in ready and runner.process.sentinel not in ready:
                    continue
                line = runner.replies.readline()
                job, runner.job = runner.job, None
                assert job is not None
                if line.endswith(b"\n"):
                    keep_going = on_result(from_json(FileResult, line)) and keep_going
                    if keep_going:
                        self._dispatch(runner)
                    continue
                result = FileResult.for_job(job, FAILED, error=_death(runner))
                keep_going = on_result(result) and keep_going
                if keep_going:
                    self._replace(runner)
        unfinished = [r.job for r in self.runners if r.job is not None]
        return [*unfinished, *self.queue]

    def stop(self, how: signal.Signals | None) -> None:
        for runner in self.runners:
            runner.stop(how if runner.job is not None else None)
        for runner in self.runners:
            runner.reap()


def run_local(
    jobs: Sequence[FileJob],
    settings: BatchSettings,
    *,
    runners: int,
    on_result: ResultHandler,
) -> list[FileJob]:
    """Run ``jobs`` on ``runners`` forked runner processes, ``on_result`` for each result.

    Returns the jobs left undone because ``on_result`` asked to stop.  Ctrl-C and SIGTERM
    (as exceptions raised in this process) stop every runner before they propagate.
    """
    if not jobs:
        return []
    import_engine(settings)
    batch = _LocalBatch(jobs, settings, runners)
    stopping: signal.Signals | None = signal.SIGTERM
    try:
        left = batch.run(on_result)
        stopping = signal.SIGTERM if left else None
        return left
    finally:
        batch.stop(stopping)

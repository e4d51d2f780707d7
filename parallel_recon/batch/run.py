"""A whole batch: discover, skip what is up to date, run the rest, account for every input.

The steps are the same for both places a batch can run: on this machine (``--jobs N``
runner processes, :mod:`.local`) or on a Dask cluster (:mod:`.cluster`).  Whatever happens
(failures, ``--fail-fast``, Ctrl-C, SIGTERM) every input ends as one row: ``ok``,
``failed``, ``skipped`` (up to date) or ``cancelled`` (not run because the batch stopped).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..progress import Progress
from .discover import discover
from .model import CANCELLED, FAILED, OK, SKIPPED, BatchSettings, FileJob, FileResult
from .outputs import images_up_to_date, is_up_to_date, sweep_partials

__all__ = ["BatchOutcome", "Terminated", "default_jobs", "run_batch", "summary_line"]

PROG = "parallel-recon batch"


class Terminated(Exception):
    """SIGTERM reached the batch process."""


@dataclass
class BatchOutcome:
    """Every input's row, in input order, and how the batch ended.

    Attributes
    ----------
    stopped_by:
        None, or ``"interrupt"`` (Ctrl-C) or ``"terminate"`` (SIGTERM).
    """

    results: list[FileResult] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(FAILED) == 0 and self.stopped_by is None


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class _Tracker:
    """Collects results as they come and draws the progress."""

    def __init__(self, todo: Sequence[FileJob], fail_fast: bool, progress: bool, log: TextIO):
        self.results: dict[str, FileResult] = {}
        self.fail_fast = fail_fast
        self.progress = Progress(
            PROG,
            enabled=progress,
            total=len(todo),
            unit="files",
            stream=log,
            total_bytes=sum(job.input_bytes for job in todo),
        )

    def __call__(self, result: FileResult) -> bool:
        self.results[result.output] = result
        self.progress.update(1, result.input_bytes)
        return not (self.fail_fast and result.status == FAILED)


def _run(
    jobs: Sequence[FileJob],
    settings: BatchSettings,
    tracker: _Tracker,
    scheduler: str | None,
    runners: int,
) -> None:
    """Run ``jobs`` locally or on Dask; record the unfinished ones as cancelled."""
    if scheduler is not None:
        from .cluster import run_dask

        left = run_dask(jobs, settings, scheduler=scheduler, on_result=tracker)
    else:
        from .local import run_local

        left = run_local(jobs, settings, runners=runners, on_result=tracker)
    for job in left:
        tracker.results.setdefault(job.output, FileResult.for_job(job, CANCELLED))


def _plan(
    jobs: Sequence[FileJob], settings: BatchSettings
) -> tuple[list[tuple[FileJob, int]], list[FileJob]]:
    """(up-to-date jobs with their image counts, jobs to run).  A job whose images are up
    to date but whose exports or montage are not is run as a refresh: re-export only."""
    fresh: list[tuple[FileJob, int]] = []
    todo: list[FileJob] = []
    for job in jobs:
        stamp = None if settings.force else images_up_to_date(job, settings)
        if stamp is None:
            todo.append(job)
        elif is_up_to_date(job, settings):
            fresh.append((job, int(stamp.get("images", 0))))
        else:
            todo.append(dataclasses.replace(job, refresh=True))
    return fresh, todo


def default_jobs() -> int:
    """Files in flight on this machine when ``--jobs`` is not given: one per core this
    process may use (its CPU affinity, as the engine counts them)."""
    from ..engine.cores import available_cores

    return available_cores()


def run_batch(
    inputs: Sequence[str],
    outdir: str,
    settings: BatchSettings,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    fail_fast: bool = False,
    progress: bool = False,
    log: TextIO | None = None,
) -> BatchOutcome:
    """Reconstruct every raw-data file that ``inputs`` name into ``outdir``.

    Parameters
    ----------
    inputs:
        Files, directories, glob patterns and ``@list`` files (see :mod:`.discover`).
    outdir:
        Output folder; created when missing.
    jobs:
        Files in flight on this machine (default: one per core); ignored with ``scheduler``.
    scheduler:
        None for this machine, ``local:N`` or a Dask scheduler address.
    fail_fast:
        Stop at the first failure; the inputs not run are ``cancelled``.
    progress:
        Draw a progress bar on ``log`` (files and bytes, ETA).

    Returns
    -------
    BatchOutcome
        One row per input.  Ctrl-C and SIGTERM while files run end the batch early with
        ``stopped_by`` set; before that (while inputs are being found) they propagate, as
        KeyboardInterrupt and :class:`Terminated`.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run_batch(inputs, outdir, settings, jobs, scheduler, fail_fast, progress, log)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_batch(
    inputs: Sequence[str],
    outdir: str,
    settings: BatchSettings,
    jobs: int | None,
    scheduler: str | None,
    fail_fast: bool,
    progress: bool,
    log: TextIO | None,
) -> BatchOutcome:
    from ..engine.kernels import load_kernel
    from ..engine.run import resolve_recon

    log = log if log is not None else sys.stderr
    started = time.monotonic()
    load_kernel(resolve_recon(settings.recon))  # a bad --recon fails once, not once per file
    discovery = discover(inputs, outdir)
    outcome = BatchOutcome(ignored=discovery.ignored)
    fresh, todo = _plan(discovery.jobs, settings)
    if fail_fast and discovery.failures:
        todo, cancelled = [], todo
    else:
        cancelled = []
    folders = {os.path.dirname(job.output) for job in discovery.jobs}
    sweep_partials(folders)
    tracker = _Tracker(todo, fail_fast, progress, log)
    try:
        if todo:
            _run(todo, settings, tracker, scheduler, jobs or default_jobs())
    except KeyboardInterrupt:
        outcome.stopped_by = "interrupt"
    except Terminated:
        outcome.stopped_by = "terminate"
    finally:
        tracker.progress.finish()
        sweep_partials(folders)
    results = tracker.results
    for job, images in fresh:
        results[job.output] = FileResult.for_job(job, SKIPPED, images=images)
    for job in (*todo, *cancelled):
        results.setdefault(job.output, FileResult.for_job(job, CANCELLED))
    outcome.results = [*discovery.failures, *(results[job.output] for job in discovery.jobs)]
    outcome.seconds = time.monotonic() - started
    return outcome


_STOPPED_BY = {"interrupt": "interrupted (Ctrl-C): ", "terminate": "terminated: "}


def summary_line(outcome: BatchOutcome) -> str:
    """``parallel-recon batch: 20 ok, 2 failed, 0 up to date ... in 3.1 s (...)``."""
    done = [r for r in outcome.results if r.status == OK]
    parts = [f"{len(done)} ok", f"{outcome.count(FAILED)} failed"]
    parts.append(f"{outcome.count(SKIPPED)} up to date")
    if outcome.count(CANCELLED):
        parts.append(f"{outcome.count(CANCELLED)} cancelled")
    if outcome.ignored:
        parts.append(f"{outcome.ignored} non-MRD files ignored")
    stopped = _STOPPED_BY.get(outcome.stopped_by or "", "")
    text = f"{PROG}: {stopped}{', '.join(parts)} in {outcome.seconds:.1f} s"
    megabytes = sum(r.input_bytes for r in done) / 1e6
    if done:
        text += f" ({megabytes:.1f} MB, {megabytes / max(outcome.seconds, 1e-9):.1f} MB/s)"
    if not done and not outcome.count(FAILED) and outcome.count(SKIPPED):
        text += "; nothing to do, every output is up to date (--force redoes them)"
    return text

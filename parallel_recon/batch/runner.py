"""A long-lived process that reconstructs one file after another.

The cost this removes is the per-file start of interpreters and imports: a runner imports
everything once, then for each job runs the engine in-process (which forks its reader,
workers and writer from the already-imported runner) and writes the outputs.  Each job ends
as a :class:`~.model.FileResult`, whatever happened: a bad input, a kernel error or an
internal error becomes a failed row, and the runner goes on with the next job.

Runners speak JSON lines: a request ``{"job": ..., "settings": ..., "files_at_once": N}``
per line in, a :class:`~.model.FileResult` per line out.  On one machine the batch forks
them from its own process (:mod:`.local`); on a Dask worker they are started as
``python -m parallel_recon.batch.service`` (:mod:`.service`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
import sys
import time
from typing import IO, TYPE_CHECKING

from ..errors import ReconError
from .model import FAILED, OK, BatchSettings, FileJob, FileResult, to_json

if TYPE_CHECKING:
    from .outputs import Written

__all__ = ["engine_share", "handle_request", "import_engine", "run_job", "serve"]

PROG = "parallel-recon batch"


def engine_share(settings: BatchSettings, files_at_once: int) -> tuple[int, int | None]:
    """Workers and memory budget of one file's engine when ``files_at_once`` files share
    this machine: ``--workers`` or the cores divided among the files, and
    ``--memory-limit`` (or the engine's default budget) divided among them."""
    from ..engine.cores import available_cores
    from ..engine.ring import default_memory_limit

    files = max(1, files_at_once)
    workers = settings.workers or max(1, available_cores() // files)
    budget = settings.memory_limit
    if budget is None and files > 1:
        budget = default_memory_limit()
    return workers, None if budget is None else budget // files


def import_engine(settings: BatchSettings) -> None:
    """Import what every job needs, once, before runners are forked from this process
    (so that no runner pays for the imports, and none pays twice)."""
    from ..engine import feed, pipeline, plan, pool, reader, writer  # noqa: F401
    from ..engine.kernels import load_kernel
    from ..engine.run import resolve_recon
    from ..hdf5 import read, write  # noqa: F401

    load_kernel(resolve_recon(settings.recon))
    if settings.png:
        from ..inspect import montage, montage_sources  # noqa: F401


def _internal(exc: BaseException) -> str:
    if os.environ.get("PARALLEL_RECON_DEBUG"):
        import traceback

        traceback.print_exc()
    return f"internal error: {type(exc).__name__}: {exc}"


def _make_outputs(job: FileJob, settings: BatchSettings, files_at_once: int) -> Written:
    """Reconstruct ``job`` and write its outputs, or, for a refresh, only its exports."""
    from ..engine.run import pipeline_options, raw_file_source, run_engine
    from .outputs import make_stamp, refresh_outputs, write_outputs

    if job.refresh:  # images up to date: only the exports or the montage change
        return refresh_outputs(job, settings)
    stat = os.stat(job.input)
    workers, memory = engine_share(settings, files_at_once)
    opts = pipeline_options(
        recon=settings.recon,
        output=settings.output,
        options=settings.options,
        series_index=settings.series_index,
        workers=workers,
        memory_limit=memory,
        prog=f"{PROG}: {job.label}",  # every warning names its file
    )
    opts = dataclasses.replace(opts, announce_stop=False)  # the batch reports a stop once
    with raw_file_source(job.input, job.kind, job.group) as source:
        images_stream = run_engine(source, opts)
    with images_stream:
        return write_outputs(images_stream, job, settings, make_stamp(job, settings, stat))


def run_job(job: FileJob, settings: BatchSettings, files_at_once: int = 1) -> FileResult:
    """Reconstruct one job in this process and write its outputs; never raises for a
    problem of the input (only for Ctrl-C and termination)."""
    from ..engine.kernels import kernel_label
    from ..engine.run import resolve_recon

    started = time.monotonic()
    host = f"{socket.gethostname()}:{os.getpid()}"
    kernel = kernel_label(resolve_recon(settings.recon))
    try:
        written = _make_outputs(job, settings, files_at_once)
    except ReconError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"{exc.filename or job.input}: {exc.strerror or exc}"  # unreadable, disk full
    except Exception as exc:
        error = _internal(exc)
    else:
        for name in written.removed:
            print(
                f"{PROG}: {job.label}: removed {name}, made by an earlier run for an export "
                "or montage no longer asked for",
                file=sys.stderr,
            )
        seconds = time.monotonic() - started
        speed = 0.0 if job.refresh else job.input_bytes / 1e6 / max(seconds, 1e-9)
        return FileResult.for_job(
            job,
            OK,
            images=written.images,
            seconds=round(seconds, 4),
            mb_per_s=round(speed, 3),
            kernel="" if job.refresh else kernel,  # a refresh reconstructs nothing
            host=host,
        )
    seconds = time.monotonic() - started
    return FileResult.for_job(
        job, FAILED, seconds=round(seconds, 4), kernel=kernel, error=error, host=host
    )


def handle_request(line: str | bytes) -> str:
    """One JSON request line in, one JSON result line out (without the newline)."""
    request = json.loads(line)
    job = FileJob(**request["job"])
    settings = BatchSettings(**request["settings"])
    return to_json(run_job(job, settings, int(request.get("files_at_once", 1))))


def serve(requests: IO[bytes], replies: IO[bytes], idle_exit_s: float | None = None) -> None:
    """Answer requests until ``requests`` ends (or none came for ``idle_exit_s``)."""
    while True:
        if idle_exit_s is not None:
            ready, _, _ = select.select([requests], [], [], idle_exit_s)
            if not ready:
                break
        line = requests.readline()
        if not line:
            break
        if line.strip():
            replies.write(handle_request(line).encode("utf-8") + b"\n")
            replies.flush()
    sys.stderr.flush()

"""One file through the engine, in this (already imported) process.

This is what ``mrdhdf5_to_stream FILE | mrd_stream_recon > images`` does, without a shell
and without starting an interpreter: the raw data comes from a stream file, or from an HDF5
group through a forked feeder process (:class:`~.feed.HDF5Feed`); the
engine's supervisor runs here and forks its reader, workers and writer as usual; the writer
writes the image stream into an anonymous temporary file that the caller reads back.  The
batch runners and the Python API both go through here, so they reconstruct exactly as the
command line does.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO, cast

from ..errors import ConfigurationError, PipelineError, ReconError
from ..files.inputs import open_input
from ..protocol import Close, Message, StreamWriter
from .cores import default_workers
from .feed import HDF5Feed
from .kernels import KERNELS
from .pipeline import EXIT_TERMINATED, PipelineOptions, run_pipeline
from .plan import OUTPUTS

__all__ = [
    "AUTO",
    "message_source",
    "pipeline_options",
    "raw_file_source",
    "resolve_recon",
    "run_engine",
]

AUTO = "auto"
"""The kernel choice that follows the data (the engine's own choice when it has one)."""
FALLBACK_KERNEL = "cartesian"
_BUFFER = 1 << 20


def resolve_recon(spec: str) -> str:
    """The ``--recon`` value to hand the engine: ``auto`` is passed on when the engine's
    kernel table knows it, and means the Cartesian kernel otherwise."""
    if spec == AUTO and AUTO not in KERNELS:
        return FALLBACK_KERNEL
    return spec


def pipeline_options(
    *,
    recon: str = AUTO,
    output: str = "magnitude",
    options: Mapping[str, str] | None = None,
    series_index: int = 1,
    workers: int | None = None,
    memory_limit: int | None = None,
    prog: str = "parallel-recon",
) -> PipelineOptions:
    """Engine options as ``mrd_stream_recon`` builds them, checked the same way.

    ``workers=None`` means the engine's default (one per available core);
    ``memory_limit=None`` the engine's default budget.
    """
    if output not in OUTPUTS:
        raise ConfigurationError(f"output {output!r}: expected one of {', '.join(OUTPUTS)}")
    count = default_workers() if workers is None else workers
    if count < 1:
        raise ConfigurationError(f"workers {count}: expected at least 1")
    return PipelineOptions(
        workers=count,
        recon=resolve_recon(recon),
        output=output,
        series_index=series_index,
        options=dict(options or {}),
        memory_limit=memory_limit,
        progress=False,
        prog=prog,
    )


@contextlib.contextmanager
def raw_file_source(path: str, kind: str, group: str | None) -> Iterator[BinaryIO]:
    """The raw stream of a file: the file itself, or an HDF5 group through a feeder.

    An error of the feeder (a group without a header, a damaged HDF5 file) replaces the
    engine's error it causes, so the message names the cause.
    """
    if kind == "stream":
        with open_input(path) as handle:
            yield handle
        return
    if group is None:
        raise ConfigurationError(f"{path}: an HDF5 input needs a group")
    feed = HDF5Feed(path, group)
    try:
        yield feed.source
    except ReconError:
        feed.finish()  # raises the feeder's own error, the cause, when it has one
        raise
    except BaseException:
        feed.kill()
        raise
    feed.finish()


def message_source(messages: Iterable[Message]) -> BinaryIO:
    """An in-memory stream of ``messages`` (CLOSE appended unless they end with one)."""
    buffer = io.BytesIO()
    writer = StreamWriter(buffer)
    for msg in messages:
        if isinstance(msg, Close):
            break
        writer.write(msg)
    writer.close()
    buffer.seek(0)
    return buffer


def _pass_on_sigterm() -> None:
    """The engine caught a SIGTERM and stopped; let the process's own handling take over."""
    signal.raise_signal(signal.SIGTERM)
    raise PipelineError("the reconstruction was stopped by SIGTERM")


def run_engine(source: BinaryIO, opts: PipelineOptions) -> BinaryIO:
    """Reconstruct ``source``; returns the image stream in a temporary file, rewound.

    The file has no name (it disappears when closed or when this process dies), so a crash
    leaves nothing behind.  ``source`` is consumed and closed.  Errors are the engine's:
    :class:`ReconError` for bad input or a failed kernel, KeyboardInterrupt for Ctrl-C.
    """
    images = cast(BinaryIO, tempfile.TemporaryFile())  # noqa: SIM115 (returned open)
    try:
        sink = os.fdopen(os.dup(images.fileno()), "wb", buffering=_BUFFER)
        try:
            code = run_pipeline(source, sink, opts)
        finally:
            sink.close()
        if code == EXIT_TERMINATED:
            _pass_on_sigterm()
        images.seek(0)
        return images
    except BaseException:
        images.close()
        raise

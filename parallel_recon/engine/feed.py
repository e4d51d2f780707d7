"""An ISMRMRD HDF5 group as an MRD stream on a pipe, written by a forked child process.

The reconstruction engine reads a byte stream.  To reconstruct an HDF5 file without an
intermediate stream file, a child process forked from the (already imported) caller does
what ``mrdhdf5_to_stream FILE |`` does in a shell pipeline: it reads the group in blocks and
writes the stream into a pipe, while the engine reads the other end.  Reading HDF5 and
reconstructing then overlap, as they do in the shell, without starting an interpreter.

The child dies with its parent, ignores Ctrl-C (the parent decides), exits quietly when the
reader stops early (the reader's own error is the one to report), and hands any error of
its own back through a second pipe, so that :meth:`HDF5Feed.finish` can report the cause
("group has no xml header") rather than its symptom (a stream without CLOSE).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputFileError, ReconError
from ..hdf5.read import iter_segments, segment_buffers
from ..protocol.encode import encode_message
from ..protocol.messages import Close
from .lifetime import die_with_parent

__all__ = ["HDF5Feed"]

_PIPE_BUFFER = 1 << 20
_MAX_ERROR_BYTES = 16 << 10
_JOIN_S = 10.0


def _feed(path: str, group: str, fds: tuple[int, int, int], parent: int) -> None:
    """Body of the child: the group's stream into the pipe, then CLOSE; hard exit.

    ``fds`` are the stream pipe's two ends and the error pipe's writing end; the child
    closes its copy of the stream's reading end, or it would never see the reader go away.
    """
    stream_r, stream_fd, error_fd = fds
    die_with_parent(parent, "feeder")
    os.close(stream_r)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        with os.fdopen(stream_fd, "wb", buffering=_PIPE_BUFFER) as sink:
            for segment in iter_segments(path, group):
                for buffer in segment_buffers(segment):
                    sink.write(buffer)
            sink.write(encode_message(Close()))
    except BrokenPipeError:
        pass  # the reader stopped early and reports why
    except ReconError as exc:
        os.write(error_fd, str(exc).encode("utf-8", "replace")[:_MAX_ERROR_BYTES])
        code = 1
    except Exception as exc:  # a bug or an HDF5 library error: still one line
        text = f"reading {path!r} group {group!r} failed: {type(exc).__name__}: {exc}"
        os.write(error_fd, text.encode("utf-8", "replace")[:_MAX_ERROR_BYTES])
        code = 1
    os._exit(code)


class HDF5Feed:
    """A child process streaming one HDF5 group into a pipe.

    Parameters
    ----------
    path:
        ISMRMRD HDF5 file.
    group:
        Group holding the XML header and the acquisitions.

    Attributes
    ----------
    source:
        The reading end of the stream (binary, buffered); owned by the caller, who passes it
        to the engine.
    """

    def __init__(self, path: str | Path, group: str):
        self.path = str(path)
        self.group = group
        stream_r, stream_w = os.pipe()
        error_r, error_w = os.pipe()
        context = multiprocessing.get_context("fork")
        self._process: Any = context.Process(
            target=_feed,
            args=(self.path, group, (stream_r, stream_w, error_w), os.getpid()),
            name="feeder",
            daemon=False,
        )
        try:
            self._process.start()
        finally:
            os.close(stream_w)  # the engine must see EOF when the child ends
            os.close(error_w)
        self._error_fd = error_r
        self.source: BinaryIO = os.fdopen(stream_r, "rb", buffering=_PIPE_BUFFER)

    def finish(self) -> None:
        """Wait for the child and raise its error, if it had one.

        Call it after the engine is done (or has failed): a child still writing to a pipe
        nobody reads any more is stopped first.
        """
        if not self.source.closed:
            self.source.close()
        self._process.join(_JOIN_S)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
        with os.fdopen(self._error_fd, "rb") as errors:
            message = errors.read(_MAX_ERROR_BYTES).decode("utf-8", "replace").strip()
        code = self._process.exitcode
        if message:
            raise InputFileError(message)
        if code not in (0, None) and code != -signal.SIGKILL:
            raise InputFileError(
                f"{self.path}: the process reading group {self.group!r} ended with status {code}"
            )

    def kill(self) -> None:
        """Stop the child now (on the way out of a failed or interrupted run)."""
        if self._process.exitcode is None:
            self._process.kill()
        self._process.join()

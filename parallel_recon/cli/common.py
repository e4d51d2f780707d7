"""What every command shares: error reporting, exit codes, and standard-stream plumbing.

Programs are filters: ``-`` (or no path) means a standard stream, diagnostics go to stderr,
user errors print one line and exit 1, a closed downstream pipe exits quietly with 141
(128 + SIGPIPE, what the shell reports for ``cat`` in the same place), Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO, NoReturn

from ..errors import ConfigurationError, InputFileError, ReconError
from ..files import PendingFile, is_disk_full

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ExitStatus",
    "OneLineParser",
    "add_progress_option",
    "open_input",
    "open_output",
    "parse_recon_options",
    "positive_int",
    "run_command",
    "single_threaded_math",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_BUFFER = 1 << 20
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so interpreter shutdown does not complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class ExitStatus(Exception):
    """Leave a command with ``code`` after its ``with`` blocks have cleaned up (an output
    opened by :func:`open_output` is then discarded, not committed)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def parse_recon_options(pairs: list[str]) -> dict[str, str]:
    """``--recon-option KEY=VALUE`` arguments as a dict (later keys win)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--recon-option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}")
    return value


def single_threaded_math() -> None:
    """One BLAS/OpenMP thread per process (set before numpy is imported): the pool is the
    parallelism, and N workers x M threads would only oversubscribe the cores."""
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command body, turning user errors into one stderr line and an exit code."""
    try:
        return body()
    except ExitStatus as exc:
        return exc.code
    except ReconError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = f" writing {exc.filename!r}" if exc.filename else " writing the output"
        print(f"{prog}: error: no space left on device{where}", file=sys.stderr)
        return EXIT_ERROR


def _is_std(path: str | None) -> bool:
    return path is None or path == "-"


@contextlib.contextmanager
def open_input(path: str | None) -> Iterator[BinaryIO]:
    """A buffered binary reader for ``path``, or stdin for None / ``-``."""
    if _is_std(path):
        with os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=_BUFFER) as stdin:
            yield stdin
        return
    assert path is not None
    try:
        handle = open(path, "rb", buffering=_BUFFER)  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"cannot open input {path!r}: {exc.strerror}") from None
    with handle:
        yield handle


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[BinaryIO]:
    """A buffered binary writer for ``path``, or stdout for None / ``-``.

    A file appears only when the block ends normally: it is written under a temporary name
    and renamed into place (see :class:`parallel_recon.files.PendingFile`); on an error the
    previous file, if any, is left as it was.
    """
    if _is_std(path):
        sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=_BUFFER)
        try:
            yield sink
        finally:
            try:
                sink.close()
            except BrokenPipeError:
                _silence_stdout()
                raise
        return
    assert path is not None
    with PendingFile(path) as pending:
        try:
            handle = open(pending.path, "wb", buffering=_BUFFER)  # noqa: SIM115
        except OSError as exc:
            raise InputFileError(f"cannot open output {path!r}: {exc.strerror}") from None
        with handle:
            yield handle


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad option as one stderr line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_progress_option(parser: argparse._ActionsContainer) -> None:
    """``--progress``: force progress lines on stderr even when it is not a terminal."""
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal "
        "(progress is automatic on a terminal)",
    )

"""What every command shares: error reporting, exit codes, and standard-stream plumbing.

Programs are filters: ``-`` (or no path) means a standard stream, diagnostics go to stderr,
user errors print one line and exit 1, usage errors one line and exit 2, a closed downstream
pipe exits quietly with 141 (128 + SIGPIPE, what the shell reports for ``cat`` in the same
place), Ctrl-C exits 130.  Binary streams are never read from or written to a terminal
(like gzip): a terminal on stdin means the user forgot the input, and binary bytes on a
terminal are garbage that can leave it in a bad state; ``--force`` writes them anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO, NoReturn

from ..errors import ConfigurationError, InputFileError, ReconError, UsageError
from ..files import PendingFile, is_disk_full
from ..files.inputs import is_standard_stream, is_terminal

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ExitStatus",
    "OneLineParser",
    "add_force_option",
    "add_progress_option",
    "add_version_option",
    "int_range",
    "open_output",
    "parse_recon_options",
    "port_number",
    "refuse_terminal_output",
    "run_command",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_BUFFER = 1 << 20


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
            raise UsageError(f"--recon-option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command body, turning user errors into one stderr line and an exit code
    (2 for a :class:`UsageError`, 1 for any other :class:`ReconError`)."""
    try:
        return body()
    except ExitStatus as exc:
        return exc.code
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
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


def refuse_terminal_output(path: str | None, force: bool, file_option: str = "-o FILE") -> None:
    """Refuse binary output on a terminal stdout unless forced (gzip's rule)."""
    if force or not is_standard_stream(path) or not is_terminal(sys.stdout.fileno()):
        return
    raise ConfigurationError(
        "binary output is not written to a terminal: redirect standard output (> out.bin), "
        f"pipe it on (| ...), give a file ({file_option}), or use --force"
    )


@contextlib.contextmanager
def open_output(
    path: str | None, *, force: bool = False, file_option: str = "-o FILE"
) -> Iterator[BinaryIO]:
    """A buffered binary writer for ``path``, or stdout for None / ``-``.

    A file appears only when the block ends normally: it is written under a temporary name
    and renamed into place (see :class:`parallel_recon.files.PendingFile`); on an error the
    previous file, if any, is left as it was.  A terminal stdout is refused unless ``force``
    (see :func:`refuse_terminal_output`).
    """
    if is_standard_stream(path):
        refuse_terminal_output(path, force, file_option)
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


def add_force_option(parser: argparse._ActionsContainer) -> None:
    """``--force``: write binary output even when stdout is a terminal."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="write binary output to standard output even when it is a terminal",
    )


def package_version() -> str:
    """The installed distribution's version (read only when asked: it costs an import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parallel-recon")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


class _VersionAction(argparse.Action):
    """``--version`` that looks the version up only when it is given."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        if parser.prog.startswith("parallel-recon"):
            print(f"{parser.prog} {package_version()}")
        else:
            print(f"{parser.prog} (parallel-recon) {package_version()}")
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version``: the package version, as every console script prints it."""
    parser.add_argument("--version", action=_VersionAction)


def port_number(text: str) -> int:
    """An argparse type for a TCP port, 0..65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number 0..65535, found {text!r}"
        ) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, found {value}")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for an integer in ``low..high`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < low or (high is not None and value > high):
            wanted = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"expected {wanted}, found {value}")
        return value

    return parse

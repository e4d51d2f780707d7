"""``parallel-recon convert``: between the two MRD stream generations.

``convert INPUT OUTPUT --to mrd2|ismrmrd`` reads an MRD v1 (ISMRMRD) or MRD v2 (yardl)
stream, detected from its first bytes, or an ISMRMRD HDF5 file, and writes it as the named
generation (``-`` is stdin or stdout).  The mapping is the MRD project's (its converter
scripts): the header XML <-> the v2 header model, flags, counters, user values, image meta
<-> attribute XML, waveforms, complex arrays.  What the other generation cannot carry is
named in one warning per kind, never dropped silently.  A stream already in the wanted
generation is copied unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import ConfigurationError
from ..files import refuse_same_file
from ..files.inputs import open_input
from ..progress import Progress, progress_wanted
from ..protocol import FORMAT_NAMES, GENERATIONS, Message, Notes, open_reader, open_writer
from ..protocol.decode import HDF5_SIGNATURE, StreamReader, after_close_warning
from .common import (
    EXIT_OK,
    OneLineParser,
    add_force_option,
    add_progress_option,
    add_version_option,
    open_output,
    run_command,
)

__all__ = ["build_parser", "main"]

PROG = "parallel-recon convert"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Convert an MRD stream between MRD v1 (ISMRMRD) and MRD v2 (yardl), or an "
        "ISMRMRD HDF5 file to a stream of either generation.",
    )
    parser.add_argument("input", help="input stream or ISMRMRD HDF5 file (- for stdin)")
    parser.add_argument("output", help="output stream (- for stdout)")
    parser.add_argument(
        "--to",
        required=True,
        choices=GENERATIONS,
        help="generation to write: mrd2 (MRD v2, yardl) or ismrmrd (MRD v1)",
    )
    parser.add_argument(
        "-g", "--group", default="dataset", help="HDF5 input: group (default: dataset)"
    )
    parser.add_argument(
        "-s",
        "--image-series",
        nargs="+",
        action="extend",
        default=[],
        metavar="SERIES",
        help="HDF5 input: convert the images of these series instead of the raw data",
    )
    add_progress_option(parser)
    add_force_option(parser)
    add_version_option(parser)
    return parser


def _warn(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)


def _is_hdf5(path: str) -> bool:
    if path == "-":
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _write_all(
    messages: Iterable[Message], sink: BinaryIO, to: str, progress: Progress, notes: Notes
) -> None:
    writer = open_writer(sink, to, notes)
    for msg in messages:
        writer.write(msg)
        progress.update(1)
    writer.close()


def _hdf5_messages(args: argparse.Namespace) -> Iterator[Message]:
    from ..hdf5 import read_messages

    return read_messages(args.input, args.group, args.image_series or None)


def _run(args: argparse.Namespace) -> int:
    """Convert; what the output cannot carry is reported once it is complete (a run that
    fails says only why)."""
    notes = Notes()
    code = _convert(args, notes)
    for line in notes.lines():
        _warn(line)
    return code


def _convert(args: argparse.Namespace, notes: Notes) -> int:
    refuse_same_file([args.input], [args.output])
    progress = Progress(PROG, enabled=progress_wanted(args.progress), unit="messages")
    if _is_hdf5(args.input):
        messages = _hdf5_messages(args)
        first = next(messages, None)  # open and check the input before creating the output
        with open_output(args.output, force=args.force) as sink:
            chained = [] if first is None else _chain(first, messages)
            _write_all(chained, sink, args.to, progress, notes)
        progress.finish()
        return EXIT_OK
    if args.group != "dataset" or args.image_series:
        raise ConfigurationError("-g and -s choose what to read from an HDF5 input file")
    with open_input(args.input, file_option="INPUT") as source:
        reader = open_reader(source, notes=notes)
        with open_output(args.output, force=args.force) as sink:
            if reader.generation == args.to:
                _warn(f"the input is already {FORMAT_NAMES[args.to]}: copied unchanged")
                _copy(reader, source, sink)
                return EXIT_OK
            _write_all(reader, sink, args.to, progress, notes)
        if reader.closed and reader.data_after_close(wait=True):
            _warn(after_close_warning(reader))
    progress.nbytes = reader.offset
    progress.finish()
    return EXIT_OK


def _chain(first: Message, rest: Iterator[Message]) -> Iterator[Message]:
    yield first
    yield from rest


def _copy(reader: StreamReader, source: BinaryIO, sink: BinaryIO) -> None:
    """The stream as it is: the bytes the detector buffered, then the rest of the source."""
    sink.write(reader.unconsumed())
    shutil.copyfileobj(source, sink, 1 << 20)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon convert``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())

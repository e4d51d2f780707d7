"""``stream_to_mrdhdf5``: an MRD v1 stream into an ISMRMRD HDF5 file.

Same options as the ISMRMRD C++ ``ismrmrd_stream_to_hdf5`` (``-i FILE`` or ``--use-stdin``,
``-o FILE``, ``-g GROUP``) plus the seed's positional form ``stream_to_mrdhdf5 images.h5``
(stream on stdin).  The file is appended to, never truncated.  TEXT messages are stored and
echoed to stderr as ``TEXT MESSAGE: ...``.  On a damaged stream, everything received before
the damage is written to the file, then one error line is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigurationError, ProtocolError
from ..hdf5 import MrdHdf5Writer
from ..progress import Progress, progress_wanted
from ..protocol.decode import StreamReader
from ..protocol.messages import Text
from .common import EXIT_OK, add_progress_option, open_input, run_command

__all__ = ["build_parser", "main"]

PROG = "stream_to_mrdhdf5"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store an MRD v1 binary stream (stdin unless -i is given) in an ISMRMRD "
        "HDF5 file, appending to what the file already holds.",
    )
    parser.add_argument("output_file", nargs="?", help="output ISMRMRD HDF5 file (same as -o)")
    parser.add_argument("-o", "--output", help="output ISMRMRD HDF5 file")
    parser.add_argument("-i", "--input", help="binary input file (default: stdin)")
    parser.add_argument("--use-stdin", action="store_true", help="read the stream from stdin")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group (default: dataset)")
    add_progress_option(parser)
    return parser


def _output_path(args: argparse.Namespace) -> str:
    if args.output and args.output_file:
        raise ConfigurationError(
            f"two outputs given ({args.output_file!r} and -o {args.output!r}); give one"
        )
    path = args.output or args.output_file
    if not path:
        raise ConfigurationError("expected an output HDF5 file (stream_to_mrdhdf5 FILE or -o FILE)")
    return str(path)


def _run(args: argparse.Namespace) -> int:
    if args.input is not None and args.use_stdin:
        raise ConfigurationError("give either -i/--input or --use-stdin, not both")
    output = _output_path(args)
    progress = Progress(PROG, enabled=progress_wanted(args.progress), unit="messages")
    with open_input(args.input) as source, MrdHdf5Writer(output, args.group) as writer:
        reader = StreamReader(source, require_close=True)
        for msg in reader:
            if type(msg) is Text:
                print(f"TEXT MESSAGE: {msg.text}", file=sys.stderr, flush=True)
            writer.write(msg)
            progress.update(1)
        if reader.peek() is not None:
            raise ProtocolError(
                "expected the end of the stream after CLOSE, found another message",
                reader.offset,
                reader.index,
            )
    progress.nbytes = reader.offset
    progress.finish()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``stream_to_mrdhdf5`` and ``parallel-recon to-hdf5``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())

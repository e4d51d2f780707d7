"""``mrdhdf5_to_stream``: an ISMRMRD HDF5 file as an MRD v1 stream.

Same options as the ISMRMRD C++ ``ismrmrd_hdf5_to_stream`` (``-i``, ``-o``, ``--use-stdout``,
``-g``, ``-s`` (several), ``-c NAME``, ``-C FILE``) plus the seed's positional form
``mrdhdf5_to_stream raw.h5`` (to stdout).  Config messages come first, then the stored XML
header unchanged, then acquisitions and waveforms merged by time stamp or the images of the
chosen series, then CLOSE.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigurationError, InputFileError
from ..files import refuse_same_file
from ..hdf5 import count_acquisitions, count_images, count_waveforms
from ..hdf5.read import Segment, iter_segments, segment_buffers, segment_messages
from ..progress import Progress, progress_wanted
from ..protocol import GENERATIONS, Notes, open_writer
from ..protocol.encode import encode_message
from ..protocol.layout import CONFIG_FILE_SIZE
from ..protocol.messages import Close, ConfigFile, ConfigText, Message
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

PROG = "mrdhdf5_to_stream"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Write an ISMRMRD HDF5 dataset as an MRD binary stream, MRD v1 (ISMRMRD) "
        "or with --format mrd2 MRD v2 (yardl), to stdout unless -o is given.",
    )
    parser.add_argument("input_file", nargs="?", help="input ISMRMRD HDF5 file (same as -i)")
    parser.add_argument("-i", "--input", help="input ISMRMRD HDF5 file")
    parser.add_argument("-o", "--output", help="binary output file (default: stdout)")
    parser.add_argument("--use-stdout", action="store_true", help="write the stream to stdout")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group (default: dataset)")
    parser.add_argument(
        "-s",
        "--image-series",
        nargs="+",
        action="extend",
        default=[],
        metavar="SERIES",
        help="stream the images of these series (e.g. image_0) instead of the raw data; a "
        "word that names an existing file is the input file, not a series",
    )
    parser.add_argument(
        "--format",
        choices=GENERATIONS,
        default="ismrmrd",
        help="stream generation: ismrmrd (MRD v1, default) or mrd2 (MRD v2, yardl, converted "
        "as the MRD project's ismrmrd_to_mrd does)",
    )
    parser.add_argument("-c", "--config-file", help="send a CONFIG_FILE message with this name")
    parser.add_argument(
        "-C",
        "--config-text",
        "--local-config-file",
        dest="config_text",
        metavar="FILE",
        help="send the contents of FILE as a CONFIG_TEXT message",
    )
    add_progress_option(parser)
    add_force_option(parser)
    add_version_option(parser)
    return parser


def _file_among_series(args: argparse.Namespace) -> None:
    """``-s image_1 images.h5``: ``-s`` takes every word up to the next option, so the input
    file lands among the series names.  A word that names an existing file is never a series
    name: take it back as the positional input."""
    files = [name for name in args.image_series if Path(name).is_file()]
    if files and not args.input_file:
        args.input_file = files[-1]
        args.image_series = [name for name in args.image_series if name != files[-1]]
    for name in args.image_series:
        if Path(name).is_file():
            raise ConfigurationError(
                f"-s {name!r} is a file, not an image series name; give one input file"
            )


def _input_path(args: argparse.Namespace) -> str:
    _file_among_series(args)
    if args.input and args.input_file:
        raise ConfigurationError(
            f"two inputs given ({args.input_file!r} and -i {args.input!r}); give one"
        )
    path = args.input or args.input_file
    if not path:
        raise ConfigurationError("expected an input HDF5 file (mrdhdf5_to_stream FILE or -i FILE)")
    if path == "-":
        raise ConfigurationError(
            "expected an HDF5 file name, found - (standard input): HDF5 needs a file it can "
            "seek in, so save the data to a file first (a stream on stdin is already a stream)"
        )
    return str(path)


def _config_messages(args: argparse.Namespace) -> list[Message]:
    if args.config_file is not None and args.config_text is not None:
        raise ConfigurationError("give either -c/--config-file or -C/--config-text, not both")
    if args.config_file is not None:
        if len(args.config_file.encode("utf-8")) >= CONFIG_FILE_SIZE:
            raise ConfigurationError(
                f"config name is too long: at most {CONFIG_FILE_SIZE - 1} bytes fit CONFIG_FILE"
            )
        return [ConfigFile(args.config_file)]
    if args.config_text is not None:
        try:
            text = Path(args.config_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(
                f"cannot read config text file {args.config_text!r}: {exc}"
            ) from None
        return [ConfigText(text)]
    return []


def _total(path: str, group: str, series: list[str]) -> int:
    if series:
        return sum(count_images(path, group, name) for name in series)
    return count_acquisitions(path, group) + count_waveforms(path, group)


def _run(args: argparse.Namespace) -> int:
    if args.output is not None and args.use_stdout:
        raise ConfigurationError("give either -o/--output or --use-stdout, not both")
    path = _input_path(args)
    refuse_same_file([path], [args.output])
    config = _config_messages(args)
    segments: Iterator[Segment] = iter_segments(path, args.group, args.image_series)
    first = next(segments, None)  # open and check the input before creating the output
    if first is not None:
        segments = itertools.chain([first], segments)
    wanted = progress_wanted(args.progress)
    total = _total(path, args.group, args.image_series) if wanted else None
    progress = Progress(PROG, enabled=wanted, total=total, unit="messages")
    with open_output(args.output, force=args.force) as sink:
        if args.format == "mrd2":
            _write_mrd2(sink, config, segments, progress)
        else:
            for msg in config:
                sink.write(encode_message(msg))
            for segment in segments:
                nbytes = 0
                for buffer in segment_buffers(segment):
                    nbytes += sink.write(buffer) or 0
                progress.update(0 if segment.kind == "header" else segment.count, nbytes)
            sink.write(encode_message(Close()))
    progress.finish()
    return EXIT_OK


def _write_mrd2(
    sink: BinaryIO, config: list[Message], segments: Iterator[Segment], progress: Progress
) -> None:
    """The messages as an MRD v2 stream (what v2 cannot carry is named once on stderr)."""
    writer = open_writer(sink, "mrd2", Notes(_warn))
    for msg in config:
        writer.write(msg)
    for segment in segments:
        for msg in segment_messages(segment):
            writer.write(msg)
        progress.update(0 if segment.kind == "header" else segment.count)
    writer.close()


def _warn(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mrdhdf5_to_stream`` and ``parallel-recon to-stream``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())

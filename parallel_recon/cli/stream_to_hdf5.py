"""``stream_to_mrdhdf5``: an MRD v1 stream into an ISMRMRD HDF5 file.

Same options as the ISMRMRD C++ ``ismrmrd_stream_to_hdf5`` (``-i FILE`` or ``--use-stdin``,
``-o FILE``, ``-g GROUP``) plus the seed's positional form ``stream_to_mrdhdf5 images.h5``
(stream on stdin).  TEXT messages are stored and echoed to stderr as ``TEXT MESSAGE: ...``.

What happens to the file (see :mod:`parallel_recon.files`): a new file is written under a
temporary name and appears only at the end; it holds everything the stream delivered before
any damage (then one error line, exit 1), and it is not created when nothing valid arrived
or the disk filled up.  An existing file is appended to through a copy that replaces it only
when the whole stream was stored: any error leaves it unchanged.  A HEADER that differs from
the group's stored header is refused unless ``--replace-header``.  Reading stops at CLOSE;
anything after it is reported as a warning.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, OutputFileError, ReconError
from ..files import PendingFile, refuse_same_file
from ..files.inputs import has_hdf5_signature, open_input, refuse_non_hdf5_output
from ..progress import Progress, progress_wanted
from .common import (
    EXIT_OK,
    OneLineParser,
    add_progress_option,
    add_version_option,
    run_command,
)

if TYPE_CHECKING:
    from ..hdf5 import MrdHdf5Writer
    from ..protocol.decode import StreamReader

__all__ = ["build_parser", "main"]

PROG = "stream_to_mrdhdf5"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Store an MRD stream, MRD v1 (ISMRMRD) or MRD v2 (yardl, converted), "
        "read from stdin unless -i is given, in an ISMRMRD HDF5 file, appending to what the "
        "file already holds.",
    )
    parser.add_argument("output_file", nargs="?", help="output ISMRMRD HDF5 file (same as -o)")
    parser.add_argument("-o", "--output", help="output ISMRMRD HDF5 file")
    parser.add_argument("-i", "--input", help="binary input file (default: stdin)")
    parser.add_argument("--use-stdin", action="store_true", help="read the stream from stdin")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group (default: dataset)")
    parser.add_argument(
        "--replace-header",
        action="store_true",
        help="let the stream's XML header replace a different one stored in the group "
        "(by default that is refused: the stored header describes the stored data)",
    )
    add_progress_option(parser)
    add_version_option(parser)
    return parser


def _warn(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)


def _output_path(args: argparse.Namespace) -> str:
    if args.output and args.output_file:
        raise ConfigurationError(
            f"two outputs given ({args.output_file!r} and -o {args.output!r}); give one"
        )
    path = args.output or args.output_file
    if not path:
        raise ConfigurationError("expected an output HDF5 file (stream_to_mrdhdf5 FILE or -o FILE)")
    return str(path)


def _stored_counts(path: str, group: str) -> dict[str, int]:
    """What ``group`` of an existing file holds: image series -> images, and acquisitions
    (``data``) -> rows; {} for a new file or group (no data is read)."""
    import h5py

    if not os.path.isfile(path) or not has_hdf5_signature(path):  # never a FIFO or device
        return {}
    with h5py.File(path, "r") as handle:
        node = handle.get(group)
        if not isinstance(node, h5py.Group):
            return {}
        counts = {
            name: len(item["header"])
            for name, item in node.items()
            if isinstance(item, h5py.Group) and isinstance(item.get("header"), h5py.Dataset)
        }
        if isinstance(node.get("data"), h5py.Dataset):
            counts["data"] = len(node["data"])
    return counts


def _report_appends(before: dict[str, int], after: dict[str, int], group: str) -> None:
    """One stderr line per series (or acquisition list) that already held data and grew:
    an append to an existing file is easy to mistake for a new one."""
    for name, old in before.items():
        new = after.get(name, old)
        if old and new > old:
            what = "acquisitions" if name == "data" else "images"
            print(
                f"{PROG}: appended {new - old} {what} to {group}/{name}, now {new}",
                file=sys.stderr,
            )


def _store(reader: StreamReader, writer: MrdHdf5Writer, progress: Progress) -> ReconError | None:
    """Store messages up to CLOSE; returns the problem that stopped it early, if any (a
    damaged stream, or a message the file cannot take), with what came before it stored."""
    from ..protocol.messages import Text
    from ..protocol.text import printable

    try:
        for msg in reader:
            if type(msg) is Text:
                print(f"TEXT MESSAGE: {printable(msg.text)}", file=sys.stderr, flush=True)
            writer.write(msg)
            progress.update(1)
    except ReconError as exc:
        return exc
    return None


def _run(args: argparse.Namespace) -> int:
    if args.input is not None and args.use_stdin:
        raise ConfigurationError("give either -i/--input or --use-stdin, not both")
    output = _output_path(args)
    refuse_same_file([args.input], [output])
    refuse_non_hdf5_output(output)
    progress = Progress(PROG, enabled=progress_wanted(args.progress), unit="messages")
    with (
        open_input(args.input) as source,
        PendingFile(output, keep_content=True, seekable=True) as pending,
    ):
        # the copy of an existing file runs in the kernel meanwhile: these imports (numpy,
        # h5py) are most of this command's start-up
        from ..hdf5 import MrdHdf5Writer
        from ..protocol import Notes, open_reader
        from ..protocol.decode import after_close_warning

        before = _stored_counts(output, args.group)
        notes = Notes()
        reader = open_reader(source, require_close=True, notes=notes)
        writer = MrdHdf5Writer(pending.path, args.group, replace_header=args.replace_header)
        try:
            problem = _store(reader, writer, progress)
            try:
                writer.close()
            except ReconError as exc:
                problem = problem or exc
        except BaseException:
            writer.abort()
            raise
        stored = sum(writer.counts.values())
        trailing = problem is None and reader.closed and reader.data_after_close(wait=True)
        if problem is not None and (pending.existed or not stored):
            pending.discard()  # an append is all or nothing; nothing valid: no file
            raise OutputFileError(f"{problem}; {pending.outcome}") from None
        if not stored:
            pending.discard()
            print(f"{PROG}: warning: no messages to store; {pending.outcome}", file=sys.stderr)
    if problem is not None:
        raise OutputFileError(f"{problem}; {output!r} holds the {stored} messages before it")
    if trailing:
        print(f"{PROG}: warning: {after_close_warning(reader)}", file=sys.stderr)
    for line in notes.lines():
        _warn(line)
    if before and stored:
        _report_appends(before, _stored_counts(output, args.group), args.group)
    progress.nbytes = reader.offset
    progress.finish()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``stream_to_mrdhdf5`` and ``parallel-recon to-hdf5``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())

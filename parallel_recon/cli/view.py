"""``parallel-recon view FILE|- -o out.png``: a labelled PNG montage of images or k-space.

Image series (HDF5) and image streams (e.g. ``mrd_stream_recon`` output) show as windowed
images; raw data shows as log-magnitude k-space of one coil.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputFileError
from ..files import refuse_same_file
from ..inspect.montage import render_montage
from ..inspect.montage_sources import ViewOptions, tiles_from_hdf5, tiles_from_stream
from ..inspect.summary_hdf5 import is_hdf5
from .common import EXIT_OK, open_input, open_output, run_command

__all__ = ["build_parser", "main"]

PROG = "parallel-recon view"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a labelled PNG montage of the images in an ISMRMRD HDF5 file or an "
        "MRD stream, or of raw k-space (log magnitude of one coil).",
    )
    parser.add_argument("input", help="HDF5 file, stream file, or - for a stream on stdin")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write (- = stdout)")
    parser.add_argument("-g", "--group", help="HDF5 group (default: the first with images)")
    parser.add_argument(
        "-s",
        "--series",
        action="append",
        default=[],
        help="image series to show: HDF5 series name (image_0) or series index; repeatable",
    )
    parser.add_argument(
        "--max-images", type=_positive, default=64, help="most tiles in the montage (64)"
    )
    parser.add_argument(
        "--kspace",
        action="store_true",
        help="show raw k-space (the default for files without images)",
    )
    parser.add_argument("--coil", type=_non_negative, default=0, help="coil for --kspace (0)")
    parser.add_argument("--columns", type=_positive, help="tiles per row (default: square)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon view``."""
    args = build_parser().parse_args(argv)
    opts = ViewOptions(
        group=args.group,
        series=args.series,
        max_images=args.max_images,
        kspace=args.kspace,
        coil=args.coil,
    )

    def body() -> int:
        path = args.input
        refuse_same_file([path], [args.output])
        if path != "-" and not Path(path).is_file():
            raise InputFileError(f"cannot open input {path!r}: no such file")
        if path != "-" and is_hdf5(path):
            tiles = tiles_from_hdf5(path, opts)
        else:
            if args.group is not None:
                raise InputFileError(f"-g/--group applies to HDF5 files; {path!r} is a stream")
            with open_input(None if path == "-" else path) as source:
                tiles = tiles_from_stream(source, opts)
        montage = render_montage(tiles, args.columns)
        with open_output(args.output) as sink:
            montage.save(sink, format="PNG")
        if args.output != "-":
            print(
                f"{args.output}: {len(tiles)} tiles, {montage.width}x{montage.height} pixels",
                file=sys.stderr,
            )
        return EXIT_OK

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

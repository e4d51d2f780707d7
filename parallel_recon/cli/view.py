"""``parallel-recon view FILE|- -o out.png``: a labelled PNG (or JPEG) montage.

Image series (HDF5) and image streams (e.g. ``mrd_stream_recon`` output) show as windowed
images; raw data shows as log-magnitude k-space of one coil.  The file format follows the
output name (``.png``, ``.jpg``/``.jpeg``; PNG without an extension or on stdout), and a
montage cut at ``--max-images`` says so on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigurationError, InputFileError
from ..files import refuse_same_file
from ..files.inputs import open_input
from ..inspect.montage import MIN_TILE, render_montage
from ..inspect.montage_sources import ViewOptions, tiles_from_hdf5, tiles_from_stream
from ..inspect.summary_hdf5 import is_hdf5
from .common import (
    EXIT_OK,
    OneLineParser,
    add_force_option,
    add_version_option,
    int_range,
    open_output,
    run_command,
)

__all__ = ["FORMATS", "build_parser", "image_format", "main"]

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


MAX_SCALE = 64
"""The largest --scale: a 256 x 256 image becomes 16384 pixels wide."""
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
"""Output name ending -> Pillow format."""


def image_format(path: str) -> str:
    """The Pillow format for ``path``: by its extension, PNG for stdout or no extension."""
    suffix = "" if path == "-" else Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    if suffix not in FORMATS:
        raise ConfigurationError(
            f"-o {path!r}: expected a .png, .jpg or .jpeg name (the format follows the "
            f"extension), found {suffix!r}"
        )
    return FORMATS[suffix]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Write a labelled PNG montage of the images in an ISMRMRD HDF5 file or an "
        "MRD stream, or of raw k-space (log magnitude of one coil).",
    )
    parser.add_argument("input", help="HDF5 file, stream file, or - for a stream on stdin")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="image file to write: NAME.png, NAME.jpg or NAME.jpeg (- = PNG on stdout)",
    )
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
    parser.add_argument(
        "--scale",
        type=int_range(1, MAX_SCALE),
        metavar="N",
        help=f"enlarge every image pixel to N x N screen pixels, 1..{MAX_SCALE} (default: "
        f"small images are enlarged to about {MIN_TILE} pixels)",
    )
    add_force_option(parser)
    add_version_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon view``."""
    args = build_parser().parse_args(argv)
    opts = ViewOptions(
        group=args.group,
        series=args.series,
        max_images=args.max_images + 1,  # one more tells whether the montage is cut
        kspace=args.kspace,
        coil=args.coil,
    )

    def body() -> int:
        path = args.input
        refuse_same_file([path], [args.output])
        kind = image_format(args.output)
        if path != "-" and not Path(path).is_file():
            raise InputFileError(f"cannot open input {path!r}: no such file")
        if path != "-" and is_hdf5(path):
            tiles = tiles_from_hdf5(path, opts)
        else:
            if args.group is not None:
                raise InputFileError(f"-g/--group applies to HDF5 files; {path!r} is a stream")
            with open_input(None if path == "-" else path) as source:
                tiles = tiles_from_stream(source, opts)
        if len(tiles) > args.max_images:
            tiles = tiles[: args.max_images]
            print(
                f"{PROG}: notice: showing the first {args.max_images} tiles (--max-images): "
                "the input has more; choose series with -s or raise --max-images",
                file=sys.stderr,
            )
        montage = render_montage(tiles, args.columns, args.scale)
        with open_output(args.output, force=args.force) as sink:
            montage.save(sink, format=kind)
        if args.output != "-":
            print(
                f"{args.output}: {len(tiles)} tiles, {montage.width}x{montage.height} pixels",
                file=sys.stderr,
            )
        return EXIT_OK

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

"""``parallel-recon export INPUT --to dicom|nifti|npy -o OUT``: images where users look at them.

INPUT is an ISMRMRD HDF5 file (all image series, or ``-s``) or an MRD image stream (``-`` =
stdin), so the command can end a pipe::

    mrd_phantom -o - | mrd_stream_recon | parallel-recon export - --to nifti -o brain.nii.gz
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import InputFileError, UsageError
from ..export import FORMATS, ExportInput, export, read_hdf5_input, read_stream_input
from ..export.supplied import parse_positive_triple
from ..files.inputs import open_input
from ..inspect.summary_hdf5 import is_hdf5
from ..progress import Progress, progress_wanted
from .common import (
    EXIT_OK,
    OneLineParser,
    add_progress_option,
    add_version_option,
    run_command,
)

__all__ = ["build_parser", "main"]

PROG = "parallel-recon export"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Export reconstructed MRD images as DICOM (one MR Image Storage file per "
        "plane), NIfTI (one .nii/.nii.gz per series, volumes stacked in 4D) or NumPy (.npz "
        "per series), with the geometry of the image headers.",
    )
    parser.add_argument("input", help="ISMRMRD HDF5 file, MRD stream file, or - for stdin")
    parser.add_argument(
        "--to",
        choices=list(FORMATS),
        help="output format (dicom, nifti, npy); without it, the -o name says: .nii or .nii.gz "
        "nifti, .npz npy, a name ending in / (or an existing folder) dicom",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="dicom: a new folder; nifti: NAME.nii or NAME.nii.gz; npy: NAME.npz "
        "(several series: NAME_<series>.EXT)",
    )
    parser.add_argument("-g", "--group", help="HDF5 group (default: the first with images)")
    parser.add_argument(
        "-s",
        "--image-series",
        action="append",
        default=[],
        metavar="SERIES",
        help="export only this series: HDF5 name (image_1) or series index; repeatable",
    )
    parser.add_argument(
        "--voxel-size",
        type=_voxel_size,
        metavar="X,Y,Z",
        help="voxel size in mm (z: slice thickness of 2D images), for images whose headers "
        "have no field of view; replaces the headers' own",
    )
    parser.add_argument(
        "--slice-spacing",
        type=_spacing,
        metavar="MM",
        help="distance in mm between the 2D images of a volume, placed in slice order along "
        "their normal from the first one: for images whose headers put them all at one place",
    )
    add_progress_option(parser)
    add_version_option(parser)
    return parser


def _voxel_size(text: str) -> tuple[float, float, float]:
    try:
        return parse_positive_triple(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _spacing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of mm, found {text!r}")
    return value


_BY_EXTENSION = {".nii": "nifti", ".nii.gz": "nifti", ".npz": "npy"}
"""-o name ending -> the format it implies when --to is not given."""


def infer_format(output: str) -> str | None:
    """The format an ``-o`` name implies (None when it says nothing)."""
    lower = output.lower()
    for ending, to in sorted(_BY_EXTENSION.items(), key=lambda item: -len(item[0])):
        if lower.endswith(ending) and len(lower) > len(ending):
            return to
    if output.endswith("/") or Path(output).is_dir():
        return "dicom"
    return None


def _read(args: argparse.Namespace) -> ExportInput:
    path = args.input
    if path != "-" and is_hdf5(path):
        return read_hdf5_input(path, args.group, args.image_series)
    if path != "-" and not Path(path).is_file():
        raise InputFileError(f"cannot open input {path!r}: no such file")
    if args.group is not None:
        raise InputFileError(f"-g/--group applies to HDF5 files; {path!r} is a stream")
    with open_input(None if path == "-" else path) as stream:
        return read_stream_input(
            stream, "standard input" if path == "-" else path, args.image_series
        )


def _run(args: argparse.Namespace) -> int:
    source = _read(args)
    total = sum(len(series.images) for series in source.series)
    progress = Progress(PROG, enabled=progress_wanted(args.progress), unit="images")
    written = export(
        source,
        args.output,
        args.to,
        progress=progress.update,
        voxel_size=args.voxel_size,
        slice_spacing=args.slice_spacing,
    )
    progress.finish()
    if progress.enabled:
        print(f"{PROG}: {total} images -> {len(written)} files", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon export``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.to is None:
        args.to = infer_format(args.output)
        if args.to is None:
            parser.error(
                f"--to is missing and -o {args.output!r} does not say the format: give --to "
                "dicom|nifti|npy, or a name ending in .nii, .nii.gz, .npz (or / for a DICOM "
                "folder)"
            )
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

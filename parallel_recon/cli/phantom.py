"""``mrd_phantom`` / ``parallel-recon phantom``: simulated multi-coil Shepp-Logan raw data.

Options follow ``ismrmrd_generate_cartesian_shepp_logan`` (``-m -c -O -r -a -w -n -o -d -C
-k``) plus slices, contrasts, 3D partitions, averages, partial Fourier, a seed, and the scan's
geometry: orientation, position and a bright marker voxel at a known place.  The output
is a group of an ISMRMRD HDF5 file (replaced if it exists: unlike the C++ tool, which appends,
one group never mixes two scans), or an MRD stream with ``-o -`` or ``--stream`` (stdout
unless ``-o`` names a file).
The HDF5 file is rewritten (other groups copied into a new file, renamed into place at the
end), so re-runs do not grow it and a failure leaves the previous file as it was.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigurationError, UsageError
from ..files import PendingFile
from ..files.inputs import refuse_non_hdf5_output
from ..phantom import (
    ORIENTATIONS,
    PhantomSpec,
    acquisition_count,
    iter_messages,
    marker_position,
    marker_voxel,
)
from ..phantom.spec import CALIBRATION_MODES, TRAJECTORIES
from ..progress import Progress, progress_wanted
from ..protocol import GENERATIONS, Notes, open_writer
from ..protocol.messages import Acquisition, Message
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

PROG = "mrd_phantom"
DEFAULT_HDF5 = "phantom.h5"
"""Where HDF5 goes without ``-o`` (as the C++ tool writes testdata.h5 in the current folder)."""


def _point(text: str) -> tuple[float, float, float]:
    """``X,Y,Z`` in mm (LPS)."""
    parts = text.split(",")
    try:
        x, y, z = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three numbers X,Y,Z in mm, found {text!r}"
        ) from None
    return (x, y, z)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Generate multi-coil Shepp-Logan raw data, Cartesian, radial or spiral "
        "(ISMRMRD HDF5 or stream).",
    )
    add = parser.add_argument
    add("-m", "--matrix", type=int, default=256, help="matrix size (even, >= 8; default 256)")
    add("-c", "--coils", type=int, default=8, help="number of coils (default 8)")
    add("-O", "--oversampling", type=int, default=2, help="readout oversampling (default 2)")
    add("-r", "--repetitions", type=int, default=1, help="repetitions (default 1)")
    add("-a", "--acceleration", type=int, default=1, help="acceleration factor R (default 1)")
    add("-w", "--calibration-width", type=int, default=0, help="calibration lines (default 0)")
    add(
        "-n",
        "--noise-level",
        type=float,
        default=0.05,
        help="std of the complex noise added to the unnormalised DFT of the object (default 0.05)",
    )
    add(
        "-o",
        "--output",
        default=None,
        help="HDF5 file (default ./phantom.h5), or - for a stream on stdout (the default "
        "with --stream or --format)",
    )
    add(
        "-d",
        "--dataset",
        default="dataset",
        help="HDF5 group, replaced if present (default dataset)",
    )
    add("-C", "--noise-calibration", action="store_true", help="add a noise scan first")
    add("-k", "--kspace-coordinates", action="store_true", help="store k-space coordinates")
    add("-s", "--slices", type=int, default=1, help="slices, acquired interleaved (default 1)")
    add("-e", "--contrasts", type=int, default=1, help="contrasts / echoes (default 1)")
    add("-p", "--partitions", type=int, default=1, help="3D partitions (default 1 = 2D)")
    add("-A", "--averages", type=int, default=1, help="averages (default 1)")
    add("--partial-fourier", type=float, default=1.0, help="fraction of ky lines, 0.5 to 1")
    add(
        "--asymmetric-echo",
        type=float,
        default=1.0,
        help="fraction of the readout acquired, above 0.5 to 1 (the first samples skipped)",
    )
    add("--seed", type=int, default=0, help="random seed of the noise (default 0)")
    add(
        "--stream",
        action="store_true",
        help="write an MRD stream, not HDF5: to --output, or to stdout without it",
    )
    add(
        "--format",
        choices=GENERATIONS,
        help="write a stream of this generation: ismrmrd (MRD v1, the default for streams) or "
        "mrd2 (MRD v2, yardl); implies --stream",
    )
    add(
        "--orientation",
        default="axial",
        metavar="NAME|L,P,S",
        help=f"read/phase/slice directions: {', '.join(ORIENTATIONS)} (default axial), or "
        "rotation angles of the axial frame in degrees about L, P and S",
    )
    add(
        "--position",
        type=_point,
        default=(0.0, 0.0, 0.0),
        metavar="X,Y,Z",
        help="centre of the imaged volume, patient LPS mm (default 0,0,0)",
    )
    add(
        "--marker",
        type=_point,
        metavar="X,Y,Z",
        help="put a bright voxel (intensity 2) at the voxel nearest this LPS point in mm; "
        "its exact centre is printed on stderr",
    )
    add(
        "--noise-correlation",
        type=float,
        default=0.0,
        help="noise correlation of neighbouring coils, 0..0.95 (also unequal coil noise power)",
    )
    add("--noise-lines", type=int, default=1, help="lines of the noise scan (-C; default 1)")
    add(
        "--noise-dwell",
        type=float,
        default=5.0,
        help="sample time of the noise scan in us (imaging: 5; default 5)",
    )
    add(
        "--calibration",
        choices=CALIBRATION_MODES,
        default="embedded",
        help="calibration lines in every repetition (embedded, default), in the first only "
        "(first), or as a reference block before the imaging lines (separate)",
    )
    add(
        "--acceleration-2",
        type=int,
        default=1,
        help="3D: acceleration along k2 (partitions; default 1)",
    )
    add(
        "--caipi-shift",
        type=int,
        default=0,
        help="3D CAIPIRINHA: k1 shift of the pattern from one acquired partition to the next "
        "(0..R-1; default 0)",
    )
    add(
        "--trajectory",
        choices=TRAJECTORIES,
        default="cartesian",
        help="k-space coverage: cartesian lines (default), radial or goldenangle spokes, or "
        "spiral interleaves; non-Cartesian samples come from the phantom's analytic spectrum "
        "and carry their trajectory (cycles per pixel)",
    )
    add(
        "--spokes",
        type=int,
        default=0,
        help="radial spokes or spiral interleaves per slice (default: fully sampled)",
    )
    add_progress_option(parser)
    add_force_option(parser)
    add_version_option(parser)
    return parser


SPEC_OPTIONS = {
    "matrix": "matrix", "coils": "coils", "oversampling": "oversampling",
    "repetitions": "repetitions", "acceleration": "acceleration",
    "calibration_width": "calibration_width", "noise_level": "noise_level",
    "noise_calibration": "noise_calibration", "kspace_coordinates": "kspace_coordinates",
    "slices": "slices", "contrasts": "contrasts", "partitions": "partitions",
    "averages": "averages", "partial_fourier": "partial_fourier", "seed": "seed",
    "orientation": "orientation", "position": "position", "marker": "marker",
    "noise_correlation": "noise_correlation", "noise_lines": "noise_lines",
    "noise_dwell_time_us": "noise_dwell", "calibration": "calibration",
    "acceleration_2": "acceleration_2", "caipi_shift": "caipi_shift",
    "asymmetric_echo": "asymmetric_echo", "trajectory": "trajectory", "spokes": "spokes",
}  # fmt: skip
"""PhantomSpec field -> the argparse ``dest`` of the option that sets it."""


def _option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """PhantomSpec field -> how the user spelled it (``-m/--matrix``)."""
    spelling = {action.dest: "/".join(action.option_strings) for action in parser._actions}
    return {field: spelling[dest] for field, dest in SPEC_OPTIONS.items() if spelling.get(dest)}


def _in_option_terms(problem: str, names: dict[str, str]) -> str:
    """A PhantomSpec message with its field names replaced by the options that set them."""
    pattern = re.compile(r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda match: names[match.group(1)], problem)


def _spec(args: argparse.Namespace) -> PhantomSpec:
    """The spec the options describe; a value it refuses is a usage error naming the option
    (``-m/--matrix must be even``), not the internal field."""
    values = {field: getattr(args, dest) for field, dest in SPEC_OPTIONS.items()}
    try:
        return PhantomSpec(**values)
    except ConfigurationError as exc:
        raise UsageError(_in_option_terms(str(exc), _option_names(build_parser()))) from None


def _counted(spec: PhantomSpec, progress: Progress) -> Iterator[Message]:
    for msg in iter_messages(spec):
        if isinstance(msg, Acquisition):
            progress.update(1, msg.data.nbytes)
        yield msg


def _write_hdf5(messages: Iterator[Message], path: str, group: str) -> None:
    """``-o`` names the output: an older scan in the same group is replaced, other groups kept.

    (The C++ tool appends instead, which mixes two scans under one header.)  The file is
    written anew, beside the old one, so the replaced scan's space is reclaimed.
    """
    from ..hdf5 import MrdHdf5Writer
    from ..hdf5.rewrite import copy_all_but

    refuse_non_hdf5_output(path)
    with PendingFile(path, seekable=True) as pending:
        if pending.existed and Path(pending.target).stat().st_size > 0:
            copy_all_but(pending.target, pending.path, group)
        with MrdHdf5Writer(pending.path, group) as h5:
            for msg in messages:
                h5.write(msg)


def _report_marker(spec: PhantomSpec) -> None:
    voxel, where = marker_voxel(spec), marker_position(spec)
    if voxel is None or where is None:
        return
    slice_, partition, row, column = voxel
    print(
        f"{PROG}: marker at slice {slice_}, partition {partition}, row {row}, column {column}: "
        f"LPS ({where[0]:.4f}, {where[1]:.4f}, {where[2]:.4f}) mm",
        file=sys.stderr,
    )


def _warn(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    spec = _spec(args)
    _report_marker(spec)
    progress = Progress(
        PROG,
        enabled=progress_wanted(args.progress),
        total=acquisition_count(spec),
        unit="acquisitions",
    )
    messages = _counted(spec, progress)
    streaming = args.output == "-" or args.stream or args.format
    if streaming:  # without -o a stream goes to stdout: a stream named phantom.h5 misleads
        with open_output(args.output, force=args.force) as sink:
            writer = open_writer(sink, args.format or "ismrmrd", Notes(_warn))
            for msg in messages:
                writer.write(msg)
            writer.close()
    else:
        _write_hdf5(messages, args.output or DEFAULT_HDF5, args.dataset)
    progress.finish()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mrd_phantom`` and ``parallel-recon phantom``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

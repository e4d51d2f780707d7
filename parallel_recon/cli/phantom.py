"""``mrd_phantom`` / ``parallel-recon phantom``: simulated multi-coil Shepp-Logan raw data.

Options follow ``ismrmrd_generate_cartesian_shepp_logan`` (``-m -c -O -r -a -w -n -o -d -C
-k``) plus slices, contrasts, 3D partitions, averages, partial Fourier and a seed.  The output
is a group of an ISMRMRD HDF5 file (replaced if it exists: unlike the C++ tool, which appends,
one group never mixes two scans), or an MRD stream with ``-o -`` (stdout) or ``--stream``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from ..hdf5.layout import open_mrd_file
from ..phantom import PhantomSpec, acquisition_count, iter_messages
from ..phantom.spec import CALIBRATION_MODES
from ..progress import Progress, progress_wanted
from ..protocol.encode import StreamWriter
from ..protocol.messages import Acquisition, Message
from .common import EXIT_OK, add_progress_option, open_output, run_command

__all__ = ["build_parser", "main"]

PROG = "mrd_phantom"
_EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad option as one stderr line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(_EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description="Generate multi-coil Cartesian Shepp-Logan raw data (ISMRMRD HDF5 or stream).",
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
    add("-o", "--output", default="phantom.h5", help="HDF5 file, or - for a stream on stdout")
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
    add("--seed", type=int, default=0, help="random seed of the noise (default 0)")
    add("--stream", action="store_true", help="write an MRD stream to --output, not HDF5")
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
    add_progress_option(parser)
    return parser


def _spec(args: argparse.Namespace) -> PhantomSpec:
    return PhantomSpec(
        matrix=args.matrix,
        coils=args.coils,
        oversampling=args.oversampling,
        repetitions=args.repetitions,
        acceleration=args.acceleration,
        calibration_width=args.calibration_width,
        noise_level=args.noise_level,
        noise_calibration=args.noise_calibration,
        kspace_coordinates=args.kspace_coordinates,
        slices=args.slices,
        contrasts=args.contrasts,
        partitions=args.partitions,
        averages=args.averages,
        partial_fourier=args.partial_fourier,
        seed=args.seed,
        noise_correlation=args.noise_correlation,
        noise_lines=args.noise_lines,
        noise_dwell_time_us=args.noise_dwell,
        calibration=args.calibration,
        acceleration_2=args.acceleration_2,
    )


def _counted(spec: PhantomSpec, progress: Progress) -> Iterator[Message]:
    for msg in iter_messages(spec):
        if isinstance(msg, Acquisition):
            progress.update(1, msg.data.nbytes)
        yield msg


def _clear_group(path: str, group: str) -> None:
    """``-o`` names the output: an older scan in the same group is replaced, other groups kept.

    (The C++ tool appends instead, which mixes two scans under one header.)
    """
    if not Path(path).exists():
        return
    with open_mrd_file(path, "a") as handle:
        if group in handle:
            del handle[group]


def _run(args: argparse.Namespace) -> int:
    spec = _spec(args)
    progress = Progress(
        PROG,
        enabled=progress_wanted(args.progress),
        total=acquisition_count(spec),
        unit="acquisitions",
    )
    messages = _counted(spec, progress)
    if args.output == "-" or args.stream:
        with open_output(args.output) as sink, StreamWriter(sink) as writer:
            for msg in messages:
                writer.write(msg)
    else:
        from ..hdf5 import MrdHdf5Writer

        _clear_group(args.output, args.dataset)
        with MrdHdf5Writer(args.output, args.dataset) as h5:
            for msg in messages:
                h5.write(msg)
    progress.finish()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mrd_phantom`` and ``parallel-recon phantom``."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

"""``mrd_stream_recon`` (= ``parallel-recon recon``): raw-data stream in, image stream out.

A reader process, a pool of worker processes and an ordering writer, sharing k-space in
shared memory.  Options follow the ISMRMRD C++ ``ismrmrd_stream_recon_cartesian_2d`` where
it has them (``-i/--input``, ``-o/--output``, ``--use-stdin``, ``--use-stdout``,
``--output-magnitude``).  The issue's ``--output complex|magnitude|phase`` shares its name
with the C++ output-file option, so ``--output`` means the image type when its value is one
of those three words and the output file otherwise; ``-o`` is always the file and
``--image-output`` always the type.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError
from ..files import refuse_same_file
from .common import (
    EXIT_OK,
    ExitStatus,
    add_progress_option,
    open_input,
    open_output,
    parse_recon_options,
    run_command,
    single_threaded_math,
)

__all__ = ["IMAGE_OUTPUTS", "build_parser", "main"]

PROG = "mrd_stream_recon"
IMAGE_OUTPUTS = ("magnitude", "complex", "phase")


class _OutputAction(argparse.Action):
    """``--output WORD``: an image type when WORD is one, else the output file (C++ style)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = str(values)
        if value in IMAGE_OUTPUTS:
            namespace.image_output = value
        else:
            namespace.output_file = value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Parallel reconstruction of an MRD (ISMRMRD v1) raw-data stream.\n"
        "Reads acquisitions from stdin (or -i FILE) and writes the header, the images in\n"
        "acquisition order and CLOSE to stdout (or -o FILE). Slices, repetitions and\n"
        "contrasts are reconstructed in parallel by --workers processes.",
        epilog="examples:\n"
        "  mrdhdf5_to_stream raw.h5 | mrd_stream_recon | stream_to_mrdhdf5 images.h5\n"
        "  mrd_stream_recon --workers 8 --profile < raw.bin > images.bin\n"
        "  mrd_stream_recon --output complex -i raw.bin -o images.bin\n"
        "  mrd_stream_recon --recon my_recon.py --recon-option lambda=0.1 < raw.bin > img.bin\n"
        "\nexit codes: 0 ok, 1 error (one line on stderr), 130 Ctrl-C, 141 output pipe "
        "closed, 143 SIGTERM",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", metavar="FILE", help="raw-data stream file (default stdin)")
    io.add_argument(
        "-o",
        "--output-file",
        dest="output_file",
        metavar="FILE",
        help="image stream file (default stdout)",
    )
    io.add_argument(
        "--output",
        action=_OutputAction,
        metavar="TYPE|FILE",
        help="magnitude (default), complex or phase images; any other value is taken as the "
        "output file, as in the ISMRMRD C++ tool",
    )
    io.add_argument("--image-output", choices=IMAGE_OUTPUTS, default="magnitude", help="image type")
    io.add_argument(
        "--output-magnitude",
        action="store_const",
        const="magnitude",
        dest="image_output",
        help="same as --image-output magnitude (ISMRMRD C++ spelling)",
    )
    io.add_argument("--use-stdin", action="store_true", help="read stdin (the default)")
    io.add_argument("--use-stdout", action="store_true", help="write stdout (the default)")
    recon = parser.add_argument_group("reconstruction")
    recon.add_argument(
        "--recon",
        default="auto",
        metavar="NAME|PATH",
        help="kernel: 'auto' (default: grappa for accelerated data with calibration lines, "
        "else cartesian), 'grappa', 'cartesian', or a path to a .py file defining "
        "reconstruct(kspace, context) -> list[Image]",
    )
    recon.add_argument(
        "--recon-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kernel option (repeatable): prewhiten=on|off; combine=adaptive|rss; "
        "coils=rss|channels; grappa: lambda=0.01, kx=5, ky=4, kz=3; an unknown key lists "
        "the kernel's options",
    )
    recon.add_argument(
        "--noise",
        metavar="FILE",
        help="take the noise scan (IS_NOISE_MEASUREMENT lines) for prewhitening from this MRD "
        "stream or HDF5 file instead of the input",
    )
    recon.add_argument(
        "--calibration-lines",
        type=int,
        metavar="N",
        help="calibration lines one slice may have (default: a quarter of the k1 x k2 grid, "
        "at least 64)",
    )
    recon.add_argument(
        "--series-index", type=int, default=1, metavar="N", help="image_series_index (default 1)"
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: one per core this process may use, less one for "
        f"the reader on 3 or more cores: {_default_workers()} here)",
    )
    engine.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="budget for k-space and image buffers, e.g. 512M, 4G or 30%% "
        "(default: 25%% of RAM, at most what /dev/shm holds)",
    )
    diag = parser.add_argument_group("diagnostics (all on stderr)")
    diag.add_argument("--profile", action="store_true", help="print stage statistics at the end")
    diag.add_argument("--profile-json", metavar="FILE", help="write the statistics as JSON")
    diag.add_argument(
        "--trace",
        metavar="FILE.json",
        help="write a timeline of the run (Chrome/Perfetto trace-event JSON: one track per "
        "process); draw it with 'parallel-recon profile FILE.json -o timeline.png'",
    )
    diag.add_argument(
        "-v", "--verbose", action="store_true", help="report config messages and other details"
    )
    add_progress_option(diag)
    return parser


def _default_workers() -> int:
    from ..engine.cores import default_workers

    return default_workers()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        single_threaded_math()
        from ..engine.pipeline import PipelineOptions, run_pipeline
        from ..engine.ring import parse_memory_size
        from ..progress import progress_wanted

        workers = _default_workers() if args.workers is None else args.workers
        if workers < 1:
            raise ConfigurationError(f"--workers {workers}: expected at least 1")
        if args.calibration_lines is not None and args.calibration_lines < 1:
            raise ConfigurationError(
                f"--calibration-lines {args.calibration_lines}: expected at least 1"
            )
        opts = PipelineOptions(
            workers=workers,
            recon=args.recon,
            output=args.image_output,
            series_index=args.series_index,
            options=parse_recon_options(args.recon_option),
            memory_limit=parse_memory_size(args.memory_limit) if args.memory_limit else None,
            profile=args.profile,
            profile_json=args.profile_json,
            progress=progress_wanted(args.progress),
            verbose=args.verbose,
            prog=PROG,
            noise_file=args.noise,
            calibration_lines=args.calibration_lines,
            trace=args.trace,
        )
        extra = [path for path in (args.profile_json, args.trace) if path]
        outputs = [args.output_file, *extra]
        refuse_same_file([args.input], outputs)
        with open_input(args.input) as source, open_output(args.output_file) as sink:
            code = run_pipeline(source, sink, opts)
            if code != EXIT_OK:
                raise ExitStatus(code)  # an interrupted run leaves no output file
        return code

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

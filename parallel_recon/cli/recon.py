"""``mrd_stream_recon`` (= ``parallel-recon recon``): raw-data stream in, image stream out.

A reader process, a pool of worker processes and an ordering writer, sharing k-space in
shared memory.  Options follow the ISMRMRD C++ ``ismrmrd_stream_recon_cartesian_2d`` where
it has them (``-i/--input``, ``-o/--output FILE``, ``--use-stdin``, ``--use-stdout``,
``--output-magnitude``).  The image type has its own option, ``--image-type``, so that an
output file and an image type never share a spelling: ``--output`` always names the file,
and a value that reads like an image type (``--output complex``, ``--output magnitdue``) is
refused with the fix instead of silently becoming a file of that name.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..engine.cores import single_threaded_math
from ..errors import ConfigurationError
from ..files import PendingFile, refuse_same_file
from ..files.inputs import open_input
from .common import (
    EXIT_OK,
    ExitStatus,
    OneLineParser,
    add_force_option,
    add_progress_option,
    add_version_option,
    int_range,
    open_output,
    parse_recon_options,
    run_command,
)

__all__ = ["IMAGE_TYPES", "build_parser", "console_main", "main", "max_workers"]

PROG = "mrd_stream_recon"
IMAGE_TYPES = ("magnitude", "complex", "phase")
FORMATS = ("ismrmrd", "mrd2")
"""``--format``: the stream generations (named here, not imported: this module must not
import numpy before :func:`single_threaded_math` has set one BLAS thread per process)."""
_WORKERS_PER_CORE = 4


def max_workers() -> int:
    """The most worker processes a run starts: 4 per available core (at least 8)."""
    from ..engine.cores import available_cores

    return max(8, _WORKERS_PER_CORE * available_cores())


class _OutputFileAction(argparse.Action):
    """``--output FILE`` (the C++ tool's spelling of ``-o``), refusing image-type look-alikes.

    The image type used to share this spelling (``--output complex``); a word that is, or
    nearly is, an image type and has no path separator or extension is most likely meant
    as one, so it is a usage error that names both fixes.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = str(values)
        plain = "/" not in value and "." not in value
        match = difflib.get_close_matches(value.lower(), IMAGE_TYPES, n=1, cutoff=0.75)
        if plain and match:
            parser.error(
                f"{option_string} {value}: {option_string} names the output file; the image "
                f"type is --image-type {match[0]} (to write a file of that name, give "
                f"-o ./{value})"
            )
        namespace.output_file = value


class _DeprecatedImageOutput(argparse.Action):
    """``--image-output TYPE``: the old name of ``--image-type`` (works, with a note)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        namespace.image_type = str(values)
        namespace.deprecated = f"{option_string} is deprecated; use --image-type {values}"


_RECON_OPTION_HELP = "kernel option (repeatable); an unknown key lists the kernel's options"


class _ReconParser(OneLineParser):
    """Lists the kernels' option defaults in ``--help``, read from their OPTIONS tables
    when help is asked for (importing the kernels for every run would slow start-up)."""

    def format_help(self) -> str:
        from ..engine.kernels import kernel_option_defaults

        for action in self._actions:
            if action.dest == "recon_option":
                action.help = f"{_RECON_OPTION_HELP}; defaults: {kernel_option_defaults()}"
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _ReconParser(
        prog=PROG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Parallel reconstruction of an MRD raw-data stream, MRD v1 (ISMRMRD) or\n"
        "MRD v2 (yardl), told apart by its first bytes. Reads acquisitions from stdin (or\n"
        "-i FILE) and writes the header, the images in acquisition order and the end of the\n"
        "stream to stdout (or -o FILE), in the input's generation unless --format says\n"
        "otherwise. Slices, repetitions and contrasts are reconstructed in parallel by\n"
        "--workers processes.",
        epilog="examples:\n"
        "  mrdhdf5_to_stream raw.h5 | mrd_stream_recon | stream_to_mrdhdf5 images.h5\n"
        "  mrd_stream_recon --workers 8 --profile < raw.bin > images.bin\n"
        "  mrd_stream_recon --image-type complex -i raw.bin -o images.bin\n"
        "  mrd_stream_recon --recon my_recon.py --recon-option lambda=0.1 < raw.bin > img.bin\n"
        "  mrd_stream_recon -c default.xml < raw.bin > images.bin   (gadgetron --from_stream)\n"
        "\nexit codes: 0 ok, 1 error (one line on stderr), 2 usage error, 130 Ctrl-C, "
        "141 output pipe closed, 143 SIGTERM",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", metavar="FILE", help="raw-data stream file (default stdin)")
    io.add_argument(
        "-o", dest="output_file", metavar="FILE", help="image stream file (default stdout)"
    )
    io.add_argument(
        "--output",
        "--output-file",
        action=_OutputFileAction,
        metavar="FILE",
        help="same as -o (the ISMRMRD C++ spelling); the image type is --image-type",
    )
    io.add_argument(
        "--image-type",
        choices=IMAGE_TYPES,
        default="magnitude",
        help="magnitude (float32, default), complex (complex64) or phase (float32 radians)",
    )
    io.add_argument(
        "--image-output",
        action=_DeprecatedImageOutput,
        choices=IMAGE_TYPES,
        help="deprecated name of --image-type",
    )
    io.add_argument(
        "--output-magnitude",
        action="store_const",
        const="magnitude",
        dest="image_type",
        help="same as --image-type magnitude (ISMRMRD C++ spelling)",
    )
    io.add_argument(
        "--format",
        choices=FORMATS,
        help="generation of the image stream: ismrmrd (MRD v1) or mrd2 (MRD v2, yardl) "
        "(default: the input's)",
    )
    io.add_argument("--use-stdin", action="store_true", help="read stdin (the default)")
    io.add_argument("--use-stdout", action="store_true", help="write stdout (the default)")
    add_force_option(io)
    recon = parser.add_argument_group("reconstruction")
    recon.add_argument(
        "-c",
        "--config-file",
        metavar="NAME",
        help="choose the kernel by a Gadgetron configuration name, as gadgetron "
        "--from_stream -c takes it (default.xml, Generic_Cartesian_FFT.xml, "
        "Generic_Cartesian_Grappa.xml, ...) or a kernel name; an unknown name runs auto "
        "(with a warning); without -c or --recon a CONFIG_FILE message in the stream chooses",
    )
    recon.add_argument(
        "--recon",
        default=None,
        metavar="NAME|PATH",
        help="kernel: 'auto' (default: grappa for accelerated data with calibration lines, "
        "sense when their lines form no regular lattice, else cartesian; radial and spiral "
        "data: nufft when fully sampled, sense when undersampled), 'grappa', 'sense', "
        "'nufft', 'cartesian', or a path to a .py file defining "
        "reconstruct(kspace, context) -> list[Image]",
    )
    recon.add_argument(
        "--recon-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=_RECON_OPTION_HELP,
    )
    recon.add_argument(
        "--noise",
        metavar="FILE",
        help="take the noise scan (IS_NOISE_MEASUREMENT lines) for prewhitening from this MRD "
        "stream or HDF5 file instead of the input",
    )
    recon.add_argument(
        "--calibration-lines",
        type=int_range(1),
        metavar="N",
        help="calibration lines one slice may have (default: a quarter of the k1 x k2 grid, "
        "at least 64)",
    )
    recon.add_argument(
        "--series-index",
        type=int_range(0, 65535),
        default=1,
        metavar="N",
        help="image_series_index of the images, 0..65535 (default 1)",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "-w",
        "--workers",
        type=int_range(1),
        default=None,
        metavar="N",
        help="worker processes (default: one per core this process may use, less one for "
        f"the reader on 3 or more cores: {_default_workers()} here; at most 4 per core)",
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
        "-v",
        "--verbose",
        action="store_true",
        help="report config messages and other details; a kernel's full traceback",
    )
    add_progress_option(diag)
    add_version_option(parser)
    parser.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    return parser


def _stray_hint(name: str) -> str:
    """The usage error for a file named without ``-i``: how to give it, by what it is."""
    from ..inspect.summary_hdf5 import is_hdf5

    path = Path(name)
    if path.is_file() and is_hdf5(name):
        return (
            f"{name} is an ISMRMRD HDF5 file, and {PROG} reads a stream: convert it on the "
            f"way in, mrdhdf5_to_stream {name} | {PROG} > images.bin"
        )
    if path.is_file():
        return f"a positional input file ({name}): give the stream with -i {name} (or < {name})"
    return f"unrecognized arguments: {name}"


def _worker_count(wanted: int) -> int:
    """``--workers``, capped at :func:`max_workers` with one warning that says why."""
    most = max_workers()
    if wanted <= most:
        return wanted
    from ..engine.cores import available_cores

    cores = available_cores()
    print(
        f"{PROG}: warning: --workers {wanted}: using {most} ({_WORKERS_PER_CORE} per core on "
        f"{cores} cores): more processes than that only share the same cores, and each one "
        "costs memory and start-up time",
        file=sys.stderr,
    )
    return most


@contextlib.contextmanager
def _diagnostics_file(path: str | None) -> Iterator[str | None]:
    """Where the engine writes ``--profile-json`` or ``--trace``: a temporary file beside
    ``path``, renamed into place when the run succeeds.  Made before the recon starts, so a
    folder that does not exist or refuses files, or a path that is a folder, fails at once,
    not after the whole reconstruction."""
    if path is None:
        yield None
        return
    with PendingFile(path) as pending:
        yield str(pending.path)


def _default_workers() -> int:
    from ..engine.cores import default_workers

    return default_workers()


def _kernel(args: argparse.Namespace) -> str:
    """``--recon``, or the kernel ``-c NAME`` chooses (one warning for an unknown name)."""
    if args.config_file is None:
        return str(args.recon or "auto")
    if args.recon is not None:
        raise ConfigurationError("give either -c/--config-file or --recon, not both")
    from ..engine.configs import kernel_for_config

    kernel, warning = kernel_for_config(args.config_file)
    if warning:
        print(f"{PROG}: warning: -c {warning}", file=sys.stderr)
    return kernel


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stray:
        parser.error(_stray_hint(args.stray[0]))

    def body() -> int:
        single_threaded_math()
        from ..engine.pipeline import PipelineOptions, run_pipeline
        from ..engine.ring import parse_memory_size
        from ..progress import progress_wanted

        if getattr(args, "deprecated", None):
            print(f"{PROG}: warning: {args.deprecated}", file=sys.stderr)
        workers = _default_workers() if args.workers is None else args.workers
        opts = PipelineOptions(
            workers=_worker_count(workers),
            recon=_kernel(args),
            recon_from_stream=args.recon is None and args.config_file is None,
            output_format=args.format,
            output=args.image_type,
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
        with (
            open_input(args.input) as source,
            open_output(args.output_file, force=args.force) as sink,
            _diagnostics_file(args.profile_json) as profile_path,
            _diagnostics_file(args.trace) as trace_path,
        ):
            code = run_pipeline(
                source, sink, replace(opts, profile_json=profile_path, trace=trace_path)
            )
            if code != EXIT_OK:
                raise ExitStatus(code)  # an interrupted run leaves no output file
        return code

    return run_command(PROG, body)


def console_main() -> None:
    """The ``mrd_stream_recon`` program: :func:`main`, then a quick exit.

    When ``main`` returns, the run is over: its outputs are flushed and closed, its children
    reaped, its shared memory unmapped.  What is left is the interpreter's own teardown
    (freeing numpy's and multiprocessing's state, module by module), a few tens of
    milliseconds of a small scan's wall time that nothing needs, so it is skipped.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

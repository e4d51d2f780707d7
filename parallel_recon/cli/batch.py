"""``parallel-recon batch``: reconstruct many raw-data files, here or on a Dask cluster.

One long-lived set of processes does the whole batch (no interpreter start per file);
each output is written under a temporary name and renamed when complete; outputs that are
up to date are skipped; a bad input is recorded and the batch goes on.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..engine.cores import single_threaded_math
from .common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OneLineParser,
    add_progress_option,
    add_version_option,
    int_range,
    parse_recon_options,
    run_command,
)

__all__ = ["build_parser", "main"]

PROG = "parallel-recon batch"
EXIT_TERMINATED = 143
_EXIT_BY_STOP = {"interrupt": EXIT_INTERRUPTED, "terminate": EXIT_TERMINATED}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reconstruct many MRD raw-data files (ISMRMRD HDF5 or MRD streams, "
        "recognised by content)\ninto ISMRMRD HDF5 image files under OUTDIR, mirroring "
        "the inputs' relative paths.",
        epilog="inputs: files, directories (searched recursively), glob patterns ('raw/*.h5'),\n"
        "and @list.txt (one input per line, relative to the list's folder).\n"
        "\nexamples:\n"
        "  parallel-recon batch study/ -o recon/ --report recon/report.csv\n"
        "  parallel-recon batch 'raw/**/*.h5' @more.txt -o recon/ --png --jobs 4\n"
        "  parallel-recon batch study/ -o recon/ --scheduler tcp://head-node:8786\n"
        "\nexit codes: 0 all succeeded, 1 any input failed (listed on stderr), 2 usage,\n"
        "130 Ctrl-C, 143 SIGTERM",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder, glob, @list")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder")
    recon = parser.add_argument_group("reconstruction (as mrd_stream_recon)")
    recon.add_argument(
        "--recon",
        default="auto",
        metavar="NAME|PATH",
        help="kernel name or a .py file defining reconstruct(kspace, context) (default: auto)",
    )
    recon.add_argument(
        "--image-type",
        choices=("magnitude", "complex", "phase"),
        default="magnitude",
        help="magnitude (float32, default), complex (complex64) or phase (float32 radians)",
    )
    recon.add_argument(
        "--recon-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option passed to the kernel (repeatable)",
    )
    recon.add_argument(
        "--series-index",
        type=int_range(0, 65535),
        default=1,
        metavar="N",
        help="image_series_index of the images, 0..65535 (default 1)",
    )
    recon.add_argument("--png", action="store_true", help="also write a PNG montage per output")
    recon.add_argument(
        "--to",
        action="append",
        default=[],
        choices=("dicom", "nifti", "npy"),
        help="also export each output beside it (repeatable): scan.h5 -> scan_dicom/, "
        "scan.nii.gz, scan.npz (as parallel-recon export)",
    )
    run = parser.add_argument_group("running")
    run.add_argument(
        "-j",
        "--jobs",
        type=int_range(1),
        metavar="N",
        help="files in flight on this machine (default: one per core)",
    )
    run.add_argument(
        "-w",
        "--workers",
        type=int_range(1),
        metavar="N",
        help="worker processes per file (default: the cores divided among the files)",
    )
    run.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="shared-memory budget of all files in flight on a machine, e.g. 4G or 30%% "
        "(default: the engine's default, 25%% of RAM)",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on Dask: tcp://HOST:PORT of a running scheduler, or local:N for a local "
        "cluster of N processes (needs: pip install 'parallel-recon[cluster]')",
    )
    run.add_argument("--force", action="store_true", help="redo outputs that are up to date")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    run.add_argument("--report", metavar="FILE", help="write one row per input to FILE.csv|.json")
    add_progress_option(run)
    add_version_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon batch``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        parser.error(
            f"-o {args.outdir!r} is a file: OUTDIR is the folder the outputs go to (give a "
            "new or existing folder)"
        )

    def body() -> int:
        single_threaded_math()
        from ..batch.model import BatchSettings
        from ..batch.report import check_report_path, failure_lines, write_report
        from ..batch.run import Terminated, run_batch, summary_line
        from ..engine.ring import parse_memory_size
        from ..progress import progress_wanted

        if args.report:
            check_report_path(args.report)
        if args.scheduler:
            from ..batch.cluster import parse_scheduler

            parse_scheduler(args.scheduler)
        settings = BatchSettings(
            recon=args.recon,
            output=args.image_type,
            options=parse_recon_options(args.recon_option),
            series_index=args.series_index,
            workers=args.workers,
            memory_limit=parse_memory_size(args.memory_limit) if args.memory_limit else None,
            png=args.png,
            to=tuple(dict.fromkeys(args.to)),
            force=args.force,
        )
        try:
            outcome = run_batch(
                args.inputs,
                args.outdir,
                settings,
                jobs=args.jobs,
                scheduler=args.scheduler,
                fail_fast=args.fail_fast,
                progress=progress_wanted(args.progress),
            )
        except Terminated:
            print(f"{PROG}: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        if args.report:
            write_report(args.report, outcome.results)
        if outcome.stopped_by is not None:  # one line: what was done before the stop
            print(summary_line(outcome), file=sys.stderr)
            return _EXIT_BY_STOP[outcome.stopped_by]
        print(summary_line(outcome), file=sys.stderr)
        for line in failure_lines(outcome.results):
            print(line, file=sys.stderr)
        return EXIT_OK if outcome.ok else EXIT_ERROR

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

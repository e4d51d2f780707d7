"""``parallel-recon profile TRACE.json -o timeline.png``: draw a ``--trace`` timeline.

``mrd_stream_recon --trace TRACE.json`` records what every process of the pipeline did and
when; this command draws it as a PNG: one Gantt row per process, then the input and output
throughput over time.  The same file opens in ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import argparse
import sys

from ..files import refuse_same_file
from .common import EXIT_OK, OneLineParser, add_version_option, int_range, open_output, run_command

__all__ = ["build_parser", "main"]

PROG = "parallel-recon profile"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Draw the timeline of a 'mrd_stream_recon --trace FILE.json' run as a PNG: "
        "one Gantt row per process (reader, workers, writer, supervisor), coloured by what "
        "it was doing, and the input/output throughput over time.",
        epilog="example:\n"
        "  mrd_stream_recon --trace run.json < raw.bin > images.bin\n"
        "  parallel-recon profile run.json -o timeline.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trace", metavar="TRACE.json", help="file written by --trace")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write (- = stdout)")
    parser.add_argument(
        "--width", type=int_range(1), default=1400, help="image width in pixels (1400)"
    )
    add_version_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon profile``."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..inspect.timeline import load_trace, render_timeline

        refuse_same_file([args.trace], [args.output])
        timeline = load_trace(args.trace)
        picture = render_timeline(timeline, max(args.width, 400))
        with open_output(args.output) as sink:
            picture.save(sink, format="PNG")
        if args.output != "-":
            spans = sum(len(track.spans) for track in timeline.tracks)
            print(
                f"{args.output}: {len(timeline.tracks)} processes, {spans} spans, "
                f"{timeline.stop - timeline.start:.2f} s",
                file=sys.stderr,
            )
        return EXIT_OK

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

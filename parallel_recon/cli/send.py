"""``parallel-recon send HOST:PORT``: the socat replacement for reconstruction clients.

Sends stdin (or ``-i FILE``) to a reconstruction server and writes its reply to stdout (or
``-o FILE``).  After the input ends the connection is half-closed and the reply is read until
the server closes it, so no ``-t30``-style timeout is needed; a refused or dropped
connection, or a reply without CLOSE, is one error line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ReconError
from ..files import refuse_same_file
from ..files.inputs import open_input
from ..net.client import parse_address, send_stream
from ..progress import Progress, progress_wanted
from .common import (
    OneLineParser,
    add_force_option,
    add_progress_option,
    add_version_option,
    open_output,
    run_command,
)

__all__ = ["build_parser", "main"]

PROG = "parallel-recon send"


def _address(text: str) -> str:
    """HOST:PORT, checked when the command line is parsed (a missing port is a usage
    error, exit 2)."""
    try:
        parse_address(text)
    except ReconError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Send an MRD stream to a reconstruction server and write its reply.",
    )
    parser.add_argument(
        "address", type=_address, metavar="HOST:PORT", help="server address, e.g. 127.0.0.1:9222"
    )
    parser.add_argument("-i", "--input", metavar="FILE", help="stream to send (default: stdin)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the reply (default: stdout)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for the connection (default 30); the reply has no timeout",
    )
    add_progress_option(parser)
    add_force_option(parser)
    add_version_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Send, receive, and report problems as one line."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        refuse_same_file([args.input], [args.output])
        progress = Progress("send: reply", enabled=progress_wanted(args.progress), unit="messages")
        with (
            open_input(args.input) as source,
            open_output(args.output, force=args.force) as sink,
        ):
            send_stream(
                args.address,
                source,
                sink,
                connect_timeout=args.connect_timeout,
                progress=progress,
            )
        return 0

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

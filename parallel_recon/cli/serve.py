"""``parallel-recon serve``: reconstruct MRD streams sent over TCP.

Each connection gets its own full reconstruction (the ``mrd_stream_recon`` pipeline) and
its images back on the same socket.  The server binds loopback unless told otherwise,
logs one line per connection on stderr, keeps all connections within one shared-memory
budget (``--memory-limit``), drops clients that stall before their stream is complete or
stop taking their reply (``--idle-timeout``), bounds the connections of one address
(``--max-per-address``), and on SIGTERM or Ctrl-C stops accepting, lets running
connections finish (up to ``--drain-timeout``) and exits 0.  Kernels and their options are
checked at start-up, so a typo fails the server, not every connection.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from types import FrameType

from ..errors import ConfigurationError
from ..net.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PER_ADDRESS,
    DEFAULT_READY_ENGINES,
    WAITING,
    ReconServer,
    ServerConfig,
)
from .common import (
    OneLineParser,
    add_version_option,
    parse_recon_options,
    port_number,
    run_command,
)
from .recon import IMAGE_TYPES, max_workers

__all__ = ["build_parser", "main"]

PROG = "parallel-recon serve"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}")
    return value


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, found {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, found {text}")
    return value


def _memory_size(text: str) -> int:
    from ..engine.ring import parse_memory_size

    try:
        return parse_memory_size(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mapping(text: str) -> tuple[str, str]:
    name, sep, kernel = text.partition("=")
    if not sep or not name or not kernel:
        raise argparse.ArgumentTypeError(f"expected NAME=KERNEL, found {text!r}")
    return name, kernel


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="TCP reconstruction server: each connection sends an MRD stream and "
        "receives the reconstructed image stream on the same socket.",
        epilog="Config names: a client's CONFIG_FILE name chooses the kernel when it is "
        "listed with --config-map or is a kernel name of --recon (e.g. 'cartesian'); "
        "any other name ('default', 'default.xml') uses --recon.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument(
        "--port",
        type=port_number,
        default=9222,
        help="TCP port, 0..65535 (default 9222; 0 picks a free one)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="worker processes per connection (default: the recon's)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=8,
        metavar="M",
        help=f"connections reconstructed at once; up to {WAITING} more wait for their header, "
        "a slot or memory, more are refused (default 8)",
    )
    parser.add_argument(
        "--memory-limit",
        type=_memory_size,
        metavar="SIZE",
        help="shared memory for all connections together, e.g. 4G or 30%% (default: 25%% "
        "of RAM, at most what /dev/shm holds); a connection waits until its dataset's "
        "share is free, one larger than all of it is refused",
    )
    parser.add_argument(
        "--max-per-address",
        type=_positive,
        default=DEFAULT_MAX_PER_ADDRESS,
        metavar="N",
        help="connections one client address may have open at once; more are refused "
        f"(default {DEFAULT_MAX_PER_ADDRESS})",
    )
    parser.add_argument(
        "--ready-engines",
        type=_non_negative_int,
        default=DEFAULT_READY_ENGINES,
        metavar="N",
        help="recon processes kept ready, forked from a process that has already imported "
        "numpy, the engine and the kernels, so a connection's reconstruction starts at "
        f"once (default {DEFAULT_READY_ENGINES}; 0: start a fresh interpreter per connection)",
    )
    parser.add_argument(
        "--recon",
        default="auto",
        metavar="NAME|PATH",
        help="default kernel: a name or a module path (default: auto, i.e. grappa for "
        "accelerated data with calibration lines, else cartesian)",
    )
    parser.add_argument(
        "--config-map",
        type=_mapping,
        action="append",
        default=[],
        metavar="NAME=KERNEL",
        help="use KERNEL when a client's CONFIG_FILE name is NAME (repeatable)",
    )
    parser.add_argument(
        "--command",
        metavar="CMD",
        help="run this stdin->stdout filter per connection instead of the Python recon "
        "(e.g. mrd_stream_recon_cpp); config names are then ignored",
    )
    parser.add_argument(
        "--image-type",
        choices=IMAGE_TYPES,
        help="image type of every connection's reconstruction (default magnitude)",
    )
    parser.add_argument(
        "--recon-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kernel option for every connection (repeatable), as in mrd_stream_recon",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_non_negative_seconds,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="a client's header must arrive within this many seconds, and until its "
        "stream's CLOSE it must send, and it must take its reply, at least 16 KiB per "
        f"this many seconds, or it is dropped (default {DEFAULT_IDLE_TIMEOUT:g}; 0: never); "
        "after CLOSE it may wait silently for its images",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds SIGTERM waits for running connections (default 60); "
        "a second signal stops them at once",
    )
    add_version_option(parser)
    return parser


def _config(args: argparse.Namespace) -> ServerConfig:
    command = shlex.split(args.command) if args.command else None
    if args.command is not None and not command:
        raise ConfigurationError("--command is empty: expected a program and its arguments")
    if command and shutil.which(command[0]) is None:
        raise ConfigurationError(
            f"--command {command[0]!r}: expected an executable program, found none "
            "(give a path or put it on PATH)"
        )
    options = parse_recon_options(args.recon_option)
    if command and (args.image_type or options):
        raise ConfigurationError(
            "--image-type and --recon-option are options of the built-in recon; with "
            "--command give them in CMD"
        )
    if not command:
        _check_kernels(args)
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=_workers(args.workers),
        max_connections=args.max_connections,
        recon=args.recon,
        config_map=dict(args.config_map),
        command=command,
        drain_timeout=args.drain_timeout,
        idle_timeout=args.idle_timeout or None,
        image_type=args.image_type or "magnitude",
        recon_options=options,
        memory_limit=args.memory_limit,
        max_per_address=args.max_per_address,
        ready_engines=0 if command else args.ready_engines,
    )


def _workers(wanted: int | None) -> int:
    """Each connection's ``--workers``, decided here once (the recon's default and cap), so
    that the server sizes a connection's memory as its recon will."""
    from ..engine.cores import default_workers

    return min(wanted or default_workers(), max_workers())


def _check_kernels(args: argparse.Namespace) -> None:
    """Load every kernel a connection may use and check the options against each, so that
    ``--recon nosuch.py`` or ``--recon-option lamda=1`` fails now, not per connection."""
    from ..engine.kernels import check_options, load_kernel

    options = parse_recon_options(args.recon_option)
    kernels = {args.recon: "", **{k: f" (from --config-map {n}={k})" for n, k in args.config_map}}
    for kernel, where in kernels.items():
        try:
            load_kernel(kernel)
            check_options(kernel, options)
        except ConfigurationError as exc:  # a usage error stays one (exit 2)
            raise type(exc)(f"{exc}{where}") from None


def _install_stop(server: ReconServer) -> dict[int, Callable[..., object] | int | None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    previous: dict[int, Callable[..., object] | int | None] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, stop)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM / Ctrl-C."""
    args = build_parser().parse_args(argv)
    from ..engine.ring import format_mib

    def body() -> int:
        config = _config(args)
        try:
            server = ReconServer(config)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ) from None
        previous = _install_stop(server)
        host, port = server.address
        server.say(
            f"listening on {host}:{port} (--workers {config.workers} per connection, "
            f"{format_mib(server.budget)} of shared memory for all connections)"
        )
        try:
            server.serve_forever()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        server.say("stopped")
        return 0

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

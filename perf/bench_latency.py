"""Latency to the first image of a tiny scan: through ``serve``, through the command line, and
the ISMRMRD C++ recon, side by side in one run.  Writes ``perf/results/latency.md``.

The scan is the tiny stream of the issue (``mrd_phantom -m 64 -c 4``: one slice, 4 coils,
287 kB).  Measured, in interleaved rounds so that a change in the machine's load hits all
alike:

1. ``serve`` (a connection to an already running server, its engines ready): the client
   sends the whole stream, CLOSE included; time from the CLOSE having been sent to the
   first byte of the first IMAGE message, and to the end of the reply.  The same with
   ``--ready-engines 0`` (a fresh interpreter per connection, as before the engines).
2. ``mrd_stream_recon < tiny > images`` as a command: time from starting it to the first
   image byte on its stdout, and to its exit (the wall time a user sees).
3. ``ismrmrd_stream_recon_cartesian_2d --use-stdin --use-stdout --output-magnitude`` the
   same way, from ``--cpp-tools DIR`` or ``$ISMRMRD_TOOLS`` (named "not measured" where
   the tools are absent; they are built from the ismrmrd repository, not shipped here).
4. With ``--baseline REF`` (default ``main`` when it exists), the command and the cold
   server of that checkout too.

One ``--trace`` run of the command shows the start-up (interpreter and imports) next to the
first image.  ``--quick`` runs 3 rounds and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench_serve import Server, baseline_checkout

PERF = Path(__file__).resolve().parent
REPO = PERF.parent
RESULTS = PERF / "results"
BIN = Path(sys.executable).parent
COLD = ("--ready-engines", "0")
RECON_MAIN = "import sys; from parallel_recon.cli.recon import main; sys.exit(main())"
CPP_RECON = "ismrmrd_stream_recon_cartesian_2d"
_HEADER, _TEXT, _IMAGE, _CLOSE = 3, 5, 1022, 4
TARGET_SERVE_S = 0.050
TARGET_CLI_S = 0.150


def tiny_stream() -> bytes:
    from parallel_recon.phantom import PhantomSpec, write_stream

    sink = io.BytesIO()
    write_stream(PhantomSpec(matrix=64, coils=4), sink)
    return sink.getvalue()


class FirstImage:
    """Reads an MRD image stream as it arrives and notes when the first IMAGE begins."""

    def __init__(self, read: Callable[[int], bytes]):
        self.read = read
        self.first_image_at: float | None = None
        self.nbytes = 0
        self._pending = b""

    def _take(self, count: int) -> bytes:
        while len(self._pending) < count:
            chunk = self.read(1 << 16)
            if not chunk:
                raise EOFError("the stream ended before its first image")
            self._pending += chunk
            self.nbytes += len(chunk)
        data, self._pending = self._pending[:count], self._pending[count:]
        return data

    def until_end(self) -> float:
        """Read to EOF; returns the time of the end (the first image time is kept)."""
        while True:
            (mid,) = struct.unpack("<H", self._take(2))
            if mid == _IMAGE:
                self.first_image_at = time.perf_counter()
                break
            if mid not in (_HEADER, _TEXT):
                raise ValueError(f"unexpected message {mid} before the first image")
            (length,) = struct.unpack("<I", self._take(4))
            self._take(length)
        while chunk := self.read(1 << 16):
            self.nbytes += len(chunk)
        return time.perf_counter()


def run_command(
    command: list[str], stream: Path, env: dict[str, str], cwd: Path | None = None
) -> tuple[float, float]:
    """(first image, exit) seconds after starting ``command < stream`` (in ``cwd``: a
    baseline's ``python -c`` finds its own package there first)."""
    with open(stream, "rb") as source:
        start = time.perf_counter()
        with subprocess.Popen(
            command,
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        ) as proc:
            assert proc.stdout is not None
            reader = FirstImage(proc.stdout.read1)  # type: ignore[attr-defined]
            reader.until_end()
            proc.wait()
        end = time.perf_counter()
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} exited {proc.returncode}")
    assert reader.first_image_at is not None
    return reader.first_image_at - start, end - start


def timed_exchange(server: Server, data: bytes) -> tuple[float, float]:
    """(first image, end) seconds after the stream's CLOSE was sent to ``server``."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(data)
        closed = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        reader = FirstImage(sock.recv)
        end = reader.until_end()
    assert reader.first_image_at is not None
    return reader.first_image_at - closed, end - closed


def cpp_tools(option: str | None) -> Path | None:
    folder = option or os.environ.get("ISMRMRD_TOOLS")
    if folder and (Path(folder) / CPP_RECON).is_file():
        return Path(folder)
    return None


def startup_from_trace(stream: Path) -> tuple[float, float, float]:
    """(start-up, first image, engine wall) seconds of one traced command run."""
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        with open(stream, "rb") as source:
            subprocess.run(
                [str(BIN / "mrd_stream_recon"), "--trace", str(trace)],
                stdin=source,
                stdout=subprocess.DEVNULL,
                check=True,
            )
        document = json.loads(trace.read_text())
    events = document["traceEvents"]
    startup = next(e for e in events if e["name"] == "interpreter start-up and imports")
    emits = [e for e in events if e.get("ph") == "X" and e["name"].startswith("emit unit")]
    first_emit = min(e["ts"] for e in emits)
    return startup["dur"] / 1e6, first_emit / 1e6, float(document["otherData"]["wall_s"])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


@contextlib.contextmanager
def _maybe_baseline(ref: str | None) -> Iterator[Path | None]:
    if not ref:
        yield None
        return
    known = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", ref], capture_output=True
    )
    if known.returncode != 0:
        yield None
        return
    with baseline_checkout(ref) as folder:
        yield folder


def compile_bytecode(root: Path) -> None:
    """Byte-compile a checkout's package sources, as installing a wheel does.

    An editable install run where ``PYTHONDONTWRITEBYTECODE`` is set (as on CI machines)
    recompiles every module it imports whose cached bytecode is missing or older than its
    source, on every start: that is not the start-up a user's installed package has.
    """
    folders = [str(root / name) for name in ("parallel_recon", "workers") if (root / name).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, nothing written")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cpp-tools", help="folder with the ISMRMRD C++ stream tools")
    parser.add_argument("--baseline", default="main", help="git ref to compare ('' for none)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    tools = cpp_tools(args.cpp_tools)
    data = tiny_stream()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder, _maybe_baseline(args.baseline) as base:
        for checkout in (REPO, base):
            if checkout is not None:
                compile_bytecode(checkout)
        stream = Path(folder) / "tiny.stream"
        stream.write_bytes(data)
        env = dict(os.environ)
        base_env = {**env, "PYTHONPATH": str(base)} if base else env
        commands: dict[str, Callable[[], tuple[float, float]]] = {
            "`mrd_stream_recon` (command)": lambda: run_command(
                [str(BIN / "mrd_stream_recon")], stream, env
            ),
        }
        if tools is not None:
            commands[f"`{CPP_RECON}` (C++)"] = lambda: run_command(
                [str(tools / CPP_RECON), "--use-stdin", "--use-stdout", "--output-magnitude"],
                stream,
                env,
            )
        if base is not None:
            commands[f"`mrd_stream_recon` of {args.baseline} (command)"] = lambda: run_command(
                [sys.executable, "-c", RECON_MAIN], stream, base_env, base
            )
        servers = {"`serve`, ready engines": Server("warm", None)}
        try:
            servers["`serve --ready-engines 0` (cold)"] = Server("cold", None, COLD)
            if base is not None:
                servers[f"`serve` of {args.baseline}"] = Server("baseline", base)
            results: dict[str, list[tuple[float, float]]] = {
                name: [] for name in [*servers, *commands]
            }
            for server in servers.values():
                timed_exchange(server, data)  # a first exchange, not timed
            for _ in range(rounds):
                for name, server in servers.items():
                    results[name].append(timed_exchange(server, data))
                for name, command in commands.items():
                    results[name].append(command())
        finally:
            for server in servers.values():
                server.stop()
        startup, first_emit, engine_wall = startup_from_trace(stream)
    table = _table(results, rounds, tools, load_before, (startup, first_emit, engine_wall), data)
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latency.md").write_text(table)
    return 0


def _table(
    results: dict[str, list[tuple[float, float]]],
    rounds: int,
    tools: Path | None,
    load_before: float,
    trace: tuple[float, float, float],
    data: bytes,
) -> str:
    lines = [
        "## Latency to the first image (`perf/bench_latency.py`)\n",
        f"Made by `python perf/bench_latency.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} cores; 1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.  The tiny stream (`mrd_phantom -m 64 -c 4`, "
        f"{len(data) / 1e3:.0f} kB, one image); {rounds} interleaved rounds, median (best) "
        "in milliseconds.  Through `serve`: from the stream's CLOSE having been sent "
        "(`--workers 1` per connection); as a command: from starting the process (default "
        "`--workers`).  The package's bytecode is compiled first, as installing a wheel "
        "does (an editable install under `PYTHONDONTWRITEBYTECODE` would recompile changed "
        "modules on every start); the editable install's path finder (~10 ms of `site`) "
        "stays in the command's time.\n",
        "| run | first image ms | end ms |",
        "|---|---|---|",
    ]
    for name, times in results.items():
        first = [t[0] for t in times]
        end = [t[1] for t in times]
        lines.append(
            f"| {name} | {_ms(statistics.median(first))} ({_ms(min(first))}) | "
            f"{_ms(statistics.median(end))} ({_ms(min(end))}) |"
        )
    if tools is None:
        lines.append(
            f"| `{CPP_RECON}` (C++) | not measured: the ISMRMRD C++ tools were not found "
            "(give `--cpp-tools DIR` or `ISMRMRD_TOOLS`) | |"
        )
    serve = statistics.median(t[0] for t in results["`serve`, ready engines"])
    command = statistics.median(t[1] for t in results["`mrd_stream_recon` (command)"])
    startup, first_emit, engine_wall = trace
    lines += [
        "",
        "| target | measured (median) | goal |",
        "|---|---|---|",
        f"| first image after the CLOSE of a 1-slice stream through `serve` | {_ms(serve)} ms "
        f"| <= {_ms(TARGET_SERVE_S)} ms: {'met' if serve <= TARGET_SERVE_S else '**missed**'} |",
        f"| the command's wall time on the tiny stream | {_ms(command)} ms | <= "
        f"{_ms(TARGET_CLI_S)} ms: {'met' if command <= TARGET_CLI_S else '**missed**'} |",
        "",
        f"- one `--trace` run of the command: interpreter start-up and imports "
        f"{_ms(startup)} ms before the engine's start, first image emitted {_ms(first_emit)} "
        f"ms after it, the engine's whole run {_ms(engine_wall)} ms",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

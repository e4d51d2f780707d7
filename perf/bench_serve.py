"""Benchmark of ``parallel-recon serve`` for well-behaved clients: this checkout against a
baseline (by default the ``main`` branch), side by side in one run.  Writes
``perf/results/serve.md``.

The baseline is checked out into a temporary folder (``git worktree add --detach``) and
removed afterwards; its server runs with that folder first on the import path, so it and its
reconstructions run the baseline's code, while this checkout's server runs this code.  Both
servers serve the same stream with ``--workers 1`` per connection, alternating round by
round so that a change in the machine's load hits both alike:

1. one client at a time: seconds per exchange (stream sent, images received) and MB/s;
2. four clients at once: seconds until all four have their images, and MB/s in all;
3. the server process's own CPU seconds per GB passed through (its pumps; the
   reconstructions run in child processes and are not counted).

Every reply is checked byte for byte against the baseline's, so the speed of a wrong answer
is never reported.  ``--quick`` uses a small stream and two rounds, and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PERF = Path(__file__).resolve().parent
REPO = PERF.parent
RESULTS = PERF / "results"
SERVE_MAIN = "import sys; from parallel_recon.cli.serve import main; sys.exit(main())"
CONCURRENT = 4


def make_stream(matrix: int, coils: int, repetitions: int) -> bytes:
    from parallel_recon.phantom import PhantomSpec, iter_messages
    from parallel_recon.protocol import StreamWriter

    sink = io.BytesIO()
    spec = PhantomSpec(matrix=matrix, coils=coils, repetitions=repetitions, noise_calibration=True)
    with StreamWriter(sink) as writer:
        for msg in iter_messages(spec):
            writer.write(msg)
    return sink.getvalue()


class Server:
    """A ``serve`` process on a free loopback port, running the code under ``code``
    (None: this checkout, as installed), with more ``args``; ready for connections once
    constructed (a server with ready engines logs its port only once they are ready)."""

    def __init__(self, name: str, code: Path | None, args: tuple[str, ...] = ()):
        self.name = name
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_MAIN, "--port", "0", "--workers", "1", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=code or REPO,
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        if not match:
            self.stop()
            raise SystemExit(f"{name} server did not start: {first}")
        self.port = int(match.group(1))
        self._drain = threading.Thread(target=self._discard_log, daemon=True)
        self._drain.start()
        self.process = psutil.Process(self.proc.pid)

    def _discard_log(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send the stream (from a thread), half-close, read the reply to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:

        def send() -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        sender.join()
    return b"".join(chunks)


@dataclass
class Timings:
    single: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Server CPU seconds per round (one single and one concurrent exchange)."""


def one_round(server: Server, data: bytes, expected: bytes | None) -> tuple[float, float, float]:
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    reply = exchange(server.port, data)
    single = time.perf_counter() - start
    replies: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: replies.append(exchange(server.port, data)))
        for _ in range(CONCURRENT)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent = time.perf_counter() - start
    for got in [reply, *replies]:
        if expected is not None and got != expected:
            raise SystemExit(f"{server.name}: the reply differs from the baseline's")
    return single, concurrent, server.cpu_seconds() - cpu


@contextlib.contextmanager
def baseline_checkout(ref: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    target = folder / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(target), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield target
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(target)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def table(
    data: bytes, rounds: int, results: dict[str, Timings], loads: list[float], ref: str
) -> str:
    megabytes = len(data) / 1e6
    names = list(results)
    lines = [
        "## serve: well-behaved clients, this checkout against the baseline",
        "",
        f"Stream: {megabytes:.1f} MB (phantom), `--workers 1` per connection, {rounds} rounds "
        f"alternating between the servers; medians. Baseline: `{ref}`. Load average before "
        f"each round: {'/'.join(f'{x:.1f}' for x in loads)}. Machine: {os.cpu_count()} cores.",
        "",
        "| server | one client: s | MB/s | 4 at once: s | MB/s in all | server CPU s per GB |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        t = results[name]
        single, concurrent = statistics.median(t.single), statistics.median(t.concurrent)
        per_gb = statistics.median(t.cpu) / (megabytes * (1 + CONCURRENT) / 1e3)
        lines.append(
            f"| {name} | {single:.2f} | {megabytes / single:.1f} | {concurrent:.2f} | "
            f"{CONCURRENT * megabytes / concurrent:.1f} | {per_gb:.2f} |"
        )
    if len(names) == 2:
        base, mine = results[names[0]], results[names[1]]
        single = statistics.median(mine.single) / statistics.median(base.single)
        concurrent = statistics.median(mine.concurrent) / statistics.median(base.concurrent)
        lines += [
            "",
            f"Ratio this/baseline (time; below 1 is faster): one client {single:.2f}, "
            f"{CONCURRENT} at once {concurrent:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small stream, 2 rounds, no file")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (default 5)")
    parser.add_argument(
        "--baseline", default="main", help="git ref to compare with (default main; 'none')"
    )
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    shape = (64, 4, 2) if args.quick else (192, 16, 8)
    data = make_stream(*shape)
    print(f"stream: {len(data) / 1e6:.1f} MB, {rounds} rounds", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        servers: list[Server] = []
        if args.baseline != "none":
            code = stack.enter_context(baseline_checkout(args.baseline))
            servers.append(Server(f"baseline ({args.baseline})", code))
            stack.callback(servers[-1].stop)
        servers.append(Server("this checkout", None))
        stack.callback(servers[-1].stop)
        expected = exchange(servers[0].port, data)  # warm-up, and the reference reply
        results = {server.name: Timings() for server in servers}
        loads = []
        for _ in range(rounds):
            loads.append(os.getloadavg()[0])
            for server in servers:
                single, concurrent, cpu = one_round(server, data, expected)
                timing = results[server.name]
                timing.single.append(single)
                timing.concurrent.append(concurrent)
                timing.cpu.append(cpu)
                print(
                    f"{server.name}: one {single:.2f} s, {CONCURRENT} at once "
                    f"{concurrent:.2f} s, server CPU {cpu:.2f} s",
                    file=sys.stderr,
                )
    text = table(data, rounds, results, loads, args.baseline)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "serve.md").write_text(text)
        print(f"wrote {RESULTS / 'serve.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

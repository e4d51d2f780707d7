"""Benchmark of ``parallel-recon batch``: against the shell loop, the single-file pipeline and
itself on Dask.  Writes ``perf/results/batch.md``.

Three comparisons, each side by side in one run (the machine may be shared: the load average
before each measurement is reported):

1. 100 small files (128 matrix, 8 coils, 2 slices, ISMRMRD HDF5): ``parallel-recon batch``
   against the README's shell loop ``for f in *.h5; do mrdhdf5_to_stream $f |
   mrd_stream_recon | stream_to_mrdhdf5 out/$f; done`` (goal: >= 5x faster).
2. 8 large files (32 coils): the batch's throughput in MB/s against the single-file
   pipeline's on one of them (goal: >= 0.9x).
3. The 100 small files through ``--scheduler local:2`` (a Dask LocalCluster of 2 worker
   processes, started and stopped by the command) against the local batch (goal: <= 25%
   overhead); and, to tell start-up from per-file cost, through a cluster started
   beforehand with ``dask scheduler`` and 2 ``dask worker`` programs.

Every timed command is a fresh process, start-up included, writing into an empty folder.
``--quick`` uses 10 small and 2 smaller large files and writes nothing, to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
DATA = PERF / "data" / "batch"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class FileSet:
    """``count`` phantom HDF5 files of one shape, generated once into perf/data/."""

    name: str
    count: int
    matrix: int
    coils: int
    slices: int
    repetitions: int = 1

    @property
    def folder(self) -> Path:
        return DATA / f"{self.name}_{self.count}x_m{self.matrix}_c{self.coils}_s{self.slices}"

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.h5"))

    def ensure(self) -> None:
        if len(self.files()) == self.count:
            return
        from parallel_recon.phantom import PhantomSpec, write_hdf5

        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        for i in range(self.count):
            spec = PhantomSpec(
                matrix=self.matrix,
                coils=self.coils,
                slices=self.slices,
                repetitions=self.repetitions,
                seed=i,
            )
            write_hdf5(spec, self.folder / f"scan_{i:03d}.h5")

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())


def load() -> float:
    return os.getloadavg()[0]


def timed(command: str | list[str], *, shell: bool = False) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system of the command and every process it waited
    for) of one command; output discarded, failure fatal."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        command, shell=shell, executable="/bin/bash" if shell else None, capture_output=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{command!r} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


@dataclass
class Row:
    what: str
    files: int
    nbytes: int
    seconds: float = float("inf")
    cpu: float = 0.0
    cpu_counted: bool = True
    """False where the work runs in processes the command does not wait for (Dask)."""
    loads: list[float] = field(default_factory=list)
    ratio: str = ""
    goal: str = ""

    def add(self, measured: tuple[float, float], load: float) -> None:
        """Keep the fastest try (and its CPU time); remember the load of every try."""
        self.loads.append(load)
        if measured[0] < self.seconds:
            self.seconds, self.cpu = measured

    @property
    def mb_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds

    @property
    def load(self) -> str:
        return "/".join(f"{x:.1f}" for x in self.loads)


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def shell_loop(files: FileSet, out: Path) -> tuple[float, float]:
    """The README's loop, as written there (each output appended to a new file)."""
    fresh(out)
    loop = (
        f"cd {files.folder} && for f in *.h5; do {BIN}/mrdhdf5_to_stream $f | "
        f"{BIN}/mrd_stream_recon | {BIN}/stream_to_mrdhdf5 {out}/$f; done"
    )
    return timed(loop, shell=True)


def batch(files: FileSet, out: Path, *extra: str) -> tuple[float, float]:
    fresh(out)
    return timed([str(BIN / "parallel-recon"), "batch", str(files.folder), "-o", str(out), *extra])


def single_pipeline(path: Path, out: Path) -> tuple[float, float]:
    fresh(out)
    pipe = (
        f"{BIN}/mrdhdf5_to_stream {path} | {BIN}/mrd_stream_recon | "
        f"{BIN}/stream_to_mrdhdf5 {out}/images.h5"
    )
    return timed(pipe, shell=True)


class StartedCluster:
    """``dask scheduler`` + 2 ``dask worker`` programs on 127.0.0.1, for the duration."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> str:
        import distributed

        info = self.folder / "scheduler.json"
        common = ["--host", "127.0.0.1", "--no-dashboard"]
        self._start(["scheduler", *common, "--port", "0", "--scheduler-file", str(info)])
        deadline = time.monotonic() + 60
        while not (info.is_file() and info.stat().st_size):
            if time.monotonic() > deadline:
                raise SystemExit("dask scheduler did not start")
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            preload = ["--preload", "parallel_recon.batch.service"]
            self._start(["worker", address, *common, "--nthreads", "1", *preload])
        with distributed.Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        time.sleep(2)  # let the preloaded runners finish importing
        return address

    def _start(self, args: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            os.killpg(proc.pid, 15)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def measure(small: FileSet, large: FileSet, scratch: Path, tries: int) -> list[Row]:
    """Every measurement, interleaved: each round runs each command once, so that a change of
    the machine's load hits all of them alike; the fastest try of each is kept."""
    n, nbytes = small.count, small.nbytes
    one = large.files()[0]
    loop = Row("README shell loop (3 interpreters per file)", n, nbytes)
    local = Row("`parallel-recon batch` (2 runners, 1 engine worker each)", n, nbytes)
    dask_local = Row(
        "`batch --scheduler local:2` (LocalCluster started and stopped by the command)",
        n,
        nbytes,
        cpu_counted=False,
    )
    dask_ready = Row(
        "`batch --scheduler tcp://...` (`dask scheduler` + 2 `dask worker` started beforehand)",
        n,
        nbytes,
        cpu_counted=False,
    )
    single = Row(
        "single-file pipeline on one large file (`mrdhdf5_to_stream \\| mrd_stream_recon \\| "
        "stream_to_mrdhdf5`)",
        1,
        one.stat().st_size,
    )
    large_batch = Row("`parallel-recon batch` on the large files", large.count, large.nbytes)
    loop.add(shell_loop(small, scratch / "loop"), load())
    with StartedCluster(fresh(scratch / "cluster")) as address:
        runs: list[tuple[Row, Callable[[], tuple[float, float]]]] = [
            (local, lambda: batch(small, scratch / "batch")),
            (dask_local, lambda: batch(small, scratch / "dask", "--scheduler", "local:2")),
            (dask_ready, lambda: batch(small, scratch / "ready", "--scheduler", address)),
            (single, lambda: single_pipeline(one, scratch / "single")),
            (large_batch, lambda: batch(large, scratch / "large")),
        ]
        for _ in range(tries):
            for row, run in runs:
                row.add(run(), load())
    speedup = loop.seconds / local.seconds
    local.ratio = f"{speedup:.1f}x faster than the loop ({loop.cpu / local.cpu:.1f}x less CPU)"
    local.goal = ">= 5x " + ("met" if speedup >= 5 else "missed")
    overhead = dask_local.seconds / local.seconds - 1
    dask_local.ratio = f"{100 * overhead:+.0f}% time vs the local batch"
    dask_local.goal = "<= 25% " + ("met" if overhead <= 0.25 else "missed")
    dask_ready.ratio = (
        f"{100 * (dask_ready.seconds / local.seconds - 1):+.0f}% time vs the local batch"
    )
    throughput = large_batch.mb_s / single.mb_s
    large_batch.ratio = f"{throughput:.2f}x the single-file pipeline's MB/s"
    large_batch.goal = ">= 0.9x " + ("met" if throughput >= 0.9 else "missed")
    return [loop, local, dask_local, dask_ready, single, large_batch]


def report(rows: list[Row], small: FileSet, large: FileSet, tries: int) -> str:
    import numpy

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    each = small.nbytes / small.count / 1e6
    lines = [
        "## Batch reconstruction (`parallel-recon batch`)",
        "",
        f"Made by `python perf/bench_batch.py` on {stamp}; {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}.  The machine was shared with other engineers' builds and "
        "tests: *load* is the 1-minute load average before each try, times moved by 20-50% "
        "between runs, and *CPU s* (user + system of the command and all the processes it "
        "waited for; not available where Dask's processes do the work) is the steadier "
        "measure of work.  Every ratio comes from this one run; "
        f"the commands ran interleaved, {tries} rounds, fastest try kept (the shell loop: 1 "
        "try).  Each try is a fresh command (interpreter start-up included) writing into an "
        "empty folder.",
        "",
        f"- small files: {small.count} ISMRMRD HDF5 files of a {small.matrix} matrix, "
        f"{small.coils} coils, {small.slices} slices ({each:.1f} MB each)",
        f"- large files: {large.count} files of a {large.matrix} matrix, {large.coils} coils, "
        f"{large.slices} slices x {large.repetitions} repetitions "
        f"({large.nbytes / large.count / 1e6:.0f} MB each)",
        "",
        "| measurement | files | seconds | s per file | CPU s | MB/s | ratio | goal | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {row.files} | {row.seconds:.2f} | {row.seconds / row.files:.3f} | "
            f"{f'{row.cpu:.1f}' if row.cpu_counted else 'n/a'} | {row.mb_s:.1f} | {row.ratio} | "
            f"{row.goal} | {row.load} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--tries", type=int, default=2, help="runs of each batch (best kept)")
    args = parser.parse_args(argv)
    if args.quick:
        small = FileSet("small", 10, 128, 8, 2)
        large = FileSet("large", 2, 128, 32, 2)
    else:
        small = FileSet("small", 100, 128, 8, 2)
        large = FileSet("large", 8, 256, 32, 4)
    small.ensure()
    large.ensure()
    with tempfile.TemporaryDirectory(prefix="bench_batch_", dir=DATA) as scratch:
        rows = measure(small, large, Path(scratch), args.tries)
    text = report(rows, small, large, args.tries)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "batch.md").write_text(text)
        print(f"wrote {RESULTS / 'batch.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

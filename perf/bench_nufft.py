"""The non-Cartesian kernel and pipeline against their floors and against BART, in one run.

Data: a 2D radial stream, 32 coils, 256 matrix, 402 spokes of 512 samples (2x readout
oversampling: fully sampled), 32 slices (``--quick``: 8 coils, 128 matrix, 4 slices).  The
samples of one slice are the phantom's analytic spectrum (``mrd_phantom --trajectory
radial``); every slice repeats them under its own slice counter (computing 32 different
slices analytically would take minutes and time nothing of the recon).

1. Per unit, one thread, warm caches (plans and density weights made by a first unit):
   *gridding* is the whole ``noncartesian.reconstruct`` call of a worker (samples
   transposed to ``[coils, points]``, density-weighted, adjoint NUFFT, RSS, the Image
   built) against the *bare finufft type-1* ``Plan.execute`` on the same samples, made
   beforehand with the same settings (``[coils, points]`` contiguous).  *One CG iteration*
   (``conjugate_gradient``'s time per iteration on the Toeplitz normal operator, vector
   updates included) against one forward plus one adjoint NUFFT ``execute``.
2. Pipeline: ``mrd_stream_recon --workers 1`` and ``--workers 2`` (gridding), and
   ``--workers 2 --recon-option method=cg``, on the whole stream from a file, wall clock.
3. BART (``bart nufft``, Debian package, 0.8) on the same samples, one call per slice: ``-a``
   on the density-weighted samples (our weights, computed beforehand, not timed) and ``-i``
   (its CG least squares).  Two BART processes run at once with one OpenMP thread each (on
   this machine that beats one process with two threads), so BART uses the same 2 cores as
   the recon; the .cfl files are written beforehand (not timed).  ``--bart-slices N`` runs
   BART on the first N slices only and scales the time to the whole stream (marked).

Writes ``perf/results/nufft.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
DATA = PERF / "data"
sys.path.insert(0, str(PERF.parent / "tests"))

from bart_tools import bart_trajectory, read_cfl, write_cfl  # noqa: E402

GOALS = {"gridding": 1.3, "cg": 2.5, "workers": 1.7}


@dataclass(frozen=True)
class Size:
    coils: int
    matrix: int
    slices: int

    @property
    def label(self) -> str:
        return f"{self.coils} coils, {self.matrix} matrix, radial, {self.slices} slices"


FULL = Size(32, 256, 32)
QUICK = Size(8, 128, 4)


# ------------------------------------------------------------------- data
def _spec(size: Size, slices: int):  # type: ignore[no-untyped-def]
    from parallel_recon.phantom import PhantomSpec

    return PhantomSpec(matrix=size.matrix, coils=size.coils, trajectory="radial", slices=slices)


def write_stream(size: Size, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The stream file; returns one slice's samples ``[readouts, coils, samples]`` and the
    trajectory ``[readouts, samples, 2]``."""
    from parallel_recon.phantom import iter_messages
    from parallel_recon.phantom.header import header_xml
    from parallel_recon.protocol import Acquisition, AcquisitionFlag, Header, StreamWriter

    one = [m for m in iter_messages(_spec(size, 1)) if isinstance(m, Acquisition)]
    last = (1 << (AcquisitionFlag.LAST_IN_REPETITION - 1)) | (
        1 << (AcquisitionFlag.LAST_IN_MEASUREMENT - 1)
    )
    with path.open("wb") as sink, StreamWriter(sink) as writer:
        writer.write(Header(header_xml(_spec(size, size.slices))))
        for slice_ in range(size.slices):
            for acq in one:
                head = acq.head.copy()
                head["idx"]["slice"] = slice_
                head["flags"] &= ~np.uint64(last)
                if slice_ == size.slices - 1 and acq is one[-1]:
                    head["flags"] |= np.uint64(last)
                writer.write(Acquisition(head=head, traj=acq.traj, data=acq.data))
    data = np.stack([a.data for a in one])
    traj = np.stack([a.traj for a in one])
    return data, traj


# -------------------------------------------------------------- per unit
def _best(call, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def _context(size: Size, traj: np.ndarray, method: str):  # type: ignore[no-untyped-def]
    from parallel_recon.engine.plan import plan_from_header
    from parallel_recon.phantom.header import header_xml
    from parallel_recon.protocol import new_acquisition_head
    from parallel_recon.workers.api import ReconContext, UnitInfo, UnitKey

    plan = plan_from_header(header_xml(_spec(size, 1)), options={"method": method})
    info = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, new_acquisition_head().tobytes(), size.coils, 0)
    partitions = np.zeros(traj.shape[0], np.int32)
    return ReconContext(plan=plan, unit=info, trajectory=traj, readout_partitions=partitions)


def unit_times(size: Size, data: np.ndarray, traj: np.ndarray, repeat: int) -> dict[str, float]:
    import finufft

    from parallel_recon.workers import noncartesian
    from parallel_recon.workers.cg import conjugate_gradient
    from parallel_recon.workers.nufft import _OPTIONS, EPSILON, clear_caches, nufft_operator

    n = size.matrix
    clear_caches()
    start = time.perf_counter()
    noncartesian.reconstruct(data.copy(), _context(size, traj, "gridding"))
    cold = time.perf_counter() - start

    def gridding() -> None:
        noncartesian.reconstruct(scratch, _context(size, traj, "gridding"))

    scratch = data.copy()
    coords = traj.reshape(-1, 2)
    points = [np.ascontiguousarray(2 * np.pi * coords[:, axis]) for axis in (1, 0)]
    adjoint = finufft.Plan(
        1, (n, n), size.coils, eps=EPSILON, isign=1, dtype="complex64", **_OPTIONS
    )
    forward = finufft.Plan(
        2, (n, n), size.coils, eps=EPSILON, isign=-1, dtype="complex64", **_OPTIONS
    )
    adjoint.setpts(*points)
    forward.setpts(*points)
    samples = np.ascontiguousarray(data.transpose(1, 0, 2)).reshape(size.coils, -1)
    images = adjoint.execute(samples)
    times = {"cold_unit": cold, "gridding": 0.0, "type1": 0.0}
    for _ in range(repeat):  # the two taken in turn
        times["gridding"] = min(times["gridding"] or 1e9, _best(gridding, 1))
        times["type1"] = min(times["type1"] or 1e9, _best(lambda: adjoint.execute(samples), 1))
    times["forward_adjoint"] = _best(
        lambda: (forward.execute(images), adjoint.execute(samples)), repeat
    )
    op = nufft_operator(coords, (n, n), size.coils)
    rhs = op.adjoint(samples)
    iterations = 5

    def cg(count: int) -> float:
        start = time.perf_counter()
        conjugate_gradient(op.normal, rhs, iterations=count)
        return time.perf_counter() - start

    cg(1)  # Toeplitz kernel cached
    per_iteration = min((cg(iterations) - cg(0)) / iterations for _ in range(max(1, repeat // 2)))
    times["cg_iteration"] = per_iteration
    return times


# -------------------------------------------------------------- pipeline
def _recon(stream: Path, workers: int, *extra: str) -> tuple[float, float]:
    """Wall seconds of the whole command, and the run's CPU bound from its profile:
    ``max(reader CPU, busiest worker's CPU, all their CPU / 2)`` (what two free cores
    would allow; on a shared machine the wall time can be far above it)."""
    with tempfile.TemporaryDirectory(prefix="pr-nufft-") as folder:
        profile = Path(folder) / "profile.json"
        command = [str(Path(sys.executable).parent / "mrd_stream_recon"), "--workers", str(workers)]
        command += ["--profile-json", str(profile), *extra]
        start = time.perf_counter()
        with stream.open("rb") as source:
            subprocess.run(command, stdin=source, stdout=subprocess.DEVNULL, check=True)
        seconds = time.perf_counter() - start
        numbers = json.loads(profile.read_text())
    reader = float(numbers["reader"]["cpu_s"])
    workers_cpu = [float(v) for v in numbers["workers"]["cpu_s"]]
    return seconds, max(reader, max(workers_cpu), (reader + sum(workers_cpu)) / 2)


def pipeline_times(stream: Path, rounds: int) -> dict[str, float]:
    from bench_recon import parallel_capacity

    best: dict[str, float] = {"capacity": parallel_capacity()}
    for _ in range(rounds):  # interleaved, so load changes hit all alike
        for name, workers, extra in (
            ("workers1", 1, ()),
            ("workers2", 2, ()),
            ("cg_workers2", 2, ("--recon-option", "method=cg")),
        ):
            seconds, bound = _recon(stream, workers, *extra)
            if seconds < best.get(name, 1e9):
                best[name], best[f"{name}_bound"] = seconds, bound
    return best


# ------------------------------------------------------------------ BART
def bart_times(
    size: Size, data: np.ndarray, traj: np.ndarray, slices: int, folder: Path
) -> dict[str, float]:
    from parallel_recon.workers.density import pipe_menon_weights

    n = size.matrix
    weights = pipe_menon_weights(traj.reshape(-1, 2), (n, n)).reshape(traj.shape[:2])
    write_cfl(folder / "traj", bart_trajectory(traj, n))
    write_cfl(folder / "ksp", data.transpose(2, 0, 1)[None])
    write_cfl(folder / "wksp", (data * weights[:, None, :]).transpose(2, 0, 1)[None])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def one(option: str, source: str, slice_: int) -> None:
        command = ["bart", "nufft", option, "-d", f"{n}:{n}:1", "traj", source, f"img{slice_}"]
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)

    times = {}
    for name, option, source in (("bart_adjoint", "-a", "wksp"), ("bart_inverse", "-i", "ksp")):
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s, o=option, f=source: one(o, f, s), range(slices)))
        times[name] = (time.perf_counter() - start) * size.slices / slices
    read_cfl(folder / "img0")  # the output exists and reads back
    return times


# ---------------------------------------------------------------- report
def _verdict(ratio: float, goal: float, higher: bool = False) -> str:
    ok = ratio >= goal if higher else ratio <= goal
    return f"{'>=' if higher else '<='} {goal:g}x: {'met' if ok else 'NOT met'}"


def _row(name: str, seconds: float | None, ratio: str = "", goal: str = "") -> str:
    shown = "" if seconds is None else f"{seconds:.3f}"
    return f"| {name} | {shown} | {ratio} | {goal} |"


def _faster(ours: float, theirs: float, what: str) -> tuple[str, str]:
    ratio = f"ours ({what}) {theirs / ours:.1f}x faster"
    return ratio, f"faster: {'met' if theirs > ours else 'NOT met'}"


def report(
    size: Size,
    unit: dict[str, float],
    pipe: dict[str, float],
    bart: dict[str, float],
    bart_slices: int,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    quick: bool,
) -> str:
    import finufft

    scaled = ""
    if bart_slices != size.slices:
        scaled = f" (measured on {bart_slices} slices, scaled to {size.slices})"
    g = unit["gridding"] / unit["type1"]
    c = unit["cg_iteration"] / unit["forward_adjoint"]
    w = pipe["workers1"] / pipe["workers2"]
    cold = unit["cold_unit"] / unit["type1"]
    rows = [
        "| measurement | seconds | ratio | goal |",
        "|---|---|---|---|",
        _row(f"bare finufft type-1 `execute`, a {size.coils}-coil unit", unit["type1"], "1.00"),
        _row("per-unit gridding (`noncartesian.reconstruct`, warm caches)", unit["gridding"],
             f"{g:.2f}x", _verdict(g, GOALS["gridding"])),
        _row("first unit of a trajectory (plans and Pipe-Menon weights made)", unit["cold_unit"],
             f"{cold:.2f}x"),
        _row("one forward + one adjoint NUFFT `execute`", unit["forward_adjoint"], "1.00"),
        _row("one CG iteration (Toeplitz normal and vector updates)", unit["cg_iteration"],
             f"{c:.2f}x", _verdict(c, GOALS["cg"])),
        _row("`mrd_stream_recon --workers 1`, whole stream", pipe["workers1"], "1.00"),
        _row("`mrd_stream_recon --workers 2`, whole stream", pipe["workers2"],
             f"{w:.2f}x as fast", _verdict(w, GOALS["workers"], higher=True)),
        _row("(two independent single-threaded FFT processes vs one, just before: the "
             "machine's ceiling for the row above)", None, f"{pipe['capacity']:.2f}x as fast"),
        _row("(the same two runs' CPU bounds, `max(reader, busiest worker, all / 2)` CPU-s: "
             f"{pipe['workers1_bound']:.2f} and {pipe['workers2_bound']:.2f})", None,
             f"{pipe['workers1_bound'] / pipe['workers2_bound']:.2f}x on two free cores"),
        _row("`mrd_stream_recon --workers 2 --recon-option method=cg`", pipe["cg_workers2"]),
        _row(f"`bart nufft -a` of the weighted samples, 2 cores{scaled}", bart["bart_adjoint"],
             *_faster(pipe["workers2"], bart["bart_adjoint"], "gridding, 2 workers")),
        _row(f"`bart nufft -i`, 2 cores{scaled}", bart["bart_inverse"],
             *_faster(pipe["cg_workers2"], bart["bart_inverse"], "cg, 2 workers")),
    ]  # fmt: skip
    spokes = int(np.ceil(np.pi / 2 * size.matrix))
    return "\n".join(
        [
            "## Non-Cartesian kernel and pipeline (`perf/bench_nufft.py`)",
            "",
            f"Made by `python perf/bench_nufft.py{' --quick' if quick else ''}` on "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, finufft "
            f"{finufft.__version__}; {size.label}, {size.matrix * 2} samples x {spokes} spokes "
            f"per slice; 1-minute load average {load[0][0]:.2f} before, {load[1][0]:.2f} "
            "after.  Per-unit times: one thread, best of the repeats, the two calls of a row "
            "pair taken in turn; pipeline: wall clock of the whole command reading a file, "
            "best of the rounds (interleaved); BART: two processes of one thread, one call per "
            "slice, .cfl files written beforehand.",
            "",
            *rows,
            "",
            "On a shared machine the wall-clock `--workers 2` ratio measures the share of the "
            "two cores the run got; the CPU-bound row is what the same runs need from two free "
            "cores (reader, workers and their CPU seconds from `--profile-json`).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--repeat", type=int, default=0, help="per-unit repeats (5; quick 2)")
    parser.add_argument("--rounds", type=int, default=0, help="pipeline rounds (2; quick 1)")
    parser.add_argument("--bart-slices", type=int, default=0, help="BART on this many slices")
    parser.add_argument("--output", type=Path, default=RESULTS / "nufft.md")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    repeat = args.repeat or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 2)
    bart_slices = min(args.bart_slices or size.slices, size.slices)
    if shutil.which("bart") is None:
        print("bench_nufft: bart is not installed (make deps)", file=sys.stderr)
        return 1
    load_before = os.getloadavg()
    DATA.mkdir(exist_ok=True)
    stream = DATA / f"radial_c{size.coils}_m{size.matrix}_s{size.slices}.bin"
    data, traj = write_stream(size, stream)
    try:
        unit = unit_times(size, data, traj, repeat)
        print(f"unit: {unit}", file=sys.stderr)
        pipe = pipeline_times(stream, rounds)
        print(f"pipeline: {pipe}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="pr-bart-") as folder:
            bart = bart_times(size, data, traj, bart_slices, Path(folder))
        print(f"bart: {bart}", file=sys.stderr)
    finally:
        stream.unlink(missing_ok=True)
    text = report(size, unit, pipe, bart, bart_slices, (load_before, os.getloadavg()), args.quick)
    RESULTS.mkdir(exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

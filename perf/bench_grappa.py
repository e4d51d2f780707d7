"""Benchmark of the GRAPPA kernel and of the pipeline on accelerated data.

Writes ``perf/results/grappa.md``.  Everything is measured side by side in one run on the
same (shared) machine, so the ratios are what to read:

1. Apply cost per unit: ``grappa.reconstruct`` with its weights cached (a later repetition)
   against ``cartesian.reconstruct`` on the same 32-coil 256 x 256 (2x oversampled readout)
   R=2 unit (goal: <= 2.5x).
2. Calibration time per slice: the first GRAPPA call of a slice minus a cached one (weights
   by least squares, hybrid-space weights, adaptive coil maps).
3. The whole pipeline (``mrd_stream_recon --workers 2``) on a 16-repetition accelerated
   stream against a single-process numpy/scipy GRAPPA of the same data (the same kernel
   functions called one unit after another in one process, reading the stream with the
   same codec).
4. Calibration once: the same stream (4 slices x 16 repetitions, separate calibration)
   with ``--workers 1``, ``2`` and ``4``, ``--rounds`` times interleaved: the workers' total
   CPU seconds (median) against one worker's (goal: within 5%), and the calibrations the
   profile counts (goal: one per slice and calibration version, 4).

Every in-process measurement runs with one BLAS thread, as inside a worker (the recon
sets ``OPENBLAS_NUM_THREADS=1`` etc. before numpy is imported: on a 2-core machine shared
with other jobs, BLAS threads fighting for the cores made the batched matrix products of
GRAPPA several times slower).  The pipeline run writes ``--profile-json`` so that the table
can say where its time went.

``--quick`` uses smaller sizes, to check the script.
"""

from __future__ import annotations

import os

# one BLAS thread, set before numpy is imported: as in a worker
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from bench_serve import baseline_checkout

from parallel_recon.engine.calibration import CalibrationKey
from parallel_recon.engine.plan import plan_from_header
from parallel_recon.phantom import PhantomSpec, write_stream
from parallel_recon.phantom.coils import coil_sensitivities
from parallel_recon.phantom.generate import _clean_kspace
from parallel_recon.phantom.header import header_xml
from parallel_recon.phantom.spec import acquired_lines, calibration_range
from parallel_recon.protocol import Acquisition, StreamReader, new_acquisition_head
from parallel_recon.workers import cartesian, grappa
from parallel_recon.workers.api import Calibration, ReconContext, UnitInfo, UnitKey

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
BIN = Path(sys.executable).parent


def _context(
    spec: PhantomSpec, sampled: np.ndarray, calibration: Calibration | None
) -> ReconContext:
    plan = plan_from_header(header_xml(spec))
    unit = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, new_acquisition_head().tobytes(), spec.coils, 0)
    return ReconContext(plan=plan, unit=unit, calibration=calibration, sampled=sampled)


def _best_of_each(functions: list, repeat: int) -> list[tuple[float, float]]:  # type: ignore[type-arg]
    """Best wall and best CPU seconds of each function, called in turn ``repeat`` times
    (interleaved, so that a burst of other jobs on the shared machine hits all alike; CPU
    time, one thread, is what the call itself costs, however busy the cores are)."""
    wall = [float("inf")] * len(functions)
    cpu = [float("inf")] * len(functions)
    for _ in range(repeat):
        for i, function in enumerate(functions):
            start, used = time.perf_counter(), time.process_time()
            function()
            wall[i] = min(wall[i], time.perf_counter() - start)
            cpu[i] = min(cpu[i], time.process_time() - used)
    return list(zip(wall, cpu, strict=True))


def kernel_costs(matrix: int, coils: int, repeat: int) -> dict[str, float]:
    """Seconds per unit: Cartesian (fully sampled), GRAPPA first call and cached apply.

    The contexts are built once, outside the timed calls (parsing the header is the
    engine's job, done once per stream).
    """
    spec = PhantomSpec(matrix=matrix, coils=coils, acceleration=2, calibration_width=24)
    full = _clean_kspace(spec, 0, coil_sensitivities(matrix, coils))[0]
    rows = [ky for ky, pattern, _ in acquired_lines(spec) if pattern]
    cal = list(calibration_range(spec))
    sampled = np.zeros((1, matrix), bool)
    sampled[0, rows] = True
    accelerated = full * sampled[:, :, None, None]
    block = np.ascontiguousarray(full[:, cal[0] : cal[-1] + 1])
    calibration = Calibration(block, np.ones(block.shape[:2], bool), (0, cal[0]), 1)
    fully_sampled = _context(spec, np.ones((1, matrix), bool), None)
    undersampled = _context(spec, sampled, calibration)
    first, first_cpu = time.perf_counter(), time.process_time()
    grappa.reconstruct(accelerated, undersampled)
    first, first_cpu = time.perf_counter() - first, time.process_time() - first_cpu
    (fft, fft_cpu), (apply, apply_cpu) = _best_of_each(
        [
            lambda: cartesian.reconstruct(full, fully_sampled),
            lambda: grappa.reconstruct(accelerated, undersampled),
        ],
        repeat,
    )
    return {
        "cartesian_s": fft,
        "grappa_apply_s": apply,
        "grappa_first_s": first,
        "cartesian_cpu_s": fft_cpu,
        "grappa_apply_cpu_s": apply_cpu,
        "grappa_first_cpu_s": first_cpu,
    }


def _stream(spec: PhantomSpec) -> bytes:
    sink = io.BytesIO()
    write_stream(spec, sink)
    return sink.getvalue()


def single_process(stream: bytes, spec: PhantomSpec) -> tuple[float, float]:
    """A plain loop: read, place, GRAPPA, one unit after another, in this process.

    Returns wall and CPU seconds (numpy and scipy already imported: a fresh process would
    add their import, about 0.5 CPU-s, which the pipeline's start-up includes).
    """
    start, cpu = time.perf_counter(), time.process_time()
    plan = plan_from_header(header_xml(spec))
    space = plan.spaces[0]
    k2, k1, k0 = space.kspace_shape
    units: dict[tuple[int, int], np.ndarray] = {}
    calibrations: dict[CalibrationKey, dict[int, np.ndarray]] = {}
    done = 0
    for msg in StreamReader(io.BytesIO(stream)):
        if not isinstance(msg, Acquisition):
            continue
        flags, idx = int(msg.head["flags"]), msg.head["idx"]
        key = (int(idx["slice"]), int(idx["repetition"]))
        ky = int(idx["kspace_encode_step_1"])
        if flags & (1 << 19):
            calibrations.setdefault(CalibrationKey(0, key[0], 0), {})[ky] = msg.data
            continue
        unit = units.setdefault(key, np.zeros((k2, k1, spec.coils, k0), np.complex64))
        unit[0, ky] = msg.data
        if flags & (1 << 7):  # LAST_IN_SLICE
            lines = calibrations[CalibrationKey(0, key[0], 0)]
            first = min(lines)
            block = np.stack([lines[k] for k in sorted(lines)])[None]
            calibration = Calibration(block, np.ones(block.shape[:2], bool), (0, first), key[0])
            sampled = np.abs(unit).sum(axis=(2, 3)) > 0
            context = ReconContext(
                plan=plan,
                unit=UnitInfo(
                    UnitKey(0, key[0], 0, 0, 0, key[1]), done, msg.head.tobytes(), spec.coils, 0
                ),
                calibration=calibration,
                sampled=sampled,
            )
            grappa.reconstruct(units.pop(key), context)
            done += 1
    return time.perf_counter() - start, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


RECON_MAIN = "import sys; from parallel_recon.cli.recon import main; sys.exit(main())"


def pipeline(stream: bytes, workers: int, code: Path | None = None) -> tuple[float, float, dict]:  # type: ignore[type-arg]
    """Wall and CPU seconds of ``mrd_stream_recon --workers N`` (start-up included; the CPU
    of the whole process tree, which the recon reaps) and its ``--profile-json``; with
    ``code``, the recon of that checkout."""
    command = [str(BIN / "mrd_stream_recon")]
    env = dict(os.environ)
    if code is not None:
        command = [sys.executable, "-c", RECON_MAIN]
        env["PYTHONPATH"] = str(code)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "profile.json"
        start, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(
            [*command, "--workers", str(workers), "--profile-json", str(report)],
            input=stream,
            stdout=subprocess.DEVNULL,
            check=True,
            env=env,
            cwd=code,  # '' (the working directory) comes first on a -c program's path
        )
        elapsed, used = time.perf_counter() - start, _children_cpu() - cpu
        return elapsed, used, json.loads(report.read_text())


def _profile_line(profile: dict, workers_count: int) -> str:  # type: ignore[type-arg]
    """Where the pipeline's time went, from its profile."""
    workers, cpu = profile["workers"], profile["cpu"]
    return (
        f"- `--workers {workers_count}` profile: {profile['wall_s']:.2f} s inside the engine, "
        f"first image after "
        f"{profile['output']['first_image_s']:.2f} s; workers busy "
        f"{', '.join(f'{b:.0%}' for b in workers['busy_fraction'])} "
        f"({', '.join(f'{s:.2f}' for s in workers['busy_s'])} s, CPU "
        f"{', '.join(f'{s:.2f}' for s in workers['cpu_s'])} s, units "
        f"{workers['units']}); reader CPU {profile['reader']['cpu_s']:.2f} s, waited "
        f"{profile['reader']['wait_free_slot_s']:.2f} s for free slots; writer waited "
        f"{profile['writer']['wait_s']:.2f} s for results; {cpu['cores_used']:.2f} of "
        f"{cpu['cores']} cores used, load average {cpu['load_average_1min']:.1f}"
    )


def _limits(
    parallel: dict,  # type: ignore[type-arg]
    parallel_cpu: float,
    serial: dict,  # type: ignore[type-arg]
    serial_cpu: float,
    baseline_cpu: float,
    slices: int,
) -> list[str]:
    """What the CPU accounting of the runs says about the pipeline against the loop."""
    one, two = sum(serial["workers"]["cpu_s"]), sum(parallel["workers"]["cpu_s"])
    cpu = parallel["cpu"]
    per_unit = (
        "a unit costs no more in a worker than in the loop"
        if one <= baseline_cpu
        else f"the worker needs {one / baseline_cpu - 1:.0%} more than the whole loop"
    )
    engine = one + serial["reader"]["cpu_s"] + serial["writer"]["cpu_s"]
    return [
        "",
        "What the CPU accounting says:",
        "",
        f"- One worker spends {one:.2f} CPU-s on all units (the loop: {baseline_cpu:.2f} s, "
        f"reading included): {per_unit}; the reader process "
        f"adds {serial['reader']['cpu_s']:.2f} s.  The other {serial_cpu - engine:.2f} CPU-s "
        "of the `--workers 1` run are start-up and shut-down: the interpreter, the imports "
        "(numpy, scipy.fft, ismrmrd's XML schema model: about 0.6-0.8 CPU-s on this machine), "
        "the shared memory and the processes; the loop was timed with those already imported.",
        f"- With two workers the workers' CPU is {two:.2f} s against {one:.2f} s: each slice's "
        f"GRAPPA weights and coil maps ({slices} slices) are computed once, by the first worker "
        "that needs them, and shared (see the calibration-once table below).",
        f"- The `--workers 2` run got {cpu['cores_used']:.2f} of {cpu['cores']} cores (load "
        f"average {cpu['load_average_1min']:.1f}): "
        "with the cores taken by other jobs it cannot overlap the workers, so its "
        f"{parallel_cpu:.2f} CPU-s show up as wall time.",
    ]


WORKER_COUNTS = (1, 2, 4)


@contextlib.contextmanager
def _maybe_baseline(ref: str) -> Iterator[Path | None]:
    """A temporary checkout of ``ref`` (None when no ref is given or it does not exist)."""
    known = subprocess.run(
        ["git", "-C", str(PERF.parent), "rev-parse", "--verify", "--quiet", ref or "-"],
        capture_output=True,
    )
    if not ref or known.returncode != 0:
        yield None
        return
    with baseline_checkout(ref) as folder:
        yield folder


def calibration_once(
    stream: bytes, rounds: int, baseline: Path | None, label: str
) -> tuple[list[str], bool]:
    """Workers' total CPU and calibrations for 1, 2 and 4 workers, this checkout and the
    baseline interleaved (rows, goal met)."""
    codes: dict[str, Path | None] = {"this checkout": None}
    if baseline is not None:
        codes[label] = baseline
    cpu: dict[tuple[str, int], list[float]] = {}
    calibration_cpu: dict[tuple[str, int], list[float]] = {}
    counted: dict[tuple[str, int], set[int]] = {}
    for _ in range(rounds):
        for workers in WORKER_COUNTS:
            for name, code in codes.items():
                key = (name, workers)
                _, _, profile = pipeline(stream, workers, code)
                found = profile["workers"]
                cpu.setdefault(key, []).append(sum(found["cpu_s"]))
                calibration_cpu.setdefault(key, []).append(found.get("calibration_cpu_s", 0.0))
                counted.setdefault(key, set()).add(found.get("calibrations", -1))
    rows = [
        f"| code | `--workers` | workers' CPU s (median of {rounds}) | against `--workers 1` "
        "| calibrations counted | CPU s computing them |",
        "|---|---|---|---|---|---|",
    ]
    met = True
    for name in codes:
        one = statistics.median(cpu[(name, 1)])
        for workers in WORKER_COUNTS:
            key = (name, workers)
            total = statistics.median(cpu[key])
            ratio = total / one
            if name == "this checkout":
                met &= abs(ratio - 1) <= 0.05 and counted[key] == {4}
            calibrations = ", ".join("-" if c < 0 else str(c) for c in sorted(counted[key]))
            spent = statistics.median(calibration_cpu[key])
            rows.append(
                f"| {name} | {workers} | {total:.3f} | {ratio:.3f}x | {calibrations} | "
                + (f"{spent:.3f}" if spent else "-")
                + " |"
            )
    return rows, met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each worker count")
    parser.add_argument(
        "--baseline", default="main", help="git ref run beside this checkout ('' for none)"
    )
    args = parser.parse_args()
    matrix, coils, repeat = (64, 8, 2) if args.quick else (256, 32, 9)
    load_before = os.getloadavg()[0]
    costs = kernel_costs(matrix, coils, repeat)
    spec = PhantomSpec(
        matrix=64 if args.quick else 128,
        coils=8 if args.quick else 16,
        acceleration=2,
        calibration_width=24,
        calibration="separate",
        slices=2 if args.quick else 4,
        repetitions=16,
    )
    stream = _stream(spec)
    baseline, baseline_cpu = single_process(stream, spec)
    parallel, parallel_cpu, profile = pipeline(stream, 2)
    serial, serial_cpu, serial_profile = pipeline(stream, 1)
    separate = PhantomSpec(
        matrix=64 if args.quick else 128,
        coils=8 if args.quick else 16,
        acceleration=2,
        calibration_width=24,
        calibration="separate",
        slices=4,
        repetitions=16,
    )
    with _maybe_baseline(args.baseline) as base:
        once_rows, once_met = calibration_once(
            _stream(separate), 1 if args.quick else args.rounds, base, f"`{args.baseline}`"
        )
    ratio = costs["grappa_apply_s"] / costs["cartesian_s"]
    ratio_cpu = costs["grappa_apply_cpu_s"] / costs["cartesian_cpu_s"]
    calibration = costs["grappa_first_s"] - costs["grappa_apply_s"]
    calibration_cpu = costs["grappa_first_cpu_s"] - costs["grappa_apply_cpu_s"]
    speed = (
        f"{baseline / parallel:.2f}x faster than"
        if parallel <= baseline
        else f"{parallel / baseline:.2f}x slower than"
    )
    table = [
        "## GRAPPA (`perf/bench_grappa.py`)\n",
        f"Made by `python perf/bench_grappa.py` on {time.strftime('%Y-%m-%d %H:%M')}, measured "
        "side by side in one run on the shared 2-core machine (other engineers' jobs ran at "
        f"the same time: 1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end), so read the ratios, not the seconds.  "
        "In-process timings use one BLAS thread, as a worker does; each is the best of "
        f"{repeat}, the Cartesian and GRAPPA calls taken in turn.\n",
        "| what | measured | compared with | goal |",
        "|---|---|---|---|",
        f"| GRAPPA apply per unit, {coils} coils {matrix}x{matrix} (readout {2 * matrix}), R=2, "
        f"weights cached, adaptive combination | {costs['grappa_apply_s'] * 1e3:.0f} ms wall, "
        f"{costs['grappa_apply_cpu_s'] * 1e3:.0f} ms CPU | {ratio:.2f}x (wall), "
        f"{ratio_cpu:.2f}x (CPU) the Cartesian kernel's {costs['cartesian_s'] * 1e3:.0f} ms wall, "
        f"{costs['cartesian_cpu_s'] * 1e3:.0f} ms CPU (FFT + RSS) on the same unit fully sampled "
        f"| <= 2.5x: {'met' if max(ratio, ratio_cpu) <= 2.5 else 'missed'} |",
        f"| calibration per slice (weights, hybrid weights, coil maps), same unit | "
        f"{calibration * 1e3:.0f} ms wall, {calibration_cpu * 1e3:.0f} ms CPU | paid once per "
        "slice and calibration, by the first worker that needs it, for all | |",
        f"| `mrd_stream_recon --workers 2`, {spec.slices} slices x 16 repetitions, {spec.coils} "
        f"coils {spec.matrix}x{spec.matrix} R=2, separate calibration "
        f"({len(stream) / 1e6:.0f} MB, start-up included) | {parallel:.2f} s wall, "
        f"{parallel_cpu:.2f} s CPU | {speed} a single-process numpy/scipy GRAPPA of the same "
        f"stream ({baseline:.2f} s wall, {baseline_cpu:.2f} s CPU: one loop reading, placing and "
        "reconstructing each unit in turn with the same kernel functions) | |",
        f"| same, `--workers 1` | {serial:.2f} s wall, {serial_cpu:.2f} s CPU | "
        f"{serial / baseline:.2f}x the single-process wall time, {serial_cpu / baseline_cpu:.2f}x "
        "its CPU time | |",
        "",
        _profile_line(profile, 2),
        _profile_line(serial_profile, 1),
        *_limits(profile, parallel_cpu, serial_profile, serial_cpu, baseline_cpu, spec.slices),
        "",
        f"### Calibration once: {separate.slices} slices x {separate.repetitions} repetitions, "
        f"{separate.coils} coils {separate.matrix}x{separate.matrix} R=2, separate calibration",
        "",
        "Each slice's GRAPPA weights and coil maps are computed by the first worker that needs "
        "them and read by the others from shared memory (`ReconContext.derived`); the "
        "workers' CPU should not grow with their number.  The baseline (before the shared "
        "store) computes them in every worker that gets a unit of the slice.  Workers "
        "beyond the cores share them: their per-unit CPU grows with cache and scheduling "
        "contention whatever the calibration does, which the last column separates out.",
        "",
        *once_rows,
        "",
        f"Goal (workers' CPU within 5% of `--workers 1`'s, 4 calibrations counted): "
        f"{'met' if once_met else '**missed**'}.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grappa.md").write_text("\n".join(table))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ESPIRiT and CG-SENSE against BART, and of SENSE in the parallel engine.

Writes ``perf/results/sense.md``.  Everything is measured side by side in one run on the same
(shared) machine, so the ratios are what to read:

1. ESPIRiT per slice: :func:`espirit.espirit_maps` (calibration region, SVD, image-space
   operator, per-pixel eigenvectors, crop) against ``bart ecalib -m1`` on the same k-space
   (BART with 1 and with 2 OpenMP threads; its time includes reading and writing its files).
2. CG-SENSE per iteration and per unit: ``sense.reconstruct`` with its maps cached (a later
   repetition of the slice) at 10 and 30 iterations, against ``bart pics -l2`` with the same
   maps, data, lambda and iterations (the per-iteration cost is the difference of the two
   runs over 20 iterations, so start-up and file I/O cancel).
3. ``mrd_stream_recon --recon sense --workers 2`` against ``--workers 1`` on a compute-bound
   SENSE stream (goal: >= 1.7x).

Non-Cartesian (``--part noncartesian``, ``perf/results/sense_noncartesian.md``): a radial unit
with a quarter of the Nyquist spokes (samples from the phantom's analytic spectrum, noise
0.05):

4. NUFFT CG-SENSE per unit (``sense.reconstruct``: maps from the gridded centre, 30
   iterations) with warm trajectory caches, with and without the maps, the first unit of a
   trajectory (plans, density weights, Toeplitz kernel), and per iteration; against ``bart
   pics -l2 -r LAMBDA -w 1 -t traj`` with our maps, the same data, lambda and iterations;
5. ``--workers 2`` against ``--workers 1`` on a compute-bound radial SENSE stream.

In-process timings use one BLAS thread, as a worker does; CPU time (``process_time``, and the
children's CPU for BART and the pipeline) is reported beside wall time because the machine is
shared.  ``--quick`` uses smaller sizes, to check the script.
"""

from __future__ import annotations

import os

# one BLAS thread, set before numpy is imported: as in a worker
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import io
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from parallel_recon.engine.plan import plan_from_header
from parallel_recon.phantom import PhantomSpec, write_stream
from parallel_recon.phantom.analytic import coil_spectrum
from parallel_recon.phantom.coils import coil_sensitivities
from parallel_recon.phantom.generate import _clean_kspace
from parallel_recon.phantom.header import header_xml
from parallel_recon.phantom.noncartesian import readout_trajectories
from parallel_recon.phantom.spec import acquired_lines, calibration_range
from parallel_recon.protocol import new_acquisition_head
from parallel_recon.workers import nufft, sense
from parallel_recon.workers.api import Calibration, ReconContext, UnitInfo, UnitKey
from parallel_recon.workers.espirit import calibration_region, espirit_maps
from parallel_recon.workers.noncartesian_maps import clear_maps, readout_maps

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF.parent / "tests"))

from bart_tools import bart_readouts, bart_trajectory, write_cfl  # noqa: E402

RESULTS = PERF / "results"
BIN = Path(sys.executable).parent
LAMBDA = "0.0001"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _best(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``repeat`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, used = time.perf_counter(), time.process_time()
        function()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - used)
    return wall, cpu


def _bart(args: list[str], folder: Path, threads: int, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``bart ARGS`` with ``threads`` OpenMP threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, used = time.perf_counter(), _children_cpu()
        subprocess.run(["bart", *args], cwd=folder, env=env, check=True, capture_output=True)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, _children_cpu() - used)
    return wall, cpu


def _unit(matrix: int, coils: int) -> tuple[np.ndarray, ReconContext, np.ndarray, np.ndarray]:
    """An R=2 unit (readout 2x oversampled), its context (calibration attached), the recon-grid
    k-space BART gets (imaging lines only) and the full recon-grid k-space."""
    spec = PhantomSpec(matrix=matrix, coils=coils, acceleration=2, calibration_width=24)
    full = _clean_kspace(spec, 0, coil_sensitivities(matrix, coils))[0]  # [1, ky, C, kx]
    rows = [ky for ky, pattern, _ in acquired_lines(spec) if pattern]
    cal = list(calibration_range(spec))
    sampled = np.zeros((1, matrix), bool)
    sampled[0, rows] = True
    accelerated = full * sampled[:, :, None, None]
    block = np.ascontiguousarray(full[:, cal[0] : cal[-1] + 1])
    calibration = Calibration(block, np.ones(block.shape[:2], bool), (0, cal[0]), 1)
    plan = plan_from_header(header_xml(spec), options={"lambda": LAMBDA})
    head = new_acquisition_head().tobytes()
    unit = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, head, coils, 0)
    context = ReconContext(plan=plan, unit=unit, calibration=calibration, sampled=sampled)
    readout = full.shape[3]
    image = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(full, axes=3), axis=3), axes=3)
    image = image[..., readout // 2 - matrix // 2 : readout // 2 + matrix // 2]
    recon_grid = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(image, axes=3), axis=3), axes=3)
    bart_kspace = recon_grid * sampled[:, :, None, None]
    return accelerated, context, bart_kspace.astype(np.complex64), recon_grid.astype(np.complex64)


def _with_iterations(context: ReconContext, iterations: int) -> ReconContext:
    options = {**context.plan.options, "iterations": str(iterations)}
    return replace(context, plan=replace(context.plan, options=options), notes={})


def espirit_and_sense(matrix: int, coils: int, repeat: int, folder: Path) -> list[str]:
    """Rows of the table: ESPIRiT against ecalib, CG-SENSE against pics."""
    kspace, context, bart_kspace, recon_grid = _unit(matrix, coils)
    assert context.calibration is not None
    cal = context.calibration

    def ours_espirit() -> np.ndarray:
        region = calibration_region(cal.kspace, cal.sampled, cal.origin, (1, matrix), matrix, 24)
        return espirit_maps(region, (1, matrix, matrix)).maps

    maps = ours_espirit()
    espirit = _best(ours_espirit, repeat)
    # BART's own layout [x, y, z, coils]: the fully sampled centre it calibrates from
    write_cfl(folder / "full", recon_grid.transpose(3, 1, 0, 2))
    ecalib = {t: _bart(["ecalib", "-m1", "full", "bmaps"], folder, t, repeat) for t in (1, 2)}
    write_cfl(folder / "kspace", bart_kspace.transpose(3, 1, 0, 2))
    write_cfl(folder / "maps", maps.transpose(3, 1, 0, 2))
    sense.reconstruct(kspace, context)  # the maps are computed once and cached
    ours = {
        n: _best(lambda n=n: sense.reconstruct(kspace, _with_iterations(context, n)), repeat)
        for n in (10, 30)
    }
    pics = {
        (t, n): _bart(
            ["pics", "-l2", "-r", LAMBDA, "-i", str(n), "-w", "1", "kspace", "maps", "image"],
            folder, t, repeat,
        )
        for t in (1, 2)
        for n in (10, 30)
    }  # fmt: skip

    def per_iteration(times: dict[int, tuple[float, float]], which: int) -> float:
        return (times[30][which] - times[10][which]) / 20

    ours_it = (per_iteration(ours, 0), per_iteration(ours, 1))
    bart_it = {
        t: (
            (pics[(t, 30)][0] - pics[(t, 10)][0]) / 20,
            (pics[(t, 30)][1] - pics[(t, 10)][1]) / 20,
        )
        for t in (1, 2)
    }
    unit_name = f"{coils} coils {matrix}x{matrix} (readout {2 * matrix}), R=2"
    return [
        f"| ESPIRiT maps per slice, {unit_name}, 24 calibration lines | "
        f"{espirit[0] * 1e3:.0f} ms wall, {espirit[1] * 1e3:.0f} ms CPU (1 thread) | "
        f"`bart ecalib -m1`: {ecalib[1][0] * 1e3:.0f} ms wall (1 thread), "
        f"{ecalib[2][0] * 1e3:.0f} ms wall (2 threads), {ecalib[1][1] * 1e3:.0f} ms CPU: "
        f"ours {ecalib[1][0] / espirit[0]:.1f}x / {ecalib[2][0] / espirit[0]:.1f}x faster "
        f"(wall), {ecalib[1][1] / espirit[1]:.1f}x less CPU | faster than BART: "
        f"{'met' if espirit[0] < ecalib[2][0] else 'missed'} |",
        f"| CG-SENSE per iteration, same unit, lambda {LAMBDA} | {ours_it[0] * 1e3:.1f} ms wall, "
        f"{ours_it[1] * 1e3:.1f} ms CPU | `bart pics -l2`: {bart_it[1][0] * 1e3:.1f} ms wall "
        f"(1 thread), {bart_it[2][0] * 1e3:.1f} ms wall (2 threads), "
        f"{bart_it[1][1] * 1e3:.1f} ms CPU: ours {bart_it[1][0] / ours_it[0]:.1f}x / "
        f"{bart_it[2][0] / ours_it[0]:.1f}x faster (wall) | faster than BART: "
        f"{'met' if ours_it[0] < bart_it[2][0] else 'missed'} |",
        f"| CG-SENSE per unit, 30 iterations, maps cached (readout transform, solve, image) | "
        f"{ours[30][0] * 1e3:.0f} ms wall, {ours[30][1] * 1e3:.0f} ms CPU | `bart pics -l2 -i 30`"
        f" (files in and out included): {pics[(1, 30)][0] * 1e3:.0f} ms wall (1 thread), "
        f"{pics[(2, 30)][0] * 1e3:.0f} ms wall (2 threads): ours "
        f"{pics[(1, 30)][0] / ours[30][0]:.1f}x / {pics[(2, 30)][0] / ours[30][0]:.1f}x faster | "
        f"faster than BART: {'met' if ours[30][0] < pics[(2, 30)][0] else 'missed'} |",
    ]


def _stream(spec: PhantomSpec) -> bytes:
    sink = io.BytesIO()
    write_stream(spec, sink)
    return sink.getvalue()


def pipeline(stream: bytes, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds (the whole process tree) of ``mrd_stream_recon --recon sense``."""
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(
        [str(BIN / "mrd_stream_recon"), "--recon", "sense", "--workers", str(workers)],
        input=stream,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start, _children_cpu() - cpu


def scaling(quick: bool) -> list[str]:
    """The ``--workers 2`` against ``--workers 1`` row."""
    # one slice: each worker makes its maps once, and the units (30 CG iterations on 32
    # coils) outweigh start-up, maps and reading
    spec = PhantomSpec(
        matrix=64 if quick else 256, coils=8 if quick else 32, acceleration=2,
        calibration_width=24, calibration="first", slices=1, repetitions=8 if quick else 32,
    )  # fmt: skip
    stream = _stream(spec)
    one = pipeline(stream, 1)
    two = pipeline(stream, 2)
    units = spec.slices * spec.repetitions
    return [
        f"| `mrd_stream_recon --recon sense --workers 2`, {units} units of {spec.coils} coils "
        f"{spec.matrix}x{spec.matrix} R=2 (maps once per slice and worker, 30 iterations each;"
        f" {len(stream) / 1e6:.0f} MB, start-up included) | {two[0]:.2f} s wall, "
        f"{two[1]:.2f} s CPU | `--workers 1`: {one[0]:.2f} s wall, {one[1]:.2f} s CPU: "
        f"{one[0] / two[0]:.2f}x | >= 1.7x: {'met' if one[0] / two[0] >= 1.7 else 'missed'} |"
    ]


def _radial_unit(matrix: int, coils: int, seed: int = 0) -> tuple[np.ndarray, ReconContext]:
    """A radial unit with a quarter of the Nyquist spokes: samples ``[readouts, coils,
    samples]`` of the analytic phantom plus noise, and its context."""
    spokes = int(np.ceil(np.pi / 2 * matrix / 4))
    spec = PhantomSpec(matrix=matrix, coils=coils, trajectory="radial", spokes=spokes)
    trajectory = readout_trajectories(spec)
    k = trajectory.reshape(-1, 2)
    samples = coil_spectrum(k[:, 0], k[:, 1], matrix, coils)
    rng = np.random.default_rng(seed)
    samples += (
        0.05
        / np.sqrt(2 * matrix * matrix)
        * (rng.standard_normal(samples.shape) + 1j * rng.standard_normal(samples.shape))
    )
    kspace = samples.reshape(coils, spokes, -1).transpose(1, 0, 2).astype(np.complex64)
    plan = plan_from_header(header_xml(spec), options={"lambda": LAMBDA})
    unit = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, new_acquisition_head().tobytes(), coils, 0)
    context = ReconContext(
        plan=plan, unit=unit, trajectory=trajectory.astype(np.float32),
        readout_partitions=np.zeros(spokes, np.int32),
    )  # fmt: skip
    return kspace, context


def readout_sense(matrix: int, coils: int, repeat: int, folder: Path) -> list[str]:
    """Rows: NUFFT CG-SENSE per unit and per iteration against ``bart pics -t``."""
    kspace, context = _radial_unit(matrix, coils)
    nufft.clear_caches()
    clear_maps()
    first = _best(lambda: sense.reconstruct(kspace, context), 1)

    def fresh_maps(iterations: int) -> None:
        clear_maps()  # every unit of a stream makes its own maps
        sense.reconstruct(kspace, _with_iterations(context, iterations))

    with_maps = _best(lambda: fresh_maps(30), repeat)
    values = {"maps": "espirit", "espirit_region": 24, "crop": 0.8,
              "espirit_threshold": 0.001, "espirit_kernel": 6}  # fmt: skip
    x = context.space.recon_matrix[0]
    maps_only = _best(lambda: (clear_maps(), readout_maps(kspace, context, "espirit",
                                                           (1, x, x), values)), repeat)  # fmt: skip
    maps = readout_maps(kspace, context, "espirit", (1, x, x), values)  # [1, y, coils, x]
    ours = {
        n: _best(lambda n=n: sense.reconstruct(kspace, _with_iterations(context, n)), repeat)
        for n in (10, 30)
    }  # maps kept: the solve alone
    assert context.trajectory is not None
    write_cfl(folder / "traj", bart_trajectory(context.trajectory, x))
    write_cfl(folder / "ksp", bart_readouts(kspace))
    write_cfl(folder / "maps", maps[0].transpose(2, 0, 1)[:, :, None, :])
    pics = {
        (t, n): _bart(
            ["pics", "-l2", "-r", LAMBDA, "-i", str(n), "-w", "1", "-t", "traj", "ksp", "maps",
             "image"], folder, t, repeat,
        )
        for t in (1, 2)
        for n in (10, 30)
    }  # fmt: skip
    ours_it = (ours[30][0] - ours[10][0]) / 20
    bart_it = {t: (pics[(t, 30)][0] - pics[(t, 10)][0]) / 20 for t in (1, 2)}
    spokes, samples = kspace.shape[0], kspace.shape[2]
    name = f"radial {coils} coils {matrix}x{matrix}, {spokes} spokes x {samples} (a quarter)"
    solve, unit = ours[30][0], with_maps[0]
    return [
        f"| NUFFT CG-SENSE per iteration, {name}, lambda {LAMBDA} | {ours_it * 1e3:.0f} ms wall "
        f"| `bart pics -l2 -t`: {bart_it[1] * 1e3:.0f} ms (1 thread), {bart_it[2] * 1e3:.0f} ms "
        f"(2 threads): ours {bart_it[1] / ours_it:.1f}x / {bart_it[2] / ours_it:.1f}x faster | "
        f"faster than BART: {'met' if ours_it < bart_it[2] else 'missed'} |",
        f"| NUFFT CG-SENSE per unit, 30 iterations, maps kept (solve and image) | "
        f"{solve:.2f} s wall, {ours[30][1]:.2f} s CPU | `bart pics -l2 -i 30 -t` with the same "
        f"maps (files included): {pics[(1, 30)][0]:.2f} s (1 thread), {pics[(2, 30)][0]:.2f} s "
        f"(2 threads): ours {pics[(1, 30)][0] / solve:.1f}x / {pics[(2, 30)][0] / solve:.1f}x "
        f"faster | faster than BART: {'met' if solve < pics[(2, 30)][0] else 'missed'} |",
        f"| ... per unit with its own maps (gridded centre + ESPIRiT: {maps_only[0]:.2f} s) | "
        f"{unit:.2f} s wall, {with_maps[1]:.2f} s CPU | BART's pics above excludes its maps: "
        f"ours {pics[(1, 30)][0] / unit:.1f}x / {pics[(2, 30)][0] / unit:.1f}x | |",
        f"| ... first unit of a trajectory (plans, density weights, Toeplitz kernel, maps) | "
        f"{first[0]:.2f} s wall | | |",
    ]


def readout_scaling(quick: bool) -> list[str]:
    """``--workers 2`` against ``--workers 1`` on a compute-bound radial SENSE stream."""
    matrix, coils, repetitions = (64, 8, 4) if quick else (256, 32, 8)
    spec = PhantomSpec(
        matrix=matrix, coils=coils, trajectory="radial", spokes=int(np.ceil(np.pi / 8 * matrix)),
        repetitions=repetitions,
    )  # fmt: skip
    stream = _stream(spec)
    one = pipeline(stream, 1)
    two = pipeline(stream, 2)
    return [
        f"| `mrd_stream_recon --recon sense --workers 2`, {repetitions} radial units of {coils} "
        f"coils {matrix}x{matrix}, a quarter of the spokes (maps per unit, 30 iterations; "
        f"{len(stream) / 1e6:.0f} MB, start-up included) | {two[0]:.2f} s wall, {two[1]:.2f} s "
        f"CPU | `--workers 1`: {one[0]:.2f} s wall, {one[1]:.2f} s CPU: {one[0] / two[0]:.2f}x "
        f"| >= 1.7x: {'met' if one[0] / two[0] >= 1.7 else 'missed'} |"
    ]


def _write_table(name: str, title: str, rows: list[str], quick: bool, repeat: int,
                 load_before: float, part: str) -> None:  # fmt: skip
    table = [
        f"## {title} (`perf/bench_sense.py`)\n",
        f"Made by `python perf/bench_sense.py{' --quick' if quick else ''} --part {part}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}, measured side by side in one run on the shared "
        f"2-core machine (1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end), so read the ratios, not the seconds.  Ours: "
        "one process, one BLAS thread, as in a worker; BART 0.8 with 1 and 2 OpenMP threads "
        f"on the same data; each the best of {repeat}.\n",
        "| what | ours | BART / baseline | goal |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(table))
    print("\n".join(table))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument(
        "--part", choices=("all", "cartesian", "noncartesian"), default="all",
        help="which tables to measure (each writes its own results file)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("bart") is None:
        print("bench_sense: bart is not installed (make deps installs it)", file=sys.stderr)
        return 1
    matrix, coils, repeat = (64, 8, 2) if args.quick else (256, 32, 5)
    if args.part in ("all", "cartesian"):
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as folder:
            rows = espirit_and_sense(matrix, coils, repeat, Path(folder))
        rows += scaling(args.quick)
        _write_table(
            "sense", "ESPIRiT and CG-SENSE", rows, args.quick, repeat, load_before, "cartesian"
        )
    if args.part in ("all", "noncartesian"):
        load_before = os.getloadavg()[0]
        repeat = 2 if args.quick else 3
        with tempfile.TemporaryDirectory() as folder:
            rows = readout_sense(matrix, coils, repeat, Path(folder))
        rows += readout_scaling(args.quick)
        _write_table("sense_noncartesian", "Non-Cartesian CG-SENSE", rows, args.quick, repeat,
                     load_before, "noncartesian")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

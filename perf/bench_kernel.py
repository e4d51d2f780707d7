"""The Cartesian kernel against its FFT floor, per unit, side by side in one run.

The floor is the transforms the kernel cannot avoid, on the same arrays, with nothing else:
the inverse FFT along k0 of every line (in place, in the unit's shared-memory slot), then
along k1 of the kept half of the
readout columns (a contiguous array, in place; zero-padded first when the recon matrix is
larger, padding not timed), then along k2 for 3D.  Both numpy.fft and scipy.fft (one
thread) are timed and the faster one is the floor.  The kernel is the whole
``parallel_recon.workers.cartesian.reconstruct`` call as a worker makes it (k-space in a
scratch slot, magnitude, root-sum-of-squares, the Image built): transforms, crop, shifts,
coil combination and all.  Each is timed in turn, best of ``--repeat``, in wall and CPU
seconds; the input array is refreshed (untimed) before every call because the transforms
work in place.

Writes ``perf/results/kernel.md``; ``--quick`` uses fewer repeats.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
GOAL = 1.25


@dataclass(frozen=True)
class UnitCase:
    """One unit: k-space ``[k2, k1, coils, k0]`` and the recon matrix ``(x, y, z)``."""

    name: str
    kspace: tuple[int, int, int, int]
    recon: tuple[int, int, int]


CASES = (
    UnitCase("2D stream unit: 32 coils, 512x256 -> 256x256", (1, 256, 32, 512), (256, 256, 1)),
    UnitCase(
        "3D stream unit: 16 coils, 256x128x32 -> 128x128x32", (32, 128, 16, 256), (128, 128, 32)
    ),
    UnitCase(
        "compute-bound 3D unit: 16 coils, 128x64x16 -> 64x256x64",
        (16, 64, 16, 128),
        (64, 256, 64),
    ),
)


def _space(case: UnitCase):  # type: ignore[no-untyped-def]
    from parallel_recon.workers.api import EncodingSpace

    k2, k1, _, k0 = case.kspace
    x, y, z = case.recon
    return EncodingSpace(
        encoded_matrix=(k0, k1, k2),
        recon_matrix=case.recon,
        encoded_fov=(2.0 * x, float(y), float(z)),
        recon_fov=(float(x), float(y), float(z)),
        k1_limits=(0, k1 - 1, k1 // 2),
        k2_limits=(0, k2 - 1, k2 // 2),
    )


def _context(case: UnitCase):  # type: ignore[no-untyped-def]
    from parallel_recon.protocol import ACQUISITION_HEADER_DTYPE
    from parallel_recon.workers.api import ReconContext, ReconPlan, UnitInfo, UnitKey

    plan = ReconPlan(header_xml="", spaces=(_space(case),))
    head = np.zeros(1, ACQUISITION_HEADER_DTYPE)[0]
    head["read_dir"], head["phase_dir"], head["slice_dir"] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    info = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, head.tobytes(), case.kspace[2], 1)
    sampled = np.ones(case.kspace[:2], bool)
    return ReconContext(plan=plan, unit=info, sampled=sampled, overwrite_kspace=True)


def _floor_steps(case: UnitCase, library: str, slot: np.ndarray) -> list[Callable[[], object]]:
    """The bare transforms: the readout in the unit's own slot, the others on ready-made
    contiguous arrays (made here, untimed) of the sizes the kernel transforms."""
    import scipy.fft

    k2, k1, coils, _ = case.kspace
    x, y, z = case.recon

    def inverse(array: np.ndarray, axis: int) -> Callable[[], object]:
        if library == "numpy":
            return lambda: np.fft.ifft(array, axis=axis, norm="ortho", out=array)
        return lambda: scipy.fft.ifft(array, axis=axis, norm="ortho", overwrite_x=True, workers=1)

    rows = np.ones((k2, max(k1, y), coils, x), np.complex64)
    steps = [inverse(slot, 3), inverse(rows, 1)]
    if k2 > 1 or z > 1:
        steps.append(inverse(np.ones((max(k2, z), y, coils, x), np.complex64), 0))
    return steps


def _best(calls: dict[str, Callable[[], object]], before: Callable[[], None], repeat: int):
    """{name: (best wall s, best CPU s)}, the calls taken in turn ``repeat`` times."""
    best = {name: [float("inf"), float("inf")] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            before()
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name][0] = min(best[name][0], wall)
            best[name][1] = min(best[name][1], cpu)
    return {name: (w, c) for name, (w, c) in best.items()}


def measure(case: UnitCase, repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall and CPU seconds of the floor (numpy, scipy) and of the kernel."""
    from parallel_recon.workers.cartesian import reconstruct

    rng = np.random.default_rng(0)
    pristine = (
        rng.standard_normal(case.kspace, np.float32)
        + 1j * rng.standard_normal(case.kspace, np.float32)
    ).astype(np.complex64)
    # the unit's k-space lives in shared memory, as a worker's slot does (4 KB pages)
    slot = np.frombuffer(mmap.mmap(-1, pristine.nbytes), np.complex64).reshape(case.kspace)
    context = _context(case)
    steps = {lib: _floor_steps(case, lib, slot) for lib in ("numpy", "scipy")}
    calls: dict[str, Callable[[], object]] = {
        "floor numpy.fft": lambda: [step() for step in steps["numpy"]],
        "floor scipy.fft": lambda: [step() for step in steps["scipy"]],
        "kernel": lambda: reconstruct(slot, context),
    }

    def refresh() -> None:
        np.copyto(slot, pristine)

    for call in calls.values():  # warm up: plans, page faults
        refresh()
        call()
    return _best(calls, refresh, repeat)


def run(repeat: int) -> str:
    load_before = os.getloadavg()[0]
    rows = []
    for case in CASES:
        times = measure(case, repeat)
        floor_name = min(("floor numpy.fft", "floor scipy.fft"), key=lambda n: times[n][0])
        floor_wall, floor_cpu = times[floor_name]
        wall, cpu = times["kernel"]
        ratio, cpu_ratio = wall / floor_wall, cpu / floor_cpu
        verdict = "met" if max(ratio, cpu_ratio) <= GOAL else "missed"
        rows.append(
            f"| {case.name} | {times['floor numpy.fft'][0] * 1e3:.1f} | "
            f"{times['floor scipy.fft'][0] * 1e3:.1f} | {wall * 1e3:.1f} | {ratio:.2f}x | "
            f"{cpu * 1e3:.1f} / {floor_cpu * 1e3:.1f} = {cpu_ratio:.2f}x | <= {GOAL}x: {verdict} |"
        )
    load_after = os.getloadavg()[0]
    return "\n".join(
        [
            "## Cartesian kernel vs its FFT floor (`perf/bench_kernel.py`)",
            "",
            f"Made by `python perf/bench_kernel.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{os.cpu_count()} cores, numpy {np.__version__}; one thread; best of {repeat}, "
            "the calls taken in turn; 1-minute load average "
            f"{load_before:.2f} before, {load_after:.2f} after.  Floor: the inverse FFTs "
            "the kernel cannot avoid (k0 on every line, k1 on the kept half, k2 for 3D), in "
            "place on ready-made arrays.  Kernel: the whole `cartesian.reconstruct` call of "
            "a worker (magnitude, root-sum-of-squares, image header).",
            "",
            "| unit | floor numpy.fft ms | floor scipy.fft ms | kernel ms | kernel / floor "
            "(wall) | kernel / floor (CPU ms) | goal |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, to check the script")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    text = run(3 if args.quick else args.repeat)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "kernel.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

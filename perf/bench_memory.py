"""Bounded memory of ``mrd_stream_recon``: peak RSS of the whole process tree vs stream length.

Writes ``perf/results/memory.md``.  The same 32-coil, 2-slice acquisition is streamed with
N and 10 N repetitions; the peak resident memory of the recon's process tree (supervisor,
reader, workers, writer; psutil, sampled every 10 ms from outside) must grow by < 10%.
The engine's own ``--profile-json`` peak is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recon import BIN, RESULTS, Case, write_stream


def peak_tree_memory(stream: Path, workers: int, profile: Path) -> tuple[int, int, float, dict]:
    """Run the recon on ``stream`` through a pipe.

    Returns (peak RSS sum, peak PSS sum, seconds, profile).  The RSS sum counts a shared
    page once per process that touched it; the PSS sum counts it once in all.
    """
    start = time.perf_counter()
    command = [str(BIN / "mrd_stream_recon"), "--workers", str(workers)]
    with open(stream, "rb") as source:
        proc = subprocess.Popen(
            [*command, "--profile-json", str(profile)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        root = psutil.Process(proc.pid)
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = pss = 0
                try:
                    for p in [root, *root.children(recursive=True)]:
                        info = p.memory_full_info()
                        rss += info.rss
                        pss += info.pss
                except psutil.Error:
                    pass
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdin is not None
        while block := source.read(1 << 20):
            proc.stdin.write(block)
        proc.stdin.close()
        code = proc.wait()
        done.set()
        sampler.join()
    if code != 0:
        raise SystemExit(f"mrd_stream_recon exited {code}")
    return peak[0], peak[1], time.perf_counter() - start, json.loads(profile.read_text())


def run(quick: bool) -> str:
    matrix, base_reps = (32, 16) if quick else (128, 16)
    workers = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        measured = []
        for reps in (base_reps, 10 * base_reps):
            case = Case("memory", matrix=matrix, coils=32, slices=2, repetitions=reps)
            path = Path(tmp) / f"reps{reps}.stream"
            with open(path, "wb", buffering=1 << 22) as sink:
                write_stream(case, sink)
            peak, pss, seconds, profile = peak_tree_memory(path, workers, Path(tmp) / "p.json")
            size = path.stat().st_size
            path.unlink()
            measured.append((peak, pss))
            rows.append(
                f"| {reps} | {size / 1e6:.0f} | {seconds:.1f} | {peak / 2**20:.1f} | "
                f"{pss / 2**20:.1f} | "
                f"{profile['memory']['peak_tree_rss_bytes'] / 2**20:.1f} | "
                f"{profile['memory']['kspace_slots']} x "
                f"{profile['memory']['kspace_slot_bytes'] / 2**20:.1f} MiB |"
            )
    growth = measured[1][0] / measured[0][0] - 1
    growth_pss = measured[1][1] / measured[0][1] - 1
    return "\n".join(
        [
            "## Bounded memory (`mrd_stream_recon`)",
            "",
            f"Made by `perf/bench_memory.py{' --quick' if quick else ''}` "
            f"({time.strftime('%Y-%m-%d')}, {workers} workers, {os.cpu_count()} cores): "
            f"32 coils, 2 interleaved slices, {2 * matrix}x{matrix} with 2x oversampling, fed "
            "through a pipe.  Peak RSS is summed over the whole process tree (shared-memory "
            "pages count once per process that touched them, so this is an upper bound; PSS "
            "counts them once, but also shares library pages with other programs running).  "
            "The k-space ring is allocated once at start; its pages become resident as units "
            "first use them, so the smaller run already has 4x more units than slots (steady "
            "state, as in a real scan).",
            "",
            "| repetitions | stream MB | seconds | peak tree RSS MiB (psutil, outside) | "
            "peak tree PSS MiB | peak tree RSS MiB (--profile-json) | k-space slots |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"10x the repetitions: peak tree RSS {growth:+.1%}, PSS {growth_pss:+.1%} "
            f"(target < +10%: {'met' if max(growth, growth_pss) < 0.10 else 'missed'}).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    text = run(args.quick)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "memory.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the time and memory go: stage statistics for ``--profile`` and ``--profile-json``.

Each process reports its own counters when it finishes; the supervisor samples the resident
memory of the whole process tree (itself plus every child, via psutil) while it waits, and
adds the CPU time of all processes.  Shared-memory pages count in every process that
touched them, so the tree sum is an upper bound, which is what a memory budget needs.
"""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

from .cores import available_cores

__all__ = [
    "TreeSampler",
    "build_profile",
    "cpu_seconds",
    "format_profile",
    "write_profile_json",
]


class TreeSampler:
    """Samples the summed RSS of this process and all its descendants, keeping the peak."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss = 0
        self.samples = 0
        self._last = 0.0

    def sample(self, force: bool = False) -> None:
        """Take a sample if ``interval`` has passed since the last one (or when forced)."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        import psutil  # here, not at the top: only a profiled run pays for it

        total = 0
        root = psutil.Process(os.getpid())
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.samples += 1
        self.peak_rss = max(self.peak_rss, total)


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def build_profile(
    *,
    wall_s: float,
    cpu_start_s: float,
    reader: dict[str, Any],
    workers: list[dict[str, Any]],
    writer: dict[str, Any],
    memory: dict[str, Any],
    sampler: TreeSampler,
    prelude: dict[str, Any],
    kernel: str = "",
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The profile as a JSON-ready dict (all times in seconds, sizes in bytes)."""
    cpu_s = cpu_seconds() - cpu_start_s
    busy = [w.get("busy_fraction", 0.0) for w in workers]
    choices: dict[str, int] = {}
    for w in workers:
        for choice, count in w.get("kernel_choices", {}).items():
            choices[choice] = choices.get(choice, 0) + count
    return {
        "wall_s": wall_s,
        "kernel": {"name": kernel, "choices": choices, "warnings": list(warnings or [])},
        "input": {
            "bytes": reader.get("bytes", 0),
            "mb_per_s": _rate(reader.get("bytes", 0) / 1e6, wall_s),
            "messages": reader.get("messages", 0),
            "acquisitions": reader.get("acquisitions", 0),
            "acquisitions_per_s": _rate(reader.get("acquisitions", 0), wall_s),
            "imaging_lines": reader.get("imaging_lines", 0),
            "after_close": reader.get("after_close"),
            "skipped_lines": reader.get("skipped", {}),
            "noise": reader.get("noise", {}),
            "calibration": reader.get("calibration", {}),
            "config_messages": prelude.get("configs", []) + reader.get("configs", []),
            "text_messages": prelude.get("texts", 0) + reader.get("text_messages", 0),
            "other_messages": {
                **prelude.get("others", {}),
                **{
                    k: v
                    for k, v in reader.items()
                    if k.endswith("_messages") and k != "text_messages"
                },
            },
        },
        "output": {
            "units": writer.get("units", 0),
            "images": writer.get("images", 0),
            "images_per_s": _rate(writer.get("images", 0), wall_s),
            "bytes": writer.get("bytes", 0),
            "mb_per_s": _rate(writer.get("bytes", 0) / 1e6, wall_s),
            "first_image_s": writer.get("first_image_s"),
        },
        "reader": {
            "cpu_s": reader.get("cpu_s", 0.0),
            "wall_s": reader.get("wall_s", 0.0),
            "wait_free_slot_s": reader.get("wait_free_slot_s", 0.0),
        },
        "workers": {
            "count": len(workers),
            "busy_fraction": busy,
            "busy_fraction_mean": sum(busy) / len(busy) if busy else 0.0,
            "busy_s": [w.get("busy_s", 0.0) for w in workers],
            "wall_s": [w.get("wall_s", 0.0) for w in workers],
            "cpu_s": [w.get("cpu_s", 0.0) for w in workers],
            "units": [w.get("units", 0) for w in workers],
            "image_queue_fallbacks": sum(w.get("image_queue_fallbacks", 0) for w in workers),
            "calibrations": sum(w.get("calibrations", 0) for w in workers),
            "calibrations_per_worker": [w.get("calibrations", 0) for w in workers],
            "calibrations_shared": sum(w.get("calibrations_shared", 0) for w in workers),
            "calibrations_unshared": sum(w.get("calibrations_unshared", 0) for w in workers),
            "calibration_wait_s": sum(w.get("calibration_wait_s", 0.0) for w in workers),
            "calibration_cpu_s": sum(w.get("calibration_cpu_s", 0.0) for w in workers),
        },
        "writer": {
            "wait_s": writer.get("wait_s", 0.0),
            "wall_s": writer.get("wall_s", 0.0),
            "cpu_s": writer.get("cpu_s", 0.0),
        },
        "memory": {
            **memory,
            "peak_tree_rss_bytes": sampler.peak_rss,
            "rss_samples": sampler.samples,
        },
        "cpu": {
            "cpu_s": cpu_s,
            "cores_used": _rate(cpu_s, wall_s),
            "cores": available_cores(),
            "load_average_1min": os.getloadavg()[0],
        },
    }


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def format_profile(profile: dict[str, Any], prog: str) -> str:
    """Human-readable lines for stderr."""
    i, o, r, w, m, c = (
        profile[k] for k in ("input", "output", "reader", "workers", "memory", "cpu")
    )
    busy = ", ".join(f"{b:.2f}" for b in w["busy_s"])
    alive = ", ".join(f"{b:.2f}" for b in w["wall_s"])
    fractions = ", ".join(f"{b:.0%}" for b in w["busy_fraction"])
    worker_cpu = ", ".join(f"{b:.2f}" for b in w["cpu_s"])
    noise = i["noise"]
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(i["skipped_lines"].items())) or "none"
    first = o["first_image_s"]
    lines = [
        f"{prog}: profile ({profile['wall_s']:.2f} s wall)",
        f"  input   {i['bytes'] / 1e6:.1f} MB at {i['mb_per_s']:.1f} MB/s; {i['acquisitions']} "
        f"acquisitions at {i['acquisitions_per_s']:.0f}/s; skipped lines: {skipped}",
        f"  output  {o['units']} units, {o['images']} images ({o['images_per_s']:.1f}/s), "
        f"{o['bytes'] / 1e6:.1f} MB; first image after "
        + (f"{first:.2f} s" if first is not None else "-"),
        f"  workers {w['count']}: busy {busy} s of their {alive} s alive ({fractions}: wall "
        f"time in kernels and image delivery); CPU {worker_cpu} s; units per worker "
        f"{w['units']}",
        f"  waits   reader for free slots {r['wait_free_slot_s']:.2f} s (reader CPU "
        f"{r['cpu_s']:.2f} s); writer for results {profile['writer']['wait_s']:.2f} s "
        f"(writer CPU {profile['writer']['cpu_s']:.2f} s)",
        f"  memory  peak tree RSS {_mib(m['peak_tree_rss_bytes'])}; {m['kspace_slots']} k-space "
        f"slots x {_mib(m['kspace_slot_bytes'])}, {m['image_slots']} image slots x "
        f"{_mib(m['image_slot_bytes'])}",
        f"  cpu     {c['cpu_s']:.2f} s, all processes ({c['cores_used']:.2f} of {c['cores']} "
        f"cores over the {profile['wall_s']:.2f} s run; load average "
        f"{c['load_average_1min']:.2f})",
    ]
    if i["after_close"]:
        lines.append(f"  after   {i['after_close']}")
    kernel = profile["kernel"]
    ran = "; ".join(f"{n} x {c}" for c, n in sorted(kernel["choices"].items())) or "-"
    lines.append(f"  kernel  --recon {kernel['name']}: {ran}")
    calibration = i["calibration"]
    if calibration.get("lines"):
        lines.append(
            f"  calib   {calibration['lines']} calibration lines, {calibration['published']} "
            f"calibrations published into {calibration['buffers']} buffers"
        )
    if w["calibrations"] or w["calibrations_shared"]:
        lines.append(_derived_line(w))
    if noise.get("lines") or noise.get("coil_std"):
        lines.append(_noise_line(noise))
    if i["config_messages"] or i["text_messages"] or i["other_messages"]:
        lines.append(
            f"  other   config {i['config_messages'] or 'none'}; text {i['text_messages']} "
            f"(passed through); {i['other_messages'] or 'no other messages'}"
        )
    return "\n".join(lines)


def _derived_line(workers: dict[str, Any]) -> str:
    """``derived 4 calibrations computed (per worker 2, 2), 60 units served from the shared
    store ...``: how often the kernels' weights and maps were computed and reused."""
    per_worker = ", ".join(str(n) for n in workers["calibrations_per_worker"])
    text = (
        f"  derived {workers['calibrations']} calibrations computed (per worker {per_worker}, "
        f"{workers['calibration_cpu_s']:.2f} CPU-s); "
        f"{workers['calibrations_shared']} units read them from the shared store; waited "
        f"{workers['calibration_wait_s']:.2f} s for them"
    )
    if workers["calibrations_unshared"]:
        text += f"; {workers['calibrations_unshared']} kept by one worker only"
    return text


def _noise_line(noise: dict[str, Any]) -> str:
    """``noise   64 lines; coil std 0.9..1.3; max correlation 0.48 (coils 2, 3); ...``"""
    text = f"  noise   {noise['lines']} lines"
    std = noise.get("coil_std")
    if std:
        text += (
            f" ({noise.get('source', 'stream')}); coil std {min(std):.3g}..{max(std):.3g}; "
            f"largest correlation {noise['max_correlation']:.2f} (coils "
            f"{noise['max_correlation_pair'][0]}, {noise['max_correlation_pair'][1]}); "
            f"bandwidth scale {noise['bandwidth_scale']:.3g}"
        )
    text += f"; prewhitening {noise.get('prewhitening', '-')}"
    if noise.get("regularised"):
        text += " (singular covariance: diagonal loading 1e-6)"
    if noise.get("late_lines"):
        text += f"; {noise['late_lines']} noise lines after the imaging began (not used)"
    return text


def write_profile_json(profile: dict[str, Any], path: str) -> None:
    """Write the profile as indented JSON."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=2)
        handle.write("\n")

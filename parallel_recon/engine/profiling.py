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

import numpy as np
import psutil

__all__ = [
    "NoiseStats",
    "TreeSampler",
    "build_profile",
    "cpu_seconds",
    "format_profile",
    "write_profile_json",
]


class NoiseStats:
    """Per-coil mean and variance of noise-measurement samples."""

    def __init__(self) -> None:
        self.lines = 0
        self.samples = 0
        self._sum: np.ndarray | None = None
        self._power: np.ndarray | None = None

    def add(self, data: np.ndarray) -> None:
        """``data``: complex64 ``[coils, samples]`` of one noise line."""
        if self._sum is None or self._sum.shape[0] != data.shape[0]:
            if self._sum is not None:
                return  # a different coil count: keep the first one's statistics
            self._sum = np.zeros(data.shape[0], np.complex128)
            self._power = np.zeros(data.shape[0], np.float64)
        assert self._power is not None
        self.lines += 1
        self.samples += data.shape[1]
        self._sum += data.sum(axis=1)
        self._power += (data.real.astype(np.float64) ** 2 + data.imag.astype(np.float64) ** 2).sum(
            axis=1
        )

    def summary(self) -> dict[str, Any]:
        if self._sum is None or self._power is None or not self.samples:
            return {"lines": 0, "samples": 0, "coil_variance": []}
        mean = self._sum / self.samples
        variance = self._power / self.samples - np.abs(mean) ** 2
        return {
            "lines": self.lines,
            "samples": self.samples,
            "coil_variance": [float(v) for v in variance],
        }


class TreeSampler:
    """Samples the summed RSS of this process and all its descendants, keeping the peak."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss = 0
        self.samples = 0
        self._root = psutil.Process(os.getpid())
        self._last = 0.0

    def sample(self, force: bool = False) -> None:
        """Take a sample if ``interval`` has passed since the last one (or when forced)."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        total = 0
        try:
            processes = [self._root, *self._root.children(recursive=True)]
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
) -> dict[str, Any]:
    """The profile as a JSON-ready dict (all times in seconds, sizes in bytes)."""
    cpu_s = cpu_seconds() - cpu_start_s
    busy = [w.get("busy_fraction", 0.0) for w in workers]
    return {
        "wall_s": wall_s,
        "input": {
            "bytes": reader.get("bytes", 0),
            "mb_per_s": _rate(reader.get("bytes", 0) / 1e6, wall_s),
            "messages": reader.get("messages", 0),
            "acquisitions": reader.get("acquisitions", 0),
            "acquisitions_per_s": _rate(reader.get("acquisitions", 0), wall_s),
            "imaging_lines": reader.get("imaging_lines", 0),
            "skipped_lines": reader.get("skipped", {}),
            "noise": reader.get("noise", {}),
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
            "cpu_s": [w.get("cpu_s", 0.0) for w in workers],
            "units": [w.get("units", 0) for w in workers],
            "image_queue_fallbacks": sum(w.get("image_queue_fallbacks", 0) for w in workers),
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
            "cores": os.cpu_count(),
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
    busy = ", ".join(f"{b:.0%}" for b in w["busy_fraction"])
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
        f"  workers {w['count']}: busy {busy} (mean {w['busy_fraction_mean']:.0%}); units per "
        f"worker {w['units']}",
        f"  waits   reader for free slots {r['wait_free_slot_s']:.2f} s (reader CPU "
        f"{r['cpu_s']:.2f} s); writer for results {profile['writer']['wait_s']:.2f} s "
        f"(writer CPU {profile['writer']['cpu_s']:.2f} s)",
        f"  memory  peak tree RSS {_mib(m['peak_tree_rss_bytes'])}; {m['kspace_slots']} k-space "
        f"slots x {_mib(m['kspace_slot_bytes'])}, {m['image_slots']} image slots x "
        f"{_mib(m['image_slot_bytes'])}",
        f"  cpu     {c['cpu_s']:.2f} s ({c['cores_used']:.2f} of {c['cores']} cores; worker CPU "
        + ", ".join(f"{s:.2f}" for s in w["cpu_s"])
        + f" s; load average {c['load_average_1min']:.2f})",
    ]
    if noise.get("lines"):
        variance = noise["coil_variance"]
        mean = sum(variance) / len(variance) if variance else 0.0
        lines.append(f"  noise   {noise['lines']} lines, mean coil variance {mean:.3g}")
    if i["config_messages"] or i["text_messages"] or i["other_messages"]:
        lines.append(
            f"  other   config {i['config_messages'] or 'none'}; text {i['text_messages']} "
            f"(passed through); {i['other_messages'] or 'no other messages'}"
        )
    return "\n".join(lines)


def write_profile_json(profile: dict[str, Any], path: str) -> None:
    """Write the profile as indented JSON."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=2)
        handle.write("\n")

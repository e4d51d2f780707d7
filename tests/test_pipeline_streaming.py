"""Streaming, bounded memory and the profile of ``mrd_stream_recon``.

- The first image leaves while most of the input has not even been sent.
- Peak memory of the whole process tree does not grow with the number of repetitions.
- ``--profile`` / ``--profile-json`` / ``--progress`` report sane numbers.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

import ismrmrd
import numpy as np
import psutil
import pytest
from conftest import run_cli, script
from stream_feeding import first_image_before_the_rest
from test_pipeline_helpers import RSS_KERNEL, Spec, build_lines, stream_bytes, write_kernel

from parallel_recon.protocol import MessageId, message_id_bytes

RECON = "mrd_stream_recon"


def _split_by_repetition(spec: Spec) -> list[bytes]:
    """The stream cut into [header, rep 0, rep 1, ..., CLOSE] byte chunks."""
    from parallel_recon.protocol import encode_message

    lines = build_lines(spec)
    data = stream_bytes(spec, lines)
    chunks, offset = [], len(data) - 2 - sum(len(encode_message(x.acquisition)) for x in lines)
    chunks.append(data[:offset])
    for rep in range(spec.repetitions):
        size = sum(
            len(encode_message(x.acquisition))
            for x in lines
            if int(x.acquisition.head["idx"]["repetition"]) == rep
        )
        chunks.append(data[offset : offset + size])
        offset += size
    chunks.append(data[offset:])
    assert b"".join(chunks) == data
    return chunks


def test_first_image_leaves_while_later_repetitions_are_unsent(tmp_path: Path) -> None:
    """Header and repetition 0 sent, stdin left open, repetitions 1-5 held back: the image
    of repetition 0 must arrive before anything more is sent (a recon that reads ahead or
    waits for the end of the stream never gets the rest and fails on the timeout)."""
    spec = Spec(repetitions=6, readout=128, lines=64, coils=4)  # ~280 KB per repetition
    chunks = _split_by_repetition(spec)
    header_message = len(chunks[0])
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    argv = [script(RECON), "--recon", kernel, "--workers", "2"]
    fed = first_image_before_the_rest(
        argv, b"".join(chunks[:2]), b"".join(chunks[2:]), header_message
    )
    assert fed.returncode == 0, fed.stderr.decode()
    assert fed.output == run_cli(RECON, *argv[1:], input=b"".join(chunks)).stdout
    assert fed.output.startswith(fed.before_the_rest)


def _high_water_mark(pid: int) -> int:
    """Peak resident set size of a live process in bytes (``VmHWM``, kept by the kernel)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _count_images(stdout: IO[bytes], expected: int, arrived: threading.Event) -> None:
    """Read the output stream (ismrmrd-python) and set ``arrived`` at its ``expected``-th image."""
    seen = 0
    for item in ismrmrd.ProtocolDeserializer(stdout).deserialize():
        seen += isinstance(item, ismrmrd.Image)
        if seen == expected:
            arrived.set()


def _peak_tree_rss(args: list[str], data: bytes, images: int) -> int:
    """Peak RSS summed over the command's whole process tree while it reconstructs ``data``.

    The stream's CLOSE is held back until all ``images`` have arrived on stdout: then every
    unit has been read, reconstructed and written, and every process is still alive, waiting
    for more input.  Each process's high-water mark is read at that moment (exact, not
    sampled; a shared page counts once per process touching it), then CLOSE is sent.
    """
    close = message_id_bytes(MessageId.CLOSE)
    assert data.endswith(close)
    proc = subprocess.Popen([script(RECON), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    arrived = threading.Event()
    counter = threading.Thread(target=_count_images, args=(proc.stdout, images, arrived))
    counter.start()
    try:
        proc.stdin.write(data[: -len(close)])
        proc.stdin.flush()
        assert arrived.wait(timeout=300), "not every image arrived"
        root = psutil.Process(proc.pid)
        peak = sum(_high_water_mark(p.pid) for p in [root, *root.children(recursive=True)])
        proc.stdin.write(close)
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        counter.join(timeout=60)
        proc.stdout.close()
    return peak


def test_memory_does_not_grow_with_the_number_of_repetitions(tmp_path: Path) -> None:
    """10x the repetitions (~15 MB -> ~150 MB of input): peak tree RSS grows < 10%.

    The smaller run already has 3x more units than the ring has slots, so both runs have
    touched every slot: what is compared is the steady state, as it would be for a scan.
    """
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    args = ["--recon", kernel, "--workers", "2"]
    base = Spec(slices=3, readout=128, lines=64, coils=8, repetitions=9)  # 27 units, 9 slots
    small = stream_bytes(base)
    large = stream_bytes(Spec(**{**base.__dict__, "repetitions": 90}))
    assert len(large) > 9 * len(small) > 100 << 20
    before = _peak_tree_rss(args, small, images=3 * 9)
    after = _peak_tree_rss(args, large, images=3 * 90)
    growth = after / before - 1
    assert growth < 0.10, f"peak tree RSS {before} -> {after} bytes ({growth:+.1%})"


TIMED_RSS_KERNEL = (
    RSS_KERNEL
    + """
import os
import time

_rss = reconstruct


def reconstruct(kspace, context):
    began = time.monotonic()
    images = _rss(kspace, context)
    ended = time.monotonic()
    with open(LOG, "a") as log:
        log.write(f"{os.getpid()} {began!r} {ended!r}\\n")
    return images
"""
)
"""The RSS kernel, logging ``pid start end`` (system-wide monotonic clock) of every call."""


def _kernel_seconds(log: Path) -> list[tuple[int, float]]:
    """(calls, seconds inside the kernel) per process that logged, from the kernel's log."""
    spans: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        pid, began, ended = line.split()
        spans.setdefault(pid, []).append(float(ended) - float(began))
    return [(len(v), sum(v)) for v in spans.values()]


def _check_busy_times(workers: dict[str, Any], kernel: list[tuple[int, float]]) -> None:
    """Each worker's busy fraction is its busy time over its wall time, and its busy time
    holds at least the time its kernel calls took (logged by the kernel itself) and at most
    its wall time.  Workers and kernel logs are matched by their unit counts."""
    count = workers["count"]
    for busy, busy_s, wall_s in zip(
        workers["busy_fraction"], workers["busy_s"], workers["wall_s"], strict=True
    ):
        assert busy == pytest.approx(busy_s / wall_s, rel=1e-12)
    kernel = kernel + [(0, 0.0)] * (count - len(kernel))
    assert any(
        all(
            workers["units"][i] == kernel[k][0]
            and kernel[k][1] <= workers["busy_s"][i] <= workers["wall_s"][i]
            for i, k in enumerate(order)
        )
        for order in itertools.permutations(range(count))
    ), (workers, kernel)


def test_profile_text_json_and_progress(tmp_path: Path) -> None:
    spec = Spec(slices=3, repetitions=2, extra_lines=True)
    lines = build_lines(spec)
    data = stream_bytes(spec, lines)
    log = tmp_path / "kernel.log"
    kernel = write_kernel(tmp_path, f"LOG = {str(log)!r}\n{TIMED_RSS_KERNEL}", "rss")
    profile_path = tmp_path / "profile.json"
    proc = run_cli(
        RECON,
        "--recon",
        kernel,
        "--workers",
        "2",
        "--profile",
        "--profile-json",
        str(profile_path),
        "--progress",
        input=data,
        timeout=60,
    )
    err = proc.stderr.decode()
    for label in ("profile", "input", "output", "workers", "waits", "memory", "cpu", "noise"):
        assert f"{label} " in err, err
    assert "acquisitions in" in err  # --progress on a non-terminal prints plain lines
    profile = json.loads(profile_path.read_text())
    units = 3 * 2
    assert profile["wall_s"] > 0
    inp = profile["input"]
    assert inp["bytes"] == len(data)
    assert inp["acquisitions"] == len(lines)
    assert inp["imaging_lines"] == sum(1 for x in lines if x.key is not None)
    assert inp["skipped_lines"] == {"noise": 1, "navigator": 6, "phasecorr": 6, "calibration": 6}
    assert inp["mb_per_s"] > 0 and inp["acquisitions_per_s"] > 0
    assert inp["noise"]["lines"] == 1 and len(inp["noise"]["coil_variance"]) == spec.coils
    # E|x|^2 per coil over the noise line's samples, computed here from what was sent
    assert lines[0].key is None and int(lines[0].acquisition.head["flags"]) == 1 << 18
    noise = lines[0].acquisition.data.astype(np.complex128)
    expected = np.mean(np.abs(noise) ** 2, axis=1)
    assert inp["noise"]["coil_variance"] == pytest.approx(expected.tolist(), rel=1e-9)
    out = profile["output"]
    assert out["units"] == units and out["images"] == units
    assert out["bytes"] == len(proc.stdout)
    assert 0 < out["first_image_s"] <= profile["wall_s"]
    workers = profile["workers"]
    assert workers["count"] == 2 and sum(workers["units"]) == units
    _check_busy_times(workers, _kernel_seconds(log))
    assert profile["reader"]["wait_free_slot_s"] >= 0 and profile["writer"]["wait_s"] >= 0
    memory = profile["memory"]
    assert memory["peak_tree_rss_bytes"] > 20 << 20  # at least the interpreters
    assert memory["kspace_slots"] >= 3 + 1 and memory["units_per_repetition"] == 3
    assert memory["kspace_slot_bytes"] >= spec.lines * spec.coils * spec.readout * 8
    cpu = profile["cpu"]
    assert cpu["cpu_s"] > 0 and 0 < cpu["cores_used"] <= (os.cpu_count() or 1) + 0.5

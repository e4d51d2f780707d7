"""Streaming, bounded memory and the profile of ``mrd_stream_recon``.

- The first image leaves while most of the input has not even been sent.
- Peak memory of the whole process tree does not grow with the number of repetitions.
- ``--profile`` / ``--profile-json`` / ``--progress`` report sane numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
from conftest import run_cli, script
from stream_feeding import feed_in_chunks
from test_pipeline_helpers import RSS_KERNEL, Spec, build_lines, stream_bytes, write_kernel

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


def test_first_image_leaves_before_half_the_input_is_sent(tmp_path: Path) -> None:
    spec = Spec(repetitions=6, readout=128, lines=64, coils=4)  # ~280 KB per repetition
    chunks = _split_by_repetition(spec)
    total = sum(len(c) for c in chunks)
    header_message = len(chunks[0])
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    fed = feed_in_chunks(
        [script(RECON), "--recon", kernel, "--workers", "2"], chunks, 0.5, header_message
    )
    assert fed.returncode == 0, fed.stderr.decode()
    assert fed.sent_at_first_image < total / 2, (
        f"first image after {fed.sent_at_first_image} of {total} bytes sent"
    )
    assert len(fed.output) > header_message


def _peak_tree_rss(args: list[str], data: bytes) -> int:
    """Run the command on ``data``; peak RSS summed over its whole process tree (psutil,
    sampled from outside every 10 ms; a shared page counts once per process touching it)."""
    proc = subprocess.Popen(
        [script(RECON), *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    total += p.memory_info().rss
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    done.set()
    sampler.join()
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
    before = _peak_tree_rss(args, small)
    after = _peak_tree_rss(args, large)
    growth = after / before - 1
    assert growth < 0.10, f"peak tree RSS {before} -> {after} bytes ({growth:+.1%})"


def test_profile_text_json_and_progress(tmp_path: Path) -> None:
    spec = Spec(slices=3, repetitions=2, extra_lines=True)
    lines = build_lines(spec)
    data = stream_bytes(spec, lines)
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
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
    # the noise line is complex standard normal: variance 2 per coil
    assert all(0.5 < v < 8 for v in inp["noise"]["coil_variance"])
    out = profile["output"]
    assert out["units"] == units and out["images"] == units
    assert out["bytes"] == len(proc.stdout)
    assert 0 < out["first_image_s"] <= profile["wall_s"]
    workers = profile["workers"]
    assert workers["count"] == 2 and sum(workers["units"]) == units
    assert all(0 <= b <= 1 for b in workers["busy_fraction"])
    assert profile["reader"]["wait_free_slot_s"] >= 0 and profile["writer"]["wait_s"] >= 0
    memory = profile["memory"]
    assert memory["peak_tree_rss_bytes"] > 20 << 20  # at least the interpreters
    assert memory["kspace_slots"] >= 3 + 1 and memory["units_per_repetition"] == 3
    assert memory["kspace_slot_bytes"] >= spec.lines * spec.coils * spec.readout * 8
    cpu = profile["cpu"]
    assert cpu["cpu_s"] > 0 and 0 < cpu["cores_used"] <= (os.cpu_count() or 1) + 0.5

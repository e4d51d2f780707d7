"""What a kernel derives from a slice's calibration is computed once, whatever the workers.

A probe kernel logs every call of its ``compute`` (slice, contrast, calibration version,
process id) to a file of its own, outside the engine, and checks the arrays it is handed
against its unit's own calibration: so the count of computations comes from the kernel's
side, not from the engine's profile, and a unit handed another slice's or another version's
arrays fails the run.  The profile's count is checked against the log.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec

PROBE_KERNEL = '''
"""Derives a copy of its unit's calibration once, through context.derived, and checks it."""
import os

import numpy as np

from parallel_recon.workers import cartesian


def calibration_cache_bytes(plan, coils):
    return int(os.environ["PROBE_ROOM"])


def _derive(calibration, key, padding, tag):
    with open(os.environ["PROBE_LOG"], "a") as log:
        log.write(f"{key.slice} {key.contrast} {calibration.version} {os.getpid()} {tag}\\n")
    return {
        "block": calibration.kspace.copy(),
        "version": np.array([calibration.version]),
        "padding": np.zeros(padding, np.uint8),
    }


def reconstruct(kspace, context):
    calibration, key = context.calibration, context.unit.key
    tag = key.repetition % 2 if os.environ.get("PROBE_TAG") == "parity" else 0
    padding = int(os.environ.get("PROBE_PADDING", "0"))
    arrays = context.derived(f"probe {tag}", lambda: _derive(calibration, key, padding, tag))
    if int(arrays["version"][0]) != calibration.version or not np.array_equal(
        arrays["block"], calibration.kspace
    ):
        raise RuntimeError(f"slice {key.slice} was handed another calibration's arrays")
    return cartesian.reconstruct(kspace, context)
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("probe") / "derive_probe.py"
    path.write_text(PROBE_KERNEL)
    return str(path)


def _spec(mode: str, slices: int = 4, repetitions: int = 6) -> PhantomSpec:
    return PhantomSpec(
        matrix=16,
        coils=2,
        oversampling=1,
        acceleration=2,
        calibration_width=8,
        calibration=mode,
        slices=slices,
        repetitions=repetitions,
    )


def _run(
    stream: bytes, tmp_path: Path, workers: int, recon: str, *args: str, **env: str
) -> tuple[bytes, dict, list[tuple[int, int, int, int, int]]]:  # type: ignore[type-arg]
    """Images, profile and the probe's log (slice, contrast, version, pid, tag) of one run."""
    log = tmp_path / f"log-{workers}-{len(list(tmp_path.iterdir()))}.txt"
    log.touch()
    profile = tmp_path / f"profile-{workers}-{len(list(tmp_path.iterdir()))}.json"
    proc = run_cli(
        "mrd_stream_recon",
        "--workers",
        str(workers),
        "--recon",
        recon,
        "--profile-json",
        str(profile),
        *args,
        input=stream,
        env={"PROBE_LOG": str(log), "PROBE_ROOM": "1048576", **env},
    )
    entries = [tuple(int(v) for v in line.split()) for line in log.read_text().splitlines()]
    return proc.stdout, json.loads(profile.read_text()), entries  # type: ignore[return-value]


def test_a_separate_calibration_is_derived_once_per_slice_for_any_worker_count(
    probe: str, tmp_path: Path
) -> None:
    stream = phantom_bytes(_spec("separate"))
    outputs = {}
    for workers in (1, 2, 4):
        images, profile, log = _run(stream, tmp_path, workers, probe)
        per_calibration = Counter((s, c, v) for s, c, v, _, _ in log)
        assert sorted(s for s, _, _ in per_calibration) == [0, 1, 2, 3], log
        assert set(per_calibration.values()) == {1}, f"workers {workers}: {log}"
        assert profile["workers"]["calibrations"] == 4
        assert sum(profile["workers"]["calibrations_per_worker"]) == 4
        assert profile["workers"]["calibrations_shared"] == 4 * 6 - 4
        assert profile["workers"]["calibrations_unshared"] == 0
        assert profile["memory"]["derived_entries"] == 4 + workers + 1
        outputs[workers] = images
    assert outputs[1] == outputs[2] == outputs[4]


def test_an_embedded_calibration_is_derived_once_per_slice_and_repetition(
    probe: str, tmp_path: Path
) -> None:
    """Embedded calibration lines renew the calibration in every repetition: one version
    per (slice, repetition), each derived once, and every unit gets its own version's."""
    stream = phantom_bytes(_spec("embedded", slices=2, repetitions=3))
    _, profile, log = _run(stream, tmp_path, 3, probe)
    per_calibration = Counter((s, c, v) for s, c, v, _, _ in log)
    assert len(per_calibration) == 2 * 3
    assert set(per_calibration.values()) == {1}
    assert profile["workers"]["calibrations"] == 6


def test_grappa_computes_each_slices_weights_once(tmp_path: Path) -> None:
    """The bundled kernel: 4 slices x 4 repetitions, one weight computation per slice with
    1, 2 and 4 workers, and the same bytes."""
    spec = PhantomSpec(
        matrix=32,
        coils=4,
        acceleration=2,
        calibration_width=16,
        calibration="separate",
        slices=4,
        repetitions=4,
    )
    stream = phantom_bytes(spec)
    outputs = {}
    for workers in (1, 2, 4):
        images, profile, _ = _run(stream, tmp_path, workers, "grappa")
        assert profile["workers"]["calibrations"] == 4, profile["workers"]
        assert profile["workers"]["calibrations_shared"] == 12
        outputs[workers] = images
    assert outputs[1] == outputs[2] == outputs[4]


def test_arrays_larger_than_their_room_stay_with_the_worker_that_made_them(
    probe: str, tmp_path: Path
) -> None:
    """The kernel declared 4 KiB and derives 64 KiB: nothing is shared, each worker computes
    each calibration it meets once, and the images are the same."""
    stream = phantom_bytes(_spec("separate"))
    reference, _, _ = _run(stream, tmp_path, 1, probe)
    images, profile, log = _run(
        stream, tmp_path, 3, probe, PROBE_ROOM="4096", PROBE_PADDING=str(64 << 10)
    )
    assert set(Counter(log).values()) == {1}, log  # once per worker and calibration
    assert {s for s, _, _, _, _ in log} == {0, 1, 2, 3}
    assert 4 <= len(log) <= 4 * 3
    assert profile["workers"]["calibrations"] == len(log)
    assert profile["workers"]["calibrations_unshared"] == len(log)
    assert images == reference


def test_arrays_of_another_tag_are_computed_apart(probe: str, tmp_path: Path) -> None:
    """Units of one calibration that ask for two different tags: the shared entry holds
    one, the other is computed per worker; every unit gets arrays of its own tag."""
    stream = phantom_bytes(_spec("separate"))
    reference, _, _ = _run(stream, tmp_path, 1, probe)
    images, _, log = _run(stream, tmp_path, 2, probe, PROBE_TAG="parity")
    assert {(s, tag) for s, _, _, _, tag in log} == {(s, t) for s in range(4) for t in (0, 1)}
    assert set(Counter(log).values()) == {1}  # once per worker, calibration and tag
    assert images == reference


def test_the_shared_room_counts_in_the_memory_limit_and_gives_way_to_kspace(
    tmp_path: Path,
) -> None:
    """The profile's shared total is the sum of its blocks, derived entries included; one
    byte less than that total drops the entries, not a k-space slot, and the images stay."""
    stream = phantom_bytes(_spec("separate", repetitions=2))
    images, profile, _ = _run(stream, tmp_path, 2, "grappa")
    memory = profile["memory"]
    assert memory["derived_entries"] == 4 + 2 + 1 and memory["derived_entry_bytes"] > 0
    blocks = (
        memory["kspace_slots"] * memory["kspace_slot_bytes"]
        + memory["image_slots"] * memory["image_slot_bytes"]
        + memory["calibration_buffers"] * memory["calibration_buffer_bytes"]
        + memory["derived_entries"] * memory["derived_entry_bytes"]
        + memory["noise_bytes"]
    )
    assert memory["shared_bytes"] == blocks
    limit = str(memory["shared_bytes"] - 1)
    tight, tight_profile, _ = _run(stream, tmp_path, 2, "grappa", "--memory-limit", limit)
    assert tight_profile["memory"]["derived_entries"] == 0
    assert tight_profile["memory"]["kspace_slots"] == memory["kspace_slots"]
    assert tight_profile["workers"]["calibrations_unshared"] >= 4
    assert tight == images


def test_a_kernel_that_derives_nothing_gets_no_room(tmp_path: Path) -> None:
    stream = phantom_bytes(_spec("separate", repetitions=1))
    _, profile, _ = _run(stream, tmp_path, 2, "cartesian")
    assert profile["memory"]["derived_entries"] == 0
    assert profile["workers"]["calibrations"] == 0

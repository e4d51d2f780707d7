"""``mrd_stream_recon --trace``: valid trace-event JSON of every process, and
``parallel-recon profile`` drawing it as a PNG."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import run_cli, script
from PIL import Image

from parallel_recon.engine.cores import available_cores, default_workers
from parallel_recon.inspect.timeline import COLOURS, throughput

SLICES, REPETITIONS = 3, 2
UNITS = SLICES * REPETITIONS


@pytest.fixture(scope="module")
def raw() -> bytes:
    """Interleaved slices (several units open at once) and repetitions."""
    args = ("-m", "64", "-c", "4", "-s", str(SLICES), "-r", str(REPETITIONS), "-o", "-")
    return run_cli("mrd_phantom", *args).stdout


@pytest.fixture(scope="module")
def traced(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, bytes, Path]:
    folder = tmp_path_factory.mktemp("trace")
    path = folder / "run.json"
    proc = run_cli(
        "mrd_stream_recon", "--workers", "2", "--recon", "cartesian", "--trace", str(path),
        input=raw,
    )  # fmt: skip
    return json.loads(path.read_text()), proc.stdout, path


def _processes(document: dict) -> dict[str, int]:
    return {
        e["args"]["name"]: e["pid"]
        for e in document["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    }


def test_every_event_has_the_required_fields(traced: tuple[dict, bytes, Path]) -> None:
    document, _, _ = traced
    events = document["traceEvents"]
    assert events
    for event in events:
        assert {"ph", "ts", "pid", "tid"} <= set(event), event
        assert event["ph"] in {"X", "C", "M"}
        if event["ph"] == "X":
            assert event["dur"] >= 0 and isinstance(event["name"], str) and event["cat"]
    names = _processes(document)
    assert set(names) == {"supervisor", "reader", "worker 1", "worker 2", "writer"}
    assert len(set(names.values())) == 5  # one track (pid) per process


def test_spans_nest_on_every_track(traced: tuple[dict, bytes, Path]) -> None:
    document, _, _ = traced
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for event in document["traceEvents"]:
        if event["ph"] == "X":
            start = event["ts"]
            tracks.setdefault((event["pid"], event["tid"]), []).append(
                (start, start + event["dur"])
            )
    for spans in tracks.values():
        stack: list[float] = []
        for start, stop in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            if stack:  # inside its parent, entirely
                assert stop <= stack[-1], (start, stop, stack[-1])
            stack.append(stop)


def test_each_unit_once_in_reader_worker_and_writer(traced: tuple[dict, bytes, Path]) -> None:
    document, _, _ = traced
    names = _processes(document)
    role = {pid: name for name, pid in names.items()}
    seen: dict[str, Counter[int]] = {"reader": Counter(), "worker": Counter(), "writer": Counter()}
    for event in document["traceEvents"]:
        if event["ph"] == "X" and "unit" in event.get("args", {}):
            seen[role[event["pid"]].split()[0]][event["args"]["unit"]] += 1
    for where, counts in seen.items():
        assert counts == Counter(range(UNITS)), where
    kernels = [e for e in document["traceEvents"] if e.get("cat") == "kernel"]
    assert len(kernels) == UNITS
    waits = {role[e["pid"]] for e in document["traceEvents"] if e.get("cat") == "wait"}
    assert {"writer", "worker 1", "worker 2", "supervisor"} <= waits


def _message_ends(stream: bytes) -> list[tuple[object, int]]:
    """Each message of ``stream`` as ismrmrd-python reads it, with the byte offset where it
    ends (the deserializer reads exactly one message at a time)."""
    source = io.BytesIO(stream)
    with ismrmrd.ProtocolDeserializer(source) as reader:
        return [(item, source.tell()) for item in reader.deserialize()]


def test_byte_counters_step_at_each_unit(raw: bytes, traced: tuple[dict, bytes, Path]) -> None:
    """The input counter stands where the reader starts, then at the end of each unit's
    closing acquisition (LAST_IN_SLICE); the output counter at 0, then at the end of each
    unit's image on stdout.  Byte offsets are found here with ismrmrd-python."""
    document, images, _ = traced
    series: dict[str, list[tuple[float, float]]] = {}
    for event in document["traceEvents"]:
        if event["ph"] == "C":
            series.setdefault(event["name"], []).append((event["ts"], event["args"]["MB"]))
    found = {name: [round(mb * 1e6) for _, mb in sorted(values)] for name, values in series.items()}
    read = _message_ends(raw)
    header_end = next(end for item, end in read if isinstance(item, ismrmrd.xsd.ismrmrdHeader))
    closing = [
        end
        for item, end in read
        if isinstance(item, ismrmrd.Acquisition) and item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
    ]
    assert len(closing) == UNITS
    # the reader starts after the HEADER and the first acquisition's id and 340-byte header,
    # which the supervisor reads first to size the k-space slots
    assert found["input"] == [header_end + 2 + 340, *closing]
    written = [end for item, end in _message_ends(images) if isinstance(item, ismrmrd.Image)]
    assert len(written) == UNITS
    assert found["output"] == [0, *written]
    assert document["otherData"]["input_bytes"] == len(raw)


def test_tracing_does_not_change_the_images(raw: bytes, traced: tuple[dict, bytes, Path]) -> None:
    _, images, _ = traced
    plain = run_cli("mrd_stream_recon", "--workers", "1", "--recon", "cartesian", input=raw)
    assert plain.stdout == images


def test_profile_draws_a_png(traced: tuple[dict, bytes, Path], tmp_path: Path) -> None:
    _, _, path = traced
    png = tmp_path / "timeline.png"
    proc = run_cli("parallel-recon", "profile", str(path), "-o", str(png), "--width", "900")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"5 processes" in proc.stderr
    with Image.open(png) as picture:
        assert picture.width == 900
        colours = {tuple(c) for c in np.asarray(picture.convert("RGB")).reshape(-1, 3)}
    for category in ("read", "kernel", "wait", "write", "startup"):
        assert COLOURS[category] in colours, category


@pytest.mark.parametrize(
    "content, message",
    [(b"{not json", "invalid JSON"), (b'{"traceEvents": [{"ph": "X"}]}', "without ts, pid")],
)
def test_profile_refuses_what_is_not_a_trace(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    proc = run_cli(
        "parallel-recon", "profile", str(path), "-o", str(tmp_path / "x.png"), check=False
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_throughput_spreads_bytes_between_samples() -> None:
    # 100 MB read evenly over 1 s, sampled at its ends only: 100 MB/s in every bin
    assert throughput([(0.0, 0.0), (1.0, 100.0)], 0.0, 1.0, 4) == pytest.approx([100.0] * 4)
    rates = throughput([(0.0, 0.0), (0.5, 50.0), (0.5, 50.0), (1.0, 50.0)], 0.0, 1.0, 2)
    assert rates == pytest.approx([100.0, 0.0])


def test_default_workers_follow_the_cores_this_process_may_use() -> None:
    assert available_cores() == len(os.sched_getaffinity(0))
    assert [default_workers(c) for c in (1, 2, 3, 4, 16)] == [1, 2, 2, 3, 15]


def test_default_workers_under_a_cpu_affinity(raw: bytes, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    args = ["--recon", "cartesian", "--profile-json", str(profile)]
    subprocess.run(
        [script("mrd_stream_recon"), *args],
        input=raw,
        capture_output=True,
        check=True,
        timeout=120,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),  # as under taskset -c 0
    )
    assert json.loads(profile.read_text())["workers"]["count"] == 1


def test_the_start_up_stands_before_the_first_image_on_one_clock(
    raw: bytes, tmp_path: Path
) -> None:
    """The supervisor's track starts with the interpreter's start-up, from the moment the
    process was created: within a few clock ticks of when this test started it (both on
    CLOCK_MONOTONIC, which every process shares), and it ends where the engine starts; the
    first image is emitted after it."""
    path = tmp_path / "run.json"
    launched = time.monotonic()
    run_cli("mrd_stream_recon", "--workers", "1", "--trace", str(path), input=raw)
    document = json.loads(path.read_text())
    origin = document["otherData"]["origin_monotonic_s"]
    (startup,) = [e for e in document["traceEvents"] if e["name"].startswith("interpreter")]
    began = origin + startup["ts"] / 1e6
    assert startup["ts"] + startup["dur"] in (-1, 0, 1)  # it ends where the engine starts
    assert launched - 0.03 <= began <= launched + startup["dur"] / 1e6, (launched, began)
    emits = [e for e in document["traceEvents"] if e["name"].startswith("emit unit")]
    assert min(e["ts"] for e in emits) > 0

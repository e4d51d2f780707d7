"""What ``parallel-recon batch`` takes as its inputs, and where it puts their outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from parallel_recon.batch.discover import discover
from parallel_recon.batch.model import BatchSettings, FileJob
from parallel_recon.batch.outputs import (
    is_up_to_date,
    make_stamp,
    partial_path,
    sweep_partials,
)
from parallel_recon.files.inputs import classify
from parallel_recon.phantom import PhantomSpec, write_hdf5, write_stream

TINY = PhantomSpec(matrix=8, coils=1)


def _stream(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        write_stream(TINY, handle)
    return path


def _hdf5(path: Path, *groups: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for group in groups or ("dataset",):
        write_hdf5(TINY, path, group)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A study folder with raw data among other files."""
    root = tmp_path / "study"
    _hdf5(root / "a" / "one.h5")
    _stream(root / "a" / "deep" / "two.dat")  # a stream, whatever its name
    _hdf5(root / "b" / "multi.mrd", "dataset", "second scan")
    (root / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text("notes")
    with h5py.File(root / "b" / "images_only.h5", "w") as handle:  # an earlier output
        series = handle.create_group("dataset").create_group("image_1")
        series["header"] = np.zeros(1)
        series["data"] = np.zeros((1, 1, 1, 2, 2))
    with h5py.File(root / "b" / "weights.h5", "w") as handle:  # HDF5, but no MRD at all
        handle["w"] = np.ones(3)
    (root / "a" / ".one.h5~otherhost~1.partial").write_bytes(b"half")
    _hdf5(root / "a" / ".one.h5.0a1b2c3d.partial")  # another command's output being written
    return root


def test_content_not_names_decides(tree: Path) -> None:
    assert classify(str(tree / "a" / "one.h5")) == "hdf5"
    assert classify(str(tree / "a" / "deep" / "two.dat")) == "stream"
    assert classify(str(tree / "README.txt")) is None


def test_folders_are_searched_and_mirrored(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    found = discover([str(tree)], str(out))
    jobs = {(job.name, job.group): job for job in found.jobs}
    assert set(jobs) == {
        ("a/one.h5", "dataset"),
        ("a/deep/two.dat", None),
        ("b/multi.mrd", "dataset"),
        ("b/multi.mrd", "second scan"),
    }
    assert jobs[("a/one.h5", "dataset")].output == str(out / "a" / "one.h5")
    assert jobs[("a/deep/two.dat", None)].output == str(out / "a" / "deep" / "two.h5")
    assert jobs[("b/multi.mrd", "second scan")].output == str(out / "b" / "multi.second_scan.h5")
    assert jobs[("b/multi.mrd", "dataset")].output == str(out / "b" / "multi.dataset.h5")
    assert found.ignored == 2  # README.txt and the image-only file; partial files unseen
    assert [(r.input, r.status) for r in found.failures] == [("b/weights.h5", "failed")]
    assert "without MRD raw data" in found.failures[0].error


def test_globs_lists_and_missing_inputs(tree: Path, tmp_path: Path) -> None:
    listing = tree / "list.txt"
    listing.write_text("# scans\na/one.h5\n\nb/*.mrd\nnowhere.h5\n")
    found = discover(
        [f"@{listing}", str(tree / "a" / "**" / "*.dat"), str(tree / "none*.h5")],
        str(tmp_path / "out"),
    )
    assert sorted(job.label for job in found.jobs) == [
        "a/deep/two.dat",
        "a/one.h5:dataset",
        "b/multi.mrd:dataset",
        "b/multi.mrd:second scan",
    ]
    errors = sorted(result.error for result in found.failures)
    assert "no such file or directory" in errors[0] and "nowhere.h5" in errors[0]
    assert errors[1].startswith("no file matches")


def test_outputs_that_would_collide_or_overwrite_inputs_fail(tmp_path: Path) -> None:
    a, b = _hdf5(tmp_path / "x" / "scan.h5"), _stream(tmp_path / "x" / "scan.bin")
    found = discover([str(a), str(b)], str(tmp_path / "out"))
    assert found.jobs == [] and len(found.failures) == 2
    assert all("would write the same output" in r.error for r in found.failures)
    found = discover([str(a)], str(tmp_path / "x"))
    assert found.jobs == [] and "replace an input" in found.failures[0].error


def test_output_folder_inside_the_input_folder_is_not_searched(tmp_path: Path) -> None:
    _hdf5(tmp_path / "raw" / "scan.h5")
    _hdf5(tmp_path / "raw" / "out" / "old_raw.h5")  # would be found if out/ were searched
    found = discover([str(tmp_path / "raw")], str(tmp_path / "raw" / "out"))
    assert [job.name for job in found.jobs] == ["scan.h5"]


def test_stamp_and_partials(tmp_path: Path) -> None:
    raw = _stream(tmp_path / "scan.bin")
    job = FileJob(str(raw), "stream", None, str(tmp_path / "out.h5"), "scan.bin", 1)
    settings = BatchSettings()
    assert not is_up_to_date(job, settings)
    stamp = make_stamp(job, settings, raw.stat())
    with h5py.File(job.output, "w") as handle:
        handle.attrs["parallel_recon_batch"] = json.dumps({**stamp, "images": 1})
    assert is_up_to_date(job, settings)
    assert not is_up_to_date(job, BatchSettings(output="phase"))
    assert not is_up_to_date(job, BatchSettings(png=True))  # its montage is missing
    mine = partial_path(job.output)
    mine.write_bytes(b"")
    dead = mine.with_name(mine.name.replace(f"~{os.getpid()}.", "~999999999."))
    dead.write_bytes(b"")
    other_host = tmp_path / ".out.h5~elsewhere~1.partial"
    other_host.write_bytes(b"")
    assert sweep_partials([tmp_path]) == 1
    assert mine.exists() and not dead.exists() and other_host.exists()


def test_runner_answers_one_line_per_request_and_exits_when_idle(tmp_path: Path) -> None:
    """The runner protocol that local runners and Dask's runner programs speak."""
    import dataclasses
    import io
    import threading

    from parallel_recon.batch.runner import serve

    raw = _stream(tmp_path / "scan.bin")
    job = FileJob(str(raw), "stream", None, str(tmp_path / "out" / "scan.h5"), "scan.bin", 1)
    bad = FileJob(str(tmp_path / "gone.bin"), "stream", None, str(tmp_path / "gone.h5"), "g", 1)
    settings = dataclasses.asdict(BatchSettings(workers=1))
    lines = [json.dumps({"job": dataclasses.asdict(j), "settings": settings}) for j in (job, bad)]
    replies = io.BytesIO()
    serve(io.BytesIO("\n".join(lines).encode() + b"\n"), replies)
    results = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert results[0]["images"] == 1 and Path(job.output).is_file()
    assert results[1]["error"] == f"{bad.input}: No such file or directory"
    read_end, write_end = os.pipe()  # nobody ever writes: the runner gives up after the wait
    with os.fdopen(read_end, "rb") as requests:
        silence = io.BytesIO()
        idle = threading.Thread(
            target=serve, args=(requests, silence), kwargs={"idle_exit_s": 0.2}, daemon=True
        )
        idle.start()
        idle.join(timeout=60)  # a bound for a hang, not a speed limit
        assert not idle.is_alive(), "the idle runner never exited"
        assert silence.getvalue() == b""
    os.close(write_end)

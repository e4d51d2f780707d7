"""A small study for the batch tests: 20 phantom scans of different shapes and 2 bad inputs,
and the reference images of each scan made by the single-file command-line pipeline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import psutil
from conftest import run_cli

from parallel_recon.cli import hdf5_to_stream, recon, stream_to_hdf5
from parallel_recon.phantom import PhantomSpec, write_hdf5, write_stream

BATCH = ("parallel-recon", "batch")
GOOD = 20
BROKEN = ("broken/truncated.bin", "broken/not_mrd.h5")


def _spec(i: int) -> PhantomSpec:
    """Scan ``i``: matrix, coils, slices, contrasts, repetitions and 3D vary with ``i``."""
    return PhantomSpec(
        matrix=(16, 24, 32, 20)[i % 4],
        coils=2 + i % 3,
        slices=1 + i % 3,
        contrasts=1 + (i // 5) % 2,
        repetitions=1 + (i // 7) % 2,
        partitions=4 if i % 9 == 4 else 1,
        noise_calibration=i % 4 == 1,
        seed=i,
    )


@dataclass
class Study:
    """Where the inputs are and what each good one must reconstruct to."""

    root: Path
    """Folder holding ``scan_XX.h5``, ``streams/scan_XX.dat`` and ``broken/``."""
    good: list[str]
    """Relative paths of the 20 good inputs."""
    reference: Path
    """Folder with the single-file pipeline's output for each good input (same names, .h5)."""

    def output(self, outdir: Path, name: str) -> Path:
        return outdir / Path(name).with_suffix(".h5")


def make_study(folder: Path) -> Study:
    """16 HDF5 files and 4 stream files (named ``.dat``: found by content), a truncated
    stream and an HDF5 file that holds no MRD data."""
    root = folder / "study"
    (root / "streams").mkdir(parents=True)
    (root / "broken").mkdir()
    good = []
    for i in range(GOOD):
        if i % 5 == 3:
            name = f"streams/scan_{i:02d}.dat"
            with open(root / name, "wb") as handle:
                write_stream(_spec(i), handle)
        else:
            name = f"scan_{i:02d}.h5"
            write_hdf5(_spec(i), root / name)
        good.append(name)
    data = (root / "streams/scan_03.dat").read_bytes()
    (root / BROKEN[0]).write_bytes(data[: len(data) * 2 // 3])
    with h5py.File(root / BROKEN[1], "w") as handle:
        handle["measurements"] = np.arange(10.0)
    reference = folder / "reference"
    for name in good:
        single_file_pipeline(root / name, reference / Path(name).with_suffix(".h5"), folder)
    return Study(root, good, reference)


def single_file_pipeline(raw: Path, images: Path, scratch: Path) -> None:
    """``mrdhdf5_to_stream | mrd_stream_recon | stream_to_mrdhdf5`` for one file, through the
    commands' own ``main`` functions (the same code as the console scripts)."""
    images.parent.mkdir(parents=True, exist_ok=True)
    stream = raw
    if h5py.is_hdf5(raw):
        stream = scratch / "raw.bin"
        assert hdf5_to_stream.main(["-i", str(raw), "-o", str(stream)]) == 0
    image_stream = scratch / "images.bin"
    assert recon.main(["-i", str(stream), "-o", str(image_stream), "--workers", "1"]) == 0
    assert stream_to_hdf5.main(["-i", str(image_stream), "-o", str(images)]) == 0


def ismrmrd_images(path: Path) -> list[tuple[bytes, str, np.ndarray]]:
    """Every image of ``path``'s ``dataset`` group as read by ismrmrd-python: header bytes,
    attribute text and pixels, series by series."""
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        found = []
        for series in sorted(dataset.list()):
            if not series.startswith("image_"):
                continue
            for index in range(dataset.number_of_images(series)):
                image = dataset.read_image(series, index)
                found.append((bytes(image.getHead()), image.attribute_string, image.data.copy()))
        return found
    finally:
        dataset.close()


def assert_same_images(actual: Path, expected: Path) -> None:
    """The two files hold the same images (headers, attributes and pixels, bit for bit)."""
    mine, theirs = ismrmrd_images(actual), ismrmrd_images(expected)
    assert len(mine) == len(theirs) > 0, (actual, len(mine), len(theirs))
    for (head_a, meta_a, data_a), (head_b, meta_b, data_b) in zip(mine, theirs, strict=True):
        assert head_a == head_b
        assert meta_a == meta_b
        assert data_a.dtype == data_b.dtype and np.array_equal(data_a, data_b)


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.partial")]


def finished_outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.h5") if not p.name.startswith("."))


def wait_for(condition, timeout: float = 60.0, step: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(step)


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class TreeWatch:
    """Every process seen so far below some roots, with its command line as last seen
    while it ran (a process that has ended can no longer say what it was).

    The command line is read again at every look: a child seen between its fork and its
    exec still shows its parent's command line, and keeping that would count the processes
    it forks later as started by hand."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[psutil.Process, str, int]] = {}

    def look(self, *roots: int) -> None:
        for root in roots:
            for process in process_tree(root):
                try:
                    command, parent = " ".join(process.cmdline()), process.ppid()
                except psutil.Error:
                    if process.pid in self.seen:
                        continue  # ended since: keep what it said while it ran
                    command, parent = "", 0
                known = self.seen.get(process.pid)
                if known is not None and not command:  # a zombie says nothing any more
                    continue
                self.seen[process.pid] = (known[0] if known else process, command, parent)

    @property
    def processes(self) -> list[psutil.Process]:
        return [process for process, _, _ in self.seen.values()]

    def started(self, text: str) -> list[psutil.Process]:
        """The processes seen that were started with ``text`` in their command line (not
        the children they forked, which share it)."""

        def command(pid: int) -> str:
            return self.seen[pid][1] if pid in self.seen else ""

        return [
            process
            for process, line, parent in self.seen.values()
            if text in line and text not in command(parent)
        ]


def watch_until_done(proc: subprocess.Popen[bytes], watch: TreeWatch, *roots: int) -> str:
    """Wait for ``proc`` while recording its process tree (and ``roots``'); its stderr."""
    while proc.poll() is None:
        watch.look(proc.pid, *roots)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return stderr


def assert_all_gone(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    """Every process of the list has ended (zombies of the test's own children count as
    ended once reaped by their parent, which the test does)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, [(p.pid, p.name()) for p in alive]


def stop_group(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a child started with ``start_new_session=True`` and its group, as an operator
    stops a Dask process (it closes cleanly, and Python's resource tracker, which ignores
    SIGTERM, unlinks the semaphores it registered); SIGKILL what is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child started with ``start_new_session=True`` and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait(timeout=30)


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        yield from csv.DictReader(handle)


def start_batch(*args: str) -> subprocess.Popen[bytes]:
    """``parallel-recon batch ARGS`` in the background, stderr captured."""
    from conftest import interruptible

    return subprocess.Popen(
        [*_batch_command(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=interruptible,
    )


def _batch_command() -> list[str]:
    from conftest import script

    return [script(BATCH[0]), *BATCH[1:]]


def batch(*args: str, check_exit: int | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = run_cli(*BATCH, *args, check=False, timeout=180)
    if check_exit is not None:
        stderr = proc.stderr.decode(errors="replace")
        assert proc.returncode == check_exit, stderr
    return proc


def assert_study_outputs(study: Study, outdir: Path) -> None:
    """The 20 outputs, each equal to the single-file pipeline's, and nothing else."""
    expected = sorted(study.output(outdir, name) for name in study.good)
    assert finished_outputs(outdir) == expected
    for name in study.good:
        assert_same_images(study.output(outdir, name), study.output(study.reference, name))
    assert partial_files(outdir) == []

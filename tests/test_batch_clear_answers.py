"""``parallel-recon batch`` as a new user meets it: crashes leave nothing behind for good,
every line names its file, a changed ``--png``/``--to`` only re-exports, and the report and
the exit status say what happened.

Image counts are read with ismrmrd-python; a counting kernel proves what was (not)
reconstructed again; waits are on files and processes, never on the clock.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
from pathlib import Path

import ismrmrd
import pytest
from batch_helpers import TreeWatch, assert_all_gone, wait_for
from conftest import interruptible, run_cli, script

from parallel_recon.engine.ring import SEGMENT_PREFIX
from parallel_recon.phantom import PhantomSpec, write_hdf5, write_stream

BATCH = ("parallel-recon", "batch")
COUNTING_KERNEL = """
from parallel_recon.workers.cartesian import reconstruct as cartesian

def reconstruct(kspace, context):
    with open({counter!r}, "a") as handle:
        handle.write("unit\\n")
    return cartesian(kspace, context)
"""


def _batch(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli(*BATCH, *args, check=False, timeout=300)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _images(path: Path) -> int:
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        return dataset.number_of_images("image_1")
    finally:
        dataset.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name)


# ----------------------------------------------------------- 5. kill -9 in an export
def test_kill_9_during_a_dicom_export_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    study, out = tmp_path / "study", tmp_path / "out"
    study.mkdir()
    write_hdf5(PhantomSpec(matrix=32, coils=2, slices=16, repetitions=8), study / "s2.h5")
    proc = subprocess.Popen(
        [script(BATCH[0]), BATCH[1], str(study), "-o", str(out), "--png", "--to", "dicom"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def exporting() -> bool:
            return any("dicom" in name for name in _leftovers(out)) or proc.poll() is not None

        wait_for(exporting, timeout=120, step=0.001)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    left = _leftovers(out)
    assert any(name.startswith(".s2_dicom~") and name.endswith(".partial") for name in left), left
    again = _batch(str(study), "-o", str(out), "--png", "--to", "dicom")
    assert again.returncode == 0, again.stderr.decode()
    assert _leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["s2.h5", "s2.png", "s2_dicom"]
    assert len(list((out / "s2_dicom").rglob("*.dcm"))) == 16 * 8


def test_a_partial_export_folder_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    """Only writers that are gone lose their partial folders (another batch may be busy)."""
    study, out = tmp_path / "study", tmp_path / "out"
    study.mkdir()
    write_hdf5(PhantomSpec(matrix=16, coils=2), study / "a.h5")
    out.mkdir()
    busy = out / f".a_dicom~{os.uname().nodename.replace('~', '-')}~{os.getpid()}.partial"
    busy.mkdir()
    (busy / "x.dcm").write_bytes(b"")
    assert _batch(str(study), "-o", str(out), "--to", "dicom").returncode == 0
    assert (busy / "x.dcm").exists()


# ----------------------------------------------------------- 11. warnings name files
def test_every_warning_names_its_input_file(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    write_hdf5(
        PhantomSpec(matrix=16, coils=2, acceleration=2, calibration_width=8), study / "acc.h5"
    )
    with open(study / "trailing.bin", "wb") as handle:
        write_stream(PhantomSpec(matrix=16, coils=2), handle)
        handle.write(b"xx")  # data after CLOSE: a warning
    proc = _batch(str(study), "-o", str(tmp_path / "out"), "--recon", "cartesian")
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.decode().splitlines() if "warning:" in line]
    assert len(warnings) == 2, warnings
    assert any(w.startswith("parallel-recon batch: acc.h5") and "zero-fills" in w for w in warnings)
    assert any(
        w.startswith("parallel-recon batch: trailing.bin: warning: ignored data after the CLOSE")
        for w in warnings
    )


# ----------------------------------------------------------- 11. nothing to do is an error
def test_a_folder_without_raw_data_is_an_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no scans here\n")
    proc = _batch(str(notes), "-o", str(tmp_path / "out"))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "0 ok, 1 failed" in err
    assert "no MRD raw data in" in err and "notes" in err


def test_an_empty_folder_is_an_error_too(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _batch(str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "no MRD raw data in" in proc.stderr.decode() and "holds no files" in proc.stderr.decode()


def test_an_existing_file_as_outdir_is_a_usage_error_up_front(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    write_hdf5(PhantomSpec(matrix=16, coils=2), study / "a.h5")
    target = tmp_path / "recon"
    target.write_text("a file")
    proc = _batch(str(study), "-o", str(target))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert f"-o {str(target)!r} is a file" in err
    assert target.read_text() == "a file"


# ----------------------------------------------------------- 11. re-export only
@pytest.fixture
def counted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A study of two scans, a kernel that counts the units it reconstructs, its counter."""
    study = tmp_path / "study"
    study.mkdir()
    write_hdf5(PhantomSpec(matrix=16, coils=2, slices=2), study / "a.h5")
    with open(study / "b.bin", "wb") as handle:
        write_stream(PhantomSpec(matrix=16, coils=2, slices=3), handle)
    counter = tmp_path / "units.txt"
    kernel = tmp_path / "counting.py"
    kernel.write_text(COUNTING_KERNEL.format(counter=str(counter)))
    return study, kernel, counter


def _units(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_adding_png_and_exports_does_not_reconstruct_again(
    counted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    study, kernel, counter = counted
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    common = ("--recon", str(kernel))
    assert _batch(str(study), "-o", str(out), *common).returncode == 0
    assert _units(counter) == 5
    report = tmp_path / "report.csv"
    proc = _batch(str(study), "-o", str(out), *common, "--png", "--to", "nifti", "--report",
                  str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert _units(counter) == 5  # nothing reconstructed again
    assert [row["status"] for row in _rows(report)] == ["ok", "ok"]
    assert [row["images"] for row in _rows(report)] == ["2", "3"]
    assert {p.name for p in out.iterdir()} >= {"a.png", "b.png", "a.nii.gz", "b.nii.gz"}
    assert _images(out / "a.h5") == 2 and _images(out / "b.h5") == 3
    # the same PNG as a batch that reconstructs with --png from the start
    assert _batch(str(study), "-o", str(fresh), *common, "--png").returncode == 0
    assert (out / "a.png").read_bytes() == (fresh / "a.png").read_bytes()
    # and now it is up to date
    assert _units(counter) == 5 + 5  # that one did reconstruct
    third = _batch(str(study), "-o", str(out), *common, "--png", "--to", "nifti")
    assert "2 up to date" in third.stderr.decode() and _units(counter) == 5 + 5


def test_dropping_a_format_removes_its_exports_and_says_so(
    counted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    study, kernel, counter = counted
    out = tmp_path / "out"
    common = ("--recon", str(kernel))
    first = _batch(str(study), "-o", str(out), *common, "--png", "--to", "dicom", "--to", "npy")
    assert first.returncode == 0 and (out / "a_dicom").is_dir() and (out / "b.npz").is_file()
    proc = _batch(str(study), "-o", str(out), *common, "--to", "npy")
    assert proc.returncode == 0
    assert _units(counter) == 5
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "a.npz", "b.h5", "b.npz"]
    removed = [line for line in proc.stderr.decode().splitlines() if "removed" in line]
    assert sorted(removed) == sorted(
        f"parallel-recon batch: {label}: removed {name}, made by an earlier run for an export "
        "or montage no longer asked for"
        for label, name in (
            ("a.h5:dataset", "a_dicom"), ("a.h5:dataset", "a.png"),
            ("b.bin", "b_dicom"), ("b.bin", "b.png"),
        )
    )  # fmt: skip


def test_an_export_the_batch_did_not_make_is_left_alone(
    counted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    study, kernel, _ = counted
    out = tmp_path / "out"
    assert _batch(str(study), "-o", str(out), "--recon", str(kernel)).returncode == 0
    mine = out / "a.nii.gz"
    mine.write_bytes(b"made by hand")
    assert _batch(str(study), "-o", str(out), "--recon", str(kernel)).returncode == 0
    assert mine.read_bytes() == b"made by hand"


# ----------------------------------------------------------- 11. the report's numbers
def _group_stream_bytes(path: Path, group: str, scratch: Path) -> int:
    """What the group holds as an MRD stream, counted with ismrmrd-python (on a copy:
    ismrmrd.Dataset opens files for writing, which would make the input look changed)."""
    copy = scratch / f"copy_{group}.h5"
    shutil.copyfile(path, copy)
    dataset = ismrmrd.Dataset(str(copy), group, create_if_needed=False)
    try:
        total = 2 + 6 + len(dataset.read_xml_header())
        for i in range(dataset.number_of_acquisitions()):
            acq = dataset.read_acquisition(i)
            samples, channels = acq.number_of_samples, acq.active_channels
            total += 2 + 340 + samples * (8 * channels + 4 * acq.trajectory_dimensions)
    finally:
        dataset.close()
    return total


def test_report_counts_each_group_and_skipped_rows_keep_their_images(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    both = study / "two.h5"
    write_hdf5(PhantomSpec(matrix=16, coils=2, slices=1), both, group="small")
    write_hdf5(PhantomSpec(matrix=32, coils=4, slices=3), both, group="large")
    out, report = tmp_path / "out", tmp_path / "report.csv"
    assert _batch(str(study), "-o", str(out), "--report", str(report)).returncode == 0
    rows = {row["group"]: row for row in _rows(report)}
    for group, images in (("small", 1), ("large", 3)):
        assert int(rows[group]["input_bytes"]) == _group_stream_bytes(both, group, tmp_path)
        assert int(rows[group]["images"]) == images
    assert int(rows["small"]["input_bytes"]) + int(rows["large"]["input_bytes"]) < (
        2 * both.stat().st_size
    )
    again = tmp_path / "again.csv"
    assert _batch(str(study), "-o", str(out), "--report", str(again)).returncode == 0
    skipped = {row["group"]: row for row in _rows(again)}
    assert {row["status"] for row in skipped.values()} == {"skipped"}
    assert skipped["small"]["images"] == "1" and skipped["large"]["images"] == "3"


# ----------------------------------------------------------- 12. Ctrl-C: one line
def test_ctrl_c_prints_one_line(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    for i in range(3):
        write_hdf5(PhantomSpec(matrix=16, coils=2, seed=i), study / f"s{i}.h5")
    marker = tmp_path / "started"
    kernel = tmp_path / "stuck.py"
    kernel.write_text(
        "import pathlib, time\n"
        "def reconstruct(kspace, context):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [script(BATCH[0]), BATCH[1], str(study), "-o", str(tmp_path / "out"), "-j", "2",
         "--recon", str(kernel)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: the terminal's Ctrl-C goes to all of it
        preexec_fn=interruptible,
    )  # fmt: skip
    tree = TreeWatch()
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, timeout=120, step=0.01)
        tree.look(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.decode()
    assert proc.returncode == 130, text
    assert text.count("\n") == 1, text
    assert text.startswith("parallel-recon batch: interrupted (Ctrl-C): 0 ok, 0 failed"), text
    assert "3 cancelled" in text
    assert len(tree.processes) > 3  # the batch, its runners and their engines were seen
    assert_all_gone(tree.processes)
    prefixes = tuple(f"{SEGMENT_PREFIX}{p.pid}_" for p in tree.processes)
    assert [n for n in os.listdir("/dev/shm") if n.startswith(prefixes)] == []

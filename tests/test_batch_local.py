"""``parallel-recon batch`` on this machine: results, re-runs, crashes and interruptions.

One study (20 phantom scans of different shapes, 4 of them stream files named ``.dat``, plus
a truncated stream and an HDF5 file without MRD data) is reconstructed once by the
single-file command-line pipeline; every batch output must hold exactly those images.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from batch_helpers import (
    BATCH,
    BROKEN,
    GOOD,
    Study,
    TreeWatch,
    assert_all_gone,
    assert_same_images,
    assert_study_outputs,
    batch,
    csv_rows,
    finished_outputs,
    ismrmrd_images,
    partial_files,
    start_batch,
    wait_for,
)
from conftest import run_cli, script

from parallel_recon.batch import BatchSettings, run_batch


@pytest.fixture(scope="module")
def study(batch_study: Study) -> Study:
    return batch_study


@dataclass
class FirstRun:
    out: Path
    report: Path
    stderr: str


@pytest.fixture(scope="module")
def first_run(study: Study, tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    folder = tmp_path_factory.mktemp("first")
    out, report = folder / "out", folder / "report.csv"
    proc = batch(str(study.root), "-o", str(out), "--report", str(report), check_exit=1)
    return FirstRun(out, report, proc.stderr.decode())


def test_batch_reconstructs_the_study_and_isolates_bad_inputs(
    study: Study, first_run: FirstRun
) -> None:
    assert_study_outputs(study, first_run.out)
    lines = first_run.stderr.splitlines()
    assert lines[0].startswith(f"parallel-recon batch: {GOOD} ok, 2 failed, 0 up to date")
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == sorted(BROKEN)
    assert "ETA" not in first_run.stderr  # no progress bar when stderr is not a terminal
    rows = list(csv_rows(first_run.report))
    assert len(rows) == GOOD + 2
    by_input = {row["input"]: row for row in rows}
    assert {by_input[name]["status"] for name in study.good} == {"ok"}
    assert "truncated" in by_input[BROKEN[0]]["error"]
    assert "without MRD raw data" in by_input[BROKEN[1]]["error"]
    for name in study.good:
        row = by_input[name]
        assert int(row["images"]) > 0 and int(row["input_bytes"]) > 0
        assert float(row["seconds"]) > 0 and row["kernel"] == "auto"  # the default --recon
        assert Path(row["output"]) == study.output(first_run.out, name)


def test_rerun_does_nothing_and_says_so(study: Study, first_run: FirstRun) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished_outputs(first_run.out)}
    good = [str(study.root / name) for name in study.good]
    proc = batch(*good, "-o", str(first_run.out), check_exit=0)
    assert "nothing to do" in proc.stderr.decode()
    # the whole folder again: the bad inputs are tried again (they may have been fixed)
    report = first_run.out.parent / "again.json"
    proc = batch(str(study.root), "-o", str(first_run.out), "--report", str(report))
    assert proc.returncode == 1
    assert f"0 ok, 2 failed, {GOOD} up to date" in proc.stderr.decode()
    statuses = [row["status"] for row in json.loads(report.read_text())]
    assert sorted(statuses) == ["failed"] * 2 + ["skipped"] * GOOD
    assert {p: p.stat().st_mtime_ns for p in finished_outputs(first_run.out)} == before


def test_changed_inputs_or_settings_make_outputs_stale(study: Study, tmp_path: Path) -> None:
    """Through the Python entry point of the command, ``run_batch``."""
    good = [str(shutil.copy(study.root / name, tmp_path)) for name in study.good[:3]]
    out = str(tmp_path / "out")

    def statuses(**settings: object) -> list[str]:
        outcome = run_batch(good, out, BatchSettings(**settings), jobs=2)  # type: ignore[arg-type]
        assert outcome.ok
        return [result.status for result in outcome.results]

    assert statuses() == ["ok"] * 3
    assert statuses() == ["skipped"] * 3
    changed = Path(good[0])
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert statuses() == ["ok", "skipped", "skipped"]
    assert statuses(output="phase") == ["ok"] * 3
    assert statuses(output="phase", force=True) == ["ok"] * 3
    kernel = tmp_path / "kernel.py"
    kernel.write_text("from parallel_recon.workers.cartesian import reconstruct\n")
    assert statuses(output="phase", recon=str(kernel)) == ["ok"] * 3
    assert statuses(output="phase", recon=str(kernel)) == ["skipped"] * 3
    kernel.write_text("from parallel_recon.workers.cartesian import reconstruct  # edited\n")
    assert statuses(output="phase", recon=str(kernel)) == ["ok"] * 3


def test_sigkill_half_way_leaves_nothing_that_looks_finished(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_batch(str(study.root), "-o", str(out), "-j", "2")
    tree = TreeWatch()

    def half_done() -> bool:
        tree.look(proc.pid)
        return len(finished_outputs(out)) >= GOOD // 2 or proc.poll() is not None

    wait_for(half_done, timeout=120, step=0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    proc.stderr.close()  # type: ignore[union-attr]
    assert len(tree.processes) > 3  # the batch, its runners and their engines were running
    assert_all_gone(tree.processes)
    for output in finished_outputs(out):  # whatever looks finished is finished and right
        reference = study.reference / output.relative_to(out)
        assert_same_images(output, reference)
    rerun = batch(str(study.root), "-o", str(out), check_exit=1)
    assert "Traceback" not in rerun.stderr.decode()
    assert_study_outputs(study, out)


def test_ctrl_c_stops_every_process_and_reports_what_was_not_run(
    study: Study, tmp_path: Path
) -> None:
    out, report = tmp_path / "out", tmp_path / "report.csv"
    kernel = tmp_path / "slow.py"  # the same images, slowly: the batch must still be running
    kernel.write_text(
        "import time\n"
        "from parallel_recon.workers.cartesian import reconstruct as cartesian\n"
        "def reconstruct(kspace, context):\n"
        "    time.sleep(0.1)\n"
        "    return cartesian(kspace, context)\n"
    )
    args = ("-o", str(out), "--report", str(report), "-j", "2", "--recon", str(kernel))
    proc = start_batch(str(study.root), *args)
    tree = TreeWatch()

    def started() -> bool:
        tree.look(proc.pid)
        return len(finished_outputs(out)) >= 3 or proc.poll() is not None

    wait_for(started, timeout=120, step=0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert_all_gone(tree.processes)
    assert partial_files(out) == []
    statuses = [row["status"] for row in csv_rows(report)]
    assert len(statuses) == GOOD + 2 and "cancelled" in statuses
    for output in finished_outputs(out):
        assert_same_images(output, study.reference / output.relative_to(out))


def test_fail_fast_stops_at_the_first_failure(study: Study, tmp_path: Path) -> None:
    inputs = [str(study.root / BROKEN[1]), *(str(study.root / n) for n in study.good[:3])]
    proc = batch(*inputs, "-o", str(tmp_path / "out"), "--fail-fast", check_exit=1)
    assert "1 failed" in proc.stderr.decode() and "3 cancelled" in proc.stderr.decode()
    assert finished_outputs(tmp_path / "out") == []


def test_a_failing_kernel_fails_its_file_only(study: Study, tmp_path: Path) -> None:
    kernel = tmp_path / "picky.py"
    kernel.write_text(
        "from parallel_recon.workers.cartesian import reconstruct as cartesian\n"
        "def reconstruct(kspace, context):\n"
        "    if kspace.shape[2] == 3:\n"
        "        raise ValueError('three coils are not supported')\n"
        "    return cartesian(kspace, context)\n"
    )
    inputs = [str(study.root / name) for name in study.good[:6]]
    out = tmp_path / "out"
    proc = batch(
        *inputs, "-o", str(out), "--recon", str(kernel), "--png", "--progress", check_exit=1
    )
    stderr = proc.stderr.decode()
    assert "6/6 files" in stderr and "ETA" in stderr  # --progress draws on a pipe too
    assert "three coils are not supported" in stderr and "Traceback" not in stderr
    failed = [n for n in study.good[:6] if f"{n}:" in stderr]
    assert failed == ["scan_01.h5", "scan_04.h5"]  # the 3-coil scans (2 + i % 3 == 3)
    done = finished_outputs(out)
    assert len(done) == 4
    assert all(p.with_suffix(".png").is_file() for p in done)


def test_usage_errors(study: Study, tmp_path: Path) -> None:
    proc = batch(str(study.root), check_exit=2)  # no -o
    assert proc.stderr.decode() == (
        "parallel-recon batch: error: the following arguments are required: -o/--outdir "
        "(see --help)\n"
    )
    assert proc.stdout == b""
    proc = batch(str(study.root), "-o", str(tmp_path), "--report", "r.txt", check_exit=1)
    assert "expected a file name ending in .csv or .json" in one_line(proc)
    proc = batch(str(study.root), "-o", str(tmp_path), "--recon", "nosuch", check_exit=2)
    assert "--recon 'nosuch'" in one_line(proc)


def one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The only line of a command's stderr, which names the command."""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parallel-recon batch: error: "), lines
    return lines[0]


def test_progress_bar_on_a_terminal(study: Study, tmp_path: Path) -> None:
    """On a terminal the bar is redrawn in place; in pipes (every other test) it is absent."""
    master, slave = pty.openpty()
    command = [script(BATCH[0]), *BATCH[1:], str(study.root / study.good[0])]
    proc = subprocess.Popen(
        [*command, "-o", str(tmp_path / "out")], stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    shown = b"".join(chunks).decode()
    assert "\r\x1b[K" in shown and "] 1/1 files" in shown and "ETA" in shown
    assert "1 ok, 0 failed" in shown


def test_to_exports_each_output_like_the_export_command(study: Study, tmp_path: Path) -> None:
    """``--to`` writes each output's exports beside it, equal to ``parallel-recon export`` of
    that output; a re-run skips them, a missing export makes its output stale."""
    import nibabel as nib
    import numpy as np
    import pydicom

    names = [n for n in study.good if n.endswith(".h5")][:2]
    inputs = [str(study.root / name) for name in names]
    out = tmp_path / "out"
    formats = ("--to", "nifti", "--to", "npy", "--to", "dicom")
    proc = batch(*inputs, "-o", str(out), *formats, check_exit=0)
    assert f"{len(names)} ok" in proc.stderr.decode()
    for name in names:
        output = study.output(out, name)
        assert_same_images(output, study.reference / Path(name).with_suffix(".h5"))
        stem = output.with_suffix("")
        expected = tmp_path / f"expected_{stem.name}.nii.gz"
        run_cli("parallel-recon", "export", str(output), "--to", "nifti", "-o", str(expected))
        ours, theirs = nib.load(f"{stem}.nii.gz"), nib.load(expected)
        assert np.array_equal(ours.get_fdata(), theirs.get_fdata())
        assert np.array_equal(ours.affine, theirs.affine)
        with np.load(f"{stem}.npz", allow_pickle=False) as archive:
            assert archive["data"].shape[0] == len(ismrmrd_images(output))
        dicoms = sorted(Path(f"{stem}_dicom").rglob("*.dcm"))
        assert dicoms and all(pydicom.dcmread(p).Modality == "MR" for p in dicoms)
    assert not list(out.rglob(".*partial*"))
    again = batch(*inputs, "-o", str(out), *formats, check_exit=0)
    assert "nothing to do" in again.stderr.decode()
    missing = study.output(out, names[0]).with_suffix(".npz")
    missing.unlink()
    third = batch(*inputs, "-o", str(out), *formats, check_exit=0)
    assert "1 ok" in third.stderr.decode() and missing.is_file()

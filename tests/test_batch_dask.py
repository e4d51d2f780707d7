"""``parallel-recon batch --scheduler``: the same batch through Dask's own processes.

A LocalCluster of 2 worker processes, and a cluster made of Dask's command-line programs
(``dask scheduler`` and 2 ``dask worker`` processes on 127.0.0.1, random ports), must give
the same outputs (equal to the single-file pipeline's) and the same report statuses as the
local batch; a Dask worker killed while it reconstructs must not cost a file; no process of
either cluster may outlive it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from batch_helpers import (
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
    process_tree,
    start_batch,
    stop_group,
    wait_for,
    watch_until_done,
)
from conftest import BIN_DIR

RUNNER_MODULE = "parallel_recon.batch.service"
RUNNER = f"-m {RUNNER_MODULE}"
"""How a runner process shows in ``ps`` (the worker preload names the module too)."""


@pytest.fixture(scope="module")
def study(batch_study: Study) -> Study:
    return batch_study


def assert_report(study: Study, report: Path) -> None:
    """One row per input; the good ones ok, the bad ones failed: as in the local batch."""
    statuses = {row["input"]: row["status"] for row in csv_rows(report)}
    assert len(statuses) == GOOD + len(BROKEN)
    assert {name for name, status in statuses.items() if status == "failed"} == set(BROKEN)
    assert all(statuses[name] == "ok" for name in study.good)


def test_local_cluster_gives_the_local_batch_results(study: Study, tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.csv"
    proc = start_batch(
        str(study.root), "-o", str(out), "--scheduler", "local:2", "--report", str(report)
    )
    watch = TreeWatch()
    stderr = watch_until_done(proc, watch)
    assert proc.returncode == 1, stderr
    assert f"{GOOD} ok, 2 failed" in stderr and "Traceback" not in stderr
    assert_study_outputs(study, out)
    assert_report(study, report)
    assert len(watch.started(RUNNER)) == 2  # one per worker process, for the whole batch
    assert_all_gone(watch.processes)


@dataclass
class DaskCluster:
    """``dask scheduler`` and ``dask worker`` programs, each in its own process group."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    seen: TreeWatch = field(default_factory=TreeWatch)

    def watch(self) -> None:
        """Remember every process of the cluster seen so far (for the orphan check)."""
        self.seen.look(self.scheduler.pid, *(worker.pid for worker in self.workers))


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [str(BIN_DIR / "dask"), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    import distributed

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    scheduler = _start(
        ["scheduler", *common, "--port", "0", "--scheduler-file", str(scheduler_file)],
        folder / "scheduler.log",
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(lambda: scheduler_file.is_file() and scheduler_file.stat().st_size > 0, 60)
        address = json.loads(scheduler_file.read_text())["address"]
        for number, extra in enumerate(([], ["--preload", RUNNER_MODULE])):
            args = ["worker", address, *common, "--nthreads", "1", "--name", f"w{number}"]
            workers.append(_start([*args, *extra], folder / f"worker{number}.log"))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        cluster = DaskCluster(address, scheduler, workers)
        cluster.watch()
        yield cluster
        cluster.watch()
    finally:
        everything = [
            process for proc in (scheduler, *workers) for process in process_tree(proc.pid)
        ]
        for proc in (*workers, scheduler):
            stop_group(proc)
    assert_all_gone([*everything, *cluster.seen.processes])


def _run_watched(cluster: DaskCluster, args: list[str]) -> tuple[int, str]:
    proc = start_batch(*args, "--scheduler", cluster.address)
    roots = (cluster.scheduler.pid, *(worker.pid for worker in cluster.workers))
    stderr = watch_until_done(proc, cluster.seen, *roots)
    return proc.returncode, stderr


def test_dask_scheduler_and_workers_give_the_local_batch_results(
    study: Study, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    out, report = tmp_path / "out", tmp_path / "report.csv"
    code, stderr = _run_watched(
        dask_cluster, [str(study.root), "-o", str(out), "--report", str(report)]
    )
    assert code == 1, stderr
    assert f"{GOOD} ok, 2 failed" in stderr and "Traceback" not in stderr
    assert_study_outputs(study, out)
    assert_report(study, report)
    hosts = {row["host"] for row in csv_rows(report) if row["status"] == "ok"}
    assert len(hosts) == 2  # both workers' runners did files
    # a re-run through the cluster skips everything that is up to date
    again = batch(
        *(str(study.root / n) for n in study.good),
        "-o",
        str(out),
        "--scheduler",
        dask_cluster.address,
    )
    assert again.returncode == 0 and "nothing to do" in again.stderr.decode()


def _busy_runner(worker: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The runner of this ``dask worker`` while it is reconstructing (has engine children)."""
    for process in process_tree(worker.pid):
        with contextlib.suppress(psutil.Error):
            if RUNNER in " ".join(process.cmdline()) and process.children():
                return process
    return None


def _is_resource_tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "resource_tracker" in " ".join(process.cmdline())
    return False


def test_a_worker_killed_mid_file_costs_no_file(
    study: Study, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    out, report = tmp_path / "out", tmp_path / "report.csv"
    args = [str(study.root), "-o", str(out), "--report", str(report)]
    proc = start_batch(*args, "--scheduler", dask_cluster.address)
    victim = dask_cluster.workers[1]
    found: list[psutil.Process] = []

    def mid_file() -> bool:
        dask_cluster.watch()
        runner = _busy_runner(victim) if len(finished_outputs(out)) >= 2 else None
        if runner is not None:
            found.append(runner)
        return runner is not None or proc.poll() is not None

    wait_for(mid_file, timeout=120, step=0.005)
    assert found, "the batch ended before a worker could be killed mid-file"
    runner = found[0]
    family = [runner, *runner.children(recursive=True)]
    for process in process_tree(victim.pid):
        # the nanny and the worker; the runner must follow alone.  Python's resource tracker
        # is left to notice the deaths and unlink the semaphores they registered, as it
        # does when a worker host's processes crash (killing it too would leak them in
        # /dev/shm: Dask's, not ours)
        if process not in family and not _is_resource_tracker(process):
            process.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert_all_gone(family)  # the runner and its engine died with their worker
    assert_study_outputs(study, out)
    assert_report(study, report)
    victim.wait(timeout=30)
    for output in finished_outputs(out):
        assert_same_images(output, study.reference / output.relative_to(out))

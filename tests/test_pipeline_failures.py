"""Failure behaviour of ``mrd_stream_recon``: every failure ends the run, clean and in one line.

Each test checks the same contract: the command ends after the failure (a generous bound
catches a hang; speed is not asserted here), with the right exit code, one clear line on
stderr (no traceback), no process of its tree left behind (psutil), and no shared-memory
segment of its own left in /dev/shm.  Tests act on events, never on elapsed time: a kernel
that touches a marker file says it is inside a unit, children are counted by name.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import interruptible, script
from test_pipeline_helpers import (
    RSS_KERNEL,
    Spec,
    build_lines,
    header_xml,
    stream_bytes,
    write_kernel,
)

RECON = "mrd_stream_recon"
SHM = Path("/dev/shm")

HANG_BOUND = 60.0
"""Seconds after which a run that should have ended counts as hung."""

STUCK_KERNEL = """
import os
import time


def reconstruct(kspace, context):
    # say which unit this process is inside, then stay inside it until killed
    marker = os.path.join(MARKERS, f"inside-{os.getpid()}")
    with open(marker + ".tmp", "w") as out:
        out.write(f"{context.unit.sequence} {context.unit.key.slice}")
    os.replace(marker + ".tmp", marker)
    time.sleep(3600)
"""
FAILING_KERNEL = """
def reconstruct(kspace, context):
    if context.unit.sequence == 2:
        raise ValueError("cannot handle this unit")
    return []
"""


class Recon:
    """``mrd_stream_recon`` under test, with its process tree watched from outside."""

    def __init__(self, *args: str, stdout: int | None = None):
        self.proc = subprocess.Popen(
            [script(RECON), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=subprocess.PIPE,
            preexec_fn=interruptible,
        )
        self.tree: set[int] = set()
        self.feed_error: BaseException | None = None

    def feed(self, data: bytes, *, close: bool = True) -> threading.Thread:
        """Write ``data`` to stdin from a thread (the command may stop reading at any time)."""

        def run() -> None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                if close:
                    self.proc.stdin.close()
            except (BrokenPipeError, ValueError, OSError) as exc:
                self.feed_error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def children(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.tree.update(k.pid for k in kids)
        return kids

    def wait_for_children(self, names: set[str], timeout: float = 30) -> dict[str, psutil.Process]:
        """Wait until children with these process names (``pr-worker-1``...) run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {}
            for kid in self.children():
                try:
                    found[kid.name()] = kid
                except psutil.NoSuchProcess:
                    continue
            if names <= set(found):
                return found
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.02)
        raise AssertionError(f"children {names} did not appear; saw {sorted(found)}")

    def finish(self) -> tuple[int, str]:
        """Wait for the end (a run still going after :data:`HANG_BOUND` seconds has hung);
        returns (exit code, stderr)."""
        try:
            code = self.proc.wait(timeout=HANG_BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()  # reaps it and closes its pipes
            raise AssertionError(f"{RECON} hung: still running {HANG_BOUND} s on") from None
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        self.assert_clean()
        return code, err

    def assert_clean(self) -> None:
        """No process of the tree survives; no segment of this run is left in /dev/shm.

        Children that saw the supervisor go end on their own (parent-death signal); each is
        waited for until it is gone or :data:`HANG_BOUND` has passed."""
        alive = []
        for pid in self.tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                alive.append(psutil.Process(pid))
        _, left = psutil.wait_procs(alive, timeout=HANG_BOUND)
        left = [p for p in left if _alive(p.pid)]
        assert not left, f"processes left behind: {sorted(p.pid for p in left)}"
        leftovers = list(SHM.glob(f"pr_{self.proc.pid}_*"))
        assert not leftovers, f"left in /dev/shm: {leftovers}"


def _wait_for_marker(path: Path, run: Recon) -> str:
    """The content of a marker file a kernel writes (atomically), once it exists."""
    deadline = time.monotonic() + HANG_BOUND
    while not path.exists():
        assert run.proc.poll() is None, f"{RECON} ended before its kernel wrote {path.name}"
        assert time.monotonic() < deadline, f"no kernel wrote {path.name}"
        time.sleep(0.01)
    return path.read_text()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"{RECON}: ")
    return lines[0]


@pytest.fixture
def rss(tmp_path: Path) -> str:
    return write_kernel(tmp_path, RSS_KERNEL, "rss")


@pytest.mark.parametrize("cut", ["inside-header", "inside-acquisition", "at-boundary"])
def test_truncated_input(rss: str, cut: str) -> None:
    spec = Spec(slices=2, repetitions=2)
    data = stream_bytes(spec)
    lines = build_lines(spec)
    acq_bytes = 2 + 340 + lines[0].acquisition.data.nbytes
    ends = {
        "inside-header": 40,
        "inside-acquisition": len(data) - 1 - acq_bytes // 2,
        "at-boundary": len(data) - 2,  # everything except CLOSE
    }
    run = Recon("--recon", rss, "--workers", "2")
    run.feed(data[: ends[cut]])
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    expected = "without a CLOSE" if cut == "at-boundary" else "truncated"
    assert expected in line and "byte offset" in line


@pytest.mark.parametrize("where", ["start", "after-header"])
def test_garbage_input(rss: str, where: str) -> None:
    garbage = bytes((i * 7919 + 13) % 251 for i in range(4096))
    data = stream_bytes(Spec())
    prefix = data[: data.index(b"</ismrmrdHeader>") + len(b"</ismrmrdHeader>")]
    run = Recon("--recon", rss)
    run.feed(garbage if where == "start" else prefix + b"\xff\x7f" + garbage)
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "unknown message id" in line and "message index" in line


def test_worker_killed_with_sigkill(tmp_path: Path) -> None:
    """Worker 1 is killed while its kernel is inside a unit (it said so in a marker file):
    the one line names the worker, its pid, the signal and that unit."""
    markers = tmp_path / "markers"
    markers.mkdir()
    kernel = write_kernel(tmp_path, f"MARKERS = {str(markers)!r}\n{STUCK_KERNEL}", "stuck")
    run = Recon("--recon", kernel, "--workers", "2")
    run.feed(stream_bytes(Spec(slices=4)))
    worker = run.wait_for_children({"pr-worker-1", "pr-worker-2", "pr-writer"})["pr-worker-1"]
    sequence, slice_ = _wait_for_marker(markers / f"inside-{worker.pid}", run).split()
    worker.send_signal(signal.SIGKILL)
    code, err = run.finish()
    assert code == 1
    assert _one_line(err) == (
        f"{RECON}: error: worker 1 (pid {worker.pid}) was killed by signal SIGKILL while "
        f"reconstructing unit #{sequence} (slice {slice_}, repetition 0)"
    )


def test_downstream_closed_early(rss: str) -> None:
    """``mrd_stream_recon | head -c 1000``: quiet exit 141 once the pipe is gone."""
    spec = Spec(slices=4, repetitions=8, readout=64, lines=64, coils=2)
    run = Recon("--recon", rss, "--workers", "2", stdout=subprocess.PIPE)
    run.feed(stream_bytes(spec))
    assert run.proc.stdout is not None
    head = run.proc.stdout.read(1000)
    assert len(head) == 1000
    run.children()
    run.proc.stdout.close()
    code, err = run.finish()
    assert code == 141
    assert err == ""


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "terminated"),
    ],
)
def test_signals_stop_the_pipeline(rss: str, signum: int, code: int, word: str) -> None:
    spec = Spec(slices=2, repetitions=4)
    data = stream_bytes(spec)
    run = Recon("--recon", rss, "--workers", "2")
    run.feed(data[: len(data) // 2], close=False)  # the sender is still "scanning"
    run.wait_for_children({"pr-reader", "pr-worker-1", "pr-worker-2", "pr-writer"})
    # segments are unlinked as soon as they are made, before any child starts
    assert not list(SHM.glob(f"pr_{run.proc.pid}_*"))
    run.proc.send_signal(signum)
    got, err = run.finish()
    assert got == code
    assert word in _one_line(err)


def test_supervisor_killed_takes_its_children_along(rss: str) -> None:
    """kill -9 of the supervisor (no cleanup runs there): reader, workers and writer, which
    were running, all end by themselves and nothing is left in /dev/shm."""
    run = Recon("--recon", rss, "--workers", "2")
    data = stream_bytes(Spec(slices=2, repetitions=4))
    run.feed(data[: len(data) // 2], close=False)
    roles = {"pr-reader", "pr-worker-1", "pr-worker-2", "pr-writer"}
    children = run.wait_for_children(roles)
    assert {p.pid for p in children.values()} <= run.tree
    run.proc.send_signal(signal.SIGKILL)
    run.finish()  # asserts that every child recorded in run.tree has ended


def test_kernel_exception_names_the_unit(tmp_path: Path) -> None:
    kernel = write_kernel(tmp_path, FAILING_KERNEL, "failing")
    run = Recon("--recon", kernel, "--workers", "2")
    run.feed(stream_bytes(Spec(slices=5)))
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "kernel 'failing.py' failed on unit #2 (slice 4, repetition 0)" in line
    assert "ValueError: cannot handle this unit" in line


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "must define a function reconstruct(kspace, context)"),
        ("raise ImportError('needs torch')\n", "importing it failed: ImportError: needs torch"),
    ],
)
def test_unusable_kernel_module(tmp_path: Path, source: str, message: str) -> None:
    kernel = write_kernel(tmp_path, source, "bad")
    run = Recon("--recon", kernel)
    run.feed(stream_bytes(Spec()))
    code, err = run.finish()
    assert code == 1
    assert message in _one_line(err)


def test_unknown_kernel_name() -> None:
    run = Recon("--recon", "nonexistent")
    run.feed(stream_bytes(Spec()))
    code, err = run.finish()
    assert code == 2  # a usage error
    expected = "expected one of auto, cartesian, grappa, nufft, sense or a path to a .py file"
    assert expected in _one_line(err)


def test_memory_limit_too_small_says_what_is_needed(rss: str) -> None:
    spec = Spec(slices=6, readout=64, lines=64, coils=4)  # 128 KiB per unit, 6 open at once
    run = Recon("--recon", rss, "--memory-limit", "600K")
    run.feed(stream_bytes(spec))
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "not enough memory" in line and "raise --memory-limit to at least" in line
    needed = int(re.search(r"at least (\d+)M", line).group(1))  # type: ignore[union-attr]
    ok = subprocess.run(
        [script(RECON), "--recon", rss, "--memory-limit", f"{needed}M"],
        input=stream_bytes(spec),
        capture_output=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr.decode()


def test_more_open_units_than_the_header_allows_fails_instead_of_hanging(rss: str) -> None:
    """Header says 1 slice, data interleaves 12: every slot ends up held by an open unit."""
    spec = Spec(slices=12, lines=8)
    xml = header_xml(spec).replace(
        "<slice><minimum>0</minimum><maximum>11</maximum>",
        "<slice><minimum>0</minimum><maximum>0</maximum>",
    )
    assert xml != header_xml(spec)
    data = stream_bytes(spec, xml=xml)
    run = Recon("--recon", rss, "--workers", "1")
    run.feed(data)
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "k-space slots are held by units that are still open" in line


def test_encode_step_outside_the_limits(rss: str) -> None:
    spec = Spec(lines=8)
    lines = build_lines(spec)
    lines[3].acquisition.head["idx"]["kspace_encode_step_1"] = 40
    run = Recon("--recon", rss)
    run.feed(stream_bytes(spec, lines))
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "acquisition 3: kspace_encode_step_1 = 40 lands outside" in line
    assert "expected 0..7" in line and "message index" in line


def test_coil_count_changing_mid_stream(rss: str) -> None:
    from parallel_recon.protocol import Acquisition

    spec = Spec(lines=8)
    lines = build_lines(spec)
    acq = lines[5].acquisition
    lines[5].acquisition = Acquisition.from_arrays(acq.data[:2], head=acq.head)
    run = Recon("--recon", rss)
    run.feed(stream_bytes(spec, lines))
    code, err = run.finish()
    assert code == 1
    line = _one_line(err)
    assert "acquisition has 2 active channels; expected 3 like the first imaging" in line

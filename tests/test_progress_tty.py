"""Long commands show progress on stderr when it is a terminal, and only then (or --progress).

Each command runs with stdout to a file and stderr to a pseudo-terminal, a pipe, or a file.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import script, shared_data_dir

GOLDEN = shared_data_dir() / "golden"
RAW_H5 = GOLDEN / "phantom_m128_c8_noise.h5"
RAW_STREAM = GOLDEN / "phantom_m128_c8_noise.stream"

# "<label>: <count>[/<total>] <unit>, ... <seconds> s" as parallel_recon.progress draws it
PROGRESS = re.compile(rb"\d+(/\d+)? [a-z]+\b.*\d+\.\d s")

Command = Callable[[Path], tuple[list[str], Path | None]]
COMMANDS: dict[str, Command] = {
    "mrd_phantom": lambda tmp: (["-m", "64", "-c", "4", "-o", str(tmp / "phantom.h5")], None),
    "mrdhdf5_to_stream": lambda tmp: ([str(RAW_H5)], None),
    "stream_to_mrdhdf5": lambda tmp: ([str(tmp / "out.h5")], RAW_STREAM),
    "mrd_stream_recon": lambda tmp: (["--workers", "1"], RAW_STREAM),
}


def _drain(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything written to the pty until the child exits (EIO marks the closed side)."""
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


def run(name: str, tmp: Path, stderr_kind: str, *extra: str) -> tuple[int, bytes, bytes]:
    """Run a command; returns (exit code, stderr bytes, stdout bytes)."""
    args, stdin_path = COMMANDS[name](tmp)
    out_path = tmp / f"{name}.{stderr_kind}.stdout"
    err_path = tmp / f"{name}.{stderr_kind}.stderr"
    cmd = [script(name), *args, *extra]
    with (
        open(out_path, "wb") as stdout,
        open(stdin_path or os.devnull, "rb") as stdin,
    ):
        if stderr_kind == "tty":
            master, slave = pty.openpty()
            proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=slave)
            os.close(slave)
            try:
                err = _drain(master, proc, 120)
            finally:
                os.close(master)
            code = proc.wait(timeout=30)
        elif stderr_kind == "pipe":
            done = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                  timeout=120, check=False)  # fmt: skip
            code, err = done.returncode, done.stderr
        else:
            with open(err_path, "wb") as handle:
                code = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=handle,
                                      timeout=120, check=False).returncode  # fmt: skip
            err = err_path.read_bytes()
    return code, err, out_path.read_bytes()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_progress_on_a_terminal(name: str, tmp_path: Path) -> None:
    code, err, out = run(name, tmp_path, "tty")
    assert code == 0, err.decode(errors="replace")
    assert PROGRESS.search(err), f"no progress on the terminal: {err!r}"
    assert not PROGRESS.search(out), "progress leaked into stdout"


@pytest.mark.parametrize("kind", ["pipe", "file"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_progress_when_stderr_is_not_a_terminal(name: str, kind: str, tmp_path: Path) -> None:
    code, err, _ = run(name, tmp_path, kind)
    assert code == 0, err.decode(errors="replace")
    assert not PROGRESS.search(err), f"progress printed to a {kind}: {err!r}"
    assert b"\r" not in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_progress_option_forces_it_on_a_pipe(name: str, tmp_path: Path) -> None:
    code, err, _ = run(name, tmp_path, "pipe", "--progress")
    assert code == 0, err.decode(errors="replace")
    assert PROGRESS.search(err), f"--progress printed nothing: {err!r}"
    assert b"\r" not in err  # plain lines, no terminal redraws, in a pipe

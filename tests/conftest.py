"""Shared fixtures: where the repository and the shared test data live, how to run a CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BIN_DIR = Path(sys.executable).parent


def shared_data_dir() -> Path:
    """The real-world files beside the checkout; a missing folder is an error, not a skip."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(
            f"test data folder {SHARED_DATA} is missing: clone the repository with shared/ "
            "beside it (see README)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def golden(shared_data: Path) -> Path:
    return shared_data / "golden"


def interruptible() -> None:
    """``preexec_fn`` for a command a test interrupts with SIGINT: the default disposition.

    A shell that starts the test run in the background (``pytest &``) makes it ignore SIGINT,
    and an ignored signal stays ignored across exec, as Ctrl-C should for background jobs;
    the command under test must see the Ctrl-C the test sends.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def script(name: str) -> str:
    """Path of a console script installed in the running venv."""
    path = BIN_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"console script {name} not installed in {BIN_DIR}")
    return str(path)


def run_cli(
    name: str,
    *args: str,
    input: bytes | None = None,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a console script as a user would, capturing stdout and stderr as bytes."""
    proc = subprocess.run(
        [script(name), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        raise AssertionError(f"{name} {' '.join(args)} exited {proc.returncode}:\n{stderr}")
    return proc


def close_after_reading(proc: subprocess.Popen[bytes], nbytes: int) -> tuple[int, bytes]:
    """Read ``nbytes`` of a child's stdout, close it early (a downstream ``head -c``), and
    return its exit code and stderr; the child is killed if it does not end by itself."""
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert len(proc.stdout.read(nbytes)) == nbytes
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=60), err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="session")
def batch_study(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """20 phantom scans, 2 bad inputs and the single-file pipeline's images of each scan
    (``tests/batch_helpers.py``), shared by the batch tests, local and on Dask."""
    from batch_helpers import make_study

    return make_study(tmp_path_factory.mktemp("batch"))

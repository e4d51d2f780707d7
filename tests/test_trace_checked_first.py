"""``--trace PATH`` is checked before the recon starts, like ``--profile-json``.

A path that is a folder, or in a folder that does not exist, used to run the whole
reconstruction and then end in a Python traceback.  The check is proved to come first by
giving the recon an input that never ends: a command that started reading would wait for
ever, one that checks first exits at once.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from accelerated_helpers import phantom_bytes
from conftest import script

from parallel_recon.phantom import PhantomSpec


def _recon_with_open_input(*args: str) -> tuple[int, str, bytes]:
    """Run the recon with a stdin pipe that stays open (nothing is ever sent)."""
    proc = subprocess.Popen(
        [script("mrd_stream_recon"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    return proc.returncode, err.decode(), out


@pytest.mark.parametrize("option", ["--trace", "--profile-json"])
def test_a_folder_is_refused_before_reading_the_input(tmp_path: Path, option: str) -> None:
    folder = tmp_path / "somedir"
    folder.mkdir()
    code, err, out = _recon_with_open_input(option, str(folder))
    assert code == 1 and out == b""
    assert err == f"mrd_stream_recon: error: cannot write {str(folder)!r}: it is a directory\n"


@pytest.mark.parametrize("option", ["--trace", "--profile-json"])
def test_a_missing_folder_is_refused_before_reading_the_input(tmp_path: Path, option: str) -> None:
    target = tmp_path / "nodir" / "run.json"
    code, err, out = _recon_with_open_input(option, str(target))
    assert code == 1 and out == b""
    assert err.startswith(f"mrd_stream_recon: error: cannot write {str(target)!r}: folder ")
    assert "does not exist" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "nodir").exists()


def test_a_good_trace_path_appears_only_after_the_run(tmp_path: Path) -> None:
    """The trace is written beside its name and renamed at the end: no half file."""
    trace = tmp_path / "run.json"
    proc = subprocess.run(
        [script("mrd_stream_recon"), "--trace", str(trace)],
        input=phantom_bytes(PhantomSpec(matrix=16, coils=2)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    document = json.loads(trace.read_text())
    assert document["traceEvents"] and document["otherData"]["command"] == "mrd_stream_recon"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]

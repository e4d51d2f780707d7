"""Programs that start Python children never import code from the working directory.

``serve`` starts one recon per connection and ``batch --scheduler`` starts runner programs
on the Dask workers; both are often started from a folder of user data (the container runs
in ``/data``, where the README mounts ``$PWD``).  A ``psutil.py`` and a ``numpy.py`` there
would shadow the real modules in a child that puts its working directory on ``sys.path``;
here each one writes a marker file when imported, so an import cannot go unnoticed.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from batch_helpers import assert_same_images
from conftest import run_cli, script
from server_helpers import ServerProcess

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import StreamWriter

STRAY = """
from pathlib import Path

Path(__file__).with_name("imported-" + __name__).write_text("imported")
"""
STRAYS = ("psutil", "numpy")


@pytest.fixture(scope="module")
def stream() -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in iter_messages(PhantomSpec(matrix=16, coils=2)):
            writer.write(msg)
    return sink.getvalue()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory with stray modules named like the recon's dependencies."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in STRAYS:
        (folder / f"{name}.py").write_text(STRAY)
    return folder


def _imported(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("imported-*"))


def test_serve_children_do_not_import_from_the_working_directory(
    workdir: Path, stream: bytes
) -> None:
    expected = run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout
    server = ServerProcess("--workers", "1", cwd=workdir)
    try:
        reply = run_cli("parallel-recon", "send", server.address, input=stream).stdout
    finally:
        assert server.stop() == 0
    assert reply == expected
    assert _imported(workdir) == []


def _raw_folder(root: Path, stream: bytes) -> Path:
    raw = root / "raw"
    raw.mkdir()
    (raw / "scan.bin").write_bytes(stream)
    return raw


@pytest.mark.parametrize("scheduler", [[], ["--scheduler", "local:1"]], ids=["local", "dask"])
def test_batch_runners_do_not_import_from_the_working_directory(
    workdir: Path, stream: bytes, tmp_path: Path, scheduler: list[str]
) -> None:
    raw = _raw_folder(tmp_path, stream)
    out = tmp_path / "out"
    proc = subprocess.run(
        [script("parallel-recon"), "batch", str(raw), "-o", str(out), *scheduler],
        cwd=workdir,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert _imported(workdir) == []
    images = run_cli("mrd_stream_recon", input=stream).stdout
    reference = tmp_path / "reference.h5"
    run_cli("stream_to_mrdhdf5", str(reference), input=images)
    assert_same_images(out / "scan.h5", reference)

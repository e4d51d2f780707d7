"""What a newcomer reads first works as written: the README's "First five minutes", its
notebook example (with what the venv has: no matplotlib), and ``recon --help``'s defaults.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import ismrmrd
import nibabel as nib
import pytest
from accelerated_helpers import phantom_bytes
from conftest import BIN_DIR, REPO_ROOT, run_cli
from PIL import Image as PILImage

from parallel_recon.phantom import PhantomSpec, write_hdf5

README = (REPO_ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _blocks(text: str, language: str = "") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def test_first_five_minutes_is_the_first_section() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert headings[0] == "First five minutes", headings[:3]


def test_first_five_minutes_runs_as_written(tmp_path: Path) -> None:
    (block,) = _blocks(_section("First five minutes"))
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    assert commands[0].startswith("make venv")  # this test runs in that venv already
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"}
    for command in commands[1:]:
        proc = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr.decode()}"
        assert b"Traceback" not in proc.stderr
    dataset = ismrmrd.Dataset(str(tmp_path / "images.h5"), "dataset", create_if_needed=False)
    try:
        assert dataset.number_of_images("image_1") == 1
    finally:
        dataset.close()
    with PILImage.open(tmp_path / "images.png") as picture:
        assert picture.size[0] > 128
    assert nib.load(tmp_path / "brain.nii.gz").shape == (128, 128, 1)


def test_the_notebook_example_runs_in_the_venv_without_matplotlib(tmp_path: Path) -> None:
    api = _section("Python API")
    (block,) = _blocks(api, "python")
    assert "matplotlib" not in block
    assert "pip install matplotlib" in api  # says what plt.imshow needs
    write_hdf5(PhantomSpec(matrix=32, coils=4), tmp_path / "raw.h5")
    script = tmp_path / "notebook.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "images.h5").is_file() and (tmp_path / "brain.nii.gz").is_file()


def test_recon_help_shows_the_grappa_defaults_the_kernel_uses() -> None:
    text = " ".join(run_cli("mrd_stream_recon", "--help").stdout.decode().split())
    assert "lambda=0.0005" in text and "lambda=0.01" not in text
    for default in ("prewhiten=on", "kx=5", "ky=4", "kz=3", "combine=adaptive"):
        assert default in text, default


@pytest.fixture(scope="module")
def accelerated() -> bytes:
    return phantom_bytes(
        PhantomSpec(matrix=32, coils=4, acceleration=2, calibration_width=12, noise_level=0.2)
    )


def test_the_helps_lambda_is_the_default_that_runs(accelerated: bytes) -> None:
    """The default image equals the one with lambda=0.0005 given, and differs from 0.01."""
    default = run_cli("mrd_stream_recon", input=accelerated).stdout
    stated = run_cli("mrd_stream_recon", "--recon-option", "lambda=0.0005", input=accelerated)
    other = run_cli("mrd_stream_recon", "--recon-option", "lambda=0.01", input=accelerated)
    assert stated.stdout == default
    assert other.stdout != default

"""A real, non-editable install: the kernels arrive as ``parallel_recon.workers`` and nothing
is installed under the generic top-level name ``workers``.

The wheel is built offline from a copy of the sources with the declared build backend
(setuptools, a test dependency), installed with pip into a fresh venv, and used from a
directory outside the checkout, so neither the source tree nor the editable install can
stand in for it.  The fresh venv borrows only the third-party dependencies of the test venv
(a ``.pth`` line naming its site-packages; the ``.pth`` files there, such as the editable
install's hook, are not run for a directory added that way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SOURCES = ("pyproject.toml", "README.md", "parallel_recon", "workers")


def _run(*args: str, cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _copy_sources(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def _source_packages() -> set[str]:
    """Every folder with an ``__init__.py``, under the name it must be installed as."""
    names = set()
    for init in (REPO_ROOT / "parallel_recon").rglob("__init__.py"):
        relative = init.parent.relative_to(REPO_ROOT)
        if "workers" in relative.parts[1:]:
            continue  # reached through the link; counted from workers/ below
        names.add(".".join(relative.parts))
    for init in (REPO_ROOT / "workers").rglob("__init__.py"):
        relative = init.parent.relative_to(REPO_ROOT / "workers")
        names.add(".".join(("parallel_recon", "workers", *relative.parts)))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("install")
    source, dist, venv, elsewhere = (base / n for n in ("src", "dist", "venv", "elsewhere"))
    source.mkdir()
    elsewhere.mkdir()
    _copy_sources(source)
    _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", str(dist), str(source), cwd=base,
    )  # fmt: skip
    (wheel,) = dist.glob("parallel_recon-*.whl")
    _run(sys.executable, "-m", "venv", str(venv), cwd=base)
    python = venv / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel),
         cwd=base)  # fmt: skip
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=elsewhere).strip())  # fmt: skip
    (site / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return {"wheel": wheel, "venv": venv, "site": site, "elsewhere": elsewhere}


def test_wheel_holds_every_package_under_parallel_recon(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"parallel_recon"}, f"unexpected top-level entries in the wheel: {tops}"
    packages = {
        os.path.dirname(name).replace("/", ".") for name in names if name.endswith("__init__.py")
    }
    assert packages == _source_packages()
    assert "parallel_recon/workers/cartesian.py" in names
    assert "parallel_recon/workers/py.typed" in names


def test_installed_kernels_import_as_parallel_recon_workers(installed: dict[str, Path]) -> None:
    python = str(installed["venv"] / "bin" / "python")
    code = (
        "import importlib.util, parallel_recon.workers.cartesian as k;"
        "print(k.__file__);"
        "print(importlib.util.find_spec('workers'))"
    )
    where, top_level = _run(python, "-c", code, cwd=installed["elsewhere"]).split()
    assert Path(where).is_relative_to(installed["site"]), where
    assert top_level == "None", "a top-level 'workers' package is importable"
    assert not (installed["site"] / "workers").exists()


def test_installed_console_script_reconstructs_like_the_checkout(
    installed: dict[str, Path], golden: Path
) -> None:
    stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    recon = str(installed["venv"] / "bin" / "mrd_stream_recon")
    proc = subprocess.run(
        [recon, "--workers", "2"], input=stream, capture_output=True, timeout=120,
        cwd=installed["elsewhere"], check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    checkout = subprocess.run(
        [str(Path(sys.executable).parent / "mrd_stream_recon"), "--workers", "1"],
        input=stream, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert proc.stdout == checkout.stdout
    assert len(proc.stdout) > 128 * 128 * 4

"""BART as an oracle: its ``.cfl``/``.hdr`` files and running its commands.

BART stores an array as a text header (``# Dimensions`` then the sizes, first dimension
first) and the raw complex64 samples in column-major (Fortran) order.  Its MRI dimension
convention is ``[x (readout), y (k1), z (k2), coils, maps, ...]``.

Written from BART's documented file format (``bart/doc``), not from its code.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["bart", "read_cfl", "to_bart", "write_cfl"]


def write_cfl(stem: Path, array: np.ndarray) -> Path:
    """Write ``stem.cfl`` and ``stem.hdr`` (dimensions as the array's shape, column-major)."""
    data = np.asarray(array, np.complex64)
    dims = list(data.shape) + [1] * max(0, 16 - data.ndim)
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    data.ravel(order="F").tofile(stem.with_suffix(".cfl"))
    return stem


def read_cfl(stem: Path) -> np.ndarray:
    """The array of ``stem.cfl`` with the shape of ``stem.hdr`` (trailing 1s dropped)."""
    lines = stem.with_suffix(".hdr").read_text().splitlines()
    dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(stem.with_suffix(".cfl"), dtype=np.complex64)
    return data.reshape(dims, order="F")


def bart(*args: str, cwd: Path, threads: int | None = None) -> str:
    """Run ``bart ARGS`` in ``cwd``; stdout, or an AssertionError with BART's stderr."""
    executable = shutil.which("bart")
    if executable is None:
        raise FileNotFoundError("bart is not installed (the Makefile's deps target installs it)")
    env = None
    if threads is not None:
        import os

        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        raise AssertionError(f"bart {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def to_bart(kspace: np.ndarray) -> np.ndarray:
    """Our ``[coils, k2, k1, k0]`` k-space (or ``[coils, z, y, x]`` images) as BART's
    ``[x, y, z, coils]``."""
    return np.ascontiguousarray(np.asarray(kspace).transpose(3, 2, 1, 0))

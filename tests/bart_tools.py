"""BART as an oracle: its ``.cfl``/``.hdr`` files, its axis and trajectory conventions, and
running its commands (Debian package ``bart``).

Files.  A BART array is two files: ``NAME.hdr`` (a ``# Dimensions`` line, then the sizes of up
to 16 dimensions, first dimension first) and ``NAME.cfl`` (complex64, first dimension
fastest, i.e. Fortran order).  Written from BART's documented file format, not from its code.

Axes.  BART's MRI dimensions are ``[x (readout), y (k1), z (k2), coils, maps, ...]``: our
``[coils, k2, k1, x]`` k-space and ``[coils, z, y, x]`` images are transposed
(:func:`to_bart`).

Trajectories (``bart nufft``, ``bart pics -t``): ``[3, samples, readouts]`` with real
coordinates in **grid units** (cycles per field of view: ``-N/2 .. N/2`` for an ``N``-pixel
image), coordinate 0 along BART's dimension 0 (our image columns, x), coordinate 1 along
dimension 1 (rows, y); non-Cartesian k-space is ``[1, samples, readouts, coils]``
(:func:`bart_trajectory`, :func:`bart_readouts`).  Our trajectories are in cycles per pixel,
so BART's are ours times the matrix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = [
    "BART",
    "bart",
    "bart_readouts",
    "bart_trajectory",
    "read_cfl",
    "run_bart",
    "to_bart",
    "write_cfl",
]

BART = shutil.which("bart") or "bart"


def write_cfl(base: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as ``base.hdr`` / ``base.cfl`` (its axes are BART's dimensions)."""
    data = np.asarray(array, np.complex64)
    dims = list(data.shape) + [1] * max(0, 16 - data.ndim)
    Path(f"{base}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    data.reshape(-1, order="F").tofile(f"{base}.cfl")
    return Path(base)


def read_cfl(base: str | Path) -> np.ndarray:
    """Read ``base.hdr`` / ``base.cfl`` into a complex64 array (trailing 1s dropped)."""
    lines = Path(f"{base}.hdr").read_text().splitlines()
    dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(f"{base}.cfl", np.complex64, int(np.prod(dims)))
    return data.reshape(dims, order="F")


def bart(*args: str, cwd: Path, threads: int | None = 1) -> str:
    """Run ``bart ARGS`` in ``cwd`` (``threads`` OpenMP threads, one by default, as the
    recon's workers use; None: BART's own choice); its stdout, or an AssertionError with its
    stderr."""
    if shutil.which(BART) is None:
        raise FileNotFoundError("bart is not installed (the Makefile's deps target installs it)")
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [BART, *args], cwd=cwd, capture_output=True, text=True, check=False, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(f"bart {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def run_bart(folder: Path, *args: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """``bart ARGS`` in ``folder`` with ``inputs`` written there first; returns ``output``.

    ``args`` name the arrays by their keys.  One thread, as the recon's workers use.
    """
    for name, array in inputs.items():
        write_cfl(folder / name, array)
    bart(*args, cwd=folder)
    return read_cfl(folder / output)


def to_bart(kspace: np.ndarray) -> np.ndarray:
    """Our ``[coils, k2, k1, k0]`` k-space (or ``[coils, z, y, x]`` images) as BART's
    ``[x, y, z, coils]``."""
    return np.ascontiguousarray(np.asarray(kspace).transpose(3, 2, 1, 0))


def bart_trajectory(coords: np.ndarray, matrix: int) -> np.ndarray:
    """Our trajectory ``[readouts, samples, dims]`` in cycles per pixel -> BART's
    ``[3, samples, readouts]`` in grid units of a ``matrix``-pixel field of view."""
    readouts, samples, dims = coords.shape
    out = np.zeros((3, samples, readouts), np.complex64)
    out[:dims] = coords.transpose(2, 1, 0) * matrix
    return out


def bart_readouts(data: np.ndarray) -> np.ndarray:
    """Our readouts ``[readouts, coils, samples]`` as BART's ``[1, samples, readouts, coils]``."""
    return np.asarray(data).transpose(2, 0, 1)[None]

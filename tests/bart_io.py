"""BART's file format and command line, for tests that use BART as an oracle.

A BART array is two files: ``NAME.hdr`` (``# Dimensions`` and the sizes of up to 16
dimensions, first dimension first) and ``NAME.cfl`` (complex64, first dimension fastest,
i.e. Fortran order).  :func:`run_bart` runs the ``bart`` command (Debian package ``bart``)
on arrays it writes to a folder and reads its output back.

BART's non-Cartesian convention (``bart nufft``): a trajectory is ``[3, samples, readouts]``
with real coordinates in **grid units** (cycles per field of view, ``-N/2 .. N/2``), first
coordinate along BART's dimension 0 (our image columns, x), second along dimension 1 (rows,
y); k-space is ``[1, samples, readouts, coils]``, images ``[x, y, z, coils]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["BART", "bart_trajectory", "read_cfl", "run_bart", "write_cfl"]

BART = shutil.which("bart") or "bart"


def write_cfl(base: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as ``base.hdr`` / ``base.cfl`` (its axes are BART's dimensions)."""
    data = np.asarray(array, np.complex64)
    dims = list(data.shape) + [1] * max(0, 16 - data.ndim)
    Path(f"{base}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    data.reshape(-1, order="F").tofile(f"{base}.cfl")


def read_cfl(base: str | Path) -> np.ndarray:
    """Read ``base.hdr`` / ``base.cfl`` into a complex64 array (trailing 1s dropped)."""
    lines = Path(f"{base}.hdr").read_text().splitlines()
    dims = [int(v) for v in lines[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    count = int(np.prod(dims))
    data = np.fromfile(f"{base}.cfl", np.complex64, count)
    return data.reshape(dims, order="F")


def bart_trajectory(coords: np.ndarray, matrix: int) -> np.ndarray:
    """Our trajectory ``[readouts, samples, dims]`` in cycles per pixel -> BART's
    ``[3, samples, readouts]`` in grid units of a ``matrix``-pixel field of view."""
    readouts, samples, dims = coords.shape
    out = np.zeros((3, samples, readouts), np.complex64)
    out[:dims] = coords.transpose(2, 1, 0) * matrix
    return out


def run_bart(folder: Path, *args: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """``bart ARGS`` in ``folder`` with ``inputs`` written there first; returns ``output``.

    ``args`` name the arrays by their keys.  One thread, as the recon's workers use.
    """
    for name, array in inputs.items():
        write_cfl(folder / name, array)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [BART, *args], cwd=folder, capture_output=True, env=env, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"bart {' '.join(args)} failed: {proc.stderr.decode()}")
    return read_cfl(folder / output)

"""Density compensation: how much k-space area each sample stands for (Pipe and Menon, 1999).

Gridding sums samples onto the grid; where a trajectory samples densely (the centre of a
radial or spiral acquisition) the sum must weigh each sample less.  The weights are found
iteratively: ``w <- w / (K * w)`` evaluated at the samples, where ``K * w`` is the weights
convolved with a positive, compact kernel.  At the fixed point the weighted density is flat,
``sum_j w_j K(k_i - k_j) = 1``.  The convolution is a spread of the weights onto a fine grid
followed by an interpolation back to the samples, with finufft's own positive, compact
kernel (``spreadinterponly``: no FFT, single precision), so one iteration costs about two
spreading passes.

Units: the weights are areas (volumes) per sample in grid units, ``(1 / FOV)`` squared, so
gridding's adjoint NUFFT returns the image in the units of the orthonormal DFT (a Cartesian
grid sampled twice as finely as Nyquist gets exactly 1/4 per sample).  The fixed point's
scale is set by the kernel's mass, measured with the very same spreading settings.  A
trajectory sparser than the kernel's 2 grid units (a plain Nyquist Cartesian grid, 1 unit
apart along both axes) is smoothed less well: such a grid gets 0.91 instead of 1.

The grid extends a margin beyond ``+-0.5`` cycles per pixel, so samples at opposite edges
never see each other through the grid's periodicity.  Everything is deterministic (one
thread, fixed iterations), so every worker computes the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ITERATIONS", "pipe_menon_weights"]

ITERATIONS = 20
"""Pipe-Menon iterations (the weighted density is flat to a few 1e-3 by then)."""
_CELLS_PER_UNIT = 2
"""Spreading grid cells per grid unit (1/FOV)."""
_MARGIN = 4
"""Grid units of padding beyond the edge of k-space on each side."""
_EPSILON = 1e-3
"""finufft precision that sets its kernel's width (4 cells, 2 grid units: compact, and wide
enough to see neighbouring spiral arms or spokes, one grid unit apart at the edge)."""
_OPTIONS: dict[str, Any] = {"nthreads": 1, "spreadinterponly": 1, "upsampfac": 2.0, "showwarn": 0}


class _Convolver:
    """``w -> (K * w)(k_i)``: spread to the padded grid and interpolate back (no FFT)."""

    def __init__(self, coords: np.ndarray, shape: tuple[int, ...]):
        import finufft

        grid = tuple(_CELLS_PER_UNIT * (n + 2 * _MARGIN) for n in reversed(shape))
        points = []
        for axis in reversed(range(coords.shape[1])):
            n = shape[len(shape) - 1 - axis]
            scale = 2 * np.pi * n / (n + 2 * _MARGIN)
            points.append(np.ascontiguousarray(coords[:, axis] * scale, np.float32))
        self._points = points
        self._spread = finufft.Plan(1, grid, 1, eps=_EPSILON, dtype="complex64", **_OPTIONS)
        self._interpolate = finufft.Plan(2, grid, 1, eps=_EPSILON, dtype="complex64", **_OPTIONS)
        self._spread.setpts(*points)
        self._interpolate.setpts(*points)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        grid = self._spread.execute(weights.astype(np.complex64))
        return np.asarray(self._interpolate.execute(grid).real, np.float64)


def _lattice_sum(dims: int) -> float:
    """The kernel's mass, ``integral K``: its sum over a fine Cartesian lattice (spacing 1/4
    grid unit) times the lattice cell, so a sample's weight is the area it stands for."""
    n, fine = 16, 4
    axis = (np.arange(n * fine) - n * fine // 2) / (n * fine)
    grids = np.meshgrid(*([axis] * dims), indexing="ij")
    lattice = np.stack([g.ravel() for g in grids], axis=1)
    centre = int(np.flatnonzero(np.all(lattice == 0, axis=1))[0])
    density = _Convolver(lattice, (n,) * dims)(np.ones(lattice.shape[0]))
    return float(density[centre]) / fine**dims


def pipe_menon_weights(
    coords: np.ndarray, shape: tuple[int, ...], iterations: int = ITERATIONS
) -> np.ndarray:
    """Density-compensation weights of a trajectory.

    Parameters
    ----------
    coords:
        ``[points, dims]`` in cycles per pixel, columns ``(kx, ky[, kz])``.
    shape:
        Image shape ``(y, x)`` or ``(z, y, x)`` (sets the grid unit of each axis).
    iterations:
        Fixed-point iterations.

    Returns
    -------
    float32 ``[points]``: k-space area per sample in grid units.
    """
    convolve = _Convolver(coords, shape)
    weights = np.ones(coords.shape[0])
    for _ in range(iterations):
        density = convolve(weights)
        weights = weights / np.maximum(density, 1e-12)
    return (weights * _lattice_sum(coords.shape[1])).astype(np.float32)

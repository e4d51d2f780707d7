"""Smooth receive-coil sensitivities for simulated multi-coil data.

Coils sit on a ring around the field of view; each sees the object through a broad Gaussian
magnitude falloff and a smooth phase.  The maps are normalised so that the root sum of squares
over coils is exactly 1 at every pixel: an RSS coil combination then returns the object's
magnitude unchanged, which is what makes the phantom's ground truth exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coil_sensitivities"]

_RING_RADIUS = 1.5
_WIDTH = 1.2


def coil_sensitivities(matrix: int, coils: int) -> np.ndarray:
    """Normalised sensitivity maps.

    Parameters
    ----------
    matrix:
        Pixels along x and y of the (recon-space) field of view.
    coils:
        Number of receive channels, >= 1.

    Returns
    -------
    complex64 ``[coils, matrix, matrix]`` with ``sqrt(sum_c |S_c|**2) == 1`` at every pixel
    (to float32 rounding).
    """
    axis = (np.arange(matrix) - matrix / 2 + 0.5) / (matrix / 2)
    x = axis[np.newaxis, :]
    y = -axis[:, np.newaxis]
    angles = 2 * np.pi * np.arange(coils) / coils
    maps = np.empty((coils, matrix, matrix), dtype=np.complex128)
    for c, angle in enumerate(angles):
        cx, cy = _RING_RADIUS * np.cos(angle), _RING_RADIUS * np.sin(angle)
        magnitude = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * _WIDTH**2))
        phase = angle + 0.5 * (x * np.cos(angle) - y * np.sin(angle))
        maps[c] = magnitude * np.exp(1j * phase)
    norm = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return (maps / norm).astype(np.complex64)

"""Smooth receive-coil sensitivities for simulated multi-coil data.

Coils sit on a ring around the field of view; each sees the object through a broad Gaussian
magnitude falloff and a smooth phase.  The maps are normalised so that the root sum of squares
over coils is exactly 1 at every pixel: an RSS coil combination then returns the object's
magnitude unchanged, which is what makes the phantom's ground truth exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coil_sensitivities", "coil_sensitivities_3d"]

_RING_RADIUS = 1.5
_WIDTH = 1.2
_Z_CONTRAST = 0.8
"""3D: how much a coil's sensitivity changes along the slab (a periodic cosine profile)."""


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


def coil_sensitivities_3d(matrix: int, coils: int, partitions: int) -> np.ndarray:
    """Sensitivities that also vary along the slab, for k2-accelerated 3D scans.

    Each coil of the ring of :func:`coil_sensitivities` gets a profile along the slab,
    ``1 + 0.8 cos(pi z - 2 pi c / coils)`` (z in [-1, 1)), peaking at a different depth for
    each coil, so that the coils tell every pair of partitions half a slab apart from each
    other, as parallel imaging along k2 needs.  The profile is
    periodic over the slab because the object fills the slab: a profile that jumped at the
    slab's edges would not be band-limited in k2.  Normalised per voxel.

    Returns
    -------
    complex64 ``[coils, partitions, matrix, matrix]`` with the RSS over coils 1 everywhere.
    """
    plane = coil_sensitivities(matrix, coils).astype(np.complex128)
    z = (np.arange(partitions) - partitions / 2 + 0.5) / (partitions / 2)
    phase = 2 * np.pi * np.arange(coils) / coils
    weight = 1.0 + _Z_CONTRAST * np.cos(np.pi * z[None, :] - phase[:, None])
    maps = plane[:, None] * weight[:, :, None, None]
    norm = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return (maps / norm).astype(np.complex64)

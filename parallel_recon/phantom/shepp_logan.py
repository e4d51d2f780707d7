"""The modified Shepp-Logan head phantom, evaluated analytically from its ellipses.

The phantom is a sum of ellipses, each adding a constant intensity inside it.  A pixel's value
is that sum at the pixel centre: no blurring, so the discrete object is known exactly and a
recon of noise-free, fully sampled data must reproduce it to rounding.

Slices and 3D partitions see slightly different objects (the ellipses shrink and drift with
the distance from the centre of the volume), and contrasts (echoes) weight each ellipse by an
``exp(-TE / T2)``-like factor, so that tests can tell every image of a dataset apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ECHO_SPACING", "ELLIPSES", "T2", "ellipse_table", "phantom_object", "shepp_logan"]

# intensity, semi-axis x, semi-axis y, centre x, centre y, rotation (degrees); unit square
# [-1, 1] x [-1, 1] with y pointing up (the "modified" intensities, after Toft)
ELLIPSES = np.array(
    [
        [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
        [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
        [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
        [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
        [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
        [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
        [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
        [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
        [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
    ],
    dtype=np.float64,
)

T2 = np.array([80.0, 120.0, 400.0, 400.0, 60.0, 90.0, 90.0, 50.0, 50.0, 50.0])
"""T2-like decay constant of each ellipse, in milliseconds."""

ECHO_SPACING = 15.0
"""Milliseconds between echoes: contrast ``c`` has ``TE = c * ECHO_SPACING`` relative to echo 0."""


def _grid(matrix: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` in [-1, 1), each ``[matrix, matrix]`` (row = y)."""
    axis = (np.arange(matrix) - matrix / 2 + 0.5) / (matrix / 2)
    x = axis[np.newaxis, :]
    y = -axis[:, np.newaxis]
    return np.broadcast_to(x, (matrix, matrix)), np.broadcast_to(y, (matrix, matrix))


def ellipse_table(depth: float = 0.0, contrast: int = 0) -> np.ndarray:
    """The ellipses of one slice or partition and contrast, as :data:`ELLIPSES` rows.

    Intensities are weighted by ``exp(-contrast * ECHO_SPACING / T2[e])``; semi-axes and
    centres shrink by ``sqrt(1 - depth**2)`` and the centres drift down by ``0.05 * depth``.
    One table serves the image-space phantom (:func:`phantom_object`) and its analytic
    spectrum (:mod:`.analytic`), so the two always describe the same object.
    """
    scale = float(np.sqrt(max(1.0 - depth * depth, 0.0)))
    table = ELLIPSES.copy()
    table[:, 0] *= np.exp(-contrast * ECHO_SPACING / T2)
    table[:, 1:5] *= scale
    table[:, 4] -= 0.05 * depth
    return table


def phantom_object(matrix: int, depth: float = 0.0, contrast: int = 0) -> np.ndarray:
    """The phantom of one slice or partition.

    Parameters
    ----------
    matrix:
        Pixels along x and y.
    depth:
        Position in the volume, -0.5 (first slice) to 0.5 (last); 0 gives the classic phantom.
        The ellipses shrink by ``sqrt(1 - depth**2)`` and drift down by ``0.05 * depth``.
    contrast:
        Echo index; ellipse ``e`` is weighted by ``exp(-contrast * ECHO_SPACING / T2[e])``.

    Returns
    -------
    float32 ``[matrix, matrix]`` (rows y, top row = +y), values in about [0, 1].
    """
    x, y = _grid(matrix)
    image = np.zeros((matrix, matrix), dtype=np.float64)
    for value, ax, ay, cx, cy, angle in ellipse_table(depth, contrast):
        theta = np.deg2rad(angle)
        dx = x - cx
        dy = y - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (u / ax) ** 2 + (v / ay) ** 2 <= 1.0
        image[inside] += value
    image[np.abs(image) < 1e-9] = 0.0  # 1 - 0.8 - 0.2 is not exactly 0 in floating point
    return image.astype(np.float32)


def shepp_logan(matrix: int) -> np.ndarray:
    """The modified Shepp-Logan phantom, float32 ``[matrix, matrix]``, values in [0, 1]."""
    return phantom_object(matrix)

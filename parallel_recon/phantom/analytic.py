"""The Shepp-Logan phantom and its coil sensitivities in k-space, exactly, at any k position.

A non-Cartesian recon must be tested with samples that were not made by a NUFFT (that would be
the "inverse crime": the operator under test simulating its own data).  An ellipse of
semi-axes ``a, b`` has the closed-form Fourier transform ``a b J1(2 pi q) / q`` (``q`` the
frequency scaled by the semi-axes), shifted by its centre, so the phantom's spectrum is exact
at every trajectory point.  Coil sensitivities are short sums of complex exponentials,
``S_c(r) = sum_t A[c, t] exp(2 pi i g_t . r)``: multiplying by an exponential shifts the
spectrum, so every coil's k-space is a short sum of shifted object spectra and stays exact.

Coordinates.  The object lives on the unit square ``[-1, 1]^2`` (x right, y up) of
:mod:`.shepp_logan`.  Images are ``[row, column]`` with row ``v`` and column ``u`` counted in
pixels from the centre pixel ``N // 2`` (row increasing downwards), and pixel centres at
``x = (u + 0.5) / (N / 2)``, ``y = -(v + 0.5) / (N / 2)``, exactly where
:func:`~.shepp_logan.phantom_object` evaluates the object.  A k-space position ``(kx, ky)`` is
in cycles per pixel (``-0.5 .. 0.5`` spans the grid), ``kx`` conjugate to the column and
``ky`` to the row, like ``kspace_encode_step_1`` on a Cartesian grid.  The sample is

    s(k) = (1 / N) * integral o(u, v) exp(-2 pi i (kx u + ky v)) du dv

which is the centred, orthonormal DFT of the image when ``k`` lies on the Cartesian grid: a
least-squares reconstruction returns the object's own intensities.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from .shepp_logan import ellipse_table

__all__ = [
    "COIL_MIX",
    "coil_exponentials",
    "coil_maps_on_grid",
    "coil_spectrum",
    "object_spectrum",
]

COIL_MIX = (0.8, 0.6)
"""Weights of the constant and the exponential term of a coil (squares sum to 1)."""
_COIL_CYCLES = 0.75
"""Spatial frequency of a coil's exponential term, cycles across the field of view."""


def _jinc(q: np.ndarray) -> np.ndarray:
    """``J1(2 pi q) / q``, the transform of the unit disc (``pi`` at ``q = 0``)."""
    out = np.full(q.shape, np.pi)
    nonzero = q > 1e-12
    qn = q[nonzero]
    out[nonzero] = scipy.special.j1(2 * np.pi * qn) / qn
    return out


def object_spectrum(
    xi: np.ndarray, eta: np.ndarray, depth: float = 0.0, contrast: int = 0
) -> np.ndarray:
    """Fourier transform of the phantom on the unit square, ``int O(x, y) e^{-2 pi i (xi x +
    eta y)} dx dy``, at frequencies ``(xi, eta)`` in cycles per unit of x and y.

    Parameters
    ----------
    xi, eta:
        float64 arrays of one shape.
    depth, contrast:
        As in :func:`~.shepp_logan.phantom_object`.

    Returns
    -------
    complex128 array of the shape of ``xi``.
    """
    out = np.zeros(np.shape(xi), np.complex128)
    for value, ax, ay, cx, cy, angle in ellipse_table(depth, contrast):
        theta = np.deg2rad(angle)
        along = xi * np.cos(theta) + eta * np.sin(theta)
        across = -xi * np.sin(theta) + eta * np.cos(theta)
        q = np.sqrt((ax * along) ** 2 + (ay * across) ** 2)
        shift = np.exp(-2j * np.pi * (xi * cx + eta * cy))
        out += value * ax * ay * _jinc(q) * shift
    return out


def coil_exponentials(coils: int) -> tuple[np.ndarray, np.ndarray]:
    """The coil model: frequencies ``g`` float64 ``[terms, 2]`` (cycles per unit of x, y) and
    amplitudes ``A`` complex128 ``[coils, terms]``.

    Coils come in pairs that share one exponential term (a different direction per pair) and
    differ by its sign, so the pair's ``|S|**2`` ripples cancel and ``sum_c |S_c|**2 == 1``
    everywhere, exactly; an odd last coil is a constant.  Each coil also gets its own global
    phase.  One coil is ``S = 1``.
    """
    pairs = coils // 2
    directions = np.pi * np.arange(pairs) / max(pairs, 1)
    frequencies = np.zeros((1 + pairs, 2))
    frequencies[1:, 0] = 0.5 * _COIL_CYCLES * np.cos(directions)
    frequencies[1:, 1] = 0.5 * _COIL_CYCLES * np.sin(directions)
    amplitudes = np.zeros((coils, 1 + pairs), np.complex128)
    base, ripple = COIL_MIX
    scale = 1 / np.sqrt(coils)
    for c in range(coils):
        phase = np.exp(2j * np.pi * c / coils)
        pair = c // 2
        if pair < pairs:
            sign = 1.0 if c % 2 == 0 else -1.0
            amplitudes[c, 0] = base * scale * phase
            amplitudes[c, 1 + pair] = sign * ripple * scale * phase
        else:
            amplitudes[c, 0] = scale * phase
    return frequencies, amplitudes


def coil_spectrum(
    kx: np.ndarray,
    ky: np.ndarray,
    matrix: int,
    coils: int,
    depth: float = 0.0,
    contrast: int = 0,
) -> np.ndarray:
    """Noise-free samples of every coil at k positions in cycles per pixel.

    Parameters
    ----------
    kx, ky:
        float64 ``[points]``, cycles per pixel (``kx`` along columns, ``ky`` along rows).
    matrix:
        Pixels ``N`` across the field of view.
    coils:
        Receive channels.

    Returns
    -------
    complex128 ``[coils, points]`` in the scaling of the module docstring.
    """
    half = matrix / 2
    xi, eta = kx * half, -ky * half
    frequencies, amplitudes = coil_exponentials(coils)
    terms = np.stack(
        [object_spectrum(xi - gx, eta - gy, depth, contrast) for gx, gy in frequencies]
    )
    centring = np.exp(1j * np.pi * (kx + ky)) * (half * half / matrix)
    return (amplitudes @ terms) * centring


def coil_maps_on_grid(matrix: int, coils: int) -> np.ndarray:
    """The coil sensitivities at the pixel centres, complex64 ``[coils, matrix, matrix]``."""
    axis = (np.arange(matrix) - matrix / 2 + 0.5) / (matrix / 2)
    x, y = axis[np.newaxis, :], -axis[:, np.newaxis]
    frequencies, amplitudes = coil_exponentials(coils)
    waves = np.stack([np.exp(2j * np.pi * (gx * x + gy * y)) for gx, gy in frequencies])
    return np.tensordot(amplitudes, waves, axes=1).astype(np.complex64)

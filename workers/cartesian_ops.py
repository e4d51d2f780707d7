"""The Cartesian encoding operator: centred orthonormal FFT of coil images, then a sampling mask.

A Cartesian scan measures ``y_c = M F S_c x``: the coil image ``S_c x`` (sensitivity times
object), its centred, orthonormal DFT ``F`` over the encoded axes, kept where the sampling mask
``M`` is 1.  :func:`cartesian_sampling` is ``M F`` as a :class:`~.linop.LinearOperator`, batched
over a leading coil axis; composed with :func:`~.linop.diagonal` coil maps it is the SENSE
operator (:func:`sense_operator`), which the CG solver of :mod:`.cg` inverts.  A non-Cartesian
kernel swaps ``M F`` for a NUFFT and keeps everything else.

Centring costs no shifts: with ``c = n // 2`` the centred DFT is
``X[k] = e^{-2 pi i c^2/n} e^{2 pi i c k/n} FFT(e^{2 pi i c m/n} x[m])[k]``, i.e. a modulation
before and one after the plain FFT (``(-1)^m`` and ``(-1)^k`` for even ``n``).  In the normal
operator ``F^H M F``, applied once per CG iteration, the modulations cancel into a mask rolled
by ``c`` (plain FFTs, no multiplications but the mask's), and axes along which the mask does not
vary drop out altogether (``F^H F = I`` there): a readout that is sampled on every line costs no
transform per iteration.  The transforms are ``scipy.fft``'s (one thread), which batches the
lines of a strided axis about twice as fast as ``numpy.fft``.

Shapes: coil images ``[coils, z, y, x]``, k-space ``[coils, k2, k1, k0]`` (the same sizes: the
image grid is the k-space grid), masks broadcastable to ``[k2, k1, k0]`` (``[k2, k1, 1]`` for
whole readouts), complex64 throughout.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .linop import LinearOperator, diagonal

__all__ = [
    "cartesian_sampling",
    "centred_fft",
    "centred_ifft",
    "centring_phases",
    "sense_operator",
    "unit_phase",
]


@functools.lru_cache(maxsize=64)
def _axis_phases(n: int) -> tuple[np.ndarray, np.ndarray]:
    """complex64 ``[n]`` modulations (image side, k-space side) of a centred DFT of length n."""
    c = n // 2
    index = np.arange(n)
    before = np.exp(2j * np.pi * (c * index % n) / n)
    after = np.exp(2j * np.pi * ((c * index - c * c) % n) / n)
    if n % 2 == 0:  # exactly +-1: no rounding in the phases
        before, after = np.round(before.real), np.round(after.real)
    pair = (before.astype(np.complex64), after.astype(np.complex64))
    for array in pair:
        array.setflags(write=False)
    return pair


def centring_phases(shape: Sequence[int], axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The modulations that make a plain FFT over ``axes`` of ``shape`` centred.

    Returns complex64 arrays broadcastable to ``shape`` (size 1 on the other axes):
    ``centred_fft(x) = after * fft(before * x)`` (orthonormal).
    """
    ndim = len(shape)
    before = np.ones([1] * ndim, np.complex64)
    after = np.ones([1] * ndim, np.complex64)
    for axis in axes:
        view = [1] * ndim
        view[axis] = shape[axis]
        b, a = _axis_phases(shape[axis])
        before = before * b.reshape(view)
        after = after * a.reshape(view)
    return before, after


def unit_phase(values: np.ndarray) -> np.ndarray:
    """complex64 ``values / |values|`` (1 where a value is 0): a phase to remove or impose."""
    magnitude = np.abs(values)
    safe = np.where(magnitude > 0, magnitude, 1)
    return np.where(magnitude > 0, values / safe, 1).astype(np.complex64)


def centred_fft(data: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Centred, orthonormal DFT over ``axes`` (the k-space centre at index ``n // 2``)."""
    axes = tuple(a % data.ndim for a in axes)
    if not axes:
        return np.array(data, dtype=np.complex64)
    before, after = centring_phases(data.shape, axes)
    out = np.fft.fftn(np.asarray(data, np.complex64) * before, axes=axes, norm="ortho")
    out *= after
    return out.astype(np.complex64, copy=False)


def centred_ifft(data: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`centred_fft` (and its adjoint: the transform is unitary)."""
    axes = tuple(a % data.ndim for a in axes)
    if not axes:
        return np.array(data, dtype=np.complex64)
    before, after = centring_phases(data.shape, axes)
    out = np.fft.ifftn(np.asarray(data, np.complex64) * after.conj(), axes=axes, norm="ortho")
    out *= before.conj()
    return out.astype(np.complex64, copy=False)


def _varying_axes(mask: np.ndarray, axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    """The transformed axes along which ``mask`` (aligned to the trailing axes) changes."""
    offset = ndim - mask.ndim
    varying = []
    for axis in axes:
        local = axis - offset
        if local < 0 or mask.shape[local] == 1:
            continue
        first = np.take(mask, [0], axis=local)
        if not np.array_equal(np.broadcast_to(first, mask.shape), mask):
            varying.append(axis)
    return tuple(varying)


def _normal_weights(weights: np.ndarray, varying: tuple[int, ...], ndim: int) -> np.ndarray:
    """The mask as the normal operator sees it without any modulation.

    Modulating by ``e^{2 pi i c m / n}`` before a plain FFT shifts its output by ``c``, and the
    inverse modulation after the inverse FFT undoes the shift: so ``F_c^H M F_c`` is
    ``F^H M' F`` with ``M'[k] = M[k + c]`` along every transformed axis (``c = n // 2``).
    """
    offset = ndim - weights.ndim
    shifted = weights
    for axis in varying:
        local = axis - offset
        shifted = np.roll(shifted, -(weights.shape[local] // 2), axis=local)
    return np.ascontiguousarray(shifted, dtype=np.float32)


def cartesian_sampling(
    mask: np.ndarray, shape: tuple[int, ...], axes: Sequence[int]
) -> LinearOperator:
    """``M F``: centred orthonormal FFT over ``axes`` of arrays of ``shape``, then the mask.

    Parameters
    ----------
    mask:
        bool or float ``[k2, k1, k0]`` (or any shape that broadcasts against the trailing
        axes of ``shape``): 1 where a sample was acquired.
    shape:
        ``(coils, z, y, x)`` (any leading batch axes are fine): the operator's input and output.
    axes:
        The encoded axes to transform, e.g. ``(1, 2, 3)``; an axis whose data is already in
        image space (a readout transformed beforehand) is simply left out.

    Returns
    -------
    LinearOperator
        Forward ``[coils, z, y, x] -> [coils, k2, k1, k0]`` (zeros where not sampled), its
        adjoint, and a normal ``F^H M F`` that transforms only the axes along which the
        mask varies (none at all for a mask of ones), without centring modulations.
    """
    import scipy.fft  # here, not at the top: --recon auto imports this module for every stream

    axes = tuple(a % len(shape) for a in axes)
    weights = np.asarray(mask, np.float32)
    varying = _varying_axes(weights, axes, len(shape))
    before, after = centring_phases(shape, axes)
    post = (after * weights).astype(np.complex64)  # mask and k-space modulation in one
    post_adjoint = post.conj()
    before_adjoint = before.conj()
    normal_weights = _normal_weights(weights, varying, len(shape))

    def forward(x: np.ndarray) -> np.ndarray:
        out = scipy.fft.fftn(x * before, axes=axes, norm="ortho", workers=1)
        out *= post
        return out

    def adjoint(y: np.ndarray) -> np.ndarray:
        out = scipy.fft.ifftn(y * post_adjoint, axes=axes, norm="ortho", workers=1)
        out *= before_adjoint
        return out

    def normal(x: np.ndarray) -> np.ndarray:
        if not varying:
            return x * weights
        out = scipy.fft.fftn(x, axes=varying, norm="ortho", workers=1)
        out *= normal_weights
        return scipy.fft.ifftn(out, axes=varying, norm="ortho", workers=1, overwrite_x=True)

    return LinearOperator(tuple(shape), tuple(shape), forward, adjoint, normal, "MF")


def sense_operator(maps: np.ndarray, mask: np.ndarray, axes: Sequence[int]) -> LinearOperator:
    """``M F S``: one image ``[z, y, x]`` to the sampled k-space of every coil.

    Parameters
    ----------
    maps:
        complex64 ``[coils, z, y, x]`` coil sensitivities on the image grid.
    mask, axes:
        As for :func:`cartesian_sampling` (axes of ``[coils, z, y, x]``).
    """
    coils = diagonal(maps, tuple(maps.shape[1:]), "S")
    return cartesian_sampling(mask, tuple(maps.shape), axes) @ coils

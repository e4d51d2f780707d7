"""The non-uniform FFT as a :class:`~.linop.LinearOperator`, with plans cached per trajectory.

``A`` maps a batch of images to samples at non-Cartesian k positions::

    y[b, j] = (1 / sqrt(P)) * sum_p x[b, p] * exp(-2 pi i k_j . p)

with ``p`` the pixel offsets from the centre pixel (``N // 2`` along each axis), ``k_j`` in
cycles per pixel (``-0.5 .. 0.5`` spans the grid) and ``P`` the number of pixels.  On the
Cartesian grid this is the centred, orthonormal DFT the Cartesian kernel inverts, so both paths
give images in the same units.  Axes: images are ``[batch, (z,) y, x]`` (rows y); coordinate
columns are ``(kx, ky[, kz])``, ``kx`` conjugate to the column and ``ky`` to the row.

``A^H A`` is a Toeplitz matrix (it depends on ``p - q`` only): :func:`nufft_operator` gives it
as one FFT pair on a grid twice the size (``normal_apply``), cheaper than a forward and an
adjoint NUFFT, which is what makes conjugate gradients affordable.

The transforms are ``finufft`` single-precision plans with one thread (the engine runs one
worker process per core) and fixed settings (upsampling 1.25, estimate-mode planning), so
the same samples give the same bits in every process, whether a plan was cached or new.
Plans live in a small per-process cache keyed by the trajectory's digest and the batch size:
most sequences repeat one trajectory in every slice and repetition.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .linop import LinearOperator

__all__ = [
    "EPSILON",
    "NufftPlans",
    "cached",
    "clear_caches",
    "nufft_operator",
    "plans_for",
    "toeplitz_kernel",
    "trajectory_digest",
]

EPSILON = 1e-4
"""finufft's requested relative precision (far below the errors of any reconstruction)."""
_CACHE_SIZE = 4
"""Entries of each kind (plans, Toeplitz kernels, density weights) one worker keeps (LRU)."""
_OPTIONS: dict[str, Any] = {
    "nthreads": 1,
    "upsampfac": 1.25,
    "modeord": 0,
    "fftw": 64,
    "showwarn": 0,
}
"""One thread, a fixed upsampling factor (1.25: half the FFT of 2 and a wider kernel, the
faster of the two at this precision) and estimate-mode FFT planning: the same bits in every
process; no warnings on stderr."""


def trajectory_digest(coords: np.ndarray, *extra: object) -> str:
    """A cache key for a trajectory (its bytes, shape and dtype) and any further settings."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(coords)
    digest.update(repr((array.shape, array.dtype.str, extra)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def cached(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()`` once per ``key`` in this process (LRU of a few trajectories' objects).

    Whatever is cached must be a pure function of the key, so a unit gives the same bits
    whether it found its entry or built it.
    """
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    kinds = [k for k in _CACHE if k[0] == key[0]]  # oldest first
    while len(kinds) > _CACHE_SIZE:
        del _CACHE[kinds.pop(0)]
    return value


def clear_caches(kind: str | None = None) -> None:
    """Forget every cached entry, or those of one ``kind`` (tests and benchmarks use it to
    compare both paths, or to time what a cold worker does)."""
    for key in [k for k in _CACHE if kind is None or k[0] == kind]:
        del _CACHE[key]


def _finufft_points(coords: np.ndarray) -> list[np.ndarray]:
    """finufft's point arrays, radians, in its axis order (the slowest image axis first)."""
    scaled = (2 * np.pi) * np.asarray(coords, np.float64)
    return [
        np.ascontiguousarray(scaled[:, axis], np.float32)
        for axis in reversed(range(scaled.shape[1]))
    ]


@dataclass
class NufftPlans:
    """A type-1 (adjoint) and a type-2 (forward) plan on one trajectory, for ``batch`` images."""

    shape: tuple[int, ...]
    batch: int
    points: int
    adjoint_plan: Any
    forward_plan: Any
    arrays: list[np.ndarray]
    """The point arrays (finufft reads them at every execution: they must stay alive)."""

    @classmethod
    def make(cls, coords: np.ndarray, shape: tuple[int, ...], batch: int) -> NufftPlans:
        import finufft

        arrays = _finufft_points(coords)
        adjoint = finufft.Plan(1, shape, batch, eps=EPSILON, isign=1, dtype="complex64", **_OPTIONS)
        forward = finufft.Plan(
            2, shape, batch, eps=EPSILON, isign=-1, dtype="complex64", **_OPTIONS
        )
        adjoint.setpts(*arrays)
        forward.setpts(*arrays)
        return cls(tuple(shape), batch, int(coords.shape[0]), adjoint, forward, arrays)

    @property
    def scale(self) -> np.float32:
        return np.float32(1.0 / np.sqrt(float(np.prod(self.shape))))

    def forward(self, images: np.ndarray) -> np.ndarray:
        """complex64 ``[batch, *shape]`` -> ``[batch, points]``."""
        x = np.ascontiguousarray(images, np.complex64).reshape(self.batch, *self.shape)
        out = self.forward_plan.execute(x if self.batch > 1 else x[0])
        out = out.reshape(self.batch, self.points)
        out *= self.scale
        return out

    def adjoint(self, samples: np.ndarray) -> np.ndarray:
        """complex64 ``[batch, points]`` -> ``[batch, *shape]``."""
        y = np.ascontiguousarray(samples, np.complex64).reshape(self.batch, self.points)
        out = self.adjoint_plan.execute(y if self.batch > 1 else y[0])
        out = out.reshape(self.batch, *self.shape)
        out *= self.scale
        return out


def plans_for(coords: np.ndarray, shape: tuple[int, ...], batch: int, key: str = "") -> NufftPlans:
    """Cached :class:`NufftPlans` (``key``: the trajectory's digest; computed when empty)."""
    key = key or trajectory_digest(coords)
    return cached(
        ("plans", key, tuple(shape), batch), lambda: NufftPlans.make(coords, shape, batch)
    )


def toeplitz_kernel(
    coords: np.ndarray, shape: tuple[int, ...], weights: np.ndarray | None = None
) -> np.ndarray:
    """The FFT of ``A^H W A``'s circulant embedding, float32 ``[2 N_z, 2 N_y, 2 N_x]``.

    ``t(d) = (1/P) sum_j w_j exp(2 pi i k_j . d)`` for offsets ``d`` in ``[-N + 1, N - 1]`` is
    placed circularly on a grid of ``2 N`` per axis (the unused offset ``-N`` left 0, which
    keeps the embedding Hermitian), so its FFT is real.
    """
    import finufft

    doubled = tuple(2 * n for n in shape)
    plan = finufft.Plan(1, doubled, 1, eps=EPSILON, isign=1, dtype="complex128", **_OPTIONS)
    plan.setpts(*[a.astype(np.float64) for a in _finufft_points(coords)])
    strengths = (
        np.ones(coords.shape[0], np.complex128)
        if weights is None
        else weights.astype(np.complex128)
    )
    psf = plan.execute(strengths) / float(np.prod(shape))
    for axis in range(len(shape)):  # offset -N: index 0 of each axis in CMCL order
        index: list[int | slice] = [slice(None)] * len(shape)
        index[axis] = 0
        psf[tuple(index)] = 0
    import scipy.fft  # here: --recon auto imports this module for every stream

    circulant = np.fft.ifftshift(psf)  # offset 0 at index 0
    return np.ascontiguousarray(scipy.fft.fftn(circulant, workers=1).real, np.float32)


def _toeplitz_normal(
    kernel: np.ndarray, shape: tuple[int, ...], batch: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> A^H A x`` as the circulant embedding's FFT pair, pruned: the input fills only
    the first ``N`` points of each doubled axis and only those are wanted back, so each axis is
    transformed where it holds data (the last axis on ``N`` rows, not ``2 N``): 3/4 of the
    full pair's work in 2D."""
    import scipy.fft

    dims = len(shape)

    def normal(x: np.ndarray) -> np.ndarray:
        spectrum = np.asarray(np.reshape(x, (batch, *shape)), np.complex64)
        for step, axis in enumerate(range(-1, -dims - 1, -1)):  # zero-padded to 2 N on the way
            spectrum = scipy.fft.fft(
                spectrum, n=2 * shape[axis], axis=axis, overwrite_x=step > 0, workers=1
            )
        spectrum *= kernel
        for axis in range(-dims, 0):  # back, keeping the first N of each axis
            spectrum = scipy.fft.ifft(spectrum, axis=axis, overwrite_x=True, workers=1)
            index = [slice(None)] * spectrum.ndim
            index[axis] = slice(0, shape[axis])
            spectrum = spectrum[tuple(index)]
        return np.ascontiguousarray(spectrum)

    return normal


def nufft_operator(
    coords: np.ndarray,
    shape: tuple[int, ...],
    batch: int = 1,
    *,
    key: str = "",
    toeplitz: bool = True,
) -> LinearOperator:
    """``A``: images complex64 ``[batch, *shape]`` -> samples ``[batch, points]``.

    Parameters
    ----------
    coords:
        float32 ``[points, dims]`` in cycles per pixel, columns ``(kx, ky[, kz])``.
    shape:
        Image shape ``(y, x)`` or ``(z, y, x)``; ``dims`` must equal its length.
    batch:
        Images transformed together (coils: finufft's ``n_trans``), so a coil-map diagonal
        ``[coils, *shape]`` can sit in front of an operator with ``batch = coils``.
    key:
        The trajectory's digest when the caller has it (saves hashing it again).
    toeplitz:
        Give ``A^H A`` through :func:`toeplitz_kernel` (cached per trajectory).
    """
    if coords.ndim != 2 or coords.shape[1] != len(shape):
        raise ValueError(f"coordinates {coords.shape} do not match an image of shape {shape}")
    key = key or trajectory_digest(coords)
    plans = plans_for(coords, shape, batch, key)
    normal = None
    if toeplitz:
        kernel = cached(("toeplitz", key, tuple(shape)), lambda: toeplitz_kernel(coords, shape))
        normal = _toeplitz_normal(kernel, tuple(shape), batch)
    return LinearOperator(
        (batch, *shape),
        (batch, int(coords.shape[0])),
        plans.forward,
        plans.adjoint,
        normal,
        "NUFFT",
    )

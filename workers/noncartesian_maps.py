"""Coil maps of a non-Cartesian unit from a low-resolution gridded centre of its k-space.

ESPIRiT (:mod:`.espirit`) needs a fully sampled Cartesian calibration region.  Radial and
spiral readouts pass through the centre of k-space many times, so the region is there, only
not on a grid: :func:`gridded_centre` puts it on one.

1. The samples inside a box of ``region + 2 * CALIBRATION_MARGIN`` grid units around the
   centre (``region`` = ``espirit_region``, 24 by default) are taken with their density
   weights (Pipe-Menon of the whole trajectory, the weights gridding uses).
2. Their density-compensated adjoint NUFFT onto a small image of that many pixels across the
   same field of view (the grid unit, ``1 / FOV``, is the same; only the pixels are larger)
   gives a low-resolution coil image; its centred FFT is Cartesian k-space on the grid, of
   which the central ``region`` points per axis are kept (the margin keeps the box edge's
   truncation out of them).
3. ESPIRiT (``maps=espirit``) or the adaptive low-resolution maps (``maps=adaptive``: the
   region Hann-windowed, zero-padded, transformed, divided by its root sum of squares) on
   the grid of the images that use them.

A stack of stars or spirals is gridded partition by partition (the central ``region``
partitions: kz is Cartesian already), 3D radial on a small 3D grid.

When the readouts are too sparse at the edge of the calibration region to grid it (the gap
between neighbouring readouts there, :mod:`.undersampling`, above Nyquist: a uniform-density
spiral below Nyquist, whose centre is as undersampled as its edge), the low-resolution image
is the least-squares solution on the small grid (CG, :data:`CALIBRATION_ITERATIONS` steps)
instead of the adjoint: gridding would alias there.

What depends only on the trajectory (the selection of central samples, their weights, the
small NUFFT plan) is cached per worker by the trajectory's digest, like the NUFFT plans.
Maps depend on the unit's own samples (the engine gives non-Cartesian units no separate
calibration that every worker sees), so they are made per unit and kept by a digest of the
gridded calibration: a unit gets the same bits in any worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .api import ReconContext
from .cartesian_ops import centred_fft
from .cg import least_squares
from .coils import normalised_maps
from .espirit import ESPIRIT_OPTIONS, espirit_maps, espirit_settings
from .fourier import centred_ifft_axis
from .nufft import cached, clear_caches, nufft_operator, trajectory_digest
from .readout_problem import density_weights
from .undersampling import NYQUIST_GAP, readout_gap, unique_readouts

__all__ = [
    "CALIBRATION_ITERATIONS",
    "CALIBRATION_MARGIN",
    "CentreCalibration",
    "READOUT_MAP_METHODS",
    "clear_maps",
    "gridded_centre",
    "readout_maps",
]

CALIBRATION_MARGIN = 4
"""Grid units gridded beyond the calibration region on each side."""
CALIBRATION_ITERATIONS = 10
"""CG steps of the least-squares calibration image (an undersampled centre)."""


@dataclass(frozen=True)
class CentreCalibration:
    """The gridded centre of a unit's k-space."""

    kspace: np.ndarray
    """complex64 ``[coils, n2, n1, n0]``: Cartesian k-space around the centre (``n2 = 1`` for
    2D), grid units ``1 / FOV`` apart."""
    least_squares: bool
    """True when the centre was too sparse to grid and was solved for instead."""


@dataclass(frozen=True)
class _Selection:
    """The central samples of one trajectory (cached by its digest)."""

    inside: np.ndarray
    """bool ``[points]``: samples inside the calibration box."""
    coords: np.ndarray
    """float32 ``[inside, dims]``: their positions in cycles per pixel of the small grid."""
    weights: np.ndarray
    """float32 ``[inside]``: their density weights (grid units); empty when ``sparse``."""
    key: str
    sparse: bool
    """The readouts are more than Nyquist apart at the region's edge."""


def _box(region: tuple[int, ...]) -> tuple[int, ...]:
    """Small-grid pixels per axis: the region plus the margin on both sides."""
    return tuple(n + 2 * CALIBRATION_MARGIN for n in region)


def _select(trajectory: np.ndarray, matrix: tuple[int, ...], region: tuple[int, ...]) -> _Selection:
    """The samples of one plane's (or volume's) readouts inside the calibration box.

    ``trajectory`` float32 ``[readouts, samples, dims]`` in cycles per pixel, columns ``(kx,
    ky[, kz])``; ``matrix`` and ``region`` in the same column order.
    """
    dims = trajectory.shape[2]
    coords = np.ascontiguousarray(trajectory.reshape(-1, dims))
    shape = tuple(reversed(matrix))
    box = np.asarray(_box(region), np.float64)
    grid_units = coords.astype(np.float64) * np.asarray(matrix, np.float64)
    inside = np.all(np.abs(grid_units) < box / 2, axis=1)
    small = np.ascontiguousarray(grid_units[inside] / box, np.float32)
    edge = min(r / m for r, m in zip(region, matrix, strict=True)) / 2  # cycles per pixel
    sparse = readout_gap(unique_readouts(trajectory, None), matrix, edge / 2, edge) > NYQUIST_GAP
    weights = np.empty(0, np.float32)  # a sparse centre is solved for: no weights needed
    if not sparse:
        weights = density_weights(coords, shape, trajectory_digest(coords, shape))[inside]
    return _Selection(inside, small, weights, trajectory_digest(small, _box(region)), sparse)


def _selection(
    trajectory: np.ndarray, matrix: tuple[int, ...], region: tuple[int, ...]
) -> _Selection:
    key = trajectory_digest(trajectory, matrix, region)
    selection: _Selection = cached(
        ("calibration", key), lambda: _select(trajectory, matrix, region)
    )
    return selection


def _low_resolution(
    samples: np.ndarray, selection: _Selection, region: tuple[int, ...]
) -> np.ndarray:
    """complex64 ``[batch, *small grid]`` (slowest axis first): the low-resolution image of the
    central samples ``[batch, inside]``, gridded (density-compensated adjoint NUFFT) or, for
    a sparse centre, solved for by least squares."""
    shape = tuple(reversed(_box(region)))
    batch = samples.shape[0]
    if not selection.sparse:
        op = nufft_operator(selection.coords, shape, batch, key=selection.key, toeplitz=False)
        return op.adjoint(samples * selection.weights)
    op = nufft_operator(selection.coords, shape, batch, key=selection.key)
    return least_squares(op, samples, iterations=CALIBRATION_ITERATIONS).x


def _central(kspace: np.ndarray, region: tuple[int, ...]) -> np.ndarray:
    """The central ``region`` points (column order) of ``[batch, *small grid]`` k-space."""
    index: list[slice] = [slice(None)]
    for n, size in zip(kspace.shape[1:], reversed(region), strict=True):
        start = n // 2 - size // 2
        index.append(slice(start, start + size))
    return kspace[tuple(index)]


def _grid_plane(
    kspace: np.ndarray, trajectory: np.ndarray, matrix: tuple[int, ...], region: tuple[int, ...]
) -> tuple[np.ndarray, bool]:
    """Calibration k-space ``[coils, (n2,) n1, n0]`` of one plane's (or volume's) readouts
    ``[readouts, coils, samples]``."""
    selection = _selection(trajectory, matrix, region)
    data = np.ascontiguousarray(kspace.transpose(1, 0, 2)).reshape(kspace.shape[1], -1)
    image = _low_resolution(data[:, selection.inside], selection, region)
    spectrum = centred_fft(image, tuple(range(1, image.ndim)))
    return _central(spectrum, region), selection.sparse


def _regions(context: ReconContext, region: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """In-plane (or 3D) ``(matrix, region)`` in column order ``(x, y[, z])``."""
    assert context.trajectory is not None
    x, y, z = context.space.recon_matrix
    matrix = (x, y, z)[: context.trajectory.shape[2]]
    return matrix, tuple(min(region, n) for n in matrix)


def gridded_centre(kspace: np.ndarray, context: ReconContext, region: int) -> CentreCalibration:
    """The unit's gridded k-space centre.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]``.
    context:
        With the trajectory (cycles per pixel) and ``readout_partitions``.
    region:
        Calibration points per axis (fewer where the matrix is smaller).

    Returns
    -------
    The calibration ``[coils, n2, n1, n0]``: ``n2`` is 1 for 2D, the region for 3D radial,
    and every encoded partition for a stack (kz is Cartesian: the maps are made plane by
    plane after a transform along kz, see :func:`readout_maps`).
    """
    assert context.trajectory is not None
    trajectory = context.trajectory
    matrix, sizes = _regions(context, region)
    if trajectory.shape[2] == 3:  # 3D radial: one small 3D grid
        cal, sparse = _grid_plane(kspace, trajectory, matrix, sizes)
        return CentreCalibration(np.ascontiguousarray(cal, np.complex64), sparse)
    partitions = context.readout_partitions
    encoded = context.space.encoded_matrix[2]
    if partitions is None or encoded <= 1:
        cal, sparse = _grid_plane(kspace, trajectory, matrix, sizes)
        return CentreCalibration(np.ascontiguousarray(cal[:, np.newaxis], np.complex64), sparse)
    planes = np.zeros((kspace.shape[1], encoded, sizes[1], sizes[0]), np.complex64)
    sparse = False
    for partition in range(encoded):  # kz is Cartesian: each partition on its own
        mine = partitions == partition
        if mine.any():
            planes[:, partition], thin = _grid_plane(kspace[mine], trajectory[mine], matrix, sizes)
            sparse = sparse or thin
    return CentreCalibration(planes, sparse)


def _hann(n: int) -> np.ndarray:
    """float32 ``[n]``: a Hann window over ``n`` points (1 for a single point)."""
    if n <= 1:
        return np.ones(n, np.float32)
    return (np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2).astype(np.float32)


def _adaptive(
    cal: np.ndarray,
    grid: tuple[int, int, int],
    periods: tuple[int, int, int],
    values: dict[str, Any],
) -> np.ndarray:
    """Low-resolution coil images of the Hann-windowed region over their root sum of squares,
    ``[z, y, coils, x]`` (as the Cartesian adaptive maps)."""
    del periods, values
    window = _hann(cal.shape[1])[:, None, None] * _hann(cal.shape[2])[:, None] * _hann(cal.shape[3])
    images = cal * window
    for axis, size in zip((1, 2, 3), grid, strict=True):
        images = centred_ifft_axis(images, axis, size)
    return normalised_maps(images.transpose(1, 2, 0, 3))


def _espirit(
    cal: np.ndarray,
    grid: tuple[int, int, int],
    periods: tuple[int, int, int],
    values: dict[str, Any],
) -> np.ndarray:
    return espirit_maps(cal, grid, periods, espirit_settings(values)).maps


READOUT_MAP_METHODS: dict[
    str,
    Callable[[np.ndarray, tuple[int, int, int], tuple[int, int, int], dict[str, Any]], np.ndarray],
] = {"adaptive": _adaptive, "espirit": _espirit}
"""``maps=`` -> estimator of complex64 ``[z, y, coils, x]`` maps from a gridded centre."""

_MAPS_KIND = "readout maps"
"""Maps of recent calibrations (a digest of the gridded centre) share the worker's small LRU
(:func:`.nufft.cached`): a unit seen again, e.g. a noise-free repetition, reuses them; other
units make their own, so only a few are kept."""


def clear_maps() -> None:
    """Forget the maps this process kept (benchmarks time their making per unit)."""
    clear_caches(_MAPS_KIND)


def readout_maps(
    kspace: np.ndarray,
    context: ReconContext,
    method: str,
    grid: tuple[int, int, int],
    values: dict[str, Any],
    periods: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """complex64 ``[z, y, coils, x]`` coil maps of a non-Cartesian unit on ``grid``.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]``.
    context:
        The unit (trajectory, partitions, encoding space).
    method:
        ``adaptive`` or ``espirit``.
    grid:
        ``(z, y, x)`` pixels of the maps (the recon matrix, or a solve's grid).
    values:
        The kernel's parsed options (``espirit_region`` and the other ESPIRiT settings).
    periods:
        k-space grid lengths the pixels divide (default ``grid``; see :mod:`.espirit`).
    """
    centre = gridded_centre(kspace, context, int(values["espirit_region"]))
    if centre.least_squares:
        context.notes["calibration"] = "least squares: centre undersampled"
    digest = hashlib.blake2b(centre.kspace.tobytes(), digest_size=16).hexdigest()
    settings = tuple(values.get(o.name) for o in ESPIRIT_OPTIONS) if method == "espirit" else ()
    key = (digest, centre.kspace.shape, method, grid, periods, settings)
    make = READOUT_MAP_METHODS[method]
    periods = periods or grid
    assert context.trajectory is not None
    if context.trajectory.shape[2] == 3 or centre.kspace.shape[1] == 1:
        return cached((_MAPS_KIND, *key), lambda: make(centre.kspace, grid, periods, values))
    return cached((_MAPS_KIND, *key), lambda: _by_plane(make, centre.kspace, grid, periods, values))


def _by_plane(
    make: Callable[..., np.ndarray],
    cal: np.ndarray,
    grid: tuple[int, int, int],
    periods: tuple[int, int, int],
    values: dict[str, Any],
) -> np.ndarray:
    """Maps of a stack, plane by plane: the calibration transformed along kz to the grid's
    planes (as the stack's samples are), then 2D maps of each plane.  A stack has few
    partitions, too few for a 3D ESPIRiT kernel along kz."""
    planes = centred_ifft_axis(cal, 1, grid[0])  # [coils, z, n1, n0]
    maps = np.empty((grid[0], grid[1], cal.shape[0], grid[2]), np.complex64)
    for z in range(grid[0]):
        maps[z] = make(planes[:, z : z + 1], (1, *grid[1:]), (1, *periods[1:]), values)[0]
    return maps

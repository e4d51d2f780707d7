"""A non-Cartesian unit's samples arranged for one NUFFT: what gridding, CG and SENSE share.

The engine hands a kernel every readout of a unit (``[readouts, coils, samples]``) with its
trajectory (cycles per pixel) and partition.  Four layouts follow from the trajectory:

- ``plane``: 2D readouts of one slice: one 2D NUFFT, images ``(1, y, x)``;
- ``stack``: a stack of stars or spirals whose partitions repeat one trajectory: the samples
  are transformed along kz first (Cartesian), then every partition is a 2D NUFFT of the same
  plan (the partitions ride in the NUFFT's batch), images ``(depth, y, x)``;
- ``turning``: a stack whose partitions rotate: one 3D NUFFT with kz on the Cartesian
  partition positions and each partition's in-plane density weights, images
  ``(partitions, y, x)``, resampled to the recon depth afterwards;
- ``volume``: 3D readouts (3D radial): one 3D NUFFT, images ``(z, y, x)``.

:func:`readout_problem` makes a :class:`ReadoutProblem`: coordinates, the NUFFT's image
shape and the samples as ``[coils * planes, points]`` in coil-major order, so that coil images
or coil maps ``[coils, z, y, x]`` reshape to the NUFFT's batch with no copy.  Density weights
(Pipe-Menon, :mod:`.density`) and plans are cached per worker by the trajectory's digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parallel_recon.errors import ConfigurationError

from .api import ReconContext
from .density import pipe_menon_weights
from .fourier import centred_ifft_axis
from .nufft import cached, trajectory_digest

__all__ = [
    "LAYOUTS",
    "ReadoutProblem",
    "density_weights",
    "plane_weights",
    "readout_problem",
    "shared_trajectory",
]


def density_weights(coords: np.ndarray, shape: tuple[int, ...], key: str) -> np.ndarray:
    """Pipe-Menon weights of a trajectory, computed once per worker (cached by ``key``)."""
    weights: np.ndarray = cached(("density", key, shape), lambda: pipe_menon_weights(coords, shape))
    return weights


@dataclass(frozen=True)
class ReadoutProblem:
    """One unit's samples ready for a NUFFT.

    Attributes
    ----------
    coords:
        float32 ``[points, dims]``, cycles per pixel, columns ``(kx, ky[, kz])``.
    shape:
        The NUFFT's image shape ``(y, x)`` or ``(z, y, x)``.
    data:
        complex64 ``[coils * planes, points]``, coil-major (``coil * planes + plane``).
    coils, planes:
        Coils, and images per coil the batch carries along z (a ``stack``'s partitions; 1
        otherwise).
    depth:
        Partitions of the output (the recon matrix's z for stacks and 3D, else 1).
    key:
        The trajectory's digest (cache key of plans and weights).
    weights_of:
        Gives float32 ``[points]`` density weights of ``coords`` (Pipe-Menon, cached per
        worker; a ``turning`` stack's per-partition weights): computed only when used.
    layout:
        ``plane``, ``stack``, ``turning`` or ``volume``.
    """

    coords: np.ndarray
    shape: tuple[int, ...]
    data: np.ndarray
    coils: int
    planes: int
    depth: int
    key: str
    weights_of: Callable[[], np.ndarray]
    layout: str

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(z, y, x)`` of one coil's image on the NUFFT's grid."""
        z, y, x = self.shape if len(self.shape) == 3 else (self.planes, *self.shape)
        return (z, y, x)

    @property
    def weights(self) -> np.ndarray:
        """Density weights of the samples (computed on first use, cached per worker)."""
        return self.weights_of()

    def to_depth(self, images: np.ndarray, axis: int = 1) -> np.ndarray:
        """Images with ``grid[0]`` planes along ``axis`` resampled to ``depth`` (a ``turning``
        stack's encoded partitions to the recon matrix's z: zero-filled or cropped in kz)."""
        if images.shape[axis] == self.depth:
            return images
        spectrum = np.fft.fftshift(
            np.fft.fft(np.fft.ifftshift(images, axes=axis), axis=axis, norm="ortho"), axes=axis
        )
        return centred_ifft_axis(spectrum, axis, self.depth)


def shared_trajectory(trajectory: np.ndarray, partitions: np.ndarray) -> np.ndarray | None:
    """The one in-plane trajectory every partition of a stack repeats (same readouts, same
    order), or None when they differ."""
    present = np.unique(partitions)
    first = trajectory[partitions == present[0]]
    for p in present[1:]:
        other = trajectory[partitions == p]
        if other.shape != first.shape or not np.array_equal(other, first):
            return None
    return first


def plane_weights(
    trajectory: np.ndarray, partitions: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Density weights of a stack sample by sample, float32 ``[readouts * samples]``: each
    partition's in-plane weights (kz is Cartesian, one grid unit per partition, so its weight
    along kz is 1)."""
    weights = np.empty(trajectory.shape[:2], np.float32)
    for p in np.unique(partitions):
        plane = np.ascontiguousarray(trajectory[partitions == p].reshape(-1, 2))
        key = trajectory_digest(plane, shape)
        weights[partitions == p] = density_weights(plane, shape, key).reshape(
            -1, trajectory.shape[1]
        )
    return weights.reshape(-1)


def _coil_major(kspace: np.ndarray) -> np.ndarray:
    """``[readouts, coils, samples]`` -> complex64 ``[coils, readouts * samples]`` (a copy)."""
    return np.ascontiguousarray(kspace.transpose(1, 0, 2), np.complex64).reshape(
        kspace.shape[1], -1
    )


def _with_weights(coords: np.ndarray, shape: tuple[int, ...], key: str) -> Callable[[], np.ndarray]:
    return lambda: density_weights(coords, shape, key)


def _single(kspace: np.ndarray, context: ReconContext) -> ReadoutProblem:
    """One NUFFT over every readout: 2D (``plane``) or 3D radial (``volume``)."""
    assert context.trajectory is not None
    x, y, z = context.space.recon_matrix
    dims = context.trajectory.shape[2]
    shape = (y, x) if dims == 2 else (z, y, x)
    coords = np.ascontiguousarray(context.trajectory.reshape(-1, dims))
    key = trajectory_digest(coords, shape)
    return ReadoutProblem(
        coords, shape, _coil_major(kspace), kspace.shape[1], 1, 1 if dims == 2 else z, key,
        _with_weights(coords, shape, key), "plane" if dims == 2 else "volume",
    )  # fmt: skip


def _stack(kspace: np.ndarray, context: ReconContext) -> ReadoutProblem:
    """Partitions repeating one trajectory: kz transformed first, one 2D plan for all."""
    assert context.trajectory is not None and context.readout_partitions is not None
    x, y, depth = context.space.recon_matrix
    partitions = context.readout_partitions
    encoded = context.space.encoded_matrix[2]
    shared = shared_trajectory(context.trajectory, partitions)
    assert shared is not None
    coils, samples = kspace.shape[1], kspace.shape[2]
    grid = np.zeros((encoded, shared.shape[0], coils, samples), np.complex64)
    for p in np.unique(partitions):
        grid[p] = kspace[partitions == p]
    planes = centred_ifft_axis(grid, 0, depth)  # [z, readouts, coils, samples]
    data = np.ascontiguousarray(planes.transpose(2, 0, 1, 3)).reshape(coils * depth, -1)
    coords = np.ascontiguousarray(shared.reshape(-1, 2))
    key = trajectory_digest(coords, (y, x))
    return ReadoutProblem(
        coords, (y, x), data, coils, depth, depth, key, _with_weights(coords, (y, x), key),
        "stack",
    )  # fmt: skip


def _turning(kspace: np.ndarray, context: ReconContext) -> ReadoutProblem:
    """Partitions that rotate: one 3D NUFFT with kz on the Cartesian partition positions."""
    assert context.trajectory is not None and context.readout_partitions is not None
    x, y, depth = context.space.recon_matrix
    partitions = context.readout_partitions
    encoded = context.space.encoded_matrix[2]
    trajectory = context.trajectory
    kz = (partitions.astype(np.float32) - encoded // 2) / encoded
    coords = np.concatenate(
        [trajectory, np.broadcast_to(kz[:, None, None], (*trajectory.shape[:2], 1))], axis=2
    ).reshape(-1, 3)
    coords = np.ascontiguousarray(coords)
    shape = (encoded, y, x)
    key = trajectory_digest(coords, shape)
    weights = cached(
        ("plane weights", key, shape), lambda: plane_weights(trajectory, partitions, (y, x))
    )
    return ReadoutProblem(
        coords, shape, _coil_major(kspace), kspace.shape[1], 1, depth, key, lambda: weights,
        "turning",
    )  # fmt: skip


LAYOUTS: dict[str, Callable[[np.ndarray, ReconContext], ReadoutProblem]] = {
    "plane": _single,
    "stack": _stack,
    "turning": _turning,
    "volume": _single,
}
"""Layout name -> the builder of its :class:`ReadoutProblem`."""


def _layout(context: ReconContext) -> str:
    assert context.trajectory is not None
    if context.trajectory.shape[2] == 3:
        return "volume"
    if context.space.encoded_matrix[2] <= 1:
        return "plane"
    assert context.readout_partitions is not None
    shared = shared_trajectory(context.trajectory, context.readout_partitions)
    return "stack" if shared is not None else "turning"


def readout_problem(kspace: np.ndarray, context: ReconContext) -> ReadoutProblem:
    """The unit's :class:`ReadoutProblem`.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]``.
    context:
        With ``trajectory`` float32 ``[readouts, samples, dims]`` (cycles per pixel) and
        ``readout_partitions``.
    """
    if context.trajectory is None:
        raise ConfigurationError(
            "this kernel reconstructs non-Cartesian units (readouts with trajectories) here; "
            "this unit is a Cartesian grid"
        )
    return LAYOUTS[_layout(context)](kspace, context)

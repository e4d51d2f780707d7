"""The non-Cartesian kernel (``--recon nufft``): radial and spiral readouts through a NUFFT.

One unit is every readout of one slice / contrast / phase / set / repetition, with its
trajectory in cycles per pixel (``context.trajectory``, made by the engine).  Per unit:

1. :func:`coil_images` - the coil images on the recon matrix, by one of two methods:

   - ``method=gridding`` (default): the adjoint NUFFT of the density-weighted samples
     (:mod:`.density`, Pipe-Menon weights computed once per trajectory);
   - ``method=cg``: least squares, ``min |A x - y|^2 + lambda |x|^2``, by conjugate gradients
     on the normal equations (:mod:`.cg`) with ``A^H A`` as a Toeplitz embedding
     (:mod:`.nufft`); ``iterations=N`` (20) and ``lambda=`` (0) control it.  Use it when the
     density compensation's error or undersampling matters.

   2D units use a 2D NUFFT; a stack of stars or spirals (partitions along
   ``kspace_encode_step_2``) is transformed along kz first and then gets one 2D NUFFT per
   partition (one plan for every coil and partition); 3D radial units use a 3D NUFFT.
2. Coil combination exactly as the Cartesian kernel does it (:func:`~.cartesian.images_from_coils`:
   ``combine=rss`` by default, ``combine=adaptive`` with maps from the unit's own low
   resolution images, ``coils=channels``), after the engine's prewhitening.

Plans, density weights and Toeplitz kernels are cached per worker, keyed by the trajectory:
most sequences repeat one trajectory in every slice and repetition.  Each is a pure function
of the trajectory (one thread, fixed iterations), so the bits do not depend on the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image
from parallel_recon.workers import cartesian
from parallel_recon.workers.api import ReconContext
from parallel_recon.workers.cg import conjugate_gradient
from parallel_recon.workers.coils import CENTRE_LINES, normalised_maps
from parallel_recon.workers.density import pipe_menon_weights
from parallel_recon.workers.fourier import centred_ifft_axis
from parallel_recon.workers.image_header import make_image
from parallel_recon.workers.nufft import cached, nufft_operator, trajectory_digest
from parallel_recon.workers.options import (
    KernelOption,
    choice,
    non_negative_float,
    option_table,
    parse_options,
    positive_int,
)
from parallel_recon.workers.trajectory import UNITS

__all__ = [
    "DATA",
    "METHODS",
    "OPTIONS",
    "UnitGeometry",
    "coil_images",
    "density_weights",
    "reconstruct",
    "unit_geometry",
]

DATA = ("noncartesian",)
"""This kernel takes readouts with trajectories (the engine's non-Cartesian units)."""

METHODS = ("gridding", "cg")


def _unit_samples(text: str) -> int:
    """``auto`` (0: sized from the header) or a positive number of samples per coil."""
    return 0 if text == "auto" else positive_int(text)


OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "method",
        "gridding",
        "gridding (density-compensated adjoint NUFFT) or cg (least squares by conjugate gradients)",
        choice(*METHODS),
    ),
    KernelOption("iterations", "20", "method=cg: conjugate-gradient iterations", positive_int),
    KernelOption("lambda", "0", "method=cg: Tikhonov weight", non_negative_float),
    KernelOption(
        "traj_units",
        "auto",
        "unit of the stored trajectories: auto (detected from the first one), " + ", ".join(UNITS),
        choice("auto", *UNITS),
    ),
    KernelOption(
        "unit_samples",
        "auto",
        "samples per coil one unit may hold (auto: from the header's encoded matrix)",
        _unit_samples,
    ),
    *cartesian.OPTIONS,
)
"""The options of this kernel; ``traj_units`` and ``unit_samples`` are applied by the engine's
reader, the others here."""

_TABLE = option_table(OPTIONS)


def _setting(context: ReconContext, name: str) -> Any:
    given = {name: context.plan.options[name]} if name in context.plan.options else {}
    return parse_options(given, {name: _TABLE[name]}, "nufft")[name]


@dataclass(frozen=True)
class UnitGeometry:
    """How a unit's readouts map to images.

    Attributes
    ----------
    shape:
        The NUFFT's image shape: ``(y, x)``, or ``(z, y, x)`` for 3D radial and for a stack
        whose partitions do not share one trajectory.
    partitions:
        Encoded partitions of a stack of stars or spirals (1 otherwise).
    depth:
        Partitions of the output (the recon matrix's z for stacks and 3D, else 1).
    """

    shape: tuple[int, ...]
    partitions: int
    depth: int


def unit_geometry(context: ReconContext, dims: int) -> UnitGeometry:
    """The unit's image geometry from its encoding space and trajectory dimensions."""
    x, y, z = context.space.recon_matrix
    partitions = context.space.encoded_matrix[2]
    if dims == 3:
        return UnitGeometry((z, y, x), 1, z)
    return UnitGeometry((y, x), partitions, z if partitions > 1 else 1)


def density_weights(coords: np.ndarray, shape: tuple[int, ...], key: str) -> np.ndarray:
    """Pipe-Menon weights of a trajectory, computed once per worker (cached by ``key``)."""
    weights: np.ndarray = cached(("density", key, shape), lambda: pipe_menon_weights(coords, shape))
    return weights


def _solve(
    coords: np.ndarray,
    shape: tuple[int, ...],
    samples: np.ndarray,
    context: ReconContext,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``[batch, points]`` samples on one trajectory -> ``[batch, *shape]`` images.

    ``weights``: density weights when the caller knows better than Pipe-Menon on ``coords``
    (a stack's Cartesian kz axis)."""
    key = trajectory_digest(coords, shape)
    batch = samples.shape[0]
    op = nufft_operator(coords, shape, batch, key=key, toeplitz=False)
    if _setting(context, "method") == "gridding":
        if weights is None:
            weights = density_weights(coords, shape, key)
        samples *= weights  # the caller's own copy
        return op.adjoint(samples)
    normal_op = nufft_operator(coords, shape, batch, key=key)
    result = conjugate_gradient(
        normal_op.normal,
        op.adjoint(samples),
        iterations=int(_setting(context, "iterations")),
        lam=float(_setting(context, "lambda")),
    )
    return result.x


def _shared_trajectory(trajectory: np.ndarray, partitions: np.ndarray) -> np.ndarray | None:
    """The one in-plane trajectory every partition of a stack repeats (same readouts, same
    order), or None when they differ."""
    present = np.unique(partitions)
    first = trajectory[partitions == present[0]]
    for p in present[1:]:
        other = trajectory[partitions == p]
        if other.shape != first.shape or not np.array_equal(other, first):
            return None
    return first


def _plane_weights(
    trajectory: np.ndarray, partitions: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Density weights of a stack sample by sample: each partition's in-plane weights (kz is
    Cartesian, one grid unit per partition, so its weight along kz is 1)."""
    weights = np.empty(trajectory.shape[:2], np.float32)
    for p in np.unique(partitions):
        plane = np.ascontiguousarray(trajectory[partitions == p].reshape(-1, 2))
        key = trajectory_digest(plane, shape)
        weights[partitions == p] = density_weights(plane, shape, key).reshape(
            -1, trajectory.shape[1]
        )
    return weights.reshape(-1)


def _stack_images(kspace: np.ndarray, context: ReconContext, geometry: UnitGeometry) -> np.ndarray:
    """Coil images ``[coils, z, y, x]`` of a stack of stars or spirals."""
    assert context.trajectory is not None and context.readout_partitions is not None
    partitions = context.readout_partitions
    shared = _shared_trajectory(context.trajectory, partitions)
    coils, samples = kspace.shape[1], kspace.shape[2]
    if shared is None:  # partitions rotate: one 3D NUFFT with kz on the Cartesian positions
        kz = (partitions.astype(np.float32) - geometry.partitions // 2) / geometry.partitions
        weights = _plane_weights(context.trajectory, partitions, geometry.shape)
        coords = np.concatenate(
            [
                context.trajectory,
                np.broadcast_to(kz[:, None, None], (*context.trajectory.shape[:2], 1)),
            ],
            axis=2,
        ).reshape(-1, 3)
        data = kspace.transpose(1, 0, 2).copy().reshape(coils, -1)
        shape = (geometry.partitions, *geometry.shape)
        images = _solve(np.ascontiguousarray(coords), shape, data, context, weights)
        if geometry.depth == geometry.partitions:
            return images
        spectrum = np.fft.fftshift(
            np.fft.fft(np.fft.ifftshift(images, axes=1), axis=1, norm="ortho"), axes=1
        )
        return centred_ifft_axis(spectrum, 1, geometry.depth)
    per = shared.shape[0]
    grid = np.zeros((geometry.partitions, per, coils, samples), np.complex64)
    for p in np.unique(partitions):
        grid[p] = kspace[partitions == p]
    planes = centred_ifft_axis(grid, 0, geometry.depth)  # [z, readouts, coils, samples]
    data = np.ascontiguousarray(planes.transpose(0, 2, 1, 3)).reshape(geometry.depth * coils, -1)
    images = _solve(np.ascontiguousarray(shared.reshape(-1, 2)), geometry.shape, data, context)
    return images.reshape(geometry.depth, coils, *geometry.shape).transpose(1, 0, 2, 3)


def coil_images(kspace: np.ndarray, context: ReconContext) -> np.ndarray:
    """complex64 ``[coils, z, y, x]`` coil images of a non-Cartesian unit.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]``.
    context:
        With ``trajectory`` float32 ``[readouts, samples, dims]`` (cycles per pixel) and
        ``readout_partitions``.
    """
    trajectory = context.trajectory
    if trajectory is None:
        raise ConfigurationError(
            "the nufft kernel reconstructs non-Cartesian units (readouts with trajectories); "
            "this unit is a Cartesian grid"
        )
    dims = trajectory.shape[2]
    geometry = unit_geometry(context, dims)
    if dims == 2 and geometry.partitions > 1:
        return _stack_images(kspace, context, geometry)
    coils = kspace.shape[1]
    coords = np.ascontiguousarray(trajectory.reshape(-1, dims))
    data = kspace.transpose(1, 0, 2).copy().reshape(coils, -1)
    images = _solve(coords, geometry.shape, data, context)
    return images.reshape(coils, geometry.depth, *geometry.shape[-2:])


def _maps(kspace: np.ndarray, context: ReconContext) -> np.ndarray:
    """Coil sensitivities for ``combine=adaptive``: the unit's own low-resolution coil images
    (samples within ``CENTRE_LINES / 2`` grid units of the centre, Hann-weighted, gridded),
    normalised like the Cartesian kernel's maps."""
    assert context.trajectory is not None
    x = context.space.recon_matrix[0]
    radius = np.sqrt((context.trajectory[..., :2] ** 2).sum(axis=-1)) * x / (CENTRE_LINES / 2)
    window = np.where(radius < 1, np.cos(0.5 * np.pi * radius) ** 2, 0.0).astype(np.float32)
    lowres_context = ReconContext(
        plan=context.plan,
        unit=context.unit,
        trajectory=context.trajectory,
        readout_partitions=context.readout_partitions,
    )
    lowres = coil_images(kspace * window[:, None, :], _with_method(lowres_context, "gridding"))
    return normalised_maps(lowres.transpose(1, 2, 0, 3))


def _with_method(context: ReconContext, method: str) -> ReconContext:
    from dataclasses import replace

    options = {**context.plan.options, "method": method}
    return replace(context, plan=replace(context.plan, options=options))


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """One image ``[channels, z, y, x]`` per unit: gridding or CG, then coil combination.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]`` (prewhitened by the engine when it had a
        noise scan).
    context:
        Plan, unit and the unit's trajectory.
    """
    method = str(_setting(context, "method"))
    context.notes["kernel"] = "nufft"
    context.notes["why"] = method
    combine = str(_setting(context, "combine"))
    maps = _maps(kspace, context) if combine == "adaptive" else None
    images = coil_images(kspace, context)
    history = (
        "NUFFT",
        "GRIDDING" if method == "gridding" else "CG",
        cartesian.COMBINE_HISTORY["rss"],
    )
    output, _ = cartesian.choose(context)
    if combine == "rss" and _setting(context, "coils") == "rss" and not output.needs_phase:
        # the common case: the magnitude needs no coil-last copy of the images
        power = np.einsum("c...,c...->...", images.real, images.real)
        power += np.einsum("c...,c...->...", images.imag, images.imag)
        data = np.sqrt(power)[np.newaxis]
        return [make_image(output.convert(data), context, output.image_type, history)]
    return cartesian.images_from_coils(
        np.ascontiguousarray(images.transpose(1, 2, 0, 3)), context, history, maps=maps
    )

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
   ``combine=rss`` by default, ``combine=adaptive`` (also chosen by giving ``maps=``) with
   ``maps=adaptive|espirit`` made from the unit's gridded k-space centre
   (:mod:`.noncartesian_maps`), ``coils=channels``), after the engine's prewhitening;
   ``save_maps=on`` adds the maps as an image series, as in the Cartesian kernels.

``partial_fourier=`` and ``pocs_iterations=`` are refused (usage error): radial and spiral
readouts cover k-space symmetrically, there is no missing half to recover.

Plans, density weights and Toeplitz kernels are cached per worker, keyed by the trajectory:
most sequences repeat one trajectory in every slice and repetition.  Each is a pure function
of the trajectory (one thread, fixed iterations), so the bits do not depend on the cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image
from parallel_recon.workers import cartesian
from parallel_recon.workers.api import ReconContext
from parallel_recon.workers.cg import conjugate_gradient
from parallel_recon.workers.image_header import make_image
from parallel_recon.workers.noncartesian_maps import readout_maps
from parallel_recon.workers.nufft import nufft_operator
from parallel_recon.workers.options import (
    KernelOption,
    choice,
    non_negative_float,
    option_table,
    parse_options,
    positive_int,
)
from parallel_recon.workers.partial_fourier import PARTIAL_FOURIER_OPTIONS
from parallel_recon.workers.readout_problem import ReadoutProblem, readout_problem
from parallel_recon.workers.trajectory import UNITS

__all__ = [
    "CARTESIAN_ONLY",
    "DATA",
    "METHODS",
    "OPTIONS",
    "READOUT_OPTIONS",
    "coil_images",
    "reconstruct",
    "refuse_cartesian_only",
    "unit_maps",
]

DATA = ("noncartesian",)
"""This kernel takes readouts with trajectories (the engine's non-Cartesian units)."""

METHODS = ("gridding", "cg")

CARTESIAN_ONLY = tuple(o.name for o in PARTIAL_FOURIER_OPTIONS)
"""Options of the Cartesian kernels that mean nothing for readouts (partial Fourier)."""

_NO_PARTIAL_FOURIER = (
    "radial and spiral readouts cover k-space symmetrically: there is no partial-Fourier "
    "half to recover (the option is for Cartesian data); remove it"
)


def _unit_samples(text: str) -> int:
    """``auto`` (0: sized from the header) or a positive number of samples per coil."""
    return 0 if text == "auto" else positive_int(text)


def _refused(text: str) -> None:
    """The parser of an option this kernel refuses: only its empty default passes."""
    if text:
        raise ValueError(_NO_PARTIAL_FOURIER)


READOUT_OPTIONS: tuple[KernelOption, ...] = (
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
)
"""Options the engine's reader applies to readouts (every kernel that takes them has them)."""

OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "method",
        "gridding",
        "gridding (density-compensated adjoint NUFFT) or cg (least squares by conjugate gradients)",
        choice(*METHODS),
    ),
    KernelOption("iterations", "20", "method=cg: conjugate-gradient iterations", positive_int),
    KernelOption("lambda", "0", "method=cg: Tikhonov weight", non_negative_float),
    *READOUT_OPTIONS,
    *(o for o in cartesian.OPTIONS if o.name not in CARTESIAN_ONLY),
    *(KernelOption(name, "", "not for radial or spiral data", _refused) for name in CARTESIAN_ONLY),
)
"""The options of this kernel; ``traj_units`` and ``unit_samples`` are applied by the engine's
reader, the others here."""

_TABLE = option_table(OPTIONS)


def _setting(context: ReconContext, name: str) -> Any:
    given = {name: context.plan.options[name]} if name in context.plan.options else {}
    return parse_options(given, {name: _TABLE[name]}, "nufft")[name]


def refuse_cartesian_only(context: ReconContext) -> None:
    """One clear error when a Cartesian-only option (partial Fourier) reaches a non-Cartesian
    unit (``--recon sense`` and ``auto`` accept it for their Cartesian units)."""
    for name in CARTESIAN_ONLY:
        if name in context.plan.options:
            raise ConfigurationError(
                f"--recon-option {name}={context.plan.options[name]}: {_NO_PARTIAL_FOURIER}"
            )


def _solve(problem: ReadoutProblem, context: ReconContext) -> np.ndarray:
    """Coil images ``[coils * planes, *shape]`` of a problem, by gridding or CG."""
    batch = problem.data.shape[0]
    op = nufft_operator(problem.coords, problem.shape, batch, key=problem.key, toeplitz=False)
    if _setting(context, "method") == "gridding":
        return op.adjoint(problem.data * problem.weights)
    normal_op = nufft_operator(problem.coords, problem.shape, batch, key=problem.key)
    result = conjugate_gradient(
        normal_op.normal,
        op.adjoint(problem.data),
        iterations=int(_setting(context, "iterations")),
        lam=float(_setting(context, "lambda")),
    )
    return result.x


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
    problem = readout_problem(kspace, context)
    images = _solve(problem, context).reshape(problem.coils, *problem.grid)
    return problem.to_depth(images)


def unit_maps(kspace: np.ndarray, context: ReconContext) -> np.ndarray:
    """Coil maps ``[z, y, coils, x]`` on the recon grid by the ``maps=`` method, from the
    unit's gridded k-space centre (:mod:`.noncartesian_maps`)."""
    values = {o.name: _setting(context, o.name) for o in cartesian.MAPS_OPTIONS}
    x, y, depth = context.space.recon_matrix
    partitions = context.space.encoded_matrix[2]
    assert context.trajectory is not None
    if context.trajectory.shape[2] == 3:  # 3D radial: kz in units of the recon matrix
        partitions = depth
    elif partitions <= 1:
        depth = 1
    periods = (max(depth, partitions), y, x)  # a stack's kz steps: its encoded partitions
    return readout_maps(kspace, context, values["maps"], (depth, y, x), values, periods)


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
    if context.trajectory is None:
        raise ConfigurationError(
            "the nufft kernel reconstructs non-Cartesian units (readouts with trajectories); "
            "this unit is a Cartesian grid"
        )
    refuse_cartesian_only(context)
    method = str(_setting(context, "method"))
    context.notes["kernel"] = "nufft"
    context.notes["why"] = method
    combine = cartesian.combination(context)
    wanted = combine == "adaptive" or bool(_setting(context, "save_maps"))
    maps = unit_maps(kspace, context) if wanted else None
    images = coil_images(kspace, context)
    history = (
        "NUFFT",
        "GRIDDING" if method == "gridding" else "CG",
        cartesian.COMBINE_HISTORY["rss"],
    )
    output, _ = cartesian.choose(context)
    plain = combine == "rss" and _setting(context, "coils") == "rss" and maps is None
    if plain and not output.needs_phase:
        # the common case: the magnitude needs no coil-last copy of the images
        power = np.einsum("c...,c...->...", images.real, images.real)
        power += np.einsum("c...,c...->...", images.imag, images.imag)
        data = np.sqrt(power)[np.newaxis]
        return [make_image(output.convert(data), context, output.image_type, history)]
    return cartesian.images_from_coils(
        np.ascontiguousarray(images.transpose(1, 2, 0, 3)), context, history, maps, combine
    )

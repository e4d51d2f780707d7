"""CG-SENSE: one image per unit from undersampled multi-coil k-space and coil maps.

Each coil measured ``y_c = E S_c x``: the object ``x`` weighted by the coil's sensitivity
``S_c`` and encoded by ``E`` (here the Cartesian sampled FFT of :mod:`.cartesian_ops`; a
NUFFT for non-Cartesian data).  The image is the regularised least-squares solution

    ``x = argmin sum_c |E S_c x - y_c|^2 + lambda |x|^2``,

found by conjugate gradients on the normal equations (:mod:`.cg`, Pruessmann et al. 2001).
:func:`sense_solve` takes the encoding operator as a parameter: only the operator differs
between trajectories.  Any sampling pattern works (uniform, CAIPIRINHA, variable density): the
mask is the set of lines the engine saw arrive.

The kernel takes Cartesian units and non-Cartesian ones (radial, spiral: ``DATA``); for the
latter the encoding is the NUFFT (:mod:`.noncartesian_sense`), the maps come from the unit's
gridded k-space centre, and the rest below is the same.  Per Cartesian unit:

1. coil maps (``maps=espirit`` by default, :mod:`.coil_maps`) on the grid of the solve:
   encoded k1 x k2, recon-space readout; computed once per calibration and reused by later
   repetitions of the slice;
2. the readout of every acquired line transformed and cropped to the recon field of view (the
   mask does not depend on k0, so the solve needs no readout transform per iteration);
3. CG with ``iterations=`` steps and Tikhonov ``lambda=`` (relative to the operator: with
   normalised maps and an orthonormal FFT its largest eigenvalue is about 1, so ``lambda`` does
   not depend on the data's scale);
4. partial Fourier recovery of the combined image (:mod:`.partial_fourier`), then the recon
   matrix.

The data was prewhitened by the engine (noise scan), so the least-squares weighting is right.
Deterministic: the same unit gives the same bits in any worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image

from .api import EncodingSpace, ReconContext, ReconPlan
from .cartesian import OUTPUTS
from .cartesian_ops import centred_fft, sense_operator
from .cg import CGResult, least_squares
from .coil_maps import MapGrid, estimate_maps, maps_image, maps_options, shared_maps_bytes
from .fourier import centred_ifft_axis, readout_images
from .image_header import make_image
from .linop import LinearOperator
from .noncartesian import READOUT_OPTIONS
from .noncartesian_sense import readout_sense
from .options import (
    COMMON_OPTIONS,
    KernelOption,
    non_negative_float,
    option_table,
    parse_options,
    positive_int,
)
from .partial_fourier import PARTIAL_FOURIER_OPTIONS, describe, detect, recover, recoverable
from .sense_problem import SenseProblem

__all__ = ["DATA", "OPTIONS", "calibration_cache_bytes", "reconstruct", "sense_solve"]

DATA = ("cartesian", "noncartesian")
"""Grid units and readouts with trajectories alike: only the encoding operator differs."""

OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "lambda",
        "0.0001",
        "Tikhonov weight of |x|^2, relative to the SENSE operator (largest eigenvalue about 1)",
        non_negative_float,
    ),
    KernelOption("iterations", "30", "conjugate-gradient iterations", positive_int),
    *maps_options("espirit"),
    *PARTIAL_FOURIER_OPTIONS,
    *READOUT_OPTIONS,
)
"""The options of this kernel (``--recon-option``); ``partial_fourier`` and
``pocs_iterations`` are refused for non-Cartesian units, ``traj_units`` and ``unit_samples``
are the engine's for them."""

_TABLE = option_table(COMMON_OPTIONS, OPTIONS)


def sense_solve(
    encoding: LinearOperator, data: np.ndarray, *, lam: float, iterations: int
) -> CGResult:
    """``argmin |A x - y|^2 + lam |x|^2`` by CG, for any SENSE operator ``A``.

    Parameters
    ----------
    encoding:
        The SENSE operator ``image -> coil data`` (Cartesian: :func:`.cartesian_ops.sense_operator`;
        non-Cartesian: a NUFFT composed with the same coil maps).
    data:
        Coil data of the operator's output shape.
    lam, iterations:
        Tikhonov weight and CG iterations.
    """
    return least_squares(encoding, data, iterations=iterations, lam=lam)


def _solve_axes(space: EncodingSpace) -> tuple[int, ...]:
    """Axes of ``[coils, z, y, x]`` the sampling mask can vary along (k2 only in 3D)."""
    return (1, 2) if space.kspace_shape[0] > 1 else (2,)


def _to_recon_matrix(image: np.ndarray, space: EncodingSpace) -> np.ndarray:
    """``[z, y, x]`` on the encoded k2 x k1 grid -> the recon matrix (zero-filled
    interpolation or a centred crop, as the Cartesian kernel fits its axes)."""
    _, y, z = space.recon_matrix
    for axis, size in ((0, z), (1, y)):
        if image.shape[axis] != size:
            image = centred_ifft_axis(centred_fft(image, (axis,)), axis, size)
    return image


def _missing_centre(context: ReconContext) -> str:
    return (
        "SENSE needs coil maps from fully sampled central k-space: expected calibration lines "
        "(IS_PARALLEL_CALIBRATION or IS_PARALLEL_CALIBRATION_AND_IMAGING) for slice "
        f"{context.unit.key.slice}, or a fully sampled centre in the unit itself"
    )


def _cartesian_problem(
    kspace: np.ndarray, context: ReconContext, values: dict[str, Any]
) -> SenseProblem:
    """Sampled FFT, ESPIRiT maps of the calibration, partial Fourier recovery after the solve."""
    space = context.space
    sampled = (
        context.sampled if context.sampled is not None else np.abs(kspace).sum(axis=(2, 3)) > 0
    )
    grid = MapGrid.encoded(space)
    try:
        maps = estimate_maps(kspace, context, values["maps"], grid, values)
    except ConfigurationError as exc:
        if context.calibration is None:
            raise ConfigurationError(f"{_missing_centre(context)} ({exc})") from None
        raise
    by_coil = np.ascontiguousarray(maps.transpose(2, 0, 1, 3))  # [coils, z, y, x]
    data = readout_images(kspace, sampled, grid.shape[2]).transpose(2, 0, 1, 3)
    encoding = sense_operator(by_coil, sampled[:, :, None], _solve_axes(space))
    extents, warning = recoverable(
        detect(space, context.reference_head, space.kspace_shape, grid.shape)
    )
    if warning:
        context.notes["warning"] = warning
    method = values["partial_fourier"]

    def finish(image: np.ndarray) -> np.ndarray:
        if extents:
            image = recover(image[:, :, None], extents, method, values["pocs_iterations"])[:, :, 0]
        return _to_recon_matrix(image, space)

    acquired = int(sampled.sum())
    why = f"{sampled.size / max(acquired, 1):.2g}x undersampled, {values['maps']} maps"
    if extents:
        why += f", partial Fourier {describe(extents)} ({method})"
    return SenseProblem(encoding, data, maps, finish, why)


def calibration_cache_bytes(plan: ReconPlan, coils: int) -> int:
    """Room for a calibration's maps on the encoded grid, shared by the workers (the engine
    sizes its derived store from this; see :mod:`.api`)."""
    return shared_maps_bytes(plan, coils, MapGrid.encoded)


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """One combined image ``[1, z, y, x]`` per unit (and the maps, with ``save_maps=on``).

    Parameters
    ----------
    kspace:
        Cartesian units: complex64 ``[k2, k1, coils, k0]``; non-Cartesian units (with
        ``context.trajectory``): ``[readouts, coils, samples]``.
    context:
        Plan, unit, calibration or trajectory.
    """
    values: dict[str, Any] = parse_options(context.plan.options, _TABLE, "sense")
    output = OUTPUTS.get(context.plan.output)
    if output is None:
        raise ConfigurationError(
            f"sense recon: expected output {', '.join(OUTPUTS)}, found {context.plan.output!r}"
        )
    prepare = _cartesian_problem if context.trajectory is None else readout_sense
    problem = prepare(kspace, context, values)
    result = sense_solve(
        problem.encoding, problem.data, lam=values["lambda"], iterations=values["iterations"]
    )
    image = problem.finish(result.x)
    context.notes["kernel"] = "sense"
    context.notes["why"] = problem.why
    encoding = "SENSE" if context.trajectory is None else "NUFFT SENSE"
    history = (values["maps"].upper(), *encoding.split())
    images = [make_image(output.convert(image[np.newaxis]), context, output.image_type, history)]
    if values["save_maps"]:
        images.append(maps_image(problem.maps, context, values["maps"]))
    return images

"""The SENSE encoding of a non-Cartesian unit: a NUFFT composed with the coil-map diagonal.

For radial and spiral readouts ``E`` in :mod:`.sense`'s ``y_c = E S_c x`` is the NUFFT
(:mod:`.nufft`) instead of the Cartesian sampled FFT::

    A = nufft_operator(coords, shape, batch=coils * planes) @ reshape @ diagonal(maps, grid)

(the reshape only regroups ``[coils, z, y, x]`` into the NUFFT's batch of 2D planes for a
stack of stars or spirals).  ``A^H A`` goes through the NUFFT's Toeplitz embedding, so a CG
iteration costs two FFTs on a twice-oversampled grid per coil and plane.  The maps are made
from the unit's gridded k-space centre (:mod:`.noncartesian_maps`) on the grid of the solve.

Units and ``lambda``: the NUFFT is scaled so that a Cartesian grid gives the orthonormal DFT
(``A^H A`` is the sampling density in samples per grid cell: 1 on the Nyquist grid), so the
Tikhonov weight means the same as for Cartesian SENSE, and the same as BART's
``pics -l2 -r LAMBDA -w 1`` with its trajectory in grid units (checked by the tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .api import ReconContext
from .linop import LinearOperator, diagonal, reshape
from .noncartesian import refuse_cartesian_only
from .noncartesian_maps import readout_maps
from .nufft import nufft_operator
from .readout_problem import ReadoutProblem, readout_problem
from .sense_problem import SenseProblem
from .undersampling import describe_gap, edge_gap

__all__ = ["readout_encoding", "readout_sense"]


def readout_encoding(problem: ReadoutProblem, maps: np.ndarray) -> LinearOperator:
    """``A = NUFFT @ reshape @ diagonal(maps)``: images ``problem.grid`` -> samples.

    Parameters
    ----------
    problem:
        The unit's samples and trajectory (:func:`.readout_problem.readout_problem`).
    maps:
        complex64 ``[coils, z, y, x]`` on ``problem.grid``.
    """
    coils = problem.coils
    batch = coils * problem.planes
    nufft = nufft_operator(problem.coords, problem.shape, batch, key=problem.key)
    weights = diagonal(maps, problem.grid, "S")
    return nufft @ reshape(weights.oshape, nufft.ishape) @ weights


def _periods(problem: ReadoutProblem, context: ReconContext) -> tuple[int, int, int]:
    """k-space grid lengths of the solve's pixels: a stack's kz steps are its encoded
    partitions (zero-filled or cropped to the recon depth)."""
    z, y, x = problem.grid
    if problem.layout == "stack":
        return (max(z, context.space.encoded_matrix[2]), y, x)
    return (z, y, x)


def readout_sense(
    kspace: np.ndarray, context: ReconContext, values: dict[str, Any]
) -> SenseProblem:
    """The SENSE problem of a non-Cartesian unit.

    Parameters
    ----------
    kspace:
        complex64 ``[readouts, coils, samples]`` (prewhitened by the engine).
    context:
        The unit, with its trajectory.
    values:
        The sense kernel's parsed options (``maps`` and the ESPIRiT settings are read).
    """
    refuse_cartesian_only(context)
    problem = readout_problem(kspace, context)
    grid = problem.grid
    maps = readout_maps(kspace, context, values["maps"], grid, values, _periods(problem, context))
    by_coil = np.ascontiguousarray(maps.transpose(2, 0, 1, 3))
    assert context.trajectory is not None
    x, y, z = context.space.recon_matrix
    gap = edge_gap(context.trajectory, context.readout_partitions, (x, y, z))
    why = f"{context.space.trajectory} {describe_gap(gap)}, {values['maps']} maps"
    if "calibration" in context.notes:
        why += f" (calibration by {context.notes.pop('calibration')})"
    return SenseProblem(
        readout_encoding(problem, by_coil),
        problem.data,
        maps,
        lambda image: problem.to_depth(image, axis=0),
        why,
    )

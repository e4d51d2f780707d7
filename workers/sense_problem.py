"""One unit's SENSE problem: the part of CG-SENSE that differs between trajectories.

:mod:`.sense` prepares it from a Cartesian unit (sampled FFT, maps of the calibration lines,
partial Fourier recovery afterwards), :mod:`.noncartesian_sense` from readouts (NUFFT, maps of
the gridded k-space centre); the solve and the images are then the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .linop import LinearOperator

__all__ = ["SenseProblem"]


@dataclass(frozen=True)
class SenseProblem:
    """The encoding, its data and what turns the solution into the unit's image."""

    encoding: LinearOperator
    """Image on the solve's grid -> coil data (Cartesian: hybrid k-space; readouts: samples)."""
    data: np.ndarray
    """Coil data of the operator's output shape."""
    maps: np.ndarray
    """complex64 ``[z, y, coils, x]`` on the solve's grid (what ``save_maps=on`` returns)."""
    finish: Callable[[np.ndarray], np.ndarray]
    """The solution -> the image ``[z, y, x]`` on the recon matrix."""
    why: str
    """For the profile: how the unit was sampled and which maps were used."""

"""k-space trajectories: the unit they are stored in, and radial spokes made from encode steps.

ISMRMRD fixes no unit for an acquisition's ``traj``.  Four conventions are in use, and each
one converts to the unit every kernel works in, **cycles per pixel** of the recon space
(``-0.5 .. 0.5`` spans the grid; ``kx`` along the image columns, ``ky`` along the rows, ``kz``
along the partitions):

============================  ==========================================  ===============
``traj_units=``               stored value ``k``                          edge of k-space
============================  ==========================================  ===============
``cycles_per_pixel``          ``k`` itself                                ``0.5``
``grid``                      cycles per field of view (BART, JEMRIS)     ``N / 2``
``per_m``                     cycles per metre                            ``N / (2 FOV)``
``rad_per_m``                 radians per metre (``2 pi`` cycles)         ``pi N / FOV``
============================  ==========================================  ===============

with ``N`` and ``FOV`` the recon space's matrix and field of view along each axis (the field
of view also absorbs readout oversampling: a readout sampled twice as finely covers the same
k-space at twice the density, and the image is the recon field of view).

Detection rule (when ``traj_units`` is not given): the largest coordinate of the first
trajectory relative to each convention's edge, ``q = max over samples and axes of
|k / edge|``, is computed; a convention fits when ``0.6 <= q <= 1.05`` (a trajectory reaches
most of the way to the edge of k-space along some axis, and not beyond it: a radial spoke
along an axis, a spiral's outer turn and a Cartesian line all give about 1).  Exactly one
fitting convention is used; none, or several (e.g. ``grid`` and ``per_m`` with a field of
view near 1 m), is an error that names the value found and the option.  After conversion
no point may lie beyond ``0.5 * 1.05`` cycles per pixel on any axis.

Radial data without stored trajectories (header trajectory ``radial`` or ``goldenangle``)
gets its spokes from ``kspace_encode_step_1``, as Gadgetron does: spoke ``i`` at angle
``i * 180 / spokes`` degrees (``spokes`` from the header's encoding limits) or ``i`` times the
golden angle, 111.246 degrees; sample ``s`` of ``S`` at ``(s - S/2) / S`` cycles per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DETECT_RANGE",
    "EDGE_TOLERANCE",
    "GOLDEN_ANGLE_DEG",
    "UNITS",
    "AxisScale",
    "check_inside_grid",
    "detect_units",
    "radial_spoke",
    "unit_scales",
]

UNITS = ("cycles_per_pixel", "grid", "per_m", "rad_per_m")
"""The accepted ``traj_units`` values."""

DETECT_RANGE = (0.6, 1.05)
"""A convention fits when the first trajectory's largest coordinate is this fraction of its edge."""
EDGE_TOLERANCE = 1.05
"""Points may reach this factor beyond 0.5 cycles per pixel (rounding, gradient overshoot)."""
GOLDEN_ANGLE_DEG = 180.0 * (math.sqrt(5.0) - 1.0) / 2.0
"""111.246... degrees: each spoke turns by this much from the previous one."""


@dataclass(frozen=True)
class AxisScale:
    """One image axis: its recon matrix size and field of view (mm; 0 when unknown)."""

    matrix: int
    fov_mm: float


def _factor(units: str, axis: AxisScale) -> float | None:
    """Stored value -> cycles per pixel along one axis (None: the header lacks the FOV)."""
    if units == "cycles_per_pixel":
        return 1.0
    if units == "grid":
        return 1.0 / axis.matrix
    if axis.fov_mm <= 0:
        return None
    pixel_m = axis.fov_mm / 1000.0 / axis.matrix
    return pixel_m if units == "per_m" else pixel_m / (2 * math.pi)


def unit_scales(units: str, axes: Sequence[AxisScale]) -> np.ndarray:
    """float64 ``[dims]``: multiply stored coordinates by these to get cycles per pixel.

    Raises ValueError for an unknown unit or a physical unit without a field of view.
    """
    if units not in UNITS:
        raise ValueError(f"traj_units {units!r}: expected one of {', '.join(UNITS)}")
    factors = [_factor(units, axis) for axis in axes]
    if any(f is None for f in factors):
        raise ValueError(
            f"traj_units={units} needs the header's field of view, and the recon space has "
            "none; use cycles_per_pixel or grid"
        )
    return np.array(factors, np.float64)


def _edge_text(units: str, axes: Sequence[AxisScale]) -> str:
    factor = _factor(units, axes[0])
    if factor is None:
        return f"{units} (no field of view)"
    return f"{units} +-{0.5 / factor:.4g}"


def detect_units(coords: np.ndarray, axes: Sequence[AxisScale]) -> str:
    """The unit convention of a stored trajectory, by the rule of the module docstring.

    Parameters
    ----------
    coords:
        float ``[samples, dims]`` as stored (the first trajectory of the stream), ``dims`` equal
        to ``len(axes)``.
    axes:
        The recon space's matrix and field of view per coordinate column.

    Raises
    ------
    ValueError
        No convention or more than one fits; the message names the value found and the option.
    """
    values = np.asarray(coords, np.float64)
    fitting = []
    for units in UNITS:
        factors = [_factor(units, axis) for axis in axes]
        if any(f is None for f in factors):
            continue
        reach = float(np.abs(values * np.array(factors) / 0.5).max()) if values.size else 0.0
        if DETECT_RANGE[0] <= reach <= DETECT_RANGE[1]:
            fitting.append(units)
    if len(fitting) == 1:
        return fitting[0]
    largest = float(np.abs(values).max()) if values.size else 0.0
    edges = ", ".join(_edge_text(u, axes) for u in UNITS)
    matrix = "x".join(str(a.matrix) for a in axes)
    fov = "x".join(f"{a.fov_mm:g}" for a in axes)
    found = f"fits {' and '.join(fitting)}" if fitting else "reaches no convention's edge (60-105%)"
    return_hint = "|".join(UNITS)
    raise ValueError(
        f"the first trajectory reaches {largest:.4g} in its own unit, which {found} "
        f"(edges for the {matrix} matrix and {fov} mm field of view: {edges}); "
        f"say which with --recon-option traj_units={return_hint}"
    )


def check_inside_grid(coords: np.ndarray) -> str | None:
    """A problem text when a point of ``[samples, dims]`` (cycles per pixel) is not finite or
    lies beyond the grid's edge, else None."""
    finite = np.isfinite(coords)
    if not finite.all():
        sample = int(np.argwhere(~finite)[0][0])
        return (
            f"its trajectory has a non-finite value ({coords[sample].tolist()}) at sample {sample}"
        )
    limit = 0.5 * EDGE_TOLERANCE
    outside = np.abs(coords) > limit
    if outside.any():
        sample = int(np.argwhere(outside)[0][0])
        point = ", ".join(f"{v:.4g}" for v in coords[sample])
        return (
            f"its trajectory point {sample} at ({point}) cycles per pixel lies outside the "
            "recon grid (at most 0.5 along each axis)"
        )
    return None


def radial_spoke(samples: int, step: int, spokes: int, golden: bool) -> np.ndarray:
    """float32 ``[samples, 2]`` (kx, ky) in cycles per pixel of spoke ``step``.

    Uniform spokes cover 180 degrees in ``spokes`` steps; golden-angle spokes turn by
    :data:`GOLDEN_ANGLE_DEG` each.
    """
    angle = math.radians(step * GOLDEN_ANGLE_DEG if golden else step * 180.0 / max(spokes, 1))
    radius = (np.arange(samples, dtype=np.float64) - samples / 2) / samples
    out = np.empty((samples, 2), np.float32)
    out[:, 0] = radius * math.cos(angle)
    out[:, 1] = radius * math.sin(angle)
    return out

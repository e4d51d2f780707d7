"""When non-Cartesian readouts undersample k-space: the gap between neighbouring readouts.

Nyquist sampling of a field of view ``FOV`` needs samples at most ``1 / FOV`` (one grid unit)
apart everywhere in k-space.  Along a readout samples are closer than that (readouts are
oversampled); across readouts the spacing is set by how many spokes or interleaves there are.
One measure covers spokes and spirals alike:

    gap = (area of an annulus of k-space) / (length of readout path inside it)

in grid units: readouts ``g`` apart cover ``1 / g`` of path per unit area.  For ``n`` spokes
through the centre this is ``pi r / n`` at the annulus's mean radius ``r`` (their gap grows
with the radius); for spiral interleaves it is the distance between neighbouring arms; for 3D
readouts it is ``sqrt(volume / length)``.

**The rule** (what ``--recon auto`` uses): a unit is *undersampled* when the gap in the outer
fifth of the disc its trajectory covers (radii 0.8 .. 1 of its largest ``|k|``) is more than
:data:`NYQUIST_GAP` grid units.  For radial spokes over a full disc this means fewer than about
``0.9 x pi/2 x N`` spokes (the gap is measured at 0.9 of the edge radius); for a spiral, arms
more than ``1.05 / FOV`` apart.  Averages and repeated readouts count once; a stack of stars or
spirals is measured per partition.

The same measure, in an annulus around the edge of the ESPIRiT calibration region, says
whether the centre of k-space is sampled finely enough to calibrate coil maps from (radial
data always is; a uniform-density spiral below Nyquist is not).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["NYQUIST_GAP", "describe_gap", "edge_gap", "readout_gap", "unique_readouts"]

NYQUIST_GAP = 1.05
"""Largest gap between neighbouring readouts (grid units, ``1 / FOV``) still called fully
sampled: Nyquist plus 5% for the rounding of spoke and interleave counts."""
EDGE_FRACTION = 0.8
"""The edge annulus runs from this fraction of the trajectory's largest radius to it."""


def unique_readouts(trajectory: np.ndarray, partitions: np.ndarray | None) -> np.ndarray:
    """float32 ``[readouts, samples, dims]``: each distinct readout of the unit once (averages
    and repetitions of a readout repeat its trajectory), for one partition of a stack: the
    one with most readouts (a stack repeats or rotates one plane's pattern)."""
    if partitions is not None and partitions.size and np.unique(partitions).size > 1:
        values, counts = np.unique(partitions, return_counts=True)
        trajectory = trajectory[partitions == values[np.argmax(counts)]]
    rows = np.ascontiguousarray(trajectory).reshape(trajectory.shape[0], -1)
    _, first = np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))),
                         return_index=True)  # fmt: skip
    return trajectory[np.sort(first)]


def readout_gap(
    trajectory: np.ndarray, matrix: tuple[int, ...], inner: float, outer: float
) -> float:
    """Mean gap (grid units) between neighbouring readouts in the annulus ``inner <= |k| <
    outer`` (cycles per pixel).

    Parameters
    ----------
    trajectory:
        float32 ``[readouts, samples, dims]`` in cycles per pixel, columns ``(kx, ky[, kz])``.
    matrix:
        Pixels along each coordinate (``(x, y)`` or ``(x, y, z)``): cycles per pixel times
        pixels are grid units.
    inner, outer:
        Radii of the annulus (shell) in cycles per pixel.

    Returns
    -------
    The gap; ``inf`` when no readout passes through the annulus.
    """
    dims = trajectory.shape[2]
    scale = np.asarray(matrix[:dims], np.float64)
    points = trajectory.astype(np.float64)
    middle = 0.5 * (points[:, 1:] + points[:, :-1])
    radius = np.sqrt((middle**2).sum(axis=-1))
    steps = np.sqrt(((np.diff(points, axis=1) * scale) ** 2).sum(axis=-1))
    length = float(steps[(radius >= inner) & (radius < outer)].sum())
    if length <= 0:
        return math.inf
    cell = float(np.prod(scale))  # grid units per cycle-per-pixel, area (volume) factor
    if dims == 3:
        return math.sqrt(4 / 3 * math.pi * (outer**3 - inner**3) * cell / length)
    return math.pi * (outer**2 - inner**2) * cell / length


def edge_gap(
    trajectory: np.ndarray, partitions: np.ndarray | None, matrix: tuple[int, ...]
) -> float:
    """The gap between neighbouring readouts in the outer fifth of the covered disc (sphere):
    the measure of the module's rule (undersampled when above :data:`NYQUIST_GAP`)."""
    readouts = unique_readouts(trajectory, partitions)
    reach = float(np.sqrt((readouts.astype(np.float64) ** 2).sum(axis=-1)).max(initial=0.0))
    if reach <= 0:
        return math.inf
    return readout_gap(readouts, matrix, EDGE_FRACTION * reach, reach * (1 + 1e-6))


def describe_gap(gap: float) -> str:
    """The rule applied, for the profile: ``readouts 3.6/FOV apart at the edge (undersampled:
    > 1.05/FOV)``."""
    verdict = "undersampled: >" if gap > NYQUIST_GAP else "fully sampled: <="
    return f"readouts {gap:.2g}/FOV apart at the edge ({verdict} {NYQUIST_GAP}/FOV)"

"""Which lines of a unit were sampled, and the regular undersampling pattern they form.

Parallel imaging needs the lattice of acquired lines: every R-th line along k1 (and k2 in 3D)
starting at some offset, plus a fully sampled calibration block near the centre.  The
pattern is read from the sampled mask the engine passes (``context.sampled``) and checked
against the header's ``accelerationFactor``, so a header that disagrees with the data is an
error instead of a wrong image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.workers.api import EncodingSpace

__all__ = [
    "IrregularSampling",
    "Lattice",
    "detect_step",
    "fill_range",
    "find_lattice",
    "longest_run",
]

_MISSING_TOLERANCE = 0.02
"""Fraction of lattice lines (inside the acquired range) allowed to be missing."""


class IrregularSampling(ConfigurationError):
    """The sampled lines form no regular lattice (CAIPIRINHA, variable density, gaps): GRAPPA
    cannot fill them, a SENSE solve can."""


def longest_run(profile: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True in a 1D bool array (``(0, 0)`` if none)."""
    best = (0, 0)
    start = None
    for i, value in enumerate([*profile.tolist(), False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def detect_step(profile: np.ndarray) -> int:
    """The undersampling factor of a 1D sampled profile (1 when nothing is skipped).

    The longest contiguous run (a calibration block, or the whole acquired range of fully
    sampled or partial-Fourier data) is set aside; the most common gap between the other
    sampled lines is the factor.
    """
    start, stop = longest_run(profile)
    outside = [i for i in np.nonzero(profile)[0].tolist() if not start <= i < stop]
    if len(outside) < 2:
        return 1
    gaps = np.diff(outside)
    gaps = gaps[gaps > 0]
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 1


@dataclass(frozen=True)
class Lattice:
    """Sampled lines ``(o2 + R2 a2, o1 + R1 a1)`` of a ``[k2, k1]`` grid."""

    factors: tuple[int, int]
    """(R2, R1)."""
    offsets: tuple[int, int]
    """(o2, o1), each in ``[0, R)``."""

    @property
    def accelerated(self) -> bool:
        return max(self.factors) > 1


def _offset(profile: np.ndarray, step: int) -> int:
    if step == 1:
        return 0
    residues = np.nonzero(profile)[0] % step
    return int(np.bincount(residues, minlength=step).argmax())


def find_lattice(sampled: np.ndarray, space: EncodingSpace) -> Lattice:
    """The lattice of a unit's sampled mask ``[k2, k1]``, checked against the header.

    Raises ConfigurationError when the header's acceleration factor and the lines do not
    agree, or when more than 2% of the lattice lines inside the acquired range are missing.
    """
    header_r1, header_r2 = space.acceleration
    k1_profile = np.asarray(sampled.any(axis=0))
    start, stop = longest_run(k1_profile)
    # along k2, look only at k1 lines outside the calibration block (which may span every
    # partition and so hide the k2 pattern)
    outside = np.ones(sampled.shape[1], bool)
    outside[start:stop] = False
    k2_source = sampled[:, outside] if outside.any() else sampled
    k2_profile = np.asarray(k2_source.any(axis=1))
    found = (detect_step(k2_profile), detect_step(k1_profile))
    factors = []
    for axis, (header, seen) in enumerate(zip((header_r2, header_r1), found, strict=True)):
        name = ("k2", "k1")[axis]
        if header > 1 and seen > 1 and header != seen:
            raise ConfigurationError(
                f"the header's accelerationFactor along {name} is {header}, but the sampled "
                f"lines are every {seen}th: the header and the data disagree"
            )
        factors.append(seen)
    r2, r1 = factors
    o2, o1 = _offset(k2_profile, r2), _offset(k1_profile, r1)
    lattice = Lattice((r2, r1), (o2, o1))
    _check_complete(sampled, lattice)
    return lattice


def _check_complete(sampled: np.ndarray, lattice: Lattice) -> None:
    (r2, r1), (o2, o1) = lattice.factors, lattice.offsets
    rows = np.nonzero(sampled.any(axis=1))[0]
    cols = np.nonzero(sampled.any(axis=0))[0]
    if not lattice.accelerated or rows.size == 0:
        return
    k2 = np.arange(o2, sampled.shape[0], r2)
    k1 = np.arange(o1, sampled.shape[1], r1)
    k2 = k2[(k2 >= rows.min()) & (k2 <= rows.max())]
    k1 = k1[(k1 >= cols.min()) & (k1 <= cols.max())]
    grid = sampled[np.ix_(k2, k1)]
    missing = 1.0 - float(grid.mean()) if grid.size else 0.0
    if missing > _MISSING_TOLERANCE:
        raise IrregularSampling(
            f"the sampled lines do not form a regular pattern (every {r1}th k1 line"
            + (f" and every {r2}th k2 partition" if r2 > 1 else "")
            + f" leaves {missing:.0%} of the expected lines missing): GRAPPA needs uniform "
            "undersampling"
        )


def fill_range(space: EncodingSpace, axis_size: int, which: int) -> tuple[int, int]:
    """``[first, last]`` grid index of the lines the header says were encoded along k1 (1)
    or k2 (2): the limits' minimum..maximum placed like the engine places lines."""
    minimum, maximum, centre = space.k1_limits if which == 1 else space.k2_limits
    shift = axis_size // 2 - centre
    first = max(0, minimum + shift)
    last = min(axis_size - 1, maximum + shift)
    if last < first:
        return 0, axis_size - 1
    return first, last

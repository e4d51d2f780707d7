"""Non-Cartesian units in shared memory: slot geometry, sizing from the header, worker views.

A Cartesian unit is a grid ``[k2, k1, coils, k0]`` whose lines land by their encode steps.
A radial or spiral unit has no grid: it is a list of readouts (spokes, interleaves; per
partition for a stack of stars or spirals), each with its samples and the k position of
every sample.  A slot holds them side by side::

    header  int64 [8]                  readouts, samples per readout, trajectory dims
    steps   int32 [rows, 2]            kspace_encode_step_1 and the k2 grid index per readout
    data    complex64 [room * coils]   readout r: [coils, samples] at r * coils * samples
    traj    float32 [room * 3]         readout r: [samples, dims] at r * samples * dims

so each acquisition's ``[coils, samples]`` payload is one contiguous block that the reader
``readinto``s with no copy, whatever the readout length.

Sizing happens before anything is allocated, from header facts only (the first acquisition
may be a 1-sample dummy or a noise line): a unit may hold ``room`` samples per coil,

    room = z * averages * max(k1_extent * x, 2 * x * y)

with ``(x, y, z)`` the encoded matrix and ``k1_extent`` the span of the header's
kspace_encoding_step_1 limits: every readout of the encoding limits at the encoded readout
length, or twice the Cartesian grid's samples, whichever is larger (fully sampled radial with
2x readout oversampling needs ``pi/2`` of it, a Nyquist spiral about 1.6).  ``--recon-option
unit_samples=N`` overrides it.  The ring then goes through the same memory-limit check as
Cartesian slots, so a tiny stream with an absurd header is one clear error, not gigabytes.
A readout that does not fit is one clear error naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parallel_recon.workers.api import ReconContext, ReconPlan, UnitInfo
from parallel_recon.workers.noise import whiten_lines

from .ring import PAGE, SharedRing

__all__ = [
    "HEADER_FIELDS",
    "MAX_TRAJECTORY_DIMS",
    "ReadoutLayout",
    "ReadoutViews",
    "readout_context",
    "unit_room",
]

HEADER_FIELDS = 8
MAX_TRAJECTORY_DIMS = 3
_ALIGN = 64
_MIN_SAMPLES_PER_READOUT = 8
"""Index rows are sized for readouts of at least this many samples (shorter ones still fit
as long as there are not more of them than rows)."""


def _align(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def unit_room(plan: ReconPlan, averages: int = 1) -> int:
    """Samples per coil one unit may hold, from the header (see the module docstring)."""
    room = 1
    for space in plan.spaces:
        x, y, z = space.encoded_matrix
        low, high, _ = space.k1_limits
        extent = max(high - low + 1, 1)
        room = max(room, z * max(averages, 1) * max(extent * x, 2 * x * y))
    return room


@dataclass(frozen=True)
class ReadoutLayout:
    """Geometry of a non-Cartesian slot (see the module docstring).

    Attributes
    ----------
    room:
        Samples per coil one unit holds.
    coils:
        Channels per readout (the slot's).
    rows:
        Readouts one unit may have (index rows).
    source:
        How ``room`` was chosen, for messages (``from the header ...`` or the option).
    """

    room: int
    coils: int
    rows: int
    source: str = ""

    @classmethod
    def sized(cls, room: int, coils: int, source: str) -> ReadoutLayout:
        return cls(room, coils, max(1, room // _MIN_SAMPLES_PER_READOUT), source)

    @property
    def steps_offset(self) -> int:
        return _align(HEADER_FIELDS * 8)

    @property
    def data_offset(self) -> int:
        return _align(self.steps_offset + self.rows * 2 * 4)

    @property
    def traj_offset(self) -> int:
        return _align(self.data_offset + self.room * self.coils * 8)

    @property
    def slot_bytes(self) -> int:
        nbytes = self.traj_offset + self.room * MAX_TRAJECTORY_DIMS * 4
        return -(-nbytes // PAGE) * PAGE

    def views(self, ring: SharedRing, slot: int) -> ReadoutViews:
        """Flat arrays over slot ``slot`` (:meth:`ReadoutViews.shaped` gives a unit's shapes)."""
        buffer = ring.slot(slot)
        return ReadoutViews(
            header=np.frombuffer(buffer, np.int64, HEADER_FIELDS),
            steps=np.frombuffer(buffer, np.int32, self.rows * 2, self.steps_offset).reshape(
                self.rows, 2
            ),
            data=np.frombuffer(buffer, np.complex64, self.room * self.coils, self.data_offset),
            traj=np.frombuffer(
                buffer, np.float32, self.room * MAX_TRAJECTORY_DIMS, self.traj_offset
            ),
        )


@dataclass
class ReadoutViews:
    """Flat views of one slot; :meth:`shaped` gives the per-readout arrays of a unit."""

    header: np.ndarray
    steps: np.ndarray
    data: np.ndarray
    traj: np.ndarray

    def shaped(
        self, readouts: int, coils: int, samples: int, dims: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """complex64 ``[readouts, coils, samples]`` and float32 ``[readouts, samples, dims]``."""
        data = self.data[: readouts * coils * samples].reshape(readouts, coils, samples)
        traj = self.traj[: readouts * samples * dims].reshape(readouts, samples, dims)
        return data, traj

    def release(self) -> None:
        del self.header, self.steps, self.data, self.traj


def readout_context(
    layout: ReadoutLayout,
    ring: SharedRing,
    slot: int,
    plan: ReconPlan,
    info: UnitInfo,
    whitener: np.ndarray | None,
) -> tuple[np.ndarray, ReconContext]:
    """A worker's view of a closed non-Cartesian unit: its samples (prewhitened in place)
    and a context carrying a private copy of its trajectory and partitions."""
    views = layout.views(ring, slot)
    readouts, samples, dims = (int(v) for v in views.header[:3])
    kspace, traj = views.shaped(readouts, info.coils, samples, dims)
    steps = views.steps[:readouts]
    if whitener is not None and readouts:
        whiten_lines(kspace[np.newaxis], whitener, None)
    context = ReconContext(
        plan=plan,
        unit=info,
        whitened=whitener is not None,
        overwrite_kspace=True,
        trajectory=np.array(traj, np.float32),
        readout_partitions=np.array(steps[:, 1], np.int32),
    )
    views.release()
    return kspace, context

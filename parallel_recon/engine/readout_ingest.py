"""The reader for non-Cartesian streams: readouts and their trajectories into shared memory.

Everything that is not an imaging readout (noise, calibration-only lines, dummies, text,
close flags) goes through :class:`~.reader.StreamIngest` unchanged; only landing differs.
An imaging readout is appended to its unit's slot (:mod:`.readouts`): its trajectory is read,
converted to cycles per pixel and checked (finite, inside the grid), or made from the encode
step for radial data without trajectories; its samples are ``readinto`` the slot.

Per encoding space the first imaging readout fixes the trajectory's layout (stored dimensions,
2D / stack / 3D, the unit convention), and every later readout must agree: a dimension count
that changes, a readout without a trajectory, a NaN, a point beyond the grid's edge, a
readout that does not fit the slot are each one line naming the acquisition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parallel_recon.workers.api import EncodingSpace, UnitKey
from parallel_recon.workers.trajectory import (
    AxisScale,
    check_inside_grid,
    detect_units,
    radial_spoke,
    unit_scales,
)

from ..errors import ConfigurationError
from .reader import StreamIngest
from .readouts import ReadoutLayout, ReadoutViews

__all__ = ["COMPUTED_TRAJECTORIES", "ReadoutIngest", "SpaceTrajectory"]

COMPUTED_TRAJECTORIES = {"radial": False, "goldenangle": True}
"""Header trajectories whose spokes can be made from the encode step (value: golden angle)."""


@dataclass
class SpaceTrajectory:
    """How the readouts of one encoding space carry their trajectory (fixed by the first)."""

    stored: int
    """trajectory_dimensions of the acquisitions (0: spokes made from the encode steps)."""
    dims: int
    """Dimensions kept: 2 (2D, stacks) or 3 (3D radial)."""
    scales: np.ndarray
    """float64 ``[dims]``: stored unit -> cycles per pixel."""
    units: str
    golden: bool = False
    spokes: int = 1
    made: dict[int, np.ndarray] = field(default_factory=dict)
    """Spokes made so far, by encode step (``stored == 0``)."""


@dataclass
class _ReadoutUnit:
    """An open non-Cartesian unit; its attribute names match what the reader's close uses."""

    key: UnitKey
    slot: int
    views: ReadoutViews
    samples_per_readout: int
    dims: int
    coils: int
    capacity: int
    kspace: Any = None
    counts: Any = None
    samples: Any = None
    """The data region as bytes (released at close)."""
    readouts: int = 0
    lines: int = 0
    reference: bytes = b""

    def write_counts(self) -> None:
        self.views.header[:3] = (self.readouts, self.samples_per_readout, self.dims)
        self.views.release()


class ReadoutIngest(StreamIngest):
    """:class:`StreamIngest` whose imaging acquisitions are readouts with trajectories.

    Parameters
    ----------
    layout:
        The slot geometry (:class:`~.readouts.ReadoutLayout`).
    traj_units:
        ``auto`` (detect from the first trajectory) or one of the conventions of
        :mod:`parallel_recon.workers.trajectory`.
    **kwargs:
        As for :class:`StreamIngest`.
    """

    keeps_trajectories = True

    def __init__(self, *args: Any, layout: ReadoutLayout, traj_units: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.layout = layout
        self.traj_units = traj_units
        self.spaces: dict[int, SpaceTrajectory] = {}
        self._raw = np.empty(0, np.float32)

    def samples_per_unit(self) -> int:
        """Samples per coil of a readout slot (its ``room``)."""
        return self.layout.room

    # ----------------------------------------------------------------- landing
    def _land(
        self, key: tuple[int, ...], step1: int, step2: int, flags: int, samples: int, channels: int
    ) -> None:
        head = self._head
        stored = int(head["trajectory_dimensions"])
        unit = self.open.get(key)  # type: ignore[call-overload]
        if unit is None:
            if key[0] >= len(self.placers):
                self._placement(head, key, samples)  # the encoding-space error
            if channels != self.coils:
                self._check_channels(channels)
            unit = self._open_readouts(UnitKey(*key), samples, stored)
        elif channels != self.coils:
            self._check_channels(channels)
        trajectory = self.spaces[key[0]]
        if samples != unit.samples_per_readout:
            raise self._problem(
                f"a readout of {samples} samples in a unit whose first readout has "
                f"{unit.samples_per_readout} (every readout of a unit must have one length)"
            )
        if unit.readouts >= unit.capacity:
            raise self._too_many(unit)
        k2 = self._partition(key[0], step2, trajectory)
        row = unit.readouts
        target = unit.views.traj[
            row * samples * trajectory.dims : (row + 1) * samples * trajectory.dims
        ].reshape(samples, trajectory.dims)
        self._trajectory(trajectory, stored, step1, samples, target)
        start = row * unit.coils * samples * 8
        self.stream.readinto(
            unit.samples[start : start + unit.coils * samples * 8], "acquisition samples", True
        )
        unit.views.steps[row] = (step1, k2)
        unit.readouts += 1
        unit.lines += 1
        if not unit.reference:
            unit.reference = bytes(self._head_buffer)
        self.counts["imaging_lines"] += 1

    def _problem(self, text: str) -> Exception:
        return self.stream.error(f"acquisition {self.counts['acquisitions'] - 1}: {text}")

    def _too_many(self, unit: _ReadoutUnit) -> Exception:
        have = unit.readouts * unit.samples_per_readout
        return ConfigurationError(
            f"acquisition {self.counts['acquisitions'] - 1}: unit (slice {unit.key.slice}, "
            f"repetition {unit.key.repetition}) already holds {unit.readouts} readouts of "
            f"{unit.samples_per_readout} samples ({have} per coil) and a slot has room for "
            f"{self.layout.room} samples per coil ({self.layout.source}); raise it with "
            f"--recon-option unit_samples=N"
        )

    def _open_readouts(self, key: UnitKey, samples: int, stored: int) -> _ReadoutUnit:
        if key.encoding_space not in self.spaces:
            self.spaces[key.encoding_space] = self._first_readout(
                key.encoding_space, stored, samples
            )
        trajectory = self.spaces[key.encoding_space]
        if samples < 1:
            raise self._problem("an imaging readout of 0 samples: nothing to reconstruct")
        if samples > self.layout.room:
            raise ConfigurationError(
                f"acquisition {self.counts['acquisitions'] - 1}: a readout of {samples} samples "
                f"does not fit a slot's room of {self.layout.room} samples per coil "
                f"({self.layout.source}); raise it with --recon-option unit_samples=N"
            )
        if len(self.open) >= self.slot_count:
            self._open_unit(key)  # raises the "all slots are held" error
        slot = self._free_slot()
        views = self.layout.views(self.shared.kspace, slot)
        capacity = min(self.layout.rows, self.layout.room // samples)
        data = views.data[: capacity * self.coils * samples]
        unit = _ReadoutUnit(
            key=key,
            slot=slot,
            views=views,
            samples_per_readout=samples,
            dims=trajectory.dims,
            coils=self.coils,
            capacity=capacity,
            kspace=data,
            counts=views.header,
            samples=memoryview(data.view(np.uint8)),  # type: ignore[arg-type]
        )
        self.open[key] = unit  # type: ignore[assignment]
        return unit

    def _free_slot(self) -> int:
        """A free slot, but not one more than the workers can use soon.

        A NUFFT unit takes far longer to reconstruct than to read, so a reader that took
        every free slot would run a whole repetition ahead, touching fresh shared memory
        (page faults, zeroed pages: about a second of CPU per 2 GB, taken from the workers)
        for units that wait anyway.  When the slots out of the free list hold every open
        unit plus two per worker and one more, and at least one of them holds a closed unit
        (so a worker will give it back), the reader waits for a returned slot instead.
        """
        queue = self.shared.free_slots
        while not queue.empty():
            self.free.add(int(queue.get()))
        out = self.slot_count - len(self.free)
        ahead = len(self.open) + 2 * self.workers + 1
        if self.free and out >= ahead and out > len(self.open):
            waited = time.monotonic()
            self.trace.begin("wait for a worker to return a slot", "wait", waited)
            self.free.add(int(queue.get()))
            now = time.monotonic()
            self.trace.end(now)
            self.wait_free_s += now - waited
        return super()._free_slot()

    # -------------------------------------------------------------- trajectory
    def _axes(self, space: EncodingSpace, dims: int) -> list[AxisScale]:
        x, y, z = space.recon_matrix
        fx, fy, fz = space.recon_fov
        return [AxisScale(x, fx), AxisScale(y, fy), AxisScale(z, fz)][:dims]

    def _first_readout(self, index: int, stored: int, samples: int) -> SpaceTrajectory:
        """The trajectory layout of a space, from its first imaging readout (not yet read)."""
        space = self.plan.spaces[index]
        trajectory = space.trajectory.lower()
        if stored == 0:
            if trajectory not in COMPUTED_TRAJECTORIES:
                raise self._problem(
                    f"the readout carries no trajectory (trajectory_dimensions 0 for {samples} "
                    f"samples) and the header's trajectory is {space.trajectory!r}: only "
                    "radial and goldenangle spokes can be made from the encode steps"
                )
            low, high, _ = space.k1_limits
            return SpaceTrajectory(
                stored=0,
                dims=2,
                scales=np.ones(2),
                units="cycles_per_pixel",
                golden=COMPUTED_TRAJECTORIES[trajectory],
                spokes=max(high - low + 1, 1),
            )
        if stored not in (2, 3):
            raise self._problem(
                f"trajectory_dimensions {stored}: expected 2 (kx, ky) or 3 (kx, ky and kz, or "
                "a constant third column)"
            )
        raw = self._read_raw(samples, stored)
        dims = 2
        if stored == 3 and space.encoded_matrix[2] > 1:
            spread = float(np.ptp(raw[:, 2])) if samples else 0.0
            if spread > 1e-6 * max(float(np.abs(raw[:, :2]).max(initial=0.0)), 1e-30):
                dims = 3
        axes = self._axes(space, dims)
        try:
            units = self.traj_units
            if units == "auto":
                units = detect_units(raw[:, :dims], axes)
            scales = unit_scales(units, axes)
        except ValueError as exc:
            raise self._problem(str(exc)) from None
        self._pending_raw = True
        return SpaceTrajectory(stored=stored, dims=dims, scales=scales, units=units)

    _pending_raw = False
    """True when the first readout's trajectory is already in ``_raw`` (read for detection)."""

    def _read_raw(self, samples: int, stored: int) -> np.ndarray:
        n = samples * stored
        if self._raw.size < n:
            self._raw = np.empty(n, np.float32)
        raw = self._raw[:n].reshape(samples, stored)
        self.stream.readinto(raw, "trajectory")
        return raw

    def _trajectory(
        self,
        trajectory: SpaceTrajectory,
        stored: int,
        step1: int,
        samples: int,
        target: np.ndarray,
    ) -> None:
        """The readout's k positions (cycles per pixel) into ``target`` ``[samples, dims]``."""
        if stored != trajectory.stored:
            first = trajectory.stored
            what = (
                f"carries no trajectory (0 points for its {samples} samples)"
                if stored == 0
                else f"has trajectory_dimensions {stored}"
            )
            raise self._problem(
                f"the readout {what}; the first imaging readout had {first} (the trajectory "
                "layout may not change within a stream)"
            )
        if stored == 0:
            spoke = trajectory.made.get(step1)
            if spoke is None:
                spoke = radial_spoke(samples, step1, trajectory.spokes, trajectory.golden)
                trajectory.made[step1] = spoke
            target[...] = spoke
            return
        if self._pending_raw:
            self._pending_raw = False
            raw = self._raw[: samples * stored].reshape(samples, stored)
        else:
            raw = self._read_raw(samples, stored)
        np.multiply(raw[:, : trajectory.dims], trajectory.scales, out=target, casting="unsafe")
        problem = check_inside_grid(target)
        if problem is not None:
            raise self._problem(f"{problem} (trajectory unit: {trajectory.units})")

    def _partition(self, space: int, step2: int, trajectory: SpaceTrajectory) -> int:
        """The k2 grid index of a readout (a stack's partition; 0 for 2D and 3D radial)."""
        placer = self.placers[space]
        if placer.k2n == 1 or trajectory.dims == 3:
            return 0
        k2 = step2 + placer.k2_shift
        if not 0 <= k2 < placer.k2n:
            raise self._problem(
                f"kspace_encode_step_2 = {step2} lands outside encoding space {space}'s "
                f"{placer.k2n} partitions (centre {placer.k2_center})"
            )
        return k2

"""Parallel-imaging calibration lines: kept per (encoding space, slice, contrast) in shared memory.

Calibration lines (IS_PARALLEL_CALIBRATION, and IS_PARALLEL_CALIBRATION_AND_IMAGING) belong to
a slice, not to one unit: a reference block sent once before the imaging lines, or embedded in
the first repetition only, serves every later repetition.  The reader therefore collects them
into a *calibration buffer* of a shared-memory ring (line records: samples, grid position,
average count) and, when a unit of that slice closes, publishes the buffer as the slice's
current calibration and hands the unit a :class:`CalibrationRef` to it.  Published buffers
are never written again: a newer calibration of the same slice goes into another buffer, and
a buffer is reused only when no unit in flight refers to it any more (workers send its id
back when they are done).  So whichever worker gets a unit reads exactly the calibration the
stream had given for it, and the bytes out never depend on the worker count.

Once a new calibration of a slice starts to fill, its current one is *retired*: the next unit
of that slice to close publishes the new one, so no later unit can be handed the old one, and
its buffer is free as soon as the units already in flight have released it.  At most one
buffer per (encoding space, slice, contrast) is therefore kept for units the reader has yet
to close; every other buffer in use belongs to a unit in flight, which a worker will release
without waiting for the reader.  A store of one buffer per calibration key plus the workers'
share never fails on data that keeps to its header's encoding limits: when no buffer is
free, the reader waits for a release, and it fails only when more calibration keys are alive
at once than the header declared.

Calibration-and-imaging lines already land in the unit's k-space; the reader only notes where
they are, and copies them (with the unit's other imaging lines inside the calibration block)
into the buffer when it publishes, so the buffer holds a self-contained block that later
repetitions can reuse.  The reader's per-line work stays one dictionary look-up and one copy
for calibration-only lines, none for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from parallel_recon.workers.api import Calibration

from ..errors import ConfigurationError
from .ring import SharedRing, round_to_page

__all__ = [
    "CalibrationKey",
    "CalibrationKeeper",
    "CalibrationLayout",
    "CalibrationRef",
    "CalibrationStore",
    "default_capacity",
    "read_calibration",
]

_INDEX_FIELDS = 3  # k2, k1, count (int32 each)


class CalibrationKey(NamedTuple):
    """Calibration is shared by every unit of one (encoding space, slice, contrast)."""

    encoding_space: int
    slice: int
    contrast: int


@dataclass(frozen=True)
class CalibrationRef:
    """Where a unit's calibration lies: buffer, its version number and how many lines."""

    buffer: int
    version: int
    lines: int


@dataclass(frozen=True)
class CalibrationLayout:
    """Geometry of the calibration ring: ``buffers`` buffers of ``capacity`` line records.

    ``keys`` is how many (encoding space, slice, contrast) calibrations may be live at once
    (the header's encoding limits); the buffers beyond it serve units in flight.
    """

    buffers: int
    capacity: int
    coils: int
    k0: int
    keys: int = 0

    @property
    def line_bytes(self) -> int:
        return self.coils * self.k0 * 8

    @property
    def buffer_bytes(self) -> int:
        return round_to_page(self.capacity * (self.line_bytes + 4 * _INDEX_FIELDS))

    @property
    def nbytes(self) -> int:
        return self.buffers * self.buffer_bytes


def default_capacity(k1: int, k2: int) -> int:
    """Line records per buffer: a quarter of the k1 x k2 grid, at least 64 lines (or all)."""
    return min(k1 * k2, max(64, math.ceil(k1 * k2 / 4)))


class CalibrationStore:
    """The shared-memory ring of calibration buffers (created before forking)."""

    def __init__(self, layout: CalibrationLayout):
        self.layout = layout
        self.ring = SharedRing("cal", layout.buffer_bytes, layout.buffers)

    def samples(self, buffer: int, lines: int, coils: int) -> np.ndarray:
        """complex64 ``[lines, coils, k0]`` records of ``buffer`` (``coils`` in use)."""
        count = lines * coils * self.layout.k0
        data = np.frombuffer(self.ring.slot(buffer), dtype=np.complex64, count=count)
        return data.reshape(lines, coils, self.layout.k0)

    def index(self, buffer: int, lines: int) -> np.ndarray:
        """int32 ``[lines, 3]``: grid k2, grid k1 and how many lines were added into each."""
        offset = self.layout.capacity * self.layout.line_bytes
        data = np.frombuffer(
            self.ring.slot(buffer), dtype=np.int32, count=lines * _INDEX_FIELDS, offset=offset
        )
        return data.reshape(lines, _INDEX_FIELDS)


def read_calibration(store: CalibrationStore, ref: CalibrationRef, coils: int) -> Calibration:
    """A dense copy of a published buffer: the block spanned by its lines, averaged.

    Runs in a worker.  Lines of the block that the buffer does not hold stay zero and are
    False in ``Calibration.sampled``.
    """
    index = store.index(ref.buffer, ref.lines)
    records = store.samples(ref.buffer, ref.lines, coils)
    k2, k1, counts = index[:, 0], index[:, 1], index[:, 2]
    origin = (int(k2.min()), int(k1.min()))
    shape = (int(k2.max()) - origin[0] + 1, int(k1.max()) - origin[1] + 1)
    block = np.zeros((*shape, coils, store.layout.k0), np.complex64)
    sampled = np.zeros(shape, bool)
    rows, cols = k2 - origin[0], k1 - origin[1]
    block[rows, cols] = records / counts.astype(np.float32)[:, None, None]
    sampled[rows, cols] = True
    return Calibration(kspace=block, sampled=sampled, origin=origin, version=ref.version)


@dataclass
class _Open:
    """A calibration buffer being filled."""

    buffer: int
    rows: dict[tuple[int, int], int] = field(default_factory=dict)
    imaging: set[tuple[int, int]] = field(default_factory=set)
    """Positions of calibration-and-imaging lines, copied from the unit when it publishes."""


class CalibrationKeeper:
    """The reader's side of the store: fills buffers, publishes them, recycles them.

    Parameters
    ----------
    store:
        The shared ring, or None when the header declared no parallel imaging and no room was
        set aside (calibration-only lines are then skipped).
    release:
        The queue on which workers return buffer ids when a unit that used them is done.
    """

    def __init__(self, store: CalibrationStore | None, release: Any):
        self.store = store
        self.release = release
        count = store.layout.buffers if store else 0
        self.refs = [0] * count
        self.free = list(range(count))
        self.open: dict[CalibrationKey, _Open] = {}
        self.current: dict[CalibrationKey, CalibrationRef] = {}
        self.versions = 0
        self.lines_in = 0
        self.published = 0
        self.wait_s = 0.0
        self.coils = 0

    @property
    def enabled(self) -> bool:
        return self.store is not None

    # ------------------------------------------------------------- buffers
    def _drain(self, block: bool) -> None:
        while block or not self.release.empty():
            buffer = int(self.release.get())
            block = False
            self.refs[buffer] -= 1
            self._maybe_free(buffer)

    def _maybe_free(self, buffer: int) -> None:
        if self.refs[buffer] > 0 or buffer in self.free:
            return
        if any(ref.buffer == buffer for ref in self.current.values()):
            return
        if any(o.buffer == buffer for o in self.open.values()):
            return
        self.free.append(buffer)

    def _take_buffer(self, key: CalibrationKey, now: Callable[[], float]) -> int:
        """A free buffer for ``key``'s new calibration, waiting for units in flight to
        release one when none is free.

        Waiting cannot deadlock: at most ``layout.keys`` buffers hold live calibrations (one
        per key, see :meth:`_open`), so when none is free the others belong to units in
        flight, and each comes back once a worker has finished its unit (a worker never
        waits for the reader), whatever the reader does.
        """
        self._drain(block=False)
        while not self.free:
            if not any(self.refs):  # cannot happen with the sizing above; never wait forever
                raise ConfigurationError(
                    f"no calibration buffer is free for slice {key.slice}, contrast "
                    f"{key.contrast} and none is in use by a unit in flight"
                )
            began = now()
            self._drain(block=True)
            self.wait_s += now() - began
        return self.free.pop(0)

    def _check_live(self, key: CalibrationKey) -> None:
        """Refuse a calibration key beyond the header's count while all of them are live.

        The limit is the header's, never the number of buffers (which grows with the
        workers), so a stream either fits or fails the same way with any worker count.
        """
        assert self.store is not None
        limit = self.store.layout.keys
        live = set(self.open) | set(self.current)
        if limit and key not in live and len(live) >= limit:
            raise ConfigurationError(
                f"slice {key.slice}, contrast {key.contrast} starts a calibration while "
                f"{len(live)} other (slice, contrast) calibrations are in use, the most the "
                f"header's encoding limits allow ({limit}): the data has more slices or "
                "contrasts than its <encodingLimits> say (fix the header)"
            )

    def _open(self, key: CalibrationKey, now: Callable[[], float]) -> _Open:
        """``key``'s calibration being filled, started (and its current one retired) if new.

        The next unit of ``key`` to close publishes the new calibration before taking one
        (:meth:`for_unit`), so the current one can go to no later unit: it is retired now,
        and its buffer is free once the units in flight that use it have released it.
        """
        entry = self.open.get(key)
        if entry is None:
            self._check_live(key)
            retired = self.current.pop(key, None)
            if retired is not None:
                self._maybe_free(retired.buffer)
            entry = self.open[key] = _Open(self._take_buffer(key, now))
        return entry

    # --------------------------------------------------------------- lines
    def _row(
        self, key: CalibrationKey, k2: int, k1: int, now: Callable[[], float]
    ) -> tuple[int, int, bool]:
        """(buffer, row, first) for a calibration-only line at grid (k2, k1)."""
        assert self.store is not None
        entry = self._open(key, now)
        row = entry.rows.get((k2, k1))
        if row is not None:
            return entry.buffer, row, False
        row = len(entry.rows)
        if row >= self.store.layout.capacity:
            raise ConfigurationError(
                f"slice {key.slice}, contrast {key.contrast} has more than "
                f"{self.store.layout.capacity} calibration lines, the most one calibration "
                "buffer holds: raise --calibration-lines"
            )
        entry.rows[(k2, k1)] = row
        return entry.buffer, row, True

    def line_target(
        self, key: CalibrationKey, k2: int, k1: int, coils: int, now: Callable[[], float]
    ) -> tuple[np.ndarray, bool]:
        """The record ``[coils, k0]`` a calibration-only line goes into, and whether it is new."""
        assert self.store is not None
        buffer, row, first = self._row(key, k2, k1, now)
        self.coils = coils
        index = self.store.index(buffer, row + 1)[row]
        if first:
            index[:] = (k2, k1, 1)
        else:
            index[2] += 1
        self.lines_in += 1
        return self.store.samples(buffer, row + 1, coils)[row], first

    def note_imaging(self, key: CalibrationKey, k2: int, k1: int, now: Callable[[], float]) -> None:
        """A calibration-and-imaging line landed in its unit at grid (k2, k1)."""
        entry = self._open(key, now)
        entry.imaging.add((k2, k1))
        self.lines_in += 1

    # -------------------------------------------------------------- units
    def for_unit(
        self, key: CalibrationKey, kspace: np.ndarray, counts: np.ndarray, coils: int
    ) -> CalibrationRef | None:
        """Publish ``key``'s open calibration (completed from this closing unit) and return
        the reference the unit gets, counted as in use until a worker releases it."""
        entry = self.open.pop(key, None)
        if entry is not None:
            self._publish(key, entry, kspace, counts, coils)
        ref = self.current.get(key)
        if ref is not None:
            self.refs[ref.buffer] += 1
        return ref

    def _publish(
        self,
        key: CalibrationKey,
        entry: _Open,
        kspace: np.ndarray,
        counts: np.ndarray,
        coils: int,
    ) -> None:
        assert self.store is not None
        positions = set(entry.rows) | entry.imaging
        k2s = [p[0] for p in positions]
        k1s = [p[1] for p in positions]
        rows = dict(entry.rows)
        capacity = self.store.layout.capacity
        for k2 in range(min(k2s), max(k2s) + 1):
            for k1 in range(min(k1s), max(k1s) + 1):
                if (k2, k1) in rows or counts[k2, k1] == 0:
                    continue
                row = len(rows)
                if row >= capacity:
                    raise ConfigurationError(
                        f"the calibration block of slice {key.slice}, contrast {key.contrast} "
                        f"spans more than {capacity} lines, the most one calibration buffer "
                        "holds: raise --calibration-lines"
                    )
                rows[(k2, k1)] = row
                index = self.store.index(entry.buffer, row + 1)[row]
                index[:] = (k2, k1, int(counts[k2, k1]))
                self.store.samples(entry.buffer, row + 1, coils)[row] = kspace[k2, k1]
        self.versions += 1
        self.published += 1
        self.current[key] = CalibrationRef(entry.buffer, self.versions, len(rows))  # the old
        # one was retired when this one started (see _open)

    def stats(self) -> dict[str, Any]:
        return {
            "lines": self.lines_in,
            "published": self.published,
            "buffers": len(self.refs),
            "wait_s": self.wait_s,
        }

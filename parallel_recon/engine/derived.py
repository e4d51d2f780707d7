"""Arrays kernels derive from a calibration, computed by one worker and read by all.

GRAPPA weights and coil maps depend only on a slice's calibration, yet every worker that got
a unit of the slice used to compute them again: with W workers up to W times per slice and
calibration.  Here the first worker that needs them computes them and publishes them in
shared memory; the others wait for it and read them.

The store has one *entry* per calibration buffer (:mod:`.calibration`), so it lives by the
same rules: an entry belongs to whichever calibration its buffer holds, and a buffer is
reused only once no unit in flight refers to it, which workers say only after their kernel
has finished with the entry (:class:`~.pool.WorkerLoop`).  An entry records the calibration
version it was computed for; a unit whose calibration has another version finds it stale and
fills it again.  So nothing needs resetting when a buffer changes hands, and a unit always
reads arrays of its own calibration.

An entry holds the arrays of one *tag* (the kernel's name for everything else they depend
on: options, sampling pattern, shapes).  A unit that asks for another tag of the same
calibration, or arrays larger than the entry, computes them itself and keeps them in its
worker's own cache (:class:`~parallel_recon.workers.api.LocalCalibrationCache`), as every
unit did before.  Either way the arrays are the same bytes, so the images never depend on
which worker computed them.

Entry layout: a 4 KiB table (uint32 length + JSON: tag, and name, dtype, shape and offset
of each array), then the arrays, 64-byte aligned.  The state of every entry (version, state,
worker) sits in a small shared array guarded by one condition variable.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from parallel_recon.workers.api import DerivedArrays, LocalCalibrationCache

from .ring import SharedRing, round_to_page

__all__ = ["DerivedCache", "DerivedLayout", "DerivedStore", "entry_bytes"]

_TABLE_BYTES = 4096
_ALIGN = 64
_EMPTY, _COMPUTING, _READY, _UNUSABLE = 0, 1, 2, 3
_FIELDS = 3  # version, state, worker
_WAIT_S = 0.5


def entry_bytes(arrays_bytes: int, arrays: int = 4) -> int:
    """An entry's size for ``arrays_bytes`` of arrays (a kernel's bound), table and padding
    included; 0 when the kernel shares nothing."""
    if arrays_bytes <= 0:
        return 0
    return round_to_page(_TABLE_BYTES + arrays_bytes + arrays * _ALIGN)


@dataclass(frozen=True)
class DerivedLayout:
    """``entries`` entries (one per calibration buffer) of ``entry_bytes`` each."""

    entries: int = 0
    entry_bytes: int = 0

    @property
    def nbytes(self) -> int:
        return self.entries * self.entry_bytes


class DerivedStore:
    """The shared entries, created by the supervisor before forking."""

    def __init__(self, ctx: Any, layout: DerivedLayout):
        self.layout = layout
        self.ring = SharedRing("drv", layout.entry_bytes, layout.entries)
        self.state = ctx.RawArray("q", layout.entries * _FIELDS)
        self.changed = ctx.Condition()

    # ------------------------------------------------------------ entries
    def _field(self, entry: int, index: int) -> int:
        return int(self.state[entry * _FIELDS + index])

    def _set(self, entry: int, version: int, state: int, worker: int) -> None:
        base = entry * _FIELDS
        self.state[base : base + _FIELDS] = [version, state, worker]

    def claim(self, entry: int, version: int, worker: int) -> str:
        """``"compute"`` (this worker fills the entry), ``"ready"`` (read it) or ``"own"``
        (compute privately: the entry holds nothing usable for this version).  Waits while
        another worker is computing the entry for ``version``."""
        with self.changed:
            while True:
                if self._field(entry, 0) != version:
                    self._set(entry, version, _COMPUTING, worker)
                    return "compute"
                state = self._field(entry, 1)
                if state == _READY:
                    return "ready"
                if state == _UNUSABLE:
                    return "own"
                self.changed.wait(_WAIT_S)  # another worker is computing it

    def publish(self, entry: int, version: int, tag: str, arrays: DerivedArrays) -> bool:
        """Write the arrays (or mark the entry unusable when they do not fit); wake the
        waiting workers.  True when published."""
        written = self._write(entry, tag, arrays)
        with self.changed:
            self._set(entry, version, _READY if written else _UNUSABLE, 0)
            self.changed.notify_all()
        return written

    def abandon(self, entry: int, version: int) -> None:
        """The computing worker failed: the others compute for themselves (and fail alike)."""
        with self.changed:
            self._set(entry, version, _UNUSABLE, 0)
            self.changed.notify_all()

    def _write(self, entry: int, tag: str, arrays: DerivedArrays) -> bool:
        slot = self.ring.slot(entry)
        offset = _TABLE_BYTES
        table: list[list[Any]] = []
        for name, array in arrays.items():
            offset = -(-offset // _ALIGN) * _ALIGN
            if offset + array.nbytes > len(slot):
                return False
            target = np.frombuffer(slot, array.dtype, array.size, offset).reshape(array.shape)
            target[...] = array
            table.append([name, array.dtype.str, list(array.shape), offset])
            offset += array.nbytes
        text = json.dumps({"tag": tag, "arrays": table}).encode()
        if 4 + len(text) > _TABLE_BYTES:
            return False
        slot[:4] = len(text).to_bytes(4, "little")
        slot[4 : 4 + len(text)] = text
        return True

    def read(self, entry: int, tag: str) -> DerivedArrays | None:
        """Read-only views of a ready entry's arrays, or None when it holds another tag."""
        slot = self.ring.slot(entry)
        length = int.from_bytes(slot[:4], "little")
        table = json.loads(bytes(slot[4 : 4 + length]))
        if table["tag"] != tag:
            return None
        arrays = {}
        for name, dtype, shape, offset in table["arrays"]:
            view = np.frombuffer(slot, np.dtype(dtype), math.prod(shape), offset).reshape(shape)
            view.flags.writeable = False
            arrays[name] = view
        return arrays


class DerivedCache:
    """What one unit's kernel gets as ``context.calibration_cache``: the shared entry of the
    unit's calibration, else the worker's own cache.

    Parameters
    ----------
    store:
        The shared entries (None when none were set aside).
    entry, version:
        The unit's calibration buffer and version.
    key:
        ``(encoding space, slice, contrast)`` of the unit (the local cache's key).
    local:
        The worker's own cache.
    worker:
        The worker's number (recorded in the entry while it computes).
    counts:
        The worker's tally: ``computed`` (calibrations this worker derived), ``shared``
        (units served from the shared entry), ``own`` (computed outside the store), and
        ``cpu_s``: CPU seconds spent computing them.
    """

    def __init__(
        self,
        store: DerivedStore | None,
        entry: int,
        version: int,
        key: Hashable,
        local: LocalCalibrationCache,
        worker: int,
        counts: dict[str, float],
    ):
        self.store = store
        self.entry = entry
        self.version = version
        self.key = key
        self.local = local
        self.worker = worker
        self.counts = counts
        self.wait_s = 0.0

    def _compute(self, compute: Callable[[], DerivedArrays]) -> dict[str, np.ndarray]:
        began = time.process_time()
        try:
            return dict(compute())
        finally:
            self.counts["cpu_s"] += time.process_time() - began

    def fetch(self, tag: str, compute: Callable[[], DerivedArrays]) -> DerivedArrays:
        if self.store is None:
            return self._own(tag, compute)
        began = time.monotonic()
        outcome = self.store.claim(self.entry, self.version, self.worker)
        self.wait_s += time.monotonic() - began
        if outcome == "ready":
            arrays = self.store.read(self.entry, tag)
            if arrays is not None:
                self.counts["shared"] += 1
                return arrays
            return self._own(tag, compute)
        if outcome == "own":
            return self._own(tag, compute)
        try:
            arrays = self._compute(compute)
        except BaseException:
            self.store.abandon(self.entry, self.version)
            raise
        self.counts["computed"] += 1
        if not self.store.publish(self.entry, self.version, tag, arrays):
            self.counts["own"] += 1  # too large for the entry: this worker keeps them
            self.local.fetch((self.key, self.version, tag), lambda: arrays)
        return arrays

    def _own(self, tag: str, compute: Callable[[], DerivedArrays]) -> DerivedArrays:
        before = self.local.computed
        arrays = self.local.fetch((self.key, self.version, tag), lambda: self._compute(compute))
        if self.local.computed != before:
            self.counts["computed"] += 1
            self.counts["own"] += 1
        return arrays

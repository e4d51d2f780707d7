"""Who may reconstruct now: reconstruction slots and one shared-memory budget for all.

A connection that has sent its header asks for one slot and the shared memory its dataset
needs (computed from the header before anything is allocated); both are granted together,
in the order the connections asked, and given back together when its reconstruction ends.
A connection that would exceed what is free waits; one that would exceed the whole budget
is refused before it asks (see :mod:`.connection`).  First come, first served: a large
dataset waiting for memory is not overtaken forever by small ones.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["Admission"]

_POLL_S = 0.2
"""How often a waiting connection checks whether it should give up (client gone, stop)."""


class Admission:
    """``slots`` reconstructions at once within ``budget`` bytes of shared memory."""

    def __init__(self, slots: int, budget: int):
        self.slots = slots
        self.budget = budget
        self._free_slots = slots
        self._free_bytes = budget
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def free_bytes(self) -> int:
        with self._changed:
            return self._free_bytes

    def acquire(
        self,
        nbytes: int,
        give_up: Callable[[], str | None],
        waiting_for_memory: Callable[[int], None],
    ) -> str | None:
        """Block until a slot and ``nbytes`` are granted (None), or ``give_up()`` returns a
        reason, which is returned.  ``waiting_for_memory(free)`` is called once if a slot is
        free but memory is not (for the log)."""
        ticket = object()
        told = False
        with self._changed:
            self._queue.append(ticket)
            try:
                while True:
                    first = self._queue[0] is ticket
                    if first and self._free_slots and self._free_bytes >= nbytes:
                        self._free_slots -= 1
                        self._free_bytes -= nbytes
                        return None
                    if first and self._free_slots and not told:
                        waiting_for_memory(self._free_bytes)
                        told = True
                    reason = give_up()
                    if reason:
                        return reason
                    self._changed.wait(_POLL_S)
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()

    def release(self, nbytes: int) -> None:
        """Give back one slot and ``nbytes``."""
        with self._changed:
            self._free_slots += 1
            self._free_bytes += nbytes
            self._changed.notify_all()

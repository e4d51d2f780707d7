"""``--trace FILE.json``: a timeline of one run in Chrome/Perfetto trace-event form.

Every process of the pipeline records its own spans (complete events, ``"ph": "X"``) while
it works: the reader one span per unit it fills (from the previous unit's close to this
one's), the workers one span per unit with the kernel call nested in it, the writer one span
per unit it emits, and every process its waits (``"cat": "wait"``) as spans of their own.
Counters (``"ph": "C"``) carry the bytes read and written so far, from which throughput over
time follows.  Times are whole microseconds since the supervisor started the run, taken from
``CLOCK_MONOTONIC``, which all processes share.  A child sends its events to the supervisor
with its statistics at the end; the supervisor writes the file.  The file opens in
ui.perfetto.dev and chrome://tracing, and ``parallel-recon profile FILE.json -o PNG`` draws
it.

Spans are opened and closed on a stack, so they always nest.  When ``--trace`` is off every
process holds a :class:`NullTrace` whose methods do nothing: a handful of no-op calls per
unit, nothing per acquisition.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = [
    "TRACK_ORDER",
    "NullTrace",
    "Trace",
    "make_trace",
    "process_start_monotonic",
    "write_trace",
]

TRACK_ORDER = {"supervisor": 0, "reader": 1, "writer": 1000}
"""Sort index of each process's track (workers come between, by number)."""


def _sort_index(role: str) -> int:
    if role.startswith("worker "):
        return 1 + int(role.split()[1])
    return TRACK_ORDER.get(role, 999)


class Trace:
    """The events of one process.

    Parameters
    ----------
    origin:
        ``time.monotonic()`` of the run's start: time 0 of the file.
    """

    enabled = True

    def __init__(self, origin: float):
        self.origin = origin
        self.pid = os.getpid()
        self.events: list[dict[str, Any]] = []
        self._open: list[tuple[str, str, float, dict[str, Any]]] = []

    def _us(self, at: float) -> int:
        """Whole microseconds since the run's start: integers, so that a span's ``ts + dur``
        is exactly the next one's ``ts`` where they touch."""
        return round((at - self.origin) * 1e6)

    def start_process(self, role: str) -> None:
        """Begin this process's track (call first thing in a child: the pid is its own)."""
        self.pid = os.getpid()
        self.events = []
        self._open = []
        for name, value in (("process_name", role), ("process_sort_index", _sort_index(role))):
            key = "name" if name == "process_name" else "sort_index"
            self.events.append(
                {
                    "name": name,
                    "ph": "M",
                    "ts": 0,
                    "pid": self.pid,
                    "tid": self.pid,
                    "args": {key: value},
                }
            )

    def begin(self, name: str, category: str, at: float | None = None, **args: Any) -> None:
        """Open a span (closed by the next :meth:`end`)."""
        self._open.append((name, category, time.monotonic() if at is None else at, args))

    def end(self, at: float | None = None, **args: Any) -> None:
        """Close the innermost open span; ``args`` are added to it."""
        name, category, start, opened = self._open.pop()
        self.span(name, category, start, time.monotonic() if at is None else at, **opened, **args)

    def span(self, name: str, category: str, start: float, stop: float, **args: Any) -> None:
        """A complete span from ``start`` to ``stop`` (monotonic seconds)."""
        begin, finish = self._us(start), self._us(max(start, stop))
        event: dict[str, Any] = {
            "name": name,
            "cat": category,
            "ph": "X",
            "ts": begin,
            "dur": finish - begin,
            "pid": self.pid,
            "tid": self.pid,
        }
        if args:
            event["args"] = args
        self.events.append(event)

    def counter(self, name: str, at: float, **values: float) -> None:
        """A counter sample (e.g. ``MB`` read so far)."""
        self.events.append(
            {
                "name": name,
                "ph": "C",
                "ts": self._us(at),
                "pid": self.pid,
                "tid": self.pid,
                "args": values,
            }
        )


class NullTrace(Trace):
    """What every process holds when ``--trace`` is off: every method does nothing."""

    enabled = False

    def __init__(self, origin: float = 0.0):
        super().__init__(origin)

    def start_process(self, role: str) -> None:
        return None

    def begin(self, name: str, category: str, at: float | None = None, **args: Any) -> None:
        return None

    def end(self, at: float | None = None, **args: Any) -> None:
        return None

    def span(self, name: str, category: str, start: float, stop: float, **args: Any) -> None:
        return None

    def counter(self, name: str, at: float, **values: float) -> None:
        return None


def make_trace(enabled: bool, origin: float) -> Trace:
    """A recording :class:`Trace`, or the no-op one."""
    return Trace(origin) if enabled else NullTrace(origin)


def process_start_monotonic() -> float | None:
    """When this process started, on the ``time.monotonic()`` clock (None if unknown).

    From the kernel's start time of the process (``/proc/self/stat``, in clock ticks since
    boot: 10 ms steps) against ``CLOCK_BOOTTIME``, the clock it is counted on; the wall
    clock's boot time would be off by up to a second.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5)
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.monotonic() - age


def write_trace(path: str, events: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
    """Write the JSON object format (``traceEvents`` plus ``otherData``)."""
    document = {
        "traceEvents": sorted(events, key=lambda e: (e["pid"], e["ts"], -e.get("dur", 0))),
        "displayTimeUnit": "ms",
        "otherData": metadata,
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"))
        handle.write("\n")

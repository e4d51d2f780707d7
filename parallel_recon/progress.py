"""Progress lines on stderr: shown on a terminal, silent in pipes unless asked for.

A recon engineer watching a long conversion in a terminal wants to see it move; a script
capturing stderr wants it clean.  ``Progress`` redraws one line with ``\\r`` on a terminal
and, when forced on a non-terminal (``--progress``), prints a plain line at most once a second.
When the total bytes are known (a batch of files), the line has a bar and an ETA from the
byte rate so far.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "progress_wanted"]

_BAR_WIDTH = 24


def progress_wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """``--progress`` forces it on; otherwise it is on exactly when stderr is a terminal."""
    if flag:
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Throttled progress reporter for a count of items (and optionally bytes)."""

    def __init__(
        self,
        label: str,
        *,
        enabled: bool,
        total: int | None = None,
        unit: str = "messages",
        stream: TextIO | None = None,
        interval: float = 0.25,
        total_bytes: int | None = None,
    ):
        self.label = label
        self.enabled = enabled
        self.total = total
        self.total_bytes = total_bytes
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and progress_wanted(None, self.stream)
        self.interval = interval if self.tty else max(interval, 1.0)
        self.count = 0
        self.nbytes = 0
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, count: int = 1, nbytes: int = 0) -> None:
        """Add to the counters and redraw if enough time has passed."""
        self.count += count
        self.nbytes += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        done = f"{self.count}" if self.total is None else f"{self.count}/{self.total}"
        text = f"{self.label}: {done} {self.unit}"
        if self.total_bytes:
            return self._bar_line(done, elapsed)
        if self.nbytes:
            text += f", {self.nbytes / 1e6:.1f} MB ({self.nbytes / 1e6 / elapsed:.1f} MB/s)"
        return text + f", {elapsed:.1f} s"

    def _bar_line(self, done: str, elapsed: float) -> str:
        """``label: [#####.....] 3/10 files, 12.0/40.0 MB, 5.1 MB/s, ETA 6 s, 2.4 s``."""
        total = max(self.total_bytes or 1, 1)
        fraction = min(1.0, self.nbytes / total)
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        rate = self.nbytes / elapsed
        eta = f"{(total - self.nbytes) / rate:.0f} s" if rate > 0 else "?"
        return (
            f"{self.label}: [{bar}] {done} {self.unit}, {self.nbytes / 1e6:.1f}/"
            f"{total / 1e6:.1f} MB, {rate / 1e6:.1f} MB/s, ETA {eta}, {elapsed:.1f} s"
        )

    def _draw(self, now: float) -> None:
        line = self._line(now)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        self._draw(time.monotonic())
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

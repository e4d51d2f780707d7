"""Child processes that cannot outlive their parent.

Every helper process of the package (the engine's reader, workers and writer; the batch's
HDF5 feeders and runners) asks Linux to kill it when its parent dies, so a parent killed
with SIGKILL leaves no orphan behind.  The request is tied to the *thread* that created the
child: a child started from a short-lived thread would die with that thread, so children
are started from long-lived threads (the main thread, or a Dask executor thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

__all__ = ["describe_exit", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def die_with_parent(parent: int, role: str) -> None:
    """Ask Linux to SIGKILL this process when ``parent`` dies (exit now if it already has),
    and name it ``pr-<role>`` (e.g. ``pr-reader``, ``pr-worker-2``) for ps, top and tests."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(f"pr-{role}".replace(" ", "-").encode()[:15]))
    if os.getppid() != parent:
        os._exit(1)


def describe_exit(code: int | None) -> str:
    """How a child ended, from its exit code (negative: the signal that killed it)."""
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"

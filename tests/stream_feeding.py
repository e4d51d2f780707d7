"""Feeding a command's stdin as a scanner sends data, holding back the rest of the scan.

Streaming is proven by an event, not by timing: the command gets the start of the stream
and its stdin stays open; the rest is sent only after its first image has begun to arrive
on stdout.  A command that waits for more input (or for the end of the stream) before it
emits anything never gets it, and the generous ``timeout`` turns that hang into a failure.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from dataclasses import dataclass

__all__ = ["Fed", "first_image_before_the_rest"]


@dataclass(frozen=True)
class Fed:
    """What came back from a command fed by :func:`first_image_before_the_rest`."""

    before_the_rest: bytes
    """Its stdout up to the moment the first image began to arrive (the rest still unsent)."""
    output: bytes
    """Its whole stdout."""
    returncode: int
    stderr: bytes


def _read_until_image(proc: subprocess.Popen[bytes], header_bytes: int, timeout: float) -> bytes:
    """Read stdout until it holds more than the header message and the 2-byte IMAGE id."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    received = b""
    deadline = time.monotonic() + timeout
    while len(received) <= header_bytes + 2:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0.0))
        if not ready:
            raise AssertionError(
                f"no image within {timeout} s of sending the start of the stream "
                f"({len(received)} bytes of output): the command waits for the rest"
            )
        block = os.read(fd, 1 << 16)
        if not block:
            raise AssertionError(f"stdout ended after {len(received)} bytes, before any image")
        received += block
    return received


def first_image_before_the_rest(
    argv: list[str], start: bytes, rest: bytes, header_bytes: int, timeout: float = 120
) -> Fed:
    """Run ``argv``; send ``start`` and keep stdin open; once the first image has begun to
    arrive (stdout holds more than the echoed header message of ``header_bytes`` and the
    IMAGE id after it), send ``rest``, close stdin and collect everything.

    Raises AssertionError when no image arrives within ``timeout`` seconds of ``start``
    (the command does not stream), or when the command exits before one does.
    """
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    stdin = proc.stdin

    def send_start() -> None:  # in a thread: stdout is drained while stdin fills
        try:
            stdin.write(start)
            stdin.flush()
        except BrokenPipeError:
            pass  # the command ended early: reported by the read below

    sender = threading.Thread(target=send_start, daemon=True)
    sender.start()
    try:
        try:
            before = _read_until_image(proc, header_bytes, timeout)
        except AssertionError as exc:
            proc.kill()
            _, err = proc.communicate(timeout=timeout)
            raise AssertionError(f"{exc}\n{err.decode(errors='replace')}") from None
        sender.join(timeout=timeout)
        assert not sender.is_alive(), "the command stopped reading its stdin"
        assert proc.poll() is None, "the command ended while its stdin was still open"
        tail, err = proc.communicate(rest, timeout=timeout)
        return Fed(before, before + tail, proc.returncode, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

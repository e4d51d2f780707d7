"""Feeding a command's stdin as a scanner sends data: in chunks, with a pause after each."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass

__all__ = ["Fed", "feed_in_chunks"]


@dataclass(frozen=True)
class Fed:
    """What came back from a command fed by :func:`feed_in_chunks`."""

    sent_at_first_image: int
    """Bytes written to its stdin when its first image began to arrive."""
    output: bytes
    returncode: int
    stderr: bytes


def feed_in_chunks(argv: list[str], chunks: list[bytes], pause: float, header_bytes: int) -> Fed:
    """Run ``argv``, write ``chunks`` with ``pause`` seconds after each, read its stdout.

    The first image has begun to arrive once stdout holds more than the echoed header
    message (``header_bytes``) and the 2-byte IMAGE id after it.
    """
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    sent = 0

    def feed() -> None:
        nonlocal sent
        for chunk in chunks:
            stdin.write(chunk)
            stdin.flush()
            sent += len(chunk)
            time.sleep(pause)  # the scanner acquires the next chunk
        stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        received = b""
        while len(received) <= header_bytes + 2:
            block = os.read(stdout.fileno(), 1 << 16)
            assert block, stderr.read()
            received += block
        seen_at = sent
        feeder.join(timeout=60)
        received += stdout.read()
        err = stderr.read()
        return Fed(seen_at, received, proc.wait(timeout=60), err)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stdout.close()
        stderr.close()

"""Read-ahead buffer under the ``StreamReader``.

Small messages (a 1-coil readout is ~1.4 kB) cost more in Python calls than in bytes, so the
reader pulls whatever the source has ready into a chunk and parses messages straight out of
it.  Arrays handed out earlier are views into a chunk and must stay valid, so a chunk is
reused only when nothing references it any more; otherwise a refill starts a new one.
Large payloads bypass the chunk and go from the source straight into their destination
(one copy, like ``cat``).

Reading ahead happens only when the reader asks for it (once it is among acquisitions) and
only from sources with ``readinto1``, which returns what is ready instead of waiting for
more, so a slow or interactive peer is never waited on for more bytes than the next message
needs.  Every other read takes exactly the bytes missing.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import sys
from typing import Any, BinaryIO

import numpy as np

__all__ = ["CHUNK_BYTES", "DIRECT_BYTES", "NEXT_HEAD_BYTES", "ReadBuffer"]

CHUNK_BYTES = 256 << 10
"""Size of each read-ahead chunk."""

DIRECT_BYTES = 32 << 10
"""Payloads at least this large are read from the source straight into their array."""


PIPE_BYTES = 1 << 20
"""Pipe buffer size asked for on a pipe read directly (the unprivileged Linux maximum)."""

NEXT_HEAD_BYTES = 2 + 340
"""Message id and AcquisitionHeader: what a large readout's last read also asks for."""

_SPARES = 3
"""Retired chunks kept for reuse once nothing decoded from them is referenced."""
_POOLED_BYTES = 16 << 20
"""Payload arrays up to this size are recycled once unreferenced."""
_UNSHARED = 3  # references to a spare while it is checked: list slot, local, argument


def _grow_pipe(fd: int) -> None:
    """Ask for a larger pipe buffer (Linux), so one read brings a whole many-coil readout.

    With the default 64 KiB a 32-coil readout takes three reads and as many context
    switches; the writer end benefits too (fewer blocked writes).  Best effort: other
    systems, sockets and files are left alone.
    """
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    try:
        if setsize is not None and stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, setsize, PIPE_BYTES)
    except OSError:
        pass


class ReadBuffer:
    """Bytes read from ``source`` but not yet consumed: ``chunk[pos:end]``."""

    def __init__(self, source: BinaryIO):
        self.source = source
        handle: Any = source  # typing.BinaryIO does not declare readinto
        read1 = getattr(handle, "readinto1", None)
        self._ahead_ok = read1 is not None
        """Reading ahead needs ``readinto1``: plain ``readinto`` may wait to fill it all."""
        self._read1 = read1 or handle.readinto
        self._readinto = handle.readinto
        self._fd: int | None = None
        """File descriptor for ``readv``, once the raw stream is read directly."""
        self._wrapped: io.BufferedReader | None = (
            source if isinstance(source, io.BufferedReader) else None
        )
        """A buffered source whose raw stream is read directly once its buffer is drained."""
        self.chunk = bytearray(CHUNK_BYTES)
        self._spares: list[bytearray] = []
        self._arrays: list[np.ndarray] = []
        self.pos = 0
        self.end = 0

    @property
    def available(self) -> int:
        """Bytes buffered and not yet consumed."""
        return self.end - self.pos

    def fill(self, nbytes: int, ahead: bool = False, most: int | None = None) -> int:
        """Make ``nbytes`` available from ``pos``; fewer only at the end of the stream.

        With ``ahead`` (and a source with ``readinto1``) it also takes whatever more the
        source has ready, up to the end of the chunk or ``most`` bytes in all; otherwise it
        reads exactly the bytes missing, so the source is never consumed past the message
        being read.  Returns the number of bytes available afterwards.
        """
        have = self.end - self.pos
        if have >= nbytes:
            return have
        if self.pos + nbytes > len(self.chunk):
            old = self.chunk
            chunk = self._spare(nbytes)
            chunk[:have] = old[self.pos : self.end]
            self.chunk, self.pos, self.end = chunk, 0, have
            self._spares.append(old)
            if len(self._spares) > _SPARES:
                del self._spares[0]
        if ahead and self._ahead_ok:  # ``most`` bounds the read-ahead, never what is asked
            reach = len(self.chunk) if most is None else self.pos + max(most, nbytes)
            limit = min(len(self.chunk), reach)
        else:
            limit = self.pos + nbytes
        view = memoryview(self.chunk)
        if ahead and self._wrapped is not None:
            self.end += self._unwrap(view[self.end : limit])
        read = self._read1
        while self.end - self.pos < nbytes:
            got = read(view[self.end : limit])
            if not got:
                break
            self.end += got
        return self.end - self.pos

    def _unwrap(self, view: memoryview) -> int:
        """Drain the wrapped BufferedReader into ``view``; if that empties its buffer, read
        its raw stream directly from now on.

        A BufferedReader copies every byte through its own buffer unless a request is larger
        than that buffer; reading the raw stream saves that copy for large payloads.  It is
        done only once the wrapper's buffer is empty, and the wrapper is never read again, so
        anyone reading the wrapper later still sees the stream in order.
        """
        wrapped = self._wrapped
        assert wrapped is not None
        pending = len(wrapped.peek(0))  # buffered bytes; one raw read if there were none
        if pending > view.nbytes:
            return 0
        got = wrapped.readinto1(view[:pending]) if pending else 0
        raw: Any = wrapped.raw
        self._read1 = self._readinto = raw.readinto
        self._wrapped = None
        if isinstance(raw, io.FileIO):  # files and pipes; sockets may be non-blocking
            self._fd = raw.fileno()
            _grow_pipe(self._fd)
        return got

    def _spare(self, nbytes: int) -> bytearray:
        """A retired chunk nothing refers to any more (warm, no page faults), or a new one."""
        spares = self._spares
        for i in range(len(spares)):
            spare = spares[i]
            if len(spare) >= nbytes and sys.getrefcount(spare) <= _UNSHARED:
                del spares[i]
                return spare
        return bytearray(max(CHUNK_BYTES, nbytes))

    def has_more(self, wait: bool) -> bool:
        """Whether at least one more byte is buffered or arrives from the source.

        With ``wait`` it blocks until a byte or the end of the source arrives; without, it
        looks only at what has already arrived (the file descriptor is put in non-blocking
        mode for one read), so a peer that keeps its end open is never waited on.
        """
        if self.end > self.pos:
            return True
        if wait:
            return self.fill(1) > 0
        try:
            fd = int(self.source.fileno())
        except (AttributeError, OSError, ValueError):
            return False  # no descriptor to ask without waiting
        blocking = os.get_blocking(fd)
        try:
            os.set_blocking(fd, False)
            return self.fill(1) > 0
        except BlockingIOError:
            return False
        finally:
            os.set_blocking(fd, blocking)

    def take(self, nbytes: int) -> int:
        """Consume ``nbytes`` already made available; returns their start in ``chunk``."""
        start = self.pos
        self.pos = start + nbytes
        return start

    def readinto(self, view: memoryview, ahead: bool = False, most: int | None = None) -> int:
        """Fill ``view`` (bytes), first from the buffer, then from the source directly.

        With ``ahead``, the last read from a file or pipe also brings in the id and header
        of the next message when they are ready (one ``readv`` instead of two reads), and a
        short tail is read together with what the source has ready (at most ``most`` bytes
        in all, as :meth:`fill`).
        Returns the number of bytes written, less than ``view.nbytes`` only at the end of
        the stream.
        """
        total = view.nbytes
        have = min(self.end - self.pos, total)
        if have:
            view[:have] = self.chunk[self.pos : self.pos + have]
            self.pos += have
        got = have
        if got < total and total - got < DIRECT_BYTES:
            # a short tail: refill the chunk rather than issue a tiny read
            have = min(self.fill(total - got, ahead, most), total - got)
            view[got : got + have] = self.chunk[self.pos : self.pos + have]
            self.pos += have
            return got + have
        if self._wrapped is not None and got < total:
            got += self._unwrap(view[got:])
        if ahead and self._fd is not None and len(self.chunk) - self.end >= NEXT_HEAD_BYTES:
            return self._readv(view, got)
        readinto = self._readinto
        while got < total:
            n = readinto(view[got:])
            if not n:
                break
            got += n
        return got

    def _readv(self, view: memoryview, got: int) -> int:
        """Fill ``view`` from ``got`` on with ``readv``, spilling into the chunk's tail."""
        assert self._fd is not None
        total = view.nbytes
        tail = memoryview(self.chunk)[self.end : self.end + NEXT_HEAD_BYTES]
        while got < total:
            n = os.readv(self._fd, [view[got:], tail])
            if not n:
                break
            if n > total - got:
                self.end += n - (total - got)
                n = total - got
            got += n
        return got

    def skip(self, nbytes: int) -> int:
        """Drop ``nbytes``; returns how many were dropped (fewer only at the end)."""
        have = min(self.end - self.pos, nbytes)
        self.pos += have
        done = have
        if done < nbytes and nbytes - done < DIRECT_BYTES:
            have = min(self.fill(nbytes - done), nbytes - done)
            self.pos += have
            return done + have
        if done < nbytes:
            # scratch space of its own: the chunk may hold bytes already handed out
            scratch = memoryview(bytearray(min(nbytes - done, 1 << 20)))
            readinto = self._readinto
            while done < nbytes:
                n = readinto(scratch[: min(nbytes - done, scratch.nbytes)])
                if not n:
                    break
                done += n
        return done

    def array(self, nbytes: int, ahead: bool = False) -> tuple[np.ndarray, int]:
        """An aligned uint8 array of ``nbytes`` filled from the stream, and the count got.

        The array is new or one handed out earlier that nothing refers to any more: a
        stream of equal-size readouts then cycles through a few warm buffers instead of
        allocating (and page-faulting) fresh memory for every message.
        """
        out = self._recycled(nbytes)
        return out, self.readinto(memoryview(out), ahead)  # type: ignore[arg-type]

    def _recycled(self, nbytes: int) -> np.ndarray:
        pool = self._arrays
        for i in range(len(pool)):
            candidate = pool[i]
            if candidate.nbytes == nbytes and sys.getrefcount(candidate) <= _UNSHARED:
                return candidate
        out = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= _POOLED_BYTES:
            pool.append(out)
            if len(pool) > _SPARES:
                del pool[0]
        return out

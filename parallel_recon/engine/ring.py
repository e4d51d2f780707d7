"""Shared-memory slots: one segment per ring, fixed-size slots, allocated once.

A ring is a single shared-memory segment cut into page-aligned slots: a tmpfs file in
``/dev/shm`` made without a name (``O_TMPFILE``), mapped by the supervisor before forking,
inherited by every forked child.  Having no name, it can never be left in ``/dev/shm``,
however the processes end; it is freed when the last mapping goes.
``multiprocessing.shared_memory`` is not used: it names every segment, and its Python code
runs between creating the name and any unlink (long enough, in a busy process, for a kill to
land there, which left segments behind); Python 3.11's resource tracker would also start a
helper process and warn about "leaked" segments that are already gone.

Sizing lives here too: how many k-space slots a header needs, how many a memory budget
allows, and the clear error when even the minimum does not fit.
"""

from __future__ import annotations

import contextlib
import errno
import math
import mmap
import os
import re
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MemoryLimitError, UsageError

__all__ = [
    "PAGE",
    "RingLayout",
    "Shared",
    "SharedRing",
    "choose_slot_count",
    "default_memory_limit",
    "format_mib",
    "parse_memory_size",
    "round_to_page",
]

PAGE = 4096
SEGMENT_PREFIX = "pr_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def round_to_page(nbytes: int, to: int = PAGE) -> int:
    """``nbytes`` rounded up to whole pages (at least one): what a mapping really takes."""
    return max(to, -(-nbytes // to) * to)


_SHM_FOLDER = "/dev/shm"
_HELD_BACK = {
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGPIPE,
    signal.SIGCHLD,
}
"""Signals whose handlers could raise between naming a segment and removing the name."""


def _segment_file(prefix: str) -> tuple[int, str]:
    """An open tmpfs file in ``/dev/shm`` with no name, and how to call it in messages.

    ``O_TMPFILE`` makes the file without ever giving it a name, so nothing can be left in
    ``/dev/shm`` whenever the process is killed, and it still counts against ``/dev/shm``'s
    size (which the memory budget reads).  Where the kernel lacks ``O_TMPFILE`` the file is
    named, and the name removed in the next call with the catchable signals held back.
    """
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(_SHM_FOLDER, tmpfile | os.O_RDWR, 0o600), f"{prefix}(unnamed)"
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_BACK)
    try:
        for _ in range(8):
            name = f"{prefix}{os.urandom(4).hex()}"
            path = os.path.join(_SHM_FOLDER, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            os.unlink(path)
            return fd, name
        raise OSError(f"no free shared-memory name under {_SHM_FOLDER}")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _anonymous_segment(prefix: str, size: int) -> tuple[mmap.mmap, str]:
    """A shared mapping of ``size`` bytes with no name in ``/dev/shm``, and its label."""
    fd, label = _segment_file(prefix)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size), label
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RingLayout:
    """Geometry of a k-space slot: ``[k2, k1, coils, k0]`` complex64 plus ``[k2, k1]`` counts."""

    k2: int
    k1: int
    coils: int
    k0: int

    @property
    def kspace_bytes(self) -> int:
        return self.k2 * self.k1 * self.coils * self.k0 * 8

    @property
    def counts_bytes(self) -> int:
        return self.k2 * self.k1 * 4

    @property
    def slot_bytes(self) -> int:
        return round_to_page(self.kspace_bytes + self.counts_bytes)


class SharedRing:
    """``count`` slots of ``slot_bytes`` each in one shared-memory segment.

    Parameters
    ----------
    tag:
        Short name part (``"k"`` for k-space, ``"img"`` for images); ``name`` is
        ``pr_<pid>_<tag>_(unnamed)`` (or, without ``O_TMPFILE``, the name the segment had
        for one system call).
    slot_bytes:
        Size of one slot (rounded up to a page).
    count:
        Number of slots.
    """

    def __init__(self, tag: str, slot_bytes: int, count: int):
        self.slot_bytes = round_to_page(slot_bytes)
        self.count = count
        prefix = f"{SEGMENT_PREFIX}{os.getpid()}_{tag}_"
        self._map, self.name = _anonymous_segment(prefix, self.nbytes)
        self._buffer = memoryview(self._map)

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * self.count

    def slot(self, index: int) -> memoryview:
        """Writable bytes of slot ``index``."""
        start = index * self.slot_bytes
        return self._buffer[start : start + self.slot_bytes]

    def kspace(self, index: int, shape: tuple[int, int, int, int]) -> np.ndarray:
        """complex64 ``[k2, k1, coils, k0]`` view at the start of slot ``index``."""
        n = math.prod(shape)
        return np.frombuffer(self.slot(index), dtype=np.complex64, count=n).reshape(shape)

    def counts(self, index: int, layout: RingLayout, shape: tuple[int, int]) -> np.ndarray:
        """float32 ``[k2, k1]`` per-line average counts, after the largest k-space block."""
        return np.frombuffer(
            self.slot(index),
            dtype=np.float32,
            count=shape[0] * shape[1],
            offset=layout.kspace_bytes,
        ).reshape(shape)

    def close(self) -> None:
        """Unmap the segment in this process (children keep their own mappings).

        Views of it still held here keep it mapped until they are gone (the mapping cannot
        be closed under them); the pipeline's supervisor holds none.
        """
        with contextlib.suppress(BufferError):
            self._buffer.release()
            self._map.close()


def parse_memory_size(text: str, total: int | None = None) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"1000000"`` or ``"25%"`` (of ``total``)."""
    text = text.strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = -1.0
        if not 0 < percent <= 100:
            raise UsageError(f"--memory-limit {text!r}: expected a percentage in (0, 100]")
        return int((total if total is not None else _total_memory()) * percent / 100)
    match = _SIZE.match(text)
    if not match:
        raise UsageError(
            f"--memory-limit {text!r}: expected a number with an optional unit, e.g. 512M, 2G, 25%"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _total_memory() -> int:
    """Physical memory in bytes (what ``free`` reports as total)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_memory_limit() -> int:
    """25% of RAM, but never more than what /dev/shm can still hold."""
    limit = _total_memory() // 4
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        limit = min(limit, st.f_bavail * st.f_frsize)
    return limit


def format_mib(nbytes: float) -> str:
    """``12.5 MiB``: how the engine's messages state a size."""
    return f"{nbytes / (1 << 20):.1f} MiB"


def choose_slot_count(
    *,
    slot_bytes: int,
    units_per_repetition: int,
    workers: int,
    memory_limit: int,
    reserved_bytes: int = 0,
    describe: str = "",
) -> int:
    """How many k-space slots to allocate.

    Wanted: every unit one repetition can keep open, plus two per worker so that reading
    continues while workers reconstruct, plus a little headroom.  The memory budget caps it;
    below ``units_per_repetition + 1`` the data cannot stream at all, which is an error that
    says how much memory is needed and which option raises it.
    """
    wanted = units_per_repetition + 2 * workers + 2
    minimum = units_per_repetition + 1
    affordable = max(0, (memory_limit - reserved_bytes) // slot_bytes)
    if affordable < minimum:
        needed = minimum * slot_bytes + reserved_bytes
        raise MemoryLimitError(
            f"not enough memory for this dataset: one k-space unit{describe} needs "
            f"{format_mib(slot_bytes)} and the header allows {units_per_repetition} units "
            f"open at once, so at least {minimum} slots ({format_mib(needed)} with the image, "
            "calibration and noise buffers) are needed, but the memory limit is "
            f"{format_mib(memory_limit)}: raise --memory-limit to at least "
            f"{math.ceil(needed / (1 << 20))}M",
            needed,
            memory_limit,
        )
    return int(min(wanted, affordable))


@dataclass
class Shared:
    """Everything the pipeline's processes share, created by the supervisor before forking.

    Attributes
    ----------
    kspace, images:
        The k-space ring and the image ring.
    layout:
        Geometry of the largest k-space unit (the slot layout).
    free_slots:
        k-space slot ids ready to be filled (reader takes, workers return): the back-pressure.
    work:
        ``(UnitInfo, slot)`` for workers; ``None`` tells a worker to stop.
    results:
        To the writer: ``("unit", seq, image_slot, payload, spans)``, ``("text", after, bytes)``
        and ``("end", units)``.
    image_cond, image_busy, writer_next:
        Image-slot claims.  A worker that finds every image slot busy waits, unless the
        writer is waiting for exactly its unit: then it sends the bytes over the queue, so the
        writer can never wait for a worker that waits for the writer.
    current:
        Per worker: ``[sequence, *UnitKey]`` of the unit being reconstructed, -1 when idle;
        lets the supervisor say which unit a killed worker was working on.
    acquisitions_in, images_out:
        Progress counters (one writer each).
    noise:
        The prewhitening matrix (:class:`~.noise.NoiseBlock`), written once by the reader.
    calibration, calibration_release:
        The calibration ring (:class:`~.calibration.CalibrationStore`, None when none was set
        aside) and the queue on which workers return its buffer ids.
    readouts:
        Non-Cartesian streams: the slots' :class:`~.readouts.ReadoutLayout` (readouts with
        trajectories instead of a grid; ``layout`` then only says the coil count); None for
        Cartesian streams.
    derived:
        What kernels derive from each calibration buffer (:class:`~.derived.DerivedStore`,
        None when none was set aside).
    """

    kspace: SharedRing
    images: SharedRing
    layout: RingLayout
    free_slots: Any
    work: Any
    results: Any
    status: Any
    status_lock: Any
    image_cond: Any
    image_busy: Any
    writer_next: Any
    current: Any
    acquisitions_in: Any
    images_out: Any
    noise: Any = None
    calibration: Any = None
    calibration_release: Any = None
    readouts: Any = None
    derived: Any = None

    CURRENT_FIELDS = 7

    @classmethod
    def create(
        cls, ctx: Any, kspace: SharedRing, images: SharedRing, layout: RingLayout, workers: int
    ) -> tuple[Shared, Any]:
        """Queues, locks and counters for one run; returns it and the supervisor's status end."""
        status_recv, status_send = ctx.Pipe(duplex=False)
        current = ctx.RawArray("q", workers * cls.CURRENT_FIELDS)
        for i in range(len(current)):
            current[i] = -1
        shared = cls(
            kspace=kspace,
            images=images,
            layout=layout,
            free_slots=ctx.SimpleQueue(),
            work=ctx.SimpleQueue(),
            results=ctx.SimpleQueue(),
            status=status_send,
            status_lock=ctx.Lock(),
            image_cond=ctx.Condition(),
            image_busy=ctx.RawArray("b", images.count),
            writer_next=ctx.RawValue("q", 0),
            current=current,
            acquisitions_in=ctx.RawValue("q", 0),
            images_out=ctx.RawValue("q", 0),
            calibration_release=ctx.SimpleQueue(),
        )
        return shared, status_recv

    def report(self, *message: Any) -> None:
        """Send a status tuple to the supervisor (children only)."""
        with self.status_lock:
            self.status.send(message)

"""How much shared memory one reconstruction takes, decided before anything is allocated.

The header (encoding matrices, limits, receiverChannels) and the first acquisition's
channel count fix every shared block of a run: the k-space slots, the image slots, the
calibration ring, the arrays kernels derive from calibrations (:mod:`.derived`; their size
is the kernel's own bound) and the noise statistics (``2 + 2 x coils^2`` doubles, which
grow with the square of the coil count).  All of them count in the memory limit, and every
size the stream declares is checked first, so that a few kilobytes of header cannot claim
gigabytes.

The supervisor allocates exactly what :func:`plan_memory` says; the recon server calls the
same function to reserve a connection's share of its budget before starting its recon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parallel_recon.workers.api import ReconPlan

from ..errors import HeaderError, ProtocolError
from .calibration import CalibrationLayout, default_capacity
from .derived import DerivedLayout, entry_bytes
from .readouts import ReadoutLayout, unit_room
from .ring import RingLayout, choose_slot_count, round_to_page

__all__ = [
    "MAX_COILS",
    "MAX_SLOTS",
    "MemoryPlan",
    "image_slot_count",
    "noise_block_bytes",
    "plan_memory",
    "slot_coils",
]

MAX_COILS = 1024
"""More receive channels than any scanner has: a header or a first acquisition claiming more
is a damaged (or hostile) stream, not a reason to allocate gigabytes."""

MAX_SLOTS = 1024
"""The most k-space slots one run allocates, whatever the memory limit allows."""


def slot_coils(first: int, declared: int | None) -> int:
    """Channels the slots hold: the first line's or the header's ``receiverChannels``,
    whichever is larger (a noise scan may come first with fewer channels), checked."""
    if declared is not None and declared > MAX_COILS:
        raise HeaderError(
            f"the header declares receiverChannels {declared}; expected at most {MAX_COILS} "
            "(more receive channels than any scanner has)"
        )
    limit = declared if declared is not None else MAX_COILS
    if first > limit:
        source = "the header's receiverChannels" if declared is not None else "the most we take"
        raise ProtocolError(
            f"the first acquisition has {first} active channels; expected at most {limit} "
            f"({source})",
            None,
            None,
        )
    coils = max(first, declared or 0)
    if coils < 1:
        raise ProtocolError(
            "the first acquisition has 0 active channels and the header declares no "
            "receiverChannels: expected k-space samples to reconstruct",
            None,
            None,
        )
    return coils


def noise_block_bytes(coils: int) -> int:
    """Bytes of the noise statistics block (:class:`~.noise.NoiseBlock`) for ``coils``."""
    return 8 * (2 + 2 * coils * coils)


def image_slot_count(workers: int) -> int:
    """Image slots: two per worker and two for the writer."""
    return 2 * workers + 2


def _layout(plan: ReconPlan, coils: int) -> RingLayout:
    shapes = [space.kspace_shape for space in plan.spaces]
    return RingLayout(
        k2=max(s[0] for s in shapes),
        k1=max(s[1] for s in shapes),
        coils=coils,
        k0=max(s[2] for s in shapes),
    )


def _image_slot_bytes(plan: ReconPlan, coils: int) -> int:
    """Room for one unit's images: the recon matrix, per channel when the output is complex."""
    per_pixel = 8 * coils if plan.output == "complex" else 8
    largest = 0
    for space in plan.spaces:
        x, y, z = space.recon_matrix
        partitions = max(z, space.encoded_matrix[2])
        largest = max(largest, x * y * partitions * per_pixel + (16 << 10) * partitions)
    return round_to_page(largest + (64 << 10))


def _readout_layout(plan: ReconPlan, averages: int, coils: int, unit_samples: int) -> ReadoutLayout:
    """Slots of a non-Cartesian stream: sized from the header, or ``unit_samples=N``."""
    if unit_samples:
        return ReadoutLayout.sized(
            unit_samples, coils, f"--recon-option unit_samples={unit_samples}"
        )
    room = unit_room(plan, averages)
    return ReadoutLayout.sized(room, coils, "from the header's encoded matrix and limits")


def _calibration_layout(
    plan: ReconPlan,
    xml: str,
    layout: RingLayout,
    workers: int,
    lines: int | None,
    non_cartesian: bool = False,
) -> CalibrationLayout:
    """Room for the calibration of every slice and contrast, plus one per worker in flight.

    That is what can be live at once: one calibration per (slice, contrast) for units the
    reader has yet to close (a new one retires the old, see ``calibration.py``), and the
    rest held by units in flight, which the reader waits for (workers release a buffer when
    their unit is done, never waiting for the reader), so the same store serves any number
    of repetitions and echoes with any worker count.

    Set aside only when the header declares parallel imaging (and the data is Cartesian):
    without it, calibration-only lines are skipped like before and fully sampled data pays
    nothing.
    """
    from .plan import calibration_keys

    declared = not non_cartesian and any(
        max(space.acceleration) > 1 or space.calibration_mode for space in plan.spaces
    )
    capacity = lines or default_capacity(layout.k1, layout.k2)
    keys = calibration_keys(xml)
    buffers = keys + workers + 1 if declared else 0
    return CalibrationLayout(buffers, capacity, layout.coils, layout.k0, keys)


@dataclass(frozen=True)
class MemoryPlan:
    """Every shared block of one run, in bytes and counts."""

    layout: RingLayout
    """Geometry of a k-space slot (the largest unit); for readouts, only its coil count."""
    kspace_slots: int
    image_slots: int
    image_slot_bytes: int
    calibration: CalibrationLayout
    noise_bytes: int
    units_per_repetition: int
    memory_limit: int
    readouts: ReadoutLayout | None = None
    """A non-Cartesian stream's slot layout (readouts with their trajectories), else None."""
    derived: DerivedLayout = field(default_factory=DerivedLayout)
    """Arrays derived from calibrations, one entry per calibration buffer (none when the
    kernel declares no bound, or when they would cost k-space slots)."""

    @property
    def kspace_slot_bytes(self) -> int:
        """Bytes of one k-space slot (grid lines, or readouts with trajectories)."""
        return self.readouts.slot_bytes if self.readouts is not None else self.layout.slot_bytes

    @property
    def reserved_bytes(self) -> int:
        """Everything but the k-space slots."""
        return (
            self.image_slots * self.image_slot_bytes
            + self.calibration.nbytes
            + self.derived.nbytes
            + self.noise_bytes
        )

    @property
    def total_bytes(self) -> int:
        """All shared memory of the run."""
        return self.kspace_slots * self.kspace_slot_bytes + self.reserved_bytes


def plan_memory(
    plan: ReconPlan,
    xml: str,
    first_channels: int,
    *,
    workers: int,
    memory_limit: int,
    calibration_lines: int | None = None,
    non_cartesian: bool = False,
    unit_samples: int = 0,
    kernel: str | None = None,
) -> MemoryPlan:
    """The shared memory of a run of ``plan`` whose first acquisition has ``first_channels``.

    ``non_cartesian`` units are readouts with their trajectories (sized from the header's
    encoded matrix and limits, or ``unit_samples`` samples per coil) instead of grid lines.

    ``kernel`` (its ``--recon`` name or path) sizes the room for the arrays it derives from
    calibrations, shared by the workers.  That room is set aside only when every k-space
    slot the run wants still fits beside it: without it each worker computes and keeps its
    own, which costs CPU but never the ability to stream.

    Raises
    ------
    HeaderError, ProtocolError
        A coil count past :data:`MAX_COILS` or the header's own.
    MemoryLimitError
        When even the fewest slots that let the data stream do not fit ``memory_limit``.
    """
    from .plan import read_header, receiver_channels, units_per_repetition

    coils = slot_coils(first_channels, receiver_channels(xml))
    readouts = None
    if non_cartesian:
        readouts = _readout_layout(plan, read_header(xml).averages, coils, unit_samples)
        layout = RingLayout(k2=1, k1=1, coils=coils, k0=1)
        slot_bytes = readouts.slot_bytes
        describe = f" ({readouts.room} samples x {coils} coils with their trajectories)"
    else:
        layout = _layout(plan, coils)
        slot_bytes = layout.slot_bytes
        describe = f" ({layout.k2} x {layout.k1} x {coils} coils x {layout.k0} samples)"
    units = units_per_repetition(xml)
    images = image_slot_count(workers)
    image_bytes = _image_slot_bytes(plan, coils)
    calibration = _calibration_layout(plan, xml, layout, workers, calibration_lines, non_cartesian)
    noise = noise_block_bytes(coils)
    reserved = images * image_bytes + calibration.nbytes + noise
    slots = choose_slot_count(
        slot_bytes=slot_bytes,
        units_per_repetition=units,
        workers=workers,
        memory_limit=memory_limit,
        reserved_bytes=reserved,
        describe=describe,
    )
    slots = min(slots, MAX_SLOTS)
    derived = _derived_layout(kernel, plan, coils, calibration.buffers)
    if reserved + derived.nbytes + slots * slot_bytes > memory_limit:
        derived = DerivedLayout()
    return MemoryPlan(
        layout=layout,
        kspace_slots=slots,
        image_slots=images,
        image_slot_bytes=image_bytes,
        calibration=calibration,
        noise_bytes=noise,
        units_per_repetition=units,
        memory_limit=memory_limit,
        readouts=readouts,
        derived=derived,
    )


def _derived_layout(kernel: str | None, plan: ReconPlan, coils: int, buffers: int) -> DerivedLayout:
    """One entry per calibration buffer, of the kernel's declared size (none without one)."""
    if kernel is None or not buffers:
        return DerivedLayout()
    from .kernels import calibration_cache_bytes

    size = entry_bytes(calibration_cache_bytes(kernel, plan, coils))
    return DerivedLayout(buffers, size) if size else DerivedLayout()

"""The reader process: stream in, samples straight into shared-memory k-space slots.

The supervisor reads everything up to the first acquisition's header (it needs the XML
header and the coil count to size the slots) and hands the open :class:`StreamReader` over;
this process goes on from there.  Each imaging line is ``readinto`` its slot at
``[k2, k1, :, :]`` with no intermediate copy when it fills the whole readout, arrives first
and is not reversed; averages, reversed and short readouts go through one scratch buffer.
A unit closes on LAST_IN_SLICE (and LAST_IN_REPETITION / LAST_IN_MEASUREMENT close what
is open), gets the next sequence number and goes to the workers.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parallel_recon.workers.api import ReconPlan, UnitInfo, UnitKey

from ..errors import ConfigurationError, MissingCloseError
from ..protocol import (
    ACQUISITION_HEADER_DTYPE,
    AcquisitionFlag,
    MessageId,
    StreamReader,
    Text,
    after_close_warning,
    encode_message,
    skip_message,
)
from .calibration import CalibrationKeeper, CalibrationKey
from .noise import NoiseGate
from .placement import NOT_IMAGING_MASK, Placer, flag_mask, skip_reason
from .ring import Shared
from .trace import NullTrace, Trace

__all__ = ["StreamIngest"]

_REVERSE = flag_mask(AcquisitionFlag.IS_REVERSE)
_CAL_AND_IMAGING = flag_mask(AcquisitionFlag.IS_PARALLEL_CALIBRATION_AND_IMAGING)
_LAST_IN_SLICE = flag_mask(AcquisitionFlag.LAST_IN_SLICE)
_LAST_IN_REPETITION = flag_mask(AcquisitionFlag.LAST_IN_REPETITION)
_LAST_IN_MEASUREMENT = flag_mask(AcquisitionFlag.LAST_IN_MEASUREMENT)
_CLOSING = _LAST_IN_SLICE | _LAST_IN_REPETITION | _LAST_IN_MEASUREMENT


_HEAD_NAMES = (
    "flags", "number_of_samples", "active_channels", "center_sample", "encoding_space_ref",
    "trajectory_dimensions", "idx.kspace_encode_step_1", "idx.kspace_encode_step_2",
    "idx.slice", "idx.contrast", "idx.phase", "idx.repetition", "idx.set",
)  # fmt: skip
"""The AcquisitionHeader fields the reader needs, in the order of their offsets."""


def _header_struct() -> struct.Struct:
    """One ``struct`` that reads :data:`_HEAD_NAMES` out of a packed AcquisitionHeader
    (offsets and sizes taken from the header's dtype)."""
    fields: Any = ACQUISITION_HEADER_DTYPE.fields
    layout = []
    for name in _HEAD_NAMES:
        if name.startswith("idx."):
            dtype, offset = fields["idx"][0].fields[name[4:]]
            offset += fields["idx"][1]
        else:
            dtype, offset = fields[name]
        layout.append((int(offset), int(dtype.itemsize)))
    codes = {1: "B", 2: "H", 4: "I", 8: "Q"}
    fmt, at = "<", 0
    for offset, size in layout:
        assert offset >= at, "fields must be listed in offset order"
        fmt += "x" * (offset - at) + codes[size]
        at = offset + size
    return struct.Struct(fmt)


_HEAD_FIELDS = _header_struct()


@dataclass
class _OpenUnit:
    key: UnitKey
    slot: int
    kspace: np.ndarray
    counts: np.ndarray
    samples: memoryview
    """``kspace`` as bytes: a line is one slice of it."""
    line_bytes: int
    filled: dict[int, int] = field(default_factory=dict)
    """Lines placed so far (``k2 * k1_extent + k1`` -> count), written to ``counts`` at close."""
    lines: int = 0
    reference: bytes = b""
    distance: int = 1 << 30

    def write_counts(self) -> None:
        """The average count of every placed line into the slot's ``counts`` (the worker
        divides by it and zeroes the lines that have none)."""
        if self.filled:
            flat = self.counts.reshape(-1)
            flat[np.fromiter(self.filled, np.int64, len(self.filled))] = np.fromiter(
                self.filled.values(), np.float32, len(self.filled)
            )


class StreamIngest:
    """The reader process body: fills slots and closes units until CLOSE.

    Parameters
    ----------
    stream:
        The StreamReader the supervisor used for the prelude (positioned after the first
        acquisition's header when ``first_head`` is given).
    plan:
        The reconstruction plan (encoding spaces).
    shared:
        Rings and queues.
    slot_count:
        Number of k-space slots (to detect a dataset that keeps more units open than fit).
    workers:
        Number of workers (each gets a stop marker at the end).
    noise:
        Gathers the noise scan and publishes the prewhitening matrix at the first other line.
    calibration:
        Keeps calibration lines per slice and hands each closing unit its calibration.
    trace:
        Records one span per unit (from the previous close to this one's) and the waits for
        free slots (``--trace``); a no-op by default.
    """

    keeps_trajectories = False
    """Imaging lines' trajectories are skipped (Cartesian placement); a subclass that lands
    readouts with their trajectories (:mod:`.readout_ingest`) reads them itself."""

    def __init__(
        self,
        stream: StreamReader,
        plan: ReconPlan,
        shared: Shared,
        *,
        first_head: np.void | None,
        slot_count: int,
        workers: int,
        noise: NoiseGate,
        calibration: CalibrationKeeper,
        trace: Trace | None = None,
    ):
        self.stream = stream
        self.plan = plan
        self.shared = shared
        self.first_head = first_head
        self.slot_count = slot_count
        self.workers = workers
        self.coils = 0
        """Channels of the imaging lines, set by the first one (at most the slot layout's)."""
        self.placers = [Placer(space, i) for i, space in enumerate(plan.spaces)]
        self.open: dict[UnitKey, _OpenUnit] = {}
        self.closed = 0
        self.noise = noise
        self.calibration = calibration
        self.counts: dict[str, int] = {"acquisitions": 0, "imaging_lines": 0}
        self.skipped: dict[str, int] = {}
        self.configs: list[str] = []
        self.wait_free_s = 0.0
        self.free: set[int] = set()
        """Free slots taken off the queue, not yet used."""
        self.trace = trace if trace is not None else NullTrace()
        self._since_close = 0.0
        self._head_buffer = bytearray(ACQUISITION_HEADER_DTYPE.itemsize)
        self._head = np.frombuffer(self._head_buffer, dtype=ACQUISITION_HEADER_DTYPE)[0]
        self._scratch = np.empty(0, np.complex64)
        self._handlers: dict[MessageId, Callable[[], None]] = {
            MessageId.ACQUISITION: self._next_acquisition,
            MessageId.TEXT: self._text,
            MessageId.CONFIG_FILE: self._config,
            MessageId.CONFIG_TEXT: self._config,
            MessageId.HEADER: self._second_header,
        }

    # ----------------------------------------------------------------- driver
    def run(self) -> dict[str, Any]:
        """Read to CLOSE; returns the reader's statistics."""
        start, cpu = time.monotonic(), time.process_time()
        self.trace.start_process("reader")
        self.trace.counter("input", start, MB=self.stream.offset / 1e6)
        self._since_close = start
        if self.first_head is not None:
            head = self.first_head
            payload = int(head["number_of_samples"]) * int(head["active_channels"]) * 8
            self.stream.expect_acquisitions(payload)
            self._head_buffer[:] = head.tobytes()
            self._acquisition()
            self.stream.finish_message()
        while True:
            mid = self.stream.peek()
            if mid is None:
                raise MissingCloseError(
                    f"stream ended after {self.stream.index} messages without a CLOSE message "
                    "(the sender stopped early or the connection dropped)",
                    self.stream.offset,
                    self.stream.index,
                )
            if mid is MessageId.CLOSE:
                self.stream.read_message()
                break
            self._handlers.get(mid, self._other)()
        # never wait here: a network peer may keep its end open after its CLOSE
        trailing = self.stream.data_after_close(wait=False)
        after_close = after_close_warning(self.stream) if trailing else None
        for key in list(self.open):
            self._close(key)
        for _ in range(self.workers):
            self.shared.work.put(None)
        self.shared.results.put(("end", self.closed))
        return {
            "wall_s": time.monotonic() - start,
            "cpu_s": time.process_time() - cpu,
            "bytes": self.stream.offset,
            "messages": self.stream.index,
            **self.counts,
            "units": self.closed,
            "skipped": self.skipped,
            "configs": self.configs,
            "noise": self.noise.summary(),
            "calibration": self.calibration.stats(),
            "wait_free_slot_s": self.wait_free_s,
            "after_close": after_close,
            "trace": self.trace.events,
        }

    # --------------------------------------------------------------- messages
    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def _text(self) -> None:
        msg = self.stream.read_message()
        assert isinstance(msg, Text)
        self._count("text_messages")
        self.shared.results.put(("text", self.closed, encode_message(msg)))

    def _config(self) -> None:
        mid = self.stream.peek()
        msg: Any = self.stream.read_message()
        self._count("config_messages")
        name = msg.name if mid is MessageId.CONFIG_FILE else f"<{len(msg.text)} characters>"
        self.configs.append(f"{mid.name if mid else ''} {name}")

    def _second_header(self) -> None:
        raise self.stream.error("expected one HEADER message, found a second one")

    def _other(self) -> None:
        """A message the recon does not use (NDARRAY, IMAGE, WAVEFORM): counted and skipped
        without being held, whatever size it claims."""
        mid = skip_message(self.stream)
        self._count(f"{mid.name.lower() if mid else 'other'}_messages")

    def _next_acquisition(self) -> None:
        self.stream.consume_peeked()
        self.stream.readinto(self._head_buffer, "AcquisitionHeader")
        self._acquisition()
        self.stream.finish_message()

    # ----------------------------------------------------------- acquisitions
    def _acquisition(self) -> None:
        """One acquisition whose header is in ``_head_buffer``; its payload comes next.

        The per-line path reads the header's fields with one ``struct`` call and places the
        line without building objects: at tens of thousands of lines per second, each
        microsecond here is a share of a core (the reader is one process).
        """
        stream = self.stream
        (flags, samples, channels, _, space, trajectory, step1, step2, slc, contrast, phase,
         repetition, set_) = _HEAD_FIELDS.unpack_from(self._head_buffer)  # fmt: skip
        self.counts["acquisitions"] += 1
        self.shared.acquisitions_in.value += 1
        reason = skip_reason(flags) if flags & NOT_IMAGING_MASK else None
        if reason == "noise":
            self._check_noise_line(channels, samples)
        if trajectory and (reason is not None or not self.keeps_trajectories):
            stream.skip(samples * trajectory * 4, "trajectory")
        if reason == "noise":
            self.noise.add(self._read_scratch(channels, samples), self._head)
            self.skipped["noise"] = self.skipped.get("noise", 0) + 1
            return
        if not self.noise.frozen:
            warning = self.noise.freeze(self._head)
            if warning:
                self.shared.report("warning", "reader", warning)
        key = (space, slc, contrast, phase, set_, repetition)  # hashes like its UnitKey
        if reason == "calibration" and self.calibration.enabled:
            self._calibration_line(self._head, flags, samples, channels)
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        elif reason is not None:
            stream.skip(channels * samples * 8, "acquisition samples")
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        else:
            self._land(key, step1, step2, flags, samples, channels)
        if flags & _CLOSING:
            self._apply_close_flags(key, flags)

    def _check_noise_line(self, channels: int, samples: int) -> None:
        """A noise line is read whole (its covariance needs every channel of every sample):
        its size is checked against the slots before a byte of it is read."""
        room = self.shared.layout
        if channels > room.coils:
            raise self.stream.error(
                f"noise acquisition has {channels} active channels; expected at most "
                f"{room.coils} (the header's receiverChannels or the first acquisition's)"
            )
        most = self.samples_per_unit()
        if samples > most:
            raise self.stream.error(
                f"noise acquisition has {samples} samples; expected at most {most} (as many "
                "as one k-space unit holds)"
            )

    def samples_per_unit(self) -> int:
        """Samples per coil one k-space unit holds (a noise line may not be longer)."""
        room = self.shared.layout
        return room.k2 * room.k1 * room.k0

    def _read_scratch(self, channels: int, samples: int) -> np.ndarray:
        n = channels * samples
        if self._scratch.size < n:
            self._scratch = np.empty(n, np.complex64)
        block = self._scratch[:n].reshape(channels, samples)
        self.stream.readinto(block, "acquisition samples", True)
        return block

    def _key(self, head: np.void) -> UnitKey:
        idx = head["idx"]
        return UnitKey(
            int(head["encoding_space_ref"]),
            int(idx["slice"]),
            int(idx["contrast"]),
            int(idx["phase"]),
            int(idx["set"]),
            int(idx["repetition"]),
        )

    def _land(
        self, key: tuple[int, ...], step1: int, step2: int, flags: int, samples: int, channels: int
    ) -> None:
        where = None
        unit = self.open.get(key)  # type: ignore[call-overload]
        if unit is None:
            where = self._placement(self._head, key, samples)  # checks the encoding space
            if channels != self.coils:
                self._check_channels(channels)
            unit = self._open_unit(UnitKey(*key))
        elif channels != self.coils:
            self._check_channels(channels)
        placer = self.placers[key[0]]
        k1, k2 = step1 + placer.k1_shift, step2 + placer.k2_shift
        full = samples == placer.k0n and 0 <= k1 < placer.k1n and 0 <= k2 < placer.k2n
        if not full:
            where = self._placement(self._head, key, samples)
            k1, k2 = where.k1, where.k2
            full = where.full
        line_index = k2 * placer.k1n + k1
        count = unit.filled.get(line_index, 0)
        if full and not count and not flags & _REVERSE:
            start = line_index * unit.line_bytes
            self.stream.readinto(unit.samples[start : start + unit.line_bytes], "samples", True)
        else:
            self._add_line(unit, k2, k1, count, flags, samples, channels, where)
        unit.filled[line_index] = count + 1
        unit.lines += 1
        if flags & _CAL_AND_IMAGING and self.calibration.enabled:
            self.calibration.note_imaging(CalibrationKey(*key[:3]), k2, k1, time.monotonic)
        self.counts["imaging_lines"] += 1
        distance = abs(step1 - placer.k1_center) + abs(step2 - placer.k2_center)
        if distance < unit.distance:
            unit.distance = distance
            unit.reference = bytes(self._head_buffer)

    def _add_line(
        self,
        unit: _OpenUnit,
        k2: int,
        k1: int,
        count: int,
        flags: int,
        samples: int,
        channels: int,
        where: Any,
    ) -> None:
        """A line that is not one whole, first, forward readout: through the scratch buffer
        (reversed, averaged, or a short readout whose other samples are zeroed)."""
        if samples == unit.kspace.shape[3]:
            start, stop = 0, samples
        else:
            start, stop = where.k0_start, where.k0_stop
        block = self._read_scratch(channels, samples)
        if flags & _REVERSE:
            block = block[:, ::-1]
        line = unit.kspace[k2, k1]
        if not count:  # the slot holds an earlier unit's data: every sample is written
            line[:, :start] = 0
            line[:, stop:] = 0
            line[:, start:stop] = block
        else:
            line[:, start:stop] += block

    def _placement(self, head: np.void, key: tuple[int, ...], samples: int) -> Any:
        """Where a line of ``key`` goes in its encoding space's grid (stream error if nowhere)."""
        if key[0] >= len(self.placers):
            raise self.stream.error(
                f"acquisition refers to encoding space {key[0]}; expected 0.."
                f"{len(self.placers) - 1} (the header has {len(self.placers)})"
            )
        idx = head["idx"]
        step1, step2 = int(idx["kspace_encode_step_1"]), int(idx["kspace_encode_step_2"])
        try:
            return self.placers[key[0]].place(step1, step2, samples, int(head["center_sample"]))
        except ValueError as exc:
            raise self.stream.error(
                f"acquisition {self.counts['acquisitions'] - 1}: {exc}"
            ) from None

    def _calibration_line(self, head: np.void, flags: int, samples: int, channels: int) -> None:
        """A calibration-only line: into its slice's calibration buffer, never image k-space."""
        key = self._key(head)
        where = self._placement(head, key, samples)
        if channels != self.coils:
            self._check_channels(channels)
        record, first = self.calibration.line_target(
            CalibrationKey(*key[:3]), where.k2, where.k1, channels, time.monotonic
        )
        self.counts["calibration_lines"] = self.counts.get("calibration_lines", 0) + 1
        if where.full and first and not flags & _REVERSE:
            self.stream.readinto(record, "acquisition samples")
            return
        block = self._read_scratch(channels, samples)
        if flags & _REVERSE:
            block = block[:, ::-1]
        if first:
            record[...] = 0
        record[:, where.k0_start : where.k0_stop] += block

    def _check_channels(self, channels: int) -> None:
        room = self.shared.layout.coils
        if self.coils:
            raise self.stream.error(
                f"acquisition has {channels} active channels; expected {self.coils} like the "
                "first imaging acquisition (the coil count may not change within a stream)"
            )
        if channels > room or channels < 1:
            raise self.stream.error(
                f"imaging acquisition has {channels} active channels; expected 1..{room} "
                "(the first acquisition and the header's receiverChannels)"
            )
        self.coils = channels

    def _open_unit(self, key: UnitKey) -> _OpenUnit:
        if len(self.open) >= self.slot_count:
            raise ConfigurationError(
                f"all {self.slot_count} k-space slots are held by units that are still open "
                f"(opening slice {key.slice}, contrast {key.contrast}, repetition "
                f"{key.repetition} at message {self.stream.index}): the data keeps more units "
                "open at once than its header's encoding limits say; raise --memory-limit"
            )
        slot = self._free_slot()
        k2, k1, k0 = self.plan.spaces[key.encoding_space].kspace_shape
        ring = self.shared.kspace
        kspace = ring.kspace(slot, (k2, k1, self.coils, k0))
        unit = _OpenUnit(
            key=key,
            slot=slot,
            kspace=kspace,
            counts=ring.counts(slot, self.shared.layout, (k2, k1)),
            samples=memoryview(kspace.reshape(-1).view(np.uint8)),  # type: ignore[arg-type]
            line_bytes=self.coils * k0 * 8,
        )
        self.open[key] = unit
        return unit

    def _free_slot(self) -> int:
        """The lowest-numbered free slot, waiting for one when none is free.

        Reusing the same few slots (rather than cycling through all of them) keeps the
        memory every process touches small: each first touch of a page of shared memory is
        a page fault in each process that touches it.
        """
        queue = self.shared.free_slots
        while not queue.empty():
            self.free.add(int(queue.get()))
        if not self.free:
            waited = time.monotonic()
            self.trace.begin("wait for a free slot", "wait", waited)
            self.free.add(int(queue.get()))
            now = time.monotonic()
            self.trace.end(now)
            self.wait_free_s += now - waited
        slot = min(self.free)
        self.free.remove(slot)
        return slot

    def _apply_close_flags(self, key: tuple[int, ...], flags: int) -> None:
        if flags & _LAST_IN_SLICE and key in self.open:
            self._close(self.open_key(key))
        if flags & _LAST_IN_MEASUREMENT:
            for open_key in list(self.open):
                self._close(open_key)
        elif flags & _LAST_IN_REPETITION:
            repetition = key[5]
            for open_key in [k for k in self.open if k.repetition == repetition]:
                self._close(open_key)

    def open_key(self, key: tuple[int, ...]) -> UnitKey:
        """The open unit's own :class:`UnitKey` for a plain tuple of the same counters."""
        return self.open[key].key  # type: ignore[index]

    def _close(self, key: UnitKey) -> None:
        unit = self.open.pop(key)
        unit.write_counts()
        info = UnitInfo(
            key=key,
            sequence=self.closed,
            reference_head=unit.reference,
            coils=self.coils,
            lines=unit.lines,
        )
        self.closed += 1
        calibration = None
        if self.calibration.enabled:
            calibration = self.calibration.for_unit(
                CalibrationKey(*key[:3]), unit.kspace, unit.counts, self.coils
            )
        unit.samples.release()
        del unit.kspace, unit.counts, unit.samples
        self.shared.work.put((info, unit.slot, calibration))
        if self.trace.enabled:
            now = time.monotonic()
            self.trace.span(
                f"read unit #{info.sequence}",
                "read",
                self._since_close,
                now,
                unit=info.sequence,
                slice=key.slice,
                repetition=key.repetition,
                lines=info.lines,
            )
            self.trace.counter("input", now, MB=self.stream.offset / 1e6)
            self._since_close = now

"""Worker processes: closed k-space slot in, encoded images out.

Each worker takes ``(UnitInfo, slot)`` from the work queue, zeroes the lines the reader did
not fill, divides averaged lines by their count, runs the kernel on a view of the slot (which
the kernel may use as scratch space), encodes the images into an image slot (or, when they do
not fit or the writer is waiting for exactly this unit and no image slot is free, sends the
bytes over the queue) and returns the slot to the free list.  A slot is never cleared as a
whole: the reader writes every sample of each line it places, so only the unsampled lines
need zeros, and fully sampled data needs none.  One FFT thread per worker (the kernels call
their FFTs with one thread): the pool, not the FFT, provides the parallelism.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from parallel_recon.workers.api import (
    Calibration,
    LocalCalibrationCache,
    ReconContext,
    ReconPlan,
    UnitInfo,
)
from parallel_recon.workers.noise import whiten_lines

from ..errors import PipelineError, ReconError
from ..protocol import Image, encode_buffers
from .calibration import CalibrationRef, read_calibration
from .derived import DerivedCache
from .kernels import KernelFunction, failure_location, full_traceback
from .readouts import readout_context
from .ring import Shared
from .trace import NullTrace, Trace

__all__ = ["WorkerLoop", "describe_unit"]


def describe_unit(info_key: Any, sequence: int) -> str:
    """``unit #5 (slice 3, repetition 1)``, naming only the counters that vary in practice."""
    key = info_key
    parts = [f"slice {key.slice}"]
    for name in ("contrast", "phase", "set"):
        value = getattr(key, name)
        if value:
            parts.append(f"{name} {value}")
    parts.append(f"repetition {key.repetition}")
    if key.encoding_space:
        parts.insert(0, f"encoding space {key.encoding_space}")
    return f"unit #{sequence} ({', '.join(parts)})"


def _source_file(kernel: KernelFunction) -> str:
    """The file that defines ``kernel`` (its folder holds the user's own code)."""
    return str(getattr(getattr(kernel, "__code__", None), "co_filename", ""))


def _clear_unsampled(kspace: np.ndarray, sampled: np.ndarray) -> None:
    """Zero the lines no acquisition filled (the slot still holds an earlier unit there)."""
    if not sampled.all():
        kspace[~sampled] = 0


def _average(kspace: np.ndarray, counts: np.ndarray) -> None:
    """Divide lines that were acquired more than once by their count (in place)."""
    repeated = counts > 1
    if repeated.any():
        k2, k1 = np.nonzero(repeated)
        kspace[k2, k1] /= counts[k2, k1][:, None, None]


class WorkerLoop:
    """The body of one worker process.

    Parameters
    ----------
    number:
        1-based worker number (for messages and the ``current`` table).
    kernel, kernel_name:
        The ``reconstruct`` function and how to name it in errors.
    plan:
        Shared by all units.
    shared:
        Rings and queues.
    trace:
        Records the waits for work, one span per unit and the kernel call in it
        (``--trace``); a no-op by default.
    """

    def __init__(
        self,
        number: int,
        kernel: KernelFunction,
        kernel_name: str,
        plan: ReconPlan,
        shared: Shared,
        trace: Trace | None = None,
    ):
        self.number = number
        self.kernel = kernel
        self.kernel_name = kernel_name
        self.plan = plan
        self.shared = shared
        self.busy_s = 0.0
        self.units = 0
        self.images = 0
        self.fallbacks = 0
        self.choices: Counter[str] = Counter()
        self.warned: set[str] = set()
        self._whitener: np.ndarray | None = None
        self.trace = trace if trace is not None else NullTrace()
        self.local_cache = LocalCalibrationCache()
        """Derived arrays this worker computed outside the shared store."""
        self.calibrations: dict[str, float] = {"computed": 0, "shared": 0, "own": 0, "cpu_s": 0.0}
        self.calibration_wait_s = 0.0

    def run(self) -> dict[str, Any]:
        """Reconstruct units until the stop marker; returns this worker's statistics."""
        start, cpu = time.monotonic(), time.process_time()
        trace = self.trace
        trace.start_process(f"worker {self.number}")
        while True:
            trace.begin("wait for work", "wait")
            item = self.shared.work.get()
            began = time.monotonic()
            trace.end(began)
            if item is None:
                break
            info, slot, calibration = item
            trace.begin(f"unit #{info.sequence}", "unit", began, unit=info.sequence)
            self._mark(info)
            self._unit(info, slot, calibration)
            self._mark(None)
            finished = time.monotonic()
            trace.end(finished)
            self.busy_s += finished - began
        wall = time.monotonic() - start
        return {
            "worker": self.number,
            "wall_s": wall,
            "cpu_s": time.process_time() - cpu,
            "busy_s": self.busy_s,
            "busy_fraction": self.busy_s / wall if wall > 0 else 0.0,
            "units": self.units,
            "images": self.images,
            "image_queue_fallbacks": self.fallbacks,
            "kernel_choices": dict(self.choices),
            "calibrations": int(self.calibrations["computed"]),
            "calibrations_shared": int(self.calibrations["shared"]),
            "calibrations_unshared": int(self.calibrations["own"]),
            "calibration_cpu_s": self.calibrations["cpu_s"],
            "calibration_wait_s": self.calibration_wait_s,
            "trace": trace.events,
        }

    def _mark(self, info: UnitInfo | None) -> None:
        base = (self.number - 1) * Shared.CURRENT_FIELDS
        values = [-1] * Shared.CURRENT_FIELDS if info is None else [info.sequence, *info.key]
        self.shared.current[base : base + Shared.CURRENT_FIELDS] = values

    def _prewhitener(self) -> np.ndarray | None:
        """The shared prewhitening matrix (read once: the reader publishes it before the first
        unit closes and never changes it), or None without a noise scan or with prewhiten=off."""
        if self._whitener is None and self.shared.noise is not None:
            self._whitener = self.shared.noise.matrix()
        return self._whitener

    def _calibration(self, ref: CalibrationRef | None, coils: int) -> Calibration | None:
        """A private copy of the unit's calibration (its buffer stays held until the unit
        is done: the arrays derived from it live in the buffer's entry of the shared store,
        and a buffer is reused only once every unit holding it has released it)."""
        if ref is None:
            return None
        return read_calibration(self.shared.calibration, ref, coils)

    def _derived_cache(self, info: UnitInfo, ref: CalibrationRef | None) -> DerivedCache | None:
        if ref is None:
            return None
        return DerivedCache(
            self.shared.derived,
            ref.buffer,
            ref.version,
            tuple(info.key[:3]),
            self.local_cache,
            self.number,
            self.calibrations,
        )

    def _unit(self, info: UnitInfo, slot: int, ref: CalibrationRef | None) -> None:
        shared = self.shared
        counts: np.ndarray | None = None
        cache: DerivedCache | None = None
        if shared.readouts is not None:  # readouts with trajectories: no calibration
            kspace, context = readout_context(
                shared.readouts, shared.kspace, slot, self.plan, info, self._prewhitener()
            )
        else:
            kspace, counts, context, cache = self._grid_unit(info, slot, ref)
        try:
            buffers, spans = self._reconstruct(kspace, context)
            self._note(context)
            self.trace.begin("deliver images", "write")
            self._deliver(info.sequence, buffers, spans)
            self.trace.end()
        finally:  # the images are out: the calibration and its derived arrays may go
            if ref is not None:
                shared.calibration_release.put(ref.buffer)
            if cache is not None:
                self.calibration_wait_s += cache.wait_s
        if counts is not None:
            counts.fill(0)
        del kspace, counts, context
        shared.free_slots.put(slot)
        self.units += 1
        self.images += len(spans)

    def _grid_unit(
        self, info: UnitInfo, slot: int, ref: CalibrationRef | None
    ) -> tuple[np.ndarray, np.ndarray, ReconContext, DerivedCache | None]:
        """A Cartesian unit made ready for its kernel: unsampled lines cleared, averages
        divided, prewhitened with its calibration; its k-space, counts, context and cache."""
        shared = self.shared
        k2, k1, k0 = self.plan.spaces[info.key.encoding_space].kspace_shape
        kspace = shared.kspace.kspace(slot, (k2, k1, info.coils, k0))
        counts = shared.kspace.counts(slot, shared.layout, (k2, k1))
        sampled = counts > 0
        _clear_unsampled(kspace, sampled)
        _average(kspace, counts)
        calibration = self._calibration(ref, info.coils)
        whitener = self._prewhitener()
        if whitener is not None:
            whiten_lines(kspace, whitener, sampled)
            if calibration is not None:
                whiten_lines(calibration.kspace, whitener, calibration.sampled)
        cache = self._derived_cache(info, ref)
        context = ReconContext(
            plan=self.plan,
            unit=info,
            calibration=calibration,
            sampled=sampled,
            whitened=whitener is not None,
            overwrite_kspace=True,
            calibration_cache=cache,
        )
        return kspace, counts, context, cache

    def _reconstruct(
        self, kspace: np.ndarray, context: ReconContext
    ) -> tuple[list[bytes | memoryview], list[tuple[int, int]]]:
        """The kernel's images of one unit, encoded; its failures as one PipelineError."""
        info = context.unit
        where = describe_unit(info.key, info.sequence)
        try:
            self.trace.begin("kernel", "kernel")
            images = self.kernel(kspace, context)
            self.trace.end()
            return self._encode(images, info)
        except PipelineError:
            raise
        except ReconError as exc:
            raise PipelineError(f"kernel {self.kernel_name!r}, {where}: {exc}") from None
        except Exception as exc:
            failure = PipelineError(
                f"kernel {self.kernel_name!r} failed on {where}: {type(exc).__name__}: {exc} "
                f"({failure_location(exc, _source_file(self.kernel))})"
            )
            failure.detail = full_traceback(exc)
            raise failure from None

    def _note(self, context: ReconContext) -> None:
        """Count which kernel ran and why; pass each distinct warning to the supervisor once."""
        notes = context.notes
        if "kernel" in notes:
            why = notes.get("why", "")
            self.choices[f"{notes['kernel']}: {why}" if why else notes["kernel"]] += 1
        warning = notes.get("warning")
        if warning and warning not in self.warned:
            self.warned.add(warning)
            self.shared.report("warning", f"worker {self.number}", warning)

    def _encode(
        self, images: Any, info: UnitInfo
    ) -> tuple[list[bytes | memoryview], list[tuple[int, int]]]:
        if not isinstance(images, (list, tuple)) or not all(isinstance(i, Image) for i in images):
            raise PipelineError(
                f"kernel {self.kernel_name!r} returned {type(images).__name__} for "
                f"{describe_unit(info.key, info.sequence)}; expected a list of Image"
            )
        buffers: list[bytes | memoryview] = []
        spans: list[tuple[int, int]] = []
        offset = 0
        for image in images:
            parts = encode_buffers(image)
            size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
            spans.append((offset, size))
            offset += size
            buffers.extend(parts)
        return buffers, spans

    def _claim_image_slot(self, sequence: int, nbytes: int) -> int | None:
        shared = self.shared
        if nbytes > shared.images.slot_bytes:
            return None
        with shared.image_cond:
            while True:
                for index in range(len(shared.image_busy)):
                    if not shared.image_busy[index]:
                        shared.image_busy[index] = 1
                        return index
                if shared.writer_next.value >= sequence:
                    return None  # the writer waits for this very unit: never block it
                self.trace.begin("wait for an image slot", "wait")
                shared.image_cond.wait(0.5)
                self.trace.end()

    def _deliver(
        self, sequence: int, buffers: list[bytes | memoryview], spans: list[tuple[int, int]]
    ) -> None:
        total = spans[-1][0] + spans[-1][1] if spans else 0
        slot = self._claim_image_slot(sequence, total) if total else None
        if slot is None:
            if total:
                self.fallbacks += 1
            self.shared.results.put(("unit", sequence, -1, b"".join(buffers), spans))
            return
        target = self.shared.images.slot(slot)
        offset = 0
        for part in buffers:
            size = len(part) if isinstance(part, bytes) else part.nbytes
            target[offset : offset + size] = part
            offset += size
        del target
        self.shared.results.put(("unit", sequence, slot, None, spans))

"""The ordering writer: header, pass-through text, images in unit order, CLOSE.

Units finish in any order; the writer holds early ones back and emits strictly by sequence
number, so the same input gives the same bytes for any number of workers.  It owns
``image_index``: the number is patched into each encoded image header here, running from 1
per ``image_series_index`` in output order.  Each unit is flushed as soon as it is written,
so the first image leaves long before the input ends.  What goes on the wire comes from the
output generation's encoder (:mod:`.output`): MRD v1 as the workers encoded it, or MRD v2.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from ..protocol import IMAGE_HEADER_DTYPE
from .output import MrdV1Output, output_for
from .ring import Shared
from .trace import NullTrace, Trace

__all__ = ["OrderedWriter", "patch_image_indices"]

_ID = 2  # bytes of the message id before the image header
_FIELDS: Any = IMAGE_HEADER_DTYPE.fields
_INDEX_AT = _ID + int(_FIELDS["image_index"][1])
_SERIES_AT = _ID + int(_FIELDS["image_series_index"][1])
_U16 = struct.Struct("<H")


def patch_image_indices(
    buffer: memoryview | bytearray, spans: list[tuple[int, int]], counters: dict[int, int]
) -> None:
    """Number the encoded images in ``buffer`` from ``counters`` (series -> last index)."""
    for start, _ in spans:
        (series,) = _U16.unpack_from(buffer, start + _SERIES_AT)
        index = counters.get(series, 0) + 1
        counters[series] = index
        _U16.pack_into(buffer, start + _INDEX_AT, index & 0xFFFF)


class OrderedWriter:
    """The body of the writer process.

    Parameters
    ----------
    sink:
        Binary output (stdout or a file), owned by this process.
    header_xml:
        Echoed exactly as received.
    texts:
        Encoded TEXT messages that came before the first acquisition.
    shared:
        Rings and queues.
    trace:
        Records the waits for results and one span per unit emitted (``--trace``); a no-op
        by default.
    output:
        The output generation's encoder (default MRD v1).
    """

    def __init__(
        self,
        sink: BinaryIO,
        header_xml: str,
        texts: list[bytes],
        shared: Shared,
        trace: Trace | None = None,
        output: MrdV1Output | None = None,
    ):
        self.sink = sink
        self.shared = shared
        self.output = output if output is not None else output_for("ismrmrd")
        self.header = self.output.header(header_xml)
        self.texts = list(texts)
        self.pending: dict[int, tuple[int, bytes | None, list[tuple[int, int]]]] = {}
        self.held_texts: list[tuple[int, bytes]] = []
        self.next = 0
        self.end: int | None = None
        self.counters: dict[int, int] = {}
        self.bytes_out = 0
        self.images = 0
        self.wait_s = 0.0
        self.first_image_s: float | None = None
        self._start = time.monotonic()
        self.trace = trace if trace is not None else NullTrace()
        self._actions: dict[str, Callable[..., None]] = {
            "unit": self._hold_unit,
            "text": self._hold_text,
            "end": self._set_end,
        }

    def _write(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        self.sink.write(data)
        self.bytes_out += len(data) if isinstance(data, bytes) else data.nbytes

    def run(self) -> dict[str, Any]:
        """Write everything; returns the writer's statistics."""
        cpu = time.process_time()
        trace = self.trace
        trace.start_process("writer")
        trace.counter("output", time.monotonic(), MB=0.0)
        self._write(self.header)
        for text in self.texts:
            self._write(self.output.text(text))
        self.sink.flush()
        while self.end is None or self.next < self.end:
            self._release_texts()
            if self.next in self.pending:
                self._emit(self.next, *self.pending.pop(self.next))
                continue
            waited = time.monotonic()
            trace.begin("wait for results", "wait", waited)
            message = self.shared.results.get()
            now = time.monotonic()
            trace.end(now)
            self.wait_s += now - waited
            self._actions[message[0]](*message[1:])
        self._release_texts()
        self._write(self.output.end())
        self.sink.flush()
        return {
            "wall_s": time.monotonic() - self._start,
            "cpu_s": time.process_time() - cpu,
            "bytes": self.bytes_out,
            "units": self.next,
            "images": self.images,
            "wait_s": self.wait_s,
            "first_image_s": self.first_image_s,
            "trace": trace.events,
        }

    def _hold_unit(
        self, sequence: int, slot: int, payload: bytes | None, spans: list[tuple[int, int]]
    ) -> None:
        self.pending[sequence] = (slot, payload, spans)

    def _hold_text(self, after: int, data: bytes) -> None:
        self.held_texts.append((after, data))

    def _set_end(self, units: int) -> None:
        self.end = units

    def _release_texts(self) -> None:
        while self.held_texts and self.held_texts[0][0] <= self.next:
            self._write(self.output.text(self.held_texts.pop(0)[1]))

    def _emit(
        self, sequence: int, slot: int, payload: bytes | None, spans: list[tuple[int, int]]
    ) -> None:
        total = spans[-1][0] + spans[-1][1] if spans else 0
        began = time.monotonic()
        if slot >= 0:
            view = self.shared.images.slot(slot)[:total]
            patch_image_indices(view, spans, self.counters)
            for buffer in self.output.images(view, spans):
                self._write(buffer)
            del view
        elif payload:
            data = memoryview(bytearray(payload))
            patch_image_indices(data, spans, self.counters)
            for buffer in self.output.images(data, spans):
                self._write(buffer)
        self.sink.flush()
        if spans and self.first_image_s is None:
            self.first_image_s = time.monotonic() - self._start
        self.images += len(spans)
        self.shared.images_out.value += len(spans)
        shared = self.shared
        with shared.image_cond:
            if slot >= 0:
                shared.image_busy[slot] = 0
            shared.writer_next.value = sequence + 1
            shared.image_cond.notify_all()
        self.next = sequence + 1
        if self.trace.enabled:
            now = time.monotonic()
            self.trace.span(
                f"emit unit #{sequence}", "write", began, now, unit=sequence, images=len(spans)
            )
            self.trace.counter("output", now, MB=self.bytes_out / 1e6)

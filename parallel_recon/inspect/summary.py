"""What a stream or an HDF5 group holds: counts, flags, counters, sizes and warnings.

``parallel-recon info`` answers "what is in this file?" before anyone reconstructs it.  The
work is split by source: this module holds the accumulator (:class:`SectionSummary`) and the
stream scanner; :mod:`.summary_hdf5` feeds the same accumulator from HDF5 groups.  Payloads
are skipped, never decoded: only headers are read, in blocks, so a multi-GB stream is
summarised at the speed of reading it.

The summary is a JSON-ready dict (the ``--json`` output); its keys are documented on
:meth:`SectionSummary.to_dict`.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from typing import Any, BinaryIO

import numpy as np

from ..errors import ProtocolError
from ..protocol import (
    ACQUISITION_HEADER_DTYPE,
    DATA_TYPE_TO_DTYPE,
    ENCODING_COUNTERS_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    AcquisitionFlag,
    Header,
    ImageType,
    MessageId,
    StreamReader,
    after_close_warning,
    open_reader,
)
from .summary_header import summarize_header

__all__ = [
    "COUNTER_NAMES",
    "SectionSummary",
    "data_type_name",
    "image_type_name",
    "summarize_stream",
]

COUNTER_NAMES = tuple(name for name in ENCODING_COUNTERS_DTYPE.names or () if name != "user")
"""Acquisition ``idx`` counters whose ranges ``info`` reports."""

_LIMIT_OF_COUNTER = {name: name.replace("encode_step", "encoding_step") for name in COUNTER_NAMES}
_FLAG_NAMES = {flag.value: flag.name.lower() for flag in AcquisitionFlag}
_NOISE_BIT = 1 << (AcquisitionFlag.IS_NOISE_MEASUREMENT - 1)
_BLOCK = 4096
_MESSAGE_ORDER = [m.name for m in MessageId if m is not MessageId.CLOSE] + ["CLOSE"]


def data_type_name(code: int) -> str:
    """``float32`` for ISMRMRD data type 5, ``invalid(9)`` for codes outside 1..8."""
    dtype = DATA_TYPE_TO_DTYPE.get(int(code))
    return f"invalid({int(code)})" if dtype is None else dtype.name


def image_type_name(code: int) -> str:
    """``magnitude`` for image type 1, ``invalid(0)`` for codes outside 1..5."""
    try:
        return ImageType(int(code)).name.lower()
    except ValueError:
        return f"invalid({int(code)})"


def _histogram(values: np.ndarray, into: Counter[Any]) -> None:
    uniques, counts = np.unique(values, return_counts=True)
    for value, count in zip(uniques.tolist(), counts.tolist(), strict=True):
        into[value] += count


def _as_dict(counter: Counter[Any]) -> dict[str, int]:
    return {str(key): counter[key] for key in sorted(counter)}


class SectionSummary:
    """Accumulates what one stream or one HDF5 group contains.

    Acquisition and waveform headers arrive in blocks (structured arrays read by field
    name, so padded layouts work too); image headers one record at a time.
    """

    def __init__(self, name: str):
        self.name = name
        self.header: dict[str, Any] | None = None
        self.messages: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.acquisitions = 0
        self.flag_bits = np.zeros(64, dtype=np.int64)
        self.ranges: dict[str, list[int]] = {}
        self.samples: Counter[int] = Counter()
        self.channels: Counter[int] = Counter()
        self.trajectory_dims: Counter[int] = Counter()
        self.zero_sample = 0
        self.waveform_ids: Counter[int] = Counter()
        self.series: dict[str, dict[str, Any]] = {}
        self.arrays: list[dict[str, Any]] = []
        self.stream_bytes: int | None = None
        self.generation: str | None = None
        """Streams: ``ismrmrd`` (MRD v1) or ``mrd2`` (MRD v2)."""
        self.closed: bool | None = None
        self.error: str | None = None

    # ----------------------------------------------------------------- feeding
    def add_header_xml(self, xml: str) -> None:
        """Summarise the XML header (the first one wins; later ones are only counted)."""
        if self.header is None:
            self.header, warnings = summarize_header(xml)
            self.warnings.extend(warnings)

    def add_acquisition_heads(self, heads: np.ndarray) -> None:
        """Add a block of AcquisitionHeader records (any layout with the standard names)."""
        if heads.size == 0:
            return
        self.acquisitions += heads.size
        flags = heads["flags"].astype(np.uint64)
        bits = (flags[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        self.flag_bits += bits.sum(axis=0).astype(np.int64)
        imaging = heads[(flags & np.uint64(_NOISE_BIT)) == 0]
        if imaging.size:
            idx = imaging["idx"]
            for name in COUNTER_NAMES:
                values = idx[name]
                low, high = int(values.min()), int(values.max())
                old = self.ranges.get(name)
                self.ranges[name] = (
                    [low, high]
                    if old is None
                    else [
                        min(old[0], low),
                        max(old[1], high),
                    ]
                )
        samples = heads["number_of_samples"]
        _histogram(samples, self.samples)
        _histogram(heads["active_channels"], self.channels)
        _histogram(heads["trajectory_dimensions"], self.trajectory_dims)
        self.zero_sample += int(np.count_nonzero(samples == 0))

    def add_waveform_heads(self, heads: np.ndarray) -> None:
        """Add a block of WaveformHeader records."""
        _histogram(heads["waveform_id"], self.waveform_ids)

    def add_image_head(self, series: str, head: np.void, shape: tuple[int, ...]) -> None:
        """Add one ImageHeader; ``shape`` is the pixel array's ``(channels, z, y, x)``."""
        entry = self.series.setdefault(
            series,
            {
                "count": 0,
                "series_index": Counter(),
                "shapes": Counter(),
                "data_types": Counter(),
                "image_types": Counter(),
                "slices": Counter(),
            },
        )
        entry["count"] += 1
        entry["series_index"][int(head["image_series_index"])] += 1
        entry["shapes"]["x".join(str(n) for n in shape)] += 1
        entry["data_types"][data_type_name(int(head["data_type"]))] += 1
        entry["image_types"][image_type_name(int(head["image_type"]))] += 1
        entry["slices"][int(head["slice"])] += 1

    # ------------------------------------------------------------- finishing
    def _check(self) -> None:
        if self.zero_sample:
            self.warnings.append(
                f"{self.zero_sample} of {self.acquisitions} acquisitions have 0 samples "
                "(zero-sample readouts: nothing to reconstruct)"
            )
        for name, entry in self.series.items():
            bad = {k: v for k, v in entry["image_types"].items() if k.startswith("invalid")}
            for kind, count in bad.items():
                self.warnings.append(
                    f"image series {name}: {count} images have image_type {kind[8:-1]}; "
                    "expected 1..5 (magnitude, phase, real, imag, complex)"
                )
        if self.acquisitions and self.header is None:
            self.warnings.append("acquisitions without an XML header: cannot be reconstructed")
        if not self.header or "encodings" not in self.header or not self.header["encodings"]:
            return
        encoding = self.header["encodings"][0]
        for counter, (low, high) in self.ranges.items():
            limit = encoding["limits"].get(_LIMIT_OF_COUNTER[counter])
            if limit is None or limit["minimum"] is None or limit["maximum"] is None:
                continue
            if low < limit["minimum"] or high > limit["maximum"]:
                self.warnings.append(
                    f"{counter} in the data spans {low}..{high} but the header's encoding "
                    f"limits say {limit['minimum']}..{limit['maximum']}"
                )
        declared = self.header["system"]["receiver_channels"]
        if declared is not None and self.channels and max(self.channels) > declared:
            self.warnings.append(
                f"acquisitions have up to {max(self.channels)} channels but the header "
                f"declares {declared} receiver channels"
            )

    def flag_histogram(self) -> dict[str, int]:
        """Flag name -> number of acquisitions with that flag set."""
        return {
            _FLAG_NAMES.get(bit + 1, f"bit_{bit + 1}"): int(count)
            for bit, count in enumerate(self.flag_bits.tolist())
            if count
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the section.

        Keys: ``name``; ``header`` (see :func:`.summary_header.summarize_header`, null when
        absent); ``messages`` {MESSAGE_NAME: count}; ``acquisitions`` {count, flags
        {flag_name: count}, counters {name: [min, max]} over non-noise lines, samples,
        channels, trajectory_dimensions ({value: count} each), zero_sample}; ``waveforms``
        {count, ids {id: count}}; ``images`` [{series, count, series_index, shapes
        ("CxZxYxX": count), data_types, image_types, slices}]; ``arrays`` [{name, shape,
        dtype}]; ``stream_bytes`` and ``closed`` (streams, else null); ``warnings``;
        ``error`` (null, or the message that stopped the read).
        """
        self._check()
        images = []
        for name, entry in self.series.items():
            images.append(
                {"series": name, "count": entry["count"]}
                | {key: _as_dict(entry[key]) for key in entry if key != "count"}
            )
        return {
            "name": self.name,
            "header": self.header,
            "messages": {
                name: self.messages[name] for name in _MESSAGE_ORDER if name in self.messages
            },
            "acquisitions": {
                "count": self.acquisitions,
                "flags": self.flag_histogram(),
                "counters": dict(self.ranges),
                "samples": _as_dict(self.samples),
                "channels": _as_dict(self.channels),
                "trajectory_dimensions": _as_dict(self.trajectory_dims),
                "zero_sample": self.zero_sample,
            },
            "waveforms": {
                "count": sum(self.waveform_ids.values()),
                "ids": _as_dict(self.waveform_ids),
            },
            "images": images,
            "arrays": self.arrays,
            "stream_bytes": self.stream_bytes,
            "closed": self.closed,
            "warnings": self.warnings,
            "error": self.error,
        }


class _StreamScanner:
    """Walks a stream message by message, reading headers and skipping payloads."""

    def __init__(self, reader: StreamReader, section: SectionSummary):
        self.reader = reader
        self.section = section
        self.acq_block = np.zeros(_BLOCK, dtype=ACQUISITION_HEADER_DTYPE)
        self.acq_bytes = self.acq_block.view(np.uint8).reshape(_BLOCK, -1)
        self.acq_fill = 0
        self.handlers = {
            MessageId.ACQUISITION: self._acquisition,
            MessageId.IMAGE: self._image,
            MessageId.WAVEFORM: self._waveform,
        }

    def flush(self) -> None:
        self.section.add_acquisition_heads(self.acq_block[: self.acq_fill])
        self.acq_fill = 0

    def _acquisition(self) -> None:
        reader = self.reader
        reader.readinto(self.acq_bytes[self.acq_fill], "AcquisitionHeader")
        head = self.acq_block[self.acq_fill]
        samples = int(head["number_of_samples"])
        traj = samples * int(head["trajectory_dimensions"]) * 4
        reader.skip(traj + samples * int(head["active_channels"]) * 8, "acquisition payload")
        self.acq_fill += 1
        if self.acq_fill == _BLOCK:
            self.flush()

    def _image(self) -> None:
        reader = self.reader
        head = reader.read_image_head()
        attr_len = int(struct.unpack("<Q", reader.read_bytes(8, "attribute length"))[0])
        if attr_len > reader.limits.max_attribute_bytes:
            raise reader.error(
                f"image attribute length says {attr_len} bytes; expected at most "
                f"{reader.limits.max_attribute_bytes} (corrupt stream?)"
            )
        reader.skip(attr_len, "image attributes")
        x, y, z = (int(v) for v in head["matrix_size"])
        shape = (int(head["channels"]), z, y, x)
        itemsize = DATA_TYPE_TO_DTYPE[int(head["data_type"])].itemsize
        reader.skip(math.prod(shape) * itemsize, "image pixels")
        self.section.add_image_head(str(int(head["image_series_index"])), head, shape)

    def _waveform(self) -> None:
        head = self.reader.read_record(WAVEFORM_HEADER_DTYPE, "WaveformHeader")
        self.reader.skip(int(head["channels"]) * int(head["number_of_samples"]) * 4, "samples")
        self.section.add_waveform_heads(np.asarray(head).reshape(1))

    def run(self) -> None:
        reader, section = self.reader, self.section
        while True:
            mid = reader.peek()
            if mid is None:
                section.closed = False
                section.warnings.append(
                    f"stream ended after {reader.index} messages without a CLOSE message"
                )
                return
            handler = self.handlers.get(mid)
            if handler is None:
                message = reader.read_message()
                section.messages[mid.name] += 1
                if isinstance(message, Header):
                    section.add_header_xml(message.xml)
                if mid is MessageId.CLOSE:
                    section.closed = True
                    if reader.data_after_close(wait=True):
                        section.warnings.append(after_close_warning(reader))
                    return
                continue
            reader.consume_peeked()
            handler()
            reader.finish_message()
            section.messages[mid.name] += 1


def summarize_stream(source: BinaryIO, name: str = "stream") -> SectionSummary:
    """Summarise an MRD stream (either generation) read from ``source``.

    A protocol error does not raise: it stops the scan, and the section keeps what was read
    so far with ``error`` set (callers print the partial summary and exit non-zero).
    """
    section = SectionSummary(name)
    reader = open_reader(source, require_close=False)
    section.generation = reader.generation
    scanner = _StreamScanner(reader, section)
    try:
        scanner.run()
    except ProtocolError as exc:
        section.error = str(exc)
    scanner.flush()
    section.stream_bytes = reader.offset
    return section

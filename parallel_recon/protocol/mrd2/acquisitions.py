"""MRD v1 acquisitions written as MRD v2 stream items, field by field from the v1 record.

By the MRD project's mapping (:mod:`.mapping`): every counter and size as a present
optional, ``channelOrder`` ``0..channels-1``, all 8 user ints and floats, the time stamps,
sample time and ``idx.user`` left out (and named in :class:`~.notes.Notes` when they hold
something), the trajectory transposed to ``[basis, samples]``.  Reading them is the work
of :mod:`.templates`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layout import ACQUISITION_HEADER_DTYPE
from ..messages import Acquisition
from .codec import uvarint_bytes
from .mapping import COUNTERS, MappingError
from .mapping import version_note as _version_note
from .notes import Notes
from .scan import V1_SCALARS, V1_STRUCT

__all__ = ["acquisition_buffers"]

_C8 = np.dtype("<c8")
_F4 = np.dtype("<f4")

# ------------------------------------------------------------------- encoding
_V1_FIELD_AT = {key: n for n, (key, _) in enumerate(V1_SCALARS)}
_GEOMETRY_BYTES = (
    int(ACQUISITION_HEADER_DTYPE.fields["position"][1]),  # type: ignore[index]
    int(ACQUISITION_HEADER_DTYPE.fields["user_float"][1]),  # type: ignore[index]
)


def _at(*key: Any) -> int:
    return _V1_FIELD_AT[key]


_SCALAR = {
    "flags": _at("flags"),
    "measurement_uid": _at("measurement_uid"),
    "scan_counter": _at("scan_counter"),
    "active_channels": _at("active_channels"),
    "available_channels": _at("available_channels"),
    "number_of_samples": _at("number_of_samples"),
    "discard_pre": _at("discard_pre"),
    "discard_post": _at("discard_post"),
    "center_sample": _at("center_sample"),
    "encoding_space_ref": _at("encoding_space_ref"),
    "acquisition_time_stamp": _at("acquisition_time_stamp"),
    "sample_time_us": _at("sample_time_us"),
}
_COUNTER_AT = [_at("idx", v1) for _, v1 in COUNTERS]
_USER_INT_AT = _at("user_int", 0)
_DROPPED_RANGES = {
    "physiology_time_stamp": (_at("physiology_time_stamp", 0), 3),
    "idx.user": (_at("idx", "user", 0), 8),
    "channel_mask": (_at("channel_mask", 0), 16),
    "acquisition_time_stamp": (_SCALAR["acquisition_time_stamp"], 1),
    "sample_time_us": (_SCALAR["sample_time_us"], 1),
}
_CHANNEL_ORDERS: dict[int, bytes] = {}
_EMPTY_SHAPE = b"\x00\x00"


def _channel_order(channels: int) -> bytes:
    cached = _CHANNEL_ORDERS.get(channels)
    if cached is None:
        cached = uvarint_bytes(channels) + b"".join(map(uvarint_bytes, range(channels)))
        _CHANNEL_ORDERS[channels] = cached
    return cached


def _optional(value: int) -> bytes:
    return b"\x01" + uvarint_bytes(value)


def acquisition_buffers(acq: Acquisition, notes: Notes) -> list[bytes | memoryview]:
    """A v1 ACQUISITION as one v2 stream item (block count 1, tag, value), by the MRD
    project's mapping, without building the v2 value first."""
    raw = acq.head.tobytes()
    values = V1_STRUCT.unpack(raw)
    for name, (first, count) in _DROPPED_RANGES.items():
        if any(values[first : first + count]):
            notes.field(
                f"acquisition {name}",
                f"the MRD v2 mapping leaves acquisition {name} out (not carried)",
            )
    if values[0] != 1:
        _version_note("acquisition", notes)
    channels = values[_SCALAR["active_channels"]]
    if values[_SCALAR["available_channels"]] != channels:
        notes.field(
            "acquisition available_channels",
            "the MRD v2 mapping leaves acquisition available_channels out (v1 reads it back "
            "as the active channels)",
        )
    data = np.ascontiguousarray(acq.data, dtype=_C8)
    traj = acq.traj
    if data.shape != (channels, values[_SCALAR["number_of_samples"]]):
        raise MappingError(f"acquisition data shape {data.shape} does not match its header")
    zigzag = [(v << 1) ^ (v >> 31) for v in values[_USER_INT_AT : _USER_INT_AT + 8]]
    geometry_at, user_float_at = _GEOMETRY_BYTES
    head = b"".join(
        (
            b"\x01\x00",
            uvarint_bytes(values[_SCALAR["flags"]]),
            *(_optional(values[at]) for at in _COUNTER_AT),
            b"\x00",
            uvarint_bytes(values[_SCALAR["measurement_uid"]]),
            _optional(values[_SCALAR["scan_counter"]]),
            b"\x00\x00",
            _channel_order(channels),
            _optional(values[_SCALAR["discard_pre"]]),
            _optional(values[_SCALAR["discard_post"]]),
            _optional(values[_SCALAR["center_sample"]]),
            _optional(values[_SCALAR["encoding_space_ref"]]),
            b"\x00",
            raw[geometry_at : geometry_at + 60],
            b"\x08",
            b"".join(map(uvarint_bytes, zigzag)),
            b"\x08",
            raw[user_float_at : user_float_at + 32],
            uvarint_bytes(data.shape[0]),
            uvarint_bytes(data.shape[1]),
        )
    )
    if traj.size:
        v2traj = np.ascontiguousarray(np.asarray(traj, _F4).T)
        shape = uvarint_bytes(v2traj.shape[0]) + uvarint_bytes(v2traj.shape[1])
        tail: list[bytes | memoryview] = [shape, v2traj.tobytes()]
    else:
        tail = [_EMPTY_SHAPE]
    if data.nbytes >= 16 << 10:
        return [head, memoryview(data).cast("B"), *tail]  # type: ignore[arg-type]
    return [head + data.tobytes() + b"".join(tail)]

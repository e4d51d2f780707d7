"""Decoding runs of equal-size acquisitions with one structured-array view.

Readouts of one scan share their sizes, so the acquisitions that sit complete in the
reader's buffer can be viewed as one array of ``[header, trajectory, samples, next id]``
records: a handful of numpy calls per buffer instead of several per message.  The message
objects hold views into the buffer (no copy).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache
from itertools import repeat

import numpy as np

from .layout import ACQUISITION_HEADER_DTYPE, MessageId
from .messages import Acquisition

__all__ = ["ACQ_HEAD_BYTES", "ACQ_SIZES", "decode_run", "run_dtype"]

ACQ_HEAD_BYTES = ACQUISITION_HEADER_DTYPE.itemsize
_F4 = np.dtype("<f4")
_C8 = np.dtype("<c8")


def _field_struct(dtype: np.dtype, names: list[str]) -> struct.Struct:
    """A struct that unpacks the named uint16 fields of a header in one call."""
    assert dtype.fields is not None
    fmt, at = "<", 0
    for name in names:
        offset = dtype.fields[name][1]
        fmt += f"{offset - at}xH"
        at = offset + 2
    return struct.Struct(fmt)


ACQ_SIZES = _field_struct(
    ACQUISITION_HEADER_DTYPE, ["number_of_samples", "active_channels", "trajectory_dimensions"]
)
"""Unpacks ``(number_of_samples, active_channels, trajectory_dimensions)`` from a header."""


@lru_cache(maxsize=64)
def run_dtype(samples: int, channels: int, dims: int) -> np.dtype:
    """One acquisition of these sizes on the wire, plus the id of the message after it."""
    traj_bytes = 4 * samples * dims
    total = ACQ_HEAD_BYTES + traj_bytes + 8 * channels * samples
    return np.dtype(
        {
            "names": ["head", "traj", "data", "next"],
            "formats": [
                ACQUISITION_HEADER_DTYPE,
                (_F4, (samples, dims)),
                (_C8, (channels, samples)),
                "<u2",
            ],
            "offsets": [0, ACQ_HEAD_BYTES, ACQ_HEAD_BYTES + traj_bytes, total],
            "itemsize": total + 2,
        }
    )


def decode_run(
    chunk: bytearray, start: int, end: int, samples: int, channels: int, dims: int
) -> list[Acquisition]:
    """The acquisitions of these sizes that follow each other in ``chunk[start:end]``.

    ``start`` is where the first one's header begins (its id already read); the list
    stops before the first message that is not an acquisition of the same sizes or is not
    complete together with the id after it.  At least one record must fit.
    """
    dtype = run_dtype(samples, channels, dims)
    count = (end - start) // dtype.itemsize
    records = np.frombuffer(chunk, dtype, count, start)
    heads = records["head"]
    same = records["next"][:-1] == MessageId.ACQUISITION
    later = heads[1:]
    same &= later["number_of_samples"] == samples
    same &= later["active_channels"] == channels
    same &= later["trajectory_dimensions"] == dims
    run = count if same.all() else 1 + int(same.argmin())
    data = records["data"][:run]
    if dims and samples:
        trajs: Iterable[np.ndarray] = records["traj"][:run]
    else:  # no trajectory: every message can share one empty array
        trajs = repeat(np.zeros((samples, dims), dtype=_F4), run)
    return list(map(Acquisition, heads[:run], trajs, data))

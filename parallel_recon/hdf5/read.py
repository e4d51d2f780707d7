"""ISMRMRD HDF5 -> MRD messages, read in blocks and encoded in bulk.

The C++ library writes one-element chunks, so reading row by row costs one HDF5 call per
acquisition.  Here rows are read ``BLOCK_ROWS`` at a time (one ``H5Dread``), and runs of
acquisitions with equal sizes become wire bytes through one structured numpy array per run,
without building a Python object per acquisition.  Message order follows
``ismrmrd_hdf5_to_stream``: the header, then acquisitions and waveforms merged by time stamp
(an acquisition goes first only when its time stamp is strictly smaller), or, when image
series are asked for, the images of each series in turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputFileError
from ..protocol.encode import encode_buffers
from ..protocol.layout import (
    ACQUISITION_HEADER_DTYPE,
    DATA_TYPE_TO_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    MessageId,
)
from ..protocol.messages import Acquisition, Header, Image, Message, Waveform
from .layout import (
    ACQUISITION_ROW_DTYPE,
    ACQUISITIONS,
    WAVEFORM_ROW_DTYPE,
    WAVEFORMS,
    XML,
    check_fields,
    from_file_pixels,
    image_series_group,
    list_image_series,
    open_group,
    open_mrd_file,
)

__all__ = [
    "BLOCK_ROWS",
    "acquisition_bytes",
    "Segment",
    "count_acquisitions",
    "count_images",
    "count_waveforms",
    "iter_segments",
    "read_header_xml",
    "read_messages",
    "segment_buffers",
    "segment_messages",
    "stream_bytes",
]

BLOCK_ROWS = 4096
"""Acquisition/waveform rows read per HDF5 call (at most)."""
BLOCK_BYTES = 32 << 20
"""Rows per call are reduced so that a block's arrays stay near this size."""
_IMAGE_BLOCK_BYTES = 64 << 20
_C8 = np.dtype("<c8")


@dataclass
class Segment:
    """A piece of the output stream, in order.

    ``kind`` is ``"header"`` (``payload`` is the XML text), ``"acquisitions"`` (``payload``
    is a block of rows of :data:`ACQUISITION_ROW_DTYPE`; ``first`` is the index of its first
    row in the file), ``"waveform"`` (one row of :data:`WAVEFORM_ROW_DTYPE`) or ``"image"``
    (an :class:`Image`).
    """

    kind: str
    payload: object
    first: int = 0

    @property
    def count(self) -> int:
        """Messages in this segment."""
        return len(self.payload) if self.kind == "acquisitions" else 1  # type: ignore[arg-type]


def _decode_string(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _xml(group: h5py.Group) -> str | None:
    item = group.get(XML)
    if not isinstance(item, h5py.Dataset) or item.shape in ((), (0,)):
        return None
    return _decode_string(item[0])


def read_header_xml(path: str | Path, group: str = "dataset") -> str | None:
    """The stored XML header text of ``group``, unchanged, or None when there is none."""
    with open_mrd_file(path) as handle:
        return _xml(open_group(handle, group, str(path)))


def _dataset_len(group: h5py.Group, name: str) -> int:
    item = group.get(name)
    return len(item) if isinstance(item, h5py.Dataset) else 0


def count_acquisitions(path: str | Path, group: str = "dataset") -> int:
    """Number of acquisitions in ``group`` (no data is read)."""
    with open_mrd_file(path) as handle:
        return _dataset_len(open_group(handle, group, str(path)), ACQUISITIONS)


def count_waveforms(path: str | Path, group: str = "dataset") -> int:
    """Number of waveforms in ``group`` (no data is read)."""
    with open_mrd_file(path) as handle:
        return _dataset_len(open_group(handle, group, str(path)), WAVEFORMS)


def count_images(path: str | Path, group: str = "dataset", series: str = "image_0") -> int:
    """Number of images in an image series (no data is read)."""
    with open_mrd_file(path) as handle:
        found = image_series_group(open_group(handle, group, str(path)), series, str(path))
        return _dataset_len(found, "header")


_HEAD_ROWS = 1 << 16
"""Rows whose headers :func:`stream_bytes` reads at a time."""
_ACQ_HEAD = 2 + ACQUISITION_HEADER_DTYPE.itemsize  # message id and header
_WAVE_HEAD = 2 + WAVEFORM_HEADER_DTYPE.itemsize
_PER_ROW = {
    ACQUISITIONS: lambda h: (
        _ACQ_HEAD
        + h["number_of_samples"].astype(np.int64)
        * (8 * h["active_channels"].astype(np.int64) + 4 * h["trajectory_dimensions"])
    ),
    WAVEFORMS: lambda h: _WAVE_HEAD + 4 * h["number_of_samples"].astype(np.int64) * h["channels"],
}
"""Dataset -> bytes of each row's message in a stream, from its ``head`` field."""


def stream_bytes(path: str | Path, group: str = "dataset") -> int:
    """Bytes of ``group``'s raw data as an MRD stream (header, acquisitions, waveforms,
    CLOSE), computed from the stored headers alone (no samples are read): how much raw data
    the group holds, whatever else shares its file."""
    with open_mrd_file(path) as handle:
        node = open_group(handle, group, str(path))
        xml = _xml(node)
        total = 2 + (6 + len(xml.encode()) if xml is not None else 0)
        for name, per_row in _PER_ROW.items():
            item = node.get(name)
            if not isinstance(item, h5py.Dataset) or "head" not in (item.dtype.names or ()):
                continue
            for start in range(0, len(item), _HEAD_ROWS):
                heads = item.fields("head")[start : start + _HEAD_ROWS]
                total += int(per_row(heads).sum())
    return total


def _row_blocks(
    group: h5py.Group, name: str, row_dtype: np.dtype, kind: str, where: str
) -> Iterator[np.ndarray]:
    """Blocks of rows of a compound dataset, converted by field name to ``row_dtype``."""
    item = group.get(name)
    if not isinstance(item, h5py.Dataset):
        return
    names = item.dtype.names or ()
    wanted = row_dtype.names or ()
    missing = [field for field in wanted if field not in names]
    if missing:
        raise InputFileError(
            f"{where}: dataset {item.name!r} lacks field(s) {', '.join(missing)}; "
            f"expected the ISMRMRD {kind} compound ({', '.join(wanted)})"
        )
    if kind == "acquisition":
        check_fields(item.dtype["head"], "acquisition", f"{where}: {item.name}")
    reader = item.astype(row_dtype)
    if len(item) == 0:
        return
    # Size blocks from the first row so that rows of large acquisitions stay near BLOCK_BYTES.
    first = reader[0:1][0]
    row_bytes = sum(int(v.nbytes) for v in first.tolist() if isinstance(v, np.ndarray))
    step = max(1, min(BLOCK_ROWS, BLOCK_BYTES // max(row_bytes, 1)))
    for start in range(0, len(item), step):
        yield reader[start : start + step]


def _waveform_rows(group: h5py.Group, where: str) -> Iterator[np.void]:
    for block in _row_blocks(group, WAVEFORMS, WAVEFORM_ROW_DTYPE, "waveform", where):
        yield from block


def _merged(group: h5py.Group, where: str) -> Iterator[Segment]:
    """Acquisition blocks and waveforms interleaved exactly as the C++ tool merges them."""
    waveforms = _waveform_rows(group, where)
    waveform = next(waveforms, None)
    first = 0
    for block in _row_blocks(group, ACQUISITIONS, ACQUISITION_ROW_DTYPE, "acquisition", where):
        stamps = block["head"]["acquisition_time_stamp"]
        start, n = 0, len(block)
        while start < n:
            if waveform is None:
                stop = n
            else:
                later = np.flatnonzero(stamps[start:] >= waveform["head"]["time_stamp"])
                stop = start + int(later[0]) if later.size else n
            if stop > start:
                yield Segment("acquisitions", block[start:stop], first + start)
            if stop < n:
                yield Segment("waveform", waveform)
                waveform = next(waveforms, None)
            start = stop
        first += n
    while waveform is not None:
        yield Segment("waveform", waveform)
        waveform = next(waveforms, None)


def _images(group: h5py.Group, series: str, where: str) -> Iterator[Segment]:
    found = image_series_group(group, series, where)
    headers, data = found["header"], found["data"]
    check_fields(headers.dtype, "image", f"{where}: {headers.name}")
    attributes = found.get("attributes")
    per_image = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
    step = max(1, _IMAGE_BLOCK_BYTES // per_image)
    header_reader = headers.astype(IMAGE_HEADER_DTYPE)
    for start in range(0, len(headers), step):
        heads = header_reader[start : start + step]
        pixels = data[start : start + len(heads)]
        texts = attributes[start : start + len(heads)] if attributes is not None else None
        for i, head in enumerate(heads):
            yield Segment("image", _image(head, pixels[i], texts, i, start + i, where))


def _image(
    head: np.void, pixels: np.ndarray, texts: np.ndarray | None, i: int, index: int, where: str
) -> Image:
    data_type = int(head["data_type"])
    if data_type not in DATA_TYPE_TO_DTYPE:
        raise InputFileError(
            f"{where}: image {index} has data_type {data_type}; expected 1..8 "
            "(uint16, int16, uint32, int32, float32, float64, complex64, complex128)"
        )
    x, y, z = (int(v) for v in head["matrix_size"])
    shape = (int(head["channels"]), z, y, x)
    if pixels.size != int(np.prod(shape)):
        raise InputFileError(
            f"{where}: image {index} header says {shape[0]} channels x {z}x{y}x{x} pixels, "
            f"the stored data has shape {pixels.shape}"
        )
    values = from_file_pixels(pixels.reshape(shape), data_type)
    attributes = "" if texts is None else _decode_string(texts[i])
    return Image(head=head, attributes=attributes, data=values)


def iter_segments(
    path: str | Path, group: str = "dataset", image_series: Sequence[str] | None = None
) -> Iterator[Segment]:
    """The stream of ``group`` as ordered segments (see :class:`Segment`); no CLOSE."""
    where = str(path)
    with open_mrd_file(path) as handle:
        found = open_group(handle, group, where)
        xml = _xml(found)
        if xml is None and not image_series:
            series = ", ".join(list_image_series(path, group)) or "none"
            raise InputFileError(
                f"{where}: group {group!r} has no xml header, which an acquisition stream "
                f"needs (to stream images instead give -s SERIES; series found: {series})"
            )
        for series_name in image_series or ():
            image_series_group(found, series_name, where)  # fail before any output
        if xml is not None:
            yield Segment("header", xml)
        if image_series:
            for series_name in image_series:
                yield from _images(found, series_name, where)
        else:
            yield from _merged(found, where)


@lru_cache(maxsize=64)
def _wire_dtype(samples: int, channels: int, dims: int) -> np.dtype:
    """One ACQUISITION message of these sizes, as a packed record."""
    return np.dtype(
        [
            ("id", "<u2"),
            ("head", ACQUISITION_HEADER_DTYPE),
            ("traj", "<f4", (samples * dims,)),
            ("data", "<f4", (2 * channels * samples,)),
        ]
    )


def _sizes(rows: np.ndarray, first: int) -> np.ndarray:
    """``[n, 3]`` samples, channels, trajectory dims, checked against the stored arrays."""
    heads = rows["head"]
    sizes = np.stack(
        [heads["number_of_samples"], heads["active_channels"], heads["trajectory_dimensions"]],
        axis=1,
    ).astype(np.int64)
    n = len(rows)
    traj_len = np.fromiter(map(len, rows["traj"]), np.int64, count=n)
    data_len = np.fromiter(map(len, rows["data"]), np.int64, count=n)
    bad = (traj_len != sizes[:, 0] * sizes[:, 2]) | (data_len != 2 * sizes[:, 0] * sizes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        s, c, d = (int(v) for v in sizes[i])
        raise InputFileError(
            f"acquisition {first + i}: header says {s} samples x {c} channels with {d} "
            f"trajectory dims (expected {2 * s * c} data and {s * d} trajectory floats), "
            f"the file stores {int(data_len[i])} and {int(traj_len[i])}"
        )
    return sizes


def _fill(out: np.ndarray, column: np.ndarray) -> None:
    """Copy a column of equal-length vlen arrays into the ``[rows, width]`` view ``out``."""
    if out.shape[1]:
        np.stack(list(column), out=out)


def acquisition_bytes(rows: np.ndarray, first: int = 0) -> list[memoryview]:
    """Wire bytes of a block of acquisition rows: one buffer per run of equal sizes."""
    sizes = _sizes(rows, first)
    changes = np.flatnonzero(np.any(sizes[1:] != sizes[:-1], axis=1)) + 1
    bounds = [0, *changes.tolist(), len(rows)]
    out: list[memoryview] = []
    for a, b in itertools.pairwise(bounds):
        s, c, d = (int(v) for v in sizes[a])
        run = np.empty(b - a, _wire_dtype(s, c, d))
        run["id"] = MessageId.ACQUISITION
        run["head"] = rows["head"][a:b]
        _fill(run["traj"], rows["traj"][a:b])
        _fill(run["data"], rows["data"][a:b])
        out.append(memoryview(run).cast("B"))  # type: ignore[arg-type]
    return out


def _acquisitions(rows: np.ndarray, first: int) -> Iterator[Acquisition]:
    sizes = _sizes(rows, first)
    heads = rows["head"].copy()
    for i in range(len(rows)):
        s, c, d = (int(v) for v in sizes[i])
        yield Acquisition(
            head=heads[i],
            traj=rows["traj"][i].reshape(s, d),
            data=rows["data"][i].view(_C8).reshape(c, s),
        )


def _waveform(row: np.void) -> Waveform:
    # The header has padding: HDF5 leaves it unset and np.void.copy() does not copy it, so
    # start from zeros like the C++ and Python writers do.
    heads = np.zeros(1, WAVEFORM_HEADER_DTYPE)
    heads[0] = row["head"]
    head = heads[0]
    shape = (int(head["channels"]), int(head["number_of_samples"]))
    data = row["data"]
    if data.size != shape[0] * shape[1]:
        raise InputFileError(
            f"waveform header says {shape[0]} channels x {shape[1]} samples, "
            f"the file stores {data.size} values"
        )
    return Waveform(head=head, data=data.reshape(shape))


_SEGMENT_MESSAGES: dict[str, Callable[[Segment], Iterator[Message]]] = {
    "header": lambda seg: iter((Header(seg.payload),)),  # type: ignore[arg-type]
    "acquisitions": lambda seg: _acquisitions(seg.payload, seg.first),  # type: ignore[arg-type]
    "waveform": lambda seg: iter((_waveform(seg.payload),)),  # type: ignore[arg-type]
    "image": lambda seg: iter((seg.payload,)),  # type: ignore[arg-type]
}


def segment_messages(segment: Segment) -> Iterator[Message]:
    """The messages of one segment."""
    return _SEGMENT_MESSAGES[segment.kind](segment)


def segment_buffers(segment: Segment) -> list[bytes | memoryview]:
    """The wire bytes of one segment (acquisitions encoded in bulk)."""
    if segment.kind == "acquisitions":
        return list(acquisition_bytes(segment.payload, segment.first))  # type: ignore[arg-type]
    buffers: list[bytes | memoryview] = []
    for msg in segment_messages(segment):
        buffers.extend(encode_buffers(msg))
    return buffers


def read_messages(
    path: str | Path, group: str = "dataset", image_series: Sequence[str] | None = None
) -> Iterator[Message]:
    """The messages ``ismrmrd_hdf5_to_stream`` would send for ``group``, without CLOSE.

    HEADER first when the group has an ``xml`` dataset (its text unchanged), then either the
    acquisitions and waveforms merged by time stamp or, when ``image_series`` is given, the
    images of each named series in order.
    """
    for segment in iter_segments(path, group, image_series):
        yield from segment_messages(segment)

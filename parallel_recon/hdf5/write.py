"""MRD messages -> ISMRMRD HDF5, buffered and appended in blocks.

Acquisitions, waveforms and images are collected and appended many rows per HDF5 call; an
existing file and group are extended, never truncated.  The layout is the C++ library's (see
:mod:`.layout`); messages that layout has no place for are kept too: CONFIG_FILE,
CONFIG_TEXT and TEXT messages are appended to the vlen string datasets ``config_file``,
``config_text`` and ``text`` of the group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from ..errors import InputFileError
from ..protocol.layout import (
    ACQUISITION_HEADER_DTYPE,
    DTYPE_TO_DATA_TYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
)
from ..protocol.messages import (
    Acquisition,
    Close,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    Message,
    NDArray,
    Text,
    Waveform,
)
from .layout import (
    ACQUISITION_FILE_DTYPE,
    ACQUISITIONS,
    CONFIG_FILE,
    CONFIG_TEXT,
    TEXT,
    VLEN_STRING,
    WAVEFORM_ROW_DTYPE,
    WAVEFORMS,
    XML,
    file_pixel_dtype,
    ndarray_name,
    open_mrd_file,
    to_file_pixels,
)

__all__ = ["MrdHdf5Writer"]

_BLOCK_ROWS = 4096
_BLOCK_BYTES = 64 << 20
_ROW_CHUNK = 1024


def _object_column(arrays: list[np.ndarray]) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        column[i] = array
    return column


def _append(group: h5py.Group, name: str, rows: np.ndarray, chunks: tuple[int, ...]) -> None:
    """Append ``rows`` along axis 0 of ``group[name]``, creating it when missing."""
    dataset = group.get(name)
    if dataset is None:
        dataset = group.create_dataset(
            name,
            shape=(0, *rows.shape[1:]),
            maxshape=(None, *rows.shape[1:]),
            dtype=rows.dtype,
            chunks=chunks,
        )
    elif dataset.shape[1:] != rows.shape[1:]:
        raise InputFileError(
            f"cannot append to {dataset.name!r}: it holds items of shape {dataset.shape[1:]}, "
            f"the new ones have shape {rows.shape[1:]}"
        )
    start = len(dataset)
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


def _append_string(group: h5py.Group, name: str, text: str) -> None:
    rows = np.array([text.encode("utf-8")], dtype=VLEN_STRING)
    _append(group, name, rows, (_ROW_CHUNK,))


class _ImageSeries:
    """Images waiting to be appended to one ``image_<series>`` group."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.attributes: list[bytes] = []
        self.pixels: list[np.ndarray] = []


class MrdHdf5Writer:
    """Writes MRD messages into a group of an ISMRMRD HDF5 file (appending).

    Parameters
    ----------
    path:
        HDF5 file, created when missing, extended when present.
    group:
        Group holding the dataset (``"dataset"`` like the C++ tools).

    Use as a context manager; leaving it (also on an error) writes what was buffered.
    """

    def __init__(self, path: str | Path, group: str = "dataset"):
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(open_mrd_file(path, "a"))
        self._group = self._file.require_group(group)
        self._acq: tuple[list[bytes], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        self._wfm: tuple[list[bytes], list[np.ndarray]] = ([], [])
        self._images: dict[int, _ImageSeries] = {}
        self._pending_rows = 0
        self._pending_bytes = 0
        self.counts: dict[str, int] = {}
        """Messages written, by message type name."""
        self._writers: dict[type, Callable[..., None]] = {
            Header: self._write_header,
            Acquisition: self._write_acquisition,
            Waveform: self._write_waveform,
            Image: self._write_image,
            NDArray: self._write_ndarray,
            ConfigFile: lambda msg: _append_string(self._group, CONFIG_FILE, msg.name),
            ConfigText: lambda msg: _append_string(self._group, CONFIG_TEXT, msg.text),
            Text: lambda msg: _append_string(self._group, TEXT, msg.text),
            Close: lambda msg: None,
        }

    # ----------------------------------------------------------------- public
    def write(self, msg: Message) -> None:
        """Store one message (buffered; see :meth:`flush`)."""
        self._writers[type(msg)](msg)
        name = type(msg).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        if self._pending_rows >= _BLOCK_ROWS or self._pending_bytes >= _BLOCK_BYTES:
            self.flush()

    def write_all(self, messages: Iterable[Message]) -> None:
        """Store every message of an iterable."""
        for msg in messages:
            self.write(msg)

    def flush(self) -> None:
        """Append everything buffered to the file."""
        self._flush_acquisitions()
        self._flush_waveforms()
        for series, images in self._images.items():
            self._flush_images(series, images)
        self._images.clear()
        self._pending_rows = self._pending_bytes = 0

    def close(self) -> None:
        """Flush and close the file."""
        try:
            self.flush()
        finally:
            self._stack.close()

    def __enter__(self) -> MrdHdf5Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------- messages
    def _pending(self, nbytes: int) -> None:
        self._pending_rows += 1
        self._pending_bytes += nbytes

    def _write_header(self, msg: Header) -> None:
        if XML in self._group:
            del self._group[XML]
        dataset = self._group.create_dataset(XML, shape=(1,), dtype=VLEN_STRING)
        dataset[0] = msg.xml.encode("utf-8")

    def _write_acquisition(self, msg: Acquisition) -> None:
        heads, trajs, datas = self._acq
        heads.append(msg.head.tobytes())
        trajs.append(np.ascontiguousarray(msg.traj, dtype=np.float32).reshape(-1))
        datas.append(np.ascontiguousarray(msg.data, dtype=np.complex64).view(np.float32).ravel())
        self._pending(msg.data.nbytes + msg.traj.nbytes)

    def _write_waveform(self, msg: Waveform) -> None:
        heads, datas = self._wfm
        heads.append(msg.head.tobytes())
        datas.append(np.ascontiguousarray(msg.data, dtype=np.uint32).reshape(-1))
        self._pending(msg.data.nbytes)

    def _write_image(self, msg: Image) -> None:
        head = msg.head.copy()
        attributes = msg.attributes.encode("utf-8")
        head["attribute_string_len"] = len(attributes)
        series = self._images.setdefault(int(head["image_series_index"]), _ImageSeries())
        series.heads.append(head.tobytes())
        series.attributes.append(attributes)
        series.pixels.append(to_file_pixels(msg.data))
        self._pending(msg.data.nbytes)

    def _write_ndarray(self, msg: NDArray) -> None:
        dtype = msg.array.dtype.newbyteorder("<")
        name = ndarray_name(msg.array, msg.version, DTYPE_TO_DATA_TYPE[dtype])
        rows = to_file_pixels(msg.array)[np.newaxis]
        _append(self._group, name, rows, rows.shape)

    # ----------------------------------------------------------------- blocks
    def _flush_acquisitions(self) -> None:
        heads, trajs, datas = self._acq
        if not heads:
            return
        rows = np.empty(len(heads), ACQUISITION_FILE_DTYPE)
        rows["head"] = np.frombuffer(b"".join(heads), ACQUISITION_HEADER_DTYPE)
        rows["traj"] = _object_column(trajs)
        rows["data"] = _object_column(datas)
        _append(self._group, ACQUISITIONS, rows, (_ROW_CHUNK,))
        for pending in self._acq:
            pending.clear()

    def _flush_waveforms(self) -> None:
        heads, datas = self._wfm
        if not heads:
            return
        rows = np.empty(len(heads), WAVEFORM_ROW_DTYPE)
        rows["head"] = np.frombuffer(b"".join(heads), WAVEFORM_HEADER_DTYPE)
        rows["data"] = _object_column(datas)
        _append(self._group, WAVEFORMS, rows, (_ROW_CHUNK,))
        for pending in self._wfm:
            pending.clear()

    def _flush_images(self, series: int, images: _ImageSeries) -> None:
        group = self._group.require_group(f"image_{series}")
        shapes = {p.shape for p in images.pixels}
        dtypes = {p.dtype for p in images.pixels}
        if len(shapes) > 1 or len(dtypes) > 1:
            # Mixed images in one series: append them one by one so the error names the first.
            for head, attributes, pixels in zip(
                images.heads, images.attributes, images.pixels, strict=True
            ):
                self._append_images(group, [head], [attributes], pixels[np.newaxis])
            return
        self._append_images(group, images.heads, images.attributes, np.stack(images.pixels))

    def _append_images(
        self, group: h5py.Group, heads: list[bytes], attributes: list[bytes], pixels: np.ndarray
    ) -> None:
        existing = group.get("data")
        if existing is not None and existing.dtype != file_pixel_dtype(pixels.dtype):
            raise InputFileError(
                f"cannot append to {existing.name!r}: it holds {existing.dtype} pixels, "
                f"the new image has {pixels.dtype}"
            )
        _append(group, "data", pixels, (1, *pixels.shape[1:]))
        _append(group, "header", np.frombuffer(b"".join(heads), IMAGE_HEADER_DTYPE), (_ROW_CHUNK,))
        _append(group, "attributes", np.array(attributes, dtype=VLEN_STRING), (_ROW_CHUNK,))

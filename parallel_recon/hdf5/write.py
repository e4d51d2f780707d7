"""MRD messages -> ISMRMRD HDF5, buffered and appended in blocks.

Acquisitions, waveforms and images are collected and appended many rows per HDF5 call; an
existing file and group are extended, never truncated.  The layout is the C++ library's (see
:mod:`.layout`); messages that layout has no place for are kept too: CONFIG_FILE,
CONFIG_TEXT and TEXT messages are appended to the vlen string datasets ``config_file``,
``config_text`` and ``text`` of the group.

Existing content is never changed: a group's XML header describes the data stored under
it, so a different header is refused (unless ``replace_header``).  Disk space for every
block is claimed before the block is written (:class:`~parallel_recon.files.SpaceReservation`):
the HDF5 library cannot recover from a write that fails on a full disk.  Acquisitions are
copied into a reused block buffer and written from it with one call per block
(:mod:`.acquisition_block`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from ..errors import InputFileError, ReconError
from ..files import SpaceReservation
from ..protocol.layout import (
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
from .acquisition_block import AcquisitionBlock, BlockWrite
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
_ACQUISITION_BLOCK_BYTES = 16 << 20
"""Samples of one acquisition block: small enough to stay warm in memory, large enough that
a block is thousands of small readouts or a hundred large ones."""
_ROW_CHUNK = 1024

# Disk space claimed before each append (tests/test_hdf5_space.py checks these bounds
# against the files HDF5 really writes): every new chunk in full, the variable-length
# payload (heap) with its per-object overhead, index entries, and a new dataset's headers.
_HEAP_FACTOR = 1.05
_HEAP_OBJECT_BYTES = 32
_CHUNK_INDEX_BYTES = 64
_DATASET_BYTES = 8 << 10
_METADATA_BYTES = 64 << 10
"""Superblock, root group and the dataset group, claimed when the writer opens the file."""


def _object_column(arrays: list[np.ndarray]) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        column[i] = array
    return column


def _claim_for_append(
    space: SpaceReservation,
    dataset: h5py.Dataset | None,
    rows: np.ndarray,
    chunks: tuple[int, ...],
    heap_bytes: int,
) -> None:
    """Claim the disk space that appending ``rows`` (plus ``heap_bytes`` of variable-length
    data) to ``dataset`` (None: a new one with ``chunks``) can take, before it is written."""
    _claim_rows(space, dataset, len(rows), rows.dtype, rows.shape[1:], chunks, heap_bytes)


def _claim_rows(
    space: SpaceReservation,
    dataset: h5py.Dataset | None,
    count: int,
    dtype: np.dtype,
    item_shape: tuple[int, ...],
    chunks: tuple[int, ...],
    heap_bytes: int,
) -> None:
    """:func:`_claim_for_append` for ``count`` rows of ``dtype`` items of ``item_shape``."""
    start = 0 if dataset is None else len(dataset)
    chunk_rows = chunks[0] if dataset is None else (dataset.chunks or chunks)[0]
    new_chunks = -(-(start + count) // chunk_rows) - -(-start // chunk_rows)
    row_bytes = dtype.itemsize * int(np.prod(item_shape, dtype=np.int64))
    if dtype.hasobject:
        row_bytes *= 2  # variable-length references are wider in the file than in memory
    per_object = _HEAP_OBJECT_BYTES * count if dtype.hasobject else 0
    space.grow(
        new_chunks * (chunk_rows * row_bytes + _CHUNK_INDEX_BYTES)
        + int(heap_bytes * _HEAP_FACTOR)
        + 2 * per_object
        + (_DATASET_BYTES if dataset is None else 0)
    )


def _create_rows(
    group: h5py.Group,
    name: str,
    dtype: np.dtype,
    item_shape: tuple[int, ...],
    chunks: tuple[int, ...],
) -> h5py.Dataset:
    return group.create_dataset(
        name,
        shape=(0, *item_shape),
        maxshape=(None, *item_shape),
        dtype=dtype,
        chunks=chunks,
    )


def _refuse_other_shape(dataset: h5py.Dataset | None, item_shape: tuple[int, ...]) -> None:
    if dataset is not None and dataset.shape[1:] != item_shape:
        raise InputFileError(
            f"cannot append to {dataset.name!r}: it holds items of shape {dataset.shape[1:]}, "
            f"the new ones have shape {item_shape}"
        )


def _append(
    group: h5py.Group,
    name: str,
    rows: np.ndarray,
    chunks: tuple[int, ...],
    space: SpaceReservation,
    heap_bytes: int = 0,
) -> None:
    """Append ``rows`` along axis 0 of ``group[name]``, creating it when missing; the disk
    space is claimed first (``heap_bytes``: the variable-length data the rows carry)."""
    dataset = group.get(name)
    _refuse_other_shape(dataset, rows.shape[1:])
    _claim_for_append(space, dataset, rows, chunks, heap_bytes)
    if dataset is None:
        dataset = _create_rows(group, name, rows.dtype, rows.shape[1:], chunks)
    start = len(dataset)
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


def _refuse_empty(shape: tuple[int, ...], what: str, axes: str) -> None:
    """HDF5 chunks cannot be empty, so an item with a zero dimension has no place in a
    series of such items: one clear error instead of the library's."""
    if 0 in shape:
        raise InputFileError(
            f"expected an {what} with no empty dimension, found {axes} = {list(shape)} "
            "(ISMRMRD HDF5 stores items in chunks that cannot be empty)"
        )


_STRING_MESSAGES = {
    CONFIG_FILE: "a CONFIG_FILE name",
    CONFIG_TEXT: "a CONFIG_TEXT message",
    TEXT: "a TEXT message",
}


def _append_string(group: h5py.Group, name: str, text: str, space: SpaceReservation) -> None:
    raw = text.encode("utf-8")
    if b"\0" in raw:
        raise InputFileError(
            f"expected {_STRING_MESSAGES.get(name, name)} without NUL characters, found one at "
            f"byte {raw.index(0)} (an HDF5 string cannot hold it)"
        )
    _append(group, name, np.array([raw], dtype=VLEN_STRING), (_ROW_CHUNK,), space, len(raw))


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
    replace_header:
        Let a HEADER that differs from the group's stored XML header replace it; by default
        it is refused (:class:`InputFileError`), since the stored header describes the
        stored data.

    Use as a context manager; leaving it normally or on a :class:`ReconError` (bad input)
    writes what was buffered; leaving it on any other exception (a full disk, Ctrl-C)
    closes the file without writing more (:meth:`abort`).
    """

    def __init__(self, path: str | Path, group: str = "dataset", *, replace_header: bool = False):
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(open_mrd_file(path, "a"))
        self._space = SpaceReservation(path, release=_trim_to_end_address)
        try:
            self._space.grow(_METADATA_BYTES)
        except BaseException:
            self._stack.close()
            raise
        self._replace_header = replace_header
        self._group = self._file.require_group(group)
        self._acq = AcquisitionBlock(_ACQUISITION_BLOCK_BYTES, _BLOCK_ROWS)
        self._spare = AcquisitionBlock(_ACQUISITION_BLOCK_BYTES, _BLOCK_ROWS)
        self._writing: BlockWrite | None = None
        """The block of acquisitions a thread is writing while the next one fills."""
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
            ConfigFile: lambda msg: self._write_string(CONFIG_FILE, msg.name),
            ConfigText: lambda msg: self._write_string(CONFIG_TEXT, msg.text),
            Text: lambda msg: self._write_string(TEXT, msg.text),
            Close: lambda msg: None,
        }

    # ----------------------------------------------------------------- public
    def write(self, msg: Message) -> None:
        """Store one message (buffered; see :meth:`flush`)."""
        if type(msg) is Acquisition and not self._acq.fits(msg.data.nbytes + msg.traj.nbytes):
            self._flush()
        self._writers[type(msg)](msg)
        name = type(msg).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        if self._pending_rows >= _BLOCK_ROWS or self._pending_bytes >= _BLOCK_BYTES:
            self._flush()

    def write_all(self, messages: Iterable[Message]) -> None:
        """Store every message of an iterable."""
        for msg in messages:
            self.write(msg)

    def flush(self) -> None:
        """Append everything buffered to the file (its disk space claimed first)."""
        self._flush()
        self._wait_for_block()

    def _flush(self) -> None:
        """Append everything buffered; the last block of acquisitions may still be being
        written by its thread when this returns."""
        self._pending_rows = self._pending_bytes = 0
        self._flush_acquisitions()
        self._flush_waveforms()
        while self._images:  # a series leaves the buffer before it is written: never twice
            series = next(iter(self._images))
            self._flush_images(series, self._images.pop(series))

    def close(self) -> None:
        """Flush and close the file, then give back the disk space claimed but not used."""
        try:
            self.flush()
        finally:
            self._stack.close()
        self._space.release()

    def abort(self) -> None:
        """Close the file without writing what is buffered (after a failure elsewhere)."""
        with contextlib.suppress(BaseException):
            self._wait_for_block()
        self._acq.clear()
        self._wfm = ([], [])
        self._images.clear()
        with contextlib.suppress(Exception):
            self._stack.close()

    def __enter__(self) -> MrdHdf5Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ReconError):
            self.close()
        else:
            self.abort()

    # --------------------------------------------------------------- messages
    def _pending(self, nbytes: int) -> None:
        self._pending_rows += 1
        self._pending_bytes += nbytes

    def _write_string(self, name: str, text: str) -> None:
        _append_string(self._group, name, text, self._space)

    def _write_header(self, msg: Header) -> None:
        xml = msg.xml
        if "\0" in xml:
            raise InputFileError(
                "expected an XML header without NUL characters, found one at character "
                f"{xml.index(chr(0))} (an HDF5 string cannot hold it)"
            )
        stored = self._group.get(XML)
        if stored is not None:
            if _stored_text(stored) == xml:
                return
            if not self._replace_header:
                raise InputFileError(
                    f"group {self._group.name!r} already holds a different XML header, which "
                    "describes the data stored there: store this stream in another group (-g) "
                    "or file, or replace the header with --replace-header"
                )
        self._space.grow(_DATASET_BYTES + int(len(xml.encode("utf-8")) * _HEAP_FACTOR))
        if stored is not None:
            del self._group[XML]
        dataset = self._group.create_dataset(XML, shape=(1,), dtype=VLEN_STRING)
        dataset[0] = xml.encode("utf-8")

    def _write_acquisition(self, msg: Acquisition) -> None:
        traj = np.asarray(msg.traj, dtype=np.float32)
        self._acq.add(msg.head, traj, np.asarray(msg.data, dtype=np.complex64))
        self._pending(msg.data.nbytes + msg.traj.nbytes)

    def _write_waveform(self, msg: Waveform) -> None:
        heads, datas = self._wfm
        heads.append(msg.head.tobytes())
        datas.append(np.ascontiguousarray(msg.data, dtype=np.uint32).reshape(-1))
        self._pending(msg.data.nbytes)

    def _write_image(self, msg: Image) -> None:
        series_index = int(msg.head["image_series_index"])
        _refuse_empty(msg.data.shape, f"image of series {series_index}", "[channels, z, y, x]")
        head = msg.head.copy()
        attributes = msg.attributes.encode("utf-8")
        if b"\0" in attributes:
            raise InputFileError(
                f"expected image attributes (series {series_index}) without NUL characters, "
                f"found one at byte {attributes.index(0)} (an HDF5 string cannot hold it)"
            )
        head["attribute_string_len"] = len(attributes)
        series = self._images.setdefault(int(head["image_series_index"]), _ImageSeries())
        series.heads.append(head.tobytes())
        series.attributes.append(attributes)
        series.pixels.append(to_file_pixels(msg.data))
        self._pending(msg.data.nbytes + len(attributes))

    def _write_ndarray(self, msg: NDArray) -> None:
        _refuse_empty(msg.array.shape, "NDArray", "dims")
        dtype = msg.array.dtype.newbyteorder("<")
        name = ndarray_name(msg.array, msg.version, DTYPE_TO_DATA_TYPE[dtype])
        rows = to_file_pixels(msg.array)[np.newaxis]
        _append(self._group, name, rows, rows.shape, self._space)

    # ----------------------------------------------------------------- blocks
    def _flush_acquisitions(self) -> None:
        block = self._acq
        if not block.count:
            return
        dataset = self._group.get(ACQUISITIONS)
        _refuse_other_shape(dataset, ())
        chunks = (_ROW_CHUNK,)
        heap = int(block.lengths[: block.count].sum()) * 4
        _claim_rows(self._space, dataset, block.count, ACQUISITION_FILE_DTYPE, (), chunks, heap)
        if dataset is None:
            dataset = _create_rows(self._group, ACQUISITIONS, ACQUISITION_FILE_DTYPE, (), chunks)
        self._wait_for_block()  # the previous block is written: rows go in order
        start = len(dataset)
        dataset.resize(start + block.count, axis=0)
        self._writing = BlockWrite(block, dataset, start)
        self._acq, self._spare = self._spare, block

    def _wait_for_block(self) -> None:
        """Wait until the block a thread is writing is written (raising its error)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.wait()

    def _flush_waveforms(self) -> None:
        heads, datas = self._wfm
        if not heads:
            return
        rows = np.empty(len(heads), WAVEFORM_ROW_DTYPE)
        rows["head"] = np.frombuffer(b"".join(heads), WAVEFORM_HEADER_DTYPE)
        rows["data"] = _object_column(datas)
        heap = sum(a.nbytes for a in datas)
        _append(self._group, WAVEFORMS, rows, (_ROW_CHUNK,), self._space, heap)
        for pending in self._wfm:
            pending.clear()

    def _flush_images(self, series: int, images: _ImageSeries) -> None:
        name = f"image_{series}"
        if name not in self._group:
            self._space.grow(_DATASET_BYTES)
        group = self._group.require_group(name)
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
        space = self._space
        _append(group, "data", pixels, (1, *pixels.shape[1:]), space)
        heads_rows = np.frombuffer(b"".join(heads), IMAGE_HEADER_DTYPE)
        _append(group, "header", heads_rows, (_ROW_CHUNK,), space)
        texts = np.array(attributes, dtype=VLEN_STRING)
        _append(group, "attributes", texts, (_ROW_CHUNK,), space, sum(map(len, attributes)))


def _stored_text(dataset: h5py.Dataset) -> str:
    """The one string of a stored ``xml`` dataset (bytes or str, as h5py returns it)."""
    value = dataset[0] if dataset.shape else dataset[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _trim_to_end_address(path: Path) -> None:
    """Give back claimed blocks past the HDF5 end-of-allocation address: the library
    truncates a file to that address when it closes a file it opened for writing."""
    with h5py.File(path, "r+"):
        pass

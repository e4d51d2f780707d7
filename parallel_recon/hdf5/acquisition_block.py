"""Acquisitions collected into reused buffers and appended as one block of rows.

Two costs made storing large readouts slower than the C++ tool, neither of them HDF5's own:

- every readout (32 coils x 512 samples: 128 kB) stayed in the array the stream reader
  handed out until its block was written, so the reader could not recycle its buffers and
  allocated (and page-faulted) fresh memory for every message, hundreds of megabytes per
  stream;
- h5py turned each block into an object column of arrays and copied every one of them
  into memory of its own before HDF5 copied it once more.

Here each readout's samples (and trajectory) are copied into a buffer this block reuses,
which lets the reader recycle its array at once; the rows are then written with one
``H5Dwrite`` whose memory type describes each variable-length field as HDF5's own
``hvl_t`` (length, pointer) pointing into the buffer, so HDF5 reads the samples where they
are.  The file layout is the C++ library's, unchanged (:data:`.layout.ACQUISITION_FILE_DTYPE`).

HDF5 lets other threads run while it writes, so a block is written by a thread of its own
(:class:`BlockWrite`) while the stream's next block is read into the other buffer.
"""

from __future__ import annotations

import threading

import h5py
import numpy as np
from h5py import h5s, h5t

from ..protocol.layout import ACQUISITION_HEADER_DTYPE
from .layout import ACQUISITION_FILE_DTYPE

__all__ = ["AcquisitionBlock", "BlockWrite"]

_F4 = np.dtype("<f4")
_OFFSETS = {name: ACQUISITION_FILE_DTYPE.fields[name][1] for name in ("traj", "data")}  # type: ignore[index]
_MEMORY_ROW = np.dtype(
    {
        "names": ["head", "traj_len", "traj_ptr", "data_len", "data_ptr"],
        "formats": [ACQUISITION_HEADER_DTYPE, "<u8", "<u8", "<u8", "<u8"],
        "offsets": [
            0,
            _OFFSETS["traj"],
            _OFFSETS["traj"] + 8,
            _OFFSETS["data"],
            _OFFSETS["data"] + 8,
        ],
        "itemsize": ACQUISITION_FILE_DTYPE.itemsize,
    }
)
"""A row as HDF5 reads it from memory: the packed header, then ``hvl_t`` {size_t len;
void *p} for the trajectory and for the samples (float32 counts), at the file row's offsets."""


def _memory_type() -> h5t.TypeCompoundID:
    """The HDF5 memory type of :data:`_MEMORY_ROW` (variable-length float32 fields)."""
    row = h5t.create(h5t.COMPOUND, _MEMORY_ROW.itemsize)
    row.insert(b"head", 0, h5t.py_create(ACQUISITION_HEADER_DTYPE))
    floats = h5t.vlen_create(h5t.IEEE_F32LE)
    row.insert(b"traj", _OFFSETS["traj"], floats)
    row.insert(b"data", _OFFSETS["data"], floats)
    return row


class AcquisitionBlock:
    """Acquisitions waiting to be appended, their samples copied into reused buffers.

    Parameters
    ----------
    capacity:
        Bytes of samples and trajectories one block holds (the buffer, allocated once).
    rows:
        Acquisitions one block holds.
    """

    def __init__(self, capacity: int, rows: int):
        self.capacity = capacity
        self.heads = np.empty(rows, ACQUISITION_HEADER_DTYPE)
        self.lengths = np.empty((rows, 2), np.uint64)
        """Float32 counts of each row's trajectory and samples."""
        self.starts = np.empty((rows, 2), np.uint64)
        """Where they begin in :attr:`buffer` (bytes)."""
        self.buffer = np.empty(0, np.uint8)
        self.count = 0
        self.used = 0
        self._type: h5t.TypeCompoundID | None = None
        self._own: dict[tuple[int, int], np.ndarray] = {}
        """Fields larger than the whole buffer, kept in arrays of their own."""

    def fits(self, nbytes: int) -> bool:
        """True when one more acquisition of ``nbytes`` goes into this block (an empty block
        takes any acquisition: one larger than the buffer gets an array of its own)."""
        if not self.count:
            return True
        return self.count < len(self.heads) and self.used + nbytes <= self.capacity

    def add(self, head: np.void, traj: np.ndarray, data: np.ndarray) -> None:
        """Copy one acquisition in (``traj`` float32, ``data`` complex64, any shape)."""
        row = self.count
        self.heads[row] = head
        for column, values in enumerate((traj, data)):
            flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
            self.lengths[row, column] = flat.nbytes // 4
            if self.used + flat.nbytes > self.capacity:
                self._own[(row, column)] = flat.copy()
                self.starts[row, column] = 0
                continue
            if not self.buffer.nbytes:
                self.buffer = np.empty(self.capacity, np.uint8)
            self.buffer[self.used : self.used + flat.nbytes] = flat
            self.starts[row, column] = self.used
            self.used += -(-flat.nbytes // 8) * 8  # every field 8-byte aligned
        self.count += 1

    def rows(self) -> np.ndarray:
        """The block as :data:`_MEMORY_ROW` rows whose pointers are valid while the block
        is unchanged."""
        count = self.count
        rows = np.empty(count, _MEMORY_ROW)
        rows["head"] = self.heads[:count]
        pointers = self.starts[:count] + np.uint64(self.buffer.ctypes.data)
        for (row, column), array in self._own.items():
            pointers[row, column] = array.ctypes.data
        for column, name in enumerate(("traj", "data")):
            rows[f"{name}_len"] = self.lengths[:count, column]
            rows[f"{name}_ptr"] = pointers[:, column]
        return rows

    def write(self, dataset: h5py.Dataset, start: int) -> None:
        """Write the block as rows ``start:start + count`` of ``dataset`` (already that long)."""
        if self._type is None:
            self._type = _memory_type()
        rows = self.rows()
        file_space = dataset.id.get_space()
        file_space.select_hyperslab((start,), (len(rows),))
        memory_space = h5s.create_simple((len(rows),))
        dataset.id.write(memory_space, file_space, rows, mtype=self._type)

    def clear(self) -> None:
        """Empty the block (the buffer is kept for the next one)."""
        self.count = 0
        self.used = 0
        self._own.clear()


class BlockWrite:
    """One block being written by a thread of its own; :meth:`wait` returns when it is done
    and raises what the write raised (a full disk, an HDF5 error)."""

    def __init__(self, block: AcquisitionBlock, dataset: h5py.Dataset, start: int):
        self.block = block
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(dataset, start), name="hdf5 block", daemon=True
        )
        self._thread.start()

    def _run(self, dataset: h5py.Dataset, start: int) -> None:
        try:
            self.block.write(dataset, start)
        except BaseException as exc:  # handed to the thread that waits
            self._error = exc

    def wait(self) -> None:
        """Block until written; the block is then empty and free for reuse."""
        self._thread.join()
        self.block.clear()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

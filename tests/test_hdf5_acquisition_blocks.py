"""Acquisitions stored from reused block buffers: every field lands where ismrmrd reads it.

The writer copies samples and trajectories into a block buffer and hands HDF5 pointers into
it; a block is written by a thread while the next one fills.  These tests shrink the
buffer so that one stream crosses many blocks, holds readouts larger than a whole buffer,
trajectories, empty readouts and mixed sizes, and read the file back with ismrmrd-python
(the oracle), never with our reader.
"""

from __future__ import annotations

import errno
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from parallel_recon.hdf5 import MrdHdf5Writer, acquisition_block
from parallel_recon.hdf5 import write as hdf5_write
from parallel_recon.protocol.messages import Acquisition, Header

SMALL_BLOCK = 64 << 10


def _acquisition(scan: int, coils: int, samples: int, dims: int, rng: np.random.Generator):
    data = rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))
    traj = rng.standard_normal((samples, dims)).astype(np.float32)
    acq = Acquisition.from_arrays(data.astype(np.complex64), traj)
    acq.head["scan_counter"] = scan
    acq.head["idx"]["kspace_encode_step_1"] = scan % 7
    acq.head["flags"] = 1 << (scan % 40)
    return acq


def _mixed(count: int) -> list[Acquisition]:
    """Small, empty, trajectory-carrying and (for the shrunken buffer) oversized readouts."""
    rng = np.random.default_rng(3)
    shapes = [(4, 64, 0), (1, 0, 0), (8, 128, 2), (32, 512, 0), (2, 16, 3), (16, 1024, 0)]
    return [_acquisition(i, *shapes[i % len(shapes)], rng) for i in range(count)]


def _check_file(path: Path, sent: list[Acquisition], first: int = 0) -> None:
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        assert dataset.number_of_acquisitions() == first + len(sent)
        for index, msg in enumerate(sent):
            stored = dataset.read_acquisition(first + index)
            assert stored.scan_counter == msg.head["scan_counter"]
            assert stored.flags == msg.head["flags"]
            assert stored.idx.kspace_encode_step_1 == msg.head["idx"]["kspace_encode_step_1"]
            assert stored.data.shape == msg.data.shape
            np.testing.assert_array_equal(stored.data, msg.data)
            np.testing.assert_array_equal(stored.traj.reshape(msg.traj.shape), msg.traj)
    finally:
        dataset.close()


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hdf5_write, "_ACQUISITION_BLOCK_BYTES", SMALL_BLOCK)


def test_many_blocks_of_mixed_readouts_read_back_with_ismrmrd(
    tmp_path: Path, small_blocks: None
) -> None:
    sent = _mixed(150)
    assert max(m.data.nbytes for m in sent) > SMALL_BLOCK  # some go into arrays of their own
    path = tmp_path / "mixed.h5"
    with MrdHdf5Writer(path) as writer:
        writer.write(Header("<ismrmrdHeader/>"))
        for msg in sent:
            writer.write(msg)
    _check_file(path, sent)


def test_appending_to_a_file_ismrmrd_wrote(tmp_path: Path, small_blocks: None) -> None:
    """A file whose ``data`` dataset ismrmrd-python created (its own chunking) takes our
    blocks after its rows."""
    path = tmp_path / "theirs.h5"
    rng = np.random.default_rng(5)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    for scan in range(5):
        theirs = ismrmrd.Acquisition.from_array(
            (rng.standard_normal((4, 32)) + 0j).astype(np.complex64)
        )
        theirs.scan_counter = 1000 + scan
        dataset.append_acquisition(theirs)
    dataset.close()
    sent = _mixed(40)
    with MrdHdf5Writer(path) as writer:
        for msg in sent:
            writer.write(msg)
    _check_file(path, sent, first=5)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    assert dataset.read_acquisition(4).scan_counter == 1004
    dataset.close()


def test_a_failed_block_write_is_raised_by_the_writer(
    tmp_path: Path, small_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread's error (here a full disk on the second block) reaches the caller, who
    then aborts; nothing is left running."""
    calls = []
    original = acquisition_block.AcquisitionBlock.write

    def failing(self: acquisition_block.AcquisitionBlock, dataset: object, start: int) -> None:
        calls.append(start)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, dataset, start)  # type: ignore[arg-type]

    monkeypatch.setattr(acquisition_block.AcquisitionBlock, "write", failing)
    writer = MrdHdf5Writer(tmp_path / "full.h5")
    with pytest.raises(OSError) as caught:
        for msg in _mixed(150):
            writer.write(msg)
        writer.close()
    assert caught.value.errno == errno.ENOSPC
    writer.abort()
    assert len(calls) == 2

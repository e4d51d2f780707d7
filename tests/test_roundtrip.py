"""Lossless round trips HDF5 -> stream -> HDF5 -> stream, checked against ismrmrd-python."""

from __future__ import annotations

import io
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from parallel_recon.hdf5 import MrdHdf5Writer, read_header_xml, read_messages
from parallel_recon.hdf5 import read as hdf5_read
from parallel_recon.protocol import StreamReader, encode_message
from parallel_recon.protocol.messages import Acquisition, Header, Waveform
from tests.conftest import run_cli

# file -> (group, image series or [])
ROUND_TRIP_FILES = {
    "golden/phantom_m128_c8_noise.h5": ("dataset", []),
    "sirf_grappa2_1rep.h5": ("dataset", []),
    "viewer_image_only.h5": ("2019-05-09 15:16:46", ["image_0"]),
    "pulseq_zero_sample_readouts.h5": ("dataset", []),
    "prisma_3T_brain_images_int16.h5": ("images", ["images_1"]),
}


def _to_stream(path: Path, group: str, series: list[str]) -> bytes:
    args = ["-i", str(path), "-g", group, "--use-stdout"]
    for name in series:
        args += ["-s", name]
    return run_cli("mrdhdf5_to_stream", *args).stdout


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_FILES))
def test_hdf5_stream_hdf5_stream(shared_data: Path, tmp_path: Path, name: str) -> None:
    group, series = ROUND_TRIP_FILES[name]
    first = _to_stream(shared_data / name, group, series)
    copy = tmp_path / "copy.h5"
    run_cli("stream_to_mrdhdf5", "-o", str(copy), "-g", group, input=first)
    # the stream_to_mrdhdf5 names image groups image_<image_series_index>
    stored_series = [f"image_{m.head['image_series_index']}" for m in _images(first)]
    second = _to_stream(copy, group, sorted(set(stored_series)) if series else [])
    assert second == first
    assert len(first) > 1000


def _images(stream: bytes) -> list:
    return [m for m in StreamReader(io.BytesIO(stream)) if type(m).__name__ == "Image"]


@pytest.mark.parametrize(
    "name",
    ["golden/phantom_m128_c8_noise.h5", "sirf_grappa2_1rep.h5", "pulseq_zero_sample_readouts.h5"],
)
def test_ismrmrd_python_reads_our_acquisitions(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    source = shared_data / name
    copy = tmp_path / "copy.h5"
    with MrdHdf5Writer(copy) as writer:
        writer.write_all(read_messages(source))
    original = ismrmrd.Dataset(str(source), "dataset", create_if_needed=False, mode="r")
    ours = ismrmrd.Dataset(str(copy), "dataset", create_if_needed=False, mode="r")
    try:
        assert ours.read_xml_header() == original.read_xml_header()
        count = original.number_of_acquisitions()
        assert ours.number_of_acquisitions() == count
        for i in range(count):
            a, b = original.read_acquisition(i), ours.read_acquisition(i)
            assert bytes(a.getHead()) == bytes(b.getHead())
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.traj, b.traj)
    finally:
        original.close()
        ours.close()


def test_ismrmrd_python_reads_our_images(shared_data: Path, tmp_path: Path) -> None:
    group, series = "2019-05-09 15:16:46", "image_0"
    source = shared_data / "viewer_image_only.h5"
    copy = tmp_path / "copy.h5"
    with MrdHdf5Writer(copy, group) as writer:
        writer.write_all(read_messages(source, group, [series]))
    original = ismrmrd.Dataset(str(source), group, create_if_needed=False, mode="r")
    ours = ismrmrd.Dataset(str(copy), group, create_if_needed=False, mode="r")
    try:
        assert ours.number_of_images(series) == original.number_of_images(series) == 1
        a, b = original.read_image(series, 0), ours.read_image(series, 0)
        assert bytes(a.getHead()) == bytes(b.getHead())
        assert a.attribute_string == b.attribute_string
        np.testing.assert_array_equal(a.data, b.data)
    finally:
        original.close()
        ours.close()


def _acquisition(
    rng: np.random.Generator, stamp: int, samples: int, channels: int, dims: int
) -> Acquisition:
    data = (
        rng.standard_normal((channels, samples)) + 1j * rng.standard_normal((channels, samples))
    ).astype(np.complex64)
    traj = rng.standard_normal((samples, dims)).astype(np.float32)
    acq = Acquisition.from_arrays(data, traj)
    acq.head["acquisition_time_stamp"] = stamp
    acq.head["scan_counter"] = stamp
    acq.head["flags"] = int(rng.integers(0, 2**40))
    acq.head["idx"]["kspace_encode_step_1"] = stamp % 97
    return acq


def _waveform(rng: np.random.Generator, stamp: int) -> Waveform:
    channels, samples = int(rng.integers(1, 4)), int(rng.integers(1, 40))
    wav = Waveform.from_array(rng.integers(0, 2**32, (channels, samples), dtype=np.uint32))
    wav.head["time_stamp"] = stamp
    wav.head["waveform_id"] = stamp % 5
    return wav


def _oracle_merge(path: Path) -> bytes:
    """ismrmrd_hdf5_to_stream's merge loop, written with ismrmrd-python objects."""
    out = io.BytesIO()
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r")
    try:
        serializer = ismrmrd.serialization.ProtocolSerializer(out)
        n_acq, n_wav = dataset.number_of_acquisitions(), dataset.number_of_waveforms()
        a = w = 0
        while a < n_acq or w < n_wav:
            acq = dataset.read_acquisition(a) if a < n_acq else None
            wav = dataset.read_waveform(w) if w < n_wav else None
            if acq is not None and (wav is None or acq.acquisition_time_stamp < wav.time_stamp):
                serializer.serialize(acq)
                a += 1
            else:
                serializer.serialize(wav)
                w += 1
    finally:
        dataset.close()
    return out.getvalue()


def test_merge_order_and_bulk_encoding_match_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mixed sizes, trajectories, equal time stamps and block edges, against ismrmrd-python."""
    monkeypatch.setattr(hdf5_read, "BLOCK_ROWS", 7)
    rng = np.random.default_rng(5)
    shapes = [(16, 2, 0), (16, 2, 0), (16, 2, 0), (8, 1, 2), (0, 0, 0), (16, 2, 0), (32, 3, 3)]
    acquisitions = [
        _acquisition(rng, 10 * i, *shapes[int(rng.integers(0, len(shapes)))]) for i in range(60)
    ]
    # waveforms at equal, in-between and trailing time stamps, one before everything
    waveforms = [_waveform(rng, stamp) for stamp in (0, 0, 35, 40, 40, 205, 590, 700, 900)]
    path = tmp_path / "mixed.h5"
    with MrdHdf5Writer(path) as writer:
        writer.write(Header("<ismrmrdHeader/>"))
        writer.write_all(acquisitions)
        writer.write_all(waveforms)
    segments = list(hdf5_read.iter_segments(path))
    assert segments[0].kind == "header"
    segments = segments[1:]
    bulk = b"".join(bytes(b) for s in segments for b in hdf5_read.segment_buffers(s))
    one_by_one = b"".join(
        encode_message(m) for s in segments for m in hdf5_read.segment_messages(s)
    )
    oracle = _oracle_merge(path)
    assert bulk == oracle
    assert one_by_one == oracle
    kinds = [s.kind for s in segments]
    assert kinds.count("waveform") == len(waveforms)


def test_ismrmrd_python_reads_our_waveforms(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    waveforms = [_waveform(rng, 3 * i) for i in range(20)]
    path = tmp_path / "w.h5"
    with MrdHdf5Writer(path) as writer:
        writer.write_all(waveforms)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r")
    try:
        assert dataset.number_of_waveforms() == len(waveforms)
        for i, wav in enumerate(waveforms):
            theirs = dataset.read_waveform(i)
            assert bytes(theirs.getHead()) == wav.head.tobytes()
            np.testing.assert_array_equal(theirs.data, wav.data)
    finally:
        dataset.close()


def test_header_text_round_trip_is_exact(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "sirf_grappa2_1rep.h5"
    copy = tmp_path / "copy.h5"
    with MrdHdf5Writer(copy) as writer:
        writer.write_all(read_messages(source))
    assert read_header_xml(copy) == read_header_xml(source)
    assert read_header_xml(copy) is not None

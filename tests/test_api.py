"""The Python API: ``reconstruct`` gives exactly ``mrd_stream_recon``'s images, from a path,
bytes or messages; ``write_images`` / ``read_images`` agree with ismrmrd-python."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import psutil
import pytest
from conftest import run_cli, shared_data_dir

import parallel_recon as pr
from parallel_recon.errors import ConfigurationError, InputFileError, ReconError
from parallel_recon.protocol import (
    Close,
    Header,
    Image,
    StreamReader,
    StreamWriter,
    encode_message,
)

GOLDEN = shared_data_dir() / "golden"
RAW_H5 = GOLDEN / "phantom_m128_c8_noise.h5"
RAW_STREAM = GOLDEN / "phantom_m128_c8_noise.stream"
SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def command_output() -> bytes:
    """``mrd_stream_recon``'s whole output stream for the golden phantom."""
    return run_cli("mrd_stream_recon", "-i", str(RAW_STREAM), "--workers", "2").stdout


def _stream(header_xml: str, images: list[Image]) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(Header(header_xml))
        writer.write_all(images)
    return sink.getvalue()


def _header_of(path: Path) -> str:
    with open(path, "rb") as handle:
        first = StreamReader(handle).read_message()
    assert isinstance(first, Header)
    return first.xml


def test_reconstruct_from_every_kind_of_source_equals_the_command(
    command_output: bytes,
) -> None:
    expected = [m for m in StreamReader(io.BytesIO(command_output)) if isinstance(m, Image)]
    assert len(expected) == 1
    header = _header_of(RAW_STREAM)
    with open(RAW_STREAM, "rb") as handle:
        messages = list(StreamReader(handle))
    sources = {
        "stream path": RAW_STREAM,
        "HDF5 path": str(RAW_H5),
        "bytes": RAW_STREAM.read_bytes(),
        "messages": messages,
        "messages with CLOSE": [*messages, Close()],
    }
    for what, source in sources.items():
        for workers in (1, 2):
            images = pr.reconstruct(source, workers=workers)
            assert [encode_message(i) for i in images] == [encode_message(i) for i in expected], (
                f"{what}, {workers} workers"
            )
    # the whole stream, header and CLOSE included, is the command's byte for byte
    assert _stream(header, pr.reconstruct(RAW_STREAM)) == command_output


def test_reconstruct_options_reach_the_engine(tmp_path: Path) -> None:
    complex_images = pr.reconstruct(RAW_STREAM, output="complex", workers=1)
    assert complex_images[0].data.dtype == np.complex64
    channels = pr.reconstruct(RAW_STREAM, output="complex", options={"coils": "channels"})
    assert channels[0].data.shape[0] == 8
    kernel = tmp_path / "doubled.py"
    kernel.write_text(
        "from parallel_recon.workers.cartesian import reconstruct as cartesian\n"
        "def reconstruct(kspace, context):\n"
        "    return cartesian(2 * kspace, context)\n"
    )
    doubled = pr.reconstruct(RAW_STREAM, recon=str(kernel))
    plain = pr.reconstruct(RAW_STREAM, recon="cartesian")
    np.testing.assert_allclose(doubled[0].data, 2 * plain[0].data, rtol=1e-6)
    # a finished run leaves no shared memory mapped in the calling process
    assert "/dev/shm/pr_" not in Path("/proc/self/maps").read_text()


def _own_segments() -> set[str]:
    return {p.name for p in SHM.glob(f"pr_{os.getpid()}_*")}


def test_errors_are_recon_errors_and_leave_nothing_behind(tmp_path: Path) -> None:
    data = RAW_STREAM.read_bytes()
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    cases = [
        (lambda: pr.reconstruct(tmp_path / "missing.h5"), InputFileError, "no such file"),
        (lambda: pr.reconstruct(data[: len(data) // 2]), ReconError, "truncated"),
        (lambda: pr.reconstruct(data, recon="nosuch"), ConfigurationError, "nosuch"),
        (lambda: pr.reconstruct(data, output="sepia"), ConfigurationError, "sepia"),
        (lambda: pr.reconstruct(str(RAW_H5), group="nosuch"), InputFileError, "no group"),
        (lambda: pr.reconstruct(b"not an MRD stream"), ReconError, "expected"),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=text):
            call()
    assert _own_segments() == set()
    # a failed run leaves no shared memory mapped in the calling process either
    assert "/dev/shm/pr_" not in Path("/proc/self/maps").read_text()
    later = {p.pid for p in psutil.Process().children(recursive=True)}
    assert later <= children


def test_write_images_is_read_back_by_ismrmrd_python(tmp_path: Path) -> None:
    images = pr.reconstruct(RAW_STREAM, output="complex", options={"coils": "channels"})
    magnitude = pr.reconstruct(RAW_STREAM)
    magnitude[0].head["image_series_index"] = 2  # a second series, of another data type
    images += magnitude
    header = _header_of(RAW_STREAM)
    path = pr.write_images(tmp_path / "images.h5", images, header=header)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        theirs = [
            dataset.read_image(series, i)
            for series in sorted(s for s in dataset.list() if s.startswith("image_"))
            for i in range(dataset.number_of_images(series))
        ]
        assert dataset.read_xml_header().decode() == header
    finally:
        dataset.close()
    assert len(theirs) == len(images) == 2
    for ours, their in zip(images, theirs, strict=True):
        assert bytes(their.getHead()) == ours.head.tobytes()
        assert np.array_equal(their.data, ours.data)
    back = pr.read_images(path)
    assert [encode_message(i) for i in back] == [encode_message(i) for i in images]
    # writing again replaces the file (no appending), and a stream file reads the same
    pr.write_images(path, images[:1])
    assert len(pr.read_images(path)) == 1
    stream = pr.write_images(tmp_path / "images.bin", images, header=header, format="stream")
    with open(stream, "rb") as handle:
        decoded = list(ismrmrd.serialization.ProtocolDeserializer(handle).deserialize())
    assert [type(m).__name__ for m in decoded] == ["ismrmrdHeader", "Image", "Image"]
    for ours, their in zip(images, decoded[1:], strict=True):
        assert np.array_equal(their.data, ours.data)
    assert [encode_message(i) for i in pr.read_images(stream)] == [
        encode_message(i) for i in images
    ]
    assert not list(tmp_path.glob(".*partial"))


def test_read_images_of_a_real_file_equals_ismrmrd_python() -> None:
    path = shared_data_dir() / "prisma_3T_brain_images_int16.h5"
    ours = pr.read_images(path)
    with h5py.File(path, "r") as handle:
        groups = list(handle)
    dataset = ismrmrd.Dataset(str(path), groups[0], create_if_needed=False)
    try:
        series = sorted(s for s in dataset.list() if s.startswith("image"))
        theirs = [
            dataset.read_image(name, i)
            for name in series
            for i in range(dataset.number_of_images(name))
        ]
    finally:
        dataset.close()
    assert len(ours) == len(theirs) > 0
    for mine, their in zip(ours, theirs, strict=True):
        assert np.array_equal(mine.data, their.data) and mine.data.dtype == np.int16


def test_importing_the_package_does_not_import_the_engine() -> None:
    probe = (
        "import sys, parallel_recon; print(sorted({'numpy', 'h5py', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    assert out.stdout.strip() == b"[]"
    assert callable(pr.reconstruct) and set(pr.__all__) >= {"reconstruct", "read_images"}


def test_export_writes_what_the_export_command_writes(tmp_path: Path) -> None:
    import nibabel as nib

    from parallel_recon.phantom import PhantomSpec, write_stream

    raw = io.BytesIO()
    write_stream(PhantomSpec(matrix=32, coils=4, slices=2, orientation="sagittal"), raw)
    (tmp_path / "raw.bin").write_bytes(raw.getvalue())
    header = _header_of(tmp_path / "raw.bin")
    images = pr.reconstruct(raw.getvalue(), workers=1)
    written = pr.export(images, tmp_path / "api.nii.gz", to="nifti", header=header)
    assert written == [tmp_path / "api.nii.gz"]
    stored = pr.write_images(tmp_path / "images.h5", images, header=header)
    cli = tmp_path / "cli.nii.gz"
    run_cli("parallel-recon", "export", str(stored), "--to", "nifti", "-o", str(cli))
    ours, theirs = nib.load(written[0]), nib.load(cli)
    assert ours.shape == theirs.shape and ours.shape[:2] == (32, 32)
    assert np.array_equal(ours.get_fdata(), theirs.get_fdata())
    assert np.array_equal(ours.affine, theirs.affine)


def test_export_stays_the_api_function_after_the_export_subpackage_is_imported() -> None:
    import importlib

    importlib.import_module("parallel_recon.export.nifti")
    assert pr.export is pr.api.export
    assert callable(pr.export)
    assert importlib.import_module("parallel_recon.export").__name__ == "parallel_recon.export"

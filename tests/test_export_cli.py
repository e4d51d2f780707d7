"""``parallel-recon export`` as users run it: pipes, the real brain file, every image kind, and
clear one-line errors.

The files are read back with pydicom, nibabel and plain numpy; MRD inputs with
ismrmrd-python.  The geometry itself is checked against dcm2niix in test_export_interop.py.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import BIN_DIR, run_cli
from export_support import dcm2niix, dicom_files, dicom_world, mrd_world, nifti_world
from reference_recon import read_stream

from parallel_recon.cli.export import main as export_main
from parallel_recon.errors import ConfigurationError, GeometryError
from parallel_recon.export import export, read_hdf5_input
from parallel_recon.hdf5 import MrdHdf5Writer
from parallel_recon.phantom import (
    PhantomSpec,
    ground_truth,
    voxel_position,
    write_hdf5,
    write_stream,
)
from parallel_recon.protocol import Image, Message, StreamReader, new_image_head

SMALL = ["-m", "16", "-c", "2", "-n", "0"]


FOUR_D = ("-s", "3", "-r", "2", "--orientation", "coronal", "--position", "5,6,7")
"""3 slices x 2 repetitions, coronal, off-centre: 6 images in one series."""
_RECONS: dict[tuple[str, ...], bytes] = {}


def recon(phantom: tuple[str, ...], *options: str) -> bytes:
    """``mrd_stream_recon OPTIONS`` images of ``mrd_phantom -m 16 -c 2 -n 0 PHANTOM`` (cached:
    each recon starts a process pipeline)."""
    key = (*phantom, "|", *options)
    if key not in _RECONS:
        raw = run_cli("mrd_phantom", *SMALL, *phantom, "-o", "-").stdout
        _RECONS[key] = run_cli("mrd_stream_recon", "--workers", "1", *options, input=raw).stdout
    return _RECONS[key]


def _messages(stream: bytes) -> list[Message]:
    return list(StreamReader(io.BytesIO(stream)))


def _images(stream: bytes) -> list[ismrmrd.Image]:
    _, messages = read_stream(stream)
    return [m for m in messages if isinstance(m, ismrmrd.Image)]


def test_one_line_pipe_from_raw_data_to_nifti(tmp_path: Path) -> None:
    out = tmp_path / "brain.nii.gz"
    line = (
        f"{BIN_DIR}/mrd_phantom -m 16 -c 2 -n 0 -s 3 --orientation oblique --position 5,-7,9 -o - "
        f"| {BIN_DIR}/mrd_stream_recon --workers 1 "
        f"| {BIN_DIR}/parallel-recon export - --to nifti -o {out}"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", line], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""  # silent in a pipe
    image = nib.load(out)
    assert image.shape == (16, 16, 3)
    spec = PhantomSpec(matrix=16, coils=2, slices=3, orientation="oblique", position=(5, -7, 9))
    voxels = image.get_fdata()
    for slice_ in range(3):
        truth = ground_truth(spec, slice=slice_)[0]  # [rows, columns]
        # NIfTI voxel (i, j, k) = column i, row (rows-1-j), slice k along the normal
        np.testing.assert_allclose(voxels[:, ::-1, slice_].T, truth, atol=1e-5)
        for row, column in [(0, 0), (15, 0), (3, 11)]:
            expected = voxel_position(spec, (slice_, 0, row, column))
            np.testing.assert_allclose(
                nifti_world(image, column, 15 - row, slice_), expected, atol=1e-3
            )
    assert not list(tmp_path.glob(".*partial*"))


def test_brain_images_export_to_all_three_formats(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "prisma_3T_brain_images_int16.h5"
    with h5py.File(source) as handle:
        pixels = handle["images/images_1/data"][()]  # [n, channels, z, y, x] int16
        stored_headers = handle["images/images_1/header"][()]
        xml = handle["images/xml"][0].decode()
    dataset = ismrmrd.Dataset(str(source), "images", False)
    image = dataset.read_image("images_1", 0)
    dataset.close()
    for to, name in [("dicom", "dicom"), ("nifti", "brain.nii.gz"), ("npy", "brain.npz")]:
        proc = run_cli(
            "parallel-recon", "export", str(source), "--to", to, "-o", str(tmp_path / name)
        )
        assert proc.stderr == b""
    (dicom_path,) = dicom_files(tmp_path / "dicom")
    ds = pydicom.dcmread(dicom_path)
    np.testing.assert_array_equal(ds.pixel_array, pixels[0, 0, 0])
    assert ds.pixel_array.dtype == np.int16 and "RescaleSlope" not in ds
    assert ds.Manufacturer == "SIEMENS" and ds.ManufacturerModelName == "Prisma_fit"
    assert ds.PatientPosition == "HFS" and ds.StudyTime.startswith("115945")
    assert ds.FrameOfReferenceUID == "1.3.12.2.1107.5.2.43.67024.1.20220218115727739.0.0.0"
    assert ds.PatientName == "UNKNOWN^" and ds.PatientID == "UNKNOWN"  # documented placeholders
    assert ds.SoftwareVersions == f"parallel-recon {importlib.metadata.version('parallel-recon')}"
    np.testing.assert_allclose(dicom_world(ds, 17, 200), mrd_world(image, 200, 17), atol=1e-3)
    nifti = nib.load(tmp_path / "brain.nii.gz")
    assert nifti.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(nifti.dataobj)[:, ::-1, 0].T, pixels[0, 0, 0])
    np.testing.assert_allclose(
        nifti_world(nifti, 200, 219 - 17, 0), mrd_world(image, 200, 17), atol=1e-3
    )
    # the .npz needs only numpy: load it in a Python that cannot import this package
    script = (
        "import sys; sys.modules['parallel_recon'] = None\n"
        "import numpy as np\n"
        f"z = np.load({str(tmp_path / 'brain.npz')!r}, allow_pickle=False)\n"
        "print(z['data'].shape, z['data'].dtype, z['headers']['position'][0].tolist(), "
        "z['headers'].dtype.itemsize, str(z['series']), len(str(z['header_xml'])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "(1,",
        "1,",
        "1,",
        "220,",
        "220)",
        "int16",
        "[0.0,",
        "0.0,",
        "0.0]",
        "198",
        "images_1",
        str(len(xml)),
    ]
    with np.load(tmp_path / "brain.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["data"], pixels)
        assert npz["headers"].tobytes() == stored_headers.tobytes()
        np.testing.assert_allclose(
            (npz["affine_lps"][0] @ [200, 17, 0, 1])[:3], mrd_world(image, 200, 17), atol=1e-3
        )
        ras = npz["affine_ras"][0] @ [200, 17, 0, 1]
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], mrd_world(image, 200, 17), atol=1e-3)


def test_repetitions_stack_as_4d_like_dcm2niix(tmp_path: Path) -> None:
    messages = _messages(recon(FOUR_D))
    export(messages, tmp_path / "ours.nii", to="nifti")
    export(messages, tmp_path / "dicom", to="dicom")
    ours = nib.load(tmp_path / "ours.nii")
    assert ours.shape == (16, 16, 3, 2)
    (theirs_path,) = dcm2niix(tmp_path / "dicom", tmp_path / "out")
    theirs = nib.load(theirs_path)
    assert theirs.shape == ours.shape
    assert np.abs(theirs.affine - ours.affine).max() < 1e-3
    assert np.abs(theirs.get_fdata() - ours.get_fdata()).max() <= theirs.dataobj.slope * (
        0.5 + 1e-3
    )
    # time between volumes from the time stamps, as dcm2niix estimates it
    assert ours.header.get_zooms()[3] == pytest.approx(theirs.header.get_zooms()[3], rel=1e-3)
    datasets = [pydicom.dcmread(p) for p in dicom_files(tmp_path / "dicom")]
    assert sorted({int(ds.TemporalPositionIdentifier) for ds in datasets}) == [1, 2]
    assert {int(ds.NumberOfTemporalPositions) for ds in datasets} == {2}
    assert len({ds.AcquisitionTime for ds in datasets}) == 6


def test_complex_and_multichannel_images(tmp_path: Path) -> None:
    complex_stream = recon(("-s", "2"), "--image-type", "complex")
    messages = _messages(complex_stream)
    export(messages, tmp_path / "cd", to="dicom")
    export(messages, tmp_path / "c.nii", to="nifti")
    folders = sorted(p.name for p in (tmp_path / "cd").iterdir())
    assert folders == ["101_image_1_M", "102_image_1_P"]
    phase = pydicom.dcmread(next((tmp_path / "cd" / folders[1]).glob("*.dcm")))
    assert list(phase.ImageType[:3]) == ["ORIGINAL", "PRIMARY", "P"]
    assert phase.PixelRepresentation == 1  # phase has negative values: int16
    source = _images(complex_stream)
    stored = phase.pixel_array * float(phase.RescaleSlope) + float(phase.RescaleIntercept)
    expected = np.angle(source[int(phase.InstanceNumber) - 1].data[0, 0])
    assert np.abs(stored - expected).max() <= float(phase.RescaleSlope) / 2 * 1.001
    nifti = nib.load(tmp_path / "c.nii")
    assert nifti.get_data_dtype() == np.complex64 and nifti.shape == (16, 16, 2)
    np.testing.assert_array_equal(np.asanyarray(nifti.dataobj)[:, ::-1, 0].T, source[0].data[0, 0])
    # coils as channels: one DICOM series and one NIfTI file per channel
    channels = _messages(recon(("-s", "2"), "--recon-option", "coils=channels"))
    export(channels, tmp_path / "chd", to="dicom")
    written = export(channels, tmp_path / "ch.nii.gz", to="nifti")
    assert sorted(p.name for p in (tmp_path / "chd").iterdir()) == [
        "101_image_1_ch1",
        "102_image_1_ch2",
    ]
    assert [p.name for p in written] == ["ch_image_1_ch1.nii.gz", "ch_image_1_ch2.nii.gz"]
    second = nib.load(written[1])
    coil_images = [m for m in channels if isinstance(m, Image)]
    np.testing.assert_array_equal(second.get_fdata()[:, ::-1, 1].T, coil_images[1].data[1, 0])


def test_several_series_and_series_selection(tmp_path: Path) -> None:
    first = recon(FOUR_D)
    second = recon((), "--series-index", "4")
    h5 = tmp_path / "two.h5"
    with MrdHdf5Writer(h5) as writer:  # one file, one header, two image series
        for message in [*_messages(first), *_messages(second)[1:]]:
            writer.write(message)
    written = export(read_hdf5_input(str(h5)), tmp_path / "all.npz", to="npy")
    assert [p.name for p in written] == ["all_image_1.npz", "all_image_4.npz"]
    run_cli(
        "parallel-recon",
        "export",
        str(h5),
        "-s",
        "4",
        "--to",
        "nifti",
        "-o",
        str(tmp_path / "four.nii"),
    )
    assert nib.load(tmp_path / "four.nii").shape == (16, 16, 1)
    assert not list(tmp_path.glob("four_*"))
    export(read_hdf5_input(str(h5)), tmp_path / "d", to="dicom")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["001_image_1", "004_image_4"]
    datasets = [pydicom.dcmread(p) for p in dicom_files(tmp_path / "d")]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert sorted({int(ds.SeriesNumber) for ds in datasets}) == [1, 4]
    # a stream on stdin, one series picked by its index
    run_cli(
        "parallel-recon",
        "export",
        "-",
        "-s",
        "1",
        "--to",
        "npy",
        "-o",
        str(tmp_path / "s.npz"),
        input=first + b"",
    )
    with np.load(tmp_path / "s.npz") as npz:
        assert npz["data"].shape == (6, 1, 1, 16, 16)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Raw data (stream and HDF5), images, and images cut short."""
    folder = tmp_path_factory.mktemp("inputs")
    raw = io.BytesIO()
    write_stream(PhantomSpec(matrix=16, coils=2), raw)
    write_hdf5(PhantomSpec(matrix=16, coils=2), folder / "raw.h5")
    images = recon(FOUR_D)
    return {
        "raw.bin": raw.getvalue(),
        "raw.h5": (folder / "raw.h5").read_bytes(),
        "images.bin": images,
        "truncated.bin": images[:-300],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.h5", "--to", "nifti", "-o", "x.nii"], "no such file"),
        (["raw.h5", "--to", "nifti", "-o", "x.nii"], "raw data must be reconstructed first"),
        (["raw.bin", "--to", "npy", "-o", "x.npz"], "raw data must be reconstructed first"),
        (
            ["images.bin", "--to", "nifti", "-o", "x.img"],
            "expected a name ending in .nii or .nii.gz",
        ),
        (["images.bin", "--to", "npy", "-o", "x.nii"], "expected a name ending in .npz"),
        (["images.bin", "--to", "dicom", "-o", "full"], "exists and is not an empty folder"),
        (["images.bin", "--to", "nifti", "-o", "nowhere/x.nii"], "does not exist"),
        (["images.bin", "-s", "9", "--to", "nifti", "-o", "x.nii"], "no images matching ['9']"),
        (["images.bin", "-g", "dataset", "--to", "nifti", "-o", "x.nii"], "applies to HDF5 files"),
        (["truncated.bin", "--to", "nifti", "-o", "x.nii"], "truncated IMAGE message"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(
    bad_inputs: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    for name, content in bad_inputs.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.dcm").write_bytes(b"x")
    before = set(tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("parallel-recon export: error:")
    assert message in err
    assert set(tmp_path.rglob("*")) == before  # nothing written, no partial files left


def test_raw_stream_on_stdin_fails_cleanly(bad_inputs: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    proc = run_cli(
        "parallel-recon",
        "export",
        "-",
        "--to",
        "nifti",
        "-o",
        str(out),
        input=bad_inputs["raw.bin"],
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == b""
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "raw data must be reconstructed first, e.g. with mrd_stream_recon" in err
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in [
        (["x.h5", "--to", "png", "-o", "x"], "invalid choice"),
        (["x.h5", "--to", "nifti"], "-o/--output"),
    ]:
        with pytest.raises(SystemExit) as stop:
            export_main(args)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_progress_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "i.bin").write_bytes(recon(FOUR_D))
    args = ["parallel-recon", "export", str(tmp_path / "i.bin"), "--to", "npy", "-o"]
    proc = run_cli(*args, str(tmp_path / "a.npz"), "--progress")
    lines = proc.stderr.decode().splitlines()
    assert lines[-1] == "parallel-recon export: 6 images -> 1 files"
    assert all(line.startswith("parallel-recon export: ") for line in lines)
    assert run_cli(*args, str(tmp_path / "b.npz")).stderr == b""


def _plain_image(direction: tuple[float, float, float]) -> Image:
    head = new_image_head()
    head["field_of_view"] = (4.0, 4.0, 1.0)
    head["read_dir"], head["phase_dir"] = direction, (0.0, 1.0, 0.0)
    head["image_type"] = 1
    return Image.from_array(np.ones((1, 1, 4, 4), np.float32), "", head)


def test_api_export_and_geometry_errors(tmp_path: Path) -> None:
    image = _plain_image((1.0, 0.0, 0.0))
    written = export([image], tmp_path / "a.npz", to="npy")
    assert written == [tmp_path / "a.npz"]
    with pytest.raises(ConfigurationError, match="expected to= dicom, nifti, npy"):
        export([image], tmp_path / "a.png", to="png")
    with pytest.raises(GeometryError, match="expected a unit direction cosine"):
        export([_plain_image((0.0, 0.0, 0.0))], tmp_path / "b.nii", to="nifti")
    assert not (tmp_path / "b.nii").exists()
    assert os.listdir(tmp_path) == ["a.npz"]

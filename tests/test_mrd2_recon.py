"""The reconstruction and the other commands on MRD v2 streams.

- ``mrd_stream_recon`` gives pixel-identical images from the v1 and v2 forms of the golden
  phantom, the SIRF GRAPPA file and a 3D phantom, for ``--workers`` 1 to 4; its v2 output is
  read by mrd-python and by its PNG exporter; ``--format`` picks the other generation.
- ``-c NAME`` and a CONFIG_FILE naming a Gadgetron configuration choose our kernel; an
  unknown name gets one warning saying which kernel runs instead.
- The C++ recon names a v2 stream in one line.
- info, view, export, to-hdf5, batch and the Python API read v2 streams.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import mrd
import numpy as np
import pytest

from parallel_recon import api
from parallel_recon.protocol import Header, Image, open_reader
from tests.conftest import run_cli
from tests.mrd2_support import mrd_acquisition, read_with_mrd


def _images(raw: bytes) -> list[Image]:
    return [m for m in open_reader(io.BytesIO(raw)) if isinstance(m, Image)]


def _phantom(*args: str) -> tuple[bytes, bytes]:
    v1 = run_cli("mrd_phantom", *args, "-o", "-").stdout
    v2 = run_cli("mrd_phantom", *args, "-o", "-", "--format", "mrd2").stdout
    return v1, v2


PHANTOMS = {
    "phantom_3d": ("-m", "32", "-c", "4", "-p", "8", "-r", "2", "--seed", "3"),
    # 256 samples x 32 coils: 64 kB readouts, which go straight from the pipe to their slot
    "phantom_32_coils": ("-m", "128", "-c", "32", "-r", "2", "--seed", "5"),
}


def _written_by_mrd_python(v1: bytes, converted: bytes) -> bytes:
    """The v2 form mrd-python writes with every acquisition field the 2.1 model has (the
    sample times too, which the MRD project's converter leaves out); the header as the
    converter wrote it (``converted``)."""
    messages = list(open_reader(io.BytesIO(v1)))
    assert isinstance(messages[0], Header)
    header = read_with_mrd(converted)[0]
    sink = io.BytesIO()
    writer = mrd.BinaryMrdWriter(sink)
    writer.write_header(header)
    writer.write_data(mrd_acquisition(m) for m in messages[1:])
    writer.close()
    return sink.getvalue()


def _forms(shared_data: Path, name: str) -> tuple[bytes, bytes]:
    if name in PHANTOMS:
        return _phantom(*PHANTOMS[name])
    if name == "phantom_m128_c8_noise":
        v1 = (shared_data / "golden" / f"{name}.stream").read_bytes()
        return v1, _written_by_mrd_python(v1, (shared_data / "mrd2" / f"{name}.mrd2").read_bytes())
    v1 = (shared_data / "golden" / f"{name}.stream").read_bytes()
    v2 = (shared_data / "mrd2" / f"{name}.mrd2").read_bytes()
    return v1, v2


@pytest.mark.parametrize(
    "name", ["phantom_m128_c8_noise", "sirf_grappa2_1rep", "phantom_3d", "phantom_32_coils"]
)
def test_same_images_from_v1_and_v2_for_every_worker_count(shared_data: Path, name: str) -> None:
    v1, v2 = _forms(shared_data, name)
    reference = _images(run_cli("mrd_stream_recon", "--workers", "1", input=v1).stdout)
    assert reference
    for workers in (1, 2, 3, 4):
        out = run_cli("mrd_stream_recon", "--workers", str(workers), input=v2).stdout
        assert out.startswith(b"yardl"), "the input's generation comes out"
        images = _images(out)
        assert len(images) == len(reference)
        for ours, ref in zip(images, reference, strict=True):
            assert ours.data.dtype == ref.data.dtype
            assert ours.data.tobytes() == ref.data.tobytes(), (name, workers)
            for field in ("slice", "repetition", "image_index", "image_series_index"):
                assert ours.head[field] == ref.head[field], field
        _, items = read_with_mrd(out)
        assert [type(i) for i in items] == [mrd.StreamItem.ImageFloat] * len(reference)
        for item, ref in zip(items, reference, strict=True):
            assert np.array_equal(item.value.data, ref.data)


def test_converted_golden_phantom_lacks_the_dwell_times(shared_data: Path) -> None:
    """The MRD project's converter leaves the sample times out, so the v2 form of the golden
    phantom cannot say that its noise scan and imaging lines share a dwell time: the noise
    bandwidth scale is then 1 (as in Gadgetron) instead of 1 / relativeReceiverNoiseBandwidth
    (0.793 by default), and the images differ by exactly sqrt(0.793), nothing else."""
    v1 = (shared_data / "golden/phantom_m128_c8_noise.stream").read_bytes()
    v2 = (shared_data / "mrd2/phantom_m128_c8_noise.mrd2").read_bytes()
    (a,) = _images(run_cli("mrd_stream_recon", input=v1).stdout)
    (b,) = _images(run_cli("mrd_stream_recon", input=v2).stdout)
    np.testing.assert_allclose(a.data, b.data * np.float32(np.sqrt(0.793)), rtol=2e-6)


def test_format_writes_the_other_generation(shared_data: Path) -> None:
    v2 = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    v1 = (shared_data / "golden/sirf_grappa2_1rep.stream").read_bytes()
    as_v1 = run_cli("mrd_stream_recon", "--format", "ismrmrd", input=v2).stdout
    as_v2 = run_cli("mrd_stream_recon", "--format", "mrd2", input=v1).stdout
    assert not as_v1.startswith(b"yardl") and as_v2.startswith(b"yardl")
    assert [i.data.tobytes() for i in _images(as_v1)] == [i.data.tobytes() for i in _images(as_v2)]


def test_mrd_python_consumers_read_our_v2_images(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes()
    images = tmp_path / "images.mrd2"
    images.write_bytes(run_cli("mrd_stream_recon", input=raw).stdout)
    prefix = tmp_path / "png_"
    subprocess.run(
        [sys.executable, "-m", "mrd.tools.export_png_images", "-i", str(images), "-o", str(prefix)],
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in tmp_path.glob("png_*.png")) == ["png_0000.png", "png_0001.png"]
    # and mrd-python's own recon of its phantom agrees with ours on where the object is
    theirs = subprocess.run(
        [sys.executable, "-m", "mrd.tools.stream_recon"],
        input=raw,
        check=True,
        capture_output=True,
    ).stdout
    _, mine = read_with_mrd(images.read_bytes())
    _, reference = read_with_mrd(theirs)
    for ours, ref in zip(mine, reference, strict=True):
        a, b = np.abs(ours.value.data).ravel(), np.abs(ref.value.data).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.99


# ------------------------------------------------------- configuration names
def _kernel(args: list[str], stream: bytes, tmp: Path) -> tuple[str, str]:
    profile = tmp / "profile.json"
    proc = run_cli("mrd_stream_recon", *args, "--profile-json", str(profile), input=stream)
    return json.loads(profile.read_text())["kernel"]["name"], proc.stderr.decode()


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("default.xml", "cartesian"),
        ("Generic_Cartesian_FFT.xml", "cartesian"),
        ("Generic_Cartesian_Grappa.xml", "grappa"),
        ("Generic_Cartesian_Grappa_SNR", "grappa"),
        ("grappa", "grappa"),
    ],
)
def test_gadgetron_config_names_choose_our_kernel(
    shared_data: Path, tmp_path: Path, name: str, kernel: str
) -> None:
    data = "sirf_grappa2_1rep" if kernel == "grappa" else "phantom_m128_c8_noise"
    stream = (shared_data / "mrd2" / f"{data}.mrd2").read_bytes()
    chosen, stderr = _kernel(["-c", name], stream, tmp_path)
    assert chosen == kernel and stderr == ""


def test_unknown_config_name_gets_one_warning(shared_data: Path, tmp_path: Path) -> None:
    stream = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    chosen, stderr = _kernel(["-c", "Generic_Cartesian_Spirit_Magic.xml"], stream, tmp_path)
    assert chosen == "auto"
    assert stderr.splitlines() == [
        "mrd_stream_recon: warning: -c unknown configuration "
        "'Generic_Cartesian_Spirit_Magic.xml': running the auto kernel (NUFFT for radial and "
        "spiral data, GRAPPA or SENSE for accelerated data with calibration lines, else FFT) "
        "instead; known names include default.xml, default_optimized.xml, default_short.xml, "
        "Generic_Cartesian_FFT.xml, Generic_Cartesian_Image_Chain_FFT.xml and the kernels "
        "auto, cartesian, grappa, nufft, sense"
    ]


def test_config_file_message_chooses_the_kernel(shared_data: Path, tmp_path: Path) -> None:
    h5 = str(shared_data / "golden/phantom_m128_c8_noise.h5")
    with_config = run_cli("mrdhdf5_to_stream", "-c", "Generic_Cartesian_Grappa.xml", h5).stdout
    assert _kernel([], with_config, tmp_path)[0] == "grappa"
    unknown = run_cli("mrdhdf5_to_stream", "-c", "my_site.xml", h5).stdout
    chosen, stderr = _kernel([], unknown, tmp_path)
    assert chosen == "auto"
    assert stderr.startswith("mrd_stream_recon: warning: CONFIG_FILE unknown configuration")
    assert len(stderr.splitlines()) == 1
    # the command line wins over the stream
    assert _kernel(["--recon", "cartesian"], with_config, tmp_path)[0] == "cartesian"


def test_config_and_recon_together_is_a_usage_error(shared_data: Path) -> None:
    proc = run_cli("mrd_stream_recon", "-c", "default.xml", "--recon", "grappa", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        "mrd_stream_recon: error: give either -c/--config-file or --recon, not both"
    )


# ------------------------------------------------------------------- C++ recon
def test_cpp_recon_names_a_v2_stream(shared_data: Path) -> None:
    from tests.test_cpp_recon import build_cpp

    binary = build_cpp()
    stream = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    proc = subprocess.run([str(binary)], input=stream, capture_output=True, check=False)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "mrd_stream_recon_cpp: error: this is an MRD v2 (yardl) stream: this C++ recon reads "
        "MRD v1 (ISMRMRD); use mrd_stream_recon, which reads both, or convert it first with "
        "parallel-recon convert - - --to ismrmrd (at byte offset 0, message index 0)"
    ]


# ------------------------------------------------------------- other commands
def test_info_names_the_generation(shared_data: Path) -> None:
    path = str(shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2")
    text = run_cli("parallel-recon", "info", path).stdout.decode()
    assert text.splitlines()[0] == f"{path}: stream, MRD v2 (yardl), 692789 bytes"
    assert "acquisitions: 160" in text and "messages: HEADER 1, ACQUISITION 160" in text
    doc = json.loads(
        run_cli("parallel-recon", "info", "--json", "-", input=Path(path).read_bytes()).stdout
    )
    assert doc["generation"] == "mrd2" and doc["sections"][0]["acquisitions"]["count"] == 160


def test_view_export_and_to_hdf5_read_v2_images(shared_data: Path, tmp_path: Path) -> None:
    images = shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.images.mrd2"
    png = tmp_path / "montage.png"
    run_cli("parallel-recon", "view", str(images), "-o", str(png))
    assert png.read_bytes().startswith(b"\x89PNG")
    out = tmp_path / "images.npz"
    run_cli("parallel-recon", "export", str(images), "--to", "npy", "-o", str(out))
    with np.load(out) as saved:
        stacked = [saved[k] for k in saved.files if saved[k].dtype == np.float32]
    _, theirs = read_with_mrd(images.read_bytes())
    expected = np.stack([np.asarray(i.value.data, np.float32) for i in theirs])
    assert any(
        a.size == expected.size and np.array_equal(a.ravel(), expected.ravel()) for a in stacked
    )
    h5 = tmp_path / "images.h5"
    run_cli("stream_to_mrdhdf5", str(h5), input=images.read_bytes())
    back = api.read_images(h5)
    assert [i.data.tobytes() for i in back] == [np.asarray(i.value.data).tobytes() for i in theirs]


def test_api_reads_and_reconstructs_v2(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes()
    images = api.reconstruct(raw, workers=1)
    assert len(images) == 2 and images[0].data.shape == (1, 1, 64, 64)
    saved = tmp_path / "out.mrd2"
    api.write_images(saved, images, format="mrd2")
    _, items = read_with_mrd(saved.read_bytes())
    assert [np.asarray(i.value.data).tobytes() for i in items] == [i.data.tobytes() for i in images]
    assert [i.data.tobytes() for i in api.read_images(saved)] == [i.data.tobytes() for i in images]


def test_batch_recognises_v2_stream_files(shared_data: Path, tmp_path: Path) -> None:
    from parallel_recon.batch.discover import classify

    raw = tmp_path / "scan.bin"
    raw.write_bytes((shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes())
    images = tmp_path / "images.bin"
    images.write_bytes((shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.images.mrd2").read_bytes())
    assert classify(str(raw)) == "stream"
    assert classify(str(images)) is None  # images are not raw data to reconstruct
    out = tmp_path / "out"
    run_cli("parallel-recon", "batch", str(raw), "-o", str(out))
    produced = sorted(out.rglob("*.h5"))
    assert len(produced) == 1 and len(api.read_images(produced[0])) == 2


def test_recon_command_imports_no_numpy_before_one_blas_thread() -> None:
    """``--format`` is named in the recon command without importing the protocol: numpy
    loaded before ``single_threaded_math`` would start a BLAS thread pool in every worker
    (prewhitening ran ~10x slower on 2 busy cores)."""
    from parallel_recon.cli.recon import FORMATS
    from parallel_recon.protocol import GENERATIONS

    assert FORMATS == GENERATIONS
    code = "import sys, parallel_recon.cli.recon; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out.strip() == b"False"

"""The phantom generator: physics (recon gives the analytic object), flags, order, formats, CLI.

The reconstruction used here is the test's own few lines of numpy (place lines by encode
step, centered inverse FFT, crop the oversampling, RSS), independent of the product's recon.
ismrmrd-python is the oracle for the HDF5 file and the stream.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest

from parallel_recon.cli.phantom import main as phantom_main
from parallel_recon.phantom import (
    PhantomSpec,
    ground_truth,
    iter_messages,
    write_hdf5,
    write_stream,
)
from parallel_recon.phantom.coils import coil_sensitivities
from parallel_recon.phantom.header import header_xml
from parallel_recon.protocol.decode import StreamReader
from parallel_recon.protocol.encode import encode_message
from parallel_recon.protocol.messages import Acquisition, Close, Header
from tests.conftest import run_cli

FLAG_BITS = {
    "first_in_encode_step1": 1,
    "last_in_encode_step1": 2,
    "first_in_slice": 7,
    "last_in_slice": 8,
    "first_in_repetition": 13,
    "last_in_repetition": 14,
    "noise": 19,
    "calibration": 20,
    "calibration_and_imaging": 21,
    "last_in_measurement": 25,
}


def has(acq: Acquisition, name: str) -> bool:
    return bool(int(acq.head["flags"]) & (1 << (FLAG_BITS[name] - 1)))


def acquisitions(spec: PhantomSpec) -> list[Acquisition]:
    return [m for m in iter_messages(spec) if isinstance(m, Acquisition)]


def idx(acq: Acquisition, name: str) -> int:
    return int(acq.head["idx"][name])


def nrmse(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(found - truth) / np.linalg.norm(truth))


def zero_filled_rss(
    spec: PhantomSpec, acqs: list[Acquisition]
) -> dict[tuple[int, ...], np.ndarray]:
    """The test's own recon: ``{(slice, contrast, repetition): float [partitions, y, x]}``."""
    kspace: dict[tuple[int, ...], np.ndarray] = {}
    counts: dict[tuple[int, ...], np.ndarray] = {}
    nx = spec.matrix * spec.oversampling
    for acq in acqs:
        if has(acq, "noise") or (
            has(acq, "calibration") and not has(acq, "calibration_and_imaging")
        ):
            continue
        key = (idx(acq, "slice"), idx(acq, "contrast"), idx(acq, "repetition"))
        if key not in kspace:
            kspace[key] = np.zeros((spec.coils, spec.partitions, spec.matrix, nx), np.complex128)
            counts[key] = np.zeros((spec.partitions, spec.matrix), np.int64)
        kz, ky = idx(acq, "kspace_encode_step_2"), idx(acq, "kspace_encode_step_1")
        kspace[key][:, kz, ky, :] += acq.data
        counts[key][kz, ky] += 1
    images: dict[tuple[int, ...], np.ndarray] = {}
    axes = (1, 2, 3)
    crop = slice((nx - spec.matrix) // 2, (nx - spec.matrix) // 2 + spec.matrix)
    for unit, summed in kspace.items():
        k = summed / np.maximum(counts[unit], 1)[np.newaxis, :, :, np.newaxis]
        coil_images = np.fft.fftshift(
            np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes
        )
        images[unit] = np.sqrt(np.sum(np.abs(coil_images[..., crop]) ** 2, axis=0))
    return images


CASES = {
    "2d": {},
    "oversampling_1": {"oversampling": 1},
    "multi_slice": {"slices": 3},
    "3d": {"partitions": 6},
    "contrasts": {"contrasts": 3},
    "averages_repetitions": {"averages": 2, "repetitions": 2},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_noise_free_recon_equals_ground_truth_exactly(name: str) -> None:
    spec = PhantomSpec(matrix=32, coils=4, noise_level=0.0, **CASES[name])  # type: ignore[arg-type]
    images = zero_filled_rss(spec, acquisitions(spec))
    assert len(images) == spec.slices * spec.contrasts * spec.repetitions
    for (slice_, contrast, repetition), image in images.items():
        truth = ground_truth(spec, slice=slice_, contrast=contrast, repetition=repetition)
        assert truth.shape == image.shape == (spec.partitions, spec.matrix, spec.matrix)
        assert nrmse(image, truth) < 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_noise_recon_matches_ground_truth(name: str) -> None:
    spec = PhantomSpec(matrix=48, coils=8, seed=7, **CASES[name])  # type: ignore[arg-type]
    assert spec.noise_level == 0.05
    images = zero_filled_rss(spec, acquisitions(spec))
    for (slice_, contrast, repetition), image in images.items():
        truth = ground_truth(spec, slice=slice_, contrast=contrast, repetition=repetition)
        error = nrmse(image, truth)
        assert 1e-4 < error < 0.05  # noisy (so the noise is really there), yet close


# The modified Shepp-Logan phantom as published: P. Toft, "The Radon Transform - Theory and
# Implementation", PhD thesis, Technical University of Denmark, 1996, p. 199 (Shepp and
# Logan's ellipses with the intensities raised for display; MATLAB's phantom() uses the same).
# Intensity A, semi-axes a (along x) and b (along y), centre (x0, y0), rotation phi in degrees
# counter-clockwise, on the square [-1, 1] x [-1, 1] with y pointing up.
TOFT_MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0),
    (-0.2, 0.1100, 0.3100, 0.22, 0.0, -18.0),
    (-0.2, 0.1600, 0.4100, -0.22, 0.0, 18.0),
    (0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0),
    (0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0),
    (0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0),
    (0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0),
)


def published_shepp_logan(matrix: int, margin: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The published phantom at the pixel centres of a ``matrix`` x ``matrix`` image (rows
    from +y at the top, columns from -x at the left), and the mask of interior pixels: those
    whose centre is not within ``margin`` (in normalised radius) of any ellipse's edge."""
    centres = (2 * np.arange(matrix) + 1 - matrix) / matrix
    x, y = centres[np.newaxis, :], -centres[:, np.newaxis]
    values = np.zeros((matrix, matrix))
    interior = np.ones((matrix, matrix), bool)
    for intensity, a, b, x0, y0, phi in TOFT_MODIFIED_SHEPP_LOGAN:
        c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        along_a = (x - x0) * c + (y - y0) * s
        along_b = (y - y0) * c - (x - x0) * s
        radius = np.sqrt((along_a / a) ** 2 + (along_b / b) ** 2)
        values += np.where(radius < 1, intensity, 0.0)
        interior &= np.abs(radius - 1) > margin
    return values, interior


@pytest.mark.parametrize("matrix", [64, 100])
def test_2d_ground_truth_is_the_published_shepp_logan(matrix: int) -> None:
    """The ground truth of a 2D single-slice phantom is the published table, evaluated here at
    the pixel centres (edge pixels, where rounding may decide, are left out)."""
    spec = PhantomSpec(matrix=matrix, coils=2, noise_level=0.0)
    truth = ground_truth(spec)[0]
    assert truth.dtype == np.float32 and truth.shape == (matrix, matrix)
    expected, interior = published_shepp_logan(matrix)
    assert interior.mean() > 0.95
    np.testing.assert_allclose(truth[interior], expected[interior], rtol=0, atol=1e-6)
    # modified Shepp-Logan: skull 1.0, brain 0.2, ventricles 0, three 0.3 blobs
    middle = matrix // 2
    assert truth.max() == pytest.approx(1.0)
    assert truth[middle, middle] == pytest.approx(0.2)
    assert truth.min() >= 0.0


def test_slices_partitions_and_contrasts_are_different_objects() -> None:
    spec = PhantomSpec(matrix=32, slices=2, partitions=3, contrasts=2)
    a = ground_truth(spec, slice=0, contrast=0)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, ground_truth(spec, slice=1, contrast=0))
    later_echo = ground_truth(spec, slice=0, contrast=1)
    assert later_echo.sum() < a.sum()  # T2 decay


@pytest.mark.parametrize("coils", [1, 3, 8, 32])
def test_coil_sensitivities_are_smooth_and_rss_normalised(coils: int) -> None:
    maps = coil_sensitivities(40, coils)
    assert maps.dtype == np.complex64 and maps.shape == (coils, 40, 40)
    np.testing.assert_allclose(np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)), 1.0, rtol=1e-5)
    steps = np.abs(np.diff(maps, axis=-1)).max()
    assert steps < 0.2  # neighbouring pixels differ little
    if coils > 1:
        assert not np.allclose(maps[0], maps[1])


def test_accelerated_lines_and_flags() -> None:
    spec = PhantomSpec(
        matrix=32, coils=2, acceleration=2, calibration_width=8, noise_calibration=True,
        repetitions=2, slices=3,
    )  # fmt: skip
    acqs = acquisitions(spec)
    noise, imaging = acqs[0], acqs[1:]
    assert has(noise, "noise") and not any(has(a, "noise") for a in imaging)
    centre, calibration = 16, set(range(12, 20))
    pattern = {ky for ky in range(32) if ky % 2 == centre % 2}
    expected_lines = sorted(pattern | calibration)
    for repetition in range(2):
        for slice_ in range(3):
            lines = [
                a for a in imaging
                if idx(a, "slice") == slice_ and idx(a, "repetition") == repetition
            ]  # fmt: skip
            assert [idx(a, "kspace_encode_step_1") for a in lines] == expected_lines
            for a in lines:
                ky = idx(a, "kspace_encode_step_1")
                assert has(a, "calibration_and_imaging") == (ky in calibration and ky in pattern)
                assert has(a, "calibration") == (ky in calibration and ky not in pattern)
            assert [has(a, "first_in_slice") for a in lines] == [True] + [False] * (len(lines) - 1)
            assert [has(a, "last_in_slice") for a in lines] == [False] * (len(lines) - 1) + [True]
            assert has(lines[0], "first_in_encode_step1") and has(lines[-1], "last_in_encode_step1")
    # interleaved slice order, per repetition: 0, 2, 1
    order = [idx(a, "slice") for a in imaging if has(a, "first_in_slice")]
    assert order == [0, 2, 1, 0, 2, 1]
    last_rep = [i for i, a in enumerate(imaging) if has(a, "last_in_repetition")]
    rep_ends = [
        max(i for i, a in enumerate(imaging) if idx(a, "repetition") == r) for r in range(2)
    ]
    assert last_rep == rep_ends
    assert [i for i, a in enumerate(acqs) if has(a, "last_in_measurement")] == [len(acqs) - 1]
    counters = [int(a.head["scan_counter"]) for a in acqs]
    assert counters == list(range(1, len(acqs) + 1))
    stamps = [int(a.head["acquisition_time_stamp"]) for a in imaging]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    header = ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    assert header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_1 == 2


def test_contrasts_of_a_line_are_back_to_back_and_close_their_own_units() -> None:
    spec = PhantomSpec(matrix=16, coils=2, contrasts=3, averages=2)
    acqs = acquisitions(spec)
    keys = [(idx(a, "kspace_encode_step_1"), idx(a, "average"), idx(a, "contrast")) for a in acqs]
    assert keys == [(ky, avg, c) for ky in range(16) for avg in range(2) for c in range(3)]
    last = [idx(a, "contrast") for a in acqs if has(a, "last_in_slice")]
    assert last == [0, 1, 2]
    assert [has(a, "last_in_slice") for a in acqs[-3:]] == [True, True, True]


def test_3d_encoding_and_coordinates() -> None:
    spec = PhantomSpec(matrix=16, coils=2, partitions=4, kspace_coordinates=True)
    acqs = acquisitions(spec)
    assert len(acqs) == 16 * 4
    first = acqs[0]
    assert first.traj.shape == (32, 3)
    np.testing.assert_allclose(first.traj[:, 0], (np.arange(32) - 16) / 32)
    for a in acqs:
        ky, kz = idx(a, "kspace_encode_step_1"), idx(a, "kspace_encode_step_2")
        np.testing.assert_allclose(a.traj[:, 1], (ky - 8) / 16)
        np.testing.assert_allclose(a.traj[:, 2], (kz - 2) / 4)
    header = ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    encoding = header.encoding[0]
    assert (encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.z) == (32, 4)
    assert encoding.encodingLimits.kspace_encoding_step_2.maximum == 3
    assert encoding.encodingLimits.kspace_encoding_step_2.center == 2


def test_partial_fourier_skips_the_first_lines_and_keeps_the_centre() -> None:
    spec = PhantomSpec(matrix=32, coils=2, partial_fourier=0.75)
    lines = [idx(a, "kspace_encode_step_1") for a in acquisitions(spec)]
    assert lines == list(range(8, 32))
    limits = ismrmrd.xsd.CreateFromDocument(header_xml(spec)).encoding[0].encodingLimits
    assert (limits.kspace_encoding_step_1.minimum, limits.kspace_encoding_step_1.center) == (8, 16)


def test_asymmetric_echo_skips_the_first_samples() -> None:
    """The readout keeps its last 5/8 samples; ``center_sample`` points at the k-space centre
    within them, and the samples are those of the full readout (same seed)."""
    spec = PhantomSpec(matrix=32, coils=2, asymmetric_echo=0.625)
    full = acquisitions(PhantomSpec(matrix=32, coils=2))
    short = acquisitions(spec)
    assert len(short) == len(full)
    for a, b in zip(short, full, strict=True):
        assert int(a.head["number_of_samples"]) == 40 and int(a.head["center_sample"]) == 8
        assert np.array_equal(a.data, b.data[:, 24:])
    limits = ismrmrd.xsd.CreateFromDocument(header_xml(spec)).encoding[0].encodingLimits
    assert limits.kspace_encoding_step_0.minimum == 24


def test_caipirinha_shifts_the_pattern_of_each_acquired_partition() -> None:
    """2 x 2 with shift 1: acquired partitions every 2nd, their k1 pattern moving by one line
    from one acquired partition to the next (a sheared lattice), calibration block aside."""
    spec = PhantomSpec(
        matrix=16, coils=2, partitions=8, acceleration=2, acceleration_2=2, caipi_shift=1
    )
    sampled = {(idx(a, "kspace_encode_step_2"), idx(a, "kspace_encode_step_1"))
               for a in acquisitions(spec)}  # fmt: skip
    expected = {(kz, ky) for kz in range(0, 8, 2) for ky in range(16)
                if (ky - 8 - (kz - 4) // 2) % 2 == 0}  # fmt: skip
    assert sampled == expected


def test_header_describes_the_scan() -> None:
    spec = PhantomSpec(matrix=64, coils=12, oversampling=2, slices=5, contrasts=2, repetitions=3)
    header = ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    encoding = header.encoding[0]
    assert (encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.y) == (128, 64)
    assert (encoding.reconSpace.matrixSize.x, encoding.reconSpace.matrixSize.y) == (64, 64)
    assert encoding.encodedSpace.fieldOfView_mm.x == 2 * encoding.reconSpace.fieldOfView_mm.x
    limits = encoding.encodingLimits
    assert limits.slice.maximum == 4 and limits.contrast.maximum == 1
    assert limits.repetition.maximum == 2 and limits.kspace_encoding_step_1.center == 32
    assert header.acquisitionSystemInformation.receiverChannels == 12
    assert len(header.sequenceParameters.TE) == 2
    assert header.experimentalConditions.H1resonanceFrequency_Hz > 0


def test_acquisition_geometry() -> None:
    spec = PhantomSpec(matrix=16, coils=3, slices=2)
    acqs = acquisitions(spec)
    a = acqs[0]
    assert int(a.head["number_of_samples"]) == 32 and int(a.head["active_channels"]) == 3
    assert int(a.head["center_sample"]) == 16 and int(a.head["channel_mask"][0]) == 0b111
    positions = {idx(a, "slice"): float(a.head["position"][2]) for a in acqs}
    assert positions[1] - positions[0] == pytest.approx(6.0)  # one slice thickness apart
    np.testing.assert_array_equal(a.head["slice_dir"], [0, 0, 1])


def test_same_seed_same_bytes_other_seed_other_noise() -> None:
    def stream(seed: int) -> bytes:
        sink = io.BytesIO()
        write_stream(PhantomSpec(matrix=16, coils=2, seed=seed), sink)
        return sink.getvalue()

    assert stream(1) == stream(1)
    assert stream(1) != stream(2)


def test_stream_reads_in_ismrmrd_python() -> None:
    spec = PhantomSpec(
        matrix=16, coils=3, noise_calibration=True, slices=2, kspace_coordinates=True
    )
    sink = io.BytesIO()
    write_stream(spec, sink)
    ours = acquisitions(spec)
    sink.seek(0)
    theirs = list(ismrmrd.ProtocolDeserializer(sink).deserialize())
    assert isinstance(theirs[0], ismrmrd.xsd.ismrmrdHeader)
    assert ismrmrd.xsd.ToXML(theirs[0]) == ismrmrd.xsd.ToXML(
        ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    )
    theirs_acq = theirs[1:]
    assert len(theirs_acq) == len(ours)
    for mine, other in zip(ours, theirs_acq, strict=True):
        assert isinstance(other, ismrmrd.Acquisition)
        np.testing.assert_array_equal(other.data, mine.data)
        np.testing.assert_array_equal(other.traj, mine.traj)
        assert other.flags == int(mine.head["flags"])
        assert other.idx.slice == idx(mine, "slice")
    # our reader agrees, and the stream ends with CLOSE (message id 4)
    sink.seek(0)
    messages = list(StreamReader(sink))
    assert isinstance(messages[0], Header) and messages[1:] == ours
    assert sink.getvalue()[-2:] == encode_message(Close())


def test_hdf5_reads_in_ismrmrd_python(tmp_path: Path) -> None:
    spec = PhantomSpec(matrix=16, coils=4, noise_calibration=True, acceleration=2,
                       calibration_width=4, contrasts=2, kspace_coordinates=True)  # fmt: skip
    path = tmp_path / "phantom.h5"
    write_hdf5(spec, path, group="scan")
    dataset = ismrmrd.Dataset(str(path), "scan", create_if_needed=False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
        assert header.encoding[0].encodedSpace.matrixSize.x == 32
        ours = acquisitions(spec)
        assert dataset.number_of_acquisitions() == len(ours)
        for i, mine in enumerate(ours):
            theirs = dataset.read_acquisition(i)
            np.testing.assert_array_equal(theirs.data, mine.data)
            np.testing.assert_array_equal(theirs.traj, mine.traj)
            assert theirs.flags == int(mine.head["flags"])
            assert theirs.scan_counter == int(mine.head["scan_counter"])
            assert theirs.idx.kspace_encode_step_1 == idx(mine, "kspace_encode_step_1")
            assert theirs.idx.contrast == idx(mine, "contrast")
    finally:
        dataset.close()


def test_same_scan_layout_as_the_cxx_generator(golden: Path) -> None:
    """``-m 128 -c 8 -C`` matches ismrmrd_generate_cartesian_shepp_logan's file in layout."""
    cxx = ismrmrd.Dataset(str(golden / "phantom_m128_c8_noise.h5"), "dataset", False)
    try:
        theirs_header = ismrmrd.xsd.CreateFromDocument(cxx.read_xml_header())
        theirs = [cxx.read_acquisition(i) for i in range(cxx.number_of_acquisitions())]
    finally:
        cxx.close()
    spec = PhantomSpec(matrix=128, coils=8, noise_calibration=True)
    ours = acquisitions(spec)
    header = ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    for space in ("encodedSpace", "reconSpace"):
        assert getattr(header.encoding[0], space) == getattr(theirs_header.encoding[0], space)
    limits, theirs_limits = (h.encoding[0].encodingLimits for h in (header, theirs_header))
    assert limits.kspace_encoding_step_1 == theirs_limits.kspace_encoding_step_1
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert int(mine.head["number_of_samples"]) == other.number_of_samples
        assert int(mine.head["active_channels"]) == other.active_channels
        assert float(mine.head["sample_time_us"]) == other.sample_time_us
        for name in ("noise", "first_in_slice", "last_in_slice"):
            assert has(mine, name) == bool(other.flags & (1 << (FLAG_BITS[name] - 1))), name
        if not has(mine, "noise"):
            assert idx(mine, "kspace_encode_step_1") == other.idx.kspace_encode_step_1
            assert int(mine.head["center_sample"]) == other.center_sample


def test_hdf5_converts_to_the_same_stream(tmp_path: Path) -> None:
    """Our HDF5 file through mrdhdf5_to_stream gives the bytes write_stream writes."""
    spec = PhantomSpec(matrix=16, coils=2, slices=2, contrasts=2, noise_calibration=True)
    path = tmp_path / "raw.h5"
    write_hdf5(spec, path)
    direct = io.BytesIO()
    write_stream(spec, direct)
    assert run_cli("mrdhdf5_to_stream", str(path)).stdout == direct.getvalue()


# --- CLI ------------------------------------------------------------------------------------


def test_cli_streams_to_stdout_the_same_bytes_as_the_api() -> None:
    proc = run_cli("mrd_phantom", "-m", "16", "-c", "2", "-s", "2", "-C", "--seed", "5", "-o", "-")
    sink = io.BytesIO()
    write_stream(PhantomSpec(matrix=16, coils=2, slices=2, noise_calibration=True, seed=5), sink)
    assert proc.stdout == sink.getvalue()
    assert proc.stderr == b""


def test_cli_stream_to_a_file_and_hdf5_group_replaced(tmp_path: Path) -> None:
    stream = tmp_path / "raw.bin"
    run_cli("mrd_phantom", "-m", "16", "-c", "2", "--stream", "-o", str(stream))
    direct = io.BytesIO()
    write_stream(PhantomSpec(matrix=16, coils=2), direct)
    assert stream.read_bytes() == direct.getvalue()

    h5 = tmp_path / "raw.h5"
    write_hdf5(PhantomSpec(matrix=16, coils=2), h5, group="kept")
    write_hdf5(PhantomSpec(matrix=16, coils=2), h5, group="old")
    assert phantom_main(["-m", "8", "-c", "2", "-a", "2", "-o", str(h5), "-d", "old"]) == 0
    with h5py.File(h5, "r") as handle:
        assert sorted(handle) == ["kept", "old"]
        assert len(handle["kept/data"]) == 16
        assert len(handle["old/data"]) == 4  # the new scan only, not appended to the old one


def test_cli_writes_hdf5_via_umbrella(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    run_cli("parallel-recon", "phantom", "-m", "16", "-c", "2", "-a", "2", "-w", "4",
            "-r", "2", "-o", str(path), "-d", "d1")  # fmt: skip
    dataset = ismrmrd.Dataset(str(path), "d1", create_if_needed=False)
    try:
        expected = acquisitions(
            PhantomSpec(matrix=16, coils=2, acceleration=2, calibration_width=4, repetitions=2)
        )
        assert dataset.number_of_acquisitions() == len(expected)
    finally:
        dataset.close()


@pytest.mark.parametrize(
    ("args", "needle", "status"),
    [
        (["-m", "15"], "matrix must be even", 2),
        (["-m", "4"], "matrix must be an integer in [8,", 2),
        (["-c", "0"], "coils", 2),
        (["-a", "40", "-m", "16"], "acceleration", 2),
        (["--partial-fourier", "0.3"], "--partial-fourier", 2),
        (["--asymmetric-echo", "0.5"], "--asymmetric-echo", 2),
        (["-p", "8", "-a", "2", "--caipi-shift", "1"], "--caipi-shift needs --acceleration-2", 2),
        (["-p", "8", "-a", "2", "--acceleration-2", "2", "--caipi-shift", "2"], "--caipi-shift", 2),
        (["--trajectory", "radial", "--asymmetric-echo", "0.7"], "Cartesian scans only", 2),
        (["-n", "-1"], "-n/--noise-level", 2),
        (["-m", "abc"], "invalid int value", 2),
        (["--no-such-option"], "unrecognized arguments", 2),
    ],
)
def test_cli_bad_options_give_one_line(
    args: list[str], needle: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value out of range and an option argparse cannot parse are both usage errors (2),
    named by the option as the user typed it."""
    try:
        code = phantom_main([*args, "-o", "-"])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == status
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mrd_phantom: error:") and needle in lines[0]


def test_cli_bad_option_as_a_process() -> None:
    proc = run_cli("mrd_phantom", "-m", "15", "-o", "-", check=False)
    assert proc.returncode == 2 and proc.stdout == b""  # a usage error, naming the option
    assert proc.stderr.decode().splitlines() == [
        "mrd_phantom: error: -m/--matrix must be even, got 15"
    ]


def test_cli_unwritable_output_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("mrd_phantom", "-m", "16", "-o", str(tmp_path / "missing" / "x.h5"), check=False)
    assert proc.returncode == 1, proc.stderr.decode()
    assert proc.stderr.decode() == (
        f"mrd_phantom: error: cannot write {str(tmp_path / 'missing' / 'x.h5')!r}: "
        f"folder {str(tmp_path / 'missing')!r} does not exist\n"
    )


def test_cli_progress_only_when_asked() -> None:
    quiet = run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", "-")
    loud = run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", "-", "--progress")
    assert quiet.stderr == b""
    assert b"acquisitions" in loud.stderr
    assert loud.stdout == quiet.stdout

"""Radial and spiral streams through ``mrd_stream_recon``: accuracy, units, parallel bytes.

The yardstick is the non-Cartesian ground truth of the phantom (its analytic spectrum on the
Cartesian grid, kept inside the disc the trajectory covers); samples come from the same
analytic spectrum at the trajectory points, never from a NUFFT.  The numbers each test
measured are printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import run_cli, script, shared_data_dir
from noncartesian_helpers import history, nrmse, phantom_stream, recon, rewrite_acquisitions
from stream_feeding import first_image_before_the_rest

from parallel_recon.phantom import PhantomSpec, ground_truth, iter_messages
from parallel_recon.phantom.analytic import coil_spectrum
from parallel_recon.phantom.header import FOV_MM
from parallel_recon.protocol import (
    Acquisition,
    Header,
    Image,
    StreamReader,
    StreamWriter,
    encode_message,
)

MATRIX = 128
"""Accuracy is measured at 128 pixels (at 64 the phantom's small ellipses are a pixel or two
and the disc-limited truth itself is a poor image)."""


@pytest.mark.parametrize("coils", [1, 8])
@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_fully_sampled_accuracy_against_the_non_cartesian_ground_truth(
    trajectory: str, coils: int
) -> None:
    spec = dict(matrix=MATRIX, coils=coils, trajectory=trajectory)
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))[0]
    (gridding,), _ = recon(stream)
    (cg,), _ = recon(stream, "--recon-option", "method=cg")
    errors = (nrmse(gridding.data[0, 0], truth), nrmse(cg.data[0, 0], truth))
    print(f"{trajectory} {coils} coils: gridding {errors[0]:.4f}, cg {errors[1]:.4f}")
    assert errors[0] <= 0.05 and errors[1] <= 0.02, errors
    assert gridding.data.shape == cg.data.shape == (1, 1, MATRIX, MATRIX)
    steps = [history(gridding), history(cg)]
    assert steps == [["NUFFT", "GRIDDING", "RSS"], ["NUFFT", "CG", "RSS"]]


def test_radial_with_a_quarter_of_the_spokes_cg_beats_gridding() -> None:
    spokes = math.ceil(math.pi / 2 * MATRIX / 4)
    spec = dict(matrix=MATRIX, coils=8, trajectory="radial", spokes=spokes)
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))[0]
    (gridding,), _ = recon(stream, "--recon", "nufft")  # auto: SENSE for undersampled data
    (cg,), _ = recon(stream, "--recon-option", "method=cg")
    errors = (nrmse(gridding.data[0, 0], truth), nrmse(cg.data[0, 0], truth))
    print(f"radial {spokes} spokes: gridding {errors[0]:.4f}, cg {errors[1]:.4f}")
    assert errors[1] < errors[0], errors


# ------------------------------------------------------------ unit conventions
PIXEL_M = FOV_MM / 1000 / 64
CONVENTIONS = {
    "grid": 64.0,
    "per_m": 1 / PIXEL_M,
    "rad_per_m": 2 * math.pi / PIXEL_M,
}
"""Cycles per pixel -> each convention, for the 64-pixel, 300 mm phantom (computed here)."""


@pytest.fixture(scope="module")
def unit_base() -> tuple[bytes, np.ndarray]:
    stream = phantom_stream(matrix=64, coils=4, trajectory="radial", noise_level=0.05)
    (image,), _ = recon(stream)
    return stream, image.data


def _scaled(stream: bytes, factor: float) -> bytes:
    def change(acq: ismrmrd.Acquisition) -> None:
        acq.traj[:] = acq.traj * np.float32(factor)

    return rewrite_acquisitions(stream, change)


@pytest.mark.parametrize("units", sorted(CONVENTIONS))
@pytest.mark.parametrize("forced", [False, True])
def test_every_unit_convention_gives_the_same_image(
    unit_base: tuple[bytes, np.ndarray], units: str, forced: bool
) -> None:
    stream, base = unit_base
    option = ["--recon-option", f"traj_units={units}"] if forced else []
    (image,), _ = recon(_scaled(stream, CONVENTIONS[units]), *option)
    difference = float(np.abs(image.data - base).max() / np.abs(base).max())
    print(f"{units} ({'forced' if forced else 'detected'}): max difference {difference:.2e}")
    assert difference <= 1e-4


@pytest.mark.parametrize("trajectory", ["radial", "goldenangle"])
def test_radial_without_stored_trajectories_gets_spokes_from_the_encode_steps(
    trajectory: str,
) -> None:
    stream = phantom_stream(matrix=64, coils=2, trajectory=trajectory, noise_level=0.05)
    (stored,), _ = recon(stream)

    def strip(acq: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
        head = acq.getHead()
        head.trajectory_dimensions = 0
        bare = ismrmrd.Acquisition(head)
        bare.data[:] = acq.data
        return bare

    (made,), _ = recon(rewrite_acquisitions(stream, strip))
    difference = float(np.abs(made.data - stored.data).max() / np.abs(stored.data).max())
    assert difference <= 1e-4, difference


# ------------------------------------------------------------- the engine
def test_any_worker_count_gives_the_same_bytes() -> None:
    stream = phantom_stream(
        matrix=48, coils=4, trajectory="spiral", slices=3, repetitions=2,
        noise_level=0.05, noise_calibration=True, noise_correlation=0.3,
    )  # fmt: skip
    outputs = {workers: recon(stream, workers=workers)[1] for workers in (1, 2, 3, 4)}
    assert len(set(outputs.values())) == 1
    images = [m for m in StreamReader(io.BytesIO(outputs[1])) if isinstance(m, Image)]
    assert [(i.head["slice"], i.head["repetition"]) for i in images] == [
        (0, 0), (2, 0), (1, 0), (0, 1), (2, 1), (1, 1)
    ]  # fmt: skip
    cg = {w: recon(stream, "--recon-option", "method=cg", workers=w)[1] for w in (1, 3)}
    assert cg[1] == cg[3]


def test_the_first_image_leaves_before_the_stream_ends() -> None:
    """The first radial image arrives while stdin is open and later repetitions unsent."""
    spec = PhantomSpec(matrix=64, coils=4, trajectory="radial", repetitions=6, noise_level=0.0)
    chunks: list[bytes] = []
    repetition = -1
    for message in iter_messages(spec):
        if isinstance(message, Header):
            chunks.append(encode_message(message))
            continue
        assert isinstance(message, Acquisition)
        if int(message.head["idx"]["repetition"]) != repetition:
            repetition = int(message.head["idx"]["repetition"])
            chunks.append(b"")
        chunks[-1] += encode_message(message)
    chunks.append(b"\x04\x00")  # CLOSE
    argv = [script("mrd_stream_recon"), "--workers", "2"]
    # header and repetition 0 sent, stdin open, repetitions 1..5 held back until an image
    fed = first_image_before_the_rest(
        argv, b"".join(chunks[:2]), b"".join(chunks[2:]), len(chunks[0])
    )
    assert fed.returncode == 0, fed.stderr.decode()
    images = [m for m in StreamReader(io.BytesIO(fed.output)) if isinstance(m, Image)]
    assert len(images) == 6


def test_averages_land_as_extra_readouts() -> None:
    (single,), _ = recon(phantom_stream(matrix=48, coils=2, trajectory="radial"))
    (double,), _ = recon(phantom_stream(matrix=48, coils=2, trajectory="radial", averages=2))
    assert nrmse(double.data, single.data) < 1e-4


# ----------------------------------------------------------- 3D and stacks
def test_stack_of_stars_transforms_kz_then_each_partition() -> None:
    spec = dict(matrix=64, coils=2, trajectory="radial", partitions=4)
    (image,), _ = recon(phantom_stream(**spec))
    truth = ground_truth(PhantomSpec(**spec))
    assert image.data.shape == (1, 4, 64, 64)
    errors = [nrmse(image.data[0, p], truth[p]) for p in range(4)]
    print("stack of stars, per partition:", [f"{e:.4f}" for e in errors])
    assert max(errors) <= 0.05


def _rotated_stack_stream(matrix: int, partitions: int) -> tuple[bytes, np.ndarray]:
    """A stack of golden-angle stars whose spokes turn with the partition (no two partitions
    share a trajectory), samples from the analytic spectrum, Cartesian DFT along kz."""
    from parallel_recon.phantom.scan import slice_depth

    spec = PhantomSpec(matrix=matrix, coils=1, trajectory="goldenangle", partitions=partitions)
    messages = list(iter_messages(spec))
    header = messages[0]
    acquisitions = [m for m in messages if isinstance(m, Acquisition)]
    samples = matrix * 2
    radius = (np.arange(samples) - samples / 2) / samples
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(header)
        for number, acq in enumerate(acquisitions):
            kz = int(acq.head["idx"]["kspace_encode_step_2"])
            angle = math.radians(number * 111.246 + 7.0 * kz)
            kx, ky = radius * math.cos(angle), radius * math.sin(angle)
            data = np.zeros(samples, np.complex128)
            for p in range(partitions):
                depth = slice_depth(spec, 0, p)
                weight = np.exp(
                    -2j * np.pi * (kz - partitions // 2) * (p - partitions // 2) / partitions
                )
                data += weight * coil_spectrum(kx, ky, matrix, 1, depth)[0] / math.sqrt(partitions)
            traj = np.stack([kx, ky, np.full(samples, (kz - partitions // 2) / partitions)], 1)
            writer.write(Acquisition.from_arrays(data[None].astype(np.complex64), traj, acq.head))
    return sink.getvalue(), ground_truth(spec)


def test_a_stack_whose_partitions_turn_goes_through_a_3d_nufft() -> None:
    """As good, partition by partition, as the same golden-angle stars in 2D."""
    stream, truth = _rotated_stack_stream(64, 4)
    (image,), _ = recon(stream)
    errors = [nrmse(image.data[0, p], truth[p]) for p in range(4)]
    flat = dict(matrix=64, coils=1, trajectory="goldenangle")
    (plane,), _ = recon(phantom_stream(**flat))
    baseline = nrmse(plane.data[0, 0], ground_truth(PhantomSpec(**flat))[0])
    print(f"rotating stack, per partition: {[f'{e:.4f}' for e in errors]}; 2D: {baseline:.4f}")
    assert max(errors) <= 1.2 * baseline


def _kooshball_stream(matrix: int) -> tuple[bytes, np.ndarray]:
    """3D radial: spokes through the centre on a spiral over the sphere; the object is a
    Gaussian blob off the centre (its spectrum is analytic: no NUFFT in the samples)."""
    header_spec = PhantomSpec(matrix=matrix, coils=1, trajectory="radial", partitions=matrix)
    header = next(iter(iter_messages(header_spec)))
    assert isinstance(header, Header)
    spokes = int(math.pi / 2 * matrix * matrix)
    samples = matrix * 2
    index = np.arange(spokes) + 0.5
    polar = np.arccos(1 - index / spokes)  # a hemisphere: spokes go both ways
    azimuth = math.pi * (1 + 5**0.5) * index
    directions = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], 1
    )
    radius = (np.arange(samples) - samples / 2) / samples
    width, centre = 2.5, np.array([3.0, -2.0, 4.0])  # pixels; (x, y, z)
    grid = np.arange(matrix) - matrix // 2
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    blob = np.exp(
        -((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * width**2)
    )
    sink = io.BytesIO()
    template = next(m for m in iter_messages(header_spec) if isinstance(m, Acquisition))
    with StreamWriter(sink) as writer:
        writer.write(header)
        for number, direction in enumerate(directions):
            k = radius[:, None] * direction[None, :]
            spectrum = (2 * math.pi * width**2) ** 1.5 * np.exp(
                -2 * math.pi**2 * width**2 * (k**2).sum(1)
            )
            spectrum = spectrum * np.exp(-2j * np.pi * k @ centre) / matrix**1.5
            head = template.head.copy()
            head["idx"]["kspace_encode_step_1"] = number % 65536
            head["idx"]["kspace_encode_step_2"] = 0
            head["flags"] = (1 << 7) if number == spokes - 1 else 0
            writer.write(Acquisition.from_arrays(spectrum[None].astype(np.complex64), k, head))
    return sink.getvalue(), blob


def test_3d_radial_goes_through_a_3d_nufft() -> None:
    stream, blob = _kooshball_stream(24)
    (image,), _ = recon(stream, "--recon-option", "unit_samples=200000")
    assert image.data.shape == (1, 24, 24, 24)
    error = nrmse(image.data[0], blob)
    print(f"3D radial Gaussian: {error:.4f}")
    assert error <= 0.05


# ------------------------------------------------------- coils and outputs
def test_adaptive_combination_and_coil_channels() -> None:
    spec = dict(matrix=64, coils=4, trajectory="spiral")
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))[0]
    (adaptive,), _ = recon(stream, "--image-type", "complex", "--recon-option", "combine=adaptive")
    assert adaptive.data.dtype == np.complex64 and adaptive.data.shape == (1, 1, 64, 64)
    assert nrmse(np.abs(adaptive.data[0, 0]), truth) <= 0.06
    assert history(adaptive) == ["NUFFT", "GRIDDING", "ADAPTIVE"]
    (channels,), _ = recon(stream, "--recon-option", "coils=channels")
    assert channels.data.shape == (4, 1, 64, 64)
    combined = np.sqrt((channels.data.astype(np.float64) ** 2).sum(axis=0))[0]
    assert nrmse(combined, truth) <= 0.06


# ------------------------------------------------------------- real data
def _jemris() -> bytes:
    path = shared_data_dir() / "jemris_spiral_slc90.h5"
    return run_cli("mrdhdf5_to_stream", str(path)).stdout


def test_the_jemris_spiral_is_read_in_grid_units() -> None:
    stream = _jemris()
    (image,), detected = recon(stream)
    _, forced = recon(stream, "--recon-option", "traj_units=grid")
    assert detected == forced
    assert image.data.shape == (1, 1, 220, 220)
    data = image.data[0, 0]
    centre, corner = data[80:140, 80:140].mean(), data[:20, :20].mean()
    assert centre > 5 * corner  # a head in the middle of the field of view


# ------------------------------------------------------------ user kernels
USER_KERNEL = """
import numpy as np
from parallel_recon.protocol import ImageType
from parallel_recon.workers.image_header import make_image

DATA = ("noncartesian",)


def reconstruct(kspace, context):
    traj = context.trajectory
    facts = [*kspace.shape, *traj.shape, float(np.abs(traj).max()), float(traj.dtype.itemsize)]
    data = np.array(facts, np.float32).reshape(1, 1, 1, -1)
    return [make_image(data, context, ImageType.MAGNITUDE, ("USER",))]
"""


def test_a_user_kernel_that_declares_non_cartesian_data_gets_readouts_and_trajectories(
    tmp_path: Path,
) -> None:
    kernel = tmp_path / "readouts.py"
    kernel.write_text(USER_KERNEL)
    stream = phantom_stream(matrix=32, coils=3, trajectory="spiral", spokes=3)
    (image,), _ = recon(stream, "--recon", str(kernel))
    readouts, coils, samples, r, s, dims, largest, itemsize = image.data.ravel().tolist()
    assert (readouts, coils, r, dims, itemsize) == (3, 3, 3, 2, 4) and samples == s > 100
    assert 0.49 < largest <= 0.5  # cycles per pixel: the spiral ends at the edge of the grid


def test_a_user_kernel_without_data_declaration_takes_cartesian_units_only(tmp_path: Path) -> None:
    kernel = tmp_path / "plain.py"
    kernel.write_text("def reconstruct(kspace, context):\n    return []\n")
    stream = phantom_stream(matrix=32, coils=2, trajectory="radial", spokes=4)
    proc = run_cli("mrd_stream_recon", "--recon", str(kernel), input=stream, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert (
        "encoding 0 has a radial trajectory: the plain.py kernel reconstructs Cartesian" in lines[0]
    )
    assert "--recon nufft" in lines[0]


def test_a_header_mixing_cartesian_and_radial_encodings_is_refused() -> None:
    from parallel_recon.engine.kernels import check_trajectories
    from parallel_recon.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"mixes Cartesian and non-Cartesian encodings"):
        check_trajectories("auto", ["cartesian", "radial"], non_cartesian=True)


def test_the_nufft_kernel_reconstructs_a_cartesian_scan_from_its_stored_trajectories() -> None:
    """``--recon nufft`` on the Cartesian phantom written with ``-k`` (cycles per pixel,
    covering the square): the unit rule detects them, and the image is the Cartesian one."""
    stream = phantom_stream(matrix=32, coils=2, kspace_coordinates=True)
    (cartesian,), _ = recon(stream, "--recon", "cartesian")
    (gridding,), _ = recon(stream, "--recon", "nufft")
    (cg,), _ = recon(stream, "--recon", "nufft", "--recon-option", "method=cg")
    assert gridding.data.shape == cg.data.shape == cartesian.data.shape == (1, 1, 32, 32)
    errors = (nrmse(gridding.data, cartesian.data), nrmse(cg.data, cartesian.data))
    print(f"Cartesian samples through the NUFFT: gridding {errors[0]:.4f}, cg {errors[1]:.4f}")
    assert errors[0] < 0.06 and errors[1] < 0.01

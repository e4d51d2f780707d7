"""Non-Cartesian SENSE in the engine: accuracy against the ground truth beside gridding and CG,
``--recon auto``'s choice, every option of the NUFFT kernel, every unit layout, the same bytes
for any worker count, and the first image while the stream still arrives.

The yardstick is the phantom's non-Cartesian ground truth (its analytic spectrum on the grid,
inside the disc the trajectory covers); samples come from the analytic spectrum at the
trajectory points, never from a NUFFT.  Numbers are printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import math

import ismrmrd
import numpy as np
import pytest
from accelerated_helpers import chunks_by_repetition, images
from conftest import run_cli, script
from noncartesian_helpers import nrmse, phantom_stream, recon
from stream_feeding import first_image_before_the_rest
from test_noncartesian_recon import _kooshball_stream, _rotated_stack_stream

from parallel_recon.phantom import PhantomSpec, ground_truth, iter_messages
from parallel_recon.protocol import encode_message

RADIAL_FULL = math.ceil(math.pi / 2 * 128)


def _errors(spec: dict[str, object], *kernels: tuple[str, ...]) -> list[float]:
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))[0]  # type: ignore[arg-type]
    return [nrmse(recon(stream, *args)[0][0].data[0, 0], truth) for args in kernels]


KERNELS = (
    ("--recon", "nufft"),
    ("--recon", "nufft", "--recon-option", "method=cg"),
    ("--recon", "sense"),
)


@pytest.mark.parametrize("coils", [8, 4])
def test_a_quarter_of_the_spokes_sense_beats_gridding_clearly(coils: int) -> None:
    """Radial, 128 matrix, a quarter of the Nyquist spokes (51): SENSE at most half of
    gridding's error, and below CG's (the same least squares without coil maps)."""
    spec = dict(matrix=128, coils=coils, trajectory="radial", spokes=math.ceil(RADIAL_FULL / 4))
    gridding, cg, sense = _errors(spec, *KERNELS)
    print(f"radial 51 spokes, {coils} coils: gridding {gridding:.4f}, cg {cg:.4f}, "
          f"sense {sense:.4f}")  # fmt: skip
    assert sense <= 0.5 * gridding and sense < cg
    assert sense <= (0.07 if coils == 8 else 0.12)


@pytest.mark.parametrize(
    "trajectory, readouts, bound",
    [("radial", RADIAL_FULL // 2, 0.03), ("radial", RADIAL_FULL, 0.03), ("spiral", 8, 0.2)],
)
def test_sense_beside_gridding_and_cg(trajectory: str, readouts: int, bound: float) -> None:
    """Half the radial spokes, all of them, and half of the spiral's interleaves (a uniform
    spiral below Nyquist: its centre is as undersampled as its edge, so its maps come from a
    least-squares calibration image and are worse than radial's)."""
    spec = dict(matrix=128, coils=8, trajectory=trajectory, spokes=readouts)
    gridding, cg, sense = _errors(spec, *KERNELS)
    print(f"{trajectory} {readouts} readouts: gridding {gridding:.4f}, cg {cg:.4f}, "
          f"sense {sense:.4f}")  # fmt: skip
    assert sense <= bound
    if readouts < (RADIAL_FULL if trajectory == "radial" else 16):
        assert sense < 0.5 * min(gridding, cg)


def _profile(stream: bytes, *args: str) -> str:
    proc = run_cli("mrd_stream_recon", "--profile", *args, input=stream)
    lines = [line for line in proc.stderr.decode().splitlines() if "--recon auto:" in line]
    assert len(lines) == 1, proc.stderr.decode()
    return lines[0]


@pytest.mark.parametrize(
    "trajectory, readouts, expected",
    [
        ("radial", 101, "1 x nufft: gridding, readouts 0.92/FOV apart at the edge (fully "
                        "sampled: <= 1.05/FOV)"),
        ("radial", 50, "1 x sense: radial readouts 1.9/FOV apart at the edge (undersampled: > "
                       "1.05/FOV), espirit maps"),
        ("goldenangle", 26, "1 x sense: goldenangle readouts 3.6/FOV apart at the edge (under"),
        ("spiral", 8, "1 x nufft: gridding, readouts 0.71/FOV apart at the edge (fully"),
        ("spiral", 4, "1 x sense: spiral readouts 1.4/FOV apart at the edge (undersampled: > "
                      "1.05/FOV), espirit maps (calibration by least squares: centre "
                      "undersampled)"),
    ],
)  # fmt: skip
def test_auto_picks_sense_for_undersampled_readouts_only(
    trajectory: str, readouts: int, expected: str
) -> None:
    """The rule: SENSE when neighbouring readouts are more than 1.05/FOV apart in the outer
    fifth of the covered disc (a 64 matrix: 101 spokes are Nyquist, 8 interleaves the
    phantom's full spiral)."""
    stream = phantom_stream(matrix=64, coils=4, trajectory=trajectory, spokes=readouts)
    assert expected in _profile(stream)


def test_options_only_the_nufft_kernel_has_keep_auto_there() -> None:
    stream = phantom_stream(matrix=64, coils=4, trajectory="radial", spokes=26)
    line = _profile(stream, "--recon-option", "method=cg")
    assert "1 x nufft: cg, readouts 3.6/FOV apart at the edge (undersampled: > 1.05/FOV)" in line
    (image,), _ = recon(stream, "--recon-option", "coils=channels")
    assert image.data.shape == (4, 1, 64, 64)


# ------------------------------------------------------- options of the NUFFT kernel
def _one_error_line(stream: bytes, *args: str, status: int) -> str:
    proc = run_cli("mrd_stream_recon", "--workers", "2", *args, input=stream, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, lines)
    assert "Traceback" not in lines[0]
    return lines[0]


SYMMETRIC = "radial and spiral readouts cover k-space symmetrically: there is no partial-Fourier"


@pytest.mark.parametrize("option", ["partial_fourier=pocs", "pocs_iterations=5"])
def test_the_nufft_kernel_refuses_partial_fourier_as_a_usage_error(option: str) -> None:
    stream = phantom_stream(matrix=32, coils=2, trajectory="radial")
    line = _one_error_line(stream, "--recon", "nufft", "--recon-option", option, status=2)
    assert (
        f"--recon-option {option}: radial and spiral readouts cover k-space symmetrically" in line
    )


@pytest.mark.parametrize("kernel", ["sense", "auto"])
def test_sense_and_auto_refuse_partial_fourier_for_readouts(kernel: str) -> None:
    """Both accept it for Cartesian units, so the refusal comes with the first radial unit."""
    stream = phantom_stream(matrix=32, coils=2, trajectory="radial", spokes=12)
    args = ("--recon", kernel, "--recon-option", "partial_fourier=homodyne")
    line = _one_error_line(stream, *args, status=1)
    assert (
        "partial_fourier=homodyne: radial and spiral readouts cover k-space symmetrically" in line
    )


def _history(image: ismrmrd.Image) -> list[str]:
    return list(ismrmrd.Meta.deserialize(image.attribute_string)["ImageProcessingHistory"])


def _coil_maps_image(found: list[ismrmrd.Image]) -> np.ndarray:
    assert len(found) == 2 and found[1].image_series_index == found[0].image_series_index + 1
    meta = ismrmrd.Meta.deserialize(found[1].attribute_string)
    assert meta["DataRole"] == "CoilMaps"
    return found[1].data  # [coils, z, y, x]


def test_the_nufft_kernel_combines_with_espirit_maps_and_saves_them() -> None:
    """``maps=espirit`` (without ``combine=``) selects the adaptive combination with ESPIRiT
    maps of the gridded centre; ``save_maps=on`` returns them, zero in the background where
    the adaptive maps are not."""
    spec = dict(matrix=64, coils=4, trajectory="spiral")
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))[0]  # type: ignore[arg-type]
    proc = run_cli("mrd_stream_recon", "--recon", "nufft", "--image-type", "complex",
                   "--recon-option", "maps=espirit", "--recon-option", "save_maps=on",
                   input=stream)  # fmt: skip
    found = images(proc.stdout)
    espirit = _coil_maps_image(found)
    assert _history(found[0]) == ["NUFFT", "GRIDDING", "ESPIRIT"]
    assert nrmse(np.abs(found[0].data[0, 0]), truth) <= 0.06
    adaptive = _coil_maps_image(images(run_cli(
        "mrd_stream_recon", "--recon", "nufft", "--recon-option", "save_maps=on", input=stream
    ).stdout))  # fmt: skip
    corner = (slice(None), 0, slice(0, 4), slice(0, 4))
    assert espirit.shape == adaptive.shape == (4, 1, 64, 64)
    assert np.abs(espirit[corner]).max() == 0 and np.abs(adaptive[corner]).max() > 0
    inside = truth > 0.1 * truth.max()
    norms = np.sqrt((np.abs(espirit[:, 0]) ** 2).sum(axis=0))
    assert np.allclose(norms[inside], 1, atol=1e-3)


# --------------------------------------------------------------- unit layouts
def test_a_stack_of_stars_with_a_quarter_of_the_spokes() -> None:
    """Partitions repeating one trajectory: kz transformed first, then one 2D SENSE per plane
    with maps made plane by plane."""
    spec = dict(matrix=64, coils=8, trajectory="radial", partitions=4, spokes=26)
    stream = phantom_stream(**spec)
    truth = ground_truth(PhantomSpec(**spec))  # type: ignore[arg-type]
    errors = {}
    for kernel in ("nufft", "sense"):
        (image,), _ = recon(stream, "--recon", kernel)
        assert image.data.shape == (1, 4, 64, 64)
        errors[kernel] = max(nrmse(image.data[0, p], truth[p]) for p in range(4))
    print(f"stack of stars, 26 spokes: worst partition gridding {errors['nufft']:.4f}, "
          f"sense {errors['sense']:.4f}")  # fmt: skip
    assert errors["sense"] <= 0.5 * errors["nufft"]


@pytest.mark.parametrize("layout", ["plane", "turning stack", "3D radial"])
def test_one_coil_without_crop_is_the_nufft_kernels_cg(layout: str) -> None:
    """With one coil ESPIRiT's map is 1 (crop 0 keeps every pixel): SENSE is then the NUFFT
    kernel's least squares, whatever the layout (the plumbing of grids, planes and depths)."""
    extra: tuple[str, ...] = ()
    if layout == "plane":
        stream = phantom_stream(matrix=48, coils=1, trajectory="radial", spokes=30)
    elif layout == "turning stack":
        stream, _ = _rotated_stack_stream(32, 4)
    else:
        stream, _ = _kooshball_stream(16)
        extra = ("--recon-option", "unit_samples=200000")
    common = (*extra, "--image-type", "complex", "--recon-option", "lambda=0",
              "--recon-option", "iterations=8")  # fmt: skip
    (cg,), _ = recon(stream, "--recon", "nufft", "--recon-option", "method=cg", *common)
    (sense,), _ = recon(stream, "--recon", "sense", "--recon-option", "crop=0", *common)
    assert sense.data.shape == cg.data.shape
    difference = float(np.abs(sense.data - cg.data).max() / np.abs(cg.data).max())
    assert difference <= 1e-4, difference


# ----------------------------------------------------------------- the engine
STREAM_SPEC = PhantomSpec(
    matrix=48, coils=4, trajectory="radial", spokes=19, slices=3, repetitions=2,
    noise_level=0.05, noise_calibration=True, noise_lines=16, noise_correlation=0.4,
)  # fmt: skip
"""A quarter of the spokes, 3 slices x 2 repetitions, a correlated noise scan (prewhitening)."""


@pytest.mark.parametrize(
    "args",
    [
        ("--recon", "sense", "--recon-option", "save_maps=on"),
        ("--recon", "auto",),
        ("--recon", "nufft", "--recon-option", "maps=espirit", "--recon-option", "save_maps=on"),
    ],
)  # fmt: skip
def test_same_bytes_for_one_to_four_workers(args: tuple[str, ...]) -> None:
    stream = b"".join(chunks_by_repetition(STREAM_SPEC))
    outputs = {
        workers: run_cli("mrd_stream_recon", "--workers", str(workers), *args, input=stream).stdout
        for workers in (1, 2, 3, 4)
    }
    assert len(images(outputs[1])) == (12 if "save_maps=on" in args else 6)
    assert all(out == outputs[1] for out in outputs.values())


def test_the_first_sense_image_leaves_before_the_stream_ends() -> None:
    """Header, noise scan and repetition 0 sent, stdin open, the rest held back: the first
    SENSE image must arrive before anything more is sent."""
    spec = PhantomSpec(matrix=48, coils=4, trajectory="radial", spokes=19, repetitions=4,
                       noise_calibration=True, noise_lines=16)  # fmt: skip
    chunks = chunks_by_repetition(spec)
    noise_scan = list(iter_messages(spec))[1 : 1 + spec.noise_lines]
    header = len(chunks[0]) - sum(len(encode_message(m)) for m in noise_scan)
    args = ["--recon", "sense", "--workers", "2"]
    fed = first_image_before_the_rest(
        [script("mrd_stream_recon"), *args], b"".join(chunks[:2]), b"".join(chunks[2:]), header
    )
    assert fed.returncode == 0, fed.stderr.decode()
    found = images(fed.output)
    assert len(found) == 4
    assert fed.output == run_cli("mrd_stream_recon", *args, input=b"".join(chunks)).stdout
    assert _history(found[0]) == ["ESPIRIT", "NUFFT", "SENSE"]

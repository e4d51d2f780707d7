"""``parallel-recon view``: PNG montages whose tiles equal the oracle's pixels after windowing.

The sources are read with ismrmrd-python (``Dataset``, ``ProtocolDeserializer``).  Where each
tile lies and which grey levels it must hold are computed here from the documented rules
(README, ``view``), never with the product's layout or windowing functions, so a wrong
window, log display or layout cannot cancel out.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import run_cli, shared_data_dir
from PIL import Image as PILImage

from parallel_recon.inspect.montage import kspace_display, window
from parallel_recon.protocol import Image, StreamWriter, new_image_head

SHARED = shared_data_dir()
NOISE_BIT = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)


def read_png(path: Path) -> np.ndarray:
    with PILImage.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.mode == "L"
        return np.asarray(picture).copy()


# The montage rules: tiles in reading order on a grid of ceil(sqrt(n)) columns; every cell
# as large as the largest tile, enlarged by an integer factor to about 128 pixels, under a
# 24-pixel label strip; 4 background pixels between cells and around; tiles centred across.
GAP, LABEL_STRIP, MIN_TILE = 4, 24, 128


def tile_corners(
    shapes: list[tuple[int, int]],
) -> tuple[tuple[int, int], int, list[tuple[int, int]]]:
    """((height, width) of the montage, enlargement, (row, column) of each tile's top-left)."""
    tallest, widest = max(r for r, _ in shapes), max(c for _, c in shapes)
    factor = max(1, MIN_TILE // max(tallest, widest))
    per_row = math.ceil(math.sqrt(len(shapes)))
    cell_height, cell_width = LABEL_STRIP + tallest * factor, widest * factor
    corners = []
    for i, (_, columns) in enumerate(shapes):
        top = GAP + (i // per_row) * (cell_height + GAP) + LABEL_STRIP
        left = GAP + (i % per_row) * (cell_width + GAP) + (cell_width - columns * factor) // 2
        corners.append((top, left))
    grid_rows = -(-len(shapes) // per_row)
    size = (GAP + grid_rows * (cell_height + GAP), GAP + per_row * (cell_width + GAP))
    return size, factor, corners


def assert_montage(png: np.ndarray, expected: list[np.ndarray]) -> None:
    """Size, non-constant pixels, and every tile equal to its expected grey levels."""
    size, factor, corners = tile_corners([tile.shape for tile in expected])  # type: ignore[misc]
    assert png.shape == size
    assert png.min() != png.max()
    for tile, (top, left) in zip(expected, corners, strict=True):
        enlarged = np.kron(tile, np.ones((factor, factor), np.uint8))
        rows, cols = enlarged.shape
        region = png[top : top + rows, left : left + cols]
        assert region.min() != region.max(), "tile is constant"
        np.testing.assert_array_equal(region, enlarged)


def grey_levels(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` .. ``high`` onto 0 .. 255, clipped, rounded to the nearest level."""
    return np.rint(np.clip((values - low) / (high - low) * 255.0, 0, 255)).astype(np.uint8)


def display_range(values: np.ndarray, image_type: int, meta: dict) -> tuple[float, float]:
    """The documented window: WindowCenter/WindowWidth when given; phase -pi..pi; real and
    imaginary parts symmetric about 0 (99.5th percentile of |v|); everything else from 0
    (or the minimum, when negative) to the 99.5th percentile."""
    if "WindowCenter" in meta and "WindowWidth" in meta:
        centre, width = float(meta["WindowCenter"]), float(meta["WindowWidth"])
        return centre - width / 2, centre + width / 2
    if image_type == ismrmrd.IMTYPE_PHASE:
        return -math.pi, math.pi
    if image_type in (ismrmrd.IMTYPE_REAL, ismrmrd.IMTYPE_IMAG):
        top = float(np.percentile(np.abs(values), 99.5))
        return -top, top
    return min(0.0, float(values.min())), float(np.percentile(values, 99.5))


def kspace_grey(kspace: np.ndarray) -> np.ndarray:
    """``log(1 + 1e4 |k| / max|k|)`` shown from 0 to its maximum."""
    logged = np.log1p(1e4 * np.abs(kspace) / np.abs(kspace).max())
    return grey_levels(logged, 0.0, float(logged.max()))


def view(tmp_path: Path, *args: str, input: bytes | None = None) -> np.ndarray:
    out = tmp_path / "montage.png"
    proc = run_cli("parallel-recon", "view", *args, "-o", str(out), input=input)
    assert b"Traceback" not in proc.stderr
    return read_png(out)


def image_planes(image: ismrmrd.Image) -> list[np.ndarray]:
    """One grey tile per (channel, z) plane, all planes of the image windowed together."""
    data = image.data
    if np.iscomplexobj(data):
        values = np.angle(data) if image.image_type == ismrmrd.IMTYPE_PHASE else np.abs(data)
    else:
        values = data.astype(np.float64)
    grey = grey_levels(values, *display_range(values, image.image_type, dict(image.meta)))
    return [grey[c, z] for c in range(grey.shape[0]) for z in range(grey.shape[1])]


def oracle_kspace(acquisitions: list[ismrmrd.Acquisition], coil: int) -> np.ndarray:
    imaging = [a for a in acquisitions if not a.flags & NOISE_BIT]
    rows = max(a.idx.kspace_encode_step_1 for a in imaging) + 1
    kspace = np.zeros((rows, max(a.number_of_samples for a in imaging)), np.complex64)
    for a in imaging:
        kspace[a.idx.kspace_encode_step_1, : a.number_of_samples] += a.data[coil]
    return kspace


def stream_items(data: bytes) -> list[object]:
    with ismrmrd.ProtocolDeserializer(io.BytesIO(data)) as reader:
        return list(reader.deserialize())


# ------------------------------------------------------------ the four sources
def test_view_raw_data_shows_kspace(tmp_path: Path) -> None:
    path = SHARED / "sirf_grappa2_1rep.h5"
    with ismrmrd.Dataset(str(path), "dataset", mode="r") as ds:
        acquisitions = [ds.read_acquisition(i) for i in range(ds.number_of_acquisitions())]
    for coil in (0, 3):
        png = view(tmp_path, str(path), "--coil", str(coil))
        assert_montage(png, [kspace_grey(oracle_kspace(acquisitions, coil))])


def test_view_kspace_of_a_stream(tmp_path: Path, golden: Path) -> None:
    data = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    acquisitions = [i for i in stream_items(data) if isinstance(i, ismrmrd.Acquisition)]
    png = view(tmp_path, "-", "--kspace", "--coil", "5", input=data)
    assert_montage(png, [kspace_grey(oracle_kspace(acquisitions, 5))])


def test_view_image_only_file(tmp_path: Path) -> None:
    path = SHARED / "viewer_image_only.h5"
    group = "2019-05-09 15:16:46"
    with ismrmrd.Dataset(str(path), group, mode="r") as ds:
        image = ds.read_image("image_0", 0)
    png = view(tmp_path, str(path), "-g", group)
    assert_montage(png, image_planes(image))


def test_view_int16_brain_images_use_window_meta(tmp_path: Path) -> None:
    path = SHARED / "prisma_3T_brain_images_int16.h5"
    with ismrmrd.Dataset(str(path), "images", mode="r") as ds:
        image = ds.read_image("images_1", 0)
    assert image.data.dtype == np.int16
    png = view(tmp_path, str(path), "-g", "images")
    assert_montage(png, image_planes(image))
    centre, width = float(image.meta["WindowCenter"]), float(image.meta["WindowWidth"])
    low = centre - width / 2
    expected = np.rint(np.clip((image.data[0, 0] - low) * 255 / width, 0, 255))
    np.testing.assert_array_equal(image_planes(image)[0], expected.astype(np.uint8))


def test_view_recon_output_stream(tmp_path: Path, golden: Path) -> None:
    path = golden / "phantom_m128_c8_noise.cxx_recon.stream"
    images = [i for i in stream_items(path.read_bytes()) if isinstance(i, ismrmrd.Image)]
    expected = [plane for image in images for plane in image_planes(image)]
    assert_montage(view(tmp_path, str(path)), expected)
    assert_montage(view(tmp_path, "-", input=path.read_bytes()), expected)


def test_view_our_recon_output(tmp_path: Path, golden: Path) -> None:
    raw = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    recon = run_cli("mrd_stream_recon", "--workers", "1", input=raw).stdout
    images = [i for i in stream_items(recon) if isinstance(i, ismrmrd.Image)]
    assert images, "the recon produced no image"
    expected = [plane for image in images for plane in image_planes(image)]
    assert_montage(view(tmp_path, "-", input=recon), expected)


# -------------------------------------------------------- data types and shapes
def _typed_stream() -> bytes:
    rng = np.random.default_rng(7)
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, (1, 1, 20, 24))).astype(np.complex64)
    cases = [
        (1, 1, (rng.random((2, 3, 16, 12)) * 4000).astype(np.uint16)),  # 2 coils x 3 slices
        (2, 1, (rng.standard_normal((1, 1, 10, 10)) * 300).astype(np.int16)),
        (3, 2, phase),
        (4, 3, rng.standard_normal((1, 1, 8, 8)).astype(np.float64)),
        (5, 5, (rng.standard_normal((1, 1, 9, 9)) + 1j).astype(np.complex128)),
    ]
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for series, image_type, pixels in cases:
            head = new_image_head()
            head["image_series_index"], head["image_type"] = series, image_type
            head["image_index"] = 1
            writer.write(Image.from_array(pixels, head=head))
    return sink.getvalue()


def test_view_all_types_3d_and_channels(tmp_path: Path) -> None:
    data = _typed_stream()
    images = [i for i in stream_items(data) if isinstance(i, ismrmrd.Image)]
    expected = [plane for image in images for plane in image_planes(image)]
    assert len(expected) == 6 + 4
    assert_montage(view(tmp_path, "-", input=data), expected)
    assert_montage(view(tmp_path, "-", "--max-images", "4", input=data), expected[:4])
    picked = [plane for image in images[2:4] for plane in image_planes(image)]
    assert_montage(view(tmp_path, "-", "-s", "3", "--series", "4", input=data), picked)


def test_window_phase_and_magnitude_rules() -> None:
    values = np.exp(1j * np.linspace(-np.pi, np.pi, 9))
    grey = window(values, ismrmrd.IMTYPE_PHASE)
    expected_phase = np.rint((np.angle(values) + np.pi) / (2 * np.pi) * 255)
    np.testing.assert_array_equal(grey, expected_phase)
    assert grey[0] <= 1 and grey[-1] >= 254 and 127 <= grey[4] <= 128
    magnitude = np.arange(1000, dtype=np.float32)
    top = np.percentile(magnitude, 99.5)
    expected = np.rint(np.clip(magnitude / top, 0, 1) * 255)
    np.testing.assert_array_equal(window(magnitude), expected)
    complex_image = magnitude * np.exp(1j * 0.3)
    np.testing.assert_array_equal(window(complex_image, ismrmrd.IMTYPE_COMPLEX), expected)
    real = np.array([-2.0, 0.0, 2.0])
    assert window(real, ismrmrd.IMTYPE_REAL).tolist() == [0, 128, 255]
    assert math.isclose(float(kspace_display(np.array([0, 1j]))[1]), 255)


# ------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["pulseq_zero_sample_readouts.h5"], "no k-space"),
        (["sirf_grappa2_1rep.h5", "--coil", "4"], "coil 4 is out of range"),
        (["missing.h5"], "no such file"),
        (["viewer_image_only.h5", "-g", "nope"], "not found"),
        (["prisma_3T_brain_images_int16.h5", "-s", "9"], "no image series"),
    ],
)
def test_view_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out.png"
    proc = run_cli(
        "parallel-recon", "view", str(SHARED / args[0]), *args[1:], "-o", str(out), check=False
    )
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()

"""``view --scale N``: small images enlarged by a chosen integer factor.

Every image pixel becomes an N x N block of screen pixels, so the montage is read back with
Pillow and each block is checked to hold one grey level, the one of its source pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli
from PIL import Image as PILImage

from parallel_recon.inspect.montage import GAP, LABEL_HEIGHT
from parallel_recon.phantom import PhantomSpec


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("view") / "images.bin"
    raw = phantom_bytes(PhantomSpec(matrix=16, coils=2))
    path.write_bytes(run_cli("mrd_stream_recon", input=raw).stdout)
    return path


@pytest.mark.parametrize("scale", [1, 3, 20])
def test_scale_sets_the_size_of_every_image_pixel(images: Path, tmp_path: Path, scale: int) -> None:
    png = tmp_path / "view.png"
    proc = run_cli("parallel-recon", "view", str(images), "-o", str(png), "--scale", str(scale))
    with PILImage.open(png) as opened:
        picture = np.asarray(opened)
    side = 16 * scale
    assert picture.shape == (GAP + LABEL_HEIGHT + side + GAP, GAP + side + GAP)
    assert f"{picture.shape[1]}x{picture.shape[0]} pixels" in proc.stderr.decode()
    tile = picture[GAP + LABEL_HEIGHT : GAP + LABEL_HEIGHT + side, GAP : GAP + side]
    blocks = tile.reshape(16, scale, 16, scale)
    assert (blocks == blocks[:, :1, :, :1]).all()  # each block is one source pixel
    assert len(np.unique(blocks[:, 0, :, 0])) > 10  # and the image is really there


def test_without_scale_small_images_are_enlarged_to_about_128(images: Path, tmp_path: Path) -> None:
    png = tmp_path / "view.png"
    run_cli("parallel-recon", "view", str(images), "-o", str(png))
    with PILImage.open(png) as opened:
        assert np.asarray(opened).shape[1] == GAP + 128 + GAP


@pytest.mark.parametrize(
    ("value", "needle"),
    [("0", "expected 1..64, found 0"), ("65", "expected 1..64, found 65"),
     ("two", "expected an integer, found 'two'")],
)  # fmt: skip
def test_scale_out_of_range_is_a_usage_error(
    images: Path, tmp_path: Path, value: str, needle: str
) -> None:
    proc = run_cli("parallel-recon", "view", str(images), "-o", str(tmp_path / "v.png"),
                   "--scale", value, check=False)  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert f"argument --scale: {needle}" in err, err
    assert not (tmp_path / "v.png").exists()

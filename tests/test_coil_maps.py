"""``maps=adaptive|espirit`` for the Cartesian and GRAPPA combinations, and ``save_maps=on``.

Images and maps are read back with ismrmrd-python (streams and HDF5); the maps series is
looked at with ``parallel-recon view`` as a user would.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from accelerated_helpers import nrmse, phantom_bytes, recon_images
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec, ground_truth, object_volume

FULL = PhantomSpec(matrix=48, coils=6)
ACCELERATED = PhantomSpec(matrix=64, coils=8, acceleration=2, calibration_width=24)


@pytest.mark.parametrize("kernel", ["cartesian", "auto"])
def test_espirit_maps_combine_and_clear_the_background(kernel: str) -> None:
    """Given ``maps=espirit`` (no ``combine=``), the Cartesian FFT combines with ESPIRiT maps:
    the object as the ground truth, the background outside the maps' crop exactly zero."""
    stream = phantom_bytes(FULL)
    image = recon_images(stream, "--recon", kernel, "--recon-option", "maps=espirit")[0]
    assert image.meta["ImageProcessingHistory"] == ["FFT", "ESPIRIT"]
    data = image.data[0, 0]
    truth = ground_truth(FULL)[0]
    inside = object_volume(FULL)[0] != 0
    assert nrmse(data[inside], truth[inside]) <= 0.03
    background = ~inside
    assert (data[background] == 0).mean() > 0.3  # the crop keeps a margin around the object
    rss = recon_images(stream, "--recon", kernel)[0].data[0, 0]
    assert (rss[background] == 0).mean() < 0.01  # RSS keeps the noise floor there


def test_grappa_with_espirit_maps() -> None:
    stream = phantom_bytes(ACCELERATED)
    image = recon_images(stream, "--recon", "grappa", "--recon-option", "maps=espirit")[0]
    assert image.meta["ImageProcessingHistory"] == ["GRAPPA", "FFT", "ESPIRIT"]
    assert nrmse(image.data[0, 0], ground_truth(ACCELERATED)[0]) <= 0.03


def test_saved_maps_series_in_hdf5_and_view(tmp_path: Path) -> None:
    """``save_maps=on``: after each unit's image, one complex image ``[coils, 1, y, x]`` in the
    next series (DataRole CoilMaps); ``stream_to_mrdhdf5`` files it as ``image_2`` and
    ``parallel-recon view -s 2`` shows one tile per coil."""
    stream = phantom_bytes(ACCELERATED)
    found = recon_images(
        stream, "--recon", "grappa", "--recon-option", "combine=rss",
        "--recon-option", "maps=espirit", "--recon-option", "save_maps=on",
    )  # fmt: skip
    image, maps = found
    assert image.meta["ImageProcessingHistory"] == ["GRAPPA", "FFT", "RSS"]
    assert (maps.image_series_index, maps.image_type, maps.data.shape) == (2, 5, (8, 1, 64, 64))
    assert maps.meta["DataRole"] == "CoilMaps"
    assert maps.meta["ImageProcessingHistory"] == "ESPIRIT"
    kept = np.abs(maps.data[:, 0]).sum(axis=0) > 0
    assert np.allclose(np.linalg.norm(maps.data[:, 0][:, kept], axis=0), 1, atol=1e-3)
    recon = run_cli("mrd_stream_recon", "--recon", "grappa", "--recon-option", "save_maps=on",
                    input=stream).stdout  # fmt: skip
    h5 = tmp_path / "images.h5"
    run_cli("stream_to_mrdhdf5", "-o", str(h5), input=recon)
    with h5py.File(h5, "r") as f:
        assert f["dataset/image_2/data"].shape == (1, 8, 1, 64, 64)
        assert f["dataset/image_1/data"].shape == (1, 1, 1, 64, 64)
    png = tmp_path / "maps.png"
    proc = run_cli("parallel-recon", "view", str(h5), "-s", "2", "-o", str(png))
    assert "8 tiles" in proc.stderr.decode() and png.stat().st_size > 0


def test_save_maps_needs_a_free_series_index() -> None:
    stream = phantom_bytes(PhantomSpec(matrix=32, coils=4))
    proc = run_cli(
        "mrd_stream_recon", "--recon-option", "save_maps=on", "--series-index", "65535",
        input=stream, check=False,
    )  # fmt: skip
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert "--series-index" in lines[0]

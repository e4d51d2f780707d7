"""BART as an independent oracle for the non-Cartesian recon (Debian package ``bart``).

The samples and trajectories BART gets are read from the very stream the recon gets, with
ismrmrd-python (for the JEMRIS file, its HDF5 reader); BART's trajectory is in grid units
(``tests/bart_tools.py``).  Our coil images come out of ``mrd_stream_recon`` with
``coils=channels`` and ``--image-type complex``, so complex coil images are compared, after
one least-squares scale (BART's and our normalisations differ by a constant).

- ``method=cg`` vs ``bart nufft -i`` (BART's own CG least squares): NRMSE <= 0.03;
- gridding vs ``bart nufft -a`` of the same density-weighted samples: NRMSE <= 0.01;
- JEMRIS spiral, ``method=cg`` vs ``bart nufft -i -r``: NRMSE <= 0.15 (both are least-squares
  solutions with different stopping).  ``-r`` runs BART's CG on its plain NUFFT normal
  operator: with its default Toeplitz embedding BART 0.8 puts a striped border on this
  undersampled spiral, and differs from its own ``-r`` result (and ours) by about 0.3.
"""

from __future__ import annotations

import io
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from bart_tools import bart_readouts, bart_trajectory, run_bart
from noncartesian_helpers import nrmse, phantom_stream, recon

from parallel_recon.workers.density import pipe_menon_weights

CHANNELS = ("--image-type", "complex", "--recon-option", "coils=channels")


def _readouts(stream: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``[readouts, coils, samples]`` and trajectories ``[readouts, samples, dims]`` of
    the stream's imaging acquisitions, read with ismrmrd-python."""
    items = ismrmrd.ProtocolDeserializer(io.BytesIO(stream)).deserialize()
    acquisitions = [
        a
        for a in items
        if isinstance(a, ismrmrd.Acquisition)
        and not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    ]
    data = np.stack([a.data for a in acquisitions]).astype(np.complex64)
    traj = np.stack([a.traj for a in acquisitions]).astype(np.float32)
    return data, traj


def _ours(image: np.ndarray) -> np.ndarray:
    """Our ``[channels, 1, y, x]`` as ``[coils, y, x]``."""
    return image[:, 0]


def _bart_images(result: np.ndarray, coils: int, matrix: int) -> np.ndarray:
    """BART's ``[x, y(, 1), coils]`` as ``[coils, y, x]``."""
    return result.reshape(matrix, matrix, coils, order="F").transpose(2, 1, 0)


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_cg_agrees_with_bart_nufft_inverse(trajectory: str, tmp_path: Path) -> None:
    matrix, coils = 128, 8
    stream = phantom_stream(matrix=matrix, coils=coils, trajectory=trajectory)
    (ours,), _ = recon(stream, *CHANNELS, "--recon-option", "method=cg")
    data, traj = _readouts(stream)
    bart = run_bart(
        tmp_path, "nufft", "-i", "-d", f"{matrix}:{matrix}:1", "traj", "ksp", "img",
        inputs={"traj": bart_trajectory(traj, matrix), "ksp": bart_readouts(data)},
        output="img",
    )  # fmt: skip
    error = nrmse(_ours(ours.data), _bart_images(bart, coils, matrix))
    print(f"{trajectory}: cg vs bart nufft -i {error:.4f}")
    assert error <= 0.03


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_gridding_agrees_with_bart_adjoint_of_the_weighted_samples(
    trajectory: str, tmp_path: Path
) -> None:
    matrix, coils = 96, 4
    stream = phantom_stream(matrix=matrix, coils=coils, trajectory=trajectory, noise_level=0.05)
    (ours,), _ = recon(stream, *CHANNELS)
    data, traj = _readouts(stream)
    weights = pipe_menon_weights(traj.reshape(-1, 2), (matrix, matrix)).reshape(traj.shape[:2])
    weighted = data * weights[:, None, :]
    bart = run_bart(
        tmp_path, "nufft", "-a", "-d", f"{matrix}:{matrix}:1", "traj", "ksp", "img",
        inputs={"traj": bart_trajectory(traj, matrix), "ksp": bart_readouts(weighted)},
        output="img",
    )  # fmt: skip
    error = nrmse(_ours(ours.data), _bart_images(bart, coils, matrix))
    print(f"{trajectory}: gridding vs bart nufft -a {error:.4f}")
    assert error <= 0.01


def test_jemris_spiral_cg_agrees_with_bart_nufft_inverse(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "jemris_spiral_slc90.h5"
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        acquisitions = [
            dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())
        ]
    finally:
        dataset.close()
    imaging = [a for a in acquisitions if a.number_of_samples > 1]
    assert len(imaging) == 15
    data = np.stack([a.data for a in imaging]).astype(np.complex64)
    stored = np.stack([a.traj for a in imaging]).astype(np.float32)  # grid units, 3 columns
    traj = np.zeros((3, stored.shape[1], stored.shape[0]), np.complex64)
    traj[:2] = stored[..., :2].transpose(2, 1, 0)
    bart = run_bart(
        tmp_path, "nufft", "-i", "-r", "-d", "220:220:1", "traj", "ksp", "img",
        inputs={"traj": traj, "ksp": bart_readouts(data)},
        output="img",
    )  # fmt: skip
    from conftest import run_cli

    stream = run_cli("mrdhdf5_to_stream", str(path)).stdout
    (ours,), _ = recon(stream, *CHANNELS, "--recon-option", "method=cg")
    error = nrmse(_ours(ours.data), _bart_images(bart, 1, 220))
    print(f"jemris: cg vs bart nufft -i -r {error:.4f}")
    assert error <= 0.15

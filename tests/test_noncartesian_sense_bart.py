"""Non-Cartesian SENSE and ESPIRiT-from-the-gridded-centre against BART (Debian ``bart``, 0.8).

The samples and trajectories BART gets are read from the very stream the recon gets, with
ismrmrd-python; our images and maps come out of ``mrd_stream_recon --recon sense
--image-type complex --recon-option save_maps=on`` (the maps are the series after the
images').  No noise scan, so neither side prewhitens.

CG-SENSE vs ``bart pics -l2 -r LAMBDA -i ITER -w 1 -t TRAJ KSP MAPS``, with our maps:

- trajectory scaling: ours is in cycles per pixel, BART's in grid units (cycles per field of
  view, ``-N/2 .. N/2``), so BART gets ours times ``N``, ``[3, samples, readouts]``,
  coordinate 0 along its dimension 0 (our columns, x); k-space ``[1, samples, readouts,
  coils]``, maps ``[x, y, 1, coils]`` (``tests/bart_tools.py``);
- NUFFT normalisation: BART's ``pics`` operator is its NUFFT scaled to be unitary on a
  Cartesian grid, as ours (``1 / sqrt(pixels)``; a Cartesian grid gives the orthonormal DFT),
  so ``A^H A`` is the same sampling density on both sides and LAMBDA is the same number;
  ``-w 1`` turns off BART's data scaling.  Both run plain CG on ``(A^H A + lambda I) x =
  A^H y`` from zero for the same number of iterations (both through a Toeplitz embedding of
  ``A^H A``), so they should agree to single-precision and NUFFT-kernel rounding;
  NRMSE <= 0.02 (after one least-squares scale, which measures 1.000 here);
- BART 0.8's NUFFT is accurate to about 1.3e-3 except within 1% of the k-space edge (8%
  error for samples at ``|k| >= 0.49 N``, measured against ours, which is accurate to 1e-4
  there as elsewhere).  A spiral ends at the edge with many samples there, and CG amplifies
  that operator mismatch (0.03 after 20 iterations), so the spiral case gives both sides its
  interleaves cut at ``|k| < 0.48 N`` (rewritten with ismrmrd-python); the radial spokes have
  only their first sample at the edge and are given whole.

ESPIRiT from the gridded centre vs ``bart ecalib -m1`` on gridded calibration data made by
BART itself: the samples inside the box of ``24 + 2 x 4`` grid units around the centre,
weighted by the analytic radial density (a spoke sample at radius ``r`` grid units stands for
``step x pi r / spokes``, the centre sample for ``pi (step / 2)^2 / spokes``: computed here,
not by the product's Pipe-Menon weights), ``bart nufft -a`` onto a 32 x 32 image of the same
field of view, ``bart fft -u`` (centred, unitary), the central 24 x 24 points kept and
zero-padded to the matrix, then ``bart ecalib -m1 -r 24``.  NRMSE <= 0.05 inside BART's mask
after removing the one common phase (the principal component's phase is LAPACK's choice, as
in ``tests/test_espirit.py``), inside the pixels both keep, with the masks agreeing on at
least 99% of the pixels (at the crop's edge the eigenvalue sits at the threshold and one side
keeps a pixel the other drops: a map of norm 1 against 0).  Measured: the maps of the same
gridded centre agree to 0.0015 two pixels inside the mask edge; the product's centre (with
its Pipe-Menon weights) and BART's (analytic weights, 13% apart at the very centre sample)
differ by 2%.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from accelerated_helpers import images
from bart_tools import bart, bart_readouts, bart_trajectory, read_cfl, run_bart, write_cfl
from conftest import run_cli
from noncartesian_helpers import nrmse, phantom_stream, rewrite_acquisitions
from sense_helpers import aligned_nrmse

COILS = 8


def _readouts(stream: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``[readouts, coils, samples]`` and trajectories ``[readouts, samples, 2]`` of
    the stream's imaging acquisitions, read with ismrmrd-python."""
    items = ismrmrd.ProtocolDeserializer(io.BytesIO(stream)).deserialize()
    acquisitions = [i for i in items if isinstance(i, ismrmrd.Acquisition)]
    data = np.stack([a.data for a in acquisitions]).astype(np.complex64)
    traj = np.stack([a.traj for a in acquisitions]).astype(np.float32)[..., :2]
    return data, traj


def _sense(stream: bytes, *options: str) -> tuple[np.ndarray, np.ndarray]:
    """Our complex SENSE image ``[y, x]`` and maps ``[coils, y, x]``."""
    args = ["--recon", "sense", "--image-type", "complex", "--recon-option", "save_maps=on"]
    for option in options:
        args += ["--recon-option", option]
    found = images(run_cli("mrd_stream_recon", *args, input=stream).stdout)
    assert len(found) == 2 and found[1].image_series_index == 2
    return found[0].data[0, 0], found[1].data[:, 0]


def _inside(acquisition: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
    """The acquisition cut before its first sample at ``|k| >= 0.48`` cycles per pixel."""
    radius = np.sqrt((acquisition.traj[:, :2].astype(np.float64) ** 2).sum(axis=-1))
    keep = int(np.argmax(radius >= 0.48)) if (radius >= 0.48).any() else radius.size
    head = acquisition.getHead()
    head.number_of_samples = keep
    cut = ismrmrd.Acquisition(head)
    cut.data[:] = acquisition.data[:, :keep]
    cut.traj[:] = acquisition.traj[:keep]
    return cut


CASES = {
    "radial_quarter": dict(trajectory="radial", matrix=96, spokes=math.ceil(math.pi / 2 * 96 / 4)),
    "spiral_half": dict(trajectory="spiral", matrix=96, spokes=6),
}
"""Undersampled phantoms: a quarter of radial's Nyquist spokes, half of spiral's interleaves."""


@pytest.mark.parametrize(
    "case, lam, iterations",
    [("radial_quarter", "0.001", 30), ("radial_quarter", "0.05", 15), ("spiral_half", "0.001", 20)],
)
def test_cg_sense_agrees_with_bart_pics(
    case: str, lam: str, iterations: int, tmp_path: Path
) -> None:
    fields = CASES[case]
    stream = phantom_stream(coils=COILS, noise_level=0.05, **fields)
    if fields["trajectory"] == "spiral":
        stream = rewrite_acquisitions(stream, _inside)
    ours, maps = _sense(stream, f"lambda={lam}", f"iterations={iterations}")
    data, traj = _readouts(stream)
    n = int(fields["matrix"])
    theirs = run_bart(
        tmp_path, "pics", "-l2", "-r", lam, "-i", str(iterations), "-w", "1", "-t", "traj",
        "ksp", "maps", "image",
        inputs={
            "traj": bart_trajectory(traj, n),
            "ksp": bart_readouts(data),
            "maps": maps.transpose(2, 1, 0)[:, :, None, :],
        },
        output="image",
    ).reshape(n, n, order="F").T  # fmt: skip
    scale = np.vdot(ours, theirs) / np.vdot(ours, ours)
    error = nrmse(ours, theirs)
    print(f"{case} lambda {lam}, {iterations} iterations: vs bart pics {error:.4f} "
          f"(scale {abs(scale):.4f})")  # fmt: skip
    assert error <= 0.02
    assert abs(abs(scale) - 1) < 0.01  # the same normalisation: lambda means the same


def _radial_density(traj: np.ndarray, matrix: int) -> np.ndarray:
    """Area per sample (grid units squared) of spokes through the centre: ``step x pi r /
    spokes`` at radius ``r``, ``pi (step / 2)^2 / spokes`` for the centre sample."""
    radius = np.sqrt((traj.astype(np.float64) ** 2).sum(axis=-1)) * matrix
    step = matrix / traj.shape[1]
    spokes = traj.shape[0]
    return np.where(
        radius > step / 2, step * np.pi * radius / spokes, np.pi * (step / 2) ** 2 / spokes
    )


def _bart_maps_of_the_gridded_centre(
    data: np.ndarray, traj: np.ndarray, matrix: int, folder: Path
) -> np.ndarray:
    """``bart ecalib -m1`` maps ``[coils, y, x]`` of the centre gridded by ``bart nufft -a``."""
    region, box = 24, 32
    grid = traj * matrix
    inside = np.all(np.abs(grid) < box / 2, axis=-1)  # [readouts, samples]
    weights = _radial_density(traj, matrix)
    samples = (data * weights[:, None, :]).transpose(0, 2, 1)[inside]  # [points, coils]
    bart_traj = np.zeros((3, int(inside.sum()), 1), np.complex64)
    bart_traj[:2, :, 0] = grid[inside].T
    write_cfl(folder / "traj", bart_traj)
    write_cfl(folder / "ksp", samples[None, :, None, :])
    bart("nufft", "-a", "-d", f"{box}:{box}:1", "traj", "ksp", "lowres", cwd=folder)
    bart("fft", "-u", "3", "lowres", "centre", cwd=folder)
    bart("resize", "-c", "0", str(region), "1", str(region), "centre", "cal", cwd=folder)
    bart("resize", "-c", "0", str(matrix), "1", str(matrix), "cal", "padded", cwd=folder)
    bart("ecalib", "-m1", "-r", str(region), "padded", "maps", cwd=folder)
    return read_cfl(folder / "maps").reshape(matrix, matrix, -1, order="F").transpose(2, 1, 0)


@pytest.mark.parametrize("spokes", [101, 38])
def test_espirit_from_the_gridded_centre_agrees_with_bart_ecalib(
    spokes: int, tmp_path: Path
) -> None:
    """Fully sampled (101 spokes at 64) and undersampled (38 spokes) radial phantoms."""
    matrix = 64 if spokes == 101 else 96
    stream = phantom_stream(
        trajectory="radial", matrix=matrix, coils=COILS, spokes=spokes, noise_level=0.05
    )
    _, ours = _sense(stream)
    data, traj = _readouts(stream)
    theirs = _bart_maps_of_the_gridded_centre(data, traj, matrix, tmp_path)
    mask = np.abs(theirs).sum(axis=0) > 0
    kept = np.abs(ours).sum(axis=0) > 0
    error = aligned_nrmse(ours, theirs, mask & kept)
    agree = float((mask == kept).mean())
    print(f"{spokes} spokes: maps vs bart ecalib {error:.4f}, masks agree on {agree:.2%}")
    assert error <= 0.05
    assert agree >= 0.99
